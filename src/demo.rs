//! The demo and the standalone simulator: a simulated Alternator cluster on
//! loopback, with or without the responder in front of it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::{Config, DemoArgs, HumanDuration, Options, SimArgs};
use crate::control::Shutdown;
use crate::sim::{Fault, SimCluster};

/// Starts a simulated cluster on 127.0.0.1..N and the responder against it.
pub fn run_demo(args: &DemoArgs) -> anyhow::Result<()> {
    let nodes: Vec<IpAddr> = (1..=args.nodes)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect();
    let cluster = SimCluster::start(&nodes, args.alternator_port)
        .context("cannot start the simulated Alternator cluster")?;
    let port = cluster.port();
    let config = Config::from_options(Options {
        listen: vec![args.listen],
        domain: Some(args.domain.clone()),
        seed: nodes.iter().map(|ip| format!("{ip}:{port}")).collect(),
        alternator_port: Some(port),
        threads: Some(args.threads),
        refresh_interval: Some(HumanDuration(Duration::from_secs(1))),
        ..Options::default()
    })
    .context("demo configuration")?;
    let shown: Vec<String> = nodes.iter().map(|ip| format!("{ip}:{port}")).collect();
    println!("Simulated Alternator cluster: {}", shown.join(" "));
    println!(
        "alternator-dns answers {} on {} (UDP and TCP). Try:",
        args.domain, args.listen
    );
    println!(
        "  dig @{} -p {} {} A +short",
        args.listen.ip(),
        args.listen.port(),
        args.domain
    );
    println!(
        "  kdig @{} -p {} {} A +tcp",
        args.listen.ip(),
        args.listen.port(),
        args.domain
    );
    match args.duration {
        Some(d) => println!("Stopping after {d}."),
        None => println!("Ctrl-C stops the demo."),
    }
    let shutdown = Shutdown::new();
    if let Some(HumanDuration(limit)) = args.duration {
        let stop = shutdown.clone();
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            stop.trigger();
        });
    }
    let result = crate::server::run(&config, None, shutdown);
    cluster.shutdown();
    result.context("responder")
}

/// Runs only the simulated cluster until SIGINT or SIGTERM.
pub fn run_sim(args: &SimArgs) -> anyhow::Result<()> {
    let cluster = SimCluster::start(&args.nodes, args.port)
        .context("cannot start the simulated Alternator cluster")?;
    let shown: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|ip| std::net::SocketAddr::new(*ip, cluster.port()).to_string())
        .collect();
    println!("Simulated Alternator nodes: {}", shown.join(" "));
    let churning = churn(&cluster, args.churn_per_second);
    if args.control_stdin {
        let cluster = cluster.clone();
        std::thread::spawn(move || control_from_stdin(&cluster));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    if let Some((stop, thread)) = churning {
        stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
    }
    cluster.shutdown();
    Ok(())
}

/// Applies the `--control-stdin` commands until standard input closes.
fn control_from_stdin(cluster: &SimCluster) {
    use std::io::{BufRead, Write};
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

/// One `--control-stdin` command: `down|hang|up|list|unlist IP`.
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
        "list" | "unlist" => {
            cluster.set_listed(addr, verb == "list");
            return Ok(());
        }
        _ => {
            return Err(format!(
                "unknown command {verb:?}: down, hang, up, list or unlist"
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
