//! Forwarding of names outside the zone to upstream resolvers.
//!
//! With `--forward`, this server can be a client machine's only resolver: it
//! answers the Alternator name itself and passes every other query upstream.
//! Forwarding runs on the control plane, never on a UDP worker: a worker only
//! copies the query into a bounded queue, so a slow or dead upstream cannot
//! delay the Alternator answers.
//!
//! Each upstream query gets a fresh random ID and a fresh socket (so a fresh
//! source port chosen by the kernel); an answer is accepted only from the
//! upstream's address, with that ID and the same question, which is what makes
//! off-path spoofing hard. An upstream that times out is followed by the next
//! one; a truncated UDP answer is retried over TCP; when every upstream fails
//! the client gets SERVFAIL. The client's own ID and question case are put
//! back before the answer is returned.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn};

use crate::dns::wire::{self, HEADER_LEN};
use crate::metrics::Metrics;

/// Forwarding as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSettings {
    /// Upstream resolvers, tried in turn.
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream gets to answer one query.
    pub timeout: Duration,
    /// Forwarded queries in progress at once; more are answered SERVFAIL.
    pub max_outstanding: usize,
}

/// A query a UDP worker hands over: copied, since the worker's buffer is
/// reused at once.
#[derive(Debug)]
pub struct ForwardJob {
    pub query: Vec<u8>,
    pub client: SocketAddr,
    /// Index of the listen address the query arrived on.
    pub listener: usize,
}

/// The workers' side of the queue: never blocks.
#[derive(Clone)]
pub struct ForwardQueue {
    tx: mpsc::Sender<ForwardJob>,
}

impl ForwardQueue {
    /// Queues a job; false when the queue is full (the caller drops the query
    /// and the client retries).
    pub fn offer(&self, job: ForwardJob) -> bool {
        self.tx.try_send(job).is_ok()
    }
}

/// Why one upstream gave no usable answer.
#[derive(Debug, Error)]
enum UpstreamError {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("answer longer than the TCP length prefix allows")]
    Oversized,
}

/// Resolves queries through the upstreams; cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    settings: Arc<ForwardSettings>,
    permits: Arc<Semaphore>,
    /// Rotates the first upstream tried, spreading load across them.
    next: Arc<AtomicUsize>,
    /// Queries being forwarded now, for the metrics' gauge.
    outstanding: Arc<AtomicUsize>,
    metrics: Option<Arc<Metrics>>,
}

/// Counts one forwarded query in flight, for as long as it lives.
struct InFlight<'a>(&'a Forwarder);

impl<'a> InFlight<'a> {
    fn new(forwarder: &'a Forwarder) -> Self {
        let now = forwarder.outstanding.fetch_add(1, Ordering::Relaxed) + 1;
        forwarder.report(now);
        InFlight(forwarder)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let now = self.0.outstanding.fetch_sub(1, Ordering::Relaxed) - 1;
        self.0.report(now);
    }
}

impl Forwarder {
    pub fn new(settings: ForwardSettings) -> Forwarder {
        Forwarder {
            permits: Arc::new(Semaphore::new(settings.max_outstanding)),
            settings: Arc::new(settings),
            next: Arc::new(AtomicUsize::new(0)),
            outstanding: Arc::new(AtomicUsize::new(0)),
            metrics: None,
        }
    }

    /// Reports the number of queries in flight to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Forwarder {
        self.metrics = Some(metrics);
        self
    }

    fn report(&self, outstanding: usize) {
        if let Some(metrics) = &self.metrics {
            metrics
                .control()
                .set_forward_outstanding(outstanding as u64);
        }
    }

    /// A queue for the UDP workers and the receiving end for [`Self::serve_udp`].
    pub fn queue(&self) -> (ForwardQueue, mpsc::Receiver<ForwardJob>) {
        let (tx, rx) = mpsc::channel(self.settings.max_outstanding.max(1));
        (ForwardQueue { tx }, rx)
    }

    /// Answers the UDP workers' jobs until the queue closes, replying from a
    /// socket bound to the address each query arrived on.
    pub async fn serve_udp(self, mut jobs: mpsc::Receiver<ForwardJob>, replies: Vec<StdUdpSocket>) {
        let replies = Arc::new(replies);
        while let Some(job) = jobs.recv().await {
            let forwarder = self.clone();
            let replies = Arc::clone(&replies);
            tokio::spawn(async move {
                let answer = forwarder.resolve(&job.query).await;
                let Some(socket) = replies.get(job.listener) else {
                    return;
                };
                // A UDP send does not block for long; an error (the socket
                // buffer is full) loses this one answer, and the client retries.
                if let Err(e) = socket.send_to(&answer, job.client) {
                    debug!(client = %job.client, error = %e, "forwarded answer not sent");
                }
            });
        }
    }

    /// The answer to `query` (a well-formed query with one question), with the
    /// client's ID and question case; SERVFAIL when no upstream answers or too
    /// many queries are being forwarded already.
    pub async fn resolve(&self, query: &[u8]) -> Vec<u8> {
        let Some(question_end) = wire::question_end(query) else {
            return servfail(query);
        };
        let Ok(_permit) = self.permits.try_acquire() else {
            debug!("too many forwarded queries outstanding; answering SERVFAIL");
            return servfail(query);
        };
        let _in_flight = InFlight::new(self);
        let upstreams = &self.settings.upstreams;
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..upstreams.len() {
            let upstream = upstreams[(first + i) % upstreams.len()];
            match self.ask(upstream, query, question_end).await {
                Ok(mut answer) => {
                    // The client's ID, and its question as sent (0x20 case).
                    answer[..2].copy_from_slice(&query[..2]);
                    answer[HEADER_LEN..question_end]
                        .copy_from_slice(&query[HEADER_LEN..question_end]);
                    return answer;
                }
                Err(e) => debug!(%upstream, error = %e, "upstream failed; trying the next"),
            }
        }
        warn_all_failed(upstreams.len());
        servfail(query)
    }

    /// One upstream: UDP first, TCP when the UDP answer is truncated.
    async fn ask(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        question_end: usize,
    ) -> Result<Vec<u8>, UpstreamError> {
        let deadline = Instant::now() + self.settings.timeout;
        let mut ours = query.to_vec();
        ours[..2].copy_from_slice(&random_id().to_be_bytes());
        let answer = timeout_at(deadline, ask_udp(upstream, &ours, question_end))
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        if answer[2] & 0x02 == 0 {
            return Ok(answer);
        }
        ours[..2].copy_from_slice(&random_id().to_be_bytes());
        timeout_at(deadline, ask_tcp(upstream, &ours, question_end))
            .await
            .map_err(|_| UpstreamError::Timeout)?
    }
}

/// Sends `query` from a fresh socket connected to `upstream` (so the kernel
/// drops datagrams from any other address) and waits for the matching answer;
/// anything else that arrives is ignored.
async fn ask_udp(
    upstream: SocketAddr,
    query: &[u8],
    question_end: usize,
) -> Result<Vec<u8>, UpstreamError> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; u16::MAX as usize];
    loop {
        let len = socket.recv(&mut buf).await?;
        if matches(query, &buf[..len], question_end) {
            buf.truncate(len);
            return Ok(buf);
        }
        debug!(%upstream, "ignoring an upstream datagram that does not match the query");
    }
}

/// The same over TCP, for answers that did not fit in UDP.
async fn ask_tcp(
    upstream: SocketAddr,
    query: &[u8],
    question_end: usize,
) -> Result<Vec<u8>, UpstreamError> {
    let mut stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let len = u16::try_from(query.len()).map_err(|_| UpstreamError::Oversized)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    loop {
        let len = usize::from(stream.read_u16().await?);
        let mut answer = vec![0u8; len];
        stream.read_exact(&mut answer).await?;
        if matches(query, &answer, question_end) {
            return Ok(answer);
        }
    }
}

/// Whether `answer` answers `query`: a response (QR=1) with the same ID and
/// the same question (name compared without regard to ASCII case).
fn matches(query: &[u8], answer: &[u8], question_end: usize) -> bool {
    answer.len() >= question_end
        && answer[..2] == query[..2]
        && answer[2] & 0x80 != 0
        && answer[4..6] == [0, 1]
        && answer[HEADER_LEN..question_end].eq_ignore_ascii_case(&query[HEADER_LEN..question_end])
}

/// SERVFAIL for `query`: its header and question, QR and RA set, no other
/// section; a bare header when the question cannot be read.
fn servfail(query: &[u8]) -> Vec<u8> {
    let mut reply = Vec::with_capacity(query.len());
    if !wire::short_reply(query, 2, false, true, &mut reply) {
        reply.extend_from_slice(&query[..HEADER_LEN.min(query.len())]);
        if reply.len() == HEADER_LEN {
            reply[2] = 0x80 | (query[2] & 0x79);
            reply[3] = 0x82;
            reply[4..].fill(0);
        }
    }
    reply
}

fn random_id() -> u16 {
    // getrandom only fails without any entropy source; a time-derived ID
    // is then the best left, and the fresh source port still protects.
    getrandom::u32().map_or_else(
        |_| crate::nodes::refresher::seed_from_time() as u16,
        |v| v as u16,
    )
}

/// Logs that every upstream failed, at most once every ten seconds.
fn warn_all_failed(upstreams: usize) {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
        *last = Some(std::time::Instant::now());
        warn!(
            upstreams,
            "no upstream answered a forwarded query; answering SERVFAIL"
        );
    }
}

#[cfg(test)]
mod tests;
