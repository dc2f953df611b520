//! The AMX path of bf16 `grouped_gemm` (prefill): `tdpbf16ps` on 16x32 bf16 tiles, f32 accumulation,
//! the same epilogue as the other kernels (bias, then `row_scale`, one rounding to bf16).
//!
//! Two orientations, chosen by the weight layout so the weights are never transposed:
//! - `NK` weights are read in place as the A operand (each row of `W_g` is a row of A: 32 output
//!   columns by K), and the group's activations are staged once per call as the B operand in VNNI
//!   order (`xt[p][i] = (x[i][2p], x[i][2p+1])`, shared by all tasks of the group). The tiles hold
//!   `yᵀ`, which the epilogue writes back row by row.
//! - `KN` and packed weights are staged per task (32 output columns by K) into VNNI pairs
//!   (`b[p][c] = (w[2p][c], w[2p+1][c])`, L2-resident) and the activations are read in place as A.
//!
//! Tasks are (group, 32 output columns); each walks all rows of its group in blocks of 32, so every
//! weight element is read from memory once per call. Blocks at the edges (rows or columns past the
//! end, K not a multiple of 32) go through zero-padded copies, so no tile reads past a slice and no
//! padding lane can carry a NaN into a sum. Results are independent of the thread count: each output
//! element is one fixed sequence of tile operations.

use super::{validate, GemmArgs, Layout, Weights, OP};
use crate::elem::{Elem, ElemKind};
use crate::pool::Pool;
use crate::simd::amx::{bf16_has_subnormal, bf16_tiles_exact, TileEngine, BLOCK};
use crate::simd::{Tiles, NR};
use moehal_core::{Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;

/// bf16 elements of K per tile step.
const KSTEP: usize = 32;

/// One cache line: scratch buffers are vectors of lines so that every tile row starts on a line
/// (a 64-byte tile row across two lines costs two cache accesses; unaligned staging measured ~15%
/// slower on the tile loop).
#[repr(C, align(64))]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Line([u32; 16]);

#[derive(Default)]
struct Scratch {
    a: Vec<Line>,
    b: Vec<Line>,
    c: Vec<Line>,
    acc: Vec<Line>,
    s: Vec<f32>,
    o: Vec<f32>,
}

/// Weights that are not bf16 in memory (the quantized formats of OPS.md §6), turned per task into the
/// bf16 rows the NK orientation reads as its A operand.
pub(crate) trait RowSource: Sync {
    /// K elements per block scale applied to the f32 partial sums (a multiple of 32), or 0 when the
    /// rows carry their whole value.
    fn kscale(&self) -> usize;
    /// Write output column `n0 + j`'s bf16 weights of group `g` (K values) into `dst[j * kp..]` for
    /// `j < nc` (the caller zeroed `dst`), and with `kscale() > 0` the scale of each K block into
    /// `scales`. Return false if a value cannot be held exactly as a bf16 tile operand (the caller
    /// then computes the call another way).
    fn rows(
        &self,
        engine: TileEngine,
        g: usize,
        n0: usize,
        nc: usize,
        kp: usize,
        dst: &mut [u16],
        scales: &mut [f32],
    ) -> bool;
    /// With `kscale() > 0`: a per-row factor of K block `b` multiplying the task's block scale (the
    /// activation scale of W8A8 fp8: `x_scale[row, b]`), or `None` when there is none.
    fn row_block_scale(&self, _row: usize, _b: usize) -> Option<f32> {
        None
    }
}

/// The activation staging buffer of the NK orientation, kept between calls (the largest one seen:
/// `M * K * 2` bytes plus padding, e.g. 32 MiB at 1024 tokens of Qwen3-30B-A3B).
static XT_CACHE: std::sync::Mutex<Vec<Line>> = std::sync::Mutex::new(Vec::new());

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn grow<V: Copy + Default>(v: &mut Vec<V>, n: usize) -> &mut [V] {
    if v.len() < n {
        v.resize(n, V::default());
    }
    &mut v[..n]
}

/// The first `n` elements of `v` (grown with zeros as needed) as a line-aligned slice of `E`.
fn grow_lines<E: bytemuck::Pod>(v: &mut Vec<Line>, n: usize) -> &mut [E] {
    let lines = (n * std::mem::size_of::<E>()).div_ceil(64);
    if v.len() < lines {
        v.resize(lines, Line::default());
    }
    &mut bytemuck::cast_slice_mut(&mut v[..lines])[..n]
}

#[inline]
fn pair(lo: u16, hi: u16) -> u32 {
    lo as u32 | (hi as u32) << 16
}

/// The non-empty groups of a validated `group_end` as (group, first row, rows), and the rows used.
pub(crate) fn routed_groups(group_end: &[i64]) -> (Vec<(usize, usize, usize)>, usize) {
    let mut groups = Vec::new();
    let mut r0 = 0usize;
    for (g, &e) in group_end.iter().enumerate() {
        let e = e as usize;
        if e > r0 {
            groups.push((g, r0, e - r0));
        }
        r0 = e;
    }
    (groups, r0)
}

/// Whether the AMX path should run this call: some group has more rows than the decode kernels
/// handle (fewer rows do not amortize the tile loads; the AVX-512 decode path streams the weights).
pub(crate) fn worth_it(group_end: &[i64]) -> bool {
    let mut prev = 0i64;
    group_end.iter().any(|&e| {
        let big = (e - prev) as usize > crate::simd::MR;
        prev = e;
        big
    })
}

/// bf16 `grouped_gemm` through the AMX-path algorithm on the given tile engine, whatever the group
/// sizes (the backend sends groups of at most [`crate::simd::MR`] rows to the decode kernels instead).
/// With [`TileEngine::Emulated`] this runs on any machine (slowly): it is how the blocking, staging,
/// padding and epilogue of the AMX path are tested where the CPU has no AMX.
///
/// Errors: `InvalidArgument` as [`super::validate`]; `Unsupported` for a dtype other than bf16.
/// Nothing is written then.
pub fn grouped_gemm_tiles<T: Elem>(engine: TileEngine, pool: &Pool, a: &GemmArgs<'_, T>, y: &mut [T]) -> Result<()> {
    validate(a, y.len())?;
    if T::KIND != ElemKind::Bf16 {
        return Err(Error::unsupported(
            OP,
            "cpu",
            format!("the AMX path is bf16 only, got {:?}", T::KIND),
        ));
    }
    let used = a.group_end.last().copied().unwrap_or(0) as usize;
    if a.m > 0 && a.n > 0 && used > 0 {
        run(engine, Some(pool), a, y);
    }
    Ok(())
}

/// Run the AMX path. The caller has validated `a`, checked `T` is bf16, and that rows, N and the used
/// rows are non-zero.
pub(super) fn run<T: Elem>(amx: TileEngine, pool: Option<&Pool>, a: &GemmArgs<'_, T>, y: &mut [T]) {
    run_with(amx, pool, a, None, y);
}

/// [`run`], or with `src` the NK orientation over the rows `src` gives (`a.w` is then not read).
/// Returns false if `src` refused a task: `y`'s used rows are then partly written and the caller
/// must compute them another way.
pub(crate) fn run_with<T: Elem>(
    amx: TileEngine,
    pool: Option<&Pool>,
    a: &GemmArgs<'_, T>,
    src: Option<&dyn RowSource>,
    y: &mut [T],
) -> bool {
    let (k, n, m) = (a.k, a.n, a.m);
    let refused = std::sync::atomic::AtomicBool::new(false);
    let x: &[u16] = bytemuck::cast_slice(a.x);
    let kp = k.div_ceil(KSTEP) * KSTEP;
    let kblocks = kp / KSTEP;
    let q = kp / 2;
    // Non-empty groups: (group, first row, rows).
    let (groups, used) = routed_groups(a.group_end);
    let nblocks = n.div_ceil(BLOCK);
    let ranges: Vec<(usize, usize)> = groups.iter().map(|&(_, s, mg)| (s, s + mg)).collect();
    let tiles = Tiles::new(&mut y[..used * n], n, BLOCK, ranges);
    let ntasks = groups.len() * nblocks;
    // The float path's rule (one rule for every op, `Pool::worth_parallel`): multiply-adds below
    // `grouped_gemm::SERIAL_BELOW` stay on the caller (not measured on AMX hardware, none here).
    let pool = pool.filter(|p| p.worth_parallel(used * n * k.max(1), super::SERIAL_BELOW));
    let par = |job: &(dyn Fn(usize) + Sync)| match pool {
        Some(pool) if ntasks > 1 => pool.install(|| (0..ntasks).into_par_iter().for_each(job)),
        _ => (0..ntasks).for_each(job),
    };

    let epilogue = |g: usize,
                    s: usize,
                    n0: usize,
                    rows: std::ops::Range<usize>,
                    nc: usize,
                    transposed: bool,
                    c: &[f32],
                    out: &mut [f32],
                    tile: &mut crate::simd::TileMut<'_, T>| {
        if let TileEngine::Hardware(hw) = amx {
            // The same operations in AVX-512 (bit for bit: `Amx::bf16_row_out`).
            let mut bf = [0f32; BLOCK];
            let bias = a.bias.map(|bias| {
                for (d, b) in bf.iter_mut().zip(&bias[g * n + n0..g * n + n0 + nc]) {
                    *d = b.to_f32();
                }
                &bf[..nc]
            });
            for (bi, i) in rows.enumerate() {
                let sv = a.row_scale.map(|rs| rs[s + i]);
                let dst: &mut [u16] = bytemuck::cast_slice_mut(tile.row(i));
                hw.bf16_row_out(c, transposed, bi, bias, sv, &mut dst[..nc]);
            }
            return;
        }
        for (bi, i) in rows.enumerate() {
            for (j, o) in out[..nc].iter_mut().enumerate() {
                *o = if transposed {
                    c[j * BLOCK + bi]
                } else {
                    c[bi * BLOCK + j]
                };
            }
            if let Some(bias) = a.bias {
                for (o, b) in out[..nc].iter_mut().zip(&bias[g * n + n0..g * n + n0 + nc]) {
                    *o += b.to_f32();
                }
            }
            if let Some(rs) = a.row_scale {
                let sv = rs[s + i];
                for o in &mut out[..nc] {
                    *o *= sv;
                }
            }
            T::narrow(&out[..nc], tile.row(i));
        }
    };

    // A block the tiles would not compute exactly (`bf16_tiles_exact`: subnormal operands or products
    // below f32's normal range), in f32 with subnormals kept: `c` as the tile block would hold it
    // (`transposed`: yᵀ) for rows `r0..r0 + tc` and the `nc` columns whose weights `wv(j, kk)` gives.
    // Sequential sums in K order, so the result is the same on every engine and thread count.
    let exact = |r0: usize, tc: usize, nc: usize, wv: &dyn Fn(usize, usize) -> u16, transposed: bool, c: &mut [f32]| {
        let bf = |b: u16| f32::from_bits((b as u32) << 16);
        for i in 0..tc {
            let xr = &x[(r0 + i) * k..(r0 + i + 1) * k];
            for j in 0..nc {
                let acc = xr
                    .iter()
                    .enumerate()
                    .fold(0f32, |acc, (kk, &xv)| acc + bf(xv) * bf(wv(j, kk)));
                c[if transposed { j * BLOCK + i } else { i * BLOCK + j }] = acc;
            }
        }
    };

    match (src, a.w) {
        (Some(_), _) | (None, Weights::Raw(_, Layout::NK)) => {
            let w: &[u16] = match a.w {
                Weights::Raw(w, _) if src.is_none() => bytemuck::cast_slice(w),
                _ => &[],
            };
            let kscale = src.map_or(0, |s| s.kscale());
            // Activations of each group as the VNNI B operand, staged once.
            let mut offs = Vec::with_capacity(groups.len() + 1);
            let mut total = 0usize;
            for &(_, _, mg) in &groups {
                offs.push(total);
                total += q * mg.div_ceil(16) * 16;
            }
            offs.push(total);
            // Reuse the staging buffer of an earlier call (every word is rewritten by the staging), so
            // prefill calls do not page-fault tens of MiB each time; a concurrent call allocates its own.
            // Each group's part is a multiple of 16 words long, so every part starts on a line.
            let mut xt_lines = XT_CACHE.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default();
            let xt: &mut [u32] = grow_lines(&mut xt_lines, total);
            let xmins: Vec<u16> = {
                let mut parts = Vec::with_capacity(groups.len());
                let mut rest: &mut [u32] = xt;
                for gi in 0..groups.len() {
                    let (h, t) = rest.split_at_mut(offs[gi + 1] - offs[gi]);
                    parts.push(h);
                    rest = t;
                }
                // Stage, and (bf16 weights) the group's smallest activation magnitude for the exactness
                // check (the row sources check their own ranges).
                let stage = |(gi, part): (usize, &mut &mut [u32])| -> u16 {
                    let (_, s, mg) = groups[gi];
                    match amx {
                        TileEngine::Hardware(hw) => hw.stage_pairs(x, k, s, mg, mg.div_ceil(16) * 16, part),
                        TileEngine::Emulated => {
                            crate::simd::amx::stage_pairs_scalar(x, k, s, mg, mg.div_ceil(16) * 16, part)
                        }
                    }
                    if src.is_some() {
                        0
                    } else {
                        amx.bf16_min_magnitude(&x[s * k..(s + mg) * k])
                    }
                };
                match pool {
                    Some(pool) if groups.len() > 1 => {
                        pool.install(|| parts.par_iter_mut().enumerate().map(stage).collect())
                    }
                    _ => parts.iter_mut().enumerate().map(stage).collect(),
                }
            };
            let xtr: &[u32] = xt;
            par(&|t: usize| {
                let (gi, nb) = (t / nblocks, t % nblocks);
                let (g, s, mg) = groups[gi];
                let mgp = mg.div_ceil(16) * 16;
                let n0 = nb * BLOCK;
                let nc = BLOCK.min(n - n0);
                let mt = if nc > 16 { 2 } else { 1 };
                let mut tile = tiles.tile(gi, nb);
                SCRATCH.with(|sc| {
                    let mut sc = sc.borrow_mut();
                    let Scratch {
                        a: pa,
                        c,
                        o,
                        acc,
                        s: sbuf,
                        ..
                    } = &mut *sc;
                    let nsc = if kscale > 0 { k.div_ceil(kscale) } else { 0 };
                    let scales = grow(sbuf, nsc);
                    let (asl, lda): (&[u16], usize) = if let Some(src) = src {
                        let pa: &mut [u16] = grow_lines(pa, BLOCK * kp);
                        pa.fill(0);
                        if !src.rows(amx, g, n0, nc, kp, pa, scales) {
                            refused.store(true, std::sync::atomic::Ordering::Relaxed);
                            return;
                        }
                        (pa, kp)
                    } else if k % KSTEP == 0 && nc == BLOCK {
                        (&w[(g * n + n0) * k..(g * n + n0 + BLOCK) * k], k)
                    } else {
                        let pa: &mut [u16] = grow_lines(pa, BLOCK * kp);
                        pa.fill(0);
                        for j in 0..nc {
                            let src = &w[(g * n + n0 + j) * k..(g * n + n0 + j + 1) * k];
                            pa[j * kp..j * kp + k].copy_from_slice(src);
                        }
                        (pa, kp)
                    };
                    let c: &mut [f32] = grow_lines(c, BLOCK * BLOCK);
                    let out = grow(o, BLOCK);
                    // In-place weights are not scanned (a second read of every weight from L1 cost
                    // ~12% of the call at Qwen3-30B-A3B gate_up, 1024 tokens, measured): only a group
                    // with subnormal activations leaves the tiles here (README, "AMX tiles").
                    if src.is_none() && bf16_has_subnormal(xmins[gi]) {
                        let wv = |j: usize, kk: usize| asl[j * lda + kk];
                        for t0 in (0..mg).step_by(BLOCK) {
                            let tc = BLOCK.min(mg - t0);
                            exact(s + t0, tc, nc, &wv, true, c);
                            epilogue(g, s, n0, t0..t0 + tc, nc, true, c, out, &mut tile);
                        }
                        return;
                    }
                    let b = &xtr[offs[gi]..offs[gi + 1]];
                    // The in-place weights of the next task (the pool's workers walk runs of
                    // consecutive tasks), prefetched into L2 over this task's row blocks: the weight
                    // rows are 32 strided streams, too many for the hardware prefetchers alone
                    // (+40% at Qwen3 gate_up, 1024 tokens, in a C model of this loop).
                    let next: &[u16] = match (src, t + 1 < ntasks) {
                        (None, true) if !w.is_empty() => {
                            let (g2, n2) = (groups[(t + 1) / nblocks].0, ((t + 1) % nblocks) * BLOCK);
                            &w[(g2 * n + n2) * k..(g2 * n + (n2 + BLOCK).min(n)) * k]
                        }
                        _ => &[],
                    };
                    let ntb = mg.div_ceil(BLOCK);
                    for t0 in (0..mg).step_by(BLOCK) {
                        let tb = t0 / BLOCK;
                        let next_part = &next[tb * next.len() / ntb..(tb + 1) * next.len() / ntb];
                        let tc = BLOCK.min(mg - t0);
                        let nt = if tc > 16 { 2 } else { 1 };
                        // The weights stream from memory on the first row block (prefetched 4 K steps
                        // ahead) and come from L2 on the others.
                        let pfd = if t0 == 0 && src.is_none() { 4 } else { 0 };
                        let bt = &b[t0.min(b.len())..];
                        if kscale == 0 {
                            amx.bf16_block_pf(asl, lda, mt, bt, mgp, 16 * mgp, nt, kblocks, c, pfd, next_part);
                            epilogue(g, s, n0, t0..t0 + tc, nc, true, c, out, &mut tile);
                        } else {
                            // One tile pass per scale block, its partial sums scaled into `acc` in f32
                            // (block 0 first: the same order on every engine and thread count).
                            let accv: &mut [f32] = grow_lines(acc, BLOCK * BLOCK);
                            accv.fill(0.0);
                            let per = kscale / KSTEP;
                            for (bi, &sc) in scales.iter().enumerate() {
                                let kb0 = bi * per;
                                let kbs = per.min(kblocks - kb0);
                                amx.bf16_block(
                                    &asl[kb0 * KSTEP..],
                                    lda,
                                    mt,
                                    &bt[kb0 * 16 * mgp..],
                                    mgp,
                                    16 * mgp,
                                    nt,
                                    kbs,
                                    c,
                                );
                                let src = src.expect("scales come from a row source");
                                if src.row_block_scale(s + t0, bi).is_some() {
                                    // Per token (the tile's columns): f[i] = x_scale[row, b] · w_scale.
                                    let mut f = [0f32; BLOCK];
                                    for (i, fv) in f.iter_mut().enumerate().take(tc) {
                                        *fv = src.row_block_scale(s + t0 + i, bi).unwrap_or(1.0) * sc;
                                    }
                                    match amx {
                                        TileEngine::Hardware(hw) => hw.scale_add_cols(accv, c, &f),
                                        TileEngine::Emulated => {
                                            for (ar, cr) in accv.chunks_exact_mut(BLOCK).zip(c.chunks_exact(BLOCK)) {
                                                for ((av, &cv), &fv) in ar.iter_mut().zip(cr).zip(&f) {
                                                    *av += fv * cv;
                                                }
                                            }
                                        }
                                    }
                                    continue;
                                }
                                match amx {
                                    TileEngine::Hardware(hw) => hw.scale_add(accv, c, sc),
                                    TileEngine::Emulated => {
                                        for (av, &cv) in accv.iter_mut().zip(c.iter()) {
                                            *av += sc * cv;
                                        }
                                    }
                                }
                            }
                            epilogue(g, s, n0, t0..t0 + tc, nc, true, accv, out, &mut tile);
                        }
                    }
                });
            });
            if let Ok(mut c) = XT_CACHE.lock() {
                if c.capacity() < xt_lines.capacity() {
                    *c = xt_lines;
                }
            }
        }
        (None, Weights::Raw(_, Layout::KN) | Weights::Packed(_)) => {
            // (slice, element (k, col) index function) of the weights of group g.
            let wsrc: &[u16] = match a.w {
                Weights::Raw(w, _) => bytemuck::cast_slice(w),
                Weights::Packed(pw) => bytemuck::cast_slice(pw.data.as_slice()),
            };
            let packed = matches!(a.w, Weights::Packed(_));
            let panels = n.div_ceil(NR);
            // Index of the first of the (up to 32) contiguous columns n0.. of row kk of group g.
            let row_at = |g: usize, kk: usize, n0: usize| -> usize {
                if packed {
                    ((g * panels + n0 / NR) * k + kk) * NR + n0 % NR
                } else {
                    (g * k + kk) * n + n0
                }
            };
            // Each group's smallest activation magnitude, for the exactness check (`bf16_tiles_exact`).
            let xmin = |&(_, s, mg): &(usize, usize, usize)| amx.bf16_min_magnitude(&x[s * k..(s + mg) * k]);
            let xmins: Vec<u16> = match pool {
                Some(pool) if groups.len() > 1 => pool.install(|| groups.par_iter().map(xmin).collect()),
                _ => groups.iter().map(xmin).collect(),
            };
            par(&|t: usize| {
                let (gi, nb) = (t / nblocks, t % nblocks);
                let (g, s, mg) = groups[gi];
                let n0 = nb * BLOCK;
                let nc = BLOCK.min(n - n0);
                let nt = if nc > 16 { 2 } else { 1 };
                let mut tile = tiles.tile(gi, nb);
                SCRATCH.with(|sc| {
                    let mut sc = sc.borrow_mut();
                    let Scratch { a: pa, b, c, o, .. } = &mut *sc;
                    // Weights of this task as VNNI pairs: bs[p*32 + c] = (w(2p, n0+c), w(2p+1, n0+c)).
                    let bs: &mut [u32] = grow_lines(b, q * BLOCK);
                    for p in 0..q {
                        let dst = &mut bs[p * BLOCK..(p + 1) * BLOCK];
                        let (k0, k1) = (2 * p, 2 * p + 1);
                        if k0 >= k {
                            dst.fill(0);
                            continue;
                        }
                        let lo = &wsrc[row_at(g, k0, n0)..row_at(g, k0, n0) + nc];
                        if k1 < k {
                            let hi = &wsrc[row_at(g, k1, n0)..row_at(g, k1, n0) + nc];
                            for ((d, &l), &h) in dst.iter_mut().zip(lo).zip(hi) {
                                *d = pair(l, h);
                            }
                        } else {
                            for (d, &l) in dst.iter_mut().zip(lo) {
                                *d = l as u32;
                            }
                        }
                        dst[nc..].fill(0);
                    }
                    let c: &mut [f32] = grow_lines(c, BLOCK * BLOCK);
                    let out = grow(o, BLOCK);
                    // Packed weights were scanned once when packed; raw ones are not (as in the NK
                    // branch: scanning them per call costs about as much as the staging itself).
                    let exact_ok = match a.w {
                        Weights::Packed(pw) => bf16_tiles_exact(xmins[gi], pw.min_mag),
                        Weights::Raw(..) => !bf16_has_subnormal(xmins[gi]),
                    };
                    if !exact_ok {
                        let wv = |j: usize, kk: usize| wsrc[row_at(g, kk, n0) + j];
                        for t0 in (0..mg).step_by(BLOCK) {
                            let tc = BLOCK.min(mg - t0);
                            exact(s + t0, tc, nc, &wv, false, c);
                            epilogue(g, s, n0, t0..t0 + tc, nc, false, c, out, &mut tile);
                        }
                        return;
                    }
                    for t0 in (0..mg).step_by(BLOCK) {
                        let tc = BLOCK.min(mg - t0);
                        let mt = if tc > 16 { 2 } else { 1 };
                        let r = s + t0;
                        let (asl, lda): (&[u16], usize) = if k % KSTEP == 0 && r + 16 * mt <= m {
                            (&x[r * k..(r + 16 * mt) * k], k)
                        } else {
                            let pa: &mut [u16] = grow_lines(pa, BLOCK * kp);
                            pa.fill(0);
                            for i in 0..tc {
                                pa[i * kp..i * kp + k].copy_from_slice(&x[(r + i) * k..(r + i + 1) * k]);
                            }
                            (pa, kp)
                        };
                        amx.bf16_block(asl, lda, mt, bs, BLOCK, 16 * BLOCK, nt, kblocks, c);
                        epilogue(g, s, n0, t0..t0 + tc, nc, false, c, out, &mut tile);
                    }
                });
            });
        }
    }
    !refused.load(std::sync::atomic::Ordering::Relaxed)
}
