use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

use super::*;
use crate::nodes::view::{LastProbe, NameView, NodeView, NodesView, ViewRequests};

/// The samples of an exposition text: `name{labels}` (labels sorted) -> value,
/// after checking its syntax: every sample belongs to a family declared by
/// `# HELP` and `# TYPE` lines just before it, and no sample repeats.
fn parse(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with('\n'), "the text ends with a newline");
    let mut samples = BTreeMap::new();
    let mut helped = BTreeSet::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty());
            assert!(helped.insert(name.to_string()), "HELP twice for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(helped.contains(name), "TYPE before HELP for {name}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} ends in _total");
            }
            assert!(typed.insert(name.into(), kind.into()).is_none());
            current = Some(name.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "{line}");
        let (series, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("closing brace");
                let mut labels: Vec<String> = split_labels(inner);
                labels.sort();
                (name, labels)
            }
            None => (series, Vec::new()),
        };
        assert!(
            name.starts_with("alternator_dns_")
                && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name}"
        );
        let family = match typed.get(current.as_deref().unwrap_or("")) {
            Some(kind) if kind == "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name),
            _ => name,
        };
        assert_eq!(
            current.as_deref(),
            Some(family),
            "sample outside its family: {line}"
        );
        let key = if labels.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{}}}", labels.join(","))
        };
        assert!(samples.insert(key, value).is_none(), "duplicate {line}");
    }
    samples
}

/// `a="x",b="y\"z"` -> [`a="x"`, `b="y\"z"`], checking the quoting.
fn split_labels(inner: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    for c in inner.chars() {
        cur.push(c);
        if escaped {
            assert!(matches!(c, '\\' | '"' | 'n'), "bad escape in {inner}");
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c == ',' && !in_quotes {
            cur.pop();
            out.push(std::mem::take(&mut cur));
        }
    }
    assert!(!in_quotes && !escaped, "unterminated {inner}");
    out.push(cur);
    for l in &out {
        let (k, v) = l.split_once('=').expect("label=value");
        assert!(
            k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{k}"
        );
        assert!(
            v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
            "{l}"
        );
    }
    out
}

fn known_metrics() -> Metrics {
    let m = Metrics::new(3);
    m.set_io_backend("uring");
    let w0 = m.udp_worker(0).clone();
    let w1 = m.udp_worker(1).clone();
    for _ in 0..5 {
        w0.query(QueryType::A);
        w0.response(Rcode::NoError);
    }
    w0.query(QueryType::Aaaa);
    w0.response(Rcode::NoError);
    w0.dropped(DropReason::TooShort);
    w0.truncated();
    w1.queries(QueryType::A, 10);
    w1.query(QueryType::from_code(16)); // TXT
    w1.response(Rcode::from_code(3));
    w1.response(Rcode::from_code(16));
    w1.dropped(DropReason::RateLimited);
    w1.dropped(DropReason::RateLimited);
    w1.slipped();
    w1.forwarded();
    let tcp = m.tcp();
    tcp.query(QueryType::Soa);
    tcp.response(Rcode::Refused);
    tcp.dropped(DropReason::AccessDenied);
    tcp.forwarded();
    let c = m.control();
    c.refresh("10.0.0.1:8000", Outcome::Ok);
    c.refresh("10.0.0.1:8000", Outcome::Ok);
    c.refresh("10.0.0.1:8000", Outcome::Error);
    c.refresh("[fd00::2]:8000", Outcome::Error);
    c.health_probe("10.0.0.1:8000", Outcome::Ok);
    c.health_probe_took(Outcome::Ok, Duration::from_micros(400));
    c.health_probe_took(Outcome::Ok, Duration::from_millis(3));
    c.health_probe_took(Outcome::Error, Duration::from_millis(300));
    c.health_probe_took(Outcome::Error, Duration::from_secs(30));
    c.node_removed(RemovalReason::Refused, Some(Duration::from_micros(1500)));
    c.node_removed(RemovalReason::Refused, Some(Duration::from_millis(40)));
    c.node_removed(RemovalReason::Unlisted, None);
    c.set_tcp_connections(4);
    c.set_forward_outstanding(2);
    m
}

#[test]
fn render_gives_the_exact_samples() {
    let m = known_metrics();
    assert!(m.set_snapshot_source(|| SnapshotFacts {
        live_nodes: vec![
            ("alternator.example.com".into(), 3),
            ("we\"ird\\name\n".into(), 0)
        ],
        fail_open_nodes: vec![
            ("alternator.example.com".into(), 0),
            ("we\"ird\\name\n".into(), 2)
        ],
        unverified_seeds: true,
        generation: 42,
        age: Some(Duration::from_millis(1500)),
    }));
    assert!(!m.set_snapshot_source(SnapshotFacts::default));
    assert!(m.set_ready_source(|| ReadyFacts {
        workers_up: true,
        ready: false,
    }));
    assert!(!m.set_ready_source(ReadyFacts::default));
    let text = m.render();
    let s = parse(&text);
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));

    assert_eq!(
        get(&format!(
            "alternator_dns_build_info{{io_backend=\"uring\",version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    let start = get("alternator_dns_start_time_seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(start <= now && start > now - 600.0, "{start}");

    assert_eq!(
        get("alternator_dns_queries_total{qtype=\"A\",transport=\"udp\"}"),
        15.0
    );
    assert_eq!(
        get("alternator_dns_queries_total{qtype=\"AAAA\",transport=\"udp\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_queries_total{qtype=\"other\",transport=\"udp\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_queries_total{qtype=\"SOA\",transport=\"udp\"}"),
        0.0
    );
    assert_eq!(
        get("alternator_dns_queries_total{qtype=\"SOA\",transport=\"tcp\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_queries_total{qtype=\"A\",transport=\"tcp\"}"),
        0.0
    );

    assert_eq!(
        get("alternator_dns_worker_queries_total{worker=\"0\"}"),
        6.0
    );
    assert_eq!(
        get("alternator_dns_worker_queries_total{worker=\"1\"}"),
        11.0
    );
    assert_eq!(
        get("alternator_dns_worker_queries_total{worker=\"2\"}"),
        0.0
    );
    assert!(!s.contains_key("alternator_dns_worker_queries_total{worker=\"3\"}"));

    assert_eq!(
        get("alternator_dns_responses_total{rcode=\"NOERROR\",transport=\"udp\"}"),
        6.0
    );
    assert_eq!(
        get("alternator_dns_responses_total{rcode=\"NXDOMAIN\",transport=\"udp\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_responses_total{rcode=\"BADVERS\",transport=\"udp\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_responses_total{rcode=\"REFUSED\",transport=\"tcp\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_responses_total{rcode=\"REFUSED\",transport=\"udp\"}"),
        0.0
    );

    assert_eq!(
        get("alternator_dns_dropped_packets_total{reason=\"too_short\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_dropped_packets_total{reason=\"rate_limited\"}"),
        2.0
    );
    assert_eq!(
        get("alternator_dns_dropped_packets_total{reason=\"access_denied\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_dropped_packets_total{reason=\"send_failed\"}"),
        0.0
    );

    assert_eq!(
        get("alternator_dns_truncated_responses_total{transport=\"udp\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_truncated_responses_total{transport=\"tcp\"}"),
        0.0
    );
    assert_eq!(
        get("alternator_dns_forwarded_queries_total{transport=\"udp\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_forwarded_queries_total{transport=\"tcp\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_rate_limit_slips_total{transport=\"udp\"}"),
        1.0
    );

    assert_eq!(
        get("alternator_dns_refresh_requests_total{node=\"10.0.0.1:8000\",result=\"ok\"}"),
        2.0
    );
    assert_eq!(
        get("alternator_dns_refresh_requests_total{node=\"10.0.0.1:8000\",result=\"error\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_refresh_requests_total{node=\"[fd00::2]:8000\",result=\"ok\"}"),
        0.0
    );
    assert_eq!(
        get("alternator_dns_refresh_requests_total{node=\"[fd00::2]:8000\",result=\"error\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_health_probes_total{node=\"10.0.0.1:8000\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_node_removals_total{reason=\"refused\"}"),
        2.0
    );
    assert_eq!(
        get("alternator_dns_node_removals_total{reason=\"unlisted\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_node_removals_total{reason=\"timeout\"}"),
        0.0
    );
    let bucket = |le: &str| {
        get(&format!(
            "alternator_dns_node_removal_seconds_bucket{{le=\"{le}\",reason=\"refused\"}}"
        ))
    };
    assert_eq!(bucket("0.001"), 0.0);
    assert_eq!(bucket("0.0025"), 1.0);
    assert_eq!(bucket("0.025"), 1.0);
    assert_eq!(bucket("0.05"), 2.0, "buckets are cumulative");
    assert_eq!(bucket("+Inf"), 2.0);
    assert_eq!(
        get("alternator_dns_node_removal_seconds_count{reason=\"refused\"}"),
        2.0
    );
    assert!(
        (get("alternator_dns_node_removal_seconds_sum{reason=\"refused\"}") - 0.0415).abs() < 1e-9
    );
    assert!(
        !s.keys().any(|k| k.starts_with("alternator_dns_node_removal_seconds")
            && k.contains("unlisted")),
        "no time for a node no longer listed"
    );
    let probe_bucket = |result: &str, le: &str| {
        get(&format!(
            "alternator_dns_health_probe_seconds_bucket{{le=\"{le}\",result=\"{result}\"}}"
        ))
    };
    assert_eq!(probe_bucket("ok", "0.001"), 1.0);
    assert_eq!(probe_bucket("ok", "0.0025"), 1.0);
    assert_eq!(probe_bucket("ok", "0.005"), 2.0);
    assert_eq!(probe_bucket("ok", "+Inf"), 2.0);
    assert_eq!(probe_bucket("error", "0.25"), 0.0);
    assert_eq!(probe_bucket("error", "0.5"), 1.0);
    assert_eq!(
        probe_bucket("error", "10"),
        1.0,
        "above the last bound: only in +Inf"
    );
    assert_eq!(probe_bucket("error", "+Inf"), 2.0);
    assert_eq!(
        get("alternator_dns_health_probe_seconds_count{result=\"error\"}"),
        2.0
    );
    assert!((get("alternator_dns_health_probe_seconds_sum{result=\"error\"}") - 30.3).abs() < 1e-9);
    assert_eq!(m.control().health_probes_timed(Outcome::Ok), 2);
    assert_eq!(get("alternator_dns_tcp_connections"), 4.0);
    assert_eq!(get("alternator_dns_forward_outstanding_queries"), 2.0);

    assert_eq!(
        get("alternator_dns_live_nodes{name=\"alternator.example.com\"}"),
        3.0
    );
    assert_eq!(
        get("alternator_dns_live_nodes{name=\"we\\\"ird\\\\name\\n\"}"),
        0.0
    );
    assert_eq!(
        get("alternator_dns_fail_open_nodes{name=\"we\\\"ird\\\\name\\n\"}"),
        2.0
    );
    assert_eq!(
        get("alternator_dns_fail_open{name=\"we\\\"ird\\\\name\\n\"}"),
        1.0
    );
    assert_eq!(
        get("alternator_dns_fail_open{name=\"alternator.example.com\"}"),
        0.0
    );
    assert_eq!(get("alternator_dns_unverified_seeds"), 1.0);
    assert_eq!(get("alternator_dns_snapshot_generation"), 42.0);
    assert_eq!(get("alternator_dns_snapshot_age_seconds"), 1.5);
    assert_eq!(get("alternator_dns_workers_up"), 1.0);
    assert_eq!(get("alternator_dns_ready"), 0.0);

    // The exact lines, as a scraper sees them.
    for line in [
        "# HELP alternator_dns_queries_total DNS queries received, by transport and query type.",
        "# TYPE alternator_dns_queries_total counter",
        "alternator_dns_queries_total{transport=\"udp\",qtype=\"A\"} 15",
        "alternator_dns_worker_queries_total{worker=\"1\"} 11",
        "# TYPE alternator_dns_build_info gauge",
        "alternator_dns_snapshot_age_seconds 1.500",
        "# TYPE alternator_dns_health_probe_seconds histogram",
        "alternator_dns_health_probe_seconds_bucket{result=\"ok\",le=\"+Inf\"} 2",
        "# TYPE alternator_dns_workers_up gauge",
        "alternator_dns_ready 0",
        "alternator_dns_refresh_requests_total{node=\"10.0.0.1:8000\",result=\"error\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in\n{text}"
        );
    }

    // Every fixed family is complete, zeros included.
    let count = |prefix: &str| s.keys().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(count("alternator_dns_queries_total{"), 2 * QueryType::COUNT);
    assert_eq!(count("alternator_dns_responses_total{"), 2 * Rcode::COUNT);
    assert_eq!(
        count("alternator_dns_dropped_packets_total{"),
        DropReason::COUNT
    );
}

#[test]
fn without_a_snapshot_source_the_snapshot_families_are_absent() {
    let m = Metrics::new(1);
    let s = parse(&m.render());
    assert!(!s.keys().any(|k| k.starts_with("alternator_dns_live_nodes")));
    assert!(!s.contains_key("alternator_dns_snapshot_generation"));
    assert!(!s.contains_key("alternator_dns_workers_up"));
    assert!(!s.contains_key("alternator_dns_ready"));
    // The probe-time histogram is written from the start, zeros included.
    assert_eq!(
        s["alternator_dns_health_probe_seconds_count{result=\"error\"}"],
        0.0
    );
    let build = format!(
        "alternator_dns_build_info{{io_backend=\"unknown\",version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(s[&build], 1.0);
    // No age while only seeds are known.
    m.set_snapshot_source(|| SnapshotFacts {
        live_nodes: vec![],
        generation: 0,
        age: None,
        ..SnapshotFacts::default()
    });
    let s = parse(&m.render());
    assert_eq!(s["alternator_dns_snapshot_generation"], 0.0);
    assert!(!s.contains_key("alternator_dns_snapshot_age_seconds"));
}

#[test]
fn forgotten_nodes_disappear() {
    let m = known_metrics();
    assert_eq!(m.control().refresh_counts("10.0.0.1:8000"), [2, 1]);
    m.control().forget_node("10.0.0.1:8000");
    assert_eq!(m.control().refresh_counts("10.0.0.1:8000"), [0, 0]);
    let text = m.render();
    assert!(!text.contains("10.0.0.1:8000"), "{text}");
    assert!(text.contains("[fd00::2]:8000"));
}

#[test]
fn worker_counters_are_cache_line_isolated_and_sum() {
    assert_eq!(std::mem::align_of::<QueryMetrics>(), 128);
    assert_eq!(std::mem::size_of::<QueryMetrics>() % 128, 0);
    let m = known_metrics();
    let a = m.udp_worker(0).as_ref() as *const QueryMetrics as usize;
    let b = m.udp_worker(1).as_ref() as *const QueryMetrics as usize;
    assert_eq!(a % 128, 0);
    assert_eq!(b % 128, 0);
    let totals = m.udp_totals();
    assert_eq!(totals.query(QueryType::A), 15);
    assert_eq!(totals.total_queries(), 17);
    assert_eq!(totals.dropped(DropReason::RateLimited), 2);
    assert_eq!(totals.response(Rcode::NoError), 6);
}

#[test]
fn label_codes_map() {
    assert_eq!(QueryType::from_code(1), QueryType::A);
    assert_eq!(QueryType::from_code(28), QueryType::Aaaa);
    assert_eq!(QueryType::from_code(6), QueryType::Soa);
    assert_eq!(QueryType::from_code(2), QueryType::Ns);
    assert_eq!(QueryType::from_code(255), QueryType::Any);
    assert_eq!(QueryType::from_code(65), QueryType::Other);
    assert_eq!(Rcode::from_code(0), Rcode::NoError);
    assert_eq!(Rcode::from_code(1), Rcode::FormErr);
    assert_eq!(Rcode::from_code(2), Rcode::ServFail);
    assert_eq!(Rcode::from_code(4), Rcode::NotImp);
    assert_eq!(Rcode::from_code(5), Rcode::Refused);
    assert_eq!(Rcode::from_code(9), Rcode::Other);
    assert_eq!(DropReason::SourcePortZero.label(), "source_port_zero");
    assert_eq!(
        DropReason::ForwardQueueFull.to_string(),
        "forward_queue_full"
    );
    assert_eq!(DropReason::ResponseBit.label(), "response_bit");
    assert_eq!(DropReason::SendFailed.label(), "send_failed");
    assert_eq!(DropReason::COUNT, 7);
}

#[test]
fn counters_written_by_one_thread_are_read_by_another() {
    let m = Arc::new(Metrics::new(2));
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let w = m.udp_worker(i).clone();
            std::thread::spawn(move || {
                for _ in 0..100_000 {
                    w.query(QueryType::A);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(m.udp_totals().query(QueryType::A), 200_000);
}

/// One HTTP/1.1 request over a fresh connection; returns the status code,
/// the headers (lower-cased names) and the body.
async fn http(
    addr: std::net::SocketAddr,
    request: &str,
) -> (u16, BTreeMap<String, String>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (status, headers, body.to_string())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
}

/// A stand-in for the tracker answering view requests with `view`, or
/// never (it holds the requests) when `view` is None.
fn answer_views(view: Option<NodesView>) -> ViewRequests {
    let (views, mut requests) = tokio::sync::mpsc::channel::<oneshot::Sender<NodesView>>(8);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(reply) = requests.recv().await {
            match &view {
                Some(view) => drop(reply.send(view.clone())),
                None => held.push(reply),
            }
        }
    });
    views
}

fn one_node_view() -> NodesView {
    NodesView {
        generation: 7,
        nodes: vec![NodeView {
            address: "10.0.0.1".into(),
            listed: true,
            healthy: Some(false),
            served: false,
            excluded: false,
            names: vec![],
            last_probe: Some(LastProbe {
                ok: false,
                ms: 0.2,
                error: Some("cannot connect: connection refused".into()),
                age_s: 0.1,
            }),
            since: 3.5,
        }],
        names: vec![NameView {
            name: "alternator.example.com".into(),
            dc: None,
            rack: None,
            served: vec![],
            fallback: None,
            fail_open: false,
        }],
        locations: vec![],
    }
}

#[tokio::test]
async fn nodes_answers_the_trackers_view_as_json_or_503_when_it_does_not_answer() {
    for view in [Some(one_node_view()), None] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoints = Endpoints {
            metrics: Arc::new(Metrics::new(1)),
            ready: Arc::new(|| Readyz {
                ready: true,
                text: "ready".into(),
            }),
            views: answer_views(view.clone()),
        };
        let (_stop, stop_rx) = watch::channel(false);
        tokio::spawn(serve(listener, endpoints, stop_rx));
        let (status, headers, body) = http(addr, &get("/nodes")).await;
        match view {
            Some(view) => {
                assert_eq!(status, 200);
                assert_eq!(headers["content-type"], "application/json");
                let parsed: NodesView = serde_json::from_str(&body).unwrap();
                assert_eq!(parsed, view);
                assert!(body.contains("\"healthy\":false"), "{body}");
            }
            None => assert_eq!(status, 503, "{body}"),
        }
    }
}

#[tokio::test]
async fn serve_answers_the_three_paths_and_stops() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(known_metrics());
    let is_ready = Arc::new(AtomicBool::new(false));
    let ready: ReadyCheck = {
        let is_ready = is_ready.clone();
        Arc::new(move || {
            let ready = is_ready.load(Ordering::Relaxed);
            Readyz {
                ready,
                text: if ready { "ready" } else { "not ready: why" }.into(),
            }
        })
    };
    let (stop, stop_rx) = watch::channel(false);
    let endpoints = Endpoints {
        metrics: metrics.clone(),
        ready,
        views: answer_views(None),
    };
    let server = tokio::spawn(serve(listener, endpoints, stop_rx));

    let (status, headers, body) = http(addr, &get("/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    // Nothing changed in between, so the text is the same.
    assert_eq!(body, metrics.render());
    let samples = parse(&body);
    assert_eq!(
        samples["alternator_dns_worker_queries_total{worker=\"0\"}"],
        6.0
    );

    let (status, _, body) = http(addr, &get("/healthz")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, _, body) = http(addr, &get("/readyz")).await;
    assert_eq!((status, body.as_str()), (503, "not ready: why"));
    is_ready.store(true, Ordering::Relaxed);
    let (status, _, body) = http(addr, &get("/readyz?verbose")).await;
    assert_eq!((status, body.as_str()), (200, "ready"));

    let (status, _, _) = http(addr, &get("/")).await;
    assert_eq!(status, 404);
    let (status, _, _) = http(addr, &get("/metrics/extra")).await;
    assert_eq!(status, 404);
    let (status, headers, _) = http(
        addr,
        "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET, HEAD");
    let (status, headers, body) = http(
        addr,
        "HEAD /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("content-type"));
    assert_eq!(body, "");

    // A request head over the limit is refused.
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(super::http::MAX_HEADER_BYTES + 100)
    );
    let (status, _, _) = http(addr, &big).await;
    assert_eq!(status, 431);

    // A keep-alive connection stays open across requests ...
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(std::str::from_utf8(&buf[..n])
        .unwrap()
        .starts_with("HTTP/1.1 200"));

    // ... until shutdown, which closes it and ends `serve`.
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns on shutdown")
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buf))
        .await
        .expect("the kept connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}
