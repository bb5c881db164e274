//! The table checked against a plain scan of the rules: the longest prefix
//! holding an address wins, and a location can only change where a rule
//! begins or just after one ends, so a block is one location's when the
//! scan agrees at its start and at every such point inside it.

use std::net::IpAddr;

use rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::*;
use crate::access::Cidr;
use crate::dns::ecs::{self, ClientSubnet};

fn rule(cidr: &str, location: u16) -> LocationRule {
    LocationRule {
        cidr: cidr.parse().unwrap(),
        location,
    }
}

fn placement(rules: &[LocationRule]) -> Placement {
    Placement::new(rules, vec![true], true)
}

/// The location of `addr` by scanning every IPv4 rule.
fn scan(rules: &[(u128, u8, u16)], addr: u128) -> Option<u16> {
    let mut best: Option<(u8, u16)> = None;
    for &(network, len, location) in rules {
        if addr & mask(32, len) == network && best.is_none_or(|(l, _)| len >= l) {
            best = Some((len, location));
        }
    }
    best.map(|(_, location)| location)
}

/// Where the scan's answer may change: rule starts and the addresses just
/// past rule ends.
fn edges(rules: &[(u128, u8, u16)]) -> Vec<u128> {
    let top = mask(32, 32);
    let mut edges = Vec::new();
    for &(network, len, _) in rules {
        edges.push(network);
        let end = network | (top & !mask(32, len));
        if end < top {
            edges.push(end + 1);
        }
    }
    edges
}

/// Whether every address of `first..=last` has one location.
fn uniform(rules: &[(u128, u8, u16)], first: u128, last: u128) -> bool {
    let want = scan(rules, first);
    edges(rules)
        .into_iter()
        .filter(|e| (first..=last).contains(e))
        .all(|e| scan(rules, e) == want)
}

fn block(addr: u128, len: u8) -> (u128, u128) {
    let first = addr & mask(32, len);
    (first, first | (mask(32, 32) & !mask(32, len)))
}

fn subnet(addr: u128, prefix: u8) -> ClientSubnet {
    let first = addr & mask(32, prefix) as u32 as u128;
    let octets = (first as u32).to_be_bytes();
    let n = usize::from(prefix.div_ceil(8));
    let mut data = vec![0, 1, prefix, 0];
    data.extend_from_slice(&octets[..n]);
    ClientSubnet::parse(&data).unwrap()
}

/// Random IPv4 rules crowded into 10.0.0.0/12, so that they nest and abut.
fn random_rules(rng: &mut Xoshiro256PlusPlus, count: usize) -> Vec<(u128, u8, u16)> {
    (0..count)
        .map(|_| {
            let len = 12 + (rng.next_u32() % 21) as u8;
            let addr = 0x0a00_0000 | u128::from(rng.next_u32() & 0x000f_ffff);
            (addr & mask(32, len), len, (rng.next_u32() % 4) as u16)
        })
        .collect()
}

fn as_rules(raw: &[(u128, u8, u16)]) -> Vec<LocationRule> {
    raw.iter()
        .map(|&(network, len, location)| LocationRule {
            cidr: Cidr::V4 {
                network: network as u32,
                len,
            },
            location,
        })
        .collect()
}

#[test]
fn the_longest_prefix_wins() {
    let p = placement(&[
        rule("10.0.0.0/8", 0),
        rule("10.1.0.0/16", 1),
        rule("10.1.2.0/24", 2),
        rule("fd00::/16", 3),
        rule("::1/128", 4),
    ]);
    let at = |s: &str| p.locate(s.parse::<IpAddr>().unwrap());
    assert_eq!(at("10.9.9.9"), Some(0));
    assert_eq!(at("10.1.9.9"), Some(1));
    assert_eq!(at("10.1.2.200"), Some(2));
    assert_eq!(at("10.1.3.0"), Some(1));
    assert_eq!(at("11.0.0.0"), None);
    assert_eq!(at("9.255.255.255"), None);
    assert_eq!(at("::ffff:10.1.2.3"), Some(2), "IPv4-mapped counts as IPv4");
    assert_eq!(at("fd00:1::5"), Some(3));
    assert_eq!(at("::1"), Some(4));
    assert_eq!(at("::2"), None);
}

#[test]
fn random_tables_place_as_a_scan_of_the_rules_does() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    for _ in 0..40 {
        let count = 1 + (rng.next_u32() % 60) as usize;
        let raw = random_rules(&mut rng, count);
        let p = placement(&as_rules(&raw));
        let mut probes: Vec<u128> = edges(&raw);
        probes.extend(edges(&raw).iter().map(|e| e.wrapping_sub(1) & mask(32, 32)));
        probes.extend((0..200).map(|_| 0x0a00_0000 | u128::from(rng.next_u32() & 0x001f_ffff)));
        for addr in probes {
            let ip = IpAddr::from((addr as u32).to_be_bytes());
            assert_eq!(p.locate(ip), scan(&raw, addr), "{ip} in {raw:?}");
        }
    }
}

#[test]
fn a_subnet_inside_one_location_gets_the_widest_scope_that_stays_there() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    for _ in 0..40 {
        let count = 1 + (rng.next_u32() % 40) as usize;
        let raw = random_rules(&mut rng, count);
        let p = placement(&as_rules(&raw));
        for _ in 0..100 {
            let addr = 0x0a00_0000 | u128::from(rng.next_u32() & 0x001f_ffff);
            let prefix = 1 + (rng.next_u32() % 32) as u8;
            let ecs = subnet(addr, prefix);
            let placed = p.locate_subnet(&ecs);
            let (first, last) = block(ecs.bits(), prefix);
            if uniform(&raw, first, last) {
                assert_eq!(placed.location, scan(&raw, first));
                assert!(placed.scope <= prefix);
                let (f, l) = block(first, placed.scope);
                assert!(uniform(&raw, f, l), "scope {} too wide", placed.scope);
                if placed.scope > 0 {
                    let (f, l) = block(first, placed.scope - 1);
                    assert!(!uniform(&raw, f, l), "scope {} too narrow", placed.scope);
                }
            } else {
                // Unplaced, and the scope is the length that tells the
                // locations inside apart: every change falls on its blocks.
                assert_eq!(placed.location, None);
                assert!(placed.scope > prefix);
                let inside: Vec<u128> = edges(&raw)
                    .into_iter()
                    .filter(|e| {
                        (first + 1..=last).contains(e) && scan(&raw, *e) != scan(&raw, e - 1)
                    })
                    .collect();
                let aligned = |len: u8| {
                    inside
                        .iter()
                        .all(|e| e & !mask(32, len) & mask(32, 32) == 0)
                };
                assert!(aligned(placed.scope));
                // Past MAX_WALK range starts inside, the full length is as
                // correct and costs no more.
                let starts_inside = (p.v4.starts.iter())
                    .filter(|s| (first + 1..=last).contains(&u128::from(**s)))
                    .count();
                if starts_inside <= MAX_WALK {
                    let too_long = !aligned(placed.scope - 1);
                    assert!(too_long, "scope {} too long", placed.scope);
                } else {
                    assert_eq!(placed.scope, 32);
                }
            }
        }
    }
}

#[test]
fn worked_examples_of_scopes() {
    let p = placement(&[rule("127.50.1.0/24", 0), rule("127.50.2.0/24", 1)]);
    let place = |addr: [u8; 4], prefix| {
        p.locate_subnet(&subnet(u128::from(u32::from_be_bytes(addr)), prefix))
    };
    let placed = |location, scope| Placed {
        location: Some(location),
        scope,
    };
    let unplaced = |scope| Placed {
        location: None,
        scope,
    };
    assert_eq!(place([127, 50, 1, 0], 24), placed(0, 24));
    assert_eq!(place([127, 50, 2, 77], 32), placed(1, 24));
    assert_eq!(
        place([127, 50, 0, 0], 16),
        unplaced(24),
        "both racks inside"
    );
    assert_eq!(
        place([10, 0, 0, 0], 8),
        unplaced(2),
        "0.0.0.0/2 holds no location"
    );
    assert_eq!(place([10, 0, 0, 0], 0), unplaced(0), "opted out");
    // No rules at all: every answer is good for everyone.
    let empty = placement(&[]);
    let anywhere = empty.locate_subnet(&subnet(0x0a01_0200, 24));
    assert_eq!(anywhere, unplaced(0));
}

#[test]
fn ipv6_subnets_place_and_scope_too() {
    let p = placement(&[rule("fd00:1::/48", 0), rule("fd00:2::/48", 1)]);
    let six = |prefix: u8, address: &[u8]| {
        let mut data = vec![0, 2, prefix, 0];
        data.extend_from_slice(address);
        p.locate_subnet(
            &ecs::find(&[&[0, 8, 0, data.len() as u8][..], &data].concat(), true)
                .unwrap()
                .unwrap(),
        )
    };
    assert_eq!(six(56, &[0xfd, 0, 0, 1, 0, 0, 0]).location, Some(0));
    assert_eq!(six(56, &[0xfd, 0, 0, 1, 0, 0, 0]).scope, 48);
    assert_eq!(
        six(16, &[0xfd, 0]),
        Placed {
            location: None,
            scope: 48
        }
    );
}

#[test]
fn buckets_find_the_same_range_as_a_search_of_every_start() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(13);
    for round in 0..30 {
        let count = 8 + (rng.next_u32() % 400) as usize;
        let raw = random_rules(&mut rng, count);
        let p = placement(&as_rules(&raw));
        assert!(
            p.v4.buckets.is_some() || p.v4.starts.len() < 8,
            "round {round}"
        );
        let mut probes: Vec<u32> =
            p.v4.starts
                .iter()
                .flat_map(|&s| [s, s.wrapping_sub(1)])
                .collect();
        probes.extend((0..500).map(|_| rng.next_u32()));
        probes.extend((0..500).map(|_| 0x0a00_0000 | (rng.next_u32() & 0x00ff_ffff)));
        probes.extend([0, u32::MAX]);
        for addr in probes {
            assert_eq!(p.v4.index(addr), p.v4.search(u128::from(addr)), "{addr:#x}");
        }
    }
    // IPv6, with every prefix under one /32.
    let rules: Vec<LocationRule> = (0..300u16)
        .map(|i| rule(&format!("2001:db8:{i:x}::/48"), i % 5))
        .collect();
    let p = placement(&rules);
    assert!(p.v6.buckets.is_some());
    for i in 0..400u128 {
        let addr = (0x2001_0db8u128 << 96) | (i << 80) | 7;
        assert_eq!(p.v6.index(addr), p.v6.search(addr));
        assert_eq!(
            p.v6.index(addr ^ (1 << 127)),
            p.v6.search(addr ^ (1 << 127))
        );
    }
}

#[test]
fn a_wide_subnet_over_a_large_table_gets_the_full_length_after_a_bounded_walk() {
    let rules: Vec<LocationRule> = (0..1000u32)
        .map(|i| LocationRule {
            cidr: Cidr::V4 {
                network: 0x0a00_0000 | (i << 8),
                len: 24,
            },
            location: (i % 2) as u16,
        })
        .collect();
    let p = placement(&rules);
    let placed = p.locate_subnet(&subnet(0, 1));
    assert_eq!(
        placed,
        Placed {
            location: None,
            scope: 32
        }
    );
    // A subnet holding a few ranges still gets the length that parts them.
    let narrow = p.locate_subnet(&subnet(0x0a00_0000, 22));
    assert_eq!(
        narrow,
        Placed {
            location: None,
            scope: 24
        }
    );
}
