//! Bad configurations, table-driven: `--check` and a real start of the
//! binary give the same exit status, and both say in words which option is
//! at fault (and which file), never in Rust's debug formatting.

mod support;

use std::path::Path;

use alternator_dns::exit;
use alternator_sim::test_pki as pki;
use support::*;

/// What must never reach an operator: Rust debug output of library errors.
const DEBUG_OUTPUT: [&str; 5] = [
    "KeyMismatch",
    "InvalidCharacter",
    "DnsName(",
    "UnknownIssuer",
    "Some(",
];

struct Case {
    what: &'static str,
    args: Vec<String>,
    status: u8,
    /// Each must appear in the message, from `--check` and from the start.
    says: Vec<String>,
}

fn case(what: &'static str, args: &[&str], status: u8, says: &[&str]) -> Case {
    Case {
        what,
        args: args.iter().map(|s| s.to_string()).collect(),
        status,
        says: says.iter().map(|s| s.to_string()).collect(),
    }
}

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

/// Runs the case's configuration with `--check`, then as a real start
/// (loopback, any port), and checks both.
fn check_case(case: &Case) {
    let mut checked = base(&case.args);
    checked.extend(case.args.iter().cloned());
    checked.push("--check".into());
    let mut started = base(&case.args);
    started.extend(case.args.iter().cloned());
    started.extend(
        [
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--threads",
            "1",
        ]
        .map(String::from),
    );
    for (how, args) in [("--check", &checked), ("a real start", &started)] {
        let run = run_cli(args);
        let said = &run.stderr;
        assert_eq!(
            run.status.code(),
            Some(i32::from(case.status)),
            "{}: {how} exited with {}; it said:\n{said}",
            case.what,
            run.status
        );
        for needle in &case.says {
            assert!(
                said.contains(needle.as_str()),
                "{}: {how} does not say {needle:?}; it said:\n{said}",
                case.what
            );
        }
        for debug in DEBUG_OUTPUT {
            assert!(
                !said.contains(debug),
                "{}: {how} shows Rust debug output ({debug}):\n{said}",
                case.what
            );
        }
    }
}

#[test]
fn bad_configurations_fail_alike_at_check_and_start_and_name_the_option() {
    let dir = pki::TempDir::new();
    let ca = pki::TestCa::new("cluster CA");
    let client = ca.client("alternator-dns.test");
    let other = ca.client("other.test");
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let cert = dir.write("client.pem", &client.cert_pem);
    let key = dir.write("client.key", &client.key_pem);
    let other_key = dir.write("other.key", &other.key_pem);
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.write("not-pem.pem", "this is not PEM at all\n");
    let bad_base64 = dir.write(
        "bad-base64.pem",
        "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
    );
    let unknown_key = dir.write("unknown-key.toml", "no-such-key = 1\n");
    let https = ["--alternator-scheme", "https"];
    let with_https = |more: &[&str]| -> Vec<String> {
        https.iter().chain(more).map(|s| s.to_string()).collect()
    };
    let tls_case = |what, more: &[&str], says: &[&str]| Case {
        what,
        args: with_https(more),
        status: exit::CONFIG,
        says: says.iter().map(|s| s.to_string()).collect(),
    };
    let cases = [
        tls_case(
            "a CA file that does not exist",
            &["--ca-file", path(&missing)],
            &["--ca-file", path(&missing), "cannot read it"],
        ),
        tls_case(
            "a CA file that is not PEM",
            &["--ca-file", path(&not_pem)],
            &["--ca-file", path(&not_pem), "no certificate in it"],
        ),
        tls_case(
            "a private key given as the CA file",
            &["--ca-file", path(&key)],
            &["--ca-file", path(&key), "it holds a private key"],
        ),
        tls_case(
            "a CA file with broken base64",
            &["--ca-file", path(&bad_base64)],
            &["--ca-file", path(&bad_base64), "not valid base64"],
        ),
        tls_case(
            "a client key that is not the certificate's",
            &[
                "--ca-file",
                path(&ca_file),
                "--client-cert",
                path(&cert),
                "--client-key",
                path(&other_key),
            ],
            &[
                "--client-key",
                path(&other_key),
                "is not the private key of",
                "--client-cert",
            ],
        ),
        tls_case(
            "a certificate given as the client key",
            &["--client-cert", path(&cert), "--client-key", path(&cert)],
            &["--client-key", path(&cert), "it holds a certificate"],
        ),
        tls_case(
            "a client certificate without its key",
            &["--client-cert", path(&cert)],
            &["--client-cert", path(&cert), "without --client-key"],
        ),
        tls_case(
            "no verification together with a CA file",
            &[
                "--tls-insecure-skip-verify",
                "true",
                "--ca-file",
                path(&ca_file),
            ],
            &["--tls-insecure-skip-verify", "--ca-file", path(&ca_file)],
        ),
        tls_case(
            "a server name that is not a name",
            &["--tls-server-name", "not a name!"],
            &["--tls-server-name", "not a name!"],
        ),
        case(
            "TLS options without https",
            &["--ca-file", path(&ca_file)],
            exit::CONFIG,
            &["--ca-file", "--alternator-scheme https"],
        ),
        case(
            "--forward-allow without --forward",
            &["--forward-allow", "10.0.0.0/8"],
            exit::CONFIG,
            &["--forward-allow needs --forward"],
        ),
        case(
            "a --forward-allow that is not a network",
            &["--forward", "127.0.0.53", "--forward-allow", "10.0.0.1/8"],
            exit::CONFIG,
            &["--forward-allow", "10.0.0.0/8"],
        ),
        case(
            "a config file that does not exist",
            &["--config", path(&missing)],
            exit::CONFIG,
            &["--config", path(&missing), "cannot read it"],
        ),
        case(
            "an unknown key in the config file",
            &["--config", path(&unknown_key)],
            exit::CONFIG,
            &["--config", path(&unknown_key), "no-such-key"],
        ),
        case(
            "a domain that is not a name",
            &["--domain", "alt..example"],
            exit::CONFIG,
            &["--domain", "alt..example"],
        ),
        case(
            "no failure allowed before a node leaves",
            &["--health-failures", "0"],
            exit::CONFIG,
            &["--health-failures"],
        ),
        case(
            "a flapping node that could never come back",
            &["--health-flap-passes", "0"],
            exit::CONFIG,
            &["--health-flap-passes"],
        ),
        case(
            "a flap window shorter than the probe interval",
            &["--health-flap-window", "100ms"],
            exit::CONFIG,
            &[
                "--health-flap-window",
                "--health-interval",
                "--health-flap-limit 0",
            ],
        ),
        case(
            "a rate limit out of range",
            &["--rate-limit", "100000000"],
            exit::CONFIG,
            &["--rate-limit"],
        ),
        case(
            "a user that does not exist",
            &["--user", "alternator-dns-no-such-user"],
            exit::CONFIG,
            &["--user", "alternator-dns-no-such-user"],
        ),
        case(
            "a malformed value on the command line",
            &["--ttl", "four"],
            exit::USAGE,
            &["--ttl"],
        ),
    ];
    for case in &cases {
        check_case(case);
    }
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
