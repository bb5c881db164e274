//! The counters of one UDP worker or of the TCP listener: one writer each,
//! so an increment is a relaxed load and store (see the module
//! documentation of [`crate::metrics`]).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{DropReason, QueryType, Rcode};

/// Adds `n` to a counter that only the calling thread writes.
#[inline(always)]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// The counters of one worker (or of TCP). Single writer; see the module
/// documentation. Aligned to 128 bytes: no false sharing with its
/// neighbours, nor with the `Arc`'s reference counts.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct QueryMetrics {
    queries: [AtomicU64; QueryType::COUNT],
    responses: [AtomicU64; Rcode::COUNT],
    dropped: [AtomicU64; DropReason::COUNT],
    truncated: AtomicU64,
    forwarded: AtomicU64,
    slipped: AtomicU64,
}

impl QueryMetrics {
    /// All counters at zero.
    pub fn new() -> QueryMetrics {
        QueryMetrics::default()
    }

    /// One query received, of this type. Call it for every packet that
    /// gets past the silent drops (too short, QR set), with
    /// [`QueryType::Other`] when the question cannot be read.
    #[inline]
    pub fn query(&self, qtype: QueryType) {
        bump(&self.queries[qtype as usize], 1);
    }

    /// `n` queries of this type (for batch accounting).
    #[inline]
    pub fn queries(&self, qtype: QueryType, n: u64) {
        bump(&self.queries[qtype as usize], n);
    }

    /// One response sent with this RCODE (truncated ones included).
    #[inline]
    pub fn response(&self, rcode: Rcode) {
        bump(&self.responses[rcode as usize], 1);
    }

    /// One packet dropped without a response.
    #[inline]
    pub fn dropped(&self, reason: DropReason) {
        bump(&self.dropped[reason as usize], 1);
    }

    /// One response sent truncated (TC=1) because it did not fit. Count
    /// its RCODE with [`QueryMetrics::response`] as well.
    #[inline]
    pub fn truncated(&self) {
        bump(&self.truncated, 1);
    }

    /// One query handed to the forwarder.
    #[inline]
    pub fn forwarded(&self) {
        bump(&self.forwarded, 1);
    }

    /// One response over the rate limit sent truncated (RRL slip). Not
    /// counted in [`QueryMetrics::truncated`]; count its RCODE with
    /// [`QueryMetrics::response`] as well.
    #[inline]
    pub fn slipped(&self) {
        bump(&self.slipped, 1);
    }

    /// The counters now, read with relaxed loads (any thread).
    pub fn counts(&self) -> QueryCounts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        QueryCounts {
            queries: self.queries.each_ref().map(load),
            responses: self.responses.each_ref().map(load),
            dropped: self.dropped.each_ref().map(load),
            truncated: load(&self.truncated),
            forwarded: load(&self.forwarded),
            slipped: load(&self.slipped),
        }
    }
}

/// A plain copy of [`QueryMetrics`]' counters; `+=` sums workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryCounts {
    pub queries: [u64; QueryType::COUNT],
    pub responses: [u64; Rcode::COUNT],
    pub dropped: [u64; DropReason::COUNT],
    pub truncated: u64,
    pub forwarded: u64,
    pub slipped: u64,
}

impl QueryCounts {
    /// Queries of this type.
    pub fn query(&self, qtype: QueryType) -> u64 {
        self.queries[qtype as usize]
    }

    /// Responses with this RCODE.
    pub fn response(&self, rcode: Rcode) -> u64 {
        self.responses[rcode as usize]
    }

    /// Drops for this reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize]
    }

    /// Queries of every type.
    pub fn total_queries(&self) -> u64 {
        self.queries.iter().fold(0, |a, &b| a.wrapping_add(b))
    }
}

impl std::ops::AddAssign for QueryCounts {
    fn add_assign(&mut self, other: QueryCounts) {
        fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x = x.wrapping_add(*y);
            }
        }
        add(&mut self.queries, &other.queries);
        add(&mut self.responses, &other.responses);
        add(&mut self.dropped, &other.dropped);
        self.truncated = self.truncated.wrapping_add(other.truncated);
        self.forwarded = self.forwarded.wrapping_add(other.forwarded);
        self.slipped = self.slipped.wrapping_add(other.slipped);
    }
}
