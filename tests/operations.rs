//! Operating the real `alternator-dns` binary: systemd notifications, the
//! metrics endpoint, reloading the configuration with SIGHUP, access
//! control, response rate limiting, dropping privileges, JSON logs and
//! shutdown under load.
//!
//! Every test owns the node addresses 127.0.N.x for its own N (150 to 170
//! here; see `support::nodes`), so the tests run in parallel. Every loop is
//! bounded in time and count.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};

use support::reload::*;
use support::*;

/// The refresh interval and per-request timeout of these tests.
const INTERVAL_MS: u64 = 100;
const TIMEOUT_MS: u64 = 200;

fn with(mut args: Vec<String>, more: &[&str]) -> Vec<String> {
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

/// `args` with the harness's defaults (`--threads 1`, `--log-level info`,
/// `--metrics-listen 127.0.0.1:0`) for the flags they do not give.
/// `--listen` is never added: these tests say where, on the command line or
/// in a config file.
fn with_defaults(args: Vec<String>) -> Vec<String> {
    let mut all = args;
    for (flag, value) in [
        ("--threads", "1"),
        ("--log-level", "info"),
        ("--metrics-listen", "127.0.0.1:0"),
    ] {
        if !all.iter().any(|a| a == flag) {
            all.extend([flag.to_string(), value.to_string()]);
        }
    }
    all
}

/// A plain HTTP/1.1 GET: the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .unwrap_or_else(|e| panic!("connect to the metrics endpoint {addr}: {e}"));
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

/// The samples of a Prometheus text exposition: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Scrapes `/metrics`.
fn scrape(addr: SocketAddr) -> (String, BTreeMap<String, f64>) {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    let parsed = samples(&body);
    (body, parsed)
}

/// The value of sample `key` (name with labels, exactly as written).
fn sample(metrics: &BTreeMap<String, f64>, text: &str, key: &str) -> f64 {
    *metrics
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in:\n{text}"))
}

/// The sum of the samples of family `name` whose labels include every one of `labels`.
fn sum_where(metrics: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| {
            k.starts_with(&format!("{name}{{")) && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

/// The answer TTL the responder gives now (one UDP query).
fn ttl_now(r: &Responder) -> u32 {
    let reply = r
        .client()
        .query(DOMAIN, Rtype::A)
        .unwrap_or_else(|| panic!("no reply; log:\n{}", r.log_text()));
    assert_eq!(reply.rcode(), Rcode::NOERROR);
    let ttls = reply.answer_ttls();
    assert!(!ttls.is_empty(), "no answer record");
    ttls[0]
}

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("alternator-dns-ops-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Messages received on a notification socket, with their arrival times.
struct NotifyLog {
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl NotifyLog {
    fn listen(socket: UnixDatagram) -> NotifyLog {
        let messages: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let reader = {
            let (messages, stop) = (Arc::clone(&messages), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // Bounded: the test stops it, and 60 s is far past any test.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        messages.lock().unwrap().push((Instant::now(), text));
                    }
                }
            })
        };
        NotifyLog {
            messages,
            stop,
            reader: Some(reader),
        }
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    fn texts(&self) -> Vec<String> {
        self.all().into_iter().map(|(_, m)| m).collect()
    }

    fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.texts().iter().filter(|m| pred(m)).count()
    }

    fn wait_count(&self, n: usize, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        wait_until(timeout, || self.count(&pred) >= n)
    }
}

impl Drop for NotifyLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn is_ready(m: &str) -> bool {
    m.lines().any(|l| l == "READY=1")
}
fn is_watchdog(m: &str) -> bool {
    m == "WATCHDOG=1"
}
fn is_reloading(m: &str) -> bool {
    m.lines().any(|l| l == "RELOADING=1")
}
fn is_stopping(m: &str) -> bool {
    m == "STOPPING=1"
}
fn is_status_only(m: &str) -> bool {
    m.starts_with("STATUS=") && !m.contains('\n')
}

// 1. systemd notifications, without systemd.
#[test]
fn systemd_notifications_ready_watchdog_reload_and_stopping() {
    let (sim, addrs) = cluster(150, 3);
    let dir = TempDir::new("notify");
    let socket_path = dir.0.join("notify.sock");
    let notify = NotifyLog::listen(UnixDatagram::bind(&socket_path).expect("bind NOTIFY_SOCKET"));
    let config = dir.0.join("config.toml");
    write_config(&config, "ttl = 4\n");
    let args = with_defaults(with(
        cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS),
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
    ));
    let socket_env = socket_path.to_str().unwrap().to_string();
    let mut r = Responder::start_exact(
        &args,
        &[
            ("NOTIFY_SOCKET", socket_env.as_str()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );

    // READY first, with the node count.
    assert!(
        notify.wait_count(1, Duration::from_secs(5), |_| true),
        "no notification at all; log:\n{}",
        r.log_text()
    );
    let first = notify.texts()[0].clone();
    assert!(is_ready(&first), "first message is not READY=1: {first:?}");
    assert!(
        first
            .lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("3 nodes")),
        "READY without a STATUS naming 3 nodes: {first:?}"
    );

    // WATCHDOG=1 about every 100 ms (half of WATCHDOG_USEC): watch 1 s of them.
    let ready_at = notify.all()[0].0;
    std::thread::sleep(Duration::from_millis(1100));
    let pings: Vec<Instant> = notify
        .all()
        .into_iter()
        .filter(|(at, m)| {
            is_watchdog(m) && *at >= ready_at && *at <= ready_at + Duration::from_secs(1)
        })
        .map(|(at, _)| at)
        .collect();
    let gaps: Vec<u128> = pings
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    println!(
        "{} watchdog pings in the first second, gaps {gaps:?} ms",
        pings.len()
    );
    // The schedule itself is pinned by notify.rs's paused-clock test; here
    // only that the binary pings, with room for a loaded machine.
    assert!(
        (3..=16).contains(&pings.len()),
        "{} WATCHDOG=1 in 1 s, expected about 10; gaps {gaps:?}",
        pings.len()
    );
    if let Some(max) = gaps.iter().max() {
        assert!(*max < 1000, "a watchdog gap of {max} ms (interval 100 ms)");
    }

    // The cluster list is in (so the signal handlers are too): reload.
    r.wait_for_cluster_list();
    let before_reload = notify.texts().len();
    sighup_and_wait(&mut r, "configuration reloaded", 1);
    assert!(
        notify.wait_count(2, Duration::from_secs(5), is_ready),
        "no READY=1 after the reload: {:?}",
        notify.texts()
    );
    let after: Vec<String> = notify.texts()[before_reload..]
        .iter()
        .filter(|m| !is_watchdog(m) && !is_status_only(m))
        .cloned()
        .collect();
    assert!(
        after.len() >= 2 && is_reloading(&after[0]) && is_ready(&after[1]),
        "expected RELOADING=1 then READY=1 on SIGHUP, got {after:?}"
    );
    assert!(
        after[0].contains("MONOTONIC_USEC="),
        "RELOADING=1 without MONOTONIC_USEC: {:?}",
        after[0]
    );
    assert!(after[1].contains("STATUS="), "{:?}", after[1]);

    // SIGTERM: STOPPING=1 is the last message.
    let (status, took) = r.terminate(Duration::from_secs(2));
    let status = status.unwrap_or_else(|| panic!("no exit within 2 s; log:\n{}", r.log_text()));
    assert!(status.success(), "exit status {status}");
    // The process is gone; its last datagrams are queued: wait for the reader.
    assert!(
        notify.wait_count(1, Duration::from_secs(5), is_stopping),
        "no STOPPING=1 after exit: {:?}",
        notify.texts()
    );
    let all = notify.texts();
    println!("{} notifications; exit {took:?} after SIGTERM", all.len());
    assert_eq!(
        all.last().map(String::as_str),
        Some("STOPPING=1"),
        "last messages: {:?}",
        &all[all.len().saturating_sub(5)..]
    );
    assert_eq!(all.iter().filter(|m| is_stopping(m)).count(), 1, "{all:?}");

    // The whole order: READY, then (WATCHDOG|STATUS)*, RELOADING, READY, ..., STOPPING.
    let kinds: Vec<&str> = all
        .iter()
        .map(|m| match () {
            () if is_reloading(m) => "RELOADING",
            () if is_ready(m) => "READY",
            () if is_watchdog(m) => "WATCHDOG",
            () if is_stopping(m) => "STOPPING",
            () if is_status_only(m) => "STATUS",
            () => panic!("unexpected notification {m:?}"),
        })
        .filter(|k| *k != "WATCHDOG" && *k != "STATUS")
        .collect();
    assert_eq!(kinds, ["READY", "RELOADING", "READY", "STOPPING"]);
}

// 2. Metrics after known traffic, and the health endpoints.
#[test]
fn metrics_count_known_traffic_exactly() {
    let (sim, addrs) = cluster(151, 3);
    let r = Responder::start(&cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS));
    let metrics = r
        .metrics_addr()
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", r.log_text()));
    r.wait_for_cluster_list();

    assert_eq!(http_get(metrics, "/healthz").0, 200);
    assert!(
        wait_until(Duration::from_secs(5), || http_get(metrics, "/readyz").0
            == 200),
        "/readyz never 200; log:\n{}",
        r.log_text()
    );
    assert_eq!(http_get(metrics, "/no-such-path").0, 404);

    // Known traffic, each query asked once (no retry that would count twice).
    let mut socket = DnsClient::from(IpAddr::from([127, 0, 0, 1]), r.udp_addr());
    let below = format!("nope.{DOMAIN}");
    for (i, (name, rcode)) in std::iter::repeat_n((DOMAIN, Rcode::NOERROR), 10)
        .chain(std::iter::repeat_n((below.as_str(), Rcode::NXDOMAIN), 3))
        .enumerate()
    {
        let reply = socket
            .query_once(name, Rtype::A, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("no reply to query {i} ({name}); log:\n{}", r.log_text()));
        assert_eq!(reply.rcode(), rcode, "{name}");
    }
    for id in [7, 8] {
        let mut response = build_query(id, DOMAIN, Rtype::A);
        response[2] |= 0x80; // QR=1
        socket.send_raw(&response);
    }
    socket.send_raw(&[0u8; 5]);
    assert!(
        socket.recv_raw(Duration::from_millis(300)).is_none(),
        "a dropped packet got a reply"
    );
    for _ in 0..2 {
        let reply = r.client().query_tcp(DOMAIN, Rtype::A).expect("a TCP reply");
        assert_eq!(reply.rcode(), Rcode::NOERROR);
    }

    // Wait for every node to have been asked for /localnodes and probed.
    let node_seen = |m: &BTreeMap<String, f64>, family: &str, node: &IpAddr| {
        [format!("node=\"{node}\""), format!("node=\"{node}:")]
            .iter()
            .map(|label| sum_where(m, family, &[label, "result=\"ok\""]))
            .sum::<f64>()
            > 0.0
    };
    let everyone_seen = wait_until(Duration::from_secs(10), || {
        let (_, m) = scrape(metrics);
        addrs.iter().all(|a| {
            node_seen(&m, "alternator_dns_refresh_requests_total", a)
                && node_seen(&m, "alternator_dns_health_probes_total", a)
        })
    });
    let (text, m) = scrape(metrics);
    assert!(
        everyone_seen,
        "some node never refreshed from or probed:\n{text}"
    );

    let exact = [
        (
            "alternator_dns_queries_total{transport=\"udp\",qtype=\"A\"}",
            13.0,
        ),
        (
            "alternator_dns_queries_total{transport=\"udp\",qtype=\"AAAA\"}",
            0.0,
        ),
        (
            "alternator_dns_queries_total{transport=\"tcp\",qtype=\"A\"}",
            2.0,
        ),
        ("alternator_dns_worker_queries_total{worker=\"0\"}", 13.0),
        (
            "alternator_dns_responses_total{transport=\"udp\",rcode=\"NOERROR\"}",
            10.0,
        ),
        (
            "alternator_dns_responses_total{transport=\"udp\",rcode=\"NXDOMAIN\"}",
            3.0,
        ),
        (
            "alternator_dns_responses_total{transport=\"udp\",rcode=\"REFUSED\"}",
            0.0,
        ),
        (
            "alternator_dns_responses_total{transport=\"tcp\",rcode=\"NOERROR\"}",
            2.0,
        ),
        (
            "alternator_dns_dropped_packets_total{reason=\"response_bit\"}",
            2.0,
        ),
        (
            "alternator_dns_dropped_packets_total{reason=\"too_short\"}",
            1.0,
        ),
        (
            "alternator_dns_dropped_packets_total{reason=\"access_denied\"}",
            0.0,
        ),
        (
            "alternator_dns_truncated_responses_total{transport=\"udp\"}",
            0.0,
        ),
        (
            "alternator_dns_rate_limit_slips_total{transport=\"udp\"}",
            0.0,
        ),
        ("alternator_dns_live_nodes{name=\"alternator.test.\"}", 3.0),
    ];
    for (key, want) in exact {
        assert_eq!(sample(&m, &text, key), want, "{key} in:\n{text}");
    }
    assert!(sample(&m, &text, "alternator_dns_snapshot_generation") >= 1.0);
    assert!(sample(&m, &text, "alternator_dns_start_time_seconds") > 1.0e9);
    let backend = r
        .log_field("alternator-dns ready", "backend")
        .expect("a backend in the ready line");
    assert!(["uring", "mmsg"].contains(&backend.as_str()), "{backend}");
    let build_info = format!(
        "alternator_dns_build_info{{version=\"{}\",io_backend=\"{backend}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&m, &text, &build_info), 1.0);
}

/// The base flags of the reload tests: no `--listen` flag, the config file
/// carries it.
fn reload_args(
    sim: &alternator_sim::SimCluster,
    seeds: &[IpAddr],
    config: &TempFile,
) -> Vec<String> {
    with_defaults(with(
        cluster_args(sim, seeds, INTERVAL_MS, TIMEOUT_MS),
        &["--config", config.path_str()],
    ))
}

// 3a. Reload: new TTL and a new name, and no query lost while reloading.
#[test]
fn sighup_applies_ttl_and_names_without_losing_a_query() {
    let (sim, addrs) = cluster(152, 3);
    let file = TempFile::new("reload-ttl", "listen = [\"127.0.0.1:0\"]\nttl = 4\n");
    let mut r = Responder::start_exact(&reload_args(&sim, &addrs, &file), &[]);
    r.wait_for_cluster_list();
    assert_eq!(ttl_now(&r), 4);
    let dc_name = format!("dc1.{DOMAIN}");
    let before = r.client().query(&dc_name, Rtype::A).expect("a reply");
    assert_eq!(
        before.rcode(),
        Rcode::NXDOMAIN,
        "{dc_name} before the reload"
    );

    write_config(
        &file.path,
        &format!(
            "listen = [\"127.0.0.1:0\"]\nttl = 30\n\n[[name]]\nname = \"{dc_name}\"\ndc = \"dc1\"\n"
        ),
    );
    sighup_and_wait(&mut r, "configuration reloaded", 1);
    assert_eq!(ttl_now(&r), 30);
    let reply = r.client().query(&dc_name, Rtype::A).expect("a reply");
    assert_eq!(reply.rcode(), Rcode::NOERROR, "{dc_name} after the reload");
    assert_eq!(reply.answer_ttls(), [30]);
    assert!(addrs.contains(&reply.addrs()[0]), "{:?}", reply.addrs());

    // A client asks without pause while the file is reloaded 10 times.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = Arc::clone(&stop);
        let server = r.udp_addr();
        let dc_name = dc_name.clone();
        std::thread::spawn(move || {
            let mut socket = DnsClient::from(IpAddr::from([127, 0, 0, 1]), server);
            let (mut answered, mut lost, mut bad) = (0u32, 0u32, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut id: u16 = 1;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && id < 60_000 {
                let name = if id.is_multiple_of(2) {
                    DOMAIN
                } else {
                    dc_name.as_str()
                };
                match socket.query_once(name, Rtype::A, Duration::from_secs(1)) {
                    None => lost += 1,
                    Some(reply) if reply.rcode() != Rcode::NOERROR || reply.addrs().len() != 1 => {
                        bad.push(format!("{name}: {} {:?}", reply.rcode(), reply.addrs()))
                    }
                    Some(_) => answered += 1,
                }
                id += 1;
            }
            (answered, lost, bad)
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    for i in 0..10u32 {
        write_config(
            &file.path,
            &format!(
                "listen = [\"127.0.0.1:0\"]\nttl = {}\n\n[[name]]\nname = \"{dc_name}\"\ndc = \"dc1\"\n",
                31 + i
            ),
        );
        sighup_and_wait(&mut r, "configuration reloaded", 2 + i as usize);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let (answered, lost, bad) = client.join().expect("the client thread");
    println!(
        "during 10 reloads: {answered} answered, {lost} lost, {} bad",
        bad.len()
    );
    assert_eq!(
        lost,
        0,
        "queries lost while reloading; log:\n{}",
        r.log_text()
    );
    assert!(bad.is_empty(), "bad answers while reloading: {bad:?}");
    assert!(answered >= 50, "only {answered} queries answered");
    assert_eq!(ttl_now(&r), 40);
    assert!(r.is_running());
}

// 3b. Reload: a file that does not load changes nothing; restart-only
// settings are reported and kept.
#[test]
fn sighup_with_a_bad_file_or_a_restart_only_change_keeps_serving() {
    let (sim, addrs) = cluster(153, 3);
    let good = "listen = [\"127.0.0.1:0\"]\nttl = 4\n";
    let file = TempFile::new("reload-bad", good);
    let mut r = Responder::start_exact(&reload_args(&sim, &addrs, &file), &[]);
    r.wait_for_cluster_list();
    assert_eq!(ttl_now(&r), 4);
    let rejected = "the new configuration is rejected";

    // A syntax error, with a TTL change that must not apply.
    write_config(
        &file.path,
        "listen = [\"127.0.0.1:0\"]\nttl = 30\nttl = = 5\n",
    );
    sighup_and_wait(&mut r, rejected, 1);
    assert_eq!(ttl_now(&r), 4, "a file with a syntax error was applied");

    // An unknown key, named in the error.
    write_config(
        &file.path,
        "listen = [\"127.0.0.1:0\"]\nttl = 30\nno-such-key = 1\n",
    );
    sighup_and_wait(&mut r, rejected, 2);
    // The error (several lines: TOML's own message) names the key.
    let log = r.log_text();
    let error = &log[log.rfind(rejected).expect("the error line")..];
    assert!(
        error.contains("no-such-key"),
        "the error does not name the unknown key; log:\n{log}"
    );
    assert_eq!(ttl_now(&r), 4, "a file with an unknown key was applied");
    assert_eq!(r.log_count("configuration reloaded"), 0);

    // A new listen address needs a restart: reported, the old one kept, the
    // rest (TTL) applied.
    write_config(&file.path, "listen = [\"127.0.0.1:5399\"]\nttl = 30\n");
    sighup_and_wait(&mut r, "configuration reloaded", 1);
    assert!(
        r.logs()
            .iter()
            .any(|l| l.contains("needs a restart") && l.contains("listen")),
        "no 'needs a restart' line for listen; log:\n{}",
        r.log_text()
    );
    assert_eq!(
        ttl_now(&r),
        30,
        "answers on the old address, with the new TTL"
    );
    assert_eq!(r.client().a(DOMAIN).len(), 1);
    assert!(r.is_running());
}

// 3c. SIGHUP without --config.
#[test]
fn sighup_without_config_is_logged_and_ignored() {
    let (sim, addrs) = cluster(154, 2);
    let mut r = Responder::start(&cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS));
    r.wait_for_cluster_list();
    sighup_and_wait(&mut r, "nothing to reload", 1);
    sighup_and_wait(&mut r, "nothing to reload", 2);
    assert!(r.is_running(), "SIGHUP stopped the server");
    assert_eq!(ttl_now(&r), 4);
    assert_eq!(r.log_count("configuration reloaded"), 0);
}

// 4. Access control.
#[test]
fn allow_list_refuses_or_drops_other_sources_over_udp_and_tcp() {
    let (sim, addrs) = cluster(155, 2);
    let allowed = IpAddr::from([127, 0, 155, 200]);
    let denied = IpAddr::from([127, 0, 0, 1]);
    let base = with(
        cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS),
        &["--allow", "127.0.155.200/32"],
    );

    // Refuse (the default).
    let r = Responder::start(&base);
    let mut from_denied = DnsClient::from(denied, r.udp_addr());
    let reply = from_denied
        .query_once(DOMAIN, Rtype::A, Duration::from_secs(2))
        .expect("a REFUSED reply");
    assert_eq!(reply.rcode(), Rcode::REFUSED);
    assert!(reply.addrs().is_empty(), "{:?}", reply.addrs());
    let mut from_allowed = DnsClient::from(allowed, r.udp_addr());
    let reply = from_allowed
        .query_once(DOMAIN, Rtype::A, Duration::from_secs(2))
        .expect("an answer for the allowed source");
    assert_eq!(reply.rcode(), Rcode::NOERROR);
    assert_eq!(reply.addrs().len(), 1);
    // TCP from 127.0.0.1 (denied): REFUSED; from the allowed source: answered.
    let reply = r.client().query_tcp(DOMAIN, Rtype::A).expect("a TCP reply");
    assert_eq!(reply.rcode(), Rcode::REFUSED);
    assert!(reply.addrs().is_empty());
    let reply = DnsClient::from(allowed, r.tcp_addr())
        .query_tcp(DOMAIN, Rtype::A)
        .expect("a TCP answer");
    assert_eq!(reply.rcode(), Rcode::NOERROR);
    assert_eq!(reply.addrs().len(), 1);
    drop(r);

    // Drop.
    let r = Responder::start(&with(base, &["--denied", "drop"]));
    let mut from_denied = DnsClient::from(denied, r.udp_addr());
    assert!(
        from_denied
            .query_once(DOMAIN, Rtype::A, Duration::from_millis(300))
            .is_none(),
        "a denied source got a reply with --denied drop"
    );
    let mut from_allowed = DnsClient::from(allowed, r.udp_addr());
    let reply = from_allowed
        .query_once(DOMAIN, Rtype::A, Duration::from_secs(2))
        .expect("an answer for the allowed source");
    assert_eq!(reply.rcode(), Rcode::NOERROR);
    assert!(
        r.client().query_tcp(DOMAIN, Rtype::A).is_none(),
        "a denied TCP source got a reply with --denied drop"
    );
    let reply = DnsClient::from(allowed, r.tcp_addr())
        .query_tcp(DOMAIN, Rtype::A)
        .expect("a TCP answer");
    assert_eq!(reply.rcode(), Rcode::NOERROR);
    let (text, m) = scrape(r.metrics_addr().expect("metrics address"));
    assert_eq!(
        sample(
            &m,
            &text,
            "alternator_dns_dropped_packets_total{reason=\"access_denied\"}"
        ),
        2.0,
        "one UDP query and one TCP connection dropped"
    );
}

// 5. Response rate limiting.
#[test]
fn rate_limit_bounds_a_flood_and_spares_other_networks() {
    const RATE: f64 = 20.0;
    const FLOOD: u16 = 2000;
    let (sim, addrs) = cluster(156, 2);
    let r = Responder::start(&with(
        cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS),
        &["--rate-limit", "20", "--rate-limit-slip", "2"],
    ));
    let server = r.udp_addr();

    // Another /24, at the rate: every query answered.
    let other = std::thread::spawn(move || {
        let mut socket = DnsClient::from(IpAddr::from([127, 0, 156, 201]), server);
        let mut failures = Vec::new();
        for i in 0..50u16 {
            match socket.query_once(DOMAIN, Rtype::A, Duration::from_secs(1)) {
                Some(reply)
                    if reply.rcode() == Rcode::NOERROR
                        && !reply.tc()
                        && reply.addrs().len() == 1 => {}
                other => failures.push(format!("query {i}: {other:?}")),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        failures
    });

    // The flood: 2,000 queries in about a second, 20 every 10 ms.
    let socket = DnsClient::from(IpAddr::from([127, 0, 0, 1]), server);
    let receiver = {
        let socket = socket.socket().try_clone().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        std::thread::spawn(move || {
            let (mut full, mut slipped, mut other) = (0u32, 0u32, 0u32);
            let mut buf = [0u8; 4096];
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let Ok(n) = socket.recv(&mut buf) else { break };
                match Reply::parse(buf[..n].to_vec()) {
                    Some(reply) if reply.tc() => slipped += 1,
                    Some(reply) if reply.rcode() == Rcode::NOERROR && reply.addrs().len() == 1 => {
                        full += 1
                    }
                    _ => other += 1,
                }
            }
            (full, slipped, other)
        })
    };
    let started = Instant::now();
    for id in 0..FLOOD {
        socket.send_raw(&build_query(id, DOMAIN, Rtype::A));
        if id % 20 == 19 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let elapsed = started.elapsed();
    let (full, slipped, other_replies) = receiver.join().unwrap();
    let failures = other.join().unwrap();
    let allowed = 3.0 * RATE * elapsed.as_secs_f64() + RATE;
    println!(
        "RRL: {FLOOD} queries in {elapsed:?}: {full} full answers (at most {allowed:.0} allowed), \
         {slipped} slipped (TC=1), {other_replies} other, {} dropped; other /24: {} of 50 failed",
        u32::from(FLOOD) - full - slipped - other_replies,
        failures.len()
    );
    assert!(
        f64::from(full) <= allowed,
        "{full} full answers in {elapsed:?} at {RATE}/s"
    );
    assert!(
        full >= 10,
        "only {full} full answers: the burst should pass"
    );
    assert!(slipped > 0, "no TC=1 slip");
    assert_eq!(other_replies, 0);
    assert!(failures.is_empty(), "another /24 was limited: {failures:?}");
    let (text, m) = scrape(r.metrics_addr().expect("metrics address"));
    assert!(
        sample(
            &m,
            &text,
            "alternator_dns_rate_limit_slips_total{transport=\"udp\"}"
        ) >= f64::from(slipped)
    );
    assert!(
        sample(
            &m,
            &text,
            "alternator_dns_dropped_packets_total{reason=\"rate_limited\"}"
        ) > 0.0
    );
}

/// A user's uid and gid from /etc/passwd.
fn passwd_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&user) && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// The four ids of a `Uid:` or `Gid:` line of /proc/PID/status.
fn proc_ids(pid: u32, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} line"))
        .split_whitespace()
        .map(|v| v.parse().expect("a numeric id"))
        .collect()
}

// 6. Dropping privileges.
#[test]
fn user_option_drops_privileges_or_says_why_not() {
    let (sim, addrs) = cluster(157, 2);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let args = with(
        cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS),
        &["--user", "nobody"],
    );
    if !root {
        let err = Responder::try_start(&args)
            .err()
            .expect("--user as non-root fails");
        assert!(
            err.contains("not as root") && err.contains("nobody"),
            "{err}"
        );
        return;
    }
    let Some((uid, gid)) = passwd_ids("nobody") else {
        eprintln!("no user nobody in /etc/passwd: skipping");
        return;
    };
    let r = Responder::start(&args);
    assert!(
        r.log_count("dropped root privileges") > 0,
        "{}",
        r.log_text()
    );
    assert_eq!(proc_ids(r.pid(), "Uid:"), [uid; 4], "uids of the server");
    assert_eq!(proc_ids(r.pid(), "Gid:"), [gid; 4], "gids of the server");
    let reply = r
        .client()
        .query(DOMAIN, Rtype::A)
        .expect("an answer as nobody");
    assert_eq!(reply.rcode(), Rcode::NOERROR);
    assert_eq!(reply.addrs().len(), 1);
    let reply = r
        .client()
        .query_tcp(DOMAIN, Rtype::A)
        .expect("a TCP answer as nobody");
    assert_eq!(reply.rcode(), Rcode::NOERROR);
    drop(r);

    let run = run_cli(&with(
        cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS),
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--user",
            "no-such-user-xyz",
        ],
    ));
    assert!(!run.status.success(), "{run:?}");
    assert!(run.stderr.contains("no-such-user-xyz"), "{}", run.stderr);
}

// 7. JSON logs.
#[test]
fn json_log_format_gives_one_json_object_per_line() {
    let (sim, addrs) = cluster(158, 2);
    let args = with_defaults(with(
        cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS),
        &["--listen", "127.0.0.1:0", "--log-format", "json"],
    ));
    let mut r = Responder::start_exact(&args, &[]);
    r.wait_for_cluster_list();
    assert_eq!(r.client().a(DOMAIN).len(), 1);
    let (status, _) = r.terminate(Duration::from_secs(2));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(r.wait_for_log("\"stopped\"", Duration::from_secs(2)));
    let logs = r.logs();
    assert!(logs.len() >= 4, "{logs:?}");
    let mut messages = Vec::new();
    for line in &logs {
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(json["level"].is_string(), "no level: {line}");
        let message = json["fields"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no fields.message: {line}"));
        messages.push(message.to_string());
    }
    let listening = logs
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|j| j["fields"]["message"] == "listening")
        .unwrap_or_else(|| panic!("no listening line: {messages:?}"));
    assert_eq!(
        listening["fields"]["udp"].as_str(),
        Some(r.udp_addr().to_string().as_str())
    );
    assert!(messages.iter().any(|m| m == "alternator-dns ready"));
}

// 8. SIGTERM under load.
#[test]
fn sigterm_during_a_flood_exits_cleanly_within_a_second() {
    let (sim, addrs) = cluster(159, 2);
    let mut r = Responder::start(&cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS));
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = Arc::clone(&stop);
        let client = DnsClient::from(IpAddr::from([127, 0, 0, 1]), r.udp_addr());
        let socket = client.socket().try_clone().unwrap();
        socket.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let (mut sent, mut received) = (0u64, 0u64);
            let mut buf = [0u8; 4096];
            let deadline = Instant::now() + Duration::from_secs(5);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && sent < 2_000_000 {
                if socket
                    .send(&build_query(sent as u16, DOMAIN, Rtype::A))
                    .is_ok()
                {
                    sent += 1;
                }
                while socket.recv(&mut buf).is_ok() {
                    received += 1;
                }
                if sent.is_multiple_of(64) {
                    std::thread::yield_now();
                }
            }
            (sent, received)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (status, took) = r.terminate(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (sent, received) = flood.join().unwrap();
    println!("flood: {sent} sent, {received} answered; exit {took:?} after SIGTERM");
    let status =
        status.unwrap_or_else(|| panic!("still running 1 s after SIGTERM; log:\n{}", r.log_text()));
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        r.log_text()
    );
    assert!(received > 0, "the flood got no answer before SIGTERM");
}

// 10. A degraded state made visible: seeds that no /localnodes answer has
// confirmed raise the gauge, fail /readyz with the reason, and log an ERROR
// naming the cause and what to check; all clear once the cluster answers.
#[test]
fn unverified_seeds_are_reported_until_the_cluster_confirms_them() {
    const UNCONFIRMED: &str = "which no /localnodes answer has confirmed";
    let (sim, addrs) = cluster(160, 2);
    sim.set_fault_all(alternator_sim::Fault::Garbage);
    let r = Responder::start(&cluster_args(&sim, &addrs[..1], INTERVAL_MS, TIMEOUT_MS));
    let wait = Duration::from_secs(10);
    assert!(
        r.wait_for_metric("alternator_dns_unverified_seeds", &[], 1.0, wait),
        "{:?}",
        r.metrics()
    );
    assert!(r.wait_for_log(UNCONFIRMED, wait), "{}", r.log_text());
    let line = r
        .logs()
        .into_iter()
        .find(|l| l.contains(UNCONFIRMED))
        .expect("the line");
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("not a JSON array")
            && line.contains("check=")
            && line.contains(&addrs[0].to_string()),
        "the cause, the node and what to check are not named: {line}"
    );
    assert!(
        wait_until(wait, || r
            .readyz()
            .is_some_and(|(_, body)| body.contains("the latest poll failed"))),
        "{:?}",
        r.readyz()
    );
    let (status, body) = r.readyz().expect("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready\n")
            && body.contains(&format!("serving the seeds ({})", addrs[0]))
            && body.contains("not a JSON array")
            && body.contains("--alternator-port"),
        "{body}"
    );
    assert_eq!(r.client().a(DOMAIN), vec![addrs[0]]);

    sim.set_fault_all(alternator_sim::Fault::None);
    assert!(
        r.wait_for_metric("alternator_dns_unverified_seeds", &[], 0.0, wait),
        "{:?}\n{}",
        r.metrics(),
        r.log_text()
    );
    assert!(
        wait_until(wait, || r.readyz() == Some((200, "ready\n".to_string()))),
        "{:?}",
        r.readyz()
    );
    assert_eq!(r.log_count(UNCONFIRMED), 1, "{}", r.log_text());
}
