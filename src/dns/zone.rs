//! The zone we are authoritative for: one apex name and its synthesised records.
//!
//! Everything here is parsed and checked once, when a snapshot is built, so the
//! answer path only compares names and copies prepared values.

use std::fmt;

use domain::base::{Name, Serial, ToName, Ttl};
use domain::rdata::Soa;
use thiserror::Error;

use super::placement::Placement;
use super::wire;

mod name_server;
pub use name_server::NameServer;

/// The largest EDNS UDP payload size we accept: the workers' reply buffers.
pub const MAX_EDNS_UDP_SIZE: u16 = crate::io::MAX_UDP_REPLY as u16;

/// The EDNS UDP payload size advertised by default: the DNS Flag Day 2020
/// value, which avoids IP fragmentation on common paths.
pub const DEFAULT_EDNS_UDP_SIZE: u16 = 1232;

/// TTL of A and AAAA answers by default: short, as Amazon's DynamoDB names.
pub const DEFAULT_TTL: u32 = 4;

/// TTL of the SOA and NS records (and negative answers) by default.
pub const DEFAULT_SOA_TTL: u32 = 60;

/// An owned, absolute domain name.
pub type OwnedName = Name<Vec<u8>>;

/// How many node addresses one A or AAAA answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerMode {
    /// This many distinct nodes chosen at random (all of them when fewer are live).
    Random(u16),
    /// Every live node, rotated by a random offset.
    All,
}

impl AnswerMode {
    /// The largest `N` accepted for `--answers N`: answers are chosen without
    /// allocating, with a fixed-size scratch array of this many slots.
    pub const MAX_RANDOM: u16 = 64;
}

impl Default for AnswerMode {
    fn default() -> Self {
        AnswerMode::Random(1)
    }
}

impl fmt::Display for AnswerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerMode::Random(n) => write!(f, "{n}"),
            AnswerMode::All => f.write_str("all"),
        }
    }
}

impl std::str::FromStr for AnswerMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(AnswerMode::All);
        }
        match s.parse::<u16>() {
            Ok(n) if (1..=Self::MAX_RANDOM).contains(&n) => Ok(AnswerMode::Random(n)),
            _ => Err(format!(
                "expected a number from 1 to {} or \"all\", got {s:?}",
                Self::MAX_RANDOM
            )),
        }
    }
}

/// SOA timers by default. We transfer no zone, so REFRESH, RETRY and EXPIRE
/// only have to satisfy zone checkers (Zonemaster's ZONE02-ZONE05: refresh
/// at least 4 h, retry at least 1 h and below refresh, expire at least a
/// week and above refresh); MINIMUM is the least Zonemaster's ZONE06 accepts,
/// and negative answers stay short through the SOA's own TTL (RFC 2308 uses
/// the smaller of the two).
pub const DEFAULT_SOA_REFRESH: u32 = 14_400;
pub const DEFAULT_SOA_RETRY: u32 = 3_600;
pub const DEFAULT_SOA_EXPIRE: u32 = 1_209_600;
pub const DEFAULT_SOA_MINIMUM: u32 = 300;

/// The zone as configured: plain values, validated by [`Zone::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSettings {
    /// The served name, which is also the zone apex.
    pub domain: String,
    /// TTL of the A and AAAA answers.
    pub ttl: u32,
    /// Addresses per answer to queries with RD=1 (stub resolvers, forwarders).
    pub answers: AnswerMode,
    /// Addresses per answer to queries with RD=0 (resolvers iterating, which
    /// cache one answer for all their clients); `None`: as `answers`.
    pub resolver_answers: Option<AnswerMode>,
    /// NS records at the apex, each `NAME` or `NAME=ADDR[,ADDR...]`; a name
    /// inside the zone needs its addresses. At least one.
    pub ns: Vec<String>,
    /// SOA MNAME; `None` means the first NS name.
    pub soa_mname: Option<String>,
    /// SOA RNAME (the mailbox, `.` for `@`); `None` means `hostmaster.<domain>`.
    pub soa_rname: Option<String>,
    /// TTL of the SOA and NS records (and of the NS names' addresses).
    pub soa_ttl: u32,
    pub soa_refresh: u32,
    pub soa_retry: u32,
    pub soa_expire: u32,
    /// SOA MINIMUM; negative answers carry min(this, `soa_ttl`).
    pub soa_minimum: u32,
    /// The UDP payload size we advertise in EDNS and accept at most.
    pub edns_udp_size: u16,
    /// Whether names outside the zone go to the forwarder instead of REFUSED.
    pub forwarding: bool,
}

impl ZoneSettings {
    /// A zone serving `domain` with every other setting at its default and
    /// its name server `ns1.<domain>` at 127.0.0.1, as for a server on
    /// loopback; tests and benchmarks change what they need with
    /// `ZoneSettings { answers, ..ZoneSettings::new(domain) }`.
    pub fn new(domain: impl Into<String>) -> ZoneSettings {
        let domain = domain.into();
        ZoneSettings {
            ns: vec![format!("ns1.{}=127.0.0.1", domain.trim_end_matches('.'))],
            domain,
            ttl: DEFAULT_TTL,
            answers: AnswerMode::default(),
            resolver_answers: None,
            soa_mname: None,
            soa_rname: None,
            soa_ttl: DEFAULT_SOA_TTL,
            soa_refresh: DEFAULT_SOA_REFRESH,
            soa_retry: DEFAULT_SOA_RETRY,
            soa_expire: DEFAULT_SOA_EXPIRE,
            soa_minimum: DEFAULT_SOA_MINIMUM,
            edns_udp_size: DEFAULT_EDNS_UDP_SIZE,
            forwarding: false,
        }
    }
}

/// Where a query name falls relative to the zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A served name: its index in the zone (0 is the apex).
    Name(usize),
    /// An in-zone name server's name: its index in the zone's NS list.
    NameServer(usize),
    /// Not a served name, but above one (`dc1.example` when `r1.dc1.example`
    /// is served): it exists, with no records (RFC 8020), so NODATA.
    EmptyNonTerminal,
    /// Below the apex, not served: NXDOMAIN.
    Missing,
    /// Not at or below the apex.
    Outside,
}

/// Why a zone could not be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ZoneError {
    #[error("{what} {name:?} is not a valid domain name: {reason}")]
    BadName {
        what: &'static str,
        name: String,
        reason: String,
    },
    #[error("the served domain must not be the root")]
    RootDomain,
    #[error("--edns-udp-size must be from 512 to {max}, got {got}")]
    EdnsUdpSize { got: u16, max: u16 },
    #[error("--name {name:?} is not below --domain {apex:?}")]
    NameOutsideZone { name: String, apex: String },
    #[error("--name {0:?} is given twice")]
    DuplicateName(String),
    #[error(
        "--ns {name}: this name server is inside the zone {apex} but has no address, so \
         resolvers that look it up get no answer and give up on the zone; give the address \
         the parent zone's glue record has, as --ns {name}=ADDR[,ADDR], or name a server \
         outside the zone"
    )]
    NsWithoutAddress { name: String, apex: String },
    #[error("--ns {name}: the name server is outside the zone {apex}; its addresses belong in its own zone, not here")]
    NsAddressOutsideZone { name: String, apex: String },
    #[error("--ns {spec:?}: {reason}")]
    BadNs { spec: String, reason: String },
    #[error(
        "{0:?} is both a served name and an --ns name server; name servers need a name of their own"
    )]
    NsIsServedName(String),
    #[error("--ns: at least one name server is needed")]
    NoNs,
}

/// The zone, ready for the answer path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub(crate) apex: OwnedName,
    /// Every name with addresses: the apex first, then the further names.
    pub(crate) names: Vec<OwnedName>,
    /// `names` prepared for the answer path's byte comparison, same order.
    wire_names: Vec<WireName>,
    pub(crate) ttl: Ttl,
    pub(crate) answers: AnswerMode,
    pub(crate) resolver_answers: AnswerMode,
    pub(crate) ns: Vec<NameServer>,
    pub(crate) soa: Soa<OwnedName>,
    pub(crate) soa_ttl: Ttl,
    /// RFC 2308: negative answers carry min(SOA TTL, SOA MINIMUM).
    pub(crate) negative_ttl: Ttl,
    pub(crate) edns_udp_size: u16,
    pub(crate) forwarding: bool,
    /// Which names place their clients, and where clients are.
    pub(crate) placement: Placement,
}

impl Zone {
    pub fn new(settings: &ZoneSettings) -> Result<Zone, ZoneError> {
        let apex = parse_name("--domain", &settings.domain)?;
        if apex.is_root() {
            return Err(ZoneError::RootDomain);
        }
        if !(512..=MAX_EDNS_UDP_SIZE).contains(&settings.edns_udp_size) {
            return Err(ZoneError::EdnsUdpSize {
                got: settings.edns_udp_size,
                max: MAX_EDNS_UDP_SIZE,
            });
        }
        if settings.ns.is_empty() {
            return Err(ZoneError::NoNs);
        }
        let mut ns: Vec<NameServer> = Vec::with_capacity(settings.ns.len());
        for spec in &settings.ns {
            let server = NameServer::parse(spec, &apex)?;
            if server.name == apex {
                return Err(ZoneError::NsIsServedName(settings.domain.clone()));
            }
            match ns.iter_mut().find(|n| n.name == server.name) {
                // The same name given twice: one NS record, all addresses.
                Some(known) => {
                    for ip in server.v4 {
                        if !known.v4.contains(&ip) {
                            known.v4.push(ip);
                        }
                    }
                    for ip in server.v6 {
                        if !known.v6.contains(&ip) {
                            known.v6.push(ip);
                        }
                    }
                }
                None => ns.push(server),
            }
        }
        let mname = match &settings.soa_mname {
            Some(n) => parse_name("--soa-mname", n)?,
            None => ns[0].name.clone(),
        };
        let rname = match &settings.soa_rname {
            Some(n) => parse_name("--soa-rname", n)?,
            None => parse_name(
                "--soa-rname (default hostmaster.<domain>)",
                &format!("hostmaster.{apex}"),
            )?,
        };
        let soa_ttl = Ttl::from_secs(settings.soa_ttl);
        let soa = Soa::new(
            mname,
            rname,
            Serial(0),
            Ttl::from_secs(settings.soa_refresh),
            Ttl::from_secs(settings.soa_retry),
            Ttl::from_secs(settings.soa_expire),
            Ttl::from_secs(settings.soa_minimum),
        );
        let mut zone = Zone {
            names: vec![apex.clone()],
            wire_names: vec![WireName::new(&apex)],
            apex,
            ttl: Ttl::from_secs(settings.ttl),
            answers: settings.answers,
            resolver_answers: settings.resolver_answers.unwrap_or(settings.answers),
            ns,
            soa,
            soa_ttl,
            negative_ttl: soa_ttl.min(Ttl::from_secs(settings.soa_minimum)),
            edns_udp_size: settings.edns_udp_size,
            forwarding: settings.forwarding,
            placement: Placement::default(),
        };
        zone.set_serial();
        Ok(zone)
    }

    /// Sets the SOA serial from the zone's own data: its names, NS records
    /// and their addresses, the SOA fields and the TTLs. Instances serving
    /// the same zone publish the same serial (zone checkers compare them),
    /// and it changes when the data does. Node addresses are not part of it:
    /// they change every few seconds and no zone is transferred. FNV-1a, so
    /// the value is stable across builds and versions.
    fn set_serial(&mut self) {
        // Sorted, so that the order of --name and --ns does not matter.
        let mut lines: Vec<String> = self.names.iter().map(|n| format!("name {n}")).collect();
        for ns in &self.ns {
            let mut addrs: Vec<String> = (ns.v4.iter().map(ToString::to_string))
                .chain(ns.v6.iter().map(ToString::to_string))
                .collect();
            addrs.sort();
            lines.push(format!("ns {} {}", ns.name, addrs.join(" ")));
        }
        lines.sort();
        let mut text = lines.join("\n");
        text.push('\n');
        let soa = &self.soa;
        text.push_str(&format!(
            "soa {} {} {} {} {} {} {}\nttl {}\n",
            soa.mname(),
            soa.rname(),
            soa.refresh().as_secs(),
            soa.retry().as_secs(),
            soa.expire().as_secs(),
            soa.minimum().as_secs(),
            self.soa_ttl.as_secs(),
            self.ttl.as_secs(),
        ));
        let hash = text.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        self.soa = Soa::new(
            soa.mname().clone(),
            soa.rname().clone(),
            Serial(hash),
            soa.refresh(),
            soa.retry(),
            soa.expire(),
            soa.minimum(),
        );
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.soa.serial().into_int()
    }

    /// How many addresses answer a query with this RD bit.
    pub(crate) fn answer_mode(&self, recursion_desired: bool) -> AnswerMode {
        if recursion_desired {
            self.answers
        } else {
            self.resolver_answers
        }
    }

    /// The apex, as text with a trailing dot.
    pub fn apex(&self) -> String {
        format!("{}.", self.apex)
    }

    /// Adds further served names (below the apex), each with its own nodes;
    /// their indexes follow the apex's 0 in the order given.
    pub fn with_names(mut self, names: &[String]) -> Result<Zone, ZoneError> {
        for text in names {
            let name = parse_name("--name", text)?;
            if name == self.apex || !name.ends_with(&self.apex) {
                return Err(ZoneError::NameOutsideZone {
                    name: text.clone(),
                    apex: self.apex(),
                });
            }
            if self.names.contains(&name) {
                return Err(ZoneError::DuplicateName(text.clone()));
            }
            if self.ns.iter().any(|ns| ns.name == name) {
                return Err(ZoneError::NsIsServedName(text.clone()));
            }
            self.wire_names.push(WireName::new(&name));
            self.names.push(name);
        }
        self.set_serial();
        Ok(self)
    }

    /// Places clients as `placement` says (built for this zone's names, in
    /// their order).
    pub fn with_placement(mut self, placement: Placement) -> Zone {
        self.placement = placement;
        self
    }

    /// Which names place their clients, and where clients are.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Number of served names (at least 1: the apex).
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// Served name `index` as text with a trailing dot.
    pub fn name_text(&self, index: usize) -> String {
        self.names
            .get(index)
            .map_or_else(String::new, |n| format!("{n}."))
    }

    /// Where a query name falls; names compare without regard to ASCII case.
    pub fn find<N: ToName>(&self, qname: &N) -> Place {
        if !qname.ends_with(&self.apex) {
            return Place::Outside;
        }
        if let Some(index) = self.names.iter().position(|n| qname.name_eq(n)) {
            return Place::Name(index);
        }
        let in_zone_ns = || self.ns.iter().filter(|ns| ns.in_zone());
        if let Some(index) = self
            .ns
            .iter()
            .position(|ns| ns.in_zone() && qname.name_eq(&ns.name))
        {
            return Place::NameServer(index);
        }
        if self.names[1..].iter().any(|n| n.ends_with(qname))
            || in_zone_ns().any(|ns| ns.name.ends_with(qname))
        {
            return Place::EmptyNonTerminal;
        }
        Place::Missing
    }

    /// The name servers, as `NAME` or `NAME=ADDR,...` with a trailing dot.
    pub fn name_servers(&self) -> Vec<String> {
        self.ns
            .iter()
            .map(|ns| {
                let addrs: Vec<String> = (ns.v4.iter().map(ToString::to_string))
                    .chain(ns.v6.iter().map(ToString::to_string))
                    .collect();
                match addrs.is_empty() {
                    true => format!("{}.", ns.name),
                    false => format!("{}.={}", ns.name, addrs.join(",")),
                }
            })
            .collect()
    }

    /// The served name that `wire` begins with, compared without regard to
    /// ASCII case, as (index, length of the name in `wire`).
    ///
    /// `wire` is the message from the question name on. Only a name that
    /// [`wire::name_len`] reads (label by label, no compression) can match.
    pub(crate) fn served_prefix(&self, wire: &[u8]) -> Option<(usize, usize)> {
        let len = wire::name_len(wire)?;
        let name = &wire[..len];
        let index = self.wire_names.iter().position(|n| n.matches(name))?;
        Some((index, len))
    }
}

/// A served name as the answer path compares it: lowercase wire form, and
/// the bit that folds a byte's case, 0x20 at letters and 0 elsewhere (the
/// length octets, below 64, are never letters). Both in one allocation, the
/// form then the bits, so a match reads one cache line for a short name
/// (benches/README.md, experiment 24).
#[derive(Debug, Clone, PartialEq, Eq)]
struct WireName {
    lower_then_case_bits: Box<[u8]>,
}

impl WireName {
    fn new(name: &OwnedName) -> WireName {
        // Lowercased here as well: an escape such as `\065` in the
        // configured text survives `parse_name`'s lowercasing.
        let lower = name.as_slice().to_ascii_lowercase();
        let case_bits = lower
            .iter()
            .map(|b| if b.is_ascii_lowercase() { 0x20 } else { 0 });
        let both = lower.iter().copied().chain(case_bits).collect();
        WireName {
            lower_then_case_bits: both,
        }
    }

    /// Whether `name` (in wire form, as [`wire::name_len`] delimits it) is
    /// this name in any ASCII case. It compares bytes only: the walk that
    /// found where `name` ends has already read its labels.
    ///
    /// `name | case_bits == lower` byte by byte: at a letter both cases
    /// match, anywhere else only the same byte. Compared eight bytes at a
    /// time, the last word overlapping the one before; the first differing
    /// word ends it.
    fn matches(&self, name: &[u8]) -> bool {
        let both = &*self.lower_then_case_bits;
        let len = both.len() / 2;
        if name.len() != len {
            return false;
        }
        let (lower, bits) = both.split_at(len);
        if len < 8 {
            return (0..len).all(|i| name[i] | bits[i] == lower[i]);
        }
        let word = |bytes: &[u8], at: usize| {
            u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
        };
        let folds_at = |at: usize| word(name, at) | word(bits, at) == word(lower, at);
        (0..len - 8).step_by(8).all(folds_at) && folds_at(len - 8)
    }
}

/// Parses a presentation-format name, absolute or not (a trailing dot is optional),
/// into lowercase wire form.
fn parse_name(what: &'static str, text: &str) -> Result<OwnedName, ZoneError> {
    let bad = |reason: String| ZoneError::BadName {
        what,
        name: text.to_string(),
        reason,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if trimmed.contains(char::is_whitespace) {
        return Err(bad("it contains whitespace".into()));
    }
    let lower = trimmed.to_ascii_lowercase();
    let absolute = if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    };
    Name::vec_from_str(&absolute).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests;
