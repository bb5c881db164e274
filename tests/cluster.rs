//! The real `alternator-dns` binary against simulated clusters with
//! datacenters, racks, health checks and IPv6: what a DNS client and an
//! operator see, through DNS answers and the log. How fast failing nodes
//! leave is in failover.rs, HTTPS in https.rs.
//!
//! Every test owns the node addresses 127.0.N.x for its own N (100 to 140
//! across these three files), so the tests run in parallel with each other
//! and with the other test files.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};

use alternator_sim::{Fault, SimCluster, SimOptions};
use support::cluster_checks::*;
use support::*;

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
