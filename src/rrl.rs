//! Response rate limiting (RRL), in the manner of Knot DNS's and BIND's.
//!
//! A DNS server on UDP can be used to reflect traffic at a victim whose
//! address an attacker spoofs as the source of many queries. RRL bounds the
//! responses sent to any one network: each source *prefix* (`/24` for IPv4,
//! `/56` for IPv6 by default: one customer, one site) has a token bucket that
//! fills at `rate` responses per second up to a burst of `rate`. A response
//! takes a token; when the bucket is empty the response is not sent as is:
//! every `slip`-th such response is sent *slipped*, truncated (TC=1) with no
//! records, so that a genuine client behind that prefix retries over TCP
//! (which cannot be spoofed and is not limited), and the others are dropped.
//!
//! # Costs on the fast path
//! - The table is a fixed array of `table_slots` buckets (a power of two,
//!   2^16 by default, 16 bytes each: 1 MiB), allocated once in
//!   [`RateLimiter::new`]. A prefix is hashed (SipHash with a per-process
//!   random key, so that an attacker cannot aim at a chosen victim's slot)
//!   to one slot; prefixes that collide share a bucket, as in Knot. Nothing
//!   is allocated, locked or evicted per query: a bucket that has been quiet
//!   for a second is simply full again, whoever used it before.
//! - [`RateLimiter::check`] takes `&mut self`: **each UDP worker owns its
//!   own limiter**, no sharing between threads.
//! - The caller passes the time, in milliseconds of a monotonic clock, so
//!   the worker can read the clock once per batch of packets (see
//!   [`now_ms`], a cheap coarse clock) and the tests can simulate time.
//!
//! # Per-worker limits
//! With `SO_REUSEPORT` the kernel spreads one source's packets over the
//! workers by its source port, so per-worker buckets would let one prefix
//! through at up to `rate x workers`. [`RrlSettings::per_worker`] divides the
//! rate by the number of workers (rounding up): **build each worker's
//! limiter with `settings.per_worker(n)`** so that the whole server sends
//! about `rate` responses per second to a prefix whose queries spread over
//! the workers, which is the case for spoofed floods and for resolvers
//! (random source ports). A client that keeps one source port lands on one
//! worker and gets `rate / workers`; with a sensible `rate` (tens per
//! second for a name with a 4 s TTL) that is still ample, and it can always
//! fall back to TCP.
//!
//! # What is counted
//! Every response the caller is about to send over UDP for this source,
//! whatever its RCODE; unlike BIND and Knot, responses are not told apart
//! by name or by type, since this server answers one name. TCP is never
//! limited. Apply the [`crate::access`] check first: refused sources should
//! not spend tokens.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;

use thiserror::Error;

/// Default table size: 2^16 buckets (1 MiB per worker).
pub const DEFAULT_TABLE_SLOTS: usize = 1 << 16;
/// Default IPv4 prefix length that shares a bucket.
pub const DEFAULT_IPV4_PREFIX: u8 = 24;
/// Default IPv6 prefix length that shares a bucket.
pub const DEFAULT_IPV6_PREFIX: u8 = 56;
/// Default slip: every second response over the limit is sent truncated.
pub const DEFAULT_SLIP: u32 = 2;
/// The highest `rate` accepted (responses per second per prefix).
pub const MAX_RATE: u32 = 1_000_000;

/// Fixed-point scale of a bucket's tokens: one response costs this much.
const TOKEN: u32 = 1000;

/// What to do with one response.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Under the limit: send the response.
    Answer,
    /// Over the limit, but send a truncated response instead: the header
    /// and question with TC=1 and no records (ANCOUNT = NSCOUNT = ARCOUNT
    /// = 0), so a real client retries over TCP.
    Slip,
    /// Over the limit: send nothing.
    Drop,
}

/// The limiter's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RrlSettings {
    /// Responses per second per source prefix; also the burst (the bucket
    /// size). 1 to [`MAX_RATE`].
    pub rate: u32,
    /// Of the responses over the limit, every `slip`-th is sent truncated
    /// ([`Verdict::Slip`]) and the others dropped; 0 drops them all, 1
    /// slips them all. 0 to 100.
    pub slip: u32,
    /// IPv4 sources in the same prefix of this length share a bucket (8 to 32).
    pub ipv4_prefix: u8,
    /// IPv6 sources in the same prefix of this length share a bucket (16 to 128).
    pub ipv6_prefix: u8,
    /// Buckets in the table: a power of two, 2^8 to 2^24.
    pub table_slots: usize,
}

/// Why [`RrlSettings`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RrlError {
    #[error("--rate-limit must be 0 (off) or 1 to {MAX_RATE} responses per second, not {0}")]
    Rate(u32),
    #[error("--rate-limit-slip must be 0 (drop all) to 100, not {0}")]
    Slip(u32),
    #[error("rate-limit IPv4 prefix length must be 8 to 32, not {0}")]
    Ipv4Prefix(u8),
    #[error("rate-limit IPv6 prefix length must be 16 to 128, not {0}")]
    Ipv6Prefix(u8),
    #[error("rate-limit table size must be a power of two from 256 to 16777216, not {0}")]
    TableSlots(usize),
}

impl RrlSettings {
    /// `rate` responses per second per prefix, with the defaults for the rest
    /// (slip 2, /24 and /56, 2^16 slots).
    pub fn new(rate: u32) -> RrlSettings {
        RrlSettings {
            rate,
            slip: DEFAULT_SLIP,
            ipv4_prefix: DEFAULT_IPV4_PREFIX,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            table_slots: DEFAULT_TABLE_SLOTS,
        }
    }

    /// Checks every field; [`RateLimiter::new`] does too.
    pub fn validate(&self) -> Result<(), RrlError> {
        if !(1..=MAX_RATE).contains(&self.rate) {
            return Err(RrlError::Rate(self.rate));
        }
        if self.slip > 100 {
            return Err(RrlError::Slip(self.slip));
        }
        if !(8..=32).contains(&self.ipv4_prefix) {
            return Err(RrlError::Ipv4Prefix(self.ipv4_prefix));
        }
        if !(16..=128).contains(&self.ipv6_prefix) {
            return Err(RrlError::Ipv6Prefix(self.ipv6_prefix));
        }
        if !self.table_slots.is_power_of_two() || !(1 << 8..=1 << 24).contains(&self.table_slots) {
            return Err(RrlError::TableSlots(self.table_slots));
        }
        Ok(())
    }

    /// The settings for one of `workers` workers: the rate divided by the
    /// worker count, rounded up (at least 1). See the module documentation.
    pub fn per_worker(&self, workers: usize) -> RrlSettings {
        let workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
        RrlSettings {
            rate: self.rate.div_ceil(workers).max(1),
            ..*self
        }
    }
}

/// One bucket: 16 bytes, four to a cache line.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left, in thousandths of a response.
    tokens: u32,
    /// The low 32 bits of the millisecond clock at the last refill. An
    /// idle bucket is full after one second, so wrapping (every 49.7 days)
    /// only matters for a bucket drained, then untouched for a multiple of
    /// 49.7 days to within a second: it is then limited for up to a second.
    stamp: u32,
    /// Responses over the limit so far, for the slip ratio.
    excess: u32,
}

/// A token-bucket table for one worker. See the module documentation.
pub struct RateLimiter {
    buckets: Box<[Bucket]>,
    /// `table_slots - 1`.
    slot_mask: usize,
    hasher: RandomState,
    /// Thousandths of a token added per millisecond (= tokens per second).
    refill_per_ms: u64,
    /// Bucket size in thousandths of a token.
    burst: u32,
    slip: u32,
    ipv4_mask: u32,
    ipv6_mask: u128,
    settings: RrlSettings,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Allocates the table (every bucket full) and draws the hash key.
    pub fn new(settings: &RrlSettings) -> Result<RateLimiter, RrlError> {
        settings.validate()?;
        let burst = settings.rate * TOKEN;
        let bucket = Bucket {
            tokens: burst,
            stamp: 0,
            excess: 0,
        };
        Ok(RateLimiter {
            buckets: vec![bucket; settings.table_slots].into_boxed_slice(),
            slot_mask: settings.table_slots - 1,
            hasher: RandomState::new(),
            refill_per_ms: u64::from(settings.rate),
            burst,
            slip: settings.slip,
            ipv4_mask: u32::MAX << (32 - u32::from(settings.ipv4_prefix)),
            ipv6_mask: u128::MAX << (128 - u32::from(settings.ipv6_prefix)),
            settings: *settings,
        })
    }

    /// The settings this limiter was built with.
    pub fn settings(&self) -> &RrlSettings {
        &self.settings
    }

    /// Accounts for one response to `source` at `now_ms` (a monotonic
    /// millisecond clock, e.g. [`now_ms`]; only differences matter) and says
    /// whether to send it. No allocation, no lock, one hash.
    #[inline]
    pub fn check(&mut self, source: IpAddr, now_ms: u64) -> Verdict {
        let slot = self.slot_of(source);
        let bucket = &mut self.buckets[slot];
        // Truncation intended: see `Bucket::stamp`.
        let now = now_ms as u32;
        let elapsed = now.wrapping_sub(bucket.stamp);
        if elapsed > 0 {
            let refill = u64::from(elapsed) * self.refill_per_ms;
            let tokens = u64::from(bucket.tokens).saturating_add(refill);
            // `min` with a u32 keeps the value in range.
            bucket.tokens = tokens.min(u64::from(self.burst)) as u32;
            bucket.stamp = now;
        }
        if bucket.tokens >= TOKEN {
            bucket.tokens -= TOKEN;
            return Verdict::Answer;
        }
        bucket.excess = bucket.excess.wrapping_add(1);
        match self.slip {
            0 => Verdict::Drop,
            slip if bucket.excess.is_multiple_of(slip) => Verdict::Slip,
            _ => Verdict::Drop,
        }
    }

    /// The table slot of `source`'s prefix.
    #[inline]
    fn slot_of(&self, source: IpAddr) -> usize {
        let key: (u8, u128) = match source.to_canonical() {
            IpAddr::V4(v4) => (4, u128::from(u32::from(v4) & self.ipv4_mask)),
            IpAddr::V6(v6) => (6, u128::from(v6) & self.ipv6_mask),
        };
        // Truncation intended: only the low bits select the slot.
        (self.hasher.hash_one(key) as usize) & self.slot_mask
    }
}

/// Milliseconds of `CLOCK_MONOTONIC_COARSE`: a clock read without a
/// system call (vDSO) and without touching the TSC, with the resolution of
/// the kernel tick (1 to 10 ms), which is plenty for rates per second.
/// Read it once per batch of packets.
#[inline]
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE
    // exists on every Linux since 2.6.32, so this cannot fail.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limiter(rate: u32, slip: u32) -> RateLimiter {
        RateLimiter::new(&RrlSettings {
            slip,
            ..RrlSettings::new(rate)
        })
        .unwrap()
    }

    /// The first candidate whose prefix does not share a slot with `with`
    /// (the hash key is random, so a fixed pair could collide, 1 in 2^16).
    fn not_colliding(rl: &RateLimiter, with: IpAddr, candidates: &[&str]) -> IpAddr {
        candidates
            .iter()
            .map(|c| ip(c))
            .find(|&c| rl.slot_of(c) != rl.slot_of(with))
            .expect("every candidate collides")
    }

    #[derive(Debug, Default, PartialEq, Eq)]
    struct Tally {
        answer: u32,
        slip: u32,
        drop: u32,
    }

    impl Tally {
        fn add(&mut self, v: Verdict) {
            match v {
                Verdict::Answer => self.answer += 1,
                Verdict::Slip => self.slip += 1,
                Verdict::Drop => self.drop += 1,
            }
        }
    }

    #[test]
    fn flood_is_limited_to_rate_and_other_sources_are_not() {
        let rate = 100;
        let mut rl = limiter(rate, 0);
        let attacker = ip("198.51.100.7");
        let victim = not_colliding(&rl, attacker, &["203.0.113.9", "203.0.114.9", "192.0.2.1"]);
        let start = 1_000_000u64;
        let mut per_second = Vec::new();
        let mut victim_answered = 0;
        // 5 simulated seconds, 10 queries per ms from the attacker, one
        // every 100 ms from the other source.
        for second in 0..5u64 {
            let mut tally = Tally::default();
            for ms in 0..1000u64 {
                let now = start + second * 1000 + ms;
                for _ in 0..10 {
                    tally.add(rl.check(attacker, now));
                }
                if ms % 100 == 0 {
                    assert_eq!(rl.check(victim, now), Verdict::Answer);
                    victim_answered += 1;
                }
            }
            assert_eq!(tally.answer + tally.drop, 10_000);
            assert_eq!(tally.slip, 0, "slip 0 drops everything over the limit");
            per_second.push(tally.answer);
        }
        assert_eq!(victim_answered, 50);
        // The first second gets the burst on top of the rate; after that
        // exactly the rate (to one token of rounding at the boundaries).
        assert!(
            per_second[0] >= rate && per_second[0] <= 2 * rate,
            "{per_second:?}"
        );
        for &answered in &per_second[1..] {
            assert!(answered.abs_diff(rate) <= 1, "{per_second:?}");
        }
        let steady: u32 = per_second[1..].iter().sum();
        assert!(steady.abs_diff(4 * rate) <= 1, "{per_second:?}");
    }

    #[test]
    fn burst_is_the_rate() {
        let mut rl = limiter(50, 0);
        let src = ip("192.0.2.1");
        let t = 42;
        for i in 0..50 {
            assert_eq!(rl.check(src, t), Verdict::Answer, "query {i}");
        }
        assert_eq!(rl.check(src, t), Verdict::Drop);
        // 20 ms at 50/s is one token.
        assert_eq!(rl.check(src, t + 19), Verdict::Drop);
        assert_eq!(rl.check(src, t + 20), Verdict::Answer);
        assert_eq!(rl.check(src, t + 20), Verdict::Drop);
    }

    #[test]
    fn slip_ratio() {
        for (slip, expected_slips) in [(0, 0), (1, 1000), (2, 500), (3, 333), (10, 100)] {
            let mut rl = limiter(10, slip);
            let src = ip("2001:db8::1");
            let mut tally = Tally::default();
            for _ in 0..10 {
                tally.add(rl.check(src, 7));
            }
            assert_eq!(tally.answer, 10);
            let mut excess = Tally::default();
            for _ in 0..1000 {
                excess.add(rl.check(src, 7));
            }
            assert_eq!(excess.answer, 0);
            assert_eq!(excess.slip, expected_slips, "slip {slip}");
            assert_eq!(excess.drop, 1000 - expected_slips, "slip {slip}");
        }
        // Slip 2 alternates, starting with a drop.
        let mut rl = limiter(1, 2);
        let src = ip("192.0.2.1");
        assert_eq!(rl.check(src, 0), Verdict::Answer);
        let seq: Vec<Verdict> = (0..4).map(|_| rl.check(src, 0)).collect();
        assert_eq!(
            seq,
            [Verdict::Drop, Verdict::Slip, Verdict::Drop, Verdict::Slip]
        );
    }

    #[test]
    fn sources_in_one_prefix_share_a_bucket() {
        let mut rl = limiter(10, 0);
        // Ten answers spread over a /24 drain it for every address in it.
        for i in 0..10 {
            let src = ip(&format!("10.1.2.{}", i * 25));
            assert_eq!(rl.check(src, 0), Verdict::Answer);
        }
        assert_eq!(rl.check(ip("10.1.2.255"), 0), Verdict::Drop);
        assert_eq!(rl.check(ip("::ffff:10.1.2.3"), 0), Verdict::Drop);
        let next = not_colliding(&rl, ip("10.1.2.0"), &["10.1.3.0", "10.1.4.0", "10.2.2.0"]);
        assert_eq!(rl.check(next, 0), Verdict::Answer);

        // IPv6: the /56 is the first 7 bytes.
        let mut rl = limiter(10, 0);
        let a = ip("2001:db8:0:ff::1");
        for _ in 0..10 {
            assert_eq!(rl.check(a, 0), Verdict::Answer);
        }
        assert_eq!(rl.check(ip("2001:db8:0:12:ffff::9"), 0), Verdict::Drop);
        let next = not_colliding(&rl, a, &["2001:db8:0:100::1", "2001:db8:0:200::1"]);
        assert_eq!(rl.check(next, 0), Verdict::Answer);
    }

    #[test]
    fn custom_prefix_lengths() {
        let mut rl = RateLimiter::new(&RrlSettings {
            ipv4_prefix: 32,
            slip: 0,
            ..RrlSettings::new(1)
        })
        .unwrap();
        let a = ip("10.0.0.1");
        assert_eq!(rl.check(a, 0), Verdict::Answer);
        assert_eq!(rl.check(a, 0), Verdict::Drop);
        let b = not_colliding(&rl, a, &["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        assert_eq!(rl.check(b, 0), Verdict::Answer);
    }

    #[test]
    fn buckets_refill_after_a_quiet_period() {
        let mut rl = limiter(20, 0);
        let src = ip("192.0.2.55");
        let mut t = 5_000u64;
        let answered = (0..1000).filter(|_| rl.check(src, t) == Verdict::Answer);
        assert_eq!(answered.count(), 20);
        // A quiet second: the whole burst is back, no more.
        t += 1000;
        let answered = (0..1000).filter(|_| rl.check(src, t) == Verdict::Answer);
        assert_eq!(answered.count(), 20);
        // A quiet hour is the same as a quiet second (no overflow).
        t += 3_600_000;
        let answered = (0..1000).filter(|_| rl.check(src, t) == Verdict::Answer);
        assert_eq!(answered.count(), 20);
        // Another prefix that lands on the same slot (in a small table,
        // found by trying) starts from the refilled bucket, not from the
        // previous user's debt.
        let mut rl = RateLimiter::new(&RrlSettings {
            table_slots: 256,
            slip: 0,
            ..RrlSettings::new(5)
        })
        .unwrap();
        let first = ip("198.51.100.1");
        // Among 65536 other /24s, about 256 land on `first`'s slot.
        let other = (0..=u16::MAX)
            .map(|n| ip(&format!("10.{}.{}.1", n >> 8, n & 0xff)))
            .find(|&c| rl.slot_of(c) == rl.slot_of(first))
            .expect("65536 prefixes over 256 slots: some collide");
        for _ in 0..100 {
            let _ = rl.check(first, 0);
        }
        assert_eq!(rl.check(other, 0), Verdict::Drop, "collisions share");
        assert_eq!(rl.check(other, 1000), Verdict::Answer);
    }

    #[test]
    fn clock_wrap_of_the_low_bits_is_harmless() {
        let mut rl = limiter(10, 0);
        let src = ip("192.0.2.1");
        let before = u64::from(u32::MAX) - 5;
        for _ in 0..10 {
            assert_eq!(rl.check(src, before), Verdict::Answer);
        }
        assert_eq!(rl.check(src, before), Verdict::Drop);
        // 1000 ms later, across the 2^32 boundary.
        let after = before + 1000;
        let answered = (0..100).filter(|_| rl.check(src, after) == Verdict::Answer);
        assert_eq!(answered.count(), 10);
    }

    #[test]
    fn per_worker_divides_the_rate() {
        let s = RrlSettings::new(100);
        assert_eq!(s.per_worker(4).rate, 25);
        assert_eq!(s.per_worker(3).rate, 34);
        assert_eq!(s.per_worker(0).rate, 100);
        assert_eq!(RrlSettings::new(2).per_worker(16).rate, 1);
        assert_eq!(s.per_worker(4).slip, s.slip);
    }

    #[test]
    fn settings_are_validated() {
        let ok = RrlSettings::new(10);
        assert_eq!(ok.validate(), Ok(()));
        let bad = |s: RrlSettings| RateLimiter::new(&s).unwrap_err().to_string();
        assert!(bad(RrlSettings::new(0)).contains("not 0"));
        assert!(bad(RrlSettings::new(MAX_RATE + 1)).contains("1 to 1000000"));
        assert!(bad(RrlSettings { slip: 101, ..ok }).contains("slip"));
        assert!(bad(RrlSettings {
            ipv4_prefix: 33,
            ..ok
        })
        .contains("IPv4"));
        assert!(bad(RrlSettings {
            ipv6_prefix: 8,
            ..ok
        })
        .contains("IPv6"));
        assert!(bad(RrlSettings {
            table_slots: 1000,
            ..ok
        })
        .contains("power of two"));
        assert!(RateLimiter::new(&RrlSettings::new(MAX_RATE)).is_ok());
    }

    #[test]
    fn coarse_clock_moves_forward() {
        let a = now_ms();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = now_ms();
        assert!(b >= a + 15, "{a} -> {b}");
    }
}
