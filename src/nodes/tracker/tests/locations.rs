//! Zone-local answers: each location's clients get their rack's live nodes,
//! then their datacenter's, then their name's, as nodes come and go.

use super::*;

const MS: Duration = Duration::from_millis(1);

/// The apex places its clients; locations dc1/r1, dc1/r2 and dc2.
fn placing(min_nodes: usize) -> (TrackerSettings, Arc<Metrics>) {
    let mut settings = settings(&[], HealthSettings::default());
    settings.names[0].affinity = true;
    settings.locations = LocationTargets {
        selectors: vec![rack("dc1", "r1"), rack("dc1", "r2"), dc("dc2")],
        min_nodes,
    };
    let metrics = Arc::clone(&settings.metrics);
    (settings, metrics)
}

/// A tracker serving dc1 (ip 1-2 in r1, 3-4 in r2) as its local
/// datacenter and ip 5 in dc2, every node probed and passing.
fn cluster(min_nodes: usize) -> (Run, Arc<Metrics>) {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2), ip(3), ip(4)]);
    let (settings, metrics) = placing(min_nodes);
    let zone = zone(&[]);
    run.tracker.check_reload(&zone, &settings).unwrap();
    run.tracker.reload(zone, settings, run.now, &mut run.fx);
    run.fx.did.clear();
    let dids = run.tick();
    let [Did::Poll(selectors)] = dids.as_slice() else {
        panic!("no round: {dids:?}");
    };
    let want = [
        Selector::default(),
        dc("dc1"),
        rack("dc1", "r1"),
        rack("dc1", "r2"),
        dc("dc2"),
    ];
    assert_eq!(
        selectors.iter().collect::<BTreeSet<_>>(),
        want.iter().collect()
    );
    run.list(Selector::default(), &[ip(1), ip(2), ip(3), ip(4)]);
    run.list(rack("dc1", "r1"), &[ip(1), ip(2)]);
    run.list(rack("dc1", "r2"), &[ip(3), ip(4)]);
    run.list(dc("dc1"), &[ip(1), ip(2), ip(3), ip(4)]);
    run.list(dc("dc2"), &[ip(5)]);
    run.event(Event::RoundDone);
    run.at(MS).probe(ip(5), true);
    (run, metrics)
}

/// `node` refuses a probe a millisecond from now: out at once.
fn refused(run: &mut Run, node: IpAddr) {
    let now = run.at(MS).now;
    run.probe_failed(node, FailureKind::Refused, now);
}

/// The nodes location `j` answers its clients with, sorted.
fn location(run: &Run, j: usize) -> Vec<IpAddr> {
    let mut nodes: Vec<IpAddr> = run.tracker.current().location_set(j).iter().collect();
    nodes.sort();
    nodes
}

fn fallbacks(metrics: &Metrics, rack: &str, to: &str) -> bool {
    let line = format!(
        "alternator_dns_location_fallbacks_total{{dc=\"dc1\",rack=\"{rack}\",to=\"{to}\"}} 1"
    );
    metrics.render().lines().any(|l| l == line)
}

#[test]
fn each_location_gets_its_own_rack_or_datacenter() {
    let (run, _) = cluster(1);
    assert_eq!(location(&run, 0), [ip(1), ip(2)]);
    assert_eq!(location(&run, 1), [ip(3), ip(4)]);
    assert_eq!(
        location(&run, 2),
        [ip(5)],
        "a location without a rack: its datacenter"
    );
    assert_eq!(
        run.serves(0),
        [ip(1), ip(2), ip(3), ip(4)],
        "the name's own list is unchanged"
    );
}

#[test]
fn a_dead_rack_falls_back_to_its_datacenter_then_to_the_name() {
    let (mut run, metrics) = cluster(1);
    for node in [ip(1), ip(2)] {
        refused(&mut run, node);
    }
    assert_eq!(
        location(&run, 0),
        [ip(3), ip(4)],
        "r1's clients get dc1's live nodes"
    );
    assert_eq!(location(&run, 1), [ip(3), ip(4)], "r2 stays local");
    assert!(fallbacks(&metrics, "r1", "dc"), "{}", metrics.render());
    for node in [ip(3), ip(4)] {
        refused(&mut run, node);
    }
    // dc1 has no live node: both racks' clients get the name's list (which
    // fails open over every listed node).
    assert_eq!(location(&run, 0), Vec::<IpAddr>::new());
    assert_eq!(location(&run, 1), Vec::<IpAddr>::new());
    assert!(fallbacks(&metrics, "r1", "name"));
    assert!(fallbacks(&metrics, "r2", "name"));
    run.at(MS).probe(ip(2), true);
    assert_eq!(location(&run, 0), [ip(2)], "back in its own rack");
    assert_eq!(
        location(&run, 1),
        [ip(2)],
        "r2's clients get dc1's one live node"
    );
}

#[test]
fn the_view_shows_where_each_locations_clients_are_answered_from() {
    let (mut run, _) = cluster(1);
    refused(&mut run, ip(1));
    refused(&mut run, ip(2));
    let view = run.tracker.view(run.now);
    let seen: Vec<(String, Option<String>, usize, String)> = (view.locations.iter())
        .map(|l| (l.dc.clone(), l.rack.clone(), l.served.len(), l.from.clone()))
        .collect();
    let want = [
        ("dc1", Some("r1"), 2, "dc"),
        ("dc1", Some("r2"), 2, "rack"),
        ("dc2", None, 1, "dc"),
    ]
    .map(|(dc, rack, n, from)| (dc.to_string(), rack.map(String::from), n, from.to_string()));
    assert_eq!(seen, want);
}

#[test]
fn a_rack_below_the_minimum_counts_as_empty() {
    let (mut run, metrics) = cluster(2);
    assert_eq!(location(&run, 0), [ip(1), ip(2)]);
    assert_eq!(
        location(&run, 2),
        Vec::<IpAddr>::new(),
        "dc2 has one node, fewer than 2"
    );
    refused(&mut run, ip(1));
    assert_eq!(
        location(&run, 0),
        [ip(2), ip(3), ip(4)],
        "one left in r1: dc1's"
    );
    assert!(fallbacks(&metrics, "r1", "dc"));
    refused(&mut run, ip(3));
    assert_eq!(location(&run, 0), [ip(2), ip(4)]);
    assert_eq!(location(&run, 1), [ip(2), ip(4)]);
    refused(&mut run, ip(4));
    assert_eq!(
        location(&run, 0),
        Vec::<IpAddr>::new(),
        "one left in dc1: the name's list"
    );
}

#[test]
fn names_answer_only_locations_within_their_own_nodes() {
    let dc1 = NameRule {
        selector: dc("dc1"),
        fallback: true,
        affinity: true,
    };
    assert!(dc1.serves_location(&rack("dc1", "r2")));
    assert!(
        !dc1.serves_location(&dc("dc2")),
        "a dc2 client asking for dc1 gets dc1"
    );
    let apex = NameRule {
        selector: Selector::default(),
        ..dc1.clone()
    };
    assert!(apex.serves_location(&dc("dc2")));
    let off = NameRule {
        affinity: false,
        ..apex
    };
    assert!(!off.serves_location(&dc("dc2")));
}

#[test]
fn a_reload_keeps_what_each_location_is_answered_with() {
    let (mut run, _) = cluster(1);
    let (settings, _) = placing(1);
    let zone = zone(&[]);
    let generation = run.tracker.reload(zone, settings, run.now, &mut run.fx);
    // The first snapshot of the new configuration already places clients:
    // nothing changed, so nothing was published after it.
    assert_eq!(run.tracker.current().generation, generation);
    assert_eq!(location(&run, 0), [ip(1), ip(2)]);
    assert_eq!(location(&run, 2), [ip(5)]);
}

#[test]
fn a_pending_location_drops_the_nodes_known_to_fail() {
    let (mut run, _) = cluster(1);
    // A new node joins r1: its first probe is due, so r1 waits for it.
    run.list(rack("dc1", "r1"), &[ip(1), ip(2), ip(6)]);
    refused(&mut run, ip(1));
    refused(&mut run, ip(2));
    assert_eq!(
        location(&run, 0),
        Vec::<IpAddr>::new(),
        "r1's dead nodes are not kept while it waits: its clients get the name's list"
    );
    run.at(MS).probe(ip(6), true);
    assert_eq!(location(&run, 0), [ip(6)]);
}

#[test]
fn a_reload_neither_logs_nor_counts_a_fallback_again() {
    let (mut run, metrics) = cluster(1);
    refused(&mut run, ip(1));
    refused(&mut run, ip(2));
    assert!(fallbacks(&metrics, "r1", "dc"));
    let (mut settings, _) = placing(1);
    settings.metrics = Arc::clone(&metrics);
    run.tracker
        .reload(zone(&[]), settings, run.now, &mut run.fx);
    assert_eq!(location(&run, 0), [ip(3), ip(4)]);
    assert!(fallbacks(&metrics, "r1", "dc"), "still counted once");
}

#[test]
fn a_rack_name_never_answers_with_its_datacenters_other_racks() {
    use crate::access::Cidr;
    use crate::dns::{LocationRule, Placement};
    let (mut run, _) = cluster(1);
    // A name for rack r1 that places its clients; 10.9.0.0/16 is r1.
    let names = [("r1", rack("dc1", "r1"))];
    let rules = [LocationRule {
        cidr: "10.9.0.0/16".parse::<Cidr>().unwrap(),
        location: 0,
    }];
    let zone = Arc::unwrap_or_clone(zone(&names));
    let zone = Arc::new(zone.with_placement(Placement::new(&rules, vec![false, true], true)));
    let (mut settings, _) = placing(1);
    let apex = settings.names[0].clone();
    settings.names = vec![
        NameRule {
            affinity: false,
            ..apex
        },
        NameRule {
            selector: rack("dc1", "r1"),
            fallback: false,
            affinity: true,
        },
    ];
    run.tracker.reload(zone, settings, run.now, &mut run.fx);
    let client: IpAddr = "10.9.1.1".parse().unwrap();
    let current = Arc::clone(run.tracker.current());
    let (set, _) = current.placed(1, client, None, false);
    assert_eq!(
        set, 2,
        "r1's clients get the location's set, r1's own nodes"
    );
    refused(&mut run, ip(1));
    refused(&mut run, ip(2));
    assert_eq!(
        location(&run, 0),
        [ip(3), ip(4)],
        "the location falls back to dc1"
    );
    let current = Arc::clone(run.tracker.current());
    let (set, _) = current.placed(1, client, None, false);
    assert_eq!(
        set, 1,
        "but the r1 name answers from its own list, not dc1's"
    );
}
