//! Support for the integration tests: start the real `alternator-dns` binary
//! against a simulated Alternator cluster, read its bound address from its
//! log, and talk DNS to it over real loopback sockets.
//!
//! Tests in one binary run in parallel, so each test takes its own node
//! addresses with [`nodes`] (127.0.N.x with N unique per test) and lets the
//! kernel choose every port. Every wait is bounded in time.

// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};
use domain::base::Message;
use domain::rdata::AllRecordData;

use alternator_sim::SimCluster;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_alternator-dns");

/// The name the tests serve.
pub const DOMAIN: &str = "alternator.test";

/// How long the binary may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Log lines that say a list from `/localnodes` replaced the seeds.
pub const LEARNT: [&str; 2] = ["first /localnodes answer", "membership changed"];

/// The address of the `i`-th node (1-based) of test `test_no`: 127.0.test_no.i.
pub fn node(test_no: u8, i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, test_no, i))
}

/// `n` node addresses for test `test_no`: 127.0.test_no.1 ..= 127.0.test_no.n.
/// `test_no` must be unique per test (10 and up) so that parallel tests never
/// share an address.
pub fn nodes(test_no: u8, n: u8) -> Vec<IpAddr> {
    (1..=n).map(|i| node(test_no, i)).collect()
}

/// A simulated cluster of `n` nodes for test `test_no`, on a port the kernel chose.
pub fn cluster(test_no: u8, n: u8) -> (SimCluster, Vec<IpAddr>) {
    let addrs = nodes(test_no, n);
    let sim = SimCluster::start(&addrs, 0).expect("start the simulated cluster");
    (sim, addrs)
}

/// The usual flags for a responder serving [`DOMAIN`] from `sim`, learning
/// from `seeds`, polling every `interval_ms` with `timeout_ms` per request.
pub fn cluster_args(
    sim: &SimCluster,
    seeds: &[IpAddr],
    interval_ms: u64,
    timeout_ms: u64,
) -> Vec<String> {
    let mut args = vec![
        "--domain".to_string(),
        DOMAIN.to_string(),
        "--alternator-port".to_string(),
        sim.port().to_string(),
        "--refresh-interval".to_string(),
        format!("{interval_ms}ms"),
        "--refresh-timeout".to_string(),
        format!("{timeout_ms}ms"),
    ];
    for seed in seeds {
        args.push("--seed".to_string());
        args.push(seed.to_string());
    }
    args
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Drops ANSI escape sequences (`ESC [ ... letter`), in case the log is colored.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a start failure is the server's TCP bind failing on the port its
/// UDP socket got from the kernel.
pub fn is_tcp_port_collision(start_error: &str) -> bool {
    start_error.contains("cannot listen on TCP") && start_error.contains("Address already in use")
}

type Logs = Arc<Mutex<Vec<String>>>;

fn lock(logs: &Logs) -> std::sync::MutexGuard<'_, Vec<String>> {
    logs.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running `alternator-dns` process; killed (and reaped) on drop.
pub struct Responder {
    child: Child,
    udp: SocketAddr,
    tcp: SocketAddr,
    logs: Logs,
    reader: Option<JoinHandle<()>>,
}

impl Responder {
    /// Starts the binary and waits until it is ready; panics with its log if
    /// it does not start.
    pub fn start<S: AsRef<str>>(extra_args: &[S]) -> Responder {
        Responder::try_start(extra_args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the binary with `--listen 127.0.0.1:0`, `--threads 1` and
    /// `--log-level info`, `--metrics-listen 127.0.0.1:0` (each unless given in `extra_args`) plus
    /// `extra_args`, and waits (bounded) for its `listening` and `ready` lines.
    /// On failure, returns a description with everything it logged.
    pub fn try_start<S: AsRef<str>>(extra_args: &[S]) -> Result<Responder, String> {
        let extra: Vec<&str> = extra_args.iter().map(AsRef::as_ref).collect();
        let mut args: Vec<&str> = Vec::new();
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--threads") {
            args.extend(["--threads", "1"]);
        }
        if !extra.contains(&"--log-level") {
            args.extend(["--log-level", "info"]);
        }
        if !extra.contains(&"--metrics-listen") {
            // Tests run in parallel: no fixed metrics port.
            args.extend(["--metrics-listen", "127.0.0.1:0"]);
        }
        args.extend(&extra);
        Responder::try_start_exact(&args, &[])
    }

    /// Where it answers UDP.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    /// Where it answers TCP.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    /// Every line it has logged so far (ANSI colors removed).
    pub fn logs(&self) -> Vec<String> {
        lock(&self.logs).clone()
    }

    /// Its log so far as one string, for assertion messages.
    pub fn log_text(&self) -> String {
        self.logs().join("\n")
    }

    /// How many logged lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        lock(&self.logs)
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until a logged line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log_count(needle) > 0)
    }

    /// Waits until at least `n` logged lines contain `needle`.
    pub fn wait_for_log_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.log_count(needle) >= n)
    }

    /// Whether the first `/localnodes` list has been published (seen in the log).
    pub fn learnt_cluster_list(&self) -> bool {
        LEARNT.iter().any(|needle| self.log_count(needle) > 0)
    }

    /// Waits for the first `/localnodes` list to be published; panics with
    /// the log if it does not come within 10 s.
    pub fn wait_for_cluster_list(&self) {
        assert!(
            wait_until(Duration::from_secs(10), || self.learnt_cluster_list()),
            "the responder never learnt the list from /localnodes; log:\n{}",
            self.log_text()
        );
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits up to `bound` for the process to exit. Returns
    /// its exit status (`None` if it did not exit in time; it is then killed
    /// on drop) and the time from the signal to the exit (or to giving up).
    pub fn terminate(&mut self, bound: Duration) -> (Option<ExitStatus>, Duration) {
        self.signal(libc::SIGTERM, bound)
    }

    /// Sends `signal` and waits up to `bound` for the process to exit; see
    /// [`Responder::terminate`].
    pub fn signal(
        &mut self,
        signal: libc::c_int,
        bound: Duration,
    ) -> (Option<ExitStatus>, Duration) {
        if let Ok(Some(status)) = self.child.try_wait() {
            return (Some(status), Duration::ZERO);
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits in pid_t");
        let sent = Instant::now();
        // SAFETY: plain kill(2) on our own child, which is not reaped yet
        // (try_wait above saw it running), so the pid still names it.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({signal}): {}", std::io::Error::last_os_error());
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (Some(status), sent.elapsed());
            }
            if sent.elapsed() >= bound {
                return (None, sent.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A DNS client of this responder, on 127.0.0.1 (or ::1).
    pub fn client(&self) -> DnsClient {
        DnsClient::new(self.udp).with_tcp(self.tcp)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        // Child::kill does nothing once the child has been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// What a one-shot run of the binary printed, and how it exited.
#[derive(Debug)]
pub struct CliRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with `args` to completion (killed after 15 s).
pub fn run_cli<S: AsRef<str>>(args: &[S]) -> CliRun {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let mut child = Command::new(BIN)
        .args(&args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the binary");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let mut status = None;
    let done = wait_until(START_TIMEOUT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if !done {
        let _ = child.kill();
        let _ = child.wait();
        panic!("alternator-dns {args:?} did not exit within {START_TIMEOUT:?}");
    }
    CliRun {
        status: status.expect("exited"),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A temporary file, removed on drop.
pub struct TempFile {
    pub path: std::path::PathBuf,
}

impl TempFile {
    /// Writes `contents` to a fresh file named after `tag` and this process.
    pub fn new(tag: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "alternator-dns-test-{}-{tag}.toml",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("write a temporary file");
        TempFile { path }
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("temporary paths are UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A DNS reply, checked to parse.
#[derive(Debug, Clone)]
pub struct Reply {
    pub bytes: Vec<u8>,
}

impl Reply {
    /// Wraps reply bytes; `None` if they do not hold a DNS header.
    pub fn parse(bytes: Vec<u8>) -> Option<Reply> {
        Message::from_octets(bytes.as_slice()).ok()?;
        Some(Reply { bytes })
    }

    pub fn message(&self) -> Message<&[u8]> {
        Message::from_octets(self.bytes.as_slice()).expect("checked in Reply::parse")
    }

    pub fn id(&self) -> u16 {
        self.message().header().id()
    }

    pub fn rcode(&self) -> Rcode {
        self.message().header().rcode()
    }

    pub fn aa(&self) -> bool {
        self.message().header().aa()
    }

    pub fn tc(&self) -> bool {
        self.message().header().tc()
    }

    /// The A and AAAA addresses of the answer section, in order; panics on
    /// any other record there.
    pub fn addrs(&self) -> Vec<IpAddr> {
        let msg = self.message();
        msg.answer()
            .expect("an answer section")
            .limit_to::<AllRecordData<_, _>>()
            .map(|r| match r.expect("a parseable record").data() {
                AllRecordData::A(a) => IpAddr::V4(a.addr()),
                AllRecordData::Aaaa(a) => IpAddr::V6(a.addr()),
                other => panic!("unexpected answer record {other:?}"),
            })
            .collect()
    }

    /// The TTLs of the answer records.
    pub fn answer_ttls(&self) -> Vec<u32> {
        let msg = self.message();
        msg.answer()
            .expect("an answer section")
            .map(|r| r.expect("a parseable record").ttl().as_secs())
            .collect()
    }

    /// The record types of the authority section.
    pub fn authority_types(&self) -> Vec<Rtype> {
        let msg = self.message();
        msg.authority()
            .expect("an authority section")
            .map(|r| r.expect("a parseable record").rtype())
            .collect()
    }
}

/// A small deterministic generator (splitmix64) for hostile packets.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// `addrs` sorted, for comparing sets.
pub fn sorted(mut addrs: Vec<IpAddr>) -> Vec<IpAddr> {
    addrs.sort();
    addrs
}

pub mod affinity;
/// The RFC conformance cases shared by the conformance and Knot differential tests.
pub mod cluster_checks;
pub mod dns_cases;
mod http;
mod process;
pub mod reload;

pub mod dns_client;
// Each test binary uses only part of these, as of the rest of this module.
#[allow(unused_imports)]
pub use dns_client::{build_query, DnsClient, UDP_TIMEOUT, UDP_TRIES};
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use process::*;

// For tests/operations.rs, reload.rs and protection.rs: starting the binary
// with exact flags and an extra environment, logs in text or JSON, and the
// process id.

/// The value of field `name` in one log line: `name=value` in the text
/// format, `fields.name` in the JSON one.
pub fn log_line_field(line: &str, name: &str) -> Option<String> {
    if line.trim_start().starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(line).ok()?;
        return match &json["fields"][name] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        };
    }
    let key = format!("{name}=");
    let start = line
        .match_indices(&key)
        .find(|(i, _)| *i == 0 || line.as_bytes()[i - 1] == b' ')?
        .0
        + key.len();
    Some(line[start..].split_whitespace().next()?.to_string())
}

/// Whether a log line (text or JSON) is the one whose message is `message`.
pub fn log_line_is(line: &str, message: &str) -> bool {
    if line.trim_start().starts_with('{') {
        return serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|json| json["fields"]["message"] == message);
    }
    line.contains(&format!(" {message}"))
}

impl Responder {
    /// The process id of the binary.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Field `name` of the first logged line whose message is `message`
    /// (text or JSON log format).
    pub fn log_field(&self, message: &str, name: &str) -> Option<String> {
        self.logs()
            .iter()
            .filter(|l| log_line_is(l, message))
            .find_map(|l| log_line_field(l, name))
    }

    /// Where the metrics endpoint listens, from its log line.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.log_field("serving metrics and health checks over HTTP", "metrics")?
            .parse()
            .ok()
    }

    /// Starts the binary with exactly `args` (no flag added) and `env` added
    /// to its environment, and waits (bounded) for its `ready` line, like
    /// [`Responder::try_start`]; the log may be text or JSON.
    pub fn start_exact<S: AsRef<str>>(args: &[S], env: &[(&str, &str)]) -> Responder {
        Responder::try_start_exact(args, env).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Responder::start_exact`], returning a description with the log on failure.
    pub fn try_start_exact<S: AsRef<str>>(
        args: &[S],
        env: &[(&str, &str)],
    ) -> Result<Responder, String> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let mut command = Command::new(BIN);
        command
            .args(&args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {BIN}: {e}"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs: Logs = Arc::default();
        let reader = {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    lock(&logs).push(strip_ansi(&line));
                }
            })
        };
        let mut responder = Responder {
            child,
            udp: SocketAddr::from(([0, 0, 0, 0], 0)),
            tcp: SocketAddr::from(([0, 0, 0, 0], 0)),
            logs,
            reader: Some(reader),
        };
        let mut exited = None;
        let ready = wait_until(START_TIMEOUT, || {
            if responder.log_count("alternator-dns ready") > 0 {
                return true;
            }
            if let Ok(Some(status)) = responder.child.try_wait() {
                exited = Some(status);
                return true;
            }
            false
        });
        if let Some(status) = exited {
            if let Some(reader) = responder.reader.take() {
                let _ = reader.join();
            }
            return Err(format!(
                "alternator-dns {args:?} exited at start with {status}; its log:\n{}",
                responder.logs().join("\n")
            ));
        }
        if !ready {
            return Err(format!(
                "alternator-dns {args:?} not ready within {START_TIMEOUT:?}; its log:\n{}",
                responder.logs().join("\n")
            ));
        }
        let addr = |name| {
            responder
                .log_field("listening", name)
                .and_then(|a| a.parse::<SocketAddr>().ok())
        };
        match (addr("udp"), addr("tcp")) {
            (Some(udp), Some(tcp)) => {
                responder.udp = udp;
                responder.tcp = tcp;
                Ok(responder)
            }
            _ => Err(format!(
                "no `listening` line with udp and tcp addresses in the log:\n{}",
                responder.logs().join("\n")
            )),
        }
    }
}

/// `args` with `more` appended.
pub fn with(mut args: Vec<String>, more: &[&str]) -> Vec<String> {
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

/// `args` with the harness's defaults (`--threads 1`, `--log-level info`,
/// `--metrics-listen 127.0.0.1:0`) for the flags they do not give.
/// `--listen` is never added: these tests say where, on the command line or
/// in a config file.
pub fn with_defaults(args: Vec<String>) -> Vec<String> {
    let mut all = args;
    for (flag, value) in [
        ("--threads", "1"),
        ("--log-level", "info"),
        ("--metrics-listen", "127.0.0.1:0"),
    ] {
        if !all.iter().any(|a| a == flag) {
            all.extend([flag.to_string(), value.to_string()]);
        }
    }
    all
}
