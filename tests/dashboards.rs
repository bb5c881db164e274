//! The monitoring files in `dist/`: the Grafana dashboard
//! (`dist/grafana/alternator-dns.json`) parses, every panel has queries, and
//! every query returns data from a real Prometheus scraping the real binary;
//! the alerting rules (`dist/prometheus/alerts.yml`) pass
//! `promtool check rules` and their unit tests
//! (`dist/prometheus/alerts_test.yml`, `promtool test rules`), and a real
//! Prometheus evaluates each of them against the binary's metrics without
//! an error.
//!
//! Prometheus and promtool come from the Debian package `prometheus`
//! (`scripts/setup` installs it, its daemon kept from starting). Without
//! them the tests that need them fail when `CI` is set, and are skipped
//! with a notice otherwise.
//!
//! Node addresses 127.0.210.x: see cluster.rs.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alternator_sim::test_pki::TempDir;
use alternator_sim::Fault;
use domain::base::iana::Rtype;
use serde_json::Value;
use support::cluster_checks::*;
use support::*;

const DASHBOARD: &str = "dist/grafana/alternator-dns.json";
const ALERTS: &str = "dist/prometheus/alerts.yml";
const ALERTS_TEST: &str = "dist/prometheus/alerts_test.yml";

/// What `$__rate_interval` and `$__interval` become: the whole run fits in
/// the window, so a rate sees every increase since Prometheus started.
const RATE_INTERVAL: &str = "1m";
const INTERVAL: &str = "1s";

/// How long Prometheus may take to start, to scrape, and to see the traffic.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(15);

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// `name` from `PATH`; None when not installed, which fails under CI and
/// skips the test with a notice otherwise.
fn prometheus_tool(name: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&dirs)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is not installed: run scripts/setup (Debian package prometheus)");
        }
        eprintln!("skipped: {name} is not installed (scripts/setup installs the Debian package prometheus)");
    }
    found
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_path(DASHBOARD)).expect("read the dashboard");
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every panel with its queries (rows, which hold none, left out), nested
/// ones (inside collapsed rows) included: (panel title, exprs).
fn panel_exprs(dashboard: &Value) -> Vec<(String, Vec<String>)> {
    let mut panels: Vec<&Value> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("a panels array") {
        panels.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
    }
    panels
        .into_iter()
        .filter(|p| p["type"] != "row")
        .map(|p| {
            let title = p["title"].as_str().unwrap_or("(untitled)").to_string();
            let exprs = p["targets"]
                .as_array()
                .map(|targets| {
                    targets
                        .iter()
                        .map(|t| t["expr"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default();
            (title, exprs)
        })
        .collect()
}

/// `expr` with the dashboard's variables replaced as Grafana would, for
/// the one instance `instance`.
fn substitute(expr: &str, instance: &str) -> String {
    let out = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", INTERVAL)
        .replace("${instance}", instance)
        .replace("$instance", instance);
    assert!(!out.contains('$'), "a variable left in {expr}");
    out
}

#[test]
fn the_dashboard_parses_and_every_panel_has_queries() {
    let dash = dashboard();
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let variables: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "instance"]);

    let mut ids = BTreeSet::new();
    let mut all = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        let id = panel["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{} is wider than the grid", panel["title"]);
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{} uses the datasource variable",
            panel["title"]
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["datasource"]["uid"], "${datasource}");
            assert!(target["refId"].is_string());
        }
    }
    for (title, exprs) in panel_exprs(&dash) {
        assert!(!exprs.is_empty(), "panel {title:?} has no query");
        for expr in exprs {
            assert!(
                !expr.trim().is_empty(),
                "panel {title:?} has an empty query"
            );
            assert!(
                expr.contains("instance=~\"$instance\""),
                "{title:?}: {expr} does not follow the instance variable"
            );
            all.push(expr);
        }
    }
    // What the issue asks the dashboard to show.
    for metric in [
        "alternator_dns_queries_total",
        "alternator_dns_responses_total",
        "alternator_dns_worker_queries_total",
        "alternator_dns_live_nodes",
        "alternator_dns_health_probes_total",
        "alternator_dns_health_probe_seconds_bucket",
        "alternator_dns_refresh_requests_total",
        "alternator_dns_snapshot_age_seconds",
        "alternator_dns_truncated_responses_total",
        "alternator_dns_rate_limit_slips_total",
        "alternator_dns_node_removals_total",
        "alternator_dns_node_removal_seconds_bucket",
        "alternator_dns_fail_open",
        "alternator_dns_unverified_seeds",
        "alternator_dns_ready",
        "alternator_dns_workers_up",
    ] {
        assert!(
            all.iter().any(|e| e.contains(metric)),
            "no panel shows {metric}"
        );
    }
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() {
    let Some(promtool) = prometheus_tool("promtool") else {
        return;
    };
    for args in [["check", "rules", ALERTS], ["test", "rules", ALERTS_TEST]] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Prometheus server on loopback with its storage in a temporary
/// directory; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    /// Starts `binary` scraping `target` every second and evaluating
    /// `rules`, and waits until it is ready.
    fn start(binary: &Path, target: SocketAddr, rules: &Path) -> Prometheus {
        let mut dir = TempDir::new();
        let config = dir.write(
            "prometheus.yml",
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: alternator-dns\n    \
                 static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        );
        // A port the kernel just gave out and took back; another process
        // taking it in between is retried.
        for _ in 0..3 {
            let addr = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port");
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start prometheus");
            let mut prometheus = Prometheus { child, addr, dir };
            let ready = wait_until(PROMETHEUS_WAIT, || {
                !prometheus.is_running() || get(addr, "/-/ready").is_some_and(|(s, _)| s == 200)
            });
            if ready && prometheus.is_running() {
                return prometheus;
            }
            let log = prometheus.log();
            assert!(
                log.contains("address already in use"),
                "prometheus did not start:\n{log}"
            );
            dir = prometheus.take_dir();
        }
        panic!("prometheus found no free port");
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Stops the server and hands its directory back for another try.
    fn take_dir(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, TempDir::new())
    }

    /// `GET path` on the HTTP API: the parsed JSON body, None unless 200.
    fn api(&self, path: &str) -> Option<Value> {
        let (status, body) = get(self.addr, path)?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// The result vector of an instant query, None on an error (with it).
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", url_encode(expr));
        let (status, body) = get(self.addr, &path).ok_or("no answer from prometheus")?;
        let json: Value =
            serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if json["status"] != "success" {
            return Err(format!("{status}: {body}"));
        }
        let data = &json["data"];
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            // A scalar (e.g. from time()) is one value.
            Some("scalar") => Ok(vec![serde_json::json!({ "value": data["result"] })]),
            other => Err(format!("unexpected result type {other:?}: {body}")),
        }
    }

    /// The sum of an instant query's values (0 when it has none).
    fn value(&self, expr: &str) -> f64 {
        self.query(expr)
            .unwrap_or_default()
            .iter()
            .filter_map(sample_value)
            .sum()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one sample of a query result (`"value": [time, "text"]`).
fn sample_value(sample: &Value) -> Option<f64> {
    sample["value"][1].as_str()?.parse().ok()
}

/// `GET path` over HTTP/1.0 (so that the body is never chunked): the status
/// and the body, within 5 s.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why `expr` returns no data now, or None when it returns some: at least
/// one series, and at least one value that is a number (not NaN).
fn no_data(prometheus: &Prometheus, expr: &str) -> Option<String> {
    match prometheus.query(expr) {
        Err(e) => Some(format!("error: {e}")),
        Ok(result) if result.is_empty() => Some("no series".into()),
        Ok(result) => {
            let numbers = result.iter().filter_map(sample_value).any(|v| !v.is_nan());
            (!numbers).then(|| format!("only NaN: {result:?}"))
        }
    }
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let begun = Instant::now();
    let Some(binary) = prometheus_tool("prometheus") else {
        return;
    };
    let (sim, addrs) = cluster(210, 3);
    let responder = Responder::start(&fast_args(&sim, &addrs));
    responder.wait_for_cluster_list();
    let target = responder
        .metrics_addr()
        .expect("the metrics endpoint's address");
    let prometheus = Prometheus::start(&binary, target, &repo_path(ALERTS));
    let instance = target.to_string();

    // Scraped once: what follows is counted between two scrapes, so that
    // every rate sees it.
    let up = format!("up{{job=\"alternator-dns\",instance=\"{instance}\"}}");
    assert!(
        wait_until(PROMETHEUS_WAIT, || prometheus.value(&up) == 1.0),
        "prometheus never scraped {instance}; its log:\n{}",
        prometheus.log()
    );

    // Traffic: answers, NXDOMAIN, over UDP and TCP.
    let mut client = responder.client();
    for _ in 0..20 {
        assert!(client.query(DOMAIN, Rtype::A).is_some());
    }
    assert!(client.query(DOMAIN, Rtype::AAAA).is_some());
    assert!(client.query(&format!("nope.{DOMAIN}"), Rtype::A).is_some());
    assert!(client.query_tcp(DOMAIN, Rtype::A).is_some());
    // A node whose process dies: a removal (with its time) and failing
    // probes.
    sim.set_fault(addrs[2], Fault::Down);

    let seen = [
        "sum(alternator_dns_queries_total) >= 23",
        "sum(alternator_dns_node_removals_total) >= 1",
        "sum(alternator_dns_health_probe_seconds_count{result=\"error\"}) >= 1",
    ];
    assert!(
        wait_until(PROMETHEUS_WAIT, || seen
            .iter()
            .all(|q| !prometheus.query(q).unwrap_or_default().is_empty())),
        "prometheus never saw the traffic and the removal: {:?}; the binary's metrics:\n{}",
        seen.map(|q| prometheus.query(q)),
        responder.metrics().unwrap_or_default()
    );

    // The instance variable's query finds the instance.
    let values = prometheus
        .api("/api/v1/label/instance/values?match[]=alternator_dns_build_info")
        .expect("label values");
    assert_eq!(values["data"], serde_json::json!([instance]));

    // Every query of every panel returns data. A rate needs two scrapes
    // after a change: wait (bounded) until all do, then report those that
    // do not.
    let queries: Vec<(String, String)> = panel_exprs(&dashboard())
        .into_iter()
        .flat_map(|(title, exprs)| exprs.into_iter().map(move |e| (title.clone(), e)))
        .map(|(title, expr)| (title, substitute(&expr, &instance)))
        .collect();
    let mut missing = Vec::new();
    wait_until(PROMETHEUS_WAIT, || {
        missing = queries
            .iter()
            .filter_map(|(title, expr)| {
                no_data(&prometheus, expr).map(|why| format!("{title}: {expr}: {why}"))
            })
            .collect();
        missing.is_empty()
    });
    assert!(
        missing.is_empty(),
        "dashboard queries without data:\n{}\nthe binary's metrics:\n{}",
        missing.join("\n"),
        responder.metrics().unwrap_or_default()
    );

    // The alerting rules load, and each is evaluated against these series
    // without an error.
    let mut rules = Vec::new();
    let evaluated = wait_until(PROMETHEUS_WAIT, || {
        let Some(json) = prometheus.api("/api/v1/rules") else {
            return false;
        };
        rules = json["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        !rules.is_empty() && rules.iter().all(|r| r["health"] == "ok")
    });
    assert!(evaluated, "alerting rules not all evaluated: {rules:#?}");
    assert_eq!(rules.len(), 6, "{rules:#?}");
    // Nothing is wrong but the one dead node: no alert fires.
    for rule in &rules {
        assert_ne!(rule["state"], "firing", "{rule:#?}");
    }
    eprintln!("dashboard test took {:?}", begun.elapsed());
}
