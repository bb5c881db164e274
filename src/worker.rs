//! What a UDP worker does with each datagram, between the I/O backend and the
//! answer path: read the current snapshot, answer, or hand the query to the
//! forwarder.
//!
//! Everything here runs once per packet on a pinned core, so it holds only
//! what it needs by value (its own random generator, a lock-free snapshot
//! cache) and allocates nothing, except when a query is forwarded, which is
//! off the fast path by definition.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::Cache;

use crate::dns::{respond, Outcome, Rng, Transport};
use crate::forward::{ForwardJob, ForwardQueue};
use crate::io::PacketHandler;
use crate::nodes::{SharedSnapshot, Snapshot};

/// Answers UDP queries on one worker.
pub struct UdpResponder {
    snapshot: Cache<SharedSnapshot, Arc<Snapshot>>,
    rng: Rng,
    forward: Option<ForwardQueue>,
}

impl UdpResponder {
    pub fn new(published: &SharedSnapshot, rng: Rng, forward: Option<ForwardQueue>) -> Self {
        UdpResponder {
            snapshot: Cache::new(Arc::clone(published)),
            rng,
            forward,
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
            return false;
        }
        let snapshot = self.snapshot.load();
        match respond(query, Transport::Udp, snapshot, &mut self.rng, reply) {
            Outcome::Reply(_) => true,
            Outcome::Drop(_) => false,
            Outcome::Forward => {
                if let Some(queue) = &self.forward {
                    // A full queue drops the query; the client retries.
                    queue.offer(ForwardJob {
                        query: query.to_vec(),
                        client: source,
                        listener,
                    });
                }
                false
            }
        }
    }
}
