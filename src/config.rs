//! Configuration: command-line flags, an optional TOML file, and the checked
//! effective configuration the server runs with.
//!
//! Every option is both a flag and a TOML key of the same name (`--refresh-interval`
//! is `refresh-interval = "1s"`); flags override the file, and unknown keys in the
//! file are an error that names the key. Validation happens here, once, so the
//! rest of the program only sees values that make sense.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::access::{AccessList, Denied};
use crate::dns::zone::{
    DEFAULT_EDNS_UDP_SIZE, DEFAULT_SOA_EXPIRE, DEFAULT_SOA_MINIMUM, DEFAULT_SOA_REFRESH,
    DEFAULT_SOA_RETRY, DEFAULT_SOA_TTL, DEFAULT_TTL,
};
use crate::dns::{AnswerMode, Zone, ZoneError, ZoneSettings};
use crate::forward::ForwardSettings;
use crate::metrics::Metrics;
use crate::nodes::client::{Scheme as ClientScheme, TlsSettings};
use crate::nodes::membership::{NameRule, Selector};
use crate::nodes::refresher::RefreshSettings;
use crate::nodes::tracker::{HealthSettings, TrackerSettings};
use crate::rrl::RrlSettings;
use crate::tcp::TcpSettings;

const DEFAULT_LISTEN: &str = "0.0.0.0:53";
const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9153";
const DEFAULT_ALTERNATOR_PORT: u16 = 8000;
const DEFAULT_ALTERNATOR_HTTPS_PORT: u16 = 8043;
const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_REFRESH_TIMEOUT: Duration = Duration::from_secs(1);

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "alternator-dns",
    version,
    about = "DNS load balancer for ScyllaDB Alternator",
    long_about = "DNS load balancer for ScyllaDB Alternator.\n\n\
        Answers queries for one name with the address of a live Alternator node chosen at \
        random (TTL 4 s by default), so that DynamoDB clients that know one endpoint spread \
        over the whole cluster. The live nodes are learnt by polling Alternator's \
        `GET /localnodes` in the background.\n\n\
        Every option can also be set in a TOML file given with --config, under the same \
        name without the dashes in front (e.g. `refresh-interval = \"1s\"`, \
        `seed = [\"10.0.0.1\"]`); flags override the file.\n\n\
        Example: alternator-dns --domain alternator.example.com --seed 10.0.0.1 --listen 0.0.0.0:53 \
        --ns ns1.alternator.example.com=10.0.0.53",
    after_help = crate::exit::HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub options: Options,

    /// Read options from this TOML file (flags given as well override it).
    #[arg(long, value_name = "FILE", global = false)]
    pub config: Option<PathBuf>,

    /// Load and check everything start-up loads (seeds resolved, TLS files read,
    /// --user looked up, io_uring probed with --io uring), print the effective configuration as
    /// TOML, and exit: 0 if the server would start (short of binding its
    /// addresses), else the exit status of the real start, with the reason.
    #[arg(long)]
    pub check: bool,
}

/// The options shared by the command line and the TOML file.
#[derive(Debug, Default, Clone, Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// Address to answer DNS on, UDP and TCP (repeatable) [default: 0.0.0.0:53]
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<SocketAddr>,

    /// The name served, which is also the zone apex (required), e.g. alternator.example.com
    #[arg(long, value_name = "NAME")]
    pub domain: Option<String>,

    /// An Alternator node known at start, as IP, IP:PORT, [IPv6]:PORT or HOST[:PORT]
    /// (repeatable; at least one). Hostnames are resolved at start.
    #[arg(long, value_name = "HOST[:PORT]")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seed: Vec<String>,

    /// A further name to serve, below --domain, with the nodes of one datacenter or rack:
    /// NAME=DC or NAME=DC/RACK, e.g. dc2.alternator.example.com=dc2 (repeatable; in the
    /// config file, [[name]] tables with name, dc, rack and fallback keys)
    #[arg(long = "name", value_name = "NAME=DC[/RACK]")]
    #[serde(default, rename = "name", skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<NameSpec>,

    /// Port of the nodes' Alternator API [default: 8000 for http, 8043 for https]
    #[arg(long, value_name = "PORT")]
    pub alternator_port: Option<u16>,

    /// Scheme of the Alternator API [default: http]
    #[arg(long, value_name = "SCHEME")]
    pub alternator_scheme: Option<Scheme>,

    /// With https: PEM file of the CA certificates that sign the nodes' certificates
    /// [default: the system's trusted roots]
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// With https: PEM certificate chain presented to nodes that require client
    /// certificates (Alternator's require_client_auth); needs --client-key
    #[arg(long, value_name = "FILE")]
    pub client_cert: Option<PathBuf>,

    /// With https: PEM private key of --client-cert
    #[arg(long, value_name = "FILE")]
    pub client_key: Option<PathBuf>,

    /// With https: verify every node's certificate against this DNS name instead of
    /// the node's IP address (for clusters sharing one certificate)
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// With https: accept any server certificate. Insecure (a man in the middle can
    /// feed a false node list); logged as a warning at start [default: false]
    #[arg(long, value_name = "BOOL")]
    pub tls_insecure_skip_verify: Option<bool>,

    /// Probe each listed node's `GET /` and serve only nodes that pass [default: true]
    #[arg(long, value_name = "BOOL")]
    pub health_check: Option<bool>,

    /// How often each node is probed [default: 500ms]
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<HumanDuration>,

    /// Timeout of one probe [default: 300ms]
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<HumanDuration>,

    /// Failed probes in a row that take a node out of the answers [default: 2]
    #[arg(long, value_name = "N")]
    pub health_failures: Option<u32>,

    /// TTL of the A/AAAA answers, in seconds. Behind caching resolvers 0 balances best:
    /// each lookup then gets its own random node (README: "Deploying behind resolvers")
    /// [default: 4]
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u32>,

    /// Nodes per answer: 1 (one random node, as Amazon does), N (N distinct random nodes,
    /// at most 64), or `all` (every node, rotated by a random offset) [default: 1]
    #[arg(long, value_name = "N|all")]
    pub answers: Option<AnswerMode>,

    /// How often to poll /localnodes, e.g. 1s, 500ms [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub refresh_interval: Option<HumanDuration>,

    /// Timeout of one /localnodes request [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub refresh_timeout: Option<HumanDuration>,

    /// Number of UDP worker threads [default: one per CPU this process may run on,
    /// or one per CPU in --cpus]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// CPUs to pin the workers to, e.g. `2-5,8`: worker i runs on the i-th CPU listed
    /// [default: the CPUs this process may run on]
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<CpuList>,

    /// UDP I/O backend: `uring` (io_uring), `mmsg` (recvmmsg/sendmmsg), or `auto` (the
    /// one measured cheapest per query at every load: mmsg, on Linux 6.18) [default: auto]
    #[arg(long, value_name = "BACKEND")]
    pub io: Option<IoMode>,

    /// Answers to queries without the RD bit, which come from resolvers iterating
    /// from a delegation: 1, N or `all`, as --answers. A resolver caches one answer
    /// for all its clients and may rotate it for each; see the README's "Deploying
    /// behind resolvers" [default: as --answers]
    #[arg(long, value_name = "N|all")]
    pub resolver_answers: Option<AnswerMode>,

    /// A name server published at the apex, as NAME, or NAME=ADDR[,ADDR] for one
    /// inside the zone, whose addresses are then answered and added to NS answers
    /// (repeatable; give the same list to every instance serving the zone)
    /// [default: ns1.<domain> at the --listen addresses; required when one of them
    /// is 0.0.0.0 or ::]
    #[arg(long, value_name = "NAME[=ADDR,...]")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ns: Vec<String>,

    /// SOA MNAME (primary server) [default: the first NS name]
    #[arg(long, value_name = "NAME")]
    pub soa_mname: Option<String>,

    /// SOA RNAME (responsible mailbox) [default: hostmaster.<domain>]
    #[arg(long, value_name = "NAME")]
    pub soa_rname: Option<String>,

    /// TTL of the SOA and NS records and of the name servers' addresses; negative
    /// answers carry the smaller of it and --soa-minimum [default: 60]
    #[arg(long, value_name = "SECONDS")]
    pub soa_ttl: Option<u32>,

    /// SOA REFRESH, in seconds (no zone is transferred; zone checkers want at
    /// least 14400) [default: 14400]
    #[arg(long, value_name = "SECONDS")]
    pub soa_refresh: Option<u32>,

    /// SOA RETRY, in seconds (checkers want 3600 or more, below REFRESH)
    /// [default: 3600]
    #[arg(long, value_name = "SECONDS")]
    pub soa_retry: Option<u32>,

    /// SOA EXPIRE, in seconds (checkers want a week or more, above REFRESH)
    /// [default: 1209600]
    #[arg(long, value_name = "SECONDS")]
    pub soa_expire: Option<u32>,

    /// SOA MINIMUM, in seconds: caps negative caching together with --soa-ttl
    /// (checkers want 300 to 86400) [default: 300]
    #[arg(long, value_name = "SECONDS")]
    pub soa_minimum: Option<u32>,

    /// UDP payload size advertised with EDNS(0), and the most a UDP reply may carry
    /// (512 to 4096) [default: 1232]
    #[arg(long, value_name = "BYTES")]
    pub edns_udp_size: Option<u16>,

    /// Close a TCP connection that sends no complete query for this long [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub tcp_idle_timeout: Option<HumanDuration>,

    /// TCP connections open at once per listen address; at the cap the connection
    /// idle for longest is closed to admit a new one [default: 1024]
    #[arg(long, value_name = "N")]
    pub tcp_max_connections: Option<usize>,

    /// Forward queries for names outside --domain to this resolver (repeatable, tried in
    /// turn; port 53 unless given) instead of answering REFUSED
    #[arg(long, value_name = "ADDR[:PORT]")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<String>,

    /// How long one upstream resolver gets to answer a forwarded query before the next
    /// is tried; when all fail the client gets SERVFAIL [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub forward_timeout: Option<HumanDuration>,

    /// Forwarded queries in progress at once; more get SERVFAIL [default: 1024]
    #[arg(long, value_name = "N")]
    pub forward_max_outstanding: Option<usize>,

    /// With --forward: forward only for sources in this network, e.g. 10.0.0.0/8
    /// (repeatable; a list replaces the default, so give 127.0.0.0/8 too to keep
    /// this machine). Other sources asking for names outside --domain get REFUSED,
    /// as without --forward. Takes effect on reload (SIGHUP)
    /// [default: 127.0.0.0/8 and ::1, this machine only]
    #[arg(long, value_name = "CIDR")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_allow: Vec<String>,

    /// Where to serve Prometheus metrics (/metrics) and health checks (/healthz,
    /// /readyz) over HTTP; an empty value turns it off [default: 127.0.0.1:9153]
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<String>,

    /// After binding the sockets (as root, for port 53), switch to this user and its
    /// group before serving
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Answer only sources in this network, e.g. 10.0.0.0/8 or fd00::/8 (repeatable;
    /// UDP and TCP) [default: every source]
    #[arg(long, value_name = "CIDR")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,

    /// What sources outside --allow get: `refuse` (REFUSED) or `drop` (no answer)
    /// [default: refuse]
    #[arg(long, value_name = "POLICY")]
    pub denied: Option<Denied>,

    /// Response rate limiting: answers per second to one source network (/24 for
    /// IPv4, /56 for IPv6), in the manner of BIND's and Knot's RRL; 0 turns it off.
    /// Meant for servers exposed beyond trusted clients [default: 0]
    #[arg(long, value_name = "PER_SECOND")]
    pub rate_limit: Option<u32>,

    /// With --rate-limit: every Nth response over the limit is sent truncated (TC=1)
    /// so that real clients retry over TCP; the others are dropped. 0 drops all,
    /// 1 truncates all [default: 2]
    #[arg(long, value_name = "N")]
    pub rate_limit_slip: Option<u32>,

    /// Log format: `text` or `json` (one JSON object per line) [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter: error, warn, info, debug, trace, or tracing directives [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

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
        }
        let t = Table::deserialize(d)?;
        Ok(NameSpec {
            name: t.name,
            dc: t.dc.filter(|v| !v.is_empty()),
            rack: t.rack.filter(|v| !v.is_empty()),
            fallback: t.fallback,
        })
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

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{p:?} is not a port number (1-65535)")),
        Ok(port) => Ok(port),
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("--config {}: cannot read it: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--config {}: {message}", .path.display())]
    Parse { path: PathBuf, message: String },
    #[error("--domain is required (the name to serve, e.g. --domain alternator.example.com)")]
    MissingDomain,
    #[error("at least one --seed is required (an Alternator node to learn the cluster from)")]
    MissingSeed,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Zone(#[from] ZoneError),
    #[error("no --seed could be resolved: {0}")]
    Unresolvable(String),
}

/// The effective, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub zone: ZoneSettings,
    pub seeds: Vec<Seed>,
    pub alternator_port: u16,
    pub alternator_scheme: Scheme,
    /// Further served names (the apex is `zone.domain`), checked against it.
    pub names: Vec<NameSpec>,
    pub tls: TlsSettings,
    pub health: HealthSettings,
    pub refresh_interval: Duration,
    pub refresh_timeout: Duration,
    /// Worker i is pinned to `cpus[i]`; one entry per worker.
    pub cpus: Vec<usize>,
    pub io: IoMode,
    pub tcp: TcpSettings,
    /// Forwarding of names outside the zone; None answers them REFUSED.
    pub forward: Option<ForwardSettings>,
    /// With forwarding: the sources whose queries for names outside the zone
    /// are forwarded; others get REFUSED. Never empty (loopback by default).
    pub forward_allow: AccessList,
    /// None: no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    pub user: Option<String>,
    /// Empty: every source is answered.
    pub access: AccessList,
    pub denied: Denied,
    /// Response rate limiting for the whole server; None when off.
    pub rate_limit: Option<RrlSettings>,
    pub log_format: LogFormat,
    pub log_level: String,
}

impl Config {
    /// Reads the file (if any), applies the flags over it, and validates the result.
    pub fn load(file: Option<&Path>, flags: &Options) -> Result<Config, ConfigError> {
        let from_file = match file {
            Some(path) => read_file(path)?,
            None => Options::default(),
        };
        Config::from_options(merge(from_file, flags.clone())?)
    }

    /// Validates merged options; `available_cpus` come from the process's affinity mask.
    pub fn from_options(o: Options) -> Result<Config, ConfigError> {
        let tls = tls_settings(&o, o.alternator_scheme.unwrap_or(Scheme::Http))?;
        let health = health_settings(&o)?;
        let domain = o.domain.ok_or(ConfigError::MissingDomain)?;
        if o.seed.is_empty() {
            return Err(ConfigError::MissingSeed);
        }
        let seeds = o
            .seed
            .iter()
            .map(|s| s.parse::<Seed>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::Invalid)?;
        let listen = if o.listen.is_empty() {
            vec![DEFAULT_LISTEN
                .parse()
                .expect("the default listen address is valid")]
        } else {
            o.listen
        };
        let refresh_interval = o.refresh_interval.map_or(DEFAULT_REFRESH_INTERVAL, |d| d.0);
        let refresh_timeout = o.refresh_timeout.map_or(DEFAULT_REFRESH_TIMEOUT, |d| d.0);
        // Intervals this short are for benchmarks of membership churn.
        if refresh_interval < Duration::from_millis(1)
            || refresh_timeout < Duration::from_millis(10)
        {
            return Err(ConfigError::Invalid(
                "--refresh-interval must be at least 1ms and --refresh-timeout at least 10ms"
                    .into(),
            ));
        }
        let alternator_scheme = o.alternator_scheme.unwrap_or(Scheme::Http);
        let alternator_port = o.alternator_port.unwrap_or(match alternator_scheme {
            Scheme::Http => DEFAULT_ALTERNATOR_PORT,
            Scheme::Https => DEFAULT_ALTERNATOR_HTTPS_PORT,
        });
        if alternator_port == 0 {
            return Err(ConfigError::Invalid(
                "--alternator-port must not be 0".into(),
            ));
        }
        let forward = forward_settings(&o.forward, o.forward_timeout, o.forward_max_outstanding)?;
        let forward_allow = forward_allow(forward.is_some(), &o.forward_allow)?;
        let ns = match o.ns.is_empty() {
            true => default_ns(&domain, &listen)?,
            false => o.ns,
        };
        let zone = ZoneSettings {
            domain,
            ttl: o.ttl.unwrap_or(DEFAULT_TTL),
            answers: o.answers.unwrap_or_default(),
            resolver_answers: o.resolver_answers,
            ns,
            soa_mname: o.soa_mname,
            soa_rname: o.soa_rname,
            soa_ttl: o.soa_ttl.unwrap_or(DEFAULT_SOA_TTL),
            soa_refresh: o.soa_refresh.unwrap_or(DEFAULT_SOA_REFRESH),
            soa_retry: o.soa_retry.unwrap_or(DEFAULT_SOA_RETRY),
            soa_expire: o.soa_expire.unwrap_or(DEFAULT_SOA_EXPIRE),
            soa_minimum: o.soa_minimum.unwrap_or(DEFAULT_SOA_MINIMUM),
            edns_udp_size: o.edns_udp_size.unwrap_or(DEFAULT_EDNS_UDP_SIZE),
            forwarding: forward.is_some(),
        };
        let (extra_names, _) = name_rules(&zone.domain, &o.names);
        Zone::new(&zone)?.with_names(&extra_names)?;
        let defaults = TcpSettings::default();
        let tcp = TcpSettings {
            idle_timeout: o.tcp_idle_timeout.map_or(defaults.idle_timeout, |d| d.0),
            max_connections: o.tcp_max_connections.unwrap_or(defaults.max_connections),
        };
        if tcp.max_connections == 0 || tcp.idle_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "--tcp-max-connections and --tcp-idle-timeout must be above 0".into(),
            ));
        }
        let metrics_listen = match o.metrics_listen.as_deref().map(str::trim) {
            None => Some(
                DEFAULT_METRICS_LISTEN
                    .parse()
                    .expect("the default metrics address is valid"),
            ),
            Some("") => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                ConfigError::Invalid(format!(
                    "--metrics-listen {text:?} is not ADDR:PORT (or empty to turn metrics off)"
                ))
            })?),
        };
        let access = AccessList::parse(&o.allow)
            .map_err(|e| ConfigError::Invalid(format!("--allow: {e}")))?;
        let rate_limit = match o.rate_limit.unwrap_or(0) {
            0 => None,
            rate => {
                let mut settings = RrlSettings::new(rate);
                if let Some(slip) = o.rate_limit_slip {
                    settings.slip = slip;
                }
                settings
                    .validate()
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
                Some(settings)
            }
        };
        let cpus = worker_cpus(o.threads, o.cpus.map(|c| c.0), &available_cpus())?;
        Ok(Config {
            listen,
            zone,
            seeds,
            alternator_port,
            alternator_scheme,
            names: o.names,
            tls,
            health,
            refresh_interval,
            refresh_timeout,
            cpus,
            io: o.io.unwrap_or_default(),
            tcp,
            forward,
            forward_allow,
            metrics_listen,
            user: o.user.filter(|u| !u.is_empty()),
            access,
            denied: o.denied.unwrap_or_default(),
            rate_limit,
            log_format: o.log_format.unwrap_or_default(),
            log_level: o.log_level.unwrap_or_else(|| "info".into()),
        })
    }

    /// Who may recurse, in words, for the start-up log and `--check`; None
    /// without forwarding.
    pub fn forwarding_summary(&self) -> Option<String> {
        let forward = self.forward.as_ref()?;
        let upstreams: Vec<String> = forward.upstreams.iter().map(ToString::to_string).collect();
        Some(format!(
            "names outside {} are forwarded to {} for sources in {} (--forward-allow); \
             other sources get REFUSED for them",
            self.zone.domain,
            upstreams.join(", "),
            self.forward_allow
        ))
    }

    /// The scheme as the Alternator client knows it.
    pub fn client_scheme(&self) -> ClientScheme {
        match self.alternator_scheme {
            Scheme::Http => ClientScheme::Http,
            Scheme::Https => ClientScheme::Https,
        }
    }

    /// What the node tracker runs with, given the resolved seeds.
    pub fn tracker_settings(
        &self,
        seeds: Vec<SocketAddr>,
        metrics: Arc<Metrics>,
    ) -> TrackerSettings {
        TrackerSettings {
            refresh: RefreshSettings {
                seeds,
                alternator_port: self.alternator_port,
                interval: self.refresh_interval,
                timeout: self.refresh_timeout,
            },
            health: self.health,
            names: self.name_rules().1,
            metrics,
        }
    }

    /// The further served names (below the apex), and one rule per served
    /// name in the zone's order: the apex first.
    pub fn name_rules(&self) -> (Vec<String>, Vec<NameRule>) {
        name_rules(&self.zone.domain, &self.names)
    }

    /// The seeds' socket addresses (hostnames resolved now), with a description
    /// of each seed that could not be resolved.
    pub fn resolve_seeds(&self) -> (Vec<SocketAddr>, Vec<String>) {
        let mut addrs = Vec::new();
        let mut failures = Vec::new();
        for seed in &self.seeds {
            let port = seed.port.unwrap_or(self.alternator_port);
            match (seed.host.as_str(), port).to_socket_addrs() {
                Ok(found) => {
                    for addr in found {
                        if !addrs.contains(&addr) {
                            addrs.push(addr);
                        }
                    }
                }
                Err(e) => failures.push(format!("{}: {e}", seed.host)),
            }
        }
        (addrs, failures)
    }

    /// The configuration as TOML that, given back with --config, means the same.
    pub fn to_toml(&self) -> String {
        let seeds = self
            .seeds
            .iter()
            .map(|s| match (s.port, s.host.contains(':')) {
                (Some(p), true) => format!("[{}]:{p}", s.host),
                (Some(p), false) => format!("{}:{p}", s.host),
                (None, _) => s.host.clone(),
            })
            .collect();
        let effective = Options {
            listen: self.listen.clone(),
            domain: Some(self.zone.domain.clone()),
            names: self.names.clone(),
            ca_file: self.tls.ca_file.clone(),
            client_cert: self.tls.client_cert.clone(),
            client_key: self.tls.client_key.clone(),
            tls_server_name: self.tls.server_name.clone(),
            tls_insecure_skip_verify: Some(self.tls.insecure_skip_verify),
            health_check: Some(self.health.enabled),
            health_interval: Some(HumanDuration(self.health.interval)),
            health_timeout: Some(HumanDuration(self.health.timeout)),
            health_failures: Some(self.health.failures),
            seed: seeds,
            alternator_port: Some(self.alternator_port),
            alternator_scheme: Some(self.alternator_scheme),
            ttl: Some(self.zone.ttl),
            answers: Some(self.zone.answers),
            resolver_answers: Some(self.zone.resolver_answers.unwrap_or(self.zone.answers)),
            refresh_interval: Some(HumanDuration(self.refresh_interval)),
            refresh_timeout: Some(HumanDuration(self.refresh_timeout)),
            threads: Some(self.cpus.len()),
            cpus: Some(CpuList(self.cpus.clone())),
            io: Some(self.io),
            ns: self.zone.ns.clone(),
            soa_mname: self.zone.soa_mname.clone(),
            soa_rname: self.zone.soa_rname.clone(),
            soa_ttl: Some(self.zone.soa_ttl),
            soa_refresh: Some(self.zone.soa_refresh),
            soa_retry: Some(self.zone.soa_retry),
            soa_expire: Some(self.zone.soa_expire),
            soa_minimum: Some(self.zone.soa_minimum),
            edns_udp_size: Some(self.zone.edns_udp_size),
            tcp_idle_timeout: Some(HumanDuration(self.tcp.idle_timeout)),
            tcp_max_connections: Some(self.tcp.max_connections),
            forward: self
                .forward
                .as_ref()
                .map(|f| f.upstreams.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            forward_timeout: self.forward.as_ref().map(|f| HumanDuration(f.timeout)),
            forward_max_outstanding: self.forward.as_ref().map(|f| f.max_outstanding),
            forward_allow: match self.forward {
                Some(_) => self
                    .forward_allow
                    .cidrs()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                None => Vec::new(),
            },
            metrics_listen: Some(
                self.metrics_listen
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            ),
            user: self.user.clone(),
            allow: self
                .access
                .cidrs()
                .iter()
                .map(ToString::to_string)
                .collect(),
            denied: Some(self.denied),
            rate_limit: Some(self.rate_limit.as_ref().map_or(0, |r| r.rate)),
            rate_limit_slip: self.rate_limit.as_ref().map(|r| r.slip),
            log_format: Some(self.log_format),
            log_level: Some(self.log_level.clone()),
        };
        toml::to_string(&effective).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
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

fn read_file(path: &Path) -> Result<Options, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Flags win over the file; a repeatable flag given at all replaces the file's list.
///
/// Done on the TOML form of both, where an option not given is absent (`None`
/// and empty lists are not serialised), so a new option needs no line here.
fn merge(file: Options, flags: Options) -> Result<Options, ConfigError> {
    let internal = |e: &dyn std::fmt::Display| {
        ConfigError::Invalid(format!("cannot merge the flags over the file: {e}"))
    };
    let mut merged = toml::Table::try_from(&file).map_err(|e| internal(&e))?;
    merged.extend(toml::Table::try_from(&flags).map_err(|e| internal(&e))?);
    merged.try_into().map_err(|e| internal(&e))
}

/// Splits the configured names into the further names (below the apex) and
/// the rule of every served name, the apex first (its own local datacenter
/// unless a `[[name]]` entry for the apex says otherwise).
fn name_rules(apex: &str, names: &[NameSpec]) -> (Vec<String>, Vec<NameRule>) {
    let canonical = |n: &str| n.trim().trim_end_matches('.').to_ascii_lowercase();
    let rule = |spec: &NameSpec| NameRule {
        selector: Selector {
            dc: spec.dc.clone(),
            rack: spec.rack.clone(),
        },
        fallback: spec.fallback,
    };
    let mut rules = vec![NameRule {
        selector: Selector::default(),
        fallback: true,
    }];
    let mut extra = Vec::new();
    for spec in names {
        if canonical(&spec.name) == canonical(apex) {
            rules[0] = rule(spec);
        } else {
            extra.push(spec.name.clone());
            rules.push(rule(spec));
        }
    }
    (extra, rules)
}

/// Checks the TLS options: only meaningful with https, and a client
/// certificate needs its key.
fn tls_settings(o: &Options, scheme: Scheme) -> Result<TlsSettings, ConfigError> {
    let tls = TlsSettings {
        ca_file: o.ca_file.clone(),
        client_cert: o.client_cert.clone(),
        client_key: o.client_key.clone(),
        insecure_skip_verify: o.tls_insecure_skip_verify.unwrap_or(false),
        server_name: o.tls_server_name.clone(),
    };
    if scheme == Scheme::Http && tls != TlsSettings::default() {
        return Err(ConfigError::Invalid(
            "--ca-file, --client-cert, --client-key, --tls-server-name and \
             --tls-insecure-skip-verify need --alternator-scheme https"
                .into(),
        ));
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), None) => {
            return Err(ConfigError::Invalid(format!(
                "--client-cert {} is given without --client-key: give both",
                cert.display()
            )))
        }
        (None, Some(key)) => {
            return Err(ConfigError::Invalid(format!(
                "--client-key {} is given without --client-cert: give both",
                key.display()
            )))
        }
        _ => {}
    }
    if let (true, Some(ca)) = (tls.insecure_skip_verify, &tls.ca_file) {
        return Err(ConfigError::Invalid(format!(
            "--tls-insecure-skip-verify true and --ca-file {} exclude each other: either the \
             nodes' certificates are verified against that CA, or not at all",
            ca.display()
        )));
    }
    Ok(tls)
}

fn health_settings(o: &Options) -> Result<HealthSettings, ConfigError> {
    let defaults = HealthSettings::default();
    let health = HealthSettings {
        enabled: o.health_check.unwrap_or(defaults.enabled),
        interval: o.health_interval.map_or(defaults.interval, |d| d.0),
        timeout: o.health_timeout.map_or(defaults.timeout, |d| d.0),
        failures: o.health_failures.unwrap_or(defaults.failures),
    };
    if health.interval < Duration::from_millis(10) || health.timeout < Duration::from_millis(10) {
        return Err(ConfigError::Invalid(
            "--health-interval and --health-timeout must be at least 10ms".into(),
        ));
    }
    if health.failures == 0 {
        return Err(ConfigError::Invalid(
            "--health-failures must be at least 1".into(),
        ));
    }
    Ok(health)
}

/// Checks `--forward` and its companions; None when no upstream is given.
fn forward_settings(
    upstreams: &[String],
    timeout: Option<HumanDuration>,
    max_outstanding: Option<usize>,
) -> Result<Option<ForwardSettings>, ConfigError> {
    if upstreams.is_empty() {
        return Ok(None);
    }
    let upstreams = upstreams
        .iter()
        .map(|u| {
            u.parse::<SocketAddr>()
                .or_else(|_| u.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    ConfigError::Invalid(format!(
                        "--forward {u:?} is not an IP address with an optional port \
                         (e.g. 127.0.0.53, 10.0.0.2:5353, [::1]:53)"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let settings = ForwardSettings {
        upstreams,
        timeout: timeout.map_or(Duration::from_secs(1), |d| d.0),
        max_outstanding: max_outstanding.unwrap_or(1024),
    };
    if settings.timeout < Duration::from_millis(10) || settings.max_outstanding == 0 {
        return Err(ConfigError::Invalid(
            "--forward-timeout must be at least 10ms and --forward-max-outstanding above 0".into(),
        ));
    }
    Ok(Some(settings))
}

/// Who may have names outside the zone forwarded: the list given, or this
/// machine (loopback). A list without `--forward` would do nothing, which is
/// surely not what was meant.
fn forward_allow(forwarding: bool, given: &[String]) -> Result<AccessList, ConfigError> {
    if given.is_empty() {
        return Ok(AccessList::loopback());
    }
    if !forwarding {
        return Err(ConfigError::Invalid(
            "--forward-allow needs --forward: it says which sources may have names outside \
             --domain forwarded"
                .into(),
        ));
    }
    AccessList::parse(given).map_err(|e| ConfigError::Invalid(format!("--forward-allow: {e}")))
}

/// The CPUs this process may run on (its affinity mask), in ascending order.
pub fn available_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    cpus.sort_unstable();
    if cpus.is_empty() {
        cpus.push(0);
    }
    cpus
}

/// Decides which CPU each worker is pinned to.
fn worker_cpus(
    threads: Option<usize>,
    listed: Option<Vec<usize>>,
    available: &[usize],
) -> Result<Vec<usize>, ConfigError> {
    if threads == Some(0) {
        return Err(ConfigError::Invalid("--threads must be at least 1".into()));
    }
    match listed {
        Some(cpus) => {
            if let Some(cpu) = cpus.iter().find(|c| !available.contains(c)) {
                return Err(ConfigError::Invalid(format!(
                    "CPU {cpu} in --cpus is not one this process may run on ({})",
                    CpuList(available.to_vec())
                )));
            }
            match threads {
                Some(n) if n > cpus.len() => Err(ConfigError::Invalid(format!(
                    "--threads {n} needs at least {n} CPUs in --cpus, which lists {}",
                    cpus.len()
                ))),
                Some(n) => Ok(cpus[..n].to_vec()),
                None => Ok(cpus),
            }
        }
        None => {
            let n = threads.unwrap_or(available.len());
            Ok((0..n).map(|i| available[i % available.len()]).collect())
        }
    }
}

/// Without --ns: `ns1.<domain>` at the listen addresses. A wildcard listen
/// address says nothing of the address resolvers reach us at, so then the
/// operator must say it.
fn default_ns(domain: &str, listen: &[SocketAddr]) -> Result<Vec<String>, ConfigError> {
    let name = format!("ns1.{}", domain.trim().trim_end_matches('.')).to_ascii_lowercase();
    if let Some(wildcard) = listen.iter().find(|a| a.ip().is_unspecified()) {
        return Err(ConfigError::Invalid(format!(
            "--ns is needed: the zone's name server defaults to {name} at the --listen \
             addresses, but --listen {wildcard} does not say which address resolvers reach \
             this server at. Give the name servers the parent zone delegates to, e.g. \
             --ns {name}=192.0.2.53 (the address of its glue record) or --ns ns1.example.net \
             for a server outside the zone"
        )));
    }
    let mut addrs: Vec<String> = Vec::new();
    for ip in listen.iter().map(|a| a.ip().to_string()) {
        if !addrs.contains(&ip) {
            addrs.push(ip);
        }
    }
    Ok(vec![format!("{name}={}", addrs.join(","))])
}

mod advice;

#[cfg(test)]
mod tests;
