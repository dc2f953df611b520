//! Engram configuration and host-side hashing helpers (`OPS.md` §4, `engram_hash`), one file per
//! part: `primes`, `layer`, `windows`, model data (`v41_flash`, `toy`).
//!
//! DeepSeek's Engram ("conditional memory", arXiv 2601.07372) looks up, for every token, one
//! embedding row per (order `n`, head `j`) in a large table. The row index depends only on the
//! token ids, so it is computed on the host ahead of time. This module holds:
//!
//! * [`EngramLayer`]: the validated per-layer configuration (max order `N`, heads `K`, odd
//!   multipliers, distinct primes, column offsets, compressed vocabulary size `V'`, pad id `π`) and
//!   the scalar hash of one window ([`EngramLayer::hash_window`]) and of a whole sequence
//!   ([`EngramLayer::hash_sequence`]). Every host implementation (reference, CPU SIMD, Ascend
//!   host path) reuses these; device kernels mirror them.
//! * [`window`] / [`windows`]: the N-gram window rule with segments, the alive mask, history and
//!   sticky blocking, in random-access (`O(N)` per token) and streaming form.
//! * [`derive_primes`]: the published prime-layout rule.
//! * [`v41_flash`] and [`toy`]: model data (DeepSeek-V4.1-Flash and the hand-checked toy layer).
//!
//! The tokenizer compression to canonical ids (normalizing token texts, the compression table) is
//! no op's business: it lives with the Engram text pipeline (`moehal::pipeline::engram::compress`).
//!
//! Sources: the DeepSeek Engram demo
//! (`deepseek-ai/Engram`, `engram_demo_v1.py`) for the hash and the compression, and the
//! DeepSeek-V4.1 ports (vLLM `vllm/models/deepseek_v41/common/engram.py`, NeMo AutoModel
//! `components/models/deepseek_v41/engram.py`) for sticky blocking, segments and the V4.1
//! configuration. Nothing here is copied code; the rules are restated from `OPS.md` §4.

use crate::{Error, Result};

/// Op name used in errors about the hash inputs (a layer's configuration errors say `engram_layer`,
/// [`derive_primes`]'s `engram_derive_primes`).
pub const OP: &str = "engram_hash";

/// Upper bound on the primes one [`derive_primes`] call derives (real configs use dozens). Beyond it
/// the call is [`Error::Unsupported`]: moehal's limit, not a rule of OPS.md.
pub const MAX_DERIVED_PRIMES: usize = 1 << 20;

mod layer;
mod primes;
pub mod toy;
pub mod v41_flash;
mod windows;

pub use layer::EngramLayer;
pub use primes::{derive_primes, is_prime};
pub use windows::{window, windows, WindowStream};
