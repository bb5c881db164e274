//! Allow lists of source addresses: which clients may query the server.
//!
//! An [`AccessList`] is built once from CIDR prefixes (`"10.0.0.0/8"`,
//! `"fd00::/8"`, or a bare address such as `"127.0.0.1"`, which means `/32`
//! or `/128`) and then asked [`AccessList::allows`] for every packet, from any
//! worker thread: the check is a linear scan of plain integers, with no
//! allocation and no lock. Lists are expected to be short (tens of entries);
//! an empty list allows everything, so "no `allow` option" needs no special
//! case.
//!
//! IPv4-mapped IPv6 sources (`::ffff:10.1.2.3`, as a dual-stack `[::]` socket
//! reports IPv4 clients) are compared as the IPv4 address they carry, and an
//! IPv4-mapped prefix in the list (`::ffff:10.0.0.0/104`) is stored as the
//! IPv4 prefix it denotes (`10.0.0.0/8`), so either spelling matches either
//! kind of source.
//!
//! What to do with a source that is not allowed is the caller's choice,
//! described by [`Denied`]: answer REFUSED, or drop the packet silently.
//!
//! [`Cidr`] and [`Denied`] implement `FromStr`, `Display` and serde's
//! traits (as strings / kebab-case names), and [`Denied`] is a `clap`
//! `ValueEnum`, so they can be used directly as option types, e.g.
//!
//! ```toml
//! allow = ["10.0.0.0/8", "fd00::/8", "127.0.0.1"]
//! denied = "refuse"
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Why a CIDR prefix could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CidrError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("{input:?} is not an address or prefix like 10.0.0.0/8, fd00::/8 or 127.0.0.1")]
    BadAddress { input: String },
    /// The part after `/` is not a number in range for the address family.
    #[error("{input:?}: the prefix length must be a number from 0 to {max}")]
    BadLength { input: String, max: u8 },
    /// Bits are set below the prefix length, e.g. `10.0.0.1/8`. Almost always
    /// a typo (`10.0.0.1/32`? `10.0.0.0/8`?), so it is refused rather than
    /// silently masked.
    #[error("{input:?} has bits set past the prefix length; did you mean {suggestion}?")]
    HostBits { input: String, suggestion: Cidr },
}

/// One address prefix: an IPv4 or IPv6 network and a prefix length.
///
/// Always normalised: no bits set past the prefix length, and IPv4-mapped
/// IPv6 prefixes of length 96 or more are held as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cidr {
    V4 { network: u32, len: u8 },
    V6 { network: u128, len: u8 },
}

fn mask_v4(len: u8) -> u32 {
    match len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n)),
    }
}

fn mask_v6(len: u8) -> u128 {
    match len {
        0 => 0,
        n => u128::MAX << (128 - u32::from(n)),
    }
}

impl Cidr {
    /// The prefix of length `len` that contains `addr` (host bits are
    /// cleared). `None` if `len` is too long for the family.
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        match addr {
            IpAddr::V4(v4) => (len <= 32).then(|| Cidr::V4 {
                network: u32::from(v4) & mask_v4(len),
                len,
            }),
            IpAddr::V6(v6) => {
                if len > 128 {
                    return None;
                }
                if let (Some(v4), true) = (v6.to_ipv4_mapped(), len >= 96) {
                    return Cidr::new(IpAddr::V4(v4), len - 96);
                }
                Some(Cidr::V6 {
                    network: u128::from(v6) & mask_v6(len),
                    len,
                })
            }
        }
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        match *self {
            Cidr::V4 { network, .. } => IpAddr::V4(Ipv4Addr::from(network)),
            Cidr::V6 { network, .. } => IpAddr::V6(Ipv6Addr::from(network)),
        }
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        match *self {
            Cidr::V4 { len, .. } | Cidr::V6 { len, .. } => len,
        }
    }

    /// Whether `ip` is inside this prefix. IPv4-mapped IPv6 addresses are
    /// compared as IPv4.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip.to_canonical()) {
            (Cidr::V4 { network, len }, IpAddr::V4(v4)) => u32::from(v4) & mask_v4(len) == network,
            (Cidr::V6 { network, len }, IpAddr::V6(v6)) => u128::from(v6) & mask_v6(len) == network,
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let input = s.trim();
        let (addr, len) = match input.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (input, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::BadAddress {
            input: input.to_string(),
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            // `u8::from_str` accepts a leading '+'; a prefix length does not.
            Some(l) if l.bytes().all(|b| b.is_ascii_digit()) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| CidrError::BadLength {
                    input: input.to_string(),
                    max,
                })?,
            Some(_) => {
                return Err(CidrError::BadLength {
                    input: input.to_string(),
                    max,
                })
            }
        };
        let cidr = Cidr::new(addr, len).expect("length checked above");
        let host_bits = match addr {
            IpAddr::V4(v4) => u32::from(v4) & !mask_v4(len) != 0,
            IpAddr::V6(v6) => u128::from(v6) & !mask_v6(len) != 0,
        };
        if host_bits {
            return Err(CidrError::HostBits {
                input: input.to_string(),
                suggestion: cidr,
            });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix_len())
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A set of prefixes that sources must fall in. Empty = allow everything.
///
/// Cheap to share (`Arc<AccessList>`) or clone into each worker; the
/// check never allocates or locks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    /// (network, mask) pairs, IPv4 and IPv6 apart so that the check only
    /// scans the family of the source.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    /// As given (deduplicated), for `Display` and [`AccessList::cidrs`].
    cidrs: Vec<Cidr>,
}

impl AccessList {
    /// The list of these prefixes (duplicates are dropped).
    pub fn new(cidrs: impl IntoIterator<Item = Cidr>) -> AccessList {
        let mut list = AccessList::default();
        for cidr in cidrs {
            if list.cidrs.contains(&cidr) {
                continue;
            }
            list.cidrs.push(cidr);
            match cidr {
                Cidr::V4 { network, len } => list.v4.push((network, mask_v4(len))),
                Cidr::V6 { network, len } => list.v6.push((network, mask_v6(len))),
            }
        }
        list
    }

    /// This machine only: `127.0.0.0/8` and `::1`.
    pub fn loopback() -> AccessList {
        AccessList::new([
            Cidr::V4 {
                network: u32::from(Ipv4Addr::LOCALHOST) & mask_v4(8),
                len: 8,
            },
            Cidr::V6 {
                network: u128::from(Ipv6Addr::LOCALHOST),
                len: 128,
            },
        ])
    }

    /// Parses each string as a [`Cidr`]; the first bad one is the error.
    pub fn parse<I, S>(items: I) -> Result<AccessList, CidrError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let cidrs = items
            .into_iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(AccessList::new(cidrs))
    }

    /// Whether a query from `ip` may be answered. Allocation-free.
    #[inline]
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.is_empty() || self.contains(&ip)
    }

    /// Whether a prefix of the list contains `ip`. Out of line: inlined,
    /// the byte shuffles of `to_canonical` and the conversions to integers
    /// were laid out ahead of the test for an empty list, and cost every
    /// query 27 instructions (benches/README.md, experiment 24).
    #[inline(never)]
    fn contains(&self, ip: &IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let ip = u32::from(v4);
                self.v4.iter().any(|&(net, mask)| ip & mask == net)
            }
            IpAddr::V6(v6) => {
                let ip = u128::from(v6);
                self.v6.iter().any(|&(net, mask)| ip & mask == net)
            }
        }
    }

    /// True when the list has no entries, i.e. allows everything.
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty()
    }

    /// The prefixes, in the order given.
    pub fn cidrs(&self) -> &[Cidr] {
        &self.cidrs
    }
}

impl FromIterator<Cidr> for AccessList {
    fn from_iter<T: IntoIterator<Item = Cidr>>(iter: T) -> Self {
        AccessList::new(iter)
    }
}

/// A comma-separated list, e.g. `"10.0.0.0/8, fd00::/8"`; an empty or
/// all-blank string is the empty list (allow everything).
impl FromStr for AccessList {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<AccessList, CidrError> {
        AccessList::parse(s.split(',').map(str::trim).filter(|p| !p.is_empty()))
    }
}

impl fmt::Display for AccessList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, cidr) in self.cidrs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{cidr}")?;
        }
        Ok(())
    }
}

/// What to do with a query from a source the [`AccessList`] does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Denied {
    /// Answer REFUSED (the question echoed, no records). Well-behaved
    /// clients stop and report the error instead of timing out.
    #[default]
    Refuse,
    /// Send nothing. Spoofed sources get no reflected traffic at all.
    Drop,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Denied::Refuse => "refuse",
            Denied::Drop => "drop",
        })
    }
}

impl FromStr for Denied {
    type Err = String;
    fn from_str(s: &str) -> Result<Denied, String> {
        match s.trim() {
            "refuse" => Ok(Denied::Refuse),
            "drop" => Ok(Denied::Drop),
            other => Err(format!(
                "{other:?} is not a denied-query policy (refuse or drop)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_prefixes_and_bare_addresses() {
        assert_eq!(
            cidr("10.0.0.0/8"),
            Cidr::V4 {
                network: 0x0a00_0000,
                len: 8
            }
        );
        assert_eq!(cidr("127.0.0.1"), Cidr::new(ip("127.0.0.1"), 32).unwrap());
        assert_eq!(cidr(" fd00::/8 ").to_string(), "fd00::/8");
        assert_eq!(cidr("::1").to_string(), "::1/128");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::/0").to_string(), "::/0");
        // IPv4-mapped prefixes are held as IPv4.
        assert_eq!(cidr("::ffff:10.0.0.0/104"), cidr("10.0.0.0/8"));
        assert_eq!(cidr("::ffff:10.1.2.3"), cidr("10.1.2.3/32"));
    }

    #[test]
    fn rejects_bad_prefixes_with_clear_errors() {
        let err = |s: &str| s.parse::<Cidr>().unwrap_err().to_string();
        assert_eq!(
            err("10.0.0/8"),
            "\"10.0.0/8\" is not an address or prefix like 10.0.0.0/8, fd00::/8 or 127.0.0.1"
        );
        assert!(err("example.com").contains("not an address"));
        assert_eq!(
            err("10.0.0.0/33"),
            "\"10.0.0.0/33\": the prefix length must be a number from 0 to 32"
        );
        assert!(err("fd00::/129").contains("from 0 to 128"));
        assert!(err("10.0.0.0/").contains("prefix length"));
        assert!(err("10.0.0.0/+8").contains("prefix length"));
        assert!(err("10.0.0.0/x").contains("prefix length"));
        assert_eq!(
            err("10.0.0.1/8"),
            "\"10.0.0.1/8\" has bits set past the prefix length; did you mean 10.0.0.0/8?"
        );
        assert!(err("fd00::1/8").contains("did you mean fd00::/8?"));
    }

    #[test]
    fn allows_sources_inside_the_prefixes_only() {
        let list: AccessList = "10.0.0.0/8, fd00::/8, 127.0.0.1, 192.168.1.0/24"
            .parse()
            .unwrap();
        for ok in [
            "10.0.0.0",
            "10.255.255.255",
            "127.0.0.1",
            "192.168.1.77",
            "fd12:3456::1",
            "fdff:ffff::",
        ] {
            assert!(list.allows(ip(ok)), "{ok} should be allowed");
        }
        for denied in [
            "11.0.0.0",
            "9.255.255.255",
            "127.0.0.2",
            "192.168.2.1",
            "fe80::1",
            "::1",
            "2001:db8::1",
        ] {
            assert!(!list.allows(ip(denied)), "{denied} should be denied");
        }
    }

    #[test]
    fn ipv4_mapped_sources_compare_as_ipv4() {
        let list = AccessList::parse(["10.0.0.0/8"]).unwrap();
        assert!(list.allows(ip("::ffff:10.1.2.3")));
        assert!(!list.allows(ip("::ffff:11.1.2.3")));
        // And a mapped prefix in the list matches plain IPv4 sources.
        let mapped = AccessList::parse(["::ffff:192.0.2.0/120"]).unwrap();
        assert!(mapped.allows(ip("192.0.2.9")));
        assert!(mapped.allows(ip("::ffff:192.0.2.9")));
        assert!(!mapped.allows(ip("192.0.3.9")));
        // An IPv6 list does not match IPv4 sources by accident.
        let v6 = AccessList::parse(["::/0"]).unwrap();
        assert!(v6.allows(ip("2001:db8::1")));
        assert!(!v6.allows(ip("10.0.0.1")));
        assert!(!v6.allows(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn empty_list_allows_everything() {
        let list = AccessList::default();
        assert!(list.is_empty());
        assert!(list.allows(ip("203.0.113.1")));
        assert!(list.allows(ip("2001:db8::1")));
        let parsed: AccessList = "  ".parse().unwrap();
        assert!(parsed.is_empty());
    }

    #[test]
    fn zero_length_prefixes_match_their_whole_family() {
        let list = AccessList::parse(["0.0.0.0/0"]).unwrap();
        assert!(list.allows(ip("1.2.3.4")));
        assert!(!list.allows(ip("2001:db8::1")));
    }

    #[test]
    fn list_display_round_trips_and_dedups() {
        let list = AccessList::parse(["10.0.0.0/8", "fd00::/8", "10.0.0.0/8"]).unwrap();
        assert_eq!(list.cidrs().len(), 2);
        assert_eq!(list.to_string(), "10.0.0.0/8,fd00::/8");
        assert_eq!(list.to_string().parse::<AccessList>().unwrap(), list);
        let err = AccessList::parse(["10.0.0.0/8", "bogus"]).unwrap_err();
        assert!(err.to_string().contains("\"bogus\""));
    }

    #[test]
    fn serde_as_strings() {
        #[derive(Debug, Deserialize, Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct Opts {
            allow: Vec<Cidr>,
            denied: Denied,
        }
        let opts: Opts =
            toml::from_str("allow = [\"10.0.0.0/8\", \"::1\"]\ndenied = \"drop\"\n").unwrap();
        assert_eq!(opts.allow, vec![cidr("10.0.0.0/8"), cidr("::1/128")]);
        assert_eq!(opts.denied, Denied::Drop);
        let text = toml::to_string(&opts).unwrap();
        assert!(text.contains("\"::1/128\""), "{text}");
        let bad = toml::from_str::<Opts>("allow = [\"10.0.0.1/8\"]\ndenied = \"drop\"\n");
        assert!(bad.unwrap_err().to_string().contains("did you mean"));
        let bad = toml::from_str::<Opts>("allow = []\ndenied = \"maybe\"\n");
        assert!(bad.is_err());
    }

    #[test]
    fn denied_policy_parses() {
        assert_eq!("refuse".parse::<Denied>().unwrap(), Denied::Refuse);
        assert_eq!("drop".parse::<Denied>().unwrap(), Denied::Drop);
        assert_eq!(Denied::default(), Denied::Refuse);
        assert!("ignore"
            .parse::<Denied>()
            .unwrap_err()
            .contains("refuse or drop"));
        assert_eq!(Denied::Drop.to_string(), "drop");
    }
}
