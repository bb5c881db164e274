//! Test certificates made with rcgen (a CA, server and client certificates
//! signed by it, self-signed servers) and a temporary directory for PEM files,
//! for the HTTPS tests of the simulated cluster and of alternator-dns.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::SimTls;

/// A PEM certificate (chain) and its private key.
#[derive(Debug, Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertKey {
    /// Server TLS for the simulated cluster, without client authentication.
    pub fn sim_tls(&self) -> SimTls {
        SimTls {
            cert_chain_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
            client_ca_pem: None,
        }
    }
}

/// A test certificate authority.
pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate with these subject alternative names (IP
    /// addresses or DNS names).
    pub fn server(&self, sans: &[impl AsRef<str>]) -> CertKey {
        self.leaf(sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> CertKey {
        self.leaf(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, sans: &[impl AsRef<str>], usage: ExtendedKeyUsagePurpose) -> CertKey {
        let (params, key) = leaf_params(sans, usage);
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn leaf_params(
    sans: &[impl AsRef<str>],
    usage: ExtendedKeyUsagePurpose,
) -> (CertificateParams, KeyPair) {
    let sans: Vec<String> = sans.iter().map(|s| s.as_ref().to_owned()).collect();
    let mut params = CertificateParams::new(sans.clone()).expect("leaf params");
    params.distinguished_name.push(
        DnType::CommonName,
        sans.first().cloned().unwrap_or_default(),
    );
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    (params, KeyPair::generate().expect("leaf key"))
}

/// A self-signed server certificate (no CA anyone trusts).
pub fn self_signed_server(sans: &[impl AsRef<str>]) -> CertKey {
    let (params, key) = leaf_params(sans, ExtendedKeyUsagePurpose::ServerAuth);
    let cert = params.self_signed(&key).expect("self-signed server");
    CertKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A directory under the system's temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl TempDir {
    /// A fresh, empty directory, unique to this process and call.
    pub fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "alternator-dns-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let file = self.path.join(name);
        std::fs::write(&file, contents).expect("write temp file");
        file
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
