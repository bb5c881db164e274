//! Zone-local answers in the tracker: which nodes answer each location's
//! clients (its rack's live nodes, else its datacenter's, else none and
//! they get their name's), recomputed with every snapshot, each change
//! logged once and each fallback counted.

use std::collections::BTreeSet;
use std::net::IpAddr;

use tracing::{info, warn};

use super::Snapshot;
use crate::metrics::Metrics;
use crate::nodes::membership::{LocationChoice, Membership, Selector};
use crate::nodes::view::LocationView;

/// The locations whose nodes the tracker keeps (none unless some name
/// places its clients), in the order of their indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocationTargets {
    /// Each location's rack (or datacenter, for a location without rack).
    pub selectors: Vec<Selector>,
    /// A rack, then a datacenter, with fewer live nodes counts as empty.
    pub min_nodes: usize,
}

/// The locations, and how each one's nodes were last chosen.
#[derive(Debug)]
pub(super) struct Locations {
    targets: LocationTargets,
    /// The latest choice of each location other than pending.
    last: Vec<Option<LocationChoice>>,
}

impl Locations {
    pub(super) fn new(targets: LocationTargets) -> Locations {
        let last = vec![None; targets.selectors.len()];
        Locations { targets, last }
    }

    /// How many locations there are.
    pub(super) fn len(&self) -> usize {
        self.targets.selectors.len()
    }

    /// The location with index `index`.
    pub(super) fn selector(&self, index: usize) -> &Selector {
        &self.targets.selectors[index]
    }

    /// Whose nodes location `index` serves, chosen this way now: its rack's
    /// or its datacenter's; while pending, those of its last choice (its
    /// own, before any). A name answers the location's clients from them
    /// only when they lie within its own nodes.
    pub(super) fn serving<'a>(&'a self, index: usize, now: &'a LocationChoice) -> &'a Selector {
        match (now, &self.last[index]) {
            (LocationChoice::Own(selector), _) => selector,
            (_, Some(LocationChoice::Own(selector))) => selector,
            _ => &self.targets.selectors[index],
        }
    }

    /// Takes over how each location that `before` also had was last
    /// chosen (after a reload), so that nothing is logged or counted again.
    pub(super) fn carry(&mut self, before: &Locations) {
        for (j, selector) in self.targets.selectors.iter().enumerate() {
            let old = (before.targets.selectors.iter()).position(|s| s == selector);
            self.last[j] = old.and_then(|k| before.last[k].clone());
        }
    }

    /// The lists to poll for them: each location's own, and its
    /// datacenter's.
    pub(super) fn selectors(&self) -> impl Iterator<Item = Selector> + '_ {
        self.targets.selectors.iter().flat_map(|s| {
            let dc = Selector {
                dc: s.dc.clone(),
                rack: None,
            };
            [s.clone(), dc]
        })
    }

    /// Each location's nodes, and how they were chosen. A location whose
    /// nodes are not known yet keeps what it serves in `current`.
    pub(super) fn choose(
        &self,
        membership: &Membership,
        current: &Snapshot,
    ) -> (Vec<Vec<IpAddr>>, Vec<LocationChoice>) {
        let min_nodes = self.targets.min_nodes;
        let served = |j: usize| -> BTreeSet<IpAddr> {
            match j < current.location_count() {
                true => current.location_set(j).iter().collect(),
                false => BTreeSet::new(),
            }
        };
        (self.targets.selectors.iter().enumerate())
            .map(|(j, selector)| {
                let served_now = served(j);
                let (nodes, choice) = membership.serve_location(selector, min_nodes, &served_now);
                // Pending: keep what is served, less what is known to fail.
                let nodes = match choice {
                    LocationChoice::Pending => (served_now.iter().copied())
                        .filter(|ip| membership.usable(*ip, &served_now))
                        .collect(),
                    _ => nodes,
                };
                (nodes, choice)
            })
            .unzip()
    }

    /// Each location as `/nodes` shows it, with `snapshot` the one served.
    pub(super) fn view(&self, snapshot: &Snapshot) -> Vec<LocationView> {
        (self.targets.selectors.iter().zip(&self.last).enumerate())
            .map(|(j, (selector, last))| {
                let from = match last {
                    None | Some(LocationChoice::Pending) => "pending",
                    Some(LocationChoice::Own(s)) if s.rack.is_some() => "rack",
                    Some(LocationChoice::Own(_)) => "dc",
                    Some(LocationChoice::Name) => "name",
                };
                let served = match j < snapshot.location_count() {
                    true => snapshot
                        .location_set(j)
                        .iter()
                        .map(|ip| ip.to_string())
                        .collect(),
                    false => Vec::new(),
                };
                LocationView {
                    dc: selector.dc.clone().unwrap_or_default(),
                    rack: selector.rack.clone(),
                    served,
                    from: from.to_string(),
                }
            })
            .collect()
    }

    /// Logs each location whose way of choosing changed, and counts each
    /// fallback, with `snapshot` the one now served.
    pub(super) fn note(
        &mut self,
        choices: &[LocationChoice],
        snapshot: &Snapshot,
        metrics: &Metrics,
    ) {
        for (j, choice) in choices.iter().enumerate() {
            if *choice == LocationChoice::Pending || self.last[j].as_ref() == Some(choice) {
                continue;
            }
            let first = self.last[j].is_none();
            self.last[j] = Some(choice.clone());
            let selector = &self.targets.selectors[j];
            let location = place(selector);
            let nodes = snapshot.location_set(j).len();
            let own = *choice == LocationChoice::Own(selector.clone());
            if own {
                info!(
                    %location,
                    nodes,
                    "{} clients of this location from its own nodes",
                    if first { "answering" } else { "answering again" }
                );
                continue;
            }
            let to = match choice {
                LocationChoice::Own(_) => "dc",
                _ => "name",
            };
            let (dc, rack) = (selector.dc.as_deref(), selector.rack.as_deref());
            let control = metrics.control();
            control.location_fallback(dc.unwrap_or_default(), rack.unwrap_or_default(), to);
            let min_nodes = self.targets.min_nodes;
            match choice {
                LocationChoice::Own(dc) => warn!(
                    %location,
                    min_nodes,
                    serving = %place(dc),
                    nodes,
                    "the location's rack has fewer live nodes than --affinity-min-nodes; \
                     answering its clients from its datacenter"
                ),
                _ => warn!(
                    %location,
                    min_nodes,
                    "the location's rack and datacenter have fewer live nodes than \
                     --affinity-min-nodes; its clients get their name's usual nodes"
                ),
            }
        }
    }
}

/// A location as `DC/RACK`, or `DC`, as `--location` writes it.
fn place(selector: &Selector) -> String {
    let dc = selector.dc.as_deref().unwrap_or_default();
    match &selector.rack {
        Some(rack) => format!("{dc}/{rack}"),
        None => dc.to_string(),
    }
}
