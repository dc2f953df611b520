//! DeepSeek-V4.1-Flash Engram configuration (fact sheet §1.3, §1.6; NeMo AutoModel
//! `deepseek_v41/config.py`, vLLM `deepseek_v41/common/engram.py`).

use super::{derive_primes, EngramLayer};
use crate::{Error, Result};

/// Decoder layers (0-based, of 40) that carry Engram.
pub const LAYERS: [usize; 2] = [1, 14];
/// Max order `N` (orders 2, 3, 4).
pub const MAX_ORDER: usize = 4;
/// Heads `K` per order.
pub const HEADS: usize = 8;
/// Embedding row width (elements; FP8-e4m3 plus one UE8M0 scale byte per 32 → 264 bytes/row).
pub const ROW_DIM: usize = 256;
/// Base for the prime search (`engram_vocab_size` per (order, head)).
pub const VOCAB_N: u64 = 16_000_000;
/// Compressed vocabulary size `V'` of the DeepSeek tokenizer (129,280 raw ids).
pub const VOCAB_SIZE: u64 = 99_092;
/// Compressed pad id `π` (raw pad id 2 maps to canonical id 2).
pub const PAD_ID: u64 = 2;
/// Multipliers per Engram layer (`2 * r + 1`, `r ~ numpy default_rng(10007 * layer)
/// .integers(0, B)`, `B = floor(floor((2^63 - 1) / V') / 2)`), hard-coded from the fact sheet.
pub const MULTIPLIERS: [[u64; 4]; 2] = [
    [76632096046245, 4839876093313, 35959672319349, 73987337458391],
    [67716810739261, 51510806800915, 30921347202721, 82619226485591],
];
/// Table rows per Engram layer (`engram_num_embeddings`).
pub const ROWS: [u64; 2] = [384_006_168, 384_016_682];

/// The validated layer `index` (0 → decoder layer 1, 1 → decoder layer 14), primes derived by
/// [`derive_primes`]. Errors: `index > 1`.
pub fn layer(index: usize) -> Result<EngramLayer> {
    let m = MULTIPLIERS.get(index).ok_or_else(|| {
        Error::invalid(
            "engram_layer_v41_flash",
            "index",
            format!("V4.1-Flash has 2 Engram layers, got index {index}"),
        )
    })?;
    let mut primes = derive_primes(VOCAB_N, MAX_ORDER, HEADS, LAYERS.len())?;
    let p = primes.swap_remove(index);
    EngramLayer::new(MAX_ORDER, HEADS, m.to_vec(), p, VOCAB_SIZE, PAD_ID)
}
