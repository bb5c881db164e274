//! What an operator sees and changes on a running server: `/nodes`, the
//! `status` command, excluded nodes on reload (and a reload rejected for
//! leaving a name with no node), the access list and the rate limit changed
//! on reload under load.
//!
//! Node addresses 127.0.19x.x.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use domain::base::iana::{Rcode, Rtype};

use alternator_dns::nodes::view::{NodeView, NodesView};
use alternator_sim::{Fault, SimCluster};
use support::cluster_checks::*;
use support::reload::*;
use support::*;

/// The `/nodes` view of the server, parsed.
fn view(r: &Responder) -> NodesView {
    let addr = r.metrics_addr().expect("a metrics endpoint");
    let (status, body) = http_status(addr, "/nodes").expect("/nodes answers");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn node(view: &NodesView, addr: IpAddr) -> NodeView {
    let address = addr.to_string();
    view.nodes
        .iter()
        .find(|n| n.address == address)
        .unwrap_or_else(|| panic!("{address} not in {view:?}"))
        .clone()
}

/// Starts the server on `config` (which holds `listen`), with the cluster
/// flags, `--answers all` and a metrics endpoint.
fn start_with_file(sim: &SimCluster, seeds: &[IpAddr], config: &TempFile) -> Responder {
    let mut args = cluster_args(sim, seeds, REFRESH_MS, REFRESH_MS);
    args.extend(
        [
            "--config",
            config.path_str(),
            "--answers",
            "all",
            "--threads",
            "1",
            "--metrics-listen",
            "127.0.0.1:0",
        ]
        .map(String::from),
    );
    Responder::start_exact(&args, &[])
}

/// A client asking for the domain without pause until stopped; counts the
/// replies that are not a NOERROR answer with an address.
struct Asker {
    stop: Arc<AtomicBool>,
    bad: Arc<AtomicU64>,
    asked: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Asker {
    fn start(server: SocketAddr) -> Asker {
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(AtomicU64::new(0));
        let asked = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, bad, asked) = (stop.clone(), bad.clone(), asked.clone());
            std::thread::spawn(move || {
                let mut client = DnsClient::new(server);
                while !stop.load(Ordering::Relaxed) {
                    let reply = client.query(DOMAIN, Rtype::A);
                    let good = reply
                        .as_ref()
                        .is_some_and(|r| r.rcode() == Rcode::NOERROR && !r.addrs().is_empty());
                    asked.fetch_add(1, Ordering::Relaxed);
                    if !good {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Asker {
            stop,
            bad,
            asked,
            thread: Some(thread),
        }
    }

    /// Stops; the queries asked and the bad replies.
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the asking thread");
        }
        (
            self.asked.load(Ordering::Relaxed),
            self.bad.load(Ordering::Relaxed),
        )
    }
}

// 1. A killed node: listed, failing, not served, in /nodes and in `status`.
#[test]
fn nodes_and_status_show_a_killed_node_as_listed_failing_and_not_served() {
    let (sim, n) = cluster(190, 3);
    let r = Responder::start(&default_health_args(&sim, &n[..1]));
    r.wait_for_cluster_list();
    let mut client = r.client();
    expect_served(&r, &mut client, DOMAIN, &n);
    sim.set_fault(n[0], Fault::Down);
    expect_served(&r, &mut client, DOMAIN, &n[1..]);
    let seen = view(&r);
    let dead = node(&seen, n[0]);
    assert_eq!(
        (dead.listed, dead.healthy, dead.served, dead.excluded),
        (true, Some(false), false, false),
        "{dead:?}"
    );
    let probe = dead.last_probe.clone().expect("a probe");
    assert!(!probe.ok && probe.error.is_some(), "{probe:?}");
    let alive = node(&seen, n[1]);
    assert_eq!((alive.healthy, alive.served), (Some(true), true));
    assert_eq!(alive.names, vec![DOMAIN]);
    assert_eq!(seen.names[0].name, DOMAIN);
    assert_eq!(seen.names[0].served.len(), 2);

    let metrics = r.metrics_addr().unwrap().to_string();
    let table = run_cli(&["status", "--metrics", &metrics]);
    assert!(table.status.success(), "{}", table.stderr);
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with(&n[0].to_string()))
        .unwrap_or_else(|| panic!("no row for {}:\n{}", n[0], table.stdout));
    assert!(row.contains("FAILING") && row.contains(" no "), "{row}");
    let json = run_cli(&["status", "--metrics", &metrics, "--json"]);
    assert!(json.status.success(), "{}", json.stderr);
    let parsed: NodesView = serde_json::from_str(json.stdout.trim()).unwrap();
    assert!(!node(&parsed, n[0]).served);
}

// 2. `status` with no server there: a clear message, exit status 1.
#[test]
fn status_says_when_the_server_cannot_be_reached() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let run = run_cli(&["status", "--metrics", &addr]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("cannot reach the server's metrics endpoint")
            && run.stderr.contains(&addr),
        "{}",
        run.stderr
    );
}

// 3. Excluding a node on reload takes it out at once and loses no query; a
// reload that would leave the domain with no node is rejected and the
// running configuration keeps serving.
#[test]
fn exclude_on_reload_takes_a_node_out_and_a_reload_excluding_every_node_is_rejected() {
    let (sim, n) = cluster(191, 3);
    let listen = "listen = [\"127.0.0.1:0\"]\n";
    let file = TempFile::new("exclude", listen);
    let mut r = start_with_file(&sim, &n[..1], &file);
    r.wait_for_cluster_list();
    let mut client = r.client();
    expect_served(&r, &mut client, DOMAIN, &n);
    let asker = Asker::start(r.udp_addr());

    write_config(&file.path, &format!("{listen}exclude = [\"{}\"]\n", n[0]));
    sighup_and_wait(&mut r, "configuration reloaded", 1);
    // Applied before the reload is logged: the very next answer lacks it.
    assert_eq!(sorted(client.a(DOMAIN)), n[1..].to_vec());
    let excluded = node(&view(&r), n[0]);
    assert_eq!(
        (excluded.excluded, excluded.served, excluded.listed),
        (true, false, true)
    );

    let all: Vec<String> = n.iter().map(|a| format!("\"{a}\"")).collect();
    write_config(
        &file.path,
        &format!("{listen}exclude = [{}]\n", all.join(", ")),
    );
    sighup_and_wait(&mut r, "the new configuration is rejected", 1);
    assert!(
        r.log_text().contains("would serve no node"),
        "{}",
        r.log_text()
    );
    assert_eq!(sorted(client.a(DOMAIN)), n[1..].to_vec());

    write_config(&file.path, listen);
    sighup_and_wait(&mut r, "configuration reloaded", 2);
    assert_eq!(sorted(client.a(DOMAIN)), n.to_vec());
    let (asked, bad) = asker.finish();
    assert!(asked > 0);
    assert_eq!(bad, 0, "{bad} of {asked} queries got no address");
}

/// What `count` queries for the domain from `client`, each waiting up to
/// 100 ms once, got: answers with an address, truncated replies, REFUSED,
/// and no reply.
fn burst(client: &mut DnsClient, count: usize) -> (usize, usize, usize, usize) {
    let (mut answered, mut truncated, mut refused, mut silent) = (0, 0, 0, 0);
    for _ in 0..count {
        match client.query_once(DOMAIN, Rtype::A, Duration::from_millis(100)) {
            None => silent += 1,
            Some(r) if r.rcode() == Rcode::REFUSED => refused += 1,
            Some(r) if r.addrs().is_empty() => truncated += 1,
            Some(_) => answered += 1,
        }
    }
    (answered, truncated, refused, silent)
}

// 4. The access list and the rate limit change on reload,
// while a client that stays allowed loses no query.
#[test]
fn access_list_and_rate_limit_change_on_reload_without_a_lost_query() {
    let (sim, n) = cluster(192, 2);
    let listen = "listen = [\"127.0.0.1:0\"]\n";
    let file = TempFile::new("rules", listen);
    let mut r = start_with_file(&sim, &n[..1], &file);
    r.wait_for_cluster_list();
    let server = r.udp_addr();
    let outsider: IpAddr = "127.0.9.1".parse().unwrap();
    let mut other = DnsClient::from(outsider, server);
    assert_eq!(burst(&mut other, 5), (5, 0, 0, 0));
    let asker = Asker::start(server);

    write_config(
        &file.path,
        &format!("{listen}allow = [\"127.0.0.1/32\"]\ndenied = \"refuse\"\n"),
    );
    sighup_and_wait(&mut r, "configuration reloaded", 1);
    assert_eq!(
        burst(&mut other, 5),
        (0, 0, 5, 0),
        "refused after the reload"
    );
    write_config(
        &file.path,
        &format!("{listen}allow = [\"127.0.0.1/32\"]\ndenied = \"drop\"\n"),
    );
    sighup_and_wait(&mut r, "configuration reloaded", 2);
    assert_eq!(
        burst(&mut other, 3),
        (0, 0, 0, 3),
        "dropped after the reload"
    );
    let (asked, bad) = asker.finish();
    assert!(asked > 0);
    assert_eq!(
        bad, 0,
        "{bad} of {asked} queries from an allowed source got no address"
    );

    write_config(&file.path, &format!("{listen}rate-limit = 5\n"));
    sighup_and_wait(&mut r, "configuration reloaded", 3);
    let (answered, truncated, _, silent) = burst(&mut other, 60);
    assert!(
        answered < 30 && truncated + silent > 30,
        "limited to 5 a second: {answered} answered, {truncated} truncated, {silent} dropped"
    );
    write_config(&file.path, listen);
    sighup_and_wait(&mut r, "configuration reloaded", 4);
    assert_eq!(
        burst(&mut other, 60),
        (60, 0, 0, 0),
        "no limit after the reload"
    );
    assert!(
        r.log_text()
            .contains("access and rate-limit rules replaced"),
        "{}",
        r.log_text()
    );
}
