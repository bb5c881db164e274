//! What zone-local answers add to a query: the same A query answered with
//! `--affinity` off and on, from a source (or for an ECS subnet) placed by
//! a table of 1,000 `--location` prefixes, side by side in one group.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::measurement::Measurement;
use criterion::Criterion;
use domain::base::iana::Rtype;
use rand_core::SeedableRng;

use alternator_dns::access::Cidr;
use alternator_dns::dns::{respond, AnswerMode, LocationRule, Placement, Rng, Transport, Zone};
use alternator_dns::nodes::{NodeSource, Snapshot};

use super::{configure, query, with_edns, zone, Names};

/// Locations of the table: racks of a few datacenters.
const LOCATIONS: u16 = 12;

/// 1,000 prefixes in 10.0.0.0/8: a /24 for each of 1,000 client networks
/// (10.A.B.0/24, spread over the /8 with gaps between them), cycling
/// through the locations: about 2,000 ranges to search, the most 1,000
/// prefixes make.
fn rules() -> Vec<LocationRule> {
    (0..1000u32)
        .map(|i| {
            let network = 0x0a00_0000 | (i * 4099 % 65536) << 8;
            LocationRule {
                cidr: Cidr::new(IpAddr::V4(Ipv4Addr::from(network)), 24).expect("a /24"),
                location: (i % u32::from(LOCATIONS)) as u16,
            }
        })
        .collect()
}

/// A source inside the table's 500th prefix, and one outside every prefix.
fn placed_source() -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (500 * 4099 % 65536) << 8 | 7))
}

const UNPLACED: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// The apex with 3 nodes; each location with 3 nodes of its own. With
/// `affinity`, the apex places its clients.
fn snapshot(affinity: bool) -> Snapshot {
    let placement = Placement::new(&rules(), vec![affinity], true);
    let zone: Zone = Arc::unwrap_or_clone(zone(AnswerMode::Random(1), Names::Apex));
    let zone = Arc::new(zone.with_placement(placement));
    let node = |a: u8, b: u8| IpAddr::V4(Ipv4Addr::new(172, 16, a, b));
    let apex: Vec<IpAddr> = (1..=3).map(|b| node(0, b)).collect();
    let locations: Vec<Vec<IpAddr>> = (1..=LOCATIONS as u8)
        .map(|a| (1..=3).map(|b| node(a, b)).collect())
        .collect();
    Snapshot::new(1, zone, NodeSource::Cluster, &apex).with_locations(&locations, |_, _| true)
}

/// `query` with an OPT record holding one ECS option: family 1, the
/// placed source's /24, scope 0.
fn with_ecs(query: Vec<u8>) -> Vec<u8> {
    let IpAddr::V4(v4) = placed_source() else {
        unreachable!("an IPv4 source")
    };
    let [a, b, c, _] = v4.octets();
    let mut query = with_edns(query);
    let len = query.len();
    query[len - 2..].copy_from_slice(&11u16.to_be_bytes());
    query.extend([0, 8, 0, 7, 0, 1, 24, 0, a, b, c]);
    query
}

pub(super) fn bench_placement<M: Measurement>(c: &mut Criterion<M>) {
    let mut group = configure(c, "placement");
    let (off, on) = (snapshot(false), snapshot(true));
    let a = query(super::APEX, Rtype::A);
    let ecs = with_ecs(query(super::APEX, Rtype::A));
    let mut rng = Rng::seed_from_u64(7);
    let mut reply = Vec::with_capacity(65535);
    let cases: [(&str, &Snapshot, &[u8], IpAddr); 5] = [
        ("a_affinity_off", &off, &a, placed_source()),
        ("a_placed_by_source", &on, &a, placed_source()),
        ("a_unplaced_source", &on, &a, UNPLACED),
        ("a_ecs_affinity_off", &off, &ecs, UNPLACED),
        ("a_placed_by_ecs", &on, &ecs, UNPLACED),
    ];
    for (name, snap, query, source) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                respond(
                    black_box(query),
                    black_box(source),
                    Transport::Udp,
                    snap,
                    &mut rng,
                    &mut reply,
                )
            })
        });
    }
    let placement = on.zone.placement();
    group.bench_function("locate_only", |b| {
        b.iter(|| placement.locate(black_box(placed_source())))
    });
    group.finish();
}
