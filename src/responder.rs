//! What a UDP worker does with each datagram, between the I/O backend and the
//! answer path: check the source, read the current snapshot, answer (or hand
//! the query to the forwarder), apply the rate limit, count.
//!
//! Everything here runs once per packet on a pinned core, so it holds only
//! what it needs by value (its own random generator, rate-limit table and
//! counters, a lock-free snapshot cache) and allocates nothing, except when a
//! query is forwarded, which is off the fast path by definition.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};

use crate::access::{AccessList, Denied};
use crate::dns::wire;
use crate::dns::{respond, respond_local, DropReason, Outcome, Rng, Transport};
use crate::forward::{ForwardJob, ForwardQueue};
use crate::io::PacketHandler;
use crate::metrics::{self, QueryType, WorkerMetrics};
use crate::nodes::{SharedSnapshot, Snapshot};
use crate::rrl::{self, RateLimiter, Verdict};

/// Who may ask, and who may recurse.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Empty: everyone. Fixed at start-up.
    pub access: Arc<AccessList>,
    pub denied: Denied,
    /// With forwarding: the sources whose queries for names outside the zone
    /// are forwarded; others get REFUSED. Swapped on reload; read only for
    /// queries that would be forwarded, never on the zone's answers.
    pub forward_allow: SharedAccessList,
}

/// An access list that a reload may replace while workers read it.
pub type SharedAccessList = Arc<ArcSwap<AccessList>>;

impl Default for Policy {
    /// Everyone may ask; only this machine may recurse.
    fn default() -> Self {
        Policy {
            access: Arc::default(),
            denied: Denied::default(),
            forward_allow: Arc::new(ArcSwap::from_pointee(AccessList::loopback())),
        }
    }
}

impl Policy {
    /// Whether `source` may have a name outside the zone forwarded.
    #[inline]
    pub fn may_recurse(&self, source: std::net::IpAddr) -> bool {
        self.forward_allow.load().allows(source)
    }
}

/// Answers UDP queries on one worker.
pub struct UdpResponder {
    snapshot: Cache<SharedSnapshot, Arc<Snapshot>>,
    rng: Rng,
    forward: Option<ForwardQueue>,
    policy: Policy,
    rate_limit: Option<RateLimiter>,
    metrics: Arc<WorkerMetrics>,
}

impl UdpResponder {
    pub fn new(published: &SharedSnapshot, rng: Rng, forward: Option<ForwardQueue>) -> Self {
        UdpResponder {
            snapshot: Cache::new(Arc::clone(published)),
            rng,
            forward,
            policy: Policy::default(),
            rate_limit: None,
            metrics: Arc::new(WorkerMetrics::new()),
        }
    }

    /// Restricts sources and rate (both off by default).
    pub fn with_policy(mut self, policy: Policy, rate_limit: Option<RateLimiter>) -> Self {
        self.policy = policy;
        self.rate_limit = rate_limit;
        self
    }

    /// Counts into `metrics` (a fresh, unshared set by default).
    pub fn with_metrics(mut self, metrics: Arc<WorkerMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// A source outside the allow list: REFUSED, or nothing.
    fn refuse(&self, query: &[u8], reply: &mut Vec<u8>) -> bool {
        if self.policy.denied == Denied::Refuse && wire::short_reply(query, 5, false, false, reply)
        {
            self.metrics.response(metrics::Rcode::Refused);
            return true;
        }
        self.metrics.dropped(metrics::DropReason::AccessDenied);
        false
    }

    /// Applies the rate limit to an answer about to be sent; false to drop it.
    fn within_rate(&mut self, source: SocketAddr, reply: &mut Vec<u8>) -> bool {
        let Some(limiter) = &mut self.rate_limit else {
            return true;
        };
        match limiter.check(source.ip(), rrl::now_ms()) {
            Verdict::Answer => true,
            Verdict::Slip => {
                self.metrics.slipped();
                wire::truncate_to_question(reply)
            }
            Verdict::Drop => {
                self.metrics.dropped(metrics::DropReason::RateLimited);
                false
            }
        }
    }
}

impl PacketHandler for UdpResponder {
    fn handle(
        &mut self,
        query: &[u8],
        source: SocketAddr,
        listener: usize,
        reply: &mut Vec<u8>,
    ) -> bool {
        // Port 0 cannot be a real client; answering it would only reflect.
        if source.port() == 0 {
            self.metrics.dropped(metrics::DropReason::SourcePortZero);
            return false;
        }
        if !self.policy.access.allows(source.ip()) {
            return self.refuse(query, reply);
        }
        let snapshot = self.snapshot.load();
        let mut outcome = respond(query, Transport::Udp, snapshot, &mut self.rng, reply);
        if outcome == Outcome::Forward && !self.policy.may_recurse(source.ip()) {
            outcome = respond_local(query, Transport::Udp, snapshot, &mut self.rng, reply);
        }
        match outcome {
            Outcome::Reply(rcode) => {
                count_answer(&self.metrics, query, rcode.to_int(), reply);
                self.within_rate(source, reply)
            }
            Outcome::Drop(reason) => {
                self.metrics.dropped(match reason {
                    DropReason::TooShort => metrics::DropReason::TooShort,
                    DropReason::Response => metrics::DropReason::ResponseBit,
                });
                false
            }
            Outcome::Forward => {
                self.metrics.query(query_type(query));
                let offered = self.forward.as_ref().is_some_and(|queue| {
                    queue.offer(ForwardJob {
                        query: query.to_vec(),
                        client: source,
                        listener,
                    })
                });
                if offered {
                    self.metrics.forwarded();
                } else {
                    // A full queue drops the query; the client retries.
                    self.metrics.dropped(metrics::DropReason::ForwardQueueFull);
                }
                false
            }
        }
    }
}

/// Counts an answered query: its type, the rcode, truncation.
pub fn count_answer(metrics: &WorkerMetrics, query: &[u8], rcode: u16, reply: &[u8]) {
    metrics.query(query_type(query));
    metrics.response(metrics::Rcode::from_code(rcode));
    if reply.len() > 2 && reply[2] & 0x02 != 0 {
        metrics.truncated();
    }
}

fn query_type(query: &[u8]) -> QueryType {
    wire::question_type(query).map_or(QueryType::Other, QueryType::from_code)
}
