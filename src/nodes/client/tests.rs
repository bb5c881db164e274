//! Building the client from TLS settings, and plain requests.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

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
