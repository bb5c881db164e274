//! The answer path alone: query bytes + snapshot + rng -> reply bytes.
//!
//! Run with `cargo bench --bench answer` (on a shared machine, pinned:
//! `taskset -c 1 cargo bench --bench answer`). Compare cases within one run;
//! the machine this project is developed on is shared and noisy.
//!
//! Group `respond` is the real entry point (fast path, falling back to the
//! general one); group `general` runs the same cases through the `domain`-based
//! general path alone, side by side. `benches/README.md` keeps the numbers.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Cache};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkGroup, Criterion, Throughput};
use domain::base::iana::{Class, Rtype};
use domain::base::{MessageBuilder, Name};
use rand_core::SeedableRng;

use alternator_dns::dns::answer::respond_general;
use alternator_dns::dns::{respond, AnswerMode, Outcome, Rng, Transport, Zone, ZoneSettings};
use alternator_dns::nodes::{NodeSource, Snapshot};

#[path = "answer/cold.rs"]
mod cold;
#[path = "answer/placement.rs"]
mod placement;

const APEX: &str = "alternator.example.com";

/// The source of the queries (placed only in the `placement` group).
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// The served names of a benchmark zone.
#[derive(Clone, Copy)]
enum Names {
    /// The apex alone (the default configuration).
    Apex,
    /// The apex, then for each of 3 datacenters its name and 3 rack names:
    /// `dc1.`, `rack1.dc1.`, `rack2.dc1.`, `rack3.dc1.`, `dc2.`, ... (13 names).
    Racks,
}

fn zone(answers: AnswerMode, names: Names) -> Arc<Zone> {
    let zone = Zone::new(&ZoneSettings {
        answers,
        ..ZoneSettings::new(APEX)
    })
    .expect("valid zone");
    let further: Vec<String> = match names {
        Names::Apex => vec![],
        Names::Racks => (1..=3)
            .flat_map(|dc| {
                let racks = (1..=3).map(move |r| format!("rack{r}.dc{dc}.{APEX}"));
                std::iter::once(format!("dc{dc}.{APEX}")).chain(racks)
            })
            .collect(),
    };
    Arc::new(zone.with_names(&further).expect("valid names"))
}

/// Every served name gets `v4` IPv4 and `v6` IPv6 nodes.
fn snapshot(answers: AnswerMode, names: Names, v4: usize, v6: usize) -> Snapshot {
    let v4 =
        (0..v4).map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1)));
    let v6 = (0..v6).map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i as u16 + 1)));
    let ips: Vec<IpAddr> = v4.chain(v6).collect();
    Snapshot::new(1, zone(answers, names), NodeSource::Cluster, &ips)
}

/// A query as `dig` sends it without EDNS: RD set, one question.
fn query(name: &str, qtype: Rtype) -> Vec<u8> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(0x1234);
    b.header_mut().set_rd(true);
    let mut q = b.question();
    q.push((
        Name::<Vec<u8>>::vec_from_str(name).expect("valid name"),
        qtype,
        Class::IN,
    ))
    .expect("fits");
    q.finish()
}

/// `query` with a plain OPT record: payload 1232, DO clear, no options.
fn with_edns(mut query: Vec<u8>) -> Vec<u8> {
    query.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    query[11] = 1;
    query
}

/// One benchmark case.
struct Case {
    name: &'static str,
    mode: AnswerMode,
    names: Names,
    /// IPv4 and IPv6 nodes of every served name.
    nodes: (usize, usize),
    query: Vec<u8>,
    transport: Transport,
}

fn cases() -> Vec<Case> {
    use AnswerMode::{All, Random};
    use Names::{Apex, Racks};
    use Transport::{Tcp, Udp};
    let a = || query(APEX, Rtype::A);
    let mut response = a();
    response[2] |= 0x80;
    let rack1 = format!("rack1.dc1.{APEX}");
    let rack9 = format!("rack3.dc3.{APEX}");
    let table = [
        ("a_one_of_3", Random(1), Apex, (3, 0), a(), Udp),
        (
            "a_one_of_3_edns",
            Random(1),
            Apex,
            (3, 0),
            with_edns(a()),
            Udp,
        ),
        (
            "a_one_of_3_mixed_case",
            Random(1),
            Apex,
            (3, 0),
            query("AlTeRnAtOr.ExAmPlE.CoM", Rtype::A),
            Udp,
        ),
        (
            "aaaa_one_of_3",
            Random(1),
            Apex,
            (0, 3),
            query(APEX, Rtype::AAAA),
            Udp,
        ),
        (
            "a_one_of_3_further_name",
            Random(1),
            Racks,
            (3, 0),
            query(&rack1, Rtype::A),
            Udp,
        ),
        (
            "a_one_of_3_last_of_13_names",
            Random(1),
            Racks,
            (3, 0),
            query(&rack9, Rtype::A),
            Udp,
        ),
        ("a_one_of_1000", Random(1), Apex, (1000, 0), a(), Udp),
        ("a_three_of_100", Random(3), Apex, (100, 0), a(), Udp),
        ("a_all_of_20", All, Apex, (20, 0), a(), Udp),
        ("a_all_of_200_truncated", All, Apex, (200, 0), a(), Udp),
        ("a_all_of_200_tcp", All, Apex, (200, 0), a(), Tcp),
        (
            "aaaa_nodata",
            Random(1),
            Apex,
            (3, 0),
            query(APEX, Rtype::AAAA),
            Udp,
        ),
        (
            "nxdomain",
            Random(1),
            Apex,
            (3, 0),
            query(&format!("x.{APEX}"), Rtype::A),
            Udp,
        ),
        (
            "refused",
            Random(1),
            Apex,
            (3, 0),
            query("example.org", Rtype::A),
            Udp,
        ),
        ("drop_qr1", Random(1), Apex, (3, 0), response, Udp),
    ];
    table
        .into_iter()
        .map(|(name, mode, names, nodes, query, transport)| Case {
            name,
            mode,
            names,
            nodes,
            query,
            transport,
        })
        .collect()
}

type Respond = fn(&[u8], IpAddr, Transport, &Snapshot, &mut Rng, &mut Vec<u8>) -> Outcome;

/// Runs every case through `respond` in `group`.
fn run_cases<M: Measurement>(group: &mut BenchmarkGroup<'_, M>, respond: Respond) {
    for case in cases() {
        let (v4, v6) = case.nodes;
        let snap = snapshot(case.mode, case.names, v4, v6);
        let mut rng = Rng::seed_from_u64(7);
        let mut reply = Vec::with_capacity(65535);
        group.bench_function(case.name, |b| {
            b.iter(|| {
                respond(
                    black_box(&case.query),
                    CLIENT,
                    case.transport,
                    &snap,
                    &mut rng,
                    &mut reply,
                )
            })
        });
    }
}

fn configure<'c, M: Measurement>(c: &'c mut Criterion<M>, name: &str) -> BenchmarkGroup<'c, M> {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group
}

fn bench_answers<M: Measurement>(c: &mut Criterion<M>) {
    let mut group = configure(c, "respond");
    run_cases(&mut group, respond);
    group.finish();
    let mut group = configure(c, "general");
    run_cases(&mut group, respond_general);
    group.finish();
}

/// What a worker adds per packet to reach the snapshot: `arc_swap::Cache`
/// (what `responder.rs` uses) against a plain `ArcSwap::load`.
fn bench_snapshot_access<M: Measurement>(c: &mut Criterion<M>) {
    let mut group = configure(c, "snapshot");
    let shared = Arc::new(ArcSwap::from_pointee(snapshot(
        AnswerMode::Random(1),
        Names::Apex,
        3,
        0,
    )));
    let q = query(APEX, Rtype::A);
    let mut rng = Rng::seed_from_u64(7);
    let mut reply = Vec::with_capacity(65535);
    let mut cache = Cache::new(Arc::clone(&shared));
    group.bench_function("cache_load_and_respond", |b| {
        b.iter(|| {
            respond(
                black_box(&q),
                CLIENT,
                Transport::Udp,
                cache.load(),
                &mut rng,
                &mut reply,
            )
        })
    });
    group.bench_function("arcswap_load_and_respond", |b| {
        b.iter(|| {
            respond(
                black_box(&q),
                CLIENT,
                Transport::Udp,
                &shared.load(),
                &mut rng,
                &mut reply,
            )
        })
    });
    group.finish();
}

/// Every benchmark, with measurement `M`.
fn all<M: Measurement>(mut c: Criterion<M>) {
    bench_answers(&mut c);
    bench_snapshot_access(&mut c);
    placement::bench_placement(&mut c);
    c.final_summary();
}

/// Wall time by default; with `ANSWER_BENCH_CLOCK=thread`, the benchmark
/// thread's CPU time, which leaves out the time other processes hold the CPU
/// (the development machine is shared).
/// `ANSWER_BENCH_COLD=SAMPLES`: the cold-cache comparison (`cold.rs`) alone;
/// `ANSWER_BENCH_TRACE=1`: one traced call for `scripts/footprint`.
fn main() {
    if std::env::var("ANSWER_BENCH_TRACE").as_deref() == Ok("1") {
        cold::trace();
        return;
    }
    if let Ok(samples) = std::env::var("ANSWER_BENCH_COLD") {
        match samples.parse() {
            Ok(samples) if samples > 0 => cold::run(samples),
            _ => {
                eprintln!("ANSWER_BENCH_COLD: a positive number of samples, not {samples:?}");
                std::process::exit(2);
            }
        }
        return;
    }
    if std::env::var("ANSWER_BENCH_CLOCK").as_deref() == Ok("thread") {
        all(Criterion::default()
            .with_measurement(ThreadTime)
            .configure_from_args());
    } else {
        all(Criterion::default().configure_from_args());
    }
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), in nanoseconds.
struct ThreadTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }

    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

/// Formats nanoseconds as criterion's wall time does (ns, µs, ms, s).
struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (divisor, unit) = match typical {
            t if t < 1e3 => (1.0, "ns"),
            t if t < 1e6 => (1e3, "µs"),
            t if t < 1e9 => (1e6, "ms"),
            _ => (1e9, "s"),
        };
        values.iter_mut().for_each(|v| *v /= divisor);
        unit
    }

    fn scale_throughputs(
        &self,
        _: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_iteration = match throughput {
            Throughput::Bits(n)
            | Throughput::Bytes(n)
            | Throughput::BytesDecimal(n)
            | Throughput::Elements(n) => *n as f64,
            _ => 1.0,
        };
        values
            .iter_mut()
            .for_each(|v| *v = per_iteration * 1e9 / *v);
        "/s"
    }

    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}
