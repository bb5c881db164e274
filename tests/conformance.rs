//! RFC conformance of the real binary, over UDP and TCP: every case of
//! `support::dns_cases` (RFC 1034/1035, 2308, 6891 EDNS(0), 8482 ANY, the
//! RFC 8906 section 8 checks, malformed names) asserts the rcode (extended
//! too), every header flag, the section counts and the OPT record.
//!
//! Two servers: the "small" one serves `alternator.test` from one node, the
//! "big" one serves `large.test` with 200 nodes in every A answer, which no
//! UDP reply can carry. Tests use 127.0.60.x and up (see `support::nodes`).

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use alternator_sim::SimCluster;
use support::dns_cases::{self, *};
use support::{cluster, wait_until, DnsClient, Responder};

const SMALL_TEST_NO: u8 = 60;
const BIG_TEST_NO: u8 = 61;
const PORT_ZERO_TEST_NO: u8 = 62;

fn endpoint(r: &Responder) -> Endpoint {
    Endpoint {
        udp: r.udp_addr(),
        tcp: r.tcp_addr(),
    }
}

/// The small server: one node, the defaults.
fn small_server(test_no: u8) -> (SimCluster, Responder) {
    let (sim, addrs) = cluster(test_no, 1);
    let r = Responder::start(&case_server_args(&sim, SMALL_DOMAIN, addrs[0], &[]));
    (sim, r)
}

/// The big server: [`BIG_NODES`] nodes, all in every answer; returns once
/// it serves all of them.
fn big_server(test_no: u8) -> (SimCluster, Responder) {
    let (sim, addrs) = cluster(test_no, BIG_NODES);
    let r = Responder::start(&case_server_args(
        &sim,
        BIG_DOMAIN,
        addrs[0],
        &["--answers", "all"],
    ));
    let query = Msg::query(BIG_DOMAIN, rtype::A).bytes();
    let all_served = wait_until(Duration::from_secs(10), || {
        exchange(endpoint(&r), Transport::Tcp, &query, true)
            .and_then(|reply| parse_reply(&reply).ok())
            .is_some_and(|seen| seen.counts[1] == u16::from(BIG_NODES))
    });
    assert!(
        all_served,
        "never served all {BIG_NODES} nodes; log:\n{}",
        r.log_text()
    );
    (sim, r)
}

/// Runs every case for `server` over both transports; panics listing all
/// that failed.
fn run_cases(server: Server, r: &Responder) {
    let cases: Vec<Case> = dns_cases::all()
        .into_iter()
        .filter(|c| c.server == server)
        .collect();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    let mut runs = 0;
    for case in &cases {
        for transport in Transport::BOTH {
            let expect_reply = matches!(case.expect(transport), Expect::Reply(_));
            let reply = exchange(endpoint(r), transport, &case.query, expect_reply);
            let problems = check(case, transport, reply.as_deref());
            runs += 1;
            if problems.is_empty() {
                println!("ok   {} [{}]", case.name, transport.label());
            } else {
                println!("FAIL {} [{}]", case.name, transport.label());
                failures.push(format!(
                    "{} [{}]: {}",
                    case.name,
                    transport.label(),
                    problems.join("; ")
                ));
            }
        }
    }
    println!("{runs} case runs on the {server:?} server");
    assert!(
        failures.is_empty(),
        "{} of {runs} case runs failed:\n{}\nlog:\n{}",
        failures.len(),
        failures.join("\n"),
        r.log_text()
    );
}

#[test]
fn small_server_conforms() {
    let (_sim, r) = small_server(SMALL_TEST_NO);
    run_cases(Server::Small, &r);
}

#[test]
fn big_server_conforms_and_truncates_only_over_udp() {
    let (_sim, r) = big_server(BIG_TEST_NO);
    run_cases(Server::Big, &r);

    // Over UDP a reply never exceeds what the client can take: 512 without
    // EDNS, else its payload size within [512, ours]; TCP is never truncated.
    let payloads = [
        None,
        Some(0),
        Some(1),
        Some(511),
        Some(512),
        Some(513),
        Some(700),
        Some(1231),
        Some(1232),
        Some(1233),
        Some(1500),
        Some(4096),
        Some(65535),
    ];
    for qtype in [rtype::A, rtype::ANY] {
        for payload in payloads {
            let mut msg = Msg::query(BIG_DOMAIN, qtype);
            if let Some(size) = payload {
                msg = msg.edns(size);
            }
            let limit = payload.map_or(512, |p| usize::from(p.clamp(512, SERVER_EDNS_SIZE)));
            let what = format!("type {qtype} payload {payload:?}");
            let udp = exchange(endpoint(&r), Transport::Udp, &msg.bytes(), true)
                .unwrap_or_else(|| panic!("{what}: no UDP reply"));
            let seen = parse_reply(&udp).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(seen.len <= limit, "{what}: {} bytes over {limit}", seen.len);
            assert!(seen.has(TC), "{what}: TC not set");
            assert_eq!(seen.opt.is_some(), payload.is_some(), "{what}: OPT");
            let tcp = exchange(endpoint(&r), Transport::Tcp, &msg.bytes(), true)
                .unwrap_or_else(|| panic!("{what}: no TCP reply"));
            let seen = parse_reply(&tcp).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(!seen.has(TC), "{what}: TC over TCP");
            assert_eq!(seen.counts[1], u16::from(BIG_NODES), "{what}: TCP answer");
        }
    }
}

/// A raw IPv4 socket for UDP, or `None` when this process may not open one.
struct RawUdp(libc::c_int);

impl RawUdp {
    fn open() -> Option<RawUdp> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP) };
        (fd >= 0).then_some(RawUdp(fd))
    }

    /// Sends `payload` to 127.0.0.1:`dst_port` as a UDP datagram from
    /// `src_port` (which may be 0); the kernel adds the IP header.
    fn send(&self, src_port: u16, dst_port: u16, payload: &[u8]) {
        let mut datagram = Vec::with_capacity(8 + payload.len());
        datagram.extend_from_slice(&src_port.to_be_bytes());
        datagram.extend_from_slice(&dst_port.to_be_bytes());
        datagram.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        datagram.extend_from_slice(&[0, 0]); // no checksum (IPv4 allows it)
        datagram.extend_from_slice(payload);
        // SAFETY: an all-zero sockaddr_in is valid; fields are set below.
        let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        to.sin_family = libc::AF_INET as libc::sa_family_t;
        to.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        // SAFETY: the buffer and address outlive the call, lengths match.
        let sent = unsafe {
            libc::sendto(
                self.0,
                datagram.as_ptr().cast(),
                datagram.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(
            usize::try_from(sent).ok(),
            Some(datagram.len()),
            "raw send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// A receive buffer large enough for loopback traffic from tests running
    /// in parallel (SO_RCVBUFFORCE: this test runs with CAP_NET_RAW anyway).
    fn enlarge_buffer(&self) {
        let bytes: libc::c_int = 64 << 20;
        // SAFETY: setsockopt with a valid int and its size; failure only
        // leaves the default buffer.
        unsafe {
            libc::setsockopt(
                self.0,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }

    /// The (source port, destination port) of every UDP datagram from
    /// 127.0.0.1 received within `window`.
    fn ports_seen(&self, window: Duration) -> Vec<(u16, u16)> {
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        // SAFETY: setsockopt with a valid timeval and its size.
        unsafe {
            libc::setsockopt(
                self.0,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let mut seen = Vec::new();
        let mut buf = [0u8; 65536];
        let deadline = std::time::Instant::now() + window;
        while std::time::Instant::now() < deadline {
            // SAFETY: recv into a buffer we own, of the length given.
            let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else { continue };
            let ihl = usize::from(buf[0] & 0xf) * 4;
            if n < ihl + 8 || buf[9] != 17 || buf[12..16] != [127, 0, 0, 1] {
                continue;
            }
            let udp = &buf[ihl..n];
            seen.push((
                u16::from_be_bytes([udp[0], udp[1]]),
                u16::from_be_bytes([udp[2], udp[3]]),
            ));
        }
        seen
    }
}

impl Drop for RawUdp {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this value owns, once.
        unsafe { libc::close(self.0) };
    }
}

/// Source port 0 cannot be a real client: a reply could only be reflected.
/// Needs raw sockets (root or CAP_NET_RAW); skipped without them.
#[test]
fn no_reply_to_source_port_zero() {
    // The server first: the capture sees every UDP datagram on loopback (other
    // tests' too), so it is opened only just before the exchange it watches.
    let (_sim, r) = small_server(PORT_ZERO_TEST_NO);
    let (Some(sender), Some(capture)) = (RawUdp::open(), RawUdp::open()) else {
        println!("skipped: raw sockets need CAP_NET_RAW");
        return;
    };
    capture.enlarge_buffer();
    let server: SocketAddr = r.udp_addr();
    assert_eq!(server.ip(), IpAddr::from([127, 0, 0, 1]));
    let query = Msg::query(SMALL_DOMAIN, rtype::A).bytes();
    sender.send(0, server.port(), &query);
    // A control query from a real port, sent after it on the same path: once
    // its reply is here, the first query has been handled (one worker).
    let client = DnsClient::new(server);
    let client_port = client.local_addr().port();
    sender.send(client_port, server.port(), &query);
    let reply = (client.recv_raw(Duration::from_secs(3))).expect("a reply to the control query");
    assert!(parse_reply(&reply).is_ok());
    let seen = capture.ports_seen(Duration::from_millis(300));
    let from_server: Vec<u16> = seen
        .iter()
        .filter(|(src, _)| *src == server.port())
        .map(|&(_, dst)| dst)
        .collect();
    assert!(
        from_server.contains(&client_port),
        "the capture missed the control reply: {seen:?}"
    );
    assert!(
        !from_server.contains(&0),
        "the server replied to port 0: {seen:?}"
    );
}
