//! `alternator-sim`: a simulated Alternator cluster from the command line,
//! and the demo (that cluster with the real `alternator-dns` in front of it).

use std::io::{BufRead, IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alternator_sim::test_pki::TestCa;
use alternator_sim::{Fault, SimCluster, SimNode, SimOptions, SimTls, DEFAULT_DC, DEFAULT_RACK};
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

mod story;

#[derive(Debug, Parser)]
#[command(
    name = "alternator-sim",
    version,
    about = "A simulated ScyllaDB Alternator cluster, for alternator-dns's tests, benchmarks \
             and demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Run a simulated cluster until SIGINT or SIGTERM.
    Cluster(ClusterArgs),
    /// Start a simulated cluster on 127.0.0.1..N and alternator-dns in front of
    /// it, listening on 127.0.0.1:5353; shows a node dying and the answers
    /// moving off it, then prints how to query it.
    Demo(DemoArgs),
}

/// `--node IP[@DC/RACK]`.
#[derive(Debug, Clone)]
struct NodeArg(SimNode);

impl std::str::FromStr for NodeArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?}: expected IP or IP@DC/RACK, e.g. 127.0.0.2@dc1/rack2");
        let (ip, location) = match s.split_once('@') {
            Some((ip, location)) => (ip, Some(location)),
            None => (s, None),
        };
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let (dc, rack) = match location {
            None => (DEFAULT_DC, DEFAULT_RACK),
            Some(location) => location.split_once('/').ok_or_else(bad)?,
        };
        if dc.is_empty() || rack.is_empty() {
            return Err(bad());
        }
        Ok(NodeArg(SimNode::new(ip, dc, rack)))
    }
}

#[derive(Debug, Args)]
struct ClusterArgs {
    /// One simulated node: its address, and optionally its datacenter and
    /// rack as IP@DC/RACK (default dc1/rack1) (repeatable).
    #[arg(long = "node", value_name = "IP[@DC/RACK]", default_values = [
        "127.0.0.1", "127.0.0.2", "127.0.0.3"
    ])]
    nodes: Vec<NodeArg>,
    /// Port every node listens on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Membership churn for benchmarks: take the last node out of /localnodes and
    /// put it back, this many changes per second (0: none)
    #[arg(long, default_value_t = 0, value_name = "PER_SECOND")]
    churn_per_second: u32,
    /// Read commands from standard input, one a line, each answered on standard
    /// output with `ok` or `error: ...`: `down IP` (refuse connections, close
    /// open ones), `hang IP` (accept, never answer), `up IP` (healthy again),
    /// `close IP` (close the open connections, idle ones at once, and go on
    /// serving new ones), `unlist IP` and `list IP` (leave or join /localnodes)
    #[arg(long)]
    control_stdin: bool,
    /// Serve HTTPS instead of HTTP: a fresh test CA is written to DIR/ca.pem
    /// (for alternator-dns's --ca-file), and every node presents one
    /// certificate signed by it for --tls-name (for --tls-server-name).
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// The DNS name in the nodes' certificate, with --tls-dir.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "alternator-sim.test",
        requires = "tls_dir"
    )]
    tls_name: String,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Where the responder listens (UDP and TCP).
    #[arg(long, default_value = "127.0.0.1:5353")]
    listen: SocketAddr,
    /// Number of simulated nodes, on 127.0.0.1, 127.0.0.2, ...
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=250))]
    nodes: u8,
    /// The name served.
    #[arg(long, default_value = "alternator.localhost")]
    domain: String,
    /// Port of the simulated nodes' Alternator API (0: any free port).
    #[arg(long, default_value_t = 0)]
    alternator_port: u16,
    /// Stop after this long (e.g. `30s`); runs until Ctrl-C when not given.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Worker threads of the responder.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The alternator-dns binary [default: alternator-dns beside this program]
    #[arg(long, value_name = "PATH")]
    responder: Option<PathBuf>,
    /// Skip the story (a node killed and brought back) and only start.
    #[arg(long)]
    no_story: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Mode::Cluster(args) => run_cluster(&args),
        Mode::Demo(args) => run_demo(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alternator-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs only the simulated cluster until SIGINT or SIGTERM.
fn run_cluster(args: &ClusterArgs) -> anyhow::Result<()> {
    let nodes: Vec<SimNode> = args.nodes.iter().map(|n| n.0.clone()).collect();
    let options = SimOptions {
        tls: args
            .tls_dir
            .as_deref()
            .map(|dir| test_tls(dir, &args.tls_name))
            .transpose()?,
        ..SimOptions::default()
    };
    let cluster = SimCluster::start_with(&nodes, args.port, options)
        .context("cannot start the simulated Alternator cluster")?;
    let shown: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|ip| SocketAddr::new(*ip, cluster.port()).to_string())
        .collect();
    println!("Simulated Alternator nodes: {}", shown.join(" "));
    let churning = churn(&cluster, args.churn_per_second);
    if args.control_stdin {
        let cluster = cluster.clone();
        std::thread::spawn(move || control_from_stdin(&cluster));
    }
    wait_for_signal(None, || false)?;
    if let Some((stop, thread)) = churning {
        stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
    }
    cluster.shutdown();
    Ok(())
}

/// Server TLS for the nodes from a fresh test CA, whose certificate is
/// written to `dir/ca.pem`; the nodes' certificate names `name`.
fn test_tls(dir: &Path, name: &str) -> anyhow::Result<SimTls> {
    let ca = TestCa::new("alternator-sim test CA");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem)
        .with_context(|| format!("cannot write {}", ca_file.display()))?;
    Ok(ca.server(&[name]).sim_tls())
}

/// Starts a simulated cluster on 127.0.0.1..N and the responder against it.
fn run_demo(args: &DemoArgs) -> anyhow::Result<()> {
    let nodes: Vec<IpAddr> = (1..=args.nodes)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect();
    let cluster = SimCluster::start(&nodes, args.alternator_port)
        .context("cannot start the simulated Alternator cluster")?;
    let port = cluster.port();
    let responder = match &args.responder {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("alternator-dns"),
    };
    let metrics = free_local_port().context("cannot find a port for the metrics endpoint")?;
    let mut command = Command::new(&responder);
    command
        .args([
            "--listen",
            &args.listen.to_string(),
            "--domain",
            &args.domain,
            "--metrics-listen",
            &metrics.to_string(),
        ])
        .args(["--alternator-port", &port.to_string()])
        .args([
            "--threads",
            &args.threads.to_string(),
            "--refresh-interval",
            "1s",
        ]);
    for ip in &nodes {
        command.args(["--seed", &SocketAddr::new(*ip, port).to_string()]);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start the responder {}", responder.display()))?;
    let shown: Vec<String> = nodes.iter().map(|ip| format!("{ip}:{port}")).collect();
    println!("Simulated Alternator cluster: {}", shown.join(" "));
    if !args.no_story {
        if let Err(e) = story::tell(&cluster, args.listen, &args.domain, &responder, metrics) {
            eprintln!("alternator-sim: the demo's story stopped: {e:#}");
        }
    }
    println!(
        "alternator-dns (pid {}) answers {} on {} (UDP and TCP). Try:",
        child.id(),
        args.domain,
        args.listen
    );
    let (ip, dns_port) = (args.listen.ip(), args.listen.port());
    println!("  dig @{ip} -p {dns_port} {} A +short", args.domain);
    println!("  kdig @{ip} -p {dns_port} {} A +tcp", args.domain);
    println!("  {} status --metrics {metrics}", responder.display());
    match args.duration {
        Some(d) => println!("Stopping after {}.", humantime::format_duration(d)),
        None => println!("Ctrl-C stops the demo."),
    }
    let exited = wait_for_signal(args.duration, || !matches!(child.try_wait(), Ok(None)));
    let status = stop(&mut child);
    cluster.shutdown();
    exited?;
    match status {
        Some(status) if !status.success() && status.signal() != Some(libc::SIGTERM) => {
            bail!("the responder exited with {status}")
        }
        _ => Ok(()),
    }
}

/// A loopback address with a port free a moment ago, for the responder's
/// metrics endpoint (the default 9153 may be taken on a developer's machine).
fn free_local_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// Ends the responder with SIGTERM (by PID) and waits for it.
fn stop(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let pid = libc::pid_t::try_from(child.id()).ok()?;
    // SAFETY: kill(2) has no memory effects; `pid` is our child, not yet
    // reaped, so it names no other process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    child.wait().ok()
}

/// Waits for SIGINT or SIGTERM, for `limit` to pass, or for `done` to say so
/// (checked every 100 ms).
fn wait_for_signal(limit: Option<Duration>, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let deadline = tokio::time::sleep(limit.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = int.recv() => return Ok(()),
                _ = term.recv() => return Ok(()),
                _ = &mut deadline => return Ok(()),
                _ = tick.tick() => if done() { return Ok(()) },
            }
        }
    })
}

/// Applies the `--control-stdin` commands until standard input closes.
fn control_from_stdin(cluster: &SimCluster) {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let reply = match control_command(cluster, line.trim()) {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error: {e}"),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{reply}");
        let _ = out.flush();
    }
}

/// One `--control-stdin` command: `down|hang|up|close|list|unlist IP`.
fn control_command(cluster: &SimCluster, line: &str) -> Result<(), String> {
    let (verb, addr) = line
        .split_once(' ')
        .ok_or_else(|| format!("expected VERB IP, got {line:?}"))?;
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("not an IP address: {addr:?}"))?;
    if !cluster.nodes().contains(&addr) {
        return Err(format!("no simulated node {addr}"));
    }
    let fault = match verb {
        "down" => Fault::Down,
        "hang" => Fault::Hang,
        "up" => Fault::None,
        "close" => {
            return cluster
                .close_connections(addr)
                .map_err(|e| format!("{addr}: {e}"))
        }
        "list" | "unlist" => {
            cluster.set_listed(addr, verb == "list");
            return Ok(());
        }
        _ => {
            return Err(format!(
                "unknown command {verb:?}: down, hang, up, close, list or unlist"
            ))
        }
    };
    cluster
        .try_set_fault(addr, fault)
        .map_err(|e| format!("{addr}: {e}"))
}

type Churn = (Arc<AtomicBool>, std::thread::JoinHandle<()>);

/// Toggles whether the last node is listed, `per_second` times a second, so
/// that a responder polling often swaps its snapshot that often.
fn churn(cluster: &SimCluster, per_second: u32) -> Option<Churn> {
    let node = *cluster.nodes().last()?;
    if per_second == 0 {
        return None;
    }
    let period = Duration::from_secs(1) / per_second;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::spawn({
        let (cluster, stop) = (cluster.clone(), Arc::clone(&stop));
        move || {
            let mut listed = true;
            let mut next = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                listed = !listed;
                cluster.set_listed(node, listed);
                next += period;
                std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
            }
            cluster.set_listed(node, true);
        }
    });
    println!("Churn: {node} leaves and rejoins /localnodes, {per_second} changes per second");
    Some((stop, thread))
}
