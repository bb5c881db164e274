//! The zone we are authoritative for: one apex name and its synthesised records.
//!
//! Everything here is parsed and checked once, when a snapshot is built, so the
//! answer path only compares names and copies prepared values.

use std::fmt;

use domain::base::{Name, Serial, Ttl};
use domain::rdata::Soa;
use thiserror::Error;

/// The largest EDNS UDP payload size we accept: the workers' reply buffers.
pub const MAX_EDNS_UDP_SIZE: u16 = crate::io::MAX_UDP_REPLY as u16;

/// The EDNS UDP payload size advertised by default: the DNS Flag Day 2020
/// value, which avoids IP fragmentation on common paths.
pub const DEFAULT_EDNS_UDP_SIZE: u16 = 1232;

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
}

/// The zone, ready for the answer path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub(crate) apex: OwnedName,
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

    pub fn answers(&self) -> AnswerMode {
        self.answers
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

    pub(crate) fn settings(domain: &str) -> ZoneSettings {
        ZoneSettings {
            domain: domain.into(),
            ttl: 4,
            answers: AnswerMode::default(),
            ns: vec![],
            soa_mname: None,
            soa_rname: None,
            soa_serial: 1,
            soa_ttl: 60,
            edns_udp_size: DEFAULT_EDNS_UDP_SIZE,
            forwarding: false,
        }
    }

    #[test]
    fn defaults_derive_from_the_domain() {
        let zone = Zone::new(&settings("Alternator.Example.com")).unwrap();
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
            let err = Zone::new(&settings(bad)).unwrap_err();
            assert!(err.to_string().contains("domain"), "{err}");
        }
        assert_eq!(Zone::new(&settings(".")), Err(ZoneError::RootDomain));
        let mut s = settings("a.example");
        s.ns = vec!["ns..bad".into()];
        assert!(Zone::new(&s).unwrap_err().to_string().contains("NS name"));
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
