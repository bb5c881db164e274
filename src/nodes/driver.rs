//! The tracker's shell: the one task that writes the published snapshot.
//!
//! It runs the [`Tracker`] state machine and performs what it asks
//! ([`Effects`]): polling rounds (one `/localnodes` request per selector,
//! through the [`Poller`]), one health prober per listed node (`GET /` every
//! probe interval, each on its own jittered schedule so probes never come in
//! bursts), and storing each snapshot. Results come back through one channel
//! as [`Event`]s; a hanging node delays only its own report, never the
//! driver. A reload (SIGHUP) arrives as a [`Reload`] between two events, so
//! no snapshot is ever built from one configuration's names and another's
//! zone, and the results queued under the old settings are dropped with
//! their channel.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand_core::{Rng as _, SeedableRng};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::error;

use super::client::AlternatorClient;
use super::probe::HealthProbe;
use super::refresher::{random_seed, Poller};
use super::snapshot::{SharedSnapshot, Snapshot};
use super::tracker::{
    Effects, Event, HealthSettings, PollPlan, ProbeResult, Tracker, TrackerSettings,
};
use crate::dns::Zone;

/// Largest health-check body read; Alternator's is a few dozen bytes.
const MAX_HEALTH_BODY: usize = 4096;

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

/// What the helper tasks report.
enum Report {
    Event(Event),
    /// The polling round with this number is over; numbered so that the end
    /// of a round abandoned by a reload is not taken for the end of the next.
    RoundDone(u64),
}

/// Runs until `shutdown` turns true, applying each [`Reload`] that arrives
/// on `reloads`; the tracker keeps what it knew (the lists and the probe
/// results) across reloads, so a new configuration goes on from there
/// instead of from the seeds.
pub async fn run(
    settings: TrackerSettings,
    client: AlternatorClient,
    published: SharedSnapshot,
    mut reloads: mpsc::Receiver<Reload>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (tx, mut reports) = mpsc::channel(1024);
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
                Report::Event(event) => tracker.handle(event, now(), &mut shell),
                Report::RoundDone(id) => {
                    if shell.round_over(id).await {
                        tracker.handle(Event::RoundDone, now(), &mut shell);
                    }
                }
            },
            Some(reload) = reloads.recv() => {
                // A fresh channel: what the abandoned round and the old
                // probers queued, under the old settings, goes with the old one.
                let (tx, rx) = mpsc::channel(1024);
                reports = rx;
                shell.reconfigure(&reload, tx);
                let generation = tracker.reload(reload.zone, reload.settings, now(), &mut shell);
                let _ = reload.applied.send(generation);
            }
            () = stopped(&mut shutdown) => break,
        }
    }
    shell.stop_all();
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
    probers: HashMap<IpAddr, JoinHandle<()>>,
    /// The round under way and its number.
    round: Option<(u64, JoinHandle<Poller>)>,
    rounds: u64,
    tx: mpsc::Sender<Report>,
}

impl Shell {
    /// Takes the poller back from round `id`; false when `id` is not the
    /// round under way (one abandoned by a reload), or when the round's task
    /// failed and took the poller with it.
    async fn round_over(&mut self, id: u64) -> bool {
        let Some((_, handle)) = self.round.take_if(|(round, _)| *round == id) else {
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
    fn reconfigure(&mut self, reload: &Reload, tx: mpsc::Sender<Report>) {
        if let Some((_, handle)) = self.round.take() {
            handle.abort();
        }
        self.tx = tx;
        self.client = reload.client.clone();
        self.port = reload.settings.refresh.alternator_port;
        self.health = reload.settings.health;
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
            prober.abort();
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
        let prober = tokio::spawn(probe_node(
            node,
            probe,
            self.health,
            first,
            seed,
            self.tx.clone(),
        ));
        if let Some(old) = self.probers.insert(node, prober) {
            old.abort();
        }
    }

    fn stop_probing(&mut self, node: IpAddr) {
        if let Some(prober) = self.probers.remove(&node) {
            prober.abort();
        }
    }
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
        if tx.send(Report::Event(event)).await.is_err() {
            return poller;
        }
    }
    let _ = tx.send(Report::RoundDone(id)).await;
    poller
}

/// One node's health check as a prober runs it: the real one is
/// [`HealthProbe`]; the schedule's tests use a scripted one.
trait Check: Send + 'static {
    fn check(&mut self, timeout: Duration) -> impl Future<Output = ProbeResult> + Send;
}

impl Check for HealthProbe {
    async fn check(&mut self, timeout: Duration) -> ProbeResult {
        match self.probe(timeout).await {
            Ok(status) if status.is_success() => ProbeResult::Passed,
            Ok(status) => ProbeResult::Failed {
                detail: format!("GET / answered HTTP status {status}"),
                hint: status_hint(status, self.is_tls()),
            },
            Err(e) => ProbeResult::Failed {
                detail: e.to_string(),
                hint: e.hint(),
            },
        }
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

/// Checks one node forever on a jittered schedule, reporting every result;
/// aborted when the node is no longer listed. Each check starts one
/// interval (+-10%) after the previous one started, so a check that hangs
/// until its timeout does not push the next one back.
async fn probe_node(
    node: IpAddr,
    mut probe: impl Check,
    health: HealthSettings,
    first: Duration,
    seed: u64,
    tx: mpsc::Sender<Report>,
) {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut next = Instant::now() + first;
    loop {
        tokio::time::sleep_until(next).await;
        let started = Instant::now();
        let result = probe.check(health.timeout).await;
        if tx
            .send(Report::Event(Event::Probe { node, result }))
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

#[cfg(test)]
mod tests;
