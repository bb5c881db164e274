//! The control plane: one thread running a single-threaded tokio runtime.
//!
//! It owns everything that is not the UDP fast path: the node tracker
//! (`/localnodes` and health probes), TCP, forwarding, the metrics endpoint,
//! systemd notifications, and signals (SIGINT/SIGTERM stop, SIGHUP reloads).
//! Keeping it on one thread of its own means it can never take CPU time from
//! a pinned worker core unless the operator places it there.

use std::net::{TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::forward::{ForwardJob, Forwarder};
use crate::io::StopSignal;
use crate::metrics::{Endpoints, Metrics, ReadyCheck, ReadyFacts};
use crate::nodes::client::AlternatorClient;
use crate::nodes::degraded;
use crate::nodes::driver::{self, Inputs, Reload};
use crate::nodes::tracker::TrackerSettings;
use crate::nodes::view::{NodesView, ViewRequests};
use crate::nodes::{NodeSource, SharedSnapshot};
use crate::notify::Notifier;
use crate::policy::Policy;
use crate::reload::{self, ReloadSource};
use crate::tcp::TcpSettings;

/// One signal that stops everything: workers see the stop signal, async
/// tasks wait on the watch channel.
#[derive(Clone)]
pub struct Shutdown {
    workers: StopSignal,
    notify: watch::Sender<bool>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown {
            workers: StopSignal::new(),
            notify: watch::Sender::new(false),
        }
    }

    /// Asks every part of the server to stop; safe to call more than once.
    pub fn trigger(&self) {
        self.workers.set();
        self.notify.send_replace(true);
    }

    /// The signal the workers see.
    pub fn workers(&self) -> StopSignal {
        self.workers.clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.notify.subscribe()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

/// Whether the server answers: every worker running, and a node list known.
#[derive(Debug)]
pub struct Readiness {
    workers: usize,
    running: AtomicUsize,
    failed: AtomicBool,
}

impl Readiness {
    pub fn new(workers: usize) -> Readiness {
        Readiness {
            workers,
            running: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// A worker entered its loop.
    pub fn worker_started(&self) {
        self.running.fetch_add(1, Ordering::AcqRel);
    }

    /// A worker left its loop (shutdown or error).
    pub fn worker_stopped(&self, failed: bool) {
        self.running.fetch_sub(1, Ordering::AcqRel);
        if failed {
            self.failed.store(true, Ordering::Release);
        }
    }

    /// Every worker is in its loop and none has failed.
    pub fn workers_up(&self) -> bool {
        !self.failed.load(Ordering::Acquire) && self.running.load(Ordering::Acquire) == self.workers
    }
}

/// What the control plane runs.
pub struct ControlPlane {
    /// The running configuration, to tell what a reload changes.
    pub config: Config,
    /// Where SIGHUP re-reads the configuration from; None: SIGHUP is logged
    /// and ignored.
    pub reload_from: Option<ReloadSource>,
    pub client: AlternatorClient,
    pub published: SharedSnapshot,
    pub tcp: Vec<StdTcpListener>,
    pub tcp_settings: TcpSettings,
    pub policy: Policy,
    /// With `--forward`: the forwarder, for TCP queries...
    pub forwarder: Option<Forwarder>,
    /// ...and the UDP workers' queue with the sockets to answer from.
    pub forward_jobs: Option<(mpsc::Receiver<ForwardJob>, Vec<StdUdpSocket>)>,
    pub metrics: Arc<Metrics>,
    pub metrics_listener: Option<StdTcpListener>,
    pub readiness: Arc<Readiness>,
    pub notifier: Option<Arc<Notifier>>,
}

/// Starts the control-plane thread. It returns once `shutdown` is triggered
/// (by the caller or by SIGINT/SIGTERM) and its tasks have stopped.
pub fn spawn(
    plane: ControlPlane,
    tracker: TrackerSettings,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || runtime.block_on(run(plane, tracker, shutdown)))
}

async fn run(mut plane: ControlPlane, tracker: TrackerSettings, shutdown: Shutdown) {
    let mut tasks = JoinSet::new();
    let ready = ready_check(&plane);
    let (views, view_requests) = mpsc::channel(VIEW_REQUESTS_QUEUED);
    spawn_listeners(&mut plane, &mut tasks, views, &shutdown);
    if let Some(notifier) = plane.notifier.clone() {
        tasks.spawn(notify_systemd(
            notifier,
            Arc::clone(&plane.published),
            Arc::clone(&ready),
            shutdown.subscribe(),
        ));
    }
    let mut tracker = spawn_tracker(
        tracker,
        plane.client.clone(),
        &plane.published,
        view_requests,
    );
    watch_signals(&mut plane, &mut tracker, &shutdown).await;
    tracker.stop.send_replace(true);
    let _ = tracker.task.await;
    while tasks.join_next().await.is_some() {}
}

/// The systemd readiness and watchdog condition: answering at all (every
/// worker up and some node to answer with), seeds included, so that a
/// cluster unreachable at start does not keep the service from starting.
fn ready_check(plane: &ControlPlane) -> Arc<dyn Fn() -> bool + Send + Sync> {
    let readiness = Arc::clone(&plane.readiness);
    let published = Arc::clone(&plane.published);
    Arc::new(move || readiness.workers_up() && published.load().node_count() > 0)
}

/// `/readyz`: stricter than [`ready_check`], with reasons; see
/// [`degraded`](crate::nodes::degraded).
fn readyz_check(plane: &ControlPlane) -> ReadyCheck {
    let readiness = Arc::clone(&plane.readiness);
    let published = Arc::clone(&plane.published);
    let metrics = Arc::clone(&plane.metrics);
    Arc::new(move || {
        let problem = metrics.control().refresh_problem();
        degraded::readyz(
            &published.load(),
            readiness.workers_up(),
            problem.as_deref(),
        )
    })
}

/// `/nodes` requests waiting for the tracker; more wait to be queued.
const VIEW_REQUESTS_QUEUED: usize = 8;

/// Starts TCP, forwarding and the metrics endpoint (which asks the tracker
/// for its view through `views`).
fn spawn_listeners(
    plane: &mut ControlPlane,
    tasks: &mut JoinSet<()>,
    views: ViewRequests,
    shutdown: &Shutdown,
) {
    for listener in std::mem::take(&mut plane.tcp) {
        match async_listener(listener) {
            Ok(listener) => {
                tasks.spawn(crate::tcp::serve(
                    listener,
                    plane.tcp_settings,
                    plane.published.clone(),
                    plane.forwarder.clone(),
                    plane.policy.clone(),
                    Arc::clone(&plane.metrics),
                    shutdown.subscribe(),
                ));
            }
            Err(e) => {
                error!(error = %e, "cannot serve a TCP listener; stopping");
                shutdown.trigger();
            }
        }
    }
    if let (Some(forwarder), Some((jobs, replies))) =
        (plane.forwarder.clone(), plane.forward_jobs.take())
    {
        let mut stopped = shutdown.subscribe();
        tasks.spawn(async move {
            tokio::select! {
                () = forwarder.serve_udp(jobs, replies) => {}
                _ = stopped.wait_for(|stop| *stop) => {}
            }
        });
    }
    if let Some(listener) = plane.metrics_listener.take() {
        match async_listener(listener) {
            Ok(listener) => {
                let endpoints = Endpoints {
                    metrics: Arc::clone(&plane.metrics),
                    ready: readyz_check(plane),
                    views,
                };
                tasks.spawn(crate::metrics::serve(
                    listener,
                    endpoints,
                    shutdown.subscribe(),
                ));
            }
            Err(e) => error!(error = %e, "cannot serve metrics"),
        }
    }
    let published = Arc::clone(&plane.published);
    plane.metrics.set_snapshot_source(move || {
        let snapshot = published.load();
        let age = (snapshot.source == NodeSource::Cluster).then(|| snapshot.built.elapsed());
        degraded::facts(&snapshot, age)
    });
    // What `/readyz` would answer, without its text's refresh problem (which
    // does not change the answer) so that the source holds no `Metrics`.
    let readiness = Arc::clone(&plane.readiness);
    let published = Arc::clone(&plane.published);
    plane.metrics.set_ready_source(move || {
        let workers_up = readiness.workers_up();
        ReadyFacts {
            workers_up,
            ready: degraded::readyz(&published.load(), workers_up, None).ready,
        }
    });
}

fn async_listener(listener: StdTcpListener) -> std::io::Result<tokio::net::TcpListener> {
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// The running node tracker, the way to reload it, and the way to stop it.
pub(crate) struct RunningTracker {
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) reloads: mpsc::Sender<Reload>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

pub(crate) fn spawn_tracker(
    settings: TrackerSettings,
    client: AlternatorClient,
    published: &SharedSnapshot,
    views: mpsc::Receiver<oneshot::Sender<NodesView>>,
) -> RunningTracker {
    let stop = watch::Sender::new(false);
    let (reloads, reload_rx) = mpsc::channel(1);
    let inputs = Inputs {
        reloads: reload_rx,
        views,
        shutdown: stop.subscribe(),
    };
    let task = tokio::spawn(driver::run(settings, client, Arc::clone(published), inputs));
    RunningTracker {
        stop,
        reloads,
        task,
    }
}

/// SIGINT and SIGTERM shut down; SIGHUP reloads. Returns on shutdown, for
/// any reason.
async fn watch_signals(
    plane: &mut ControlPlane,
    tracker: &mut RunningTracker,
    shutdown: &Shutdown,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let signals = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    );
    let (mut int, mut term, mut hup) = match signals {
        (Ok(int), Ok(term), Ok(hup)) => (int, term, hup),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            error!(error = %e, "cannot watch signals; stop the server by other means");
            shutdown.subscribe().wait_for(|stop| *stop).await.ok();
            return;
        }
    };
    let mut stopped = shutdown.subscribe();
    loop {
        tokio::select! {
            _ = int.recv() => {
                info!("SIGINT received; shutting down");
                break;
            }
            _ = term.recv() => {
                info!("SIGTERM received; shutting down");
                break;
            }
            _ = hup.recv() => reload_now(plane, tracker).await,
            _ = stopped.wait_for(|stop| *stop) => break,
        }
    }
    shutdown.trigger();
}

async fn reload_now(plane: &mut ControlPlane, tracker: &mut RunningTracker) {
    let Some(source) = &plane.reload_from else {
        warn!("SIGHUP received, but the server was started without --config: nothing to reload");
        return;
    };
    if let Some(notifier) = &plane.notifier {
        let _ = notifier.reloading();
    }
    info!(file = %source.path.display(), "SIGHUP received; reloading the configuration");
    match reload::load(source, &plane.config, &plane.metrics) {
        Ok(applied) => {
            // The tracker, the snapshot's one writer, applies it, going on
            // from what it knew: the nodes to poll and their health.
            let (done, generation) = oneshot::channel();
            let sent = tracker.reloads.send(Reload {
                zone: applied.zone,
                settings: applied.tracker,
                client: applied.client,
                applied: done,
            });
            let generation = match sent.await {
                Ok(()) => generation.await.ok(),
                Err(_) => None,
            };
            if let Some(Err(rejected)) = &generation {
                error!(error = %rejected, "the new configuration is rejected; still serving the old one");
                if let Some(notifier) = &plane.notifier {
                    let _ = notifier.ready(&status_line(&plane.published));
                }
                return;
            }
            let Some(Ok(generation)) = generation else {
                error!("the node tracker has stopped; the new configuration is not applied");
                if let Some(notifier) = &plane.notifier {
                    let _ = notifier.ready(&status_line(&plane.published));
                }
                return;
            };
            apply_rules(&plane.policy, &plane.config, &applied.config);
            plane.config = applied.config;
            info!(generation, "configuration reloaded");
        }
        Err(e) => {
            error!(error = %e, "the new configuration is rejected; still serving the old one")
        }
    }
    if let Some(notifier) = &plane.notifier {
        let _ = notifier.ready(&status_line(&plane.published));
    }
}

/// Puts a reloaded configuration's access list, denied policy, forwarding
/// sources and rate limit in force when any of them changed (the rate
/// limiters start afresh then), and logs what changed.
fn apply_rules(policy: &Policy, running: &Config, new: &Config) {
    let changed: Vec<&str> = [
        ("allow", running.access != new.access),
        ("denied", running.denied != new.denied),
        ("forward-allow", running.forward_allow != new.forward_allow),
        ("rate-limit", running.rate_limit != new.rate_limit),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect();
    if changed.is_empty() {
        return;
    }
    policy.replace(crate::server::rules(new));
    info!(changed = %changed.join(","), "access and rate-limit rules replaced");
    if running.forward_allow != new.forward_allow {
        if let Some(summary) = new.forwarding_summary() {
            info!("{summary}");
        }
    }
}

/// Tells systemd when the server is ready, what it serves, that it is alive
/// (when a watchdog is set), and that it is stopping.
async fn notify_systemd(
    notifier: Arc<Notifier>,
    published: SharedSnapshot,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
) {
    let wait_ready = async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        () = wait_ready => {}
        _ = shutdown.wait_for(|stop| *stop) => {
            let _ = notifier.stopping();
            return;
        }
    }
    if let Err(e) = notifier.ready(&status_line(&published)) {
        warn!(error = %e, "cannot notify systemd");
    }
    let watchdog =
        crate::notify::watchdog_loop(Arc::clone(&notifier), move || ready(), shutdown.clone());
    let status = async {
        let mut last = String::new();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let line = status_line(&published);
            if line != last {
                let _ = notifier.status(&line);
                last = line;
            }
        }
    };
    // STOPPING=1 is sent here, by the task that sends STATUS=, so that it is
    // always the last message.
    tokio::select! {
        biased;
        _ = shutdown.wait_for(|stop| *stop) => {}
        () = watchdog => {}
        () = status => {}
    }
    let _ = notifier.stopping();
}

fn status_line(published: &SharedSnapshot) -> String {
    let snapshot = published.load();
    let source = match snapshot.source {
        NodeSource::Seeds => "seeds",
        NodeSource::Cluster => "cluster",
    };
    format!(
        "serving {} nodes ({source}), generation {}",
        snapshot.node_count(),
        snapshot.generation
    )
}
