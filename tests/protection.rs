//! Exposing the real `alternator-dns` binary safely: the access list
//! (REFUSED or dropped over UDP and TCP), response rate limiting, and
//! dropping privileges with `--user`.
//!
//! Every test owns the node addresses 127.0.N.x for its own N (see
//! `support::nodes`), so the tests run in parallel. Every loop is bounded in
//! time and count.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};

use support::*;

/// The refresh interval and per-request timeout of these tests.
const INTERVAL_MS: u64 = 100;
const TIMEOUT_MS: u64 = 200;

// 1. Access control.
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

// 2. Response rate limiting.
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

// 3. Dropping privileges.
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
