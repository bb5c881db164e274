//! The demo's story: what the balancer is for, shown rather than told. Once
//! alternator-dns serves every simulated node, one node dies; the answers
//! move off it, and the time that took is printed; `alternator-dns status`
//! shows the operator's view; the node comes back and is served again.
//!
//! The answers are asked over real DNS (UDP, a query every millisecond or
//! so), the way a client would see them.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use alternator_sim::{Fault, SimCluster};
use anyhow::{bail, Context};
use domain::base::iana::Rtype;
use domain::base::{Message, MessageBuilder, Name};
use domain::rdata::A;

/// How long each step may take before the story gives up.
const STEP_LIMIT: Duration = Duration::from_secs(20);
/// How long the cluster runs before a node is killed, so that every node has
/// passed a few probes and each probe's connection is kept and watched.
const SETTLE: Duration = Duration::from_secs(2);
/// Answers in a row without the dead node that say it is gone.
const QUIET_ANSWERS: usize = 300;

/// Asks `domain`'s A records at `server`.
struct Asker {
    socket: UdpSocket,
    query: Vec<u8>,
}

impl Asker {
    fn new(server: SocketAddr, domain: &str) -> anyhow::Result<Asker> {
        let socket = UdpSocket::bind((server.ip(), 0)).context("bind a DNS client socket")?;
        socket.connect(server)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let name = Name::<Vec<u8>>::vec_from_str(domain).context("the demo's domain")?;
        let mut builder = MessageBuilder::new_vec().question();
        builder.header_mut().set_rd(true);
        builder.push((name, Rtype::A))?;
        Ok(Asker {
            socket,
            query: builder.finish(),
        })
    }

    /// The addresses of one answer; empty when none came.
    fn ask(&self) -> Vec<IpAddr> {
        let mut buf = [0u8; 1500];
        if self.socket.send(&self.query).is_err() {
            return Vec::new();
        }
        let Ok(n) = self.socket.recv(&mut buf) else {
            return Vec::new();
        };
        let Ok(message) = Message::from_octets(&buf[..n]) else {
            return Vec::new();
        };
        let Ok(answer) = message.answer() else {
            return Vec::new();
        };
        answer
            .limit_to::<A>()
            .filter_map(Result::ok)
            .map(|record| IpAddr::V4(record.data().addr()))
            .collect()
    }

    /// Asks until every node of `nodes` has been in some answer.
    fn wait_for_all(&self, nodes: &[IpAddr]) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut seen = BTreeSet::new();
        while start.elapsed() < STEP_LIMIT {
            seen.extend(self.ask());
            if nodes.iter().all(|n| seen.contains(n)) {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        bail!("not every node was answered within {STEP_LIMIT:?} (seen: {seen:?})")
    }

    /// Asks until `gone` has been in no answer for [`QUIET_ANSWERS`] in a
    /// row; the time from `since` to the last answer naming it (zero when
    /// none did).
    fn wait_until_gone(&self, gone: IpAddr, since: Instant) -> anyhow::Result<Duration> {
        let mut last_seen = None;
        let mut quiet = 0;
        while since.elapsed() < STEP_LIMIT {
            let answer = self.ask();
            if answer.contains(&gone) {
                last_seen = Some(since.elapsed());
                quiet = 0;
            } else if !answer.is_empty() {
                quiet += 1;
                if quiet >= QUIET_ANSWERS {
                    return Ok(last_seen.unwrap_or_default());
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        bail!("{gone} was still answered {STEP_LIMIT:?} after it died")
    }
}

/// Tells the story once; the cluster and the responder keep running after.
pub fn tell(
    cluster: &SimCluster,
    dns: SocketAddr,
    domain: &str,
    responder: &Path,
    metrics: SocketAddr,
) -> anyhow::Result<()> {
    let nodes = cluster.nodes();
    let Some(&victim) = nodes.get(1).or(nodes.first()) else {
        return Ok(());
    };
    let asker = Asker::new(dns, domain)?;
    let took = asker.wait_for_all(&nodes)?;
    println!(
        "\n1. alternator-dns answers with every node ({} after start).",
        ms(took)
    );
    // Steady state first: every node's probe connection open and watched.
    std::thread::sleep(SETTLE);
    println!("2. Killing {victim}: its Alternator port now refuses connections.");
    let killed = Instant::now();
    cluster.set_fault(victim, Fault::Down);
    let gone = asker.wait_until_gone(victim, killed)?;
    match gone.is_zero() {
        true => println!(
            "   No answer after the kill named {victim} ({QUIET_ANSWERS} answers in a row \
             without it, one every half millisecond)."
        ),
        false => println!(
            "   {victim} left the answers {} after it died ({QUIET_ANSWERS} answers in a row \
             without it since).",
            ms(gone)
        ),
    }
    println!("3. What the operator sees (alternator-dns status --metrics {metrics}):\n");
    show_status(responder, metrics);
    println!("4. Bringing {victim} back.");
    let revived = Instant::now();
    cluster.set_fault(victim, Fault::None);
    asker.wait_for_all(&nodes)?;
    println!(
        "   {victim} is answered again {} later.\n",
        ms(revived.elapsed())
    );
    Ok(())
}

fn show_status(responder: &Path, metrics: SocketAddr) {
    let output = Command::new(responder)
        .args(["status", "--metrics", &metrics.to_string()])
        .output();
    match output {
        Ok(out) => {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                println!("   {line}");
            }
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.trim().is_empty() {
                println!("   {}", err.trim());
            }
        }
        Err(e) => println!("   cannot run {}: {e}", responder.display()),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
