//! The fast path: the common query answered by copying prepared bytes.
//!
//! It takes a query only when the general path would answer it with
//! addresses: opcode QUERY, one uncompressed question, class IN, type A or
//! AAAA, a served name (any ASCII case) that has nodes of that family, no
//! answer or authority records, and in the additional section nothing or
//! exactly one OPT of version 0 with a root owner and well-formed options.
//! Its reply is then the general path's byte for byte: the header, the
//! question as received, the chosen nodes' records (prepared per snapshot in
//! [`WireRecords`], owners compressed to the question name), and our OPT; or,
//! when they do not fit, TC=1 without records. Anything else returns `None`
//! before touching the random generator or the reply, and the general path
//! takes over.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use domain::base::iana::{Class, Rcode, Rtype};
use domain::base::Ttl;

use super::pick::{pick, Pick};
use super::{reply_limit, Outcome, Rng, Transport, HEADER_LEN, OPT_LEN};
use crate::dns::ecs::{self, ClientSubnet};
use crate::dns::zone::Zone;
use crate::nodes::{NodeSet, Snapshot};

/// Wire size of an A record whose owner is a compression pointer.
const A_LEN: usize = 12 + 4;

/// Wire size of an AAAA record whose owner is a compression pointer.
const AAAA_LEN: usize = 12 + 16;

/// Offset of the question name in a message, where the records' owner
/// pointers point.
const QNAME_POINTER: [u8; 2] = [0xc0, HEADER_LEN as u8];

/// The A and AAAA records of one served name in wire form, one per node in
/// the order of its [`NodeSet`], ready to be copied into a reply.
#[derive(Debug, Default)]
pub(crate) struct WireRecords {
    a: Box<[[u8; A_LEN]]>,
    aaaa: Box<[[u8; AAAA_LEN]]>,
}

impl WireRecords {
    /// The records of `set`, each with TTL `ttl`.
    pub(crate) fn new(set: &NodeSet, ttl: Ttl) -> WireRecords {
        WireRecords {
            a: set.v4.iter().map(|ip| a_record(ttl, *ip)).collect(),
            aaaa: set.v6.iter().map(|ip| aaaa_record(ttl, *ip)).collect(),
        }
    }
}

/// An A record owned by the question name.
fn a_record(ttl: Ttl, ip: Ipv4Addr) -> [u8; A_LEN] {
    let mut rr = [0; A_LEN];
    rr[..12].copy_from_slice(&record_head(Rtype::A, ttl, 4));
    rr[12..].copy_from_slice(&ip.octets());
    rr
}

/// An AAAA record owned by the question name.
fn aaaa_record(ttl: Ttl, ip: Ipv6Addr) -> [u8; AAAA_LEN] {
    let mut rr = [0; AAAA_LEN];
    rr[..12].copy_from_slice(&record_head(Rtype::AAAA, ttl, 16));
    rr[12..].copy_from_slice(&ip.octets());
    rr
}

/// Everything of a record up to its data: owner pointer, type, class IN,
/// TTL and data length.
fn record_head(rtype: Rtype, ttl: Ttl, rdlen: u16) -> [u8; 12] {
    let [p0, p1] = QNAME_POINTER;
    let [t0, t1] = rtype.to_int().to_be_bytes();
    let [c0, c1] = Class::IN.to_int().to_be_bytes();
    let [s0, s1, s2, s3] = ttl.as_secs().to_be_bytes();
    let [l0, l1] = rdlen.to_be_bytes();
    [p0, p1, t0, t1, c0, c1, s0, s1, s2, s3, l0, l1]
}

/// A query the fast path answers.
struct Simple<'q> {
    /// The served name asked for: its index in the zone.
    index: usize,
    /// AAAA rather than A.
    v6: bool,
    /// The question section, as received.
    question: &'q [u8],
    /// The query's OPT, if it had one.
    edns: Option<PlainEdns>,
}

/// What we use of a query's OPT record.
#[derive(Clone, Copy)]
struct PlainEdns {
    payload_size: u16,
    dnssec_ok: bool,
    /// Its ECS option, when `--client-subnet` reads them.
    subnet: Option<ClientSubnet>,
}

/// Answers `query` (at least a header, QR=0) when it is the common case,
/// exactly as the general path would; `None` leaves it to the general path.
pub(super) fn respond(
    query: &[u8],
    source: IpAddr,
    transport: Transport,
    snapshot: &Snapshot,
    rng: &mut Rng,
    reply: &mut Vec<u8>,
) -> Option<Outcome> {
    let zone = &*snapshot.zone;
    let simple = parse(query, zone)?;
    let subnet = simple.edns.and_then(|e| e.subnet);
    let (set, scope) = snapshot.placed(simple.index, source, subnet.as_ref(), simple.v6);
    let records = snapshot.records(set)?;
    let limit = reply_limit(transport, simple.edns.map(|e| e.payload_size), zone);
    let mut writer = Writer {
        query,
        simple: &simple,
        zone,
        limit,
        scope,
        rng,
        reply,
    };
    if simple.v6 {
        writer.write(&records.aaaa)
    } else {
        writer.write(&records.a)
    }
}

/// Recognises the common query, cheapest checks first.
fn parse<'q>(query: &'q [u8], zone: &Zone) -> Option<Simple<'q>> {
    let (header, rest) = query.split_first_chunk::<HEADER_LEN>()?;
    // Opcode QUERY; QDCOUNT 1; ANCOUNT and NSCOUNT 0; ARCOUNT 0 or 1.
    if header[2] & 0x78 != 0 || header[4..11] != [0, 1, 0, 0, 0, 0, 0] || header[11] > 1 {
        return None;
    }
    let (index, name_len) = zone.served_prefix(rest)?;
    let (question, additional) = rest.split_at_checked(name_len + 4)?;
    let v6 = match question[name_len..] {
        [0, 1, 0, 1] => false,
        [0, 28, 0, 1] => true,
        _ => return None,
    };
    let edns = match header[11] {
        0 => None,
        _ => Some(plain_opt(additional, zone.placement().client_subnet())?),
    };
    Some(Simple {
        index,
        v6,
        question,
        edns,
    })
}

/// Reads the one record of the additional section when it is an OPT the
/// general path accepts and answers normally: root owner, version 0, and
/// options whose lengths add up to the record data exactly, with at most one
/// well-formed ECS option (looked at when `client_subnet`). The extended
/// rcode and flags other than DO are ignored, as there; so is anything after
/// the record.
fn plain_opt(record: &[u8], client_subnet: bool) -> Option<PlainEdns> {
    let [0, 0, 41, p0, p1, _, 0, flags, _, l0, l1, rest @ ..] = record else {
        return None;
    };
    let options = rest.get(..usize::from(u16::from_be_bytes([*l0, *l1])))?;
    Some(PlainEdns {
        payload_size: u16::from_be_bytes([*p0, *p1]),
        dnssec_ok: flags & 0x80 != 0,
        subnet: ecs::find(options, client_subnet).ok()?,
    })
}

/// What writing one fast reply needs.
struct Writer<'a, 'q> {
    query: &'q [u8],
    simple: &'a Simple<'q>,
    zone: &'a Zone,
    limit: usize,
    /// The ECS scope of the answer.
    scope: u8,
    rng: &'a mut Rng,
    reply: &'a mut Vec<u8>,
}

impl Writer<'_, '_> {
    /// Writes the reply with nodes chosen among `records`; `None`, before
    /// anything is drawn or written, when there are none (NODATA, which the
    /// general path writes).
    fn write<const LEN: usize>(&mut self, records: &[[u8; LEN]]) -> Option<Outcome> {
        if records.is_empty() {
            return None;
        }
        let mut scratch = None;
        let mode = self.zone.answer_mode(self.query[2] & 0x01 != 0);
        let picked = pick(self.rng, records.len(), mode, &mut scratch);
        let count = picked.count(records.len());
        let opt_len = self
            .simple
            .edns
            .map_or(0, |edns| OPT_LEN + edns.subnet.map_or(0, |s| s.wire_len()));
        // `domain` refuses a push that reaches its limit, so the general
        // path's replies stay strictly below `limit`; and it keeps room for
        // the OPT while pushing answers.
        let end = HEADER_LEN + self.simple.question.len() + count * LEN + opt_len;
        let fits = end < self.limit;
        // Below the limit, at most 65535 bytes, so the count fits in 16 bits.
        let ancount = if fits { count as u16 } else { 0 };
        self.reply.extend_from_slice(&self.header(ancount, !fits));
        self.reply.extend_from_slice(self.simple.question);
        if fits {
            match picked {
                Pick::Rotated(offset) => {
                    self.reply
                        .extend_from_slice(records[offset..].as_flattened());
                    self.reply
                        .extend_from_slice(records[..offset].as_flattened());
                }
                Pick::One(i) => self.reply.extend_from_slice(&records[i]),
                Pick::Listed(positions) => {
                    for &i in positions {
                        self.reply.extend_from_slice(&records[i]);
                    }
                }
            }
        }
        if let Some(edns) = self.simple.edns {
            self.reply.extend_from_slice(&self.opt(edns));
            if let Some(subnet) = edns.subnet {
                subnet.append(self.scope, self.reply);
            }
        }
        Some(Outcome::Reply(Rcode::NOERROR.into()))
    }

    /// The reply header: ID and RD copied, QR and AA set, TC when the
    /// answer did not fit, NOERROR, one question, `ancount` answers, and an
    /// additional record when we add an OPT.
    fn header(&self, ancount: u16, tc: bool) -> [u8; HEADER_LEN] {
        let q = self.query;
        let flags = 0x80 | 0x04 | if tc { 0x02 } else { 0 } | (q[2] & 0x01);
        let [a0, a1] = ancount.to_be_bytes();
        let arcount = u8::from(self.simple.edns.is_some());
        [q[0], q[1], flags, 0, 0, 1, a0, a1, 0, 0, 0, arcount]
    }

    /// Our OPT record up to its options: root owner, our payload size,
    /// extended rcode 0, version 0, the client's DO bit, and the length of
    /// the one option it may carry, the client's ECS with our scope.
    fn opt(&self, edns: PlainEdns) -> [u8; OPT_LEN] {
        let [s0, s1] = self.zone.edns_udp_size.to_be_bytes();
        let do_bit = if edns.dnssec_ok { 0x80 } else { 0 };
        // At most 24 bytes, so the length fits in 16 bits.
        let [l0, l1] = (edns.subnet.map_or(0, |s| s.wire_len()) as u16).to_be_bytes();
        [0, 0, 41, s0, s1, 0, 0, do_bit, 0, l0, l1]
    }
}
