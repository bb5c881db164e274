//! Where a client is, for zone-local answers (`--location`, `--affinity`).
//!
//! The `--location` prefixes are flattened once per configuration into
//! sorted, disjoint address ranges that cover each family's whole space,
//! each with its location or none, and neighbours with the same location
//! merged. Placing a query is then one binary search over at most 2n + 1
//! range starts, without allocating; and because each range is as large as
//! it can be, the ECS scope that keeps a caching resolver from handing one
//! location's answer to another location's client follows from the range
//! alone: the shortest prefix around the address that stays inside it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::ecs::{mask, ClientSubnet};
use crate::access::Cidr;

/// One `--location` prefix and the index of its location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocationRule {
    pub cidr: Cidr,
    pub location: u16,
}

/// Where a query with a client subnet was placed, and the scope of the
/// answer: the prefix length of the subnet's addresses it holds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub location: Option<u16>,
    pub scope: u8,
}

/// What the answer path needs to place clients: the location table, which
/// served names place their clients, and whether ECS is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
    /// Per served name, in the zone's order: whether it places clients.
    affinity: Box<[bool]>,
    /// Whether a query's ECS option is read (and echoed).
    client_subnet: bool,
}

impl Default for Placement {
    /// No locations, no affinity, ECS read (and answered with scope 0).
    fn default() -> Self {
        Placement::new(&[], Vec::new(), true)
    }
}

impl Placement {
    /// The table of `rules` (the longest prefix holding an address wins;
    /// of two rules for one prefix, the later), with `affinity[i]` saying
    /// whether served name `i` places its clients.
    pub fn new(rules: &[LocationRule], affinity: Vec<bool>, client_subnet: bool) -> Placement {
        let family = |v6: bool| {
            rules.iter().filter_map(move |rule| match rule.cidr {
                Cidr::V4 { network, len } if !v6 => Some((u128::from(network), len, rule.location)),
                Cidr::V6 { network, len } if v6 => Some((network, len, rule.location)),
                _ => None,
            })
        };
        Placement {
            v4: Ranges::new(family(false)),
            v6: Ranges::new(family(true)),
            affinity: affinity.into_boxed_slice(),
            client_subnet,
        }
    }

    /// Whether served name `index` places its clients.
    #[inline]
    pub(crate) fn affinity(&self, index: usize) -> bool {
        self.affinity.get(index).copied().unwrap_or(false)
    }

    /// Whether queries' ECS options are read.
    #[inline]
    pub(crate) fn client_subnet(&self) -> bool {
        self.client_subnet
    }

    /// The location of a query's source address (IPv4-mapped IPv6
    /// addresses count as IPv4).
    #[inline]
    pub fn locate(&self, source: IpAddr) -> Option<u16> {
        match source.to_canonical() {
            IpAddr::V4(v4) => self.v4.location_of(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.location_of(u128::from(v6)),
        }
    }

    /// The location of a client subnet, and the answer's scope. A subnet
    /// inside one range is placed there, with the shortest prefix that stays
    /// in the range as scope (at most the source prefix). A subnet that
    /// spans ranges cannot be placed: the scope is then the prefix length
    /// that would tell them apart (the full address length when the subnet
    /// holds more than [`MAX_WALK`] ranges), longer than the source prefix,
    /// so that a resolver asks again with more of the client's address. A
    /// source prefix of 0 (the client opted out) is unplaced with scope 0.
    #[inline]
    pub(crate) fn locate_subnet(&self, subnet: &ClientSubnet) -> Placed {
        match subnet.is_v6() {
            true => self.v6.place(subnet.bits(), subnet.source_prefix()),
            false => self.v4.place(subnet.bits(), subnet.source_prefix()),
        }
    }
}

/// The most range starts a subnet too wide to place is searched for the
/// scope that tells them apart.
const MAX_WALK: usize = 64;

/// Marks a range that no location holds.
const NONE: u16 = u16::MAX;

/// An address as a number: `u32` for IPv4, whose table then takes a
/// quarter of the memory and compares in one instruction, `u128` for IPv6.
trait Address: Copy + Ord + Into<u128> {
    /// Bits in an address.
    const WIDTH: u8;
    /// `x`, below 2^WIDTH, as this type.
    fn narrow(x: u128) -> Self;
}

impl Address for u32 {
    const WIDTH: u8 = 32;
    fn narrow(x: u128) -> u32 {
        x as u32
    }
}

impl Address for u128 {
    const WIDTH: u8 = 128;
    fn narrow(x: u128) -> u128 {
        x
    }
}

/// One family's address space cut into ranges: range `i` runs from
/// `starts[i]` to just before `starts[i + 1]` (the last to the family's
/// highest address), held by `locations[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ranges<A> {
    /// Ascending, starting at 0.
    starts: Box<[A]>,
    locations: Box<[u16]>,
    /// Narrows the search to a few starts; None for tables of a few
    /// ranges.
    buckets: Option<Buckets>,
}

/// A binary search over 2,000 starts is a chain of 11 dependent loads,
/// about 20 ns. Every start but the first shares the prefix of the
/// `window`; addresses outside it are in the first or the last range, and
/// inside it the next `bits` address bits pick a bucket, which says where
/// to search: with about two buckets per range, one or two starts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Buckets {
    /// The first and last address of the window.
    low: u128,
    high: u128,
    /// Address bits below the bucket number.
    shift: u32,
    /// For bucket `b`, the range holding its first address; one more entry,
    /// the last range, closes the last bucket.
    first: Box<[u32]>,
}

/// The most buckets: 2^16 of 4 bytes, 256 KiB, for 32,000 ranges and more.
const MAX_BUCKET_BITS: u8 = 16;

impl<A: Address> Ranges<A> {
    /// The ranges of `rules` (network, prefix length, location).
    fn new(rules: impl Iterator<Item = (u128, u8, u16)>) -> Ranges<A> {
        let width = A::WIDTH;
        let top = mask(width, width);
        let mut rules: Vec<(u128, u8, u16)> = rules.collect();
        // Shorter prefixes first, so that a longer one paints over them.
        rules.sort_by_key(|&(_, len, _)| len);
        let mut painted = BTreeMap::from([(0u128, NONE)]);
        for (network, len, location) in rules {
            let end = network | (top & !mask(width, len));
            if end < top {
                let after = painted.range(..=end + 1).next_back().map_or(NONE, |e| *e.1);
                painted.insert(end + 1, after);
            }
            let inside: Vec<u128> = painted.range(network..=end).map(|e| *e.0).collect();
            for start in inside {
                painted.remove(&start);
            }
            painted.insert(network, location);
        }
        let (mut starts, mut locations) = (Vec::new(), Vec::new());
        for (start, location) in painted {
            if locations.last() != Some(&location) {
                starts.push(A::narrow(start));
                locations.push(location);
            }
        }
        let mut ranges = Ranges {
            starts: starts.into_boxed_slice(),
            locations: locations.into_boxed_slice(),
            buckets: None,
        };
        ranges.buckets = ranges.bucket();
        ranges
    }

    /// The buckets of these ranges, when there are enough to need them.
    fn bucket(&self) -> Option<Buckets> {
        let width = A::WIDTH;
        let (first, last) = (self.starts.get(1)?, self.starts.last()?);
        if self.starts.len() < 8 {
            return None;
        }
        let (first, last): (u128, u128) = ((*first).into(), (*last).into());
        // Both below 2^width: their xor has 128 - width leading zeros.
        let common = ((first ^ last).leading_zeros() - (128 - u32::from(width))) as u8;
        let wanted = (usize::BITS - self.starts.len().leading_zeros() + 1) as u8;
        let bits = wanted.min(MAX_BUCKET_BITS).min(width - common);
        let low = first & mask(width, common);
        let high = low | (mask(width, width) & !mask(width, common));
        let shift = u32::from(width - common - bits);
        let first = (0..1u128 << bits)
            .map(|b| self.search((low + (b << shift)).min(high)) as u32)
            .chain(std::iter::once((self.starts.len() - 1) as u32))
            .collect();
        Some(Buckets {
            low,
            high,
            shift,
            first,
        })
    }

    /// The range holding `addr`, by binary search over every start.
    fn search(&self, addr: u128) -> usize {
        // starts[0] is 0, so at least one start is at or below `addr`.
        (self.starts)
            .partition_point(|&s| s.into() <= addr)
            .saturating_sub(1)
    }

    /// The range holding `addr`.
    #[inline]
    fn index(&self, addr: A) -> usize {
        let Some(buckets) = &self.buckets else {
            return self.search(addr.into());
        };
        let wide: u128 = addr.into();
        if wide < buckets.low {
            return 0;
        }
        if wide > buckets.high {
            return self.starts.len() - 1;
        }
        let bucket = ((wide - buckets.low) >> buckets.shift) as usize;
        let from = buckets.first[bucket] as usize;
        let to = buckets.first[bucket + 1] as usize;
        let after = self.starts[from + 1..=to].partition_point(|&s| s <= addr);
        from + after
    }

    #[inline]
    fn location_of(&self, addr: A) -> Option<u16> {
        let location = self.locations[self.index(addr)];
        (location != NONE).then_some(location)
    }

    /// The last address of range `i`.
    fn end(&self, i: usize) -> u128 {
        let top = mask(A::WIDTH, A::WIDTH);
        self.starts.get(i + 1).map_or(top, |&next| next.into() - 1)
    }

    /// See [`Placement::locate_subnet`]: `first` is the subnet's address
    /// (zero past `prefix`).
    #[inline]
    fn place(&self, first: u128, prefix: u8) -> Placed {
        if prefix == 0 {
            return Placed {
                location: None,
                scope: 0,
            };
        }
        let width = A::WIDTH;
        let last = first | (mask(width, width) & !mask(width, prefix));
        let i = self.index(A::narrow(first));
        let end = self.end(i);
        if end >= last {
            let location = self.locations[i];
            return Placed {
                location: (location != NONE).then_some(location),
                scope: scope_within(first, self.starts[i].into(), end, width),
            };
        }
        // Each range start inside the subnet must fall on a block boundary.
        // A subnet holding more than MAX_WALK of them (a /1 sent as ECS over
        // a large table) gets the full address length instead: as correct,
        // and a query costs no more than MAX_WALK compares.
        let mut needed = prefix;
        let inside = self.starts[i + 1..].iter().map(|&s| s.into());
        for (walked, start) in inside.take_while(|&s| s <= last).enumerate() {
            needed = needed.max(width - trailing_zeros(start, width));
            if needed == width || walked == MAX_WALK {
                needed = if walked == MAX_WALK { width } else { needed };
                break;
            }
        }
        Placed {
            location: None,
            scope: needed,
        }
    }
}

/// The shortest prefix length `l` such that the `l`-bit block holding
/// `addr` lies within `start..=end` (which holds `addr`).
fn scope_within(addr: u128, start: u128, end: u128, width: u8) -> u8 {
    let top = mask(width, width);
    let low = bits_to_stay_above(addr, start, width);
    let high = bits_to_stay_above(!addr & top, !end & top, width);
    low.max(high)
}

/// The fewest leading bits of `addr` whose block begins at or after
/// `start` (`addr >= start`): the block of `start`'s own alignment if
/// `addr` shares that prefix with it, else one bit past their common
/// prefix.
fn bits_to_stay_above(addr: u128, start: u128, width: u8) -> u8 {
    let common = if addr == start {
        width
    } else {
        // Both are below 2^width, so their xor has 128 - width leading zeros.
        (addr ^ start).leading_zeros() as u8 - (128 - width)
    };
    let aligned = width - trailing_zeros(start, width);
    if aligned <= common {
        aligned
    } else {
        common + 1
    }
}

/// Trailing zero bits of a `width`-bit number (`width` for zero).
fn trailing_zeros(x: u128, width: u8) -> u8 {
    (x.trailing_zeros() as u8).min(width)
}

#[cfg(test)]
mod tests;
