//! Asks Alternator nodes for their lists of live nodes (`GET /localnodes`).
//!
//! One [`Poller::poll`] asks for one selector (local datacenter, a named
//! datacenter, a rack). It starts at a known node picked at random, so that no
//! node carries all the polling, and when that node fails it tries the next
//! one at once, then the seeds. A bad answer (error status, garbage, an empty
//! default list) is an error: the caller keeps the last good list, since a
//! slightly stale list beats serving nothing.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use rand_core::{Rng as _, SeedableRng};
use thiserror::Error;
use tracing::{debug, warn};

use super::client::{AlternatorClient, FetchError};
use super::membership::Selector;
use crate::metrics::{Metrics, Outcome};

/// Largest `/localnodes` body accepted; a real one is a few KiB even for
/// hundreds of nodes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Most entries taken from one `/localnodes` answer; a datacenter of more
/// Alternator nodes than this is far beyond any deployment.
pub const MAX_NODES: usize = 4096;

/// Distinct bad entries remembered so each is warned about once.
const MAX_WARNED_ENTRIES: usize = 1024;

/// Polling as configured.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    /// Seeds, resolved, with their ports.
    pub seeds: Vec<SocketAddr>,
    /// Port used for nodes learnt from `/localnodes`.
    pub alternator_port: u16,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Why a `/localnodes` request gave no usable list.
#[derive(Debug, Error)]
pub enum RefreshError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A status other than 200, with what the body says (its HTML title or
    /// first line, cut short), if anything.
    #[error("HTTP status {status}{}", match .says.is_empty() {
        true => String::new(),
        false => format!(": \"{}\"", .says),
    })]
    Status { status: StatusCode, says: String },
    #[error("body is not a JSON array of strings: {0}")]
    NotJson(String),
    #[error("no node address in the list")]
    Empty,
    #[error("no node to ask")]
    NoCandidates,
}

/// Why a poll found no usable list: what the last node asked said.
#[derive(Debug)]
pub struct PollError {
    /// The last node asked (None when there was none to ask).
    pub node: Option<SocketAddr>,
    /// How many nodes were asked.
    pub tried: usize,
    pub error: RefreshError,
}

impl std::fmt::Display for PollError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.node, self.tried) {
            (None, _) => write!(f, "{}", self.error),
            (Some(node), 1) => write!(f, "node {node}: {}", self.error),
            (Some(node), n) => write!(f, "node {node} (the last of {n} asked): {}", self.error),
        }
    }
}

impl std::error::Error for PollError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl RefreshError {
    /// What to check, in words for a log line.
    pub fn hint(&self) -> &'static str {
        match self {
            RefreshError::Fetch(e) => e.hint(),
            RefreshError::Status { says, .. }
                if says.to_ascii_lowercase().contains("certificate") =>
            {
                "the node, or a proxy in front of it, wants a client certificate: check \
                 --client-cert and --client-key"
            }
            RefreshError::Status { status, .. } if status.is_server_error() => {
                "the node reports an error: check its state and its log"
            }
            RefreshError::Status { .. } | RefreshError::NotJson(_) => {
                "check --alternator-port and --alternator-scheme: is it Alternator's API?"
            }
            RefreshError::Empty => "the node lists no live node: check the cluster",
            RefreshError::NoCandidates => "check --seed",
        }
    }
}

/// Polls `/localnodes`; owned by the node tracker.
pub struct Poller {
    settings: RefreshSettings,
    client: AlternatorClient,
    metrics: Arc<Metrics>,
    rng: rand_xoshiro::Xoshiro256PlusPlus,
    warned: HashSet<String>,
}

impl Poller {
    pub fn new(
        settings: RefreshSettings,
        client: AlternatorClient,
        metrics: Arc<Metrics>,
    ) -> Poller {
        Poller {
            settings,
            client,
            metrics,
            rng: rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(random_seed()),
            warned: HashSet::new(),
        }
    }

    pub fn settings(&self) -> &RefreshSettings {
        &self.settings
    }

    /// Asks `preferred` nodes from a random start (spreading the polling),
    /// then `others` likewise, then any seed not among them, until one answers
    /// with a usable list for `selector`. Returns the node that answered and
    /// its list. An empty list is usable only for an explicit datacenter or
    /// rack (it triggers fallback); for the default selector it is an error.
    pub async fn poll(
        &mut self,
        selector: &Selector,
        preferred: &[IpAddr],
        others: &[IpAddr],
    ) -> Result<(SocketAddr, Vec<IpAddr>), PollError> {
        let port = self.settings.alternator_port;
        let mut candidates =
            Vec::with_capacity(preferred.len() + others.len() + self.settings.seeds.len());
        for group in [preferred, others] {
            let mut addrs: Vec<SocketAddr> =
                group.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            let start = (self.rng.next_u64() % addrs.len().max(1) as u64) as usize;
            addrs.rotate_left(start);
            candidates.extend(addrs);
        }
        for seed in &self.settings.seeds {
            if !candidates.contains(seed) {
                candidates.push(*seed);
            }
        }
        let mut failure = PollError {
            node: None,
            tried: 0,
            error: RefreshError::NoCandidates,
        };
        let path = selector.path();
        for node in candidates {
            let result = self.fetch(node, &path, selector).await;
            let outcome = if result.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Error
            };
            self.metrics.control().refresh(node.ip(), outcome);
            match result {
                Ok(nodes) => return Ok((node, nodes)),
                Err(e) => {
                    debug!(%node, %selector, error = %e, "/localnodes failed; trying the next node");
                    failure = PollError {
                        node: Some(node),
                        tried: failure.tried + 1,
                        error: e,
                    };
                }
            }
        }
        Err(failure)
    }

    async fn fetch(
        &mut self,
        node: SocketAddr,
        path: &str,
        selector: &Selector,
    ) -> Result<Vec<IpAddr>, RefreshError> {
        let response = self
            .client
            .get(node, path, self.settings.timeout, MAX_BODY_BYTES)
            .await?;
        if response.status != StatusCode::OK {
            return Err(RefreshError::Status {
                status: response.status,
                says: body_says(&response.body),
            });
        }
        let nodes = self.parse(node, &response.body)?;
        if nodes.is_empty() && *selector == Selector::default() {
            return Err(RefreshError::Empty);
        }
        Ok(nodes)
    }

    /// Parses a `/localnodes` body, skipping (and warning once about) entries
    /// that are not IP addresses, such as host IDs.
    fn parse(&mut self, node: SocketAddr, body: &[u8]) -> Result<Vec<IpAddr>, RefreshError> {
        let entries: Vec<String> =
            serde_json::from_slice(body).map_err(|e| RefreshError::NotJson(e.to_string()))?;
        if entries.len() > MAX_NODES {
            warn!(%node, entries = entries.len(), kept = MAX_NODES, "/localnodes listed more nodes than supported; keeping the first");
        }
        let mut nodes = Vec::with_capacity(entries.len().min(MAX_NODES));
        for entry in entries.into_iter().take(MAX_NODES) {
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
        Ok(nodes)
    }
}

/// What an error page says, short: its HTML title, or its first line, in
/// printable characters, at most 120 of them.
fn body_says(body: &[u8]) -> String {
    const MAX: usize = 120;
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let lower = text.to_ascii_lowercase();
    let title = lower.find("<title>").and_then(|start| {
        let from = start + "<title>".len();
        let len = lower[from..].find("</title>")?;
        Some(&text[from..from + len])
    });
    let line = title.unwrap_or_else(|| text.lines().find(|l| !l.trim().is_empty()).unwrap_or(""));
    line.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX)
        .collect()
}

/// A seed for non-cryptographic generators: from the OS, or the clock if the
/// OS has no entropy to give.
pub(crate) fn random_seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| seed_from_time())
}

/// A seed derived from the time and the process ID (not security sensitive).
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
    fn error_pages_are_summed_up_and_point_at_the_right_option() {
        let nginx = b"<html>\r\n<head><title>400 No required SSL certificate was sent</title>\
                      </head>\r\n<body>...</body></html>";
        let says = body_says(nginx);
        assert_eq!(says, "400 No required SSL certificate was sent");
        let e = RefreshError::Status {
            status: StatusCode::BAD_REQUEST,
            says,
        };
        assert_eq!(
            e.to_string(),
            "HTTP status 400 Bad Request: \"400 No required SSL certificate was sent\""
        );
        assert!(e.hint().contains("--client-cert"), "{}", e.hint());
        let e = RefreshError::Status {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            says: body_says(b"\n  overloaded\x07 now\nmore"),
        };
        assert_eq!(
            e.to_string(),
            "HTTP status 500 Internal Server Error: \"overloaded now\""
        );
        assert!(e.hint().contains("the node reports an error"));
        let e = RefreshError::Status {
            status: StatusCode::NOT_FOUND,
            says: body_says(b""),
        };
        assert_eq!(e.to_string(), "HTTP status 404 Not Found");
        assert!(e.hint().contains("--alternator-port"));
    }
}
