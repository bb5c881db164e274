//! From the merged options to the checked [`Config`], one step per group of
//! options. Each step reads its options, fills in their defaults and writes
//! back the form it understood (a seed's brackets, a forwarder's port), and
//! returns the typed settings; what is left is the effective configuration
//! that `--check` prints, so a default is written once, where it is applied.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use super::{Config, ConfigError, CpuList, HumanDuration, NameSpec, Options, Scheme, Seed};
use crate::access::AccessList;
use crate::dns::zone::{
    DEFAULT_EDNS_UDP_SIZE, DEFAULT_SOA_EXPIRE, DEFAULT_SOA_MINIMUM, DEFAULT_SOA_REFRESH,
    DEFAULT_SOA_RETRY, DEFAULT_SOA_TTL, DEFAULT_TTL,
};
use crate::dns::{Zone, ZoneSettings};
use crate::forward::ForwardSettings;
use crate::nodes::client::TlsSettings;
use crate::nodes::health::{Damping, HealthSettings};
use crate::nodes::membership::{NameRule, Selector};
use crate::rrl::RrlSettings;
use crate::tcp::TcpSettings;

const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 53));
/// Where metrics, health checks and /nodes are served unless configured otherwise.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9153));
const DEFAULT_ALTERNATOR_PORT: u16 = 8000;
const DEFAULT_ALTERNATOR_HTTPS_PORT: u16 = 8043;
const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_REFRESH_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_FORWARD_MAX_OUTSTANDING: usize = 1024;
const DEFAULT_LOG_LEVEL: &str = "info";

impl Config {
    /// Validates merged options; the workers' CPUs come from the process's
    /// affinity mask.
    pub fn from_options(mut o: Options) -> Result<Config, ConfigError> {
        let alternator_scheme = *o.alternator_scheme.get_or_insert(Scheme::Http);
        let tls = tls_settings(&mut o, alternator_scheme)?;
        let health = health_settings(&mut o)?;
        let domain = o.domain.clone().ok_or(ConfigError::MissingDomain)?;
        let seeds = seeds(&mut o)?;
        let listen = o.listen_or_default().to_vec();
        let (refresh_interval, refresh_timeout) = refresh(&mut o)?;
        let alternator_port = alternator_port(&mut o, alternator_scheme)?;
        let forward = forward_settings(&mut o)?;
        let forward_allow = forward_allow(&mut o, forward.is_some())?;
        let zone = zone_settings(&mut o, domain, forward.is_some())?;
        let affinity = super::affinity::resolve(&mut o)?;
        let tcp = tcp_settings(&mut o)?;
        let metrics_listen = metrics_listen(&mut o)?;
        let access = access(&mut o)?;
        let rate_limit = rate_limit(&mut o)?;
        let cpus = worker_cpus(o.threads, o.cpus.take().map(|c| c.0), &available_cpus())?;
        o.threads = Some(cpus.len());
        o.cpus = Some(CpuList(cpus.clone()));
        o.user = o.user.take().filter(|u| !u.is_empty());
        Ok(Config {
            listen,
            zone,
            seeds,
            alternator_port,
            alternator_scheme,
            names: o.names.clone(),
            affinity,
            tls,
            health,
            exclude: o.exclude.iter().copied().collect(),
            refresh_interval,
            refresh_timeout,
            cpus,
            io: *o.io.get_or_insert_with(Default::default),
            tcp,
            forward,
            forward_allow,
            metrics_listen,
            user: o.user.clone(),
            access,
            denied: *o.denied.get_or_insert_with(Default::default),
            rate_limit,
            log_format: *o.log_format.get_or_insert_with(Default::default),
            log_level: o
                .log_level
                .get_or_insert_with(|| DEFAULT_LOG_LEVEL.into())
                .clone(),
            effective: o,
        })
    }
}

impl Options {
    /// The listen addresses, the default one filled in when none is given.
    fn listen_or_default(&mut self) -> &[SocketAddr] {
        if self.listen.is_empty() {
            self.listen.push(DEFAULT_LISTEN);
        }
        &self.listen
    }
}

/// Checks the TLS options: only meaningful with https, and a client
/// certificate needs its key.
fn tls_settings(o: &mut Options, scheme: Scheme) -> Result<TlsSettings, ConfigError> {
    let tls = TlsSettings {
        ca_file: o.ca_file.clone(),
        client_cert: o.client_cert.clone(),
        client_key: o.client_key.clone(),
        insecure_skip_verify: *o.tls_insecure_skip_verify.get_or_insert(false),
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

fn health_settings(o: &mut Options) -> Result<HealthSettings, ConfigError> {
    let defaults = HealthSettings::default();
    let health = HealthSettings {
        enabled: *o.health_check.get_or_insert(defaults.enabled),
        interval: o
            .health_interval
            .get_or_insert(HumanDuration(defaults.interval))
            .0,
        timeout: o
            .health_timeout
            .get_or_insert(HumanDuration(defaults.timeout))
            .0,
        failures: *o.health_failures.get_or_insert(defaults.failures),
        damping: Damping {
            limit: *o.health_flap_limit.get_or_insert(defaults.damping.limit),
            window: o
                .health_flap_window
                .get_or_insert(HumanDuration(defaults.damping.window))
                .0,
            passes: *o.health_flap_passes.get_or_insert(defaults.damping.passes),
        },
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
    if health.damping.passes == 0 {
        return Err(ConfigError::Invalid(
            "--health-flap-passes must be at least 1".into(),
        ));
    }
    if health.damping.limit > 0 && health.damping.window < health.interval {
        return Err(ConfigError::Invalid(format!(
            "--health-flap-window ({:?}) is shorter than --health-interval ({:?}): no node \
             could be taken out twice within it; give a longer window, or \
             --health-flap-limit 0 to turn damping off",
            health.damping.window, health.interval
        )));
    }
    Ok(health)
}

/// At least one seed, each in a form [`Seed`] reads; written back the way
/// it was read (trimmed, an IPv6 address with a port in brackets).
fn seeds(o: &mut Options) -> Result<Vec<Seed>, ConfigError> {
    if o.seed.is_empty() {
        return Err(ConfigError::MissingSeed);
    }
    let seeds = o
        .seed
        .iter()
        .map(|s| s.parse::<Seed>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(ConfigError::Invalid)?;
    o.seed = seeds.iter().map(Seed::to_string).collect();
    Ok(seeds)
}

/// How often /localnodes is polled, and how long one request may take.
fn refresh(o: &mut Options) -> Result<(Duration, Duration), ConfigError> {
    let interval = o
        .refresh_interval
        .get_or_insert(HumanDuration(DEFAULT_REFRESH_INTERVAL))
        .0;
    let timeout = o
        .refresh_timeout
        .get_or_insert(HumanDuration(DEFAULT_REFRESH_TIMEOUT))
        .0;
    // Intervals this short are for benchmarks of membership churn.
    if interval < Duration::from_millis(1) || timeout < Duration::from_millis(10) {
        return Err(ConfigError::Invalid(
            "--refresh-interval must be at least 1ms and --refresh-timeout at least 10ms".into(),
        ));
    }
    Ok((interval, timeout))
}

/// The Alternator port, whose default follows the scheme.
fn alternator_port(o: &mut Options, scheme: Scheme) -> Result<u16, ConfigError> {
    let port = *o.alternator_port.get_or_insert(match scheme {
        Scheme::Http => DEFAULT_ALTERNATOR_PORT,
        Scheme::Https => DEFAULT_ALTERNATOR_HTTPS_PORT,
    });
    if port == 0 {
        return Err(ConfigError::Invalid(
            "--alternator-port must not be 0".into(),
        ));
    }
    Ok(port)
}

/// Checks `--forward` and its companions; None when no upstream is given,
/// and then the companions are left out of the effective options, since
/// they mean nothing.
fn forward_settings(o: &mut Options) -> Result<Option<ForwardSettings>, ConfigError> {
    if o.forward.is_empty() {
        o.forward_timeout = None;
        o.forward_max_outstanding = None;
        return Ok(None);
    }
    let upstreams = o
        .forward
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
    o.forward = upstreams.iter().map(ToString::to_string).collect();
    let settings = ForwardSettings {
        upstreams,
        timeout: o
            .forward_timeout
            .get_or_insert(HumanDuration(DEFAULT_FORWARD_TIMEOUT))
            .0,
        max_outstanding: *o
            .forward_max_outstanding
            .get_or_insert(DEFAULT_FORWARD_MAX_OUTSTANDING),
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
fn forward_allow(o: &mut Options, forwarding: bool) -> Result<AccessList, ConfigError> {
    if !o.forward_allow.is_empty() && !forwarding {
        return Err(ConfigError::Invalid(
            "--forward-allow needs --forward: it says which sources may have names outside \
             --domain forwarded"
                .into(),
        ));
    }
    let allowed = match o.forward_allow.is_empty() {
        true => AccessList::loopback(),
        false => AccessList::parse(&o.forward_allow)
            .map_err(|e| ConfigError::Invalid(format!("--forward-allow: {e}")))?,
    };
    if forwarding {
        o.forward_allow = allowed.cidrs().iter().map(ToString::to_string).collect();
    }
    Ok(allowed)
}

/// The zone: the apex, its name servers (by default inside it, at the listen
/// addresses), TTLs and SOA timers; checked by building it with every name.
fn zone_settings(
    o: &mut Options,
    domain: String,
    forwarding: bool,
) -> Result<ZoneSettings, ConfigError> {
    if o.ns.is_empty() {
        o.ns = default_ns(&domain, o.listen_or_default())?;
    }
    let answers = *o.answers.get_or_insert_with(Default::default);
    // The zone tells "as --answers" from a value given; the effective
    // options say which that is.
    let resolver_answers = o.resolver_answers;
    o.resolver_answers = Some(resolver_answers.unwrap_or(answers));
    let zone = ZoneSettings {
        domain,
        ttl: *o.ttl.get_or_insert(DEFAULT_TTL),
        answers,
        resolver_answers,
        ns: o.ns.clone(),
        soa_mname: o.soa_mname.clone(),
        soa_rname: o.soa_rname.clone(),
        soa_ttl: *o.soa_ttl.get_or_insert(DEFAULT_SOA_TTL),
        soa_refresh: *o.soa_refresh.get_or_insert(DEFAULT_SOA_REFRESH),
        soa_retry: *o.soa_retry.get_or_insert(DEFAULT_SOA_RETRY),
        soa_expire: *o.soa_expire.get_or_insert(DEFAULT_SOA_EXPIRE),
        soa_minimum: *o.soa_minimum.get_or_insert(DEFAULT_SOA_MINIMUM),
        edns_udp_size: *o.edns_udp_size.get_or_insert(DEFAULT_EDNS_UDP_SIZE),
        forwarding,
    };
    // Built here only to be checked, so that every Config holds a zone that
    // builds; plan.rs builds the one that is served.
    let (extra_names, _) = name_rules(&zone.domain, &o.names, false);
    Zone::new(&zone)?.with_names(&extra_names)?;
    Ok(zone)
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

/// Splits the configured names into the further names (below the apex) and
/// the rule of every served name, the apex first (its own local datacenter
/// unless a `[[name]]` entry for the apex says otherwise). `affinity`
/// (`--affinity`) is the apex's unless its entry says otherwise; further
/// names place their clients only when their entry says so.
pub(super) fn name_rules(
    apex: &str,
    names: &[NameSpec],
    affinity: bool,
) -> (Vec<String>, Vec<NameRule>) {
    let canonical = |n: &str| n.trim().trim_end_matches('.').to_ascii_lowercase();
    let rule = |spec: &NameSpec, default_affinity: bool| NameRule {
        selector: Selector {
            dc: spec.dc.clone(),
            rack: spec.rack.clone(),
        },
        fallback: spec.fallback,
        affinity: spec.affinity.unwrap_or(default_affinity),
    };
    let mut rules = vec![NameRule {
        selector: Selector::default(),
        fallback: true,
        affinity,
    }];
    let mut extra = Vec::new();
    for spec in names {
        if canonical(&spec.name) == canonical(apex) {
            rules[0] = rule(spec, affinity);
        } else {
            extra.push(spec.name.clone());
            rules.push(rule(spec, false));
        }
    }
    (extra, rules)
}

fn tcp_settings(o: &mut Options) -> Result<TcpSettings, ConfigError> {
    let defaults = TcpSettings::default();
    let tcp = TcpSettings {
        idle_timeout: o
            .tcp_idle_timeout
            .get_or_insert(HumanDuration(defaults.idle_timeout))
            .0,
        max_connections: *o
            .tcp_max_connections
            .get_or_insert(defaults.max_connections),
    };
    if tcp.max_connections == 0 || tcp.idle_timeout.is_zero() {
        return Err(ConfigError::Invalid(
            "--tcp-max-connections and --tcp-idle-timeout must be above 0".into(),
        ));
    }
    Ok(tcp)
}

/// The metrics endpoint's address; an empty value turns it off (None), and
/// is what the effective options then say.
fn metrics_listen(o: &mut Options) -> Result<Option<SocketAddr>, ConfigError> {
    let addr = match o.metrics_listen.as_deref().map(str::trim) {
        None => Some(DEFAULT_METRICS_LISTEN),
        Some("") => None,
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
            ConfigError::Invalid(format!(
                "--metrics-listen {text:?} is not ADDR:PORT (or empty to turn metrics off)"
            ))
        })?),
    };
    o.metrics_listen = Some(addr.map(|a| a.to_string()).unwrap_or_default());
    Ok(addr)
}

/// The sources answered at all; empty lets every source in.
fn access(o: &mut Options) -> Result<AccessList, ConfigError> {
    let access =
        AccessList::parse(&o.allow).map_err(|e| ConfigError::Invalid(format!("--allow: {e}")))?;
    o.allow = access.cidrs().iter().map(ToString::to_string).collect();
    Ok(access)
}

/// Response rate limiting, None when the rate is 0; the slip means nothing
/// then and is left out.
fn rate_limit(o: &mut Options) -> Result<Option<RrlSettings>, ConfigError> {
    let rate = *o.rate_limit.get_or_insert(0);
    if rate == 0 {
        o.rate_limit_slip = None;
        return Ok(None);
    }
    let mut settings = RrlSettings::new(rate);
    if let Some(slip) = o.rate_limit_slip {
        settings.slip = slip;
    }
    settings
        .validate()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    o.rate_limit_slip = Some(settings.slip);
    Ok(Some(settings))
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
pub(super) fn worker_cpus(
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
