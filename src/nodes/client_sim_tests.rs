//! The Alternator client against the simulated cluster: datacenters and
//! racks, HTTPS, and hostile faults, through [`AlternatorClient`] (and a raw
//! socket where the bytes on the wire matter). Loopback only; every wait is
//! bounded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::nodes::client::{AlternatorClient, FetchError, Scheme, TlsSettings};
use alternator_sim::test_pki::{self_signed_server, CertKey, TempDir, TestCa};
use alternator_sim::{
    Fault, SimCluster, SimNode, SimOptions, SimTls, ENDLESS_CHUNK_BYTES, HUGE_BODY_BYTES,
    MANY_ENTRIES,
};

/// Bound on every exchange that is expected to succeed.
const T: Duration = Duration::from_secs(5);

/// Body limit for ordinary exchanges.
const MAX: usize = 1 << 20;

/// The DNS name in the test server certificates.
const NAME: &str = "alternator.test";

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strings(addrs: &[IpAddr]) -> Vec<String> {
    sorted(addrs.iter().map(ToString::to_string).collect())
}

fn http_client() -> AlternatorClient {
    AlternatorClient::new(Scheme::Http, &TlsSettings::default()).unwrap()
}

fn https_client(tls: TlsSettings) -> AlternatorClient {
    AlternatorClient::new(Scheme::Https, &tls).unwrap()
}

/// `/localnodes` (with `query`, e.g. `"?dc=dc2"`) on `node`, sorted.
async fn localnodes(
    client: &AlternatorClient,
    c: &SimCluster,
    node: IpAddr,
    query: &str,
) -> Vec<String> {
    let path = format!("/localnodes{query}");
    let reply = client
        .get(c.socket_addr(node), &path, T, MAX)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{path} on {node}");
    sorted(serde_json::from_slice(&reply.body).expect("JSON array of strings"))
}

/// A CA, a server certificate signed by it for 127.0.0.1..=8, `::1` and
/// [`NAME`], and the CA's PEM in a temp dir.
struct Pki {
    ca: TestCa,
    server: CertKey,
    dir: TempDir,
    ca_file: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let ca = TestCa::new("alternator-dns test CA");
        let mut sans: Vec<String> = (1..=8).map(|d| v4(d).to_string()).collect();
        sans.push("::1".into());
        sans.push(NAME.into());
        let server = ca.server(&sans);
        let dir = TempDir::new();
        let ca_file = dir.write("ca.pem", &ca.cert_pem);
        Pki {
            ca,
            server,
            dir,
            ca_file,
        }
    }

    fn trusting(&self) -> TlsSettings {
        TlsSettings {
            ca_file: Some(self.ca_file.clone()),
            ..TlsSettings::default()
        }
    }
}

fn start_https(addrs: &[IpAddr], tls: SimTls) -> SimCluster {
    SimCluster::start_https(addrs, 0, tls).expect("start HTTPS cluster")
}

/// A failed handshake or a connection closed under the request.
fn is_handshake_rejection(e: &FetchError) -> bool {
    matches!(
        e,
        FetchError::Connect(_)
            | FetchError::Request(_)
            | FetchError::ClientCertificate(_)
            | FetchError::Tls(_)
    )
}

// ---- datacenters and racks ----

/// 1: dc1/r1, 2: dc1/r2, 3: dc2/r1, 4: dc2/r3.
fn four_nodes() -> Vec<SimNode> {
    vec![
        SimNode::new(v4(1), "dc1", "r1"),
        SimNode::new(v4(2), "dc1", "r2"),
        SimNode::new(v4(3), "dc2", "r1"),
        SimNode::new(v4(4), "dc2", "r3"),
    ]
}

#[tokio::test]
async fn localnodes_filters_by_dc_and_rack() {
    let c = SimCluster::start_with(&four_nodes(), 0, SimOptions::default()).unwrap();
    let h = http_client();
    let dc1 = strings(&[v4(1), v4(2)]);
    let dc2 = strings(&[v4(3), v4(4)]);
    // Without parameters: the queried node's own datacenter.
    assert_eq!(localnodes(&h, &c, v4(1), "").await, dc1);
    assert_eq!(localnodes(&h, &c, v4(2), "").await, dc1);
    assert_eq!(localnodes(&h, &c, v4(3), "").await, dc2);
    // dc, rack, both, and empty values.
    assert_eq!(localnodes(&h, &c, v4(1), "?dc=dc2").await, dc2);
    assert_eq!(localnodes(&h, &c, v4(3), "?dc=dc1").await, dc1);
    assert_eq!(
        localnodes(&h, &c, v4(1), "?rack=r2").await,
        strings(&[v4(2)])
    );
    assert_eq!(
        localnodes(&h, &c, v4(3), "?rack=r1").await,
        strings(&[v4(3)])
    );
    assert_eq!(
        localnodes(&h, &c, v4(1), "?dc=dc2&rack=r1").await,
        strings(&[v4(3)])
    );
    assert_eq!(
        localnodes(&h, &c, v4(1), "?rack=r1&dc=dc2").await,
        strings(&[v4(3)])
    );
    assert_eq!(localnodes(&h, &c, v4(1), "?dc=&rack=").await, dc1);
    assert_eq!(localnodes(&h, &c, v4(1), "?dc=dc2&rack=").await, dc2);
    assert_eq!(
        localnodes(&h, &c, v4(1), "?dc=&rack=r2").await,
        strings(&[v4(2)])
    );
    assert_eq!(localnodes(&h, &c, v4(1), "?dc=dc%32").await, dc2);
    // Unknown dc or rack (also a rack of another dc): 200 and [].
    assert!(localnodes(&h, &c, v4(1), "?dc=nope").await.is_empty());
    assert!(localnodes(&h, &c, v4(1), "?rack=nope").await.is_empty());
    assert!(localnodes(&h, &c, v4(1), "?rack=r3").await.is_empty());
    assert!(localnodes(&h, &c, v4(1), "?dc=dc1&rack=r3")
        .await
        .is_empty());
    // Membership still applies.
    c.set_listed(v4(4), false);
    assert_eq!(
        localnodes(&h, &c, v4(1), "?dc=dc2").await,
        strings(&[v4(3)])
    );
    c.set_listed(v4(4), true);
}

#[tokio::test]
async fn nodes_move_and_join_other_datacenters() {
    let c = SimCluster::start_with(&four_nodes(), 0, SimOptions::default()).unwrap();
    let h = http_client();
    assert_eq!(c.location(v4(2)), Some(("dc1".into(), "r2".into())));
    c.set_location(v4(2), "dc2", "r3");
    assert_eq!(c.location(v4(2)), Some(("dc2".into(), "r3".into())));
    assert_eq!(localnodes(&h, &c, v4(1), "").await, strings(&[v4(1)]));
    // The moved node now answers for its new datacenter.
    assert_eq!(
        localnodes(&h, &c, v4(2), "").await,
        strings(&[v4(2), v4(3), v4(4)])
    );
    assert_eq!(
        localnodes(&h, &c, v4(1), "?dc=dc2&rack=r3").await,
        strings(&[v4(2), v4(4)])
    );
    // Unknown nodes and empty names are ignored.
    c.set_location(v4(99), "dc1", "r1");
    c.set_location(v4(2), "", "r1");
    assert_eq!(c.location(v4(2)), Some(("dc2".into(), "r3".into())));
    assert_eq!(c.location(v4(99)), None);

    c.add_node_in(v4(5), "dc3", "r9").unwrap();
    assert_eq!(localnodes(&h, &c, v4(5), "").await, strings(&[v4(5)]));
    assert_eq!(
        localnodes(&h, &c, v4(1), "?dc=dc3").await,
        strings(&[v4(5)])
    );
    assert_eq!(
        c.add_node_in(v4(6), "", "r1").unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    // add_node keeps the default location.
    c.add_node(v4(6)).unwrap();
    assert_eq!(c.location(v4(6)), Some(("dc1".into(), "rack1".into())));
    assert_eq!(
        localnodes(&h, &c, v4(6), "").await,
        strings(&[v4(1), v4(6)])
    );
}

#[tokio::test]
async fn legacy_mode_ignores_dc_and_rack() {
    let options = SimOptions {
        legacy_ignores_dc_rack: true,
        ..SimOptions::default()
    };
    let c = SimCluster::start_with(&four_nodes(), 0, options).unwrap();
    let h = http_client();
    let dc1 = strings(&[v4(1), v4(2)]);
    for query in [
        "",
        "?dc=dc2",
        "?rack=r2",
        "?dc=dc2&rack=r1",
        "?dc=nope",
        "?rack=nope",
    ] {
        assert_eq!(localnodes(&h, &c, v4(1), query).await, dc1, "{query}");
    }
    assert_eq!(
        localnodes(&h, &c, v4(3), "?dc=dc1").await,
        strings(&[v4(3), v4(4)])
    );
}

#[test]
fn start_with_rejects_bad_input() {
    let dup = [
        SimNode::new(v4(1), "dc1", "r1"),
        SimNode::new(v4(1), "dc2", "r1"),
    ];
    let err = SimCluster::start_with(&dup, 0, SimOptions::default()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let empty = [SimNode::new(v4(1), "dc1", "")];
    let err = SimCluster::start_with(&empty, 0, SimOptions::default()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let bad_tls = SimOptions {
        tls: Some(SimTls {
            cert_chain_pem: "not PEM".into(),
            key_pem: String::new(),
            client_ca_pem: None,
        }),
        ..SimOptions::default()
    };
    let err = SimCluster::start_with(&[SimNode::new(v4(1), "dc1", "r1")], 0, bad_tls).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    // A key that is not the certificate's.
    let pki = Pki::new();
    let other = pki.ca.server(&["127.0.0.1"]);
    let mismatched = SimOptions {
        tls: Some(SimTls {
            cert_chain_pem: pki.server.cert_pem.clone(),
            key_pem: other.key_pem,
            client_ca_pem: None,
        }),
        ..SimOptions::default()
    };
    let err =
        SimCluster::start_with(&[SimNode::new(v4(1), "dc1", "r1")], 0, mismatched).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}

// ---- HTTPS ----

#[tokio::test]
async fn https_localnodes_and_health_with_the_ca_file() {
    let pki = Pki::new();
    let c = start_https(&[v4(1), v4(2), v4(3)], pki.server.sim_tls());
    assert!(c.is_https());
    let client = https_client(pki.trusting());
    assert_eq!(client.scheme(), Scheme::Https);
    for node in c.nodes() {
        assert_eq!(localnodes(&client, &c, node, "").await, strings(&c.nodes()));
    }
    // Again on the pooled connection, and the health check.
    let to = c.socket_addr(v4(1));
    assert_eq!(localnodes(&client, &c, v4(1), "?dc=dc1").await.len(), 3);
    let health = client.get(to, "/", T, MAX).await.unwrap();
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, format!("healthy: {to}"));
    assert_eq!(c.localnodes_requests(v4(1)), 2);
    assert_eq!(c.health_requests(v4(1)), 1);
    // Plain HTTP to an HTTPS node fails (the TLS server answers garbage or
    // closes), within the timeout.
    let err = http_client()
        .get(to, "/", Duration::from_secs(2), MAX)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Request(_) | FetchError::Timeout(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn https_rejects_a_server_signed_by_another_ca() {
    let pki = Pki::new();
    let c = start_https(&[v4(1)], pki.server.sim_tls());
    let other = TestCa::new("some other CA");
    let other_file = pki.dir.write("other-ca.pem", &other.cert_pem);
    let client = https_client(TlsSettings {
        ca_file: Some(other_file),
        ..TlsSettings::default()
    });
    let err = client
        .get(c.socket_addr(v4(1)), "/localnodes", T, MAX)
        .await
        .unwrap_err();
    match &err {
        FetchError::NodeCertificate(msg) => assert!(
            msg.contains("it is not signed by a CA in --ca-file")
                && msg.contains("other-ca.pem")
                && msg.contains(&c.socket_addr(v4(1)).to_string()),
            "{msg}"
        ),
        other => panic!("expected our verification to fail, got {other:?}"),
    }
    assert!(err.hint().contains("--ca-file"), "{}", err.hint());
    assert_eq!(c.localnodes_requests(v4(1)), 0);
}

#[tokio::test]
async fn https_with_required_client_certificates() {
    let pki = Pki::new();
    let client_ca = TestCa::new("client CA");
    let mut tls = pki.server.sim_tls();
    tls.client_ca_pem = Some(client_ca.cert_pem.clone());
    let c = start_https(&[v4(1)], tls);
    let to = c.socket_addr(v4(1));

    // No certificate: the handshake is refused (under TLS 1.3 the alert
    // arrives after the client's side of the handshake, so while reading).
    let err = https_client(pki.trusting())
        .get(to, "/localnodes", T, MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::ClientCertificate(_)), "{err:?}");
    assert!(
        err.to_string().contains(
            "wants a client certificate, and none is configured (TLS alert: certificate required)"
        ),
        "{err}"
    );
    assert!(err.hint().contains("--client-cert"), "{}", err.hint());

    // A certificate from the right CA works.
    let good = client_ca.client("client.alternator.test");
    let mut with_cert = pki.trusting();
    with_cert.client_cert = Some(pki.dir.write("client.pem", &good.cert_pem));
    with_cert.client_key = Some(pki.dir.write("client.key", &good.key_pem));
    let client = https_client(with_cert);
    let reply = client.get(to, "/localnodes", T, MAX).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"[\"127.0.0.1\"]");

    // One from another CA is refused.
    let stranger = TestCa::new("stranger").client("client.alternator.test");
    let mut wrong = pki.trusting();
    wrong.client_cert = Some(pki.dir.write("stranger.pem", &stranger.cert_pem));
    wrong.client_key = Some(pki.dir.write("stranger.key", &stranger.key_pem));
    let err = https_client(wrong)
        .get(to, "/localnodes", T, MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::ClientCertificate(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("refused our client certificate --client-cert"),
        "{err}"
    );
    assert_eq!(c.localnodes_requests(v4(1)), 1);
}

#[tokio::test]
async fn insecure_skip_verify_accepts_a_self_signed_server() {
    let pki = Pki::new();
    let c = start_https(&[v4(1)], self_signed_server(&["127.0.0.1"]).sim_tls());
    let to = c.socket_addr(v4(1));
    let err = https_client(pki.trusting())
        .get(to, "/", T, MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NodeCertificate(_)), "{err:?}");
    let insecure = https_client(TlsSettings {
        insecure_skip_verify: true,
        ..TlsSettings::default()
    });
    let reply = insecure.get(to, "/", T, MAX).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    // Also with a name the certificate does not have.
    let insecure_named = https_client(TlsSettings {
        insecure_skip_verify: true,
        server_name: Some("whatever.test".into()),
        ..TlsSettings::default()
    });
    assert_eq!(
        insecure_named.get(to, "/", T, MAX).await.unwrap().status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn server_name_verifies_a_certificate_without_ip_addresses() {
    let pki = Pki::new();
    let dns_only = pki.ca.server(&[NAME]);
    let c = start_https(&[v4(1), v4(2)], dns_only.sim_tls());
    let to = c.socket_addr(v4(2));
    // Verified against the IP address: the certificate does not name it.
    let err = https_client(pki.trusting())
        .get(to, "/", T, MAX)
        .await
        .unwrap_err();
    match &err {
        FetchError::NodeCertificate(msg) => assert!(
            msg.contains(&format!(
                "it is not valid for the node's address 127.0.0.2 (no --tls-server-name); \
                 it names {NAME}"
            )),
            "{msg}"
        ),
        other => panic!("expected our verification to fail, got {other:?}"),
    }
    // Against the configured name: accepted, and the name is the Host.
    let mut named = pki.trusting();
    named.server_name = Some(NAME.into());
    let client = https_client(named);
    let reply = client.get(to, "/", T, MAX).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, format!("healthy: {NAME}:{}", c.port()));
    assert_eq!(
        localnodes(&client, &c, v4(1), "").await,
        strings(&c.nodes())
    );
    // Another name is refused.
    let mut wrong = pki.trusting();
    wrong.server_name = Some("other.test".into());
    let err = https_client(wrong).get(to, "/", T, MAX).await.unwrap_err();
    assert!(matches!(err, FetchError::NodeCertificate(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("not valid for the name other.test (--tls-server-name)"),
        "{err}"
    );
}

#[tokio::test]
async fn https_over_ipv6_loopback() {
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    if std::net::TcpListener::bind((v6, 0)).is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let pki = Pki::new();
    let c = start_https(&[v6], pki.server.sim_tls());
    let client = https_client(pki.trusting());
    assert_eq!(
        localnodes(&client, &c, v6, "").await,
        vec!["::1".to_string()]
    );
    let to = c.socket_addr(v6);
    let reply = client.get(to, "/", T, MAX).await.unwrap();
    assert_eq!(reply.body, format!("healthy: [::1]:{}", c.port()));
}

#[tokio::test]
async fn https_faults_down_hang_and_back() {
    let pki = Pki::new();
    let c = start_https(&[v4(1), v4(2)], pki.server.sim_tls());
    let client = https_client(pki.trusting());
    let to = c.socket_addr(v4(1));
    assert_eq!(
        client.get(to, "/", T, MAX).await.unwrap().status,
        StatusCode::OK
    );
    // Down closes the pooled TLS connection (without close_notify) and the
    // listener: the request right after it may still pick the pooled
    // connection before its end is noticed; then connecting is refused.
    c.set_fault(v4(1), Fault::Down);
    let err = client.get(to, "/", T, MAX).await.unwrap_err();
    assert!(is_handshake_rejection(&err), "{err:?}");
    let err = client.get(to, "/", T, MAX).await.unwrap_err();
    assert!(matches!(err, FetchError::Connect(_)), "{err:?}");
    c.set_fault(v4(1), Fault::Hang);
    let started = Instant::now();
    let err = client
        .get(to, "/", Duration::from_millis(300), MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < T);
    c.set_fault(v4(1), Fault::Status500);
    let reply = client.get(to, "/localnodes", T, MAX).await.unwrap();
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    c.set_fault(v4(1), Fault::None);
    assert_eq!(
        localnodes(&client, &c, v4(1), "").await,
        strings(&c.nodes())
    );
}

/// The health probe (its own connection, not the client's pool) with the
/// client's TLS settings: verified against the node's address or the
/// configured name, one kept connection, failures and recovery.
#[tokio::test]
async fn health_probes_over_https() {
    let pki = Pki::new();
    let c = start_https(&[v4(1), v4(2)], pki.server.sim_tls());
    let to = c.socket_addr(v4(1));
    let mut probe = https_client(pki.trusting()).health_probe(to, MAX);
    for _ in 0..3 {
        assert_eq!(probe.probe(T).await.unwrap(), StatusCode::OK);
        assert!(probe.has_kept_connection());
    }
    assert_eq!(c.health_requests(v4(1)), 3);

    // Verified like the client: another CA is refused, a DNS-only
    // certificate needs the configured name.
    let other = TestCa::new("some other CA");
    let other_file = pki.dir.write("other-ca.pem", &other.cert_pem);
    let untrusting = https_client(TlsSettings {
        ca_file: Some(other_file),
        ..TlsSettings::default()
    });
    let err = untrusting.health_probe(to, MAX).probe(T).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::NodeCertificate(m) if m.contains("not signed by a CA")),
        "{err:?}"
    );
    let d = start_https(&[v4(3)], pki.ca.server(&[NAME]).sim_tls());
    let named_to = d.socket_addr(v4(3));
    let err = https_client(pki.trusting())
        .health_probe(named_to, MAX)
        .probe(T)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NodeCertificate(_)), "{err:?}");
    let mut named = pki.trusting();
    named.server_name = Some(NAME.into());
    let mut probe_named = https_client(named).health_probe(named_to, MAX);
    assert_eq!(probe_named.probe(T).await.unwrap(), StatusCode::OK);

    // Down, hung, failing, back. Down closes the kept connection and the
    // listener: the probe notices the closed connection and connects anew,
    // which is refused.
    c.set_fault(v4(1), Fault::Down);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = probe.probe(T).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Refused(m) if m.contains("refused")),
        "{err:?}"
    );
    assert!(!probe.has_kept_connection());
    c.set_fault(v4(1), Fault::Hang);
    let err = probe.probe(Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, FetchError::Timeout(_)), "{err:?}");
    c.set_fault(v4(1), Fault::Status500);
    assert_eq!(
        probe.probe(T).await.unwrap(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    c.set_fault(v4(1), Fault::None);
    assert_eq!(probe.probe(T).await.unwrap(), StatusCode::OK);
    assert!(probe.has_kept_connection());
}

// ---- hostile faults ----

#[tokio::test]
async fn tls_hang_is_bounded_by_the_timeout() {
    let pki = Pki::new();
    let c = start_https(&[v4(1)], pki.server.sim_tls());
    let client = https_client(pki.trusting());
    let to = c.socket_addr(v4(1));
    c.set_fault(v4(1), Fault::TlsHang);
    for _ in 0..2 {
        let started = Instant::now();
        let err = client
            .get(to, "/localnodes", Duration::from_millis(300), MAX)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Timeout(_)), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < T);
    }
    assert_eq!(c.localnodes_requests(v4(1)), 0);
    // A raw connection is accepted but gets no handshake answer.
    let mut raw = tokio::time::timeout(T, tokio::net::TcpStream::connect(to))
        .await
        .unwrap()
        .unwrap();
    raw.write_all(b"\x16\x03\x01\x00\x05hello").await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_millis(200), raw.read(&mut buf)).await;
    assert!(read.is_err(), "the node answered: {read:?}");
    // Down closes it.
    c.set_fault(v4(1), Fault::Down);
    let read = tokio::time::timeout(T, raw.read(&mut buf)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    c.set_fault(v4(1), Fault::None);
    // Healthy again. The listener is bound again when set_fault returns, but
    // a connection racing the old listener's close can still be reset: the
    // node must answer within the bound, not necessarily the first time.
    let deadline = Instant::now() + T;
    let reply = loop {
        match client.get(to, "/localnodes", T, MAX).await {
            Ok(reply) => break reply,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying after {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the node did not come back within {T:?}: {e:?}"),
        }
    };
    assert_eq!(reply.status, StatusCode::OK);
    let listed: Vec<String> = serde_json::from_slice(&reply.body).expect("JSON array of strings");
    assert_eq!(sorted(listed), strings(&[v4(1)]));

    // Plain HTTP: the connection is never read.
    let plain = SimCluster::start(&[v4(1)], 0).unwrap();
    plain.set_fault(v4(1), Fault::TlsHang);
    let err = http_client()
        .get(
            plain.socket_addr(v4(1)),
            "/",
            Duration::from_millis(300),
            MAX,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Timeout(_)), "{err:?}");
    assert_eq!(plain.health_requests(v4(1)), 0);
}

#[tokio::test]
async fn redirect_is_returned_not_followed() {
    let c = SimCluster::start(&[v4(1)], 0).unwrap();
    let to = c.socket_addr(v4(1));
    c.set_fault(v4(1), Fault::Redirect);
    let h = http_client();
    for path in ["/localnodes?dc=dc1", "/"] {
        let reply = h.get(to, path, T, MAX).await.unwrap();
        assert_eq!(reply.status, StatusCode::FOUND, "{path}");
    }
    assert_eq!(c.localnodes_requests(v4(1)), 1);
    assert_eq!(c.health_requests(v4(1)), 1);
    // The Location header points back at the same URL.
    let head = raw_head(to, "/localnodes?dc=dc1").await;
    assert!(head.starts_with("HTTP/1.1 302"), "{head}");
    let location = format!("location: http://{to}/localnodes?dc=dc1");
    assert!(head.to_ascii_lowercase().contains(&location), "{head}");

    // Over HTTPS too, with an https Location.
    let pki = Pki::new();
    let s = start_https(&[v4(1)], pki.server.sim_tls());
    s.set_fault(v4(1), Fault::Redirect);
    let reply = https_client(pki.trusting())
        .get(s.socket_addr(v4(1)), "/localnodes", T, MAX)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FOUND);
}

/// Sends `GET path` on a raw connection and returns the response head (the
/// body is not read).
async fn raw_head(to: SocketAddr, path: &str) -> String {
    let mut stream = tokio::time::timeout(T, tokio::net::TcpStream::connect(to))
        .await
        .unwrap()
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {to}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(T, async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0, "closed before the head ended");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("response head in time");
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[tokio::test]
async fn huge_body_is_refused_quickly() {
    let c = SimCluster::start(&[v4(1)], 0).unwrap();
    let to = c.socket_addr(v4(1));
    c.set_fault(v4(1), Fault::HugeBody);
    let h = http_client();
    for path in ["/localnodes", "/"] {
        let started = Instant::now();
        let err = h.get(to, path, T, MAX).await.unwrap_err();
        assert!(matches!(err, FetchError::TooLarge(MAX)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    // The body really is streamed: its declared length, and its first
    // megabytes arrive.
    let mut stream = tokio::net::TcpStream::connect(to).await.unwrap();
    stream
        .write_all(format!("GET /localnodes HTTP/1.1\r\nHost: {to}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    tokio::time::timeout(T, async {
        while got.len() < 4 << 20 {
            let n = stream.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0);
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("4 MB in time");
    let text = String::from_utf8_lossy(&got[..4096]).to_ascii_lowercase();
    assert!(
        text.contains(&format!("content-length: {HUGE_BODY_BYTES}")),
        "{text}"
    );
    assert!(
        text.contains("\r\n\r\n[\"127.0.0.1\",\"127.0.0.1\","),
        "{text}"
    );
    drop(stream);

    // Over HTTPS too; and the node recovers for the same client.
    let pki = Pki::new();
    let s = start_https(&[v4(1)], pki.server.sim_tls());
    s.set_fault(v4(1), Fault::HugeBody);
    let client = https_client(pki.trusting());
    let err = client
        .get(s.socket_addr(v4(1)), "/localnodes", T, MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::TooLarge(_)), "{err:?}");
    s.set_fault(v4(1), Fault::None);
    assert_eq!(localnodes(&client, &s, v4(1), "").await, strings(&[v4(1)]));
}

#[tokio::test]
async fn many_entries_lists_a_hundred_thousand_addresses() {
    let c = SimCluster::start(&[v4(1)], 0).unwrap();
    let to = c.socket_addr(v4(1));
    c.set_fault(v4(1), Fault::ManyEntries);
    let h = http_client();
    let reply = h.get(to, "/localnodes", T, 8 << 20).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let entries: Vec<String> = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(entries.len(), MANY_ENTRIES);
    let distinct: std::collections::HashSet<IpAddr> = entries
        .iter()
        .map(|e| e.parse().expect("an address"))
        .collect();
    assert_eq!(distinct.len(), MANY_ENTRIES);
    // Over 1 MiB: refused by the ordinary limit.
    let err = h.get(to, "/localnodes", T, MAX).await.unwrap_err();
    assert!(matches!(err, FetchError::TooLarge(_)), "{err:?}");
    // GET / is unaffected.
    assert_eq!(h.get(to, "/", T, MAX).await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn endless_chunked_body_is_bounded_by_time_or_size() {
    let c = SimCluster::start(&[v4(1)], 0).unwrap();
    let to = c.socket_addr(v4(1));
    c.set_fault(v4(1), Fault::EndlessChunked);
    let h = http_client();
    // By time: 1 MiB takes at least 256 chunk intervals (~0.5 s).
    let started = Instant::now();
    let err = h
        .get(to, "/localnodes", Duration::from_millis(300), MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < T);
    // By size: a few chunks exceed a small limit.
    let started = Instant::now();
    let err = h
        .get(to, "/", T, 4 * ENDLESS_CHUNK_BYTES)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::TooLarge(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The raw body is chunked, without Content-Length.
    let head = raw_head(to, "/localnodes").await.to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    c.set_fault(v4(1), Fault::None);
    assert_eq!(localnodes(&h, &c, v4(1), "").await, strings(&[v4(1)]));
}
