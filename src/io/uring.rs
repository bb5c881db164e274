//! Primary backend: io_uring with multishot `RecvMsgMulti` and a provided
//! buffer ring.
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

use std::io;
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

use super::socket::{is_unanswerable, sockaddr_from_bytes, sockaddr_to_storage, SOCKADDR_NAME_LEN};
use super::{
    Counters, IoError, PacketHandler, RateLimitedLog, WorkerSockets, MAX_UDP_QUERY, MAX_UDP_REPLY,
};

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

/// Which optional `io_uring_setup` flags this kernel accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SetupFlags {
    single_issuer: bool,
    defer_taskrun: bool,
    coop_taskrun: bool,
    submit_all: bool,
}

impl SetupFlags {
    /// The flags set, as the kernel names them (for the log).
    fn names(&self) -> String {
        let named = [
            (self.single_issuer, "SINGLE_ISSUER"),
            (self.defer_taskrun, "DEFER_TASKRUN"),
            (self.coop_taskrun, "COOP_TASKRUN"),
            (self.submit_all, "SUBMIT_ALL"),
        ];
        let set: Vec<&str> = named
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        match set.is_empty() {
            true => "none".to_string(),
            false => set.join(","),
        }
    }

    /// Tried in order; the first the kernel accepts is used by every worker.
    ///
    /// None has SQPOLL, and no request is punted to io-wq: batched waits
    /// rely on that. Before Linux commit e15cb2200b93 (December 2025, in the
    /// stable kernels since), a minimum-wait timeout did not see completions
    /// posted by another thread once it had expired, and a batched wait could
    /// then last its whole timeout. Turn batched waits off before adding
    /// either.
    const CANDIDATES: [SetupFlags; 6] = [
        SetupFlags::new(true, true, true, true),
        SetupFlags::new(true, true, false, true),
        SetupFlags::new(true, false, true, true),
        SetupFlags::new(false, false, true, true),
        SetupFlags::new(false, false, false, true),
        SetupFlags::new(false, false, false, false),
    ];

    const fn new(single_issuer: bool, defer_taskrun: bool, coop: bool, submit_all: bool) -> Self {
        Self {
            single_issuer,
            defer_taskrun,
            coop_taskrun: coop,
            submit_all,
        }
    }
}

/// The flags chosen by the first call, which also logs them once.
fn chosen_flags() -> Result<SetupFlags, IoError> {
    static CHOSEN: OnceLock<Result<SetupFlags, i32>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| {
        let mut last = libc::ENOSYS;
        for flags in SetupFlags::CANDIDATES {
            match build_ring(flags) {
                Ok(ring) => {
                    let batched_waits = ring.params().is_feature_min_timeout();
                    tracing::info!(flags = %flags.names(), batched_waits, "io_uring setup flags");
                    return Ok(flags);
                }
                Err(e) => last = e.raw_os_error().unwrap_or(libc::EINVAL),
            }
        }
        Err(last)
    });
    chosen.map_err(|errno| IoError::UringSetup(io::Error::from_raw_os_error(errno)))
}

fn build_ring(flags: SetupFlags) -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    builder.setup_cqsize(CQ_ENTRIES);
    if flags.single_issuer {
        builder.setup_single_issuer();
    }
    if flags.defer_taskrun {
        builder.setup_defer_taskrun();
    }
    if flags.coop_taskrun {
        builder.setup_coop_taskrun();
    }
    if flags.submit_all {
        builder.setup_submit_all();
    }
    builder.build(SQ_ENTRIES)
}

/// What a completion belongs to, packed into its `user_data`:
/// kind in bits 56..64, socket index in bits 16..32, send slot in bits 0..16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Recv { socket: u16 },
    Send { socket: u16, slot: u16 },
    Cancel,
    Unknown,
}

impl Op {
    fn encode(self) -> u64 {
        let (kind, socket, slot) = match self {
            Op::Recv { socket } => (1u64, socket, 0),
            Op::Send { socket, slot } => (2, socket, slot),
            Op::Cancel => (3, 0, 0),
            Op::Unknown => (0, 0, 0),
        };
        kind << 56 | u64::from(socket) << 16 | u64::from(slot)
    }

    fn decode(user_data: u64) -> Op {
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

/// The provided-buffer ring: one page-aligned anonymous mapping holding the
/// ring entries (first, page-rounded) and then `count` buffers.
///
/// The kernel reads entries up to the tail we publish and writes a datagram
/// into the buffer it picks; after that completion the buffer is ours until
/// [`BufRing::recycle`] hands it back.
struct BufRing {
    map: NonNull<u8>,
    map_len: usize,
    /// Bytes of the entry area (page-rounded); buffers start here.
    entries_len: usize,
    /// Number of entries and buffers; a power of two.
    count: u16,
    /// Local tail: entries written but maybe not yet published.
    tail: u16,
}

/// `struct io_uring_buf`; entry 0's `resv` doubles as the ring's tail.
#[repr(C)]
struct RawBufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// Offset of the tail (`resv` of entry 0) from the ring start.
const TAIL_OFFSET: usize = 14;

impl BufRing {
    fn new(count: u16) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let page = page_size();
        let entries_len =
            (usize::from(count) * std::mem::size_of::<RawBufEntry>()).div_ceil(page) * page;
        let map_len = entries_len + usize::from(count) * BUF_LEN;
        // SAFETY: a fresh private anonymous mapping touches no existing
        // memory; the result is checked against MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        let mut ring = Self {
            map,
            map_len,
            entries_len,
            count,
            tail: 0,
        };
        for bid in 0..count {
            ring.recycle(bid);
        }
        Ok(ring)
    }

    /// Address to register: the (page-aligned) start of the entry array.
    fn ring_addr(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        let offset = self.entries_len + usize::from(bid % self.count) * BUF_LEN;
        self.map.as_ptr().wrapping_add(offset)
    }

    /// The first `len` bytes of buffer `bid`, or None for an id we never
    /// handed out.
    ///
    /// # Safety
    /// `bid` must have arrived in a completion and not been recycled since,
    /// so the kernel is not writing to it.
    unsafe fn buffer(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= self.count {
            return None;
        }
        // SAFETY: the buffer lies inside the live mapping (bid < count,
        // len clamped to BUF_LEN), the mapping is initialised (anonymous
        // memory is zero-filled), and per the caller the kernel does not
        // write to it while the returned borrow of `self` lives.
        Some(unsafe { std::slice::from_raw_parts(self.buf_ptr(bid), len.min(BUF_LEN)) })
    }

    /// Queues buffer `bid` for reuse; visible to the kernel after
    /// [`Self::publish`].
    fn recycle(&mut self, bid: u16) {
        let bid = bid % self.count;
        let index = usize::from(self.tail & (self.count - 1));
        let entry = self.map.as_ptr().cast::<RawBufEntry>().wrapping_add(index);
        // SAFETY: `entry` is inside the entry area of the live mapping and
        // aligned (page-aligned base, 16-byte entries). The kernel only
        // reads entries between its head and the published tail, and this
        // slot is past the published tail. Writing fields one by one leaves
        // `resv` alone, which for entry 0 is the tail the kernel reads.
        unsafe {
            std::ptr::addr_of_mut!((*entry).addr).write(self.buf_ptr(bid) as u64);
            std::ptr::addr_of_mut!((*entry).len).write(BUF_LEN as u32);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel.
    fn publish(&self) {
        let tail = self.map.as_ptr().wrapping_add(TAIL_OFFSET).cast::<u16>();
        // SAFETY: the tail is a 2-byte-aligned u16 inside the live mapping;
        // the kernel only reads it (with acquire), we are its only writer,
        // and all our accesses to it go through this atomic.
        let tail = unsafe { AtomicU16::from_ptr(tail) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`; the owner
        // (Worker) drops this only after the kernel holds no reference.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

/// One reply in flight: its bytes and the kernel structures pointing at them.
struct SendSlot {
    reply: Vec<u8>,
    iov: libc::iovec,
    hdr: libc::msghdr,
    addr: libc::sockaddr_storage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Taken by the worker; the handler may be writing the reply.
    Held,
    /// Referenced by a submitted `SendMsg`; untouchable until its completion.
    InFlight,
}

/// Fixed pool of [`SendSlot`]s, allocated once.
///
/// Slots are reached only through a raw base pointer, never through a
/// reference to the whole array, so handing one slot to the handler never
/// claims exclusive access to the slots the kernel is reading.
struct SendPool {
    slots: NonNull<SendSlot>,
    states: Box<[SlotState]>,
    free: Vec<u16>,
    in_flight: usize,
    sent: u64,
    failed: u64,
    log: RateLimitedLog,
}

impl SendPool {
    fn new(count: u16) -> Self {
        let boxed: Box<[SendSlot]> = (0..count).map(|_| SendSlot::new()).collect();
        let slots = NonNull::from(Box::leak(boxed)).cast::<SendSlot>();
        Self {
            slots,
            states: vec![SlotState::Free; usize::from(count)].into_boxed_slice(),
            free: (0..count).rev().collect(),
            in_flight: 0,
            sent: 0,
            failed: 0,
            log: RateLimitedLog::new("io_uring: reply send failed"),
        }
    }

    fn take(&mut self) -> Option<u16> {
        let slot = self.free.pop()?;
        self.states[usize::from(slot)] = SlotState::Held;
        Some(slot)
    }

    /// Exclusive access to a held slot.
    fn held(&mut self, slot: u16) -> &mut SendSlot {
        assert_eq!(self.states[usize::from(slot)], SlotState::Held);
        // SAFETY: `slot` indexes `states`, which has one entry per slot, so
        // it is in bounds; a Held slot is referenced by no request and no
        // other borrow, and `&mut self` makes this borrow the only one.
        unsafe { &mut *self.slots.as_ptr().add(usize::from(slot)) }
    }

    /// The cleared reply buffer of a held slot, for the handler.
    fn reply(&mut self, slot: u16) -> &mut Vec<u8> {
        let reply = &mut self.held(slot).reply;
        reply.clear();
        reply
    }

    /// Points the slot's header at its reply and `dest` and returns the
    /// `SendMsg` entry; the slot is in flight until [`Self::complete`] (or
    /// [`Self::unsend`] if the entry could not be queued).
    fn send(&mut self, slot: u16, fd: RawFd, socket: u16, dest: &SocketAddr) -> squeue::Entry {
        let s = self.held(slot);
        let namelen = sockaddr_to_storage(dest, &mut s.addr);
        s.iov = libc::iovec {
            iov_base: s.reply.as_mut_ptr().cast(),
            iov_len: s.reply.len(),
        };
        s.hdr.msg_name = (&raw mut s.addr).cast();
        s.hdr.msg_namelen = namelen;
        s.hdr.msg_iov = &raw mut s.iov;
        s.hdr.msg_iovlen = 1;
        let hdr: *const libc::msghdr = &s.hdr;
        self.states[usize::from(slot)] = SlotState::InFlight;
        self.in_flight += 1;
        opcode::SendMsg::new(Fd(fd), hdr)
            .build()
            .user_data(Op::Send { socket, slot }.encode())
    }

    /// Returns a held slot unused, or an in-flight one whose entry never
    /// reached the kernel.
    fn unsend(&mut self, slot: u16) {
        let state = &mut self.states[usize::from(slot)];
        if *state == SlotState::InFlight {
            self.in_flight -= 1;
        }
        if *state != SlotState::Free {
            *state = SlotState::Free;
            self.free.push(slot);
        }
    }

    /// A send completion: frees the slot and counts the outcome.
    fn complete(&mut self, slot: u16, result: i32) {
        let Some(state) = self.states.get_mut(usize::from(slot)) else {
            return;
        };
        if *state != SlotState::InFlight {
            return;
        }
        *state = SlotState::Free;
        self.free.push(slot);
        self.in_flight -= 1;
        if result < 0 {
            self.failed += 1;
            self.log.warn(&io::Error::from_raw_os_error(-result));
        } else {
            self.sent += 1;
        }
    }
}

impl SendSlot {
    fn new() -> Self {
        Self {
            reply: Vec::with_capacity(MAX_UDP_REPLY),
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            // SAFETY: msghdr is integers and raw pointers; all-zero is a
            // valid empty header.
            hdr: unsafe { std::mem::zeroed() },
            // SAFETY: sockaddr_storage is plain integers; all-zero is valid.
            addr: unsafe { std::mem::zeroed() },
        }
    }
}

impl Drop for SendPool {
    fn drop(&mut self) {
        let slots = std::ptr::slice_from_raw_parts_mut(self.slots.as_ptr(), self.states.len());
        // SAFETY: `slots` is exactly the boxed slice leaked in `new`
        // (same pointer and length), freed once here; the owner (Worker)
        // drops the pool only after no request references a slot.
        drop(unsafe { Box::from_raw(slots) });
    }
}

/// The ring plus what its requests point at and the completions drained
/// from it. Fields drop in order: the ring is closed before the pool.
struct Queue {
    ring: IoUring,
    pool: SendPool,
    /// Receive and cancel completions drained but not yet handled (send
    /// completions are handled while draining, to free slots at once).
    batch: Vec<cqueue::Entry>,
    /// Whether the kernel has minimum-wait timeouts (batched waits).
    min_wait: bool,
    enter_log: RateLimitedLog,
}

impl Queue {
    /// Queues `sqe`, submitting first if the queue is full. Returns false
    /// when the kernel cannot take it now (the caller undoes its state).
    ///
    /// # Safety
    /// Every pointer in `sqe` must stay valid until its completion arrives.
    unsafe fn push(&mut self, sqe: &squeue::Entry) -> Result<bool, IoError> {
        if self.ring.submission().is_full() {
            self.submit()?;
        }
        // SAFETY: the caller guarantees the entry's pointers outlive it.
        Ok(unsafe { self.ring.submission().push(sqe) }.is_ok())
    }

    /// Submits queued entries without waiting.
    fn submit(&mut self) -> Result<(), IoError> {
        let result = self.ring.submit().map(drop);
        self.enter_result(result)
    }

    /// Submits queued entries and waits up to `timeout` for a completion.
    /// When `batched` (and the kernel can), it asks for [`BUSY_WANT`], but
    /// returns with what is there once [`BUSY_MIN_WAIT_US`] have passed since
    /// it began, or at the next completion after.
    fn wait(&mut self, timeout: Duration, batched: bool) -> Result<(), IoError> {
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
    fn enter_result(&mut self, result: io::Result<()>) -> Result<(), IoError> {
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
    fn reap(&mut self) {
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
    fn free_slot(&mut self) -> Result<Option<u16>, IoError> {
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

/// Everything the kernel may point into. Freed only once it no longer does.
struct Shared {
    queue: Queue,
    bufs: BufRing,
    /// Template for every multishot receive: only the name length is set.
    recv_hdr: Box<libc::msghdr>,
}

/// One worker's ring and the state of its sockets.
struct Worker {
    shared: ManuallyDrop<Shared>,
    fds: Vec<RawFd>,
    /// Whether socket i has a multishot receive the kernel has not ended.
    armed: Vec<bool>,
    /// Handler output when no send slot is free (the reply is dropped).
    scratch: Vec<u8>,
    counters: Counters,
    recv_log: RateLimitedLog,
}

impl Worker {
    fn new(sockets: &[UdpSocket], sizes: Sizes) -> Result<Self, IoError> {
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
    fn serve<H: PacketHandler>(
        &mut self,
        sockets: &WorkerSockets,
        handler: &mut H,
    ) -> Result<(), IoError> {
        let mut batch_next_wait = false;
        while !sockets.shutdown.load(Ordering::Relaxed) {
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
    fn arm_idle(&mut self) -> Result<(), IoError> {
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
    fn process<H: PacketHandler>(&mut self, handler: &mut H) -> Result<(), IoError> {
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

    fn on_recv<H: PacketHandler>(
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
    fn answer<H: PacketHandler>(
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
    fn recv_error(&mut self, errno: i32) -> Result<(), IoError> {
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

    fn counters(&self) -> Counters {
        let pool = &self.shared.queue.pool;
        Counters {
            replied: pool.sent,
            dropped: self.counters.dropped + pool.failed,
            ..self.counters
        }
    }

    /// Cancels every request and reaps completions until none is pending or
    /// [`QUIESCE_LIMIT`] passes. True when the kernel holds no reference.
    fn quiesce(&mut self) -> bool {
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

    fn busy(&self) -> bool {
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
mod tests {
    use super::super::socket::testutil;
    use super::*;

    /// Skips (with a message) where io_uring is unavailable.
    fn uring_available() -> bool {
        match probe() {
            Ok(()) => true,
            Err(e) => {
                eprintln!("skipping io_uring test: {e}");
                false
            }
        }
    }

    #[test]
    fn user_data_round_trips() {
        for op in [
            Op::Recv { socket: 7 },
            Op::Send {
                socket: 65535,
                slot: 255,
            },
            Op::Cancel,
        ] {
            assert_eq!(Op::decode(op.encode()), op);
        }
        assert_eq!(Op::decode(0), Op::Unknown);
        assert_eq!(Op::decode(u64::MAX), Op::Unknown);
    }

    #[test]
    fn probe_passes_here() {
        if uring_available() {
            let flags = chosen_flags().expect("chosen");
            eprintln!("io_uring setup flags: {flags:?}");
        }
    }

    #[test]
    fn echoes_many_datagrams() {
        if uring_available() {
            testutil::check_echo_many(super::run);
        }
    }

    #[test]
    fn serves_several_sockets() {
        if uring_available() {
            testutil::check_two_sockets(super::run);
        }
    }

    #[test]
    fn stops_on_shutdown() {
        if uring_available() {
            testutil::check_shutdown(super::run);
        }
    }

    #[test]
    fn survives_hostile_input() {
        if uring_available() {
            testutil::check_hostile_input(super::run);
        }
    }

    /// Four receive buffers and two send slots: every window of queries runs
    /// the buffer ring dry (ENOBUFS, re-arm) and waits for free send slots.
    fn run_tiny(ws: WorkerSockets, h: &mut testutil::Echo) -> Result<(), IoError> {
        let (result, counters) = run_sized(ws, h, Sizes { bufs: 4, slots: 2 });
        TINY_OVERRUNS.fetch_add(counters.overruns, Ordering::Relaxed);
        TINY_DROPPED.fetch_add(counters.dropped, Ordering::Relaxed);
        result
    }

    static TINY_OVERRUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static TINY_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    /// A batched wait asks for more completions than come: it must return
    /// with the one datagram soon after it arrives, not at the timeout.
    #[test]
    fn a_batched_wait_returns_with_fewer_completions() {
        if !uring_available() {
            return;
        }
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let mut worker = Worker::new(std::slice::from_ref(&socket), Sizes::DEFAULT).unwrap();
        worker.arm_idle().unwrap();
        worker.shared.queue.submit().unwrap();
        let timeout = Duration::from_secs(2);
        for round in 0..5 {
            socket.send_to(b"one", addr).unwrap();
            let started = Instant::now();
            worker.shared.queue.wait(timeout, true).unwrap();
            let waited = started.elapsed();
            worker.shared.queue.reap();
            assert_eq!(worker.shared.queue.batch.len(), 1, "round {round}");
            assert!(
                waited < Duration::from_millis(500),
                "round {round}: {waited:?}"
            );
            let cqe = worker.shared.queue.batch.pop().unwrap();
            if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                worker.shared.bufs.recycle(bid);
            }
            worker.shared.bufs.publish();
        }
    }

    #[test]
    fn survives_exhausted_buffers_and_slots() {
        if !uring_available() {
            return;
        }
        testutil::check_echo_many(run_tiny);
        testutil::check_two_sockets(run_tiny);
        testutil::check_shutdown(run_tiny);
        assert!(
            TINY_OVERRUNS.load(Ordering::Relaxed) > 0,
            "buffer ring never ran dry"
        );
        assert_eq!(TINY_DROPPED.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn buffer_ring_recycles_in_order() {
        assert!(BufRing::new(100).is_err(), "not a power of two");
        let mut ring = BufRing::new(512).expect("mmap");
        assert_eq!(ring.tail, 512);
        ring.recycle(3);
        assert_eq!(ring.tail, 513);
        ring.publish();
        // SAFETY: this ring is registered with no kernel, so nothing writes.
        let buf = unsafe { ring.buffer(3, usize::MAX) }.expect("valid id");
        assert_eq!(buf.len(), BUF_LEN);
        // SAFETY: as above.
        assert!(unsafe { ring.buffer(512, 1) }.is_none());
    }
}
