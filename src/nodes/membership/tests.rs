//! The membership rules on their own: lists, probes, fallbacks, fail open.

use super::*;

fn membership(checking: bool, failures: u32) -> Membership {
    let settings = HealthSettings {
        enabled: checking,
        failures,
        ..HealthSettings::default()
    };
    Membership::new(settings, BTreeSet::new())
}

/// A probe now, passed or timed out.
fn probe(m: &mut Membership, node: IpAddr, passed: bool) -> bool {
    let failure = (!passed).then_some(FailureKind::Timeout);
    m.record_probe(node, failure, Instant::now())
}

fn none() -> BTreeSet<IpAddr> {
    BTreeSet::new()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sel(dc: Option<&str>, rack: Option<&str>) -> Selector {
    Selector {
        dc: dc.map(String::from),
        rack: rack.map(String::from),
    }
}

fn rule(dc: Option<&str>, rack: Option<&str>, fallback: bool) -> NameRule {
    NameRule {
        selector: sel(dc, rack),
        fallback,
        affinity: false,
    }
}

#[test]
fn paths_carry_dc_and_rack_encoded() {
    assert_eq!(Selector::default().path(), "/localnodes");
    assert_eq!(sel(Some("dc2"), None).path(), "/localnodes?dc=dc2");
    assert_eq!(
        sel(Some("dc 1"), Some("r&1")).path(),
        "/localnodes?dc=dc%201&rack=r%261"
    );
    assert_eq!(sel(None, Some("r1")).path(), "/localnodes?rack=r1");
}

#[test]
fn new_nodes_are_served_only_after_a_good_probe() {
    let mut m = membership(true, 2);
    let added = m.set_listed(
        Selector::default(),
        vec![ip("10.0.0.1"), ip("10.0.0.2")],
        Instant::now(),
    );
    assert_eq!(added.len(), 2);
    probe(&mut m, ip("10.0.0.1"), true);
    let (nodes, choice) = m.serve(&rule(None, None, true), &none());
    assert_eq!(nodes, vec![ip("10.0.0.1")]);
    assert_eq!(choice, Choice::Healthy(Selector::default()));
    // A failing first probe: down at once, and still not served.
    assert!(probe(&mut m, ip("10.0.0.2"), false));
    assert_eq!(m.health(ip("10.0.0.2")), Some(Health::Down));
    assert_eq!(
        m.serve(&rule(None, None, true), &none()).0,
        vec![ip("10.0.0.1")]
    );
}

#[test]
fn a_node_leaves_after_n_failures_and_returns_after_one_success() {
    let mut m = membership(true, 2);
    m.set_listed(
        Selector::default(),
        vec![ip("10.0.0.1"), ip("10.0.0.2")],
        Instant::now(),
    );
    probe(&mut m, ip("10.0.0.1"), true);
    probe(&mut m, ip("10.0.0.2"), true);
    assert!(
        !probe(&mut m, ip("10.0.0.2"), false),
        "one failure is tolerated"
    );
    assert_eq!(m.serve(&rule(None, None, true), &none()).0.len(), 2);
    assert!(
        probe(&mut m, ip("10.0.0.2"), false),
        "the second takes it out"
    );
    assert_eq!(
        m.serve(&rule(None, None, true), &none()).0,
        vec![ip("10.0.0.1")]
    );
    assert!(probe(&mut m, ip("10.0.0.2"), true));
    assert_eq!(m.serve(&rule(None, None, true), &none()).0.len(), 2);
}

#[test]
fn every_listed_node_failing_fails_open() {
    let mut m = membership(true, 1);
    m.set_listed(
        Selector::default(),
        vec![ip("10.0.0.1"), ip("10.0.0.2")],
        Instant::now(),
    );
    assert_eq!(
        m.serve(&rule(None, None, true), &none()),
        (vec![], Choice::Pending)
    );
    for node in ["10.0.0.1", "10.0.0.2"] {
        probe(&mut m, ip(node), true);
        probe(&mut m, ip(node), false);
    }
    let (nodes, choice) = m.serve(&rule(None, None, true), &none());
    assert_eq!(nodes.len(), 2);
    assert_eq!(choice, Choice::FailOpen(Selector::default()));
}

#[test]
fn racks_fall_back_to_their_datacenter_then_the_default_list() {
    let mut m = membership(false, 2);
    let r1 = rule(Some("dc1"), Some("r1"), true);
    m.set_listed(sel(Some("dc1"), Some("r1")), vec![], Instant::now());
    m.set_listed(sel(Some("dc1"), None), vec![ip("10.1.0.1")], Instant::now());
    m.set_listed(Selector::default(), vec![ip("10.0.0.1")], Instant::now());
    assert_eq!(
        m.serve(&r1, &none()),
        (
            vec![ip("10.1.0.1")],
            Choice::Healthy(sel(Some("dc1"), None))
        )
    );
    m.set_listed(sel(Some("dc1"), None), vec![], Instant::now());
    assert_eq!(
        m.serve(&r1, &none()),
        (vec![ip("10.0.0.1")], Choice::Healthy(Selector::default()))
    );
    // Without fallback, an empty rack serves nothing.
    assert_eq!(
        m.serve(&rule(Some("dc1"), Some("r1"), false), &none()).1,
        Choice::Empty
    );
    // A rack with nodes is served itself.
    m.set_listed(
        sel(Some("dc1"), Some("r1")),
        vec![ip("10.1.1.1")],
        Instant::now(),
    );
    assert_eq!(m.serve(&r1, &none()).0, vec![ip("10.1.1.1")]);
}

#[test]
fn unhealthy_rack_nodes_fall_back_to_healthy_datacenter_nodes() {
    let mut m = membership(true, 1);
    m.set_listed(
        sel(Some("dc1"), Some("r1")),
        vec![ip("10.1.1.1")],
        Instant::now(),
    );
    m.set_listed(
        sel(Some("dc1"), None),
        vec![ip("10.1.1.1"), ip("10.1.2.1")],
        Instant::now(),
    );
    probe(&mut m, ip("10.1.1.1"), true);
    probe(&mut m, ip("10.1.2.1"), true);
    probe(&mut m, ip("10.1.1.1"), false);
    let (nodes, choice) = m.serve(&rule(Some("dc1"), Some("r1"), true), &none());
    assert_eq!(nodes, vec![ip("10.1.2.1")]);
    assert_eq!(choice, Choice::Healthy(sel(Some("dc1"), None)));
}

#[test]
fn nodes_served_now_stay_until_their_first_probe() {
    let mut m = membership(true, 2);
    m.set_listed(
        Selector::default(),
        vec![ip("10.0.0.1"), ip("10.0.0.2")],
        Instant::now(),
    );
    let seeds = BTreeSet::from([ip("10.0.0.1")]);
    let (nodes, choice) = m.serve(&rule(None, None, true), &seeds);
    assert_eq!(
        nodes,
        vec![ip("10.0.0.1")],
        "the seed stays, the new node waits"
    );
    assert_eq!(choice, Choice::Healthy(Selector::default()));
    probe(&mut m, ip("10.0.0.1"), false);
    probe(&mut m, ip("10.0.0.2"), true);
    assert_eq!(
        m.serve(&rule(None, None, true), &seeds).0,
        vec![ip("10.0.0.2")]
    );
}

#[test]
fn a_list_not_probed_yet_waits_instead_of_falling_back() {
    let mut m = membership(true, 2);
    m.set_listed(Selector::default(), vec![ip("10.0.0.1")], Instant::now());
    probe(&mut m, ip("10.0.0.1"), true);
    m.set_listed(sel(Some("dc2"), None), vec![ip("10.2.0.1")], Instant::now());
    let dc2 = rule(Some("dc2"), None, true);
    assert_eq!(m.serve(&dc2, &none()), (vec![], Choice::Pending));
    probe(&mut m, ip("10.2.0.1"), false);
    let (nodes, choice) = m.serve(&dc2, &none());
    assert_eq!(nodes, vec![ip("10.0.0.1")], "probed and failed: fall back");
    assert_eq!(choice, Choice::Healthy(Selector::default()));
}

#[test]
fn unlisted_nodes_are_forgotten() {
    let mut m = membership(true, 2);
    m.set_listed(
        Selector::default(),
        vec![ip("10.0.0.1"), ip("10.0.0.2")],
        Instant::now(),
    );
    probe(&mut m, ip("10.0.0.2"), true);
    m.set_listed(Selector::default(), vec![ip("10.0.0.1")], Instant::now());
    assert_eq!(m.health(ip("10.0.0.2")), None);
    // Listed again: unknown until probed again.
    let added = m.set_listed(
        Selector::default(),
        vec![ip("10.0.0.1"), ip("10.0.0.2")],
        Instant::now(),
    );
    assert_eq!(added, vec![ip("10.0.0.2")]);
    assert_eq!(m.health(ip("10.0.0.2")), Some(Health::Unknown));
}
