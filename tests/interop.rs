//! alternator-dns behind a real caching resolver: `scripts/interop` builds a
//! lab of network namespaces with a DNSSEC-signed fake root (knotd), Unbound
//! iterating from it to two instances of this crate's binary, and a simulated
//! cluster; this test runs it in the mode the README recommends behind
//! resolvers (`nocache`: `--answers 1 --ttl 0`, which Unbound honours as it
//! is) and asserts from its JSON report that
//! every correctness check passed (A, NS-name lookups without SERVFAIL
//! afterwards, NXDOMAIN, a 100-node answer truncated over UDP and fetched over
//! TCP, DNSSEC validation on) and that no node is the first address of more
//! than 25% of the answers Unbound hands out. It also runs the harness's
//! zone-local check: alternator-dns with `--affinity true` and a
//! `--location` for each of two client subnets, behind an Unbound with its
//! subnet cache (`module-config: "subnetcache validator iterator"`,
//! `send-client-subnet`), which must give clients of each subnet, in their
//! own namespaces, their own rack's nodes (interop_lab/affinity.py).
//!
//! The simulated cluster is `alternator-sim cluster --control-stdin`, built
//! here with `cargo build -p alternator-sim` beside the binary under test
//! (`cargo test` builds that crate's library, not its program).
//!
//! Needs root (namespaces, port 53). Without root it fails when `CI` is set
//! and is skipped otherwise. `scripts/setup` installs the packages; when they
//! are missing the script installs them itself (without starting daemons).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The mode the README recommends, measured here.
const MODE: &str = "nocache";
const PATH: &str = "unbound/delegated";
const MAX_SHARE: f64 = 0.25;
/// The checks of the zone-local answers through Unbound's subnet cache.
const AFFINITY_CHECKS: &[&str] = &[
    "server-ECS",
    "resolver-unplaced",
    "near",
    "near-v4only",
    "far",
];
/// The whole run takes about 50 s; this only bounds a hang.
const LIMIT: Duration = Duration::from_secs(240);

/// Programs `scripts/interop --resolvers unbound --no-zonemaster` needs.
const PROGRAMS: &[&str] = &[
    "/usr/sbin/unbound",
    "/usr/sbin/knotd",
    "/usr/sbin/keymgr",
    "/usr/bin/kdig",
    "/usr/bin/dig",
];

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

fn ip_program() -> bool {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .any(|p| Path::new(p).exists())
}

/// `alternator-sim` beside the binary under test, built (or found up to date)
/// with the cargo that runs this test, in the same profile.
fn sim_binary() -> PathBuf {
    let dns = Path::new(env!("CARGO_BIN_EXE_alternator-dns"));
    let sim = dns.with_file_name("alternator-sim");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--locked", "-p", "alternator-sim"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // Without the variables cargo sets for this test: build scripts that watch
    // them (ring's watches CARGO_MANIFEST_DIR) would rebuild, twice a run.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
            || key == "CARGO_PRIMARY_PACKAGE"
            || key == "CARGO_TARGET_TMPDIR"
        {
            cmd.env_remove(&*key);
        }
    }
    if dns.parent().and_then(Path::file_name) == Some("release".as_ref()) {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "cargo build -p alternator-sim failed");
    assert!(
        sim.exists(),
        "{} missing after cargo build -p alternator-sim (another --target-dir?)",
        sim.display()
    );
    sim
}

#[test]
fn unbound_in_front_of_alternator_dns() {
    if !is_root() {
        if std::env::var_os("CI").is_none() {
            eprintln!("skipped: needs root (network namespaces, port 53)");
            return;
        }
        panic!("tests/interop.rs needs root (network namespaces, port 53); CI runs as root");
    }
    let (status, report, stderr) = run_interop();
    let mode = &report["modes"][MODE];
    assert!(mode.is_object(), "no results for mode {MODE}: {report}");
    let checks = &mode["correctness"][PATH];
    for name in [
        "A",
        "AAAA",
        "SOA",
        "NS",
        "NXDOMAIN",
        "NS-name",
        "no-poison",
        "TCP",
        "DNSSEC",
    ] {
        let check = &checks[name];
        assert_eq!(
            check["ok"],
            Value::Bool(true),
            "{PATH} {name} failed: {}",
            check["detail"]
        );
    }
    let affinity = &report["affinity"];
    assert!(
        affinity["checks"].is_object(),
        "no zone-local (affinity) results: {affinity}"
    );
    for name in AFFINITY_CHECKS {
        let check = &affinity["checks"][name];
        assert_eq!(
            check["ok"],
            Value::Bool(true),
            "affinity {name} failed: {}",
            check["detail"]
        );
    }
    let failures = &report["failures"];
    assert_eq!(failures, &Value::Array(vec![]), "failed checks: {failures}");

    let balance = &mode["balance"][PATH];
    let answered = balance["answered"].as_f64();
    assert!(
        answered.is_some_and(|n| n >= 540.0),
        "{PATH}: too few answers: {answered:?} of 600"
    );
    let max_share = balance["max_share"].as_f64().expect("max_share");
    assert!(
        max_share <= MAX_SHARE,
        "{PATH} in mode {MODE}: one node is the first address of {:.1}% of answers \
         (limit {:.0}%); shares {}",
        100.0 * max_share,
        100.0 * MAX_SHARE,
        balance["shares"]
    );
    let dead = mode["dead_node"]["paths"][PATH]["median"].as_f64();
    eprintln!("{PATH}: max first-address share {max_share:.3}, dead-node window {dead:?} s");
    assert_eq!(status.code(), Some(0), "scripts/interop failed:\n{stderr}");
}

/// Runs `scripts/interop` for Unbound alone, bounded by [`LIMIT`]; returns
/// its exit status, its JSON report and its standard error.
fn run_interop() -> (ExitStatus, Value, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let json_path = std::env::temp_dir().join(format!("adns-interop-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&json_path);
    let sim = sim_binary();
    let mut cmd = Command::new(root.join("scripts/interop"));
    cmd.args([
        "--resolvers",
        "unbound",
        "--shapes",
        "delegated",
        "--modes",
        MODE,
    ])
    .args(["--lookups", "600", "--duration", "6", "--kills", "1"])
    .args(["--no-zonemaster", "--no-getaddrinfo"])
    .args(["--binary", env!("CARGO_BIN_EXE_alternator-dns")])
    .arg("--json")
    .arg(&json_path)
    .arg("--sim-binary")
    .arg(&sim)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if ip_program() && PROGRAMS.iter().all(|p| Path::new(p).exists()) {
        cmd.arg("--no-install");
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .expect("scripts/interop starts (python3 needed)");
    // Read both pipes on threads so a full pipe never blocks the script.
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out_reader = read(Box::new(child.stdout.take().expect("stdout")));
    let err_reader = read(Box::new(child.stderr.take().expect("stderr")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for scripts/interop") {
            break status;
        }
        if started.elapsed() > LIMIT {
            // SIGKILL would leave the namespaces behind; SIGTERM lets it clean up.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("scripts/interop ran longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    println!("{stdout}");
    eprintln!("{stderr}");
    eprintln!("scripts/interop took {:?}", started.elapsed());
    assert_ne!(
        status.code(),
        Some(2),
        "scripts/interop could not set the lab up:\n{stderr}"
    );
    let text = std::fs::read_to_string(&json_path).expect("scripts/interop wrote its JSON report");
    let _ = std::fs::remove_file(&json_path);
    let report = serde_json::from_str(&text).expect("the report is JSON");
    (status, report, stderr)
}
