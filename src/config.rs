//! Configuration: command-line flags, an optional TOML file, and the checked
//! effective configuration the server runs with.
//!
//! Every option is both a flag and a TOML key of the same name (`--refresh-interval`
//! is `refresh-interval = "1s"`); flags override the file, and unknown keys in the
//! file are an error that names the key. Validation happens here, once, so the
//! rest of the program only sees values that make sense.
//!
//! - `options`: the flags and keys, one field each with its help text;
//! - `values`: the types options take (durations, CPU lists, seeds);
//! - `resolve`: defaults and checks, from merged options to [`Config`];
//! - `restart`: the settings a reload cannot change;
//! - `advice`: warnings about configurations that start but resolvers dislike.
//!
//! A new option is a field of [`Options`] (its doc is its help) and the line of
//! `resolve` that reads it, filling in its default; merging the flags over
//! the file and printing the effective configuration follow from its serde
//! form. If it needs a restart, it also gets a line in `restart`.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::access::{AccessList, Denied};
use crate::dns::{ZoneError, ZoneSettings};
use crate::forward::ForwardSettings;
use crate::metrics::Metrics;
use crate::nodes::client::{Scheme as ClientScheme, TlsSettings};
use crate::nodes::membership::NameRule;
use crate::nodes::refresher::RefreshSettings;
use crate::nodes::tracker::{HealthSettings, TrackerSettings};
use crate::rrl::RrlSettings;
use crate::tcp::TcpSettings;

mod advice;
mod affinity;
mod options;
mod resolve;
mod restart;
mod values;

pub use affinity::AffinitySettings;
pub use options::{Cli, Command, Options, StatusArgs};
pub use resolve::available_cpus;
pub use resolve::DEFAULT_METRICS_LISTEN;
pub use values::{CpuList, HumanDuration, IoMode, LocationSpec, LogFormat, NameSpec, Scheme, Seed};

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
    /// Zone-local answers: where clients are, and which names place them.
    pub affinity: AffinitySettings,
    pub tls: TlsSettings,
    pub health: HealthSettings,
    /// Nodes never served.
    pub exclude: BTreeSet<IpAddr>,
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
    /// The options this configuration was built from, every default filled
    /// in and every value in the form it was read as: what [`Config::to_toml`]
    /// prints, and what a reload compares. A reload puts back the running
    /// restart-only options here along with the settings they set.
    effective: Options,
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
        let (_, names) = self.name_rules();
        TrackerSettings {
            refresh: RefreshSettings {
                seeds,
                alternator_port: self.alternator_port,
                interval: self.refresh_interval,
                timeout: self.refresh_timeout,
            },
            health: self.health,
            exclude: self.exclude.clone(),
            locations: self.affinity.targets(&names),
            names,
            metrics,
        }
    }

    /// The further served names (below the apex), and one rule per served
    /// name in the zone's order: the apex first.
    pub fn name_rules(&self) -> (Vec<String>, Vec<NameRule>) {
        resolve::name_rules(&self.zone.domain, &self.names, self.affinity.domain)
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

    /// The configuration as TOML that, given back with --config, means the
    /// same: every option, defaults included, in the form it was read as.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.effective).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
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

#[cfg(test)]
mod tests;
