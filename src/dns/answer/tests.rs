use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use domain::base::iana::{Class, Opcode, Rcode, Rtype};
use domain::base::{Message, MessageBuilder, Name, Ttl};
use domain::rdata::AllRecordData;
use rand_core::{Rng as _, SeedableRng};

use super::*;
use crate::dns::zone::ZoneSettings;
use crate::nodes::{NodeSource, Snapshot};

/// The source of every query here (placed only by the zones of
/// `placement::placed_snapshot`).
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fn zone(answers: AnswerMode) -> Arc<Zone> {
    Arc::new(
        Zone::new(&ZoneSettings {
            answers,
            ..ZoneSettings::new("alternator.example.com")
        })
        .unwrap(),
    )
}

fn snapshot(answers: AnswerMode, nodes: &[&str]) -> Snapshot {
    let nodes: Vec<IpAddr> = nodes.iter().map(|n| n.parse().unwrap()).collect();
    Snapshot::new(1, zone(answers), NodeSource::Cluster, &nodes)
}

fn query(name: &str, qtype: Rtype) -> Vec<u8> {
    query_with(name, qtype, Class::IN, |_| {})
}

fn query_with(
    name: &str,
    qtype: Rtype,
    class: Class,
    edit: impl FnOnce(&mut domain::base::Header),
) -> Vec<u8> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(0xbeef);
    b.header_mut().set_rd(true);
    edit(b.header_mut());
    let mut q = b.question();
    q.push((Name::<Vec<u8>>::vec_from_str(name).unwrap(), qtype, class))
        .unwrap();
    q.finish()
}

fn ask(snap: &Snapshot, query: &[u8], transport: Transport) -> (Outcome, Vec<u8>) {
    let mut rng = Rng::seed_from_u64(1);
    let mut reply = Vec::with_capacity(TCP_LIMIT);
    let outcome = respond(query, CLIENT, transport, snap, &mut rng, &mut reply);
    (outcome, reply)
}

fn answers(reply: &[u8]) -> Vec<IpAddr> {
    let msg = Message::from_octets(reply).unwrap();
    msg.answer()
        .unwrap()
        .limit_to::<AllRecordData<_, _>>()
        .map(|r| match r.unwrap().data() {
            AllRecordData::A(a) => IpAddr::V4(a.addr()),
            AllRecordData::Aaaa(a) => IpAddr::V6(a.addr()),
            other => panic!("unexpected record {other:?}"),
        })
        .collect()
}

#[test]
fn a_query_gets_one_live_node_with_ttl_and_aa() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    let q = query("alternator.example.com", Rtype::A);
    let (outcome, reply) = ask(&snap, &q, Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(Rcode::NOERROR.into()));
    let msg = Message::from_octets(&reply[..]).unwrap();
    let h = msg.header();
    assert_eq!(h.id(), 0xbeef);
    assert!(h.qr() && h.aa() && h.rd() && !h.ra() && !h.tc());
    assert_eq!(h.rcode(), Rcode::NOERROR);
    let counts = msg.header_counts();
    assert_eq!(
        (counts.qdcount(), counts.ancount(), counts.nscount()),
        (1, 1, 0)
    );
    let record = msg.answer().unwrap().next().unwrap().unwrap();
    assert_eq!(record.ttl(), Ttl::from_secs(4));
    let got = answers(&reply);
    assert!(snap.nodes().any(|n| n == got[0]), "{got:?}");
}

#[test]
fn question_is_echoed_byte_for_byte_and_names_match_case_insensitively() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    let q = query("AlTeRnAtOr.ExAmPlE.CoM", Rtype::A);
    let (outcome, reply) = ask(&snap, &q, Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(Rcode::NOERROR.into()));
    assert_eq!(&reply[12..q.len()], &q[12..], "question section differs");
    assert_eq!(answers(&reply), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
}

#[test]
fn aaaa_without_ipv6_nodes_is_nodata_with_soa() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    let (outcome, reply) = ask(
        &snap,
        &query("alternator.example.com", Rtype::AAAA),
        Transport::Udp,
    );
    assert_eq!(outcome, Outcome::Reply(Rcode::NOERROR.into()));
    let msg = Message::from_octets(&reply[..]).unwrap();
    assert!(msg.header().aa());
    assert_eq!(msg.header_counts().ancount(), 0);
    assert_eq!(msg.header_counts().nscount(), 1);
    let soa = msg.authority().unwrap().next().unwrap().unwrap();
    assert_eq!(soa.rtype(), Rtype::SOA);
    assert_eq!(soa.ttl(), Ttl::from_secs(60));
}

#[test]
fn aaaa_serves_ipv6_nodes_and_a_serves_only_ipv4() {
    let snap = snapshot(AnswerMode::All, &["10.0.0.1", "fd00::1", "fd00::2"]);
    let (_, reply) = ask(
        &snap,
        &query("alternator.example.com", Rtype::AAAA),
        Transport::Udp,
    );
    let mut got = answers(&reply);
    got.sort();
    assert_eq!(
        got,
        vec![
            "fd00::1".parse::<IpAddr>().unwrap(),
            "fd00::2".parse().unwrap()
        ]
    );
    let (_, reply) = ask(
        &snap,
        &query("alternator.example.com", Rtype::A),
        Transport::Udp,
    );
    assert_eq!(answers(&reply), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
}

#[test]
fn names_below_the_apex_are_nxdomain_and_outside_refused() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    let (outcome, reply) = ask(
        &snap,
        &query("x.alternator.example.com", Rtype::A),
        Transport::Udp,
    );
    assert_eq!(outcome, Outcome::Reply(Rcode::NXDOMAIN.into()));
    let msg = Message::from_octets(&reply[..]).unwrap();
    assert!(msg.header().aa());
    assert_eq!(msg.header_counts().nscount(), 1);

    for outside in [
        "example.com",
        "alternator.example.org",
        "xalternator.example.com",
    ] {
        let (outcome, reply) = ask(&snap, &query(outside, Rtype::A), Transport::Udp);
        assert_eq!(outcome, Outcome::Reply(Rcode::REFUSED.into()), "{outside}");
        let msg = Message::from_octets(&reply[..]).unwrap();
        assert!(!msg.header().aa());
        assert_eq!(msg.header_counts().ancount(), 0);
        assert_eq!(msg.header_counts().qdcount(), 1);
    }
}

#[test]
fn soa_and_ns_are_synthesised_at_the_apex() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    let (_, reply) = ask(
        &snap,
        &query("alternator.example.com", Rtype::SOA),
        Transport::Udp,
    );
    let msg = Message::from_octets(&reply[..]).unwrap();
    let soa = msg.answer().unwrap().next().unwrap().unwrap();
    assert_eq!(soa.rtype(), Rtype::SOA);
    let (_, reply) = ask(
        &snap,
        &query("alternator.example.com", Rtype::NS),
        Transport::Udp,
    );
    let msg = Message::from_octets(&reply[..]).unwrap();
    let ns = msg.answer().unwrap().next().unwrap().unwrap();
    assert_eq!(ns.rtype(), Rtype::NS);
    // Another type at the apex: NODATA.
    let (outcome, reply) = ask(
        &snap,
        &query("alternator.example.com", Rtype::MX),
        Transport::Udp,
    );
    assert_eq!(outcome, Outcome::Reply(Rcode::NOERROR.into()));
    let msg = Message::from_octets(&reply[..]).unwrap();
    assert_eq!(msg.header_counts().ancount(), 0);
    assert_eq!(msg.header_counts().nscount(), 1);
}

#[test]
fn ns_answers_carry_the_name_servers_addresses_which_are_answered_too() {
    let zone = Zone::new(&ZoneSettings {
        ns: vec![
            "ns1.alternator.example.com=192.0.2.1,2001:db8::1".into(),
            "ns.example.net".into(),
        ],
        ..ZoneSettings::new("alternator.example.com")
    })
    .unwrap();
    let snap = Snapshot::new(1, Arc::new(zone), NodeSource::Cluster, &[]);
    let (_, reply) = ask(
        &snap,
        &query("alternator.example.com", Rtype::NS),
        Transport::Udp,
    );
    let msg = Message::from_octets(&reply[..]).unwrap();
    assert_eq!(msg.header_counts().ancount(), 2);
    let glue: Vec<(String, Rtype)> = msg
        .additional()
        .unwrap()
        .map(|r| r.unwrap())
        .map(|r| (r.owner().to_string(), r.rtype()))
        .collect();
    let ns1 = "ns1.alternator.example.com".to_string();
    assert_eq!(glue, [(ns1.clone(), Rtype::A), (ns1, Rtype::AAAA)]);

    // The in-zone name server's own name: its addresses, authoritative.
    for (qtype, want) in [(Rtype::A, "192.0.2.1"), (Rtype::AAAA, "2001:db8::1")] {
        let (outcome, reply) = ask(
            &snap,
            &query("NS1.alternator.example.com", qtype),
            Transport::Udp,
        );
        assert_eq!(outcome, Outcome::Reply(Rcode::NOERROR.into()));
        assert!(Message::from_octets(&reply[..]).unwrap().header().aa());
        assert_eq!(answers(&reply), [want.parse::<IpAddr>().unwrap()]);
    }
    // Other types there: NODATA, not NXDOMAIN.
    let (outcome, reply) = ask(
        &snap,
        &query("ns1.alternator.example.com", Rtype::MX),
        Transport::Udp,
    );
    assert_eq!(outcome, Outcome::Reply(Rcode::NOERROR.into()));
    let counts = Message::from_octets(&reply[..]).unwrap().header_counts();
    assert_eq!((counts.ancount(), counts.nscount()), (0, 1));
    // Another name: still NXDOMAIN.
    let (outcome, _) = ask(
        &snap,
        &query("ns2.alternator.example.com", Rtype::A),
        Transport::Udp,
    );
    assert_eq!(outcome, Outcome::Reply(Rcode::NXDOMAIN.into()));
}

#[test]
fn name_server_addresses_that_do_not_fit_are_left_out_without_tc() {
    // Twelve NS records fit in 512 bytes; their 24 addresses do not.
    let ns: Vec<String> = (1..=12)
        .map(|i| format!("ns{i}.alternator.example.com=192.0.2.{i},2001:db8::{i}"))
        .collect();
    let zone = Zone::new(&ZoneSettings {
        ns,
        ..ZoneSettings::new("alternator.example.com")
    })
    .unwrap();
    let snap = Snapshot::new(1, Arc::new(zone), NodeSource::Cluster, &[]);
    let q = query("alternator.example.com", Rtype::NS);
    let (outcome, reply) = ask(&snap, &q, Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(Rcode::NOERROR.into()));
    assert!(reply.len() <= CLASSIC_UDP_LIMIT, "{} bytes", reply.len());
    let msg = Message::from_octets(&reply[..]).unwrap();
    assert!(!msg.header().tc(), "optional addresses never set TC");
    let counts = msg.header_counts();
    assert_eq!((counts.ancount(), counts.arcount()), (12, 0));
    // Over TCP all of them go.
    let (_, reply) = ask(&snap, &q, Transport::Tcp);
    let counts = Message::from_octets(&reply[..]).unwrap().header_counts();
    assert_eq!((counts.ancount(), counts.arcount()), (12, 24));
}

#[test]
fn queries_without_rd_get_the_resolver_answer_mode() {
    let nodes: Vec<IpAddr> = (1..=6).map(|i| IpAddr::from([10, 0, 0, i])).collect();
    let zone = Zone::new(&ZoneSettings {
        answers: AnswerMode::Random(1),
        resolver_answers: Some(AnswerMode::All),
        ..ZoneSettings::new("alternator.example.com")
    })
    .unwrap();
    let snap = Snapshot::new(1, Arc::new(zone), NodeSource::Cluster, &nodes);
    for (rd, want) in [(true, 1), (false, 6)] {
        let q = query_with("alternator.example.com", Rtype::A, Class::IN, |h| {
            h.set_rd(rd)
        });
        let (_, fast) = ask(&snap, &q, Transport::Udp);
        assert_eq!(answers(&fast).len(), want, "RD={rd}");
        let mut reply = Vec::with_capacity(TCP_LIMIT);
        respond_general(
            &q,
            CLIENT,
            Transport::Udp,
            &snap,
            &mut Rng::seed_from_u64(1),
            &mut reply,
        );
        assert_eq!(reply, fast, "RD={rd}: both paths agree");
    }
}

#[test]
fn responses_and_short_packets_are_dropped() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    let q = query_with("alternator.example.com", Rtype::A, Class::IN, |h| {
        h.set_qr(true)
    });
    assert_eq!(
        ask(&snap, &q, Transport::Udp).0,
        Outcome::Drop(DropReason::Response)
    );
    for len in 0..HEADER_LEN {
        assert_eq!(
            ask(&snap, &q[..len], Transport::Udp).0,
            Outcome::Drop(DropReason::TooShort)
        );
    }
}

#[test]
fn malformed_queries_get_formerr_and_other_opcodes_notimp() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    let q = query("alternator.example.com", Rtype::A);
    // Question cut short.
    let (outcome, reply) = ask(&snap, &q[..q.len() - 2], Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(Rcode::FORMERR.into()));
    assert_eq!(&reply[..2], &q[..2], "ID echoed");
    // No question, and two questions.
    for qdcount in [0u8, 2] {
        let mut bad = q.clone();
        bad[5] = qdcount;
        assert_eq!(
            ask(&snap, &bad, Transport::Udp).0,
            Outcome::Reply(Rcode::FORMERR.into())
        );
    }
    // A compression pointer that points at itself.
    let mut looped = q[..HEADER_LEN].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(
        ask(&snap, &looped, Transport::Udp).0,
        Outcome::Reply(Rcode::FORMERR.into())
    );

    let notify = query_with("alternator.example.com", Rtype::A, Class::IN, |h| {
        h.set_opcode(Opcode::NOTIFY)
    });
    let (outcome, reply) = ask(&snap, &notify, Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(Rcode::NOTIMP.into()));
    let msg = Message::from_octets(&reply[..]).unwrap();
    assert_eq!(msg.header().opcode(), Opcode::NOTIFY);
    assert_eq!(msg.header_counts().qdcount(), 1);
    assert_eq!(msg.header_counts().ancount(), 0);
}

#[test]
fn other_classes_are_refused() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    let q = query_with("alternator.example.com", Rtype::A, Class::CH, |_| {});
    assert_eq!(
        ask(&snap, &q, Transport::Udp).0,
        Outcome::Reply(Rcode::REFUSED.into())
    );
}

#[test]
fn random_n_gives_distinct_nodes_and_all_gives_every_node() {
    let nodes = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];
    let q = query("alternator.example.com", Rtype::A);
    let mut rng = Rng::seed_from_u64(3);
    let mut reply = Vec::with_capacity(TCP_LIMIT);
    let three = snapshot(AnswerMode::Random(3), &nodes);
    for _ in 0..200 {
        respond(&q, CLIENT, Transport::Udp, &three, &mut rng, &mut reply);
        let mut got = answers(&reply);
        assert_eq!(got.len(), 3);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 3, "duplicates in {got:?}");
    }
    for mode in [AnswerMode::All, AnswerMode::Random(9)] {
        let snap = snapshot(mode, &nodes);
        let mut firsts = HashMap::new();
        for _ in 0..500 {
            respond(&q, CLIENT, Transport::Udp, &snap, &mut rng, &mut reply);
            let got = answers(&reply);
            assert_eq!(got.len(), nodes.len());
            // A rotation of the snapshot's order.
            let start = nodes
                .iter()
                .position(|n| n.parse::<IpAddr>().unwrap() == got[0])
                .unwrap();
            for (i, ip) in got.iter().enumerate() {
                assert_eq!(
                    *ip,
                    nodes[(start + i) % nodes.len()].parse::<IpAddr>().unwrap()
                );
            }
            *firsts.entry(got[0]).or_insert(0) += 1;
        }
        assert_eq!(firsts.len(), nodes.len(), "every rotation offset is used");
    }
}

#[test]
fn single_answers_spread_uniformly() {
    let nodes = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"];
    let snap = snapshot(AnswerMode::Random(1), &nodes);
    let q = query("alternator.example.com", Rtype::A);
    let mut rng = Rng::seed_from_u64(42);
    let mut reply = Vec::with_capacity(TCP_LIMIT);
    let mut counts: HashMap<IpAddr, u32> = HashMap::new();
    let rounds = 40_000;
    for _ in 0..rounds {
        respond(&q, CLIENT, Transport::Udp, &snap, &mut rng, &mut reply);
        *counts.entry(answers(&reply)[0]).or_default() += 1;
    }
    let expected = rounds / nodes.len() as u32;
    for (ip, n) in counts {
        let off = n.abs_diff(expected) as f64 / expected as f64;
        assert!(off < 0.05, "{ip} answered {n} times, expected ~{expected}");
    }
}

#[test]
fn oversized_answers_are_truncated_over_udp_but_not_tcp() {
    let nodes: Vec<String> = (0..200)
        .map(|i| Ipv4Addr::new(10, 0, i / 250, (i % 250) + 1).to_string())
        .collect();
    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let snap = snapshot(AnswerMode::All, &refs);
    let q = query("alternator.example.com", Rtype::A);
    let (outcome, reply) = ask(&snap, &q, Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(Rcode::NOERROR.into()));
    assert!(reply.len() <= CLASSIC_UDP_LIMIT);
    let msg = Message::from_octets(&reply[..]).unwrap();
    assert!(msg.header().tc());
    assert_eq!(msg.header_counts().ancount(), 0);
    assert_eq!(msg.header_counts().qdcount(), 1);

    let (_, reply) = ask(&snap, &q, Transport::Tcp);
    let msg = Message::from_octets(&reply[..]).unwrap();
    assert!(!msg.header().tc());
    assert_eq!(answers(&reply).len(), 200);
}

#[test]
fn the_reply_buffer_is_reused_without_reallocation() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1", "10.0.0.2"]);
    let q = query("alternator.example.com", Rtype::A);
    let mut rng = Rng::seed_from_u64(5);
    let mut reply = Vec::with_capacity(4096);
    let before = reply.as_ptr();
    for _ in 0..100 {
        respond(&q, CLIENT, Transport::Udp, &snap, &mut rng, &mut reply);
    }
    assert_eq!(reply.as_ptr(), before);
    assert_eq!(reply.capacity(), 4096);
}

/// Appends an OPT record to `query` (and counts it in ARCOUNT).
fn with_opt(mut query: Vec<u8>, payload: u16, version: u8, flags: u16, options: &[u8]) -> Vec<u8> {
    query.push(0); // root owner
    query.extend_from_slice(&41u16.to_be_bytes());
    query.extend_from_slice(&payload.to_be_bytes());
    query.extend_from_slice(&[0, version]);
    query.extend_from_slice(&flags.to_be_bytes());
    query.extend_from_slice(&(options.len() as u16).to_be_bytes());
    query.extend_from_slice(options);
    let arcount = u16::from_be_bytes([query[10], query[11]]) + 1;
    query[10..12].copy_from_slice(&arcount.to_be_bytes());
    query
}

/// (payload size, version, flags, option bytes) of the reply's OPT, if any.
fn reply_opt(reply: &[u8]) -> Option<(u16, u8, u8, u16, usize)> {
    let msg = Message::from_octets(reply).unwrap();
    let mut found = None;
    for record in msg.additional().unwrap() {
        let record = record.unwrap();
        if record.rtype() == Rtype::OPT {
            assert!(found.is_none(), "two OPT records in the reply");
            let ttl = record.ttl().as_secs();
            found = Some((
                record.class().to_int(),
                (ttl >> 24) as u8,
                (ttl >> 16) as u8,
                ttl as u16,
                usize::from(record.rdlen()),
            ));
        }
    }
    found
}

#[test]
fn edns_queries_get_our_opt_with_do_echoed_and_unknown_parts_dropped() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    // DO set plus an unknown flag bit; an unknown option (code 100).
    let q = with_opt(
        query("alternator.example.com", Rtype::A),
        4096,
        0,
        0x8000 | 0x0040,
        &[0, 100, 0, 2, 0xab, 0xcd],
    );
    let (outcome, reply) = ask(&snap, &q, Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(Rcode::NOERROR.into()));
    let (payload, ext_rcode, version, flags, rdlen) = reply_opt(&reply).expect("OPT in reply");
    assert_eq!((payload, ext_rcode, version), (1232, 0, 0));
    assert_eq!(flags, 0x8000, "DO echoed, unknown flags cleared");
    assert_eq!(rdlen, 0, "unknown options are not echoed");
    assert_eq!(answers(&reply).len(), 1);

    // Without EDNS, no OPT.
    let (_, reply) = ask(
        &snap,
        &query("alternator.example.com", Rtype::A),
        Transport::Udp,
    );
    assert_eq!(reply_opt(&reply), None);
}

#[test]
fn edns_version_above_zero_gets_badvers() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    let q = with_opt(query("alternator.example.com", Rtype::A), 1232, 1, 0, &[]);
    let (outcome, reply) = ask(&snap, &q, Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(OptRcode::BADVERS));
    let msg = Message::from_octets(&reply[..]).unwrap();
    assert_eq!(
        msg.header().rcode(),
        Rcode::NOERROR,
        "low bits of BADVERS are 0"
    );
    assert_eq!(msg.header_counts().ancount(), 0);
    assert_eq!(msg.header_counts().qdcount(), 1);
    let (_, ext_rcode, version, _, _) = reply_opt(&reply).expect("OPT in reply");
    assert_eq!(
        (ext_rcode, version),
        (1, 0),
        "BADVERS (16) = ext 1, version 0"
    );
}

#[test]
fn malformed_edns_is_formerr() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    let base = query("alternator.example.com", Rtype::A);
    let two = with_opt(with_opt(base.clone(), 1232, 0, 0, &[]), 1232, 0, 0, &[]);
    // An option whose length runs past the record data.
    let lying = with_opt(base.clone(), 1232, 0, 0, &[0, 10, 0, 40, 1, 2]);
    // ARCOUNT says 1 but the record is missing.
    let mut missing = base.clone();
    missing[11] = 1;
    for bad in [two, lying, missing] {
        let (outcome, reply) = ask(&snap, &bad, Transport::Udp);
        assert_eq!(outcome, Outcome::Reply(Rcode::FORMERR.into()));
        assert_eq!(&reply[..2], &bad[..2]);
        assert_eq!(reply_opt(&reply), None);
    }
}

#[test]
fn the_udp_limit_follows_the_client_payload_size_within_bounds() {
    let nodes: Vec<String> = (0..60).map(|i| format!("10.1.0.{}", i + 1)).collect();
    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let snap = snapshot(AnswerMode::All, &refs);
    let plain = query("alternator.example.com", Rtype::A);
    // 60 A records need ~1000 bytes: too big for 512, fine for 1232.
    let (_, reply) = ask(
        &snap,
        &with_opt(plain.clone(), 4096, 0, 0, &[]),
        Transport::Udp,
    );
    assert!(!Message::from_octets(&reply[..]).unwrap().header().tc());
    assert_eq!(answers(&reply).len(), 60);
    assert!(reply.len() <= 1232);
    // A payload size below 512 counts as 512: truncated, OPT kept.
    let (_, reply) = ask(
        &snap,
        &with_opt(plain.clone(), 100, 0, 0, &[]),
        Transport::Udp,
    );
    let msg = Message::from_octets(&reply[..]).unwrap();
    assert!(msg.header().tc());
    assert!(reply.len() <= CLASSIC_UDP_LIMIT);
    assert_eq!(msg.header_counts().ancount(), 0);
    assert!(reply_opt(&reply).is_some(), "OPT survives truncation");

    // 200 nodes exceed 1232 as well: truncated at our size, never above it.
    let nodes: Vec<String> = (0..200)
        .map(|i| format!("10.2.{}.{}", i / 200, i % 200 + 1))
        .collect();
    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let snap = snapshot(AnswerMode::All, &refs);
    let (_, reply) = ask(&snap, &with_opt(plain, 65000, 0, 0, &[]), Transport::Udp);
    assert!(reply.len() <= 1232);
    assert!(Message::from_octets(&reply[..]).unwrap().header().tc());
}

#[test]
fn formerr_for_bad_record_sections_echoes_a_readable_question() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    let base = query("alternator.example.com", Rtype::A);
    let two_opts = with_opt(with_opt(base.clone(), 1232, 0, 0, &[]), 1232, 0, 0, &[]);
    let mut missing_answer = base.clone();
    missing_answer[7] = 1; // ANCOUNT=1, no record
    for bad in [two_opts, missing_answer] {
        let (outcome, reply) = ask(&snap, &bad, Transport::Udp);
        assert_eq!(outcome, Outcome::Reply(Rcode::FORMERR.into()));
        let msg = Message::from_octets(&reply[..]).unwrap();
        assert_eq!(msg.header_counts().qdcount(), 1);
        assert_eq!(&reply[12..base.len()], &base[12..], "question echoed");
        assert!(!msg.header().aa());
    }
}

#[test]
fn an_opt_outside_the_additional_section_is_formerr() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    // The OPT record, moved to the answer section (then to authority).
    let in_additional = with_opt(query("alternator.example.com", Rtype::A), 1232, 0, 0, &[]);
    for count_at in [6, 8] {
        let mut bad = in_additional.clone();
        bad[10..12].copy_from_slice(&[0, 0]);
        bad[count_at + 1] = 1;
        let (outcome, reply) = ask(&snap, &bad, Transport::Udp);
        assert_eq!(outcome, Outcome::Reply(Rcode::FORMERR.into()), "{count_at}");
        assert_eq!(reply_opt(&reply), None);
    }
    // A plain record in the answer section of a query is ignored.
    let mut with_answer = query("alternator.example.com", Rtype::A);
    with_answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 192, 0, 2, 1]);
    with_answer[7] = 1;
    let (outcome, reply) = ask(&snap, &with_answer, Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(Rcode::NOERROR.into()));
    assert_eq!(answers(&reply).len(), 1);
}

#[test]
fn zone_transfers_are_notimp_and_outside_the_zone_refused() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    for qtype in [Rtype::AXFR, Rtype::IXFR] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let (outcome, reply) = ask(&snap, &query("alternator.example.com", qtype), transport);
            assert_eq!(outcome, Outcome::Reply(Rcode::NOTIMP.into()), "{qtype}");
            let msg = Message::from_octets(&reply[..]).unwrap();
            assert!(!msg.header().aa());
            let counts = msg.header_counts();
            assert_eq!(
                (counts.qdcount(), counts.ancount(), counts.nscount()),
                (1, 0, 0)
            );
        }
        let (outcome, _) = ask(&snap, &query("example.com", qtype), Transport::Tcp);
        assert_eq!(outcome, Outcome::Reply(Rcode::REFUSED.into()));
    }
}

#[test]
fn a_question_name_pointing_into_the_header_is_formerr() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1"]);
    let q = query("alternator.example.com", Rtype::A);
    // A pointer to offset 2, the first flags byte, cleared: `domain` would
    // read the root name there.
    let mut bad = q[..HEADER_LEN].to_vec();
    bad[2] = 0;
    bad.extend_from_slice(&[0xc0, 2, 0, 1, 0, 1]);
    let (outcome, reply) = ask(&snap, &bad, Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(Rcode::FORMERR.into()));
    assert_eq!(
        Message::from_octets(&reply[..])
            .unwrap()
            .header_counts()
            .qdcount(),
        0
    );
    // With opcode NOTIFY: NOTIMP, without the unreadable question.
    bad[2] = Opcode::NOTIFY.to_int() << 3;
    let (outcome, reply) = ask(&snap, &bad, Transport::Udp);
    assert_eq!(outcome, Outcome::Reply(Rcode::NOTIMP.into()));
    assert_eq!(
        Message::from_octets(&reply[..])
            .unwrap()
            .header_counts()
            .qdcount(),
        0
    );
}

// ---- The fast path against the general path ----

const APEX: &str = "alternator.example.com";
const DC: &str = "dc1.alternator.example.com";
const RACK: &str = "r1.dc1.alternator.example.com";

/// A zone serving the apex, a datacenter and a rack name.
fn three_names(answers: AnswerMode, edns_udp_size: u16) -> Arc<Zone> {
    three_names_split(answers, None, edns_udp_size)
}

/// [`three_names`] answering queries without RD with `resolver_answers`.
fn three_names_split(
    answers: AnswerMode,
    resolver_answers: Option<AnswerMode>,
    edns_udp_size: u16,
) -> Arc<Zone> {
    let zone = Zone::new(&ZoneSettings {
        answers,
        resolver_answers,
        edns_udp_size,
        ..ZoneSettings::new(APEX)
    })
    .unwrap();
    Arc::new(zone.with_names(&[DC.into(), RACK.into()]).unwrap())
}

/// `v4` IPv4 and `v6` IPv6 addresses, distinct for each `salt`.
fn addresses(v4: usize, v6: usize, salt: u8) -> Vec<IpAddr> {
    let v4 = (0..v4).map(|i| {
        IpAddr::V4(Ipv4Addr::new(
            10,
            salt,
            (i / 250) as u8,
            (i % 250) as u8 + 1,
        ))
    });
    let v6 = (0..v6).map(|i| {
        IpAddr::V6(std::net::Ipv6Addr::new(
            0xfd00,
            u16::from(salt),
            0,
            0,
            0,
            0,
            0,
            i as u16 + 1,
        ))
    });
    v4.chain(v6).collect()
}

/// Snapshots covering the node-set shapes: mixed, one family only, a single
/// node, big sets that truncate, and names without nodes.
fn equivalence_snapshots() -> Vec<Snapshot> {
    let modes = [
        AnswerMode::Random(1),
        AnswerMode::Random(3),
        AnswerMode::All,
    ];
    let shapes: [[(usize, usize); 3]; 5] = [
        [(3, 2), (2, 0), (0, 2)],
        [(1, 1), (1, 0), (0, 0)],
        [(200, 100), (40, 30), (5, 5)],
        [(0, 3), (3, 0), (64, 64)],
        [(1000, 0), (0, 2500), (2, 2)],
    ];
    // Each mode for every query, and each mode split by the RD bit.
    let mut pairs: Vec<(AnswerMode, Option<AnswerMode>)> =
        modes.iter().map(|&m| (m, None)).collect();
    pairs.extend([
        (AnswerMode::Random(1), Some(AnswerMode::All)),
        (AnswerMode::All, Some(AnswerMode::Random(1))),
        (AnswerMode::Random(1), Some(AnswerMode::Random(3))),
    ]);
    let mut snaps = Vec::new();
    for (mode, resolver_mode) in pairs {
        for edns_size in [1232, 4096] {
            for shape in &shapes {
                let sets: Vec<Vec<IpAddr>> = shape
                    .iter()
                    .zip(1u8..)
                    .map(|(&(v4, v6), salt)| addresses(v4, v6, salt))
                    .collect();
                let zone = three_names_split(mode, resolver_mode, edns_size);
                snaps.push(Snapshot::with_sets(1, zone, NodeSource::Cluster, &sets));
            }
        }
        snaps.push(placement::placed_snapshot(mode, resolver_mode));
    }
    snaps
}

/// A random query, and whether the fast path should take it (when the
/// name it asks for has nodes of the type asked).
struct Generated {
    query: Vec<u8>,
    /// (served name index, AAAA) when the query is one the fast path takes
    /// if the name has nodes of that family.
    simple: Option<(usize, bool)>,
}

fn chance(rng: &mut Rng, percent: u64) -> bool {
    rng.next_u64() % 100 < percent
}

fn one_of<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

/// Changes the case of each letter of `name` at random.
fn random_case(rng: &mut Rng, name: &str) -> String {
    name.chars()
        .map(|c| {
            if chance(rng, 50) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// Mostly queries the fast path takes, and near misses of every kind.
fn generate(rng: &mut Rng) -> Generated {
    let names = [
        APEX,
        DC,
        RACK,
        "x.alternator.example.com",
        "alternator.example.org",
        "dc1x.alternator.example.com",
    ];
    let name_index = if chance(rng, 85) {
        rng.next_u64() % 3
    } else {
        3 + rng.next_u64() % 3
    } as usize;
    let name = random_case(rng, names[name_index]);
    let qtype = if chance(rng, 90) {
        one_of(rng, &[Rtype::A, Rtype::AAAA])
    } else {
        one_of(rng, &[Rtype::ANY, Rtype::MX, Rtype::SOA, Rtype::AXFR])
    };
    let class = if chance(rng, 97) {
        Class::IN
    } else {
        Class::CH
    };
    let opcode = if chance(rng, 97) {
        Opcode::QUERY
    } else {
        one_of(rng, &[Opcode::NOTIFY, Opcode::UPDATE, Opcode::IQUERY])
    };
    let flags = rng.next_u64();
    let mut query = query_with(&name, qtype, class, |h| {
        h.set_id(flags as u16);
        h.set_opcode(opcode);
        h.set_rd(flags & 1 << 16 != 0);
        h.set_aa(flags & 1 << 17 != 0);
        h.set_tc(flags & 1 << 18 != 0);
        h.set_ad(flags & 1 << 19 != 0);
        h.set_cd(flags & 1 << 20 != 0);
        h.set_z(flags & 1 << 21 != 0);
        h.set_ra(flags & 1 << 22 != 0);
    });
    let mut simple = name_index < 3
        && matches!(qtype, Rtype::A | Rtype::AAAA)
        && class == Class::IN
        && opcode == Opcode::QUERY;
    if chance(rng, 60) {
        let (with_opt, plain) = random_opt(rng, query, name.len());
        query = with_opt;
        simple &= plain;
    }
    if chance(rng, 5) {
        // A further additional record: an OPT (the only one, or a second
        // one), or an A record.
        let opt = chance(rng, 50);
        let record: &[u8] = if opt {
            &[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]
        } else {
            &[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 9, 0, 4, 192, 0, 2, 1]
        };
        simple &= opt && query[11] == 0;
        query.extend_from_slice(record);
        query[11] += 1;
    }
    if chance(rng, 3) {
        query[7] = 1; // ANCOUNT without a record
        simple = false;
    }
    if chance(rng, 2) {
        query.truncate(query.len() - 1 - (rng.next_u64() % 6) as usize);
        simple = false;
    } else if chance(rng, 5) {
        query.extend_from_slice(&[0xde, 0xad]); // trailing bytes, ignored
    }
    Generated {
        query,
        simple: simple.then_some((name_index, qtype == Rtype::AAAA)),
    }
}

/// Adds an OPT record to `query` (whose question name is `name_len` bytes
/// as text): payload sizes around the limits, versions, DO and other flags,
/// well-formed and broken options, an owner other than the root. Also
/// returns whether the fast path may still take the query.
fn random_opt(rng: &mut Rng, query: Vec<u8>, name_len: usize) -> (Vec<u8>, bool) {
    let near_limits = 520 + (rng.next_u64() % 800) as u16;
    let payload = one_of(
        rng,
        &[
            0,
            100,
            511,
            512,
            513,
            1000,
            1232,
            1233,
            1400,
            4096,
            65535,
            near_limits,
        ],
    );
    let version = if chance(rng, 95) { 0 } else { 1 };
    let flags = if chance(rng, 50) { 0x8000 } else { 0 }
        | if chance(rng, 10) {
            rng.next_u64() as u16
        } else {
            0
        };
    let (options, well_formed): (&[u8], bool) = match rng.next_u64() % 10 {
        0 => (&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8], true), // a client cookie
        // An empty option, and a client subnet: 10.1.2.0/24, or fd00::/16.
        1 => (&[0, 100, 0, 0, 0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2], true),
        2 => (&[0, 8, 0, 6, 0, 2, 16, 0, 0xfd, 0], true),
        3 => (&[0, 8, 0, 4, 0, 1, 24, 10], false), // ECS with a scope, no address
        4 => (&[0, 10, 0, 9, 1, 2, 3], false),     // overruns the data
        5 => (&[0, 10, 0], false),                 // a partial option header
        _ => (&[], true),
    };
    let mut simple = version == 0 && well_formed;
    let mut query = with_opt(query, payload, version, flags, options);
    if chance(rng, 10) {
        query[HEADER_LEN + name_len + 2 + 4 + 5] = rng.next_u64() as u8; // extended rcode
    }
    if chance(rng, 5) {
        // An owner other than the root: a pointer to the question name.
        let at = query.len() - 11 - options.len();
        query.splice(at..at + 1, [0xc0, 12]);
        simple = false;
    }
    (query, simple)
}

/// Answers `query` with the full path, the general path and the fast path
/// alone, from the same generator state; checks they agree, and returns
/// whether the fast path answered.
fn compare_paths(snap: &Snapshot, query: &[u8], transport: Transport, rng: &Rng) -> bool {
    let (mut rng_full, mut rng_general, mut rng_fast) = (rng.clone(), rng.clone(), rng.clone());
    let (mut full, mut general, mut fast) = (Vec::new(), Vec::new(), Vec::new());
    let outcome = respond(query, CLIENT, transport, snap, &mut rng_full, &mut full);
    let reference = respond_general(
        query,
        CLIENT,
        transport,
        snap,
        &mut rng_general,
        &mut general,
    );
    let context = || {
        format!(
            "query {query:02x?} over {transport:?}, mode {:?}",
            snap.zone.answers
        )
    };
    assert_eq!(outcome, reference, "{}", context());
    assert_eq!(full, general, "{}", context());
    assert_eq!(
        rng_full,
        rng_general,
        "random numbers drawn differ: {}",
        context()
    );
    if query.len() < HEADER_LEN || query[2] & 0x80 != 0 {
        return false;
    }
    match fast::respond(query, CLIENT, transport, snap, &mut rng_fast, &mut fast) {
        Some(fast_outcome) => {
            assert_eq!(fast_outcome, reference, "{}", context());
            assert_eq!(fast, general, "{}", context());
            assert_eq!(rng_fast, rng_general, "{}", context());
            true
        }
        None => {
            assert!(fast.is_empty(), "fell back after writing: {}", context());
            assert_eq!(&rng_fast, rng, "fell back after drawing: {}", context());
            false
        }
    }
}

#[test]
fn the_fast_path_replies_exactly_as_the_general_path() {
    let snaps = equivalence_snapshots();
    let mut gen = Rng::seed_from_u64(0x5eed);
    let (mut taken, mut expected_taken, mut total) = (0, 0, 0);
    for round in 0..30_000 {
        let snap = &snaps[round % snaps.len()];
        let generated = generate(&mut gen);
        let transport = if chance(&mut gen, 80) {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        let rng = Rng::seed_from_u64(gen.next_u64());
        let took = compare_paths(snap, &generated.query, transport, &rng);
        let expected = generated.simple.is_some_and(|(index, v6)| {
            let set = snap.set(index);
            if v6 {
                !set.v6.is_empty()
            } else {
                !set.v4.is_empty()
            }
        });
        assert_eq!(
            took, expected,
            "fast path coverage for {:02x?}",
            generated.query
        );
        taken += usize::from(took);
        expected_taken += usize::from(expected);
        total += 1;
    }
    assert_eq!(taken, expected_taken);
    assert!(
        taken > total / 4,
        "only {taken} of {total} queries took the fast path"
    );
}

#[test]
fn the_fast_path_truncates_at_the_same_sizes_as_the_general_path() {
    // Every payload size around the point where 20 to 40 A or AAAA
    // records stop fitting, with and without DO.
    for mode in [AnswerMode::All, AnswerMode::Random(30)] {
        for nodes in [20, 29, 30, 31, 40] {
            let sets = vec![addresses(nodes, nodes, 1)];
            let snap = Snapshot::with_sets(1, three_names(mode, 4096), NodeSource::Cluster, &sets);
            let mut fast_hits = 0;
            for qtype in [Rtype::A, Rtype::AAAA] {
                for payload in (500..1300).step_by(3) {
                    for flags in [0, 0x8000] {
                        let q = with_opt(query(APEX, qtype), payload, 0, flags, &[]);
                        let rng = Rng::seed_from_u64(u64::from(payload));
                        fast_hits += usize::from(compare_paths(&snap, &q, Transport::Udp, &rng));
                    }
                }
                let rng = Rng::seed_from_u64(3);
                assert!(compare_paths(
                    &snap,
                    &query(APEX, qtype),
                    Transport::Udp,
                    &rng
                ));
                assert!(compare_paths(
                    &snap,
                    &query(APEX, qtype),
                    Transport::Tcp,
                    &rng
                ));
            }
            assert_eq!(fast_hits, 2 * 2 * (500..1300).step_by(3).len());
        }
    }
}

#[test]
fn tcp_answers_too_big_for_a_message_are_truncated_alike() {
    // 2500 AAAA records (70 kB) exceed even 65535 bytes.
    let sets = vec![addresses(0, 2500, 1)];
    let snap = Snapshot::with_sets(
        1,
        three_names(AnswerMode::All, 1232),
        NodeSource::Cluster,
        &sets,
    );
    let rng = Rng::seed_from_u64(9);
    assert!(compare_paths(
        &snap,
        &query(APEX, Rtype::AAAA),
        Transport::Tcp,
        &rng
    ));
    let (_, reply) = ask(&snap, &query(APEX, Rtype::AAAA), Transport::Tcp);
    assert!(Message::from_octets(&reply[..]).unwrap().header().tc());
}

#[test]
fn the_common_queries_take_the_fast_path() {
    let snap = snapshot(AnswerMode::Random(1), &["10.0.0.1", "10.0.0.2", "fd00::1"]);
    let rng = Rng::seed_from_u64(4);
    let plain = query("Alternator.Example.COM", Rtype::A);
    for q in [
        plain.clone(),
        query(APEX, Rtype::AAAA),
        with_opt(plain.clone(), 1232, 0, 0x8000, &[]),
        with_opt(
            plain.clone(),
            4096,
            0,
            0,
            &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8],
        ),
    ] {
        assert!(compare_paths(&snap, &q, Transport::Udp, &rng), "{q:02x?}");
    }
}

#[test]
fn sources_that_may_not_recurse_get_the_refusal_of_a_zone_without_forwarding() {
    let zone_with = |forwarding| {
        Arc::new(
            Zone::new(&ZoneSettings {
                forwarding,
                ..ZoneSettings::new("alternator.example.com")
            })
            .unwrap(),
        )
    };
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    let forwarding = Snapshot::new(1, zone_with(true), NodeSource::Cluster, &[ip]);
    let plain = Snapshot::new(1, zone_with(false), NodeSource::Cluster, &[ip]);
    let mut rng = Rng::seed_from_u64(1);
    let mut reply = Vec::with_capacity(TCP_LIMIT);
    let outside = query("www.example.org", Rtype::A);
    assert_eq!(
        respond(
            &outside,
            CLIENT,
            Transport::Udp,
            &forwarding,
            &mut rng,
            &mut reply
        ),
        Outcome::Forward
    );
    for transport in [Transport::Udp, Transport::Tcp] {
        let local = respond_local(
            &outside,
            CLIENT,
            transport,
            &forwarding,
            &mut rng,
            &mut reply,
        );
        assert_eq!(local, Outcome::Reply(Rcode::REFUSED.into()));
        let (expected_outcome, expected) = ask(&plain, &outside, transport);
        assert_eq!(local, expected_outcome);
        assert_eq!(reply, expected, "{transport:?}");
    }
    // Names in the zone are answered as usual.
    let inside = query("alternator.example.com", Rtype::A);
    let local = respond_local(
        &inside,
        CLIENT,
        Transport::Udp,
        &forwarding,
        &mut rng,
        &mut reply,
    );
    assert_eq!(local, Outcome::Reply(Rcode::NOERROR.into()));
    assert_eq!(answers(&reply), vec![ip]);
}

mod placement;
