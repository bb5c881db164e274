//! What the operator changes and sees: excluded nodes, a reload that would
//! leave a name with no node, and the view behind `/nodes`.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn excluding(nodes: &[IpAddr]) -> TrackerSettings {
    let mut settings = settings(&[], HealthSettings::default());
    settings.exclude = nodes.iter().copied().collect();
    settings
}

/// Applies `settings` as a reload does: checked first, applied if allowed.
fn reload(run: &mut Run, settings: TrackerSettings) -> Result<u64, ReloadRejected> {
    let zone = zone(&[]);
    run.tracker.check_reload(&zone, &settings)?;
    Ok(run.tracker.reload(zone, settings, run.now, &mut run.fx))
}

#[test]
fn an_excluded_node_leaves_at_once_on_reload_and_returns_when_no_longer_excluded() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2), ip(3)]);
    reload(&mut run, excluding(&[ip(2)])).unwrap();
    assert_eq!(run.serves(0), vec![ip(1), ip(3)]);
    // Still probed: its results are recorded, it is not served.
    run.fx.did.clear();
    run.at(MS).probe(ip(2), true);
    assert_eq!(run.serves(0), vec![ip(1), ip(3)]);
    reload(&mut run, excluding(&[])).unwrap();
    assert_eq!(run.serves(0), vec![ip(1), ip(2), ip(3)]);
}

#[test]
fn an_excluded_node_is_not_served_in_fail_open_either() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2), ip(3)]);
    reload(&mut run, excluding(&[ip(3)])).unwrap();
    for node in [ip(1), ip(2), ip(3)] {
        run.at(MS).probe(node, false);
        run.probe(node, false);
    }
    assert_eq!(run.basis(0), Basis::FailOpen);
    assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
}

#[test]
fn a_reload_excluding_every_node_of_a_name_is_rejected_and_changes_nothing() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2)]);
    let generation = run.tracker.current().generation;
    run.fx.did.clear();
    let rejected = reload(&mut run, excluding(&[ip(1), ip(2)])).unwrap_err();
    assert_eq!(rejected.name, "alternator.test");
    assert_eq!(rejected.serves, vec!["10.0.0.1", "10.0.0.2"]);
    assert!(
        rejected.to_string().contains("would serve no node"),
        "{rejected}"
    );
    assert_eq!(run.fx.did, vec![], "nothing published, no prober touched");
    assert_eq!(run.tracker.current().generation, generation);
    assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
    // One left is enough.
    reload(&mut run, excluding(&[ip(1)])).unwrap();
    assert_eq!(run.serves(0), vec![ip(2)]);
}

#[test]
fn the_view_shows_each_nodes_state_probe_and_names() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2), ip(3)]);
    reload(&mut run, excluding(&[ip(3)])).unwrap();
    let refused_at = run.now;
    run.at(2 * MS)
        .probe_failed(ip(2), FailureKind::Refused, refused_at);
    let view = run.tracker.view(run.now + Duration::from_secs(1));
    assert_eq!(view.generation, run.tracker.current().generation);
    let node = |last: u8| {
        let address = ip(last).to_string();
        view.nodes
            .iter()
            .find(|n| n.address == address)
            .unwrap()
            .clone()
    };
    let (one, two, three) = (node(1), node(2), node(3));
    assert_eq!(
        (one.listed, one.healthy, one.served, one.excluded),
        (true, Some(true), true, false)
    );
    assert_eq!(one.names, vec!["alternator.test"]);
    assert_eq!(
        (two.listed, two.healthy, two.served, two.excluded),
        (true, Some(false), false, false)
    );
    let probe = two.last_probe.unwrap();
    assert!(!probe.ok);
    assert_eq!(probe.error.as_deref(), Some("failed"));
    assert!((probe.ms - 2.0).abs() < 1e-6, "{}", probe.ms);
    assert!((probe.age_s - 1.0).abs() < 1e-6, "{}", probe.age_s);
    assert!((two.since - 1.0).abs() < 0.01, "{}", two.since);
    assert_eq!((three.served, three.excluded), (false, true));
    let name = &view.names[0];
    assert_eq!(name.name, "alternator.test");
    assert_eq!(name.served, vec!["10.0.0.1"]);
    assert_eq!((name.fallback.as_deref(), name.fail_open), (None, false));
}

#[test]
fn the_view_names_a_racks_fallback() {
    let names = [("r1", rack("dc1", "r1"))];
    let mut run = Run::new(&names, HealthSettings::default());
    run.tick();
    run.list(Selector::default(), &[ip(1), ip(2)]);
    run.list(dc("dc1"), &[ip(1), ip(2)]);
    run.list(rack("dc1", "r1"), &[ip(1)]);
    run.probe(ip(1), true);
    run.probe(ip(2), true);
    run.probe(ip(1), false);
    run.probe(ip(1), false);
    let view = run.tracker.view(run.now);
    let rack_name = &view.names[1];
    assert_eq!(rack_name.name, "r1.alternator.test");
    assert_eq!(
        (rack_name.dc.as_deref(), rack_name.rack.as_deref()),
        (Some("dc1"), Some("r1"))
    );
    assert_eq!(rack_name.fallback.as_deref(), Some("dc"));
    assert_eq!(rack_name.served, vec!["10.0.0.2"]);
}
