//! The RFC conformance cases, shared by `tests/conformance.rs` (our server
//! against the expectations written here) and `tests/knot_differential.rs`
//! (our server against Knot DNS): raw queries, what each must get back over
//! UDP and over TCP, the clients that send them, and a small wire parser for
//! the replies.
//!
//! Queries are built byte by byte, so that malformed ones (compression loops,
//! two OPT records, a question cut short) are as easy to write as good ones.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use alternator_sim::SimCluster;

use super::{DnsClient, UDP_TIMEOUT, UDP_TRIES};

/// Flags for a responder serving `domain` from `sim`, learning the list from
/// `seed`, for the case tables (conformance and the Knot differential).
pub fn case_server_args(
    sim: &SimCluster,
    domain: &str,
    seed: IpAddr,
    more: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--domain",
        domain,
        "--alternator-port",
        &sim.port().to_string(),
        "--seed",
        &seed.to_string(),
        "--refresh-interval",
        "100ms",
        "--refresh-timeout",
        "500ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

/// The zone of the "small" server: one node, one random A record per answer.
pub const SMALL_DOMAIN: &str = super::DOMAIN;

/// The zone of the "big" server: [`BIG_NODES`] nodes, all in every A answer,
/// which never fits a UDP reply.
pub const BIG_DOMAIN: &str = "large.test";

/// Nodes of the big server: 200 A records are 3200 bytes of answer.
pub const BIG_NODES: u8 = 200;

/// The EDNS UDP payload size the servers advertise (our default, Knot's too).
pub const SERVER_EDNS_SIZE: u16 = 1232;

/// The TTL of the A records, and of the SOA and NS records (our defaults).
pub const A_TTL: u32 = 4;
pub const SOA_TTL: u32 = 60;

/// How long to listen before concluding that no reply is coming.
const SILENCE: Duration = Duration::from_millis(300);

// The flag bits of the header's second 16-bit word.
pub const QR: u16 = 0x8000;
pub const AA: u16 = 0x0400;
pub const TC: u16 = 0x0200;
pub const RD: u16 = 0x0100;
pub const RA: u16 = 0x0080;
pub const Z: u16 = 0x0040;
pub const AD: u16 = 0x0020;
pub const CD: u16 = 0x0010;

/// An opcode in place in the flags word.
pub const fn opcode(op: u8) -> u16 {
    (op as u16 & 0xf) << 11
}

/// RR types used by the cases.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const OPT: u16 = 41;
    pub const DS: u16 = 43;
    pub const RRSIG: u16 = 46;
    pub const TKEY: u16 = 249;
    pub const TSIG: u16 = 250;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const MAILB: u16 = 253;
    pub const MAILA: u16 = 254;
    pub const ANY: u16 = 255;
    pub const UNKNOWN: u16 = 1000;
}

/// Classes used by the cases.
pub mod class {
    pub const IN: u16 = 1;
    pub const CH: u16 = 3;
    pub const HS: u16 = 4;
    pub const ANY: u16 = 255;
}

/// Response codes, extended ones included (as 12-bit values).
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    pub const NOTAUTH: u16 = 9;
    pub const BADVERS: u16 = 16;
}

/// EDNS option codes.
pub mod option {
    pub const NSID: u16 = 3;
    pub const ECS: u16 = 8;
    pub const EXPIRE: u16 = 9;
    pub const COOKIE: u16 = 10;
    pub const PADDING: u16 = 12;
    pub const UNKNOWN: u16 = 100;
}

/// The DO bit of the OPT flags.
pub const DO: u16 = 0x8000;

// ---------------------------------------------------------------------------
// Wire building

/// The wire form of a name in presentation form, case kept (`.` is the root).
/// No escapes: binary labels are built with [`labels`].
pub fn name(text: &str) -> Vec<u8> {
    let parts: Vec<&[u8]> = text
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
        .map(str::as_bytes)
        .collect();
    labels(&parts)
}

/// The wire form of a name made of these labels (any bytes), root-terminated.
pub fn labels(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for label in parts {
        out.push(u8::try_from(label.len()).expect("a label length fits a byte"));
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

/// A question entry: `qname` already in wire form.
pub fn question(qname: &[u8], qtype: u16, qclass: u16) -> Vec<u8> {
    let mut out = qname.to_vec();
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&qclass.to_be_bytes());
    out
}

/// A resource record (owner in wire form).
pub fn record(owner: &[u8], rtype: u16, class: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut out = owner.to_vec();
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
    out.extend_from_slice(rdata);
    out
}

/// An OPT pseudo-record (extended RCODE 0) with these options.
pub fn opt(payload: u16, version: u8, flags: u16, options: &[(u16, &[u8])]) -> Vec<u8> {
    let mut rdata = Vec::new();
    for (code, data) in options {
        rdata.extend_from_slice(&code.to_be_bytes());
        rdata.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        rdata.extend_from_slice(data);
    }
    let ttl = (u32::from(version) << 16) | u32::from(flags);
    record(&[0], rtype::OPT, payload, ttl, &rdata)
}

/// A DNS message, section by section, turned into bytes by [`Msg::bytes`].
#[derive(Debug, Clone)]
pub struct Msg {
    pub id: u16,
    /// The second header word: QR, opcode, flags and RCODE bits.
    pub flags: u16,
    pub questions: Vec<Vec<u8>>,
    pub answers: Vec<Vec<u8>>,
    pub authorities: Vec<Vec<u8>>,
    pub additionals: Vec<Vec<u8>>,
    /// Header counts to write instead of the real ones.
    pub counts: Option<[u16; 4]>,
    /// Raw bytes after the last section.
    pub trailing: Vec<u8>,
    /// Cut the message to this many bytes.
    pub cut: Option<usize>,
}

impl Msg {
    /// A query for `qname` (presentation form) / `qtype` in class IN, no flags.
    pub fn query(qname: &str, qtype: u16) -> Msg {
        Msg::raw_question(question(&name(qname), qtype, class::IN))
    }

    /// A query whose question section is these bytes (counted as one question).
    pub fn raw_question(question: Vec<u8>) -> Msg {
        Msg {
            id: 0,
            flags: 0,
            questions: vec![question],
            answers: vec![],
            authorities: vec![],
            additionals: vec![],
            counts: None,
            trailing: vec![],
            cut: None,
        }
    }

    pub fn flags(mut self, flags: u16) -> Msg {
        self.flags |= flags;
        self
    }

    /// Adds an OPT record: EDNS version 0, this payload size, no flags.
    pub fn edns(self, payload: u16) -> Msg {
        self.additional(opt(payload, 0, 0, &[]))
    }

    pub fn additional(mut self, record: Vec<u8>) -> Msg {
        self.additionals.push(record);
        self
    }

    pub fn counts(mut self, counts: [u16; 4]) -> Msg {
        self.counts = Some(counts);
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let n = |v: &Vec<Vec<u8>>| u16::try_from(v.len()).unwrap();
        let counts = self.counts.unwrap_or([
            n(&self.questions),
            n(&self.answers),
            n(&self.authorities),
            n(&self.additionals),
        ]);
        let mut out = Vec::new();
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        for count in counts {
            out.extend_from_slice(&count.to_be_bytes());
        }
        for section in [
            &self.questions,
            &self.answers,
            &self.authorities,
            &self.additionals,
        ] {
            for part in section {
                out.extend_from_slice(part);
            }
        }
        out.extend_from_slice(&self.trailing);
        if let Some(len) = self.cut {
            out.truncate(len);
        }
        out
    }

    /// The client's UDP size limit: 512 without EDNS, else its payload size
    /// clamped to [512, the server's size].
    fn udp_limit(&self) -> usize {
        let payload = self
            .additionals
            .iter()
            .find(|r| r.len() >= 11 && r[0] == 0 && r[1..3] == rtype::OPT.to_be_bytes())
            .map(|r| u16::from_be_bytes([r[3], r[4]]));
        match payload {
            None => 512,
            Some(p) => usize::from(p.clamp(512, SERVER_EDNS_SIZE)),
        }
    }
}

// ---------------------------------------------------------------------------
// Cases and expectations

/// Which server a case is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// [`SMALL_DOMAIN`], one node.
    Small,
    /// [`BIG_DOMAIN`], [`BIG_NODES`] nodes, all of them in every A answer.
    Big,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub const BOTH: [Transport; 2] = [Transport::Udp, Transport::Tcp];

    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What a reply must look like. Flags not listed here are checked for every
/// reply: QR=1, ID and opcode copied, RD copied, RA=0, Z=0, AD=0, CD=0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The (extended) RCODE.
    pub rcode: u16,
    pub aa: bool,
    pub tc: bool,
    /// QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT.
    pub counts: [u16; 4],
    /// `Some(do)`: an OPT record, version 0, our payload size, only DO as
    /// given among the flags, no options but those of `options`. `None`: no
    /// OPT record.
    pub opt: Option<bool>,
    /// The option codes our OPT carries back: ECS (RFC 7871) when the
    /// query had one.
    pub options: Vec<u16>,
}

impl Want {
    fn new(rcode: u16, aa: bool, counts: [u16; 4]) -> Want {
        Want {
            rcode,
            aa,
            tc: false,
            counts,
            opt: None,
            options: Vec::new(),
        }
    }

    /// An authoritative answer of `an` records.
    pub fn answer(an: u16) -> Want {
        Want::new(rcode::NOERROR, true, [1, an, 0, 0])
    }

    /// NOERROR, no answer, the SOA in authority.
    pub fn nodata() -> Want {
        Want::new(rcode::NOERROR, true, [1, 0, 1, 0])
    }

    pub fn nxdomain() -> Want {
        Want::new(rcode::NXDOMAIN, true, [1, 0, 1, 0])
    }

    pub fn refused() -> Want {
        Want::new(rcode::REFUSED, false, [1, 0, 0, 0])
    }

    pub fn notimp() -> Want {
        Want::new(rcode::NOTIMP, false, [1, 0, 0, 0])
    }

    /// FORMERR echoing `qd` questions (0 when the question is unreadable).
    pub fn formerr(qd: u16) -> Want {
        Want::new(rcode::FORMERR, false, [qd, 0, 0, 0])
    }

    /// BADVERS: the question and our OPT, nothing else.
    pub fn badvers() -> Want {
        Want::new(rcode::BADVERS, false, [1, 0, 0, 1]).with_opt(false)
    }

    /// With our OPT record (counted in ARCOUNT), DO as given.
    pub fn edns(mut self, dnssec_ok: bool) -> Want {
        self.counts[3] += 1;
        self.with_opt(dnssec_ok)
    }

    fn with_opt(mut self, dnssec_ok: bool) -> Want {
        self.opt = Some(dnssec_ok);
        self
    }

    /// With `n` more records in the additional section (such as the name
    /// servers' addresses of an NS answer).
    pub fn additional(mut self, n: u16) -> Want {
        self.counts[3] += n;
        self
    }

    /// With the query's ECS option echoed (RFC 7871 7.2.1).
    pub fn ecs_echoed(mut self) -> Want {
        self.options = vec![option::ECS];
        self
    }

    /// TC=1 and the answer dropped.
    pub fn truncated(mut self) -> Want {
        self.tc = true;
        self.counts[1] = 0;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No reply at all (over TCP: none to this query on an open connection).
    NoReply,
    Reply(Want),
}

/// One rule, checked over UDP and over TCP.
#[derive(Debug, Clone)]
pub struct Case {
    /// Unique; names the rule and where it comes from.
    pub name: String,
    pub server: Server,
    pub query: Vec<u8>,
    pub udp: Expect,
    pub tcp: Expect,
    /// The most a UDP reply may carry.
    pub udp_limit: usize,
    /// The question bytes a reply with QDCOUNT=1 must echo exactly.
    pub question: Option<Vec<u8>>,
}

impl Case {
    pub fn expect(&self, transport: Transport) -> &Expect {
        match transport {
            Transport::Udp => &self.udp,
            Transport::Tcp => &self.tcp,
        }
    }
}

struct Cases {
    list: Vec<Case>,
}

impl Cases {
    fn push(&mut self, name: &str, server: Server, msg: Msg, udp: Expect, tcp: Expect) {
        assert!(
            self.list.iter().all(|c| c.name != name),
            "duplicate case name {name}"
        );
        let mut msg = msg;
        msg.id = 0x1000 + u16::try_from(self.list.len()).unwrap();
        let question = (msg.questions.len() == 1).then(|| msg.questions[0].clone());
        self.list.push(Case {
            name: name.to_string(),
            server,
            query: msg.bytes(),
            udp,
            tcp,
            udp_limit: msg.udp_limit(),
            question,
        });
    }

    /// The same reply over both transports.
    fn same(&mut self, name: &str, msg: Msg, want: Want) {
        self.push(
            name,
            Server::Small,
            msg,
            Expect::Reply(want.clone()),
            Expect::Reply(want),
        );
    }

    fn dropped(&mut self, name: &str, msg: Msg) {
        self.push(name, Server::Small, msg, Expect::NoReply, Expect::NoReply);
    }

    /// On the big server: truncated over UDP, `want` over TCP.
    fn big(&mut self, name: &str, msg: Msg, want: Want) {
        self.push(
            name,
            Server::Big,
            msg,
            Expect::Reply(want.clone().truncated()),
            Expect::Reply(want),
        );
    }

    /// On the big server, where the answer fits: the same over both.
    fn big_fits(&mut self, name: &str, msg: Msg, want: Want) {
        self.push(
            name,
            Server::Big,
            msg,
            Expect::Reply(want.clone()),
            Expect::Reply(want),
        );
    }
}

/// Every conformance case. Names start with the rule's source.
pub fn all() -> Vec<Case> {
    let mut c = Cases { list: Vec::new() };
    let d = SMALL_DOMAIN;
    let soa = || Msg::query(d, rtype::SOA);
    let no_options: &[(u16, &[u8])] = &[];

    // RFC 8906 section 8: the queries servers commonly fail to answer.
    c.same("RFC8906 8.1.1 plain SOA, no EDNS", soa(), Want::answer(1));
    c.same(
        "RFC8906 8.1.2 unknown type 1000 is NODATA",
        Msg::query(d, rtype::UNKNOWN),
        Want::nodata(),
    );
    c.same(
        "RFC8906 8.1.3 RD=1 is copied, RA stays 0",
        soa().flags(RD),
        Want::answer(1),
    );
    c.same(
        "RFC8906 8.1.3 AA=1 in the query is ignored",
        soa().flags(AA),
        Want::answer(1),
    );
    c.same(
        "RFC8906 8.1.3 AD=1 in the query: AD=0 in the reply",
        soa().flags(AD),
        Want::answer(1),
    );
    c.same(
        "RFC8906 8.1.3 CD=1 is ignored and not copied",
        soa().flags(CD),
        Want::answer(1),
    );
    c.same(
        "RFC8906 8.1.3 RA=1 in the query: RA=0 in the reply",
        soa().flags(RA),
        Want::answer(1),
    );
    c.same(
        "RFC8906 8.1.3 Z=1 in the query: Z=0 in the reply",
        soa().flags(Z),
        Want::answer(1),
    );
    c.same(
        "RFC1035 4.1.1 TC=1 in a query is ignored",
        soa().flags(TC),
        Want::answer(1),
    );
    c.same(
        "RFC8906 8.1.3 every flag at once",
        soa().flags(AA | TC | RD | RA | Z | AD | CD),
        Want::answer(1),
    );
    c.same(
        "RFC8906 8.1.4 opcode 15 is NOTIMP",
        soa().flags(opcode(15)),
        Want::notimp(),
    );
    c.same(
        "RFC8906 8.1.4 opcode 15 with EDNS is NOTIMP with OPT",
        soa().flags(opcode(15)).edns(1232),
        Want::notimp().edns(false),
    );
    c.same(
        "RFC8906 8.2.1 minimal EDNS",
        soa().edns(4096),
        Want::answer(1).edns(false),
    );
    c.same(
        "RFC8906 8.2.2 EDNS version 1 is BADVERS",
        soa().additional(opt(4096, 1, 0, no_options)),
        Want::badvers(),
    );
    c.same(
        "RFC8906 8.2.3 unknown EDNS option 100 is ignored, not echoed",
        soa().additional(opt(4096, 0, 0, &[(option::UNKNOWN, &[1, 2, 3, 4])])),
        Want::answer(1).edns(false),
    );
    c.same(
        "RFC8906 8.2.4 unknown EDNS flag is cleared",
        soa().additional(opt(4096, 0, 0x0040, no_options)),
        Want::answer(1).edns(false),
    );
    c.same(
        "RFC8906 8.2.5 EDNS version 1 with an unknown flag is BADVERS",
        soa().additional(opt(4096, 1, 0x0040, no_options)),
        Want::badvers(),
    );
    c.same(
        "RFC8906 8.2.6 EDNS version 1 with an unknown option is BADVERS",
        soa().additional(opt(4096, 1, 0, &[(option::UNKNOWN, &[])])),
        Want::badvers(),
    );
    c.big(
        "RFC8906 8.2.7 payload 512 and a large answer is truncated",
        Msg::query(BIG_DOMAIN, rtype::A).edns(512),
        Want::answer(u16::from(BIG_NODES)).edns(false),
    );
    c.same(
        "RFC8906 8.2.8 DO=1 is echoed",
        soa().additional(opt(4096, 0, DO, no_options)),
        Want::answer(1).edns(true),
    );
    c.same(
        "RFC8906 8.2.9 EDNS version 1 with DO=1 is BADVERS",
        soa().additional(opt(4096, 1, DO, no_options)),
        Want {
            opt: Some(true),
            ..Want::badvers()
        },
    );
    c.same(
        "RFC8906 8.2.10 NSID, EXPIRE and ECS together",
        soa().additional(opt(
            4096,
            0,
            0,
            &[
                (option::NSID, &[]),
                (option::EXPIRE, &[]),
                // ECS: family 1, source prefix 0, scope 0, no address.
                (option::ECS, &[0, 1, 0, 0]),
            ],
        )),
        Want::answer(1).edns(false).ecs_echoed(),
    );

    // EDNS(0), RFC 6891.
    c.same(
        "RFC6891 6.1.2 COOKIE and PADDING options are ignored",
        soa().additional(opt(
            1232,
            0,
            0,
            &[
                (option::COOKIE, &[1, 2, 3, 4, 5, 6, 7, 8]),
                (option::PADDING, &[0; 16]),
            ],
        )),
        Want::answer(1).edns(false),
    );
    c.same(
        "RFC6891 6.2.5 payload 0 counts as 512",
        soa().edns(0),
        Want::answer(1).edns(false),
    );
    c.same(
        "RFC6891 6.1.1 two OPT records are FORMERR",
        soa().edns(1232).edns(1232),
        Want::formerr(1),
    );
    c.same(
        "RFC6891 6.1.2 an OPT owned by another name than the root is FORMERR",
        soa().additional(record(&name(d), rtype::OPT, 1232, 0, &[])),
        Want::formerr(1),
    );
    c.same(
        "RFC6891 6.1.2 an option longer than the OPT data is FORMERR",
        soa().additional(record(&[0], rtype::OPT, 1232, 0, &[0, 100, 0, 9, 1])),
        Want::formerr(1),
    );
    c.same(
        "RFC1035 4.1 ARCOUNT=1 with the record missing is FORMERR",
        soa().counts([1, 0, 0, 1]),
        Want::formerr(1),
    );

    // Header rules.
    for (op, label) in [(1, "IQUERY"), (2, "STATUS"), (3, "3"), (6, "DSO")] {
        c.same(
            &format!("RFC1035 4.1.1 opcode {label} is NOTIMP"),
            soa().flags(opcode(op)),
            Want::notimp(),
        );
    }
    c.same(
        "RFC1996 opcode NOTIFY is NOTIMP",
        soa().flags(opcode(4)),
        Want::notimp(),
    );
    c.same(
        "RFC2136 opcode UPDATE is NOTIMP",
        soa().flags(opcode(5)),
        Want::notimp(),
    );
    let mut empty = soa();
    empty.questions.clear();
    c.same(
        "RFC1035 4.1.2 QDCOUNT=0 is FORMERR",
        empty.clone(),
        Want::formerr(0),
    );
    c.same(
        "RFC1035 4.1.2 QDCOUNT=0 with EDNS is FORMERR",
        empty.edns(1232),
        Want::formerr(0).edns(false),
    );
    let mut two = soa();
    two.questions.push(question(&name(d), rtype::A, class::IN));
    c.same("RFC1035 4.1.2 QDCOUNT=2 is FORMERR", two, Want::formerr(0));
    c.same(
        "RFC1035 4.1.2 QDCOUNT=1 with the question missing is FORMERR",
        soa().counts([1, 0, 0, 0]).cut_at(12),
        Want::formerr(0),
    );
    c.same(
        "RFC1035 4.1.1 RCODE bits in a query are ignored",
        soa().flags(5),
        Want::answer(1),
    );
    c.dropped(
        "RFC1035 4.1.1 QR=1 (a response) is dropped",
        soa().flags(QR),
    );
    c.dropped(
        "RFC1035 4.1.1 a packet shorter than a header is dropped",
        soa().cut_at(11),
    );

    // Classes.
    c.same(
        "RFC1035 3.2.4 class CH at the apex is REFUSED",
        Msg::raw_question(question(&name(d), rtype::SOA, class::CH)),
        Want::refused(),
    );
    c.same(
        "RFC1035 3.2.4 CH version.bind TXT is REFUSED",
        Msg::raw_question(question(&name("version.bind"), rtype::TXT, class::CH)),
        Want::refused(),
    );
    c.same(
        "RFC1035 3.2.4 class HS is REFUSED",
        Msg::raw_question(question(&name(d), rtype::A, class::HS)),
        Want::refused(),
    );
    c.same(
        "RFC1035 3.2.5 QCLASS ANY is REFUSED",
        Msg::raw_question(question(&name(d), rtype::A, class::ANY)),
        Want::refused(),
    );

    // Types at the apex.
    c.same(
        "RFC1034 A at the apex",
        Msg::query(d, rtype::A),
        Want::answer(1),
    );
    c.same(
        "RFC1034 A at the apex with EDNS",
        Msg::query(d, rtype::A).edns(1232),
        Want::answer(1).edns(false),
    );
    c.same(
        "RFC2308 2.2 AAAA without IPv6 nodes is NODATA",
        Msg::query(d, rtype::AAAA),
        Want::nodata(),
    );
    c.same(
        "RFC1034 NS at the apex, with the in-zone name server's address",
        Msg::query(d, rtype::NS),
        Want::answer(1).additional(1),
    );
    c.same(
        "RFC8482 ANY gets one RRset",
        Msg::query(d, rtype::ANY),
        Want::answer(1),
    );
    for (t, label) in [
        (rtype::MX, "MX"),
        (rtype::TXT, "TXT"),
        (rtype::CNAME, "CNAME"),
        (rtype::DS, "DS"),
        (rtype::RRSIG, "RRSIG"),
    ] {
        c.same(
            &format!("RFC2308 2.2 {label} at the apex is NODATA"),
            Msg::query(d, t),
            Want::nodata(),
        );
    }
    c.same(
        "RFC2308 2.2 NODATA with EDNS keeps the OPT",
        Msg::query(d, rtype::MX).edns(1232),
        Want::nodata().edns(false),
    );

    // Names.
    c.same(
        "RFC2308 2.1 a name below the apex is NXDOMAIN",
        Msg::query(&format!("x.{d}"), rtype::A),
        Want::nxdomain(),
    );
    c.same(
        "RFC2308 2.1 NXDOMAIN with EDNS keeps the OPT",
        Msg::query(&format!("a.b.c.{d}"), rtype::SOA).edns(1232),
        Want::nxdomain().edns(false),
    );
    c.same(
        "RFC1034 4.3.2 a name outside the zone is REFUSED",
        Msg::query("example.com", rtype::A),
        Want::refused(),
    );
    c.same(
        "RFC1034 4.3.2 the parent of the apex is REFUSED",
        Msg::query("test", rtype::SOA),
        Want::refused(),
    );
    c.same(
        "RFC1034 4.3.2 the root is REFUSED",
        Msg::query(".", rtype::NS),
        Want::refused(),
    );
    c.same(
        "RFC1034 4.3.2 a sibling sharing the apex's suffix is REFUSED",
        Msg::query(&format!("x{d}"), rtype::A),
        Want::refused(),
    );
    c.same(
        "RFC4343 the question is echoed exactly, 0x20 case",
        Msg::query("AlTeRnAtOr.TeSt", rtype::A),
        Want::answer(1),
    );
    c.same(
        "RFC4343 0x20 case below the apex is NXDOMAIN",
        Msg::query("X.ALTERNATOR.TEST", rtype::A),
        Want::nxdomain(),
    );
    // A name of these labels below the apex, in wire form.
    let below = |parts: &[&[u8]]| {
        let mut all: Vec<&[u8]> = parts.to_vec();
        all.extend(d.split('.').map(str::as_bytes));
        labels(&all)
    };
    c.same(
        "RFC2181 11 binary label bytes below the apex are NXDOMAIN",
        Msg::raw_question(question(&below(&[b"a\0.b\xff"]), rtype::A, class::IN)),
        Want::nxdomain(),
    );
    // A name of `total` octets below the apex: 3 labels of 63, one to fill.
    let long_label = [b'a'; 63];
    let sized = |total: usize| {
        let fill = vec![b'b'; total - 3 * 64 - name(d).len() - 1];
        below(&[&long_label, &long_label, &long_label, &fill])
    };
    let max_name = sized(255);
    assert_eq!(max_name.len(), 255);
    c.same(
        "RFC1035 2.3.4 a 255-octet name below the apex is NXDOMAIN",
        Msg::raw_question(question(&max_name, rtype::A, class::IN)),
        Want::nxdomain(),
    );
    let too_long = sized(256);
    assert_eq!(too_long.len(), 256);
    c.same(
        "RFC1035 2.3.4 a 256-octet name is FORMERR",
        Msg::raw_question(question(&too_long, rtype::A, class::IN)),
        Want::formerr(0),
    );
    let mut label64 = vec![64];
    label64.extend_from_slice(&[b'a'; 64]);
    label64.extend_from_slice(&name(d));
    c.same(
        "RFC1035 2.3.4 a 64-octet label (type 01) is FORMERR",
        Msg::raw_question(question(&label64, rtype::A, class::IN)),
        Want::formerr(0),
    );
    let mut reserved = vec![0x80 | 1, b'a'];
    reserved.extend_from_slice(&name(d));
    c.same(
        "RFC6891 5 a label of the reserved type 10 is FORMERR",
        Msg::raw_question(question(&reserved, rtype::A, class::IN)),
        Want::formerr(0),
    );
    // Offset 12 is where the question name starts.
    c.same(
        "RFC1035 4.1.4 a compression pointer to itself is FORMERR",
        Msg::raw_question(question(&[0xc0, 12], rtype::A, class::IN)),
        Want::formerr(0),
    );
    c.same(
        "RFC1035 4.1.4 a compression loop through a label is FORMERR",
        Msg::raw_question(question(&[1, b'x', 0xc0, 12], rtype::A, class::IN)),
        Want::formerr(0),
    );
    // A pointer forward, to a copy of the apex after the question.
    let mut forward = Msg::raw_question(question(&[0xc0, 18], rtype::A, class::IN));
    forward.trailing = name(d);
    c.same(
        "RFC1035 4.1.4 a forward compression pointer is FORMERR",
        forward,
        Want::formerr(0),
    );
    c.same(
        "RFC1035 4.1.4 a compression pointer past the end is FORMERR",
        Msg::raw_question(question(&[0xc1, 0], rtype::A, class::IN)),
        Want::formerr(0),
    );
    // A valid question, then an additional record whose owner is 20 octets
    // of labels in front of a pointer to a 250-octet question name: 270.
    let name250 = sized(250);
    assert_eq!(name250.len(), 250);
    let mut owner = labels(&[&[b'c'; 19][..]]);
    owner.pop();
    owner.extend_from_slice(&[0xc0, 12]);
    c.same(
        "RFC1035 2.3.4 a name over 255 octets through compression is FORMERR",
        Msg::raw_question(question(&name250, rtype::A, class::IN)).additional(record(
            &owner,
            rtype::A,
            class::IN,
            0,
            &[127, 0, 0, 1],
        )),
        Want::formerr(1),
    );
    let whole = question(&name(d), rtype::A, class::IN);
    for (cut, what) in [(3, "in the name"), (2, "in the type"), (1, "in the class")] {
        let mut msg = Msg::raw_question(whole.clone());
        msg.cut = Some(12 + whole.len() - cut);
        c.same(
            &format!("RFC1035 4.1.2 a question cut short {what} is FORMERR"),
            msg,
            Want::formerr(0),
        );
    }

    // Query types that are not RR types stored at a name.
    for (t, label) in [(rtype::AXFR, "RFC5936 AXFR"), (rtype::IXFR, "RFC1995 IXFR")] {
        c.same(
            &format!("{label}: no zone transfers, NOTIMP"),
            Msg::query(d, t),
            Want::notimp(),
        );
    }
    c.same(
        "RFC5936 AXFR with EDNS is NOTIMP with OPT",
        Msg::query(d, rtype::AXFR).edns(1232),
        Want::notimp().edns(false),
    );
    c.same(
        "RFC5936 AXFR outside the zone is REFUSED",
        Msg::query("example.com", rtype::AXFR),
        Want::refused(),
    );
    for (t, label) in [
        (rtype::OPT, "OPT"),
        (rtype::TSIG, "TSIG"),
        (rtype::TKEY, "TKEY"),
        (rtype::MAILB, "MAILB"),
        (rtype::MAILA, "MAILA"),
        (0, "0"),
        (65535, "65535"),
    ] {
        c.same(
            &format!("RFC6895 3.1 QTYPE {label} is NODATA"),
            Msg::query(d, t),
            Want::nodata(),
        );
    }

    // Other sections of a query.
    // A query for the apex A with `rr` in its answer (or authority) section.
    let with_answer = |in_answer: bool, rr: Vec<u8>| {
        let mut msg = Msg::query(d, rtype::A);
        if in_answer {
            msg.answers.push(rr);
        } else {
            msg.authorities.push(rr);
        }
        msg
    };
    let (an, ns) = (true, false);
    let address = || record(&[0xc0, 12], rtype::A, class::IN, 0, &[192, 0, 2, 1]);
    c.same(
        "RFC1035 4.1 a record in a query's answer section is ignored",
        with_answer(an, address()),
        Want::answer(1),
    );
    c.same(
        "RFC1035 4.1 a record in a query's authority section is ignored",
        with_answer(ns, address()),
        Want::answer(1),
    );
    c.same(
        "RFC1035 4.1 ANCOUNT=1 with the record missing is FORMERR",
        Msg::query(d, rtype::A).counts([1, 1, 0, 0]),
        Want::formerr(1),
    );
    c.same(
        "RFC6891 6.1.1 an OPT in the answer section is FORMERR",
        with_answer(an, opt(1232, 0, 0, no_options)),
        Want::formerr(1),
    );
    c.same(
        "RFC6891 6.1.1 OPT records in authority and additional are FORMERR",
        with_answer(ns, opt(1232, 0, 0, no_options)).edns(1232),
        Want::formerr(1),
    );
    c.same(
        "RFC6891 6.1.3 an extended RCODE in a query's OPT is ignored",
        soa().additional(record(&[0], rtype::OPT, 1232, 0x0100_0000, &[])),
        Want::answer(1).edns(false),
    );
    let mut trailing = Msg::query(d, rtype::A);
    trailing.trailing = vec![1, 2, 3];
    c.same(
        "RFC1035 4.1 bytes after the last section are ignored",
        trailing,
        Want::answer(1),
    );
    c.same(
        "RFC1035 4.1.4 a compression pointer into the header is FORMERR",
        Msg::raw_question(question(&[0xc0, 2], rtype::A, class::IN)),
        Want::formerr(0),
    );
    c.same(
        "RFC1034 4.3.2 the in-zone NS name has its address",
        Msg::query(&format!("ns1.{d}"), rtype::A),
        Want::answer(1),
    );
    c.same(
        "RFC2308 2.2 the in-zone NS name has no IPv6 address: NODATA",
        Msg::query(&format!("NS1.{d}"), rtype::AAAA),
        Want::nodata(),
    );
    c.same(
        "RFC2308 2.1 a sibling of the NS name is NXDOMAIN",
        Msg::query(&format!("ns2.{d}"), rtype::A),
        Want::nxdomain(),
    );

    // Sizes: the big server's 200 A records never fit a UDP reply.
    c.big(
        "RFC1035 4.2.1 no EDNS: 512 bytes, truncated",
        Msg::query(BIG_DOMAIN, rtype::A),
        Want::answer(u16::from(BIG_NODES)),
    );
    c.big(
        "RFC6891 6.2.5 payload below 512 counts as 512, truncated",
        Msg::query(BIG_DOMAIN, rtype::A).edns(100),
        Want::answer(u16::from(BIG_NODES)).edns(false),
    );
    c.big(
        "RFC6891 6.2.5 payload 65535 is capped at ours, truncated",
        Msg::query(BIG_DOMAIN, rtype::A).edns(65535),
        Want::answer(u16::from(BIG_NODES)).edns(false),
    );
    c.big(
        "RFC6891 6.1.1 truncation keeps the OPT and DO",
        Msg::query(BIG_DOMAIN, rtype::A).additional(opt(1232, 0, DO, no_options)),
        Want::answer(u16::from(BIG_NODES)).edns(true),
    );
    c.big(
        "RFC8482 ANY with a large A RRset is truncated",
        Msg::query(BIG_DOMAIN, rtype::ANY).edns(1232),
        Want::answer(u16::from(BIG_NODES)).edns(false),
    );
    c.big_fits(
        "RFC1035 4.2.1 SOA on the big server fits",
        Msg::query(BIG_DOMAIN, rtype::SOA),
        Want::answer(1),
    );
    c.big_fits(
        "RFC2308 2.1 NXDOMAIN on the big server fits",
        Msg::query(&format!("x.{BIG_DOMAIN}"), rtype::A).edns(512),
        Want::nxdomain().edns(false),
    );
    c.list
}

impl Msg {
    fn cut_at(mut self, len: usize) -> Msg {
        self.cut = Some(len);
        self
    }
}

// ---------------------------------------------------------------------------
// Clients

/// Where a server answers.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

/// Sends `query` and returns the reply, `None` when none came. With
/// `expect_reply`, a UDP query is tried [`UDP_TRIES`] times; without it, the
/// server gets [`SILENCE`] to answer, and over TCP a second query follows on
/// the connection, whose reply shows that nothing came before it.
pub fn exchange(
    endpoint: Endpoint,
    transport: Transport,
    query: &[u8],
    expect_reply: bool,
) -> Option<Vec<u8>> {
    match transport {
        Transport::Udp => exchange_udp(endpoint.udp, query, expect_reply),
        Transport::Tcp => exchange_tcp(endpoint.tcp, query, expect_reply),
    }
}

fn exchange_udp(server: SocketAddr, query: &[u8], expect_reply: bool) -> Option<Vec<u8>> {
    let (tries, wait) = if expect_reply {
        (UDP_TRIES, UDP_TIMEOUT)
    } else {
        (1, SILENCE)
    };
    let client = DnsClient::new(server);
    (0..tries).find_map(|_| {
        client.send_raw(query);
        client.recv_raw(wait)
    })
}

fn exchange_tcp(server: SocketAddr, query: &[u8], expect_reply: bool) -> Option<Vec<u8>> {
    let mut stream = DnsClient::new(server)
        .connect_tcp()
        .expect("connect over TCP");
    let mut framed = frame(query);
    let query_id = (query.len() >= 2).then(|| [query[0], query[1]]);
    // The follow-up query has an ID the first one cannot have.
    let mut probe = Msg::query(SMALL_DOMAIN, rtype::SOA);
    probe.id = match query_id {
        Some(id) => !u16::from_be_bytes(id),
        None => 0x5a5a,
    };
    if !expect_reply {
        framed.extend_from_slice(&frame(&probe.bytes()));
    }
    stream.write_all(&framed).ok()?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).ok()?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).ok()?;
    let is_probe = !expect_reply && reply.len() >= 2 && reply[..2] == probe.id.to_be_bytes();
    (!is_probe).then_some(reply)
}

fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(message.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

// ---------------------------------------------------------------------------
// Replies

/// The OPT record of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenOpt {
    pub payload: u16,
    pub ext_rcode: u8,
    pub version: u8,
    pub flags: u16,
    /// The option codes, in order.
    pub options: Vec<u16>,
}

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: u16,
    /// The second header word as sent.
    pub flags: u16,
    /// The full RCODE: OPT's extended bits and the header's four.
    pub rcode: u16,
    pub counts: [u16; 4],
    pub opt: Option<SeenOpt>,
    pub len: usize,
}

impl Seen {
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }
}

/// Walks every section of `bytes`, checking the lengths, and finds the OPT.
pub fn parse_reply(bytes: &[u8]) -> Result<Seen, String> {
    if bytes.len() < 12 {
        return Err(format!("{} bytes: shorter than a header", bytes.len()));
    }
    let word = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    let counts = [word(4), word(6), word(8), word(10)];
    let mut pos = 12;
    let read = |len: usize, pos: &mut usize| -> Result<usize, String> {
        let at = *pos;
        if at + len > bytes.len() {
            return Err(format!("section data runs past the end at {at}"));
        }
        *pos += len;
        Ok(at)
    };
    let skip_name = |pos: &mut usize| -> Result<(), String> {
        loop {
            let Some(&len) = bytes.get(*pos) else {
                return Err(format!("name runs past the end at {pos}"));
            };
            match len {
                0 => {
                    *pos += 1;
                    return Ok(());
                }
                1..=63 => *pos += 1 + usize::from(len),
                0xc0..=0xff => {
                    *pos += 2;
                    return Ok(());
                }
                _ => return Err(format!("bad label type {len:#x} at {pos}")),
            }
        }
    };
    for _ in 0..counts[0] {
        skip_name(&mut pos)?;
        read(4, &mut pos)?;
    }
    let mut opt = None;
    for (section, &count) in counts.iter().enumerate().skip(1) {
        for _ in 0..count {
            let owner = pos;
            skip_name(&mut pos)?;
            let fixed = read(10, &mut pos)?;
            let rdlen = usize::from(word(fixed + 8));
            let rdata = read(rdlen, &mut pos)?;
            if word(fixed) != rtype::OPT {
                continue;
            }
            if section != 3 || opt.is_some() || bytes[owner] != 0 {
                return Err("an OPT record out of place".into());
            }
            let mut options = Vec::new();
            let mut at = rdata;
            while at + 4 <= rdata + rdlen {
                options.push(word(at));
                at += 4 + usize::from(word(at + 2));
            }
            opt = Some(SeenOpt {
                payload: word(fixed + 2),
                ext_rcode: bytes[fixed + 4],
                version: bytes[fixed + 5],
                flags: word(fixed + 6),
                options,
            });
        }
    }
    if pos != bytes.len() {
        return Err(format!("{} bytes after the last record", bytes.len() - pos));
    }
    let flags = word(2);
    let ext = opt.as_ref().map_or(0, |o| u16::from(o.ext_rcode));
    Ok(Seen {
        id: word(0),
        flags,
        rcode: (ext << 4) | (flags & 0xf),
        counts,
        opt,
        len: bytes.len(),
    })
}

/// Every way `reply` breaks `case`'s expectation over `transport`.
pub fn check(case: &Case, transport: Transport, reply: Option<&[u8]>) -> Vec<String> {
    let mut problems = Vec::new();
    let want = match (case.expect(transport), reply) {
        (Expect::NoReply, None) => return problems,
        (Expect::NoReply, Some(bytes)) => {
            problems.push(format!("expected no reply, got {} bytes", bytes.len()));
            return problems;
        }
        (Expect::Reply(_), None) => {
            problems.push("no reply".into());
            return problems;
        }
        (Expect::Reply(want), Some(_)) => want,
    };
    let bytes = reply.expect("matched above");
    let seen = match parse_reply(bytes) {
        Ok(seen) => seen,
        Err(e) => {
            problems.push(format!("unparseable reply: {e}"));
            return problems;
        }
    };
    let query_flags = u16::from_be_bytes([case.query[2], case.query[3]]);
    let mut expect = |what: &str, ok: bool, detail: String| {
        if !ok {
            problems.push(format!("{what}: {detail}"));
        }
    };
    expect(
        "ID",
        case.query[..2] == bytes[..2],
        format!("{:#06x}", seen.id),
    );
    expect("QR", seen.has(QR), "not set".into());
    expect(
        "opcode",
        seen.opcode() == ((query_flags >> 11) & 0xf) as u8,
        format!("{} is not the query's", seen.opcode()),
    );
    expect(
        "rcode",
        seen.rcode == want.rcode,
        format!("{} instead of {}", seen.rcode, want.rcode),
    );
    expect("AA", seen.has(AA) == want.aa, format!("want {}", want.aa));
    expect("TC", seen.has(TC) == want.tc, format!("want {}", want.tc));
    expect(
        "RD",
        seen.has(RD) == (query_flags & RD != 0),
        "not copied from the query".into(),
    );
    for (flag, label) in [(RA, "RA"), (Z, "Z"), (AD, "AD"), (CD, "CD")] {
        expect(label, !seen.has(flag), "set".into());
    }
    expect(
        "counts",
        seen.counts == want.counts,
        format!("{:?} instead of {:?}", seen.counts, want.counts),
    );
    match (&want.opt, &seen.opt) {
        (None, None) => {}
        (None, Some(_)) => expect("OPT", false, "present, none wanted".into()),
        (Some(_), None) => expect("OPT", false, "missing".into()),
        (Some(dnssec_ok), Some(o)) => {
            expect("OPT version", o.version == 0, format!("{}", o.version));
            expect(
                "OPT payload size",
                o.payload == SERVER_EDNS_SIZE,
                format!("{}", o.payload),
            );
            let want_flags = if *dnssec_ok { DO } else { 0 };
            expect(
                "OPT flags",
                o.flags == want_flags,
                format!("{:#06x} instead of {want_flags:#06x}", o.flags),
            );
            expect(
                "OPT options",
                o.options == want.options,
                format!("{:?} echoed, {:?} wanted", o.options, want.options),
            );
        }
    }
    if let (1, Some(question)) = (seen.counts[0], &case.question) {
        let echoed = bytes.get(12..12 + question.len());
        expect(
            "question",
            echoed == Some(&question[..]),
            "not echoed exactly".into(),
        );
    }
    if transport == Transport::Udp {
        expect(
            "UDP size",
            seen.len <= case.udp_limit,
            format!("{} bytes over the client's {}", seen.len, case.udp_limit),
        );
    }
    problems
}
