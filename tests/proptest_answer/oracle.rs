//! What every outcome of [`respond`] must satisfy, whatever the input bytes.
//!
//! Shared by the property tests (`tests/proptest_answer.rs`) and the cargo-fuzz
//! target (`fuzz/fuzz_targets/respond.rs`), which include this file by path.
//! [`check`] runs the answer path once and returns a description of the first
//! broken property, so proptest can shrink it and the fuzzer can panic on it.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use alternator_dns::dns::{
    respond, AnswerMode, DropReason, Outcome, Rng, Transport, Zone, ZoneSettings,
};
use alternator_dns::nodes::{NodeSource, Snapshot};
use domain::base::iana::{Opcode, OptRcode, Rtype};
use domain::base::{Message, Name, ParsedName, ParsedRecord, ToName};
use domain::rdata::AllRecordData;

/// The source of every query: no setup places clients.
const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

/// The zone every setup serves.
pub const APEX: &str = "alternator.example.com";

/// The EDNS UDP payload size the zone advertises and accepts at most.
pub const EDNS_UDP_SIZE: u16 = 1232;

const HEADER_LEN: usize = 12;
const CLASSIC_UDP_LIMIT: usize = 512;
const TCP_LIMIT: usize = 65535;

/// The answer modes the properties are checked under.
pub const MODES: [AnswerMode; 3] = [
    AnswerMode::Random(1),
    AnswerMode::Random(3),
    AnswerMode::All,
];

/// A zone and the snapshot serving it.
pub struct Setup {
    pub answers: AnswerMode,
    pub forwarding: bool,
    pub snapshot: Snapshot,
    apex: Name<Vec<u8>>,
}

impl Setup {
    /// `nodes` must not repeat an address: "no duplicate answers" is checked
    /// against it.
    pub fn new(answers: AnswerMode, forwarding: bool, nodes: &[IpAddr]) -> Setup {
        let zone = Zone::new(&ZoneSettings {
            answers,
            edns_udp_size: EDNS_UDP_SIZE,
            forwarding,
            ..ZoneSettings::new(APEX)
        })
        .expect("the test zone is valid");
        Setup {
            answers,
            forwarding,
            snapshot: Snapshot::new(1, Arc::new(zone), NodeSource::Cluster, nodes),
            apex: Name::vec_from_str(&format!("{APEX}.")).expect("the apex is a name"),
        }
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Answers `query` once and checks the outcome and the reply.
pub fn check(
    setup: &Setup,
    query: &[u8],
    transport: Transport,
    rng: &mut Rng,
    reply: &mut Vec<u8>,
) -> Result<Outcome, String> {
    let outcome = respond(query, CLIENT, transport, &setup.snapshot, rng, reply);
    check_outcome(setup, query, transport, outcome, reply)?;
    Ok(outcome)
}

/// Checks what [`respond`] made of `query`.
pub fn check_outcome(
    setup: &Setup,
    query: &[u8],
    transport: Transport,
    outcome: Outcome,
    reply: &[u8],
) -> Result<(), String> {
    let short = query.len() < HEADER_LEN;
    let response = !short && query[2] & 0x80 != 0;
    match outcome {
        Outcome::Drop(reason) => {
            let expected = if short {
                DropReason::TooShort
            } else {
                DropReason::Response
            };
            ensure!(
                short || response,
                "a query ({} bytes, QR=0) was dropped: {reason:?}",
                query.len()
            );
            ensure!(
                reason == expected,
                "dropped as {reason:?}, expected {expected:?}"
            );
            ensure!(reply.is_empty(), "a drop left {} reply bytes", reply.len());
        }
        _ if short || response => {
            return Err(format!(
                "{outcome:?} for a packet that must be dropped (short: {short}, QR=1: {response})"
            ))
        }
        Outcome::Forward => check_forward(setup, query, reply)?,
        Outcome::Reply(rcode) => check_reply(setup, query, transport, rcode, reply)?,
    }
    Ok(())
}

fn check_forward(setup: &Setup, query: &[u8], reply: &[u8]) -> Result<(), String> {
    ensure!(setup.forwarding, "Forward although forwarding is off");
    ensure!(reply.is_empty(), "Forward left {} reply bytes", reply.len());
    let msg = Message::from_octets(query).map_err(|e| format!("forwarded junk: {e}"))?;
    ensure!(
        msg.header().opcode() == Opcode::QUERY,
        "forwarded opcode {}",
        msg.header().opcode()
    );
    let question = msg
        .sole_question()
        .map_err(|e| format!("forwarded without a sole question: {e}"))?;
    ensure!(
        !question.qname().ends_with(&setup.apex),
        "forwarded a name in the zone: {}",
        question.qname()
    );
    Ok(())
}

fn check_reply(
    setup: &Setup,
    query: &[u8],
    transport: Transport,
    rcode: OptRcode,
    reply: &[u8],
) -> Result<(), String> {
    let asked = Message::from_octets(query).expect("12 bytes or more");
    let msg = Message::from_octets(reply)
        .map_err(|_| format!("reply of {} bytes is shorter than a header", reply.len()))?;

    // Size.
    let limit = match (transport, query_payload_size(&asked)) {
        (Transport::Tcp, _) => TCP_LIMIT,
        (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
        (Transport::Udp, Some(payload)) => {
            CLASSIC_UDP_LIMIT.max(usize::from(payload).min(usize::from(EDNS_UDP_SIZE)))
        }
    };
    ensure!(
        reply.len() <= limit,
        "{transport:?} reply of {} bytes exceeds {limit}",
        reply.len()
    );

    // Header.
    let (h, q) = (msg.header(), asked.header());
    ensure!(h.qr(), "QR=0 in the reply");
    ensure!(
        h.id() == q.id(),
        "ID {:#06x}, query had {:#06x}",
        h.id(),
        q.id()
    );
    ensure!(
        h.opcode() == q.opcode(),
        "opcode {}, query had {}",
        h.opcode(),
        q.opcode()
    );
    ensure!(h.rd() == q.rd(), "RD not copied");
    ensure!(!h.ra(), "RA=1");
    ensure!(!h.ad(), "AD=1");
    ensure!(
        msg.opt_rcode() == rcode,
        "reply carries rcode {}, outcome says {rcode}",
        msg.opt_rcode()
    );

    // Every section parses, to the last byte, and there is at most one OPT.
    let mut questions = msg.question();
    for question in &mut questions {
        question.map_err(|e| format!("question does not parse: {e}"))?;
    }
    let mut section = questions
        .answer()
        .map_err(|e| format!("question section: {e}"))?;
    let mut opts = 0;
    let mut addresses = Vec::new();
    for name in ["answer", "authority", "additional"] {
        for record in &mut section {
            let record = record.map_err(|e| format!("{name} record does not parse: {e}"))?;
            parse_data(&record).map_err(|e| format!("{name} {} record: {e}", record.rtype()))?;
            if record.rtype() == Rtype::OPT {
                opts += 1;
                ensure!(name == "additional", "OPT in the {name} section");
                ensure!(record.owner().is_root(), "OPT owner {}", record.owner());
            }
            if name == "answer" {
                if let Some(addr) = address(&record)? {
                    addresses.push((record.rtype(), addr));
                }
            }
        }
        if name != "additional" {
            section = section
                .next_section()
                .map_err(|e| format!("{name} section: {e}"))?
                .expect("answer and authority are followed by another section");
        }
    }
    ensure!(
        section.pos() == reply.len(),
        "{} bytes after the last record",
        reply.len() - section.pos()
    );
    ensure!(opts <= 1, "{opts} OPT records");

    // The question is echoed as it was asked.
    let qdcount = msg.header_counts().qdcount();
    ensure!(qdcount <= 1, "{qdcount} questions in the reply");
    if qdcount == 1 {
        let ours = msg.first_question().expect("parsed above");
        let theirs = asked
            .first_question()
            .ok_or("a question in the reply, none that parses in the query")?;
        ensure!(
            ours.qname().name_eq(theirs.qname())
                && ours.qtype() == theirs.qtype()
                && ours.qclass() == theirs.qclass(),
            "question {ours} echoed for {theirs}"
        );
        if let Some(raw) = uncompressed_question(query) {
            ensure!(
                reply[HEADER_LEN..].starts_with(raw),
                "question bytes differ: query {:02x?}, reply {:02x?}",
                raw,
                &reply[HEADER_LEN..reply.len().min(HEADER_LEN + raw.len())]
            );
        }
    }

    // Addresses: the snapshot's, of the family asked for, each at most once.
    if !addresses.is_empty() {
        let qtype = msg.first_question().map(|q| q.qtype());
        let snapshot = &setup.snapshot;
        let mut seen = HashSet::new();
        for &(rtype, addr) in &addresses {
            ensure!(
                qtype == Some(rtype) || qtype == Some(Rtype::ANY),
                "{rtype} record answers a {qtype:?} question"
            );
            let known = match addr {
                IpAddr::V4(a) => snapshot.set(0).v4.contains(&a),
                IpAddr::V6(a) => snapshot.set(0).v6.contains(&a),
            };
            ensure!(known, "{addr} is not in the snapshot");
            ensure!(seen.insert(addr), "{addr} answered twice");
        }
        if let AnswerMode::Random(n) = setup.answers {
            ensure!(
                addresses.len() <= usize::from(n),
                "{} addresses with Random({n})",
                addresses.len()
            );
        }
    }
    Ok(())
}

/// Parses a record's data, whatever its type.
fn parse_data(record: &ParsedRecord<'_, &[u8]>) -> Result<(), String> {
    match record.to_record::<AllRecordData<_, ParsedName<_>>>() {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("data not recognised".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The address of an A or AAAA record.
fn address(record: &ParsedRecord<'_, &[u8]>) -> Result<Option<IpAddr>, String> {
    let record = record
        .to_record::<AllRecordData<_, ParsedName<_>>>()
        .map_err(|e| e.to_string())?;
    Ok(match record.as_ref().map(|r| r.data()) {
        Some(AllRecordData::A(a)) => Some(IpAddr::V4(a.addr())),
        Some(AllRecordData::Aaaa(a)) => Some(IpAddr::V6(a.addr())),
        _ => None,
    })
}

/// The UDP payload size of the query's first OPT record, if its sections parse
/// that far.
fn query_payload_size(query: &Message<&[u8]>) -> Option<u16> {
    for record in query.additional().ok()? {
        let record = record.ok()?;
        if record.rtype() == Rtype::OPT {
            return Some(record.class().to_int());
        }
    }
    None
}

/// The wire bytes of the query's first question (name, type, class), when the
/// name is plain labels without a compression pointer.
fn uncompressed_question(query: &[u8]) -> Option<&[u8]> {
    let mut pos = HEADER_LEN;
    loop {
        let len = *query.get(pos)?;
        pos += 1;
        match len {
            0 => break,
            1..=63 => pos += usize::from(len),
            _ => return None,
        }
    }
    query.get(HEADER_LEN..pos + 4)
}
