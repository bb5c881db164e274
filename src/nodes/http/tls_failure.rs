//! TLS failures, said plainly: which side failed and what to check.
//!
//! rustls reports a failed handshake as an error buried in an I/O error's
//! chain, printed with Rust's debug formatting (`UnknownIssuer`,
//! `DnsName("...")`, `received fatal alert: CertificateRequired`). Here it is
//! found and put into words, with what the message needs to be useful: for
//! our verification of the node's certificate, the trust anchors used (the
//! `--ca-file`, or the system's roots) and the name checked; for the node's
//! refusal of our client certificate (a TLS alert about certificates), the
//! `--client-cert` given or the lack of one.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use rustls::{AlertDescription, CertificateError};

use super::FetchError;

/// What a TLS failure message needs to know of the client's settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsContext {
    /// `--ca-file`; None: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// `--tls-server-name`; None: each node's IP address is checked.
    pub server_name: Option<String>,
    /// `--client-cert`, if one is presented.
    pub client_cert: Option<PathBuf>,
}

impl TlsContext {
    /// The TLS failure in `error`'s chain, in words, if there is one.
    pub(crate) fn failure(
        &self,
        node: SocketAddr,
        error: &(dyn StdError + 'static),
    ) -> Option<FetchError> {
        find_rustls(error).map(|e| self.describe(node, e))
    }

    /// [`TlsContext::failure`] for an I/O error.
    pub(crate) fn io_failure(&self, node: SocketAddr, error: &io::Error) -> Option<FetchError> {
        self.failure(node, error)
    }

    fn describe(&self, node: SocketAddr, error: &rustls::Error) -> FetchError {
        match error {
            rustls::Error::InvalidCertificate(e) => {
                FetchError::NodeCertificate(self.node_certificate(node, e))
            }
            rustls::Error::NoCertificatesPresented => FetchError::NodeCertificate(format!(
                "node {node} presented no certificate, so our verification of it failed"
            )),
            rustls::Error::AlertReceived(alert) if is_about_our_certificate(*alert) => {
                let alert = alert_words(*alert);
                FetchError::ClientCertificate(match &self.client_cert {
                    Some(cert) => format!(
                        "node {node} refused our client certificate --client-cert {} \
                         (TLS alert: {alert})",
                        cert.display()
                    ),
                    None => format!(
                        "node {node} wants a client certificate, and none is configured \
                         (TLS alert: {alert}); give --client-cert and --client-key"
                    ),
                })
            }
            rustls::Error::AlertReceived(alert) => FetchError::Tls(format!(
                "node {node} ended the TLS handshake (TLS alert: {})",
                alert_words(*alert)
            )),
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. } => FetchError::Tls(format!(
                "node {node} does not answer in TLS on this port; is it Alternator's HTTPS port?"
            )),
            rustls::Error::PeerIncompatible(_) => FetchError::Tls(format!(
                "node {node} and this server share no TLS version or cipher suite"
            )),
            other => FetchError::Tls(format!("with node {node}: {other}")),
        }
    }

    /// Our verification of `node`'s certificate failed with `e`.
    fn node_certificate(&self, node: SocketAddr, e: &CertificateError) -> String {
        let trust = match &self.ca_file {
            Some(file) => format!("--ca-file {}", file.display()),
            None => "the system's trusted roots (no --ca-file)".to_string(),
        };
        let name = match &self.server_name {
            Some(name) => format!("the name {name} (--tls-server-name)"),
            None => format!(
                "the node's address {} (no --tls-server-name)",
                node.ip().to_canonical()
            ),
        };
        let why = match e {
            // The name does not matter here, nor the CA below.
            CertificateError::UnknownIssuer => format!("it is not signed by a CA in {trust}"),
            CertificateError::NotValidForName => format!("it is not valid for {name}"),
            CertificateError::NotValidForNameContext { presented, .. } => {
                let names: Vec<String> = presented.iter().map(|p| presented_name(p)).collect();
                match names.is_empty() {
                    true => format!("it is not valid for {name}, and names no other"),
                    false => format!("it is not valid for {name}; it names {}", names.join(", ")),
                }
            }
            other => {
                let what = match other {
                    CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                        "it has expired".to_string()
                    }
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                        "it is not valid yet (or this machine's clock is behind)".to_string()
                    }
                    CertificateError::Revoked => "it is revoked".to_string(),
                    CertificateError::BadEncoding => {
                        "it is not a well-formed certificate".to_string()
                    }
                    CertificateError::BadSignature => "its signature does not verify".to_string(),
                    CertificateError::InvalidPurpose
                    | CertificateError::InvalidPurposeContext { .. } => {
                        "it is not a TLS server certificate (extended key usage)".to_string()
                    }
                    other => format!(
                        "it is not acceptable ({})",
                        camel_words(&format!("{other:?}"))
                    ),
                };
                format!("{what} (checked against {trust}, for {name})")
            }
        };
        format!("our verification of node {node}'s certificate failed: {why}")
    }
}

/// The rustls error somewhere in `error`'s chain. An `io::Error` wrapping
/// one hides it from `source()` (which skips to the wrapped error's own
/// source), so it is looked for inside each `io::Error` too.
fn find_rustls<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            if let Some(found) = find_rustls(inner) {
                return Some(found);
            }
        }
        current = e.source();
    }
    None
}

/// Whether a node sends this alert because of our client certificate (or
/// its absence).
fn is_about_our_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::NoCertificate
    )
}

/// A TLS alert in words: `CertificateRequired` is "certificate required".
fn alert_words(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::UnknownCA => "unknown CA".to_string(),
        other => camel_words(&format!("{other:?}")),
    }
}

/// `UnknownIssuer` is "unknown issuer"; `Unknown(42)` stays as it is.
fn camel_words(name: &str) -> String {
    let mut words = String::with_capacity(name.len() + 4);
    for (i, c) in name.char_indices() {
        if c == '(' {
            words.push(' ');
            words.push_str(&name[i..]);
            return words;
        }
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words
}

/// A name a certificate presents, as webpki prints it (`DnsName("a.b")`,
/// `IpAddress(10.0.0.1)`), without the wrapping.
fn presented_name(presented: &str) -> String {
    let unwrap = |prefix: &str| {
        presented
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(')'))
            .map(|inner| inner.trim_matches('"').to_string())
    };
    unwrap("DnsName(")
        .or_else(|| unwrap("IpAddress("))
        .or_else(|| unwrap("UniformResourceIdentifier("))
        .unwrap_or_else(|| presented.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> SocketAddr {
        "127.0.0.1:8043".parse().unwrap()
    }

    fn wrapped(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn a_certificate_from_another_ca_names_the_ca_file_and_the_name_checked() {
        let context = TlsContext {
            ca_file: Some("/etc/alternator-dns/ca.pem".into()),
            ..TlsContext::default()
        };
        let e = wrapped(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        let failure = context.io_failure(node(), &e).expect("found");
        assert!(
            matches!(failure, FetchError::NodeCertificate(_)),
            "{failure:?}"
        );
        assert_eq!(
            failure.to_string(),
            "TLS: our verification of node 127.0.0.1:8043's certificate failed: it is not \
             signed by a CA in --ca-file /etc/alternator-dns/ca.pem"
        );
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert!(context
            .failure(node(), &expired)
            .expect("found")
            .to_string()
            .ends_with(
                "it has expired (checked against --ca-file /etc/alternator-dns/ca.pem, \
                     for the node's address 127.0.0.1 (no --tls-server-name))"
            ),);
        assert!(failure.hint().contains("--ca-file"), "{}", failure.hint());
    }

    #[test]
    fn names_a_certificate_presents_are_listed_without_debug_wrapping() {
        let context = TlsContext {
            server_name: Some("alternator.internal".into()),
            ..TlsContext::default()
        };
        let e = rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: rustls_pki_types::ServerName::try_from("alternator.internal").unwrap(),
            presented: vec![
                "DnsName(\"other.internal\")".into(),
                "IpAddress(10.0.0.1)".into(),
            ],
        });
        let text = context.failure(node(), &e).expect("found").to_string();
        assert!(
            text.contains(
                "it is not valid for the name alternator.internal (--tls-server-name); \
                 it names other.internal, 10.0.0.1"
            ),
            "{text}"
        );
        assert!(!text.contains("DnsName"), "{text}");
    }

    #[test]
    fn alerts_about_certificates_blame_our_client_certificate() {
        let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        let none = TlsContext::default().io_failure(node(), &wrapped(alert.clone()));
        let text = none.expect("found").to_string();
        assert_eq!(
            text,
            "TLS: node 127.0.0.1:8043 wants a client certificate, and none is configured (TLS \
             alert: certificate required); give --client-cert and --client-key"
        );
        let with_cert = TlsContext {
            client_cert: Some("/etc/c.pem".into()),
            ..TlsContext::default()
        };
        let bad = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        let failure = with_cert.io_failure(node(), &wrapped(bad)).expect("found");
        assert!(matches!(failure, FetchError::ClientCertificate(_)));
        assert!(
            failure.to_string().contains(
                "refused our client certificate --client-cert /etc/c.pem (TLS alert: unknown CA)"
            ),
            "{failure}"
        );
        assert!(failure.hint().contains("--client-cert"));
        // Other alerts are not about our certificate.
        let other = rustls::Error::AlertReceived(AlertDescription::HandshakeFailure);
        let failure = with_cert.failure(node(), &other).expect("found");
        assert!(matches!(failure, FetchError::Tls(_)));
        assert!(
            failure.to_string().contains("handshake failure"),
            "{failure}"
        );
    }

    #[test]
    fn errors_without_tls_are_not_claimed() {
        let plain = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert!(TlsContext::default().io_failure(node(), &plain).is_none());
        assert_eq!(camel_words("CertificateRequired"), "certificate required");
        assert_eq!(camel_words("Unknown(42)"), "unknown (42)");
    }
}
