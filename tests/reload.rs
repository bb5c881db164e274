//! Reloading the real `alternator-dns` binary with SIGHUP: new settings and
//! names applied without a lost query, a file that does not load or a
//! restart-only change leaving it serving as before, and SIGHUP without
//! `--config`.
//!
//! Every test owns the node addresses 127.0.N.x for its own N (see
//! `support::nodes`), so the tests run in parallel. Every loop is bounded in
//! time and count.

mod support;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};

use support::reload::*;
use support::*;

/// The refresh interval and per-request timeout of these tests.
const INTERVAL_MS: u64 = 100;
const TIMEOUT_MS: u64 = 200;

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

// 1. A new TTL and a new name, and no query lost while reloading.
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

// 2. A file that does not load changes nothing; restart-only
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

// 3. SIGHUP without --config.
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
