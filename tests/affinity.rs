//! Zone-local answers (`--location`, `--affinity`): the real binary against
//! a simulated cluster of two datacenters and several racks, with clients
//! bound to addresses the locations place, or sending an EDNS Client Subnet
//! option (RFC 7871) from an address in no location, as a resolver would.
//!
//! The layout, the `--location` rules and the client addresses are in
//! tests/support/affinity.rs: nodes 1-3 in dc1/rack1, 4-5 in dc1/rack2, 6 in
//! dc1/rack3, 7 in dc2/rack1, 8 in dc2/rack2; node 1 is the seed, so the
//! domain's normal list is dc1 (nodes 1-6). Node addresses 127.0.22x.x.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};

use alternator_sim::Fault;
use support::affinity::*;
use support::*;

/// A name of the zone that has no affinity (`--name`).
const DC2_NAME: &str = "dc2.alternator.test";
const FALLBACKS: &str = "alternator_dns_location_fallbacks_total";

/// A responder for `sim` with `--affinity true`, every rule of
/// [`LOCATIONS`], the dc2 name, and `more`.
fn start_affinity(
    sim: &alternator_sim::SimCluster,
    n: &[IpAddr],
    answers: &str,
    more: &[&str],
) -> Responder {
    let mut flags = vec!["--affinity", "true", "--name", "dc2.alternator.test=dc2"];
    flags.extend(location_flags());
    flags.extend(more);
    let r = Responder::start(&affinity_args(sim, n, answers, &flags));
    r.wait_for_cluster_list();
    r
}

/// Asks `name` from every client in turn for `duration` and checks that
/// each answer is exactly its expected set; returns the number of queries.
fn assert_answers_stay(
    r: &Responder,
    clients: &mut [(&str, DnsClient, Vec<IpAddr>)],
    name: &str,
    duration: Duration,
) -> usize {
    let start = Instant::now();
    let mut queries = 0;
    while start.elapsed() < duration {
        for (what, client, want) in clients.iter_mut() {
            let got = answer(client, name);
            queries += 1;
            assert_eq!(
                got.as_ref(),
                Some(&*want),
                "{what}: {name} after {:?} ({queries} queries); log:\n{}",
                start.elapsed(),
                r.log_text()
            );
        }
    }
    queries
}

// 1. Placement by source address: clients bound to addresses of different
// locations each get their own rack, every node of it and none of another,
// over many queries, over UDP and TCP and over IPv6, with --ttl's TTL; the
// longest matching prefix wins; a location without a rack gets its
// datacenter; clients in no location get the domain's normal list (dc1).
#[test]
fn sources_land_in_their_own_rack_and_unplaced_ones_get_the_normal_list() {
    let (sim, n) = layout_cluster(220);
    let more = [
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "[::1]:0",
        "--ttl",
        "7",
    ];
    let r = start_affinity(&sim, &n, "all", &more);
    // (what, source, the nodes it gets)
    let sources: [(&str, [u8; 4], &[usize]); 9] = [
        ("dc1/rack1", IN_RACK1, &[1, 2, 3]),
        ("dc1/rack1, another address", [127, 50, 1, 200], &[1, 2, 3]),
        ("dc1/rack2", IN_RACK2, &[4, 5]),
        ("dc1/rack3, a rack of one node", IN_RACK3, &[6]),
        ("dc2/rack1, not dc1's rack1", IN_DC2_RACK1, &[7]),
        ("127.51.0.0/16=dc2, no rack", [127, 51, 8, 9], &[7, 8]),
        (
            "127.51.7.0/24=dc1/rack2, the longest",
            [127, 51, 7, 9],
            &[4, 5],
        ),
        ("unplaced, in 127.50.0.0/16", UNPLACED, &[1, 2, 3, 4, 5, 6]),
        ("unplaced, 127.0.0.1", [127, 0, 0, 1], &[1, 2, 3, 4, 5, 6]),
    ];
    let mut clients: Vec<(&str, DnsClient, Vec<IpAddr>)> = sources
        .iter()
        .map(|(what, source, which)| (*what, client_from(&r, v4(*source)), pick(&n, which)))
        .collect();
    for (what, client, want) in &mut clients {
        wait_for_answer(&r, client, DOMAIN, want, what);
    }
    // Over a dozen refresh rounds, every source keeps exactly its own set.
    let queries = assert_answers_stay(&r, &mut clients, DOMAIN, Duration::from_millis(1500));
    assert!(queries > 100, "only {queries} queries");

    for (what, client, want) in &mut clients {
        let reply = client.query(DOMAIN, Rtype::A).expect("a reply");
        assert_eq!(reply.answer_ttls(), vec![7; want.len()], "{what}: TTL");
        // TCP is placed by the connection's source address alike.
        let reply = client.query_tcp(DOMAIN, Rtype::A).expect("a TCP reply");
        assert_eq!(reply.rcode(), Rcode::NOERROR, "{what} over TCP");
        assert_eq!(&sorted(reply.addrs()), want, "{what} over TCP");
    }

    // IPv6: ::1/128=dc1/rack2, over UDP and TCP to the [::1] listener.
    let rack2 = pick(&n, &[4, 5]);
    let mut v6 = v6_client(&r);
    wait_for_answer(&r, &mut v6, DOMAIN, &rack2, "::1 in ::1/128=dc1/rack2");
    let reply = v6.query_tcp(DOMAIN, Rtype::A).expect("a TCP reply");
    assert_eq!(sorted(reply.addrs()), rack2, "::1 over TCP");
}

/// One query with an ECS option, the nodes of its answer and the scope of
/// the ECS that comes back (family, source prefix and address echoed).
struct EcsCase {
    what: &'static str,
    ecs: Vec<u8>,
    name: &'static str,
    nodes: &'static [usize],
    scope: u8,
}

fn case(
    what: &'static str,
    ecs: Vec<u8>,
    name: &'static str,
    nodes: &'static [usize],
    scope: u8,
) -> EcsCase {
    EcsCase {
        what,
        ecs,
        name,
        nodes,
        scope,
    }
}

// 2. ECS from a resolver in no location (127.0.0.1): the client subnet
// places the answer, and the reply carries ECS back with the family, source
// prefix and address echoed and the scope that keeps a cache from handing
// one location's answer to another's clients; too short a prefix is
// answered unplaced with a longer scope, prefix 0 with scope 0, a name
// without affinity with scope 0; malformed options get FORMERR; the same
// over TCP and with family 2 over IPv6.
#[test]
fn client_subnet_places_resolvers_clients_and_scopes_the_answer() {
    let (sim, n) = layout_cluster(221);
    let more = ["--listen", "127.0.0.1:0", "--listen", "[::1]:0"];
    let r = start_affinity(&sim, &n, "all", &more);
    let rack1 = pick(&n, &[1, 2, 3]);
    let mut resolver = EcsClient::new(client_from(&r, v4([127, 0, 0, 1])));

    let rack1_ecs = ecs_v4([127, 50, 1, 0], 24);
    let dc1: &[usize] = &[1, 2, 3, 4, 5, 6];
    let cases = [
        case("rack1's /24", rack1_ecs.clone(), DOMAIN, &[1, 2, 3], 24),
        case(
            "a /32 in rack1's /24",
            ecs_v4([127, 50, 1, 77], 32),
            DOMAIN,
            &[1, 2, 3],
            24,
        ),
        case(
            "rack2's /24",
            ecs_v4([127, 50, 2, 0], 24),
            DOMAIN,
            &[4, 5],
            24,
        ),
        // Spans rack1, rack2, dc2/rack1 and unplaced space: unplaced, with
        // the scope that tells those /24s apart, longer than the prefix.
        case(
            "a /16 over locations",
            ecs_v4([127, 50, 0, 0], 16),
            DOMAIN,
            dc1,
            24,
        ),
        case(
            "opted out, prefix 0",
            ecs_v4([0, 0, 0, 0], 0),
            DOMAIN,
            dc1,
            0,
        ),
        case(
            "127.51.7.0/24 in a /16",
            ecs_v4([127, 51, 7, 0], 24),
            DOMAIN,
            &[4, 5],
            24,
        ),
        // In 127.51.8.0-127.51.255.255 (dc2, no rack): the largest block
        // around it inside that range is 127.51.8.0/21.
        case(
            "127.51.8.0/24, dc2",
            ecs_v4([127, 51, 8, 0], 24),
            DOMAIN,
            &[7, 8],
            21,
        ),
        case(
            "a name without affinity",
            rack1_ecs.clone(),
            DC2_NAME,
            &[7, 8],
            0,
        ),
    ];
    // Until every node is in (each once its first probe passes): each
    // case's UDP answer is its own, and without ECS the resolver itself is
    // unplaced (dc1).
    let dc1_nodes = pick(&n, dc1);
    let mut wrong = Vec::new();
    let settled = wait_until(SETTLE, || {
        wrong = (cases.iter())
            .filter(|c| sorted(resolver.udp(c.name, &[&c.ecs]).addrs()) != pick(&n, c.nodes))
            .map(|c| c.what)
            .collect();
        sorted(resolver.udp(DOMAIN, &[]).addrs()) == dc1_nodes && wrong.is_empty()
    });
    assert!(settled, "wrong answers: {wrong:?}; log:\n{}", r.log_text());
    // No ECS comes back to a query without it.
    let plain = resolver.udp(DOMAIN, &[]);
    assert_eq!(reply_ecs(&plain), vec![], "ECS in a reply without ECS");

    for c in &cases {
        for (transport, reply) in [
            ("UDP", resolver.udp(c.name, &[&c.ecs])),
            ("TCP", resolver.tcp(c.name, &[&c.ecs])),
        ] {
            let what = format!("{} over {transport}", c.what);
            assert_eq!(reply.rcode(), Rcode::NOERROR, "{what}");
            assert_eq!(
                sorted(reply.addrs()),
                pick(&n, c.nodes),
                "{what}; log:\n{}",
                r.log_text()
            );
            assert_eq!(
                reply_ecs(&reply),
                vec![Ecs::echo(&c.ecs, c.scope)],
                "{what}: ECS back"
            );
        }
    }

    // Malformed options: FORMERR, over UDP and TCP.
    let malformed: [(&str, Vec<Vec<u8>>); 9] = [
        ("family 3", vec![ecs_data(3, 24, &[127, 50, 1])]),
        (
            "IPv4 source prefix 33",
            vec![ecs_data(1, 33, &[127, 50, 1, 0, 0])],
        ),
        (
            "IPv6 source prefix 129",
            vec![ecs_data(2, 129, &[0xfd; 17])],
        ),
        (
            "a /24 with four octets",
            vec![vec![0, 1, 24, 0, 127, 50, 1, 0]],
        ),
        ("a /24 with two octets", vec![vec![0, 1, 24, 0, 127, 50]]),
        (
            "a bit set beyond the prefix",
            vec![ecs_v4([127, 50, 1, 0], 23)],
        ),
        ("scope 8 in the query", vec![vec![0, 1, 24, 8, 127, 50, 1]]),
        ("three bytes", vec![vec![0, 1, 24]]),
        (
            "two ECS options",
            vec![rack1_ecs.clone(), ecs_v4([127, 50, 2, 0], 24)],
        ),
    ];
    for (what, options) in &malformed {
        let options: Vec<&[u8]> = options.iter().map(Vec::as_slice).collect();
        for (transport, reply) in [
            ("UDP", resolver.udp(DOMAIN, &options)),
            ("TCP", resolver.tcp(DOMAIN, &options)),
        ] {
            assert_eq!(reply.rcode(), Rcode::FORMERR, "{what} over {transport}");
            assert!(reply.addrs().is_empty(), "{what} over {transport}");
        }
    }

    // Family 2 over IPv6: fd00:1::/48=dc1/rack1; ::1 itself is in rack2.
    let mut v6 = EcsClient::new(v6_client(&r));
    for ecs in [
        ecs_v6(v6_addr("fd00:1::"), 48),
        ecs_v6(v6_addr("fd00:1:0:7::"), 64),
    ] {
        for (transport, reply) in [
            ("UDP", v6.udp(DOMAIN, &[&ecs])),
            ("TCP", v6.tcp(DOMAIN, &[&ecs])),
        ] {
            assert_eq!(
                sorted(reply.addrs()),
                rack1,
                "{ecs:?} over {transport} on ::1"
            );
            assert_eq!(
                reply_ecs(&reply),
                vec![Ecs::echo(&ecs, 48)],
                "{ecs:?} over {transport}"
            );
        }
    }
    let reply = v6.udp(DOMAIN, &[]);
    assert_eq!(
        sorted(reply.addrs()),
        pick(&n, &[4, 5]),
        "::1 without ECS: its own location"
    );
}

// 3. A rack whose nodes all die: its clients get every live node of the
// datacenter (spread with --answers 1), the other rack's clients stay
// local, the fallback is counted in the metric; when the nodes come back,
// the rack's clients are served locally again.
#[test]
fn a_dead_rack_falls_back_to_its_datacenter_and_comes_back() {
    let (sim, n) = layout_cluster(222);
    let r = start_affinity(&sim, &n, "1", &[]);
    let (rack1, rack2) = (pick(&n, &[1, 2, 3]), pick(&n, &[4, 5]));
    let mut in_rack1 = client_from(&r, v4(IN_RACK1));
    let mut in_rack2 = client_from(&r, v4(IN_RACK2));
    wait_for_spread(&r, &mut in_rack1, DOMAIN, &rack1, "rack1 at first");
    wait_for_spread(&r, &mut in_rack2, DOMAIN, &rack2, "rack2 at first");
    // --answers 1 and the TTL hold for placed clients.
    let reply = in_rack1.query(DOMAIN, Rtype::A).expect("a reply");
    assert_eq!(reply.addrs().len(), 1, "{:?}", reply.addrs());
    assert_eq!(reply.answer_ttls(), vec![4]);

    for node in &rack1 {
        sim.set_fault(*node, Fault::Down);
    }
    // dc1's live nodes: rack2's and rack3's. Meanwhile, answer after
    // answer, rack2's clients get rack2.
    let dc1_live = pick(&n, &[4, 5, 6]);
    let mut last = None;
    let fell_back = wait_until(SETTLE, || {
        assert_spread(&r, &mut in_rack2, DOMAIN, &rack2, "rack2, rack1 dying");
        last = answers_over(&mut in_rack1, DOMAIN, 40);
        last == Some(dc1_live.iter().copied().collect())
    });
    assert!(
        fell_back,
        "rack1 dead: answers name {last:?}, not {dc1_live:?}; log:\n{}",
        r.log_text()
    );
    for _ in 0..5 {
        assert_spread(&r, &mut in_rack1, DOMAIN, &dc1_live, "rack1 dead");
        assert_spread(&r, &mut in_rack2, DOMAIN, &rack2, "rack2, rack1 dead");
    }
    let counted = || {
        r.metric(FALLBACKS, &[("dc", "dc1"), ("rack", "rack1")])
            .is_some_and(|v| v > 0.0)
    };
    assert!(
        wait_until(SETTLE, counted),
        "no {FALLBACKS} for dc1/rack1; metrics:\n{}",
        r.metrics().unwrap_or_default()
    );

    for node in &rack1 {
        sim.set_fault(*node, Fault::None);
    }
    let back = wait_until(SETTLE, || {
        assert_spread(&r, &mut in_rack2, DOMAIN, &rack2, "rack2, rack1 reviving");
        last = answers_over(&mut in_rack1, DOMAIN, 40);
        last == Some(rack1.iter().copied().collect())
    });
    assert!(
        back,
        "rack1 revived: answers name {last:?}, not {rack1:?}; log:\n{}",
        r.log_text()
    );
    assert_spread(&r, &mut in_rack1, DOMAIN, &rack1, "rack1 revived");
}

// 4. --affinity-min-nodes 2: a rack with fewer live nodes answers from its
// datacenter, a datacenter with fewer from the normal list; live nodes
// count, not listed ones. And --client-subnet false: ECS is neither used
// nor echoed, clients are placed by their source address.
#[test]
fn min_nodes_counts_live_nodes_and_client_subnet_false_ignores_ecs() {
    let (sim, n) = layout_cluster(223);
    let more = ["--affinity-min-nodes", "2", "--client-subnet", "false"];
    let r = start_affinity(&sim, &n, "all", &more);
    let (rack1, rack2) = (pick(&n, &[1, 2, 3]), pick(&n, &[4, 5]));
    let (dc1, dc2) = (pick(&n, &[1, 2, 3, 4, 5, 6]), pick(&n, &[7, 8]));
    let mut in_rack1 = client_from(&r, v4(IN_RACK1));
    let mut in_rack2 = client_from(&r, v4(IN_RACK2));
    let mut in_rack3 = client_from(&r, v4(IN_RACK3));
    let mut in_dc2 = client_from(&r, v4(IN_DC2_RACK1));
    wait_for_answer(&r, &mut in_rack1, DOMAIN, &rack1, "rack1: 3 nodes");
    wait_for_answer(&r, &mut in_rack2, DOMAIN, &rack2, "rack2: 2 nodes");
    wait_for_answer(&r, &mut in_rack3, DOMAIN, &dc1, "rack3: 1 node");
    wait_for_answer(&r, &mut in_dc2, DOMAIN, &dc2, "dc2/rack1: 1 node");

    // ECS is not read: placed by the source (rack2), nothing echoed.
    let ecs = ecs_v4([127, 50, 1, 0], 24);
    let mut from_rack2 = EcsClient::new(client_from(&r, v4(IN_RACK2)));
    let mut from_unplaced = EcsClient::new(client_from(&r, v4([127, 0, 0, 1])));
    for (what, client, want) in [
        ("rack2 source", &mut from_rack2, &rack2),
        ("unplaced source", &mut from_unplaced, &dc1),
    ] {
        for (transport, reply) in [
            ("UDP", client.udp(DOMAIN, &[&ecs])),
            ("TCP", client.tcp(DOMAIN, &[&ecs])),
        ] {
            let what = format!("{what} with ECS for rack1 over {transport}");
            assert_eq!(reply.rcode(), Rcode::NOERROR, "{what}");
            assert_eq!(&sorted(reply.addrs()), want, "{what}");
            assert_eq!(reply_ecs(&reply), vec![], "{what}: ECS echoed");
        }
    }

    // Two of rack1's three nodes die: one live node is too few.
    sim.set_fault(n[0], Fault::Down);
    sim.set_fault(n[1], Fault::Down);
    let dc1_live = pick(&n, &[3, 4, 5, 6]);
    wait_for_answer(&r, &mut in_rack1, DOMAIN, &dc1_live, "rack1: 1 live");
    // dc2 down to one live node: the normal list (dc1's live nodes).
    sim.set_fault(n[7], Fault::Down);
    wait_for_answer(&r, &mut in_dc2, DOMAIN, &dc1_live, "dc2: 1 live");
    wait_for_answer(&r, &mut in_rack2, DOMAIN, &rack2, "rack2 meanwhile");

    for node in [n[0], n[1], n[7]] {
        sim.set_fault(node, Fault::None);
    }
    wait_for_answer(&r, &mut in_rack1, DOMAIN, &rack1, "rack1 revived");
    wait_for_answer(&r, &mut in_dc2, DOMAIN, &dc2, "dc2 revived");
}

// 5. The TOML file: [[location]] tables (a cidr list of IPv4 and IPv6
// prefixes, a location without a rack) and affinity = true on a [[name]]
// table of dc1, which places only clients of dc1's locations; the domain
// itself, without affinity, answers as before.
#[test]
fn toml_location_tables_and_name_affinity() {
    let (sim, n) = layout_cluster(224);
    let config = TempFile::new(
        "affinity",
        "[[location]]\ncidr = [\"127.50.1.0/24\", \"fd00:1::/48\"]\ndc = \"dc1\"\nrack = \"rack1\"\n\n\
         [[location]]\ncidr = [\"127.50.2.0/24\"]\ndc = \"dc1\"\nrack = \"rack2\"\n\n\
         [[location]]\ncidr = [\"127.50.3.0/24\"]\ndc = \"dc2\"\n\n\
         [[name]]\nname = \"near.alternator.test\"\ndc = \"dc1\"\naffinity = true\n\n\
         [[name]]\nname = \"dc2.alternator.test\"\ndc = \"dc2\"\n",
    );
    let file = ["--config", config.path_str()];
    let r = Responder::start(&affinity_args(&sim, &n, "all", &file));
    r.wait_for_cluster_list();
    let near = "near.alternator.test";
    let (rack1, rack2) = (pick(&n, &[1, 2, 3]), pick(&n, &[4, 5]));
    let (dc1, dc2) = (pick(&n, &[1, 2, 3, 4, 5, 6]), pick(&n, &[7, 8]));
    let mut in_rack1 = client_from(&r, v4(IN_RACK1));
    let mut in_rack2 = client_from(&r, v4(IN_RACK2));
    let mut in_dc2 = client_from(&r, v4(IN_DC2_RACK1));
    let mut unplaced = client_from(&r, v4(UNPLACED));
    wait_for_answer(&r, &mut in_rack1, near, &rack1, "near from rack1");
    wait_for_answer(&r, &mut in_rack2, near, &rack2, "near from rack2");
    wait_for_answer(&r, &mut unplaced, near, &dc1, "near from no location");
    // The domain and the other name have no affinity: unchanged.
    for client in [&mut in_rack1, &mut in_rack2, &mut in_dc2] {
        wait_for_answer(&r, client, DOMAIN, &dc1, "the domain, no affinity");
        wait_for_answer(&r, client, DC2_NAME, &dc2, "dc2 name, no affinity");
    }
    // The IPv6 prefix of the first table, through ECS; the domain echoes
    // ECS with scope 0.
    let mut resolver = EcsClient::new(client_from(&r, v4([127, 0, 0, 1])));
    let ecs = ecs_v6(v6_addr("fd00:1:0:7::"), 64);
    let reply = resolver.udp(near, &[&ecs]);
    assert_eq!(sorted(reply.addrs()), rack1, "near, ECS fd00:1:0:7::/64");
    assert_eq!(reply_ecs(&reply), vec![Ecs::echo(&ecs, 48)]);
    let reply = resolver.udp(DOMAIN, &[&ecs]);
    assert_eq!(sorted(reply.addrs()), dc1, "the domain with ECS");
    assert_eq!(reply_ecs(&reply), vec![Ecs::echo(&ecs, 0)], "no affinity");
    // near serves dc1: it places only the clients of dc1's locations, and
    // one placed in dc2 gets near's own list (dc1), never dc2's nodes.
    wait_for_answer(&r, &mut in_dc2, near, &dc1, "near from dc2");
}
