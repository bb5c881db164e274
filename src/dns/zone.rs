//! The zone we are authoritative for: one apex name and its synthesised records.
//!
//! Everything here is parsed and checked once, when a snapshot is built, so the
//! answer path only compares names and copies prepared values.

use std::fmt;

use domain::base::{Name, Serial, ToName, Ttl};
use domain::rdata::Soa;
use thiserror::Error;

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

/// The zone as configured: plain values, validated by [`Zone::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSettings {
    /// The served name, which is also the zone apex.
    pub domain: String,
    /// TTL of the A and AAAA answers.
    pub ttl: u32,
    pub answers: AnswerMode,
    /// NS names at the apex; empty means `ns1.<domain>`.
    pub ns: Vec<String>,
    /// SOA MNAME; `None` means the first NS name.
    pub soa_mname: Option<String>,
    /// SOA RNAME (the mailbox, `.` for `@`); `None` means `hostmaster.<domain>`.
    pub soa_rname: Option<String>,
    pub soa_serial: u32,
    /// TTL of the SOA and NS records, and the SOA MINIMUM (negative caching).
    pub soa_ttl: u32,
    /// The UDP payload size we advertise in EDNS and accept at most.
    pub edns_udp_size: u16,
    /// Whether names outside the zone go to the forwarder instead of REFUSED.
    pub forwarding: bool,
}

impl ZoneSettings {
    /// A zone serving `domain` with every other setting at its default (SOA
    /// serial 1); tests and benchmarks change what they need with
    /// `ZoneSettings { answers, ..ZoneSettings::new(domain) }`.
    pub fn new(domain: impl Into<String>) -> ZoneSettings {
        ZoneSettings {
            domain: domain.into(),
            ttl: DEFAULT_TTL,
            answers: AnswerMode::default(),
            ns: vec![],
            soa_mname: None,
            soa_rname: None,
            soa_serial: 1,
            soa_ttl: DEFAULT_SOA_TTL,
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
    #[error("edns-udp-size must be from 512 to {max}, got {got}")]
    EdnsUdpSize { got: u16, max: u16 },
    #[error("served name {name:?} is not below the domain {apex:?}")]
    NameOutsideZone { name: String, apex: String },
    #[error("served name {0:?} is given twice")]
    DuplicateName(String),
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
    pub(crate) ns: Vec<OwnedName>,
    pub(crate) soa: Soa<OwnedName>,
    pub(crate) soa_ttl: Ttl,
    /// RFC 2308: negative answers carry min(SOA TTL, SOA MINIMUM).
    pub(crate) negative_ttl: Ttl,
    pub(crate) edns_udp_size: u16,
    pub(crate) forwarding: bool,
}

impl Zone {
    pub fn new(settings: &ZoneSettings) -> Result<Zone, ZoneError> {
        let apex = parse_name("domain", &settings.domain)?;
        if apex.is_root() {
            return Err(ZoneError::RootDomain);
        }
        if !(512..=MAX_EDNS_UDP_SIZE).contains(&settings.edns_udp_size) {
            return Err(ZoneError::EdnsUdpSize {
                got: settings.edns_udp_size,
                max: MAX_EDNS_UDP_SIZE,
            });
        }
        let ns = if settings.ns.is_empty() {
            vec![parse_name("NS name", &format!("ns1.{apex}"))?]
        } else {
            settings
                .ns
                .iter()
                .map(|n| parse_name("NS name", n))
                .collect::<Result<Vec<_>, _>>()?
        };
        let mname = match &settings.soa_mname {
            Some(n) => parse_name("SOA mname", n)?,
            None => ns[0].clone(),
        };
        let rname = match &settings.soa_rname {
            Some(n) => parse_name("SOA rname", n)?,
            None => parse_name("SOA rname", &format!("hostmaster.{apex}"))?,
        };
        let soa_ttl = Ttl::from_secs(settings.soa_ttl);
        let soa = Soa::new(
            mname,
            rname,
            Serial(settings.soa_serial),
            Ttl::from_secs(3600),
            Ttl::from_secs(600),
            Ttl::from_secs(86400),
            soa_ttl,
        );
        Ok(Zone {
            names: vec![apex.clone()],
            wire_names: vec![WireName::new(&apex)],
            apex,
            ttl: Ttl::from_secs(settings.ttl),
            answers: settings.answers,
            ns,
            soa,
            soa_ttl,
            negative_ttl: soa_ttl,
            edns_udp_size: settings.edns_udp_size,
            forwarding: settings.forwarding,
        })
    }

    /// The apex, as text with a trailing dot.
    pub fn apex(&self) -> String {
        format!("{}.", self.apex)
    }

    /// Adds further served names (below the apex), each with its own nodes;
    /// their indexes follow the apex's 0 in the order given.
    pub fn with_names(mut self, names: &[String]) -> Result<Zone, ZoneError> {
        for text in names {
            let name = parse_name("served name", text)?;
            if name == self.apex || !name.ends_with(&self.apex) {
                return Err(ZoneError::NameOutsideZone {
                    name: text.clone(),
                    apex: self.apex(),
                });
            }
            if self.names.contains(&name) {
                return Err(ZoneError::DuplicateName(text.clone()));
            }
            self.wire_names.push(WireName::new(&name));
            self.names.push(name);
        }
        Ok(self)
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
        if self.names[1..].iter().any(|n| n.ends_with(qname)) {
            return Place::EmptyNonTerminal;
        }
        Place::Missing
    }

    pub fn answers(&self) -> AnswerMode {
        self.answers
    }

    /// The served name that `wire` begins with, compared without regard to
    /// ASCII case, as (index, length of the name in `wire`).
    ///
    /// `wire` is the message from the question name on. Only a name written
    /// out label by label, without compression, can match.
    pub(crate) fn served_prefix(&self, wire: &[u8]) -> Option<(usize, usize)> {
        let len = uncompressed_name_len(wire)?;
        let name = &wire[..len];
        let index = self.wire_names.iter().position(|n| n.matches(name))?;
        Some((index, len))
    }
}

/// Length of the uncompressed name at the start of `wire`, root label
/// included; `None` for a pointer, a reserved label type or a cut name.
fn uncompressed_name_len(wire: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        match *wire.get(at)? {
            0 => return Some(at + 1),
            len @ 1..=63 => at += 1 + usize::from(len),
            _ => return None,
        }
    }
}

/// A served name as the answer path compares it: lowercase wire form, and
/// the bit that folds a byte's case, 0x20 at letters and 0 elsewhere (the
/// length octets, below 64, are never letters).
#[derive(Debug, Clone, PartialEq, Eq)]
struct WireName {
    lower: Box<[u8]>,
    case_bits: Box<[u8]>,
}

impl WireName {
    fn new(name: &OwnedName) -> WireName {
        // Lowercased here as well: an escape such as `\065` in the
        // configured text survives `parse_name`'s lowercasing.
        let lower = name.as_slice().to_ascii_lowercase().into_boxed_slice();
        let case_bits = lower
            .iter()
            .map(|b| if b.is_ascii_lowercase() { 0x20 } else { 0 })
            .collect();
        WireName { lower, case_bits }
    }

    /// Whether `name` (in wire form) is this name in any ASCII case.
    ///
    /// `name | case_bits == lower` byte by byte: at a letter both cases
    /// match, anywhere else only the same byte. Compared eight bytes at a
    /// time, the last word overlapping the one before; the first differing
    /// word ends it.
    fn matches(&self, name: &[u8]) -> bool {
        let (lower, bits) = (&*self.lower, &*self.case_bits);
        let len = lower.len();
        if name.len() != len {
            return false;
        }
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
mod tests {
    use super::*;

    #[test]
    fn defaults_derive_from_the_domain() {
        let zone = Zone::new(&ZoneSettings::new("Alternator.Example.com")).unwrap();
        assert_eq!(zone.apex(), "alternator.example.com.");
        assert_eq!(zone.ns[0].to_string(), "ns1.alternator.example.com");
        assert_eq!(zone.soa.mname().to_string(), "ns1.alternator.example.com");
        assert_eq!(
            zone.soa.rname().to_string(),
            "hostmaster.alternator.example.com"
        );
        assert_eq!(zone.negative_ttl, Ttl::from_secs(60));
    }

    #[test]
    fn bad_names_are_rejected_with_the_offending_value() {
        for bad in ["", "a..b", "has space.com", &"x".repeat(64)] {
            let err = Zone::new(&ZoneSettings::new(bad)).unwrap_err();
            assert!(err.to_string().contains("domain"), "{err}");
        }
        assert_eq!(
            Zone::new(&ZoneSettings::new(".")),
            Err(ZoneError::RootDomain)
        );
        let mut s = ZoneSettings::new("a.example");
        s.ns = vec!["ns..bad".into()];
        assert!(Zone::new(&s).unwrap_err().to_string().contains("NS name"));
    }

    #[test]
    fn names_are_found_case_insensitively_with_empty_non_terminals() {
        let zone = Zone::new(&ZoneSettings::new("alt.example"))
            .unwrap()
            .with_names(&["dc2.alt.example".into(), "r1.dc1.alt.example".into()])
            .unwrap();
        let find = |n: &str| zone.find(&Name::vec_from_str(n).unwrap());
        assert_eq!(find("ALT.example"), Place::Name(0));
        assert_eq!(find("Dc2.Alt.Example"), Place::Name(1));
        assert_eq!(find("r1.dc1.alt.example"), Place::Name(2));
        assert_eq!(find("dc1.alt.example"), Place::EmptyNonTerminal);
        assert_eq!(find("x.alt.example"), Place::Missing);
        assert_eq!(find("x.r1.dc1.alt.example"), Place::Missing);
        assert_eq!(find("example"), Place::Outside);
        assert_eq!(find("alt.example.org"), Place::Outside);
        assert_eq!(zone.name_text(1), "dc2.alt.example.");
    }

    #[test]
    fn served_prefixes_match_whole_names_in_any_case() {
        let zone = Zone::new(&ZoneSettings::new("alt-1.example"))
            .unwrap()
            .with_names(&[
                "\\065b.alt-1.example".into(),
                "abcdefgh.alt-1.example".into(),
            ])
            .unwrap();
        let wire = |n: &str| {
            let mut w = Name::vec_from_str(n).unwrap().into_octets();
            w.extend_from_slice(&[0, 1, 0, 1]);
            w
        };
        let find = |n: &str| zone.served_prefix(&wire(n));
        assert_eq!(find("alt-1.example"), Some((0, 15)));
        assert_eq!(find("ALT-1.eXample"), Some((0, 15)));
        assert_eq!(find("AB.alt-1.example"), Some((1, 18)));
        assert_eq!(find("aB.alt-1.example"), Some((1, 18)));
        assert_eq!(find("abcdefGH.alt-1.EXAMPLE"), Some((2, 24)));
        // Bytes that differ only in 0x20 but are not letters do not match.
        assert_eq!(find(r"alt\0131.example"), None);
        assert_eq!(find(r"alt-\017.example"), None);
        for other in [
            "x.alt-1.example",
            "alt-1.example.org",
            "example",
            "alt-1.exampl",
        ] {
            assert_eq!(find(other), None, "{other}");
        }
        // Cut short, or a compression pointer: no match.
        assert_eq!(zone.served_prefix(&wire("alt-1.example")[..14]), None);
        assert_eq!(zone.served_prefix(&[0xc0, 12, 0, 1, 0, 1]), None);
    }

    #[test]
    fn further_names_must_be_below_the_apex_and_distinct() {
        let zone = || Zone::new(&ZoneSettings::new("alt.example")).unwrap();
        assert!(matches!(
            zone().with_names(&["other.example".into()]),
            Err(ZoneError::NameOutsideZone { .. })
        ));
        assert!(matches!(
            zone().with_names(&["alt.example".into()]),
            Err(ZoneError::NameOutsideZone { .. })
        ));
        assert!(matches!(
            zone().with_names(&["a.alt.example".into(), "A.alt.example.".into()]),
            Err(ZoneError::DuplicateName(_))
        ));
    }

    #[test]
    fn answer_mode_parses_numbers_and_all() {
        assert_eq!("1".parse(), Ok(AnswerMode::Random(1)));
        assert_eq!("ALL".parse(), Ok(AnswerMode::All));
        assert!("0".parse::<AnswerMode>().is_err());
        assert!("65".parse::<AnswerMode>().is_err());
        assert!("two".parse::<AnswerMode>().is_err());
    }
}
