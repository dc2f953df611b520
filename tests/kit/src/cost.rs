//! FLOPs and bytes of one run of an op: the one cost model of the workspace, used by
//! [`Case::flops`](crate::Case::flops) / [`Case::bytes`](crate::Case::bytes) and by `moehal bench`
//! (`BenchShape::flops` / `bytes`) for its GFLOP/s and GB/s columns.
//!
//! FLOPs count a multiply-add as 2; only the GEMMs have FLOPs worth reporting (the other ops are
//! bound by memory). Bytes are those that define the op's bandwidth (what a roofline divides by),
//! in bytes: the weights of the experts a GEMM touches, the logits a router reads, the rows the
//! glue ops move, the ids read and rows written by the hash, the bytes gathered.
//!
//! Every product is taken in `f64`, so sizes from user input (a token count of `u64::MAX`) give
//! a large figure, never an integer overflow.

/// FLOPs of a grouped GEMM of `m` routed rows: `2 · M · N · K`.
pub fn gemm_flops(m: usize, n: usize, k: usize) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64
}

/// Weight bytes a grouped GEMM reads: `experts` (those touched; at most `min(E, M)`) of
/// `[N, K]` elements of `es` bytes.
pub fn gemm_bytes(experts: usize, n: usize, k: usize, es: usize) -> f64 {
    experts as f64 * n as f64 * k as f64 * es as f64
}

/// Logit bytes `router_topk` reads: `[T, E]` of `es` bytes.
pub fn router_bytes(t: usize, e: usize, es: usize) -> f64 {
    t as f64 * e as f64 * es as f64
}

/// Bytes `moe_permute` moves: `T·k` rows of `H` elements read and written.
pub fn permute_bytes(t: usize, k: usize, h: usize, es: usize) -> f64 {
    2.0 * t as f64 * k as f64 * h as f64 * es as f64
}

/// Bytes `swiglu` moves: `[M, 2I]` read, `[M, I]` written.
pub fn swiglu_bytes(m: usize, i: usize, es: usize) -> f64 {
    3.0 * m as f64 * i as f64 * es as f64
}

/// Bytes `moe_combine` moves: `[T·k, H]` read, `[T, H]` written.
pub fn combine_bytes(t: usize, k: usize, h: usize, es: usize) -> f64 {
    t as f64 * (k as f64 + 1.0) * h as f64 * es as f64
}

/// Bytes `engram_hash` moves: `T` i64 ids read, `[T, C]` i64 rows written.
pub fn hash_bytes(t: usize, columns: usize) -> f64 {
    t as f64 * 8.0 * (1.0 + columns as f64)
}

/// Bytes `gather_rows` / `engram_lookup` gather: `T · C` rows of `D` elements of `es` bytes.
pub fn gather_bytes(t: usize, c: usize, d: usize, es: usize) -> f64 {
    t as f64 * c as f64 * d as f64 * es as f64
}
