//! Default backend: batched `recvmmsg`/`sendmmsg`.
//!
//! Used where io_uring is missing or restricted (old kernels, seccomp
//! profiles that block it). One `recvmmsg` reads up to [`BATCH`] datagrams,
//! the handler answers them, and one `sendmmsg` sends every reply of the
//! batch, so a busy worker makes about two syscalls per 32 packets.
//!
//! All buffers, iovecs, headers and address slots are allocated once per
//! worker; the loop itself never allocates.
//!
//! Shutdown: a worker with one socket blocks in `recvmmsg`, one with
//! several in `poll`, without a timeout (a timer per wait costs CPU at
//! moderate load: see [`StopSignal`](super::StopSignal)); setting the signal shuts the
//! sockets down for reading, which wakes the wait, and the worker returns.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::socket::{is_unanswerable, sockaddr_from_storage, sockaddr_to_storage};
use super::{
    Counters, IoError, PacketHandler, RateLimitedLog, WorkerSockets, MAX_UDP_QUERY, MAX_UDP_REPLY,
};

/// Datagrams per `recvmmsg` / replies per `sendmmsg`.
pub const BATCH: usize = 32;

/// How often a send interrupted by a signal is retried before it is dropped.
const MAX_EINTR_RETRIES: u32 = 8;

/// Runs the worker loop until `sockets.shutdown` is set.
///
/// Errors only for failures that would repeat forever (bad fd, bad argument);
/// per-packet errors are logged (rate-limited) and the packet dropped.
pub fn run<H: PacketHandler>(sockets: WorkerSockets, handler: &mut H) -> Result<(), IoError> {
    // Held until this returns or unwinds: a worker gone for good leaves no
    // copy of its sockets open in the stop signal.
    let _registered = (sockets.sockets.iter())
        .map(|socket| sockets.shutdown.wake_on_stop(socket))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| IoError::Io {
            context: "copying a socket for the stop signal",
            source,
        })?;
    let mut worker = Worker::new();
    let result = match sockets.sockets.as_slice() {
        [single] => worker.run_single(single, &sockets, handler),
        many => worker.run_polled(many, &sockets, handler),
    };
    worker.counters.log_exit("mmsg");
    result
}

/// Per-worker state: the batch buffers and error-log throttles.
struct Worker {
    rx: RecvBatch,
    tx: SendBatch,
    counters: Counters,
    recv_log: RateLimitedLog,
    send_log: RateLimitedLog,
}

impl Worker {
    fn new() -> Self {
        Self {
            rx: RecvBatch::new(),
            tx: SendBatch::new(),
            counters: Counters::default(),
            recv_log: RateLimitedLog::new("mmsg: receive failed"),
            send_log: RateLimitedLog::new("mmsg: reply dropped"),
        }
    }

    /// One socket: block in `recvmmsg(MSG_WAITFORONE)` until traffic, or
    /// until the stop signal shuts the socket down.
    fn run_single<H: PacketHandler>(
        &mut self,
        socket: &UdpSocket,
        sockets: &WorkerSockets,
        handler: &mut H,
    ) -> Result<(), IoError> {
        let fd = socket.as_raw_fd();
        while !sockets.shutdown.is_set() {
            self.serve_batch(fd, 0, libc::MSG_WAITFORONE, handler)?;
        }
        Ok(())
    }

    /// Several sockets: `poll` them all, then drain one batch from each
    /// readable one (without blocking).
    fn run_polled<H: PacketHandler>(
        &mut self,
        socks: &[UdpSocket],
        sockets: &WorkerSockets,
        handler: &mut H,
    ) -> Result<(), IoError> {
        let mut fds: Vec<libc::pollfd> = socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        while !sockets.shutdown.is_set() {
            if !self.poll(&mut fds)? {
                continue;
            }
            for (listener, pfd) in fds.iter().enumerate() {
                if pfd.revents & libc::POLLNVAL != 0 {
                    return Err(IoError::Io {
                        context: "poll: socket closed under the worker",
                        source: io::Error::from_raw_os_error(libc::EBADF),
                    });
                }
                if pfd.revents & (libc::POLLIN | libc::POLLERR) != 0 {
                    self.serve_batch(pfd.fd, listener, libc::MSG_DONTWAIT, handler)?;
                }
            }
        }
        Ok(())
    }

    /// Waits for traffic (or the stop signal, which shuts the sockets
    /// down); true when some socket is ready.
    fn poll(&mut self, fds: &mut [libc::pollfd]) -> Result<bool, IoError> {
        // SAFETY: `fds` is an exclusive, live slice of `fds.len()` pollfds;
        // the kernel writes only their `revents` fields during the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => Ok(false),
            Some(libc::ENOMEM) | Some(libc::EAGAIN) => {
                self.recv_log.warn(&err);
                std::thread::sleep(Duration::from_millis(1));
                Ok(false)
            }
            _ => Err(IoError::Io {
                context: "poll",
                source: err,
            }),
        }
    }

    /// Receives one batch from `fd`, answers it and sends the replies.
    fn serve_batch<H: PacketHandler>(
        &mut self,
        fd: RawFd,
        listener: usize,
        flags: libc::c_int,
        handler: &mut H,
    ) -> Result<(), IoError> {
        let n = match self.rx.recv(fd, flags) {
            Ok(n) => n,
            Err(err) => return self.recv_error(err),
        };
        self.counters.received += n as u64;
        for i in 0..n {
            self.answer(i, listener, handler);
        }
        let (sent, dropped) = self.tx.flush(fd, &mut self.send_log);
        self.counters.replied += sent;
        self.counters.dropped += dropped;
        Ok(())
    }

    /// Passes datagram `i` of the received batch to the handler and queues
    /// its reply.
    fn answer<H: PacketHandler>(&mut self, i: usize, listener: usize, handler: &mut H) {
        let Some(source) = self.rx.source(i).filter(|s| !is_unanswerable(s)) else {
            self.counters.ignored += 1;
            return;
        };
        let query = self.rx.payload(i);
        let reply = self.tx.next_reply();
        if !handler.handle(query, source, listener, reply) {
            return;
        }
        if reply.len() > MAX_UDP_REPLY || reply.is_empty() {
            self.counters.dropped += 1;
            return;
        }
        self.tx.commit(&source);
    }

    /// Timeouts and signals are normal; transient errors are logged; errors
    /// that would recur on every call end the worker.
    fn recv_error(&mut self, err: io::Error) -> Result<(), IoError> {
        match err.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(()),
            Some(libc::EBADF | libc::EFAULT | libc::EINVAL | libc::ENOTSOCK) => Err(IoError::Io {
                context: "recvmmsg",
                source: err,
            }),
            _ => {
                // ECONNREFUSED, ENOBUFS, ENOMEM and the like: the kernel
                // reports them once; the next call reads traffic again.
                self.recv_log.warn(&err);
                Ok(())
            }
        }
    }
}

/// Receive side of a batch: one `MAX_UDP_QUERY` buffer, address slot,
/// iovec and header per datagram.
///
/// The headers and iovecs are pointed at their buffers once, in
/// [`RecvBatch::new`]: `recvmmsg` reads the iovecs without writing them and
/// writes, in the headers of the datagrams it returns, only the name length,
/// the flags and the message length. So before each call only the name
/// lengths of the previous call's datagrams are reset: at moderate load a
/// wake-up brings one or two datagrams, and rewriting all [`BATCH`] headers
/// and iovecs each time touched about 40 cache lines for nothing
/// (`benches/README.md`, experiment 22).
struct RecvBatch {
    data: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    /// Read by the kernel only, through the headers' `msg_iov`.
    _iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Datagrams the last `recvmmsg` returned: the headers to reset.
    used: usize,
}

impl RecvBatch {
    fn new() -> Self {
        let mut data = vec![0u8; BATCH * MAX_UDP_QUERY];
        let mut addrs: Vec<_> = (0..BATCH).map(|_| zeroed_storage()).collect();
        let mut iovs: Vec<_> = (data.chunks_exact_mut(MAX_UDP_QUERY))
            .map(|buf| libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            })
            .collect();
        let hdrs = (iovs.iter_mut().zip(addrs.iter_mut()))
            .map(|(iov, addr)| {
                let mut hdr = empty_mmsghdr();
                hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                hdr.msg_hdr.msg_namelen = STORAGE_LEN;
                hdr.msg_hdr.msg_iov = iov;
                hdr.msg_hdr.msg_iovlen = 1;
                hdr
            })
            .collect();
        // The vectors' heap buffers never move or grow after this, so the
        // pointers above stay valid for the batch's life.
        Self {
            data,
            addrs,
            _iovs: iovs,
            hdrs,
            used: 0,
        }
    }

    /// Reads up to [`BATCH`] datagrams; returns how many arrived.
    fn recv(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        for hdr in &mut self.hdrs[..self.used] {
            hdr.msg_hdr.msg_namelen = STORAGE_LEN;
        }
        self.used = 0;
        // SAFETY: each of the BATCH headers points at its own iovec (one
        // MAX_UDP_QUERY-byte region of `data`) and its own sockaddr_storage
        // with matching lengths, set in `new` and never changed but for the
        // name lengths reset above; all are owned by `self`, whose heap
        // buffers do not move, and not otherwise borrowed during the call;
        // a null timeout is allowed.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.used = (rc as usize).min(BATCH);
        Ok(self.used)
    }

    fn source(&self, i: usize) -> Option<std::net::SocketAddr> {
        let namelen = self.hdrs[i].msg_hdr.msg_namelen as usize;
        sockaddr_from_storage(&self.addrs[i], namelen)
    }

    /// The bytes of datagram `i` (truncated to `MAX_UDP_QUERY` by the kernel).
    fn payload(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(MAX_UDP_QUERY);
        let start = i * MAX_UDP_QUERY;
        &self.data[start..start + len]
    }
}

/// Send side of a batch: reply buffers and their destinations, sent with
/// one `sendmmsg`.
struct SendBatch {
    replies: Box<[Vec<u8>]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Replies committed so far in this batch.
    len: usize,
}

impl SendBatch {
    fn new() -> Self {
        Self {
            replies: (0..BATCH)
                .map(|_| Vec::with_capacity(MAX_UDP_REPLY))
                .collect(),
            addrs: (0..BATCH).map(|_| zeroed_storage()).collect(),
            iovs: (0..BATCH).map(|_| empty_iovec()).collect(),
            hdrs: (0..BATCH).map(|_| empty_mmsghdr()).collect(),
            len: 0,
        }
    }

    /// The cleared buffer the next reply is written into. At most one reply
    /// per received datagram, so there is always one free.
    fn next_reply(&mut self) -> &mut Vec<u8> {
        let reply = &mut self.replies[self.len];
        reply.clear();
        reply
    }

    /// Keeps the reply written into [`Self::next_reply`] for `dest`.
    fn commit(&mut self, dest: &std::net::SocketAddr) {
        let namelen = sockaddr_to_storage(dest, &mut self.addrs[self.len]);
        self.hdrs[self.len].msg_hdr.msg_namelen = namelen;
        self.len += 1;
    }

    /// Sends the committed replies; returns (sent, dropped). A partial send
    /// is continued from the first unsent reply; a reply the kernel refuses
    /// is logged (rate-limited) and skipped, so the loop always ends.
    fn flush(&mut self, fd: RawFd, log: &mut RateLimitedLog) -> (u64, u64) {
        let n = std::mem::take(&mut self.len);
        self.prepare(n);
        let (mut start, mut dropped, mut eintr) = (0, 0, 0);
        while start < n {
            let rest = &mut self.hdrs[start..n];
            // SAFETY: every header in `rest` points at its own iovec (over a
            // live reply Vec of iov_len initialised bytes) and sockaddr, set
            // by `prepare` and not touched until the call returns.
            let rc = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as _, 0) };
            if rc > 0 {
                start += rc as usize;
                continue;
            }
            let err = match rc {
                0 => io::Error::from(io::ErrorKind::WriteZero),
                _ => io::Error::last_os_error(),
            };
            if err.kind() == io::ErrorKind::Interrupted && eintr < MAX_EINTR_RETRIES {
                eintr += 1;
                continue;
            }
            log.warn(&err);
            dropped += 1;
            start += 1;
        }
        ((n - dropped) as u64, dropped as u64)
    }

    /// Points the first `n` headers at their reply and address.
    fn prepare(&mut self, n: usize) {
        let slots = self
            .hdrs
            .iter_mut()
            .zip(self.iovs.iter_mut())
            .zip(self.addrs.iter_mut())
            .zip(self.replies.iter())
            .take(n);
        for (((hdr, iov), addr), reply) in slots {
            *iov = libc::iovec {
                iov_base: reply.as_ptr() as *mut libc::c_void,
                iov_len: reply.len(),
            };
            hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_len = 0;
        }
    }
}

/// The size of an address slot, the name length `recvmmsg` may fill.
const STORAGE_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_storage>() as _;

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain integers; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

fn empty_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is integers and raw pointers; all-zero (null
    // pointers, zero lengths) is a valid, empty header.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::super::socket::testutil;

    #[test]
    fn echoes_many_datagrams() {
        testutil::check_echo_many(super::run);
    }

    #[test]
    fn serves_several_sockets() {
        testutil::check_two_sockets(super::run);
    }

    #[test]
    fn stops_on_shutdown() {
        testutil::check_shutdown(super::run);
    }

    #[test]
    fn survives_hostile_input() {
        testutil::check_hostile_input(super::run);
    }
}
