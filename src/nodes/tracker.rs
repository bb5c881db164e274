//! The node tracker: the one task through which membership changes enter.
//!
//! It owns the [`Membership`] bookkeeping and is fed by two kinds of helper
//! tasks: a polling round (one `/localnodes` request per selector, every
//! refresh interval) and one health prober per listed node (`GET /` every
//! probe interval, each on its own jittered schedule so probes never come in
//! bursts). Every event that changes what some name serves makes it build a
//! new immutable [`Snapshot`] and swap it in; it logs each change once.
//!
//! Helper tasks report through a channel and never touch shared state, so a
//! hanging node can delay only its own report, never the tracker. It is the
//! only writer of the published snapshot: a reload (SIGHUP) reaches it as a
//! [`Reload`] carrying the new zone and settings, applied between two events,
//! so no snapshot is ever built from one configuration's names and another's
//! zone.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand_core::{Rng as _, SeedableRng};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::client::AlternatorClient;
use super::degraded::{self, Reminder};
use super::membership::{Choice, Membership, NameRule, Selector};
use super::probe::HealthProbe;
use super::refresher::{random_seed, PollError, Poller, RefreshSettings};
use super::snapshot::{Basis, NodeSource, SharedSnapshot, Snapshot};
use crate::dns::Zone;
use crate::metrics::{Metrics, Outcome};

/// Longest pause between polling rounds while the cluster is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Largest health-check body read; Alternator's is a few dozen bytes.
const MAX_HEALTH_BODY: usize = 4096;

/// Node health probing as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    pub enabled: bool,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failed probes in a row that take a node out.
    pub failures: u32,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            enabled: true,
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(300),
            failures: 2,
        }
    }
}

/// What the tracker is told at start-up.
pub struct TrackerSettings {
    pub refresh: RefreshSettings,
    pub health: HealthSettings,
    /// One rule per served name, in the zone's order.
    pub names: Vec<NameRule>,
    /// Where refresh and probe results are counted.
    pub metrics: Arc<Metrics>,
}

/// A new configuration for the running tracker (SIGHUP): the zone to serve
/// from now on, the tracker's settings, and the client they need.
pub struct Reload {
    pub zone: Arc<Zone>,
    pub settings: TrackerSettings,
    pub client: AlternatorClient,
    /// Told the generation of the first snapshot of the new zone once it is
    /// served.
    pub applied: oneshot::Sender<u64>,
}

enum Event {
    Listed {
        selector: Selector,
        from: SocketAddr,
        nodes: Vec<IpAddr>,
    },
    ListFailed {
        selector: Selector,
        error: PollError,
    },
    /// The polling round with this number is over.
    RoundDone(u64),
    Probe {
        node: IpAddr,
        passed: bool,
        /// Why it failed, and what to check.
        detail: String,
        hint: &'static str,
    },
}

/// Runs until `shutdown` turns true, applying each [`Reload`] that arrives
/// on `reloads`; it keeps what it knew (the lists and the probe results)
/// across reloads, so a new configuration goes on from there instead of from
/// the seeds.
pub async fn run(
    settings: TrackerSettings,
    client: AlternatorClient,
    published: SharedSnapshot,
    mut reloads: mpsc::Receiver<Reload>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut tx, mut events) = mpsc::channel(1024);
    let mut tracker = Tracker {
        port: settings.refresh.alternator_port,
        membership: Membership::new(settings.health.enabled, settings.health.failures),
        selectors: needed_selectors(&settings.names),
        metrics: Arc::clone(&settings.metrics),
        names: settings.names,
        health: settings.health,
        client: client.clone(),
        published,
        probers: HashMap::new(),
        tx: tx.clone(),
        last_choice: Vec::new(),
        failed_rounds: 0,
        round_failure: None,
        probe_failures: HashMap::new(),
        seeds_reminder: Reminder::default(),
        stale_reminder: Reminder::default(),
        fail_open_reminder: Reminder::default(),
        rng: rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(random_seed()),
    };
    let mut poller = Some(Poller::new(
        settings.refresh,
        client,
        Arc::clone(&settings.metrics),
    ));
    // The round under way, numbered so that the end of a round abandoned by
    // a reload is not taken for the end of the next one.
    let mut round: Option<(u64, JoinHandle<Poller>)> = None;
    let mut rounds = 0u64;
    let next_round = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(next_round);
    loop {
        tokio::select! {
            () = &mut next_round, if round.is_none() && poller.is_some() => {
                if let Some(p) = poller.take() {
                    rounds += 1;
                    let plan = tracker.round_plan();
                    round = Some((rounds, tokio::spawn(poll_round(p, plan, rounds, tx.clone()))));
                }
            }
            Some(event) = events.recv() => {
                let Event::RoundDone(done) = event else {
                    tracker.handle(event);
                    continue;
                };
                let Some((_, handle)) = round.take_if(|(id, _)| *id == done) else { continue };
                match handle.await {
                    Ok(p) => {
                        let pause = tracker.after_round(p.settings().interval);
                        next_round.as_mut().reset(tokio::time::Instant::now() + pause);
                        poller = Some(p);
                    }
                    Err(e) => error!(error = %e, "the /localnodes poller stopped; membership is frozen"),
                }
            }
            Some(reload) = reloads.recv() => {
                if let Some((_, handle)) = round.take() {
                    handle.abort();
                }
                poller = Some(Poller::new(
                    reload.settings.refresh.clone(),
                    reload.client.clone(),
                    Arc::clone(&reload.settings.metrics),
                ));
                // A fresh channel: what the aborted round and probers had
                // queued, under the old settings, is dropped with the old one.
                let (new_tx, new_events) = mpsc::channel(1024);
                (tx, events) = (new_tx.clone(), new_events);
                tracker.tx = new_tx;
                tracker.reload(reload);
                next_round.as_mut().reset(tokio::time::Instant::now());
            }
            () = stopped(&mut shutdown) => break,
        }
    }
    if let Some((_, handle)) = round {
        handle.abort();
    }
    for (_, prober) in tracker.probers.drain() {
        prober.abort();
    }
}

/// Waits for shutdown; a `watch::Ref` held across the select would make the
/// task's future not `Send`.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One polling round: every selector, reported one by one, then `RoundDone`.
/// Whom to ask for one selector's list: its own nodes first, then others.
struct PollPlan {
    selector: Selector,
    own: Vec<IpAddr>,
    others: Vec<IpAddr>,
}

async fn poll_round(
    mut poller: Poller,
    plan: Vec<PollPlan>,
    id: u64,
    tx: mpsc::Sender<Event>,
) -> Poller {
    for PollPlan {
        selector,
        own,
        others,
    } in plan
    {
        let event = match poller.poll(&selector, &own, &others).await {
            Ok((from, nodes)) => Event::Listed {
                selector,
                from,
                nodes,
            },
            Err(error) => Event::ListFailed { selector, error },
        };
        if tx.send(event).await.is_err() {
            return poller;
        }
    }
    let _ = tx.send(Event::RoundDone(id)).await;
    poller
}

/// Every selector some name needs, its fallbacks included; the default
/// (local datacenter) list is always polled, since it also names the nodes
/// to poll.
fn needed_selectors(names: &[NameRule]) -> Vec<Selector> {
    let mut needed = BTreeSet::from([Selector::default()]);
    for rule in names {
        needed.extend(rule.selector.chain(rule.fallback));
    }
    needed.into_iter().collect()
}

struct Tracker {
    /// Alternator port of listed nodes, probed too.
    port: u16,
    metrics: Arc<Metrics>,
    membership: Membership,
    names: Vec<NameRule>,
    selectors: Vec<Selector>,
    health: HealthSettings,
    client: AlternatorClient,
    published: SharedSnapshot,
    probers: HashMap<IpAddr, JoinHandle<()>>,
    tx: mpsc::Sender<Event>,
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
    rng: rand_xoshiro::Xoshiro256PlusPlus,
}

impl Tracker {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Listed {
                selector,
                from,
                nodes,
            } => {
                let added = self.membership.set_listed(selector.clone(), nodes);
                self.sync_probers(&added);
                self.publish(Some((&selector, from)));
            }
            Event::ListFailed { selector, error } => {
                if self.round_failure.is_none() {
                    self.round_failure = Some((selector, error));
                }
            }
            Event::Probe {
                node,
                passed,
                detail,
                hint,
            } => {
                let outcome = if passed { Outcome::Ok } else { Outcome::Error };
                self.metrics.control().health_probe(node, outcome);
                if passed {
                    self.probe_failures.remove(&node);
                } else if self.membership.health(node).is_some() {
                    self.probe_failures.insert(node, (detail.clone(), hint));
                }
                if self.membership.record_probe(node, passed) {
                    self.publish(None);
                    let served = {
                        let now = self.published.load();
                        (0..now.zone.name_count()).any(|i| now.set_nodes(i).any(|ip| ip == node))
                    };
                    match (passed, served) {
                        (true, _) => info!(%node, "node passes its health check; serving it"),
                        (false, false) => warn!(
                            %node,
                            reason = %detail,
                            check = hint,
                            "node fails its health check; no longer serving it"
                        ),
                        (false, true) => warn!(
                            %node,
                            reason = %detail,
                            check = hint,
                            "node fails its health check; still served, as no node passes (fail open)"
                        ),
                    }
                } else if self.membership.health(node).is_some() && self.published_pending() {
                    self.publish(None);
                }
                self.remind_fail_open();
            }
            Event::RoundDone(_) => {}
        }
    }

    /// Applies a new configuration: swaps in a snapshot of the new zone in
    /// which each name keeps the nodes it served (a new name starts with the
    /// apex's), takes the new rules and settings, restarts the probes with
    /// the new client, and republishes under the new rules.
    fn reload(&mut self, reload: Reload) {
        let Reload {
            zone,
            settings,
            client,
            applied,
        } = reload;
        let current = self.published.load();
        let old: Vec<usize> = (0..zone.name_count())
            .map(|i| {
                let name = zone.name_text(i);
                (0..current.zone.name_count())
                    .find(|&j| current.zone.name_text(j) == name)
                    .unwrap_or(0)
            })
            .collect();
        let sets: Vec<Vec<IpAddr>> = old
            .iter()
            .map(|&j| current.set_nodes(j).collect())
            .collect();
        let bases: Vec<Basis> = old.iter().map(|&j| current.basis(j)).collect();
        let snapshot = Snapshot::with_sets(current.generation + 1, zone, current.source, &sets)
            .with_bases(&bases);
        let generation = snapshot.generation;
        self.published.store(Arc::new(snapshot));
        let _ = applied.send(generation);

        self.port = settings.refresh.alternator_port;
        self.selectors = needed_selectors(&settings.names);
        self.names = settings.names;
        self.health = settings.health;
        self.metrics = settings.metrics;
        self.membership
            .reconfigure(settings.health.enabled, settings.health.failures);
        self.membership.keep_only(&self.selectors);
        self.client = client;
        for (_, prober) in self.probers.drain() {
            prober.abort();
        }
        self.probe_failures.clear();
        let listed: Vec<IpAddr> = self.membership.all_listed().into_iter().collect();
        self.sync_probers(&listed);
        self.last_choice.clear();
        self.round_failure = None;
        self.publish(None);
    }

    /// Whether some name still serves a stale list because its nodes were not
    /// probed yet (so a first probe result may change it).
    fn published_pending(&self) -> bool {
        self.last_choice.is_empty() || self.last_choice.contains(&Choice::Pending)
    }

    /// Logs a failing round (at most every [`degraded::REMIND_EVERY`]) or
    /// the end of a failing streak, and returns the pause before the next
    /// round.
    fn after_round(&mut self, interval: Duration) -> Duration {
        self.remind_fail_open();
        let Some((selector, failure)) = self.round_failure.take() else {
            if self.failed_rounds > 0 {
                info!(
                    failed_rounds = self.failed_rounds,
                    "/localnodes reachable again"
                );
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
        let now = std::time::Instant::now();
        if degraded::serves_unverified_seeds(&self.published.load()) {
            if self.seeds_reminder.due(now) {
                error!(
                    %selector,
                    error = %failure,
                    check = hint,
                    failed_rounds = self.failed_rounds,
                    "no node answered /localnodes: serving the seeds, which no /localnodes \
                     answer has confirmed"
                );
            }
        } else if self.stale_reminder.due(now) {
            if self.failed_rounds == 1 {
                warn!(%selector, error = %failure, check = hint, "no node answered /localnodes; keeping the last good list");
            } else {
                warn!(
                    %selector,
                    error = %failure,
                    check = hint,
                    failed_rounds = self.failed_rounds,
                    "/localnodes still failing; keeping the last good lists"
                );
            }
        }
        let cap = MAX_BACKOFF.max(interval);
        interval
            .saturating_mul(1u32 << self.failed_rounds.saturating_sub(1).min(16))
            .min(cap)
    }

    /// While some name serves nodes in fail open: an ERROR line at most every
    /// [`degraded::REMIND_EVERY`] (the first comes from [`Self::log_choices`]).
    fn remind_fail_open(&mut self) {
        let names = degraded::fail_open_names(&self.published.load());
        if names.is_empty() {
            self.fail_open_reminder.clear();
            return;
        }
        if self.fail_open_reminder.due(std::time::Instant::now()) {
            let (cause, hint) = self.probe_cause();
            error!(
                names = %names.join(","),
                cause = %cause,
                check = hint,
                "still serving nodes that fail their health check (fail open)"
            );
        }
    }

    /// One failing node's latest probe failure, for the fail-open lines.
    fn probe_cause(&self) -> (String, &'static str) {
        let served = self.published.load();
        self.probe_failures
            .iter()
            .find(|(node, _)| served.nodes().any(|ip| ip == **node))
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
    /// it can), then the default list's. The seeds come last in every case.
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

    /// Starts a prober for each newly listed node and stops those of nodes no
    /// list names any more.
    fn sync_probers(&mut self, added: &[IpAddr]) {
        if !self.health.enabled {
            return;
        }
        let listed = self.membership.all_listed();
        self.probe_failures.retain(|ip, _| listed.contains(ip));
        let metrics = &self.metrics;
        self.probers.retain(|ip, prober| {
            let keep = listed.contains(ip);
            if !keep {
                prober.abort();
                metrics.control().forget_node(ip);
            }
            keep
        });
        for &node in added {
            // New nodes are probed almost at once (spread over a fifth of the
            // interval), so they are admitted quickly without a burst.
            let spread = self.health.interval.as_micros().max(5) as u64 / 5;
            let first = Duration::from_micros(self.rng.next_u64() % spread);
            let probe = self
                .client
                .health_probe(SocketAddr::new(node, self.port), MAX_HEALTH_BODY);
            let prober = tokio::spawn(probe_node(
                node,
                probe,
                self.health,
                first,
                self.rng.next_u64(),
                self.tx.clone(),
            ));
            if let Some(old) = self.probers.insert(node, prober) {
                old.abort();
            }
        }
    }

    /// Builds every name's list and swaps in a new snapshot if any changed.
    fn publish(&mut self, source: Option<(&Selector, SocketAddr)>) {
        let current = self.published.load();
        if !self.membership.has_list(&Selector::default()) {
            return;
        }
        // Leaving the seeds for the cluster's list: wait until every listed
        // node has had its first probe (a few hundred milliseconds at most),
        // so the first list served is whole rather than growing node by node.
        if current.source == NodeSource::Seeds && self.membership.any_unprobed() {
            return;
        }
        let mut sets = Vec::with_capacity(self.names.len());
        let mut bases = Vec::with_capacity(self.names.len());
        let mut choices = Vec::with_capacity(self.names.len());
        for (i, rule) in self.names.iter().enumerate() {
            let served_now: BTreeSet<IpAddr> = current.set_nodes(i).collect();
            let (nodes, choice) = self.membership.serve(rule, &served_now);
            let (nodes, basis) = match choice {
                // Keep what was served: the seeds, or the last healthy list.
                Choice::Pending => (current.set_nodes(i).collect(), current.basis(i)),
                Choice::Empty if i == 0 => (current.set_nodes(i).collect(), current.basis(i)),
                Choice::FailOpen(_) => (nodes, Basis::FailOpen),
                Choice::Healthy(_) | Choice::Empty => (nodes, Basis::Listed),
            };
            sets.push(nodes);
            bases.push(basis);
            choices.push(choice);
        }
        let everything_pending = choices.iter().all(|c| *c == Choice::Pending);
        let source_now = if everything_pending && current.source == NodeSource::Seeds {
            NodeSource::Seeds
        } else {
            NodeSource::Cluster
        };
        let unchanged = current.source == source_now
            && current.bases() == bases.as_slice()
            && sets.iter().enumerate().all(|(i, nodes)| {
                let old: BTreeSet<IpAddr> = current.set_nodes(i).collect();
                old == nodes.iter().copied().collect()
            });
        // Store first, log after: whoever reads a log line finds its change
        // already served.
        if !unchanged {
            let snapshot = Arc::new(
                Snapshot::with_sets(
                    current.generation + 1,
                    Arc::clone(&current.zone),
                    source_now,
                    &sets,
                )
                .with_bases(&bases),
            );
            self.published.store(Arc::clone(&snapshot));
            log_changes(&current, &snapshot, source);
        }
        self.log_choices(&choices);
        self.last_choice = choices;
    }

    fn log_choices(&mut self, choices: &[Choice]) {
        let snapshot = self.published.load();
        let zone = &snapshot.zone;
        for (i, choice) in choices.iter().enumerate() {
            if self.last_choice.get(i) == Some(choice) {
                continue;
            }
            let name = zone.name_text(i);
            let own = &self.names[i].selector;
            match choice {
                Choice::Healthy(s) if s != own => {
                    warn!(%name, wanted = %own, serving = %s, "no healthy node for this name; falling back")
                }
                Choice::Healthy(_) if self.last_choice.get(i).is_some() => {
                    info!(%name, serving = %own, "serving this name's own nodes again")
                }
                Choice::FailOpen(s) => {
                    let nodes: Vec<String> =
                        snapshot.set_nodes(i).map(|ip| ip.to_string()).collect();
                    let (cause, hint) = self.probe_cause();
                    self.fail_open_reminder.due(std::time::Instant::now());
                    error!(
                        %name,
                        serving = %s,
                        nodes = %nodes.join(","),
                        cause = %cause,
                        check = hint,
                        "every listed node fails its health check; serving them anyway (fail open)"
                    )
                }
                Choice::Empty if i > 0 => {
                    warn!(%name, wanted = %own, "no node listed for this name; answering with no address")
                }
                _ => {}
            }
        }
    }
}

/// Logs what a new snapshot changes, once per change.
fn log_changes(old: &Snapshot, new: &Snapshot, source: Option<(&Selector, SocketAddr)>) {
    let from = source
        .map(|(_, from)| from.to_string())
        .unwrap_or_else(|| "health check".into());
    if old.source == NodeSource::Seeds && new.source == NodeSource::Cluster {
        let all: Vec<String> = new.set_nodes(0).map(|ip| ip.to_string()).collect();
        info!(%from, nodes = %all.join(","), generation = new.generation, "first /localnodes answer; serving the cluster's live nodes");
    }
    for i in 0..new.zone.name_count() {
        let before: BTreeSet<IpAddr> = old.set_nodes(i).collect();
        let after: BTreeSet<IpAddr> = new.set_nodes(i).collect();
        // Nodes served in fail open are not "added": the fail-open line
        // names them as failing.
        if before == after || new.basis(i) == Basis::FailOpen {
            continue;
        }
        let added: Vec<String> = after.difference(&before).map(ToString::to_string).collect();
        let removed: Vec<String> = before.difference(&after).map(ToString::to_string).collect();
        info!(
            name = %new.zone.name_text(i),
            %from,
            nodes = after.len(),
            added = %added.join(","),
            removed = %removed.join(","),
            generation = new.generation,
            "membership changed"
        );
    }
}

/// What to check when a probe gets `status` back.
fn status_hint(status: hyper::StatusCode, tls: bool) -> &'static str {
    if tls && status == hyper::StatusCode::BAD_REQUEST {
        "a TLS front end answers 400 when it wants a client certificate: check --client-cert \
         and --client-key, then the node"
    } else if status.is_server_error() {
        "the node reports an error: check its state and its log"
    } else {
        "check --alternator-port and --alternator-scheme: is it Alternator's API?"
    }
}

/// Probes one node's `GET /` forever on a jittered schedule, reporting every
/// result; aborted when the node is no longer listed.
async fn probe_node(
    node: IpAddr,
    mut probe: HealthProbe,
    health: HealthSettings,
    first: Duration,
    seed: u64,
    tx: mpsc::Sender<Event>,
) {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut next = tokio::time::Instant::now() + first;
    loop {
        tokio::time::sleep_until(next).await;
        let started = tokio::time::Instant::now();
        let (passed, detail, hint) = match probe.probe(health.timeout).await {
            Ok(status) if status.is_success() => (true, String::new(), ""),
            Ok(status) => (
                false,
                format!("GET / answered HTTP status {status}"),
                status_hint(status, probe.is_tls()),
            ),
            Err(e) => (false, e.to_string(), e.hint()),
        };
        if tx
            .send(Event::Probe {
                node,
                passed,
                detail,
                hint,
            })
            .await
            .is_err()
        {
            return;
        }
        // +-10% jitter keeps probers of many nodes from lining up.
        let interval = health.interval.as_micros() as u64;
        let jitter = rng.next_u64() % (interval / 5).max(1);
        next = started + Duration::from_micros(interval - interval / 10 + jitter);
    }
}
