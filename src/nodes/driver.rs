//! The tracker's shell: the one task that writes the published snapshot.
//!
//! It runs the [`Tracker`] state machine and performs what it asks
//! ([`Effects`]): polling rounds (one `/localnodes` request per selector,
//! through the [`Poller`]), one health prober per listed node (`GET /` every
//! probe interval, each on its own jittered schedule, on a grid all share:
//! probes come a few at a time, never in bursts), and storing each snapshot.
//! Results come back through one channel as [`Event`]s; a hanging node delays
//! only its own report, never the driver. A reload (SIGHUP) arrives as a
//! [`Reload`] between two events, so no snapshot is ever built from one
//! configuration's names and another's zone; the polling round under way is
//! abandoned and what it queued is ignored (reports carry their round's
//! number), while the probers are replaced gracefully: a probe under way
//! still reports, so a reload never delays taking a failing node out.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand_core::{Rng as _, SeedableRng};
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::error;

use super::client::{AlternatorClient, FetchError};
use super::probe::HealthProbe;
use super::refresher::{random_seed, Poller};
use super::snapshot::{SharedSnapshot, Snapshot};
use super::tracker::{
    Effects, Event, FailureKind, HealthSettings, PollPlan, ProbeResult, ReloadRejected, Tracker,
    TrackerSettings,
};
use super::view::NodesView;
use crate::dns::Zone;
use crate::metrics::{Metrics, Outcome};

/// Largest health-check body read; Alternator's is a few dozen bytes.
const MAX_HEALTH_BODY: usize = 4096;

/// Reports queued for the driver; a helper task waits when it is full.
const REPORTS_QUEUED: usize = 1024;

/// A new configuration for the running tracker (SIGHUP): the zone to serve
/// from now on, the tracker's settings, and the client they need.
pub struct Reload {
    pub zone: Arc<Zone>,
    pub settings: TrackerSettings,
    pub client: AlternatorClient,
    /// Told the generation of the first snapshot of the new zone once it is
    /// served, or why the configuration was not applied.
    pub applied: oneshot::Sender<Result<u64, ReloadRejected>>,
}

/// What the helper tasks report.
enum Report {
    /// From the polling round with this number: numbered so that what a
    /// round abandoned by a reload had queued, under the old settings, is
    /// not taken for the next round's.
    Round(u64, RoundReport),
    /// One probe result, from the prober with this number.
    Probe(u64, Event),
}

enum RoundReport {
    List(Event),
    Done,
}

/// What the driver takes in besides probe and round reports: reloads, view
/// requests (`/nodes`), and the shutdown signal.
pub struct Inputs {
    pub reloads: mpsc::Receiver<Reload>,
    pub views: mpsc::Receiver<oneshot::Sender<NodesView>>,
    pub shutdown: watch::Receiver<bool>,
}

/// Runs until `shutdown` turns true, applying each [`Reload`] that arrives
/// (or rejecting it, when it would leave a name with no node) and
/// answering each view request; the tracker keeps what it knew (the lists
/// and the probe results) across reloads, so a new configuration goes on
/// from there instead of from the seeds.
pub async fn run(
    settings: TrackerSettings,
    client: AlternatorClient,
    published: SharedSnapshot,
    inputs: Inputs,
) {
    let Inputs {
        mut reloads,
        mut views,
        mut shutdown,
    } = inputs;
    let (tx, mut reports) = mpsc::channel(REPORTS_QUEUED);
    let mut shell = Shell {
        poller: Some(Poller::new(
            settings.refresh.clone(),
            client.clone(),
            Arc::clone(&settings.metrics),
        )),
        port: settings.refresh.alternator_port,
        health: settings.health,
        client,
        published,
        probers: HashMap::new(),
        metrics: Arc::clone(&settings.metrics),
        started: 0,
        round: None,
        rounds: 0,
        tx,
    };
    let current = shell.published.load_full();
    let mut tracker = Tracker::new(settings, current, now(), random_seed());
    loop {
        let wakeup = tracker.next_wakeup().map(Instant::from_std);
        tokio::select! {
            () = sleep_until(wakeup) => tracker.tick(now(), &mut shell),
            Some(report) = reports.recv() => match report {
                Report::Probe(id, event) => {
                    if shell.is_latest_word(id, &event) {
                        tracker.handle(event, now(), &mut shell);
                    }
                }
                Report::Round(id, _) if !shell.is_current(id) => {}
                Report::Round(_, RoundReport::List(event)) => tracker.handle(event, now(), &mut shell),
                Report::Round(_, RoundReport::Done) => {
                    if shell.round_over().await {
                        tracker.handle(Event::RoundDone, now(), &mut shell);
                    }
                }
            },
            Some(reload) = reloads.recv() => apply(&mut tracker, &mut shell, reload),
            Some(reply) = views.recv() => {
                let _ = reply.send(tracker.view(now()));
            }
            () = stopped(&mut shutdown) => break,
        }
    }
    shell.stop_all();
}

/// Applies a reload, unless the tracker rejects it; says which.
fn apply(tracker: &mut Tracker, shell: &mut Shell, reload: Reload) {
    if let Err(rejected) = tracker.check_reload(&reload.zone, &reload.settings) {
        let _ = reload.applied.send(Err(rejected));
        return;
    }
    shell.reconfigure(&reload);
    let generation = tracker.reload(reload.zone, reload.settings, now(), shell);
    let _ = reload.applied.send(Ok(generation));
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for shutdown; a `watch::Ref` held across the select would make the
/// task's future not `Send`.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The I/O the tracker asks for, and the tasks doing it.
struct Shell {
    /// Idle between rounds; inside the round's task while one runs.
    poller: Option<Poller>,
    /// Alternator port of listed nodes, probed too.
    port: u16,
    health: HealthSettings,
    client: AlternatorClient,
    published: SharedSnapshot,
    probers: HashMap<IpAddr, Prober>,
    /// Where the probers record how long each probe took.
    metrics: Arc<Metrics>,
    /// Probers started so far, to number them.
    started: u64,
    /// The round under way and its number.
    round: Option<(u64, JoinHandle<Poller>)>,
    rounds: u64,
    tx: mpsc::Sender<Report>,
}

impl Shell {
    /// Whether a result from prober `id` is the latest word on its node:
    /// it comes from the node's prober, or from one it replaced whose probe
    /// was under way, as long as the replacement has not reported yet.
    fn is_latest_word(&mut self, id: u64, event: &Event) -> bool {
        let Event::Probe { node, .. } = event else {
            return false;
        };
        latest_word(self.probers.get_mut(node), id)
    }

    /// Whether round `id` is the one under way (not one abandoned by a
    /// reload).
    fn is_current(&self, id: u64) -> bool {
        self.round.as_ref().is_some_and(|(round, _)| *round == id)
    }

    /// Takes the poller back from the round under way, which is over; false
    /// when the round's task failed and took the poller with it.
    async fn round_over(&mut self) -> bool {
        let Some((_, handle)) = self.round.take() else {
            return false;
        };
        match handle.await {
            Ok(poller) => {
                self.poller = Some(poller);
                true
            }
            Err(e) => {
                error!(error = %e, "the /localnodes poller stopped; membership is frozen");
                false
            }
        }
    }

    /// Abandons the round under way and takes a reload's client and
    /// settings; the tracker then restarts every prober.
    fn reconfigure(&mut self, reload: &Reload) {
        if let Some((_, handle)) = self.round.take() {
            handle.abort();
        }
        self.client = reload.client.clone();
        self.port = reload.settings.refresh.alternator_port;
        self.health = reload.settings.health;
        self.metrics = Arc::clone(&reload.settings.metrics);
        self.poller = Some(Poller::new(
            reload.settings.refresh.clone(),
            reload.client.clone(),
            Arc::clone(&reload.settings.metrics),
        ));
    }

    fn stop_all(&mut self) {
        if let Some((_, handle)) = self.round.take() {
            handle.abort();
        }
        for (_, prober) in self.probers.drain() {
            prober.task.abort();
        }
    }
}

impl Effects for Shell {
    fn publish(&mut self, snapshot: Arc<Snapshot>) {
        self.published.store(snapshot);
    }

    fn poll(&mut self, plan: Vec<PollPlan>) {
        let Some(poller) = self.poller.take() else {
            error!("no /localnodes poller to start a round with; membership is frozen");
            return;
        };
        self.rounds += 1;
        let round = tokio::spawn(poll_round(poller, plan, self.rounds, self.tx.clone()));
        self.round = Some((self.rounds, round));
    }

    fn start_probing(&mut self, node: IpAddr, first: Duration, seed: u64) {
        let probe = self
            .client
            .health_probe(SocketAddr::new(node, self.port), MAX_HEALTH_BODY);
        self.started += 1;
        let (retire, retired) = oneshot::channel();
        let link = ProberLink {
            id: self.started,
            tx: self.tx.clone(),
            retired,
            metrics: Arc::clone(&self.metrics),
        };
        let task = tokio::spawn(probe_node(node, probe, self.health, first, seed, link));
        // A prober replaced (after a reload) retires as the next one starts.
        let prober = Prober {
            id: self.started,
            reported: false,
            task,
            _retire: retire,
        };
        self.probers.insert(node, prober);
    }

    fn stop_probing(&mut self, node: IpAddr) {
        self.probers.remove(&node);
    }
}

/// A running prober. Dropping it retires the prober: a probe under way
/// still reports (its result is as true as the next one's; dropping it
/// would delay taking a failing node out by up to a probe interval), then
/// the task ends.
struct Prober {
    id: u64,
    /// Whether it has reported a probe yet.
    reported: bool,
    task: JoinHandle<()>,
    _retire: oneshot::Sender<()>,
}

/// Whether a result from prober `id` is the latest word on a node whose
/// prober now is `current` (see [`Shell::is_latest_word`]).
fn latest_word(current: Option<&mut Prober>, id: u64) -> bool {
    match current {
        Some(prober) if prober.id == id => {
            prober.reported = true;
            true
        }
        Some(prober) => id < prober.id && !prober.reported,
        None => false,
    }
}

/// A prober's side of its link to the driver.
struct ProberLink {
    /// The prober's number, on each of its reports.
    id: u64,
    tx: mpsc::Sender<Report>,
    /// Resolves when the driver retires the prober.
    retired: oneshot::Receiver<()>,
    /// Where the time each probe took goes (only the probers write it).
    metrics: Arc<Metrics>,
}

/// One polling round: every selector, reported one by one, then the end.
async fn poll_round(
    mut poller: Poller,
    plan: Vec<PollPlan>,
    id: u64,
    tx: mpsc::Sender<Report>,
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
        if tx
            .send(Report::Round(id, RoundReport::List(event)))
            .await
            .is_err()
        {
            return poller;
        }
    }
    let _ = tx.send(Report::Round(id, RoundReport::Done)).await;
    poller
}

/// One node's health check as a prober runs it: the real one is
/// [`HealthProbe`]; the schedule's tests use a scripted one.
trait Check: Send + 'static {
    fn check(&mut self, timeout: Duration) -> impl Future<Output = ProbeResult> + Send;
    /// Resolves when the connection kept between checks shows that the node
    /// closed it; never when there is none.
    fn closed(&self) -> impl Future<Output = ()> + Send;
}

impl Check for HealthProbe {
    async fn check(&mut self, timeout: Duration) -> ProbeResult {
        match self.probe(timeout).await {
            Ok(status) if status.is_success() => ProbeResult::Passed,
            Ok(status) => ProbeResult::Failed {
                kind: FailureKind::Status,
                detail: format!("GET / answered HTTP status {status}"),
                hint: status_hint(status, self.is_tls()),
            },
            Err(e) => ProbeResult::Failed {
                kind: failure_kind(&e),
                detail: e.to_string(),
                hint: e.hint(),
            },
        }
    }

    async fn closed(&self) {
        HealthProbe::closed(self).await
    }
}

/// How a probe that got no response failed.
fn failure_kind(e: &FetchError) -> FailureKind {
    match e {
        FetchError::Refused(_) => FailureKind::Refused,
        FetchError::Timeout(_) => FailureKind::Timeout,
        FetchError::Closed(_) => FailureKind::Closed,
        _ => FailureKind::Other,
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

/// Checks one node forever on a jittered schedule, reporting every result,
/// until it is retired (its [`Prober`] dropped): a check under way still
/// reports. Each check starts one interval (+-10%, on [`on_grid`]) after the
/// previous one started, so a check that hangs until its timeout does not
/// push the next one back; sooner when there is news: the node closed the
/// connection kept between checks (its process may have died: the check at
/// once finds out), or a check failed after one that passed (a second opinion
/// at once rather than an interval later). How long each check took goes to
/// the metrics (`alternator_dns_health_probe_seconds`).
async fn probe_node(
    node: IpAddr,
    mut probe: impl Check,
    health: HealthSettings,
    first: Duration,
    seed: u64,
    link: ProberLink,
) {
    let ProberLink {
        id,
        tx,
        mut retired,
        metrics,
    } = link;
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut next = Instant::now() + first;
    let mut passed_last = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = probe.closed() => {}
            _ = &mut retired => return,
        }
        let started = Instant::now();
        let result = probe.check(health.timeout).await;
        let passed = result == ProbeResult::Passed;
        let outcome = if passed { Outcome::Ok } else { Outcome::Error };
        metrics
            .control()
            .health_probe_took(outcome, started.elapsed());
        let first_failure = passed_last && !passed;
        passed_last = passed;
        // Room first, then the report: a send would hold the report in the
        // task's future, and a prober's future lives as long as its node.
        let Ok(room) = tx.reserve().await else {
            return;
        };
        room.send(Report::Probe(
            id,
            Event::Probe {
                node,
                result,
                started: started.into_std(),
            },
        ));
        if !matches!(retired.try_recv(), Err(TryRecvError::Empty)) {
            return;
        }
        // +-10% jitter keeps probers of many nodes from lining up.
        let interval = health.interval.as_micros() as u64;
        let jitter = rng.next_u64() % (interval / 5).max(1);
        let earliest = started + Duration::from_micros(interval - interval / 10);
        next = match first_failure {
            true => Instant::now(),
            false => on_grid(earliest + Duration::from_micros(jitter), earliest, interval),
        };
    }
}

/// `at` moved onto the grid that the probe starts of all nodes share, a
/// step of 1/250 of the interval (2 ms by default, 50 steps in the jitter's
/// window): back to the line at or before it, or to the next one when that
/// is before `earliest`. Probes due within one step (one node in 250) start
/// together, and the control thread wakes once for them instead of once or
/// twice a probe: at 1,000 nodes, 12% of its CPU (measured).
fn on_grid(at: Instant, earliest: Instant, interval_micros: u64) -> Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = Instant::from_std(*ORIGIN.get_or_init(std::time::Instant::now));
    let step = (interval_micros / 250).max(1);
    let past_line = match at.checked_duration_since(origin) {
        Some(after) => after.as_micros() as u64 % step,
        None => (step - (origin - at).as_micros() as u64 % step) % step,
    };
    let line = at - Duration::from_micros(past_line);
    match line >= earliest {
        true => line,
        false => line + Duration::from_micros(step),
    }
}

#[cfg(test)]
mod tests;
