//! Differential test against Knot DNS: every conformance case of
//! `support::dns_cases` goes to our binary and to a `knotd` serving the same
//! zones from a zone file, over UDP and TCP, and the two replies must agree
//! on the rcode (extended too), the AA/TC/RD/RA flags, the section counts and
//! the OPT record's presence, version, payload size and DO bit -- except for
//! the deliberate differences listed in [`DIFFERENCES`], each with its reason.
//!
//! The zones are what we synthesise: same apex, SOA (mname, rname, timers,
//! TTL), NS, and the A records of the simulated nodes (one node for
//! `alternator.test`; 200 for `large.test`, where only counts and flags are
//! compared since we rotate the order).
//!
//! Without `knotd` the test fails when `CI` is set (`scripts/setup` installs
//! it) and is skipped otherwise.

mod support;

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alternator_sim::SimCluster;
use support::dns_cases::{self, *};
use support::{cluster, wait_until, Responder};

const SMALL_TEST_NO: u8 = 63;
const BIG_TEST_NO: u8 = 64;

/// What the two servers are compared on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Compared {
    /// `None`: no reply.
    reply: Option<Header>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    rcode: u16,
    aa: bool,
    tc: bool,
    rd: bool,
    ra: bool,
    counts: [u16; 4],
    /// The OPT record's version, payload size and DO bit.
    opt: Option<(u8, u16, bool)>,
}

fn compared(reply: Option<&[u8]>) -> Result<Compared, String> {
    let Some(bytes) = reply else {
        return Ok(Compared { reply: None });
    };
    let seen = parse_reply(bytes)?;
    Ok(Compared {
        reply: Some(Header {
            rcode: seen.rcode,
            aa: seen.has(AA),
            tc: seen.has(TC),
            rd: seen.has(RD),
            ra: seen.has(RA),
            counts: seen.counts,
            opt: seen
                .opt
                .as_ref()
                .map(|o| (o.version, o.payload, o.flags & DO != 0)),
        }),
    })
}

/// A deliberate difference: for the cases named, Knot's reply is ours
/// changed by `knot` (which may turn it into no reply at all).
struct Difference {
    /// Case names, exact.
    cases: &'static [&'static str],
    /// Over which transports Knot differs.
    transports: &'static [Transport],
    /// Turns our reply into Knot's.
    knot: fn(&mut Option<Header>),
    reason: &'static str,
}

const BOTH: &[Transport] = &Transport::BOTH;

fn rcode_to(reply: &mut Option<Header>, rcode: u16) {
    if let Some(h) = reply {
        h.rcode = rcode;
    }
}

/// Every place where we deliberately answer otherwise than Knot, which is
/// configured to be as close to us as it allows (see [`Knot::try_start`]).
const DIFFERENCES: &[Difference] = &[
    Difference {
        cases: &[
            "RFC1996 opcode NOTIFY is NOTIMP",
            "RFC2136 opcode UPDATE is NOTIMP",
        ],
        transports: BOTH,
        knot: |r| rcode_to(r, rcode::NOTAUTH),
        reason: "Knot implements NOTIFY and UPDATE and answers NOTAUTH when no ACL \
                 allows them; we implement neither, and NOTIMP is what RFC 1035 \
                 4.1.1 and the issue give every opcode but QUERY",
    },
    Difference {
        cases: &[
            "RFC5936 AXFR: no zone transfers, NOTIMP",
            "RFC5936 AXFR with EDNS is NOTIMP with OPT",
        ],
        transports: &[Transport::Tcp],
        knot: |r| rcode_to(r, rcode::NOTAUTH),
        reason: "Knot refuses a transfer no ACL allows with NOTAUTH (over UDP it \
                 says NOTIMP, as we do); we have no transfers at all, so NOTIMP \
                 (RFC 1035 4.1.1: the kind of query is not supported) everywhere",
    },
    Difference {
        cases: &["RFC1995 IXFR: no zone transfers, NOTIMP"],
        transports: BOTH,
        knot: |r| rcode_to(r, rcode::NOTAUTH),
        reason: "as for AXFR: Knot's NOTAUTH is its ACL refusal; we support no \
                 transfer of any kind",
    },
    Difference {
        cases: &["RFC5936 AXFR outside the zone is REFUSED"],
        transports: &[Transport::Udp],
        knot: |r| rcode_to(r, rcode::NOTIMP),
        reason: "Knot looks at the transfer before the zone (NOTIMP over UDP); we \
                 refuse every query for a name outside the zone first",
    },
    Difference {
        cases: &["RFC5936 AXFR outside the zone is REFUSED"],
        transports: &[Transport::Tcp],
        knot: |r| rcode_to(r, rcode::NOTAUTH),
        reason: "Knot looks at the transfer before the zone (NOTAUTH over TCP); we \
                 refuse every query for a name outside the zone first",
    },
    Difference {
        cases: &["RFC6895 3.1 QTYPE 0 is NODATA"],
        transports: BOTH,
        knot: |r| {
            *r = r.take().map(|h| Header {
                rcode: rcode::NOTIMP,
                aa: false,
                counts: [1, 0, 0, h.counts[3]],
                ..h
            })
        },
        reason: "Knot answers NOTIMP to the reserved type 0; no RFC gives queries \
                 for it a meaning, so we treat it as any type we do not hold \
                 (RFC 3597): NODATA, as the issue asks for every other type",
    },
    Difference {
        cases: &["RFC1035 3.2.5 QCLASS ANY is REFUSED"],
        transports: BOTH,
        knot: |r| {
            *r = r.take().map(|h| Header {
                rcode: rcode::NOERROR,
                aa: true,
                counts: [1, 1, 0, h.counts[3]],
                ..h
            })
        },
        reason: "Knot answers QCLASS * from its IN zone, authoritatively; the \
                 issue gives REFUSED to every class but IN, and we serve IN only",
    },
    Difference {
        cases: &["RFC6891 6.1.2 an OPT owned by another name than the root is FORMERR"],
        transports: BOTH,
        knot: |r| {
            *r = r.take().map(|h| Header {
                rcode: rcode::NOERROR,
                aa: true,
                counts: [1, 1, 0, 1],
                opt: Some((0, SERVER_EDNS_SIZE, false)),
                ..h
            })
        },
        reason: "RFC 6891 6.1.2: the OPT owner MUST be the root; Knot overlooks \
                 the owner and answers, we treat the record as malformed",
    },
    Difference {
        cases: &["RFC1035 4.1 bytes after the last section are ignored"],
        transports: BOTH,
        knot: |r| {
            *r = r.take().map(|h| Header {
                rcode: rcode::FORMERR,
                aa: false,
                counts: [1, 0, 0, 0],
                ..h
            })
        },
        reason: "Knot answers FORMERR to bytes after the counted records; RFC 1035 \
                 has no rule for them and every counted record parses, so we \
                 answer (the robustness principle)",
    },
    Difference {
        cases: &[
            "RFC1035 4.1.2 QDCOUNT=2 is FORMERR",
            "RFC1035 4.1.2 QDCOUNT=1 with the question missing is FORMERR",
            "RFC1035 2.3.4 a 256-octet name is FORMERR",
            "RFC1035 2.3.4 a 64-octet label (type 01) is FORMERR",
            "RFC6891 5 a label of the reserved type 10 is FORMERR",
            "RFC1035 4.1.4 a compression pointer to itself is FORMERR",
            "RFC1035 4.1.4 a compression loop through a label is FORMERR",
            "RFC1035 4.1.4 a forward compression pointer is FORMERR",
            "RFC1035 4.1.4 a compression pointer past the end is FORMERR",
            "RFC1035 4.1.4 a compression pointer into the header is FORMERR",
            "RFC1035 4.1.2 a question cut short in the name is FORMERR",
            "RFC1035 4.1.2 a question cut short in the type is FORMERR",
            "RFC1035 4.1.2 a question cut short in the class is FORMERR",
        ],
        transports: BOTH,
        knot: |r| *r = None,
        reason: "Knot silently drops a query whose question it cannot read; the \
                 issue (after RFC 1035 4.1.1) wants FORMERR whenever the header \
                 is readable, which tells the client to stop retrying",
    },
];

fn difference(case: &str, transport: Transport) -> Option<&'static Difference> {
    DIFFERENCES
        .iter()
        .find(|d| d.cases.contains(&case) && d.transports.contains(&transport))
}

// ---------------------------------------------------------------------------
// knotd

fn knotd_path() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("knotd")).collect())
        .unwrap_or_default();
    candidates.extend(["/usr/sbin/knotd", "/usr/local/sbin/knotd"].map(PathBuf::from));
    candidates.into_iter().find(|p| p.is_file())
}

/// A running knotd in its own temporary directory; stopped by PID and the
/// directory removed on drop.
struct Knot {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

/// The zone file text for `domain` with these A records, the way we
/// synthesise the zone by default: NS ns1.<domain> at the listen address
/// (127.0.0.1), SOA mname = the NS, rname hostmaster.<domain>, timers 14400
/// 3600 1209600 300, SOA TTL 60.
fn zone_file(domain: &str, nodes: &[IpAddr]) -> String {
    let mut text = format!(
        "$ORIGIN {domain}.\n\
         @ {SOA_TTL} IN SOA ns1.{domain}. hostmaster.{domain}. 1 14400 3600 1209600 300\n\
         @ {SOA_TTL} IN NS ns1.{domain}.\n\
         ns1 {SOA_TTL} IN A 127.0.0.1\n"
    );
    for node in nodes {
        text.push_str(&format!("@ {A_TTL} IN A {node}\n"));
    }
    text
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

impl Knot {
    /// Starts knotd serving `zones` (domain, A records), retrying on another
    /// port if the chosen one was taken meanwhile.
    fn start(knotd: &Path, zones: &[(&str, &[IpAddr])]) -> Knot {
        let mut last_error = String::new();
        for attempt in 0..3 {
            match Knot::try_start(knotd, zones, attempt) {
                Ok(knot) => return knot,
                Err(e) => last_error = e,
            }
        }
        panic!("knotd did not start: {last_error}");
    }

    fn try_start(knotd: &Path, zones: &[(&str, &[IpAddr])], attempt: u32) -> Result<Knot, String> {
        let dir = std::env::temp_dir().join(format!(
            "alternator-dns-knot-{}-{attempt}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {dir:?}: {e}"))?;
        let port = free_port();
        let d = dir.display();
        // As close to our behaviour as Knot allows: one worker of each kind,
        // no identity, version or NSID answers (so CHAOS queries are
        // REFUSED as with us), nothing written back to the zone files.
        let mut conf = format!(
            "server:\n\
             \x20   rundir: \"{d}\"\n\
             \x20   listen: 127.0.0.1@{port}\n\
             \x20   udp-workers: 1\n\
             \x20   tcp-workers: 1\n\
             \x20   background-workers: 1\n\
             \x20   identity: \"\"\n\
             \x20   version: \"\"\n\
             \x20   nsid: \"\"\n\
             log:\n\
             \x20 - target: stderr\n\
             \x20   any: info\n\
             database:\n\
             \x20   storage: \"{d}\"\n\
             template:\n\
             \x20 - id: default\n\
             \x20   storage: \"{d}\"\n\
             \x20   zonefile-sync: -1\n\
             \x20   zonefile-load: whole\n\
             \x20   journal-content: none\n\
             zone:\n"
        );
        for (domain, nodes) in zones {
            let file = dir.join(format!("{domain}.zone"));
            std::fs::write(&file, zone_file(domain, nodes)).map_err(|e| e.to_string())?;
            conf.push_str(&format!(
                "\x20 - domain: {domain}\n\x20   file: \"{}\"\n",
                file.display()
            ));
        }
        let conf_path = dir.join("knot.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let log_path = dir.join("knotd.log");
        let log = File::create(&log_path).map_err(|e| e.to_string())?;
        let child = Command::new(knotd)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("run {knotd:?}: {e}"))?;
        let mut knot = Knot {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        // Ready once every zone answers its SOA authoritatively over both
        // transports.
        let mut exited = false;
        let ready = wait_until(Duration::from_secs(15), || {
            if let Ok(Some(_)) = knot.child.try_wait() {
                exited = true;
                return true;
            }
            zones.iter().all(|(domain, _)| {
                let query = Msg::query(domain, rtype::SOA).bytes();
                Transport::BOTH.iter().all(|&t| {
                    knot.exchange_quietly(t, &query)
                        .and_then(|r| parse_reply(&r).ok())
                        .is_some_and(|s| s.rcode == rcode::NOERROR && s.has(AA))
                })
            })
        });
        if exited || !ready {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "knotd {} on port {port}; its log:\n{log}",
                if exited {
                    "exited"
                } else {
                    "not ready in 15 s"
                }
            ));
        }
        Ok(knot)
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            udp: self.addr,
            tcp: self.addr,
        }
    }

    /// One exchange that tolerates a server not yet listening.
    fn exchange_quietly(&self, transport: Transport, query: &[u8]) -> Option<Vec<u8>> {
        match transport {
            // One short wait: an ICMP error or silence before knotd listens.
            Transport::Udp => exchange(self.endpoint(), transport, query, false),
            Transport::Tcp => {
                std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))
                    .ok()?;
                exchange(self.endpoint(), transport, query, true)
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("knotd.log")).unwrap_or_default()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill(2) on our own child, not reaped yet (try_wait
                // above saw it running), so the PID still names it.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // Does nothing once it has exited and been reaped.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------

fn responder(sim: &SimCluster, domain: &str, seed: IpAddr, more: &[&str]) -> Responder {
    Responder::start(&case_server_args(sim, domain, seed, more))
}

fn our_endpoint(r: &Responder) -> Endpoint {
    Endpoint {
        udp: r.udp_addr(),
        tcp: r.tcp_addr(),
    }
}

#[test]
fn our_replies_agree_with_knot() {
    let Some(knotd) = knotd_path() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "knotd is not installed (scripts/setup installs the `knot` package)"
        );
        println!("skipped: knotd is not installed (scripts/setup installs it)");
        return;
    };

    let (small_sim, small_nodes) = cluster(SMALL_TEST_NO, 1);
    let (big_sim, big_nodes) = cluster(BIG_TEST_NO, BIG_NODES);
    let knot = Knot::start(
        &knotd,
        &[(SMALL_DOMAIN, &small_nodes), (BIG_DOMAIN, &big_nodes)],
    );
    let small = responder(&small_sim, SMALL_DOMAIN, small_nodes[0], &[]);
    let big = responder(&big_sim, BIG_DOMAIN, big_nodes[0], &["--answers", "all"]);
    let all_query = Msg::query(BIG_DOMAIN, rtype::A).bytes();
    assert!(
        wait_until(Duration::from_secs(10), || {
            exchange(our_endpoint(&big), Transport::Tcp, &all_query, true)
                .and_then(|r| parse_reply(&r).ok())
                .is_some_and(|s| s.counts[1] == u16::from(BIG_NODES))
        }),
        "never served all {BIG_NODES} nodes; log:\n{}",
        big.log_text()
    );

    let cases = dns_cases::all();
    let mut failures = Vec::new();
    for d in DIFFERENCES {
        for name in d.cases {
            if !cases.iter().any(|c| c.name == *name) {
                failures.push(format!("a listed difference names no case: {name}"));
            }
        }
    }
    let mut runs = 0;
    for case in &cases {
        let ours_at = match case.server {
            Server::Small => our_endpoint(&small),
            Server::Big => our_endpoint(&big),
        };
        for transport in Transport::BOTH {
            runs += 1;
            let expect_reply = matches!(case.expect(transport), Expect::Reply(_));
            let label = format!("{} [{}]", case.name, transport.label());
            let ours = exchange(ours_at, transport, &case.query, expect_reply);
            let ours = match compared(ours.as_deref()) {
                Ok(ours) => ours,
                Err(e) => {
                    failures.push(format!("{label}: our reply does not parse: {e}"));
                    continue;
                }
            };
            let mut want = ours.clone();
            let exception = difference(&case.name, transport);
            if let Some(d) = exception {
                (d.knot)(&mut want.reply);
            }
            let theirs = exchange(
                knot.endpoint(),
                transport,
                &case.query,
                want.reply.is_some(),
            );
            let theirs = match compared(theirs.as_deref()) {
                Ok(theirs) => theirs,
                Err(e) => {
                    failures.push(format!("{label}: Knot's reply does not parse: {e}"));
                    continue;
                }
            };
            if theirs == want {
                match exception {
                    Some(d) => println!("diff {label}: {}", d.reason),
                    None => println!("same {label}"),
                }
            } else {
                println!("FAIL {label}");
                failures.push(format!(
                    "{label}:\n  ours: {:?}\n  Knot: {:?}{}",
                    ours.reply,
                    theirs.reply,
                    if exception.is_some() {
                        "\n  (a listed difference, but not the one listed)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    println!(
        "{runs} case runs compared with Knot; {} deliberate differences",
        DIFFERENCES.len()
    );
    assert!(
        failures.is_empty(),
        "{} disagreements with Knot:\n{}\nknotd log:\n{}",
        failures.len(),
        failures.join("\n"),
        knot.log()
    );
}
