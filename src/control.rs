//! The control plane: one thread running a single-threaded tokio runtime.
//!
//! It owns everything that is not the UDP fast path: the `/localnodes`
//! refresher, the TCP listeners and signal handling. Keeping it on one thread
//! of its own means it can never take CPU time from a pinned worker core
//! unless the operator places it there.

use std::net::{TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use crate::forward::{ForwardJob, Forwarder};
use crate::nodes::client::AlternatorClient;
use crate::nodes::tracker::{self, TrackerSettings};
use crate::nodes::SharedSnapshot;
use crate::tcp::TcpSettings;

/// One signal that stops everything: workers poll the flag, async tasks wait
/// on the watch channel.
#[derive(Clone)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    notify: watch::Sender<bool>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown {
            flag: Arc::new(AtomicBool::new(false)),
            notify: watch::Sender::new(false),
        }
    }

    /// Asks every part of the server to stop; safe to call more than once.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// The flag the workers poll.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
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

/// What the control plane runs.
pub struct ControlPlane {
    pub tracker: TrackerSettings,
    pub client: AlternatorClient,
    pub published: SharedSnapshot,
    pub tcp: Vec<StdTcpListener>,
    pub tcp_settings: TcpSettings,
    /// With `--forward`: the forwarder, for TCP queries...
    pub forwarder: Option<Forwarder>,
    /// ...and the UDP workers' queue with the sockets to answer from.
    pub forward_jobs: Option<(mpsc::Receiver<ForwardJob>, Vec<StdUdpSocket>)>,
}

/// Starts the control-plane thread. It returns once `shutdown` is triggered
/// (by the caller or by SIGINT/SIGTERM) and its tasks have stopped.
pub fn spawn(plane: ControlPlane, shutdown: Shutdown) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || runtime.block_on(run(plane, shutdown)))
}

async fn run(plane: ControlPlane, shutdown: Shutdown) {
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watch_signals(shutdown.clone()));
    tasks.spawn(tracker::run(
        plane.tracker,
        plane.client,
        plane.published.clone(),
        shutdown.subscribe(),
    ));
    for listener in plane.tcp {
        match listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
        {
            Ok(listener) => {
                tasks.spawn(crate::tcp::serve(
                    listener,
                    plane.tcp_settings,
                    plane.published.clone(),
                    plane.forwarder.clone(),
                    shutdown.subscribe(),
                ));
            }
            Err(e) => {
                error!(error = %e, "cannot serve a TCP listener; stopping");
                shutdown.trigger();
            }
        }
    }
    if let (Some(forwarder), Some((jobs, replies))) = (plane.forwarder, plane.forward_jobs) {
        let mut stopped = shutdown.subscribe();
        tasks.spawn(async move {
            tokio::select! {
                () = forwarder.serve_udp(jobs, replies) => {}
                _ = stopped.wait_for(|stop| *stop) => {}
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Turns SIGINT and SIGTERM into a shutdown; returns when shutdown happens
/// for any reason.
async fn watch_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(int), Ok(term)) => (int, term),
        (Err(e), _) | (_, Err(e)) => {
            error!(error = %e, "cannot watch SIGINT/SIGTERM; stop the server by other means");
            shutdown.subscribe().wait_for(|stop| *stop).await.ok();
            return;
        }
    };
    let mut stopped = shutdown.subscribe();
    tokio::select! {
        _ = int.recv() => info!("SIGINT received; shutting down"),
        _ = term.recv() => info!("SIGTERM received; shutting down"),
        _ = stopped.wait_for(|stop| *stop) => return,
    }
    shutdown.trigger();
}
