//! One node's health as its probes tell it: whether it is served, since when
//! it fails and why, and whether it flaps.
//!
//! Failures in a row take a node out (`--health-failures`), except a refused
//! connection, which does at once: nothing listens on the Alternator port, so
//! no client could be served there. One pass brings a node back, except one
//! that flaps: taken out `--health-flap-limit` times within
//! `--health-flap-window`, it needs `--health-flap-passes` passes in a row,
//! so that the answers do not follow a node that keeps failing and
//! recovering (each answer is cached by resolvers for the TTL).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::metrics::RemovalReason;

/// Node health probing as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    pub enabled: bool,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failed probes in a row that take a node out.
    pub failures: u32,
    pub damping: Damping,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            enabled: true,
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(300),
            failures: 2,
            damping: Damping::default(),
        }
    }
}

/// When a node counts as flapping, and what brings it back then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damping {
    /// Removals within `window` that make a node flapping; 0: never.
    pub limit: u32,
    pub window: Duration,
    /// Passes in a row a flapping node needs to be served again.
    pub passes: u32,
}

impl Default for Damping {
    fn default() -> Self {
        Damping {
            limit: 3,
            window: Duration::from_secs(60),
            passes: 5,
        }
    }
}

/// How a probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection was refused: nothing listens on the port.
    Refused,
    /// The node closed or reset the connection before answering in full.
    Closed,
    /// No whole answer within the probe timeout.
    Timeout,
    /// An answer with an error status.
    Status,
    /// Anything else (unreachable, TLS, not HTTP, body too large).
    Other,
}

impl FailureKind {
    /// The removal reason a failure of this kind is counted under.
    pub fn reason(self) -> RemovalReason {
        match self {
            FailureKind::Refused => RemovalReason::Refused,
            FailureKind::Closed => RemovalReason::Closed,
            FailureKind::Timeout => RemovalReason::Timeout,
            FailureKind::Status => RemovalReason::Status,
            FailureKind::Other => RemovalReason::Error,
        }
    }
}

/// What a node's probes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Listed, not probed yet: not served.
    Unknown,
    Healthy,
    /// Failed this many probes in a row (below the threshold it stays served).
    Failing(u32),
    Down,
    /// Flapping, and passed this many probes in a row since it was down: not
    /// served until it passes [`Damping::passes`].
    Recovering(u32),
}

impl Health {
    /// Whether a node in this state is served.
    pub fn is_up(self) -> bool {
        matches!(self, Health::Healthy | Health::Failing(_))
    }
}

/// One node's probe history: its [`Health`], its failing streak, and its
/// recent removals.
#[derive(Debug, Clone)]
pub struct NodeHealth {
    state: Health,
    /// The start of the first failing probe of the current streak, and the
    /// kind of its latest failure; None while the node passes.
    failing: Option<(Instant, FailureKind)>,
    /// When the node was taken out, within the damping window (oldest
    /// first; at most [`Damping::limit`] kept).
    removals: VecDeque<Instant>,
    /// Since when it is in its current state, as far as serving goes
    /// (listed and unprobed, up, or not).
    since: Instant,
}

impl NodeHealth {
    /// A node listed at `now`, not probed yet.
    pub fn new(now: Instant) -> NodeHealth {
        NodeHealth {
            state: Health::Unknown,
            failing: None,
            removals: VecDeque::new(),
            since: now,
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Since when the node is up, or not (or listed, while unprobed).
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Since when the node fails, and how it failed last; None while it
    /// passes.
    pub fn failing(&self) -> Option<(Instant, FailureKind)> {
        self.failing
    }

    /// Records one probe that started at `at`: passed (`None`) or failed
    /// this way. Returns true when it may change whether the node is served.
    pub fn record(
        &mut self,
        failure: Option<FailureKind>,
        at: Instant,
        failures_to_down: u32,
        damping: &Damping,
    ) -> bool {
        let before = self.state;
        self.state = match failure {
            None => self.passed(at, damping),
            Some(kind) => {
                let since = self.failing.map_or(at, |(since, _)| since);
                self.failing = Some((since, kind));
                self.failed(kind, failures_to_down.max(1))
            }
        };
        if before.is_up() && self.state == Health::Down {
            self.removed(at, damping);
        }
        // Unknown -> Down changes nothing for a node not served yet, but a
        // node kept served while unprobed (after start-up or a reload) must go.
        let changed = before.is_up() != self.state.is_up() || before == Health::Unknown;
        if changed {
            self.since = at;
        }
        changed
    }

    fn passed(&mut self, at: Instant, damping: &Damping) -> Health {
        self.failing = None;
        let needed = damping.passes.max(1);
        match self.state {
            Health::Down if self.flapping(at, damping) && needed > 1 => Health::Recovering(1),
            Health::Recovering(n) if n + 1 < needed => Health::Recovering(n + 1),
            _ => Health::Healthy,
        }
    }

    fn failed(&self, kind: FailureKind, failures_to_down: u32) -> Health {
        match (self.state, kind) {
            (Health::Healthy | Health::Failing(_), FailureKind::Refused) => Health::Down,
            (Health::Healthy, _) if failures_to_down > 1 => Health::Failing(1),
            (Health::Failing(n), _) if n + 1 < failures_to_down => Health::Failing(n + 1),
            _ => Health::Down,
        }
    }

    fn removed(&mut self, at: Instant, damping: &Damping) {
        if damping.limit == 0 {
            return;
        }
        if self.removals.len() >= damping.limit as usize {
            self.removals.pop_front();
        }
        self.removals.push_back(at);
    }

    /// Whether the node was taken out [`Damping::limit`] times within the
    /// window before `at`.
    fn flapping(&self, at: Instant, damping: &Damping) -> bool {
        let recent = self
            .removals
            .iter()
            .filter(|&&removed| at.saturating_duration_since(removed) <= damping.window)
            .count();
        damping.limit > 0 && recent >= damping.limit as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn pass(h: &mut NodeHealth, at: Instant) -> bool {
        h.record(None, at, 2, &Damping::default())
    }

    fn fail(h: &mut NodeHealth, kind: FailureKind, at: Instant) -> bool {
        h.record(Some(kind), at, 2, &Damping::default())
    }

    #[test]
    fn failures_in_a_row_take_a_node_out_and_a_refusal_at_once() {
        let t = Instant::now();
        let mut h = NodeHealth::new(t);
        assert!(pass(&mut h, t), "the first pass serves it");
        assert!(!fail(&mut h, FailureKind::Timeout, t + SECOND));
        assert_eq!(h.state(), Health::Failing(1));
        assert!(fail(&mut h, FailureKind::Status, t + 2 * SECOND));
        assert_eq!(h.state(), Health::Down);
        assert_eq!(
            h.failing(),
            Some((t + SECOND, FailureKind::Status)),
            "the streak dates from its first failure; the kind is the latest"
        );
        assert!(pass(&mut h, t + 3 * SECOND));
        assert_eq!(h.failing(), None);
        assert!(fail(&mut h, FailureKind::Refused, t + 4 * SECOND));
        assert_eq!(h.state(), Health::Down);
    }

    #[test]
    fn a_node_taken_out_three_times_a_minute_needs_five_passes() {
        let t = Instant::now();
        let mut h = NodeHealth::new(t);
        pass(&mut h, t);
        for i in 1..=2 {
            fail(&mut h, FailureKind::Refused, t + i * 10 * SECOND);
            assert!(
                pass(&mut h, t + i * 10 * SECOND + SECOND),
                "not flapping yet"
            );
        }
        fail(&mut h, FailureKind::Closed, t + 30 * SECOND);
        fail(&mut h, FailureKind::Closed, t + 30 * SECOND);
        let back = t + 31 * SECOND;
        for n in 1..5 {
            assert!(!pass(&mut h, back + n * SECOND / 2), "pass {n} of 5");
            assert_eq!(h.state(), Health::Recovering(n));
        }
        assert!(
            pass(&mut h, back + 5 * SECOND / 2),
            "the fifth pass serves it"
        );
        assert_eq!(h.state(), Health::Healthy);
    }

    #[test]
    fn a_failure_while_recovering_starts_the_count_again() {
        let t = Instant::now();
        let mut h = NodeHealth::new(t);
        pass(&mut h, t);
        for i in 1..=3 {
            fail(&mut h, FailureKind::Refused, t + i * SECOND);
            pass(&mut h, t + i * SECOND + SECOND / 2);
        }
        assert_eq!(h.state(), Health::Recovering(1));
        assert!(!fail(&mut h, FailureKind::Timeout, t + 5 * SECOND));
        assert_eq!(h.state(), Health::Down);
        assert!(!pass(&mut h, t + 6 * SECOND));
        assert_eq!(h.state(), Health::Recovering(1));
    }

    #[test]
    fn removals_older_than_the_window_do_not_count() {
        let t = Instant::now();
        let mut h = NodeHealth::new(t);
        pass(&mut h, t);
        for i in 0..3 {
            fail(&mut h, FailureKind::Refused, t + i * 40 * SECOND);
            assert!(pass(&mut h, t + i * 40 * SECOND + SECOND));
        }
        assert_eq!(h.state(), Health::Healthy, "3 removals over 80 s");
    }

    #[test]
    fn damping_off_brings_a_node_back_on_one_pass() {
        let t = Instant::now();
        let off = Damping {
            limit: 0,
            ..Damping::default()
        };
        let mut h = NodeHealth::new(t);
        h.record(None, t, 1, &off);
        for i in 1..10 {
            h.record(Some(FailureKind::Timeout), t + i * SECOND, 1, &off);
            assert!(h.record(None, t + i * SECOND, 1, &off));
        }
    }
}
