//! Shared by the tests that run the binary against simulated clusters
//! (cluster.rs, failover.rs, https.rs): the usual flags, and waiting for and
//! reading the answers.

use std::net::IpAddr;
use std::time::Duration;

use domain::base::iana::{Rcode, Rtype};

use alternator_sim::{SimCluster, SimNode, SimOptions};

use super::*;

/// Refresh interval and per-request timeout where the test is not about them.
pub const REFRESH_MS: u64 = 200;

/// Health-check flags where the test is not about the defaults: probes every
/// 100 ms. The timeout is kept above the interval's 100 ms so that a busy
/// machine does not take healthy nodes out.
pub const FAST_HEALTH: [&str; 4] = ["--health-interval", "100ms", "--health-timeout", "200ms"];

/// How long a change may take to show in the answers (several refresh
/// intervals and probes, with room for a busy machine).
pub const SETTLE: Duration = Duration::from_secs(5);

pub const DC2_NAME: &str = "dc2.alternator.test";
pub const RACK1_NAME: &str = "rack1.dc1.alternator.test";
/// Not served, but above [`RACK1_NAME`]: exists with no records.
pub const DC1_NAME: &str = "dc1.alternator.test";

/// The usual flags with short intervals, fast health checks and
/// `--answers all`, so that one answer shows a name's whole list.
pub fn fast_args(sim: &SimCluster, seeds: &[IpAddr]) -> Vec<String> {
    let args = with(
        cluster_args(sim, seeds, REFRESH_MS, REFRESH_MS),
        &["--answers", "all"],
    );
    with(args, &FAST_HEALTH)
}

/// The flags for the tests of the default health-check settings: short
/// refresh, `--answers all`, health flags left out.
pub fn default_health_args(sim: &SimCluster, seeds: &[IpAddr]) -> Vec<String> {
    with(
        cluster_args(sim, seeds, REFRESH_MS, REFRESH_MS),
        &["--answers", "all"],
    )
}

/// Six nodes for test `test_no`: 1-2 in dc1/rack1, 3-4 in dc1/rack2, 5 in
/// dc2/rack1 (a rack1 of another datacenter), 6 in dc2/rack2.
pub fn six_nodes(test_no: u8, options: SimOptions) -> (SimCluster, Vec<IpAddr>) {
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
pub fn served(client: &mut DnsClient, name: &str, qtype: Rtype) -> Option<Vec<IpAddr>> {
    let reply = client.query(name, qtype)?;
    (reply.rcode() == Rcode::NOERROR).then(|| sorted(reply.addrs()))
}

/// The sorted A answer for `name`; panics with the log when there is none.
pub fn a_set(r: &Responder, client: &mut DnsClient, name: &str) -> Vec<IpAddr> {
    served(client, name, Rtype::A)
        .unwrap_or_else(|| panic!("no NOERROR reply for {name}; log:\n{}", r.log_text()))
}

/// Waits until the A answer for `name` is exactly `expected`.
pub fn expect_served(r: &Responder, client: &mut DnsClient, name: &str, expected: &[IpAddr]) {
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
pub fn assert_stays(
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
pub fn assert_nodata(client: &mut DnsClient, name: &str, qtype: Rtype) {
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

pub fn assert_nxdomain(client: &mut DnsClient, name: &str) {
    let reply = client
        .query(name, Rtype::A)
        .unwrap_or_else(|| panic!("no reply for {name}"));
    assert_eq!(reply.rcode(), Rcode::NXDOMAIN, "{name}");
    assert!(reply.aa(), "{name}");
    assert_eq!(reply.authority_types(), vec![Rtype::SOA], "{name}");
}

/// Log lines containing every one of `needles`.
pub fn log_lines(r: &Responder, needles: &[&str]) -> Vec<String> {
    r.logs()
        .into_iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

/// A responder for `sim` with the dc2 and rack1 names as flags, fast
/// intervals and `extra` flags.
pub fn start_named(sim: &SimCluster, seeds: &[IpAddr], extra: &[&str]) -> Responder {
    let dc2 = format!("{DC2_NAME}=dc2");
    let rack1 = format!("{RACK1_NAME}=dc1/rack1");
    let args = with(
        with(fast_args(sim, seeds), &["--name", &dc2, "--name", &rack1]),
        extra,
    );
    Responder::start(&args)
}

/// How often the measuring loops query.
pub const QUERY_EVERY: Duration = Duration::from_millis(5);

pub fn median_and_max(times: &[Duration]) -> (Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2
    } else {
        sorted[sorted.len() / 2]
    };
    (median, *sorted.last().expect("at least one time"))
}

pub fn millis(times: &[Duration]) -> Vec<u128> {
    times.iter().map(Duration::as_millis).collect()
}
