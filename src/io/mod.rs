//! The data plane's I/O: socket setup and the per-core worker loops.
//!
//! Every worker owns one `SO_REUSEPORT` UDP socket per listen address, so the
//! kernel spreads datagrams across workers without any shared user-space state.
//! A worker runs one of two backends behind the same [`PacketHandler`] seam:
//! io_uring (multishot `RecvMsgMulti` + provided buffer ring) or batched
//! `recvmmsg`/`sendmmsg`. The handler is the pure answer path; the backends
//! never look inside a packet.
//!
//! What callers can rely on, whichever backend runs:
//! - Every buffer is allocated when the worker starts; the packet path does
//!   not allocate (unless a handler grows `reply` past its capacity).
//! - Nothing read from the network can make a worker panic: lengths and
//!   addresses the kernel reports are bounds-checked, datagrams from port 0
//!   (or an unspecified address) are dropped before the handler, and replies
//!   that are empty or longer than [`MAX_UDP_REPLY`] are dropped.
//! - A worker returns within about 200 ms of `shutdown` being set: recvmmsg
//!   at once (the signal wakes its sockets), io_uring when its wait ends (it
//!   adds a cancel-and-reap of its requests, normally well under 1 ms).
//! - Per-packet errors are logged at warn level at most once a minute per
//!   error site, with a count of the ones held back; only errors that would
//!   recur forever (bad fd, invalid request) end the worker with an
//!   [`IoError`]. On return a worker logs its packet counters at debug level.

pub mod mmsg;
pub mod socket;
mod stop;
pub mod uring;

pub use socket::{bind_udp_reuseport, bind_worker_sockets, pin_current_thread};
pub use stop::StopSignal;

use std::net::{SocketAddr, UdpSocket};

/// Largest UDP reply a worker ever sends. Reply buffers are allocated once with
/// this capacity; handlers must not write more.
pub const MAX_UDP_REPLY: usize = 4096;

/// Largest UDP datagram a worker reads; longer ones are truncated by the kernel
/// and then rejected by the answer path.
pub const MAX_UDP_QUERY: usize = 4096;

/// Which I/O backend a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Uring,
    Mmsg,
}

impl Backend {
    /// The name used in logs, metrics and `--io`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Mmsg => "mmsg",
        }
    }
}

/// Turns one received datagram into at most one reply.
///
/// Implemented by the answer path; backends call it once per datagram.
pub trait PacketHandler {
    /// `listener` is the index, in [`WorkerSockets::sockets`], of the socket the
    /// query arrived on. `reply` arrives empty with at least [`MAX_UDP_REPLY`]
    /// bytes of capacity. Returns true when `reply` holds a datagram to send
    /// back to `source`.
    fn handle(
        &mut self,
        query: &[u8],
        source: SocketAddr,
        listener: usize,
        reply: &mut Vec<u8>,
    ) -> bool;
}

/// What a worker thread is given at start-up.
pub struct WorkerSockets {
    /// One bound UDP socket per listen address, in listen order.
    pub sockets: Vec<UdpSocket>,
    /// Set once to ask the worker to return.
    pub shutdown: StopSignal,
}

/// Why a socket could not be set up or a worker loop stopped.
///
/// `Display` includes the underlying OS error, so `{e}` alone is a complete
/// log line; `source()` returns it too.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// Creating, configuring or binding a listen socket failed.
    #[error("cannot bind UDP socket to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused to create an io_uring or register its buffers.
    #[error("io_uring setup failed: {0}")]
    UringSetup(#[source] std::io::Error),
    /// The kernel's io_uring lacks a feature the uring backend needs.
    #[error("io_uring lacks {0}")]
    UringUnsupported(&'static str),
    /// A syscall in a worker loop failed in a way the loop cannot recover from.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Runs one worker's receive/answer/send loop on the chosen backend until
/// `sockets.shutdown` is set (returns within about 200 ms of that).
///
/// Call [`uring::probe`] once at start-up before choosing [`Backend::Uring`];
/// a worker whose ring setup fails returns [`IoError::UringSetup`].
pub fn run_worker<H: PacketHandler>(
    backend: Backend,
    sockets: WorkerSockets,
    handler: &mut H,
) -> Result<(), IoError> {
    match backend {
        Backend::Uring => uring::run(sockets, handler),
        Backend::Mmsg => mmsg::run(sockets, handler),
    }
}

/// Logs an error at most once per [`RateLimitedLog::INTERVAL`], counting the
/// ones it held back, so a flood of bad packets cannot flood the log.
///
/// One per worker and error site; no locking, no allocation per call.
pub(crate) struct RateLimitedLog {
    what: &'static str,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    pub(crate) const INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

    pub(crate) const fn new(what: &'static str) -> Self {
        Self {
            what,
            last: None,
            suppressed: 0,
        }
    }

    /// Logs `err` at warn level unless this site logged within the interval.
    pub(crate) fn warn(&mut self, err: &dyn std::fmt::Display) {
        let now = std::time::Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < Self::INTERVAL => self.suppressed += 1,
            _ => {
                tracing::warn!(
                    suppressed = self.suppressed,
                    "{}: {err} (logged at most once a minute)",
                    self.what
                );
                self.last = Some(now);
                self.suppressed = 0;
            }
        }
    }
}

/// Per-worker packet counters, logged at debug level when a worker returns.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) received: u64,
    pub(crate) replied: u64,
    /// Replies the handler produced but the worker could not send.
    pub(crate) dropped: u64,
    /// Datagrams ignored before the handler: source port 0 or unreadable address.
    pub(crate) ignored: u64,
    /// io_uring only: times the receive buffer ring ran dry. Datagrams wait
    /// in the socket buffer meanwhile; a steady count means the worker is
    /// slower than its traffic.
    pub(crate) overruns: u64,
}

impl Counters {
    pub(crate) fn log_exit(&self, backend: &str) {
        tracing::debug!(
            backend,
            received = self.received,
            replied = self.replied,
            dropped = self.dropped,
            ignored = self.ignored,
            overruns = self.overruns,
            "worker stopped"
        );
    }
}
