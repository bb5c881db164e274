//! Live Alternator nodes: the immutable snapshots the data plane reads, and
//! the background work that keeps them current: the refresher polling
//! `GET /localnodes`, the health probes of each listed node, the tracker
//! that combines both (a state machine without I/O), and the driver that
//! performs what the tracker decides and publishes its snapshots.

pub mod client;
pub mod degraded;
pub mod driver;
pub mod health;
pub mod http;
pub mod membership;
pub mod probe;
pub mod refresher;
pub mod snapshot;
pub mod tracker;
pub mod view;

pub use snapshot::{Basis, NodeSet, NodeSource, SharedSnapshot, Snapshot};

#[cfg(test)]
mod client_sim_tests;
