//! What the `/localnodes` poller ([`super::client`]) and the health prober
//! ([`super::probe`]) share: the scheme, the TLS configuration read from the
//! PEM files, the errors with their hints, and how a connection to a node is
//! opened.
//!
//! Why one module: both talk to the same nodes with the same settings, and a
//! user reading a failure should not be able to tell which of the two saw
//! it. The poller keeps hyper's pooled client (its connections are few and
//! short-lived); the prober keeps one TCP or TLS stream per node for as long
//! as the node is listed and does hyper's handshake on it for each probe.
//! Neither depends on the other.

mod connect;
mod error;
mod tls;
mod tls_failure;

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};

pub(crate) use connect::Stream;
pub(crate) use connect::{connect, NodeTls};
pub(crate) use error::error_chain;
pub use error::{ClientError, FetchError};
pub use tls::TlsSettings;
pub(crate) use tls_failure::TlsContext;

/// How to talk to the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `Host` header for `node`: `addr:port` (IPv6 in brackets), or
/// `server_name:port` when every node is verified against one name.
pub(crate) fn host_header(node: SocketAddr, server_name: Option<&str>) -> String {
    match server_name {
        Some(name) if name.parse::<Ipv6Addr>().is_ok() => format!("[{name}]:{}", node.port()),
        Some(name) => format!("{name}:{}", node.port()),
        None => node.to_string(),
    }
}
