//! What the control plane reports (refresh and probe outcomes per node, how
//! long probes took, node removals and how long each took, TCP and
//! forwarding gauges) and what the scraper asks of the current snapshot and
//! of readiness: a few writes a second, so a `Mutex`ed map is cheap enough.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{lock, Outcome, RemovalReason};

/// Counters and gauges of the control plane. Not for the packet path.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    /// Node address -> counts by [`Outcome`].
    pub(super) refresh: Mutex<BTreeMap<String, [u64; Outcome::COUNT]>>,
    pub(super) probes: Mutex<BTreeMap<String, [u64; Outcome::COUNT]>>,
    /// How long health probes took, by [`Outcome`] (all nodes together).
    pub(super) probe_times: Mutex<[Histogram; Outcome::COUNT]>,
    /// Nodes taken out, by [`RemovalReason`].
    pub(super) removals: Mutex<[Removals; RemovalReason::COUNT]>,
    /// A location (datacenter, rack: empty for none) and where its clients
    /// went -> times.
    pub(super) location_fallbacks: Mutex<BTreeMap<(String, String, &'static str), u64>>,
    pub(super) tcp_connections: AtomicU64,
    pub(super) forward_outstanding: AtomicU64,
    /// Why the latest `/localnodes` round failed, and what to check; None
    /// once a round succeeds. For `/readyz`'s reason text.
    refresh_problem: Mutex<Option<String>>,
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

    /// How long one health probe took, from its start to its result (a
    /// timed-out one takes the whole timeout). No allocation: the prober
    /// calls it for every probe.
    pub fn health_probe_took(&self, outcome: Outcome, took: Duration) {
        lock(&self.probe_times)[outcome as usize].observe(took);
    }

    /// Health probes timed so far with `outcome`.
    pub fn health_probes_timed(&self, outcome: Outcome) -> u64 {
        lock(&self.probe_times)[outcome as usize].count
    }

    /// A node taken out of the answers, and the time from its first failing
    /// probe to the snapshot without it (None when no probe was involved).
    pub fn node_removed(&self, reason: RemovalReason, took: Option<Duration>) {
        let mut removals = lock(&self.removals);
        let stats = &mut removals[reason as usize];
        stats.count += 1;
        if let Some(took) = took {
            stats.took.observe(took);
        }
    }

    /// A location's clients are answered from elsewhere from now on: its
    /// datacenter (`to` "dc") or their name's usual nodes ("name").
    pub fn location_fallback(&self, dc: &str, rack: &str, to: &'static str) {
        let mut map = lock(&self.location_fallbacks);
        *map.entry((dc.to_string(), rack.to_string(), to))
            .or_default() += 1;
    }

    /// Nodes taken out for `reason` so far.
    pub fn removals(&self, reason: RemovalReason) -> u64 {
        lock(&self.removals)[reason as usize].count
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

/// The removals of one reason.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Removals {
    pub(super) count: u64,
    pub(super) took: Histogram,
}

/// Upper bounds, in seconds, of the buckets of the histograms (removal
/// times, probe times): from a probe on a local network or a closed
/// connection noticed at once to several timed-out probes.
pub(super) const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus histogram over [`BUCKETS`] (counts per bucket, not
/// cumulative; the exposition adds them up).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Histogram {
    pub(super) buckets: [u64; BUCKETS.len()],
    pub(super) count: u64,
    pub(super) sum: f64,
}

impl Histogram {
    fn observe(&mut self, value: Duration) {
        let secs = value.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
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

/// Where [`Metrics::render`](super::Metrics::render) gets the [`SnapshotFacts`]; any
/// `Fn() -> SnapshotFacts + Send + Sync` closure is one.
pub trait SnapshotSource: Send + Sync {
    fn facts(&self) -> SnapshotFacts;
}

impl<F: Fn() -> SnapshotFacts + Send + Sync> SnapshotSource for F {
    fn facts(&self) -> SnapshotFacts {
        self()
    }
}

/// What the metrics report about readiness, gathered at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadyFacts {
    /// Every UDP worker runs its loop and none has failed
    /// (`alternator_dns_workers_up`).
    pub workers_up: bool,
    /// `/readyz` answers 200 (`alternator_dns_ready`).
    pub ready: bool,
}
