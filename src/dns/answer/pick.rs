//! Which nodes one answer carries, chosen without allocating. The fast and
//! general paths both choose here, so they draw the same numbers from the
//! random generator and give the same answers.

use domain::base::message_builder::PushError;
use rand_core::Rng as _;

use super::Rng;
use crate::dns::zone::AnswerMode;

/// Emits node addresses for one answer according to `mode`, without allocating.
pub(super) fn choose<T: Copy>(
    nodes: &[T],
    mode: AnswerMode,
    rng: &mut Rng,
    mut emit: impl FnMut(T) -> Result<(), PushError>,
) -> Result<(), PushError> {
    let mut scratch = None;
    pick(rng, nodes.len(), mode, &mut scratch).try_for_each(nodes.len(), |i| emit(nodes[i]))
}

/// Room for the positions of [`AnswerMode::Random`], set up only when it asks
/// for more than one node: zeroing its 512 bytes was a sixth of the time of a
/// one-node answer on the fast path.
type Scratch = Option<[usize; AnswerMode::MAX_RANDOM as usize]>;

/// The nodes one answer carries, as positions in a list of `len` nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pick<'s> {
    /// This position alone.
    One(usize),
    /// These positions, in this order.
    Listed(&'s [usize]),
    /// Every position, from this offset on, wrapping around.
    Rotated(usize),
}

impl Pick<'_> {
    /// How many records the answer carries.
    pub(super) fn count(self, len: usize) -> usize {
        match self {
            Pick::One(_) => 1,
            Pick::Listed(positions) => positions.len(),
            Pick::Rotated(_) => len,
        }
    }

    /// Calls `emit` with each position in answer order, up to the first error.
    fn try_for_each<E>(
        self,
        len: usize,
        mut emit: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Pick::One(i) => emit(i),
            Pick::Listed(positions) => positions.iter().try_for_each(|&i| emit(i)),
            Pick::Rotated(offset) => (0..len).try_for_each(|i| emit((offset + i) % len)),
        }
    }
}

/// Chooses the nodes of one answer among `len` (> 0) according to `mode`.
/// Both paths call this, so they draw the same numbers from `rng`.
pub(super) fn pick<'s>(
    rng: &mut Rng,
    len: usize,
    mode: AnswerMode,
    scratch: &'s mut Scratch,
) -> Pick<'s> {
    match mode {
        AnswerMode::Random(1) => Pick::One(random_below(rng, len)),
        AnswerMode::Random(n) if usize::from(n) < len => {
            let positions = &mut scratch.insert([0; AnswerMode::MAX_RANDOM as usize])[..];
            Pick::Listed(pick_distinct(rng, len, &mut positions[..usize::from(n)]))
        }
        AnswerMode::Random(_) | AnswerMode::All => Pick::Rotated(random_below(rng, len)),
    }
}

/// Fills `out` with distinct indices below `len` (`out.len() < len`), in random
/// order: Floyd's sampling, then a Fisher-Yates shuffle of the sample.
fn pick_distinct<'p>(rng: &mut Rng, len: usize, out: &'p mut [usize]) -> &'p [usize] {
    let n = out.len();
    for (filled, j) in (len - n..len).enumerate() {
        let t = random_below(rng, j + 1);
        out[filled] = if out[..filled].contains(&t) { j } else { t };
    }
    for i in (1..n).rev() {
        out.swap(i, random_below(rng, i + 1));
    }
    out
}

/// A uniform index below `len` (`len > 0`), by Lemire's multiply-shift; the
/// bias, below len / 2^64, is far beneath anything measurable.
fn random_below(rng: &mut Rng, len: usize) -> usize {
    ((u128::from(rng.next_u64()) * len as u128) >> 64) as usize
}
