//! SIGHUP: re-read the configuration file and apply what can change while
//! serving.
//!
//! Served names, seeds, TTL, answer mode, SOA, the Alternator scheme and TLS
//! files, refresh and health settings take effect at once: a new zone and
//! snapshot are swapped in (each name keeps the nodes it served), then the
//! node tracker restarts with the new settings. The sources that may recurse
//! (`--forward-allow`) are swapped in too, for UDP and TCP alike. Workers
//! never stop answering: they read whichever snapshot is current. Settings
//! bound to sockets, threads or privileges (listen addresses, CPUs, I/O
//! backend, metrics address, user, TCP limits, the forwarding upstreams and
//! their limits, access list, rate limit, logging) need a restart: a changed
//! one is reported and the running value kept. A file that does not load, or
//! does not validate, changes nothing.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use tracing::warn;

use crate::config::{Config, ConfigError, Options};
use crate::dns::{Zone, ZoneError};
use crate::metrics::Metrics;
use crate::nodes::client::{AlternatorClient, ClientError};
use crate::nodes::tracker::TrackerSettings;
use crate::nodes::{Basis, SharedSnapshot, Snapshot};

/// Where the configuration is re-read from: the file, and the command-line
/// flags that still override it.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    pub path: PathBuf,
    pub flags: Options,
}

/// Why a reload changed nothing.
#[derive(Debug, Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Zone(#[from] ZoneError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("no --seed could be resolved ({0})")]
    NoSeeds(String),
}

/// What a successful reload hands back for the tracker's restart.
pub struct Applied {
    pub config: Config,
    pub tracker: TrackerSettings,
    pub client: AlternatorClient,
}

/// Loads and checks the file; on success swaps in a snapshot with the new
/// zone and returns what the tracker must restart with.
pub fn apply(
    source: &ReloadSource,
    running: &Config,
    published: &SharedSnapshot,
    metrics: &Arc<Metrics>,
) -> Result<Applied, ReloadError> {
    let mut config = Config::load(Some(&source.path), &source.flags)?;
    keep_restart_only(running, &mut config);
    let (seeds, failures) = config.resolve_seeds();
    for failure in &failures {
        warn!(seed = %failure, "--seed not resolved; ignoring it");
    }
    if seeds.is_empty() {
        return Err(ReloadError::NoSeeds(failures.join("; ")));
    }
    let (extra, _) = config.name_rules();
    let zone = Arc::new(Zone::new(&config.zone)?.with_names(&extra)?);
    let client = AlternatorClient::new(config.client_scheme(), &config.tls)?;
    let tracker = config.tracker_settings(seeds, Arc::clone(metrics));

    let current = published.load();
    // Each name keeps what it served; a new name starts with the apex's.
    let old: Vec<usize> = (0..zone.name_count())
        .map(|i| {
            let name = zone.name_text(i);
            (0..current.zone.name_count())
                .find(|&j| current.zone.name_text(j) == name)
                .unwrap_or(0)
        })
        .collect();
    let sets: Vec<Vec<IpAddr>> = old
        .iter()
        .map(|&j| current.set_nodes(j).collect())
        .collect();
    let bases: Vec<Basis> = old.iter().map(|&j| current.basis(j)).collect();
    let snapshot =
        Snapshot::with_sets(current.generation + 1, zone, current.source, &sets).with_bases(&bases);
    published.store(Arc::new(snapshot));
    Ok(Applied {
        config,
        tracker,
        client,
    })
}

/// Puts back the running value of every setting that needs a restart, and
/// says which ones the file changed.
fn keep_restart_only(running: &Config, new: &mut Config) {
    macro_rules! keep {
        ($($field:ident).+, $name:literal) => {
            if new.$($field).+ != running.$($field).+ {
                warn!(setting = $name, "changed in the file, but needs a restart; keeping the running value");
                new.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    keep!(listen, "listen");
    keep!(cpus, "threads/cpus");
    keep!(io, "io");
    keep!(metrics_listen, "metrics-listen");
    keep!(user, "user");
    keep!(tcp, "tcp-idle-timeout/tcp-max-connections");
    keep!(forward, "forward");
    keep!(zone.forwarding, "forward");
    keep!(access, "allow");
    keep!(denied, "denied");
    keep!(rate_limit, "rate-limit");
    keep!(log_format, "log-format");
    keep!(log_level, "log-level");
}
