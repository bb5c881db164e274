//! DNS over TCP (RFC 1035 section 4.2.2, RFC 7766): the UDP workers'
//! [`Responder`] behind a two-byte length prefix, without the rate limit.
//!
//! TCP carries little traffic here (clients retry over it after TC=1), so it
//! runs on the control plane's runtime rather than the per-core workers. What
//! matters is that idle or hostile clients cannot exhaust it: connections are
//! capped, and when the cap is reached the connection idle for longest is
//! closed to make room (RFC 7766 section 6.2.3).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand_core::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

use crate::access::Denied;
use crate::dns::{Rng, Transport};
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::nodes::SharedSnapshot;
use crate::policy::Policy;
use crate::responder::{Action, Responder};

/// Limits of the TCP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSettings {
    /// A connection with no complete query for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once, per listener.
    pub max_connections: usize,
}

impl Default for TcpSettings {
    fn default() -> Self {
        TcpSettings {
            idle_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// The open connections of one listener, so the oldest idle one can be closed.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: HashMap<u64, Connection>,
    /// Whether the last `admit` closed a connection to make room.
    evicted: bool,
}

struct Connection {
    /// When the connection last finished a query (or opened).
    idle_since: Instant,
    /// True while a query is being read or answered.
    busy: bool,
    close: Arc<Notify>,
}

type SharedConnections = Arc<Mutex<Connections>>;

fn lock(c: &SharedConnections) -> std::sync::MutexGuard<'_, Connections> {
    // The table holds no invariant a panicking holder could break halfway.
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Connections {
    /// Registers a connection, first closing the longest-idle one if the
    /// table is full. Returns None (refuse the connection) if all are busy.
    fn admit(&mut self, max: usize) -> Option<(u64, Arc<Notify>)> {
        self.evicted = false;
        if self.open.len() >= max {
            let oldest = self
                .open
                .iter()
                .filter(|(_, c)| !c.busy)
                .min_by_key(|(_, c)| c.idle_since)
                .map(|(id, _)| *id)?;
            if let Some(evicted) = self.open.remove(&oldest) {
                evicted.close.notify_one();
                self.evicted = true;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let close = Arc::new(Notify::new());
        self.open.insert(
            id,
            Connection {
                idle_since: Instant::now(),
                busy: false,
                close: Arc::clone(&close),
            },
        );
        Some((id, close))
    }

    fn set_busy(&mut self, id: u64, busy: bool) {
        if let Some(c) = self.open.get_mut(&id) {
            c.busy = busy;
            if !busy {
                c.idle_since = Instant::now();
            }
        }
    }
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    settings: TcpSettings,
    published: SharedSnapshot,
    forwarder: Option<Forwarder>,
    policy: Policy,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = SharedConnections::default();
    let mut seeds = Rng::seed_from_u64(crate::nodes::refresher::seed_from_time());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let rules = policy.rules();
        let allowed = rules.access.allows(peer.ip());
        if !allowed && rules.denied == Denied::Drop {
            metrics
                .tcp()
                .dropped(crate::metrics::DropReason::AccessDenied);
            continue;
        }
        let (admitted, evicted) = {
            let mut table = lock(&connections);
            (table.admit(settings.max_connections), table.evicted)
        };
        let Some((id, close)) = admitted else {
            debug!(%peer, "TCP connection refused: every connection is busy");
            continue;
        };
        metrics.control().tcp_connection_opened();
        let task = ConnectionTask {
            id,
            connections: Arc::clone(&connections),
            published: Arc::clone(&published),
            forwarder: forwarder.clone(),
            peer: peer.ip(),
            // No rate limit over TCP: the handshake proved the source.
            responder: Responder::new(Rng::from_rng(&mut seeds), Arc::clone(metrics.tcp()))
                .with_policy(&policy, false),
            metrics: Arc::clone(&metrics),
            idle_timeout: settings.idle_timeout,
        };
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let ended = tokio::select! {
                ended = task.run(stream, shutdown) => ended,
                () = close.notified() => Ok("closed to make room for a new connection"),
            };
            match ended {
                Ok(why) => debug!(%peer, why, "TCP connection closed"),
                Err(e) => debug!(%peer, error = %e, "TCP connection failed"),
            }
        });
        if evicted {
            // Let the evicted connection's task run and close its socket
            // before accepting more: a burst must not hold more sockets open
            // than the cap.
            tokio::task::yield_now().await;
        }
    }
}

struct ConnectionTask {
    id: u64,
    connections: SharedConnections,
    published: SharedSnapshot,
    forwarder: Option<Forwarder>,
    peer: std::net::IpAddr,
    /// Checks the source again for each query (a source outside the allow
    /// list gets REFUSED; with `--denied drop` it was never accepted), and
    /// reads who may recurse for each query that would be forwarded, so a
    /// reload applies to open connections too.
    responder: Responder,
    metrics: Arc<Metrics>,
    idle_timeout: Duration,
}

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        lock(&self.connections).open.remove(&self.id);
        self.metrics.control().tcp_connection_closed();
    }
}

/// Why a connection stopped reading queries, when no I/O error ended it.
type Closed = &'static str;

impl ConnectionTask {
    /// Answers queries in order until the client closes, goes idle, or the
    /// server shuts down. Queries pipelined by the client are read from the
    /// buffer one after another, each answered with one write.
    async fn run(
        mut self,
        stream: TcpStream,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Closed> {
        stream.set_nodelay(true)?;
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        // Buffers grow to the largest message seen, not to 64 KiB up front:
        // a thousand idle connections must not hold 200 MB.
        let mut query = Vec::new();
        let mut framed = Vec::new();
        let mut reply = Vec::new();
        loop {
            let len = match self
                .read_query(&mut reader, &mut query, &mut shutdown)
                .await?
            {
                Ok(len) => len,
                Err(closed) => return Ok(closed),
            };
            let query = &query[..len];
            let action = {
                let snapshot = self.published.load();
                (self.responder).respond(query, self.peer, Transport::Tcp, &snapshot, &mut reply)
            };
            match (action, &self.forwarder) {
                (Action::Reply, _) => write_framed(&mut writer, &mut framed, &reply).await?,
                (Action::Forward, Some(forwarder)) => {
                    self.metrics.tcp().forwarded();
                    let answer = forwarder.resolve(query).await;
                    if !answer.is_empty() {
                        write_framed(&mut writer, &mut framed, &answer).await?;
                    }
                }
                (Action::Drop | Action::Forward, _) => {}
            }
            lock(&self.connections).set_busy(self.id, false);
        }
    }

    /// Reads the next length-prefixed query into `query` and returns its
    /// length, marking the connection busy once a message has begun; or why
    /// the connection is done.
    async fn read_query(
        &self,
        reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
        query: &mut Vec<u8>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> std::io::Result<Result<usize, Closed>> {
        let len = tokio::select! {
            read = tokio::time::timeout(self.idle_timeout, reader.read_u16()) => match read {
                Ok(Ok(len)) => usize::from(len),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(Err("client closed"));
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(Err("idle timeout")),
            },
            _ = shutdown.wait_for(|stop| *stop) => return Ok(Err("shutdown")),
        };
        lock(&self.connections).set_busy(self.id, true);
        // The rest of a started message gets the same deadline.
        if query.len() < len {
            query.resize(len, 0);
        }
        match tokio::time::timeout(self.idle_timeout, reader.read_exact(&mut query[..len])).await {
            Ok(Ok(_)) => Ok(Ok(len)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Ok(Err("client closed mid-message"))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(Err("timeout within a message")),
        }
    }
}

/// Writes one message with its length prefix in a single write (RFC 7766
/// section 8: no separate segment for the prefix).
async fn write_framed(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    framed: &mut Vec<u8>,
    message: &[u8],
) -> std::io::Result<()> {
    framed.clear();
    framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
    framed.extend_from_slice(message);
    writer.write_all(framed).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_longest_idle_connection() {
        let mut table = Connections::default();
        let (first, first_close) = table.admit(2).unwrap();
        let (second, _) = table.admit(2).unwrap();
        table.set_busy(second, false); // idle since after `first`
        let (third, _) = table.admit(2).unwrap();
        assert!(!table.open.contains_key(&first), "oldest idle evicted");
        assert!(table.open.contains_key(&second) && table.open.contains_key(&third));
        // The evicted connection was told to close.
        let notified = first_close.notified();
        tokio::pin!(notified);
        assert!(futures_ready(notified.as_mut()));
    }

    #[test]
    fn a_full_table_of_busy_connections_refuses() {
        let mut table = Connections::default();
        let (a, _) = table.admit(1).unwrap();
        table.set_busy(a, true);
        assert!(table.admit(1).is_none());
        table.set_busy(a, false);
        assert!(table.admit(1).is_some());
    }

    /// Polls a future once with a no-op waker.
    fn futures_ready<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        f.poll(&mut cx).is_ready()
    }
}
