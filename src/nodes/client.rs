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
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
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
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use thiserror::Error;
use tokio_rustls::TlsConnector;
use tracing::warn;

use super::probe::{HealthProbe, ProbeTls};
use super::tls_failure::TlsContext;

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

/// TLS options for [`Scheme::Https`]; all must stay unset (the default) with
/// [`Scheme::Http`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM bundle of the CA certificates to trust; `None` = the system's
    /// roots (rustls-native-certs).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain (leaf first) to present, for clusters with
    /// `require_client_auth`. Needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert` (PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate (signatures are still checked, so the
    /// handshake is still a real one, but anyone can impersonate a node).
    /// Logged at warn by [`AlternatorClient::new`]. Excludes `ca_file`.
    pub insecure_skip_verify: bool,
    /// Verify every node's certificate against this DNS name (also sent as
    /// SNI and used in the `Host` header) instead of the node's IP address.
    pub server_name: Option<String>,
}

impl TlsSettings {
    fn is_unset(&self) -> bool {
        *self == TlsSettings::default()
    }
}

/// A configuration problem found by [`AlternatorClient::new`]; each names
/// the option and the file involved.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "--ca-file, --client-cert, --client-key, --tls-server-name and \
         --tls-insecure-skip-verify need --alternator-scheme https"
    )]
    TlsWithHttp,
    #[error(
        "--tls-insecure-skip-verify true and --ca-file {} exclude each other: either the \
         nodes' certificates are verified against that CA, or not at all",
        .0.display()
    )]
    InsecureWithCaFile(PathBuf),
    #[error("{flag} {}: cannot read it: {error}", .file.display())]
    Read {
        flag: &'static str,
        file: PathBuf,
        error: io::Error,
    },
    #[error("{flag} {}: not a valid PEM file: {reason}", .file.display())]
    Pem {
        flag: &'static str,
        file: PathBuf,
        reason: String,
    },
    #[error("{flag} {}: no certificate in it ({})", .file.display(), match .holds_key {
        true => "it holds a private key; give the certificate's file",
        false => "expected PEM \"BEGIN CERTIFICATE\" blocks",
    })]
    NoCertificate {
        flag: &'static str,
        file: PathBuf,
        /// It holds a private key instead.
        holds_key: bool,
    },
    #[error("--ca-file {}: certificate #{index} is not usable as a trust anchor: {reason}", .file.display())]
    BadCaCertificate {
        file: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("--client-key {}: no private key in it ({})", .file.display(), match .holds_certificate {
        true => "it holds a certificate; give the key's file",
        false => "expected a PEM PKCS#8, PKCS#1 or SEC1 private key",
    })]
    NoPrivateKey {
        file: PathBuf,
        /// It holds a certificate instead.
        holds_certificate: bool,
    },
    #[error("--client-cert {} is given without --client-key", .0.display())]
    CertWithoutKey(PathBuf),
    #[error("--client-key {} is given without --client-cert", .0.display())]
    KeyWithoutCert(PathBuf),
    #[error(
        "--client-key {} is not the private key of the certificate in --client-cert {}",
        .key.display(),
        .cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("--client-cert {} and --client-key {} are not usable together: {reason}", .cert.display(), .key.display())]
    ClientAuth {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("no usable CA certificate in the system's trust store{0}; give --ca-file")]
    NoSystemRoots(String),
    #[error("--tls-server-name {name:?} is not a DNS name or IP address")]
    ServerName { name: String },
    #[error("TLS configuration failed: {0}")]
    Tls(String),
}

/// Why one [`AlternatorClient::get`] gave no response.
#[derive(Debug, Error)]
pub enum FetchError {
    /// The whole exchange did not finish within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// TCP connect or TLS handshake failed (refused, unreachable, untrusted
    /// certificate, ...); the message carries the error chain.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Connected, but sending the request or reading the response head
    /// failed: the peer closed the connection, sent a TLS alert after the
    /// handshake (such as a refused client certificate under TLS 1.3), or
    /// answered something that is not HTTP/1.
    #[error("request failed: {0}")]
    Request(String),
    /// The body is larger than the given limit (declared by
    /// `Content-Length`, or counted while reading); not read further.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// The body could not be read to its end.
    #[error("reading the body failed: {0}")]
    Body(String),
    /// The address and path do not make a valid URI.
    #[error("invalid request URI {0}")]
    InvalidUri(String),
    /// Our verification of the node's certificate failed; the message names
    /// the CA and the name checked.
    #[error("TLS: {0}")]
    NodeCertificate(String),
    /// The node refused our client certificate, or its absence (a TLS alert
    /// about certificates).
    #[error("TLS: {0}")]
    ClientCertificate(String),
    /// Another TLS failure: not TLS on that port, no common version, ...
    #[error("TLS: {0}")]
    Tls(String),
}

impl FetchError {
    /// What to check, in words for a log line: the options that most often
    /// cause this failure.
    pub fn hint(&self) -> &'static str {
        match self {
            FetchError::Timeout(_) => {
                "check that the node is up and reachable from here, and the timeout \
                 (--refresh-timeout, --health-timeout)"
            }
            FetchError::Connect(_) => {
                "check that the node is up, and --seed, --alternator-port and --alternator-scheme"
            }
            FetchError::Request(_) => "check --alternator-scheme and --alternator-port",
            FetchError::TooLarge(_) | FetchError::Body(_) => {
                "check --alternator-port: is it Alternator's API?"
            }
            FetchError::InvalidUri(_) => "check --seed and --tls-server-name",
            FetchError::NodeCertificate(_) => "check --ca-file and --tls-server-name",
            FetchError::ClientCertificate(_) => "check --client-cert and --client-key",
            FetchError::Tls(_) => "check --alternator-scheme and --alternator-port",
        }
    }
}

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
    /// With https: how [`HealthProbe`]s open their own TLS connections.
    probe_tls: Option<ProbeTls>,
    /// With https: what TLS failure messages name.
    tls_context: Option<Arc<TlsContext>>,
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
        let (inner, probe_tls) = match scheme {
            Scheme::Http => {
                if !tls.is_unset() {
                    return Err(ClientError::TlsWithHttp);
                }
                (Inner::Http(builder.build(http)), None)
            }
            Scheme::Https => {
                http.enforce_http(false);
                let config = tls_config(tls)?;
                let fixed_name = tls.server_name.as_deref().map(server_name).transpose()?;
                let probe_tls = ProbeTls {
                    connector: TlsConnector::from(Arc::new(config.clone())),
                    server_name: fixed_name.clone(),
                    context: Arc::new(TlsContext {
                        ca_file: tls.ca_file.clone(),
                        server_name: tls.server_name.clone(),
                        client_cert: tls.client_cert.clone(),
                    }),
                };
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_only();
                let connector = match fixed_name {
                    Some(name) => {
                        connector.with_server_name_resolver(FixedServerNameResolver::new(name))
                    }
                    None => connector,
                };
                let client = builder.build(connector.enable_http1().wrap_connector(http));
                (Inner::Https(client), Some(probe_tls))
            }
        };
        Ok(AlternatorClient {
            inner,
            scheme,
            server_name: tls.server_name.as_deref().map(Arc::from),
            tls_context: probe_tls.as_ref().map(|p| Arc::clone(&p.context)),
            probe_tls,
        })
    }

    /// A health prober for `node`, with this client's scheme, TLS settings
    /// and `Host` header, refusing bodies above `max_body` bytes.
    pub fn health_probe(&self, node: SocketAddr, max_body: usize) -> HealthProbe {
        HealthProbe::new(node, &self.host(node), self.probe_tls.clone(), max_body)
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
        match &self.server_name {
            Some(name) if name.parse::<Ipv6Addr>().is_ok() => {
                format!("[{name}]:{}", node.port())
            }
            Some(name) => format!("{name}:{}", node.port()),
            None => node.to_string(),
        }
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
            if let Some(failure) = self.tls_context.as_ref().and_then(|c| c.failure(node, &e)) {
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

/// `error: source: source's source ...`, skipping a message that merely
/// repeats the one before it.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut last = out.clone();
    let mut next = error.source();
    while let Some(e) = next {
        let message = e.to_string();
        if !last.contains(&message) {
            out.push_str(": ");
            out.push_str(&message);
        }
        last = message;
        next = e.source();
    }
    out
}

fn server_name(name: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(name.to_owned()).map_err(|_| ClientError::ServerName {
        name: name.to_owned(),
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration for `tls`: trust anchors or the insecure
/// verifier, and the client certificate if any.
fn tls_config(tls: &TlsSettings) -> Result<ClientConfig, ClientError> {
    if let (true, Some(ca)) = (tls.insecure_skip_verify, &tls.ca_file) {
        return Err(ClientError::InsecureWithCaFile(ca.clone()));
    }
    if let Some(name) = &tls.server_name {
        server_name(name)?;
    }
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let builder = if tls.insecure_skip_verify {
        warn!(
            "TLS certificate verification of Alternator nodes is DISABLED \
             (--tls-insecure-skip-verify): anyone on the path can impersonate a node"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
    } else {
        let roots = match &tls.ca_file {
            Some(file) => ca_roots(file)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots)
    };
    match (&tls.client_cert, &tls.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), None) => Err(ClientError::CertWithoutKey(cert.clone())),
        (None, Some(key)) => Err(ClientError::KeyWithoutCert(key.clone())),
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, "--client-cert")?;
            let key_der = private_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => ClientError::KeyMismatch {
                        cert: cert.clone(),
                        key: key.clone(),
                    },
                    other => ClientError::ClientAuth {
                        cert: cert.clone(),
                        key: key.clone(),
                        reason: other.to_string(),
                    },
                })
        }
    }
}

fn read(file: &Path, flag: &'static str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(file).map_err(|error| ClientError::Read {
        flag,
        file: file.to_owned(),
        error,
    })
}

/// Every certificate in a PEM file given with `flag` (other PEM items are
/// skipped); at least one.
fn certificates(
    file: &Path,
    flag: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let pem = read(file, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Pem {
            flag,
            file: file.to_owned(),
            reason: pem_words(&e),
        })?;
    if certs.is_empty() {
        return Err(ClientError::NoCertificate {
            flag,
            file: file.to_owned(),
            holds_key: PrivateKeyDer::from_pem_slice(&pem).is_ok(),
        });
    }
    Ok(certs)
}

/// The first private key in the `--client-key` file.
fn private_key(file: &Path) -> Result<PrivateKeyDer<'static>, ClientError> {
    let pem = read(file, "--client-key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => ClientError::NoPrivateKey {
            file: file.to_owned(),
            holds_certificate: CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok()),
        },
        other => ClientError::Pem {
            flag: "--client-key",
            file: file.to_owned(),
            reason: pem_words(&other),
        },
    })
}

/// A PEM parsing error in words (the library's own text prints bytes and
/// enum names).
fn pem_words(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "a section is not closed (no \"{}\" line)",
            String::from_utf8_lossy(end_marker).trim()
        ),
        Error::IllegalSectionStart { line } => format!(
            "a section begins inside another: \"{}\"",
            String::from_utf8_lossy(line).trim()
        ),
        Error::Base64Decode(_) => "a section's content is not valid base64".to_string(),
        Error::NoItemsFound => "nothing in it".to_string(),
        other => other.to_string(),
    }
}

fn ca_roots(file: &Path) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(file, "--ca-file")?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| ClientError::BadCaCertificate {
            file: file.to_owned(),
            index: i + 1,
            reason: match e {
                rustls::Error::InvalidCertificate(_) => {
                    "it is not a well-formed X.509 certificate".to_string()
                }
                other => other.to_string(),
            },
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, ClientError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
    if added == 0 {
        let detail = if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join("; "))
        };
        return Err(ClientError::NoSystemRoots(detail));
    }
    if ignored > 0 || !errors.is_empty() {
        warn!(
            added,
            ignored,
            errors = %errors.join("; "),
            "some of the system's CA certificates could not be loaded"
        );
    }
    Ok(roots)
}

/// `insecure_skip_verify`: any certificate chain and name are accepted, but
/// the handshake signatures are still checked against the certificate
/// presented, with the provider's algorithms.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use alternator_sim::test_pki::{TempDir, TestCa};
    use alternator_sim::{Fault, SimCluster};

    const T: Duration = Duration::from_secs(5);

    fn https(tls: &TlsSettings) -> Result<AlternatorClient, ClientError> {
        AlternatorClient::new(Scheme::Https, tls)
    }

    fn with_ca(file: PathBuf) -> TlsSettings {
        TlsSettings {
            ca_file: Some(file),
            ..TlsSettings::default()
        }
    }

    /// The error's message names `file`.
    fn names(e: &ClientError, file: &Path) -> bool {
        e.to_string().contains(&file.display().to_string())
    }

    #[test]
    fn tls_settings_need_https() {
        let dir = TempDir::new();
        let tls = with_ca(dir.path().join("ca.pem"));
        let err = AlternatorClient::new(Scheme::Http, &tls).unwrap_err();
        assert!(matches!(err, ClientError::TlsWithHttp), "{err:?}");
        let insecure = TlsSettings {
            insecure_skip_verify: true,
            ..TlsSettings::default()
        };
        assert!(AlternatorClient::new(Scheme::Http, &insecure).is_err());
        let plain = AlternatorClient::new(Scheme::Http, &TlsSettings::default()).unwrap();
        assert_eq!(plain.scheme(), Scheme::Http);
        assert_eq!(Scheme::Https.to_string(), "https");
    }

    #[test]
    fn unusable_ca_files_are_named() {
        let dir = TempDir::new();
        let missing = dir.path().join("missing.pem");
        let err = https(&with_ca(missing.clone())).unwrap_err();
        assert!(matches!(err, ClientError::Read { .. }), "{err:?}");
        assert!(names(&err, &missing), "{err}");

        let garbage = dir.write("garbage.pem", "this is not PEM at all\n");
        let err = https(&with_ca(garbage.clone())).unwrap_err();
        assert!(matches!(err, ClientError::NoCertificate { .. }), "{err:?}");
        assert!(
            names(&err, &garbage) && err.to_string().contains("no certificate"),
            "{err}"
        );

        let ca = TestCa::new("test CA");
        let leaf = ca.client("client.test");
        let key_only = dir.write("key-only.pem", &leaf.key_pem);
        let err = https(&with_ca(key_only.clone())).unwrap_err();
        assert!(matches!(err, ClientError::NoCertificate { .. }), "{err:?}");

        let broken = dir.write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        );
        let err = https(&with_ca(broken.clone())).unwrap_err();
        assert!(matches!(err, ClientError::Pem { .. }), "{err:?}");
        assert!(names(&err, &broken), "{err}");

        let truncated = dir.write("truncated.pem", &ca.cert_pem[..ca.cert_pem.len() / 2]);
        let err = https(&with_ca(truncated.clone())).unwrap_err();
        assert!(names(&err, &truncated), "{err}");

        let not_der = dir.write(
            "not-der.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        let err = https(&with_ca(not_der.clone())).unwrap_err();
        assert!(
            matches!(err, ClientError::BadCaCertificate { .. }),
            "{err:?}"
        );
        assert!(names(&err, &not_der), "{err}");

        // A good bundle, also with a key and junk around the certificates.
        let other = TestCa::new("other CA");
        let bundle = dir.write(
            "bundle.pem",
            format!("junk\n{}{}{}", ca.cert_pem, leaf.key_pem, other.cert_pem),
        );
        https(&with_ca(bundle)).unwrap();
    }

    #[test]
    fn client_certificate_problems_are_named() {
        let dir = TempDir::new();
        let ca = TestCa::new("test CA");
        let ca_file = dir.write("ca.pem", &ca.cert_pem);
        let leaf = ca.client("client.test");
        let cert = dir.write("client.pem", &leaf.cert_pem);
        let key = dir.write("client.key", &leaf.key_pem);
        let settings = |cert: Option<&PathBuf>, key: Option<&PathBuf>| TlsSettings {
            ca_file: Some(ca_file.clone()),
            client_cert: cert.cloned(),
            client_key: key.cloned(),
            ..TlsSettings::default()
        };
        https(&settings(Some(&cert), Some(&key))).unwrap();

        let err = https(&settings(Some(&cert), None)).unwrap_err();
        assert!(matches!(err, ClientError::CertWithoutKey(_)), "{err:?}");
        assert!(names(&err, &cert), "{err}");
        let err = https(&settings(None, Some(&key))).unwrap_err();
        assert!(matches!(err, ClientError::KeyWithoutCert(_)), "{err:?}");
        assert!(names(&err, &key), "{err}");

        // The certificate file given as the key, and vice versa.
        let err = https(&settings(Some(&cert), Some(&cert))).unwrap_err();
        assert!(matches!(err, ClientError::NoPrivateKey { .. }), "{err:?}");
        assert!(
            names(&err, &cert) && err.to_string().contains("no private key"),
            "{err}"
        );
        let err = https(&settings(Some(&key), Some(&key))).unwrap_err();
        assert!(matches!(err, ClientError::NoCertificate { .. }), "{err:?}");
        assert!(names(&err, &key), "{err}");

        let missing = dir.path().join("nope.key");
        let err = https(&settings(Some(&cert), Some(&missing))).unwrap_err();
        assert!(matches!(err, ClientError::Read { .. }), "{err:?}");
        assert!(names(&err, &missing), "{err}");

        // A key that is not the certificate's.
        let other_key = dir.write("other.key", &ca.client("other.test").key_pem);
        let err = https(&settings(Some(&cert), Some(&other_key))).unwrap_err();
        assert!(matches!(err, ClientError::KeyMismatch { .. }), "{err:?}");
        assert!(names(&err, &cert) && names(&err, &other_key), "{err}");
        assert!(
            err.to_string().starts_with("--client-key ")
                && err.to_string().contains("is not the private key of"),
            "{err}"
        );
    }

    #[test]
    fn conflicting_or_invalid_settings() {
        let dir = TempDir::new();
        let ca = dir.write("ca.pem", &TestCa::new("test CA").cert_pem);
        let err = https(&TlsSettings {
            ca_file: Some(ca.clone()),
            insecure_skip_verify: true,
            ..TlsSettings::default()
        })
        .unwrap_err();
        assert!(matches!(err, ClientError::InsecureWithCaFile(_)), "{err:?}");
        assert!(names(&err, &ca), "{err}");
        let err = https(&TlsSettings {
            ca_file: Some(ca),
            server_name: Some("not a name!".into()),
            ..TlsSettings::default()
        })
        .unwrap_err();
        assert!(matches!(err, ClientError::ServerName { .. }), "{err:?}");
    }

    #[test]
    fn system_roots_load_or_fail_clearly() {
        match https(&TlsSettings::default()) {
            Ok(client) => assert_eq!(client.scheme(), Scheme::Https),
            Err(ClientError::NoSystemRoots(_)) => {}
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }

    #[tokio::test]
    async fn statuses_are_returned_and_bad_paths_refused() {
        let node = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let c = SimCluster::start(&[node], 0).unwrap();
        let to = c.socket_addr(node);
        let client = AlternatorClient::new(Scheme::Http, &TlsSettings::default()).unwrap();
        let reply = client.get(to, "/nope", T, 1024).await.unwrap();
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        c.set_fault(node, Fault::Status500);
        let reply = client.get(to, "/localnodes", T, 1024).await.unwrap();
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!reply.body.is_empty());
        c.set_fault(node, Fault::None);
        let reply = client.get(to, "/", T, 1024).await.unwrap();
        assert_eq!(reply.body, format!("healthy: {to}"));
        // A body exactly at the limit is fine, one byte less is not.
        let len = reply.body.len();
        assert!(client.get(to, "/", T, len).await.is_ok());
        let err = client.get(to, "/", T, len - 1).await.unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge(n) if n == len - 1),
            "{err:?}"
        );

        for bad in ["localnodes", "/a b", ""] {
            let err = client.get(to, bad, T, 1024).await.unwrap_err();
            assert!(matches!(err, FetchError::InvalidUri(_)), "{bad:?}: {err:?}");
        }
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        drop(listener);
        let client = AlternatorClient::new(Scheme::Http, &TlsSettings::default()).unwrap();
        let started = std::time::Instant::now();
        let err = client.get(to, "/", T, 1024).await.unwrap_err();
        assert!(matches!(err, FetchError::Connect(_)), "{err:?}");
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
        assert!(started.elapsed() < T);
    }

    #[test]
    fn error_chain_skips_repeats() {
        let inner = io::Error::other("inner problem");
        let outer = io::Error::other(inner);
        // `io::Error` displays its payload and forwards `source` past it.
        assert_eq!(error_chain(&outer), "inner problem");
    }
}
