//! `engram_hash`, `gather_rows` and `engram_lookup` (OPS.md §4, §5) on raw slices.
//!
//! The hash takes each token's window by core's rule (streamed:
//! [`moehal_core::engram::WindowStream`]; without positions or an alive mask a token's window is
//! read straight from `ids`), multiplies and XORs in 64 bits (scalar: N multiplies per token, shared
//! by the K heads of each order), and reduces modulo each prime: with the table's vector kernel
//! ([`Kernels::engram_rows`], `simd::hash`: an exact f64-FMA remainder, 4 columns per AVX2 vector, 2
//! per NEON vector) where the table has one and the layer is in its range ([`HashPlan::new`]: N <= 5,
//! primes < 2^51), else with a precomputed reciprocal ([`FastMod`]: one 64x64→128 multiply-high, one
//! multiply, one conditional subtract; the portable path). Tokens with a plain window (no positions,
//! no alive mask, `t >= N - 1`) of a layer the AVX2 table's fused kernel takes (K % 4 == 0, primes
//! in [2^21, 2^31): every published layer) are hashed and reduced in one call,
//! [`Kernels::engram_plain_rows`]: the multiply-XOR 4 tokens per vector, a cheaper integer
//! correction. All are exact (conformance compares every case bitwise).
//! Gathers copy rows with software prefetch of each row's first and last cache line a few rows
//! ahead (`prfm` on aarch64; the rule and its figures at `PF`); fp8_e4m3_ue8m0
//! rows are dequantized 32 values per scale by [`Kernels::decode_e4m3`] (NEON on aarch64, core's
//! decoder as a table elsewhere), bitwise the reference's values; plain-table gathers are row
//! copies (`memcpy`, vectorized by libc).
//! Tables are plain slices: a memory-mapped file works as is.

use crate::elem::f32_to_bf16_bits;
use crate::pool::Pool;
use crate::simd::hash::{HashPlan, HASH_ORDERS};
use crate::simd::{prefetch, Kernels};
use moehal_core::engram::{EngramLayer, WindowStream};
use moehal_core::ops::engram_hash::check_canonical_ids;
use moehal_core::ops::gather_rows::{check_rows, ue8m0_to_f32};
use moehal_core::{Error, Result};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Tokens per parallel task.
const CHUNK: usize = 64;
/// Tokens below which `engram_hash` runs on the calling thread (~80 ns per token: below this,
/// waking the pool costs more than it saves; measured: 4096 tokens ran slower on 2 threads than 1).
/// With the vector reduction a token costs ≈ 22 ns (Zen 3 VM, RESULTS.md), so a split would pay
/// off only later than before; the threshold was kept, not re-measured.
pub const HASH_SERIAL_BELOW: usize = 16 * 1024;
/// Rows gathered (`T * C`) below which `gather_rows` runs on the calling thread (issue 16 item 9:
/// `moehal bench` on 2 cores had the pooled gather at 0.2x the serial reference at 2048 rows and
/// at best even at 8192; a gather is a memory copy, which more threads speed up only on a large
/// machine with bandwidth to spare).
pub const GATHER_SERIAL_BELOW: usize = 16 * 1024;
/// Tokens below which `engram_lookup` runs on the calling thread (issue 16 item 9: `moehal bench`
/// had the pooled lookup at 0.02x the reference at 256 tokens of 8 columns, 0.7x at 1024; the
/// same 16K gathered rows as [`GATHER_SERIAL_BELOW`] at 8 columns).
pub const LOOKUP_SERIAL_BELOW: usize = 2048;
/// Tokens per parallel `engram_hash` task.
const HASH_CHUNK: usize = 1024;
/// Rows to prefetch ahead of the copy; of each row, the first and the last cache line only
/// ([`prefetch_row`]; the copy's own loads and the hardware prefetchers bring the lines between).
///
/// Decided by measurement (issue 16 item 9; benches/RESULTS.md "Gather prefetch"): gathers of
/// 16..32768 rows of 512 B (bf16 D = 256) and 1 KiB (f32) from a 2 GiB table, cold (each call
/// new random rows from DRAM) and warm (one row list repeated), thread CPU time, on the shared
/// 2-core Zen VM under load 12-14. Prefetching every line of a row (the rule before) cost
/// 0.7-0.9x of no prefetch on warm rows, which is what `moehal bench` times, and gained no
/// more cold than the cheap variants; first + last line at 8 rows ahead was within the noise of
/// no prefetch warm (0.84-1.36x) and kept the cold gain (1.1-1.5x at 16-1024 rows).
const PF: usize = 8;

/// `x mod p` for a fixed `p >= 1` by a precomputed reciprocal (exact for every u64 x < 2^63).
#[derive(Clone, Copy, Debug)]
pub struct FastMod {
    p: u64,
    m: u64,
}

impl FastMod {
    /// Reciprocal of `p` (`p >= 1`).
    pub fn new(p: u64) -> Self {
        FastMod {
            p: p.max(1),
            m: u64::MAX / p.max(1),
        }
    }
    /// `x mod p`.
    #[inline(always)]
    pub fn rem(&self, x: u64) -> u64 {
        let q = ((x as u128 * self.m as u128) >> 64) as u64;
        let r = x.wrapping_sub(q.wrapping_mul(self.p));
        // q is at most 1 below floor(x / p) for x < 2^63 (see the module docs), so r < 2p and one
        // conditional subtraction is exact. Branch-free: the condition is data-random, so a branch
        // would mispredict half the time.
        r - (self.p & 0u64.wrapping_sub((r >= self.p) as u64))
    }
}

/// Tokens from which a call precomputes the primes' reciprocals ([`FastMod`]): each costs a
/// 64-bit division, one per column, which only a few tokens' worth of remainders repay (issue 16
/// item 9: at 1 token the reciprocals were most of the call). Below it, `%` by the prime.
const FASTMOD_MIN_TOKENS: usize = 8;

/// Tokens hashed per call of the vector reduction ([`Kernels::engram_rows`]): their per-order
/// hashes wait in a stack buffer of `4 * HASH_BLOCK` values (8 KiB).
const HASH_BLOCK: usize = 256;

/// What the hash needs from a layer, precomputed once per call.
struct Hasher<'l> {
    layer: &'l EngramLayer,
    kern: &'l Kernels,
    /// The vector reduction's constants, where the table has one and the layer is in its range
    /// (and the call has at least [`FASTMOD_MIN_TOKENS`] tokens).
    plan: Option<HashPlan>,
    /// The primes' reciprocals for the scalar path, or empty (fewer than [`FASTMOD_MIN_TOKENS`]
    /// tokens, or the vector path is taken).
    fm: Vec<FastMod>,
}

impl<'l> Hasher<'l> {
    fn new(kern: &'l Kernels, layer: &'l EngramLayer, tokens: usize) -> Self {
        let plan = if tokens >= FASTMOD_MIN_TOKENS && kern.has_engram_rows() {
            HashPlan::new(layer.heads(), layer.primes(), layer.offsets())
        } else {
            None
        };
        let fm = if tokens >= FASTMOD_MIN_TOKENS && plan.is_none() {
            layer.primes().iter().map(|&p| FastMod::new(p)).collect()
        } else {
            Vec::new()
        };
        Hasher { layer, kern, plan, fm }
    }

    /// Scalar path: one token's rows from its window.
    #[inline]
    fn rows(&self, win: &[u64], out: &mut [i64]) {
        let kh = self.layer.heads();
        let m = self.layer.multipliers();
        let off = self.layer.offsets();
        let primes = self.layer.primes();
        let mut h = win[0].wrapping_mul(m[0]);
        for n in 1..win.len() {
            h ^= win[n].wrapping_mul(m[n]);
            let base = (n - 1) * kh;
            for j in 0..kh {
                let c = base + j;
                let r = match self.fm.get(c) {
                    Some(f) => f.rem(h),
                    None => h % primes[c],
                };
                out[c] = (r + off[c]) as i64;
            }
        }
    }
}

/// Validate the value-dependent hash inputs (before anything is written).
fn check_inputs(
    layer: &EngramLayer,
    op: &'static str,
    ids: &[i64],
    positions: Option<&[i64]>,
    alive: Option<&[u8]>,
    history: &[i64],
) -> Result<()> {
    check_canonical_ids(op, "ids", ids, layer.vocab_size())?;
    check_canonical_ids(op, "history", history, layer.vocab_size())?;
    if history.len() > layer.max_order() - 1 {
        return Err(Error::invalid(
            op,
            "history",
            format!("{} ids, at most N-1 = {}", history.len(), layer.max_order() - 1),
        ));
    }
    if positions.is_some_and(|p| p.len() != ids.len()) || alive.is_some_and(|a| a.len() != ids.len()) {
        return Err(Error::invalid(
            op,
            "positions",
            "positions / alive must have T elements",
        ));
    }
    Ok(())
}

/// Order hashes of the tokens `from..` (one `[HASH_ORDERS]` row of `hb` each) whose window is
/// plain: `w_k = ids[t - k]` (no positions, no alive mask, `t >= N - 1`); `N` as a constant so the
/// loop unrolls without bounds checks.
#[inline]
fn plain_hashes<const N: usize>(ids: &[i64], m: &[u64], from: usize, hb: &mut [u64]) {
    let m: &[u64; N] = m.try_into().expect("N multipliers");
    for (i, hrow) in hb.chunks_exact_mut(HASH_ORDERS).enumerate() {
        let t = from + i;
        let w: &[i64; N] = ids[t + 1 - N..=t].try_into().expect("N ids");
        let mut h = (w[N - 1] as u64).wrapping_mul(m[0]);
        for k in 1..N {
            h ^= (w[N - 1 - k] as u64).wrapping_mul(m[k]);
            hrow[k - 1] = h;
        }
    }
}

/// Hash tokens `t0..t0 + out.len()/C` into `out`.
fn hash_range(
    hs: &Hasher<'_>,
    ids: &[i64],
    positions: Option<&[i64]>,
    alive: Option<&[u8]>,
    history: &[i64],
    t0: usize,
    out: &mut [i64],
) -> Result<()> {
    let c = hs.layer.columns();
    let n = hs.layer.max_order();
    let mut win = [0u64; 16];
    let mut heap;
    let win: &mut [u64] = if n <= win.len() {
        &mut win[..n]
    } else {
        heap = vec![0u64; n];
        &mut heap
    };
    // Core's streaming window rule, started at this chunk's first token: O(N) per token, no
    // look-back walk and no per-token argument checks (check_inputs validated them once).
    let mut stream = WindowStream::at(n, ids, positions, alive, history, hs.layer.pad_id(), t0);
    let Some(plan) = &hs.plan else {
        for (i, row) in out.chunks_exact_mut(c).enumerate() {
            stream.next_window(ids, positions, alive, history, t0 + i, win);
            hs.rows(win, row);
        }
        return Ok(());
    };
    // Vector path (N - 1 <= HASH_ORDERS, see HashPlan::new).
    let m = hs.layer.multipliers();
    let plain = positions.is_none() && alive.is_none();
    // Without positions or an alive mask, every token from N - 1 on has the plain window ids[t],
    // ids[t-1], ..: where the table has the fused kernel, one call hashes them (4 tokens per
    // vector) and reduces them all, leaving only the sequence's first N - 1 tokens to the blocks
    // below (a declined call leaves them everything).
    let lead = (n - 1).clamp(t0, t0 + out.len() / c) - t0;
    let fused = plain
        && hs.kern.has_engram_plain(plan, n)
        && (lead * c == out.len()
            || hs
                .kern
                .engram_plain_rows(plan, m, hs.layer.vocab_size(), ids, t0 + lead, &mut out[lead * c..]));
    let out = if fused { &mut out[..lead * c] } else { out };
    // Per block: the scalar multiply-XOR gives each token's N - 1 order hashes, then one kernel
    // call reduces all C columns.
    let mut hbuf = [0u64; HASH_ORDERS * HASH_BLOCK];
    for (b, block) in out.chunks_mut(HASH_BLOCK * c).enumerate() {
        let tb = block.len() / c;
        let tb0 = t0 + b * HASH_BLOCK;
        // Without positions or an alive mask, a token with N - 1 ids before it has the plain
        // window ids[t], ids[t-1], ..: no stream state is needed (the stream, used only for the
        // first N - 1 tokens of the sequence, then sees them in order).
        let first_plain = if plain { (n - 1).clamp(tb0, tb0 + tb) - tb0 } else { tb };
        for (i, hrow) in hbuf.chunks_exact_mut(HASH_ORDERS).take(first_plain).enumerate() {
            stream.next_window(ids, positions, alive, history, tb0 + i, win);
            let mut h = win[0].wrapping_mul(m[0]);
            for (k, slot) in hrow.iter_mut().enumerate().take(n - 1) {
                h ^= win[k + 1].wrapping_mul(m[k + 1]);
                *slot = h;
            }
        }
        if first_plain < tb {
            let hb = &mut hbuf[first_plain * HASH_ORDERS..tb * HASH_ORDERS];
            let from = tb0 + first_plain;
            // N <= HASH_ORDERS + 1 (HashPlan::new), so one of these.
            match n {
                2 => plain_hashes::<2>(ids, m, from, hb),
                3 => plain_hashes::<3>(ids, m, from, hb),
                4 => plain_hashes::<4>(ids, m, from, hb),
                _ => plain_hashes::<5>(ids, m, from, hb),
            }
        }
        let done = hs.kern.engram_rows(plan, &hbuf[..tb * HASH_ORDERS], block);
        debug_assert!(done, "the plan exists only for tables with a vector kernel");
    }
    Ok(())
}

/// `engram_hash`: `rows` is `[T, C]`, with the reduction of `kern` (its vector kernel where it has
/// one and the layer is in its range, [`HashPlan::new`]; else the scalar reciprocal).
///
/// Errors: `InvalidArgument` for an id outside `[0, V')`, a bad history or mismatched lengths.
pub fn engram_hash(
    kern: &Kernels,
    pool: &Pool,
    layer: &EngramLayer,
    ids: &[i64],
    positions: Option<&[i64]>,
    alive: Option<&[u8]>,
    history: &[i64],
    rows: &mut [i64],
) -> Result<()> {
    let c = layer.columns();
    if rows.len() != ids.len() * c {
        return Err(Error::invalid("engram_hash", "rows", "expected T*C elements"));
    }
    check_inputs(layer, "engram_hash", ids, positions, alive, history)?;
    let hs = Hasher::new(kern, layer, ids.len());
    if !pool.worth_parallel(ids.len(), HASH_SERIAL_BELOW) {
        return hash_range(&hs, ids, positions, alive, history, 0, rows);
    }
    pool.install(|| {
        rows.par_chunks_mut(HASH_CHUNK * c)
            .enumerate()
            .try_for_each(|(ci, oc)| hash_range(&hs, ids, positions, alive, history, ci * HASH_CHUNK, oc))
    })
}

/// A gather table on raw bytes: `[R, W]` elements of the stored format.
#[derive(Clone, Copy, Debug)]
pub enum Table<'a> {
    /// Rows of `row_bytes` bytes copied as they are (f32, bf16, f16 tables; output of the same dtype).
    Plain {
        /// All table bytes.
        data: &'a [u8],
        /// Bytes per row (`D * element size`).
        row_bytes: usize,
        /// Rows R (kept apart: with D = 0 the bytes do not tell).
        rows: usize,
    },
    /// fp8_e4m3_ue8m0: per row `D` e4m3 bytes then `D/32` ue8m0 scale bytes.
    Fp8 {
        /// All table bytes.
        data: &'a [u8],
        /// Row width `D` (multiple of 32).
        d: usize,
        /// Rows R.
        rows: usize,
    },
}

impl Table<'_> {
    fn rows(&self) -> usize {
        match *self {
            Table::Plain { rows, .. } | Table::Fp8 { rows, .. } => rows,
        }
    }
}

/// Output of a gather: plain tables copy bytes; fp8 tables dequantize to f32 or bf16.
pub enum GatherOut<'a> {
    /// Bytes (plain tables).
    Bytes(&'a mut [u8]),
    /// f32 elements (fp8 tables).
    F32(&'a mut [f32]),
    /// bf16 elements (fp8 tables).
    Bf16(&'a mut [half::bf16]),
}

/// The UE8M0 scale values and the bf16 NaN of the fp8 gather; the e4m3 codes themselves are
/// decoded by [`Kernels::decode_e4m3`] (NEON on aarch64, a table of core's decoder elsewhere), which
/// gives `fl32(e4m3 × scale)` with NaN as `f32::NAN`, bitwise core's `fp8_e4m3_to_f32(b) ×
/// ue8m0_to_f32(s)` (conformance `gather_rows_all_formats` checks every code and the special scales).
struct Fp8Lut {
    s: [f32; 256],
    nan_bf16: u16,
}

fn lut() -> &'static Fp8Lut {
    static L: OnceLock<Fp8Lut> = OnceLock::new();
    L.get_or_init(|| Fp8Lut {
        s: std::array::from_fn(|b| ue8m0_to_f32(b as u8)),
        nan_bf16: half::bf16::from_f64(f32::NAN as f64).to_bits(),
    })
}

/// Prefetch the first and the last cache line of `row` (not every line: see [`PF`]).
#[inline(always)]
fn prefetch_row(table: &Table<'_>, row: usize) {
    let (data, bytes) = match *table {
        Table::Plain { data, row_bytes, .. } => (data, row_bytes),
        Table::Fp8 { data, d, .. } => (data, d + d / 32),
    };
    if bytes == 0 {
        return;
    }
    let start = row * bytes;
    // The rows were checked against R ([`check_rows`]), so both bytes exist; `get` keeps this
    // free of a panic path all the same.
    if let Some(b) = data.get(start) {
        prefetch(std::slice::from_ref(b));
    }
    if bytes > 64 {
        if let Some(b) = data.get(start + bytes - 1) {
            prefetch(std::slice::from_ref(b));
        }
    }
}

/// Gather rows for tokens `[t0, t0 + n)` (`rows` is the chunk's `[n, C]`) into the chunk's output.
fn gather_chunk(table: &Table<'_>, rows: &[i64], out: GatherOut<'_>) {
    // Prefetch gives a row lead time only when more than PF rows follow; a decode step's few rows
    // are copied at once, where prefetches only add instructions before the copy (issue 16 item 9).
    if rows.len() > PF {
        for &r in rows.iter().take(PF) {
            prefetch_row(table, r as usize);
        }
    }
    match (table, out) {
        (Table::Plain { data, row_bytes, .. }, GatherOut::Bytes(o)) => {
            let rb = *row_bytes;
            for (i, &r) in rows.iter().enumerate() {
                if let Some(&nr) = rows.get(i + PF) {
                    prefetch_row(table, nr as usize);
                }
                let r = r as usize;
                o[i * rb..(i + 1) * rb].copy_from_slice(&data[r * rb..(r + 1) * rb]);
            }
        }
        (Table::Fp8 { data, d, .. }, out) => {
            let (d, w) = (*d, *d + *d / 32);
            let l = lut();
            let kern = Kernels::best();
            let mut tmp = [0f32; 32];
            let mut out = out;
            for (i, &r) in rows.iter().enumerate() {
                if let Some(&nr) = rows.get(i + PF) {
                    prefetch_row(table, nr as usize);
                }
                let row = &data[r as usize * w..(r as usize + 1) * w];
                let (q, sc) = row.split_at(d);
                // One scale per 32 values (OPS.md §5).
                match &mut out {
                    GatherOut::F32(o) => {
                        for (b, dst) in o[i * d..(i + 1) * d].chunks_mut(32).enumerate() {
                            kern.decode_e4m3(&q[b * 32..b * 32 + dst.len()], l.s[sc[b] as usize], dst);
                        }
                    }
                    GatherOut::Bf16(o) => {
                        let o: &mut [u16] = bytemuck::cast_slice_mut(&mut o[i * d..(i + 1) * d]);
                        for (b, dst) in o.chunks_mut(32).enumerate() {
                            let x = &mut tmp[..dst.len()];
                            kern.decode_e4m3(&q[b * 32..b * 32 + dst.len()], l.s[sc[b] as usize], x);
                            for (h, &v) in dst.iter_mut().zip(x.iter()) {
                                *h = if v.is_nan() { l.nan_bf16 } else { f32_to_bf16_bits(v) };
                            }
                        }
                    }
                    GatherOut::Bytes(_) => {}
                }
            }
        }
        (Table::Plain { .. }, _) => {}
    }
}

/// Output elements (of the output's own unit) per gathered row.
fn out_row_len(table: &Table<'_>, out: &GatherOut<'_>) -> Option<usize> {
    match (table, out) {
        (Table::Plain { row_bytes, .. }, GatherOut::Bytes(_)) => Some(*row_bytes),
        (Table::Fp8 { d, .. }, GatherOut::F32(_) | GatherOut::Bf16(_)) => Some(*d),
        _ => None,
    }
}

fn split_out<'o>(out: GatherOut<'o>, per_chunk: usize) -> Vec<GatherOut<'o>> {
    match out {
        GatherOut::Bytes(o) => o.chunks_mut(per_chunk.max(1)).map(GatherOut::Bytes).collect(),
        GatherOut::F32(o) => o.chunks_mut(per_chunk.max(1)).map(GatherOut::F32).collect(),
        GatherOut::Bf16(o) => o.chunks_mut(per_chunk.max(1)).map(GatherOut::Bf16).collect(),
    }
}

fn out_len(out: &GatherOut<'_>) -> usize {
    match out {
        GatherOut::Bytes(o) => o.len(),
        GatherOut::F32(o) => o.len(),
        GatherOut::Bf16(o) => o.len(),
    }
}

/// `gather_rows`: `rows` is `[T, C]` (`t * c` entries), `out` `[T, C * D]`.
///
/// Errors: `InvalidArgument` for a row outside `[0, R)`, a table/output mismatch or wrong lengths.
pub fn gather_rows(pool: &Pool, table: Table<'_>, rows: &[i64], c: usize, out: GatherOut<'_>) -> Result<()> {
    const OP: &str = "gather_rows";
    let per_row = out_row_len(&table, &out)
        .ok_or_else(|| Error::invalid(OP, "out", "output type does not match the table format"))?;
    if out_len(&out) != rows.len() * per_row || (c == 0 && !rows.is_empty()) {
        return Err(Error::invalid(OP, "out", "expected T * C * D elements"));
    }
    check_rows(OP, rows, table.rows())?;
    if !pool.worth_parallel(rows.len(), GATHER_SERIAL_BELOW) {
        // Serial: one pass on the caller, no per-chunk output list.
        gather_chunk(&table, rows, out);
        return Ok(());
    }
    let chunk_rows = CHUNK * c.max(1);
    let outs = split_out(out, chunk_rows * per_row);
    let work = |(rc, o): (&[i64], GatherOut<'_>)| gather_chunk(&table, rc, o);
    pool.install(|| rows.par_chunks(chunk_rows).zip(outs.into_par_iter()).for_each(work));
    Ok(())
}

/// `gather_rows` of a plain (f32 / bf16 / f16) table on the calling thread, in one straight
/// function: the decode step's path (issue 16 item 9).
///
/// `table` is the table's `[R, W]` bytes (`R = table_rows`, `row_bytes = W * element size`),
/// `rows` the `T * C` indices, `out` the `[T, C * W]` output's bytes. Every index is checked
/// first (the rule of [`check_rows`], whose error a bad index gets), so on error nothing is written; then each row is one `memcpy` (the
/// reference's copy). No prefetch (a few warm rows gain nothing from it, see `PF`), no pool,
/// no per-call allocation: at 8 rows of 512 B the layers of the general path ([`gather_rows`]:
/// the [`Table`] / [`GatherOut`] enums, the prefetch bookkeeping) cost ~10% of the call
/// (benches/RESULTS.md "gather_rows at 8-128 rows").
///
/// Errors: `InvalidArgument` for a row outside `[0, R)` (field `rows`) or lengths that do not
/// match (`table` shorter than `R * row_bytes`, `out` not `rows.len() * row_bytes` bytes).
pub fn gather_plain_serial(
    table: &[u8],
    row_bytes: usize,
    table_rows: usize,
    rows: &[i64],
    out: &mut [u8],
) -> Result<()> {
    const OP: &str = "gather_rows";
    if table_rows.checked_mul(row_bytes).is_none_or(|n| n > table.len()) {
        return Err(Error::invalid(OP, "table", "fewer than R * W elements"));
    }
    if rows.len().checked_mul(row_bytes) != Some(out.len()) {
        return Err(Error::invalid(OP, "out", "expected T * C * D elements"));
    }
    // Every index in [0, R), as `check_rows` has it, in a branch-free pass (an unsigned compare
    // also catches negative indices); only a call that fails it (or an R beyond i64, where
    // `check_rows` has the last word) goes to `check_rows` for its error. At 8 rows `check_rows`'
    // search was ~100 instructions of a ~1500-instruction call (callgrind, benches/RESULTS.md).
    let bound = table_rows as u64;
    if table_rows > i64::MAX as usize || rows.iter().fold(false, |bad, &r| bad | (r as u64 >= bound)) {
        check_rows(OP, rows, table_rows)?;
    }
    if row_bytes == 0 {
        return Ok(());
    }
    for (dst, &r) in out.chunks_exact_mut(row_bytes).zip(rows) {
        // r is in [0, R) (checked above) and R * row_bytes <= table.len(): in range; the slice's
        // own check stays (one compare, never taken).
        let start = r as usize * row_bytes;
        dst.copy_from_slice(&table[start..start + row_bytes]);
    }
    Ok(())
}

/// `engram_lookup` fused: per chunk of tokens, hash into a small buffer, then gather (with prefetch).
///
/// Errors: as [`engram_hash`] and [`gather_rows`]; nothing is written on error.
pub fn engram_lookup(
    kern: &Kernels,
    pool: &Pool,
    layer: &EngramLayer,
    ids: &[i64],
    positions: Option<&[i64]>,
    alive: Option<&[u8]>,
    history: &[i64],
    table: Table<'_>,
    out: GatherOut<'_>,
) -> Result<()> {
    const OP: &str = "engram_lookup";
    let c = layer.columns();
    let per_row = out_row_len(&table, &out)
        .ok_or_else(|| Error::invalid(OP, "out", "output type does not match the table format"))?;
    if out_len(&out) != ids.len() * c * per_row {
        return Err(Error::invalid(OP, "out", "expected T * C * D elements"));
    }
    if table.rows() as u64 != layer.rows() {
        return Err(Error::invalid(
            OP,
            "table",
            format!("{} rows, the layer has {}", table.rows(), layer.rows()),
        ));
    }
    check_inputs(layer, OP, ids, positions, alive, history)?;
    let hs = Hasher::new(kern, layer, ids.len());
    if !pool.worth_parallel(ids.len(), LOOKUP_SERIAL_BELOW) {
        // Serial: hash every token once into one row list, then one gather pass (no per-chunk
        // output list or buffers).
        let mut rows = vec![0i64; ids.len() * c];
        hash_range(&hs, ids, positions, alive, history, 0, &mut rows)?;
        gather_chunk(&table, &rows, out);
        return Ok(());
    }
    let outs = split_out(out, CHUNK * c * per_row);
    let work = |(ci, o): (usize, GatherOut<'_>)| -> Result<()> {
        let t0 = ci * CHUNK;
        let n = CHUNK.min(ids.len() - t0);
        let mut rows = vec![0i64; n * c];
        hash_range(&hs, ids, positions, alive, history, t0, &mut rows)?;
        gather_chunk(&table, &rows, o);
        Ok(())
    };
    pool.install(|| outs.into_par_iter().enumerate().try_for_each(work))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Isa;
    use moehal_core::engram::{derive_primes, v41_flash};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `engram_hash` equals core's `hash_sequence` on every table for layers the fused kernel
    /// takes (V4.1 layer 1; N = 2..5 with K = 4 and primes above 16 M, V' below and above 2^32),
    /// plain windows with and without history, and windows with positions (the unfused path), for
    /// token counts around the 4-token groups and the first N - 1 tokens.
    #[test]
    fn fused_layers_equal_reference() {
        let pool = Pool::new(1).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut layers = vec![v41_flash::layer(0).unwrap()];
        for n in 2..=5 {
            let primes = derive_primes(16_000_000, n, 4, 1).unwrap().remove(0);
            for vocab in [129_280u64, 1 << 40] {
                // m · (V' - 1) < 2^63 (EngramLayer::new checks it).
                let mults = (0..n)
                    .map(|_| (rng.gen::<u64>() % ((1u64 << 63) / vocab)) | 1)
                    .collect();
                layers.push(EngramLayer::new(n, 4, mults, primes.clone(), vocab, 2).unwrap());
            }
        }
        let kerns: Vec<&Kernels> = Isa::all_available().into_iter().filter_map(Kernels::for_isa).collect();
        let mut fused = 0;
        for layer in &layers {
            let (n, c, v) = (layer.max_order(), layer.columns(), layer.vocab_size());
            let plan = HashPlan::new(layer.heads(), layer.primes(), layer.offsets()).unwrap();
            fused += kerns.iter().filter(|k| k.has_engram_plain(&plan, n)).count();
            for t in [0usize, 1, 3, 4, 5, 7, 8, 9, 12, 31, 300] {
                let ids: Vec<i64> = (0..t).map(|_| rng.gen_range(0..v) as i64).collect();
                let history: Vec<i64> = (0..n - 1).map(|_| rng.gen_range(0..v) as i64).collect();
                // A new segment at t / 2.
                let positions: Vec<i64> = (0..t as i64).map(|i| i % (t as i64 / 2).max(1)).collect();
                for (hist, pos) in [
                    (&[][..], None),
                    (&history[..], None),
                    (&history[..], Some(&positions[..])),
                ] {
                    let mut want = vec![0i64; t * c];
                    layer.hash_sequence(&ids, pos, None, hist, &mut want).unwrap();
                    for k in &kerns {
                        let mut got = vec![-1i64; t * c];
                        engram_hash(k, &pool, layer, &ids, pos, None, hist, &mut got).unwrap();
                        assert_eq!(
                            got,
                            want,
                            "{:?}: N {n} V' {v} T {t} history {} positions {}",
                            k.isa(),
                            hist.len(),
                            pos.is_some()
                        );
                    }
                }
            }
        }
        let has = kerns
            .iter()
            .any(|k| cfg!(target_arch = "x86_64") && k.has_engram_rows());
        assert_eq!(
            fused > 0,
            has,
            "the fused kernel was exercised wherever this machine has it"
        );
    }
}
