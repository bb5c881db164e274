//! Start-up and shutdown of the whole server: everything that happens once.
//!
//! Order matters: the first snapshot (the seeds) is published before any
//! socket is bound, so the first query already has an answer; the I/O backend
//! is probed once, here, and every worker uses the result; every socket is
//! bound before privileges are dropped (port 53), and nothing serves before
//! they are.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use rand_core::SeedableRng;
use thiserror::Error;
use tracing::{debug, error, info, warn};

use crate::config::{Config, IoMode};
use crate::control::{self, ControlPlane, Readiness, Shutdown};
use crate::dns::{Rng, Zone};
use crate::forward::{ForwardJob, ForwardQueue, Forwarder};
use crate::io::{self, Backend, IoError, WorkerSockets};
use crate::metrics::Metrics;
use crate::nodes::{NodeSource, SharedSnapshot, Snapshot};
use crate::notify::Notifier;
use crate::plan::{Nodes, Plan, PlanError, AUTO_CHOICE};
use crate::policy::{Policy, Rules};
use crate::privileges::{self, PrivilegeError};
use crate::reload::ReloadSource;
use crate::responder::UdpResponder;
use crate::rrl::RrlError;

/// Why the server could not start, or stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("cannot listen on TCP {addr}: {source}")]
    TcpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("{0} worker(s) failed; see the log")]
    WorkersFailed(usize),
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error(transparent)]
    RateLimit(#[from] RrlError),
}

impl RunError {
    /// Whether the configuration is at fault (an option, a file it names, a
    /// seed that does not resolve) rather than the running system (a socket
    /// that cannot be bound, a thread that cannot start, a worker that
    /// failed): the exit status differs, see [`crate::exit`].
    pub fn is_configuration(&self) -> bool {
        match self {
            RunError::Plan(e) => e.is_configuration(),
            RunError::RateLimit(_) => true,
            RunError::Privileges(e) => e.is_configuration(),
            RunError::Io(_)
            | RunError::TcpBind { .. }
            | RunError::Thread(_)
            | RunError::WorkersFailed(_)
            | RunError::MetricsBind { .. } => false,
        }
    }
}

/// Runs the server until `shutdown` is triggered (SIGINT and SIGTERM trigger
/// it). `reload_from` is where SIGHUP re-reads the configuration.
pub fn run(
    config: &Config,
    reload_from: Option<ReloadSource>,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new(config.cpus.len()));
    let Plan {
        nodes,
        backend,
        user,
    } = Plan::build(config)?;
    let tracker = nodes.tracker_settings(config, Arc::clone(&metrics));
    log_plan(config, &nodes);
    let Nodes {
        seeds,
        zone,
        client,
        ..
    } = nodes;
    let published = first_snapshot(zone, &seeds, &config.exclude);
    let Bound {
        per_worker,
        addrs: bound,
        tcp,
    } = bind_all(&config.listen, config.cpus.len())?;
    let metrics_listener = bind_metrics(config.metrics_listen)?;
    if let Some(user) = &user {
        privileges::drop_to(user)?;
        info!(user = %user.name, "dropped root privileges");
    }
    metrics.set_io_backend(backend.name());
    let Forwarding {
        forwarder,
        queue,
        jobs: forward_jobs,
    } = forwarding(config, &per_worker, &metrics)?;
    let readiness = Arc::new(Readiness::new(config.cpus.len()));
    let policy = policy(config);
    let control = control::spawn(
        ControlPlane {
            config: config.clone(),
            reload_from,
            client,
            published: Arc::clone(&published),
            tcp,
            tcp_settings: config.tcp,
            policy: policy.clone(),
            forwarder,
            forward_jobs,
            metrics: Arc::clone(&metrics),
            metrics_listener,
            readiness: Arc::clone(&readiness),
            notifier: Notifier::from_env().map(Arc::new),
        },
        tracker,
        shutdown.clone(),
    )
    .map_err(RunError::Thread)?;
    let workers = spawn_workers(
        config,
        backend,
        per_worker,
        WorkerShared {
            published: &published,
            forward: queue,
            policy,
            metrics: &metrics,
            readiness: &readiness,
        },
        &shutdown,
    );
    log_ready(config, backend, &bound);
    stop(workers?, control, &shutdown)
}

/// Who may ask what, and how fast, as configured; shared by the workers
/// and TCP, replaced on reload.
fn policy(config: &Config) -> Policy {
    Policy::new(rules(config))
}

/// The rules of a configuration, each UDP worker's share of the rate limit
/// included.
pub fn rules(config: &Config) -> Rules {
    Rules {
        access: config.access.clone(),
        denied: config.denied,
        forward_allow: config.forward_allow.clone(),
        rate_limit: config
            .rate_limit
            .as_ref()
            .map(|r| r.per_worker(config.cpus.len())),
    }
}

/// Waits for the workers to end (shutdown, or the first that fails), then
/// stops the control plane.
fn stop(
    workers: Vec<Worker>,
    control: JoinHandle<()>,
    shutdown: &Shutdown,
) -> Result<(), RunError> {
    let failed = join_workers(workers, shutdown);
    shutdown.trigger();
    if control.join().is_err() {
        error!("the control thread panicked");
    }
    info!("stopped");
    if failed > 0 {
        return Err(RunError::WorkersFailed(failed));
    }
    Ok(())
}

/// What start-up says about the plan before it binds anything.
fn log_plan(config: &Config, nodes: &Nodes) {
    for failure in &nodes.unresolved {
        warn!(seed = %failure, "--seed not resolved; ignoring it");
    }
    if config.io == IoMode::Auto {
        info!("{AUTO_CHOICE}");
    }
    let zone = &nodes.zone;
    info!(
        zone = %zone.apex(),
        serial = zone.serial(),
        ns = %zone.name_servers().join(" "),
        "zone built"
    );
    for warning in config.resolver_warnings(zone) {
        warn!("{warning}");
    }
}

fn log_ready(config: &Config, backend: Backend, bound: &[SocketAddr]) {
    for addr in bound {
        info!(udp = %addr, tcp = %addr, "listening");
    }
    info!(
        domain = %config.zone.domain,
        workers = config.cpus.len(),
        backend = %backend.name(),
        answers = %config.zone.answers,
        resolver_answers = %config.zone.resolver_answers.unwrap_or(config.zone.answers),
        ttl = config.zone.ttl,
        "alternator-dns ready"
    );
}

/// With `--forward`: the forwarder, the workers' queue, and the queue's
/// receiving end with the sockets forwarded answers leave from.
#[derive(Default)]
struct Forwarding {
    forwarder: Option<Forwarder>,
    queue: Option<ForwardQueue>,
    jobs: Option<ForwardJobs>,
}

fn forwarding(
    config: &Config,
    per_worker: &[Vec<UdpSocket>],
    metrics: &Arc<Metrics>,
) -> Result<Forwarding, RunError> {
    let Some(settings) = &config.forward else {
        return Ok(Forwarding::default());
    };
    if let Some(summary) = config.forwarding_summary() {
        info!("{summary}");
    }
    let forwarder = Forwarder::new(settings.clone()).with_metrics(Arc::clone(metrics));
    let (queue, jobs) = forwarder.queue();
    let replies = reply_sockets(per_worker)?;
    Ok(Forwarding {
        forwarder: Some(forwarder),
        queue: Some(queue),
        jobs: Some((jobs, replies)),
    })
}

type ForwardJobs = (tokio::sync::mpsc::Receiver<ForwardJob>, Vec<UdpSocket>);

/// Binds the metrics endpoint now, while binding privileged ports still works.
fn bind_metrics(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, RunError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener =
        TcpListener::bind(addr).map_err(|source| RunError::MetricsBind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    info!(metrics = %bound, "serving metrics and health checks over HTTP");
    Ok(Some(listener))
}

/// Publishes the seeds (less any excluded) as the first node list of every
/// name, so queries are answered before the first `/localnodes` reply
/// arrives. Excluded seeds are still asked for the list.
fn first_snapshot(
    zone: Arc<Zone>,
    seeds: &[SocketAddr],
    exclude: &BTreeSet<IpAddr>,
) -> SharedSnapshot {
    let mut unique: Vec<IpAddr> = Vec::with_capacity(seeds.len());
    for ip in seeds.iter().map(SocketAddr::ip) {
        if !unique.contains(&ip) && !exclude.contains(&ip) {
            unique.push(ip);
        }
    }
    if unique.is_empty() && !seeds.is_empty() {
        warn!("every seed is excluded: no address to answer with until /localnodes answers");
    }
    let snapshot = Snapshot::new(1, zone, NodeSource::Seeds, &unique);
    info!(
        nodes = snapshot.node_count(),
        "serving the seeds until /localnodes answers"
    );
    Arc::new(ArcSwap::from_pointee(snapshot))
}

/// Sockets the forwarder answers clients from: duplicates of the first
/// worker's, so replies leave from the address and port the query went to.
fn reply_sockets(per_worker: &[Vec<UdpSocket>]) -> Result<Vec<UdpSocket>, RunError> {
    let first = per_worker.first().map(Vec::as_slice).unwrap_or_default();
    first
        .iter()
        .map(|s| {
            s.try_clone().map_err(|source| {
                RunError::Io(IoError::Io {
                    context: "duplicating a UDP socket for forwarded answers",
                    source,
                })
            })
        })
        .collect()
}

/// Every socket the server listens on.
struct Bound {
    /// UDP sockets, one list per worker, in listen order.
    per_worker: Vec<Vec<UdpSocket>>,
    /// The listen addresses with the ports actually bound.
    addrs: Vec<SocketAddr>,
    tcp: Vec<TcpListener>,
}

/// Binds every worker's UDP sockets, then TCP on the same ports. With port 0
/// the kernel picks the UDP port, which may already be taken for TCP on that
/// address; then the whole binding is tried again with fresh ports.
fn bind_all(listen: &[SocketAddr], workers: usize) -> Result<Bound, RunError> {
    const ATTEMPTS: usize = 20;
    let mut attempt = 1;
    loop {
        let (udp, bound) = io::socket::bind_worker_sockets(listen, workers)?;
        match bind_tcp(&bound) {
            Ok(tcp) => {
                return Ok(Bound {
                    per_worker: udp,
                    addrs: bound,
                    tcp,
                })
            }
            Err(RunError::TcpBind { addr, source })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < ATTEMPTS
                    && listen.iter().any(|l| l.ip() == addr.ip() && l.port() == 0) =>
            {
                debug!(%addr, attempt, "port chosen for UDP is taken for TCP; choosing again");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn bind_tcp(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, RunError> {
    addrs
        .iter()
        .map(|addr| {
            let bind = || -> std::io::Result<TcpListener> {
                let domain = socket2::Domain::for_address(*addr);
                let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
                socket.set_reuse_address(true)?;
                if addr.is_ipv6() {
                    socket.set_only_v6(true)?;
                }
                socket.bind(&(*addr).into())?;
                socket.listen(1024)?;
                Ok(socket.into())
            };
            bind().map_err(|source| RunError::TcpBind {
                addr: *addr,
                source,
            })
        })
        .collect()
}

type Worker = JoinHandle<Result<(), IoError>>;

/// What every worker shares with the others and the control plane.
struct WorkerShared<'a> {
    published: &'a SharedSnapshot,
    forward: Option<ForwardQueue>,
    policy: Policy,
    metrics: &'a Arc<Metrics>,
    readiness: &'a Arc<Readiness>,
}

fn spawn_workers(
    config: &Config,
    backend: Backend,
    per_worker: Vec<Vec<UdpSocket>>,
    shared: WorkerShared<'_>,
    shutdown: &Shutdown,
) -> Result<Vec<Worker>, RunError> {
    let mut seeds = Rng::seed_from_u64(crate::nodes::refresher::random_seed());
    let mut workers = Vec::with_capacity(per_worker.len());
    for (index, (sockets, &cpu)) in per_worker.into_iter().zip(&config.cpus).enumerate() {
        let mut responder = UdpResponder::new(
            shared.published,
            Rng::from_rng(&mut seeds),
            shared.forward.clone(),
        )
        .with_policy(&shared.policy)
        .with_metrics(Arc::clone(shared.metrics.udp_worker(index)));
        let sockets = WorkerSockets {
            sockets,
            shutdown: shutdown.workers(),
        };
        let stopper = shutdown.clone();
        let readiness = Arc::clone(shared.readiness);
        let spawned = std::thread::Builder::new()
            .name(format!("udp-worker-{index}"))
            .spawn(move || {
                let pinned = io::socket::pin_current_thread(cpu);
                if !pinned {
                    warn!(worker = index, cpu, "could not pin worker to its CPU");
                }
                info!(
                    worker = index,
                    cpu,
                    pinned,
                    backend = %backend.name(),
                    "worker started"
                );
                readiness.worker_started();
                let result = io::run_worker(backend, sockets, &mut responder);
                readiness.worker_stopped(result.is_err());
                if result.is_err() {
                    // Stop the others now: a server missing a worker would
                    // silently lose the queries the kernel hashes to it.
                    stopper.trigger();
                }
                result
            });
        match spawned {
            Ok(worker) => workers.push(worker),
            Err(e) => {
                shutdown.trigger();
                join_workers(workers, shutdown);
                return Err(RunError::Thread(e));
            }
        }
    }
    Ok(workers)
}

/// Waits for every worker; the first one to fail stops the others.
fn join_workers(workers: Vec<Worker>, shutdown: &Shutdown) -> usize {
    let mut failed = 0;
    for (index, worker) in workers.into_iter().enumerate() {
        let result = worker.join();
        let reason = match result {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "panicked".to_string(),
        };
        error!(worker = index, reason = %reason, "worker stopped with an error; shutting down");
        failed += 1;
        shutdown.trigger();
    }
    failed
}
