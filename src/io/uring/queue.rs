//! The ring itself: what each completion belongs to, pushing requests,
//! submitting and waiting (batched when busy), and draining completions.

use std::io;
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{cqueue, squeue, IoUring};

use super::send_pool::SendPool;
use super::{IoError, RateLimitedLog, BUSY_MIN_WAIT_US, BUSY_WANT};

/// What a completion belongs to, packed into its `user_data`:
/// kind in bits 56..64, socket index in bits 16..32, send slot in bits 0..16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Recv { socket: u16 },
    Send { socket: u16, slot: u16 },
    Cancel,
    Unknown,
}

impl Op {
    pub(super) fn encode(self) -> u64 {
        let (kind, socket, slot) = match self {
            Op::Recv { socket } => (1u64, socket, 0),
            Op::Send { socket, slot } => (2, socket, slot),
            Op::Cancel => (3, 0, 0),
            Op::Unknown => (0, 0, 0),
        };
        kind << 56 | u64::from(socket) << 16 | u64::from(slot)
    }

    pub(super) fn decode(user_data: u64) -> Op {
        let socket = (user_data >> 16) as u16;
        let slot = user_data as u16;
        match user_data >> 56 {
            1 => Op::Recv { socket },
            2 => Op::Send { socket, slot },
            3 => Op::Cancel,
            _ => Op::Unknown,
        }
    }
}

/// The ring plus what its requests point at and the completions drained
/// from it. Fields drop in order: the ring is closed before the pool.
pub(super) struct Queue {
    pub(super) ring: IoUring,
    pub(super) pool: SendPool,
    /// Receive and cancel completions drained but not yet handled (send
    /// completions are handled while draining, to free slots at once).
    pub(super) batch: Vec<cqueue::Entry>,
    /// Whether the kernel has minimum-wait timeouts (batched waits).
    pub(super) min_wait: bool,
    pub(super) enter_log: RateLimitedLog,
}

impl Queue {
    /// Queues `sqe`, submitting first if the queue is full. Returns false
    /// when the kernel cannot take it now (the caller undoes its state).
    ///
    /// # Safety
    /// Every pointer in `sqe` must stay valid until its completion arrives.
    pub(super) unsafe fn push(&mut self, sqe: &squeue::Entry) -> Result<bool, IoError> {
        if self.ring.submission().is_full() {
            self.submit()?;
        }
        // SAFETY: the caller guarantees the entry's pointers outlive it.
        Ok(unsafe { self.ring.submission().push(sqe) }.is_ok())
    }

    /// Submits queued entries without waiting.
    pub(super) fn submit(&mut self) -> Result<(), IoError> {
        let result = self.ring.submit().map(drop);
        self.enter_result(result)
    }

    /// Submits queued entries and waits up to `timeout` for a completion.
    /// When `batched` (and the kernel can), it asks for [`BUSY_WANT`], but
    /// returns with what is there once [`BUSY_MIN_WAIT_US`] have passed since
    /// it began, or at the next completion after.
    pub(super) fn wait(&mut self, timeout: Duration, batched: bool) -> Result<(), IoError> {
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        let submitter = self.ring.submitter();
        let result = if batched && self.min_wait {
            let args = args.min_wait_usec(BUSY_MIN_WAIT_US);
            submitter.submit_with_args(BUSY_WANT, &args)
        } else {
            submitter.submit_with_args(1, &args)
        };
        self.enter_result(result.map(drop))
    }

    /// Timeouts and signals are normal; a full completion queue or a
    /// transient memory shortage resolves itself once completions are
    /// drained; anything else is a bug or a broken ring.
    pub(super) fn enter_result(&mut self, result: io::Result<()>) -> Result<(), IoError> {
        let Err(err) = result else { return Ok(()) };
        match err.raw_os_error() {
            Some(libc::ETIME | libc::EINTR) => Ok(()),
            Some(libc::EBUSY | libc::EAGAIN | libc::ENOMEM) => {
                self.enter_log.warn(&err);
                Ok(())
            }
            _ => Err(IoError::Io {
                context: "io_uring_enter",
                source: err,
            }),
        }
    }

    /// Drains completions: sends free their slot now, the rest go to
    /// `batch` (up to its capacity; any beyond stay in the ring).
    pub(super) fn reap(&mut self) {
        let cap = self.batch.capacity();
        let mut cq = self.ring.completion();
        while self.batch.len() < cap {
            let Some(cqe) = cq.next() else { break };
            match Op::decode(cqe.user_data()) {
                Op::Send { slot, .. } => self.pool.complete(slot, cqe.result()),
                _ => self.batch.push(cqe),
            }
        }
    }

    /// A free send slot, submitting and reaping once if none is free.
    pub(super) fn free_slot(&mut self) -> Result<Option<u16>, IoError> {
        if let Some(slot) = self.pool.take() {
            return Ok(Some(slot));
        }
        let ts = Timespec::new();
        let args = SubmitArgs::new().timespec(&ts);
        let result = self.ring.submitter().submit_with_args(1, &args).map(drop);
        self.enter_result(result)?;
        self.reap();
        Ok(self.pool.take())
    }
}
