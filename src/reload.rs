//! SIGHUP: re-read the configuration file and apply what can change while
//! serving.
//!
//! Served names, seeds, TTL, answer mode, SOA, the Alternator scheme and TLS
//! files, refresh and health settings take effect at once: this module loads
//! and checks them, and the node tracker, the only writer of the snapshot,
//! applies them ([`Reload`](crate::nodes::driver::Reload)): a snapshot of the new zone in which
//! each name keeps the nodes it served, then the new rules; it rejects a
//! configuration that would leave a served name with no node (every node it
//! could serve excluded). The access list, the denied policy, the sources
//! that may recurse and the rate limit ([`Policy`](crate::policy::Policy))
//! are swapped in too, for UDP and TCP alike. Workers never stop answering:
//! they read whichever snapshot and rules are current. Settings bound to
//! sockets, threads or privileges (listen addresses, CPUs, I/O backend,
//! metrics address, user, TCP limits, the forwarding upstreams and their
//! limits, logging) need a restart: a changed one is reported and the
//! running value kept. A file that does not load, or does not validate,
//! changes nothing.

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use tracing::warn;

use crate::config::{Config, ConfigError, Options};
use crate::dns::Zone;
use crate::metrics::Metrics;
use crate::nodes::client::AlternatorClient;
use crate::nodes::tracker::TrackerSettings;
use crate::plan::{Nodes, PlanError};
use crate::rrl::RateLimiter;

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
    Plan(#[from] PlanError),
}

/// What a successful reload hands back: the new configuration, and what the
/// tracker applies.
pub struct Loaded {
    pub config: Config,
    pub zone: Arc<Zone>,
    pub tracker: TrackerSettings,
    pub client: AlternatorClient,
}

/// Loads and checks the file, and builds what the running server needs of it
/// through the same assembly as a start ([`Nodes::build`]).
pub fn load(
    source: &ReloadSource,
    running: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Loaded, ReloadError> {
    let mut config = Config::load(Some(&source.path), &source.flags)?;
    if config.listen != running.listen {
        // What derives from the listen addresses (the default --ns) must
        // follow the sockets actually bound, which a reload keeps: load the
        // file again with them.
        warn_restart_only("listen");
        let flags = Options {
            listen: running.listen.clone(),
            ..source.flags.clone()
        };
        config = Config::load(Some(&source.path), &flags)?;
    }
    for setting in config.keep_restart_only(running) {
        warn_restart_only(setting);
    }
    if let Some(rate_limit) = &config.rate_limit {
        RateLimiter::new(&rate_limit.per_worker(config.cpus.len())).map_err(PlanError::from)?;
    }
    let nodes = Nodes::build(&config)?;
    for failure in &nodes.unresolved {
        warn!(seed = %failure, "--seed not resolved; ignoring it");
    }
    let tracker = nodes.tracker_settings(&config, Arc::clone(metrics));
    Ok(Loaded {
        config,
        zone: nodes.zone,
        tracker,
        client: nodes.client,
    })
}

fn warn_restart_only(setting: &str) {
    warn!(
        setting,
        "changed in the file, but needs a restart; keeping the running value"
    );
}
