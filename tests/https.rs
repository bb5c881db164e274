//! The real binary against simulated HTTPS clusters: CA files, a wrong CA,
//! client certificates, verification off, one certificate for a DNS name.
//!
//! Node addresses 127.0.N.x: see cluster.rs.

mod support;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use alternator_sim::{SimCluster, SimTls};
use support::cluster_checks::*;
use support::*;

/// Test certificates made with rcgen, and a directory for their PEM files:
/// the crate's own unit-test helpers (each test uses part of them).
use alternator_sim::test_pki as pki;

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// An HTTPS cluster of `count` nodes of test `test_no`, all in dc1/rack1.
fn https_cluster(test_no: u8, count: u8, tls: SimTls) -> (SimCluster, Vec<IpAddr>) {
    let addrs = nodes(test_no, count);
    let sim = SimCluster::start_https(&addrs, 0, tls).expect("start the HTTPS cluster");
    assert!(sim.is_https());
    (sim, addrs)
}

/// `fast_args` over HTTPS with `tls` flags.
fn https_args(sim: &SimCluster, seeds: &[IpAddr], tls: &[&str]) -> Vec<String> {
    with(
        with(fast_args(sim, seeds), &["--alternator-scheme", "https"]),
        tls,
    )
}

/// Checks for `wait` that the responder never learns a list: no such log
/// line, and the answers stay the seeds.
fn assert_never_learns(r: &Responder, seeds: &[IpAddr], wait: Duration) {
    let mut client = r.client();
    assert_stays(r, &mut client, &[(DOMAIN, seeds.to_vec())], wait);
    assert!(
        !r.learnt_cluster_list(),
        "learnt a list it should not have; log:\n{}",
        r.log_text()
    );
}

fn ip_sans(addrs: &[IpAddr]) -> Vec<String> {
    addrs.iter().map(ToString::to_string).collect()
}

// 8. HTTPS with a CA file: the list is learnt, and a node added later appears.
#[test]
fn https_with_a_ca_file_learns_the_cluster() {
    let dir = pki::TempDir::new();
    let ca = pki::TestCa::new("cluster CA");
    // One certificate for every node, the one added later included.
    let server = ca.server(&ip_sans(&nodes(108, 3)));
    let (sim, n) = https_cluster(108, 2, server.sim_tls());
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let r = Responder::start(&https_args(
        &sim,
        &n[..1],
        &["--ca-file", path_str(&ca_file)],
    ));
    r.wait_for_cluster_list();
    let mut client = r.client();
    expect_served(&r, &mut client, DOMAIN, &n);
    let third = node(108, 3);
    sim.add_node(third).expect("add a node");
    expect_served(&r, &mut client, DOMAIN, &[n[0], n[1], third]);
    assert!(
        sim.health_requests(third) > 0,
        "the new node was not probed"
    );
}

// 8b. A CA that did not sign the nodes' certificate: nothing is learnt, the
// log says which side failed and what to check, the seeds are reported as
// unverified; a reload with the right CA file ends it.
#[test]
fn https_with_the_wrong_ca_keeps_the_seeds_and_logs_the_certificate_error() {
    const UNCONFIRMED: &str = "which no /localnodes answer has confirmed";
    let dir = pki::TempDir::new();
    let ca = pki::TestCa::new("cluster CA");
    let other = pki::TestCa::new("some other CA");
    let (sim, n) = https_cluster(109, 3, ca.server(&ip_sans(&nodes(109, 3))).sim_tls());
    let wrong = dir.write("other-ca.pem", &other.cert_pem);
    let right = dir.write("ca.pem", &ca.cert_pem);
    let config = |ca_file: &Path| format!("ca-file = \"{}\"\n", path_str(ca_file));
    let file = dir.write("alternator-dns.toml", config(&wrong));
    let mut r = Responder::start(&https_args(&sim, &n[..1], &["--config", path_str(&file)]));
    assert!(r.wait_for_log(UNCONFIRMED, SETTLE), "{}", r.log_text());
    let line = log_lines(&r, &[UNCONFIRMED]).remove(0);
    assert!(
        line.contains("ERROR")
            && line.contains(&format!(
                "our verification of node {}'s certificate failed: it is not signed by a CA in \
                 --ca-file {}",
                sim.socket_addr(n[0]),
                wrong.display()
            ))
            && line.contains("check --ca-file"),
        "the failing side, the node, the CA file and the option are not named: {line}"
    );
    assert!(!line.contains("UnknownIssuer"), "{line}");
    assert!(
        r.wait_for_metric("alternator_dns_unverified_seeds", &[], 1.0, SETTLE),
        "{:?}",
        r.metrics()
    );
    let (status, body) = r.readyz().expect("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("--ca-file"), "{body}");
    assert_never_learns(&r, &n[..1], Duration::from_millis(1000));

    // The right CA, on reload: the cluster is learnt and the state clears.
    std::fs::write(&file, config(&right)).expect("rewrite the config file");
    let (exited, _) = r.signal(libc::SIGHUP, Duration::ZERO);
    assert!(exited.is_none());
    r.wait_for_cluster_list();
    expect_served(&r, &mut r.client(), DOMAIN, &n);
    assert!(
        r.wait_for_metric("alternator_dns_unverified_seeds", &[], 0.0, SETTLE),
        "{:?}",
        r.metrics()
    );
    assert!(
        wait_until(SETTLE, || r.readyz() == Some((200, "ready\n".to_string()))),
        "{:?}",
        r.readyz()
    );
}

// 8c. A cluster requiring client certificates (require_client_auth).
#[test]
fn https_client_certificates_are_needed_where_the_cluster_requires_them() {
    let dir = pki::TempDir::new();
    let ca = pki::TestCa::new("cluster CA");
    let clients = pki::TestCa::new("client CA");
    let server = ca.server(&ip_sans(&nodes(110, 3)));
    let tls = SimTls {
        client_ca_pem: Some(clients.cert_pem.clone()),
        ..server.sim_tls()
    };
    let (sim, n) = https_cluster(110, 3, tls);
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let cert = clients.client("alternator-dns.test");
    let cert_file = dir.write("client.pem", &cert.cert_pem);
    let key_file = dir.write("client.key", &cert.key_pem);

    // Both responders run at once; only the one with a certificate learns.
    let without = Responder::start(&https_args(
        &sim,
        &n[..1],
        &["--ca-file", path_str(&ca_file)],
    ));
    let with_cert = Responder::start(&https_args(
        &sim,
        &n[..1],
        &[
            "--ca-file",
            path_str(&ca_file),
            "--client-cert",
            path_str(&cert_file),
            "--client-key",
            path_str(&key_file),
        ],
    ));
    with_cert.wait_for_cluster_list();
    expect_served(&with_cert, &mut with_cert.client(), DOMAIN, &n);
    assert_never_learns(&without, &n[..1], Duration::from_millis(1000));
    // Logged as the node's refusal of a client certificate we lack, naming
    // the node and the options.
    let refused = log_lines(&without, &["no node answered /localnodes"]);
    assert!(
        refused.iter().any(
            |l| l.contains("wants a client certificate, and none is configured")
                && l.contains(&sim.socket_addr(n[0]).to_string())
                && l.contains("--client-cert")
        ),
        "{}",
        without.log_text()
    );
    // A certificate the nodes do not trust: refused as such.
    let stranger = pki::TestCa::new("stranger CA").client("alternator-dns.test");
    let stranger_cert = dir.write("stranger.pem", &stranger.cert_pem);
    let stranger_key = dir.write("stranger.key", &stranger.key_pem);
    let untrusted = Responder::start(&https_args(
        &sim,
        &n[..1],
        &[
            "--ca-file",
            path_str(&ca_file),
            "--client-cert",
            path_str(&stranger_cert),
            "--client-key",
            path_str(&stranger_key),
        ],
    ));
    let needle = format!(
        "refused our client certificate --client-cert {}",
        stranger_cert.display()
    );
    assert!(
        untrusted.wait_for_log(&needle, SETTLE),
        "{}",
        untrusted.log_text()
    );
}

// 8d. Verification off: a self-signed cluster is learnt, with a warning.
#[test]
fn https_insecure_skip_verify_accepts_a_self_signed_cluster_and_warns() {
    let server = pki::self_signed_server(&ip_sans(&nodes(111, 3)));
    let (sim, n) = https_cluster(111, 3, server.sim_tls());
    let r = Responder::start(&https_args(
        &sim,
        &n[..1],
        &["--tls-insecure-skip-verify", "true"],
    ));
    r.wait_for_cluster_list();
    expect_served(&r, &mut r.client(), DOMAIN, &n);
    let warning = log_lines(&r, &["verification", "DISABLED"]);
    assert_eq!(warning.len(), 1, "{}", r.log_text());
    assert!(warning[0].contains("WARN"), "{}", warning[0]);
}

// 8e. One certificate for the whole cluster, naming only a DNS name.
#[test]
fn https_tls_server_name_verifies_nodes_against_a_dns_name() {
    let dir = pki::TempDir::new();
    let ca = pki::TestCa::new("cluster CA");
    let server = ca.server(&["alternator.cluster.test".to_string()]);
    let (sim, n) = https_cluster(112, 3, server.sim_tls());
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let by_name = Responder::start(&https_args(
        &sim,
        &n[..1],
        &[
            "--ca-file",
            path_str(&ca_file),
            "--tls-server-name",
            "alternator.cluster.test",
        ],
    ));
    // Without it, the nodes' IP addresses are not in the certificate.
    let by_ip = Responder::start(&https_args(
        &sim,
        &n[..1],
        &["--ca-file", path_str(&ca_file)],
    ));
    by_name.wait_for_cluster_list();
    expect_served(&by_name, &mut by_name.client(), DOMAIN, &n);
    assert!(
        by_ip.wait_for_log("no node answered /localnodes", SETTLE),
        "{}",
        by_ip.log_text()
    );
    assert_never_learns(&by_ip, &n[..1], Duration::from_millis(600));
}
