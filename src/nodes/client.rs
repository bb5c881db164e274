//! The HTTP(S) client for Alternator nodes: `GET /localnodes` (and any other
//! request), over plain HTTP or HTTPS (optionally with a client certificate,
//! for clusters with `require_client_auth`). Health probes, one kept
//! connection per listed node, go through the leaner [`HealthProbe`] that
//! [`AlternatorClient::health_probe`] builds with the same settings.
//!
//! One [`AlternatorClient`] is built at start-up from the scheme and the
//! [`TlsSettings`]; every configuration problem (an unreadable PEM file, a
//! certificate without its key, ...) is a [`ClientError`] that names the file.
//! Each [`AlternatorClient::get`] is then bounded as a whole (connect, TLS
//! handshake, headers and body) by its `timeout`, and its body by `max_body`,
//! so that a hostile or broken node cannot stall or exhaust the caller.
//!
//! Addresses are nodes' IP addresses, so by default a server certificate must
//! carry the node's IP address as a subject alternative name. With
//! [`TlsSettings::server_name`], every node is instead verified against that
//! one DNS name (also sent as SNI), the usual setup with one certificate for a
//! whole cluster.
//!
//! Keep-alive connections are pooled per node (per `addr:port`). A client
//! should be used from one tokio runtime: its pooled connections belong to the
//! runtime that opened them.

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, HOST};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::http::{error_chain, host_header, NodeTls};
use super::probe::HealthProbe;

// Their home is `http`, shared with the prober; callers name them here.
pub use super::http::{ClientError, FetchError, Scheme, TlsSettings};

/// Cap on the TCP connect of the underlying connector. Every request is
/// bounded by its own `timeout` anyway; this only bounds connects that the
/// pool finishes in the background after the request that started them was
/// served by another (pooled) connection.
const CONNECT_TIMEOUT_CAP: Duration = Duration::from_secs(10);

/// How long an idle keep-alive connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept per node; requests to one node are rarely
/// concurrent (one `/localnodes` poll per name at most).
const POOL_MAX_IDLE_PER_NODE: usize = 2;

/// hyper's read buffer per connection.
const READ_BUFFER_BYTES: usize = 2048;

/// A response of any status (a `3xx` is not followed, a `5xx` is not an
/// error), with its whole body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

/// The client for Alternator nodes; cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct AlternatorClient {
    inner: Inner,
    scheme: Scheme,
    /// The configured `server_name`, used in the `Host` header.
    server_name: Option<Arc<str>>,
    /// With https: how connections are secured; [`HealthProbe`]s open
    /// their own with it.
    tls: Option<Arc<NodeTls>>,
}

#[derive(Clone)]
enum Inner {
    Http(Client<HttpConnector, Empty<Bytes>>),
    Https(Client<HttpsConnector<HttpConnector>, Empty<Bytes>>),
}

impl fmt::Debug for AlternatorClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlternatorClient")
            .field("scheme", &self.scheme)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl AlternatorClient {
    /// Builds the client, reading and checking every file in `tls` now.
    /// Needs no runtime; [`AlternatorClient::get`] needs a tokio one.
    pub fn new(scheme: Scheme, tls: &TlsSettings) -> Result<AlternatorClient, ClientError> {
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_NODE)
            // hyper's default read buffer starts at 8 KiB and grows to
            // 400 KiB for large bodies, per pooled connection. Bodies are
            // read in chunks of this size, whatever their length.
            .http1_read_buf_exact_size(READ_BUFFER_BYTES);
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT_CAP));
        http.set_nodelay(true);
        let (inner, node_tls) = match scheme {
            Scheme::Http => {
                if !tls.is_unset() {
                    return Err(ClientError::TlsWithHttp);
                }
                (Inner::Http(builder.build(http)), None)
            }
            Scheme::Https => {
                http.enforce_http(false);
                let node_tls = NodeTls::new(tls)?;
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config((*node_tls.config).clone())
                    .https_only();
                let connector = match node_tls.server_name.clone() {
                    Some(name) => {
                        connector.with_server_name_resolver(FixedServerNameResolver::new(name))
                    }
                    None => connector,
                };
                let client = builder.build(connector.enable_http1().wrap_connector(http));
                (Inner::Https(client), Some(Arc::new(node_tls)))
            }
        };
        Ok(AlternatorClient {
            inner,
            scheme,
            server_name: tls.server_name.as_deref().map(Arc::from),
            tls: node_tls,
        })
    }

    /// A health prober for `node`, with this client's scheme, TLS settings
    /// and `Host` header, refusing bodies above `max_body` bytes.
    pub fn health_probe(&self, node: SocketAddr, max_body: usize) -> HealthProbe {
        HealthProbe::new(node, &self.host(node), self.tls.clone(), max_body)
    }

    /// The scheme this client was built for.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `GET path_and_query` (e.g. `"/localnodes?dc=dc1"`, must start with
    /// `/`) from `node`. The whole exchange (connect, TLS handshake, request,
    /// headers, body) is bounded by `timeout`; a body above `max_body` bytes
    /// is refused ([`FetchError::TooLarge`]) without reading it all.
    /// Redirects are not followed and non-2xx statuses are returned as they
    /// are. The `Host` header is `addr:port` (IPv6 in brackets), or
    /// `server_name:port` when a server name is configured.
    pub async fn get(
        &self,
        node: SocketAddr,
        path_and_query: &str,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response, FetchError> {
        let request = self.request(node, path_and_query)?;
        match tokio::time::timeout(timeout, self.exchange(node, request, max_body)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(timeout)),
        }
    }

    fn request(
        &self,
        node: SocketAddr,
        path_and_query: &str,
    ) -> Result<Request<Empty<Bytes>>, FetchError> {
        let invalid =
            || FetchError::InvalidUri(format!("{}://{node}{path_and_query}", self.scheme));
        if !path_and_query.starts_with('/') {
            return Err(invalid());
        }
        // `SocketAddr` prints IPv6 in brackets, as a URI authority needs.
        let uri = Uri::try_from(format!("{}://{node}{path_and_query}", self.scheme))
            .map_err(|_| invalid())?;
        let host = HeaderValue::try_from(self.host(node)).map_err(|_| invalid())?;
        Request::get(uri)
            .header(HOST, host)
            .body(Empty::new())
            .map_err(|_| invalid())
    }

    /// The `Host` header for `node`.
    fn host(&self, node: SocketAddr) -> String {
        host_header(node, self.server_name.as_deref())
    }

    async fn exchange(
        &self,
        node: SocketAddr,
        request: Request<Empty<Bytes>>,
        max_body: usize,
    ) -> Result<Response, FetchError> {
        let sent = match &self.inner {
            Inner::Http(client) => client.request(request).await,
            Inner::Https(client) => client.request(request).await,
        };
        let response = sent.map_err(|e| {
            if let Some(failure) = self.tls.as_ref().and_then(|t| t.context.failure(node, &e)) {
                return failure;
            }
            // The legacy client's own message ("client error (Connect)") adds
            // nothing to the variant; its sources say what happened.
            let detail = e.source().map_or_else(|| e.to_string(), error_chain);
            if e.is_connect() {
                FetchError::Connect(detail)
            } else {
                FetchError::Request(detail)
            }
        })?;
        let (parts, body) = response.into_parts();
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > max_body as u64) {
            return Err(FetchError::TooLarge(max_body));
        }
        let body = read_body(body, max_body).await?;
        Ok(Response {
            status: parts.status,
            body,
        })
    }
}

/// Reads the body to its end, refusing it as soon as it exceeds `max_body`.
/// Dropping the unfinished body keeps its connection out of the pool.
async fn read_body(mut body: Incoming, max_body: usize) -> Result<Bytes, FetchError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| FetchError::Body(error_chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            if data.len() > max_body - buf.len() {
                return Err(FetchError::TooLarge(max_body));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests;
