//! The values options take, each parsed from the same text whether it comes
//! from a flag or from the file, and written back in that form by `--check`
//! (so the printed configuration loads again).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::access::Cidr;
use crate::dns::AnswerMode;

/// How the Alternator API is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    Http,
    Https,
}

/// A served name and the nodes it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NameSpec {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// When its list is empty: a rack falls back to its datacenter, a
    /// datacenter to the default list [default: true].
    #[serde(default = "yes")]
    pub fallback: bool,
    /// Whether it answers each client from the client's own location
    /// (`--affinity` for this name; TOML only) [default: false, or
    /// --affinity for the domain itself].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<bool>,
}

fn yes() -> bool {
    true
}

impl FromStr for NameSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("--name {s:?}: expected NAME=DC or NAME=DC/RACK");
        let (name, location) = s.split_once('=').ok_or_else(bad)?;
        let (dc, rack) = match location.split_once('/') {
            Some((dc, rack)) => (dc, Some(rack)),
            None => (location, None),
        };
        let text = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_string());
        let spec = NameSpec {
            name: name.trim().to_string(),
            dc: text(dc),
            rack: rack.and_then(text),
            fallback: true,
            affinity: None,
        };
        if spec.name.is_empty() || (spec.dc.is_none() && spec.rack.is_none()) {
            return Err(bad());
        }
        Ok(spec)
    }
}

impl<'de> Deserialize<'de> for NameSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The `[[name]]` table; a plain struct so that serde's errors name
        /// an unknown or missing key.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            name: String,
            dc: Option<String>,
            rack: Option<String>,
            #[serde(default = "yes")]
            fallback: bool,
            affinity: Option<bool>,
        }
        let t = Table::deserialize(d)?;
        Ok(NameSpec {
            name: t.name,
            dc: t.dc.filter(|v| !v.is_empty()),
            rack: t.rack.filter(|v| !v.is_empty()),
            fallback: t.fallback,
            affinity: t.affinity,
        })
    }
}

/// Networks whose clients are in one datacenter (and rack), for
/// `--affinity`: `--location CIDR=DC[/RACK]`, or a `[[location]]` table
/// with a list of prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocationSpec {
    pub cidr: Vec<Cidr>,
    pub dc: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

impl LocationSpec {
    /// The location as `DC` or `DC/RACK`.
    pub fn place(&self) -> String {
        match &self.rack {
            Some(rack) => format!("{}/{rack}", self.dc),
            None => self.dc.clone(),
        }
    }
}

impl FromStr for LocationSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "--location {s:?}: expected CIDR=DC or CIDR=DC/RACK, e.g. 10.1.0.0/16=dc1/rack1"
            )
        };
        let (cidr, location) = s.split_once('=').ok_or_else(bad)?;
        let cidr: Cidr = cidr.parse().map_err(|e| format!("--location {s:?}: {e}"))?;
        let (dc, rack) = match location.split_once('/') {
            Some((dc, rack)) => (dc.trim(), Some(rack.trim())),
            None => (location.trim(), None),
        };
        if dc.is_empty() || rack.is_some_and(str::is_empty) {
            return Err(bad());
        }
        Ok(LocationSpec {
            cidr: vec![cidr],
            dc: dc.to_string(),
            rack: rack.map(String::from),
        })
    }
}

impl<'de> Deserialize<'de> for LocationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// One prefix, or a list of them.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Prefixes {
            One(Cidr),
            Many(Vec<Cidr>),
        }
        /// The `[[location]]` table; a plain struct so that serde's errors
        /// name an unknown or missing key.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            cidr: Prefixes,
            dc: String,
            rack: Option<String>,
        }
        let t = Table::deserialize(d)?;
        let cidr = match t.cidr {
            Prefixes::One(one) => vec![one],
            Prefixes::Many(many) => many,
        };
        let dc = t.dc.trim().to_string();
        let rack = t.rack.map(|r| r.trim().to_string());
        if cidr.is_empty() || dc.is_empty() || rack.as_deref() == Some("") {
            return Err(serde::de::Error::custom(
                "a [[location]] needs cidr (one or more prefixes) and a non-empty dc \
                 (and rack, if given)",
            ));
        }
        Ok(LocationSpec { cidr, dc, rack })
    }
}

/// Which UDP backend the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoMode {
    #[default]
    Auto,
    Uring,
    Mmsg,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A duration written as `1s`, `500ms`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| format!("{s:?} is not a duration like 1s or 500ms: {e}"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A CPU list such as `0`, `2-5,8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

impl FromStr for CpuList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut cpus = Vec::new();
        for part in s.split(',').map(str::trim) {
            let bad =
                || format!("{part:?} in CPU list {s:?} is not a CPU number or range like 2-5");
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (lo.trim(), hi.trim()),
                None => (part, part),
            };
            let lo: usize = lo.parse().map_err(|_| bad())?;
            let hi: usize = hi.parse().map_err(|_| bad())?;
            if lo > hi || hi >= 4096 {
                return Err(bad());
            }
            for cpu in lo..=hi {
                if cpus.contains(&cpu) {
                    return Err(format!("CPU {cpu} appears twice in CPU list {s:?}"));
                }
                cpus.push(cpu);
            }
        }
        Ok(CpuList(cpus))
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(usize::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

impl<'de> Deserialize<'de> for CpuList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for CpuList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A seed as written: a host (name or literal) and maybe a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub host: String,
    pub port: Option<u16>,
}

impl FromStr for Seed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = |why: &str| format!("--seed {s:?}: {why}");
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("missing ']' after an IPv6 address"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address inside [ ]"))?;
            let port = match after {
                "" => None,
                p => Some(
                    parse_port(
                        p.strip_prefix(':')
                            .ok_or_else(|| bad("expected :PORT after ]"))?,
                    )
                    .map_err(|e| bad(&e))?,
                ),
            };
            return Ok(Seed {
                host: host.to_string(),
                port,
            });
        }
        if s.parse::<IpAddr>().is_ok() {
            return Ok(Seed {
                host: s.to_string(),
                port: None,
            });
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => Ok(Seed {
                host: host.to_string(),
                port: Some(parse_port(port).map_err(|e| bad(&e))?),
            }),
            Some(_) => Err(bad("not an address; write IPv6 with a port as [ADDR]:PORT")),
            None => Ok(Seed {
                host: s.to_string(),
                port: None,
            }),
        }
    }
}

impl fmt::Display for Seed {
    /// The form its `FromStr` reads back: an IPv6 address with a port
    /// goes in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.host.contains(':')) {
            (Some(port), true) => write!(f, "[{}]:{port}", self.host),
            (Some(port), false) => write!(f, "{}:{port}", self.host),
            (None, _) => f.write_str(&self.host),
        }
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{p:?} is not a port number (1-65535)")),
        Ok(port) => Ok(port),
    }
}

impl Serialize for AnswerMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AnswerMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}
