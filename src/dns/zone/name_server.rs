//! The zone's name servers: `--ns NAME[=ADDR,...]` parsed and checked
//! against the apex.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{parse_name, OwnedName, ZoneError};

/// A name server of the zone, as published at the apex. One inside the zone
/// carries its addresses, answered for its name and added to NS answers (as
/// glue is in the parent); one outside has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameServer {
    pub(crate) name: OwnedName,
    pub(crate) v4: Vec<Ipv4Addr>,
    pub(crate) v6: Vec<Ipv6Addr>,
}

impl NameServer {
    /// Parses `NAME` or `NAME=ADDR[,ADDR...]`.
    pub(super) fn parse(spec: &str, apex: &OwnedName) -> Result<NameServer, ZoneError> {
        let (name_text, addrs) = match spec.split_once('=') {
            Some((name, addrs)) => (name, Some(addrs)),
            None => (spec, None),
        };
        let name = parse_name("--ns name", name_text)?;
        let shown = || name_text.trim().trim_end_matches('.').to_ascii_lowercase();
        let mut ns = NameServer {
            name,
            v4: vec![],
            v6: vec![],
        };
        for text in addrs.into_iter().flat_map(|a| a.split(',')) {
            match text.trim().parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) if !ns.v4.contains(&ip) => ns.v4.push(ip),
                Ok(IpAddr::V6(ip)) if !ns.v6.contains(&ip) => ns.v6.push(ip),
                Ok(_) => {}
                Err(_) => {
                    return Err(ZoneError::BadNs {
                        spec: spec.to_string(),
                        reason: format!("{:?} is not an IP address", text.trim()),
                    })
                }
            }
        }
        let inside = ns.name.ends_with(apex);
        let addressed = !ns.v4.is_empty() || !ns.v6.is_empty();
        let apex = format!("{apex}");
        match (inside, addressed) {
            (true, false) => Err(ZoneError::NsWithoutAddress {
                name: shown(),
                apex,
            }),
            (false, true) => Err(ZoneError::NsAddressOutsideZone {
                name: shown(),
                apex,
            }),
            _ => Ok(ns),
        }
    }

    /// Whether it has addresses here (it is inside the zone).
    pub(super) fn in_zone(&self) -> bool {
        !self.v4.is_empty() || !self.v6.is_empty()
    }
}
