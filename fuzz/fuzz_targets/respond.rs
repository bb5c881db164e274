//! Fuzzes the answer path: each input is one packet, answered over UDP and TCP
//! by zones in every answer mode, with and without forwarding, serving no
//! node, one, a few of both families, and more than fit in 512 bytes. Any
//! broken property (see `tests/proptest_answer/oracle.rs`) is a panic.
//!
//! Run with `scripts/fuzz [SECONDS]`.

#![no_main]

#[path = "../../tests/proptest_answer/oracle.rs"]
mod oracle;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use alternator_dns::dns::{Rng, Transport};
use libfuzzer_sys::fuzz_target;
use rand_core::SeedableRng;

use oracle::{Setup, MODES};

static SETUPS: LazyLock<Vec<Setup>> = LazyLock::new(|| {
    let v4 = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0001 + i));
    let v6 = |i: u128| IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | (i + 1)));
    let node_sets: Vec<Vec<IpAddr>> = vec![
        vec![],
        vec![v4(0)],
        vec![v4(0), v4(1), v4(2), v6(0), v6(1)],
        (0..100).map(v4).chain((0..40).map(v6)).collect(),
    ];
    let mut setups = Vec::new();
    for answers in MODES {
        for forwarding in [false, true] {
            for nodes in &node_sets {
                setups.push(Setup::new(answers, forwarding, nodes));
            }
        }
    }
    setups
});

fuzz_target!(|query: &[u8]| {
    let mut rng = Rng::seed_from_u64(0);
    let mut reply = Vec::with_capacity(65535);
    for setup in SETUPS.iter() {
        for transport in [Transport::Udp, Transport::Tcp] {
            if let Err(broken) = oracle::check(setup, query, transport, &mut rng, &mut reply) {
                panic!("{broken}\nquery: {query:02x?}\nreply: {reply:02x?}");
            }
        }
    }
});
