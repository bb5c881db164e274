//! The answer path alone: query bytes + snapshot + rng -> reply bytes.
//!
//! Run with `cargo bench --bench answer`. Compare cases within one run; the
//! machine this project is developed on is shared and noisy.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use domain::base::iana::{Class, Rtype};
use domain::base::{MessageBuilder, Name};
use rand_core::SeedableRng;

use alternator_dns::dns::{respond, AnswerMode, Rng, Transport, Zone, ZoneSettings};
use alternator_dns::nodes::{NodeSource, Snapshot};

fn snapshot(answers: AnswerMode, nodes: usize) -> Snapshot {
    let zone = Zone::new(&ZoneSettings {
        domain: "alternator.example.com".into(),
        ttl: 4,
        answers,
        ns: vec![],
        soa_mname: None,
        soa_rname: None,
        soa_serial: 1,
        soa_ttl: 60,
        edns_udp_size: 1232,
        forwarding: false,
    })
    .expect("valid zone");
    let ips: Vec<IpAddr> = (0..nodes)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1)))
        .collect();
    Snapshot::new(1, Arc::new(zone), NodeSource::Cluster, &ips)
}

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

fn bench_answers(c: &mut Criterion) {
    let mut group = c.benchmark_group("respond");
    group.throughput(Throughput::Elements(1));
    let cases = [
        (
            "a_one_of_3",
            AnswerMode::Random(1),
            3,
            "alternator.example.com",
            Rtype::A,
            Transport::Udp,
        ),
        (
            "a_one_of_1000",
            AnswerMode::Random(1),
            1000,
            "alternator.example.com",
            Rtype::A,
            Transport::Udp,
        ),
        (
            "a_three_of_100",
            AnswerMode::Random(3),
            100,
            "alternator.example.com",
            Rtype::A,
            Transport::Udp,
        ),
        (
            "a_all_of_20",
            AnswerMode::All,
            20,
            "alternator.example.com",
            Rtype::A,
            Transport::Udp,
        ),
        (
            "a_all_of_200_truncated",
            AnswerMode::All,
            200,
            "alternator.example.com",
            Rtype::A,
            Transport::Udp,
        ),
        (
            "a_all_of_200_tcp",
            AnswerMode::All,
            200,
            "alternator.example.com",
            Rtype::A,
            Transport::Tcp,
        ),
        (
            "aaaa_nodata",
            AnswerMode::Random(1),
            3,
            "alternator.example.com",
            Rtype::AAAA,
            Transport::Udp,
        ),
        (
            "nxdomain",
            AnswerMode::Random(1),
            3,
            "x.alternator.example.com",
            Rtype::A,
            Transport::Udp,
        ),
        (
            "refused",
            AnswerMode::Random(1),
            3,
            "example.org",
            Rtype::A,
            Transport::Udp,
        ),
    ];
    for (name, mode, nodes, qname, qtype, limit) in cases {
        let snap = snapshot(mode, nodes);
        let q = query(qname, qtype);
        let mut rng = Rng::seed_from_u64(7);
        let mut reply = Vec::with_capacity(65535);
        group.bench_function(name, |b| {
            b.iter(|| respond(black_box(&q), limit, &snap, &mut rng, &mut reply))
        });
    }
    let snap = snapshot(AnswerMode::Random(1), 3);
    let mut response = query("alternator.example.com", Rtype::A);
    response[2] |= 0x80;
    let mut rng = Rng::seed_from_u64(7);
    let mut reply = Vec::with_capacity(65535);
    group.bench_function("drop_qr1", |b| {
        b.iter(|| {
            respond(
                black_box(&response),
                Transport::Udp,
                &snap,
                &mut rng,
                &mut reply,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench_answers);
criterion_main!(benches);
