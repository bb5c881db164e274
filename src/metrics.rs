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
//! - [`ControlMetrics`]: refresh and health-probe outcomes per node, and
//!   gauges, written by the control plane (a `Mutex`ed map and atomics; a
//!   few writes per second, never on the packet path).
//! - Facts about the current snapshot (live nodes per name, generation,
//!   age) are read at scrape time from a [`SnapshotSource`] the server
//!   provides.
//!
//! # Wiring
//! ```no_run
//! # use std::sync::Arc;
//! # use alternator_dns::metrics::{Metrics, SnapshotFacts, QueryType, Rcode};
//! let metrics = Arc::new(Metrics::new(2)); // two UDP workers
//! metrics.set_io_backend("uring");
//! metrics.set_snapshot_source(|| SnapshotFacts {
//!     live_nodes: vec![("alternator.example.com".into(), 3)],
//!     fail_open_nodes: vec![("alternator.example.com".into(), 0)],
//!     unverified_seeds: false,
//!     generation: 7,
//!     age: Some(std::time::Duration::from_millis(400)),
//! });
//! let mine = metrics.udp_worker(0).clone(); // moved into worker 0
//! mine.query(QueryType::A);
//! mine.response(Rcode::NoError);
//! // on the control plane: tokio::spawn(metrics::serve(listener, metrics, ready, shutdown_rx));
//! let text = metrics.render();
//! ```
//!
//! # Exposition
//! [`Metrics::render`] writes the Prometheus text format 0.0.4; [`serve`]
//! answers `GET /metrics`, `/healthz` and `/readyz` over HTTP/1.1. The
//! metric names are the `pub const`s below. Every counter family with fixed
//! labels is written in full, zeros included, so that rates work from the
//! first scrape.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod http;

pub use http::{serve, ReadyCheck, Readyz};

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

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Declares a label enum with its variants' label values, `ALL` and `COUNT`.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every variant, in label order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// How many variants there are.
            pub const COUNT: usize = $name::ALL.len();

            /// The label value written for this variant.
            pub const fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

label_enum! {
    /// The `qtype` label: the query types this server treats specially.
    QueryType {
        A => "A",
        Aaaa => "AAAA",
        Soa => "SOA",
        Ns => "NS",
        Any => "ANY",
        /// Any other type, and queries whose question could not be read.
        Other => "other",
    }
}

impl QueryType {
    /// The label for a QTYPE number from the question.
    #[inline]
    pub const fn from_code(qtype: u16) -> QueryType {
        match qtype {
            1 => QueryType::A,
            28 => QueryType::Aaaa,
            6 => QueryType::Soa,
            2 => QueryType::Ns,
            255 => QueryType::Any,
            _ => QueryType::Other,
        }
    }
}

label_enum! {
    /// The `rcode` label of a response.
    Rcode {
        NoError => "NOERROR",
        FormErr => "FORMERR",
        ServFail => "SERVFAIL",
        NxDomain => "NXDOMAIN",
        NotImp => "NOTIMP",
        Refused => "REFUSED",
        /// Extended RCODE 16, from an OPT record with a version other than 0.
        BadVers => "BADVERS",
        Other => "other",
    }
}

impl Rcode {
    /// The label for a (possibly extended, 12-bit) RCODE number.
    #[inline]
    pub const fn from_code(rcode: u16) -> Rcode {
        match rcode {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            2 => Rcode::ServFail,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            16 => Rcode::BadVers,
            _ => Rcode::Other,
        }
    }
}

label_enum! {
    /// The `reason` label of a packet dropped without any response.
    DropReason {
        /// Shorter than a DNS header.
        TooShort => "too_short",
        /// The QR bit was set: a response, not a query.
        ResponseBit => "response_bit",
        /// From source port 0, which cannot be answered.
        SourcePortZero => "source_port_zero",
        /// The source is not in the allow list and the policy is to drop.
        AccessDenied => "access_denied",
        /// Over the response rate limit and not slipped.
        RateLimited => "rate_limited",
        /// The forwarder's queue was full.
        ForwardQueueFull => "forward_queue_full",
        /// The reply could not be sent.
        SendFailed => "send_failed",
    }
}

label_enum! {
    /// The `result` label of a refresh request or a health probe.
    Outcome {
        Ok => "ok",
        Error => "error",
    }
}

/// Adds `n` to a counter that only the calling thread writes.
#[inline(always)]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// The counters of one worker (or of TCP). Single writer; see the module
/// documentation. Aligned to 128 bytes: no false sharing with its
/// neighbours, nor with the `Arc`'s reference counts.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct QueryMetrics {
    queries: [AtomicU64; QueryType::COUNT],
    responses: [AtomicU64; Rcode::COUNT],
    dropped: [AtomicU64; DropReason::COUNT],
    truncated: AtomicU64,
    forwarded: AtomicU64,
    slipped: AtomicU64,
}

impl QueryMetrics {
    /// All counters at zero.
    pub fn new() -> QueryMetrics {
        QueryMetrics::default()
    }

    /// One query received, of this type. Call it for every packet that
    /// gets past the silent drops (too short, QR set), with
    /// [`QueryType::Other`] when the question cannot be read.
    #[inline]
    pub fn query(&self, qtype: QueryType) {
        bump(&self.queries[qtype as usize], 1);
    }

    /// `n` queries of this type (for batch accounting).
    #[inline]
    pub fn queries(&self, qtype: QueryType, n: u64) {
        bump(&self.queries[qtype as usize], n);
    }

    /// One response sent with this RCODE (truncated ones included).
    #[inline]
    pub fn response(&self, rcode: Rcode) {
        bump(&self.responses[rcode as usize], 1);
    }

    /// One packet dropped without a response.
    #[inline]
    pub fn dropped(&self, reason: DropReason) {
        bump(&self.dropped[reason as usize], 1);
    }

    /// One response sent truncated (TC=1) because it did not fit. Count
    /// its RCODE with [`QueryMetrics::response`] as well.
    #[inline]
    pub fn truncated(&self) {
        bump(&self.truncated, 1);
    }

    /// One query handed to the forwarder.
    #[inline]
    pub fn forwarded(&self) {
        bump(&self.forwarded, 1);
    }

    /// One response over the rate limit sent truncated (RRL slip). Not
    /// counted in [`QueryMetrics::truncated`]; count its RCODE with
    /// [`QueryMetrics::response`] as well.
    #[inline]
    pub fn slipped(&self) {
        bump(&self.slipped, 1);
    }

    /// The counters now, read with relaxed loads (any thread).
    pub fn counts(&self) -> QueryCounts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        QueryCounts {
            queries: self.queries.each_ref().map(load),
            responses: self.responses.each_ref().map(load),
            dropped: self.dropped.each_ref().map(load),
            truncated: load(&self.truncated),
            forwarded: load(&self.forwarded),
            slipped: load(&self.slipped),
        }
    }
}

/// A plain copy of [`QueryMetrics`]' counters; `+=` sums workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryCounts {
    pub queries: [u64; QueryType::COUNT],
    pub responses: [u64; Rcode::COUNT],
    pub dropped: [u64; DropReason::COUNT],
    pub truncated: u64,
    pub forwarded: u64,
    pub slipped: u64,
}

impl QueryCounts {
    /// Queries of this type.
    pub fn query(&self, qtype: QueryType) -> u64 {
        self.queries[qtype as usize]
    }

    /// Responses with this RCODE.
    pub fn response(&self, rcode: Rcode) -> u64 {
        self.responses[rcode as usize]
    }

    /// Drops for this reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize]
    }

    /// Queries of every type.
    pub fn total_queries(&self) -> u64 {
        self.queries.iter().fold(0, |a, &b| a.wrapping_add(b))
    }
}

impl std::ops::AddAssign for QueryCounts {
    fn add_assign(&mut self, other: QueryCounts) {
        fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x = x.wrapping_add(*y);
            }
        }
        add(&mut self.queries, &other.queries);
        add(&mut self.responses, &other.responses);
        add(&mut self.dropped, &other.dropped);
        self.truncated = self.truncated.wrapping_add(other.truncated);
        self.forwarded = self.forwarded.wrapping_add(other.forwarded);
        self.slipped = self.slipped.wrapping_add(other.slipped);
    }
}

/// Counters and gauges of the control plane. Not for the packet path.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    /// Node address -> counts by [`Outcome`].
    refresh: Mutex<BTreeMap<String, [u64; Outcome::COUNT]>>,
    probes: Mutex<BTreeMap<String, [u64; Outcome::COUNT]>>,
    tcp_connections: AtomicU64,
    forward_outstanding: AtomicU64,
    /// Why the latest `/localnodes` round failed, and what to check; None
    /// once a round succeeds. For `/readyz`'s reason text.
    refresh_problem: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent counts behind.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ControlMetrics {
    /// One `/localnodes` request to `node` (an address, e.g. `10.0.0.1:8000`),
    /// and how it ended.
    pub fn refresh(&self, node: impl fmt::Display, outcome: Outcome) {
        let mut map = lock(&self.refresh);
        map.entry(node.to_string()).or_default()[outcome as usize] += 1;
    }

    /// One health probe of `node`, and how it ended.
    pub fn health_probe(&self, node: impl fmt::Display, outcome: Outcome) {
        let mut map = lock(&self.probes);
        map.entry(node.to_string()).or_default()[outcome as usize] += 1;
    }

    /// Stops reporting `node` (e.g. once it left the cluster for good), so
    /// that the label set does not grow without bound.
    pub fn forget_node(&self, node: impl fmt::Display) {
        let node = node.to_string();
        lock(&self.refresh).remove(&node);
        lock(&self.probes).remove(&node);
    }

    /// The refresh counts of `node`, indexed by [`Outcome`].
    pub fn refresh_counts(&self, node: impl fmt::Display) -> [u64; Outcome::COUNT] {
        lock(&self.refresh)
            .get(&node.to_string())
            .copied()
            .unwrap_or_default()
    }

    /// Sets the gauge of open TCP connections.
    pub fn set_tcp_connections(&self, n: u64) {
        self.tcp_connections.store(n, Ordering::Relaxed);
    }

    /// Counts a TCP connection opened (several listeners share the gauge).
    pub fn tcp_connection_opened(&self) {
        self.tcp_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a TCP connection closed.
    pub fn tcp_connection_closed(&self) {
        self.tcp_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records why the latest `/localnodes` round failed (None: it did not).
    pub fn set_refresh_problem(&self, problem: Option<String>) {
        *lock(&self.refresh_problem) = problem;
    }

    /// Why the latest `/localnodes` round failed, if it did.
    pub fn refresh_problem(&self) -> Option<String> {
        lock(&self.refresh_problem).clone()
    }

    /// Sets the gauge of forwarded queries awaiting an answer.
    pub fn set_forward_outstanding(&self, n: u64) {
        self.forward_outstanding.store(n, Ordering::Relaxed);
    }
}

/// What the metrics need to know about the current snapshot, gathered at
/// scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotFacts {
    /// Nodes served that pass their health checks, per served name
    /// (`alternator_dns_live_nodes{name}`).
    pub live_nodes: Vec<(String, usize)>,
    /// Nodes served in fail open, per served name
    /// (`alternator_dns_fail_open_nodes{name}`, and
    /// `alternator_dns_fail_open{name}` 1 when above 0).
    pub fail_open_nodes: Vec<(String, usize)>,
    /// Whether seeds no `/localnodes` answer confirmed are served
    /// (`alternator_dns_unverified_seeds`).
    pub unverified_seeds: bool,
    /// The snapshot's generation (`alternator_dns_snapshot_generation`).
    pub generation: u64,
    /// Time since the snapshot was published; `None` omits
    /// `alternator_dns_snapshot_age_seconds` (e.g. while only seeds are known).
    pub age: Option<Duration>,
}

/// Where [`Metrics::render`] gets the [`SnapshotFacts`]; any
/// `Fn() -> SnapshotFacts + Send + Sync` closure is one.
pub trait SnapshotSource: Send + Sync {
    fn facts(&self) -> SnapshotFacts;
}

impl<F: Fn() -> SnapshotFacts + Send + Sync> SnapshotSource for F {
    fn facts(&self) -> SnapshotFacts {
        self()
    }
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
}

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

    /// The UDP workers' counters summed.
    pub fn udp_totals(&self) -> QueryCounts {
        let mut sum = QueryCounts::default();
        for w in &self.udp {
            sum += w.counts();
        }
        sum
    }

    /// Everything, in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = Text(String::with_capacity(8192));
        let udp_each: Vec<QueryCounts> = self.udp.iter().map(|w| w.counts()).collect();
        let mut udp = QueryCounts::default();
        for c in &udp_each {
            udp += *c;
        }
        let tcp = self.tcp.counts();
        let by_transport = [("udp", &udp), ("tcp", &tcp)];

        out.family(
            BUILD_INFO,
            "gauge",
            "Version and UDP I/O backend; always 1.",
        );
        let backend = lock(&self.io_backend).clone();
        out.sample(
            BUILD_INFO,
            &[("version", self.version), ("io_backend", &backend)],
            1,
        );

        out.family(
            START_TIME_SECONDS,
            "gauge",
            "Start time of the process since the Unix epoch in seconds.",
        );
        let start = self
            .start_time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        out.sample(START_TIME_SECONDS, &[], Seconds(start));

        out.family(
            QUERIES_TOTAL,
            "counter",
            "DNS queries received, by transport and query type.",
        );
        for (transport, counts) in by_transport {
            for &q in QueryType::ALL {
                out.sample(
                    QUERIES_TOTAL,
                    &[("transport", transport), ("qtype", q.label())],
                    counts.query(q),
                );
            }
        }

        out.family(
            WORKER_QUERIES_TOTAL,
            "counter",
            "DNS queries received over UDP, by worker thread.",
        );
        for (i, counts) in udp_each.iter().enumerate() {
            out.sample(
                WORKER_QUERIES_TOTAL,
                &[("worker", &i.to_string())],
                counts.total_queries(),
            );
        }

        out.family(
            RESPONSES_TOTAL,
            "counter",
            "DNS responses sent, by transport and RCODE.",
        );
        for (transport, counts) in by_transport {
            for &r in Rcode::ALL {
                out.sample(
                    RESPONSES_TOTAL,
                    &[("transport", transport), ("rcode", r.label())],
                    counts.response(r),
                );
            }
        }

        out.family(
            DROPPED_PACKETS_TOTAL,
            "counter",
            "Packets dropped without a response, by reason.",
        );
        for &d in DropReason::ALL {
            out.sample(
                DROPPED_PACKETS_TOTAL,
                &[("reason", d.label())],
                udp.dropped(d).wrapping_add(tcp.dropped(d)),
            );
        }

        let per_transport = [
            (
                TRUNCATED_RESPONSES_TOTAL,
                "Responses sent truncated (TC=1) because they did not fit, by transport.",
                udp.truncated,
                tcp.truncated,
            ),
            (
                FORWARDED_QUERIES_TOTAL,
                "Queries for names outside the zone handed to the forwarder, by transport.",
                udp.forwarded,
                tcp.forwarded,
            ),
            (
                RATE_LIMIT_SLIPS_TOTAL,
                "Responses over the rate limit sent truncated (slipped), by transport.",
                udp.slipped,
                tcp.slipped,
            ),
        ];
        for (name, help, udp_value, tcp_value) in per_transport {
            out.family(name, "counter", help);
            out.sample(name, &[("transport", "udp")], udp_value);
            out.sample(name, &[("transport", "tcp")], tcp_value);
        }

        let per_node = [
            (
                REFRESH_REQUESTS_TOTAL,
                "Requests of GET /localnodes, by node and result.",
                &self.control.refresh,
            ),
            (
                HEALTH_PROBES_TOTAL,
                "Health probes of Alternator nodes, by node and result.",
                &self.control.probes,
            ),
        ];
        for (name, help, map) in per_node {
            out.family(name, "counter", help);
            for (node, counts) in lock(map).iter() {
                for &o in Outcome::ALL {
                    out.sample(
                        name,
                        &[("node", node), ("result", o.label())],
                        counts[o as usize],
                    );
                }
            }
        }

        out.family(TCP_CONNECTIONS, "gauge", "TCP connections open.");
        out.sample(
            TCP_CONNECTIONS,
            &[],
            self.control.tcp_connections.load(Ordering::Relaxed),
        );
        out.family(
            FORWARD_OUTSTANDING,
            "gauge",
            "Forwarded queries awaiting an upstream answer.",
        );
        out.sample(
            FORWARD_OUTSTANDING,
            &[],
            self.control.forward_outstanding.load(Ordering::Relaxed),
        );

        if let Some(source) = self.snapshot.get() {
            let facts = source.facts();
            out.family(
                LIVE_NODES,
                "gauge",
                "Nodes served that pass their health checks, by served name.",
            );
            for (name, n) in &facts.live_nodes {
                out.sample(LIVE_NODES, &[("name", name)], *n);
            }
            out.family(
                FAIL_OPEN_NODES,
                "gauge",
                "Nodes served although they fail their health checks (fail open), by served name.",
            );
            for (name, n) in &facts.fail_open_nodes {
                out.sample(FAIL_OPEN_NODES, &[("name", name)], *n);
            }
            out.family(
                FAIL_OPEN,
                "gauge",
                "1 while the name serves nodes that fail their health checks (fail open).",
            );
            for (name, n) in &facts.fail_open_nodes {
                out.sample(FAIL_OPEN, &[("name", name)], u8::from(*n > 0));
            }
            out.family(
                UNVERIFIED_SEEDS,
                "gauge",
                "1 while seeds are served that no /localnodes answer has confirmed.",
            );
            out.sample(UNVERIFIED_SEEDS, &[], u8::from(facts.unverified_seeds));
            out.family(
                SNAPSHOT_GENERATION,
                "gauge",
                "Generation of the current node snapshot.",
            );
            out.sample(SNAPSHOT_GENERATION, &[], facts.generation);
            if let Some(age) = facts.age {
                out.family(
                    SNAPSHOT_AGE_SECONDS,
                    "gauge",
                    "Seconds since the current node snapshot was published.",
                );
                out.sample(SNAPSHOT_AGE_SECONDS, &[], Seconds(age));
            }
        }
        out.0
    }
}

/// A duration written as seconds with millisecond precision.
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0.as_secs(), self.0.subsec_millis())
    }
}

/// The exposition text being built.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // HELP text escapes only backslash and newline; ours have neither.
        debug_assert!(!help.contains(['\\', '\n']));
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(key);
                self.0.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.0.push_str("\\\\"),
                        '"' => self.0.push_str("\\\""),
                        '\n' => self.0.push_str("\\n"),
                        c => self.0.push(c),
                    }
                }
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

#[cfg(test)]
mod tests;
