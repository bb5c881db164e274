//! Zone-local answers on the answer path: the client's location's nodes,
//! ECS read and echoed with a scope, FORMERR for a malformed one.

use std::net::IpAddr;
use std::sync::Arc;

use domain::base::iana::{Rcode, Rtype};
use domain::base::rdata::UnknownRecordData;
use domain::base::Message;
use rand_core::SeedableRng;

use super::{addresses, answers, query, three_names_split, with_opt, DC};
use crate::access::Cidr;
use crate::dns::answer::{respond, respond_general, AnswerMode, Outcome, Rng, Transport};
use crate::dns::placement::{LocationRule, Placement};
use crate::dns::Zone;
use crate::nodes::{NodeSource, Snapshot};

const APEX: &str = "alternator.example.com";

/// Locations: 0 holds the tests' usual source (192.0.2.0/24) and 10.1.0.0/16,
/// 1 holds fd00::/16 and has no nodes, 2 holds 10.2.0.0/16 and only IPv4
/// nodes. The apex and the rack name place their clients; the dc name
/// does not.
pub(super) fn placed_snapshot(mode: AnswerMode, resolver_mode: Option<AnswerMode>) -> Snapshot {
    placed_snapshot_with(mode, resolver_mode, true)
}

fn placed_snapshot_with(
    mode: AnswerMode,
    resolver_mode: Option<AnswerMode>,
    client_subnet: bool,
) -> Snapshot {
    let rules = [
        ("192.0.2.0/24", 0),
        ("10.1.0.0/16", 0),
        ("fd00::/16", 1),
        ("10.2.0.0/16", 2),
    ]
    .map(|(cidr, location)| LocationRule {
        cidr: cidr.parse::<Cidr>().unwrap(),
        location,
    });
    let placement = Placement::new(&rules, vec![true, false, true], client_subnet);
    let zone = Arc::unwrap_or_clone(three_names_split(mode, resolver_mode, 1232));
    let zone = Arc::new(zone.with_placement(placement));
    let names = [(3, 2), (2, 1), (1, 2)].map(|(v4, v6)| addresses(v4, v6, 1 + v4 as u8));
    let locations = [addresses(2, 2, 20), vec![], addresses(2, 0, 22)];
    Snapshot::with_sets(1, zone, NodeSource::Cluster, &names)
        .with_locations(&locations, |_, _| true)
}

/// An ECS option: family 1 or 2, source prefix, scope, address octets.
fn ecs(family: u16, prefix: u8, scope: u8, address: &[u8]) -> Vec<u8> {
    let mut option = vec![0, 8];
    option.extend(((4 + address.len()) as u16).to_be_bytes());
    option.extend(family.to_be_bytes());
    option.extend([prefix, scope]);
    option.extend_from_slice(address);
    option
}

fn ask_from(
    snap: &Snapshot,
    query: &[u8],
    source: &str,
    transport: Transport,
) -> (Outcome, Vec<u8>) {
    let source: IpAddr = source.parse().unwrap();
    let mut reply = Vec::with_capacity(65535);
    let outcome = respond(
        query,
        source,
        transport,
        snap,
        &mut Rng::seed_from_u64(3),
        &mut reply,
    );
    let mut general = Vec::with_capacity(65535);
    respond_general(
        query,
        source,
        transport,
        snap,
        &mut Rng::seed_from_u64(3),
        &mut general,
    );
    assert_eq!(reply, general, "both paths agree");
    (outcome, reply)
}

/// The ECS option of a reply's OPT, as (family, source, scope, address).
fn echoed(reply: &[u8]) -> Option<(u16, u8, u8, Vec<u8>)> {
    let msg = Message::from_octets(reply).unwrap();
    let opt = (msg.additional().unwrap())
        .map(Result::unwrap)
        .find(|record| record.rtype() == Rtype::OPT)?;
    let data = opt
        .to_record::<UnknownRecordData<&[u8]>>()
        .unwrap()
        .unwrap();
    let mut rest: &[u8] = data.data().data();
    while let [c0, c1, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let (body, next) = tail.split_at(len);
        if [*c0, *c1] == [0, 8] {
            let family = u16::from_be_bytes([body[0], body[1]]);
            return Some((family, body[2], body[3], body[4..].to_vec()));
        }
        rest = next;
    }
    None
}

fn within(got: &[IpAddr], set: &[IpAddr]) -> bool {
    !got.is_empty() && got.iter().all(|ip| set.contains(ip))
}

#[test]
fn a_placed_source_gets_its_locations_nodes() {
    let snap = placed_snapshot(AnswerMode::All, None);
    let local: Vec<IpAddr> = addresses(2, 2, 20);
    let (_, reply) = ask_from(&snap, &query(APEX, Rtype::A), "192.0.2.9", Transport::Udp);
    assert_eq!(answers(&reply).len(), 2);
    assert!(within(&answers(&reply), &local));
    let (_, reply) = ask_from(
        &snap,
        &query(APEX, Rtype::AAAA),
        "192.0.2.9",
        Transport::Tcp,
    );
    assert!(within(&answers(&reply), &local));
    // Unplaced, and a name without affinity: the name's own nodes.
    let (_, reply) = ask_from(
        &snap,
        &query(APEX, Rtype::A),
        "198.51.100.1",
        Transport::Udp,
    );
    assert_eq!(answers(&reply).len(), 3);
    let (_, reply) = ask_from(&snap, &query(DC, Rtype::A), "192.0.2.9", Transport::Udp);
    assert!(within(&answers(&reply), &addresses(2, 1, 3)));
}

#[test]
fn a_location_without_nodes_of_the_family_answers_from_the_name() {
    let snap = placed_snapshot(AnswerMode::All, None);
    // Location 2 has IPv4 nodes only; location 1 none at all.
    let (_, reply) = ask_from(&snap, &query(APEX, Rtype::A), "10.2.0.1", Transport::Udp);
    assert!(within(&answers(&reply), &addresses(2, 0, 22)));
    let (_, reply) = ask_from(&snap, &query(APEX, Rtype::AAAA), "10.2.0.1", Transport::Udp);
    assert!(within(&answers(&reply), &addresses(3, 2, 4)));
    let (_, reply) = ask_from(&snap, &query(APEX, Rtype::A), "fd00::1", Transport::Udp);
    assert!(within(&answers(&reply), &addresses(3, 2, 4)));
}

#[test]
fn ecs_places_the_subnet_and_is_echoed_with_its_scope() {
    let snap = placed_snapshot(AnswerMode::All, None);
    let local = addresses(2, 2, 20);
    // From an unplaced resolver, for a client in 10.1.2.0/24: placed, and
    // good for all of 10.1.0.0/16.
    let q = with_opt(
        query(APEX, Rtype::A),
        1232,
        0,
        0,
        &ecs(1, 24, 0, &[10, 1, 2]),
    );
    let (_, reply) = ask_from(&snap, &q, "198.51.100.1", Transport::Udp);
    assert!(within(&answers(&reply), &local));
    assert_eq!(echoed(&reply), Some((1, 24, 16, vec![10, 1, 2])));
    // The ECS wins over a placed source.
    let q = with_opt(query(APEX, Rtype::A), 1232, 0, 0, &ecs(1, 8, 0, &[11]));
    let (_, reply) = ask_from(&snap, &q, "192.0.2.9", Transport::Tcp);
    assert_eq!(answers(&reply).len(), 3, "11.0.0.0/8 is nowhere");
    assert!(echoed(&reply).is_some_and(|(_, _, scope, _)| scope > 0 && scope <= 8));
    // Too short to tell: 10.0.0.0/8 holds two locations; the scope says
    // how many bits would.
    let q = with_opt(query(APEX, Rtype::A), 1232, 0, 0, &ecs(1, 8, 0, &[10]));
    let (_, reply) = ask_from(&snap, &q, "192.0.2.9", Transport::Udp);
    assert_eq!(answers(&reply).len(), 3);
    assert_eq!(echoed(&reply), Some((1, 8, 16, vec![10])));
    // Opted out: unplaced, scope 0.
    let q = with_opt(query(APEX, Rtype::A), 1232, 0, 0, &ecs(1, 0, 0, &[]));
    let (_, reply) = ask_from(&snap, &q, "192.0.2.9", Transport::Udp);
    assert_eq!(answers(&reply).len(), 3);
    assert_eq!(echoed(&reply), Some((1, 0, 0, vec![])));
    // A name that does not place its clients, and a negative answer: scope 0.
    let q = with_opt(query(DC, Rtype::A), 1232, 0, 0, &ecs(1, 24, 0, &[10, 1, 2]));
    let (_, reply) = ask_from(&snap, &q, "198.51.100.1", Transport::Udp);
    assert_eq!(echoed(&reply), Some((1, 24, 0, vec![10, 1, 2])));
    let q = with_opt(
        query(&format!("nope.{APEX}"), Rtype::A),
        1232,
        0,
        0,
        &ecs(1, 24, 0, &[10, 1, 2]),
    );
    let (outcome, reply) = ask_from(&snap, &q, "198.51.100.1", Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(Rcode::NXDOMAIN.into()));
    assert_eq!(echoed(&reply), Some((1, 24, 0, vec![10, 1, 2])));
}

#[test]
fn answers_that_hold_for_everyone_have_scope_zero_and_badvers_wins() {
    let snap = placed_snapshot(AnswerMode::All, None);
    let option = ecs(1, 24, 0, &[10, 1, 2]);
    for qtype in [Rtype::SOA, Rtype::NS, Rtype::TXT] {
        let q = with_opt(query(APEX, qtype), 1232, 0, 0, &option);
        let (_, reply) = ask_from(&snap, &q, "198.51.100.1", Transport::Udp);
        assert_eq!(echoed(&reply), Some((1, 24, 0, vec![10, 1, 2])), "{qtype}");
    }
    // EDNS version 1 with a malformed ECS: BADVERS, the option unread.
    let q = with_opt(
        query(APEX, Rtype::A),
        1232,
        1,
        0,
        &ecs(1, 24, 8, &[10, 1, 2]),
    );
    let (outcome, reply) = ask_from(&snap, &q, "198.51.100.1", Transport::Udp);
    assert_eq!(
        outcome,
        Outcome::Reply(domain::base::iana::OptRcode::BADVERS)
    );
    assert_eq!(echoed(&reply), None);
}

#[test]
fn malformed_ecs_gets_formerr_unless_ecs_is_off() {
    let q = with_opt(
        query(APEX, Rtype::A),
        1232,
        0,
        0,
        &ecs(1, 24, 8, &[10, 1, 2]),
    );
    let snap = placed_snapshot(AnswerMode::Random(1), None);
    let (outcome, _) = ask_from(&snap, &q, "192.0.2.9", Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(Rcode::FORMERR.into()));
    // --client-subnet false: ECS is neither read nor echoed; the source
    // places the client.
    let off = placed_snapshot_with(AnswerMode::All, None, false);
    let (outcome, reply) = ask_from(&off, &q, "192.0.2.9", Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(Rcode::NOERROR.into()));
    assert_eq!(echoed(&reply), None);
    assert!(within(&answers(&reply), &addresses(2, 2, 20)));
    let good = with_opt(
        query(APEX, Rtype::A),
        1232,
        0,
        0,
        &ecs(1, 24, 0, &[10, 2, 0]),
    );
    let (_, reply) = ask_from(&off, &good, "198.51.100.1", Transport::Udp);
    assert_eq!(answers(&reply).len(), 3, "the subnet is not looked at");
}

#[test]
fn zones_without_placement_echo_ecs_with_scope_zero() {
    let zone = Arc::new(Zone::new(&crate::dns::ZoneSettings::new(APEX)).unwrap());
    let snap = Snapshot::new(1, zone, NodeSource::Cluster, &addresses(3, 0, 1));
    let q = with_opt(
        query(APEX, Rtype::A),
        1232,
        0,
        0,
        &ecs(2, 56, 0, &[0xfd, 0, 0, 1, 0, 0, 0]),
    );
    let (_, reply) = ask_from(&snap, &q, "192.0.2.9", Transport::Udp);
    assert_eq!(answers(&reply).len(), 1);
    assert_eq!(
        echoed(&reply),
        Some((2, 56, 0, vec![0xfd, 0, 0, 1, 0, 0, 0]))
    );
}
