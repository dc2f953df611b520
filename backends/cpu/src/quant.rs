//! Quantized `grouped_gemm` and the quantize ops (OPS.md §6) on raw slices.
//!
//! Work is split as in [`crate::grouped_gemm`]: (group, row chunk, [`NR`]-column panel) tasks on
//! the pool. Each task walks K in blocks of [`KC`] (= 128, one fp8 block, four MXFP4 scale blocks):
//!
//! - weight-only (float `x`): the weight block is dequantized into the L1-resident f32 panel
//!   (`code × scale`, one f32 rounding, as OPS.md §6 defines the dequantized weight) and the same
//!   register-blocked f32 microkernel as the float path runs over it;
//! - fp8 × fp8: the e4m3 codes of both operands are decoded (exactly) into f32 panels, the
//!   microkernel forms the block's inner sums in a fresh tile, and the block is added to the
//!   accumulators with `x_scale[r, b] · w_scale[g, n/128, b]` (DeepGEMM's promotion per 128);
//! - int8 × int8: exact i32 dot products along K (NK rows are contiguous in K for both operands),
//!   then `x_scale · w_scale · sum`. [`int8_dot_hook`] is the one place the integer kernels plug in
//!   (AMX-INT8 tiles, AVX512-VNNI, AVX2 `vpmaddwd`, aarch64 SMMLA / SDOT, portable), for decode-
//!   and prefill-sized groups alike (one call per (row chunk of up to `MC` rows, panel) task).
//!
//! Decode (at most [`MR`] rows in a group) with MXFP4 weights: each weight byte is read once and
//! decoded in registers; see [`crate::simd::Kernels::dot_mxfp4`].
//!
//! Prefill of weight-only `fp8_block` / `mxfp4` with bf16 `x` where the bf16 kernel is AMX: bf16
//! tiles over weight rows decoded per (expert, 32 columns) task into exact bf16 (`AmxRows`: mxfp4
//! with its scale, fp8 codes with the block scale applied to each 128-wide K block's f32 partial
//! sum), through the NK orientation of `grouped_gemm/amx.rs`; W8A8 `fp8_block` with bf16 `y` the
//! same way, `x`'s codes decoded to bf16 and each block's partial sum scaled by `x_scale · w_scale`.
//! A scale the tiles cannot hold exactly sends the call to the paths above.

use crate::amx_int8::{grouped_gemm_s8, S8TileWeights};
use crate::elem::{Elem, ElemKind};
use crate::grouped_gemm::{epilogue, grow, Layout};
use crate::pool::Pool;
use crate::simd::amx::TileEngine;
use crate::simd::{Kernels, Tiles, MR, NR};
use moehal_core::quant::{e2m1_to_f32, e8m0_to_f32, INT8_MAX_K, MXFP4_BLOCK};
use moehal_core::{DType, Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;

const OP: &str = "grouped_gemm";

/// K block of the dequantized panel: one fp8 block (so a block never straddles two fp8 scales).
pub const KC: usize = 128;
const FP8_BLOCK: usize = moehal_core::quant::FP8_BLOCK;
/// Elements (`M * K`) below which `quantize_fp8` / `quantize_int8` run on the calling thread
/// (issue 16 item 9, measured with `moehal bench`: waking the pool costs more than quantizing).
pub const QUANT_SERIAL_BELOW: usize = 64 * 1024;
/// Elements per parallel quantize task (whole rows, at least one).
const QUANT_CHUNK: usize = 16 * 1024;

/// A scale tensor: f32 values or E8M0 bytes.
#[derive(Clone, Copy, Debug)]
pub enum Scales<'a> {
    /// f32 scales.
    F32(&'a [f32]),
    /// E8M0 bytes (`2^(e - 127)`, 255 = NaN).
    E8m0(&'a [u8]),
}

impl Scales<'_> {
    fn len(&self) -> usize {
        match self {
            Scales::F32(s) => s.len(),
            Scales::E8m0(s) => s.len(),
        }
    }
    #[inline]
    fn get(&self, i: usize) -> f32 {
        match self {
            Scales::F32(s) => s[i],
            Scales::E8m0(s) => e8m0_to_f32(s[i]),
        }
    }
}

/// Quantized expert weights of one call, layout NK (OPS.md §6 table).
#[derive(Clone, Copy, Debug)]
pub enum QWeights<'a> {
    /// E4M3FN codes `[G, N, K]`, scales `[G, ⌈N/128⌉, ⌈K/128⌉]`.
    Fp8Block {
        /// Codes.
        w: &'a [u8],
        /// Block scales.
        scale: Scales<'a>,
    },
    /// Packed E2M1 pairs `[G, N, K/2]` (low nibble = even k), E8M0 scales `[G, N, K/32]`.
    Mxfp4 {
        /// Packed codes.
        w: &'a [u8],
        /// E8M0 scales.
        scale: &'a [u8],
    },
    /// i8 `[G, N, K]`, f32 scales `[G, N]`.
    Int8 {
        /// Values.
        w: &'a [i8],
        /// Per-channel scales.
        scale: &'a [f32],
    },
    /// `fp8_block` in the kernel's layout ([`PackedQWeights::pack`]): per expert, per panel of
    /// [`NR`] columns, `[K][NR]` e4m3 codes (last panel zero-padded); scales as `Fp8Block`.
    Fp8Panels {
        /// Codes `[G, ⌈N/NR⌉, K, NR]`.
        w: &'a [u8],
        /// Block scales `[G, ⌈N/128⌉, ⌈K/128⌉]`.
        scale: Scales<'a>,
    },
}

/// Owned scales of [`PackedQWeights`].
#[derive(Clone, Debug)]
enum OwnedScales {
    F32(Vec<f32>),
    E8m0(Vec<u8>),
}

impl OwnedScales {
    fn of(s: Scales<'_>) -> Self {
        match s {
            Scales::F32(v) => OwnedScales::F32(v.to_vec()),
            Scales::E8m0(v) => OwnedScales::E8m0(v.to_vec()),
        }
    }
    fn view(&self) -> Scales<'_> {
        match self {
            OwnedScales::F32(v) => Scales::F32(v),
            OwnedScales::E8m0(v) => Scales::E8m0(v),
        }
    }
}

/// Quantized expert weights converted once into the CPU kernels' layout (OPS.md §6 `pack`):
/// `fp8_block` codes are re-laid per expert in panels of [`NR`] columns, `[K][NR]` (the last panel
/// zero-padded), so that each K block of the dequantized panel is filled from contiguous bytes
/// with no transposition; `mxfp4` (whose decode kernel streams NK rows, and whose prefill path
/// decodes 16 values per scale) and `int8` (whose integer kernels read NK rows of both operands)
/// already are in the kernels' layout and are kept as they are. Scales are kept as they are. Where
/// the bf16 prefill kernel is AMX, `fp8_block` codes are kept as NK rows too (the tile path reads
/// rows; the f32 path reads them as unpacked weights).
///
/// A call on [`weights`](Self::weights) gives bitwise the output of the same call on the unpacked
/// weights: the same dequantized values reach the same kernels in the same order.
#[derive(Clone, Debug)]
pub struct PackedQWeights {
    format: moehal_core::ops::WeightFormat,
    groups: usize,
    n: usize,
    k: usize,
    codes: Vec<u8>,
    scale: OwnedScales,
    /// fp8_block codes re-laid in panels (else kept `[G, N, K]`: where the bf16 prefill kernel is
    /// AMX, whose weight rows are the NK rows).
    panels: bool,
}

impl PackedQWeights {
    /// Pack `w` (`[groups, n, k]`, the layout of OPS.md §6) once; threads from `pool`.
    ///
    /// Errors: `InvalidArgument` for lengths that do not match `groups`, `n`, `k` (as a call would
    /// report them), or `w` already packed.
    pub fn pack(pool: &Pool, w: QWeights<'_>, groups: usize, n: usize, k: usize) -> Result<Self> {
        use moehal_core::ops::WeightFormat;
        // The length rules are the op's: validate a call of one row against zero-length x.
        let ge = vec![0i64; groups];
        let probe = QGemmArgs::<f32> {
            x: QAct::Float(&[]),
            m: 0,
            k,
            n,
            group_end: &ge,
            w,
            row_scale: None,
            bias: None,
        };
        validate(&probe, 0)?;
        // With AMX tiles, prefill reads NK rows of codes (`AmxRows`): keep them (a packed call must
        // take the same path as an unpacked one, and panels would have to be read back column-wise).
        let keep_rows =
            crate::grouped_gemm::bf16_kernel_default(Kernels::best()) == crate::grouped_gemm::Bf16Kernel::Amx;
        let (format, codes, scale) = match w {
            QWeights::Fp8Block { w, scale } if keep_rows => {
                (WeightFormat::Fp8Block, w.to_vec(), OwnedScales::of(scale))
            }
            QWeights::Fp8Block { w, scale } => {
                let panels = n.div_ceil(NR);
                let mut codes = vec![0u8; groups * panels * k * NR];
                if !codes.is_empty() {
                    pool.install(|| {
                        codes.par_chunks_mut(k * NR).enumerate().for_each(|(gp, panel)| {
                            let (g, p) = (gp / panels, gp % panels);
                            let n0 = p * NR;
                            for c in 0..NR.min(n - n0) {
                                let row = &w[(g * n + n0 + c) * k..(g * n + n0 + c + 1) * k];
                                for (kk, &b) in row.iter().enumerate() {
                                    panel[kk * NR + c] = b;
                                }
                            }
                        })
                    });
                }
                (WeightFormat::Fp8Block, codes, OwnedScales::of(scale))
            }
            QWeights::Mxfp4 { w, scale } => (WeightFormat::Mxfp4, w.to_vec(), OwnedScales::E8m0(scale.to_vec())),
            QWeights::Int8 { w, scale } => (
                WeightFormat::Int8,
                bytemuck::cast_slice(w).to_vec(),
                OwnedScales::F32(scale.to_vec()),
            ),
            QWeights::Fp8Panels { .. } => return Err(Error::invalid(OP, "w", "weights are packed already")),
        };
        Ok(PackedQWeights {
            format,
            groups,
            n,
            k,
            codes,
            scale,
            panels: !keep_rows,
        })
    }

    /// The weights to pass in [`QGemmArgs::w`] (with this `k` and `n`, `groups` groups).
    pub fn weights(&self) -> QWeights<'_> {
        use moehal_core::ops::WeightFormat;
        let scale = self.scale.view();
        match (self.format, scale) {
            (WeightFormat::Fp8Block, scale) if self.panels => QWeights::Fp8Panels { w: &self.codes, scale },
            (WeightFormat::Fp8Block, scale) => QWeights::Fp8Block { w: &self.codes, scale },
            (WeightFormat::Mxfp4, Scales::E8m0(scale)) => QWeights::Mxfp4 { w: &self.codes, scale },
            (_, Scales::F32(scale)) => QWeights::Int8 {
                w: bytemuck::cast_slice(&self.codes),
                scale,
            },
            (_, Scales::E8m0(scale)) => QWeights::Mxfp4 { w: &self.codes, scale },
        }
    }

    /// The format packed.
    pub fn format(&self) -> moehal_core::ops::WeightFormat {
        self.format
    }
    /// Experts G.
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
    /// Bytes held (codes and scales).
    pub fn bytes(&self) -> usize {
        self.codes.len()
            + match &self.scale {
                OwnedScales::F32(v) => v.len() * 4,
                OwnedScales::E8m0(v) => v.len(),
            }
    }
}

/// Activations of one call.
#[derive(Clone, Copy, Debug)]
pub enum QAct<'a, T: Elem> {
    /// Float `[M, K]` (weight-only pairing); `T` is also `y`'s type.
    Float(&'a [T]),
    /// E4M3FN `[M, K]` with scales `[M, ⌈K/128⌉]` (pairs with `Fp8Block`).
    Fp8 {
        /// Codes.
        x: &'a [u8],
        /// Per-token, per-128 scales.
        scale: Scales<'a>,
    },
    /// i8 `[M, K]` with f32 scales `[M]` (pairs with `Int8`).
    Int8 {
        /// Values.
        x: &'a [i8],
        /// Per-token scales.
        scale: &'a [f32],
    },
}

/// One quantized `grouped_gemm` call on raw slices; `T` is the output (and float `x`) type.
#[derive(Clone, Copy, Debug)]
pub struct QGemmArgs<'a, T: Elem> {
    /// Activations.
    pub x: QAct<'a, T>,
    /// Rows M.
    pub m: usize,
    /// Reduction depth K (elements).
    pub k: usize,
    /// Output width N.
    pub n: usize,
    /// `[G]` cumulative group ends.
    pub group_end: &'a [i64],
    /// Weights.
    pub w: QWeights<'a>,
    /// `[M]` optional row scale.
    pub row_scale: Option<&'a [f32]>,
    /// `[G, N]` optional bias.
    pub bias: Option<&'a [T]>,
}

fn expect_len(field: &'static str, got: usize, want: Option<usize>, what: &str) -> Result<()> {
    if want == Some(got) {
        Ok(())
    } else {
        Err(Error::invalid(
            OP,
            field,
            format!(
                "expected {} elements ({what}), got {got}",
                want.map_or("an overflowing count".into(), |w| w.to_string())
            ),
        ))
    }
}

/// Check every length, the pairing and `group_end` of a call; nothing is written.
///
/// Errors: `InvalidArgument` naming the field; `Unsupported` for a pairing OPS.md §6 does not name.
pub fn validate<T: Elem>(a: &QGemmArgs<'_, T>, y_len: usize) -> Result<()> {
    let g = a.group_end.len();
    let (m, n, k) = (a.m, a.n, a.k);
    let mk = m.checked_mul(k);
    let gnk = g.checked_mul(n).and_then(|v| v.checked_mul(k));
    match (&a.x, &a.w) {
        (QAct::Float(x), _) => expect_len("x", x.len(), mk, "[M, K]")?,
        (QAct::Fp8 { x, scale }, QWeights::Fp8Block { .. } | QWeights::Fp8Panels { .. }) => {
            expect_len("x", x.len(), mk, "[M, K]")?;
            expect_len(
                "x_scale",
                scale.len(),
                m.checked_mul(k.div_ceil(FP8_BLOCK)),
                "[M, ⌈K/128⌉]",
            )?;
        }
        (QAct::Int8 { x, scale }, QWeights::Int8 { .. }) => {
            expect_len("x", x.len(), mk, "[M, K]")?;
            expect_len("x_scale", scale.len(), Some(m), "[M]")?;
            if k > INT8_MAX_K {
                return Err(Error::invalid(
                    OP,
                    "x",
                    format!("K = {k} exceeds {INT8_MAX_K} (i32 sum)"),
                ));
            }
        }
        _ => {
            return Err(Error::unsupported(
                OP,
                "cpu",
                "OPS.md §6 pairs fp8 x only with fp8_block and i8 x only with int8 weights",
            ))
        }
    }
    match a.w {
        QWeights::Fp8Block { w, scale } | QWeights::Fp8Panels { w, scale } => {
            let want = if matches!(a.w, QWeights::Fp8Panels { .. }) {
                g.checked_mul(n.div_ceil(NR))
                    .and_then(|v| v.checked_mul(k))
                    .and_then(|v| v.checked_mul(NR))
            } else {
                gnk
            };
            expect_len("w", w.len(), want, "[G, N, K] (packed: [G, ⌈N/NR⌉, K, NR])")?;
            let nb = g
                .checked_mul(n.div_ceil(FP8_BLOCK))
                .and_then(|v| v.checked_mul(k.div_ceil(FP8_BLOCK)));
            expect_len("w_scale", scale.len(), nb, "[G, ⌈N/128⌉, ⌈K/128⌉]")?;
        }
        QWeights::Mxfp4 { w, scale } => {
            if !k.is_multiple_of(MXFP4_BLOCK) {
                return Err(Error::invalid(OP, "x", format!("K = {k}: mxfp4 needs K % 32 == 0")));
            }
            expect_len("w", w.len(), gnk.map(|v| v / 2), "[G, N, K/2]")?;
            expect_len("w_scale", scale.len(), gnk.map(|v| v / MXFP4_BLOCK), "[G, N, K/32]")?;
        }
        QWeights::Int8 { w, scale } => {
            expect_len("w", w.len(), gnk, "[G, N, K]")?;
            expect_len("w_scale", scale.len(), g.checked_mul(n), "[G, N]")?;
        }
    }
    expect_len("y", y_len, m.checked_mul(n), "[M, N]")?;
    if let Some(s) = a.row_scale {
        expect_len("row_scale", s.len(), Some(m), "[M]")?;
    }
    if let Some(b) = a.bias {
        expect_len("bias", b.len(), g.checked_mul(n), "[G, N]")?;
    }
    moehal_core::ops::grouped_gemm::check_group_end(a.group_end, m)
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

/// Run a quantized `grouped_gemm`; `y` is `[M, N]`. Rows at or past `group_end[G-1]` are not touched.
///
/// Errors: see [`validate`]; nothing is written then.
pub fn grouped_gemm_q<T: Elem>(kern: &Kernels, pool: &Pool, a: &QGemmArgs<'_, T>, y: &mut [T]) -> Result<()> {
    validate(a, y.len())?;
    let used = a.group_end.last().copied().unwrap_or(0) as usize;
    if a.m == 0 || a.n == 0 || used == 0 {
        return Ok(());
    }
    if T::KIND == ElemKind::Bf16
        && crate::grouped_gemm::amx::worth_it(a.group_end)
        && crate::grouped_gemm::bf16_kernel_default(kern) == crate::grouped_gemm::Bf16Kernel::Amx
    {
        if let Some(amx) = kern.amx() {
            if amx_rows(TileEngine::Hardware(amx), Some(pool), a, y) == Some(true) {
                return Ok(());
            }
            // A scale the tiles cannot hold exactly: the f32 path below rewrites every used row.
        }
    }
    // W8A8 int8 prefill on AMX: weights read in place (no per-call packing), bitwise the per-task
    // int8 kernels' output (exact i32 sums, the same scale and epilogue operations).
    if let Some(amx) = kern.amx() {
        if crate::grouped_gemm::amx::worth_it(a.group_end) && int8_tiles(TileEngine::Hardware(amx), Some(pool), a, y) {
            return Ok(());
        }
    }
    let mc = crate::grouped_gemm::MC;
    let mut ranges = Vec::new();
    let mut range_group = Vec::new();
    let mut r0 = 0usize;
    for (g, &e) in a.group_end.iter().enumerate() {
        let e = e as usize;
        let mut s = r0;
        while s < e {
            let t = (s + mc).min(e);
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
            task(kern, a, range_group[ri], r0, r1, p, &mut tile, &mut s);
        });
    };
    // Same rule as the float GEMM (issue 16 item 9): small decode shapes stay on the caller.
    if ntasks > 1 && pool.worth_parallel(used * a.n * a.k.max(1), crate::grouped_gemm::SERIAL_BELOW) {
        pool.install(|| (0..ntasks).into_par_iter().for_each(job));
    } else {
        (0..ntasks).for_each(job);
    }
    Ok(())
}

/// Weight-only `fp8_block` / `mxfp4` weights as bf16 rows for the AMX tiles (OPS.md §6, float `x`):
/// - `mxfp4`: `e2m1 × 2^(e−127)` is exact in bf16 for scale bytes 2..=252, so the rows carry the
///   whole dequantized weight, the value OPS.md defines; a task meeting a byte outside 62..=252 refuses
///   (below 62, `x × w` could be subnormal and flushed by the tiles, see [`tile_x_ok`]).
/// - Both: every routed activation must pass [`tile_x_ok`], else the call takes the f32 path.
/// - `fp8_block`: every e4m3 code is exact in bf16, so the rows hold the codes and the block scale
///   multiplies the f32 partial sum of its 128-wide K block (`acc += s_b · Σ_{k in b} x·code`:
///   products exact, as DeepGEMM promotes per block). Only scales that are finite, zero or at least
///   2^-117 in magnitude and at most 2^100 take this path (below, `code × s` would be subnormal; above,
///   it could overflow where the partial sum does not): in that range the result differs from the
///   dequantize-then-accumulate definition only by rounding, within the bf16 tolerance.
///
/// W8A8 `fp8_block` (e4m3 `x`, bf16 `y`): `x`'s codes are decoded to bf16 too (exact) and each K
/// block's partial sum is multiplied by `x_scale[row, b] · w_scale` (f32), OPS.md §6's promotion per
/// 128 with exact products; both scales must be 0 or of magnitude in [2^-60, 2^60] (their f32 product
/// then is normal or 0; the reference forms it in f64), else the call takes the f32 path.
struct AmxRows<'a> {
    w: QWeights<'a>,
    n: usize,
    k: usize,
    /// W8A8: the activation scales `[M, ⌈K/128⌉]`.
    xs: Option<Scales<'a>>,
}

fn fp8_scale_ok(s: f32) -> bool {
    let a = s.abs();
    s.is_finite() && (a == 0.0 || (2f32.powi(-117)..=2f32.powi(100)).contains(&a))
}

/// A bf16 activation the weight-only tiles take: 0, non-finite, or of magnitude in [2^-60, 2^62)
/// (exponent field 67..=187). `tdpbf16ps` treats subnormal inputs as 0 and flushes subnormal products,
/// and the fp8 partial sum `Σ x·code` is formed before the block scale: a scale in range does not by
/// itself keep `x·code` normal (x = 2^-120, code 2^-9, scale 2^100 gave 0 for 2^-22 per output) or
/// finite (x = 2^120, code 448, scale 2^-20 gave inf for 2^115.8). With x in this range `x·code` is
/// in [2^-69, 2^71] (128 of them stay finite), and with mxfp4 scale bytes of at least 62 `x·w` is
/// normal; anything else takes the f32 path, which forms `x · (code · scale)` as OPS.md §6 defines.
#[inline(always)]
fn tile_x_ok(b: u16) -> bool {
    let e = (b >> 7) & 0xff;
    // Branch-free (`|`, one unsigned range compare) so that the scan below vectorizes.
    (b & 0x7fff == 0) | (e == 0xff) | (e.wrapping_sub(67) <= 120)
}

/// [`tile_x_ok`] for every value, in 16 Ki-value chunks on the pool (a 1024-token Qwen3 prefill
/// has 16 Mi activations: a short-circuiting serial scan of them cost ~50 ms per call).
fn tile_x_all_ok(pool: Option<&Pool>, bits: &[u16]) -> bool {
    let chunk_ok = |c: &[u16]| c.iter().fold(true, |acc, &b| acc & tile_x_ok(b));
    match pool {
        Some(p) if bits.len() > 1 << 16 => p.install(|| bits.par_chunks(1 << 14).all(chunk_ok)),
        _ => bits.chunks(1 << 14).all(chunk_ok),
    }
}

/// The smallest mxfp4 scale byte the tiles take with [`tile_x_ok`] activations: `2^-60 · 0.5 ·
/// 2^(62 − 127)` = 2^-126, the smallest normal f32 (so no product is flushed).
const MXFP4_TILE_MIN_BYTE: u8 = 62;

/// A W8A8 scale whose products with another such scale are normal f32 (or 0).
fn w8a8_scale_ok(s: f32) -> bool {
    let a = s.abs();
    s.is_finite() && (a == 0.0 || (2f32.powi(-60)..=2f32.powi(60)).contains(&a))
}

impl crate::grouped_gemm::amx::RowSource for AmxRows<'_> {
    fn kscale(&self) -> usize {
        match self.w {
            QWeights::Fp8Block { .. } | QWeights::Fp8Panels { .. } => FP8_BLOCK,
            _ => 0,
        }
    }

    fn rows(
        &self,
        engine: TileEngine,
        g: usize,
        n0: usize,
        nc: usize,
        kp: usize,
        dst: &mut [u16],
        scales: &mut [f32],
    ) -> bool {
        use crate::simd::amx::{e4m3_to_bf16_bits, mxfp4_row_scalar};
        let (n, k) = (self.n, self.k);
        match self.w {
            QWeights::Fp8Block { scale, .. } | QWeights::Fp8Panels { scale, .. } => {
                let (nb, kb) = (n.div_ceil(FP8_BLOCK), k.div_ceil(FP8_BLOCK));
                // The task's columns share one N block (32 divides 128).
                let ok = if self.xs.is_some() { w8a8_scale_ok } else { fp8_scale_ok };
                for (b, sv) in scales.iter_mut().enumerate() {
                    *sv = scale.get((g * nb + n0 / FP8_BLOCK) * kb + b);
                    if !ok(*sv) {
                        return false;
                    }
                }
                if let QWeights::Fp8Panels { w, .. } = self.w {
                    // Packed where the process's best table was not AMX (MOEHAL_CPU_ISA): the same
                    // codes read column-wise from their panel, so packed = unpacked bitwise.
                    for j in 0..nc {
                        let (p, c) = ((n0 + j) / NR, (n0 + j) % NR);
                        let panel = &w[(g * n.div_ceil(NR) + p) * k * NR..][..k * NR];
                        for (kk, o) in dst[j * kp..j * kp + k].iter_mut().enumerate() {
                            *o = e4m3_to_bf16_bits(panel[kk * NR + c]);
                        }
                    }
                    return true;
                }
                let QWeights::Fp8Block { w, .. } = self.w else {
                    unreachable!()
                };
                for j in 0..nc {
                    let row = &w[(g * n + n0 + j) * k..(g * n + n0 + j + 1) * k];
                    let d = &mut dst[j * kp..j * kp + k];
                    match engine {
                        TileEngine::Hardware(hw) => hw.dequant_fp8_row(row, d),
                        TileEngine::Emulated => {
                            for (o, &c) in d.iter_mut().zip(row) {
                                *o = e4m3_to_bf16_bits(c);
                            }
                        }
                    }
                }
                true
            }
            QWeights::Mxfp4 { w, scale } => {
                let sk = k / MXFP4_BLOCK;
                (0..nc).all(|j| {
                    let r = g * n + n0 + j;
                    let (bytes, sc) = (&w[r * k / 2..(r + 1) * k / 2], &scale[r * sk..(r + 1) * sk]);
                    if sc.iter().any(|&e| e < MXFP4_TILE_MIN_BYTE) {
                        return false;
                    }
                    let d = &mut dst[j * kp..j * kp + k];
                    match engine {
                        TileEngine::Hardware(hw) => hw.dequant_mxfp4_row(bytes, sc, d),
                        TileEngine::Emulated => mxfp4_row_scalar(bytes, sc, d),
                    }
                })
            }
            // Not offered to the tiles (see `amx_rows`).
            QWeights::Int8 { .. } => false,
        }
    }

    fn row_block_scale(&self, row: usize, b: usize) -> Option<f32> {
        self.xs.map(|xs| xs.get(row * self.k.div_ceil(FP8_BLOCK) + b))
    }
}

/// The AMX-tile path of weight-only `fp8_block` / `mxfp4` with bf16 `x` and of W8A8 `fp8_block`
/// with bf16 `y` ([`AmxRows`]): `None` if
/// the call is not of that kind (or `K` is 0), `Some(false)` if a scale refused the tiles (`y`'s used
/// rows partly written), `Some(true)` when `y` holds the result. The caller validated `a`.
fn amx_rows<T: Elem>(engine: TileEngine, pool: Option<&Pool>, a: &QGemmArgs<'_, T>, y: &mut [T]) -> Option<bool> {
    if T::KIND != ElemKind::Bf16 || a.k == 0 {
        return None;
    }
    let decoded: Vec<T>;
    let (x, xs) = match (a.x, a.w) {
        (QAct::Float(x), QWeights::Fp8Block { .. } | QWeights::Fp8Panels { .. } | QWeights::Mxfp4 { .. }) => {
            let used = a.group_end.last().map_or(0, |&e| e as usize);
            let bits: &[u16] = bytemuck::cast_slice(&x[..used * a.k]);
            if !tile_x_all_ok(pool, bits) {
                return Some(false);
            }
            (x, None)
        }
        (QAct::Fp8 { x, scale }, QWeights::Fp8Block { .. } | QWeights::Fp8Panels { .. }) => {
            // Only the routed rows: rows past group_end are not read (OPS.md §1), so a NaN scale
            // there must not send the call off the tiles.
            let used = a.group_end.last().map_or(0, |&e| e as usize);
            let n_xs = used * a.k.div_ceil(FP8_BLOCK);
            if !(0..n_xs).all(|i| w8a8_scale_ok(scale.get(i))) {
                return Some(false);
            }
            // The codes of the routed rows as bf16 (exact), row by row; the other rows stay 0.
            let mut d = vec![T::from_f32(0.0); a.m * a.k];
            let decode = |(row, out): (usize, &mut [T])| {
                let codes = &x[row * a.k..(row + 1) * a.k];
                let out: &mut [u16] = bytemuck::cast_slice_mut(out);
                match engine {
                    TileEngine::Hardware(hw) => hw.dequant_fp8_row(codes, out),
                    TileEngine::Emulated => {
                        for (o, &c) in out.iter_mut().zip(codes) {
                            *o = crate::simd::amx::e4m3_to_bf16_bits(c);
                        }
                    }
                }
            };
            let routed = &mut d[..used * a.k];
            match pool {
                Some(p) => p.install(|| routed.par_chunks_mut(a.k).enumerate().for_each(decode)),
                None => routed.chunks_mut(a.k).enumerate().for_each(decode),
            }
            decoded = d;
            (&decoded[..], Some(scale))
        }
        _ => return None,
    };
    let args = crate::grouped_gemm::GemmArgs {
        x,
        m: a.m,
        k: a.k,
        n: a.n,
        group_end: a.group_end,
        w: crate::grouped_gemm::Weights::Raw(&[], Layout::NK),
        row_scale: a.row_scale,
        bias: a.bias,
    };
    let src = AmxRows {
        w: a.w,
        n: a.n,
        k: a.k,
        xs,
    };
    Some(crate::grouped_gemm::amx::run_with(engine, pool, &args, Some(&src), y))
}

/// W8A8 int8 through `amx_int8::w8a8_nk` on `engine`; false (nothing written) for another pairing.
/// The caller validated `a` and that some row was routed.
fn int8_tiles<T: Elem>(engine: TileEngine, pool: Option<&Pool>, a: &QGemmArgs<'_, T>, y: &mut [T]) -> bool {
    let (QAct::Int8 { x, scale: xs }, QWeights::Int8 { w, scale: ws }) = (a.x, a.w) else {
        return false;
    };
    crate::amx_int8::w8a8_nk(
        engine,
        pool,
        x,
        xs,
        a.k,
        a.n,
        a.group_end,
        w,
        ws,
        a.row_scale,
        a.bias,
        y,
    );
    true
}

/// Weight-only `fp8_block` / `mxfp4` `grouped_gemm` with bf16 `x`, W8A8 `fp8_block` with bf16 `y`, and
/// W8A8 `int8` (any `y`; `amx_int8::w8a8_nk`), through the AMX-tile algorithm on
/// `engine`, whatever the group sizes; with [`TileEngine::Emulated`] on any machine (slowly), which is
/// how the tile path is tested where the CPU has no AMX. Returns `Ok(false)` (nothing promised about
/// `y`) for a call the tile path does not take: another pairing or dtype, `K` = 0, or a scale outside
/// the exact range of `AmxRows` (module docs).
///
/// Errors: as [`grouped_gemm_q`].
pub fn grouped_gemm_q_tiles<T: Elem>(
    engine: TileEngine,
    pool: &Pool,
    a: &QGemmArgs<'_, T>,
    y: &mut [T],
) -> Result<bool> {
    validate(a, y.len())?;
    if a.m == 0 || a.n == 0 || a.group_end.last().copied().unwrap_or(0) == 0 {
        return Ok(false);
    }
    Ok(int8_tiles(engine, Some(pool), a, y) || amx_rows(engine, Some(pool), a, y) == Some(true))
}

/// Dequantize weight block (group `g`, columns `n0..n0+nc`, `k0..k0+kc`) into `bs[kk * NR + c]`
/// (zero past `nc`). With `scaled == false` fp8 codes are decoded without their block scale. fp8
/// codes go through [`Kernels::decode_e4m3`] (NEON on aarch64).
fn fill_panel(
    kern: &Kernels,
    w: &QWeights<'_>,
    g: usize,
    n0: usize,
    nc: usize,
    n: usize,
    k: usize,
    k0: usize,
    kc: usize,
    scaled: bool,
    bs: &mut [f32],
    col: &mut [f32],
) {
    let bs = &mut bs[..kc * NR];
    if let QWeights::Fp8Panels { w, scale } = *w {
        // The panel's NR columns share one N block (NR divides 128): one scale per K block.
        let s = if scaled {
            let (nb, kb) = (n.div_ceil(FP8_BLOCK), k.div_ceil(FP8_BLOCK));
            scale.get((g * nb + n0 / FP8_BLOCK) * kb + k0 / FP8_BLOCK)
        } else {
            1.0
        };
        let base = ((g * n.div_ceil(NR) + n0 / NR) * k + k0) * NR;
        for (drow, srow) in bs.chunks_exact_mut(NR).zip(w[base..base + kc * NR].chunks_exact(NR)) {
            kern.decode_e4m3(&srow[..nc], s, &mut drow[..nc]);
            drow[nc..].fill(0.0);
        }
        return;
    }
    if nc < NR {
        bs.fill(0.0);
    }
    for c in 0..nc {
        let row = (g * n + n0 + c) * k;
        let col = &mut col[..kc];
        match *w {
            QWeights::Fp8Block { w, scale } => {
                let s = if scaled {
                    let (nb, kb) = (n.div_ceil(FP8_BLOCK), k.div_ceil(FP8_BLOCK));
                    scale.get((g * nb + (n0 + c) / FP8_BLOCK) * kb + k0 / FP8_BLOCK)
                } else {
                    1.0
                };
                kern.decode_e4m3(&w[row + k0..row + k0 + kc], s, col);
            }
            QWeights::Mxfp4 { w, scale } => {
                let bytes = &w[row / 2 + k0 / 2..row / 2 + (k0 + kc) / 2];
                let srow = (g * n + n0 + c) * (k / MXFP4_BLOCK) + k0 / MXFP4_BLOCK;
                for (sb, (chunk, dst)) in bytes
                    .chunks(MXFP4_BLOCK / 2)
                    .zip(col.chunks_mut(MXFP4_BLOCK))
                    .enumerate()
                {
                    // The 16 values of this block, each `code × scale` rounded once in f32.
                    let s = e8m0_to_f32(scale[srow + sb]);
                    let lut: [f32; 16] = std::array::from_fn(|c| e2m1_to_f32(c as u8) * s);
                    for (pair, &b) in dst.chunks_mut(2).zip(chunk) {
                        pair[0] = lut[(b & 0xF) as usize];
                        pair[1] = lut[(b >> 4) as usize];
                    }
                }
            }
            QWeights::Int8 { w, scale } => {
                let s = scale[g * n + n0 + c];
                for (d, &v) in col.iter_mut().zip(&w[row + k0..row + k0 + kc]) {
                    *d = v as f32 * s;
                }
            }
            QWeights::Fp8Panels { .. } => unreachable!("filled above"),
        }
        for (kk, &v) in col.iter().enumerate() {
            bs[kk * NR + c] = v;
        }
    }
}

/// The integer dot products of an int8 × int8 tile: `out[i * NR + c] = Σ_k x[i][k] · w[c][k]` in
/// i32 for `i < rows`, `c < nc`, where row `i` of `x` starts at `i * k` and row `c` of `w` at `c * k`.
///
/// The one place integer kernels plug in, in this order: AMX-INT8 tiles ([`int8_dot_amx`] on
/// [`TileEngine::Hardware`]) where the table is the AMX one; [`Kernels::dot_i8`] (AVX512-VNNI, else
/// AVX2 `vpmaddwd`; SMMLA, else SDOT on aarch64); else a portable loop. Every kernel gives the same exact result (the sum is
/// exact in i32 for `K <= 131,071`), so the choice never changes output bits.
pub fn int8_dot_hook(kern: &Kernels, x: &[i8], rows: usize, w: &[i8], nc: usize, k: usize, out: &mut [i32]) {
    if let Some(amx) = kern.amx() {
        if int8_dot_amx(TileEngine::Hardware(amx), x, rows, w, nc, k, out).is_ok() {
            return;
        }
    }
    if kern.dot_i8(x, rows, w, nc, k, out) {
        return;
    }
    for i in 0..rows {
        let xr = &x[i * k..(i + 1) * k];
        for c in 0..nc {
            let wr = &w[c * k..(c + 1) * k];
            out[i * NR + c] = xr.iter().zip(wr).map(|(&a, &b)| a as i32 * b as i32).sum();
        }
    }
}

/// [`int8_dot_hook`]'s contract on AMX tiles: the `nc` weight rows are packed into `tdpbssd` order
/// ([`S8TileWeights::pack`], per call: the tile of a task) and the `rows` rows of `x` run as one
/// group through [`grouped_gemm_s8`] on `engine` (`TileEngine::Emulated` runs the same wiring
/// anywhere, for tests).
///
/// Errors: `InvalidArgument` if `x`, `w` or `out` is shorter than the extents say (nothing written).
pub fn int8_dot_amx(
    engine: TileEngine,
    x: &[i8],
    rows: usize,
    w: &[i8],
    nc: usize,
    k: usize,
    out: &mut [i32],
) -> Result<()> {
    let (xl, wl) = (rows.checked_mul(k), nc.checked_mul(k));
    if nc > NR
        || xl.is_none_or(|l| l > x.len())
        || wl.is_none_or(|l| l > w.len())
        || rows.checked_mul(NR).is_none_or(|l| l > out.len())
    {
        return Err(Error::invalid(
            "grouped_gemm_s8",
            "x",
            format!("{rows} x {k} activations, {nc} x {k} weights or {rows} x {NR} outputs do not fit"),
        ));
    }
    let pw = S8TileWeights::pack(&w[..nc * k], Layout::NK, 1, nc, k)?;
    let mut y = vec![0i32; rows * nc];
    grouped_gemm_s8(engine, None, &x[..rows * k], rows, &[rows as i64], &pw, &mut y)?;
    for (i, yr) in y.chunks_exact(nc.max(1)).enumerate().take(rows) {
        out[i * NR..i * NR + nc].copy_from_slice(&yr[..nc]);
    }
    Ok(())
}

fn task<T: Elem>(
    kern: &Kernels,
    a: &QGemmArgs<'_, T>,
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
    cs.fill(0.0);
    match a.x {
        QAct::Int8 { x, scale: xs } => {
            let QWeights::Int8 { w, scale: ws } = a.w else {
                unreachable!("pairing validated")
            };
            let mut acc = vec![0i32; mg * NR];
            int8_dot_hook(
                kern,
                &x[r0 * k..r1 * k],
                mg,
                &w[(g * n + n0) * k..(g * n + n0 + nc) * k],
                nc,
                k,
                &mut acc,
            );
            for i in 0..mg {
                for cc in 0..nc {
                    // The scale product in f64, as the reference forms it: in f32 two finite
                    // scales can overflow to inf (inf · 0 = NaN for a zero sum) or underflow to 0.
                    cs[i * NR + cc] =
                        (f64::from(xs[r0 + i]) * f64::from(ws[g * n + n0 + cc]) * f64::from(acc[i * NR + cc])) as f32;
                }
            }
        }
        QAct::Float(x) => {
            let decode_done = mg <= MR
                && k > 0
                && match a.w {
                    QWeights::Mxfp4 { w, scale } => {
                        // Activations in the kernel's split layout: per 32-block, even k then odd k.
                        let tmp = grow(t, k);
                        let sa = grow(sa, mg * k);
                        for i in 0..mg {
                            kern.widen(&x[(r0 + i) * k..(r0 + i + 1) * k], tmp);
                            for (dst, src) in sa[i * k..(i + 1) * k].chunks_mut(32).zip(tmp.chunks(32)) {
                                for j in 0..16 {
                                    dst[j] = src[2 * j];
                                    dst[16 + j] = src[2 * j + 1];
                                }
                            }
                        }
                        let wrow = (g * n + n0) * k / 2;
                        let srow = (g * n + n0) * (k / MXFP4_BLOCK);
                        kern.dot_mxfp4(
                            sa,
                            mg,
                            k,
                            &w[wrow..wrow + nc * k / 2],
                            &scale[srow..srow + nc * (k / MXFP4_BLOCK)],
                            nc,
                            &mut cs[..mg * NR],
                        )
                    }
                    _ => false,
                };
            if !decode_done {
                let mut k0 = 0;
                while k0 < k {
                    let kc = KC.min(k - k0);
                    let bs = grow(b, KC * NR);
                    fill_panel(kern, &a.w, g, n0, nc, n, k, k0, kc, true, bs, grow(t, KC));
                    let (av, lda): (&[f32], usize) = if T::KIND == ElemKind::F32 {
                        (&bytemuck::cast_slice::<T, f32>(x)[r0 * k + k0..], k)
                    } else {
                        let sa = grow(sa, mg * kc);
                        for i in 0..mg {
                            let s0 = (r0 + i) * k + k0;
                            kern.widen(&x[s0..s0 + kc], &mut sa[i * kc..(i + 1) * kc]);
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
            }
        }
        QAct::Fp8 { x, scale: xs } => {
            let (QWeights::Fp8Block { scale: ws, .. } | QWeights::Fp8Panels { scale: ws, .. }) = a.w else {
                unreachable!("pairing validated")
            };
            let kb = k.div_ceil(FP8_BLOCK);
            let (nb, wkb) = (n.div_ceil(FP8_BLOCK), k.div_ceil(FP8_BLOCK));
            // Columns n0..n0+NR share one N block (NR divides 128).
            let wsrow = (g * nb + n0 / FP8_BLOCK) * wkb;
            let mut blk = vec![0f32; mg * NR];
            let mut k0 = 0;
            while k0 < k {
                let kc = KC.min(k - k0);
                let bi = k0 / FP8_BLOCK;
                let bs = grow(b, KC * NR);
                fill_panel(kern, &a.w, g, n0, nc, n, k, k0, kc, false, bs, grow(t, KC));
                let sa = grow(sa, mg * kc);
                for i in 0..mg {
                    let s0 = (r0 + i) * k + k0;
                    kern.decode_e4m3(&x[s0..s0 + kc], 1.0, &mut sa[i * kc..(i + 1) * kc]);
                }
                let mut mb = 0;
                while mb < mg {
                    let mr = MR.min(mg - mb);
                    kern.micro(&sa[mb * kc..], kc, mr, kc, bs, &mut blk[mb * NR..(mb + mr) * NR], false);
                    mb += mr;
                }
                let wsc = f64::from(ws.get(wsrow + bi));
                for i in 0..mg {
                    // Promotion in f64 (as the reference): an f32 `x_scale · w_scale` of two finite
                    // scales can overflow (inf · 0 = NaN for an all-zero block) or underflow to 0.
                    let f = f64::from(xs.get((r0 + i) * kb + bi)) * wsc;
                    for (cv, &bv) in cs[i * NR..i * NR + nc].iter_mut().zip(&blk[i * NR..i * NR + nc]) {
                        *cv += (f * f64::from(bv)) as f32;
                    }
                }
                k0 += kc;
            }
        }
    }
    let brow = a.bias.map(|bias| &bias[g * n + n0..g * n + n0 + nc]);
    epilogue(&cs[..mg * NR], r0, brow, a.row_scale, o, tile);
}

/// `quantize_fp8` (OPS.md §6) of `x [m, k]` into `xq [m, k]` and scales `[m, ⌈k/128⌉]`: f32 values
/// (`scale_f32`) or E8M0 bytes (`scale_e8m0`); exactly one of the two is given. Rows run in parallel.
///
/// Errors: `InvalidArgument` on inconsistent lengths; nothing is written then.
pub fn quantize_fp8<T: Elem>(
    pool: &Pool,
    x: &[T],
    m: usize,
    k: usize,
    xq: &mut [u8],
    scales: ScalesMut<'_>,
) -> Result<()> {
    const OP: &str = "quantize_fp8";
    let kb = k.div_ceil(FP8_BLOCK);
    if Some(x.len()) != m.checked_mul(k) || xq.len() != x.len() {
        return Err(Error::invalid(OP, "x", format!("x and xq must hold {m}*{k} elements")));
    }
    let slen = match &scales {
        ScalesMut::F32(s) => s.len(),
        ScalesMut::E8m0(s) => s.len(),
    };
    if Some(slen) != m.checked_mul(kb) {
        return Err(Error::invalid(
            OP,
            "x_scale",
            format!("expected {m}*{kb} scales, got {slen}"),
        ));
    }
    if m == 0 || k == 0 {
        return Ok(());
    }
    let fmt = match scales {
        ScalesMut::F32(_) => moehal_core::quant::ScaleFormat::F32,
        ScalesMut::E8m0(_) => moehal_core::quant::ScaleFormat::Ue8m0,
    };
    // One chunk of rows: widen each row once into `f`, quantize its 1x128 groups, and hand each
    // group's (f32, E8M0) scale pair to `put(row, block, pair)`.
    let rows_per = (QUANT_CHUNK / k).max(1);
    let chunk = |c0: usize, qc: &mut [u8], put: &mut dyn FnMut(usize, usize, (f32, u8))| {
        let mut f = vec![0f32; k];
        for (ri, qrow) in qc.chunks_mut(k).enumerate() {
            let r = c0 + ri;
            T::widen(&x[r * k..(r + 1) * k], &mut f);
            for b in 0..kb {
                let (k0, k1) = (b * FP8_BLOCK, ((b + 1) * FP8_BLOCK).min(k));
                put(
                    r - c0,
                    b,
                    moehal_core::quant::quantize_fp8_group(&f[k0..k1], fmt, &mut qrow[k0..k1]),
                );
            }
        }
    };
    if !pool.worth_parallel(m * k, QUANT_SERIAL_BELOW) {
        // Serial (issue 16 item 9): no pool dispatch and no [M, K/128] scratch; scales go straight out.
        let mut scales = scales;
        chunk(0, xq, &mut |r, b, (sf, se)| match &mut scales {
            ScalesMut::F32(s) => s[r * kb + b] = sf,
            ScalesMut::E8m0(s) => s[r * kb + b] = se,
        });
        return Ok(());
    }
    let mut sv = vec![(0f32, 0u8); m * kb];
    pool.install(|| {
        xq.par_chunks_mut(rows_per * k)
            .zip(sv.par_chunks_mut(rows_per * kb))
            .enumerate()
            .for_each(|(ci, (qc, sc))| chunk(ci * rows_per, qc, &mut |r, b, pair| sc[r * kb + b] = pair))
    });
    match scales {
        ScalesMut::F32(s) => s.iter_mut().zip(&sv).for_each(|(d, v)| *d = v.0),
        ScalesMut::E8m0(s) => s.iter_mut().zip(&sv).for_each(|(d, v)| *d = v.1),
    }
    Ok(())
}

/// Output scales of [`quantize_fp8`].
#[derive(Debug)]
pub enum ScalesMut<'a> {
    /// f32 scales.
    F32(&'a mut [f32]),
    /// E8M0 bytes.
    E8m0(&'a mut [u8]),
}

/// `quantize_int8` (OPS.md §6) of `x [m, k]` into `xq [m, k]` and f32 scales `[m]`.
///
/// Errors: `InvalidArgument` on inconsistent lengths; nothing is written then.
pub fn quantize_int8<T: Elem>(
    pool: &Pool,
    x: &[T],
    m: usize,
    k: usize,
    xq: &mut [i8],
    scale: &mut [f32],
) -> Result<()> {
    const OP: &str = "quantize_int8";
    if Some(x.len()) != m.checked_mul(k) || xq.len() != x.len() || scale.len() != m {
        return Err(Error::invalid(
            OP,
            "x",
            format!("x and xq must hold {m}*{k} elements, x_scale {m}"),
        ));
    }
    if m == 0 {
        return Ok(());
    }
    if k == 0 {
        // An empty row has amax 0 < 2^-64: scale 1 (OPS.md §6).
        scale.fill(1.0);
        return Ok(());
    }
    // One chunk of rows: widen each row once into `f`, then quantize it.
    let rows_per = (QUANT_CHUNK / k).max(1);
    let chunk = |(ci, (qc, sc)): (usize, (&mut [i8], &mut [f32]))| {
        let mut f = vec![0f32; k];
        for (ri, (qrow, s)) in qc.chunks_mut(k).zip(sc.iter_mut()).enumerate() {
            let r = ci * rows_per + ri;
            T::widen(&x[r * k..(r + 1) * k], &mut f);
            *s = moehal_core::quant::quantize_int8_row(&f, qrow);
        }
    };
    if pool.worth_parallel(m * k, QUANT_SERIAL_BELOW) {
        pool.install(|| {
            xq.par_chunks_mut(rows_per * k)
                .zip(scale.par_chunks_mut(rows_per))
                .enumerate()
                .for_each(chunk)
        });
    } else {
        // Serial (issue 16 item 9): no pool dispatch below the threshold.
        xq.chunks_mut(rows_per * k)
            .zip(scale.chunks_mut(rows_per))
            .enumerate()
            .for_each(chunk);
    }
    Ok(())
}

/// What the CPU backend runs for a §6 variant.
pub fn support(kern: &Kernels, op: &moehal_core::ops::QuantDesc) -> moehal_core::Support {
    use moehal_core::ops::{ActFormat, QuantDesc, WeightFormat};
    use moehal_core::Support;
    let isa = kern.isa().name();
    // Where `grouped_gemm_q` sends prefill to the bf16 tiles (`amx_rows`).
    let tiles =
        kern.amx().is_some() && crate::grouped_gemm::bf16_kernel_default(kern) == crate::grouped_gemm::Bf16Kernel::Amx;
    match *op {
        QuantDesc::GroupedGemm {
            w: w @ (WeightFormat::Fp8Block | WeightFormat::Mxfp4),
            x: ActFormat::Float(DType::BF16),
            ..
        } if tiles => {
            let decode = if w == WeightFormat::Mxfp4 {
                "; decode: avx512 in-register e2m1 LUT dot"
            } else {
                ""
            };
            Support::yes(format!(
                "amx bf16 tiles over exactly decoded weight rows (prefill; a scale outside the exact range: \
                 {isa} dequant-to-f32-panel microkernel){decode}"
            ))
        }
        QuantDesc::GroupedGemm {
            w: WeightFormat::Fp8Block,
            x: ActFormat::Fp8,
            y: DType::BF16,
        } if tiles => Support::yes(
            "amx bf16 tiles over decoded e4m3 codes, f32 block sums scaled per 128 (prefill; other groups and \
             scales: e4m3 f32 panels)"
                .to_string(),
        ),
        QuantDesc::GroupedGemm {
            w,
            x: ActFormat::Float(_),
            ..
        } => {
            let decode = match (w, kern.isa()) {
                (WeightFormat::Mxfp4, crate::simd::Isa::Avx512 | crate::simd::Isa::Amx) => {
                    "; decode: avx512 in-register e2m1 LUT dot"
                }
                (WeightFormat::Mxfp4, crate::simd::Isa::Avx2) => "; decode: avx2 vpshufb e2m1 LUT dot",
                (WeightFormat::Mxfp4, crate::simd::Isa::Neon) => "; decode: neon tbl e2m1 LUT dot",
                _ => "",
            };
            Support::yes(format!("{isa} dequant-to-f32-panel {MR}x{NR} microkernel{decode}"))
        }
        QuantDesc::GroupedGemm { x: ActFormat::Fp8, .. } => {
            Support::yes(format!("{isa} e4m3 panels, f32 block sums promoted per 128"))
        }
        QuantDesc::GroupedGemm { x: ActFormat::Int8, .. } => {
            Support::yes(match (kern.amx().is_some(), kern.int8_kernel()) {
                (true, _) => "amx-int8 tdpbssd tiles exact i32".to_string(),
                (false, Some("vpdpbusd")) => "avx512-vnni vpdpbusd exact i32".to_string(),
                (false, Some("vpmaddwd")) => {
                    "avx2 vpmaddwd exact i32 (weights widened to i16 per 256-K block)".to_string()
                }
                (false, Some(k)) => format!("neon {k} exact i32"),
                (false, None) => "portable exact i32 dot".to_string(),
            })
        }
        QuantDesc::QuantizeFp8 { .. } | QuantDesc::QuantizeInt8 { .. } => Support::yes("parallel rows"),
    }
}

fn scales_of<'a>(t: &moehal_core::TensorRef<'a>, field: &'static str) -> Result<Scales<'a>> {
    use moehal_core::host::slice;
    Ok(match t.dtype() {
        moehal_core::DType::U8 => Scales::E8m0(slice::<u8>(t, OP, field)?),
        _ => Scales::F32(slice::<f32>(t, OP, field)?),
    })
}

/// Run a validated [`moehal_core::ops::GroupedGemmQ`] on host memory.
///
/// Errors: as [`grouped_gemm_q`]; `InvalidArgument` if a view is not host memory.
pub fn run_checked(kern: &Kernels, pool: &Pool, a: moehal_core::ops::GroupedGemmQ<'_>) -> Result<()> {
    let ydt = a.y.dtype();
    moehal_core::dispatch_float!(ydt, T => run_typed::<T>(kern, pool, a),
        else => Err(Error::unsupported(OP, "cpu", format!("y dtype {ydt}"))))
}

fn run_typed<T: Elem + moehal_core::Element>(
    kern: &Kernels,
    pool: &Pool,
    mut a: moehal_core::ops::GroupedGemmQ<'_>,
) -> Result<()> {
    use moehal_core::host::{slice, slice_mut};
    use moehal_core::ops::{ActFormat, WeightFormat};
    let d = a.dims();
    let w = match a.w_format {
        WeightFormat::Fp8Block => QWeights::Fp8Block {
            w: slice::<u8>(&a.w, OP, "w")?,
            scale: scales_of(&a.w_scale, "w_scale")?,
        },
        WeightFormat::Mxfp4 => QWeights::Mxfp4 {
            w: slice::<u8>(&a.w, OP, "w")?,
            scale: slice::<u8>(&a.w_scale, OP, "w_scale")?,
        },
        WeightFormat::Int8 => QWeights::Int8 {
            w: slice::<i8>(&a.w, OP, "w")?,
            scale: slice::<f32>(&a.w_scale, OP, "w_scale")?,
        },
    };
    let missing = || Error::invalid(OP, "x_scale", "quantized activations need x_scale");
    let x = match a.act() {
        ActFormat::Float(_) => QAct::Float(slice::<T>(&a.x, OP, "x")?),
        ActFormat::Fp8 => QAct::Fp8 {
            x: slice::<u8>(&a.x, OP, "x")?,
            scale: scales_of(a.x_scale.as_ref().ok_or_else(missing)?, "x_scale")?,
        },
        ActFormat::Int8 => QAct::Int8 {
            x: slice::<i8>(&a.x, OP, "x")?,
            scale: slice::<f32>(a.x_scale.as_ref().ok_or_else(missing)?, OP, "x_scale")?,
        },
    };
    let args = QGemmArgs {
        x,
        m: d.m,
        k: d.k,
        n: d.n,
        group_end: slice::<i64>(&a.group_end, OP, "group_end")?,
        w,
        row_scale: a
            .row_scale
            .as_ref()
            .map(|t| slice::<f32>(t, OP, "row_scale"))
            .transpose()?,
        bias: a.bias.as_ref().map(|t| slice::<T>(t, OP, "bias")).transpose()?,
    };
    let y = slice_mut::<T>(&mut a.y, OP, "y")?;
    grouped_gemm_q(kern, pool, &args, y)
}

/// Run a validated [`moehal_core::ops::QuantizeFp8`] on host memory.
///
/// Errors: `InvalidArgument` if a view is not host memory.
pub fn quantize_fp8_checked(pool: &Pool, mut a: moehal_core::ops::QuantizeFp8<'_>) -> Result<()> {
    use moehal_core::host::{slice, slice_mut};
    const OP: &str = "quantize_fp8";
    let (m, k) = (a.x.shape()[0], a.x.shape()[1]);
    let xdt = a.x.dtype();
    let xq = slice_mut::<u8>(&mut a.xq, OP, "xq")?;
    let scales = match a.x_scale.dtype() {
        moehal_core::DType::U8 => ScalesMut::E8m0(slice_mut::<u8>(&mut a.x_scale, OP, "x_scale")?),
        _ => ScalesMut::F32(slice_mut::<f32>(&mut a.x_scale, OP, "x_scale")?),
    };
    moehal_core::dispatch_float!(xdt, T => quantize_fp8::<T>(pool, slice::<T>(&a.x, OP, "x")?, m, k, xq, scales),
        else => Err(Error::unsupported(OP, "cpu", format!("x dtype {xdt}"))))
}

/// Run a validated [`moehal_core::ops::QuantizeInt8`] on host memory.
///
/// Errors: `InvalidArgument` if a view is not host memory.
pub fn quantize_int8_checked(pool: &Pool, mut a: moehal_core::ops::QuantizeInt8<'_>) -> Result<()> {
    use moehal_core::host::{slice, slice_mut};
    const OP: &str = "quantize_int8";
    let (m, k) = (a.x.shape()[0], a.x.shape()[1]);
    let xdt = a.x.dtype();
    let xq = slice_mut::<i8>(&mut a.xq, OP, "xq")?;
    // A separate borrow of the scale view: the two outputs are distinct TensorMut.
    let mut xs = a.x_scale;
    let s = slice_mut::<f32>(&mut xs, OP, "x_scale")?;
    moehal_core::dispatch_float!(xdt, T => quantize_int8::<T>(pool, slice::<T>(&a.x, OP, "x")?, m, k, xq, s),
        else => Err(Error::unsupported(OP, "cpu", format!("x dtype {xdt}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn oracle(x: &[i8], rows: usize, w: &[i8], nc: usize, k: usize) -> Vec<i32> {
        let mut out = vec![i32::MIN; rows * NR];
        for i in 0..rows {
            for c in 0..nc {
                out[i * NR + c] = (0..k).map(|kk| x[i * k + kk] as i32 * w[c * k + kk] as i32).sum();
            }
        }
        out
    }

    /// The int8 kernels behind the hook (AMX wiring on the emulated tile engine, and whatever
    /// `dot_i8` runs on each available ISA: VNNI, AVX2 vpmaddwd, SMMLA / SDOT) equal the exact sums,
    /// over the full i8 range (-128 included), K tails of every residue mod 16 and 64, decode (1..=7)
    /// and prefill (37) row counts, 1..=NR columns.
    #[test]
    fn int8_kernels_behind_the_hook_are_exact() {
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        for &(rows, nc, k) in &[
            (1, 1, 1),
            (2, 64, 256),
            (3, 5, 300),
            (7, 63, 17),
            (6, 64, 640),
            (1, 7, 0),
            (5, 33, 129),
            (37, 64, 136),
        ] {
            let x: Vec<i8> = (0..rows * k).map(|_| rng.gen()).collect();
            let mut w: Vec<i8> = (0..nc * k).map(|_| rng.gen()).collect();
            if k > 3 {
                // The extreme products: -128 * -128 in both operands' pairs.
                w[..2].fill(-128);
            }
            let mut xx = x.clone();
            if k > 3 {
                xx[..2].fill(-128);
            }
            let want = oracle(&xx, rows, &w, nc, k);
            let mut got = vec![i32::MIN; rows * NR];
            int8_dot_amx(TileEngine::Emulated, &xx, rows, &w, nc, k, &mut got).unwrap();
            assert_eq!(got, want, "amx emulated ({rows}, {nc}, {k})");
            for isa in crate::simd::Isa::all_available() {
                let kern = Kernels::for_isa(isa).unwrap();
                let mut got = vec![i32::MIN; rows * NR];
                int8_dot_hook(kern, &xx, rows, &w, nc, k, &mut got);
                assert_eq!(got, want, "{} hook ({rows}, {nc}, {k})", isa.name());
            }
        }
        let mut out = vec![0i32; NR];
        assert!(int8_dot_amx(TileEngine::Emulated, &[1; 3], 1, &[1; 4], 1, 4, &mut out).is_err());
        assert!(out.iter().all(|&v| v == 0), "nothing written on error");
    }

    fn call<T: Elem>(w: QWeights<'_>, x: QAct<'_, T>, ge: &[i64], m: usize, n: usize, k: usize) -> Vec<T> {
        let pool = Pool::new(2).unwrap();
        let mut y = vec![T::from_f32(f32::NAN); m * n];
        let a = QGemmArgs {
            x,
            m,
            k,
            n,
            group_end: ge,
            w,
            row_scale: None,
            bias: None,
        };
        grouped_gemm_q(Kernels::best(), &pool, &a, &mut y).unwrap();
        y
    }

    fn bits<T: Elem>(v: &[T]) -> Vec<u64> {
        let mut f = vec![0f32; v.len()];
        T::widen(v, &mut f);
        f.iter().map(|x| x.to_bits() as u64).collect()
    }

    /// `pack` (OPS.md §6): packed weights give bitwise the output of the unpacked ones, for
    /// fp8_block (f32 and E8M0 scales; partial last blocks and panels in N and K; weight-only f32
    /// and bf16 x, and fp8 x), mxfp4 and int8 (kept as they are); packing panels again is an error.
    #[test]
    fn packed_weights_give_bitwise_the_unpacked_output() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let (n, k) = (130usize, 200usize);
        let ge = [3i64, 3, 10];
        let (g, m) = (3usize, 11usize);
        let pool = Pool::new(2).unwrap();
        let code = |r: &mut ChaCha8Rng| {
            let b: u8 = r.gen();
            if b & 0x7F == 0x7F {
                b ^ 1
            } else {
                b
            }
        };
        let w: Vec<u8> = (0..g * n * k).map(|_| code(&mut rng)).collect();
        let nb = g * n.div_ceil(128) * k.div_ceil(128);
        let sf: Vec<f32> = (0..nb).map(|_| rng.gen_range(1e-3..1e-2)).collect();
        let se: Vec<u8> = (0..nb).map(|_| rng.gen_range(118..124)).collect();
        let xf: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let xb: Vec<half::bf16> = xf.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let xq: Vec<u8> = (0..m * k).map(|_| code(&mut rng)).collect();
        let xs: Vec<f32> = (0..m * k.div_ceil(128)).map(|_| rng.gen_range(1e-3..1e-2)).collect();
        for scale in [Scales::F32(&sf), Scales::E8m0(&se)] {
            let raw = QWeights::Fp8Block { w: &w, scale };
            let packed = PackedQWeights::pack(&pool, raw, g, n, k).unwrap();
            // Panels, except where bf16 prefill runs on AMX tiles (which read the NK rows).
            let amx = crate::grouped_gemm::bf16_kernel_default(Kernels::best()) == crate::grouped_gemm::Bf16Kernel::Amx;
            let codes = if amx { g * n * k } else { g * 3 * k * NR };
            assert_eq!(
                packed.bytes(),
                codes + scale.len() * if matches!(scale, Scales::F32(_)) { 4 } else { 1 }
            );
            let pw = packed.weights();
            assert_eq!(matches!(pw, QWeights::Fp8Panels { .. }), !amx);
            assert_eq!(
                bits(&call(raw, QAct::Float(&xf), &ge, m, n, k)),
                bits(&call(pw, QAct::Float(&xf), &ge, m, n, k))
            );
            assert_eq!(
                bits(&call(raw, QAct::Float(&xb), &ge, m, n, k)),
                bits(&call(pw, QAct::Float(&xb), &ge, m, n, k))
            );
            let x8: QAct<'_, f32> = QAct::Fp8 {
                x: &xq,
                scale: Scales::F32(&xs),
            };
            assert_eq!(bits(&call(raw, x8, &ge, m, n, k)), bits(&call(pw, x8, &ge, m, n, k)));
            // Panels are recognisably packed (rows kept as they are pack again, as mxfp4 and int8 do).
            assert_eq!(PackedQWeights::pack(&pool, pw, g, n, k).is_err(), !amx, "packed twice");
        }
        let wm: Vec<u8> = (0..g * n * k / 2).map(|_| rng.gen()).collect();
        let sm: Vec<u8> = (0..g * n * k / 32).map(|_| rng.gen_range(118..124)).collect();
        let wi: Vec<i8> = (0..g * n * k).map(|_| rng.gen()).collect();
        let si: Vec<f32> = (0..g * n).map(|_| rng.gen_range(1e-3..1e-2)).collect();
        let rawi = QWeights::Int8 { w: &wi, scale: &si };
        let pi = PackedQWeights::pack(&pool, rawi, g, n, k).unwrap();
        assert_eq!(
            bits(&call(rawi, QAct::Float(&xf), &ge, m, n, k)),
            bits(&call(pi.weights(), QAct::Float(&xf), &ge, m, n, k))
        );
        // mxfp4 needs K % 32 == 0: K = 192.
        let k2 = 192;
        let raw = QWeights::Mxfp4 {
            w: &wm[..g * n * k2 / 2],
            scale: &sm[..g * n * k2 / 32],
        };
        let pm = PackedQWeights::pack(&pool, raw, g, n, k2).unwrap();
        assert_eq!(
            bits(&call(raw, QAct::Float(&xf[..m * k2]), &ge, m, n, k2)),
            bits(&call(pm.weights(), QAct::Float(&xf[..m * k2]), &ge, m, n, k2))
        );
        // Wrong lengths are the op's errors.
        assert!(PackedQWeights::pack(
            &pool,
            QWeights::Fp8Block {
                w: &w[1..],
                scale: Scales::F32(&sf)
            },
            g,
            n,
            k
        )
        .is_err());
    }
}
