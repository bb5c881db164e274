//! The operator's view of membership: every node the tracker knows, what its
//! probes say and which names serve it, and what each name serves. Served
//! as JSON at `/nodes` on the metrics listener and printed by
//! `alternator-dns status`.
//!
//! The tracker builds it on request ([`Tracker::view`](super::tracker::Tracker::view)),
//! through the driver, so that the one writer of membership is also the
//! one reader of its state: nothing is shared or locked, and nothing is
//! built between requests.

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// What `/nodes` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodesView {
    /// The generation of the snapshot served.
    pub generation: u64,
    pub nodes: Vec<NodeView>,
    pub names: Vec<NameView>,
    /// With `--affinity`: each location and the nodes its clients get.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<LocationView>,
}

/// One `--location` (datacenter, and rack if given), for names with
/// affinity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationView {
    pub dc: String,
    pub rack: Option<String>,
    /// The nodes its clients get; empty when they get their name's.
    pub served: Vec<String>,
    /// Where those come from: `rack` (its rack's), `dc` (its datacenter's:
    /// a location without rack, or a rack with too few live nodes), `name`
    /// (too few live nodes in both: the name's usual nodes), or `pending`
    /// (its nodes not known yet).
    pub from: String,
}

/// One node the tracker knows: listed, served, or excluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub address: String,
    /// Some `/localnodes` list names it.
    pub listed: bool,
    /// What its probes say: true passing, false failing (or held back as
    /// flapping); null when not probed yet, or probing is off.
    pub healthy: Option<bool>,
    /// Some name serves it now.
    pub served: bool,
    /// The configuration excludes it: never served.
    pub excluded: bool,
    /// The names that serve it.
    pub names: Vec<String>,
    pub last_probe: Option<LastProbe>,
    /// Seconds in its current health state.
    pub since: f64,
}

/// A node's latest probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastProbe {
    pub ok: bool,
    /// How long it took, in milliseconds.
    pub ms: f64,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds since it ended.
    pub age_s: f64,
}

/// One served name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NameView {
    pub name: String,
    pub dc: Option<String>,
    pub rack: Option<String>,
    /// The addresses it answers with.
    pub served: Vec<String>,
    /// Which list it serves when not its own: `dc` (its rack's
    /// datacenter) or `default` (the local datacenter's list); null when
    /// its own.
    pub fallback: Option<String>,
    /// It serves nodes that all fail their probes (fail open).
    pub fail_open: bool,
}

/// How the metrics endpoint asks the driver for a view.
pub type ViewRequests = mpsc::Sender<oneshot::Sender<NodesView>>;
