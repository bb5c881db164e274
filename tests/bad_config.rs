//! The exit status of the binary: `--help` lists it, a good configuration
//! checks OK, an address in use is a runtime failure.

mod support;

use std::path::Path;

use alternator_dns::exit;
// `pki` below refers to the library's `SimTls` as `super::SimTls`.
use alternator_dns::sim::SimTls;
use support::*;

/// Test certificates made with rcgen: the crate's own unit-test helpers.
#[path = "../src/sim/test_pki.rs"]
#[allow(dead_code)]
mod pki;

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// A configuration that is fine, to which each case adds its fault (a
/// case that gives `--domain` replaces the usual one).
fn base(case_args: &[String]) -> Vec<String> {
    let mut args: Vec<String> = ["--seed", "127.0.0.1", "--ns", "ns.example.net"]
        .map(String::from)
        .to_vec();
    if !case_args.iter().any(|a| a == "--domain") {
        args.extend(["--domain".to_string(), DOMAIN.to_string()]);
    }
    args
}

#[test]
fn a_good_https_configuration_checks_ok_and_help_lists_the_exit_status() {
    let dir = pki::TempDir::new();
    let ca = pki::TestCa::new("cluster CA");
    let client = ca.client("alternator-dns.test");
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let cert = dir.write("client.pem", &client.cert_pem);
    let key = dir.write("client.key", &client.key_pem);
    let mut args = base(&[]);
    args.extend(
        [
            "--alternator-scheme",
            "https",
            "--ca-file",
            path(&ca_file),
            "--client-cert",
            path(&cert),
            "--client-key",
            path(&key),
            "--check",
        ]
        .map(String::from),
    );
    let run = run_cli(&args);
    assert!(run.status.success(), "{run:?}");
    assert!(run.stderr.contains("configuration OK"), "{}", run.stderr);

    let help = run_cli(&["--help"]);
    assert!(help.status.success(), "{help:?}");
    for line in [
        "Exit status:",
        "  1   runtime failure",
        "  2   usage error",
        "  78  configuration error",
    ] {
        assert!(
            help.stdout.contains(line),
            "--help lacks {line:?}:\n{}",
            help.stdout
        );
    }
}

#[test]
fn an_address_in_use_is_a_runtime_failure_that_check_does_not_see() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    let port = taken.local_addr().expect("its address").port().to_string();
    let metrics = format!("127.0.0.1:{port}");
    let mut args = base(&[]);
    args.extend(["--listen", "127.0.0.1:0", "--metrics-listen", &metrics].map(String::from));
    let run = run_cli(&args);
    assert_eq!(run.status.code(), Some(i32::from(exit::RUNTIME)), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("cannot listen for metrics on {metrics}")),
        "{}",
        run.stderr
    );
    args.push("--check".into());
    let check = run_cli(&args);
    assert!(check.status.success(), "{check:?}");
    assert!(
        check
            .stderr
            .contains("the listen addresses are not bound by --check"),
        "{}",
        check.stderr
    );
}
