//! Removals counted: each node a new snapshot no longer serves, with why
//! (its latest probe failure, or no longer listed) and how long since its
//! first failing probe, for `alternator_dns_node_removals_total` and the
//! `alternator_dns_node_removal_seconds` histogram.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{NodeSource, RemovalReason, Snapshot, Tracker};

impl Tracker {
    /// How long `node` has been failing, if it is.
    pub(super) fn failing_for(&self, node: IpAddr, now: Instant) -> Option<Duration> {
        let (since, _) = self.membership.failing(node)?;
        Some(now.saturating_duration_since(since))
    }

    /// Counts each node the snapshot just published no longer serves, with
    /// why and how long since its first failing probe.
    pub(super) fn count_removals(&self, before: &Snapshot, now: Instant) {
        if before.source == NodeSource::Seeds {
            return;
        }
        let served: BTreeSet<IpAddr> = self.current.nodes().collect();
        let gone: BTreeSet<IpAddr> = before.nodes().filter(|ip| !served.contains(ip)).collect();
        let listed = self.membership.all_listed();
        for node in gone {
            let (reason, took) = match self.membership.failing(node) {
                _ if !listed.contains(&node) => (RemovalReason::Unlisted, None),
                Some((_, kind)) => (kind.reason(), self.failing_for(node, now)),
                // Gone for another reason (a fallback ended, a reload).
                None => continue,
            };
            self.metrics.control().node_removed(reason, took);
        }
    }
}
