//! The `--io uring` backend: io_uring with multishot `RecvMsgMulti` and a
//! provided buffer ring.
//!
//! Why this shape:
//! - One multishot receive per socket stays armed across datagrams, so the
//!   kernel posts one completion per datagram without a new request each.
//! - The kernel picks receive buffers from a ring we register once
//!   (`BufRing`), so no buffer is tied up per socket while idle and none is
//!   allocated per packet; a buffer goes back to the ring right after its
//!   datagram is answered.
//! - Replies go out as `SendMsg` requests from a fixed pool of slots
//!   (`SendPool`); the replies of a whole completion batch are submitted
//!   together with the wait for the next completions, so a busy worker makes
//!   one `io_uring_enter` per loop.
//! - `SINGLE_ISSUER | DEFER_TASKRUN` lets the kernel skip locking and run
//!   completion work only when this thread waits; [`probe`] falls back to
//!   fewer flags on kernels that refuse them.
//! - Saturated (the last loop drained at least `BUSY_BATCH` datagrams), a
//!   wait asks for a batch of completions, but once `BUSY_MIN_WAIT_US` have
//!   passed since it began it returns with whatever is there, or at the next
//!   completion (the kernel's minimum-wait timeout, Linux 6.12): fewer,
//!   fuller loops for at most that much added latency. Otherwise a wait is
//!   for one completion, so a lightly or moderately loaded server answers at
//!   once and pays no timer. `benches/README.md` has the numbers.
//!
//! Shutdown: each wait times out after 200 ms, so the flag is seen within
//! about 200 ms. Before any memory the kernel may touch is freed, the worker
//! cancels every request and waits (at most 1 s) for their completions; if
//! they do not arrive the memory and the ring are leaked instead, which is
//! safe, rather than freed under the kernel.
//!
//! One concept per file, so each can be read, and its unsafe code checked,
//! on its own: `setup.rs` picks the ring's flags, `buf_ring.rs` is the
//! receive buffer ring, `send_pool.rs` the reply slots, `queue.rs` the ring
//! with its submit/wait/reap, and `worker.rs` the loop that ties them
//! together. The memory shared with the kernel is owned by `buf_ring.rs`
//! and `send_pool.rs`; `worker.rs` decides when it may be freed.

mod buf_ring;
mod queue;
mod send_pool;
mod setup;
mod worker;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use io_uring::types::RecvMsgOut;
use io_uring::{cqueue, opcode};

use super::socket::{sockaddr_from_bytes, SOCKADDR_NAME_LEN};
use super::{
    Counters, IoError, PacketHandler, RateLimitedLog, WorkerSockets, MAX_UDP_QUERY, MAX_UDP_REPLY,
};
use setup::{build_ring, chosen_flags};
use worker::Worker;

/// Buffer group id of the ring; one ring per io_uring, so any id works.
const BUF_GROUP: u16 = 0;
/// `struct io_uring_recvmsg_out`: four u32s the kernel writes first.
const RECVMSG_OUT_LEN: usize = 16;
/// One receive buffer: kernel header, source address, payload.
const BUF_LEN: usize = RECVMSG_OUT_LEN + SOCKADDR_NAME_LEN + MAX_UDP_QUERY;
/// Submission queue size: a loop pushes at most one send per datagram plus
/// re-arms; a full queue is submitted early rather than overflowing.
const SQ_ENTRIES: u32 = 256;
/// Completion queue size: above the most completions that can be pending
/// (one per receive buffer, one per send slot, one per socket), so it does
/// not overflow even if the worker falls behind.
const CQ_ENTRIES: u32 = 1024;
/// How long one wait may block before the shutdown flag is checked.
const WAIT: Duration = Duration::from_millis(200);
/// How long shutdown waits for cancelled requests before leaking instead.
const QUIESCE_LIMIT: Duration = Duration::from_secs(1);
/// A loop that collected at least this many receive completions makes the
/// next wait a batched one. Only a worker that is falling behind collects
/// this many: at moderate loads clients send in bursts of a few datagrams,
/// and a batched wait after such a burst costs a timer and a wake-up for
/// nothing (with 4 here, io_uring took 1.19x recvmmsg's CPU per query at
/// 50k qps; benches/README.md has the numbers).
const BUSY_BATCH: usize = 32;
/// Completions a batched wait asks for (the sends submitted with it, which
/// mostly complete at once, count too: asking for 16 more than those was
/// measured no better, see `benches/README.md`)...
const BUSY_WANT: usize = 16;
/// ... and how long after it began it returns with fewer.
const BUSY_MIN_WAIT_US: u32 = 30;

/// How much a worker allocates up front.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Provided receive buffers (a power of two, as the kernel requires).
    bufs: u16,
    /// Replies that can be in flight at once.
    slots: u16,
}

impl Sizes {
    /// About 1 MiB of receive buffers (256 x 4140 B) and 0.5 MiB of reply
    /// buffers (128 x 4 KiB) per worker, all allocated before the loop.
    /// Datagrams beyond that wait in the socket's own (larger) buffer. Halved
    /// from 512 and 256 to save 1.5 MiB of resident memory per worker (the
    /// memory target is 32 MiB for 2 workers and 1,000 nodes).
    const DEFAULT: Sizes = Sizes {
        bufs: 256,
        slots: 128,
    };
}

/// Checks once at start-up that io_uring can run this backend: ring setup,
/// waits with a timeout, the needed opcodes, buffer-ring registration, and a
/// multishot receive of one datagram over loopback.
///
/// On error the caller should log it and use the mmsg backend instead.
pub fn probe() -> Result<(), IoError> {
    let ring = build_ring(chosen_flags()?).map_err(IoError::UringSetup)?;
    if !ring.params().is_feature_ext_arg() {
        return Err(IoError::UringUnsupported(
            "waits with a timeout (IORING_FEAT_EXT_ARG)",
        ));
    }
    let mut ops = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut ops)
        .map_err(IoError::UringSetup)?;
    let needed = [
        (opcode::RecvMsgMulti::CODE, "the recvmsg opcode"),
        (opcode::SendMsg::CODE, "the sendmsg opcode"),
        (opcode::AsyncCancel2::CODE, "the async-cancel opcode"),
    ];
    for (code, what) in needed {
        if !ops.is_supported(code) {
            return Err(IoError::UringUnsupported(what));
        }
    }
    drop(ring);
    self_test()
}

/// Runs the worker loop until `sockets.shutdown` is set.
///
/// Errors when the ring cannot be set up or on failures that would repeat
/// forever; per-packet errors are logged (rate-limited) and the packet dropped.
pub fn run<H: PacketHandler>(sockets: WorkerSockets, handler: &mut H) -> Result<(), IoError> {
    run_sized(sockets, handler, Sizes::DEFAULT).0
}

/// [`run`] with explicit sizes; also returns the worker's counters.
fn run_sized<H: PacketHandler>(
    sockets: WorkerSockets,
    handler: &mut H,
    sizes: Sizes,
) -> (Result<(), IoError>, Counters) {
    let mut worker = match Worker::new(&sockets.sockets, sizes) {
        Ok(w) => w,
        Err(e) => return (Err(e), Counters::default()),
    };
    let result = worker.serve(&sockets, handler);
    let counters = worker.counters();
    counters.log_exit("io_uring");
    drop(worker); // cancels and reaps every request before freeing memory
    (result, counters)
}
/// Receives one datagram over loopback through a real multishot receive,
/// proving the kernel supports everything `run` relies on.
fn self_test() -> Result<(), IoError> {
    let io_err = |context| move |source| IoError::Io { context, source };
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(io_err("io_uring self-test: bind"))?;
    let addr = socket
        .local_addr()
        .map_err(io_err("io_uring self-test: local_addr"))?;
    let mut worker = Worker::new(std::slice::from_ref(&socket), Sizes::DEFAULT)?;
    worker.arm_idle()?;
    worker.shared.queue.submit()?;
    socket
        .send_to(b"probe", addr)
        .map_err(io_err("io_uring self-test: send"))?;
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        worker.shared.queue.wait(Duration::from_millis(50), false)?;
        worker.shared.queue.reap();
        if let Some(cqe) = worker.shared.queue.batch.first().cloned() {
            return check_self_test(&worker, &cqe, addr);
        }
    }
    Err(IoError::UringUnsupported(
        "multishot recvmsg (no completion within 1 s)",
    ))
}

fn check_self_test(worker: &Worker, cqe: &cqueue::Entry, addr: SocketAddr) -> Result<(), IoError> {
    let unsupported = IoError::UringUnsupported("multishot recvmsg with provided buffers");
    let (Ok(len), Some(bid)) = (
        usize::try_from(cqe.result()),
        cqueue::buffer_select(cqe.flags()),
    ) else {
        return Err(unsupported);
    };
    if !cqueue::more(cqe.flags()) {
        return Err(unsupported);
    }
    let shared = &*worker.shared;
    // SAFETY: `bid` came in this completion and is never recycled.
    let buf = unsafe { shared.bufs.buffer(bid, len) };
    let msg = buf.and_then(|b| RecvMsgOut::parse(b, &shared.recv_hdr).ok());
    match msg {
        Some(m)
            if m.payload_data() == b"probe" && sockaddr_from_bytes(m.name_data()) == Some(addr) =>
        {
            Ok(())
        }
        _ => Err(unsupported),
    }
}

#[cfg(test)]
mod tests;
