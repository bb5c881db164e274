//! One worker thread's loop over its ring: arm a multishot receive per
//! socket, wait, answer each received datagram through the handler, queue
//! the replies; on drop, cancel everything and free memory only once the
//! kernel holds no reference to it.

use std::io;
use std::mem::ManuallyDrop;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, RecvMsgOut};
use io_uring::{cqueue, opcode};

use super::super::socket::{is_unanswerable, sockaddr_from_bytes, SOCKADDR_NAME_LEN};
use super::buf_ring::BufRing;
use super::queue::{Op, Queue};
use super::send_pool::SendPool;
use super::setup::{build_ring, chosen_flags};
use super::{
    Counters, IoError, PacketHandler, RateLimitedLog, Sizes, WorkerSockets, BUF_GROUP, BUSY_BATCH,
    CQ_ENTRIES, MAX_UDP_REPLY, QUIESCE_LIMIT, WAIT,
};

/// Everything the kernel may point into. Freed only once it no longer does.
pub(super) struct Shared {
    pub(super) queue: Queue,
    pub(super) bufs: BufRing,
    /// Template for every multishot receive: only the name length is set.
    pub(super) recv_hdr: Box<libc::msghdr>,
}

/// One worker's ring and the state of its sockets.
pub(super) struct Worker {
    pub(super) shared: ManuallyDrop<Shared>,
    pub(super) fds: Vec<RawFd>,
    /// Whether socket i has a multishot receive the kernel has not ended.
    pub(super) armed: Vec<bool>,
    /// Handler output when no send slot is free (the reply is dropped).
    pub(super) scratch: Vec<u8>,
    pub(super) counters: Counters,
    pub(super) recv_log: RateLimitedLog,
}

impl Worker {
    pub(super) fn new(sockets: &[UdpSocket], sizes: Sizes) -> Result<Self, IoError> {
        if sockets.len() > usize::from(u16::MAX) {
            return Err(IoError::UringUnsupported(
                "more than 65535 sockets per worker",
            ));
        }
        let ring = build_ring(chosen_flags()?).map_err(IoError::UringSetup)?;
        let bufs = BufRing::new(sizes.bufs).map_err(IoError::UringSetup)?;
        // SAFETY: the entry area is page-aligned and `bufs.count` entries long;
        // it lives in `Shared` next to the ring and is unmapped only after
        // the ring is closed (field order) or never (leak on failed drain).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ring_addr(),
                bufs.count,
                BUF_GROUP,
                0,
            )
        }
        .map_err(IoError::UringSetup)?;
        bufs.publish();
        // SAFETY: msghdr is integers and raw pointers; all-zero is valid.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = SOCKADDR_NAME_LEN as libc::socklen_t;
        let min_wait = ring.params().is_feature_min_timeout();
        let queue = Queue {
            ring,
            min_wait,
            pool: SendPool::new(sizes.slots),
            batch: Vec::with_capacity(CQ_ENTRIES as usize),
            enter_log: RateLimitedLog::new("io_uring: wait failed"),
        };
        Ok(Self {
            shared: ManuallyDrop::new(Shared {
                queue,
                bufs,
                recv_hdr,
            }),
            fds: sockets.iter().map(|s| s.as_raw_fd()).collect(),
            armed: vec![false; sockets.len()],
            scratch: Vec::with_capacity(MAX_UDP_REPLY),
            counters: Counters::default(),
            recv_log: RateLimitedLog::new("io_uring: receive failed"),
        })
    }

    /// The loop: re-arm, publish buffers, submit + wait, answer completions.
    pub(super) fn serve<H: PacketHandler>(
        &mut self,
        sockets: &WorkerSockets,
        handler: &mut H,
    ) -> Result<(), IoError> {
        let mut batch_next_wait = false;
        while !sockets.shutdown.is_set() {
            self.arm_idle()?;
            self.shared.bufs.publish();
            self.shared.queue.wait(WAIT, batch_next_wait)?;
            self.shared.queue.reap();
            batch_next_wait = self.shared.queue.batch.len() >= BUSY_BATCH;
            self.process(handler)?;
        }
        Ok(())
    }

    /// Arms a multishot receive on every socket that has none.
    pub(super) fn arm_idle(&mut self) -> Result<(), IoError> {
        for (i, &fd) in self.fds.iter().enumerate() {
            if self.armed[i] {
                continue;
            }
            let hdr: *const libc::msghdr = &*self.shared.recv_hdr;
            let sqe = opcode::RecvMsgMulti::new(Fd(fd), hdr, BUF_GROUP)
                .build()
                .user_data(Op::Recv { socket: i as u16 }.encode());
            // SAFETY: the entry points at `recv_hdr`, which lives in `Shared`
            // until the kernel is done with every request.
            self.armed[i] = unsafe { self.shared.queue.push(&sqe) }?;
        }
        Ok(())
    }

    /// Handles the drained receive completions (more may be appended while
    /// handling, when a send slot has to be reaped).
    pub(super) fn process<H: PacketHandler>(&mut self, handler: &mut H) -> Result<(), IoError> {
        let mut i = 0;
        while let Some(cqe) = self.shared.queue.batch.get(i).cloned() {
            i += 1;
            if let Op::Recv { socket } = Op::decode(cqe.user_data()) {
                self.on_recv(usize::from(socket), &cqe, handler)?;
            }
        }
        self.shared.queue.batch.clear();
        Ok(())
    }

    pub(super) fn on_recv<H: PacketHandler>(
        &mut self,
        socket: usize,
        cqe: &cqueue::Entry,
        handler: &mut H,
    ) -> Result<(), IoError> {
        let flags = cqe.flags();
        if !cqueue::more(flags) {
            if let Some(armed) = self.armed.get_mut(socket) {
                *armed = false; // re-armed at the top of the next loop
            }
        }
        let bid = cqueue::buffer_select(flags);
        let result = match (cqe.result(), bid) {
            (res, Some(bid)) if res >= 0 => self.answer(socket, bid, res as usize, handler),
            (res, _) if res < 0 => self.recv_error(-res),
            _ => Ok(()), // success without a buffer: nothing to read
        };
        if let Some(bid) = bid {
            self.shared.bufs.recycle(bid);
        }
        result
    }

    /// Passes one received datagram to the handler and queues its reply.
    pub(super) fn answer<H: PacketHandler>(
        &mut self,
        socket: usize,
        bid: u16,
        len: usize,
        handler: &mut H,
    ) -> Result<(), IoError> {
        let Shared {
            queue,
            bufs,
            recv_hdr,
        } = &mut *self.shared;
        // SAFETY: `bid` came in this completion and is recycled only after
        // this function returns (by `on_recv`).
        let buf = unsafe { bufs.buffer(bid, len) };
        let Some(msg) = buf.and_then(|b| RecvMsgOut::parse(b, recv_hdr).ok()) else {
            self.counters.ignored += 1;
            return Ok(());
        };
        self.counters.received += 1;
        let source = sockaddr_from_bytes(msg.name_data()).filter(|s| !is_unanswerable(s));
        let (Some(source), Some(&fd)) = (source, self.fds.get(socket)) else {
            self.counters.ignored += 1;
            return Ok(());
        };
        let Some(slot) = queue.free_slot()? else {
            self.scratch.clear();
            if handler.handle(msg.payload_data(), source, socket, &mut self.scratch) {
                self.counters.dropped += 1;
            }
            return Ok(());
        };
        let reply = queue.pool.reply(slot);
        if !handler.handle(msg.payload_data(), source, socket, reply) {
            queue.pool.unsend(slot);
            return Ok(());
        }
        if reply.is_empty() || reply.len() > MAX_UDP_REPLY {
            queue.pool.unsend(slot);
            self.counters.dropped += 1;
            return Ok(());
        }
        let sqe = queue.pool.send(slot, fd, socket as u16, &source);
        // SAFETY: the entry points into the slot, which stays in flight (not
        // reused, not freed) until its completion or `unsend`.
        if !unsafe { queue.push(&sqe) }? {
            queue.pool.unsend(slot);
            self.counters.dropped += 1;
        }
        Ok(())
    }

    /// A receive ended with an error. Running out of buffers, signals and
    /// ICMP errors are transient (the socket is re-armed); errors meaning the
    /// request itself is invalid would recur on every re-arm, so they end
    /// the worker.
    pub(super) fn recv_error(&mut self, errno: i32) -> Result<(), IoError> {
        let err = io::Error::from_raw_os_error(errno);
        match errno {
            libc::ENOBUFS => {
                self.counters.overruns += 1;
                Ok(())
            }
            libc::ECANCELED | libc::EINTR | libc::EAGAIN => Ok(()),
            libc::EINVAL | libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EOPNOTSUPP => {
                Err(IoError::Io {
                    context: "io_uring multishot recvmsg",
                    source: err,
                })
            }
            _ => {
                self.recv_log.warn(&err);
                Ok(())
            }
        }
    }

    pub(super) fn counters(&self) -> Counters {
        let pool = &self.shared.queue.pool;
        Counters {
            replied: pool.sent,
            dropped: self.counters.dropped + pool.failed,
            ..self.counters
        }
    }

    /// Cancels every request and reaps completions until none is pending or
    /// [`QUIESCE_LIMIT`] passes. True when the kernel holds no reference.
    pub(super) fn quiesce(&mut self) -> bool {
        if !self.busy() {
            return true;
        }
        let cancel = opcode::AsyncCancel2::new(CancelBuilder::any())
            .build()
            .user_data(Op::Cancel.encode());
        // SAFETY: a cancel entry carries no pointers.
        let _ = unsafe { self.shared.queue.push(&cancel) };
        let deadline = Instant::now() + QUIESCE_LIMIT;
        while self.busy() && Instant::now() < deadline {
            if self
                .shared
                .queue
                .wait(Duration::from_millis(50), false)
                .is_err()
            {
                break;
            }
            self.shared.queue.reap();
            let Self { shared, armed, .. } = self;
            for cqe in shared.queue.batch.drain(..) {
                let flags = cqe.flags();
                if let Op::Recv { socket } = Op::decode(cqe.user_data()) {
                    if !cqueue::more(flags) {
                        if let Some(a) = armed.get_mut(usize::from(socket)) {
                            *a = false;
                        }
                    }
                }
            }
        }
        !self.busy()
    }

    pub(super) fn busy(&self) -> bool {
        self.armed.iter().any(|&a| a) || self.shared.queue.pool.in_flight > 0
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.quiesce() {
            let _ = self
                .shared
                .queue
                .ring
                .submitter()
                .unregister_buf_ring(BUF_GROUP);
            // SAFETY: `shared` is dropped exactly once, here, and the kernel
            // holds no reference into it any more (every request completed).
            unsafe { ManuallyDrop::drop(&mut self.shared) };
        } else {
            tracing::error!(
                "io_uring worker: requests still pending after cancel; leaking its ring and buffers"
            );
        }
    }
}
