//! The worker's per-query work with cold caches, against the reflector's.
//!
//! At moderate load a worker sleeps between queries, and on a shared
//! machine whatever runs meanwhile evicts its caches; the reflector
//! (`scripts/reflector.c`), the floor of `scripts/bench-dnsperf`, touches
//! almost nothing in user space, so every cache line the answer path needs
//! is a cost the floor does not pay. This measures that cost: each sample
//! writes a 64 MiB buffer (evicting the caches, the code's lines included),
//! then times one query through the worker's handler (`UdpResponder`:
//! snapshot cache, access list, answer, counters), or through what the
//! reflector does (copy the datagram, set QR), interleaved; also the answer
//! path alone, and both after only 2 MiB were written (a short burst of other
//! work: L2 evicted, L3 kept). Criterion cannot time one call after an
//! untimed eviction, so this mode is a plain loop.
//!
//! `ANSWER_BENCH_COLD=SAMPLES cargo bench --bench answer` (pinned with
//! `taskset -c 1`); it prints medians and 90th percentiles in ns.
//!
//! What the handler touches can also be counted, with no noise at all:
//! [`trace`], behind `scripts/footprint`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use domain::base::iana::Rtype;
use rand_core::SeedableRng;

use alternator_dns::dns::{respond, AnswerMode, Outcome, Rng, Transport};
use alternator_dns::io::{PacketHandler, MAX_UDP_REPLY};
use alternator_dns::nodes::Snapshot;
use alternator_dns::responder::UdpResponder;

use super::{query, snapshot, Names, APEX};

/// Larger than this machine's caches (L2 1 MiB a core, L3 32 MiB).
const EVICT_BYTES: usize = 64 << 20;

/// The client of every query.
const SOURCE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40000);

/// Twice L2: what a short burst of other work leaves behind.
const L2_BYTES: usize = 2 << 20;

/// Runs `samples` rounds of each variant and prints the table.
pub fn run(samples: usize) {
    let (published, mut handler) = handler();
    let q = query(APEX, Rtype::A);
    let mut reply = Vec::with_capacity(MAX_UDP_REPLY);
    let snap = published.load_full();
    let mut rng = Rng::seed_from_u64(9);
    let mut evict = vec![0u8; EVICT_BYTES];
    let mut times: [Vec<u64>; 6] = Default::default();
    for _ in 0..samples {
        evict_caches(&mut evict);
        times[0].push(timed(|| echo(&q, &mut reply)));
        evict_caches(&mut evict);
        times[1].push(timed(|| handler.handle(&q, SOURCE, 0, &mut reply)));
        // Warm: the same call again right away.
        times[2].push(timed(|| handler.handle(&q, SOURCE, 0, &mut reply)));
        evict_caches(&mut evict);
        times[3].push(timed(|| {
            let out = respond(&q, SOURCE.ip(), Transport::Udp, &snap, &mut rng, &mut reply);
            matches!(out, Outcome::Reply(_))
        }));
        evict_caches(&mut evict[..L2_BYTES]);
        times[4].push(timed(|| echo(&q, &mut reply)));
        evict_caches(&mut evict[..L2_BYTES]);
        times[5].push(timed(|| handler.handle(&q, SOURCE, 0, &mut reply)));
    }
    println!("cold caches, one query, {samples} samples each (ns; includes ~20 ns of timing)");
    println!("{:<40} {:>8} {:>8}", "variant", "median", "p90");
    let names = [
        "reflector's work (copy, set QR)",
        "worker's handler, cold",
        "worker's handler, warm",
        "answer path alone (respond), cold",
        "reflector's work, after 2 MiB written",
        "worker's handler, after 2 MiB written",
    ];
    for (name, t) in names.iter().zip(times.iter_mut()) {
        t.sort_unstable();
        println!(
            "{name:<40} {:>8} {:>8}",
            t[t.len() / 2],
            t[t.len() * 9 / 10]
        );
    }
}

/// `ANSWER_BENCH_TRACE=1`: one warm call of the handler between two
/// updates of a marker, for `scripts/footprint`, which runs this under
/// valgrind's lackey and counts the instructions, cache lines and pages the
/// call touched: the worker's footprint per query, free of this machine's
/// noise. Prints the marker's address and a stack address.
pub fn trace() {
    static MARKER: AtomicU64 = AtomicU64::new(0);
    let (_published, mut handler) = handler();
    let q = query(APEX, Rtype::A);
    let mut reply = Vec::with_capacity(MAX_UDP_REPLY);
    // Warm: what is set up on first use is not a query's cost.
    for _ in 0..100 {
        handler.handle(&q, SOURCE, 0, &mut reply);
    }
    MARKER.fetch_add(1, Ordering::SeqCst);
    black_box(handler.handle(black_box(&q), SOURCE, 0, &mut reply));
    MARKER.fetch_add(1, Ordering::SeqCst);
    println!("marker {:p}", &MARKER);
    println!("stack {:p}", &reply);
}

/// The default configuration's handler: the apex, 3 IPv4 nodes, one per
/// answer, everyone allowed, no rate limit.
fn handler() -> (Arc<ArcSwap<Snapshot>>, UdpResponder) {
    let published = Arc::new(ArcSwap::from_pointee(snapshot(
        AnswerMode::Random(1),
        Names::Apex,
        3,
        0,
    )));
    let handler = UdpResponder::new(&published, Rng::seed_from_u64(7), None);
    (published, handler)
}

/// What the reflector does to a datagram in user space.
fn echo(query: &[u8], reply: &mut Vec<u8>) -> bool {
    reply.clear();
    reply.extend_from_slice(query);
    reply[2] |= 0x80;
    true
}

fn timed(f: impl FnOnce() -> bool) -> u64 {
    let start = Instant::now();
    black_box(f());
    start.elapsed().as_nanos() as u64
}

/// Writes one byte of every cache line of `buf`.
fn evict_caches(buf: &mut [u8]) {
    for i in (0..buf.len()).step_by(64) {
        buf[i] = buf[i].wrapping_add(1);
    }
    black_box(buf);
}
