//! The answer path: query bytes + snapshot + rng in, reply bytes out.
//!
//! No I/O, no clock, no allocation: the reply is written into a buffer the
//! caller allocated once, so the same function serves the UDP workers, the TCP
//! listener, the benchmark and the tests. Cheap rejections come first (length,
//! QR bit) so junk costs almost nothing. Then the [`fast`] path answers the
//! common query (A or AAAA at a served name, at most a plain OPT) from records
//! the snapshot prepared in wire form; everything else is parsed with the
//! `domain` crate and answered per RFC 1034/2308 by the general path, whose
//! replies the fast path reproduces byte for byte.

use domain::base::iana::OptionCode;
use domain::base::iana::{Class, Opcode, OptRcode, Rcode, Rtype};
use domain::base::message_builder::{
    AdditionalBuilder, AnswerBuilder, PushError, StaticCompressor,
};
use domain::base::rdata::UnknownRecordData;
use domain::base::{Message, MessageBuilder, ParsedName, Question};
use domain::dep::octseq::builder::OctetsBuilder;
use domain::rdata::{Aaaa, Ns, A};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::net::IpAddr;

use super::ecs::{self, ClientSubnet};
use super::wire::{self, HEADER_LEN};
use super::zone::{AnswerMode, Place, Zone};
use crate::nodes::Snapshot;

mod fast;
mod pick;
pub(crate) use fast::WireRecords;
use pick::choose;

/// The random generator each worker owns.
pub type Rng = Xoshiro256PlusPlus;

/// Largest UDP reply to a query without EDNS (RFC 1035 section 4.2.1).
pub const CLASSIC_UDP_LIMIT: usize = 512;

/// Largest DNS message over TCP.
pub const TCP_LIMIT: usize = u16::MAX as usize;

/// Wire size of an OPT record without options.
const OPT_LEN: usize = 11;

/// How the query arrived, which decides how large the reply may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// 512 bytes, or the client's EDNS payload size capped by ours.
    Udp,
    /// 65535 bytes; never truncated.
    Tcp,
}

/// Why a packet got no reply at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than a DNS header: nothing to answer to.
    TooShort,
    /// QR=1: a response, never answered, so we cannot be used as a reflector.
    Response,
}

/// What the answer path decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `reply` holds the response, with this (possibly extended) rcode.
    Reply(OptRcode),
    Drop(DropReason),
    /// The name is outside the zone and forwarding is on: the caller passes
    /// the query to the forwarder; `reply` is left empty.
    Forward,
}

type Target<'a> = StaticCompressor<&'a mut Vec<u8>>;
type Builder<'a> = AnswerBuilder<Target<'a>>;
type Additional<'a> = AdditionalBuilder<Target<'a>>;
type QueryName<'q> = ParsedName<&'q [u8]>;

/// The EDNS(0) parameters a query carried in its OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientEdns {
    payload_size: u16,
    version: u8,
    dnssec_ok: bool,
    /// Its ECS option, when `--client-subnet` reads them.
    subnet: Option<ClientSubnet>,
}

impl ClientEdns {
    /// Bytes of our OPT record in the reply: the client's ECS is echoed.
    fn reply_len(&self) -> usize {
        OPT_LEN + self.subnet.map_or(0, |s| s.wire_len())
    }
}

/// Answers one query from `source` (the address that places the client
/// for names with `--affinity`, unless the query carries ECS).
///
/// `reply` is cleared and receives the response. Over UDP it never exceeds
/// 512 bytes, or with EDNS the smaller of the client's payload size (at least
/// 512) and the zone's; answers that would not fit are dropped whole and TC
/// is set. `reply` needs that much capacity for the call not to allocate.
pub fn respond(
    query: &[u8],
    source: IpAddr,
    transport: Transport,
    snapshot: &Snapshot,
    rng: &mut Rng,
    reply: &mut Vec<u8>,
) -> Outcome {
    let request = Request {
        query,
        source,
        transport,
    };
    answer(request, snapshot, rng, reply, true, true)
}

/// [`respond`] for a source that may not recurse (outside `--forward-allow`):
/// names outside the zone get REFUSED, exactly as when forwarding is off.
/// Never returns [`Outcome::Forward`].
pub fn respond_local(
    query: &[u8],
    source: IpAddr,
    transport: Transport,
    snapshot: &Snapshot,
    rng: &mut Rng,
    reply: &mut Vec<u8>,
) -> Outcome {
    let request = Request {
        query,
        source,
        transport,
    };
    answer(request, snapshot, rng, reply, true, false)
}

/// [`respond`] without the fast path: every query goes through `domain`.
///
/// The reference the fast path is checked against (same reply bytes, same
/// use of `rng`), and the baseline of the benchmark; not for production use.
#[doc(hidden)]
pub fn respond_general(
    query: &[u8],
    source: IpAddr,
    transport: Transport,
    snapshot: &Snapshot,
    rng: &mut Rng,
    reply: &mut Vec<u8>,
) -> Outcome {
    let request = Request {
        query,
        source,
        transport,
    };
    answer(request, snapshot, rng, reply, false, true)
}

/// One query as it arrived.
#[derive(Clone, Copy)]
struct Request<'q> {
    query: &'q [u8],
    source: IpAddr,
    transport: Transport,
}

/// Cheap rejects, then the fast path when allowed and applicable, then the
/// general path. `may_forward`: whether names outside the zone may go to the
/// forwarder (when the zone forwards at all).
fn answer(
    request: Request<'_>,
    snapshot: &Snapshot,
    rng: &mut Rng,
    reply: &mut Vec<u8>,
    fast_path: bool,
    may_forward: bool,
) -> Outcome {
    reply.clear();
    let Request {
        query,
        source,
        transport,
    } = request;
    if let Some(reason) = cheap_reject(query) {
        return Outcome::Drop(reason);
    }
    if fast_path {
        if let Some(outcome) = fast::respond(query, source, transport, snapshot, rng, reply) {
            return outcome;
        }
    }
    general(request, snapshot, rng, reply, may_forward)
}

/// Packets never answered: shorter than a header, or responses (QR=1).
fn cheap_reject(query: &[u8]) -> Option<DropReason> {
    if query.len() < HEADER_LEN {
        Some(DropReason::TooShort)
    } else if query[2] & 0x80 != 0 {
        Some(DropReason::Response)
    } else {
        None
    }
}

/// The largest reply allowed: 65535 bytes over TCP; over UDP 512, or with
/// EDNS the client's payload size clamped to 512 ..= ours.
fn reply_limit(transport: Transport, edns_payload: Option<u16>, zone: &Zone) -> usize {
    match (transport, edns_payload) {
        (Transport::Tcp, _) => TCP_LIMIT,
        (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
        (Transport::Udp, Some(size)) => {
            usize::from(size).clamp(CLASSIC_UDP_LIMIT, usize::from(zone.edns_udp_size))
        }
    }
}

/// The general path: parses `query` (at least a header, QR=0) with `domain`.
///
/// Kept out of line: inlined into [`answer`], its 2 KiB of `domain` builders
/// on the stack made every fast-path query touch that much more stack
/// (benches/README.md, experiment 24).
#[cold]
#[inline(never)]
fn general(
    request: Request<'_>,
    snapshot: &Snapshot,
    rng: &mut Rng,
    reply: &mut Vec<u8>,
    may_forward: bool,
) -> Outcome {
    let Ok(msg) = Message::from_slice(request.query) else {
        return Outcome::Drop(DropReason::TooShort);
    };
    let zone = &*snapshot.zone;
    let Ok(edns) = client_edns(msg, zone.placement().client_subnet()) else {
        return Outcome::Reply(error_reply(
            msg,
            sole_question(msg),
            None,
            Rcode::FORMERR.into(),
            zone,
            reply,
        ));
    };
    let limit = reply_limit(request.transport, edns.map(|e| e.payload_size), zone);
    let asked = Asked {
        msg,
        edns,
        limit,
        source: request.source,
    };
    match build(asked, snapshot, rng, reply, may_forward) {
        Ok(outcome) => outcome,
        // Only a header, question and OPT above `limit` get here, and
        // `limit` is at least 512, where those always fit.
        Err(_) => Outcome::Reply(error_reply(
            msg,
            None,
            edns,
            Rcode::SERVFAIL.into(),
            zone,
            reply,
        )),
    }
}

/// The question, when there is exactly one and it parses.
fn sole_question(msg: &Message<[u8]>) -> Option<Question<QueryName<'_>>> {
    match msg.sole_question() {
        Ok(q) if msg.header_counts().qdcount() == 1 && first_name_uncompressed(msg) => Some(q),
        _ => None,
    }
}

/// Whether the first question's name is written out label by label (see
/// [`wire::name_len`]): `domain` rejects pointer loops but follows pointers
/// into the header.
fn first_name_uncompressed(msg: &Message<[u8]>) -> bool {
    (msg.as_slice().get(HEADER_LEN..)).is_some_and(|question| wire::name_len(question).is_some())
}

/// Finds the query's OPT record. Errors (leading to FORMERR) when the record
/// sections do not parse, when there is more than one OPT or one outside the
/// additional section (RFC 6891 6.1.1), or when the OPT is malformed (owner
/// not the root, option lengths that overrun the data, or, when
/// `client_subnet`, a malformed or repeated ECS option: RFC 7871 section 6).
fn client_edns(msg: &Message<[u8]>, client_subnet: bool) -> Result<Option<ClientEdns>, ()> {
    let counts = msg.header_counts();
    if counts.ancount() == 0 && counts.nscount() == 0 && counts.arcount() == 0 {
        return Ok(None);
    }
    // The answer and authority sections: parsed, and free of OPT records.
    let mut section = msg.answer().map_err(drop)?;
    for _ in 0..2 {
        for record in section.by_ref() {
            if record.map_err(drop)?.rtype() == Rtype::OPT {
                return Err(());
            }
        }
        section = section.next_section().map_err(drop)?.ok_or(())?;
    }
    let mut found = None;
    for record in section {
        let record = record.map_err(drop)?;
        if record.rtype() != Rtype::OPT {
            continue;
        }
        if found.is_some() || !record.owner().is_root() {
            return Err(());
        }
        // Reading the options checks every option's length.
        let data = record
            .to_record::<UnknownRecordData<&[u8]>>()
            .map_err(drop)?;
        let data = data.ok_or(())?;
        let ttl = record.ttl().as_secs();
        let version = (ttl >> 16) as u8;
        // Options of an EDNS version we do not speak are not read (it gets
        // BADVERS, whatever they hold).
        let read_ecs = client_subnet && version == 0;
        let subnet = ecs::find(data.data().data(), read_ecs).map_err(drop)?;
        found = Some(ClientEdns {
            payload_size: record.class().to_int(),
            version,
            dnssec_ok: ttl & 0x8000 != 0,
            subnet,
        });
    }
    Ok(found)
}

/// The question of a query the zone can answer, or the rcode of the error
/// reply it gets instead: NOTIMP for an opcode other than QUERY, BADVERS for
/// EDNS above version 0, FORMERR without exactly one readable question.
fn answerable(
    msg: &Message<[u8]>,
    edns: Option<ClientEdns>,
) -> Result<Question<QueryName<'_>>, OptRcode> {
    if msg.header().opcode() != Opcode::QUERY {
        return Err(Rcode::NOTIMP.into());
    }
    if edns.is_some_and(|e| e.version > 0) {
        return Err(OptRcode::BADVERS);
    }
    sole_question(msg).ok_or(Rcode::FORMERR.into())
}

/// A query that parsed, with what its reply depends on.
struct Asked<'q> {
    msg: &'q Message<[u8]>,
    edns: Option<ClientEdns>,
    /// The largest reply allowed.
    limit: usize,
    source: IpAddr,
}

/// Writes the reply to a query that passed the header checks: an answer,
/// a negative answer, REFUSED outside the zone, or the hand-off to the
/// forwarder.
fn build(
    asked: Asked<'_>,
    snapshot: &Snapshot,
    rng: &mut Rng,
    reply: &mut Vec<u8>,
    may_forward: bool,
) -> Result<Outcome, PushError> {
    let Asked {
        msg,
        edns,
        limit,
        source,
    } = asked;
    let zone = &*snapshot.zone;
    let question = match answerable(msg, edns) {
        Ok(question) => question,
        Err(rcode) => {
            let question = sole_question(msg);
            return Ok(Outcome::Reply(error_reply(
                msg, question, edns, rcode, zone, reply,
            )));
        }
    };
    let place = zone.find(&question.qname());
    if place == Place::Outside && zone.forwarding && may_forward {
        return Ok(Outcome::Forward);
    }
    let (rcode, authoritative) = match place {
        _ if question.qclass() != Class::IN => (Rcode::REFUSED, false),
        Place::Outside => (Rcode::REFUSED, false),
        Place::Name(_) | Place::NameServer(_) | Place::EmptyNonTerminal => (Rcode::NOERROR, true),
        Place::Missing => (Rcode::NXDOMAIN, true),
    };
    if rcode != Rcode::REFUSED && matches!(question.qtype(), Rtype::AXFR | Rtype::IXFR) {
        // We transfer no zone: "the requested kind of query" is not
        // supported (RFC 1035 4.1.1). A NODATA would read as a broken
        // transfer, which must begin with the SOA (RFC 5936 2.2).
        return Ok(Outcome::Reply(error_reply(
            msg,
            Some(question),
            edns,
            Rcode::NOTIMP.into(),
            zone,
            reply,
        )));
    }

    let mut builder = MessageBuilder::from_target(StaticCompressor::new(reply))
        .map_err(|_| PushError::ShortBuf)?;
    // Keep room for the OPT record, which must survive any truncation.
    builder.set_push_limit(limit - edns.map_or(0, |e| e.reply_len()));
    builder.header_mut().set_aa(authoritative);
    let answer = builder.start_answer(msg, rcode)?;
    let mode = zone.answer_mode(msg.header().rd());
    let (additional, scope) = match (authoritative, place) {
        (true, Place::Name(index)) => {
            let subnet = edns.and_then(|e| e.subnet);
            let qtype = question.qtype();
            // Only addresses depend on where the client is: the SOA, NS
            // and NODATA of other types hold for everyone (scope 0).
            let (set, scope) = match qtype {
                Rtype::A | Rtype::AAAA | Rtype::ANY => {
                    snapshot.placed(index, source, subnet.as_ref(), qtype == Rtype::AAAA)
                }
                _ => (index, 0),
            };
            let served = Served { index, set, mode };
            (answer_name(answer, &question, snapshot, served, rng), scope)
        }
        (true, Place::NameServer(index)) => (answer_name_server(answer, &question, zone, index), 0),
        (true, _) => (negative(answer, zone), 0),
        (false, _) => (answer.additional(), 0),
    };
    finish(additional, limit, edns, scope, rcode.into(), zone)?;
    Ok(Outcome::Reply(rcode.into()))
}

/// Which served name a question asked for, and what answers it.
struct Served {
    /// The name's index in the zone (0 is the apex).
    index: usize,
    /// The snapshot's set its addresses come from (see [`Snapshot::placed`]).
    set: usize,
    mode: AnswerMode,
}

/// Answers a question for a served name (the apex alone has the SOA and NS
/// records) with `mode` addresses of its set. An answer that overflows the
/// limit is dropped whole and TC is set.
fn answer_name<'a>(
    mut answer: Builder<'a>,
    question: &Question<QueryName<'_>>,
    snapshot: &Snapshot,
    served: Served,
    rng: &mut Rng,
) -> Additional<'a> {
    let Served { index, set, mode } = served;
    let zone = &*snapshot.zone;
    let nodes = snapshot.set(set);
    let apex = index == 0;
    let owner = question.qname();
    let ttl = zone.ttl;
    let pushed = match question.qtype() {
        Rtype::A | Rtype::ANY if !nodes.v4.is_empty() => choose(&nodes.v4, mode, rng, |ip| {
            answer.push((owner, ttl, A::new(ip)))
        }),
        Rtype::AAAA | Rtype::ANY if !nodes.v6.is_empty() => choose(&nodes.v6, mode, rng, |ip| {
            answer.push((owner, ttl, Aaaa::new(ip)))
        }),
        Rtype::SOA | Rtype::ANY if apex => answer.push((owner, zone.soa_ttl, &zone.soa)),
        Rtype::NS if apex => {
            let pushed = (zone.ns.iter())
                .try_for_each(|ns| answer.push((owner, zone.soa_ttl, Ns::new(&ns.name))));
            return match pushed {
                Ok(()) => name_server_addresses(answer.additional(), zone),
                Err(_) => answer.tc_rewind_into().additional(),
            };
        }
        _ => return negative(answer, zone),
    };
    match pushed {
        Ok(()) if answer.counts().ancount() == 0 => negative(answer, zone),
        Ok(()) => answer.additional(),
        Err(_) => answer.tc_rewind_into().additional(),
    }
}

/// Answers a question for the in-zone name server `index`: its A or AAAA
/// records (all of them, in order), NODATA for other types.
fn answer_name_server<'a>(
    mut answer: Builder<'a>,
    question: &Question<QueryName<'_>>,
    zone: &Zone,
    index: usize,
) -> Additional<'a> {
    let ns = &zone.ns[index];
    let (owner, ttl) = (question.qname(), zone.soa_ttl);
    let pushed = match question.qtype() {
        Rtype::A | Rtype::ANY if !ns.v4.is_empty() => {
            (ns.v4.iter()).try_for_each(|ip| answer.push((owner, ttl, A::new(*ip))))
        }
        Rtype::AAAA | Rtype::ANY if !ns.v6.is_empty() => {
            (ns.v6.iter()).try_for_each(|ip| answer.push((owner, ttl, Aaaa::new(*ip))))
        }
        _ => return negative(answer, zone),
    };
    match pushed {
        Ok(()) => answer.additional(),
        Err(_) => answer.tc_rewind_into().additional(),
    }
}

/// The addresses of the in-zone name servers, in the additional section of
/// an NS answer, as Knot and NSD add them. They are optional there (RFC
/// 2181 9): when they do not all fit, none is sent and TC stays clear.
fn name_server_addresses<'a>(mut additional: Additional<'a>, zone: &Zone) -> Additional<'a> {
    let ttl = zone.soa_ttl;
    let pushed = zone.ns.iter().try_for_each(|ns| {
        let owner = &ns.name;
        ns.v4
            .iter()
            .try_for_each(|ip| additional.push((owner, ttl, A::new(*ip))))?;
        ns.v6
            .iter()
            .try_for_each(|ip| additional.push((owner, ttl, Aaaa::new(*ip))))
    });
    if pushed.is_err() {
        additional.rewind();
    }
    additional
}

/// A negative answer (NXDOMAIN or NODATA): the SOA in the authority section,
/// with the RFC 2308 TTL. If even that does not fit, sets TC.
fn negative<'a>(answer: Builder<'a>, zone: &Zone) -> Additional<'a> {
    let mut authority = answer.authority();
    let soa = (&zone.apex, zone.negative_ttl, &zone.soa);
    if authority.push(soa).is_err() {
        authority.rewind();
        authority.header_mut().set_tc(true);
    }
    authority.additional()
}

/// Adds our OPT record when the query had one, with the client's ECS
/// echoed with `scope`, and finishes the message.
fn finish(
    mut additional: Additional<'_>,
    limit: usize,
    edns: Option<ClientEdns>,
    scope: u8,
    rcode: OptRcode,
    zone: &Zone,
) -> Result<(), PushError> {
    if let Some(client) = edns {
        additional.as_builder_mut().set_push_limit(limit);
        additional.opt(|opt| {
            opt.set_udp_payload_size(zone.edns_udp_size);
            opt.set_dnssec_ok(client.dnssec_ok);
            opt.set_rcode(rcode);
            if let Some(subnet) = client.subnet {
                let mut data = [0; 20];
                let len = subnet.write_data(scope, &mut data);
                // At most 20 bytes.
                opt.push_raw_option(OptionCode::from_int(ecs::CODE), len as u16, |target| {
                    target.append_slice(&data[..len])
                })?;
            }
            Ok(())
        })?;
    }
    additional.finish();
    Ok(())
}

/// An error reply: the header (ID, opcode and RD copied), the question when
/// there is exactly one and it parses, and OPT when the query had a readable
/// one; no other section.
fn error_reply(
    msg: &Message<[u8]>,
    question: Option<Question<QueryName<'_>>>,
    edns: Option<ClientEdns>,
    rcode: OptRcode,
    zone: &Zone,
    reply: &mut Vec<u8>,
) -> OptRcode {
    let written = (|| -> Result<(), PushError> {
        let mut builder = MessageBuilder::from_target(StaticCompressor::new(&mut *reply))
            .map_err(|_| PushError::ShortBuf)?;
        builder.set_push_limit(CLASSIC_UDP_LIMIT);
        let header = builder.header_mut();
        header.set_id(msg.header().id());
        header.set_qr(true);
        header.set_opcode(msg.header().opcode());
        header.set_rd(msg.header().rd());
        header.set_rcode(rcode.rcode());
        let mut questions = builder.question();
        if let Some(q) = question {
            questions.push(q)?;
        }
        finish(
            questions.additional(),
            CLASSIC_UDP_LIMIT,
            edns,
            0,
            rcode,
            zone,
        )
    })();
    if written.is_err() {
        // 512 bytes always hold a header, one question and an OPT; keep
        // at least a well-formed header should that ever change.
        reply.truncate(HEADER_LEN);
        reply[4..HEADER_LEN].fill(0);
    }
    rcode
}

#[cfg(test)]
mod tests;
