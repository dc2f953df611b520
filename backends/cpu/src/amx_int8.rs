//! int8 grouped GEMM on AMX tiles (`tdpbssd`): the integer core of a W8A8 path. Signed int8
//! activations times signed int8 weights, exact int32 sums; the caller applies its scales (per token,
//! per channel, per block) to the returned accumulators.
//!
//! Weights are packed once ([`S8TileWeights::pack`]) into the VNNI order of `tdpbssd`: per group and
//! per block of 32 output columns, `K/4` (padded to a multiple of 16) rows of 32 `u32`, each holding the
//! four bytes `w[4p..4p+4]` of one column. A call then reads them in place, as contiguous 2 KiB tiles.
//! Activations are read in place where K is a multiple of 64, else through a zero-padded copy.
//!
//! Runs on a [`TileEngine`]: `TileEngine::Hardware(amx)` with an [`Amx`](crate::simd::amx::Amx) proof (see
//! [`crate::simd::amx`]), or the slow portable model for tests. Where AMX is unavailable a W8A8 caller
//! keeps its AVX-512 VNNI or scalar path.

use crate::grouped_gemm::Layout;
use crate::pool::Pool;
use crate::simd::amx::{TileEngine, BLOCK};
use moehal_core::{Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;

const OP: &str = "grouped_gemm_s8";
/// int8 elements of K per tile step.
const KSTEP: usize = 64;

/// int8 expert weights `[G, N, K]` (or `[G, K, N]`) packed once into `tdpbssd` tile order.
#[derive(Clone, Debug)]
pub struct S8TileWeights {
    data: Vec<u32>,
    groups: usize,
    n: usize,
    k: usize,
}

impl S8TileWeights {
    /// Pack `w`: `[groups, n, k]` for `Layout::NK`, `[groups, k, n]` for `Layout::KN`.
    ///
    /// Errors: `InvalidArgument` if `w.len() != groups * n * k` (or that product overflows).
    pub fn pack(w: &[i8], layout: Layout, groups: usize, n: usize, k: usize) -> Result<Self> {
        if groups.checked_mul(n).and_then(|v| v.checked_mul(k)) != Some(w.len()) {
            return Err(Error::invalid(
                OP,
                "w",
                format!("expected {groups}*{n}*{k} elements, got {}", w.len()),
            ));
        }
        let (nb, q) = (n.div_ceil(BLOCK), k.div_ceil(KSTEP) * KSTEP / 4);
        let mut data = vec![0u32; groups * nb * q * BLOCK];
        // NK with K a multiple of 4 (every real shape): each VNNI word is four consecutive bytes of a
        // weight row, so the pack is a transpose of u32 words (the per-byte path below cost 150 us per
        // 64x2048 task on Sapphire Rapids, 5x the tile work: issue 11).
        if layout == Layout::NK && k % 4 == 0 {
            let kw = k / 4;
            for (blk, dst) in data.chunks_mut((q * BLOCK).max(1)).enumerate().filter(|_| q > 0) {
                let (g, b) = (blk / nb, blk % nb);
                let nc = BLOCK.min(n - b * BLOCK);
                let rows = &w[(g * n + b * BLOCK) * k..(g * n + b * BLOCK + nc) * k];
                // 16 words (one 64-byte line of a weight row) per column at a time, so the 2 KiB of
                // destination being filled stays in L1 (column-at-a-time strided writes did not).
                for p0 in (0..kw).step_by(16) {
                    let p1 = (p0 + 16).min(kw);
                    for c in 0..nc {
                        let src = &rows[c * k + 4 * p0..c * k + 4 * p1];
                        for (i, quad) in src.chunks_exact(4).enumerate() {
                            dst[(p0 + i) * BLOCK + c] =
                                u32::from_le_bytes([quad[0] as u8, quad[1] as u8, quad[2] as u8, quad[3] as u8]);
                        }
                    }
                }
            }
            return Ok(S8TileWeights { data, groups, n, k });
        }
        let at = |g: usize, kk: usize, c: usize| -> i8 {
            match layout {
                Layout::NK => w[(g * n + c) * k + kk],
                Layout::KN => w[(g * k + kk) * n + c],
            }
        };
        // K = 0 leaves nothing to pack (and no chunks).
        for (blk, dst) in data.chunks_mut((q * BLOCK).max(1)).enumerate().filter(|_| q > 0) {
            let (g, b) = (blk / nb, blk % nb);
            for c in 0..BLOCK.min(n - b * BLOCK) {
                for p in 0..k.div_ceil(4) {
                    let mut v = 0u32;
                    for byte in 0..4 {
                        let kk = 4 * p + byte;
                        if kk < k {
                            v |= (at(g, kk, b * BLOCK + c) as u8 as u32) << (8 * byte);
                        }
                    }
                    dst[p * BLOCK + c] = v;
                }
            }
        }
        Ok(S8TileWeights { data, groups, n, k })
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.groups
    }
    /// Output width N.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Reduction depth K.
    pub fn k(&self) -> usize {
        self.k
    }
}

thread_local! {
    static SCRATCH: RefCell<(Vec<i8>, Vec<i32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `y[r, j] = sum_k x[r, k] * w_g[j, k]` (exact; wrapping int32 if a sum exceeds `i32`) for the rows
/// `r` of each group `g` (`group_end` as in OPS.md §1: cumulative, non-decreasing, at most `m`). `x`
/// is `[m, k]` int8 row-major, `y` is `[m, n]` int32; rows at or past `group_end[G-1]` are not
/// touched. Threads from `pool` when given (results do not depend on it). `amx` says where the tile
/// operations run.
///
/// Errors: `InvalidArgument` for a wrong `x`/`y` length, a `group_end` that decreases, exceeds `m` or
/// has a length other than `w.groups()`; nothing is written then.
pub fn grouped_gemm_s8(
    amx: TileEngine,
    pool: Option<&Pool>,
    x: &[i8],
    m: usize,
    group_end: &[i64],
    w: &S8TileWeights,
    y: &mut [i32],
) -> Result<()> {
    let (k, n) = (w.k, w.n);
    if m.checked_mul(k) != Some(x.len()) {
        return Err(Error::invalid(
            OP,
            "x",
            format!("expected {m}*{k} elements, got {}", x.len()),
        ));
    }
    if m.checked_mul(n) != Some(y.len()) {
        return Err(Error::invalid(
            OP,
            "y",
            format!("expected {m}*{n} elements, got {}", y.len()),
        ));
    }
    if group_end.len() != w.groups {
        return Err(Error::invalid(
            OP,
            "group_end",
            format!("expected {} groups, got {}", w.groups, group_end.len()),
        ));
    }
    let mut prev = 0i64;
    for (i, &e) in group_end.iter().enumerate() {
        if e < prev || e as u64 > m as u64 {
            return Err(Error::invalid(
                OP,
                "group_end",
                format!("group_end[{i}] = {e}: must be non-decreasing and at most M = {m}"),
            ));
        }
        prev = e;
    }
    if n == 0 || prev == 0 {
        return Ok(());
    }
    let kp = k.div_ceil(KSTEP) * KSTEP;
    let (kblocks, q, nb) = (kp / KSTEP, kp / 4, n.div_ceil(BLOCK));
    let (groups, r0) = crate::grouped_gemm::amx::routed_groups(group_end);
    let ranges = groups.iter().map(|&(_, s, mg)| (s, s + mg)).collect();
    let tiles = crate::simd::Tiles::new(&mut y[..r0 * n], n, BLOCK, ranges);
    let ntasks = groups.len() * nb;
    let job = |t: usize| {
        let (gi, b) = (t / nb, t % nb);
        let (g, s, mg) = groups[gi];
        let nc = BLOCK.min(n - b * BLOCK);
        let nt = if nc > 16 { 2 } else { 1 };
        let bs = &w.data[(g * nb + b) * q * BLOCK..(g * nb + b + 1) * q * BLOCK];
        let mut tile = tiles.tile(gi, b);
        SCRATCH.with(|sc| {
            let mut sc = sc.borrow_mut();
            let (pa, c) = &mut *sc;
            c.resize(BLOCK * BLOCK, 0);
            for t0 in (0..mg).step_by(BLOCK) {
                let tc = BLOCK.min(mg - t0);
                let mt = if tc > 16 { 2 } else { 1 };
                let r = s + t0;
                let (asl, lda): (&[i8], usize) = if k % KSTEP == 0 && r + 16 * mt <= m {
                    (&x[r * k..(r + 16 * mt) * k], k)
                } else {
                    pa.clear();
                    pa.resize(BLOCK * kp, 0);
                    for i in 0..tc {
                        pa[i * kp..i * kp + k].copy_from_slice(&x[(r + i) * k..(r + i + 1) * k]);
                    }
                    (&pa[..], kp)
                };
                amx.s8_block(asl, lda, mt, bs, BLOCK, 16 * BLOCK, nt, kblocks, c);
                for i in 0..tc {
                    tile.row(t0 + i).copy_from_slice(&c[i * BLOCK..i * BLOCK + nc]);
                }
            }
        });
    };
    match pool {
        // The float path's rule (one rule for every op, `Pool::worth_parallel`): multiply-adds
        // (rows used x N x K) below `grouped_gemm::SERIAL_BELOW` stay on the caller. Not measured
        // on AMX hardware (none here); tiles are faster than FMA, so the float threshold errs
        // towards the pool.
        Some(pool) if ntasks > 1 && pool.worth_parallel(r0 * n * k.max(1), crate::grouped_gemm::SERIAL_BELOW) => {
            pool.install(|| (0..ntasks).into_par_iter().for_each(job))
        }
        _ => (0..ntasks).for_each(job),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::amx::Amx;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn oracle(x: &[i8], m: usize, k: usize, n: usize, ge: &[i64], w: &[i8], lay: Layout) -> Vec<Option<i32>> {
        let mut y = vec![None; m * n];
        let mut r0 = 0;
        for (g, &e) in ge.iter().enumerate() {
            for r in r0..e as usize {
                for j in 0..n {
                    let mut acc = 0i64;
                    for kk in 0..k {
                        let wv = match lay {
                            Layout::NK => w[(g * n + j) * k + kk],
                            Layout::KN => w[(g * k + kk) * n + j],
                        };
                        acc += x[r * k + kk] as i64 * wv as i64;
                    }
                    y[r * n + j] = Some(acc as i32);
                }
            }
            r0 = e as usize;
        }
        y
    }

    /// Every shape class: K a multiple of 64 or not (padded A), of 4 or not (the two pack paths), odd K, K = 0, N tails of 1..31 columns,
    /// groups of 1..70 rows, empty groups, guard rows; full int8 range including -128.
    #[test]
    fn s8_matches_exact_oracle() {
        let mut engines = vec![TileEngine::Emulated];
        match Amx::get() {
            Some(amx) => engines.push(TileEngine::Hardware(amx)),
            None => println!("AMX unavailable, hardware int8 tiles not tested: {:?}", Amx::status()),
        }
        let pool = Pool::new(2).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for &(m, k, n, g) in &[
            (40usize, 64usize, 32usize, 2usize),
            (100, 130, 45, 3),
            // K a multiple of 4 but not of 64 (word-transpose pack with a partial 16-word run).
            (50, 100, 45, 3),
            (7, 3, 17, 2),
            (75, 0, 33, 2),
            (200, 256, 96, 4),
            (33, 1, 1, 1),
        ] {
            let used = m - m / 8;
            let mut ge: Vec<i64> = (0..g).map(|_| rng.gen_range(0..=used) as i64).collect();
            ge.sort();
            if g > 1 {
                ge[0] = ge[1];
            }
            *ge.last_mut().unwrap() = used as i64;
            let x: Vec<i8> = (0..m * k).map(|_| rng.gen()).collect();
            let w: Vec<i8> = (0..g * n * k).map(|_| rng.gen()).collect();
            for lay in [Layout::NK, Layout::KN] {
                let want = oracle(&x, m, k, n, &ge, &w, lay);
                let pw = S8TileWeights::pack(&w, lay, g, n, k).unwrap();
                for (p, amx) in [None, Some(&pool)]
                    .into_iter()
                    .flat_map(|p| engines.iter().map(move |&e| (p, e)))
                {
                    let mut y = vec![i32::MIN + 7; m * n];
                    grouped_gemm_s8(amx, p, &x, m, &ge, &pw, &mut y).unwrap();
                    for (i, (got, want)) in y.iter().zip(&want).enumerate() {
                        match want {
                            Some(v) => assert_eq!(got, v, "({m},{k},{n},{g}) {lay:?} element {i}"),
                            None => assert_eq!(*got, i32::MIN + 7, "guard row written at {i}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn s8_rejects_bad_arguments() {
        let w = S8TileWeights::pack(&[1i8; 2 * 4 * 8], Layout::NK, 2, 4, 8).unwrap();
        assert!(S8TileWeights::pack(&[0i8; 5], Layout::NK, 2, 4, 8).is_err());
        let amx = TileEngine::best();
        let x = [1i8; 3 * 8];
        let mut y = [0i32; 3 * 4];
        assert!(grouped_gemm_s8(amx, None, &x[..20], 3, &[1, 3], &w, &mut y).is_err());
        assert!(grouped_gemm_s8(amx, None, &x, 3, &[2, 1], &w, &mut y).is_err());
        assert!(grouped_gemm_s8(amx, None, &x, 3, &[1, 4], &w, &mut y).is_err());
        assert!(grouped_gemm_s8(amx, None, &x, 3, &[3], &w, &mut y).is_err());
        assert!(grouped_gemm_s8(amx, None, &x, 3, &[1, 3], &w, &mut y[..11]).is_err());
        assert_eq!(y, [0; 12], "nothing written on error");
        grouped_gemm_s8(amx, None, &x, 3, &[1, 3], &w, &mut y).unwrap();
        assert_eq!(y, [8; 12]);
    }
}

/// Scratch of [`w8a8_nk`] per worker: the padded weight copy, the i32 block, the f32 row.
#[derive(Default)]
struct NkScratch {
    a: Vec<i8>,
    c: Vec<i32>,
    o: Vec<f32>,
}

thread_local! {
    static NK_SCRATCH: RefCell<NkScratch> = RefCell::new(NkScratch::default());
}

/// W8A8 int8 `grouped_gemm` (OPS.md §6) on `tdpbssd` tiles with the NK weights read in place, no
/// packing: each (expert, 32 output columns) task takes its 32 weight rows as the A operand (16 rows
/// × 64 K bytes per tile, a zero-padded copy where K is not a multiple of 64 or fewer than 32 columns
/// remain), the expert's activations are staged once as the B operand (`xt[p][i]` = the four bytes
/// `x[i][4p..4p+4]`), and the tiles hold `yᵀ`. Per output: `acc` exact in i32, then
/// `(x_scale[row] · w_scale[g, col] · acc)` formed in f64 and rounded to f32, `+ bias`, `× row_scale`,
/// one rounding to `T` — the same operations in the same order as the other int8 kernels, so the
/// output is bitwise theirs. Results do not depend on the thread count.
///
/// The caller validated the call (lengths, `K <= INT8_MAX_K`, `group_end`) and that some row was
/// routed; `w` is `[G, N, K]`, `w_scale` `[G, N]`, `x_scale` `[M]`, `y` `[M, N]`.
pub(crate) fn w8a8_nk<T: crate::elem::Elem>(
    amx: TileEngine,
    pool: Option<&Pool>,
    x: &[i8],
    x_scale: &[f32],
    k: usize,
    n: usize,
    group_end: &[i64],
    w: &[i8],
    w_scale: &[f32],
    row_scale: Option<&[f32]>,
    bias: Option<&[T]>,
    y: &mut [T],
) {
    let kp = k.div_ceil(KSTEP) * KSTEP;
    let kblocks = kp / KSTEP;
    let q = kp / 4;
    let (groups, used) = crate::grouped_gemm::amx::routed_groups(group_end);
    // Activations of each group as the B operand, staged once: q rows of mgp u32.
    let mut offs = Vec::with_capacity(groups.len() + 1);
    let mut total = 0usize;
    for &(_, _, mg) in &groups {
        offs.push(total);
        total += q * mg.div_ceil(16) * 16;
    }
    offs.push(total);
    let mut xt = vec![0u32; total];
    {
        let mut parts = Vec::with_capacity(groups.len());
        let mut rest: &mut [u32] = &mut xt;
        for gi in 0..groups.len() {
            let (h, t) = rest.split_at_mut(offs[gi + 1] - offs[gi]);
            parts.push(h);
            rest = t;
        }
        let stage = |(gi, part): (usize, &mut &mut [u32])| {
            let (_, s, mg) = groups[gi];
            let mgp = mg.div_ceil(16) * 16;
            for i in 0..mg {
                let row = &x[(s + i) * k..(s + i + 1) * k];
                for (p, quad) in row.chunks(4).enumerate() {
                    let mut b = [0u8; 4];
                    for (d, &v) in b.iter_mut().zip(quad) {
                        *d = v as u8;
                    }
                    part[p * mgp + i] = u32::from_le_bytes(b);
                }
            }
        };
        match pool {
            Some(p) if groups.len() > 1 => p.install(|| parts.par_iter_mut().enumerate().for_each(stage)),
            _ => parts.iter_mut().enumerate().for_each(stage),
        }
    }
    let nblocks = n.div_ceil(BLOCK);
    let ranges: Vec<(usize, usize)> = groups.iter().map(|&(_, s, mg)| (s, s + mg)).collect();
    let tiles = crate::simd::Tiles::new(&mut y[..used * n], n, BLOCK, ranges);
    let ntasks = groups.len() * nblocks;
    let xtr = &xt;
    let job = |t: usize| {
        let (gi, nb) = (t / nblocks, t % nblocks);
        let (g, s, mg) = groups[gi];
        let mgp = mg.div_ceil(16) * 16;
        let n0 = nb * BLOCK;
        let nc = BLOCK.min(n - n0);
        let mt = if nc > 16 { 2 } else { 1 };
        let mut tile = tiles.tile(gi, nb);
        NK_SCRATCH.with(|sc| {
            let mut sc = sc.borrow_mut();
            let NkScratch { a: pa, c, o } = &mut *sc;
            let (asl, lda): (&[i8], usize) = if k % KSTEP == 0 && nc == BLOCK {
                (&w[(g * n + n0) * k..(g * n + n0 + BLOCK) * k], k)
            } else {
                if pa.len() < BLOCK * kp {
                    pa.resize(BLOCK * kp, 0);
                }
                pa[..BLOCK * kp].fill(0);
                for j in 0..nc {
                    pa[j * kp..j * kp + k].copy_from_slice(&w[(g * n + n0 + j) * k..(g * n + n0 + j + 1) * k]);
                }
                (&pa[..BLOCK * kp], kp)
            };
            if c.len() < BLOCK * BLOCK {
                c.resize(BLOCK * BLOCK, 0);
            }
            if o.len() < BLOCK {
                o.resize(BLOCK, 0.0);
            }
            let b = &xtr[offs[gi]..offs[gi + 1]];
            let wsr = &w_scale[g * n + n0..g * n + n0 + nc];
            let brow = bias.map(|bv| &bv[g * n + n0..g * n + n0 + nc]);
            for t0 in (0..mg).step_by(BLOCK) {
                let tc = BLOCK.min(mg - t0);
                let nt = if tc > 16 { 2 } else { 1 };
                amx.s8_block(asl, lda, mt, &b[t0.min(b.len())..], mgp, 16 * mgp, nt, kblocks, c);
                for bi in 0..tc {
                    let r = s + t0 + bi;
                    let xsv = f64::from(x_scale[r]);
                    let out = &mut o[..nc];
                    for (j, ov) in out.iter_mut().enumerate() {
                        *ov = (xsv * f64::from(wsr[j]) * f64::from(c[j * BLOCK + bi])) as f32;
                    }
                    if let Some(brow) = brow {
                        for (ov, bv) in out.iter_mut().zip(brow) {
                            *ov += bv.to_f32();
                        }
                    }
                    if let Some(rs) = row_scale {
                        let sv = rs[r];
                        for ov in out.iter_mut() {
                            *ov *= sv;
                        }
                    }
                    T::narrow(out, tile.row(t0 + bi));
                }
            }
        });
    };
    let worth = pool.filter(|p| p.worth_parallel(used * n * k.max(1), crate::grouped_gemm::SERIAL_BELOW));
    match worth {
        Some(p) if ntasks > 1 => p.install(|| (0..ntasks).into_par_iter().for_each(job)),
        _ => (0..ntasks).for_each(job),
    }
}
