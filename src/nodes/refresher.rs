//! Keeps the published snapshot in step with the cluster by polling
//! Alternator's `GET /localnodes`.
//!
//! Every interval it asks one known node, picked at random so that no node
//! carries all the polling; when that node fails it tries the next one at
//! once, and when every known node (and every seed) has failed it backs off.
//! A bad answer (error status, garbage, an empty list) never replaces the last
//! good list: serving a slightly stale list beats serving nothing.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::StatusCode;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand_core::{Rng as _, SeedableRng};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::snapshot::{NodeSource, SharedSnapshot, Snapshot};

/// Largest `/localnodes` body accepted; a real one is a few KiB even for
/// hundreds of nodes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Longest pause between rounds while every node is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Distinct bad entries remembered so each is warned about once.
const MAX_WARNED_ENTRIES: usize = 1024;

/// What the refresher needs to know.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    /// Seeds, resolved, with their ports.
    pub seeds: Vec<SocketAddr>,
    /// Port used for nodes learnt from `/localnodes`.
    pub alternator_port: u16,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Why one `/localnodes` request gave no usable list.
#[derive(Debug, Error)]
pub enum RefreshError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP status {0}")]
    Status(StatusCode),
    #[error("body unreadable or larger than {MAX_BODY_BYTES} bytes: {0}")]
    Body(String),
    #[error("body is not a JSON array of strings: {0}")]
    NotJson(String),
    #[error("no node address in the list")]
    Empty,
}

/// The background task that owns membership.
pub struct Refresher {
    settings: RefreshSettings,
    published: SharedSnapshot,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// Nodes to poll: the last good list, or the seeds before the first one.
    known: Vec<SocketAddr>,
    rng: rand_xoshiro::Xoshiro256PlusPlus,
    warned: HashSet<String>,
}

impl Refresher {
    pub fn new(settings: RefreshSettings, published: SharedSnapshot) -> Refresher {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Refresher {
            known: settings.seeds.clone(),
            settings,
            published,
            client,
            rng: rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed_from_time()),
            warned: HashSet::new(),
        }
    }

    /// Polls until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            // A round can take (nodes x timeout) when nodes hang: shutdown
            // must not wait for it.
            let round = tokio::select! {
                round = self.refresh_round() => round,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let pause = match round {
                Ok(()) => {
                    if failures > 0 {
                        info!(failed_rounds = failures, "/localnodes reachable again");
                    }
                    failures = 0;
                    self.settings.interval
                }
                Err(e) => {
                    failures += 1;
                    let pause = backoff(self.settings.interval, failures);
                    if failures == 1 || failures.is_multiple_of(30) {
                        warn!(
                            failed_rounds = failures,
                            error = %e,
                            retry_in = ?pause,
                            nodes_served = self.published.load().node_count(),
                            "no node answered /localnodes; keeping the last good list"
                        );
                    }
                    pause
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One round: known nodes from a random start, then any seed not yet
    /// tried, until one gives a usable list. Returns the last error otherwise.
    async fn refresh_round(&mut self) -> Result<(), RefreshError> {
        let mut candidates = self.known.clone();
        let start = (self.rng.next_u64() % candidates.len().max(1) as u64) as usize;
        candidates.rotate_left(start);
        for seed in &self.settings.seeds {
            if !candidates.contains(seed) {
                candidates.push(*seed);
            }
        }
        let mut last = RefreshError::Empty;
        for node in candidates {
            match self.fetch(node).await {
                Ok(nodes) => {
                    self.publish(node, nodes);
                    return Ok(());
                }
                Err(e) => {
                    debug!(%node, error = %e, "/localnodes failed; trying the next node");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Asks one node for its list of live nodes.
    async fn fetch(&mut self, node: SocketAddr) -> Result<Vec<IpAddr>, RefreshError> {
        let uri = format!("http://{node}/localnodes");
        let request = async {
            let response = self
                .client
                .get(
                    uri.parse()
                        .map_err(|e| RefreshError::Request(format!("{e}")))?,
                )
                .await
                .map_err(|e| RefreshError::Request(error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| RefreshError::Body(e.to_string()))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(RefreshError::Status(status));
            }
            Ok(body)
        };
        let body = tokio::time::timeout(self.settings.timeout, request)
            .await
            .map_err(|_| RefreshError::Timeout(self.settings.timeout))??;
        self.parse(node, &body)
    }

    /// Parses a `/localnodes` body, skipping (and warning once about) entries
    /// that are not IP addresses, such as host IDs.
    fn parse(&mut self, node: SocketAddr, body: &[u8]) -> Result<Vec<IpAddr>, RefreshError> {
        let entries: Vec<String> =
            serde_json::from_slice(body).map_err(|e| RefreshError::NotJson(e.to_string()))?;
        let mut nodes = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) if !nodes.contains(&ip) => nodes.push(ip),
                Ok(_) => {}
                Err(_) => {
                    if self.warned.len() < MAX_WARNED_ENTRIES && self.warned.insert(entry.clone()) {
                        warn!(%node, entry = %entry, "skipping a /localnodes entry that is not an IP address");
                    }
                }
            }
        }
        if nodes.is_empty() {
            return Err(RefreshError::Empty);
        }
        Ok(nodes)
    }

    /// Swaps in a new snapshot when membership (or its source) changed.
    fn publish(&mut self, from: SocketAddr, nodes: Vec<IpAddr>) {
        let port = self.settings.alternator_port;
        self.known = nodes.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        let current = self.published.load();
        let old: BTreeSet<IpAddr> = current.nodes().collect();
        let new: BTreeSet<IpAddr> = nodes.iter().copied().collect();
        if old == new && current.source == NodeSource::Cluster {
            return;
        }
        let added: Vec<String> = new.difference(&old).map(ToString::to_string).collect();
        let removed: Vec<String> = old.difference(&new).map(ToString::to_string).collect();
        let snapshot = Snapshot::new(
            current.generation + 1,
            Arc::clone(&current.zone),
            NodeSource::Cluster,
            &nodes,
        );
        if current.source == NodeSource::Seeds {
            let all: Vec<String> = new.iter().map(ToString::to_string).collect();
            info!(
                %from,
                nodes = %all.join(","),
                generation = snapshot.generation,
                "first /localnodes answer; serving the cluster's live nodes"
            );
        }
        if !added.is_empty() || !removed.is_empty() {
            info!(
                %from,
                nodes = new.len(),
                added = %added.join(","),
                removed = %removed.join(","),
                generation = snapshot.generation,
                "membership changed"
            );
        }
        self.published.store(Arc::new(snapshot));
    }
}

/// The pause after `failures` failed rounds in a row: doubling from the
/// interval, capped at [`MAX_BACKOFF`] (or the interval, if that is longer).
fn backoff(interval: Duration, failures: u32) -> Duration {
    let cap = MAX_BACKOFF.max(interval);
    interval
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap)
}

/// An error with its sources, which hyper keeps behind "client error (Connect)".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A seed for the node-picking generator (not security sensitive).
pub(crate) fn seed_from_time() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs(1);
        assert_eq!(backoff(s, 1), s);
        assert_eq!(backoff(s, 2), 2 * s);
        assert_eq!(backoff(s, 3), 4 * s);
        assert_eq!(backoff(s, 10), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(10), 4), Duration::from_secs(10));
        assert_eq!(backoff(s, u32::MAX), MAX_BACKOFF);
    }
}
