//! Zero heap allocations per query, across the whole worker loop (receive,
//! answer, send) of each I/O backend, counted by a global allocator that
//! counts only on the worker's thread.
//!
//! Start-up may allocate (buffers, rings); the test warms the worker up, then
//! checks that thousands more queries, and snapshot swaps made meanwhile by
//! another thread, add no allocation on the worker thread.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use domain::base::iana::{Class, Rtype};
use domain::base::{MessageBuilder, Name};
use rand_core::SeedableRng;

use alternator_dns::dns::{AnswerMode, LocationRule, Placement, Rng, Zone, ZoneSettings};
use alternator_dns::io::{self, Backend, StopSignal, WorkerSockets};
use alternator_dns::nodes::{NodeSource, SharedSnapshot, Snapshot};
use alternator_dns::responder::UdpResponder;
use support::DnsClient;

struct CountingAllocator;

thread_local! {
    /// The counter of the thread's worker, if it is one (tests run in
    /// parallel, so each backend's worker has its own).
    static COUNTER: Cell<Option<&'static AtomicU64>> = const { Cell::new(None) };
}
static MMSG_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static URING_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn count_one() {
    if let Some(counter) = COUNTER.with(Cell::get) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping touches only a const-initialised thread-local and an atomic,
// neither of which allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The apex places its clients: this machine (127.0.0.0/8, where the
/// queries come from) in location 0, 10.9.0.0/16 (sent as ECS) in 1.
fn zone() -> Arc<Zone> {
    let rules = [("127.0.0.0/8", 0), ("10.9.0.0/16", 1)].map(|(cidr, location)| LocationRule {
        cidr: cidr.parse().expect("prefix"),
        location,
    });
    let zone = Zone::new(&ZoneSettings {
        answers: AnswerMode::Random(1),
        ..ZoneSettings::new("alternator.test")
    })
    .expect("valid zone");
    Arc::new(zone.with_placement(Placement::new(&rules, vec![true], true)))
}

fn snapshot(generation: u64, zone: &Arc<Zone>) -> Snapshot {
    let nodes = |third: u8| -> Vec<IpAddr> {
        (1..=(3 + generation % 5))
            .map(|i| IpAddr::from([10, 0, third, i as u8]))
            .collect()
    };
    Snapshot::new(generation, Arc::clone(zone), NodeSource::Cluster, &nodes(0))
        .with_locations(&[nodes(1), nodes(2)], |_, _| true)
}

/// `query` with an OPT record carrying one ECS option of `data`.
fn with_ecs(mut query: Vec<u8>, data: &[u8]) -> Vec<u8> {
    query[11] = 1;
    query.extend([0, 0, 41, 4, 0, 0, 0, 0, 0]);
    query.extend(((data.len() + 4) as u16).to_be_bytes());
    query.extend([0, 8]);
    query.extend((data.len() as u16).to_be_bytes());
    query.extend_from_slice(data);
    query
}

fn queries() -> Vec<Vec<u8>> {
    let names = [
        "alternator.test",
        "ALTERNATOR.test",
        "x.alternator.test",
        "example.org",
    ];
    let types = [Rtype::A, Rtype::AAAA, Rtype::SOA, Rtype::NS, Rtype::TXT];
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for (j, qtype) in types.iter().enumerate() {
            let mut b = MessageBuilder::new_vec();
            b.header_mut().set_id((i * 16 + j) as u16);
            let mut q = b.question();
            q.push((
                Name::<Vec<u8>>::vec_from_str(name).expect("name"),
                *qtype,
                Class::IN,
            ))
            .expect("fits");
            out.push(q.finish());
        }
    }
    // Placed by ECS (10.9.1.0/24), too short to place (10.0.0.0/8: a scope
    // found by walking the ranges), and malformed (FORMERR).
    let apex = out[0].clone();
    out.push(with_ecs(apex.clone(), &[0, 1, 24, 0, 10, 9, 1]));
    out.push(with_ecs(apex.clone(), &[0, 1, 8, 0, 10]));
    out.push(with_ecs(apex, &[0, 1, 24, 8, 10, 9, 1]));
    // Junk that is answered (FORMERR) or dropped.
    out.push(vec![0u8; 12]);
    out.push(vec![0xff; 40]);
    out.push(vec![1, 2, 3]);
    out
}

/// Sends every query `rounds` times, waiting each round for `expected`
/// answers (or, with `expected` None, for 200 ms of silence); returns the
/// number of answers.
fn exchange(
    server: SocketAddr,
    queries: &[Vec<u8>],
    rounds: usize,
    expected: Option<usize>,
) -> usize {
    let client = DnsClient::new(server);
    // Generous for the first answer: the worker may still be setting up.
    let mut wait = Duration::from_millis(2000);
    let mut answered = 0;
    for _ in 0..rounds {
        for q in queries {
            client.send_raw(q);
        }
        let mut this_round = 0;
        while expected != Some(this_round) && client.recv_raw(wait).is_some() {
            this_round += 1;
            if this_round == 1 && expected.is_none() {
                // The worker is up: from now on 200 ms of silence ends the round.
                wait = Duration::from_millis(200);
            }
        }
        answered += this_round;
    }
    answered
}

fn worker_allocates_nothing_per_query(backend: Backend) {
    let counter: &'static AtomicU64 = match backend {
        Backend::Mmsg => &MMSG_ALLOCATIONS,
        Backend::Uring => &URING_ALLOCATIONS,
    };
    let zone = zone();
    let published: SharedSnapshot = Arc::new(ArcSwap::from_pointee(snapshot(1, &zone)));
    let (mut per_worker, bound) =
        io::socket::bind_worker_sockets(&["127.0.0.1:0".parse().expect("addr")], 1).expect("bind");
    let shutdown = StopSignal::new();
    let sockets = WorkerSockets {
        sockets: per_worker.remove(0),
        shutdown: shutdown.clone(),
    };
    let mut responder = UdpResponder::new(&published, Rng::seed_from_u64(1), None);
    let worker = std::thread::spawn(move || {
        COUNTER.with(|c| c.set(Some(counter)));
        io::run_worker(backend, sockets, &mut responder)
    });
    let queries = queries();
    // Warm-up: lets every lazily set-up path run once, a snapshot swap
    // included (arc-swap registers a thread's first reader slot lazily).
    let per_round = exchange(bound[0], &queries, 1, None);
    assert!(per_round > 0, "{backend:?}: no answer at all");
    published.store(Arc::new(snapshot(2, &zone)));
    exchange(bound[0], &queries, 20, Some(per_round));
    let before = counter.load(Ordering::Relaxed);
    // Swap snapshots from this thread while the worker answers.
    let swapping = Arc::new(AtomicBool::new(true));
    let swapper = std::thread::spawn({
        let (published, zone, swapping) = (
            Arc::clone(&published),
            Arc::clone(&zone),
            Arc::clone(&swapping),
        );
        move || {
            let mut generation = 3;
            while swapping.load(Ordering::Relaxed) {
                published.store(Arc::new(snapshot(generation, &zone)));
                generation += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let started = Instant::now();
    let answered = exchange(bound[0], &queries, 500, Some(per_round));
    swapping.store(false, Ordering::Relaxed);
    swapper.join().expect("swapper");
    let after = counter.load(Ordering::Relaxed);
    shutdown.set();
    worker.join().expect("worker thread").expect("worker ran");
    println!(
        "{backend:?}: {answered} answers in {:?}, {} allocations on the worker thread",
        started.elapsed(),
        after - before
    );
    assert!(answered > 5_000, "{backend:?}: only {answered} answers");
    assert_eq!(
        after, before,
        "{backend:?}: the worker allocated while answering"
    );
}

#[test]
fn mmsg_worker_allocates_nothing_per_query() {
    worker_allocates_nothing_per_query(Backend::Mmsg);
}

#[test]
fn uring_worker_allocates_nothing_per_query() {
    if let Err(e) = io::uring::probe() {
        if std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .is_ok_and(|v| v.trim() != "0")
        {
            println!("skipped: io_uring is disabled on this machine ({e})");
            return;
        }
        panic!("io_uring should be available here: {e}");
    }
    worker_allocates_nothing_per_query(Backend::Uring);
}
