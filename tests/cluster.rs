//! The real `alternator-dns` binary against simulated clusters with
//! datacenters, racks, health checks, HTTPS and IPv6: what a DNS client and an
//! operator see, through DNS answers and the log.
//!
//! Every test owns the node addresses 127.0.N.x for its own N (100 to 140 in
//! this file), so the tests run in parallel with each other and with the
//! other test files.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};

use alternator_sim::{Fault, SimCluster, SimNode, SimOptions, SimTls};
use support::*;

/// Refresh interval and per-request timeout where the test is not about them.
const REFRESH_MS: u64 = 200;

/// Health-check flags where the test is not about the defaults: probes every
/// 100 ms. The timeout is kept above the interval's 100 ms so that a busy
/// machine does not take healthy nodes out.
const FAST_HEALTH: [&str; 4] = ["--health-interval", "100ms", "--health-timeout", "200ms"];

/// How long a change may take to show in the answers (several refresh
/// intervals and probes, with room for a busy machine).
const SETTLE: Duration = Duration::from_secs(5);

/// The removal bound for the default health-check settings. The probe
/// schedule keeps it with 100 ms to spare in virtual time (src/nodes/driver's
/// paused-clock tests); here the binary is held to it with room for a loaded
/// 2-core machine, and the measured times are printed.
const REMOVAL_BOUND: Duration = Duration::from_millis(1500);
const LOADED_MACHINE: Duration = Duration::from_millis(1000);

/// A node whose process dies (its port refuses, its connections close) is
/// out as soon as the closed kept connection is noticed and the connection
/// that follows is refused: the target is 250 ms at worst. The room for a
/// loaded machine is kept below the 0.66-1.03 s that waiting for the next
/// probes used to take.
const DEATH_BOUND: Duration = Duration::from_millis(250);
const DEATH_LOADED: Duration = Duration::from_millis(350);

/// A node that hangs: two timed-out probes, the second at once after the
/// first (src/nodes/driver's paused-clock tests hold 1.15 s).
const HANG_BOUND: Duration = Duration::from_millis(1200);

/// How often the measuring loops query.
const QUERY_EVERY: Duration = Duration::from_millis(5);

/// The removal counter and histogram, and every reason they count.
const REMOVALS: &str = "alternator_dns_node_removals_total";
const REMOVAL_SECONDS: &str = "alternator_dns_node_removal_seconds";
const REMOVAL_REASONS: [&str; 6] = [
    "refused", "closed", "timeout", "status", "error", "unlisted",
];

const DC2_NAME: &str = "dc2.alternator.test";
const RACK1_NAME: &str = "rack1.dc1.alternator.test";
/// Not served, but above [`RACK1_NAME`]: exists with no records.
const DC1_NAME: &str = "dc1.alternator.test";

fn with(mut args: Vec<String>, more: &[&str]) -> Vec<String> {
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

/// The usual flags with short intervals, fast health checks and
/// `--answers all`, so that one answer shows a name's whole list.
fn fast_args(sim: &SimCluster, seeds: &[IpAddr]) -> Vec<String> {
    let args = with(
        cluster_args(sim, seeds, REFRESH_MS, REFRESH_MS),
        &["--answers", "all"],
    );
    with(args, &FAST_HEALTH)
}

/// The flags for the tests of the default health-check settings: short
/// refresh, `--answers all`, health flags left out.
fn default_health_args(sim: &SimCluster, seeds: &[IpAddr]) -> Vec<String> {
    with(
        cluster_args(sim, seeds, REFRESH_MS, REFRESH_MS),
        &["--answers", "all"],
    )
}

/// Six nodes for test `test_no`: 1-2 in dc1/rack1, 3-4 in dc1/rack2, 5 in
/// dc2/rack1 (a rack1 of another datacenter), 6 in dc2/rack2.
fn six_nodes(test_no: u8, options: SimOptions) -> (SimCluster, Vec<IpAddr>) {
    let addrs = nodes(test_no, 6);
    let layout = [
        ("dc1", "rack1"),
        ("dc1", "rack1"),
        ("dc1", "rack2"),
        ("dc1", "rack2"),
        ("dc2", "rack1"),
        ("dc2", "rack2"),
    ];
    let located: Vec<SimNode> = addrs
        .iter()
        .zip(layout)
        .map(|(&addr, (dc, rack))| SimNode::new(addr, dc, rack))
        .collect();
    let sim = SimCluster::start_with(&located, 0, options).expect("start the simulated cluster");
    (sim, addrs)
}

/// The sorted addresses of one answer for `name`/`qtype`; `None` when no
/// reply came or its rcode is not NOERROR.
fn served(client: &mut DnsClient, name: &str, qtype: Rtype) -> Option<Vec<IpAddr>> {
    let reply = client.query(name, qtype)?;
    (reply.rcode() == Rcode::NOERROR).then(|| sorted(reply.addrs()))
}

/// The sorted A answer for `name`; panics with the log when there is none.
fn a_set(r: &Responder, client: &mut DnsClient, name: &str) -> Vec<IpAddr> {
    served(client, name, Rtype::A)
        .unwrap_or_else(|| panic!("no NOERROR reply for {name}; log:\n{}", r.log_text()))
}

/// Waits until the A answer for `name` is exactly `expected`.
fn expect_served(r: &Responder, client: &mut DnsClient, name: &str, expected: &[IpAddr]) {
    let expected = sorted(expected.to_vec());
    let mut last = None;
    let ok = wait_until(SETTLE, || {
        last = served(client, name, Rtype::A);
        last.as_ref() == Some(&expected)
    });
    assert!(
        ok,
        "{name} should serve {expected:?}, serves {last:?}; log:\n{}",
        r.log_text()
    );
}

/// Asks every name in turn for `duration` (every 10 ms) and checks each
/// answer is exactly its expected set.
fn assert_stays(
    r: &Responder,
    client: &mut DnsClient,
    expected: &[(&str, Vec<IpAddr>)],
    duration: Duration,
) -> usize {
    let expected: Vec<(&str, Vec<IpAddr>)> = expected
        .iter()
        .map(|(name, set)| (*name, sorted(set.clone())))
        .collect();
    let start = Instant::now();
    let mut queries = 0;
    while start.elapsed() < duration {
        for (name, set) in &expected {
            let got = a_set(r, client, name);
            queries += 1;
            assert_eq!(
                &got,
                set,
                "{name} after {:?} ({queries} queries); log:\n{}",
                start.elapsed(),
                r.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    queries
}

/// Checks a NODATA reply: NOERROR, authoritative, no answer, the SOA in the
/// authority section.
fn assert_nodata(client: &mut DnsClient, name: &str, qtype: Rtype) {
    let reply = client
        .query(name, qtype)
        .unwrap_or_else(|| panic!("no reply for {name} {qtype}"));
    assert_eq!(reply.rcode(), Rcode::NOERROR, "{name} {qtype}");
    assert!(reply.aa(), "{name} {qtype}");
    assert!(
        reply.addrs().is_empty(),
        "{name} {qtype}: {:?}",
        reply.addrs()
    );
    assert_eq!(reply.authority_types(), vec![Rtype::SOA], "{name} {qtype}");
}

fn assert_nxdomain(client: &mut DnsClient, name: &str) {
    let reply = client
        .query(name, Rtype::A)
        .unwrap_or_else(|| panic!("no reply for {name}"));
    assert_eq!(reply.rcode(), Rcode::NXDOMAIN, "{name}");
    assert!(reply.aa(), "{name}");
    assert_eq!(reply.authority_types(), vec![Rtype::SOA], "{name}");
}

/// Log lines containing every one of `needles`.
fn log_lines(r: &Responder, needles: &[&str]) -> Vec<String> {
    r.logs()
        .into_iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

fn median_and_max(times: &[Duration]) -> (Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2
    } else {
        sorted[sorted.len() / 2]
    };
    (median, *sorted.last().expect("at least one time"))
}

fn millis(times: &[Duration]) -> Vec<u128> {
    times.iter().map(Duration::as_millis).collect()
}

/// The removals counted under `reason` in the metrics text `text`.
fn removals(text: &str, reason: &str) -> f64 {
    metric_sum(text, REMOVALS, &[("reason", reason)])
}

/// The current metrics text; panics with the log when the scrape fails.
fn scrape(r: &Responder) -> String {
    r.metrics()
        .unwrap_or_else(|| panic!("no metrics scrape; log:\n{}", r.log_text()))
}

/// A responder for `sim` with the dc2 and rack1 names as flags, fast
/// intervals and `extra` flags.
fn start_named(sim: &SimCluster, seeds: &[IpAddr], extra: &[&str]) -> Responder {
    let dc2 = format!("{DC2_NAME}=dc2");
    let rack1 = format!("{RACK1_NAME}=dc1/rack1");
    let args = with(
        with(fast_args(sim, seeds), &["--name", &dc2, "--name", &rack1]),
        extra,
    );
    Responder::start(&args)
}

// 1. Names per datacenter and rack.
#[test]
fn dc_and_rack_names_serve_their_own_nodes() {
    let (sim, n) = six_nodes(100, SimOptions::default());
    let r = start_named(&sim, &n[..1], &[]);
    r.wait_for_cluster_list();
    let mut client = r.client();
    let dc2 = n[4..].to_vec();
    let rack1 = n[..2].to_vec();
    expect_served(&r, &mut client, DC2_NAME, &dc2);
    expect_served(&r, &mut client, RACK1_NAME, &rack1);

    // Over many refresh rounds, every name keeps exactly its own nodes: not
    // dc2's rack1 for the rack name, not dc1's for the dc2 name. (The apex
    // is checked by the next test.)
    let queries = assert_stays(
        &r,
        &mut client,
        &[(DC2_NAME, dc2.clone()), (RACK1_NAME, rack1.clone())],
        Duration::from_millis(1500),
    );
    assert!(queries > 50, "only {queries} queries");

    // Above a served name but not served: NODATA, for A and AAAA alike.
    assert_nodata(&mut client, DC1_NAME, Rtype::A);
    assert_nodata(&mut client, DC1_NAME, Rtype::AAAA);
    // No IPv6 node: AAAA of a served name is NODATA too.
    assert_nodata(&mut client, DC2_NAME, Rtype::AAAA);
    // Other names below the apex, and below a served name: NXDOMAIN.
    for missing in [
        "www.alternator.test",
        "dc3.alternator.test",
        "rack2.dc1.alternator.test",
        "x.dc2.alternator.test",
        "x.rack1.dc1.alternator.test",
    ] {
        assert_nxdomain(&mut client, missing);
    }
    // Names match without regard to case.
    assert_eq!(a_set(&r, &mut client, "DC2.Alternator.TEST"), dc2);
    // The same over TCP.
    let tcp = r
        .client()
        .query_tcp(RACK1_NAME, Rtype::A)
        .expect("a TCP reply");
    assert_eq!(sorted(tcp.addrs()), rack1);
    // Nothing ever needed a fallback.
    assert!(
        log_lines(&r, &["falling back"]).is_empty(),
        "unexpected fallback; log:\n{}",
        r.log_text()
    );
}

// 1b. The apex: the seeds' own datacenter, even though the responder also
// knows (and probes) dc2's nodes for the dc2 name.
#[test]
fn apex_keeps_the_seeds_datacenter_while_other_datacenters_are_served() {
    let (sim, n) = six_nodes(116, SimOptions::default());
    let r = start_named(&sim, &n[..1], &[]);
    r.wait_for_cluster_list();
    let mut client = r.client();
    let dc1 = n[..4].to_vec();
    expect_served(&r, &mut client, DOMAIN, &dc1);
    expect_served(&r, &mut client, DC2_NAME, &n[4..]);
    // Over a dozen refresh rounds, each polling plain `/localnodes` anew.
    assert_stays(
        &r,
        &mut client,
        &[(DOMAIN, dc1.clone())],
        Duration::from_millis(2500),
    );
    let others = log_lines(&r, &["membership changed", "name=alternator.test."]);
    assert_eq!(others.len(), 1, "the apex changed again: {others:#?}");
}

// 1c. At start-up, a name whose list has not been fetched yet does not fall
// back to another datacenter's nodes: with a slow seed, the first round of
// polls (all asked of the seed) takes a while, and the default list and its
// probes are in before dc2's list is.
#[test]
fn names_not_polled_yet_do_not_fall_back_at_start_up() {
    let (sim, n) = six_nodes(117, SimOptions::default());
    sim.set_fault(n[0], Fault::Delay(Duration::from_millis(120)));
    let r = start_named(&sim, &n[..1], &[]);
    let mut client = r.client();
    let dc2 = n[4..].to_vec();
    let rack1 = n[..2].to_vec();
    // Until each name's whole list is served: the seed (before any list),
    // or that name's own nodes (entering one by one as their first probes
    // pass); never the nodes of a fallback.
    let start = Instant::now();
    let mut seen: HashMap<&str, Vec<Vec<IpAddr>>> = HashMap::new();
    let mut done = false;
    while !done {
        assert!(
            start.elapsed() < SETTLE,
            "lists not served; log:\n{}",
            r.log_text()
        );
        done = true;
        for (name, own) in [(DC2_NAME, &dc2), (RACK1_NAME, &rack1)] {
            let answer = a_set(&r, &mut client, name);
            let history = seen.entry(name).or_default();
            if history.last() != Some(&answer) {
                history.push(answer.clone());
            }
            done &= answer == *own;
        }
        std::thread::sleep(QUERY_EVERY);
    }
    for (name, own) in [(DC2_NAME, &dc2), (RACK1_NAME, &rack1)] {
        let history = &seen[name];
        let foreign = history
            .iter()
            .find(|answer| **answer != [n[0]] && !answer.iter().all(|a| own.contains(a)));
        assert!(
            foreign.is_none(),
            "{name} served {foreign:?} at start-up (all it served: {history:?}); log:\n{}",
            r.log_text()
        );
    }
    assert!(
        log_lines(&r, &["falling back"]).is_empty(),
        "a fallback at start-up; log:\n{}",
        r.log_text()
    );
}

// 2. Fallback: rack -> datacenter -> default list, and no fallback at all.
#[test]
fn empty_racks_and_datacenters_fall_back_unless_told_not_to() {
    let (sim, n) = six_nodes(101, SimOptions::default());
    let config = TempFile::new(
        "cluster-fallback",
        &format!(
            "domain = \"{DOMAIN}\"\n\n\
             [[name]]\nname = \"{RACK1_NAME}\"\ndc = \"dc1\"\nrack = \"rack1\"\n\n\
             [[name]]\nname = \"{DC2_NAME}\"\ndc = \"dc2\"\n\n\
             [[name]]\nname = \"strict.{DC2_NAME}\"\ndc = \"dc2\"\nfallback = false\n"
        ),
    );
    let strict = format!("strict.{DC2_NAME}");
    let args = with(fast_args(&sim, &n[..1]), &["--config", config.path_str()]);
    let r = Responder::start(&args);
    r.wait_for_cluster_list();
    let mut client = r.client();
    let dc1 = n[..4].to_vec();
    let dc2 = n[4..].to_vec();
    expect_served(&r, &mut client, DOMAIN, &dc1);
    expect_served(&r, &mut client, RACK1_NAME, &n[..2]);
    expect_served(&r, &mut client, DC2_NAME, &dc2);
    expect_served(&r, &mut client, &strict, &dc2);

    let fallbacks = |name: &str| log_lines(&r, &["falling back", &format!("name={name}.")]);
    assert!(fallbacks(RACK1_NAME).is_empty(), "{}", r.log_text());

    // rack1 empties (its nodes move to rack3): the rack name serves dc1's
    // nodes, and says so once.
    sim.set_location(n[0], "dc1", "rack3");
    sim.set_location(n[1], "dc1", "rack3");
    expect_served(&r, &mut client, RACK1_NAME, &dc1);
    assert_stays(
        &r,
        &mut client,
        &[(RACK1_NAME, dc1.clone())],
        Duration::from_millis(800),
    );
    let lines = fallbacks(RACK1_NAME);
    assert_eq!(lines.len(), 1, "{lines:#?}\nlog:\n{}", r.log_text());
    assert!(
        lines[0].contains("wanted=dc=dc1 rack=rack1") && lines[0].contains("serving=dc=dc1"),
        "{}",
        lines[0]
    );

    // Back in rack1: the rack name serves its own nodes again.
    sim.set_location(n[0], "dc1", "rack1");
    sim.set_location(n[1], "dc1", "rack1");
    expect_served(&r, &mut client, RACK1_NAME, &n[..2]);
    assert!(
        r.wait_for_log(
            &format!("serving this name's own nodes again name={RACK1_NAME}."),
            SETTLE
        ),
        "{}",
        r.log_text()
    );

    // rack1's nodes listed but down: the rack name serves dc1's healthy
    // nodes, logged as a fallback again, and its own once they answer.
    sim.set_fault(n[0], Fault::Down);
    sim.set_fault(n[1], Fault::Down);
    expect_served(&r, &mut client, RACK1_NAME, &n[2..4]);
    assert_eq!(fallbacks(RACK1_NAME).len(), 2, "{}", r.log_text());
    sim.set_fault(n[0], Fault::None);
    sim.set_fault(n[1], Fault::None);
    expect_served(&r, &mut client, RACK1_NAME, &n[..2]);

    // dc2 empties: its name serves the default list (the seed's datacenter),
    // once logged; the name without fallback answers no address.
    sim.set_listed(n[4], false);
    sim.set_listed(n[5], false);
    expect_served(&r, &mut client, DC2_NAME, &dc1);
    let nothing = wait_until(SETTLE, || {
        client
            .query(&strict, Rtype::A)
            .is_some_and(|reply| reply.rcode() == Rcode::NOERROR && reply.addrs().is_empty())
    });
    assert!(
        nothing,
        "{strict} still has addresses; log:\n{}",
        r.log_text()
    );
    assert_stays(
        &r,
        &mut client,
        &[
            (DC2_NAME, dc1.clone()),
            (&strict, Vec::new()),
            (DOMAIN, dc1.clone()),
        ],
        Duration::from_millis(800),
    );
    assert_nodata(&mut client, &strict, Rtype::A);
    assert_eq!(fallbacks(DC2_NAME).len(), 1, "{}", r.log_text());
    assert!(fallbacks(&strict).is_empty(), "{}", r.log_text());
    assert_eq!(
        log_lines(
            &r,
            &["no node listed for this name", &format!("name={strict}.")]
        )
        .len(),
        1,
        "{}",
        r.log_text()
    );
}

// 3. Scylla before 2025.1 ignores `?dc=` and `?rack=`.
#[test]
fn legacy_scylla_gives_every_name_the_polled_nodes_datacenter() {
    let options = SimOptions {
        legacy_ignores_dc_rack: true,
        ..SimOptions::default()
    };
    let (sim, n) = six_nodes(102, options);
    let r = start_named(&sim, &n[..1], &[]);
    r.wait_for_cluster_list();
    let mut client = r.client();
    // What the server does: an old Scylla answers `/localnodes?dc=dc2` and
    // `?dc=dc1&rack=rack1` with the polled node's own datacenter, and the
    // server cannot tell. The seed is in dc1, so every node it learns (and
    // polls) is in dc1: every name serves all of dc1, rack2 included, and
    // the dc2 name never gets a dc2 node. No fallback happens (the lists are
    // not empty), so nothing is logged about it.
    let dc1 = n[..4].to_vec();
    expect_served(&r, &mut client, DOMAIN, &dc1);
    expect_served(&r, &mut client, DC2_NAME, &dc1);
    expect_served(&r, &mut client, RACK1_NAME, &dc1);
    assert_stays(
        &r,
        &mut client,
        &[
            (DOMAIN, dc1.clone()),
            (DC2_NAME, dc1.clone()),
            (RACK1_NAME, dc1.clone()),
        ],
        Duration::from_millis(1000),
    );
    assert!(
        log_lines(&r, &["falling back"]).is_empty(),
        "{}",
        r.log_text()
    );
}

/// Faults `FAULTED` of 6 nodes at once, `ROUNDS` times, with the default
/// health-check settings, and returns for each node and round the time from
/// its fault to the last answer naming it. Queries every [`QUERY_EVERY`] for
/// [`REMOVAL_BOUND`] plus a margin after the fault, so an answer naming a
/// faulted node after the bound is seen. Between rounds the nodes come back
/// and are served again.
fn removal_times(test_no: u8, fault: Fault) -> Vec<Duration> {
    const FAULTED: usize = 4;
    const ROUNDS: usize = 5;
    let (sim, n) = cluster(test_no, 6);
    let r = Responder::start(&default_health_args(&sim, &n[..1]));
    r.wait_for_cluster_list();
    let mut client = r.client();
    expect_served(&r, &mut client, DOMAIN, &n);
    let faulted = &n[..FAULTED];
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        // Start each round at another phase of the probe schedules.
        std::thread::sleep(Duration::from_millis(97 * round as u64 % 500));
        let mut at = HashMap::new();
        for &node in faulted {
            at.insert(node, Instant::now());
            sim.set_fault(node, fault);
        }
        let faulted_at = Instant::now();
        let mut last_seen: HashMap<IpAddr, Instant> = HashMap::new();
        while faulted_at.elapsed() < REMOVAL_BOUND + LOADED_MACHINE + Duration::from_millis(300) {
            let answer = a_set(&r, &mut client, DOMAIN);
            let now = Instant::now();
            assert!(
                n[FAULTED..].iter().all(|healthy| answer.contains(healthy)),
                "a healthy node is missing from {answer:?}; log:\n{}",
                r.log_text()
            );
            for node in answer.into_iter().filter(|a| faulted.contains(a)) {
                last_seen.insert(node, now);
            }
            std::thread::sleep(QUERY_EVERY);
        }
        for &node in faulted {
            let time = last_seen
                .get(&node)
                .map_or(Duration::ZERO, |seen| seen.duration_since(at[&node]));
            times.push(time);
        }
        for &node in faulted {
            sim.set_fault(node, Fault::None);
        }
        expect_served(&r, &mut client, DOMAIN, &n);
    }
    let removals = log_lines(&r, &["node fails its health check; no longer serving it"]).len();
    assert_eq!(
        removals,
        FAULTED * ROUNDS,
        "one removal logged per node and round; log:\n{}",
        r.log_text()
    );
    times
}

fn check_removal(test_no: u8, fault: Fault, bound: Duration, loaded: Duration) {
    let times = removal_times(test_no, fault);
    let (median, max) = median_and_max(&times);
    println!(
        "removal under {fault:?} with the default health checks, {} trials: median {median:?}, \
         max {max:?}; all (ms): {:?}",
        times.len(),
        millis(&times)
    );
    assert!(
        max < bound + loaded,
        "under {fault:?} a node was served {max:?} after its fault (bound {bound:?} \
         and {loaded:?} for a loaded machine): {:?} ms",
        millis(&times)
    );
}

// 4. A node whose process dies (it stops accepting connections and closes
// the kept ones) is out of every answer within milliseconds.
#[test]
fn down_node_leaves_the_answers_within_the_bound() {
    check_removal(103, Fault::Down, DEATH_BOUND, DEATH_LOADED);
}

// 4b. A node that accepts but never answers: two probe timeouts.
#[test]
fn hanging_node_leaves_the_answers_within_the_bound() {
    check_removal(104, Fault::Hang, HANG_BOUND, LOADED_MACHINE);
}

// 4c. A node that closes its idle keep-alive connections (as Alternator
// does) is not a node that died: each close is noticed and probed at once on
// a new connection, which passes, so the node stays in every answer and
// nothing is counted as a removal.
#[test]
fn a_node_closing_its_idle_connections_stays_served() {
    const CLOSING_FOR: Duration = Duration::from_secs(5);
    const QUERY_OFTEN: Duration = Duration::from_millis(3);
    let (sim, n) = cluster(118, 3);
    let r = Responder::start(&default_health_args(&sim, &n[..1]));
    r.wait_for_cluster_list();
    let mut client = r.client();
    expect_served(&r, &mut client, DOMAIN, &n);
    let probes_before = [sim.health_requests(n[0]), sim.health_requests(n[1])];
    // Closes every 50 to 300 ms, at another phase of the probe schedule
    // each time, while asking every few ms.
    let mut rng = SplitMix(0xc105_e118);
    let mut gaps = Vec::new();
    let (mut closes, mut queries) = (0usize, 0usize);
    let start = Instant::now();
    let mut next_close = start;
    while start.elapsed() < CLOSING_FOR {
        if Instant::now() >= next_close {
            sim.close_connections(n[0])
                .expect("close node 0's connections");
            closes += 1;
            let gap = Duration::from_millis(50 + rng.next_u64() % 251);
            gaps.push(gap);
            next_close = Instant::now() + gap;
        }
        let answer = a_set(&r, &mut client, DOMAIN);
        queries += 1;
        assert!(
            answer.contains(&n[0]),
            "node 0 left the answers after {:?} ({closes} closes): {answer:?}; log:\n{}",
            start.elapsed(),
            r.log_text()
        );
        std::thread::sleep(QUERY_OFTEN);
    }
    let probes = [
        sim.health_requests(n[0]) - probes_before[0],
        sim.health_requests(n[1]) - probes_before[1],
    ];
    let shortest = gaps.iter().min().copied().unwrap_or_default();
    let longest = gaps.iter().max().copied().unwrap_or_default();
    println!(
        "node 0 closed its connections {closes} times over {CLOSING_FOR:?} (gaps \
         {shortest:?} to {longest:?}); {queries} queries, node 0 in every answer; probes of \
         node 0: {}, of node 1: {}",
        probes[0], probes[1]
    );
    // The closes were noticed: each one brings a probe at once.
    assert!(
        probes[0] > probes[1] && probes[0] as usize >= closes / 2,
        "node 0 probed {} times for {closes} closes (node 1: {})",
        probes[0],
        probes[1]
    );
    assert!(
        log_lines(&r, &["no longer serving it"]).is_empty(),
        "a node was taken out; log:\n{}",
        r.log_text()
    );
    let text = scrape(&r);
    assert!(
        text.contains(&format!("{REMOVALS}{{")),
        "no {REMOVALS} in:\n{text}"
    );
    for reason in REMOVAL_REASONS {
        assert_eq!(removals(&text, reason), 0.0, "{reason}:\n{text}");
    }
}

// 4d. A node whose process dies is counted as a removal: under the refused
// connection (or the closed one, had a probe been under way), with the
// time from its first failing probe in the histogram; a node no longer
// listed is counted under `unlisted`, without a time.
#[test]
fn a_killed_node_is_counted_in_the_removal_metrics() {
    let (sim, n) = cluster(120, 3);
    let r = Responder::start(&default_health_args(&sim, &n[..1]));
    r.wait_for_cluster_list();
    let mut client = r.client();
    expect_served(&r, &mut client, DOMAIN, &n);
    let text = scrape(&r);
    for reason in REMOVAL_REASONS {
        assert_eq!(removals(&text, reason), 0.0, "{reason}:\n{text}");
    }

    sim.set_fault(n[1], Fault::Down);
    expect_served(&r, &mut client, DOMAIN, &[n[0], n[2]]);
    let mut text = String::new();
    let counted = wait_until(SETTLE, || {
        text = scrape(&r);
        metric_sum(&text, REMOVALS, &[]) >= 1.0
    });
    assert!(counted, "the killed node is not counted:\n{text}");
    let reason = if removals(&text, "refused") > 0.0 {
        "refused"
    } else {
        "closed"
    };
    assert_eq!(removals(&text, reason), 1.0, "{text}");
    assert_eq!(
        metric_sum(&text, REMOVALS, &[]),
        1.0,
        "one removal:\n{text}"
    );
    let labels = [("reason", reason)];
    let count = metric_sum(&text, &format!("{REMOVAL_SECONDS}_count"), &labels);
    let took = metric_sum(&text, &format!("{REMOVAL_SECONDS}_sum"), &labels);
    let inf = metric_sum(
        &text,
        &format!("{REMOVAL_SECONDS}_bucket"),
        &[("reason", reason), ("le", "+Inf")],
    );
    println!(
        "killed node counted under reason={reason}: histogram count {count}, sum {:.1} ms",
        took * 1000.0
    );
    assert!(count >= 1.0 && inf == count, "{text}");
    // The first failing probe is the refused one (or the one the kill cut):
    // taken out within the bound of a death.
    assert!(
        took < (DEATH_BOUND + DEATH_LOADED).as_secs_f64(),
        "{took} s:\n{text}"
    );

    // Back and served, nothing more is counted; then no longer listed, it is
    // counted under `unlisted`, which has no time.
    sim.set_fault(n[1], Fault::None);
    expect_served(&r, &mut client, DOMAIN, &n);
    sim.set_listed(n[1], false);
    expect_served(&r, &mut client, DOMAIN, &[n[0], n[2]]);
    let counted = wait_until(SETTLE, || {
        text = scrape(&r);
        removals(&text, "unlisted") >= 1.0
    });
    assert!(counted, "the unlisted node is not counted:\n{text}");
    assert_eq!(metric_sum(&text, REMOVALS, &[]), 2.0, "{text}");
    assert_eq!(removals(&text, reason), 1.0, "{text}");
    assert!(
        !text.contains(&format!("{REMOVAL_SECONDS}_count{{reason=\"unlisted\"}}")),
        "{text}"
    );
}

// 5. Admission: a listed node failing its health check is never served;
// once it passes, it is.
#[test]
fn listed_but_unhealthy_nodes_are_admitted_only_once_healthy() {
    const ROUNDS: usize = 5;
    let (sim, n) = cluster(105, 4);
    let (serving, joining) = (n[..2].to_vec(), n[2..].to_vec());
    for &node in &joining {
        sim.set_listed(node, false);
    }
    let r = Responder::start(&default_health_args(&sim, &serving[..1]));
    r.wait_for_cluster_list();
    let mut client = r.client();
    expect_served(&r, &mut client, DOMAIN, &serving);
    let faults = [Fault::Status500, Fault::Hang];
    let mut times: Vec<(Fault, Duration)> = Vec::new();
    for round in 0..ROUNDS {
        let probed_before: Vec<u64> = joining.iter().map(|&j| sim.health_requests(j)).collect();
        for (&node, fault) in joining.iter().zip(faults) {
            sim.set_fault(node, fault);
            sim.set_listed(node, true);
        }
        // Listed and probed twice (so the responder has seen it listed for
        // at least a probe interval) but never served.
        let probed_twice = || {
            joining
                .iter()
                .zip(&probed_before)
                .all(|(&j, &before)| sim.health_requests(j) >= before + 2)
        };
        // Then a pause that varies from round to round, so that the fault is
        // cleared at another phase of the probe schedule each time.
        let pause = Duration::from_millis(113 * round as u64 % 500);
        let deadline = Instant::now() + SETTLE;
        let mut probed_at = None;
        while probed_at.is_none_or(|at: Instant| at.elapsed() < pause) {
            assert!(
                Instant::now() < deadline,
                "the joining nodes were not probed; log:\n{}",
                r.log_text()
            );
            if probed_at.is_none() && probed_twice() {
                probed_at = Some(Instant::now());
            }
            let answer = a_set(&r, &mut client, DOMAIN);
            assert_eq!(
                answer,
                serving,
                "an unhealthy node is served; log:\n{}",
                r.log_text()
            );
            std::thread::sleep(QUERY_EVERY);
        }
        let mut cleared = HashMap::new();
        for &node in &joining {
            cleared.insert(node, Instant::now());
            sim.set_fault(node, Fault::None);
        }
        let mut first_seen: HashMap<IpAddr, Instant> = HashMap::new();
        let deadline = Instant::now() + SETTLE;
        while first_seen.len() < joining.len() {
            assert!(
                Instant::now() < deadline,
                "healthy nodes {joining:?} not admitted (seen: {first_seen:?}); log:\n{}",
                r.log_text()
            );
            let answer = a_set(&r, &mut client, DOMAIN);
            let now = Instant::now();
            for node in answer.into_iter().filter(|a| joining.contains(a)) {
                first_seen.entry(node).or_insert(now);
            }
            std::thread::sleep(QUERY_EVERY);
        }
        for (&node, fault) in joining.iter().zip(faults) {
            times.push((fault, first_seen[&node].duration_since(cleared[&node])));
        }
        for &node in &joining {
            sim.set_listed(node, false);
        }
        expect_served(&r, &mut client, DOMAIN, &serving);
    }
    let all: Vec<Duration> = times.iter().map(|(_, t)| *t).collect();
    let (median, max) = median_and_max(&all);
    for fault in faults {
        let some: Vec<Duration> = times
            .iter()
            .filter(|(f, _)| *f == fault)
            .map(|(_, t)| *t)
            .collect();
        println!(
            "admission after {fault:?} cleared (ms): {:?}",
            millis(&some)
        );
    }
    println!(
        "admission with the default health checks, {} trials: median {median:?}, max {max:?}",
        all.len()
    );
    // The next probe admits it: at most one probe interval (500 ms, +10%
    // jitter), with room for a busy machine.
    assert!(max < Duration::from_millis(1000), "{:?} ms", millis(&all));
}

// 5b. At start-up the first cluster list waits for every listed node's first
// probe, so a node that is listed but hangs is never served, not even briefly.
#[test]
fn first_list_leaves_out_a_listed_node_that_fails_its_first_probe() {
    let (sim, n) = cluster(115, 3);
    sim.set_fault(n[2], Fault::Hang);
    let r = Responder::start(&fast_args(&sim, &n[..1]));
    let mut client = r.client();
    // From the start until well after the list is learnt: the seed, then the
    // two healthy nodes, and never the hanging one.
    let start = Instant::now();
    let mut learnt_at = None;
    while learnt_at.is_none_or(|at: Instant| at.elapsed() < Duration::from_millis(1000)) {
        assert!(
            start.elapsed() < SETTLE * 2,
            "never learnt the list; log:\n{}",
            r.log_text()
        );
        let answer = a_set(&r, &mut client, DOMAIN);
        assert!(
            answer == [n[0]] || answer == n[..2],
            "answer {answer:?}; log:\n{}",
            r.log_text()
        );
        if learnt_at.is_none() && answer == n[..2] {
            learnt_at = Some(Instant::now());
        }
        std::thread::sleep(QUERY_EVERY);
    }
    let first = log_lines(&r, &["first /localnodes answer"]);
    assert_eq!(first.len(), 1, "{}", r.log_text());
    assert!(!first[0].contains(&n[2].to_string()), "{}", first[0]);
    assert!(
        sim.health_requests(n[2]) > 0,
        "the hanging node was not probed"
    );
    // Answering again, it is admitted.
    sim.set_fault(n[2], Fault::None);
    expect_served(&r, &mut client, DOMAIN, &n);
}

// 6. Every listed node failing its health check: serve them anyway, and
// say so in the log, the gauges and /readyz until it ends.
#[test]
fn every_node_failing_its_health_check_fails_open() {
    let (sim, n) = cluster(106, 3);
    let r = Responder::start(&fast_args(&sim, &n[..1]));
    r.wait_for_cluster_list();
    let mut client = r.client();
    expect_served(&r, &mut client, DOMAIN, &n);
    let fqdn = format!("{DOMAIN}.");
    let name = [("name", fqdn.as_str())];
    assert!(
        r.wait_for_metric("alternator_dns_live_nodes", &name, 3.0, SETTLE),
        "{:?}",
        r.metrics()
    );
    assert_eq!(r.metric("alternator_dns_fail_open", &name), Some(0.0));
    // `GET /` and `/localnodes` both answer 500: the last list is kept, its
    // nodes fail their probes, and the answers never go empty.
    let logged_before = r.logs().len();
    sim.set_fault_all(Fault::Status500);
    let deadline = Instant::now() + SETTLE;
    while r.log_count("fail open") == 0 {
        assert!(
            Instant::now() < deadline,
            "no fail open; log:\n{}",
            r.log_text()
        );
        let answer = a_set(&r, &mut client, DOMAIN);
        assert!(
            !answer.is_empty(),
            "an empty answer while failing; log:\n{}",
            r.log_text()
        );
        std::thread::sleep(QUERY_EVERY);
    }
    let line = log_lines(&r, &["every listed node fails its health check"]).remove(0);
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("HTTP status 500") && line.contains("check="),
        "the cause and what to check are not named: {line}"
    );
    // The gauges and /readyz say it; the count of live nodes drops to 0.
    assert!(
        r.wait_for_metric("alternator_dns_fail_open", &name, 1.0, SETTLE),
        "{:?}",
        r.metrics()
    );
    assert_eq!(r.metric("alternator_dns_fail_open_nodes", &name), Some(3.0));
    assert_eq!(r.metric("alternator_dns_live_nodes", &name), Some(0.0));
    let (status, body) = r.readyz().expect("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("ready, degraded") && body.contains("fail open"),
        "{body}"
    );
    assert_stays(
        &r,
        &mut client,
        &[(DOMAIN, n.clone())],
        Duration::from_millis(800),
    );
    let fail_open_lines = log_lines(&r, &["fail open"]);
    assert!(
        fail_open_lines
            .iter()
            .all(|l| !l.contains("still serving nodes")),
        "reminded before 30 s: {fail_open_lines:#?}"
    );
    // Dead nodes are never logged as added.
    let adds_nodes = |line: &String| {
        line.split_once(" added=")
            .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with(' '))
    };
    let since_fault = r.logs().split_off(logged_before);
    assert!(
        !since_fault
            .iter()
            .filter(|l| l.contains("membership changed"))
            .any(adds_nodes),
        "{since_fault:#?}"
    );
    // Healthy again: served as such, and said so; the gauges clear.
    sim.set_fault_all(Fault::None);
    assert!(
        r.wait_for_log("serving this name's own nodes again", SETTLE),
        "{}",
        r.log_text()
    );
    expect_served(&r, &mut client, DOMAIN, &n);
    assert!(
        r.wait_for_metric("alternator_dns_fail_open", &name, 0.0, SETTLE),
        "{:?}",
        r.metrics()
    );
    assert!(r.wait_for_metric("alternator_dns_live_nodes", &name, 3.0, SETTLE));
    assert_eq!(r.metric("alternator_dns_fail_open_nodes", &name), Some(0.0));
    assert_eq!(r.readyz(), Some((200, "ready\n".to_string())));
}

// 6b. The end of a full outage: the nodes pass again one by one, each on
// its own probe schedule. The answers keep every listed node until the
// others' next probes have reported (or one probe interval has passed),
// then narrow to the nodes that pass: never to the first one alone.
#[test]
fn after_a_full_outage_answers_do_not_shrink_to_one_node() {
    const WATCH_FOR: Duration = Duration::from_secs(2);
    const QUERY_OFTEN: Duration = Duration::from_millis(2);
    let (sim, n) = cluster(119, 6);
    let r = Responder::start(&default_health_args(&sim, &n[..1]));
    r.wait_for_cluster_list();
    let mut client = r.client();
    expect_served(&r, &mut client, DOMAIN, &n);
    let fqdn = format!("{DOMAIN}.");
    let name = [("name", fqdn.as_str())];
    // `GET /` and `/localnodes` both answer 500 (the nodes keep listening):
    // the last list is kept, every node fails its probes, and all six are
    // served in fail open.
    sim.set_fault_all(Fault::Status500);
    assert!(
        r.wait_for_log("serving them anyway (fail open)", SETTLE),
        "no fail open; log:\n{}",
        r.log_text()
    );
    assert!(
        r.wait_for_metric("alternator_dns_fail_open", &name, 1.0, SETTLE),
        "{:?}",
        r.metrics()
    );
    expect_served(&r, &mut client, DOMAIN, &n);

    // Every fault cleared at once.
    sim.set_fault_all(Fault::None);
    let cleared = Instant::now();
    let mut smallest = n.len();
    let mut changes: Vec<(u128, usize)> = Vec::new();
    let mut queries = 0usize;
    while cleared.elapsed() < WATCH_FOR {
        let answer = a_set(&r, &mut client, DOMAIN);
        queries += 1;
        smallest = smallest.min(answer.len());
        if changes.last().is_none_or(|&(_, len)| len != answer.len()) {
            changes.push((cleared.elapsed().as_millis(), answer.len()));
        }
        assert!(
            answer.len() >= n.len() / 2,
            "{} ms after the outage ended, an answer of {} node(s): {answer:?} (sizes so far, \
             as (ms, size): {changes:?}); log:\n{}",
            cleared.elapsed().as_millis(),
            answer.len(),
            r.log_text()
        );
        std::thread::sleep(QUERY_OFTEN);
    }
    println!(
        "after the full outage of 6 nodes: smallest answer {smallest} of {} over {queries} \
         queries in {WATCH_FOR:?}; sizes as (ms after the faults cleared, size): {changes:?}",
        n.len()
    );
    // All six served, and no longer in fail open.
    expect_served(&r, &mut client, DOMAIN, &n);
    assert!(
        r.wait_for_metric("alternator_dns_fail_open", &name, 0.0, SETTLE),
        "{:?}",
        r.metrics()
    );
    assert!(
        r.wait_for_metric("alternator_dns_live_nodes", &name, 6.0, SETTLE),
        "{:?}",
        r.metrics()
    );
    assert!(
        r.wait_for_log("serving this name's own nodes again", SETTLE),
        "{}",
        r.log_text()
    );
    // The narrowing was held back by the first node to pass.
    assert_eq!(
        r.log_count("a node passes again after every node failed"),
        1,
        "{}",
        r.log_text()
    );
}

// 7. Without health checks, a listed node is served even when it is down.
#[test]
fn without_health_checks_a_down_node_stays_served_while_listed() {
    let (sim, n) = cluster(107, 3);
    let r = Responder::start(&with(
        fast_args(&sim, &n[..1]),
        &["--health-check", "false"],
    ));
    r.wait_for_cluster_list();
    let mut client = r.client();
    expect_served(&r, &mut client, DOMAIN, &n);
    sim.set_fault(n[1], Fault::Down);
    assert_stays(
        &r,
        &mut client,
        &[(DOMAIN, n.clone())],
        Duration::from_millis(1500),
    );
    for &node in &n {
        assert_eq!(sim.health_requests(node), 0, "{node} was probed");
    }
    assert!(
        log_lines(&r, &["its health check"]).is_empty(),
        "{}",
        r.log_text()
    );
    // Unlisted, it goes.
    sim.set_listed(n[1], false);
    expect_served(&r, &mut client, DOMAIN, &[n[0], n[2]]);
}

/// Test certificates made with rcgen, and a directory for their PEM files:
/// the crate's own unit-test helpers (each test uses part of them).
use alternator_sim::test_pki as pki;

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// An HTTPS cluster of `count` nodes of test `test_no`, all in dc1/rack1.
fn https_cluster(test_no: u8, count: u8, tls: SimTls) -> (SimCluster, Vec<IpAddr>) {
    let addrs = nodes(test_no, count);
    let sim = SimCluster::start_https(&addrs, 0, tls).expect("start the HTTPS cluster");
    assert!(sim.is_https());
    (sim, addrs)
}

/// `fast_args` over HTTPS with `tls` flags.
fn https_args(sim: &SimCluster, seeds: &[IpAddr], tls: &[&str]) -> Vec<String> {
    with(
        with(fast_args(sim, seeds), &["--alternator-scheme", "https"]),
        tls,
    )
}

/// Checks for `wait` that the responder never learns a list: no such log
/// line, and the answers stay the seeds.
fn assert_never_learns(r: &Responder, seeds: &[IpAddr], wait: Duration) {
    let mut client = r.client();
    assert_stays(r, &mut client, &[(DOMAIN, seeds.to_vec())], wait);
    assert!(
        !r.learnt_cluster_list(),
        "learnt a list it should not have; log:\n{}",
        r.log_text()
    );
}

fn ip_sans(addrs: &[IpAddr]) -> Vec<String> {
    addrs.iter().map(ToString::to_string).collect()
}

// 8. HTTPS with a CA file: the list is learnt, and a node added later appears.
#[test]
fn https_with_a_ca_file_learns_the_cluster() {
    let dir = pki::TempDir::new();
    let ca = pki::TestCa::new("cluster CA");
    // One certificate for every node, the one added later included.
    let server = ca.server(&ip_sans(&nodes(108, 3)));
    let (sim, n) = https_cluster(108, 2, server.sim_tls());
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let r = Responder::start(&https_args(
        &sim,
        &n[..1],
        &["--ca-file", path_str(&ca_file)],
    ));
    r.wait_for_cluster_list();
    let mut client = r.client();
    expect_served(&r, &mut client, DOMAIN, &n);
    let third = node(108, 3);
    sim.add_node(third).expect("add a node");
    expect_served(&r, &mut client, DOMAIN, &[n[0], n[1], third]);
    assert!(
        sim.health_requests(third) > 0,
        "the new node was not probed"
    );
}

// 8b. A CA that did not sign the nodes' certificate: nothing is learnt, the
// log says which side failed and what to check, the seeds are reported as
// unverified; a reload with the right CA file ends it.
#[test]
fn https_with_the_wrong_ca_keeps_the_seeds_and_logs_the_certificate_error() {
    const UNCONFIRMED: &str = "which no /localnodes answer has confirmed";
    let dir = pki::TempDir::new();
    let ca = pki::TestCa::new("cluster CA");
    let other = pki::TestCa::new("some other CA");
    let (sim, n) = https_cluster(109, 3, ca.server(&ip_sans(&nodes(109, 3))).sim_tls());
    let wrong = dir.write("other-ca.pem", &other.cert_pem);
    let right = dir.write("ca.pem", &ca.cert_pem);
    let config = |ca_file: &Path| format!("ca-file = \"{}\"\n", path_str(ca_file));
    let file = dir.write("alternator-dns.toml", config(&wrong));
    let mut r = Responder::start(&https_args(&sim, &n[..1], &["--config", path_str(&file)]));
    assert!(r.wait_for_log(UNCONFIRMED, SETTLE), "{}", r.log_text());
    let line = log_lines(&r, &[UNCONFIRMED]).remove(0);
    assert!(
        line.contains("ERROR")
            && line.contains(&format!(
                "our verification of node {}'s certificate failed: it is not signed by a CA in \
                 --ca-file {}",
                sim.socket_addr(n[0]),
                wrong.display()
            ))
            && line.contains("check --ca-file"),
        "the failing side, the node, the CA file and the option are not named: {line}"
    );
    assert!(!line.contains("UnknownIssuer"), "{line}");
    assert!(
        r.wait_for_metric("alternator_dns_unverified_seeds", &[], 1.0, SETTLE),
        "{:?}",
        r.metrics()
    );
    let (status, body) = r.readyz().expect("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("--ca-file"), "{body}");
    assert_never_learns(&r, &n[..1], Duration::from_millis(1000));

    // The right CA, on reload: the cluster is learnt and the state clears.
    std::fs::write(&file, config(&right)).expect("rewrite the config file");
    let (exited, _) = r.signal(libc::SIGHUP, Duration::ZERO);
    assert!(exited.is_none());
    r.wait_for_cluster_list();
    expect_served(&r, &mut r.client(), DOMAIN, &n);
    assert!(
        r.wait_for_metric("alternator_dns_unverified_seeds", &[], 0.0, SETTLE),
        "{:?}",
        r.metrics()
    );
    assert!(
        wait_until(SETTLE, || r.readyz() == Some((200, "ready\n".to_string()))),
        "{:?}",
        r.readyz()
    );
}

// 8c. A cluster requiring client certificates (require_client_auth).
#[test]
fn https_client_certificates_are_needed_where_the_cluster_requires_them() {
    let dir = pki::TempDir::new();
    let ca = pki::TestCa::new("cluster CA");
    let clients = pki::TestCa::new("client CA");
    let server = ca.server(&ip_sans(&nodes(110, 3)));
    let tls = SimTls {
        client_ca_pem: Some(clients.cert_pem.clone()),
        ..server.sim_tls()
    };
    let (sim, n) = https_cluster(110, 3, tls);
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let cert = clients.client("alternator-dns.test");
    let cert_file = dir.write("client.pem", &cert.cert_pem);
    let key_file = dir.write("client.key", &cert.key_pem);

    // Both responders run at once; only the one with a certificate learns.
    let without = Responder::start(&https_args(
        &sim,
        &n[..1],
        &["--ca-file", path_str(&ca_file)],
    ));
    let with_cert = Responder::start(&https_args(
        &sim,
        &n[..1],
        &[
            "--ca-file",
            path_str(&ca_file),
            "--client-cert",
            path_str(&cert_file),
            "--client-key",
            path_str(&key_file),
        ],
    ));
    with_cert.wait_for_cluster_list();
    expect_served(&with_cert, &mut with_cert.client(), DOMAIN, &n);
    assert_never_learns(&without, &n[..1], Duration::from_millis(1000));
    // Logged as the node's refusal of a client certificate we lack, naming
    // the node and the options.
    let refused = log_lines(&without, &["no node answered /localnodes"]);
    assert!(
        refused.iter().any(
            |l| l.contains("wants a client certificate, and none is configured")
                && l.contains(&sim.socket_addr(n[0]).to_string())
                && l.contains("--client-cert")
        ),
        "{}",
        without.log_text()
    );
    // A certificate the nodes do not trust: refused as such.
    let stranger = pki::TestCa::new("stranger CA").client("alternator-dns.test");
    let stranger_cert = dir.write("stranger.pem", &stranger.cert_pem);
    let stranger_key = dir.write("stranger.key", &stranger.key_pem);
    let untrusted = Responder::start(&https_args(
        &sim,
        &n[..1],
        &[
            "--ca-file",
            path_str(&ca_file),
            "--client-cert",
            path_str(&stranger_cert),
            "--client-key",
            path_str(&stranger_key),
        ],
    ));
    let needle = format!(
        "refused our client certificate --client-cert {}",
        stranger_cert.display()
    );
    assert!(
        untrusted.wait_for_log(&needle, SETTLE),
        "{}",
        untrusted.log_text()
    );
}

// 8d. Verification off: a self-signed cluster is learnt, with a warning.
#[test]
fn https_insecure_skip_verify_accepts_a_self_signed_cluster_and_warns() {
    let server = pki::self_signed_server(&ip_sans(&nodes(111, 3)));
    let (sim, n) = https_cluster(111, 3, server.sim_tls());
    let r = Responder::start(&https_args(
        &sim,
        &n[..1],
        &["--tls-insecure-skip-verify", "true"],
    ));
    r.wait_for_cluster_list();
    expect_served(&r, &mut r.client(), DOMAIN, &n);
    let warning = log_lines(&r, &["verification", "DISABLED"]);
    assert_eq!(warning.len(), 1, "{}", r.log_text());
    assert!(warning[0].contains("WARN"), "{}", warning[0]);
}

// 8e. One certificate for the whole cluster, naming only a DNS name.
#[test]
fn https_tls_server_name_verifies_nodes_against_a_dns_name() {
    let dir = pki::TempDir::new();
    let ca = pki::TestCa::new("cluster CA");
    let server = ca.server(&["alternator.cluster.test".to_string()]);
    let (sim, n) = https_cluster(112, 3, server.sim_tls());
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let by_name = Responder::start(&https_args(
        &sim,
        &n[..1],
        &[
            "--ca-file",
            path_str(&ca_file),
            "--tls-server-name",
            "alternator.cluster.test",
        ],
    ));
    // Without it, the nodes' IP addresses are not in the certificate.
    let by_ip = Responder::start(&https_args(
        &sim,
        &n[..1],
        &["--ca-file", path_str(&ca_file)],
    ));
    by_name.wait_for_cluster_list();
    expect_served(&by_name, &mut by_name.client(), DOMAIN, &n);
    assert!(
        by_ip.wait_for_log("no node answered /localnodes", SETTLE),
        "{}",
        by_ip.log_text()
    );
    assert_never_learns(&by_ip, &n[..1], Duration::from_millis(600));
}

// 9. IPv6: nodes on ::1 in AAAA answers, listening on ::1, an IPv6 seed.
#[test]
fn ipv6_node_listen_address_and_seed() {
    let v4 = nodes(113, 2);
    let v6: IpAddr = "::1".parse().expect("an IPv6 address");
    let sim = SimCluster::start(&[v4[0], v4[1], v6], 0).expect("start the cluster");
    let seed = format!("[::1]:{}", sim.port());
    let refresh = format!("{REFRESH_MS}ms");
    let mut args = vec![
        "--domain",
        DOMAIN,
        "--seed",
        &seed,
        "--listen",
        "[::1]:0",
        "--refresh-interval",
        &refresh,
        "--refresh-timeout",
        &refresh,
        "--answers",
        "all",
    ];
    let port = sim.port().to_string();
    args.extend(["--alternator-port", &port]);
    args.extend(FAST_HEALTH);
    let r = Responder::start(&args);
    assert!(r.udp_addr().is_ipv6(), "{}", r.udp_addr());
    assert!(r.tcp_addr().is_ipv6(), "{}", r.tcp_addr());
    r.wait_for_cluster_list();
    let local: SocketAddr = "[::1]:0".parse().expect("a socket address");
    let ask = |qtype| {
        DnsClient::from(local.ip(), r.udp_addr())
            .query(DOMAIN, qtype)
            .filter(|reply| reply.rcode() == Rcode::NOERROR)
            .map(|reply| sorted(reply.addrs()))
    };
    let both = || ask(Rtype::A) == Some(v4.clone()) && ask(Rtype::AAAA) == Some(vec![v6]);
    assert!(
        wait_until(SETTLE, both),
        "A {:?}, AAAA {:?}; log:\n{}",
        ask(Rtype::A),
        ask(Rtype::AAAA),
        r.log_text()
    );
    // Over TCP on ::1 too.
    let tcp = r
        .client()
        .query_tcp(DOMAIN, Rtype::AAAA)
        .expect("a TCP reply");
    assert_eq!(tcp.addrs(), vec![v6]);
    // The IPv6 node is probed like the others.
    assert!(sim.health_requests(v6) > 0);
}

// 10. A TOML file with [[name]] tables loads, and --check prints them back.
#[test]
fn toml_name_tables_load_and_check_prints_them_back() {
    // README.md's example, verbatim.
    let readme_example = r#"domain = "alternator.example.com"
seed = ["10.0.0.1", "10.0.0.2:8000", "[fd00::3]:8000", "scylla-1.internal"]
listen = ["0.0.0.0:53", "[::]:53"]
alternator-port = 8000
ttl = 4
answers = "1"
refresh-interval = "1s"
refresh-timeout = "1s"
cpus = "2-3"
io = "auto"
ns = ["ns1.example.com", "ns2.example.com"]

# Further names: one datacenter, and one rack of another.
[[name]]
name = "dc2.alternator.example.com"
dc = "dc2"

[[name]]
name = "rack1.dc1.alternator.example.com"
dc = "dc1"
rack = "rack1"
fallback = true
"#;
    let file = TempFile::new("cluster-names", readme_example);
    // Flags override two keys: the seed list (its hostname would need a
    // resolver beyond loopback) and the CPUs (a test machine may have no
    // CPU 2 or 3).
    let run = run_cli(&[
        "--config",
        file.path_str(),
        "--seed",
        "10.0.0.1",
        "--cpus",
        "0",
        "--check",
    ]);
    assert!(run.status.success(), "{run:?}");
    let names_of = |stdout: &str| -> Vec<toml::Table> {
        let effective: toml::Table = toml::from_str(stdout)
            .unwrap_or_else(|e| panic!("--check output is not TOML ({e}):\n{stdout}"));
        effective["name"]
            .as_array()
            .unwrap_or_else(|| panic!("no [[name]] tables in:\n{stdout}"))
            .iter()
            .map(|v| v.as_table().expect("a table").clone())
            .collect()
    };
    let table = |text: &str| -> toml::Table { toml::from_str(text).expect("TOML") };
    let expected = vec![
        table("name = \"dc2.alternator.example.com\"\ndc = \"dc2\"\nfallback = true\n"),
        table(
            "name = \"rack1.dc1.alternator.example.com\"\ndc = \"dc1\"\nrack = \"rack1\"\n\
             fallback = true\n",
        ),
    ];
    assert_eq!(names_of(&run.stdout), expected, "{}", run.stdout);

    // What --check prints loads again and means the same.
    let again = TempFile::new("cluster-names-again", &run.stdout);
    let rerun = run_cli(&["--config", again.path_str(), "--check"]);
    assert!(rerun.status.success(), "{rerun:?}");
    assert_eq!(rerun.stdout, run.stdout);

    // The same names as flags print the same tables.
    let flags = run_cli(&[
        "--domain",
        "alternator.example.com",
        "--seed",
        "10.0.0.1",
        "--name",
        "dc2.alternator.example.com=dc2",
        "--name",
        "rack1.dc1.alternator.example.com=dc1/rack1",
        "--ns",
        "ns1.example.com",
        "--check",
    ]);
    assert!(flags.status.success(), "{flags:?}");
    assert_eq!(names_of(&flags.stdout), expected, "{}", flags.stdout);

    // `fallback = false` is kept.
    let strict = TempFile::new(
        "cluster-names-strict",
        "domain = \"alternator.example.com\"\nseed = [\"10.0.0.1\"]\nns = [\"ns.example.net\"]\n\n\
         [[name]]\nname = \"rack1.dc1.alternator.example.com\"\ndc = \"dc1\"\n\
         rack = \"rack1\"\nfallback = false\n",
    );
    let run = run_cli(&["--config", strict.path_str(), "--check"]);
    assert!(run.status.success(), "{run:?}");
    let names = names_of(&run.stdout);
    assert_eq!(names.len(), 1, "{}", run.stdout);
    assert_eq!(
        names[0]["fallback"].as_bool(),
        Some(false),
        "{}",
        run.stdout
    );

    // A name outside the domain is refused, naming it.
    let outside = run_cli(&[
        "--domain",
        "alternator.example.com",
        "--seed",
        "10.0.0.1",
        "--name",
        "dc2.example.org=dc2",
        "--ns",
        "ns1.example.com",
        "--check",
    ]);
    assert!(!outside.status.success(), "{outside:?}");
    assert!(outside.stderr.contains("dc2.example.org"), "{outside:?}");
}
