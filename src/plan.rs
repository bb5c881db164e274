//! From a checked configuration to what the server runs: the one assembly
//! point.
//!
//! Start-up ([`server::run`](crate::server::run)), `--check` and SIGHUP
//! ([`reload`](crate::reload)) all build through here, so a configuration
//! that `--check` accepts starts (short of an address that cannot be bound),
//! and a reload is held to what a start would be. Everything that reads a
//! file or asks the system happens here, once: seeds resolved, the zone
//! built, every TLS file read and checked, io_uring probed, `--user` looked
//! up. Nothing here logs; the caller says what it wants of it.

use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;

use crate::config::{Config, IoMode};
use crate::dns::{Zone, ZoneError};
use crate::io::{self, Backend, IoError};
use crate::metrics::Metrics;
use crate::nodes::client::{AlternatorClient, ClientError};
use crate::nodes::tracker::TrackerSettings;
use crate::privileges::{self, PrivilegeError, User};
use crate::rrl::{RateLimiter, RrlError};

/// Why a configuration cannot be run.
#[derive(Debug, Error)]
pub enum PlanError {
    #[error(transparent)]
    Zone(#[from] ZoneError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("no --seed could be resolved ({0})")]
    NoSeeds(String),
    #[error("--io uring: io_uring cannot be used here: {0}")]
    UringUnavailable(IoError),
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error(transparent)]
    RateLimit(#[from] RrlError),
}

impl PlanError {
    /// Whether the configuration is at fault, rather than the system that
    /// could not be asked (a user database that cannot be read): the exit
    /// status differs, see [`crate::exit`].
    pub fn is_configuration(&self) -> bool {
        match self {
            PlanError::Privileges(e) => e.is_configuration(),
            _ => true,
        }
    }
}

/// What the node tracker runs on: the part of a plan a reload rebuilds.
pub struct Nodes {
    /// The seeds, resolved, with their ports.
    pub seeds: Vec<SocketAddr>,
    /// Seeds that did not resolve, each with why (the others are used).
    pub unresolved: Vec<String>,
    pub zone: Arc<Zone>,
    /// The Alternator client: every TLS file read and checked.
    pub client: AlternatorClient,
}

impl Nodes {
    /// Resolves the seeds, builds the zone and the Alternator client.
    pub fn build(config: &Config) -> Result<Nodes, PlanError> {
        let (seeds, unresolved) = config.resolve_seeds();
        if seeds.is_empty() {
            return Err(PlanError::NoSeeds(unresolved.join("; ")));
        }
        let (extra_names, rules) = config.name_rules();
        let zone = Zone::new(&config.zone)?.with_names(&extra_names)?;
        let zone = Arc::new(zone.with_placement(config.affinity.placement(&rules)));
        let client = AlternatorClient::new(config.client_scheme(), &config.tls)?;
        Ok(Nodes {
            seeds,
            unresolved,
            zone,
            client,
        })
    }

    /// The tracker's settings, counting into `metrics`.
    pub fn tracker_settings(&self, config: &Config, metrics: Arc<Metrics>) -> TrackerSettings {
        config.tracker_settings(self.seeds.clone(), metrics)
    }
}

/// Everything start-up builds before it binds a socket.
pub struct Plan {
    pub nodes: Nodes,
    pub backend: Backend,
    /// With `--user`: the user to switch to after binding.
    pub user: Option<User>,
}

impl Plan {
    /// Builds the [`Nodes`], probes io_uring when asked for, looks up
    /// `--user` and checks the rate limiter.
    pub fn build(config: &Config) -> Result<Plan, PlanError> {
        let nodes = Nodes::build(config)?;
        let backend = choose_backend(config.io)?;
        let user = config
            .user
            .as_deref()
            .map(privileges::check_user)
            .transpose()?;
        if let Some(rate_limit) = &config.rate_limit {
            RateLimiter::new(&rate_limit.per_worker(config.cpus.len()))?;
        }
        Ok(Plan {
            nodes,
            backend,
            user,
        })
    }
}

/// What `--io auto` chooses, and why (logged at start, printed by `--check`).
pub const AUTO_CHOICE: &str = "--io auto: recvmmsg/sendmmsg, measured within a few percent \
    of the kernel's floor (0.98-1.07x) from 10,000 queries a second to the maximum, where \
    io_uring cost up to 1.18 times as much CPU per query (benches/README.md); --io uring \
    chooses io_uring";

/// The backend for `mode`; `uring` probes the kernel once.
fn choose_backend(mode: IoMode) -> Result<Backend, PlanError> {
    match mode {
        IoMode::Mmsg | IoMode::Auto => Ok(Backend::Mmsg),
        IoMode::Uring => io::uring::probe()
            .map(|()| Backend::Uring)
            .map_err(PlanError::UringUnavailable),
    }
}
