//! The tracker's rules, driven by scripted events at explicit times: no
//! sockets, no tasks, no sleeps.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::dns::{Zone, ZoneSettings};
use crate::nodes::refresher::RefreshError;

mod failover;
mod locations;
mod operator;

/// What the tracker asked for, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Did {
    Publish(u64),
    Poll(Vec<Selector>),
    Start(IpAddr),
    Stop(IpAddr),
}

#[derive(Default)]
struct Recorder {
    did: Vec<Did>,
    /// When each started prober probes first.
    firsts: Vec<Duration>,
    plans: Vec<Vec<PollPlan>>,
    published: Option<Arc<Snapshot>>,
}

impl Effects for Recorder {
    fn publish(&mut self, snapshot: Arc<Snapshot>) {
        self.did.push(Did::Publish(snapshot.generation));
        self.published = Some(snapshot);
    }
    fn poll(&mut self, plan: Vec<PollPlan>) {
        self.did
            .push(Did::Poll(plan.iter().map(|p| p.selector.clone()).collect()));
        self.plans.push(plan);
    }
    fn start_probing(&mut self, node: IpAddr, first: Duration, _seed: u64) {
        self.firsts.push(first);
        self.did.push(Did::Start(node));
    }
    fn stop_probing(&mut self, node: IpAddr) {
        self.did.push(Did::Stop(node));
    }
}

const INTERVAL: Duration = Duration::from_secs(1);
const SEED: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, last))
}

fn from() -> SocketAddr {
    SocketAddr::new(ip(1), 8000)
}

fn dc(dc: &str) -> Selector {
    Selector {
        dc: Some(dc.into()),
        rack: None,
    }
}

fn rack(dc: &str, rack: &str) -> Selector {
    Selector {
        dc: Some(dc.into()),
        rack: Some(rack.into()),
    }
}

/// A name below `alternator.test.` and its rule; the apex comes first.
type NameSpec = (&'static str, Selector);

fn zone(names: &[NameSpec]) -> Arc<Zone> {
    let extra: Vec<String> = names
        .iter()
        .map(|(n, _)| format!("{n}.alternator.test"))
        .collect();
    let zone = Zone::new(&ZoneSettings::new("alternator.test")).unwrap();
    Arc::new(zone.with_names(&extra).unwrap())
}

fn settings(names: &[NameSpec], health: HealthSettings) -> TrackerSettings {
    let mut rules = vec![NameRule {
        selector: Selector::default(),
        fallback: true,
        affinity: false,
    }];
    rules.extend(names.iter().map(|(_, selector)| NameRule {
        selector: selector.clone(),
        fallback: true,
        affinity: false,
    }));
    TrackerSettings {
        refresh: RefreshSettings {
            seeds: vec![SocketAddr::new(SEED, 8000)],
            alternator_port: 8000,
            interval: INTERVAL,
            timeout: Duration::from_millis(500),
        },
        health,
        exclude: BTreeSet::new(),
        names: rules,
        locations: LocationTargets::default(),
        metrics: Arc::new(Metrics::new(1)),
    }
}

struct Run {
    tracker: Tracker,
    fx: Recorder,
    now: Instant,
}

impl Run {
    fn new(names: &[NameSpec], health: HealthSettings) -> Run {
        let seeds = Snapshot::new(1, zone(names), NodeSource::Seeds, &[SEED]);
        let now = Instant::now();
        Run {
            tracker: Tracker::new(settings(names, health), Arc::new(seeds), now, 7),
            fx: Recorder::default(),
            now,
        }
    }

    fn checked() -> Run {
        Run::new(&[], HealthSettings::default())
    }

    fn at(&mut self, after: Duration) -> &mut Run {
        self.now += after;
        self
    }

    fn event(&mut self, event: Event) -> Vec<Did> {
        self.tracker.handle(event, self.now, &mut self.fx);
        std::mem::take(&mut self.fx.did)
    }

    fn list(&mut self, selector: Selector, nodes: &[IpAddr]) -> Vec<Did> {
        self.event(Event::Listed {
            selector,
            from: from(),
            nodes: nodes.to_vec(),
        })
    }

    fn fail_list(&mut self, selector: Selector) -> Vec<Did> {
        let error = PollError {
            node: Some(from()),
            tried: 1,
            error: RefreshError::Empty,
        };
        self.event(Event::ListFailed { selector, error })
    }

    /// A probe that started and ended now: passed, or timed out.
    fn probe(&mut self, node: IpAddr, passed: bool) -> Vec<Did> {
        match passed {
            true => self.probe_result(node, ProbeResult::Passed, self.now),
            false => self.probe_failed(node, FailureKind::Timeout, self.now),
        }
    }

    /// A probe that started at `started` and failed this way now.
    fn probe_failed(&mut self, node: IpAddr, kind: FailureKind, started: Instant) -> Vec<Did> {
        let result = ProbeResult::Failed {
            kind,
            detail: "failed".into(),
            hint: "check the node",
        };
        self.probe_result(node, result, started)
    }

    fn probe_result(&mut self, node: IpAddr, result: ProbeResult, started: Instant) -> Vec<Did> {
        self.event(Event::Probe {
            node,
            result,
            started,
        })
    }

    fn tick(&mut self) -> Vec<Did> {
        self.tracker.tick(self.now, &mut self.fx);
        std::mem::take(&mut self.fx.did)
    }

    /// Runs one whole round at the current time in which every selector
    /// the tracker asks for fails.
    fn failed_round(&mut self) {
        let dids = self.tick();
        let [Did::Poll(selectors)] = dids.as_slice() else {
            panic!("no round started: {dids:?}");
        };
        for selector in selectors.clone() {
            self.fail_list(selector);
        }
        self.event(Event::RoundDone);
    }

    /// The nodes name `index` serves now, sorted.
    fn serves(&self, index: usize) -> Vec<IpAddr> {
        let mut nodes: Vec<IpAddr> = self.tracker.current().set_nodes(index).collect();
        nodes.sort();
        nodes
    }

    fn basis(&self, index: usize) -> Basis {
        self.tracker.current().basis(index)
    }

    /// Lists `nodes` as the local datacenter and lets each pass its first
    /// probe.
    fn serving(&mut self, nodes: &[IpAddr]) {
        self.tick();
        self.list(Selector::default(), nodes);
        for &node in nodes {
            self.probe(node, true);
        }
        assert_eq!(self.serves(0), nodes);
    }
}

#[test]
fn one_round_runs_at_a_time_and_the_first_is_due_at_once() {
    let mut run = Run::checked();
    assert_eq!(run.tracker.next_wakeup(), Some(run.now));
    assert_eq!(run.tick(), vec![Did::Poll(vec![Selector::default()])]);
    assert_eq!(run.tracker.next_wakeup(), None);
    assert_eq!(run.at(INTERVAL * 10).tick(), vec![]);
    run.list(Selector::default(), &[ip(1)]);
    run.event(Event::RoundDone);
    assert_eq!(run.tracker.next_wakeup(), Some(run.now + INTERVAL));
    assert_eq!(run.at(INTERVAL / 2).tick(), vec![]);
    assert_eq!(run.at(INTERVAL / 2).tick().len(), 1);
}

#[test]
fn the_seeds_give_way_once_every_listed_node_has_been_probed() {
    let mut run = Run::checked();
    run.tick();
    let nodes = [ip(1), ip(2), ip(3)];
    let dids = run.list(Selector::default(), &nodes);
    assert_eq!(
        dids,
        nodes.map(Did::Start).to_vec(),
        "probes start, nothing is published"
    );
    assert_eq!(run.probe(ip(1), true), vec![]);
    assert_eq!(run.probe(ip(2), true), vec![]);
    assert_eq!(run.tracker.current().source, NodeSource::Seeds);
    assert_eq!(run.serves(0), vec![SEED]);
    // The last first probe fails: the list served at once is whole, without it.
    assert_eq!(run.probe(ip(3), false), vec![Did::Publish(2)]);
    assert_eq!(run.tracker.current().source, NodeSource::Cluster);
    assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
    assert_eq!(run.basis(0), Basis::Listed);
}

#[test]
fn polling_backs_off_while_no_node_answers_and_resets_when_one_does() {
    let mut run = Run::checked();
    let metrics = Arc::clone(&run.tracker.metrics);
    let mut pauses = Vec::new();
    for _ in 0..6 {
        run.failed_round();
        let next = run.tracker.next_wakeup().unwrap();
        pauses.push(next - run.now);
        run.now = next;
    }
    let secs = |s: &[u64]| {
        s.iter()
            .map(|&s| Duration::from_secs(s))
            .collect::<Vec<_>>()
    };
    assert_eq!(pauses, secs(&[1, 2, 4, 5, 5, 5]));
    assert!(metrics
        .control()
        .refresh_problem()
        .unwrap()
        .contains("no node address"));
    // The seeds are still served: nothing confirmed them.
    assert_eq!(run.serves(0), vec![SEED]);

    run.tick();
    run.list(Selector::default(), &[ip(1)]);
    run.event(Event::RoundDone);
    assert_eq!(run.tracker.next_wakeup(), Some(run.now + INTERVAL));
    assert_eq!(metrics.control().refresh_problem(), None);
}

#[test]
fn a_failing_list_keeps_the_last_good_one() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2)]);
    run.event(Event::RoundDone);
    run.at(INTERVAL).failed_round();
    assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
    assert_eq!(run.basis(0), Basis::Listed);
}

#[test]
fn a_node_leaves_after_the_configured_failures_in_a_row_and_returns_on_a_pass() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2)]);
    assert_eq!(
        run.probe(ip(2), false),
        vec![],
        "one failure of two keeps it"
    );
    assert_eq!(run.probe(ip(2), true), vec![]);
    run.probe(ip(2), false);
    let dids = run.probe(ip(2), false);
    assert!(matches!(dids.as_slice(), [Did::Publish(_)]), "{dids:?}");
    assert_eq!(run.serves(0), vec![ip(1)]);
    let dids = run.probe(ip(2), true);
    assert!(matches!(dids.as_slice(), [Did::Publish(_)]), "{dids:?}");
    assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
}

#[test]
fn every_node_failing_is_served_anyway_and_marked_fail_open() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2)]);
    for node in [ip(1), ip(2)] {
        run.probe(node, false);
        run.probe(node, false);
    }
    assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
    assert_eq!(run.basis(0), Basis::FailOpen);
    // The first node to pass again is not served alone before the other's
    // next probe reports.
    run.probe(ip(2), true);
    assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
    assert_eq!(run.basis(0), Basis::FailOpen);
    run.probe(ip(1), false);
    assert_eq!(run.serves(0), vec![ip(2)]);
    assert_eq!(run.basis(0), Basis::Listed);
}

#[test]
fn a_rack_falls_back_to_its_datacenter_then_to_the_default_list() {
    let names = [("r1", rack("dc1", "r1"))];
    let mut run = Run::new(&names, HealthSettings::default());
    let dids = run.tick();
    let all = vec![Selector::default(), dc("dc1"), rack("dc1", "r1")];
    assert_eq!(dids, vec![Did::Poll(all)]);
    run.list(Selector::default(), &[ip(1), ip(2), ip(3)]);
    run.list(dc("dc1"), &[ip(1), ip(2)]);
    run.list(rack("dc1", "r1"), &[ip(1)]);
    for node in [ip(1), ip(2), ip(3)] {
        run.probe(node, true);
    }
    assert_eq!(run.serves(1), vec![ip(1)]);
    for _ in 0..2 {
        run.probe(ip(1), false);
    }
    assert_eq!(run.serves(1), vec![ip(2)], "the datacenter's healthy node");
    for _ in 0..2 {
        run.probe(ip(2), false);
    }
    assert_eq!(
        run.serves(1),
        vec![ip(3)],
        "the default list's healthy node"
    );
    assert_eq!(run.serves(0), vec![ip(3)]);

    // The next round asks a rack's own nodes first, then the default list's.
    run.event(Event::RoundDone);
    run.at(INTERVAL).tick();
    let plan = run.fx.plans.last().unwrap();
    let rack_plan = plan
        .iter()
        .find(|p| p.selector == rack("dc1", "r1"))
        .unwrap();
    assert_eq!(rack_plan.own, vec![ip(1)]);
    assert_eq!(rack_plan.others, vec![ip(2), ip(3)]);
}

#[test]
fn a_node_no_longer_listed_is_no_longer_probed_and_its_late_results_are_ignored() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2)]);
    let dids = run.list(Selector::default(), &[ip(1)]);
    assert_eq!(dids[0], Did::Stop(ip(2)));
    assert_eq!(run.serves(0), vec![ip(1)]);
    assert_eq!(run.probe(ip(2), true), vec![]);
    assert_eq!(run.serves(0), vec![ip(1)]);
}

#[test]
fn without_health_checks_listed_nodes_are_served_at_once() {
    let health = HealthSettings {
        enabled: false,
        ..HealthSettings::default()
    };
    let mut run = Run::new(&[], health);
    run.tick();
    let dids = run.list(Selector::default(), &[ip(1), ip(2)]);
    assert_eq!(dids, vec![Did::Publish(2)]);
    assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
}

#[test]
fn a_reload_keeps_what_each_name_serves_restarts_probes_and_polls_at_once() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2)]);
    let generation = run.tracker.current().generation;
    let names = [("r1", rack("dc1", "r1"))];
    let applied = run.tracker.reload(
        zone(&names),
        settings(&names, HealthSettings::default()),
        run.now,
        &mut run.fx,
    );
    assert_eq!(applied, generation + 1);
    let dids = std::mem::take(&mut run.fx.did);
    assert_eq!(
        dids,
        vec![
            Did::Publish(applied),
            Did::Stop(ip(1)),
            Did::Stop(ip(2)),
            Did::Start(ip(1)),
            Did::Start(ip(2)),
        ]
    );
    // The new name starts with the apex's nodes; both keep them while the
    // restarted probes have not answered.
    assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
    assert_eq!(run.serves(1), vec![ip(1), ip(2)]);
    assert_eq!(run.tracker.next_wakeup(), Some(run.now));
    // The end of the round abandoned by the reload does not end the next.
    run.event(Event::RoundDone);
    assert_eq!(run.tracker.next_wakeup(), Some(run.now));
    let dids = run.tick();
    let all = vec![Selector::default(), dc("dc1"), rack("dc1", "r1")];
    assert_eq!(dids, vec![Did::Poll(all)]);
    run.list(rack("dc1", "r1"), &[ip(2)]);
    run.probe(ip(1), true);
    run.probe(ip(2), true);
    assert_eq!(run.serves(1), vec![ip(2)]);
}

#[test]
fn a_reload_forgets_the_lists_no_name_needs() {
    let names = [("r1", rack("dc1", "r1"))];
    let mut run = Run::new(&names, HealthSettings::default());
    run.tick();
    run.list(Selector::default(), &[ip(1)]);
    run.list(rack("dc1", "r1"), &[ip(9)]);
    run.tracker.reload(
        zone(&[]),
        settings(&[], HealthSettings::default()),
        run.now,
        &mut run.fx,
    );
    let dids = std::mem::take(&mut run.fx.did);
    assert!(
        dids.contains(&Did::Stop(ip(9))) && !dids.contains(&Did::Start(ip(9))),
        "{dids:?}"
    );
    assert_eq!(run.tick(), vec![Did::Poll(vec![Selector::default()])]);
}

#[test]
fn first_probes_come_soon_for_a_few_nodes_and_paced_for_a_whole_cluster() {
    let mut run = Run::checked();
    run.tick();
    run.list(Selector::default(), &[ip(1), ip(2), ip(3)]);
    let fifth = HealthSettings::default().interval / 5;
    assert!(
        run.fx.firsts.iter().all(|&f| f < fifth),
        "{:?}",
        run.fx.firsts
    );

    let mut run = Run::checked();
    run.tick();
    let cluster: Vec<IpAddr> = (0..1000u16)
        .map(|i| IpAddr::V4(std::net::Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)))
        .collect();
    run.list(Selector::default(), &cluster);
    let interval = HealthSettings::default().interval;
    let firsts = &run.fx.firsts;
    assert_eq!(firsts.len(), 1000);
    assert!(firsts.iter().all(|&f| f < interval));
    // About 2 a millisecond: no more than 150 in any 50 ms of the window.
    for window in 0..10u32 {
        let from = Duration::from_millis(50) * window;
        let to = from + Duration::from_millis(50);
        let started = firsts.iter().filter(|&&f| f >= from && f < to).count();
        assert!(
            started <= 150,
            "{started} first probes in [{from:?}, {to:?})"
        );
    }
}

#[test]
fn a_refused_connection_takes_a_node_out_at_once() {
    let mut run = Run::checked();
    run.serving(&[ip(1), ip(2)]);
    let dids = run.probe_failed(ip(2), FailureKind::Refused, run.now);
    assert!(matches!(dids.as_slice(), [Did::Publish(_)]), "{dids:?}");
    assert_eq!(run.serves(0), vec![ip(1)], "out without a second failure");
    run.probe(ip(2), true);
    assert_eq!(run.serves(0), vec![ip(1), ip(2)]);
}
