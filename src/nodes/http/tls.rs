//! TLS for the nodes: the rustls configuration built from [`TlsSettings`]
//! (trust anchors from `--ca-file` or the system, the client certificate,
//! or the insecure verifier), and the PEM files read for it. Every problem
//! is found when the configuration is built, at start-up or on reload, and
//! named with its option and file, so that a running server never meets it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tracing::warn;

use super::ClientError;

/// TLS options for [`Scheme::Https`](super::Scheme::Https); all must stay unset
/// (the default) with [`Scheme::Http`](super::Scheme::Http).
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
    /// Logged at warn when the configuration is built. Excludes `ca_file`.
    pub insecure_skip_verify: bool,
    /// Verify every node's certificate against this DNS name (also sent as
    /// SNI and used in the `Host` header) instead of the node's IP address.
    pub server_name: Option<String>,
}

impl TlsSettings {
    pub(crate) fn is_unset(&self) -> bool {
        *self == TlsSettings::default()
    }
}

pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(name.to_owned()).map_err(|_| ClientError::ServerName {
        name: name.to_owned(),
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration for `tls`: trust anchors or the insecure
/// verifier, and the client certificate if any.
pub(crate) fn tls_config(tls: &TlsSettings) -> Result<ClientConfig, ClientError> {
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
