//! `grouped_gemm` (OPS.md §1): `y[r, :] = row_scale[r] * (x[r, :] @ W_g + bias[g, :])` for the rows
//! `r` of each group `g`, on raw slices.
//!
//! Work is split over (group, row chunk, N panel of [`NR`] columns) tasks on the thread pool. Each
//! task walks K in blocks of [`KC`]: it widens the weight block into an L1-resident f32 panel (a
//! transpose for `NK`, a straight conversion for `KN` and for [`PackedWeights`]; packed f32 weights
//! are used in place) and runs the register-blocked microkernel over its rows, keeping f32
//! accumulators in a per-thread scratch tile; the epilogue adds the bias, multiplies by `row_scale`
//! and rounds once. Every weight element of a touched expert is read once per row chunk; prefill
//! reuses each panel block from L1 across all rows of the chunk.
//!
//! Decode path: a group of at most [`MR`] rows with bf16 weights skips the staging and streams the
//! weights once, widening them in registers (packed and `KN` weights through an outer-product
//! kernel, `NK` weights through dot products along K), where the kernel table has those kernels
//! (AVX-512); elsewhere the staged path runs.
//!
//! bf16 arithmetic is f32 FMA on widened values, not `vdpbf16ps`: on the development machine
//! `vdpbf16ps` zmm reached 54 GFLOP/s per core against 116 GFLOP/s for f32 FMA (shared/bench/fma_peak.c).

use crate::elem::{Elem, ElemKind};
use crate::pool::Pool;
use crate::simd::mem::HugeBuf;
use crate::simd::{Kernels, Tiles, MR, NR};
use moehal_core::{Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;

/// K block of the packed weight panel (`KC * NR * 4` bytes = 32 KiB, L1-resident).
pub const KC: usize = 128;
/// Most rows one task handles (a multiple of [`MR`]).
pub const MC: usize = 144;

const OP: &str = "grouped_gemm";

/// Weight layout of raw weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[G, N, K]`: how checkpoints store a Linear weight.
    NK,
    /// `[G, K, N]`: what `torch._grouped_mm` and Ascend GroupedMatmul take.
    KN,
}

/// Expert weights prepared once for this backend: per expert, panels of [`NR`] columns, each
/// `[K][NR]` in the weight's own dtype (the last panel zero-padded), in a huge-page-advised buffer.
/// Calls read them in place: no per-call copy and no transposition.
pub struct PackedWeights<T: Elem> {
    data: HugeBuf<T>,
    groups: usize,
    n: usize,
    k: usize,
}

impl<T: Elem> std::fmt::Debug for PackedWeights<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeights")
            .field("groups", &self.groups)
            .field("n", &self.n)
            .field("k", &self.k)
            .finish()
    }
}

impl<T: Elem> PackedWeights<T> {
    /// Pack `w` (`[G, N, K]` for `NK`, `[G, K, N]` for `KN`).
    ///
    /// Errors: `InvalidArgument` if `w.len() != groups * n * k`; `OutOfMemory` if the buffer cannot be had.
    pub fn new(pool: &Pool, w: &[T], layout: Layout, groups: usize, n: usize, k: usize) -> Result<Self> {
        let want = groups.checked_mul(n).and_then(|v| v.checked_mul(k));
        if want != Some(w.len()) {
            return Err(Error::invalid(
                OP,
                "w",
                format!("expected {groups}*{n}*{k} elements, got {}", w.len()),
            ));
        }
        let panels = n.div_ceil(NR);
        let len = groups * panels * k * NR;
        let mut data = HugeBuf::<T>::zeroed(len).ok_or_else(|| Error::OutOfMemory {
            backend: "cpu".into(),
            bytes: (len * std::mem::size_of::<T>()) as u64,
        })?;
        if len > 0 {
            pool.install(|| {
                data.as_mut_slice()
                    .par_chunks_mut(k * NR)
                    .enumerate()
                    .for_each(|(gp, panel)| {
                        let (g, p) = (gp / panels, gp % panels);
                        let n0 = p * NR;
                        let nc = NR.min(n - n0);
                        for kk in 0..k {
                            for c in 0..nc {
                                panel[kk * NR + c] = match layout {
                                    Layout::NK => w[(g * n + n0 + c) * k + kk],
                                    Layout::KN => w[(g * k + kk) * n + n0 + c],
                                };
                            }
                        }
                    })
            });
        }
        Ok(PackedWeights { data, groups, n, k })
    }

    /// Number of groups (experts).
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
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<T>()
    }
}

/// The weights of one call.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a, T: Elem> {
    /// Raw weights read in place.
    Raw(&'a [T], Layout),
    /// Weights prepared by [`PackedWeights::new`].
    Packed(&'a PackedWeights<T>),
}

/// One `grouped_gemm` call on raw slices.
#[derive(Clone, Copy, Debug)]
pub struct GemmArgs<'a, T: Elem> {
    /// `[M, K]` activations, rows sorted by group.
    pub x: &'a [T],
    /// Rows M.
    pub m: usize,
    /// Reduction depth K.
    pub k: usize,
    /// Output width N.
    pub n: usize,
    /// `[G]` cumulative group ends.
    pub group_end: &'a [i64],
    /// The weights.
    pub w: Weights<'a, T>,
    /// `[M]` optional row scale.
    pub row_scale: Option<&'a [f32]>,
    /// `[G, N]` optional bias.
    pub bias: Option<&'a [T]>,
}

#[derive(Default)]
struct Scratch {
    b: Vec<f32>,
    a: Vec<f32>,
    c: Vec<f32>,
    t: Vec<f32>,
    o: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Check every argument of a call (shapes and data); nothing is written.
pub fn validate<T: Elem>(a: &GemmArgs<'_, T>, y_len: usize) -> Result<()> {
    let g = a.group_end.len();
    let mk =
        a.m.checked_mul(a.k)
            .ok_or_else(|| Error::invalid(OP, "x", "M*K overflows"))?;
    if a.x.len() != mk {
        return Err(Error::invalid(
            OP,
            "x",
            format!("expected {} elements ([{}, {}]), got {}", mk, a.m, a.k, a.x.len()),
        ));
    }
    let mn =
        a.m.checked_mul(a.n)
            .ok_or_else(|| Error::invalid(OP, "y", "M*N overflows"))?;
    if y_len != mn {
        return Err(Error::invalid(
            OP,
            "y",
            format!("expected {} elements ([{}, {}]), got {}", mn, a.m, a.n, y_len),
        ));
    }
    match a.w {
        Weights::Raw(w, _) => {
            let want = g.checked_mul(a.n).and_then(|v| v.checked_mul(a.k));
            if want != Some(w.len()) {
                return Err(Error::invalid(
                    OP,
                    "w",
                    format!("expected {g}*{}*{} elements, got {}", a.n, a.k, w.len()),
                ));
            }
        }
        Weights::Packed(p) => {
            if p.groups != g || p.n != a.n || p.k != a.k {
                return Err(Error::invalid(
                    OP,
                    "w",
                    format!(
                        "packed weights are [{}, {}, {}], call needs [{g}, {}, {}]",
                        p.groups, p.n, p.k, a.n, a.k
                    ),
                ));
            }
        }
    }
    if let Some(s) = a.row_scale {
        if s.len() != a.m {
            return Err(Error::invalid(
                OP,
                "row_scale",
                format!("expected {} elements, got {}", a.m, s.len()),
            ));
        }
    }
    if let Some(b) = a.bias {
        if Some(b.len()) != g.checked_mul(a.n) {
            return Err(Error::invalid(
                OP,
                "bias",
                format!("expected {g}*{} elements, got {}", a.n, b.len()),
            ));
        }
    }
    let mut prev = 0i64;
    for (i, &e) in a.group_end.iter().enumerate() {
        if e < prev {
            return Err(Error::invalid(
                OP,
                "group_end",
                format!("group_end[{i}] = {e} < {prev}: must be non-decreasing"),
            ));
        }
        prev = e;
    }
    if prev as u64 > a.m as u64 {
        return Err(Error::invalid(
            OP,
            "group_end",
            format!("group_end[G-1] = {prev} > M = {}", a.m),
        ));
    }
    Ok(())
}

/// Run `grouped_gemm`; `y` is `[M, N]`. Rows at or past `group_end[G-1]` are not touched.
///
/// Errors: `InvalidArgument` (see [`validate`]); nothing is written then.
pub fn grouped_gemm<T: Elem>(kern: &Kernels, pool: &Pool, a: &GemmArgs<'_, T>, y: &mut [T]) -> Result<()> {
    validate(a, y.len())?;
    let used = a.group_end.last().copied().unwrap_or(0) as usize;
    if a.m == 0 || a.n == 0 || used == 0 {
        return Ok(());
    }
    let mut ranges = Vec::new();
    let mut range_group = Vec::new();
    let mut r0 = 0usize;
    for (g, &e) in a.group_end.iter().enumerate() {
        let e = e as usize;
        let mut s = r0;
        while s < e {
            let t = (s + MC).min(e);
            ranges.push((s, t));
            range_group.push(g);
            s = t;
        }
        r0 = e;
    }
    let panels = a.n.div_ceil(NR);
    let ntasks = ranges.len() * panels;
    let tiles = Tiles::new(&mut y[..used * a.n], a.n, NR, ranges.clone());
    let run = |t: usize| {
        let (ri, p) = (t / panels, t % panels);
        let (r0, r1) = ranges[ri];
        let mut tile = tiles.tile(ri, p);
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            task(kern, a, range_group[ri], r0, r1, p, &mut tile, &mut s);
        });
    };
    if ntasks == 1 || pool.threads() == 1 {
        (0..ntasks).for_each(run);
    } else {
        pool.install(|| (0..ntasks).into_par_iter().for_each(run));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn fill_b<T: Elem>(
    kern: &Kernels,
    w: &Weights<'_, T>,
    g: usize,
    p: usize,
    n: usize,
    k: usize,
    k0: usize,
    kc: usize,
    bs: &mut [f32],
    tmp: &mut [f32],
) {
    let n0 = p * NR;
    let nc = NR.min(n - n0);
    match *w {
        Weights::Packed(pw) => {
            let base = ((g * n.div_ceil(NR) + p) * k + k0) * NR;
            kern.widen(&pw.data.as_slice()[base..base + kc * NR], &mut bs[..kc * NR]);
        }
        Weights::Raw(w, Layout::KN) => {
            let base = g * k * n + k0 * n + n0;
            if nc == NR && kern.pack_b(&w[base..], n, false, kc, bs) {
                return;
            }
            for kk in 0..kc {
                let row = &mut bs[kk * NR..(kk + 1) * NR];
                kern.widen(&w[base + kk * n..base + kk * n + nc], &mut row[..nc]);
                row[nc..].fill(0.0);
            }
        }
        Weights::Raw(w, Layout::NK) => {
            let base = (g * n + n0) * k + k0;
            let full = kc / 16 * 16;
            let mut kk0 = 0;
            if nc == NR && full > 0 && kern.pack_b(&w[base..], k, true, full, bs) {
                kk0 = full;
            }
            while kk0 < kc {
                let kw = 16.min(kc - kk0);
                for c in 0..NR {
                    let dst = &mut tmp[c * 16..c * 16 + 16];
                    if c < nc {
                        let s = base + c * k + kk0;
                        kern.widen(&w[s..s + kw], &mut dst[..kw]);
                        dst[kw..].fill(0.0);
                    } else {
                        dst.fill(0.0);
                    }
                }
                if kw == 16 {
                    kern.transpose_nr16(tmp, &mut bs[kk0 * NR..]);
                } else {
                    for kk in 0..kw {
                        for c in 0..NR {
                            bs[(kk0 + kk) * NR + c] = tmp[c * 16 + kk];
                        }
                    }
                }
                kk0 += kw;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn task<T: Elem>(
    kern: &Kernels,
    a: &GemmArgs<'_, T>,
    g: usize,
    r0: usize,
    r1: usize,
    p: usize,
    tile: &mut crate::simd::TileMut<'_, T>,
    s: &mut Scratch,
) {
    let (k, n) = (a.k, a.n);
    let mg = r1 - r0;
    let n0 = p * NR;
    let nc = tile.width();
    let Scratch { b, a: sa, c, t, o } = s;
    let cs = grow(c, mg * NR);
    if k == 0 {
        cs.fill(0.0);
    }
    let tmp = grow(t, NR * 16);
    let mut k0 = 0;
    // Decode fast path: a few rows, bf16 weights laid out k-major (packed, or KN): stream each weight
    // once through the in-register widening microkernel over the whole of K.
    if T::KIND == ElemKind::Bf16 && mg <= MR && k > 0 && nc == NR {
        let sa = grow(sa, mg * k);
        for i in 0..mg {
            kern.widen(&a.x[(r0 + i) * k..(r0 + i + 1) * k], &mut sa[i * k..(i + 1) * k]);
        }
        let done = match a.w {
            Weights::Packed(pw) => {
                let b = &pw.data.as_slice()[(g * n.div_ceil(NR) + p) * k * NR..];
                kern.micro_bf16(sa, k, mg, k, bytemuck::cast_slice(b), NR, &mut cs[..mg * NR])
            }
            Weights::Raw(w, Layout::KN) => kern.micro_bf16(
                sa,
                k,
                mg,
                k,
                bytemuck::cast_slice(&w[g * k * n + n0..]),
                n,
                &mut cs[..mg * NR],
            ),
            Weights::Raw(w, Layout::NK) => kern.dot_nk_bf16(
                sa,
                k,
                mg,
                k,
                bytemuck::cast_slice(&w[(g * n + n0) * k..]),
                k,
                &mut cs[..mg * NR],
            ),
        };
        if done {
            k0 = k;
        }
    }
    while k0 < k {
        let kc = KC.min(k - k0);
        // Packed f32 weights are already an f32 panel: use them in place.
        let packed_f32: Option<&[f32]> = match (&a.w, T::KIND) {
            (Weights::Packed(pw), ElemKind::F32) => {
                let base = ((g * n.div_ceil(NR) + p) * k + k0) * NR;
                Some(bytemuck::cast_slice::<T, f32>(
                    &pw.data.as_slice()[base..base + kc * NR],
                ))
            }
            _ => None,
        };
        let bs: &[f32] = match packed_f32 {
            Some(panel) => panel,
            None => {
                let bs = grow(b, KC * NR);
                fill_b(kern, &a.w, g, p, n, k, k0, kc, bs, tmp);
                bs
            }
        };
        let (av, lda): (&[f32], usize) = if T::KIND == ElemKind::F32 {
            (&bytemuck::cast_slice::<T, f32>(a.x)[r0 * k + k0..], k)
        } else {
            let sa = grow(sa, mg * kc);
            for i in 0..mg {
                let s0 = (r0 + i) * k + k0;
                kern.widen(&a.x[s0..s0 + kc], &mut sa[i * kc..(i + 1) * kc]);
            }
            (sa, kc)
        };
        let mut mb = 0;
        while mb < mg {
            let mr = MR.min(mg - mb);
            kern.micro(
                &av[mb * lda..],
                lda,
                mr,
                kc,
                bs,
                &mut cs[mb * NR..(mb + mr) * NR],
                k0 > 0,
            );
            mb += mr;
        }
        k0 += kc;
    }
    let out = grow(o, NR);
    for i in 0..mg {
        let r = r0 + i;
        let row = &cs[i * NR..i * NR + nc];
        match a.bias {
            Some(bias) => {
                let brow = &bias[g * n + n0..g * n + n0 + nc];
                for j in 0..nc {
                    out[j] = row[j] + brow[j].to_f32();
                }
            }
            None => out[..nc].copy_from_slice(row),
        }
        if let Some(sc) = a.row_scale {
            let sv = sc[r];
            for v in &mut out[..nc] {
                *v *= sv;
            }
        }
        T::narrow(&out[..nc], tile.row(i));
    }
}
