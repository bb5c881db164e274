//! The node tracker: the state machine through which every membership change
//! enters. Events and the time go in; effects come out.
//!
//! It decides everything about which nodes each name serves, and does no I/O
//! of its own, so each rule is tested with scripted events and explicit
//! times (`tracker/tests.rs`): when to poll `/localnodes` next, and the
//! back-off while no node answers; which nodes to probe; when the seeds give
//! way to the cluster's list (once every listed node has had its first probe,
//! so the first list served is whole); the fallbacks and fail open of
//! [`Membership`], with each node's health and flap damping kept by
//! [`health`](super::health); the narrowing after a full outage, held until
//! the other nodes have reported (`tracker/recovery.rs`); the removals counted by
//! reason and time (`tracker/removals.rs`); and reloads, which keep what is known.
//!
//! [`driver`](super::driver) is the shell around it: it performs the
//! [`Effects`] (runs polling rounds and probers, stores each snapshot the
//! tracker publishes) and feeds their results back as [`Event`]s.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::{Rng as _, SeedableRng};

use super::degraded::{self, Reminder};
pub use super::health::{FailureKind, HealthSettings};
use super::membership::{Choice, Health, Membership, NameRule, Selector};
use super::refresher::{PollError, RefreshSettings};
use super::snapshot::{Basis, NodeSource, Snapshot};
use crate::metrics::{Metrics, Outcome, RemovalReason};

mod locations;
mod log;
mod recovery;
mod reload;
mod removals;
#[cfg(test)]
mod tests;
mod view;

pub use locations::LocationTargets;
use locations::Locations;
use recovery::Recovery;
pub use reload::ReloadRejected;
use view::ProbeRecord;

/// Longest pause between polling rounds while the cluster is unreachable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the tracker is told at start-up and on each reload.
pub struct TrackerSettings {
    pub refresh: RefreshSettings,
    pub health: HealthSettings,
    /// Nodes never served.
    pub exclude: BTreeSet<IpAddr>,
    /// One rule per served name, in the zone's order.
    pub names: Vec<NameRule>,
    /// The locations whose clients names with affinity answer locally.
    pub locations: LocationTargets,
    /// Where refresh and probe results are counted.
    pub metrics: Arc<Metrics>,
}

/// What the tracker learns.
#[derive(Debug)]
pub enum Event {
    /// A selector's list, and the node that gave it.
    Listed {
        selector: Selector,
        from: SocketAddr,
        nodes: Vec<IpAddr>,
    },
    /// No node gave a usable list for this selector.
    ListFailed {
        selector: Selector,
        error: PollError,
    },
    /// The polling round asked for by [`Effects::poll`] is over.
    RoundDone,
    /// One probe of one node, and when it started.
    Probe {
        node: IpAddr,
        result: ProbeResult,
        started: Instant,
    },
}

/// The outcome of one health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Passed,
    /// How it failed, in words, and what to check.
    Failed {
        kind: FailureKind,
        detail: String,
        hint: &'static str,
    },
}

impl ProbeResult {
    /// How it failed; None when it passed.
    pub fn failure(&self) -> Option<FailureKind> {
        match self {
            ProbeResult::Passed => None,
            ProbeResult::Failed { kind, .. } => Some(*kind),
        }
    }
}

/// Whom to ask for one selector's list: its own nodes first, then others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollPlan {
    pub selector: Selector,
    pub own: Vec<IpAddr>,
    pub others: Vec<IpAddr>,
}

/// What the tracker asks of its shell. Each call is made at the moment the
/// tracker decides it, and a snapshot is published before the lines logging
/// its changes, so whoever reads a log line finds its change already served.
pub trait Effects {
    /// Serve this snapshot from now on.
    fn publish(&mut self, snapshot: Arc<Snapshot>);
    /// Start a polling round: ask for each selector's list in turn, report
    /// each as [`Event::Listed`] or [`Event::ListFailed`], then
    /// [`Event::RoundDone`].
    fn poll(&mut self, plan: Vec<PollPlan>);
    /// Probe this node every probe interval, the first time after `first`,
    /// jittered from `seed`; report each result as [`Event::Probe`].
    fn start_probing(&mut self, node: IpAddr, first: Duration, seed: u64);
    /// Stop probing this node. A probe under way may still report: the
    /// tracker ignores it unless the node is probed again by then, when it
    /// counts as the latest word on the node until the new prober reports.
    fn stop_probing(&mut self, node: IpAddr);
}

/// Where the polling rounds stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// The next one starts at this time.
    Due(Instant),
    Running,
}

/// The tracker's state: the lists and probe results ([`Membership`]), the
/// rules, the round schedule, and what is needed to log each change once.
pub struct Tracker {
    membership: Membership,
    names: Vec<NameRule>,
    locations: Locations,
    selectors: Vec<Selector>,
    health: HealthSettings,
    interval: Duration,
    metrics: Arc<Metrics>,
    /// The snapshot last published (the one served).
    current: Arc<Snapshot>,
    round: Round,
    /// Nodes with a prober running.
    probing: BTreeSet<IpAddr>,
    /// How each name's list was last chosen, to log changes once.
    last_choice: Vec<Choice>,
    failed_rounds: u32,
    /// The first failure of the round under way, if any.
    round_failure: Option<(Selector, PollError)>,
    /// The latest failed probe of each node failing now: what it said and
    /// what to check.
    probe_failures: HashMap<IpAddr, (String, &'static str)>,
    /// The ERROR lines of the degraded states, and the stale-list warning,
    /// at most one per [`degraded::REMIND_EVERY`] each.
    seeds_reminder: Reminder,
    stale_reminder: Reminder,
    fail_open_reminder: Reminder,
    /// A narrowing from fail open held back ([`recovery`]).
    recovery: Option<Recovery>,
    /// Each probed node's latest probe, for the operator's view.
    last_probes: HashMap<IpAddr, ProbeRecord>,
    rng: rand_xoshiro::Xoshiro256PlusPlus,
}

impl Tracker {
    /// A tracker serving `current` (the seeds, at start-up); its first
    /// polling round is due at `now`. `seed` seeds the spread of first
    /// probes.
    pub fn new(settings: TrackerSettings, current: Arc<Snapshot>, now: Instant, seed: u64) -> Self {
        let locations = Locations::new(settings.locations);
        Tracker {
            membership: Membership::new(settings.health, settings.exclude),
            selectors: needed_selectors(&settings.names, &locations),
            names: settings.names,
            locations,
            health: settings.health,
            interval: settings.refresh.interval,
            metrics: settings.metrics,
            current,
            round: Round::Due(now),
            probing: BTreeSet::new(),
            last_choice: Vec::new(),
            failed_rounds: 0,
            round_failure: None,
            probe_failures: HashMap::new(),
            seeds_reminder: Reminder::default(),
            stale_reminder: Reminder::default(),
            fail_open_reminder: Reminder::default(),
            recovery: None,
            last_probes: HashMap::new(),
            rng: rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// The snapshot last published.
    pub fn current(&self) -> &Arc<Snapshot> {
        &self.current
    }

    /// When [`Self::tick`] has something to do: the start of the next
    /// polling round (none while one runs), or the end of a held narrowing.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let round = match self.round {
            Round::Due(at) => Some(at),
            Round::Running => None,
        };
        let recovery = self.recovery.as_ref().map(Recovery::until);
        round.into_iter().chain(recovery).min()
    }

    /// Starts the polling round if it is due, and narrows a name from fail
    /// open once its hold is over.
    pub fn tick(&mut self, now: Instant, fx: &mut impl Effects) {
        if matches!(self.round, Round::Due(at) if at <= now) {
            self.round = Round::Running;
            fx.poll(self.round_plan());
        }
        if self.recovery.as_ref().is_some_and(|r| r.over(now)) {
            self.publish(None, now, fx);
            self.recovery = None;
        }
    }

    /// Takes one event in.
    pub fn handle(&mut self, event: Event, now: Instant, fx: &mut impl Effects) {
        match event {
            Event::Listed {
                selector,
                from,
                nodes,
            } => {
                let added = self.membership.set_listed(selector.clone(), nodes, now);
                self.sync_probers(&added, fx);
                self.publish(Some(from), now, fx);
            }
            Event::ListFailed { selector, error } => {
                if self.round_failure.is_none() {
                    self.round_failure = Some((selector, error));
                }
            }
            Event::RoundDone => {
                if self.round == Round::Running {
                    let pause = self.after_round(now);
                    self.round = Round::Due(now + pause);
                }
            }
            Event::Probe {
                node,
                result,
                started,
            } => self.record_probe(node, result, started, now, fx),
        }
    }

    fn record_probe(
        &mut self,
        node: IpAddr,
        result: ProbeResult,
        started: Instant,
        now: Instant,
        fx: &mut impl Effects,
    ) {
        // A result from a prober already stopped says nothing any more.
        if !self.probing.contains(&node) {
            return;
        }
        self.note_probe(node, &result, started, now);
        let failure = result.failure();
        let before = self.membership.health(node);
        let changed = self.membership.record_probe(node, failure, started);
        let after = self.membership.health(node);
        if changed && failure.is_none() {
            self.hold_narrowing(node, now);
        }
        let released = self.recovery.as_ref().is_some_and(|r| r.over(now));
        if changed {
            let took = self.failing_for(node, now);
            self.publish(None, now, fx);
            let served = self.current.nodes().any(|ip| ip == node);
            log::probe_changed(node, &result, served, took);
        } else if released || (after.is_some() && self.published_pending()) {
            self.publish(None, now, fx);
        }
        if released {
            self.recovery = None;
        }
        if before == Some(Health::Down) && matches!(after, Some(Health::Recovering(_))) {
            log::damped(node, &self.health.damping);
        }
        self.remind_fail_open(now);
    }

    /// Keeps what a probe said for the view, the metrics, the fail-open
    /// log lines and a held narrowing.
    fn note_probe(&mut self, node: IpAddr, result: &ProbeResult, started: Instant, now: Instant) {
        let record = ProbeRecord::new(result, started, now);
        self.last_probes.insert(node, record);
        let outcome = result.failure().map_or(Outcome::Ok, |_| Outcome::Error);
        self.metrics.control().health_probe(node, outcome);
        match result {
            ProbeResult::Passed => self.probe_failures.remove(&node),
            ProbeResult::Failed { detail, hint, .. } => {
                self.probe_failures.insert(node, (detail.clone(), hint))
            }
        };
        if let Some(recovery) = &mut self.recovery {
            recovery.reported(node);
        }
    }

    /// Whether some name still serves a stale list because its nodes were not
    /// probed yet (so a first probe result may change it).
    fn published_pending(&self) -> bool {
        self.last_choice.is_empty() || self.last_choice.contains(&Choice::Pending)
    }

    /// Logs a failing round (at most every [`degraded::REMIND_EVERY`]) or
    /// the end of a failing streak, and returns the pause before the next
    /// round: the interval, doubled for each failed round in a row, up to
    /// [`MAX_BACKOFF`] (or the interval, if longer).
    fn after_round(&mut self, now: Instant) -> Duration {
        self.remind_fail_open(now);
        let interval = self.interval;
        let Some((selector, failure)) = self.round_failure.take() else {
            if self.failed_rounds > 0 {
                log::reachable_again(self.failed_rounds);
            }
            self.failed_rounds = 0;
            self.seeds_reminder.clear();
            self.stale_reminder.clear();
            self.metrics.control().set_refresh_problem(None);
            return interval;
        };
        self.failed_rounds += 1;
        let hint = failure.error.hint();
        self.metrics
            .control()
            .set_refresh_problem(Some(format!("{failure}; {hint}")));
        if degraded::serves_unverified_seeds(&self.current) {
            if self.seeds_reminder.due(now) {
                log::serving_unverified_seeds(&selector, &failure, self.failed_rounds);
            }
        } else if self.stale_reminder.due(now) {
            log::keeping_stale_lists(&selector, &failure, self.failed_rounds);
        }
        let cap = MAX_BACKOFF.max(interval);
        interval
            .saturating_mul(1u32 << self.failed_rounds.saturating_sub(1).min(16))
            .min(cap)
    }

    /// While some name serves nodes in fail open: an ERROR line at most every
    /// [`degraded::REMIND_EVERY`] (the first comes with the change).
    fn remind_fail_open(&mut self, now: Instant) {
        let names = degraded::fail_open_names(&self.current);
        if names.is_empty() {
            self.fail_open_reminder.clear();
            return;
        }
        if self.fail_open_reminder.due(now) {
            let (cause, hint) = self.probe_cause();
            log::still_fail_open(&names, &cause, hint);
        }
    }

    /// One failing node's latest probe failure, for the fail-open lines.
    fn probe_cause(&self) -> (String, &'static str) {
        self.probe_failures
            .iter()
            .find(|(node, _)| self.current.nodes().any(|ip| ip == **node))
            .or_else(|| self.probe_failures.iter().next())
            .map_or_else(
                || ("no probe has passed".to_string(), "check the nodes"),
                |(node, (detail, hint))| (format!("node {node}: {detail}"), *hint),
            )
    }

    /// The polling plan of one round: each selector with the nodes to ask
    /// for it, in order of preference: for the default
    /// list (the queried node's own datacenter), only nodes of that list, so
    /// the datacenter never changes under the apex; for a datacenter or rack,
    /// that list's own nodes first (so a ScyllaDB before 2025.1, which
    /// ignores `dc` and `rack`, still answers with the right datacenter when
    /// it can), then the default list's. The seeds come last in every case
    /// (the poller adds them).
    fn round_plan(&self) -> Vec<PollPlan> {
        let default = self.membership.listed(&Selector::default());
        self.selectors
            .iter()
            .map(|selector| {
                let own = self.membership.listed(selector).to_vec();
                let others = default
                    .iter()
                    .filter(|ip| !own.contains(ip))
                    .copied()
                    .collect();
                PollPlan {
                    selector: selector.clone(),
                    own,
                    others,
                }
            })
            .collect()
    }

    /// Starts probing each newly listed node and stops probing nodes no list
    /// names any more.
    fn sync_probers(&mut self, added: &[IpAddr], fx: &mut impl Effects) {
        if !self.health.enabled {
            return;
        }
        let listed = self.membership.all_listed();
        self.probe_failures.retain(|ip, _| listed.contains(ip));
        self.last_probes.retain(|ip, _| listed.contains(ip));
        let gone: Vec<IpAddr> = self.probing.difference(&listed).copied().collect();
        for node in gone {
            self.probing.remove(&node);
            self.metrics.control().forget_node(node);
            fx.stop_probing(node);
        }
        let spread = first_probe_spread(self.health.interval, added.len());
        for &node in added {
            let first = Duration::from_micros(self.rng.next_u64() % spread);
            if !self.probing.insert(node) {
                fx.stop_probing(node);
            }
            fx.start_probing(node, first, self.rng.next_u64());
        }
    }

    /// Stores a snapshot as the one served.
    fn store(&mut self, snapshot: Arc<Snapshot>, fx: &mut impl Effects) {
        self.current = Arc::clone(&snapshot);
        fx.publish(snapshot);
    }

    /// Builds every name's list and publishes a new snapshot if any changed.
    fn publish(&mut self, from: Option<SocketAddr>, now: Instant, fx: &mut impl Effects) {
        if !self.membership.has_list(&Selector::default()) {
            return;
        }
        // Leaving the seeds for the cluster's list: wait until every listed
        // node has had its first probe (a few hundred milliseconds at most),
        // so the first list served is whole rather than growing node by node.
        if self.current.source == NodeSource::Seeds && self.membership.any_unprobed() {
            return;
        }
        let current = Arc::clone(&self.current);
        let (sets, bases, choices) = self.choose_sets(&current, now);
        let (location_sets, location_choices) = self.locations.choose(&self.membership, &current);
        let everything_pending = choices.iter().all(|c| *c == Choice::Pending);
        let source = if everything_pending && current.source == NodeSource::Seeds {
            NodeSource::Seeds
        } else {
            NodeSource::Cluster
        };
        let unchanged = current.source == source
            && current.bases() == bases.as_slice()
            && sets.iter().enumerate().all(|(i, nodes)| {
                let old: BTreeSet<IpAddr> = current.set_nodes(i).collect();
                old == nodes.iter().copied().collect()
            })
            && current.location_count() == location_sets.len()
            && location_sets.iter().enumerate().all(|(j, nodes)| {
                let old: BTreeSet<IpAddr> = current.location_set(j).iter().collect();
                old == nodes.iter().copied().collect()
            });
        if !unchanged {
            let snapshot = Snapshot::with_sets(
                current.generation + 1,
                Arc::clone(&current.zone),
                source,
                &sets,
            )
            .with_bases(&bases)
            .with_locations(&location_sets, |name, location| {
                let serving = (self.locations).serving(location, &location_choices[location]);
                self.names[name].serves_location(serving)
            });
            self.store(Arc::new(snapshot), fx);
            self.count_removals(&current, now);
            log::changes(&current, &self.current, from);
        }
        self.log_choices(&choices, now);
        self.last_choice = choices;
        (self.locations).note(&location_choices, &self.current, &self.metrics);
    }

    /// Each name's nodes, what they are based on, and how they were chosen.
    fn choose_sets(
        &self,
        current: &Snapshot,
        now: Instant,
    ) -> (Vec<Vec<IpAddr>>, Vec<Basis>, Vec<Choice>) {
        let mut sets = Vec::with_capacity(self.names.len());
        let mut bases = Vec::with_capacity(self.names.len());
        let mut choices = Vec::with_capacity(self.names.len());
        let holding = self.recovery.as_ref().is_some_and(|r| !r.over(now));
        for (i, rule) in self.names.iter().enumerate() {
            let served_now: BTreeSet<IpAddr> = current.set_nodes(i).collect();
            let (nodes, mut choice) = self.membership.serve(rule, &served_now);
            let held = holding
                && current.basis(i) == Basis::FailOpen
                && matches!(choice, Choice::Healthy(_));
            if held {
                // Still in fail open, as far as the log is concerned.
                choice = self.last_choice.get(i).cloned().unwrap_or(choice);
            }
            let (nodes, basis) = match choice {
                _ if held => (served_now.into_iter().collect(), Basis::FailOpen),
                // Keep what was served: the seeds, or the last healthy list.
                Choice::Pending => (self.kept(current, i), current.basis(i)),
                Choice::Empty if i == 0 => (self.kept(current, i), current.basis(i)),
                Choice::FailOpen(_) => (nodes, Basis::FailOpen),
                Choice::Healthy(_) | Choice::Empty => (nodes, Basis::Listed),
            };
            sets.push(nodes);
            bases.push(basis);
            choices.push(choice);
        }
        (sets, bases, choices)
    }

    /// What name `i` serves in `current`, less the nodes now excluded: what
    /// it keeps while its own nodes are not probed yet.
    fn kept(&self, current: &Snapshot, i: usize) -> Vec<IpAddr> {
        current
            .set_nodes(i)
            .filter(|ip| !self.membership.is_excluded(*ip))
            .collect()
    }

    /// Logs each name whose way of choosing changed.
    fn log_choices(&mut self, choices: &[Choice], now: Instant) {
        for (i, choice) in choices.iter().enumerate() {
            let before = self.last_choice.get(i);
            if before == Some(choice) {
                continue;
            }
            let name = self.current.zone.name_text(i);
            let own = &self.names[i].selector;
            if let Choice::FailOpen(serving) = choice {
                let nodes: Vec<String> =
                    self.current.set_nodes(i).map(|ip| ip.to_string()).collect();
                let (cause, hint) = self.probe_cause();
                self.fail_open_reminder.due(now);
                log::fail_open(&name, serving, &nodes, &cause, hint);
            } else {
                log::choice(&name, own, choice, before.is_some(), i == 0);
            }
        }
    }
}

/// Most first probes started per millisecond when many nodes are listed at
/// once (a whole cluster at start-up): each in flight holds a connection and
/// its buffers, and over HTTPS a handshake's CPU time.
const FIRST_PROBES_PER_MS: u64 = 2;

/// The window, in microseconds, over which the first probes of `count` newly
/// listed nodes start: a fifth of the probe interval, so that new nodes are
/// admitted quickly without a burst; longer for many nodes at once, up to a
/// whole interval.
fn first_probe_spread(interval: Duration, count: usize) -> u64 {
    let interval = interval.as_micros().max(5) as u64;
    let paced = count as u64 * 1000 / FIRST_PROBES_PER_MS;
    paced.clamp(interval / 5, interval)
}

/// Every selector some name or location needs, fallbacks included; the
/// default (local datacenter) list is always polled, since it also names
/// the nodes to poll.
fn needed_selectors(names: &[NameRule], locations: &Locations) -> Vec<Selector> {
    let mut needed = BTreeSet::from([Selector::default()]);
    for rule in names {
        needed.extend(rule.selector.chain(rule.fallback));
    }
    needed.extend(locations.selectors());
    needed.into_iter().collect()
}
