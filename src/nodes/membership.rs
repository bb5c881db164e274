//! Which nodes each served name gets: `/localnodes` lists combined with health
//! probes and the fallback rules.
//!
//! This is pure bookkeeping, kept apart from the tasks that feed it so the
//! rules can be tested on their own: a node is served when its list names it
//! AND its latest probes pass; a rack with nothing to serve falls back to its
//! datacenter, a datacenter to the default list; and when every listed node
//! fails its probes the listed nodes are served anyway (fail open), because
//! serving possibly-dead nodes beats serving none.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Instant;

pub use super::health::Health;
use super::health::{FailureKind, HealthSettings, NodeHealth};

/// Which nodes a `/localnodes` request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    /// `?dc=`; None means the queried node's own datacenter.
    pub dc: Option<String>,
    /// `?rack=`; None means every rack.
    pub rack: Option<String>,
}

impl Selector {
    /// The path and query of the `/localnodes` request.
    pub fn path(&self) -> String {
        let mut path = String::from("/localnodes");
        let mut sep = '?';
        for (key, value) in [("dc", &self.dc), ("rack", &self.rack)] {
            if let Some(value) = value {
                path.push(sep);
                path.push_str(key);
                path.push('=');
                path.push_str(&percent_encode(value));
                sep = '&';
            }
        }
        path
    }

    /// This selector, then what it falls back to: rack -> its datacenter ->
    /// the default list.
    pub fn chain(&self, fallback: bool) -> Vec<Selector> {
        let mut chain = vec![self.clone()];
        if fallback {
            if self.rack.is_some() && self.dc.is_some() {
                chain.push(Selector {
                    dc: self.dc.clone(),
                    rack: None,
                });
            }
            if *self != Selector::default() {
                chain.push(Selector::default());
            }
        }
        chain
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.dc, &self.rack) {
            (None, None) => f.write_str("local datacenter"),
            (Some(dc), None) => write!(f, "dc={dc}"),
            (None, Some(rack)) => write!(f, "rack={rack} (local datacenter)"),
            (Some(dc), Some(rack)) => write!(f, "dc={dc} rack={rack}"),
        }
    }
}

/// Datacenter and rack names are short identifiers, but nothing stops an
/// operator from using spaces or `&`: encode everything but unreserved bytes.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One served name's rule: its selector, whether it may fall back, and
/// whether it answers each client from the client's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRule {
    pub selector: Selector,
    pub fallback: bool,
    pub affinity: bool,
}

impl NameRule {
    /// Whether this name answers clients of `location` (a datacenter or
    /// rack) from that location's nodes: when it places its clients and the
    /// location lies within the nodes it serves (any, for a name of the
    /// local datacenter).
    pub fn serves_location(&self, location: &Selector) -> bool {
        let within = |own: &Option<String>, theirs: &Option<String>| own.is_none() || own == theirs;
        self.affinity
            && within(&self.selector.dc, &location.dc)
            && within(&self.selector.rack, &location.rack)
    }
}

/// How one name's list was chosen, for logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Healthy nodes of this selector (the name's own, or a fallback).
    Healthy(Selector),
    /// No healthy node anywhere in the chain: the listed nodes of this selector.
    FailOpen(Selector),
    /// No healthy node, and the listed ones are not probed yet: keep serving
    /// what was served before.
    Pending,
    /// Nothing listed anywhere in the chain.
    Empty,
}

/// How a location's nodes were chosen, for logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationChoice {
    /// Enough live nodes in this selector: the location's rack, or its
    /// datacenter.
    Own(Selector),
    /// Too few anywhere: the location's clients get their name's nodes.
    Name,
    /// Its lists are not polled, or its nodes not probed, yet.
    Pending,
}

/// The lists, the probe results, and the rules that combine them.
#[derive(Debug, Clone)]
pub struct Membership {
    listed: BTreeMap<Selector, Vec<IpAddr>>,
    health: BTreeMap<IpAddr, NodeHealth>,
    /// The probing rules; `enabled` false: every listed node is served.
    settings: HealthSettings,
    /// Nodes never served, healthy or not, fail open included.
    excluded: BTreeSet<IpAddr>,
}

impl Membership {
    pub fn new(settings: HealthSettings, excluded: BTreeSet<IpAddr>) -> Membership {
        Membership {
            listed: BTreeMap::new(),
            health: BTreeMap::new(),
            settings,
            excluded,
        }
    }

    /// Applies new health settings and exclusions, keeping the lists and
    /// probe results.
    pub fn reconfigure(&mut self, settings: HealthSettings, excluded: BTreeSet<IpAddr>) {
        self.settings = settings;
        self.excluded = excluded;
    }

    /// Whether the configuration excludes `node`.
    pub fn is_excluded(&self, node: IpAddr) -> bool {
        self.excluded.contains(&node)
    }

    /// The nodes excluded.
    pub fn excluded(&self) -> &BTreeSet<IpAddr> {
        &self.excluded
    }

    /// Forgets the lists of selectors no served name needs any more (after a
    /// reload) and the health of nodes no remaining list names.
    pub fn keep_only(&mut self, selectors: &[Selector]) {
        self.listed
            .retain(|selector, _| selectors.contains(selector));
        let all = self.all_listed();
        self.health.retain(|ip, _| all.contains(ip));
    }

    /// Records the latest good list for a selector, received at `now`;
    /// returns the nodes it added to the set of probed nodes (new nodes start
    /// unknown: not served until a probe passes).
    pub fn set_listed(
        &mut self,
        selector: Selector,
        nodes: Vec<IpAddr>,
        now: Instant,
    ) -> Vec<IpAddr> {
        self.listed.insert(selector, nodes);
        let all = self.all_listed();
        self.health.retain(|ip, _| all.contains(ip));
        all.into_iter()
            .filter(|ip| {
                let new = !self.health.contains_key(ip);
                if new {
                    self.health.insert(*ip, NodeHealth::new(now));
                }
                new
            })
            .collect()
    }

    /// Records a probe of `node` that started at `at`: passed (`None`) or
    /// failed this way. Returns true when it may change whether the node is
    /// served.
    pub fn record_probe(
        &mut self,
        node: IpAddr,
        failure: Option<FailureKind>,
        at: Instant,
    ) -> bool {
        let Some(health) = self.health.get_mut(&node) else {
            return false;
        };
        let settings = &self.settings;
        health.record(failure, at, settings.failures, &settings.damping)
    }

    /// Since when `node` fails, and how it failed last; None while it passes
    /// (or is not listed).
    pub fn failing(&self, node: IpAddr) -> Option<(Instant, FailureKind)> {
        self.health.get(&node)?.failing()
    }

    pub fn health(&self, node: IpAddr) -> Option<Health> {
        self.health.get(&node).map(NodeHealth::state)
    }

    /// Since when `node` is in its current health state (listed, served,
    /// or not).
    pub fn health_since(&self, node: IpAddr) -> Option<Instant> {
        self.health.get(&node).map(NodeHealth::since)
    }

    /// Every node some list names: the nodes to probe and to poll.
    pub fn all_listed(&self) -> BTreeSet<IpAddr> {
        self.listed.values().flatten().copied().collect()
    }

    /// Whether some listed node has not been probed yet (always false when
    /// health checking is off).
    pub fn any_unprobed(&self) -> bool {
        self.settings.enabled && self.health.values().any(|h| h.state() == Health::Unknown)
    }

    pub fn has_list(&self, selector: &Selector) -> bool {
        self.listed.contains_key(selector)
    }

    /// The nodes to serve for a name, and how they were chosen.
    ///
    /// `served_now` are the nodes the name serves at present: one of them not
    /// probed yet stays served until its first probe says otherwise, while a
    /// newly listed node waits for its first good probe.
    pub fn serve(&self, rule: &NameRule, served_now: &BTreeSet<IpAddr>) -> (Vec<IpAddr>, Choice) {
        // A name whose own list was never polled yet keeps what it serves:
        // falling back would serve another datacenter's nodes for nothing.
        if !self.listed.contains_key(&rule.selector) {
            return (Vec::new(), Choice::Pending);
        }
        let chain = rule.selector.chain(rule.fallback);
        let checking = self.settings.enabled;
        let usable = |ip: &IpAddr| self.usable(*ip, served_now);
        for selector in &chain {
            let healthy: Vec<IpAddr> = self
                .listed(selector)
                .iter()
                .copied()
                .filter(usable)
                .collect();
            if !healthy.is_empty() {
                return (healthy, Choice::Healthy(selector.clone()));
            }
            // Nodes of this list not probed yet: wait for their probes
            // rather than fall back past them.
            let unprobed = |ip: &IpAddr| {
                !self.excluded.contains(ip) && self.health(*ip) == Some(Health::Unknown)
            };
            if checking && self.listed(selector).iter().any(unprobed) {
                return (Vec::new(), Choice::Pending);
            }
        }
        let servable = |ip: &&IpAddr| !self.excluded.contains(*ip);
        let all_unprobed = chain
            .iter()
            .flat_map(|s| self.listed(s).iter().filter(servable))
            .all(|ip| self.health(*ip) == Some(Health::Unknown));
        for selector in &chain {
            let listed: Vec<IpAddr> = self
                .listed(selector)
                .iter()
                .filter(servable)
                .copied()
                .collect();
            if !listed.is_empty() {
                if all_unprobed {
                    return (Vec::new(), Choice::Pending);
                }
                return (listed, Choice::FailOpen(selector.clone()));
            }
        }
        (Vec::new(), Choice::Empty)
    }

    /// Whether `node` may be served: not excluded, and passing its probes
    /// (or not probed: health checks off, or served now and not probed
    /// yet).
    pub(crate) fn usable(&self, node: IpAddr, served_now: &BTreeSet<IpAddr>) -> bool {
        match self.health(node) {
            _ if self.excluded.contains(&node) => false,
            _ if !self.settings.enabled => true,
            Some(Health::Unknown) => served_now.contains(&node),
            Some(h) => h.is_up(),
            None => false,
        }
    }

    /// The nodes that answer the clients of a location (a rack, or a
    /// datacenter: `location`), and how they were chosen: the rack's usable
    /// nodes when there are at least `min_nodes`, else its datacenter's,
    /// else none, and its clients get their name's nodes. No fail open
    /// here: the name's own list has it. While the nodes that decide are
    /// not probed yet, [`LocationChoice::Pending`] (keep what is served).
    pub fn serve_location(
        &self,
        location: &Selector,
        min_nodes: usize,
        served_now: &BTreeSet<IpAddr>,
    ) -> (Vec<IpAddr>, LocationChoice) {
        let mut chain = vec![location.clone()];
        if location.rack.is_some() {
            chain.push(Selector {
                dc: location.dc.clone(),
                rack: None,
            });
        }
        let checking = self.settings.enabled;
        for selector in chain {
            if !self.listed.contains_key(&selector) {
                return (Vec::new(), LocationChoice::Pending);
            }
            let usable: Vec<IpAddr> = (self.listed(&selector).iter().copied())
                .filter(|ip| self.usable(*ip, served_now))
                .collect();
            if usable.len() >= min_nodes {
                return (usable, LocationChoice::Own(selector));
            }
            let unprobed = |ip: &&IpAddr| {
                !self.excluded.contains(ip) && self.health(**ip) == Some(Health::Unknown)
            };
            if checking && self.listed(&selector).iter().any(|ip| unprobed(&ip)) {
                return (Vec::new(), LocationChoice::Pending);
            }
        }
        (Vec::new(), LocationChoice::Name)
    }

    /// The latest good list of a selector (empty before the first).
    pub fn listed(&self, selector: &Selector) -> &[IpAddr] {
        self.listed.get(selector).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests;
