//! The toy layer of `OPS.md` §4 (hand-checked upstream): `V' = 50`, `N = 3`, `K = 2`, primes
//! `[11, 13, 17, 19]`, `π = 2`.

use super::{derive_primes, EngramLayer};
use crate::Result;

/// Compressed vocabulary size.
pub const VOCAB_SIZE: u64 = 50;
/// Base for the prime search.
pub const VOCAB_N: u64 = 11;
/// Max order.
pub const MAX_ORDER: usize = 3;
/// Heads per order.
pub const HEADS: usize = 2;
/// Pad id.
pub const PAD_ID: u64 = 2;
/// Multipliers (seed 0, layer 1 of the demo generator with `V' = 50`).
pub const MULTIPLIERS: [u64; 3] = [151872553228292665, 9591860036772465, 71266316989379275];

/// The toy layer (primes derived, offsets `[0, 11, 24, 41]`).
pub fn layer() -> Result<EngramLayer> {
    let mut p = derive_primes(VOCAB_N, MAX_ORDER, HEADS, 1)?;
    EngramLayer::new(
        MAX_ORDER,
        HEADS,
        MULTIPLIERS.to_vec(),
        p.swap_remove(0),
        VOCAB_SIZE,
        PAD_ID,
    )
}
