use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use domain::base::iana::{Class, Opcode, Rcode, Rtype};
use domain::base::{Message, MessageBuilder, Name, Ttl};
use domain::rdata::AllRecordData;
use rand_core::SeedableRng;

use super::*;
use crate::dns::zone::ZoneSettings;
use crate::nodes::{NodeSource, Snapshot};

fn zone(answers: AnswerMode) -> Arc<Zone> {
    Arc::new(
        Zone::new(&ZoneSettings {
            domain: "alternator.example.com".into(),
            ttl: 4,
            answers,
            ns: vec![],
            soa_mname: None,
            soa_rname: None,
            soa_serial: 7,
            soa_ttl: 60,
            edns_udp_size: 1232,
            forwarding: false,
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
    let outcome = respond(query, transport, snap, &mut rng, &mut reply);
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
        respond(&q, Transport::Udp, &three, &mut rng, &mut reply);
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
            respond(&q, Transport::Udp, &snap, &mut rng, &mut reply);
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
        respond(&q, Transport::Udp, &snap, &mut rng, &mut reply);
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
        respond(&q, Transport::Udp, &snap, &mut rng, &mut reply);
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
