//! Recovery without a herd. While every listed node fails its probes, a
//! name serves them all (fail open). When the outage ends, the nodes pass
//! again one by one over a probe interval, each on its own schedule; were
//! the answers narrowed to the first that passes, every client resolving in
//! the next moments would cache that one node for the TTL, and a whole
//! cluster's clients would land on it. So the narrowing waits until every
//! listed node's next probe has reported, or one probe interval has passed,
//! and the answers go from "all listed" to "all that pass" in one step.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{log, Basis, Tracker};

/// A narrowing from fail open held back.
#[derive(Debug)]
pub(super) struct Recovery {
    /// The latest time it is held to.
    until: Instant,
    /// Nodes whose next probe has not reported yet.
    waiting: BTreeSet<IpAddr>,
}

impl Recovery {
    /// Held from `now`, when `passed` passed first, for the next probe of
    /// every other node in `probed`, or `interval` at most.
    pub(super) fn start(
        now: Instant,
        interval: Duration,
        probed: &BTreeSet<IpAddr>,
        passed: IpAddr,
    ) -> Recovery {
        let mut waiting = probed.clone();
        waiting.remove(&passed);
        Recovery {
            until: now + interval,
            waiting,
        }
    }

    /// A probe of `node` has reported.
    pub(super) fn reported(&mut self, node: IpAddr) {
        self.waiting.remove(&node);
    }

    /// Whether the narrowing may happen at `now`.
    pub(super) fn over(&self, now: Instant) -> bool {
        self.waiting.is_empty() || now >= self.until
    }

    /// When it is over at the latest.
    pub(super) fn until(&self) -> Instant {
        self.until
    }

    /// How many nodes it still waits for.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

impl Tracker {
    /// A node passing while some name serves in fail open: the narrowing
    /// waits for the others' next probes ([`recovery`]).
    pub(super) fn hold_narrowing(&mut self, passed: IpAddr, now: Instant) {
        let fail_open =
            (0..self.current.zone.name_count()).any(|i| self.current.basis(i) == Basis::FailOpen);
        if self.recovery.is_none() && fail_open {
            let recovery = Recovery::start(now, self.health.interval, &self.probing, passed);
            log::narrowing_held(passed, recovery.waiting(), self.health.interval);
            self.recovery = Some(recovery);
        }
    }
}
