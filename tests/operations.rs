//! Operating the real `alternator-dns` binary: systemd notifications, the
//! metrics and health endpoints, JSON logs, shutdown under load and a
//! degraded state made visible. Reloading is in `reload.rs`; the access
//! list, rate limiting and `--user` in `protection.rs`.
//!
//! Every test owns the node addresses 127.0.N.x for its own N (150 to 170
//! here; see `support::nodes`), so the tests run in parallel. Every loop is
//! bounded in time and count.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
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

/// The status code of `GET path`.
fn status_of(addr: SocketAddr, path: &str) -> u16 {
    http_status(addr, path)
        .unwrap_or_else(|| panic!("no HTTP answer to GET {path} from {addr}"))
        .0
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

    assert_eq!(status_of(metrics, "/healthz"), 200);
    assert!(
        wait_until(Duration::from_secs(5), || status_of(metrics, "/readyz")
            == 200),
        "/readyz never 200; log:\n{}",
        r.log_text()
    );
    assert_eq!(status_of(metrics, "/no-such-path"), 404);

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

// 3. JSON logs.
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

// 4. SIGTERM under load.
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

// 5. A degraded state made visible: seeds that no /localnodes answer has
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
