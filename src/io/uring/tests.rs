use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use io_uring::cqueue;

use super::super::socket::testutil;
use super::buf_ring::BufRing;
use super::queue::Op;
use super::setup::chosen_flags;
use super::worker::Worker;
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
