//! Immutable pictures of what the data plane serves.
//!
//! The control plane builds a new [`Snapshot`] whenever membership (or, later,
//! configuration) changes and publishes it through [`SharedSnapshot`]. Workers
//! read it through an `arc_swap::Cache`, which costs one atomic load per
//! packet and never blocks, so a swap can never stall the answer path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::dns::answer::WireRecords;
use crate::dns::ecs::ClientSubnet;
use crate::dns::Zone;

/// Where the node list of a snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSource {
    /// No `/localnodes` answer yet: the configured seeds are served.
    Seeds,
    /// The latest good `/localnodes` answer.
    Cluster,
}

/// How the nodes of one served name were chosen: what the degraded-state
/// gauges and `/readyz` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Basis {
    /// The configured seeds, which no `/localnodes` answer has confirmed.
    #[default]
    Seeds,
    /// Listed by `/localnodes` and passing their health checks (or not
    /// probed: health checks off, or kept until their first probe).
    Listed,
    /// Listed, but every candidate fails its health checks: served anyway
    /// (fail open).
    FailOpen,
}

/// The addresses served for one name, by family.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeSet {
    pub v4: Box<[Ipv4Addr]>,
    pub v6: Box<[Ipv6Addr]>,
}

impl NodeSet {
    /// Splits `nodes` by family; order is kept.
    pub fn new(nodes: &[IpAddr]) -> NodeSet {
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
        NodeSet { v4, v6 }
    }

    /// Every address, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.v4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.v6.iter().map(|a| IpAddr::V6(*a)))
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything one answer needs: the zone and, for each of its served names,
/// the nodes to answer with; with `--affinity`, each location's nodes too.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every published snapshot.
    pub generation: u64,
    pub zone: Arc<Zone>,
    pub source: NodeSource,
    /// One set per served name, in the zone's order (0 is the apex), then
    /// one per location, in the order of the locations' indexes.
    sets: Box<[NodeSet]>,
    /// The answer records of each set in wire form, for the answer path's
    /// fast path: built here, once per snapshot, instead of per query.
    records: Box<[WireRecords]>,
    /// How each name's set was chosen, in the zone's order.
    bases: Box<[Basis]>,
    /// Served names in the zone (the sets before the locations').
    names: usize,
    /// For name `n` and location `l`, at `n * locations + l`: the set that
    /// answers the location's clients, their location's own or the name's.
    routes: Box<[u32]>,
    /// When this snapshot was built, for the metrics' snapshot age.
    pub built: std::time::Instant,
    /// What [`Snapshot::set`] returns for an index it has no set for.
    empty: NodeSet,
}

impl Snapshot {
    /// A snapshot serving `nodes` for every name of the zone.
    pub fn new(generation: u64, zone: Arc<Zone>, source: NodeSource, nodes: &[IpAddr]) -> Self {
        let sets = vec![NodeSet::new(nodes); zone.name_count()];
        Snapshot::from_sets(generation, zone, source, sets)
    }

    /// A snapshot with each name's own nodes: `sets[i]` for name `i`; names
    /// without an entry get no nodes.
    pub fn with_sets(
        generation: u64,
        zone: Arc<Zone>,
        source: NodeSource,
        sets: &[Vec<IpAddr>],
    ) -> Self {
        let sets = (0..zone.name_count())
            .map(|i| {
                sets.get(i)
                    .map_or_else(NodeSet::default, |n| NodeSet::new(n))
            })
            .collect();
        Snapshot::from_sets(generation, zone, source, sets)
    }

    fn from_sets(generation: u64, zone: Arc<Zone>, source: NodeSource, sets: Vec<NodeSet>) -> Self {
        let records = sets
            .iter()
            .map(|set| WireRecords::new(set, zone.ttl))
            .collect();
        let basis = match source {
            NodeSource::Seeds => Basis::Seeds,
            NodeSource::Cluster => Basis::Listed,
        };
        Snapshot {
            generation,
            zone,
            source,
            bases: vec![basis; sets.len()].into_boxed_slice(),
            names: sets.len(),
            sets: sets.into_boxed_slice(),
            records,
            routes: Box::new([]),
            built: std::time::Instant::now(),
            empty: NodeSet::default(),
        }
    }

    /// Adds the locations' sets (`sets[l]` for location `l`) and says which
    /// names answer which locations' clients from them: name `n` answers
    /// location `l`'s clients from `sets[l]` when `serves(n, l)` and that set
    /// is not empty, else from its own set.
    pub fn with_locations(
        mut self,
        sets: &[Vec<IpAddr>],
        serves: impl Fn(usize, usize) -> bool,
    ) -> Self {
        let (names, ttl) = (self.names, self.zone.ttl);
        let mut all = std::mem::take(&mut self.sets).into_vec();
        let mut records = std::mem::take(&mut self.records).into_vec();
        all.truncate(names);
        records.truncate(names);
        for nodes in sets {
            let set = NodeSet::new(nodes);
            records.push(WireRecords::new(&set, ttl));
            all.push(set);
        }
        self.routes = (0..names * sets.len())
            .map(|i| {
                let (name, location) = (i / sets.len(), i % sets.len());
                let own = serves(name, location) && !sets[location].is_empty();
                // Both below the set count, itself far below 2^32.
                if own {
                    (names + location) as u32
                } else {
                    name as u32
                }
            })
            .collect();
        self.sets = all.into_boxed_slice();
        self.records = records.into_boxed_slice();
        self
    }

    /// The set that answers a query for served name `index` asking for
    /// IPv6 or IPv4 addresses (`v6`), from `source` or for `subnet` (ECS),
    /// and the scope of that answer for ECS: the name's own set and scope 0
    /// unless the name places its clients and the client is placed in a
    /// location with nodes of that family.
    #[inline]
    pub(crate) fn placed(
        &self,
        index: usize,
        source: IpAddr,
        subnet: Option<&ClientSubnet>,
        v6: bool,
    ) -> (usize, u8) {
        let placement = self.zone.placement();
        if !placement.affinity(index) {
            return (index, 0);
        }
        let (location, scope) = match subnet {
            Some(subnet) => {
                let placed = placement.locate_subnet(subnet);
                (placed.location, placed.scope)
            }
            None => (placement.locate(source), 0),
        };
        let locations = self.sets.len() - self.names;
        let route = location
            .filter(|l| usize::from(*l) < locations)
            .and_then(|l| self.routes.get(index * locations + usize::from(l)));
        let set = match route {
            Some(&set) => set as usize,
            None => return (index, scope),
        };
        let nodes = &self.sets[set];
        let has_family = if v6 {
            !nodes.v6.is_empty()
        } else {
            !nodes.v4.is_empty()
        };
        (if has_family { set } else { index }, scope)
    }

    /// The nodes location `location` serves its clients (empty: they get
    /// their name's own nodes).
    pub fn location_set(&self, location: usize) -> &NodeSet {
        self.set(self.names + location)
    }

    /// Number of locations with a set.
    pub fn location_count(&self) -> usize {
        self.sets.len() - self.names
    }

    /// Says how each name's set was chosen: `bases[i]` for name `i`. Names
    /// without an entry keep what the source implies (seeds or listed).
    pub fn with_bases(mut self, bases: &[Basis]) -> Self {
        for (kept, given) in self.bases.iter_mut().zip(bases) {
            *kept = *given;
        }
        self
    }

    /// How the nodes of served name `index` were chosen.
    pub fn basis(&self, index: usize) -> Basis {
        self.bases.get(index).copied().unwrap_or_default()
    }

    /// Every name's [`Basis`], in the zone's order.
    pub fn bases(&self) -> &[Basis] {
        &self.bases
    }

    /// The nodes of served name `index` (or, past the names, of a location:
    /// see [`Snapshot::placed`]); empty for an index out of range.
    pub fn set(&self, index: usize) -> &NodeSet {
        self.sets.get(index).unwrap_or(&self.empty)
    }

    /// The wire-form answer records of served name `index`, in the order of
    /// [`Snapshot::set`]; `None` for an index out of range.
    pub(crate) fn records(&self, index: usize) -> Option<&WireRecords> {
        self.records.get(index)
    }

    /// Addresses of served name `index`, IPv4 first.
    pub fn set_nodes(&self, index: usize) -> impl Iterator<Item = IpAddr> + '_ {
        self.set(index).iter()
    }

    /// Addresses served for the apex, IPv4 first.
    pub fn nodes(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.set_nodes(0)
    }

    /// Number of addresses served for the apex.
    pub fn node_count(&self) -> usize {
        self.set(0).len()
    }
}

/// The published snapshot, shared by the control plane (writer) and workers (readers).
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;
