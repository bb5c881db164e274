//! What a query gets, whichever transport carried it: the source checked
//! against the access list, the answer from the current snapshot (or the
//! query handed to the forwarder), the rate limit, the counters.
//!
//! [`Responder`] decides this once for UDP and TCP. The transports wrap it:
//! [`UdpResponder`] here, the [`PacketHandler`] a worker thread's I/O loop
//! calls for each datagram, and `tcp::ConnectionTask` for DNS over TCP. What
//! differs stays in the wrappers: UDP drops source port 0, rate-limits and
//! truncates to 512 bytes or the EDNS size, and queues forwarded queries for
//! the control plane; TCP frames messages and awaits the forwarder itself.
//!
//! On a worker everything here runs once per packet on a pinned core, so it
//! holds only what it needs by value (its own random generator, rate-limit
//! table and counters, a lock-free snapshot cache) and allocates nothing,
//! except when a query is forwarded, which is off the fast path by
//! definition.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::Cache;

use crate::access::Denied;
use crate::dns::wire;
use crate::dns::{respond, respond_local, DropReason, Outcome, Rng, Transport};
use crate::forward::{ForwardJob, ForwardQueue};
use crate::io::PacketHandler;
use crate::metrics::{self, QueryMetrics, QueryType};
use crate::nodes::{SharedSnapshot, Snapshot};
use crate::policy::{Policy, PolicyReader};
use crate::rrl::{self, RateLimiter, Verdict};

/// What the transport does with a query once [`Responder::respond`] has
/// decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send `reply`.
    Reply,
    /// Send nothing; the reason is counted.
    Drop,
    /// Hand the query to the forwarder; it is counted as a query, and the
    /// transport counts the hand-off.
    Forward,
}

/// Decides what each query of one worker thread, or of one TCP connection,
/// gets: access -> answer -> rate limit -> count.
pub struct Responder {
    rng: Rng,
    policy: PolicyReader,
    metrics: Arc<QueryMetrics>,
}

impl Responder {
    /// Everyone allowed, no rate limit; counts into `metrics`.
    pub fn new(rng: Rng, metrics: Arc<QueryMetrics>) -> Self {
        Responder {
            rng,
            policy: Policy::default().reader(false),
            metrics,
        }
    }

    /// Follows `policy` (everyone allowed and no rate limit by default);
    /// `limited`: applies its rate limit. TCP does not: a TCP client has
    /// shown its address is its own.
    pub fn with_policy(mut self, policy: &Policy, limited: bool) -> Self {
        self.policy = policy.reader(limited);
        self
    }

    /// The counters this responder writes.
    pub fn metrics(&self) -> &QueryMetrics {
        &self.metrics
    }

    /// Decides what `query` from `source` gets, writing any reply into
    /// `reply` (which needs the transport's largest reply as capacity for
    /// the call not to allocate).
    pub fn respond(
        &mut self,
        query: &[u8],
        source: IpAddr,
        transport: Transport,
        snapshot: &Snapshot,
        reply: &mut Vec<u8>,
    ) -> Action {
        let (rules, limiter) = self.policy.current();
        if !rules.access.allows(source) {
            return refuse(&self.metrics, rules.denied, query, reply);
        }
        let mut outcome = respond(query, source, transport, snapshot, &mut self.rng, reply);
        if outcome == Outcome::Forward && !rules.forward_allow.allows(source) {
            outcome = respond_local(query, source, transport, snapshot, &mut self.rng, reply);
        }
        match outcome {
            Outcome::Reply(rcode) => {
                count_answer(&self.metrics, query, rcode.to_int(), reply);
                within_rate(&self.metrics, limiter, source, reply)
            }
            Outcome::Drop(reason) => {
                self.metrics.dropped(match reason {
                    DropReason::TooShort => metrics::DropReason::TooShort,
                    DropReason::Response => metrics::DropReason::ResponseBit,
                });
                Action::Drop
            }
            Outcome::Forward => {
                self.metrics.query(query_type(query));
                Action::Forward
            }
        }
    }
}

/// A source outside the allow list: REFUSED, or nothing.
#[cold]
fn refuse(metrics: &QueryMetrics, denied: Denied, query: &[u8], reply: &mut Vec<u8>) -> Action {
    if denied == Denied::Refuse && wire::short_reply(query, 5, false, false, reply) {
        metrics.response(metrics::Rcode::Refused);
        return Action::Reply;
    }
    metrics.dropped(metrics::DropReason::AccessDenied);
    Action::Drop
}

/// Applies the rate limit, if any, to an answer about to be sent.
fn within_rate(
    metrics: &QueryMetrics,
    limiter: Option<&mut RateLimiter>,
    source: IpAddr,
    reply: &mut Vec<u8>,
) -> Action {
    let Some(limiter) = limiter else {
        return Action::Reply;
    };
    match limiter.check(source, rrl::now_ms()) {
        Verdict::Answer => Action::Reply,
        Verdict::Slip => {
            metrics.slipped();
            match wire::truncate_to_question(reply) {
                true => Action::Reply,
                false => Action::Drop,
            }
        }
        Verdict::Drop => {
            metrics.dropped(metrics::DropReason::RateLimited);
            Action::Drop
        }
    }
}

/// Answers the UDP queries of one worker thread: a [`Responder`] that reads
/// the published snapshot and queues forwarded queries.
pub struct UdpResponder {
    snapshot: Cache<SharedSnapshot, Arc<Snapshot>>,
    responder: Responder,
    forward: Option<ForwardQueue>,
}

impl UdpResponder {
    pub fn new(published: &SharedSnapshot, rng: Rng, forward: Option<ForwardQueue>) -> Self {
        UdpResponder {
            snapshot: Cache::new(Arc::clone(published)),
            responder: Responder::new(rng, Arc::new(QueryMetrics::new())),
            forward,
        }
    }

    /// Follows `policy`, its rate limit included (everyone allowed and no
    /// limit by default).
    pub fn with_policy(mut self, policy: &Policy) -> Self {
        self.responder = self.responder.with_policy(policy, true);
        self
    }

    /// Counts into `metrics` (a fresh, unshared set by default).
    pub fn with_metrics(mut self, metrics: Arc<QueryMetrics>) -> Self {
        self.responder.metrics = metrics;
        self
    }

    /// Offers a query to the forwarder; a full queue drops it and the
    /// client retries.
    fn forward(&self, query: &[u8], client: SocketAddr, listener: usize) {
        let offered = self.forward.as_ref().is_some_and(|queue| {
            queue.offer(ForwardJob {
                query: query.to_vec(),
                client,
                listener,
            })
        });
        let metrics = self.responder.metrics();
        if offered {
            metrics.forwarded();
        } else {
            metrics.dropped(metrics::DropReason::ForwardQueueFull);
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
            let metrics = self.responder.metrics();
            metrics.dropped(metrics::DropReason::SourcePortZero);
            return false;
        }
        let snapshot = self.snapshot.load();
        let action = (self.responder).respond(query, source.ip(), Transport::Udp, snapshot, reply);
        match action {
            Action::Reply => true,
            Action::Drop => false,
            Action::Forward => {
                self.forward(query, source, listener);
                false
            }
        }
    }
}

/// Counts an answered query: its type, the rcode, truncation.
fn count_answer(metrics: &QueryMetrics, query: &[u8], rcode: u16, reply: &[u8]) {
    metrics.query(query_type(query));
    metrics.response(metrics::Rcode::from_code(rcode));
    if reply.len() > 2 && reply[2] & 0x02 != 0 {
        metrics.truncated();
    }
}

fn query_type(query: &[u8]) -> QueryType {
    wire::question_type(query).map_or(QueryType::Other, QueryType::from_code)
}

#[cfg(test)]
mod tests {
    use domain::base::iana::Rtype;
    use domain::base::{MessageBuilder, Name};
    use rand_core::SeedableRng;

    use super::*;
    use crate::access::AccessList;
    use crate::dns::{Zone, ZoneSettings};
    use crate::metrics::{DropReason, Rcode};
    use crate::nodes::NodeSource;
    use crate::policy::Rules;
    use crate::rrl::RrlSettings;

    const CLIENT: &str = "192.0.2.50";

    fn snapshot(forwarding: bool) -> Snapshot {
        let settings = ZoneSettings {
            forwarding,
            ..ZoneSettings::new("alt.example")
        };
        let zone = Arc::new(Zone::new(&settings).unwrap());
        let nodes = ["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()];
        Snapshot::new(1, zone, NodeSource::Cluster, &nodes)
    }

    fn query(name: &str) -> Vec<u8> {
        let mut b = MessageBuilder::new_vec();
        b.header_mut().set_id(0x1234);
        let mut q = b.question();
        q.push((Name::<Vec<u8>>::vec_from_str(name).unwrap(), Rtype::A))
            .unwrap();
        q.finish()
    }

    fn respond(r: &mut Responder, q: &[u8], from: &str, t: Transport, s: &Snapshot) -> Vec<u8> {
        let mut reply = Vec::new();
        let action = r.respond(q, from.parse().unwrap(), t, s, &mut reply);
        match action {
            Action::Reply => reply,
            other => panic!("{other:?} instead of a reply"),
        }
    }

    #[test]
    fn udp_and_tcp_get_the_same_answers_and_drops() {
        let snap = snapshot(false);
        let mut udp = Responder::new(Rng::seed_from_u64(7), Arc::default());
        let mut tcp = Responder::new(Rng::seed_from_u64(7), Arc::default());
        for name in ["alt.example", "missing.alt.example", "example.org"] {
            let q = query(name);
            assert_eq!(
                respond(&mut udp, &q, CLIENT, Transport::Udp, &snap),
                respond(&mut tcp, &q, CLIENT, Transport::Tcp, &snap),
                "{name}"
            );
        }
        let mut response = query("alt.example");
        response[2] |= 0x80;
        for (r, t) in [(&mut udp, Transport::Udp), (&mut tcp, Transport::Tcp)] {
            let action = r.respond(&response, CLIENT.parse().unwrap(), t, &snap, &mut vec![]);
            assert_eq!(action, Action::Drop, "{t:?}");
            let counts = r.metrics().counts();
            assert_eq!(counts.dropped(DropReason::ResponseBit), 1, "{t:?}");
            assert_eq!(counts.response(Rcode::NoError), 1, "{t:?}");
            assert_eq!(counts.response(Rcode::NxDomain), 1, "{t:?}");
            assert_eq!(counts.response(Rcode::Refused), 1, "{t:?}");
        }
    }

    #[test]
    fn sources_outside_the_allow_list_are_refused_or_dropped() {
        let snap = snapshot(false);
        let q = query("alt.example");
        for denied in [Denied::Refuse, Denied::Drop] {
            let policy = Policy::new(Rules {
                access: AccessList::parse(["10.0.0.0/8"]).unwrap(),
                denied,
                ..Rules::default()
            });
            let mut r =
                Responder::new(Rng::seed_from_u64(1), Arc::default()).with_policy(&policy, false);
            let mut reply = Vec::new();
            let action = r.respond(
                &q,
                CLIENT.parse().unwrap(),
                Transport::Udp,
                &snap,
                &mut reply,
            );
            let counts = r.metrics().counts();
            match denied {
                Denied::Refuse => {
                    assert_eq!(action, Action::Reply);
                    assert_eq!(reply[3] & 0x0f, 5, "REFUSED");
                    assert_eq!(counts.response(Rcode::Refused), 1);
                }
                Denied::Drop => {
                    assert_eq!(action, Action::Drop);
                    assert_eq!(counts.dropped(DropReason::AccessDenied), 1);
                }
            }
            let allowed = r.respond(
                &q,
                "10.1.2.3".parse().unwrap(),
                Transport::Udp,
                &snap,
                &mut reply,
            );
            assert_eq!(allowed, Action::Reply, "{denied:?}");
            assert_eq!(reply[3] & 0x0f, 0, "NOERROR");
        }
    }

    #[test]
    fn only_sources_that_may_recurse_are_forwarded() {
        let snap = snapshot(true);
        let q = query("example.org");
        let mut r = Responder::new(Rng::seed_from_u64(1), Arc::default());
        let mut reply = Vec::new();
        let local = "127.0.0.1".parse().unwrap();
        assert_eq!(
            r.respond(&q, local, Transport::Tcp, &snap, &mut reply),
            Action::Forward
        );
        assert_eq!(r.metrics().counts().query(QueryType::A), 1);
        let refused = respond(&mut r, &q, CLIENT, Transport::Tcp, &snap);
        assert_eq!(refused[3] & 0x0f, 5, "REFUSED");
    }

    #[test]
    fn answers_over_the_rate_limit_slip_or_drop() {
        let snap = snapshot(false);
        let q = query("alt.example");
        let settings = RrlSettings {
            slip: 2,
            ..RrlSettings::new(1)
        };
        let policy = Policy::new(Rules {
            rate_limit: Some(settings),
            ..Rules::default()
        });
        let mut r =
            Responder::new(Rng::seed_from_u64(1), Arc::default()).with_policy(&policy, true);
        let mut actions = Vec::new();
        for _ in 0..5 {
            let mut reply = Vec::new();
            let action = r.respond(
                &q,
                CLIENT.parse().unwrap(),
                Transport::Udp,
                &snap,
                &mut reply,
            );
            actions.push((action, action == Action::Reply && reply[2] & 0x02 != 0));
        }
        assert_eq!(actions[0], (Action::Reply, false), "within the burst");
        assert!(actions.contains(&(Action::Reply, true)), "{actions:?}");
        assert!(actions.contains(&(Action::Drop, false)), "{actions:?}");
        let counts = r.metrics().counts();
        assert!(counts.slipped >= 1 && counts.dropped(DropReason::RateLimited) >= 1);
    }
}
