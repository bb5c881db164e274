//! Shared by tests/affinity.rs: a cluster laid out over two datacenters and
//! several racks, the `--location` rules that place the tests' client
//! addresses, queries carrying an EDNS Client Subnet option (RFC 7871), and
//! reading that option back from a reply.
//!
//! Clients send from 127.50.0.0/16 and 127.51.0.0/16 (loopback addresses
//! no other test file uses); nodes live on 127.0.T.x with T in 220..=239.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use domain::base::iana::Rcode;

use alternator_sim::{SimCluster, SimNode, SimOptions};

use super::dns_cases::{opt, option, rtype, Msg, RD};
use super::{cluster_args, node, sorted, wait_until, DnsClient, Reply, Responder};

/// How long a change may take to show in the answers: several refresh
/// intervals and health probes, with room for a machine running other
/// tests on both cores.
pub const SETTLE: Duration = Duration::from_secs(15);

/// The nodes' places: 1-3 in dc1/rack1, 4-5 in dc1/rack2, 6 alone in
/// dc1/rack3, 7 in dc2/rack1 (a rack1 of another datacenter), 8 in dc2/rack2.
pub const LAYOUT: [(&str, &str); 8] = [
    ("dc1", "rack1"),
    ("dc1", "rack1"),
    ("dc1", "rack1"),
    ("dc1", "rack2"),
    ("dc1", "rack2"),
    ("dc1", "rack3"),
    ("dc2", "rack1"),
    ("dc2", "rack2"),
];

/// The `--location` rules of the tests. 127.50.0.0/16 holds only /24s, so
/// that a client subnet of the whole /16 spans several locations and needs
/// scope 24 to tell them apart; 127.51.0.0/16 checks that the longest
/// matching prefix wins and holds a location with no rack.
pub const LOCATIONS: [&str; 8] = [
    "127.50.1.0/24=dc1/rack1",
    "127.50.2.0/24=dc1/rack2",
    "127.50.3.0/24=dc2/rack1",
    "127.50.6.0/24=dc1/rack3",
    "127.51.0.0/16=dc2",
    "127.51.7.0/24=dc1/rack2",
    "::1/128=dc1/rack2",
    "fd00:1::/48=dc1/rack1",
];

/// A client address in dc1/rack1, and others in the same /24.
pub const IN_RACK1: [u8; 4] = [127, 50, 1, 9];
pub const IN_RACK2: [u8; 4] = [127, 50, 2, 9];
pub const IN_DC2_RACK1: [u8; 4] = [127, 50, 3, 9];
pub const IN_RACK3: [u8; 4] = [127, 50, 6, 9];
/// In 127.50.0.0/16 but in no location.
pub const UNPLACED: [u8; 4] = [127, 50, 9, 9];

/// The eight nodes of [`LAYOUT`] for test `test_no`, and their addresses.
pub fn layout_cluster(test_no: u8) -> (SimCluster, Vec<IpAddr>) {
    let addrs: Vec<IpAddr> = (1..=8).map(|i| node(test_no, i)).collect();
    let located: Vec<SimNode> = addrs
        .iter()
        .zip(LAYOUT)
        .map(|(&addr, (dc, rack))| SimNode::new(addr, dc, rack))
        .collect();
    let sim = SimCluster::start_with(&located, 0, SimOptions::default())
        .expect("start the simulated cluster");
    (sim, addrs)
}

/// The sorted addresses of nodes `which` (1-based, as in [`LAYOUT`]).
pub fn pick(addrs: &[IpAddr], which: &[usize]) -> Vec<IpAddr> {
    sorted(which.iter().map(|&i| addrs[i - 1]).collect())
}

/// Flags for a responder of `sim` seeded with node 1 (so the domain's
/// normal list is dc1): short refresh, probes every 100 ms with a timeout
/// a loaded machine does not reach, `--answers answers`, and `more`.
pub fn affinity_args(
    sim: &SimCluster,
    addrs: &[IpAddr],
    answers: &str,
    more: &[&str],
) -> Vec<String> {
    let mut args = cluster_args(sim, &addrs[..1], 200, 1000);
    args.extend(
        [
            "--answers",
            answers,
            "--health-interval",
            "100ms",
            "--health-timeout",
            "600ms",
        ]
        .iter()
        .chain(more)
        .map(|s| s.to_string()),
    );
    args
}

/// `--location RULE` for every rule of [`LOCATIONS`].
pub fn location_flags() -> Vec<&'static str> {
    LOCATIONS
        .iter()
        .flat_map(|rule| ["--location", rule])
        .collect()
}

/// A client of `r` sending from `source` (UDP, and TCP bound to it too).
pub fn client_from(r: &Responder, source: impl Into<IpAddr>) -> DnsClient {
    DnsClient::from(source.into(), r.udp_addr()).with_tcp(r.tcp_addr())
}

/// The sorted A answer of one NOERROR reply; `None` without one.
pub fn answer(client: &mut DnsClient, name: &str) -> Option<Vec<IpAddr>> {
    let reply = client.query(name, domain::base::iana::Rtype::A)?;
    (reply.rcode() == Rcode::NOERROR).then(|| sorted(reply.addrs()))
}

/// Every address in `queries` answers for `name` (`None` when one got no
/// NOERROR reply): with `--answers 1`, how the answers spread.
pub fn answers_over(
    client: &mut DnsClient,
    name: &str,
    queries: usize,
) -> Option<BTreeSet<IpAddr>> {
    let mut seen = BTreeSet::new();
    for _ in 0..queries {
        seen.extend(answer(client, name)?);
    }
    Some(seen)
}

/// Waits until the A answer for `name` from `client` is exactly `want`
/// (`--answers all`); panics with what it got and the log.
pub fn wait_for_answer(
    r: &Responder,
    client: &mut DnsClient,
    name: &str,
    want: &[IpAddr],
    what: &str,
) {
    let want = sorted(want.to_vec());
    let mut last = None;
    let ok = wait_until(SETTLE, || {
        last = answer(client, name);
        last.as_deref() == Some(&want[..])
    });
    assert!(
        ok,
        "{what}: {name} should answer {want:?}, answers {last:?}; log:\n{}",
        r.log_text()
    );
}

/// Waits until 40 answers in a row for `name` (`--answers 1`) name every
/// node of `want` and no other.
pub fn wait_for_spread(
    r: &Responder,
    client: &mut DnsClient,
    name: &str,
    want: &[IpAddr],
    what: &str,
) {
    spread_within(r, client, name, want, what, SETTLE);
}

/// Checks that 40 answers in a row for `name` (`--answers 1`) name every
/// node of `want` and no other, without waiting.
pub fn assert_spread(
    r: &Responder,
    client: &mut DnsClient,
    name: &str,
    want: &[IpAddr],
    what: &str,
) {
    spread_within(r, client, name, want, what, Duration::ZERO);
}

/// Asks 40 times in a row until the answers name exactly `want`, for at
/// most `wait` (once, with no wait).
fn spread_within(
    r: &Responder,
    client: &mut DnsClient,
    name: &str,
    want: &[IpAddr],
    what: &str,
    wait: Duration,
) {
    let want: BTreeSet<IpAddr> = want.iter().copied().collect();
    let mut last = None;
    let ok = wait_until(wait, || {
        last = answers_over(client, name, 40);
        last.as_ref() == Some(&want)
    });
    assert!(
        ok,
        "{what}: 40 answers for {name} should name exactly {want:?}, named {last:?}; log:\n{}",
        r.log_text()
    );
}

/// The data of an ECS option: family, source prefix, scope 0 and the
/// address cut to the prefix's octets (its bits beyond the prefix as given).
pub fn ecs_data(family: u16, source_prefix: u8, address: &[u8]) -> Vec<u8> {
    let octets = usize::from(source_prefix).div_ceil(8);
    let mut data = family.to_be_bytes().to_vec();
    data.extend([source_prefix, 0]);
    data.extend(&address[..octets.min(address.len())]);
    data
}

/// ECS data for an IPv4 client subnet.
pub fn ecs_v4(address: [u8; 4], source_prefix: u8) -> Vec<u8> {
    ecs_data(1, source_prefix, &address)
}

/// ECS data for an IPv6 client subnet.
pub fn ecs_v6(address: Ipv6Addr, source_prefix: u8) -> Vec<u8> {
    ecs_data(2, source_prefix, &address.octets())
}

/// A query for `name` A with RD, an OPT (payload 1232) and one ECS option
/// per element of `ecs` (raw option data).
pub fn ecs_query(id: u16, name: &str, ecs: &[&[u8]]) -> Vec<u8> {
    let options: Vec<(u16, &[u8])> = ecs.iter().map(|data| (option::ECS, *data)).collect();
    let mut msg = Msg::query(name, rtype::A)
        .flags(RD)
        .additional(opt(1232, 0, 0, &options));
    msg.id = id;
    msg.bytes()
}

/// An ECS option as read from a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ecs {
    pub family: u16,
    pub source_prefix: u8,
    pub scope: u8,
    pub address: Vec<u8>,
}

impl Ecs {
    /// What the reply to a query with option data `query` echoes: family,
    /// source prefix and address, with `scope`.
    pub fn echo(query: &[u8], scope: u8) -> Ecs {
        let mut ecs = Ecs::parse(query).expect("well-formed query ECS");
        ecs.scope = scope;
        ecs
    }

    fn parse(data: &[u8]) -> Option<Ecs> {
        let [f0, f1, source_prefix, scope, address @ ..] = data else {
            return None;
        };
        Some(Ecs {
            family: u16::from_be_bytes([*f0, *f1]),
            source_prefix: *source_prefix,
            scope: *scope,
            address: address.to_vec(),
        })
    }
}

/// The ECS options of a reply's OPT record (none without an OPT). Panics
/// when the reply does not parse or an ECS option is shorter than its
/// fixed part.
pub fn reply_ecs(reply: &Reply) -> Vec<Ecs> {
    let bytes = &reply.bytes;
    let word = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    let skip_name = |mut pos: usize| loop {
        match bytes[pos] {
            0 => return pos + 1,
            len if len >= 0xc0 => return pos + 2,
            len => pos += 1 + usize::from(len),
        }
    };
    let counts = [word(4), word(6), word(8), word(10)];
    let mut pos = 12;
    for _ in 0..counts[0] {
        pos = skip_name(pos) + 4;
    }
    let mut found = Vec::new();
    let records: u16 = counts[1..].iter().sum();
    for i in 0..records {
        pos = skip_name(pos);
        let (rtype_here, rdlen) = (word(pos), usize::from(word(pos + 8)));
        let rdata = pos + 10;
        pos = rdata + rdlen;
        let in_additional = i >= counts[1] + counts[2];
        if rtype_here != rtype::OPT || !in_additional {
            continue;
        }
        let mut at = rdata;
        while at + 4 <= rdata + rdlen {
            let (code, len) = (word(at), usize::from(word(at + 2)));
            if code == option::ECS {
                let data = &bytes[at + 4..at + 4 + len];
                found.push(Ecs::parse(data).expect("an ECS option of at least 4 bytes"));
            }
            at += 4 + len;
        }
    }
    assert_eq!(pos, bytes.len(), "reply length does not match its records");
    found
}

/// The IPv4 address `a.b.c.d` as an [`IpAddr`].
pub fn v4(octets: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(octets))
}

/// A client that sends queries with ECS options, over UDP or TCP, each
/// with a fresh ID.
pub struct EcsClient {
    client: DnsClient,
    next_id: u16,
}

impl EcsClient {
    pub fn new(client: DnsClient) -> EcsClient {
        EcsClient {
            client,
            next_id: 0x4000,
        }
    }

    fn id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// The reply over UDP to `name` A with these ECS options; panics
    /// without one.
    pub fn udp(&mut self, name: &str, ecs: &[&[u8]]) -> Reply {
        let query = ecs_query(self.id(), name, ecs);
        self.client
            .exchange(&query)
            .unwrap_or_else(|| panic!("no UDP reply for {name} with ECS {ecs:?}"))
    }

    /// The same over a new TCP connection.
    pub fn tcp(&mut self, name: &str, ecs: &[&[u8]]) -> Reply {
        let query = ecs_query(self.id(), name, ecs);
        self.client
            .exchange_tcp(&[query])
            .and_then(|mut replies| replies.pop())
            .unwrap_or_else(|| panic!("no TCP reply for {name} with ECS {ecs:?}"))
    }
}

/// Every address the responder logged it listens on, in order.
pub fn listen_addrs(r: &Responder) -> Vec<std::net::SocketAddr> {
    r.logs()
        .iter()
        .filter(|line| super::log_line_is(line, "listening"))
        .filter_map(|line| super::log_line_field(line, "udp")?.parse().ok())
        .collect()
}

/// A client on ::1 of the responder's `[::1]` listener (UDP and TCP).
pub fn v6_client(r: &Responder) -> DnsClient {
    let listen = *listen_addrs(r)
        .iter()
        .find(|a| a.is_ipv6())
        .unwrap_or_else(|| panic!("no IPv6 listener; log:\n{}", r.log_text()));
    DnsClient::from(IpAddr::V6(Ipv6Addr::LOCALHOST), listen).with_tcp(listen)
}

/// An IPv6 address from its text.
pub fn v6_addr(text: &str) -> Ipv6Addr {
    text.parse().expect("an IPv6 address")
}
