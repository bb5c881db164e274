//! Immutable pictures of what the data plane serves.
//!
//! The control plane builds a new [`Snapshot`] whenever membership (or, later,
//! configuration) changes and publishes it through [`SharedSnapshot`]. Workers
//! read it through an `arc_swap::Cache`, which costs one atomic load per
//! packet and never blocks, so a swap can never stall the answer path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::dns::Zone;

/// Where the node list of a snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSource {
    /// No `/localnodes` answer yet: the configured seeds are served.
    Seeds,
    /// The latest good `/localnodes` answer.
    Cluster,
}

/// Everything one answer needs: the zone and the live nodes, by family.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every published snapshot.
    pub generation: u64,
    pub zone: Arc<Zone>,
    pub source: NodeSource,
    pub v4: Box<[Ipv4Addr]>,
    pub v6: Box<[Ipv6Addr]>,
}

impl Snapshot {
    /// Builds a snapshot from `nodes`, split by address family; order is kept.
    pub fn new(generation: u64, zone: Arc<Zone>, source: NodeSource, nodes: &[IpAddr]) -> Self {
        let v4 = nodes
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        let v6 = nodes
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(v6) => Some(*v6),
                IpAddr::V4(_) => None,
            })
            .collect();
        Snapshot {
            generation,
            zone,
            source,
            v4,
            v6,
        }
    }

    /// Every served address, IPv4 first.
    pub fn nodes(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.v4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.v6.iter().map(|a| IpAddr::V6(*a)))
    }

    pub fn node_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// The published snapshot, shared by the control plane (writer) and workers (readers).
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;
