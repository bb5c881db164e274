//! Who may ask, who may recurse, and how fast: the access list, what a
//! denied source gets, the sources that may have names outside the zone
//! forwarded, and the rate limit. A reload (SIGHUP) replaces them all at
//! once, while the workers answer.
//!
//! One [`Policy`] is shared by every UDP worker and the TCP listener. A
//! worker reads it through its own [`PolicyReader`], an `arc-swap` cache:
//! one atomic load per packet, no reference count touched, nothing shared
//! written. Each worker owns its rate limiter; when the rules change, the
//! worker builds a new one from the new settings on its next packet (the
//! limiter's table is allocated then, once per reload, never per query).

use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};

use crate::access::{AccessList, Denied};
use crate::rrl::{RateLimiter, RrlSettings};

/// The rules as configured.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Empty: everyone may ask.
    pub access: AccessList,
    pub denied: Denied,
    /// With forwarding: the sources whose queries for names outside the zone
    /// are forwarded; others get REFUSED.
    pub forward_allow: AccessList,
    /// Each UDP worker's share of the rate limit; None: no limit.
    pub rate_limit: Option<RrlSettings>,
}

impl Default for Rules {
    /// Everyone may ask; only this machine may recurse; no rate limit.
    fn default() -> Self {
        Rules {
            access: AccessList::default(),
            denied: Denied::default(),
            forward_allow: AccessList::loopback(),
            rate_limit: None,
        }
    }
}

/// The rules, numbered so that a reader can tell when they changed.
#[derive(Debug)]
struct Numbered {
    generation: u64,
    rules: Rules,
}

/// The rules in force, shared and replaceable.
#[derive(Debug, Clone)]
pub struct Policy(Arc<ArcSwap<Numbered>>);

impl Policy {
    pub fn new(rules: Rules) -> Policy {
        Policy(Arc::new(ArcSwap::from_pointee(Numbered {
            generation: 0,
            rules,
        })))
    }

    /// Puts `rules` in force; every reader sees them on its next query.
    /// Called by the control plane only (one writer).
    pub fn replace(&self, rules: Rules) {
        let generation = self.0.load().generation + 1;
        self.0.store(Arc::new(Numbered { generation, rules }));
    }

    /// The rules in force now.
    pub fn rules(&self) -> Rules {
        self.0.load().rules.clone()
    }

    /// A reader for one worker or TCP connection; `limited`: it applies the
    /// rate limit (UDP).
    pub fn reader(&self, limited: bool) -> PolicyReader {
        let mut reader = PolicyReader {
            cache: Cache::new(Arc::clone(&self.0)),
            limited,
            limiter: None,
            limiter_generation: u64::MAX,
        };
        reader.sync_limiter();
        reader
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(Rules::default())
    }
}

/// One thread's view of the [`Policy`], with its own rate limiter.
pub struct PolicyReader {
    cache: Cache<Arc<ArcSwap<Numbered>>, Arc<Numbered>>,
    limited: bool,
    limiter: Option<RateLimiter>,
    /// The generation of the rules the limiter was built from.
    limiter_generation: u64,
}

impl PolicyReader {
    /// The rules in force, and this reader's rate limiter for them (None
    /// when there is no limit, or the reader applies none). Rebuilds the
    /// limiter after a change of rules.
    #[inline]
    pub fn current(&mut self) -> (&Rules, Option<&mut RateLimiter>) {
        self.sync_limiter();
        (&self.cache.load().rules, self.limiter.as_mut())
    }

    fn sync_limiter(&mut self) {
        let numbered = self.cache.load();
        if numbered.generation == self.limiter_generation {
            return;
        }
        self.limiter_generation = numbered.generation;
        self.limiter = match (&numbered.rules.rate_limit, self.limited) {
            // Settings were checked when the configuration was loaded.
            (Some(settings), true) => RateLimiter::new(settings).ok(),
            _ => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_replaced_rules_on_its_next_query_and_rebuilds_its_limiter() {
        let policy = Policy::default();
        let mut udp = policy.reader(true);
        let mut tcp = policy.reader(false);
        let (rules, limiter) = udp.current();
        assert!(rules.access.allows("192.0.2.1".parse().unwrap()));
        assert!(limiter.is_none());
        policy.replace(Rules {
            access: AccessList::parse(["10.0.0.0/8"]).unwrap(),
            rate_limit: Some(RrlSettings::new(5)),
            ..Rules::default()
        });
        let (rules, limiter) = udp.current();
        assert!(!rules.access.allows("192.0.2.1".parse().unwrap()));
        assert!(limiter.is_some(), "UDP applies the new limit");
        let (_, limiter) = tcp.current();
        assert!(limiter.is_none(), "TCP applies none");
        policy.replace(Rules::default());
        assert!(udp.current().1.is_none(), "the limit is lifted");
    }
}
