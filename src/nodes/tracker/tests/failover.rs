//! Failover rules at explicit times: how each kind of failure takes a node
//! out and what is counted, a close that a reconnect answers, flap damping,
//! and the narrowing after a full outage.

use super::*;
use crate::metrics::RemovalReason;

const MS: Duration = Duration::from_millis(1);
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

fn removals(run: &Run, reason: RemovalReason) -> u64 {
    run.tracker.metrics.control().removals(reason)
}

/// The removal-time histogram of `reason`: its sum in seconds and its count.
fn removal_seconds(run: &Run, reason: &str) -> (f64, u64) {
    let text = run.tracker.metrics.render();
    let value = |suffix: &str| {
        let key = format!("alternator_dns_node_removal_seconds_{suffix}{{reason=\"{reason}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&key)).unwrap();
        line[key.len()..].to_string()
    };
    (
        value("sum").parse().unwrap(),
        value("count").parse().unwrap(),
    )
}

fn published(dids: &[Did]) -> bool {
    dids.iter().any(|d| matches!(d, Did::Publish(_)))
}

#[test]
fn a_refused_connection_is_counted_with_the_time_it_took() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2)]);
    let started = run.now;
    let dids = run
        .at(2 * MS)
        .probe_failed(ip(2), FailureKind::Refused, started);
    assert!(published(&dids), "{dids:?}");
    assert_eq!(run.serves(0), vec![ip(1)]);
    assert_eq!(removals(&run, RemovalReason::Refused), 1);
    let (sum, count) = removal_seconds(&run, "refused");
    assert_eq!(count, 1);
    assert!((sum - 0.002).abs() < 1e-9, "{sum}");
}

#[test]
fn a_timeout_takes_a_node_out_timed_from_its_first_failing_probe() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2)]);
    let first = run.now;
    let timeout = HealthSettings::default().timeout;
    let dids = run
        .at(timeout)
        .probe_failed(ip(2), FailureKind::Timeout, first);
    assert!(!published(&dids), "one timeout of two keeps it: {dids:?}");
    // The second opinion comes at once, and times out too.
    let second = run.now;
    let dids = run
        .at(timeout)
        .probe_failed(ip(2), FailureKind::Timeout, second);
    assert!(published(&dids), "{dids:?}");
    assert_eq!(run.serves(0), vec![ip(1)]);
    assert_eq!(removals(&run, RemovalReason::Timeout), 1);
    let (sum, count) = removal_seconds(&run, "timeout");
    assert_eq!(count, 1);
    assert!(
        (sum - 0.6).abs() < 1e-9,
        "from the first probe's start: {sum}"
    );
}

#[test]
fn a_closed_connection_counts_as_one_failure() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2)]);
    let dids = run.probe_failed(ip(2), FailureKind::Closed, run.now);
    assert!(!published(&dids), "a close alone is not a death: {dids:?}");
    run.at(MS);
    let dids = run.probe_failed(ip(2), FailureKind::Closed, run.now);
    assert!(published(&dids), "{dids:?}");
    assert_eq!(removals(&run, RemovalReason::Closed), 1);
    assert_eq!(removals(&run, RemovalReason::Refused), 0);
}

#[test]
fn a_close_answered_by_a_reconnect_changes_nothing() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2)]);
    let generation = run.tracker.current().generation;
    // The node closed its idle kept connection; the probe made at once on a
    // new one passes, as do the next ones.
    for _ in 0..10 {
        let dids = run.at(PROBE_INTERVAL).probe(ip(2), true);
        assert_eq!(dids, vec![]);
    }
    assert_eq!(run.tracker.current().generation, generation);
    assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
    let counted: u64 = RemovalReason::ALL.iter().map(|&r| removals(&run, r)).sum();
    assert_eq!(counted, 0);
}

#[test]
fn a_node_no_longer_listed_is_counted_as_unlisted() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2)]);
    run.list(Selector::default(), &[ip(1)]);
    assert_eq!(removals(&run, RemovalReason::Unlisted), 1);
    assert_eq!(removal_seconds(&run, "timeout"), (0.0, 0));
}

#[test]
fn a_flapping_node_is_served_again_after_five_passes_in_a_row() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2)]);
    // Taken out and back three times within a minute.
    for _ in 0..3 {
        run.at(10 * PROBE_INTERVAL);
        assert!(published(&run.probe_failed(
            ip(2),
            FailureKind::Refused,
            run.now
        )));
        assert_eq!(run.serves(0), vec![ip(1)]);
        let dids = run.at(PROBE_INTERVAL).probe(ip(2), true);
        if removals(&run, RemovalReason::Refused) < 3 {
            assert!(published(&dids), "not flapping yet: back at once");
            assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
        }
    }
    // The third time it waits: four more passes, one probe interval apart.
    let healthy_from = run.now;
    for pass in 2..=5 {
        assert_eq!(run.serves(0), vec![ip(1)], "before pass {pass}");
        run.at(PROBE_INTERVAL).probe(ip(2), true);
    }
    assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
    assert!(run.now - healthy_from < Duration::from_secs(10));
    // A failure while waiting starts the count again.
    run.at(10 * PROBE_INTERVAL);
    run.probe_failed(ip(2), FailureKind::Refused, run.now);
    for _ in 0..4 {
        run.at(PROBE_INTERVAL).probe(ip(2), true);
    }
    run.at(PROBE_INTERVAL).probe(ip(2), false);
    for _ in 0..4 {
        run.at(PROBE_INTERVAL).probe(ip(2), true);
    }
    assert_eq!(run.serves(0), vec![ip(1)]);
    run.at(PROBE_INTERVAL).probe(ip(2), true);
    assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
}

/// Six nodes served, then every one failing: served in fail open.
fn full_outage() -> Run {
    let mut run = Run::checked();
    let nodes: Vec<IpAddr> = (1..=6).map(ip).collect();
    run.serving(&nodes);
    for &node in &nodes {
        run.at(MS).probe(node, false);
        run.probe(node, false);
    }
    assert_eq!(run.serves(0), nodes);
    assert_eq!(run.basis(0), Basis::FailOpen);
    run
}

#[test]
fn after_a_full_outage_the_answers_narrow_once_every_node_has_reported() {
    let mut run = full_outage();
    // The nodes pass again one by one over the next probe interval; one
    // stays down.
    let mut smallest = usize::MAX;
    for node in 1..=5 {
        run.at(90 * MS).probe(ip(node), true);
        smallest = smallest.min(run.fx.published.as_ref().unwrap().set(0).len());
        assert_eq!(run.serves(0).len(), 6, "after node {node} passed");
        assert_eq!(run.basis(0), Basis::FailOpen);
    }
    let dids = run.at(90 * MS).probe(ip(6), false);
    assert!(published(&dids), "{dids:?}");
    assert_eq!(run.serves(0), (1..=5).map(ip).collect::<Vec<_>>());
    assert_eq!(run.basis(0), Basis::Listed);
    assert!(smallest >= 3, "an answer named {smallest} nodes");
}

#[test]
fn after_a_full_outage_the_narrowing_waits_one_probe_interval_at_most() {
    let mut run = full_outage();
    let passed_at = run.now;
    run.probe(ip(1), true);
    assert_eq!(run.tracker.next_wakeup(), Some(passed_at + PROBE_INTERVAL));
    // The others hang: no report comes.
    assert_eq!(run.at(PROBE_INTERVAL - MS).tick(), vec![]);
    assert_eq!(run.serves(0).len(), 6);
    let dids = run.at(MS).tick();
    assert!(published(&dids), "{dids:?}");
    assert_eq!(run.serves(0), vec![ip(1)]);
    assert_eq!(run.basis(0), Basis::Listed);
    assert_eq!(run.tracker.next_wakeup(), None, "the round still runs");
}
