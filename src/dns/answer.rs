//! The answer path: query bytes + snapshot + rng in, reply bytes out.
//!
//! No I/O, no clock, no allocation: the reply is written into a buffer the
//! caller allocated once, so the same function serves the UDP workers, the TCP
//! listener, the benchmark and the tests. Cheap rejections come first (length,
//! QR bit) so junk costs almost nothing; everything else is parsed with the
//! `domain` crate and answered per RFC 1034/2308.

use domain::base::iana::{Class, Opcode, Rcode, Rtype};
use domain::base::message_builder::{AnswerBuilder, PushError, StaticCompressor};
use domain::base::{Message, MessageBuilder, ParsedName, Question, ToName};
use domain::rdata::{Aaaa, Ns, A};
use rand_core::Rng as _;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::zone::{AnswerMode, Zone};
use crate::nodes::Snapshot;

/// The random generator each worker owns.
pub type Rng = Xoshiro256PlusPlus;

/// Length of the fixed DNS header.
pub const HEADER_LEN: usize = 12;

/// Largest UDP reply to a query without EDNS (RFC 1035 section 4.2.1).
pub const CLASSIC_UDP_LIMIT: usize = 512;

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
    /// `reply` holds the response, with this rcode.
    Reply(Rcode),
    Drop(DropReason),
}

type Builder<'a> = AnswerBuilder<StaticCompressor<&'a mut Vec<u8>>>;
type QueryName<'q> = ParsedName<&'q [u8]>;

/// Answers one query.
///
/// `reply` is cleared and receives the response; it must have at least
/// `max_reply` bytes of capacity if the caller wants no allocation. Answers
/// that would exceed `max_reply` are dropped whole and TC is set instead.
pub fn respond(
    query: &[u8],
    max_reply: usize,
    snapshot: &Snapshot,
    rng: &mut Rng,
    reply: &mut Vec<u8>,
) -> Outcome {
    reply.clear();
    if query.len() < HEADER_LEN {
        return Outcome::Drop(DropReason::TooShort);
    }
    if query[2] & 0x80 != 0 {
        return Outcome::Drop(DropReason::Response);
    }
    let Ok(msg) = Message::from_slice(query) else {
        return Outcome::Drop(DropReason::TooShort);
    };
    let rcode = match build(msg, max_reply, snapshot, rng, reply) {
        Ok(rcode) => rcode,
        // Only the header and question exceeding `max_reply` gets here;
        // `max_reply` is never below 512 and a question fits in 512.
        Err(_) => header_only(msg, Rcode::SERVFAIL, reply),
    };
    Outcome::Reply(rcode)
}

fn build(
    msg: &Message<[u8]>,
    max_reply: usize,
    snapshot: &Snapshot,
    rng: &mut Rng,
    reply: &mut Vec<u8>,
) -> Result<Rcode, PushError> {
    if msg.header().opcode() != Opcode::QUERY {
        return Ok(header_only(msg, Rcode::NOTIMP, reply));
    }
    if msg.header_counts().qdcount() != 1 {
        return Ok(header_only(msg, Rcode::FORMERR, reply));
    }
    let Ok(question) = msg.sole_question() else {
        return Ok(header_only(msg, Rcode::FORMERR, reply));
    };
    let zone = &*snapshot.zone;
    let qname = question.qname();
    let (rcode, authoritative) = if question.qclass() != Class::IN {
        (Rcode::REFUSED, false)
    } else if qname.name_eq(&zone.apex) {
        (Rcode::NOERROR, true)
    } else if qname.ends_with(&zone.apex) {
        (Rcode::NXDOMAIN, true)
    } else {
        (Rcode::REFUSED, false)
    };

    let mut builder = MessageBuilder::from_target(StaticCompressor::new(reply))
        .map_err(|_| PushError::ShortBuf)?;
    builder.set_push_limit(max_reply);
    builder.header_mut().set_aa(authoritative);
    let answer = builder.start_answer(msg, rcode)?;
    match rcode {
        Rcode::NOERROR => answer_apex(answer, &question, snapshot, rng),
        Rcode::NXDOMAIN => finish_negative(answer, zone),
        _ => {
            answer.finish();
        }
    }
    Ok(rcode)
}

/// Answers a question at the apex and finishes the message. An answer that
/// overflows the limit is dropped whole and TC is set.
fn answer_apex(
    mut answer: Builder<'_>,
    question: &Question<QueryName<'_>>,
    snapshot: &Snapshot,
    rng: &mut Rng,
) {
    let zone = &*snapshot.zone;
    let owner = question.qname();
    let ttl = zone.ttl;
    let pushed = match question.qtype() {
        Rtype::A | Rtype::ANY if !snapshot.v4.is_empty() => {
            choose(&snapshot.v4, zone.answers, rng, |ip| {
                answer.push((owner, ttl, A::new(ip)))
            })
        }
        Rtype::AAAA | Rtype::ANY if !snapshot.v6.is_empty() => {
            choose(&snapshot.v6, zone.answers, rng, |ip| {
                answer.push((owner, ttl, Aaaa::new(ip)))
            })
        }
        Rtype::SOA | Rtype::ANY => answer.push((owner, zone.soa_ttl, &zone.soa)),
        Rtype::NS => zone
            .ns
            .iter()
            .try_for_each(|ns| answer.push((owner, zone.soa_ttl, Ns::new(ns)))),
        _ => return finish_negative(answer, zone),
    };
    match pushed {
        Ok(()) if answer.counts().ancount() == 0 => finish_negative(answer, zone),
        Ok(()) => {
            answer.finish();
        }
        Err(_) => {
            answer.tc_rewind_into().finish();
        }
    }
}

/// Finishes a negative answer (NXDOMAIN or NODATA): the SOA in the authority
/// section, with the RFC 2308 TTL. If even that does not fit, sets TC.
fn finish_negative(answer: Builder<'_>, zone: &Zone) {
    let mut authority = answer.authority();
    let soa = (&zone.apex, zone.negative_ttl, &zone.soa);
    if authority.push(soa).is_err() {
        authority.header_mut().set_tc(true);
    }
    authority.finish();
}

/// An error reply: header (ID, opcode, RD copied) and, when it parses, the
/// single question; no other section.
fn header_only(msg: &Message<[u8]>, rcode: Rcode, reply: &mut Vec<u8>) -> Rcode {
    reply.clear();
    reply.extend_from_slice(&msg.as_slice()[..HEADER_LEN]);
    let header = &mut reply[..HEADER_LEN];
    // Byte 2: QR=1, opcode kept, AA=0, TC=0, RD kept. Byte 3: RA=Z=AD=CD=0.
    header[2] = 0x80 | (header[2] & 0x79);
    header[3] = rcode.to_int() & 0x0f;
    header[4..HEADER_LEN].fill(0);
    if msg.header_counts().qdcount() == 1 && rcode != Rcode::FORMERR {
        if let Some(end) = question_end(msg) {
            reply.extend_from_slice(&msg.as_slice()[HEADER_LEN..end]);
            reply[5] = 1;
        }
    }
    rcode
}

/// End offset of the first question, if the question parses.
fn question_end(msg: &Message<[u8]>) -> Option<usize> {
    let mut section = msg.question();
    section.next()?.ok()?;
    let end = section.pos();
    (end <= msg.as_slice().len()).then_some(end)
}

/// Emits node addresses for one answer according to `mode`, without allocating.
fn choose<T: Copy>(
    nodes: &[T],
    mode: AnswerMode,
    rng: &mut Rng,
    mut emit: impl FnMut(T) -> Result<(), PushError>,
) -> Result<(), PushError> {
    let len = nodes.len();
    match mode {
        AnswerMode::Random(1) => emit(nodes[random_below(rng, len)]),
        AnswerMode::Random(n) if usize::from(n) < len => {
            let mut picked = [0usize; AnswerMode::MAX_RANDOM as usize];
            let picked = pick_distinct(rng, len, &mut picked[..usize::from(n)]);
            picked.iter().try_for_each(|&i| emit(nodes[i]))
        }
        AnswerMode::Random(_) | AnswerMode::All => {
            let offset = random_below(rng, len);
            (0..len).try_for_each(|i| emit(nodes[(offset + i) % len]))
        }
    }
}

/// Fills `out` with distinct indices below `len` (`out.len() < len`), in random
/// order: Floyd's sampling, then a Fisher-Yates shuffle of the sample.
fn pick_distinct<'p>(rng: &mut Rng, len: usize, out: &'p mut [usize]) -> &'p [usize] {
    let n = out.len();
    for (filled, j) in (len - n..len).enumerate() {
        let t = random_below(rng, j + 1);
        out[filled] = if out[..filled].contains(&t) { j } else { t };
    }
    for i in (1..n).rev() {
        out.swap(i, random_below(rng, i + 1));
    }
    out
}

/// A uniform index below `len` (`len > 0`), by Lemire's multiply-shift; the
/// bias, below len / 2^64, is far beneath anything measurable.
fn random_below(rng: &mut Rng, len: usize) -> usize {
    ((u128::from(rng.next_u64()) * len as u128) >> 64) as usize
}

#[cfg(test)]
mod tests;
