//! The operator's view ([`NodesView`]), built from the tracker's state on
//! request; and the record of each node's latest probe it shows.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Basis, Choice, ProbeResult, Selector, Tracker};
use crate::nodes::membership::Health;
use crate::nodes::view::{LastProbe, NameView, NodeView, NodesView};

/// A node's latest probe, as the tracker heard it.
#[derive(Debug, Clone)]
pub(super) struct ProbeRecord {
    ok: bool,
    took: Duration,
    error: Option<String>,
    /// When the result arrived.
    at: Instant,
}

impl ProbeRecord {
    pub(super) fn new(result: &ProbeResult, started: Instant, now: Instant) -> ProbeRecord {
        let error = match result {
            ProbeResult::Passed => None,
            ProbeResult::Failed { detail, .. } => Some(detail.clone()),
        };
        ProbeRecord {
            ok: error.is_none(),
            took: now.saturating_duration_since(started),
            error,
            at: now,
        }
    }
}

impl Tracker {
    /// Every node known (listed, served or excluded) and every served name,
    /// as of `now`.
    pub fn view(&self, now: Instant) -> NodesView {
        let listed = self.membership.all_listed();
        let mut known: BTreeSet<IpAddr> = listed.clone();
        known.extend(self.current.nodes());
        known.extend(self.membership.excluded().iter().copied());
        let nodes = known
            .into_iter()
            .map(|node| self.node_view(node, listed.contains(&node), now))
            .collect();
        let names = (0..self.current.zone.name_count())
            .map(|i| self.name_view(i))
            .collect();
        NodesView {
            generation: self.current.generation,
            nodes,
            names,
            locations: self.locations.view(&self.current),
        }
    }

    fn node_view(&self, node: IpAddr, listed: bool, now: Instant) -> NodeView {
        let current = &self.current;
        let names: Vec<String> = (0..current.zone.name_count())
            .filter(|&i| current.set_nodes(i).any(|ip| ip == node))
            .map(|i| name_without_dot(current.zone.name_text(i)))
            .collect();
        let healthy = match self.membership.health(node) {
            _ if !self.health.enabled => None,
            None | Some(Health::Unknown) => None,
            Some(health) => Some(health.is_up()),
        };
        let last_probe = self.last_probes.get(&node).map(|p| LastProbe {
            ok: p.ok,
            ms: p.took.as_secs_f64() * 1000.0,
            error: p.error.clone(),
            age_s: now.saturating_duration_since(p.at).as_secs_f64(),
        });
        let since = self
            .membership
            .health_since(node)
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        NodeView {
            address: node.to_string(),
            listed,
            healthy,
            served: !names.is_empty(),
            excluded: self.membership.is_excluded(node),
            names,
            last_probe,
            since,
        }
    }

    fn name_view(&self, i: usize) -> NameView {
        let own = self.names.get(i).map(|rule| rule.selector.clone());
        let serving = match self.last_choice.get(i) {
            Some(Choice::Healthy(s) | Choice::FailOpen(s)) => Some(s),
            _ => None,
        };
        NameView {
            name: name_without_dot(self.current.zone.name_text(i)),
            dc: own.as_ref().and_then(|s| s.dc.clone()),
            rack: own.as_ref().and_then(|s| s.rack.clone()),
            served: self.current.set_nodes(i).map(|ip| ip.to_string()).collect(),
            fallback: fallback(own.as_ref(), serving).map(String::from),
            fail_open: self.current.basis(i) == Basis::FailOpen,
        }
    }
}

/// Which fallback a name whose own list is `own` serves, when it serves
/// `serving`: its datacenter's list, or the default one.
fn fallback(own: Option<&Selector>, serving: Option<&Selector>) -> Option<&'static str> {
    let (own, serving) = (own?, serving?);
    if serving == own {
        None
    } else if *serving == Selector::default() {
        Some("default")
    } else {
        Some("dc")
    }
}

/// A served name as operators write it, without the root's dot.
pub(super) fn name_without_dot(mut name: String) -> String {
    if name.len() > 1 && name.ends_with('.') {
        name.pop();
    }
    name
}
