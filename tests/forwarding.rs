//! `--forward`: names outside the zone go to an upstream resolver, through the
//! real binary, with a small upstream of the test's own on loopback.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};
use support::*;

/// A resolver that answers every A query with 192.0.2.7 (question lowercased,
/// as some resolvers do), or stays silent.
struct FakeUpstream {
    addr: SocketAddr,
    silent: Arc<AtomicBool>,
    queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeUpstream {
    fn start() -> FakeUpstream {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the upstream");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("local address");
        let silent = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (silent, queries, stop) = (silent.clone(), queries.clone(), stop.clone());
            move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::Relaxed);
                    if !silent.load(Ordering::Relaxed) {
                        let _ = socket.send_to(&answer(&buf[..len]), from);
                    }
                }
            }
        });
        FakeUpstream {
            addr,
            silent,
            queries,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Header and question of `query` (lowercased), QR+RA, one A record 192.0.2.7.
fn answer(query: &[u8]) -> Vec<u8> {
    let mut end = 12;
    while end < query.len() && query[end] != 0 {
        end += 1 + usize::from(query[end]);
    }
    end = (end + 5).min(query.len());
    let mut a = query[..end].to_ascii_lowercase();
    a[..2].copy_from_slice(&query[..2]);
    a[2] = 0x80 | (query[2] & 0x01);
    a[3] = 0x80;
    a[4..12].copy_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
    a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
    a
}

fn start_with_upstream(
    test_no: u8,
    upstream: SocketAddr,
    timeout_ms: u64,
) -> (Responder, alternator_sim::SimCluster, Vec<std::net::IpAddr>) {
    let (sim, addrs) = cluster(test_no, 2);
    let mut args = cluster_args(&sim, &addrs, 200, 300);
    args.extend([
        "--forward".to_string(),
        upstream.to_string(),
        "--forward-timeout".to_string(),
        format!("{timeout_ms}ms"),
    ]);
    (Responder::start(&args), sim, addrs)
}

#[test]
fn names_outside_the_zone_are_forwarded_over_udp_and_tcp() {
    let upstream = FakeUpstream::start();
    let (r, _sim, addrs) = start_with_upstream(45, upstream.addr, 500);
    let mut client = r.client();
    let reply = client
        .query("WWW.Example.ORG", Rtype::A)
        .expect("a forwarded answer");
    assert_eq!(reply.rcode(), Rcode::NOERROR);
    assert_eq!(
        reply.addrs(),
        vec!["192.0.2.7".parse::<std::net::IpAddr>().unwrap()]
    );
    let question = reply.message().first_question().expect("a question");
    assert_eq!(
        question.qname().to_string(),
        "WWW.Example.ORG",
        "client's case restored"
    );

    let reply = r
        .client()
        .query_tcp("other.example.net", Rtype::A)
        .expect("TCP answer");
    assert_eq!(
        reply.addrs(),
        vec!["192.0.2.7".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(upstream.queries.load(Ordering::Relaxed) >= 2);

    // The zone itself is still answered locally, never forwarded.
    let before = upstream.queries.load(Ordering::Relaxed);
    let nodes = client.a(DOMAIN);
    assert!(addrs.contains(&nodes[0]));
    let reply = client
        .query(&format!("nope.{DOMAIN}"), Rtype::A)
        .expect("NXDOMAIN");
    assert_eq!(reply.rcode(), Rcode::NXDOMAIN);
    assert_eq!(upstream.queries.load(Ordering::Relaxed), before);
}

#[test]
fn a_dead_upstream_gives_servfail_in_time_while_the_zone_stays_fast() {
    let upstream = FakeUpstream::start();
    upstream.silent.store(true, Ordering::Relaxed);
    let (r, _sim, addrs) = start_with_upstream(46, upstream.addr, 300);
    // Keep forwarded queries in flight while the zone is queried.
    let flood = std::thread::spawn({
        let server = r.udp_addr();
        move || {
            let client = DnsClient::new(server);
            for id in 0..200u16 {
                client.send_raw(&build_query(id, "slow.example.org", Rtype::A));
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    let mut client = r.client();
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let started = Instant::now();
        let nodes = client.a(DOMAIN);
        slowest = slowest.max(started.elapsed());
        assert!(!nodes.is_empty() && addrs.contains(&nodes[0]));
    }
    flood.join().expect("flood thread");
    println!("slowest zone answer while the upstream was dead: {slowest:?}");
    assert!(slowest < Duration::from_millis(250), "{slowest:?}");

    let started = Instant::now();
    let reply = client
        .query("dead.example.org", Rtype::A)
        .expect("SERVFAIL arrives");
    let took = started.elapsed();
    assert_eq!(reply.rcode(), Rcode::SERVFAIL);
    println!("SERVFAIL after {took:?} with --forward-timeout 300ms");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(800),
        "{took:?}"
    );
}

/// One query for `name` from `source` over UDP (with retries) and over TCP.
fn ask_from(source: IpAddr, server: (SocketAddr, SocketAddr), name: &str) -> (Reply, Reply) {
    let mut client = DnsClient::from(source, server.0).with_tcp(server.1);
    let udp = client.query(name, Rtype::A);
    let tcp = client.query_tcp(name, Rtype::A);
    (
        udp.unwrap_or_else(|| panic!("no UDP reply to {source} for {name}")),
        tcp.unwrap_or_else(|| panic!("no TCP reply to {source} for {name}")),
    )
}

fn forwarded(reply: &Reply) -> bool {
    reply.rcode() == Rcode::NOERROR && reply.addrs() == vec![IpAddr::from([192, 0, 2, 7])]
}

#[test]
fn forwarding_is_refused_to_sources_outside_forward_allow() {
    let upstream = FakeUpstream::start();
    let (sim, addrs) = cluster(47, 2);
    let mut args = cluster_args(&sim, &addrs, 200, 300);
    args.extend(
        [
            "--forward",
            &upstream.addr.to_string(),
            "--forward-allow",
            "127.0.47.0/24",
        ]
        .map(String::from),
    );
    let r = Responder::start(&args);
    let server = (r.udp_addr(), r.tcp_addr());
    assert!(
        r.logs()
            .iter()
            .any(|l| l.contains("for sources in 127.0.47.0/24 (--forward-allow)")),
        "the start-up log does not say who may recurse:\n{}",
        r.log_text()
    );

    let inside = IpAddr::from([127, 0, 47, 9]);
    let (udp, tcp) = ask_from(inside, server, "www.example.org");
    assert!(forwarded(&udp) && forwarded(&tcp), "{udp:?} {tcp:?}");
    let asked = upstream.queries.load(Ordering::Relaxed);
    assert!(asked >= 2, "{asked}");

    // Loopback is not in the list given: REFUSED, as without --forward, and
    // the upstream is not asked.
    let outside = IpAddr::from([127, 0, 0, 1]);
    let (udp, tcp) = ask_from(outside, server, "www.example.org");
    for reply in [&udp, &tcp] {
        assert_eq!(reply.rcode(), Rcode::REFUSED);
        assert!(reply.addrs().is_empty());
        assert!(!reply.aa());
    }
    assert_eq!(upstream.queries.load(Ordering::Relaxed), asked);
    // The zone itself is answered to every source.
    let (udp, tcp) = ask_from(outside, server, DOMAIN);
    assert!(addrs.contains(&udp.addrs()[0]) && addrs.contains(&tcp.addrs()[0]));
}

#[test]
fn forward_allow_takes_effect_on_reload() {
    let upstream = FakeUpstream::start();
    let (sim, addrs) = cluster(48, 2);
    let config = |allow: &str| {
        format!(
            "listen = [\"127.0.0.1:0\"]\nforward = [\"{}\"]\nforward-allow = [\"{allow}\"]\n",
            upstream.addr
        )
    };
    let file = TempFile::new("forward-allow-reload", &config("127.0.48.0/24"));
    let mut args = cluster_args(&sim, &addrs, 200, 300);
    args.extend(["--config", file.path_str()].map(String::from));
    let mut r = Responder::start(&args);
    let server = (r.udp_addr(), r.tcp_addr());
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let (udp, tcp) = ask_from(loopback, server, "www.example.org");
    assert_eq!((udp.rcode(), tcp.rcode()), (Rcode::REFUSED, Rcode::REFUSED));

    let replaced = file.path.with_extension("new");
    std::fs::write(&replaced, config("127.0.0.0/8")).expect("write the file");
    std::fs::rename(&replaced, &file.path).expect("replace the file");
    let (still_running, _) = r.signal(libc::SIGHUP, Duration::ZERO);
    assert!(still_running.is_none());
    assert!(
        r.wait_for_log("configuration reloaded", Duration::from_secs(10)),
        "{}",
        r.log_text()
    );
    let (udp, tcp) = ask_from(loopback, server, "www.example.org");
    assert!(forwarded(&udp) && forwarded(&tcp), "{udp:?} {tcp:?}");
    let (udp, tcp) = ask_from(IpAddr::from([127, 0, 48, 1]), server, "www.example.org");
    assert!(forwarded(&udp) && forwarded(&tcp), "{udp:?} {tcp:?}");
}
