//! Live Alternator nodes: the immutable snapshots the data plane reads, and
//! the background refresher that keeps them current from `GET /localnodes`.

pub mod refresher;
pub mod snapshot;

pub use snapshot::{NodeSource, SharedSnapshot, Snapshot};
