//! The errors the poller and the prober share: what went wrong with a node,
//! in words, and [`FetchError::hint`]: what to check. Both report failures
//! to the same log lines and metrics, so one type keeps their wording alike.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// A configuration problem found while building the TLS configuration (or
/// the client); each names the option and the file involved.
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

/// Why one request (a `/localnodes` poll or a health probe) gave no
/// response.
#[derive(Debug, Error)]
pub enum FetchError {
    /// The whole exchange did not finish within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// TCP connect or TLS handshake failed (refused, unreachable, untrusted
    /// certificate, ...); the message carries the error chain.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The node refused the TCP connection: nothing listens on the port.
    #[error("cannot connect: {0}")]
    Refused(String),
    /// Connected, but sending the request or reading the response head
    /// failed: the peer closed the connection, sent a TLS alert after the
    /// handshake (such as a refused client certificate under TLS 1.3), or
    /// answered something that is not HTTP/1.
    #[error("request failed: {0}")]
    Request(String),
    /// The node closed (or reset) the connection before its answer was
    /// whole.
    #[error("request failed: {0}")]
    Closed(String),
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
            FetchError::Connect(_) | FetchError::Refused(_) => {
                "check that the node is up, and --seed, --alternator-port and --alternator-scheme"
            }
            FetchError::Request(_) => "check --alternator-scheme and --alternator-port",
            FetchError::Closed(_) => {
                "check that the node is up (it closed the connection without answering), and \
                 --alternator-scheme"
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_skips_repeats() {
        let inner = io::Error::other("inner problem");
        let outer = io::Error::other(inner);
        // `io::Error` displays its payload and forwards `source` past it.
        assert_eq!(error_chain(&outer), "inner problem");
    }
}
