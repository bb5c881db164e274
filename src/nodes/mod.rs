//! Live Alternator nodes: the immutable snapshots the data plane reads, and
//! the background refresher that keeps them current from `GET /localnodes`.

pub mod client;
pub mod membership;
pub mod probe;
pub mod refresher;
pub mod snapshot;
pub mod tracker;

pub use snapshot::{NodeSet, NodeSource, SharedSnapshot, Snapshot};
