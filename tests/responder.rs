//! The real `alternator-dns` binary against a simulated Alternator cluster:
//! what a DNS client and an operator can observe.
//!
//! Every test owns the node addresses 127.0.N.x for its own N (see
//! `support::nodes`), so the tests run in parallel.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};

use alternator_sim::{Fault, HOST_IDS_PER_RESPONSE};
use support::*;

/// The usual refresh interval and per-request timeout of these tests.
const INTERVAL_MS: u64 = 100;
const TIMEOUT_MS: u64 = 200;

/// Slack allowed on top of "two refresh intervals" for scheduling on a busy machine.
const SLACK: Duration = Duration::from_millis(200);

/// Waits until an A answer names a node that is not a seed: the list learnt
/// from `/localnodes` is then in place (its log line comes just before).
fn wait_past_seeds(r: &Responder, seeds: &[IpAddr]) {
    r.wait_for_cluster_list();
    let mut client = r.client();
    assert!(
        wait_until(Duration::from_secs(5), || client
            .a(DOMAIN)
            .iter()
            .any(|a| !seeds.contains(a))),
        "still serving only the seeds {seeds:?}; log:\n{}",
        r.log_text()
    );
}

/// Asks `queries` A queries over one socket; panics on a missing reply.
fn collect_answers(r: &Responder, queries: usize) -> Vec<Vec<IpAddr>> {
    let mut client = r.client();
    (0..queries)
        .map(|i| {
            let reply = client
                .query(DOMAIN, Rtype::A)
                .unwrap_or_else(|| panic!("no reply to query {i}; log:\n{}", r.log_text()));
            assert_eq!(reply.rcode(), Rcode::NOERROR);
            reply.addrs()
        })
        .collect()
}

// 1. Spread over live nodes only.
#[test]
fn answers_come_only_from_live_nodes_and_spread_evenly() {
    let (sim, addrs) = cluster(10, 4);
    // The seed itself is not listed: once the list is learnt, it is never served.
    let unlisted = addrs[3];
    sim.set_listed(unlisted, false);
    let live = &addrs[..3];
    let r = Responder::start(&cluster_args(&sim, &[unlisted], INTERVAL_MS, TIMEOUT_MS));
    wait_past_seeds(&r, &[unlisted]);

    const QUERIES: usize = 3000;
    let mut counts: HashMap<IpAddr, usize> = HashMap::new();
    for answer in collect_answers(&r, QUERIES) {
        assert_eq!(answer.len(), 1, "one record per answer: {answer:?}");
        assert!(live.contains(&answer[0]), "{} is not live", answer[0]);
        *counts.entry(answer[0]).or_default() += 1;
    }
    let third = QUERIES / 3;
    for node in live {
        let n = counts.get(node).copied().unwrap_or(0);
        assert!(
            n.abs_diff(third) <= third / 10,
            "{node} got {n} of {QUERIES} answers, expected {third} +-10%: {counts:?}"
        );
    }
}

// 2. Removal.
#[test]
fn removed_node_disappears_within_two_refresh_intervals() {
    const INTERVAL: Duration = Duration::from_millis(250);
    let (sim, addrs) = cluster(11, 3);
    let args = with(cluster_args(&sim, &addrs, 250, 300), &["--answers", "all"]);
    let r = Responder::start(&args);
    r.wait_for_cluster_list();
    let mut client = r.client();
    assert_eq!(sorted(client.a(DOMAIN)), addrs);

    let gone = addrs[2];
    let changed = Instant::now();
    sim.set_listed(gone, false);
    let mut last_seen = None;
    let mut answers = 0;
    // Watch for six intervals: it must go, and stay gone.
    while changed.elapsed() < 6 * INTERVAL {
        let answer = client.a(DOMAIN);
        assert!(!answer.is_empty(), "no answer; log:\n{}", r.log_text());
        answers += 1;
        if answer.contains(&gone) {
            last_seen = Some(changed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let removal = last_seen.unwrap_or(Duration::ZERO);
    println!("removed node last served {removal:?} after the change ({answers} answers watched)");
    assert!(
        removal < 2 * INTERVAL + SLACK,
        "removed node still served {removal:?} after the change; log:\n{}",
        r.log_text()
    );
    assert_eq!(sorted(client.a(DOMAIN)), addrs[..2].to_vec());
    assert!(r
        .logs()
        .iter()
        .any(|l| l.contains("membership changed") && l.contains(&format!("removed={gone}"))));
}

// 3. Addition.
#[test]
fn added_node_appears_within_two_refresh_intervals() {
    const INTERVAL: Duration = Duration::from_millis(250);
    let (sim, addrs) = cluster(12, 2);
    let args = with(cluster_args(&sim, &addrs, 250, 300), &["--answers", "all"]);
    let r = Responder::start(&args);
    r.wait_for_cluster_list();
    let mut client = r.client();
    assert_eq!(sorted(client.a(DOMAIN)), addrs);

    let new = node(12, 3);
    let changed = Instant::now();
    sim.add_node(new).expect("add a node");
    let appeared = wait_until(Duration::from_secs(5), || client.a(DOMAIN).contains(&new));
    let took = changed.elapsed();
    assert!(appeared, "added node never served; log:\n{}", r.log_text());
    println!("added node first served {took:?} after the change");
    assert!(
        took < 2 * INTERVAL + SLACK,
        "added node served only {took:?} after the change"
    );
    // The change is logged right after the snapshot is swapped in, so the
    // line may reach the log reader a moment after the first answer.
    let logged = wait_until(Duration::from_secs(2), || {
        r.logs()
            .iter()
            .any(|l| l.contains("membership changed") && l.contains(&format!("added={new}")))
    });
    assert!(logged, "addition not logged; log:\n{}", r.log_text());
}

/// Starts with `seeds`, adds a node that is not a seed, and waits for it to be
/// served: only a refresher that reached a live node can know it.
fn assert_refresher_reaches_live_node(
    r: &Responder,
    sim: &alternator_sim::SimCluster,
    new: IpAddr,
) {
    sim.add_node(new).expect("add a node");
    let mut client = r.client();
    assert!(
        wait_until(Duration::from_secs(10), || client.a(DOMAIN).contains(&new)),
        "node added later never served; log:\n{}",
        r.log_text()
    );
}

// 4a. A seed where nothing listens.
#[test]
fn dead_seed_is_failed_over() {
    let (sim, addrs) = cluster(13, 2);
    let dead = node(13, 200);
    let args = with(
        cluster_args(&sim, &[dead, addrs[0]], INTERVAL_MS, TIMEOUT_MS),
        &["--answers", "all"],
    );
    let r = Responder::start(&args);
    assert_refresher_reaches_live_node(&r, &sim, node(13, 3));
    assert!(sim.localnodes_requests(addrs[0]) > 0);
}

// 4b. A seed that is down (its port closed).
#[test]
fn down_seed_is_failed_over() {
    let (sim, addrs) = cluster(14, 2);
    sim.set_fault(addrs[0], Fault::Down);
    let args = with(
        cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS),
        &["--answers", "all"],
    );
    let r = Responder::start(&args);
    assert_refresher_reaches_live_node(&r, &sim, node(14, 3));
    assert!(sim.localnodes_requests(addrs[1]) > 0);
}

// 5. Bad /localnodes answers from every node.
//
// Health checks are off here: these faults also hit `GET /`, and a node that
// fails its probes is rightly taken out (tests/cluster.rs covers that); this
// isolates what the refresher does with bad lists.
fn last_good_list_survives(test_no: u8, fault: Fault) {
    let (sim, addrs) = cluster(test_no, 3);
    let args = with(
        cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS),
        &["--answers", "all", "--health-check", "false"],
    );
    let r = Responder::start(&args);
    r.wait_for_cluster_list();
    let mut client = r.client();
    assert_eq!(sorted(client.a(DOMAIN)), addrs);

    let requests = || {
        addrs
            .iter()
            .map(|&a| sim.localnodes_requests(a))
            .sum::<u64>()
    };
    let before = requests();
    let changes = r.log_count("membership changed");
    let since = Instant::now();
    sim.set_fault_all(fault);
    // At least three failed rounds (each asks every node; one more request
    // for a round that may have been under way) and three intervals.
    let rounds_done = || {
        requests() > before + 3 * addrs.len() as u64
            && since.elapsed() >= 3 * Duration::from_millis(INTERVAL_MS)
    };
    let mut checked = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !rounds_done() && Instant::now() < deadline {
        let answer = client.a(DOMAIN);
        assert_eq!(
            sorted(answer),
            addrs,
            "{fault:?}: the last good list is no longer served; log:\n{}",
            r.log_text()
        );
        checked += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(rounds_done(), "{fault:?}: the refresher stopped polling");
    assert!(checked > 0);
    assert!(
        r.wait_for_log("no node answered /localnodes", Duration::from_secs(2)),
        "{fault:?}: the failure was not logged; log:\n{}",
        r.log_text()
    );
    assert_eq!(
        r.log_count("no node answered /localnodes"),
        1,
        "{fault:?}: the failure must be logged once, not per round; log:\n{}",
        r.log_text()
    );
    assert_eq!(
        r.log_count("membership changed"),
        changes,
        "{}",
        r.log_text()
    );

    // Recovery is noticed, and the list is still whole.
    sim.set_fault_all(Fault::None);
    assert!(
        r.wait_for_log("/localnodes reachable again", Duration::from_secs(10)),
        "{fault:?}: recovery not logged; log:\n{}",
        r.log_text()
    );
    assert_eq!(sorted(client.a(DOMAIN)), addrs);
}

#[test]
fn garbage_localnodes_keeps_the_last_good_list() {
    last_good_list_survives(15, Fault::Garbage);
}

#[test]
fn status_500_keeps_the_last_good_list() {
    last_good_list_survives(16, Fault::Status500);
}

#[test]
fn delay_past_the_refresh_timeout_keeps_the_last_good_list() {
    last_good_list_survives(17, Fault::Delay(Duration::from_millis(3 * TIMEOUT_MS)));
}

#[test]
fn empty_localnodes_keeps_the_last_good_list() {
    last_good_list_survives(18, Fault::EmptyList);
}

#[test]
fn hanging_nodes_keep_the_last_good_list() {
    last_good_list_survives(19, Fault::Hang);
}

#[test]
fn host_id_entries_are_skipped_with_one_warning_each() {
    const WARNING: &str = "skipping a /localnodes entry that is not an IP address";
    let (sim, addrs) = cluster(20, 3);
    sim.set_fault_all(Fault::HostIds);
    let args = with(
        cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS),
        &["--answers", "all"],
    );
    let r = Responder::start(&args);
    r.wait_for_cluster_list();
    assert!(
        r.wait_for_log_count(WARNING, HOST_IDS_PER_RESPONSE, Duration::from_secs(5)),
        "host IDs not warned about; log:\n{}",
        r.log_text()
    );
    // Several more rounds, each with the same host IDs.
    let requests = || {
        addrs
            .iter()
            .map(|&a| sim.localnodes_requests(a))
            .sum::<u64>()
    };
    let before = requests();
    let mut client = r.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while requests() < before + 4 && Instant::now() < deadline {
        assert_eq!(sorted(client.a(DOMAIN)), addrs);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(requests() >= before + 4, "the refresher stopped polling");
    assert_eq!(sorted(client.a(DOMAIN)), addrs);
    let logs = r.logs();
    let warnings: Vec<&String> = logs.iter().filter(|l| l.contains(WARNING)).collect();
    assert_eq!(
        warnings.len(),
        HOST_IDS_PER_RESPONSE,
        "one warning per distinct entry: {warnings:#?}"
    );
    for id in sim.host_ids() {
        assert!(
            warnings.iter().any(|w| w.contains(&id)),
            "no warning names {id}: {warnings:#?}"
        );
    }
    assert_eq!(r.log_count("no node answered /localnodes"), 0);
}

// 6. Seeds until the first good list.
#[test]
fn seeds_are_served_until_the_first_good_list() {
    let (sim, addrs) = cluster(21, 3);
    sim.set_fault_all(Fault::Hang);
    let seeds = addrs[..2].to_vec();
    let args = with(
        cluster_args(&sim, &seeds, INTERVAL_MS, TIMEOUT_MS),
        &["--answers", "all"],
    );
    let r = Responder::start(&args);
    let mut client = r.client();
    let since = Instant::now();
    // Over a few failed rounds, exactly the seeds.
    while since.elapsed() < Duration::from_millis(600) {
        assert_eq!(sorted(client.a(DOMAIN)), seeds, "log:\n{}", r.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(seeds.iter().any(|&s| sim.localnodes_requests(s) > 0));
    assert!(!r.learnt_cluster_list(), "{}", r.log_text());

    sim.set_fault_all(Fault::None);
    assert!(
        wait_until(Duration::from_secs(10), || sorted(client.a(DOMAIN))
            == addrs),
        "the cluster's list replaced the seeds too late or never; log:\n{}",
        r.log_text()
    );
}

// 7. Answer modes.
fn answers_mode(test_no: u8, mode: &str) -> (Vec<IpAddr>, Vec<Vec<IpAddr>>) {
    let (sim, addrs) = cluster(test_no, 3);
    // One seed, so that the answers show when the cluster's list is in place.
    let args = with(
        cluster_args(&sim, &addrs[..1], INTERVAL_MS, TIMEOUT_MS),
        &["--answers", mode],
    );
    let r = Responder::start(&args);
    wait_past_seeds(&r, &addrs[..1]);
    let answers = collect_answers(&r, 300);
    (addrs, answers)
}

#[test]
fn answers_two_gives_two_distinct_nodes() {
    let (addrs, answers) = answers_mode(22, "2");
    let mut seen = HashSet::new();
    for answer in &answers {
        assert_eq!(answer.len(), 2, "{answer:?}");
        assert_ne!(answer[0], answer[1], "{answer:?}");
        assert!(answer.iter().all(|a| addrs.contains(a)), "{answer:?}");
        seen.extend(answer.iter().copied());
    }
    assert_eq!(seen.len(), addrs.len(), "every node is served sometimes");
}

#[test]
fn answers_all_gives_every_node_rotated() {
    let (addrs, answers) = answers_mode(23, "all");
    let order = answers[0].clone();
    let mut first = HashSet::new();
    for answer in &answers {
        assert_eq!(sorted(answer.clone()), addrs, "{answer:?}");
        let offset = order
            .iter()
            .position(|&a| a == answer[0])
            .expect("a known node");
        let mut rotated = order.clone();
        rotated.rotate_left(offset);
        assert_eq!(answer, &rotated, "not a rotation of {order:?}");
        first.insert(answer[0]);
    }
    assert_eq!(first.len(), addrs.len(), "every node comes first sometimes");
}

#[test]
fn answers_one_gives_one_node() {
    let (addrs, answers) = answers_mode(24, "1");
    let mut seen = HashSet::new();
    for answer in &answers {
        assert_eq!(answer.len(), 1, "{answer:?}");
        assert!(addrs.contains(&answer[0]));
        seen.insert(answer[0]);
    }
    assert_eq!(seen.len(), addrs.len());
}

// 8. Both I/O backends, with two workers.
fn backend_answers(test_no: u8, io: &str, backend: &str) {
    let (sim, addrs) = cluster(test_no, 3);
    let args = with(
        cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS),
        &["--io", io, "--threads", "2"],
    );
    let r = match Responder::try_start(&args) {
        Ok(r) => r,
        Err(e) if io == "uring" => {
            let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|e| format!("unreadable ({e})"));
            if disabled == "0" {
                panic!(
                    "--io uring failed to start although io_uring is enabled \
                     (/proc/sys/kernel/io_uring_disabled = 0): {e}"
                );
            }
            eprintln!("skipped: io_uring is disabled here (io_uring_disabled = {disabled}): {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert!(
        r.logs().iter().any(|l| l.contains("alternator-dns ready")
            && l.to_lowercase()
                .contains(&format!("backend={}", backend.to_lowercase()))),
        "the ready line does not name the {backend} backend; log:\n{}",
        r.log_text()
    );
    r.wait_for_cluster_list();
    // Several client sockets, so that SO_REUSEPORT spreads them over both workers.
    let mut seen = HashSet::new();
    for _ in 0..16 {
        let mut client = r.client();
        for _ in 0..20 {
            let reply = client
                .query(DOMAIN, Rtype::A)
                .unwrap_or_else(|| panic!("no reply over {io}; log:\n{}", r.log_text()));
            assert_eq!(reply.rcode(), Rcode::NOERROR);
            assert!(reply.aa());
            assert_eq!(reply.answer_ttls(), vec![4]);
            let answer = reply.addrs();
            assert_eq!(answer.len(), 1);
            assert!(addrs.contains(&answer[0]), "{answer:?}");
            seen.insert(answer[0]);
        }
    }
    assert_eq!(seen.len(), addrs.len());
}

#[test]
fn uring_backend_answers() {
    backend_answers(25, "uring", "Uring");
}

#[test]
fn mmsg_backend_answers() {
    backend_answers(26, "mmsg", "Mmsg");
}

// 9. TCP.
#[test]
fn tcp_answers_like_udp_and_pipelines() {
    let (sim, addrs) = cluster(27, 3);
    let args = with(
        cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS),
        &["--answers", "all"],
    );
    let r = Responder::start(&args);
    r.wait_for_cluster_list();

    let tcp = r.client().query_tcp(DOMAIN, Rtype::A).expect("a TCP reply");
    let udp = r.client().query(DOMAIN, Rtype::A).expect("a UDP reply");
    assert_eq!(tcp.rcode(), Rcode::NOERROR);
    assert!(tcp.aa());
    assert_eq!(sorted(tcp.addrs()), sorted(udp.addrs()));
    assert_eq!(sorted(tcp.addrs()), addrs);
    assert_eq!(tcp.answer_ttls(), udp.answer_ttls());

    let queries = [
        build_query(0x1111, DOMAIN, Rtype::A),
        build_query(0x2222, &format!("below.{DOMAIN}"), Rtype::A),
    ];
    let replies = r
        .client()
        .exchange_tcp(&queries)
        .expect("two pipelined replies");
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0].id(), 0x1111);
    assert_eq!(replies[0].rcode(), Rcode::NOERROR);
    assert_eq!(sorted(replies[0].addrs()), addrs);
    assert_eq!(replies[1].id(), 0x2222);
    assert_eq!(replies[1].rcode(), Rcode::NXDOMAIN);
}

// 10. Hostile packets.
#[test]
fn hostile_packets_get_no_reply_and_do_not_stop_it() {
    let (sim, addrs) = cluster(28, 3);
    let mut r = Responder::start(&cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS));
    let client = r.client();

    let mut response = build_query(0x5151, DOMAIN, Rtype::A);
    response[2] |= 0x80; // QR=1
    client.send_raw(&response);
    client.send_raw(&response[..5]);
    assert_eq!(
        client.recv_raw(Duration::from_millis(300)),
        None,
        "a response or a 5-byte packet was answered"
    );
    assert!(!r.client().a(DOMAIN).is_empty());

    // A header that promises a question it does not carry, and one with none: FORMERR.
    for qdcount in [1u8, 0] {
        let header = [0xab, 0xcd, 0x01, 0x00, 0, qdcount, 0, 0, 0, 0, 0, 0];
        client.send_raw(&header);
        let reply = client
            .recv_raw(Duration::from_secs(2))
            .and_then(Reply::parse)
            .unwrap_or_else(|| panic!("no reply to a header with QDCOUNT={qdcount}"));
        assert_eq!(reply.id(), 0xabcd);
        assert_eq!(reply.rcode(), Rcode::FORMERR, "QDCOUNT={qdcount}");
    }

    let mut rng = SplitMix(0x00a1_7e27_a70d);
    for i in 0..4000 {
        let len = (rng.next_u64() % 600) as usize;
        let mut packet = rng.bytes(len);
        // Half of them look like queries for the served name with junk after.
        if i % 2 == 0 {
            let mut query = build_query(rng.next_u64() as u16, DOMAIN, Rtype::A);
            query.truncate(12 + (rng.next_u64() as usize % (query.len() - 11)));
            query.append(&mut packet);
            packet = query;
        }
        client.send_raw(&packet);
        // Drain whatever comes back, now and then, so our socket never fills.
        if i % 64 == 0 {
            while client.recv_raw(Duration::from_millis(1)).is_some() {}
        }
    }
    assert!(
        r.is_running(),
        "the burst killed it; log:\n{}",
        r.log_text()
    );
    let answer = r.client().a(DOMAIN);
    assert_eq!(
        answer.len(),
        1,
        "no answer after the burst; log:\n{}",
        r.log_text()
    );
    assert!(addrs.contains(&answer[0]));
    assert!(r.client().query_tcp(DOMAIN, Rtype::A).is_some());
}

// 11. SIGTERM.
#[test]
fn sigterm_exits_cleanly_within_a_second() {
    let (sim, addrs) = cluster(29, 1);
    let mut r = Responder::start(&cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS));
    r.wait_for_cluster_list();
    assert!(!r.client().a(DOMAIN).is_empty());
    let (status, took) = r.terminate(Duration::from_secs(5));
    let status = status.unwrap_or_else(|| panic!("still running 5 s after SIGTERM"));
    println!("exited {took:?} after SIGTERM with {status}");
    assert_eq!(status.code(), Some(0), "log:\n{}", r.log_text());
    assert!(took < Duration::from_secs(1), "took {took:?} to exit");
}

#[test]
fn sigint_exits_cleanly_within_a_second() {
    let (sim, addrs) = cluster(32, 1);
    let mut r = Responder::start(&cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS));
    assert!(!r.client().a(DOMAIN).is_empty());
    let (status, took) = r.signal(libc::SIGINT, Duration::from_secs(5));
    let status = status.unwrap_or_else(|| panic!("still running 5 s after SIGINT"));
    assert_eq!(status.code(), Some(0), "log:\n{}", r.log_text());
    assert!(took < Duration::from_secs(1), "took {took:?} to exit");
}

/// A `/localnodes` request that hangs (up to --refresh-timeout, here 2 s per
/// node) must not hold up the shutdown.
#[test]
fn sigterm_exits_within_a_second_while_a_refresh_hangs() {
    let (sim, addrs) = cluster(33, 2);
    sim.set_fault_all(Fault::Hang);
    let mut r = Responder::start(&cluster_args(&sim, &addrs, INTERVAL_MS, 2000));
    let in_flight = || {
        addrs
            .iter()
            .map(|&a| sim.localnodes_requests(a))
            .sum::<u64>()
            > 0
    };
    assert!(
        wait_until(Duration::from_secs(5), in_flight),
        "no /localnodes request"
    );
    let (status, took) = r.terminate(Duration::from_secs(6));
    println!("exited {took:?} after SIGTERM during a hanging refresh");
    let status = status.unwrap_or_else(|| panic!("still running 6 s after SIGTERM"));
    assert_eq!(status.code(), Some(0), "log:\n{}", r.log_text());
    assert!(
        took < Duration::from_secs(1),
        "took {took:?} to exit after SIGTERM while /localnodes hung; log:\n{}",
        r.log_text()
    );
}

// 12. Configuration.
#[test]
fn check_prints_the_effective_config_and_flags_override_the_file() {
    let (sim, addrs) = cluster(30, 2);
    let file = TempFile::new(
        "good",
        &format!(
            "domain = \"{DOMAIN}\"\nseed = [\"{}\"]\nalternator-port = {}\nttl = 30\n\
             refresh-interval = \"100ms\"\nanswers = 1\nns = [\"ns.example.net\"]\n",
            addrs[0],
            sim.port()
        ),
    );
    let run = run_cli(&["--config", file.path_str(), "--ttl", "7", "--check"]);
    assert!(run.status.success(), "{run:?}");
    let effective: toml::Table = toml::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("--check output is not TOML ({e}):\n{}", run.stdout));
    assert_eq!(effective["ttl"].as_integer(), Some(7), "{}", run.stdout);
    assert_eq!(effective["domain"].as_str(), Some(DOMAIN));
    assert_eq!(
        effective["alternator-port"].as_integer(),
        Some(i64::from(sim.port()))
    );
    assert_eq!(effective["refresh-interval"].as_str(), Some("100ms"));

    let r = Responder::start(&["--config", file.path_str(), "--ttl", "7"]);
    r.wait_for_cluster_list();
    let reply = r.client().query(DOMAIN, Rtype::A).expect("a reply");
    assert_eq!(reply.answer_ttls(), vec![7]);
    assert!(addrs.contains(&reply.addrs()[0]));
}

#[test]
fn unknown_config_key_is_rejected_by_name() {
    let file = TempFile::new(
        "unknown-key",
        &format!("domain = \"{DOMAIN}\"\nseed = [\"127.0.0.1\"]\nrefresh-intervall = \"1s\"\n"),
    );
    for extra in [&["--check"][..], &["--listen", "127.0.0.1:0"][..]] {
        let mut args = vec!["--config", file.path_str()];
        args.extend(extra);
        let run = run_cli(&args);
        assert!(!run.status.success(), "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("refresh-intervall"),
            "{args:?}: {run:?}"
        );
    }
}

#[test]
fn missing_domain_is_rejected_by_name() {
    for extra in [&["--check"][..], &["--listen", "127.0.0.1:0"][..]] {
        let mut args = vec!["--seed", "127.0.0.1"];
        args.extend(extra);
        let run = run_cli(&args);
        assert!(!run.status.success(), "{args:?}: {run:?}");
        assert!(run.stderr.contains("--domain"), "{args:?}: {run:?}");
    }
}

// 13. Names.
#[test]
fn names_keep_their_case_and_only_the_apex_has_addresses() {
    let (sim, addrs) = cluster(31, 2);
    let r = Responder::start(&cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS));
    let mut client = r.client();

    let query = build_query(0x0c0c, "AlTeRnAtOr.TeSt.", Rtype::A);
    client.send_raw(&query);
    let bytes = client
        .recv_raw(Duration::from_secs(2))
        .expect("a reply to the mixed-case query");
    let reply = Reply::parse(bytes.clone()).expect("a DNS reply");
    assert_eq!(reply.id(), 0x0c0c);
    assert_eq!(reply.rcode(), Rcode::NOERROR);
    assert!(reply.aa());
    assert_eq!(
        &bytes[12..query.len()],
        &query[12..],
        "the question is not echoed byte for byte"
    );
    assert_eq!(reply.addrs().len(), 1);
    assert!(addrs.contains(&reply.addrs()[0]));

    let below = client
        .query(&format!("www.{DOMAIN}"), Rtype::A)
        .expect("a reply below the apex");
    assert_eq!(below.rcode(), Rcode::NXDOMAIN);
    assert!(below.aa());
    assert_eq!(below.authority_types(), vec![Rtype::SOA]);

    for outside in ["example.com", "test", "xalternator.test"] {
        let refused = client.query(outside, Rtype::A).expect("a reply outside");
        assert_eq!(refused.rcode(), Rcode::REFUSED, "{outside}");
        assert!(refused.addrs().is_empty());
    }

    let aaaa = client.query(DOMAIN, Rtype::AAAA).expect("an AAAA reply");
    assert_eq!(aaaa.rcode(), Rcode::NOERROR);
    assert!(aaaa.addrs().is_empty());
    assert_eq!(aaaa.authority_types(), vec![Rtype::SOA]);
}

// IPv6 nodes are served in AAAA answers, IPv4 ones in A answers.
#[test]
fn ipv6_nodes_are_served_as_aaaa() {
    let v4 = node(34, 1);
    let v6: IpAddr = "::1".parse().expect("an IPv6 address");
    let sim = alternator_sim::SimCluster::start(&[v4, v6], 0).expect("start the cluster");
    let args = with(
        cluster_args(&sim, &[v4], INTERVAL_MS, TIMEOUT_MS),
        &["--answers", "all"],
    );
    let r = Responder::start(&args);
    r.wait_for_cluster_list();
    let mut client = r.client();
    let aaaa_served = || {
        DnsClient::new(r.udp_addr())
            .query(DOMAIN, Rtype::AAAA)
            .is_some_and(|reply| !reply.addrs().is_empty())
    };
    assert!(
        wait_until(Duration::from_secs(5), aaaa_served),
        "no AAAA answer; log:\n{}",
        r.log_text()
    );
    assert_eq!(client.a(DOMAIN), vec![v4]);
    let aaaa = client.query(DOMAIN, Rtype::AAAA).expect("an AAAA reply");
    assert_eq!(aaaa.rcode(), Rcode::NOERROR);
    assert_eq!(aaaa.addrs(), vec![v6]);
}

// An answer too large for a classic UDP reply is truncated (TC=1) and whole over TCP.
#[test]
fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let (sim, addrs) = cluster(35, 40);
    let args = with(
        cluster_args(&sim, &addrs[..1], INTERVAL_MS, TIMEOUT_MS),
        &["--answers", "all"],
    );
    let r = Responder::start(&args);
    r.wait_for_cluster_list();
    let whole_over_tcp = || {
        r.client()
            .query_tcp(DOMAIN, Rtype::A)
            .is_some_and(|reply| !reply.tc() && sorted(reply.addrs()) == addrs)
    };
    assert!(
        wait_until(Duration::from_secs(5), whole_over_tcp),
        "the 40 nodes are not all served over TCP; log:\n{}",
        r.log_text()
    );
    let udp = r.client().query(DOMAIN, Rtype::A).expect("a UDP reply");
    assert!(udp.bytes.len() <= 512, "{} bytes over UDP", udp.bytes.len());
    assert!(
        udp.tc(),
        "40 A records do not fit in 512 bytes: TC must be set"
    );
    assert!(
        udp.addrs().is_empty(),
        "a truncated answer is dropped whole"
    );
}

/// With `--listen ADDR:0` the kernel picks the UDP port and the server binds
/// TCP on the same port; when that port is already taken for TCP on ADDR, the
/// server must still start (choosing another port), not exit. Here a third
/// of the ephemeral TCP ports of 127.0.0.77 are held, so the port the kernel
/// picks for UDP is often taken for TCP; 25 starts make a miss very unlikely.
#[test]
fn listen_port_0_starts_even_when_the_udp_port_is_taken_for_tcp() {
    const LISTEN: &str = "127.0.0.77:0";
    const HELD: usize = 10_000;
    const STARTS: usize = 25;
    // Explicit ports (binding port 0 this many times is slow), from the
    // bottom of the usual ephemeral range, 32768-60999.
    let held: Vec<std::net::TcpListener> = (32768..=u16::MAX)
        .filter_map(|port| std::net::TcpListener::bind(("127.0.0.77", port)).ok())
        .take(HELD)
        .collect();
    assert!(
        held.len() > HELD / 2,
        "could hold only {} TCP ports",
        held.len()
    );
    let (sim, addrs) = cluster(36, 1);
    let args = with(
        cluster_args(&sim, &addrs, INTERVAL_MS, TIMEOUT_MS),
        &["--listen", LISTEN],
    );
    let mut collisions = 0;
    let mut first_error = None;
    for _ in 0..STARTS {
        match Responder::try_start(&args) {
            Ok(r) => assert!(!r.client().a(DOMAIN).is_empty()),
            Err(e) if is_tcp_port_collision(&e) => {
                collisions += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => panic!("{e}"),
        }
    }
    drop(held);
    assert_eq!(
        collisions,
        0,
        "{collisions} of {STARTS} starts with --listen {LISTEN} exited because the UDP \
         port was taken for TCP; first:\n{}",
        first_error.unwrap_or_default()
    );
}
