//! Prometheus metrics, kept off the fast path's shared cache lines.
//!
//! # Who writes what
//! - [`QueryMetrics`]: the counters of one UDP worker thread, or of the
//!   TCP listener. Each has **one writer**: an increment is a relaxed `load`
//!   and a relaxed `store` of an `AtomicU64` (a plain `mov` pair on x86, no
//!   `lock` prefix, no contended cache line), and the struct is aligned to
//!   128 bytes so that two workers' counters never share a cache line (nor
//!   a pair of lines, for the adjacent-line prefetcher). The scraper reads
//!   them with relaxed loads from another thread, which is sound: a 64-bit
//!   atomic is never torn, and a count that is one increment behind is
//!   fine. Breaking the single-writer rule is not undefined behaviour; it
//!   only loses increments.
//!   The TCP one is written from many tokio tasks, but they all run on the
//!   control plane's current-thread runtime, so there is still one writer
//!   thread at a time (and the runtime's task switches order the accesses).
//!   Should TCP ever move to a multi-threaded runtime, give it
//!   `fetch_add`s or one `QueryMetrics` per thread.
//! - [`ControlMetrics`]: refresh and health-probe outcomes per node, the
//!   time each probe took (by outcome, written by the probers), node
//!   removals by reason with the time each took, and gauges, written by the
//!   control plane (a `Mutex`ed map and atomics; a few writes per second,
//!   never on the packet path).
//! - Facts about the current snapshot (live nodes per name, generation,
//!   age) are read at scrape time from a [`SnapshotSource`] the server
//!   provides, and readiness (every UDP worker running, what `/readyz`
//!   answers) from a function returning [`ReadyFacts`].
//!
//! # Wiring
//! ```no_run
//! # use std::sync::Arc;
//! # use alternator_dns::metrics::{Metrics, ReadyFacts, SnapshotFacts, QueryType, Rcode};
//! let metrics = Arc::new(Metrics::new(2)); // two UDP workers
//! metrics.set_io_backend("uring");
//! metrics.set_snapshot_source(|| SnapshotFacts {
//!     live_nodes: vec![("alternator.example.com".into(), 3)],
//!     fail_open_nodes: vec![("alternator.example.com".into(), 0)],
//!     unverified_seeds: false,
//!     generation: 7,
//!     age: Some(std::time::Duration::from_millis(400)),
//! });
//! metrics.set_ready_source(|| ReadyFacts { workers_up: true, ready: true });
//! let mine = metrics.udp_worker(0).clone(); // moved into worker 0
//! mine.query(QueryType::A);
//! mine.response(Rcode::NoError);
//! // on the control plane: tokio::spawn(metrics::serve(listener, metrics, ready, shutdown_rx));
//! let text = metrics.render();
//! ```
//!
//! # Exposition
//! [`Metrics::render`] writes the Prometheus text format 0.0.4; [`serve`]
//! answers `GET /metrics`, `/healthz`, `/readyz` and `/nodes` over HTTP/1.1. The
//! metric names are the `pub const`s below. Every counter family with fixed
//! labels is written in full, zeros included, so that rates work from the
//! first scrape.
//!
//! # Files
//! `labels` (the label enums), `counters` ([`QueryMetrics`]), `control`
//! ([`ControlMetrics`], [`SnapshotFacts`]), `render` (the exposition text),
//! `http` (the endpoint); this file holds the names and the registry.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::SystemTime;

mod control;
mod counters;
pub mod http;
mod labels;
mod render;

pub use control::{ControlMetrics, ReadyFacts, SnapshotFacts, SnapshotSource};
pub use counters::{QueryCounts, QueryMetrics};
pub use http::{serve, Endpoints, ReadyCheck, Readyz};
pub use labels::{DropReason, Outcome, QueryType, Rcode, RemovalReason};

/// `alternator_dns_build_info{version,io_backend} 1`.
pub const BUILD_INFO: &str = "alternator_dns_build_info";
/// Start time of the process, seconds since the Unix epoch.
pub const START_TIME_SECONDS: &str = "alternator_dns_start_time_seconds";
/// Queries received, by transport and query type, summed over workers.
pub const QUERIES_TOTAL: &str = "alternator_dns_queries_total";
/// Queries received by each UDP worker (all types).
pub const WORKER_QUERIES_TOTAL: &str = "alternator_dns_worker_queries_total";
/// Responses sent, by transport and RCODE.
pub const RESPONSES_TOTAL: &str = "alternator_dns_responses_total";
/// Packets dropped without a response, by reason (UDP and TCP together).
pub const DROPPED_PACKETS_TOTAL: &str = "alternator_dns_dropped_packets_total";
/// Responses sent truncated (TC=1) because they did not fit, by transport.
pub const TRUNCATED_RESPONSES_TOTAL: &str = "alternator_dns_truncated_responses_total";
/// Queries handed to the forwarder (names outside the zone), by transport.
pub const FORWARDED_QUERIES_TOTAL: &str = "alternator_dns_forwarded_queries_total";
/// Responses over the rate limit sent truncated (RRL "slip"), by transport.
pub const RATE_LIMIT_SLIPS_TOTAL: &str = "alternator_dns_rate_limit_slips_total";
/// `/localnodes` requests, by node and result (`ok`, `error`).
pub const REFRESH_REQUESTS_TOTAL: &str = "alternator_dns_refresh_requests_total";
/// Health probes, by node and result (`ok`, `error`).
pub const HEALTH_PROBES_TOTAL: &str = "alternator_dns_health_probes_total";
/// Histogram: how long each health probe took, by result (`ok`, `error`);
/// a timed-out probe takes the whole `--health-timeout`.
pub const HEALTH_PROBE_SECONDS: &str = "alternator_dns_health_probe_seconds";
/// Counter: nodes taken out of the answers, by reason.
pub const NODE_REMOVALS_TOTAL: &str = "alternator_dns_node_removals_total";
/// Counter: times a location's clients were answered from elsewhere
/// (`--affinity`), by location (`dc`, `rack`) and where to (`dc`, `name`).
pub const LOCATION_FALLBACKS_TOTAL: &str = "alternator_dns_location_fallbacks_total";
/// Histogram: from a removed node's first failing probe to the snapshot
/// without it, by reason.
pub const NODE_REMOVAL_SECONDS: &str = "alternator_dns_node_removal_seconds";
/// TCP connections open now.
pub const TCP_CONNECTIONS: &str = "alternator_dns_tcp_connections";
/// Forwarded queries waiting for an upstream answer now.
pub const FORWARD_OUTSTANDING: &str = "alternator_dns_forward_outstanding_queries";
/// Nodes served that pass their health checks, by served name (seeds and
/// nodes not probed count too; nodes served in fail open do not).
pub const LIVE_NODES: &str = "alternator_dns_live_nodes";
/// Nodes served although they fail their health checks (fail open), by name.
pub const FAIL_OPEN_NODES: &str = "alternator_dns_fail_open_nodes";
/// 1 while a name serves nodes that fail their health checks (fail open).
pub const FAIL_OPEN: &str = "alternator_dns_fail_open";
/// 1 while seeds are served that no `/localnodes` answer has confirmed.
pub const UNVERIFIED_SEEDS: &str = "alternator_dns_unverified_seeds";
/// Generation number of the current snapshot (grows with each publication).
pub const SNAPSHOT_GENERATION: &str = "alternator_dns_snapshot_generation";
/// Seconds since the current snapshot was published.
pub const SNAPSHOT_AGE_SECONDS: &str = "alternator_dns_snapshot_age_seconds";
/// 1 while every UDP worker runs its loop and none has failed.
pub const WORKERS_UP: &str = "alternator_dns_workers_up";
/// 1 while `/readyz` answers 200 (`ready` or `ready, degraded`).
pub const READY: &str = "alternator_dns_ready";

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent counts behind.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The registry: every worker's counters, the control plane's, build
/// information, and the snapshot source.
pub struct Metrics {
    udp: Vec<Arc<QueryMetrics>>,
    tcp: Arc<QueryMetrics>,
    control: ControlMetrics,
    version: &'static str,
    io_backend: Mutex<String>,
    start_time: SystemTime,
    snapshot: OnceLock<Box<dyn SnapshotSource>>,
    ready: OnceLock<Box<ReadySource>>,
}

/// Where [`Metrics::render`] gets the [`ReadyFacts`].
type ReadySource = dyn Fn() -> ReadyFacts + Send + Sync;

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("udp_workers", &self.udp.len())
            .field("version", &self.version)
            .field("io_backend", &*lock(&self.io_backend))
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry for `udp_workers` UDP workers and the TCP listener, with
    /// the crate's version and io backend `"unknown"` until set.
    pub fn new(udp_workers: usize) -> Metrics {
        Metrics {
            udp: (0..udp_workers)
                .map(|_| Arc::new(QueryMetrics::new()))
                .collect(),
            tcp: Arc::new(QueryMetrics::new()),
            control: ControlMetrics::default(),
            version: env!("CARGO_PKG_VERSION"),
            io_backend: Mutex::new("unknown".to_string()),
            start_time: SystemTime::now(),
            snapshot: OnceLock::new(),
            ready: OnceLock::new(),
        }
    }

    /// The counters of UDP worker `i`; clone the `Arc` into the worker.
    /// Panics if `i` is not below the worker count given to [`Metrics::new`].
    pub fn udp_worker(&self, i: usize) -> &Arc<QueryMetrics> {
        &self.udp[i]
    }

    /// Every UDP worker's counters, by worker index.
    pub fn udp_workers(&self) -> &[Arc<QueryMetrics>] {
        &self.udp
    }

    /// The TCP listener's counters.
    pub fn tcp(&self) -> &Arc<QueryMetrics> {
        &self.tcp
    }

    /// The control plane's counters and gauges.
    pub fn control(&self) -> &ControlMetrics {
        &self.control
    }

    /// Names the UDP backend in `alternator_dns_build_info` (`uring`, `mmsg`).
    pub fn set_io_backend(&self, name: &str) {
        *lock(&self.io_backend) = name.to_string();
    }

    /// Sets where the snapshot facts come from. Only the first call has an
    /// effect; it returns `false` for later ones.
    pub fn set_snapshot_source(&self, source: impl SnapshotSource + 'static) -> bool {
        self.snapshot.set(Box::new(source)).is_ok()
    }

    /// Sets where the readiness facts come from (`alternator_dns_workers_up`
    /// and `alternator_dns_ready`; both absent until set). Only the first
    /// call has an effect; it returns `false` for later ones.
    pub fn set_ready_source(
        &self,
        source: impl Fn() -> ReadyFacts + Send + Sync + 'static,
    ) -> bool {
        self.ready.set(Box::new(source)).is_ok()
    }

    /// The UDP workers' counters summed.
    pub fn udp_totals(&self) -> QueryCounts {
        let mut sum = QueryCounts::default();
        for w in &self.udp {
            sum += w.counts();
        }
        sum
    }
}

#[cfg(test)]
mod tests;
