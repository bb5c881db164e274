//! The churn soak: a fixed dnsperf load for the whole run while a chaos driver
//! changes the simulated cluster on a random schedule, and a sampler checks
//! that the answers follow the cluster.
//!
//! One test, 60 s by default. `SOAK_SECONDS`, `SOAK_QPS` and `SOAK_SEED`
//! change the length, dnsperf's offered rate (30,000 qps by default) and the
//! chaos schedule, and `SOAK_SIGHUP=0` leaves out the reloads; `scripts/soak`
//! runs it on the release build for 10 minutes.
//!
//! What runs at once:
//! - dnsperf offers `SOAK_QPS` A queries a second for the apex (4 sockets);
//! - the chaos driver, every 0.2 to 1.2 s, kills a node (still listed, or
//!   dropped from `/localnodes`), revives one, makes one answer `/localnodes`
//!   with garbage, an empty list or host IDs, makes one answer 500 or hang,
//!   adds a node or removes one; every 2 to 4 s it rewrites the configuration
//!   file (TTL 4 <-> 5, a `[[name]]` table added or removed) and sends SIGHUP.
//!   It logs every change with its time. It keeps the cluster usable, as a
//!   real one would be during an incident: at least two listed nodes that
//!   answer everything, at least one seed that answers `/localnodes`, and at
//!   most two hanging nodes (see `Chaos::allowed`);
//! - the sampler asks about 50 queries a second (`--answers all`: every served
//!   node is in each answer) and records each answer with the times the query
//!   was sent and the answer received.
//!
//! It passes when dnsperf lost no query and saw only NOERROR; every sampled
//! query got a NOERROR answer; no sampled answer breaks the membership rules
//! (see `check_samples`); the server's resident set grew by less than 5% and
//! its open file descriptors stayed flat between the end of the warm-up and
//! the end; and the log has fewer than one line per 1,000 queries.
//!
//! The server runs with the default health settings (probe every 500 ms,
//! timeout 300 ms, out after 2 failures), which the 1.5 s bound is made for,
//! and `--refresh-interval 250ms --refresh-timeout 300ms`, two UDP workers.
//! In the suite it is the debug binary, which takes the full 30,000 qps on
//! two shared cores without losing a query (measured: 1.8 million queries a
//! run, none lost), so the in-suite rate is the full one too.
//!
//! The soak found two ways a SIGHUP makes answers stale past the bound; each
//! has a deterministic test at the end of this file
//! (`a_node_dying_across_a_reload_leaves_within_the_bound`,
//! `a_reload_with_every_seed_gone_keeps_following_the_cluster`). Until they
//! pass, the soak fails now and then with "unreachable for 1.5x s but
//! served" for a node that hung shortly before a reload.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};

use alternator_sim::{Fault, SimCluster, SimNode, SimOptions};
use support::*;

/// Node addresses 127.0.180.x.
const TEST_NO: u8 = 180;
/// Addresses the chaos driver may use: 127.0.180.1 ..= POOL.
const POOL: u8 = 12;
/// Nodes at start: 127.0.180.1 ..= INITIAL.
const INITIAL: u8 = 6;
/// The seeds: 127.0.180.1 ..= SEEDS.
const SEEDS: u8 = 3;

const DEFAULT_SECONDS: u64 = 60;
const DEFAULT_QPS: u64 = 30_000;
/// How stale an answer may be: a node unreachable (or healthy and listed)
/// for longer than this must be out of (in) every answer.
const BOUND: Duration = Duration::from_millis(1500);
/// Flap damping as configured by default: a node taken out this often
/// within the window comes back only after 5 passes in a row (2.5 s at the
/// default interval), so it may be missing for [`DAMPED_BOUND`] instead.
const FLAP_LIMIT: usize = 3;
const FLAP_WINDOW: Duration = Duration::from_secs(60);
const DAMPED_BOUND: Duration = Duration::from_millis(4500);
/// The resident set and the fd count are first read this long after dnsperf
/// starts (allocator arenas and connection pools have settled by then).
const WARM_UP: Duration = Duration::from_secs(10);
/// Sampler pace: about 50 queries a second.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// How long the sampler waits for one answer.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Allowed resident-set growth after warm-up, in percent.
const RSS_GROWTH_PERCENT: f64 = 5.0;
/// Allowed fd difference between warm-up and end: pooled keep-alive
/// connections to the nodes (two idle per node at most) come and go with the
/// nodes; a leak grows with time, far past this.
const FD_SLACK: usize = 2 * POOL as usize;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// dnsperf, or None when it is not installed (an error when `CI` is set).
fn dnsperf() -> Option<&'static str> {
    let found = Command::new("dnsperf")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return Some("dnsperf");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "dnsperf is not installed (scripts/setup installs it)"
    );
    eprintln!("soak: SKIPPED: dnsperf is not installed (scripts/setup installs it)");
    None
}

/// What dnsperf reported.
#[derive(Debug, Default)]
struct PerfStats {
    sent: u64,
    completed: u64,
    lost: u64,
    codes: BTreeMap<String, u64>,
    qps: f64,
}

fn parse_dnsperf(text: &str) -> Option<PerfStats> {
    let number = |label: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
        line[line.find(label)? + label.len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let mut stats = PerfStats {
        sent: number("Queries sent:")?,
        completed: number("Queries completed:")?,
        lost: number("Queries lost:")?,
        ..PerfStats::default()
    };
    if let Some(line) = text
        .lines()
        .find(|l| l.trim_start().starts_with("Response codes:"))
    {
        // "Response codes:       NOERROR 300000 (100.00%), SERVFAIL 2 (0.00%)"
        let list = &line[line.find(':').unwrap_or(0) + 1..];
        for part in list.split(',') {
            let mut words = part.split_whitespace();
            if let (Some(code), Some(count)) = (words.next(), words.next()) {
                if let Ok(count) = count.parse() {
                    stats.codes.insert(code.to_string(), count);
                }
            }
        }
    }
    stats.qps = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("Queries per second:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    Some(stats)
}

/// What the rules say about one node at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Exists, listed, and answers `GET /`: must be served.
    Serve,
    /// Gone, down, hanging or answering 500: must not be served.
    Unreachable,
    /// Alive but not listed (between the two steps of a revive): no rule.
    Neither,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodeState {
    exists: bool,
    listed: bool,
    fault: Fault,
}

impl NodeState {
    fn class(&self) -> Class {
        if !self.exists || matches!(self.fault, Fault::Down | Fault::Hang | Fault::Status500) {
            Class::Unreachable
        } else if self.listed {
            Class::Serve
        } else {
            Class::Neither
        }
    }

    /// Answers `/localnodes` with a usable list.
    fn polls_well(&self) -> bool {
        self.exists && matches!(self.fault, Fault::None | Fault::HostIds)
    }
}

/// Every change of a node's class, with when it took effect (after the
/// simulator call that made it returned).
#[derive(Default)]
struct Timeline {
    changes: HashMap<IpAddr, Vec<(Instant, Class)>>,
}

impl Timeline {
    fn record(&mut self, at: Instant, node: IpAddr, class: Class) {
        let list = self.changes.entry(node).or_default();
        if list.last().map(|&(_, c)| c) != Some(class) {
            list.push((at, class));
        }
    }

    /// Whether the server may hold `node` back as flapping when it becomes
    /// servable at `at`: it became unreachable (after being servable)
    /// [`FLAP_LIMIT`] times within the damping window before `at`, widened
    /// by `BOUND` since the server sees each fall up to that late. Counting
    /// falls the server may not have seen errs in its favour.
    fn flapping(&self, node: IpAddr, at: Instant) -> bool {
        let Some(list) = self.changes.get(&node) else {
            return false;
        };
        let from = at.checked_sub(FLAP_WINDOW + BOUND);
        let falls = list
            .windows(2)
            .filter(|w| w[0].1 == Class::Serve && w[1].1 == Class::Unreachable)
            .filter(|w| w[1].0 <= at && from.is_none_or(|from| w[1].0 >= from))
            .count();
        falls >= FLAP_LIMIT
    }

    /// The node's class at `at` and since when it has held, if it held
    /// unchanged through `until` too.
    fn steady(&self, node: IpAddr, at: Instant, until: Instant) -> Option<(Class, Instant)> {
        let list = self.changes.get(&node)?;
        let i = list.iter().rposition(|&(t, _)| t <= at)?;
        let (since, class) = list[i];
        match list.get(i + 1) {
            Some(&(next, _)) if next <= until => None,
            _ => Some((class, since)),
        }
    }
}

/// The chaos driver's view of the cluster, and its log.
struct Chaos {
    sim: SimCluster,
    state: BTreeMap<IpAddr, NodeState>,
    seeds: Vec<IpAddr>,
    timeline: Arc<Mutex<Timeline>>,
    log: Vec<String>,
    start: Instant,
    rng: SplitMix,
    actions: usize,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    /// Down, still listed (gossip has not noticed).
    Kill,
    /// Down and dropped from `/localnodes`.
    KillUnlisted,
    Revive,
    /// `/localnodes` only: garbage, empty list or host IDs.
    BadList,
    /// 500 or hang on every request.
    Unhealthy,
    Add,
    Remove,
}

const ACTIONS: [(Action, u64); 7] = [
    (Action::Kill, 15),
    (Action::KillUnlisted, 10),
    (Action::Revive, 30),
    (Action::BadList, 15),
    (Action::Unhealthy, 15),
    (Action::Add, 8),
    (Action::Remove, 7),
];

impl Chaos {
    fn note(&mut self, what: String) {
        let line = format!("[{:9.3}s] {what}", self.start.elapsed().as_secs_f64());
        self.log.push(line);
    }

    fn pick(&mut self, candidates: &[IpAddr]) -> Option<IpAddr> {
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[(self.rng.next_u64() % candidates.len() as u64) as usize])
    }

    fn nodes_where(&self, f: impl Fn(&NodeState) -> bool) -> Vec<IpAddr> {
        self.state
            .iter()
            .filter(|(_, s)| f(s))
            .map(|(a, _)| *a)
            .collect()
    }

    /// Whether the cluster would stay usable with `node` in state `new`.
    fn allowed(&self, node: IpAddr, new: NodeState) -> bool {
        let after = |a: &IpAddr| if *a == node { new } else { self.state[a] };
        let all: Vec<NodeState> = self.state.keys().map(after).collect();
        let serving = all
            .iter()
            .filter(|s| s.class() == Class::Serve && s.fault == Fault::None)
            .count();
        let seeds_ok = self.seeds.iter().filter(|a| after(a).polls_well()).count();
        let hanging = all.iter().filter(|s| s.fault == Fault::Hang).count();
        serving >= 2 && seeds_ok >= 1 && hanging <= 2
    }

    /// Records the class of `node` as it is now.
    fn settle(&mut self, node: IpAddr) {
        let class = self.state[&node].class();
        self.timeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(Instant::now(), node, class);
    }

    fn set_fault(&mut self, node: IpAddr, fault: Fault) -> bool {
        match self.sim.try_set_fault(node, fault) {
            Ok(()) => {
                self.state.get_mut(&node).expect("a pool node").fault = fault;
                self.settle(node);
                true
            }
            Err(e) => {
                self.note(format!("  set_fault({node}, {fault:?}) failed: {e}"));
                false
            }
        }
    }

    fn set_listed(&mut self, node: IpAddr, listed: bool) {
        self.sim.set_listed(node, listed);
        self.state.get_mut(&node).expect("a pool node").listed = listed;
        self.settle(node);
    }

    /// Tries one random action; false when the one drawn is not possible now.
    fn act(&mut self) -> bool {
        let total: u64 = ACTIONS.iter().map(|(_, w)| w).sum();
        let mut draw = self.rng.next_u64() % total;
        let action = ACTIONS
            .iter()
            .find(|(_, w)| {
                let hit = draw < *w;
                draw = draw.saturating_sub(*w);
                hit
            })
            .map_or(Action::Revive, |(a, _)| *a);
        let candidates = match action {
            Action::Kill | Action::KillUnlisted => {
                self.nodes_where(|s| s.exists && s.fault != Fault::Down)
            }
            Action::Revive => {
                self.nodes_where(|s| s.exists && (s.fault != Fault::None || !s.listed))
            }
            Action::BadList | Action::Unhealthy => {
                self.nodes_where(|s| s.exists && s.listed && s.fault == Fault::None)
            }
            Action::Add => self.nodes_where(|s| !s.exists),
            Action::Remove => self.nodes_where(|s| s.exists),
        };
        let Some(node) = self.pick(&candidates) else {
            return false;
        };
        let old = self.state[&node];
        let fault = match action {
            Action::BadList => [Fault::Garbage, Fault::EmptyList, Fault::HostIds]
                [(self.rng.next_u64() % 3) as usize],
            Action::Unhealthy => {
                [Fault::Status500, Fault::Hang][(self.rng.next_u64() % 2) as usize]
            }
            _ => Fault::None,
        };
        let new = match action {
            Action::Kill => NodeState {
                fault: Fault::Down,
                ..old
            },
            Action::KillUnlisted => NodeState {
                fault: Fault::Down,
                listed: false,
                ..old
            },
            Action::Revive => NodeState {
                fault: Fault::None,
                listed: true,
                ..old
            },
            Action::BadList | Action::Unhealthy => NodeState { fault, ..old },
            Action::Add => NodeState {
                exists: true,
                listed: true,
                fault: Fault::None,
            },
            Action::Remove => NodeState {
                exists: false,
                listed: false,
                fault: Fault::None,
            },
        };
        if !self.allowed(node, new) {
            return false;
        }
        self.actions += 1;
        match action {
            Action::Kill => {
                self.note(format!("kill {node} (still listed)"));
                self.set_fault(node, Fault::Down);
            }
            Action::KillUnlisted => {
                self.note(format!("kill {node} and drop it from /localnodes"));
                // Unlisted first: the node is never listed-and-down by
                // accident of the order, and it leaves the lists at once.
                self.set_listed(node, false);
                self.set_fault(node, Fault::Down);
            }
            Action::Revive => {
                self.note(format!(
                    "revive {node} (was {:?}{})",
                    old.fault,
                    if old.listed { "" } else { ", unlisted" }
                ));
                if self.set_fault(node, Fault::None) {
                    self.set_listed(node, true);
                }
            }
            Action::BadList | Action::Unhealthy => {
                self.note(format!("{node}: {fault:?}"));
                self.set_fault(node, fault);
            }
            Action::Add => {
                self.note(format!("add {node}"));
                match self.sim.add_node(node) {
                    Ok(()) => {
                        *self.state.get_mut(&node).expect("a pool node") = new;
                        self.settle(node);
                    }
                    Err(e) => self.note(format!("  add_node({node}) failed: {e}")),
                }
            }
            Action::Remove => {
                self.note(format!("remove {node}"));
                self.sim.remove_node(node);
                *self.state.get_mut(&node).expect("a pool node") = new;
                self.settle(node);
            }
        }
        self.note(format!("  done; serving set now {:?}", self.serve_set()));
        true
    }

    fn serve_set(&self) -> Vec<IpAddr> {
        self.nodes_where(|s| s.class() == Class::Serve)
    }
}

/// The configuration file, in one of two shapes the reloads alternate.
fn config_text(port: u16, seeds: &[IpAddr], flip: bool) -> String {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    let mut text = format!(
        "domain = \"{DOMAIN}\"\n\
         seed = [{}]\n\
         alternator-port = {port}\n\
         answers = \"all\"\n\
         refresh-interval = \"250ms\"\n\
         refresh-timeout = \"300ms\"\n\
         ttl = {}\n",
        seeds.join(", "),
        if flip { 5 } else { 4 }
    );
    if flip {
        text.push_str("\n[[name]]\nname = \"dc1.alternator.test\"\ndc = \"dc1\"\n");
    }
    text
}

/// One sampled query.
#[derive(Debug, Clone)]
struct Sample {
    sent: Instant,
    received: Instant,
    rcode: Option<Rcode>,
    addrs: Vec<IpAddr>,
    ttl: Option<u32>,
}

/// Asks one A query every [`SAMPLE_EVERY`] until `stop`.
fn sample(server: std::net::SocketAddr, stop: &AtomicBool) -> Vec<Sample> {
    let client = DnsClient::new(server);
    let mut samples = Vec::new();
    let mut id: u16 = 0;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        id = id.wrapping_add(1);
        let query = build_query(id, DOMAIN, Rtype::A);
        let sent = Instant::now();
        let reply = client.exchange_once(&query, SAMPLE_TIMEOUT);
        let received = Instant::now();
        samples.push(match reply {
            Some(r) => Sample {
                sent,
                received,
                rcode: Some(r.rcode()),
                addrs: r.addrs(),
                ttl: r.answer_ttls().first().copied(),
            },
            None => Sample {
                sent,
                received,
                rcode: None,
                addrs: Vec::new(),
                ttl: None,
            },
        });
        next += SAMPLE_EVERY;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    samples
}

/// The rules each sampled answer is held to, for a query sent at `sent` and
/// answered at `received`, for each node X of the pool:
/// - stale: X was unreachable (removed, down, hanging, answering 500) without
///   a break from before `sent - BOUND` through `received`, yet the answer
///   names X;
/// - missing: X existed, was listed and answered `GET /` without a break from
///   before `sent - BOUND` through `received`, yet the answer lacks X; for a
///   node the server may hold back as flapping, before
///   `sent - DAMPED_BOUND`.
///
/// Change times are taken after the simulator call returned, and the
/// query's send time is used: both in the server's favour. `BOUND` covers a
/// dead node's detection (two failed probes 450-550 ms apart, the second
/// starting at most 550 ms after the death, each failing at once or after
/// the 300 ms probe timeout) and a new node's admission (a poll every
/// 250 ms, taking at most 300 ms per unresponsive node tried, then one
/// probe within 100 ms).
fn check_samples(samples: &[Sample], timeline: &Timeline, pool: &[IpAddr]) -> Vec<String> {
    let mut violations = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        if s.rcode.is_none() {
            continue;
        }
        let Some(old_enough) = s.sent.checked_sub(BOUND) else {
            continue;
        };
        for &node in pool {
            let Some((class, since)) = timeline.steady(node, s.sent, s.received) else {
                continue;
            };
            if since >= old_enough {
                continue;
            }
            let damped = class == Class::Serve
                && timeline.flapping(node, since)
                && s.sent.checked_sub(DAMPED_BOUND).is_none_or(|t| since >= t);
            if damped {
                continue;
            }
            let named = s.addrs.contains(&node);
            match class {
                Class::Unreachable if named => violations.push(format!(
                    "sample {i}: {node} unreachable for {:?} but served",
                    s.sent - since
                )),
                Class::Serve if !named => violations.push(format!(
                    "sample {i}: {node} healthy and listed for {:?} but not served",
                    s.sent - since
                )),
                _ => {}
            }
        }
    }
    violations
}

/// The message of a text log line: the words after the target, up to the
/// first `key=value` field.
fn log_message(line: &str) -> String {
    let rest = line
        .split_once(": ")
        .map_or(line, |(_, rest)| rest)
        .split_whitespace()
        .take_while(|w| !w.contains('='))
        .collect::<Vec<_>>();
    rest.join(" ")
}

#[test]
fn churn_soak() {
    let Some(dnsperf) = dnsperf() else {
        return;
    };
    let seconds = env_u64("SOAK_SECONDS", DEFAULT_SECONDS).max(WARM_UP.as_secs() + 5);
    let qps = env_u64("SOAK_QPS", DEFAULT_QPS);
    // A fresh schedule each run unless SOAK_SEED repeats one (the timing
    // still differs from run to run).
    let seed = env_u64(
        "SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    );
    let reloading = env_u64("SOAK_SIGHUP", 1) != 0;
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));

    let pool = nodes(TEST_NO, POOL);
    let initial: Vec<SimNode> = pool[..INITIAL as usize]
        .iter()
        .map(|&a| SimNode::new(a, "dc1", "rack1"))
        .collect();
    let sim = SimCluster::start_with(&initial, 0, SimOptions::default())
        .expect("start the simulated cluster");
    let seeds = pool[..SEEDS as usize].to_vec();
    let config = TempFile::new("soak", &config_text(sim.port(), &seeds, false));
    let r = Responder::start(&["--config", config.path_str(), "--threads", "2"]);
    let pid = r.pid();
    r.wait_for_cluster_list();
    let mut client = r.client();
    assert!(
        wait_until(Duration::from_secs(10), || sorted(client.a(DOMAIN))
            == pool[..INITIAL as usize]),
        "the initial nodes are not all served; log:\n{}",
        r.log_text()
    );

    let queries = tmp.join("soak-queries.txt");
    std::fs::write(&queries, format!("{DOMAIN} A\n")).expect("write the query file");
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let log_lines_before = r.logs().len();
    let perf = Command::new(dnsperf)
        .args(["-s", "127.0.0.1", "-p"])
        .arg(r.udp_addr().port().to_string())
        .arg("-d")
        .arg(&queries)
        .args(["-l", &seconds.to_string(), "-Q", &qps.to_string()])
        .args(["-c", "4", "-b", "4096", "-q", "2000", "-t", "2"])
        .args(["-O", "suppress=timeouts,unexpected"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dnsperf");

    let timeline = Arc::new(Mutex::new(Timeline::default()));
    {
        let mut t = timeline.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, &node) in pool.iter().enumerate() {
            let class = if i < INITIAL as usize {
                Class::Serve
            } else {
                Class::Unreachable
            };
            // The initial state holds since before the server started.
            t.record(start - BOUND * 2, node, class);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        let server = r.udp_addr();
        std::thread::spawn(move || sample(server, &stop))
    };
    let chaos = {
        let mut chaos = Chaos {
            sim: sim.clone(),
            state: pool
                .iter()
                .enumerate()
                .map(|(i, &a)| {
                    (
                        a,
                        NodeState {
                            exists: i < INITIAL as usize,
                            listed: i < INITIAL as usize,
                            fault: Fault::None,
                        },
                    )
                })
                .collect(),
            seeds: seeds.clone(),
            timeline: Arc::clone(&timeline),
            log: Vec::new(),
            start,
            rng: SplitMix(seed),
            actions: 0,
        };
        let config_path = config.path.clone();
        let port = sim.port();
        std::thread::spawn(move || {
            chaos.note(format!("chaos seed {seed:#x}"));
            let mut next_reload = if reloading {
                Instant::now() + Duration::from_secs(2)
            } else {
                deadline + Duration::from_secs(3600)
            };
            let mut flip = false;
            let mut reloads = 0;
            while Instant::now() + Duration::from_millis(200) < deadline {
                let pause = Duration::from_millis(200 + chaos.rng.next_u64() % 1000);
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                if Instant::now() >= next_reload {
                    flip = !flip;
                    std::fs::write(&config_path, config_text(port, &seeds, flip))
                        .expect("rewrite the configuration");
                    // SAFETY: kill(2) on the responder's pid; the Responder
                    // outlives this thread (joined before it is dropped).
                    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
                    assert_eq!(rc, 0, "SIGHUP: {}", std::io::Error::last_os_error());
                    reloads += 1;
                    chaos.note(format!(
                        "SIGHUP #{reloads}: ttl {}, [[name]] {}",
                        if flip { 5 } else { 4 },
                        if flip { "added" } else { "removed" }
                    ));
                    next_reload =
                        Instant::now() + Duration::from_millis(2000 + chaos.rng.next_u64() % 2000);
                    continue;
                }
                for _ in 0..20 {
                    if chaos.act() {
                        break;
                    }
                }
            }
            (chaos, reloads)
        })
    };

    // Warm-up, then the process figures at intervals until the end.
    std::thread::sleep(WARM_UP);
    let rss_start = proc_rss_kib(pid).expect("VmRSS of the responder");
    let fds_start = proc_fd_count(pid).expect("fds of the responder");
    let (mut rss_max, mut fds_max) = (rss_start, fds_start);
    let mut series = vec![(start.elapsed(), rss_start, fds_start)];
    while Instant::now() < deadline {
        std::thread::sleep(
            Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())),
        );
        if let (Some(rss), Some(fds)) = (proc_rss_kib(pid), proc_fd_count(pid)) {
            rss_max = rss_max.max(rss);
            fds_max = fds_max.max(fds);
            series.push((start.elapsed(), rss, fds));
        }
    }
    let output = perf.wait_with_output().expect("wait for dnsperf");
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("the sampler panicked");
    let (chaos, reloads) = chaos.join().expect("the chaos driver panicked");
    let rss_end = proc_rss_kib(pid).expect("VmRSS of the responder");
    let fds_end = proc_fd_count(pid).expect("fds of the responder");
    let logs = r.logs();
    let soak_logs = &logs[log_lines_before.min(logs.len())..];

    // Write the chaos schedule and the server's log for a post-mortem.
    let chaos_file = tmp.join("soak-chaos.log");
    let server_file = tmp.join("soak-server.log");
    let _ = std::fs::write(&chaos_file, chaos.log.join("\n") + "\n");
    let _ = std::fs::write(&server_file, logs.join("\n") + "\n");

    let perf_text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stats = parse_dnsperf(&perf_text)
        .unwrap_or_else(|| panic!("no statistics in dnsperf's output:\n{perf_text}"));
    let violations = {
        let t = timeline.lock().unwrap_or_else(PoisonError::into_inner);
        check_samples(&samples, &t, &pool)
    };
    let unanswered = samples.iter().filter(|s| s.rcode.is_none()).count();
    let not_noerror = samples
        .iter()
        .filter(|s| s.rcode.is_some_and(|c| c != Rcode::NOERROR))
        .count();
    let bad_ttl = samples
        .iter()
        .filter(|s| s.rcode.is_some() && !matches!(s.ttl, Some(4 | 5)))
        .count();
    let queries_total = stats.sent + samples.len() as u64;
    let mut messages: HashMap<String, usize> = HashMap::new();
    for line in soak_logs {
        *messages.entry(log_message(line)).or_default() += 1;
    }
    let mut top: Vec<(String, usize)> = messages.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let rss_growth = (rss_end as f64 - rss_start as f64) * 100.0 / rss_start as f64;

    let mut report = String::new();
    let _ = writeln!(
        report,
        "== churn soak: {seconds} s at {qps} qps offered (chaos seed {seed:#x}, binary {BIN})"
    );
    let _ = writeln!(
        report,
        "dnsperf:    sent {} completed {} lost {} qps {:.0} codes {:?}",
        stats.sent, stats.completed, stats.lost, stats.qps, stats.codes
    );
    let _ = writeln!(
        report,
        "sampler:    {} queries, {} unanswered, {} not NOERROR, {} bad TTL, {} violations",
        samples.len(),
        unanswered,
        not_noerror,
        bad_ttl,
        violations.len()
    );
    let _ = writeln!(
        report,
        "chaos:      {} cluster changes, {} SIGHUP reloads (schedule: {})",
        chaos.actions,
        reloads,
        chaos_file.display()
    );
    let _ = writeln!(
        report,
        "rss KiB:    {rss_start} after warm-up, {rss_end} at end ({rss_growth:+.2}%), max {rss_max}"
    );
    let _ = writeln!(
        report,
        "fds:        {fds_start} after warm-up, {fds_end} at end, max {fds_max}"
    );
    let trend: Vec<String> = (0..=4)
        .map(|q| series[(series.len() - 1) * q / 4])
        .map(|(at, rss, fds)| format!("{:.0}s {rss} KiB {fds} fds", at.as_secs_f64()))
        .collect();
    let _ = writeln!(report, "trend:      {}", trend.join(", "));
    let _ = writeln!(
        report,
        "log:        {} lines during the soak ({:.4} per 1000 queries; server log: {})",
        soak_logs.len(),
        soak_logs.len() as f64 * 1000.0 / queries_total.max(1) as f64,
        server_file.display()
    );
    for (message, count) in top.iter().take(8) {
        let _ = writeln!(report, "            {count:6} x {message}");
    }
    for v in violations.iter().take(30) {
        let _ = writeln!(report, "VIOLATION:  {v}");
    }
    println!("{report}");

    let context = || {
        format!(
            "{report}\nchaos schedule:\n{}\n",
            chaos.log[chaos.log.len().saturating_sub(400)..].join("\n")
        )
    };
    assert!(stats.sent > 0, "dnsperf sent nothing:\n{perf_text}");
    assert_eq!(stats.lost, 0, "dnsperf lost queries\n{}", context());
    assert!(
        stats.codes.keys().all(|c| c == "NOERROR"),
        "dnsperf saw other response codes\n{}",
        context()
    );
    assert!(
        stats.sent as f64 >= 0.9 * (qps * seconds) as f64,
        "dnsperf could not offer the rate it was given\n{}",
        context()
    );
    assert_eq!(unanswered, 0, "sampled queries unanswered\n{}", context());
    assert_eq!(not_noerror, 0, "sampled answers not NOERROR\n{}", context());
    assert_eq!(
        bad_ttl,
        0,
        "sampled answers with a TTL other than 4 or 5\n{}",
        context()
    );
    assert!(
        violations.is_empty(),
        "membership violations\n{}",
        context()
    );
    assert!(
        rss_growth < RSS_GROWTH_PERCENT,
        "the resident set grew by {rss_growth:.2}%\n{}",
        context()
    );
    assert!(
        fds_end <= fds_start + FD_SLACK,
        "open fds grew from {fds_start} to {fds_end}\n{}",
        context()
    );
    assert!(
        soak_logs.len() as u64 * 1000 < queries_total,
        "the log has a line per query or so\n{}",
        context()
    );
    assert!(
        chaos.actions > 0 && (reloads > 0 || !reloading),
        "the chaos driver did nothing"
    );
    drop(r);
}

// ---------------------------------------------------------------- reloads
//
// Two failures the soak found, each reduced to a deterministic test: a
// SIGHUP restarts the node tracker from nothing (no known nodes, no health
// state), which the bound on staleness does not survive.

/// A responder reading its configuration from a file, for `sim`'s nodes,
/// with `seeds`, polling every `interval`.
fn reloadable(sim: &SimCluster, seeds: &[IpAddr], interval: &str) -> (TempFile, Responder) {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    let text = format!(
        "domain = \"{DOMAIN}\"\nseed = [{}]\nalternator-port = {}\nanswers = \"all\"\n\
         refresh-interval = \"{interval}\"\nrefresh-timeout = \"300ms\"\n",
        seeds.join(", "),
        sim.port()
    );
    let file = TempFile::new(&format!("reload-{}", sim.port()), &text);
    let r = Responder::start(&["--config", file.path_str()]);
    r.wait_for_cluster_list();
    (file, r)
}

/// Sends SIGHUP and waits for the reload to be logged.
fn reload(r: &Responder) {
    let done = r.log_count("configuration reloaded");
    // SAFETY: kill(2) on the responder's own pid, which it still has (it
    // is a child of this process and not reaped).
    let rc = unsafe { libc::kill(r.pid() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0, "SIGHUP: {}", std::io::Error::last_os_error());
    assert!(
        r.wait_for_log_count("configuration reloaded", done + 1, Duration::from_secs(5)),
        "the reload was not logged; log:\n{}",
        r.log_text()
    );
}

/// Waits up to `within` for the A answer to be exactly `want`; returns how
/// long it took, or None.
fn served_within(r: &Responder, want: &[IpAddr], within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut client = r.client();
    wait_until(within, || sorted(client.a(DOMAIN)) == want).then(|| start.elapsed())
}

/// After a reload every listed node starts "not probed yet", and those being
/// served stay served until their first probe. A node that hangs just before
/// the reload fails that first probe after the 300 ms probe timeout, but the
/// failure of a not-yet-probed node does not publish a new snapshot
/// (`Membership::record_probe` reports no change from `Unknown` to `Down`),
/// and by then every other node's first probe has passed (which would have
/// published it along): the hanging node stays served until the next
/// `/localnodes` poll, up to a whole refresh interval later (1 s by default;
/// 3 s here to make it plain).
#[test]
fn a_node_dying_across_a_reload_leaves_within_the_bound() {
    let (sim, addrs) = cluster(181, 3);
    let (_file, r) = reloadable(&sim, &addrs, "3s");
    assert!(served_within(&r, &addrs, Duration::from_secs(5)).is_some());
    sim.set_fault(addrs[2], Fault::Hang);
    let died = Instant::now();
    reload(&r);
    let left = served_within(&r, &addrs[..2], Duration::from_secs(6)).map(|_| died.elapsed());
    assert!(
        left.is_some_and(|t| t <= BOUND),
        "{} hung just before a reload and was served for {left:?} (bound {BOUND:?}); log:\n{}",
        addrs[2],
        r.log_text()
    );
}

/// After a reload the tracker polls only the seeds until one answers, even
/// though it knew the whole cluster a moment before. With every seed gone
/// (decommissioned, as happens to the first nodes of a long-lived cluster)
/// it never gets a list again: no node is probed, a node that dies stays
/// served, and a new node is never served.
#[test]
fn a_reload_with_every_seed_gone_keeps_following_the_cluster() {
    let (sim, addrs) = cluster(182, 4);
    let (_file, r) = reloadable(&sim, &addrs[..2], "250ms");
    assert!(served_within(&r, &addrs, Duration::from_secs(5)).is_some());
    for &seed in &addrs[..2] {
        sim.set_listed(seed, false);
        sim.set_fault(seed, Fault::Down);
    }
    assert!(
        served_within(&r, &addrs[2..], Duration::from_secs(5)).is_some(),
        "the seeds did not leave; log:\n{}",
        r.log_text()
    );
    reload(&r);
    std::thread::sleep(Duration::from_millis(500));
    // One node dies, one is added.
    sim.set_fault(addrs[2], Fault::Down);
    let added = node(182, 5);
    sim.add_node(added).expect("add a node");
    let want = sorted(vec![addrs[3], added]);
    let took = served_within(&r, &want, Duration::from_secs(5));
    assert!(
        took.is_some_and(|t| t <= BOUND),
        "after a reload with every seed gone, {want:?} not served within {BOUND:?} \
         (took {took:?}); log:\n{}",
        r.log_text()
    );
}
