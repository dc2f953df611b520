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
//! bf16 prefill has two kernels ([`Bf16Kernel`]): f32 FMA on widened values (the f32 panel above), and
//! `vdpbf16ps` on bf16 pairs (weights staged as a panel of `(w[2p], w[2p+1])` pairs along K, the
//! activations as pairs too, f32 accumulators, the same epilogue). Where the CPU has AVX512-BF16 one
//! is picked by a fixed per-machine rule, never by timing, so results are the same bits run after
//! run ([`bf16_kernel_default`]: `vdpbf16ps` on AMD, FMA elsewhere; `MOEHAL_CPU_BF16=dot|fma` forces
//! one; on aarch64 with FEAT_BF16 `dot` runs BFMMLA, see `simd/neon.rs`). On the development
//! machine (Intel Xeon, Sapphire-Rapids-class) `vdpbf16ps` zmm reaches about half the f32 FMA rate
//! (benches/fma_peak.c), so FMA usually wins there; on AMD Zen 4 the dot kernel should.
//! The decode path below is memory-bound and uses the widening kernels under both choices.
//! On the AMX table ([`crate::Isa::Amx`]) bf16 calls with a group of more than [`MR`] rows run on AMX
//! tiles instead (`grouped_gemm/amx.rs`, [`Bf16Kernel::Amx`]).

pub(crate) mod amx;
pub use amx::grouped_gemm_tiles;

use crate::elem::{Elem, ElemKind};
use crate::pool::Pool;
use crate::simd::mem::HugeBuf;
use crate::simd::{Kernels, Tiles, MR, NR};
use moehal_core::{Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::OnceLock;

/// K block of the packed weight panel (`KC * NR * 4` bytes = 32 KiB, L1-resident).
pub const KC: usize = 128;
/// Most rows one task handles (a multiple of [`MR`]).
pub const MC: usize = 144;
/// K block of the `vdpbf16ps` pair panel (`KC_DOT / 2 * NR * 4` bytes = 32 KiB, L1-resident).
pub const KC_DOT: usize = 256;

/// The arithmetic of bf16 `grouped_gemm` outside the decode path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bf16Kernel {
    /// Widen to f32, f32 FMA microkernel.
    Fma,
    /// `vdpbf16ps` on bf16 pairs (AVX512-BF16), f32 accumulation.
    Dot,
    /// AMX `tdpbf16ps` tiles, f32 accumulation (the [`crate::Isa::Amx`] table; groups of at most
    /// [`MR`] rows only take the decode path).
    Amx,
}

impl Bf16Kernel {
    /// Lower-case name (`"fma"`, `"dot"`).
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Fma => "fma",
            Bf16Kernel::Dot => "dot",
            Bf16Kernel::Amx => "amx",
        }
    }

    /// Whether `kern` can run this choice on this machine.
    pub fn available(self, kern: &Kernels) -> bool {
        match self {
            Bf16Kernel::Fma => true,
            Bf16Kernel::Dot => kern.has_dot(),
            Bf16Kernel::Amx => kern.amx().is_some(),
        }
    }
}

/// The bf16 kernel `kern` uses by default: `Amx` on the [`crate::Isa::Amx`] table unless
/// `MOEHAL_CPU_BF16=dot|fma` names another; else `Fma` where `vdpbf16ps` is unavailable; otherwise
/// `MOEHAL_CPU_BF16=dot|fma` if set, else a fixed per-machine rule (`Dot` on AMD, `Fma` elsewhere,
/// aarch64 included, where `Dot` is BFMMLA).
///
/// The choice is fixed for the life of the process, so results are bitwise reproducible within it.
pub fn bf16_kernel_default(kern: &Kernels) -> Bf16Kernel {
    // AMX wherever the table has it, unless MOEHAL_CPU_BF16 names another kernel.
    static AMX_UNLESS_FORCED: OnceLock<bool> = OnceLock::new();
    if kern.amx().is_some()
        && *AMX_UNLESS_FORCED.get_or_init(|| {
            !matches!(
                std::env::var(crate::env::BF16)
                    .ok()
                    .and_then(|v| crate::env::parse_bf16(&v).ok()),
                Some("fma" | "dot")
            )
        })
    {
        return Bf16Kernel::Amx;
    }
    if !kern.has_dot() {
        return Bf16Kernel::Fma;
    }
    static CHOICE: OnceLock<Bf16Kernel> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        match std::env::var(crate::env::BF16)
            .ok()
            .and_then(|v| crate::env::parse_bf16(&v).ok())
        {
            Some("dot") => return Bf16Kernel::Dot,
            Some("fma") => return Bf16Kernel::Fma,
            _ => {}
        }
        // A fixed rule per machine, not a timing: the choice changes the rounding of bf16 results,
        // and OPS.md wants the same bits run after run. On AMD Zen 4/5 `vdpbf16ps` runs at twice
        // the f32 FMA rate; on the Intel cores measured here it runs at half (backends/cpu/RESULTS.md).
        // On aarch64 with FEAT_BF16 the pair kernel is BFMMLA (`Dot`): its error (round-to-odd f32
        // steps, subnormals flushed, Arm ARM `BFDotAdd`) is of the order of f32 rounding, inside
        // OPS.md's bf16 bound of 1e-2 (tests/conformance.rs runs it under qemu `-cpu max`), so
        // either path may be the default there; it stays FMA, the exact-product path, until BFMMLA
        // is measured faster on real hardware (qemu cannot time it; benches/RESULTS.md, ARM).
        if cpu_vendor_is_amd() {
            Bf16Kernel::Dot
        } else {
            Bf16Kernel::Fma
        }
    })
}

fn cpu_vendor_is_amd() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("vendor_id") && l.contains("AuthenticAMD"))
        })
        .unwrap_or(false)
}

/// Seconds (best of 7, interleaved) of the two bf16 kernels (for benches; the default choice does not time) on one thread: 48 rows, K 512, N 128.
pub fn calibrate(kern: &Kernels) -> (f64, f64) {
    let (m, k, n) = (48usize, 512usize, 128usize);
    let x: Vec<half::bf16> = (0..m * k)
        .map(|i| half::bf16::from_f32(((i * 7 % 13) as f32 - 6.0) * 0.125))
        .collect();
    let w: Vec<half::bf16> = (0..n * k)
        .map(|i| half::bf16::from_f32(((i * 5 % 11) as f32 - 5.0) * 0.0625))
        .collect();
    let ge = [m as i64];
    let args = GemmArgs {
        x: &x,
        m,
        k,
        n,
        group_end: &ge,
        w: Weights::Raw(&w, Layout::KN),
        row_scale: None,
        bias: None,
    };
    let mut y = vec![half::bf16::ZERO; m * n];
    let mut best = [f64::INFINITY; 2];
    for rep in 0..8 {
        for (i, b) in [Bf16Kernel::Fma, Bf16Kernel::Dot].into_iter().enumerate() {
            let t = std::time::Instant::now();
            let _ = run(kern, None, &args, &mut y, b);
            let dt = t.elapsed().as_secs_f64();
            // The first round warms caches and scratch buffers.
            if rep > 0 {
                best[i] = best[i].min(dt);
            }
        }
    }
    (best[0], best[1])
}

const OP: &str = "grouped_gemm";
/// Multiply-adds (rows routed × `N` × `K`) below which a float `grouped_gemm` runs its tiles on the
/// calling thread (issue 16 item 9: small decode shapes, where waking the pool costs more than the
/// work; measured with `moehal bench`).
pub const SERIAL_BELOW: usize = 256 * 1024;

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
    /// bf16 weights: their smallest non-zero magnitude (`simd::amx::bf16_min_magnitude_scalar`), found
    /// once here so the AMX path can check exactness without reading the weights again; else 0.
    pub(crate) min_mag: u16,
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
        let min_mag = if T::KIND == ElemKind::Bf16 {
            let bits: &[u16] = bytemuck::cast_slice(w);
            let chunk = 1usize << 20;
            pool.install(|| {
                bits.par_chunks(chunk)
                    .map(crate::simd::amx::bf16_min_magnitude_scalar)
                    .filter(|&m| m != 0)
                    .min()
                    .unwrap_or(0)
            })
        } else {
            0
        };
        Ok(PackedWeights {
            data,
            groups,
            n,
            k,
            min_mag,
        })
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
    bp: Vec<u32>,
    ap: Vec<u32>,
    b: Vec<f32>,
    a: Vec<f32>,
    c: Vec<f32>,
    t: Vec<f32>,
    o: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `v[..n]`, growing `v` (zero-filled) when it is shorter: per-thread scratch reused across calls.
pub(crate) fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// The epilogue of one tile (OPS.md §1): `y[r, :] = row_scale[r] · (acc[r, :] + bias)`, rounded
/// once to `T`. `cs` holds the f32 accumulators of the tile's rows at row stride [`NR`], `r0` is
/// the first row's index in `x`, `bias` the tile's `nc` bias values (or none); `o` is scratch.
pub(crate) fn epilogue<T: Elem>(
    cs: &[f32],
    r0: usize,
    bias: Option<&[T]>,
    row_scale: Option<&[f32]>,
    o: &mut Vec<f32>,
    tile: &mut crate::simd::TileMut<'_, T>,
) {
    let nc = tile.width();
    let out = grow(o, NR);
    for i in 0..cs.len() / NR {
        let row = &cs[i * NR..i * NR + nc];
        match bias {
            Some(brow) => {
                for j in 0..nc {
                    out[j] = row[j] + brow[j].to_f32();
                }
            }
            None => out[..nc].copy_from_slice(row),
        }
        if let Some(sc) = row_scale {
            let sv = sc[r0 + i];
            for v in &mut out[..nc] {
                *v *= sv;
            }
        }
        T::narrow(&out[..nc], tile.row(i));
    }
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

/// Run `grouped_gemm`; `y` is `[M, N]`. Rows at or past `group_end[G-1]` are not touched. bf16 uses
/// [`bf16_kernel_default`].
///
/// Errors: `InvalidArgument` (see [`validate`]); nothing is written then.
pub fn grouped_gemm<T: Elem>(kern: &Kernels, pool: &Pool, a: &GemmArgs<'_, T>, y: &mut [T]) -> Result<()> {
    let b = if T::KIND == ElemKind::Bf16 {
        bf16_kernel_default(kern)
    } else {
        Bf16Kernel::Fma
    };
    run(kern, Some(pool), a, y, b)
}

/// [`grouped_gemm`] with an explicit bf16 kernel (ignored for f32/f16).
///
/// Errors: `InvalidArgument` (see [`validate`]); `Unsupported` if `bf16` is not available on this
/// machine with `kern` (see [`Bf16Kernel::available`]). Nothing is written then.
pub fn grouped_gemm_with<T: Elem>(
    kern: &Kernels,
    pool: &Pool,
    a: &GemmArgs<'_, T>,
    y: &mut [T],
    bf16: Bf16Kernel,
) -> Result<()> {
    if !bf16.available(kern) {
        return Err(Error::unsupported(
            OP,
            "cpu",
            format!(
                "bf16 kernel {} is not available with the {} table (dot needs AVX512-BF16, amx the amx table)",
                bf16.name(),
                kern.isa().name()
            ),
        ));
    }
    run(kern, Some(pool), a, y, bf16)
}

fn run<T: Elem>(kern: &Kernels, pool: Option<&Pool>, a: &GemmArgs<'_, T>, y: &mut [T], bf16: Bf16Kernel) -> Result<()> {
    validate(a, y.len())?;
    let dot = T::KIND == ElemKind::Bf16 && bf16 == Bf16Kernel::Dot && kern.has_dot();
    let used = a.group_end.last().copied().unwrap_or(0) as usize;
    if a.m == 0 || a.n == 0 || used == 0 {
        return Ok(());
    }
    if T::KIND == ElemKind::Bf16 && bf16 == Bf16Kernel::Amx && amx::worth_it(a.group_end) {
        if let Some(proof) = kern.amx() {
            amx::run(crate::simd::amx::TileEngine::Hardware(proof), pool, a, y);
            return Ok(());
        }
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
    let job = |t: usize| {
        let (ri, p) = (t / panels, t % panels);
        let (r0, r1) = ranges[ri];
        let mut tile = tiles.tile(ri, p);
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            task(kern, a, range_group[ri], r0, r1, p, &mut tile, &mut s, dot);
        });
    };
    match pool {
        Some(pool) if ntasks > 1 && pool.worth_parallel(used * a.n * a.k.max(1), SERIAL_BELOW) => {
            pool.install(|| (0..ntasks).into_par_iter().for_each(job))
        }
        _ => (0..ntasks).for_each(job),
    }
    Ok(())
}

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

fn grow_u32(v: &mut Vec<u32>, n: usize) -> &mut [u32] {
    if v.len() < n {
        v.resize(n, 0);
    }
    &mut v[..n]
}

/// Stage the bf16 pair panel of weight block (group `g`, panel `p`, `k0..k0+kc`):
/// `bs[q*NR + c] = bits(w(k0+2q, n0+c)) | bits(w(k0+2q+1, n0+c)) << 16`, zero past `kc` and past N.
fn fill_pairs<T: Elem>(
    kern: &Kernels,
    w: &Weights<'_, T>,
    g: usize,
    p: usize,
    n: usize,
    k: usize,
    k0: usize,
    kc: usize,
    bs: &mut [u32],
) {
    let n0 = p * NR;
    let nc = NR.min(n - n0);
    // (slice, row stride along k, column stride, nk) of element (k0 + kk, n0 + c) = base + kk*sk + c*sc.
    let (src, base, sk, sc, nk): (&[half::bf16], usize, usize, usize, bool) = match *w {
        Weights::Packed(pw) => (
            bytemuck::cast_slice(pw.data.as_slice()),
            ((g * n.div_ceil(NR) + p) * k + k0) * NR,
            NR,
            1,
            false,
        ),
        Weights::Raw(w, Layout::KN) => (bytemuck::cast_slice(w), g * k * n + k0 * n + n0, n, 1, false),
        Weights::Raw(w, Layout::NK) => (bytemuck::cast_slice(w), (g * n + n0) * k + k0, 1, k, true),
    };
    let full_w = matches!(w, Weights::Packed(_)) || nc == NR;
    let mut q0 = 0;
    if full_w {
        if nk {
            let full = kc / 32 * 32;
            if full > 0 && kern.pack_dot(&src[base..], sc, true, full, bs) {
                q0 = full / 2;
            }
        } else if kern.pack_dot(&src[base..], sk, false, kc, bs) {
            q0 = kc.div_ceil(2);
        }
    }
    let kp = kc.div_ceil(2);
    for q in q0..kp {
        let row = &mut bs[q * NR..(q + 1) * NR];
        let (kk, has_hi) = (2 * q, 2 * q + 1 < kc);
        for (c, d) in row.iter_mut().enumerate() {
            *d = if c < nc {
                let lo = src[base + kk * sk + c * sc].to_bits() as u32;
                let hi = if has_hi {
                    src[base + (kk + 1) * sk + c * sc].to_bits() as u32
                } else {
                    0
                };
                lo | hi << 16
            } else {
                0
            };
        }
    }
}

/// `sum_k a[k] * b[k]` over equal-length f32 slices, in 16 independent lanes (vectorized by the
/// compiler without `unsafe`; the lanes are summed pairwise at the end). Summation order differs
/// from the reference's sequential sum, within OPS.md's f32 tolerance.
#[inline]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    let mut w = L;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0] + tail
}

fn task<T: Elem>(
    kern: &Kernels,
    a: &GemmArgs<'_, T>,
    g: usize,
    r0: usize,
    r1: usize,
    p: usize,
    tile: &mut crate::simd::TileMut<'_, T>,
    s: &mut Scratch,
    dot: bool,
) {
    let (k, n) = (a.k, a.n);
    let mg = r1 - r0;
    let n0 = p * NR;
    let nc = tile.width();
    let Scratch {
        bp,
        ap,
        b,
        a: sa,
        c,
        t,
        o,
    } = s;
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
    // Decode path for f32 `NK` weights read in place: a few rows (at most MR), each weight row
    // read once and dotted with every row of the group. Packing the panel (a strided transpose of
    // NR weight rows) costs more than the products at this M: `moehal bench` had the packed path
    // at 0.4x the scalar reference at 1-4 tokens on one thread (issue 16 item 9, benches/RESULTS.md
    // "grouped_gemm small shapes"). Its summation order (16 lanes, then pairwise) differs from the
    // micro-kernel's, so an f32 row's bits depend on its tile: a group of at most MR rows (or the
    // last tile of a larger group, cut at MC) takes this order. Still deterministic, and within
    // OPS.md's tolerance either way; the bf16 NK decode path (`dot_nk_bf16`) already did the same.
    if T::KIND == ElemKind::F32 && k0 == 0 && mg <= MR && k > 0 {
        if let Weights::Raw(w, Layout::NK) = a.w {
            let x: &[f32] = bytemuck::cast_slice(a.x);
            let w: &[f32] = bytemuck::cast_slice(w);
            for j in 0..nc {
                let wr = &w[(g * n + n0 + j) * k..][..k];
                for i in 0..mg {
                    cs[i * NR + j] = dot_f32(&x[(r0 + i) * k..][..k], wr);
                }
            }
            k0 = k;
        }
    }
    // vdpbf16ps path: bf16 pairs along K for both operands.
    if dot && k0 < k {
        let xb: &[half::bf16] = bytemuck::cast_slice(a.x);
        while k0 < k {
            let kc = KC_DOT.min(k - k0);
            let kp = kc.div_ceil(2);
            let bs = grow_u32(bp, kp * NR);
            fill_pairs(kern, &a.w, g, p, n, k, k0, kc, bs);
            let asl = grow_u32(ap, mg * kp);
            for i in 0..mg {
                let row = &xb[(r0 + i) * k + k0..(r0 + i) * k + k0 + kc];
                let dst = &mut asl[i * kp..(i + 1) * kp];
                for (d, pr) in dst.iter_mut().zip(row.chunks(2)) {
                    let lo = pr[0].to_bits() as u32;
                    let hi = pr.get(1).map_or(0, |v| v.to_bits() as u32);
                    *d = lo | hi << 16;
                }
            }
            let mut mb = 0;
            while mb < mg {
                let mr = MR.min(mg - mb);
                let ok = kern.micro_dot(
                    &asl[mb * kp..],
                    kp,
                    mr,
                    kp,
                    bs,
                    &mut cs[mb * NR..(mb + mr) * NR],
                    k0 > 0,
                );
                debug_assert!(ok, "micro_dot refused a checked call");
                mb += mr;
            }
            k0 += kc;
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
    let brow = a.bias.map(|bias| &bias[g * n + n0..g * n + n0 + nc]);
    epilogue(&cs[..mg * NR], r0, brow, a.row_scale, o, tile);
}
