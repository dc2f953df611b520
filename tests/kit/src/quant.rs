//! Harness cases of OPS.md §6 (quantized `grouped_gemm`, `quantize_fp8`, `quantize_int8`), kept in
//! their own module: [`super::Spec::Quant`] forwards every step here.
//!
//! Conformance (OPS.md §6): the quantize ops are exact (bytes and scales; two NaN scales are equal);
//! quantized `grouped_gemm` is compared with the reference computed in f64 from the same quantized
//! inputs, at the output dtype's tolerance, except fp8 × fp8, which may use `1e-3` (DeepGEMM's
//! bound for accumulators that keep fewer bits between promotions) or the dtype's bound if larger.
//! A quantized result is never compared with the unquantized float GEMM.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{arithmetic_tol, first_diff, put, put_floats, put_randn, randn, rng, tolerance, Case, Outcome, Spec};
use moehal_core::ops::{ActFormat, GroupedGemmQ, QuantDesc, QuantizeFp8, QuantizeInt8, WeightFormat};
use moehal_core::quant::{f32_to_e4m3, ue8m0_ceil, ScaleFormat, E4M3_MAX, FP8_BLOCK};
use moehal_core::{Backend, DType, OpKind, TensorMut, TensorRef};

/// One §6 case.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantSpec {
    /// `grouped_gemm` with quantized weights.
    Gemm {
        /// Weight format.
        w: WeightFormat,
        /// Activation format (`Float(d)` means weight-only with `x` of dtype `d`).
        x: ActFormat,
        /// Output dtype (equal to `x`'s for float `x`).
        y: DType,
        /// Weight scales as E8M0 bytes (fp8_block only; mxfp4 always, int8 never).
        w_e8m0: bool,
        /// Activation scales as E8M0 bytes (fp8 `x` only).
        x_e8m0: bool,
        /// Rows per group (may be 0).
        groups: Vec<usize>,
        /// Rows past `group_end[G-1]` (must stay untouched).
        tail: usize,
        /// Output features.
        n: usize,
        /// Input features.
        k: usize,
        /// With bias.
        bias: bool,
        /// With row_scale.
        row_scale: bool,
    },
    /// `quantize_fp8`.
    QuantizeFp8 {
        /// Input dtype.
        dtype: DType,
        /// Rows.
        rows: usize,
        /// Columns.
        k: usize,
        /// E8M0 scales (else f32).
        ue8m0: bool,
        /// Plant non-finite, all-zero and saturating groups.
        specials: bool,
    },
    /// `quantize_int8`.
    QuantizeInt8 {
        /// Input dtype.
        dtype: DType,
        /// Rows.
        rows: usize,
        /// Columns.
        k: usize,
        /// Plant non-finite, all-zero and tiny rows.
        specials: bool,
    },
}

impl QuantSpec {
    pub(super) fn op(&self) -> OpKind {
        self.desc().kind()
    }
    pub(super) fn desc(&self) -> QuantDesc {
        match *self {
            QuantSpec::Gemm { w, x, y, .. } => QuantDesc::GroupedGemm { w, x, y },
            QuantSpec::QuantizeFp8 { dtype, ue8m0, .. } => QuantDesc::QuantizeFp8 {
                dtype,
                scale: if ue8m0 { ScaleFormat::Ue8m0 } else { ScaleFormat::F32 },
            },
            QuantSpec::QuantizeInt8 { dtype, .. } => QuantDesc::QuantizeInt8 { dtype },
        }
    }
    pub(super) fn label(&self) -> String {
        match self {
            QuantSpec::Gemm { w_e8m0, x_e8m0, .. } => {
                let mut s = self.desc().variant();
                if *w_e8m0 {
                    s.push_str(" ws:e8m0");
                }
                if *x_e8m0 {
                    s.push_str(" xs:e8m0");
                }
                s
            }
            _ => self.desc().variant(),
        }
    }
    /// Bandwidth bytes of one run ([`crate::cost`]): the packed weights and their scales of the
    /// groups with rows (GEMM); input read and codes written (quantize ops).
    pub(super) fn bytes(&self) -> f64 {
        match self {
            QuantSpec::Gemm { w, groups, n, k, .. } => {
                w.bytes(groups.iter().filter(|&&r| r > 0).count(), *n, *k) as f64
            }
            QuantSpec::QuantizeFp8 { dtype, rows: m, k, .. } | QuantSpec::QuantizeInt8 { dtype, rows: m, k, .. } => {
                ((m * k) * (dtype.size() + 1)) as f64
            }
        }
    }
    fn m(&self) -> usize {
        match self {
            QuantSpec::Gemm { groups, tail, .. } => groups.iter().sum::<usize>() + tail,
            QuantSpec::QuantizeFp8 { rows: m, .. } | QuantSpec::QuantizeInt8 { rows: m, .. } => *m,
        }
    }
}

/// E8M0 scale bytes in `lo..=hi` (`hi < 255`: never the NaN byte), written into `out`: one
/// random byte each, mapped by multiply-shift (`lo + b·(hi - lo + 1) / 256`; near-uniform, on all
/// cores, [`rng::fill_bytes_split`]: bench-sized mxfp4 scales are 2^27 bytes).
fn e8m0_bytes(rng: &mut ChaCha8Rng, out: &mut [u8], lo: u8, hi: u8) {
    let span = u16::from(hi - lo) + 1;
    rng::fill_bytes_split(rng, out, |b| lo + ((u16::from(b) * span) >> 8) as u8);
}

/// An int8 code from a random byte: the byte as i8, with -128 (outside OPS.md §6's symmetric
/// `[-127, 127]`) mapped to 0.
fn i8_code(b: u8) -> u8 {
    if b == 0x80 {
        0
    } else {
        b
    }
}

/// Spread of the fp8 weight codes: N(0, 1)·64 (`w_scale` ≈ `1/(64√K)` makes the weights
/// ≈ N(0, 1/K), so `y` is O(1)).
const W_SIGMA: f32 = 64.0;

/// Spread of the fp8 activation codes: `448 / 3`, the codes of N(0, 9) activations quantized per
/// 128-block (the amax of 128 draws is ≈ 2.9σ, which the block scale maps to 448), with
/// `x_scale` ≈ `3 / X_SIGMA` ≈ 0.02 as that quantization gives.
const X_SIGMA: f32 = E4M3_MAX / 3.0;

/// The standard normal quantile `Φ⁻¹(p)` for `p` in (0, 1) (Acklam's rational approximation,
/// relative error below 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    const P_LOW: f64 = 0.02425;
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - P_LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// 256 e4m3fn codes whose values are the quantiles `(i + ½) / 256` of N(0, σ²), in increasing
/// order, except that the four nearest zero are -2^-9, -0, +0 and 7·2^-9 (zeros and subnormals,
/// which normal draws hit and kernels must decode). A random byte indexes it: one byte per code
/// ([`rng::fill_bytes_split`]) instead of a normal draw and a conversion per code. Never a NaN
/// code (0x7F / 0xFF): every value is at most 2.9σ, saturated to 448.
fn e4m3_normal_codes(sigma: f32) -> [u8; 256] {
    let mut t = [0u8; 256];
    for (i, c) in t.iter_mut().enumerate() {
        *c = f32_to_e4m3((f64::from(sigma) * normal_quantile((i as f64 + 0.5) / 256.0)) as f32);
    }
    t[126..130].copy_from_slice(&[0x81, 0x80, 0x00, 0x07]);
    t
}

/// dtype and shape of each input, in the order [`fill_inputs`] writes them (the order `execute`
/// reads them): `x` (and `x_scale` for quantized `x`), `w`, `w_scale`, `group_end`, then the
/// optional `row_scale` and `bias`; the quantize ops' `x`.
pub(super) fn input_layout(q: &QuantSpec) -> Vec<(DType, Vec<usize>)> {
    let m = q.m();
    match *q {
        QuantSpec::Gemm {
            w,
            x,
            y,
            w_e8m0,
            x_e8m0,
            ref groups,
            n,
            k,
            bias,
            row_scale,
            ..
        } => {
            let g = groups.len();
            let kb = k.div_ceil(FP8_BLOCK);
            let mut v = match x {
                ActFormat::Float(d) => vec![(d, vec![m, k])],
                ActFormat::Fp8 => vec![
                    (DType::U8, vec![m, k]),
                    (if x_e8m0 { DType::U8 } else { DType::F32 }, vec![m, kb]),
                ],
                ActFormat::Int8 => vec![(DType::I8, vec![m, k]), (DType::F32, vec![m])],
            };
            let (codes, scales) = match w {
                WeightFormat::Fp8Block => (DType::U8, if w_e8m0 { DType::U8 } else { DType::F32 }),
                WeightFormat::Mxfp4 => (DType::U8, DType::U8),
                WeightFormat::Int8 => (DType::I8, DType::F32),
            };
            v.push((codes, w.w_shape(g, n, k).to_vec()));
            v.push((scales, w.scale_shape(g, n, k)));
            v.push((DType::I64, vec![g]));
            if row_scale {
                v.push((DType::F32, vec![m]));
            }
            if bias {
                v.push((y, vec![g, n]));
            }
            v
        }
        QuantSpec::QuantizeFp8 { dtype, k, .. } | QuantSpec::QuantizeInt8 { dtype, k, .. } => {
            vec![(dtype, vec![m, k])]
        }
    }
}

/// Write the inputs of `q` drawn from `rng` into `bufs` ([`input_layout`]'s entries, lengths
/// checked by the caller, [`Spec::fill_inputs`]).
pub(super) fn fill_inputs(q: &QuantSpec, rng: &mut ChaCha8Rng, bufs: &mut [&mut [u8]]) -> moehal_core::Result<()> {
    let m = q.m();
    match q {
        QuantSpec::Gemm {
            w,
            x,
            y,
            w_e8m0,
            x_e8m0,
            groups,
            n,
            k,
            bias,
            row_scale,
            ..
        } => {
            let (g, n, k) = (groups.len(), *n, *k);
            // x (and x_scale for quantized activations).
            let mut next = match x {
                ActFormat::Float(d) => {
                    put_randn(rng, *d, bufs[0], 1.0)?;
                    1
                }
                ActFormat::Fp8 => {
                    // Codes as N(0, 9) activations quantized per 128-block give them, with block
                    // scales around 3 / X_SIGMA; written in place (bench-sized M·K), one random
                    // byte per code. The quantiles reach 2.9σ (416); the outermost pair becomes
                    // ±448, the code of a block's amax.
                    let mut table = e4m3_normal_codes(X_SIGMA);
                    (table[0], table[255]) = (0xFE, 0x7E);
                    rng::fill_bytes_split(rng, bufs[0], |b| table[usize::from(b)]);
                    let nominal = 3.0 / X_SIGMA;
                    if *x_e8m0 {
                        // ue8m0_ceil(0.02) = 2^-5: the scales of the E8M0 quantization (2^-6, 2^-5).
                        let hi = ue8m0_ceil(nominal);
                        e8m0_bytes(rng, bufs[1], hi - 1, hi);
                    } else {
                        let kb = k.div_ceil(FP8_BLOCK);
                        put(bufs[1], (0..m * kb).map(|_| rng.gen_range(0.5f32..1.5) * nominal));
                    }
                    2
                }
                ActFormat::Int8 => {
                    rng::fill_bytes_split(rng, bufs[0], i8_code);
                    put(bufs[1], (0..m).map(|_| rng.gen_range(0.005f32..0.02)));
                    2
                }
            };
            // w and w_scale: values scaled so that y is O(1).
            let ns: usize = w.scale_shape(g, n, k).iter().product();
            let amp = 1.0 / (k as f32).sqrt().max(1.0);
            let f32_scales = |rng: &mut ChaCha8Rng, buf: &mut [u8]| {
                put(buf, (0..ns).map(|_| rng.gen_range(0.5f32..1.5) * amp / 64.0));
            };
            let (wb, rest) = bufs[next..].split_at_mut(1);
            match w {
                WeightFormat::Fp8Block => {
                    // N(0, 1)·64 codes, one random byte each (4 GiB at the V4-Flash bench shape).
                    let table = e4m3_normal_codes(W_SIGMA);
                    rng::fill_bytes_split(rng, wb[0], |b| table[usize::from(b)]);
                    // amp / 64 ≈ 2^(-6 - log2 √k): E8M0 bytes around 127 - 6 - log2 √k.
                    let centre = 127 - 6 - ((k as f32).sqrt().max(1.0).log2().round() as u8);
                    if *w_e8m0 {
                        e8m0_bytes(rng, rest[0], centre - 1, centre + 1);
                    } else {
                        f32_scales(rng, rest[0]);
                    }
                }
                WeightFormat::Mxfp4 => {
                    // Two E2M1 codes per byte, the first in the low nibble (`pack_nibbles`):
                    // every byte is two uniform codes.
                    rng::fill_bytes_split(rng, wb[0], |b| b);
                    let centre = 127 - 1 - ((k as f32).sqrt().max(1.0).log2().round() as u8);
                    e8m0_bytes(rng, rest[0], centre - 1, centre + 1);
                }
                WeightFormat::Int8 => {
                    rng::fill_bytes_split(rng, wb[0], i8_code);
                    f32_scales(rng, rest[0]);
                }
            }
            next += 2;
            let ends = groups.iter().scan(0i64, |acc, &c| {
                *acc += c as i64;
                Some(*acc)
            });
            put(bufs[next], ends);
            next += 1;
            if *row_scale {
                put(bufs[next], (0..m).map(|_| rng.gen_range(0.0f32..1.0)));
                next += 1;
            }
            if *bias {
                put_randn(rng, *y, bufs[next], 0.5)?;
            }
        }
        QuantSpec::QuantizeFp8 { dtype, k, specials, .. } | QuantSpec::QuantizeInt8 { dtype, k, specials, .. } => {
            let k = *k;
            if !*specials {
                // In place (bench-sized M·K): the bytes of the Vec path below without specials.
                return put_randn(rng, *dtype, bufs[0], 2.0);
            }
            let mut x = randn(rng, m * k, 2.0);
            if m >= 4 && k > 0 {
                // Row 0: a NaN in the first group; row 1: +inf at the end; row 2: all zero;
                // row 3: tiny values (below the fp8 amax floor and the int8 2^-64 cut).
                x[rng.gen_range(0..k.min(FP8_BLOCK))] = f32::NAN;
                x[2 * k - 1] = f32::INFINITY;
                x[2 * k..3 * k].fill(0.0);
                for v in &mut x[3 * k..4 * k] {
                    *v *= 1e-25;
                }
                if m >= 5 {
                    // Row 4: one large value, the rest rounding near zero (negative zeros too).
                    x[4 * k] = 3.0e4;
                }
            }
            put_floats(*dtype, bufs[0], &x)?;
        }
    }
    Ok(())
}

/// Output (dtype, shape) of each output, in order.
pub(super) fn output_specs(q: &QuantSpec) -> Vec<(DType, Vec<usize>)> {
    let m = q.m();
    match q {
        QuantSpec::Gemm { y, n, .. } => vec![(*y, vec![m, *n])],
        QuantSpec::QuantizeFp8 { k, ue8m0, .. } => vec![
            (DType::U8, vec![m, *k]),
            (
                if *ue8m0 { DType::U8 } else { DType::F32 },
                vec![m, k.div_ceil(FP8_BLOCK)],
            ),
        ],
        QuantSpec::QuantizeInt8 { k, .. } => vec![(DType::I8, vec![m, *k]), (DType::F32, vec![m])],
    }
}

/// Run the op on `be` with the uploaded inputs `v(i)` and outputs `outs`.
pub(super) fn execute<'a>(
    be: &dyn Backend,
    q: &QuantSpec,
    v: &dyn Fn(usize) -> TensorRef<'a>,
    mut outs: impl Iterator<Item = TensorMut<'a>>,
) -> moehal_core::Result<()> {
    match q {
        QuantSpec::Gemm {
            w, x, bias, row_scale, ..
        } => {
            let mut i = 0;
            let mut next = || {
                i += 1;
                v(i - 1)
            };
            let xv = next();
            let xs = (!matches!(x, ActFormat::Float(_))).then(&mut next);
            let wv = next();
            let ws = next();
            let ge = next();
            let rs = row_scale.then(&mut next);
            let b = bias.then(&mut next);
            let args = GroupedGemmQ {
                x: xv,
                x_scale: xs,
                w_format: *w,
                w: wv,
                w_scale: ws,
                group_end: ge,
                row_scale: rs,
                bias: b,
                y: outs.next().expect("y"),
            };
            be.grouped_gemm_quant(args.validate()?)
        }
        QuantSpec::QuantizeFp8 { .. } => {
            let args = QuantizeFp8 {
                x: v(0),
                xq: outs.next().expect("xq"),
                x_scale: outs.next().expect("x_scale"),
            };
            be.quantize_fp8(args.validate()?)
        }
        QuantSpec::QuantizeInt8 { .. } => {
            let args = QuantizeInt8 {
                x: v(0),
                xq: outs.next().expect("xq"),
                x_scale: outs.next().expect("x_scale"),
            };
            be.quantize_int8(args.validate()?)
        }
    }
}

/// The relative-error bound of a §6 grouped GEMM with activations `x` and output `y` (OPS.md
/// §6): the output dtype's [`tolerance`], and at least `1e-3` with fp8 activations.
pub fn gemm_tolerance(x: ActFormat, y: DType) -> f64 {
    match x {
        ActFormat::Fp8 => tolerance(y).max(1e-3),
        _ => tolerance(y),
    }
}

/// The bound [`compare`] holds a case to, as printed in the `tol` column of `moehal check`.
pub(super) fn tolerance_label(q: &QuantSpec) -> String {
    match q {
        QuantSpec::Gemm { x, y, .. } => format!("rel <= {:.0e}", gemm_tolerance(*x, *y)),
        QuantSpec::QuantizeFp8 { .. } | QuantSpec::QuantizeInt8 { .. } => "bitwise".into(),
    }
}

/// Judge `out` against `reference` by the §6 conformance rule.
pub(super) fn compare(q: &QuantSpec, out: &Outcome, reference: &Outcome) -> (String, Result<(), String>) {
    match q {
        QuantSpec::Gemm { x, y, groups, n, .. } => {
            let routed = groups.iter().sum::<usize>() * n;
            let (o, r) = (&out.outputs[0], &reference.outputs[0]);
            let es = y.size();
            if o.bytes[routed * es..] != r.bytes[routed * es..] {
                return (
                    "tail written".into(),
                    Err("rows past group_end[G-1] were written".into()),
                );
            }
            arithmetic_tol(gemm_tolerance(*x, *y), o, r, |i| i < routed)
        }
        QuantSpec::QuantizeFp8 { .. } | QuantSpec::QuantizeInt8 { .. } => {
            for (i, name) in ["xq", "x_scale"].into_iter().enumerate() {
                let (o, r) = (&out.outputs[i], &reference.outputs[i]);
                if o.dtype == DType::F32 {
                    // Scales: equal bits, or both NaN.
                    let (ov, rv) = (o.as_f64(), r.as_f64());
                    if let Some(p) = ov
                        .iter()
                        .zip(&rv)
                        .position(|(a, b)| !(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())))
                    {
                        return (
                            "mismatch".into(),
                            Err(format!("{name}[{p}] = {} differs from the reference {}", ov[p], rv[p])),
                        );
                    }
                } else if let Some(p) = first_diff(&o.bytes, &r.bytes, o.dtype.size()) {
                    return (
                        "mismatch".into(),
                        Err(format!(
                            "{name}[{p}] = {:#04x} differs from the reference {:#04x}",
                            o.bytes[p], r.bytes[p]
                        )),
                    );
                }
            }
            ("exact".into(), Ok(()))
        }
    }
}

fn gemm(
    name: &str,
    w: WeightFormat,
    x: ActFormat,
    y: DType,
    groups: &[usize],
    tail: usize,
    n: usize,
    k: usize,
) -> Case {
    Case::new(
        name,
        Spec::Quant(QuantSpec::Gemm {
            w,
            x,
            y,
            w_e8m0: w == WeightFormat::Mxfp4,
            x_e8m0: false,
            groups: groups.to_vec(),
            tail,
            n,
            k,
            bias: false,
            row_scale: false,
        }),
    )
}

fn with(mut c: Case, f: impl FnOnce(&mut bool, &mut bool, &mut bool, &mut bool)) -> Case {
    if let Spec::Quant(QuantSpec::Gemm {
        w_e8m0,
        x_e8m0,
        bias,
        row_scale,
        ..
    }) = &mut c.spec
    {
        f(w_e8m0, x_e8m0, bias, row_scale);
    }
    c
}

/// The §6 edge cases: every format and pairing, partial fp8 blocks in N and K, decode and prefill
/// shapes, empty groups, guard rows, bias and row_scale, E8M0 scales on either operand; the
/// quantize ops with non-finite, all-zero, tiny and saturating groups.
pub fn edge_cases() -> Vec<Case> {
    use ActFormat::{Float, Fp8, Int8};
    use WeightFormat as W;
    let (f32_, bf, f16_) = (DType::F32, DType::BF16, DType::F16);
    let mut v = vec![
        // Weight-only, each format, each float dtype.
        gemm(
            "q fp8_block w8a16 partial blocks",
            W::Fp8Block,
            Float(bf),
            bf,
            &[3, 0, 9],
            2,
            130,
            200,
        ),
        with(
            gemm(
                "q fp8_block e8m0 scale",
                W::Fp8Block,
                Float(f32_),
                f32_,
                &[5, 4],
                1,
                256,
                384,
            ),
            |w, _, b, r| {
                *w = true;
                *b = true;
                *r = true;
            },
        ),
        gemm("q fp8_block f16", W::Fp8Block, Float(f16_), f16_, &[7], 0, 64, 128),
        gemm(
            "q mxfp4 w4a16 decode",
            W::Mxfp4,
            Float(bf),
            bf,
            &[1, 0, 3, 6],
            2,
            192,
            256,
        ),
        gemm("q mxfp4 decode partial panel", W::Mxfp4, Float(bf), bf, &[2], 0, 70, 96),
        with(
            gemm("q mxfp4 prefill", W::Mxfp4, Float(bf), bf, &[150, 20], 3, 96, 320),
            |_, _, b, r| {
                *b = true;
                *r = true;
            },
        ),
        gemm("q mxfp4 f32", W::Mxfp4, Float(f32_), f32_, &[4, 9], 0, 64, 64),
        gemm("q mxfp4 f16", W::Mxfp4, Float(f16_), f16_, &[3], 1, 33, 32),
        gemm("q int8 w8a16", W::Int8, Float(bf), bf, &[5, 0, 2], 1, 100, 200),
        gemm("q int8 w8a16 f32", W::Int8, Float(f32_), f32_, &[8], 0, 64, 96),
        // fp8 × fp8.
        gemm(
            "q fp8 w8a8 partial blocks",
            W::Fp8Block,
            Fp8,
            bf,
            &[4, 0, 7],
            2,
            130,
            300,
        ),
        with(
            gemm("q fp8 w8a8 e8m0 scales", W::Fp8Block, Fp8, f32_, &[9, 2], 1, 128, 256),
            |w, x, b, r| {
                *w = true;
                *x = true;
                *b = true;
                *r = true;
            },
        ),
        gemm("q fp8 w8a8 prefill", W::Fp8Block, Fp8, f16_, &[150], 0, 64, 128),
        // int8 × int8 (K not a multiple of 64 exercises the VNNI tail).
        gemm("q int8 w8a8", W::Int8, Int8, bf, &[3, 0, 6], 2, 70, 200),
        with(
            gemm("q int8 w8a8 bias rs", W::Int8, Int8, f32_, &[1, 5], 1, 64, 64),
            |_, _, b, r| {
                *b = true;
                *r = true;
            },
        ),
        gemm("q int8 w8a8 prefill", W::Int8, Int8, f16_, &[160, 7], 0, 64, 130),
        gemm("q empty", W::Mxfp4, Float(bf), bf, &[0, 0], 3, 64, 64),
    ];
    for (dtype, ue8m0) in [(f32_, false), (f32_, true), (bf, true), (f16_, false)] {
        v.push(Case::new(
            format!("quantize_fp8 {dtype}{}", if ue8m0 { " ue8m0" } else { "" }),
            Spec::Quant(QuantSpec::QuantizeFp8 {
                dtype,
                rows: 7,
                k: 300,
                ue8m0,
                specials: true,
            }),
        ));
    }
    v.push(Case::new(
        "quantize_fp8 prefill",
        Spec::Quant(QuantSpec::QuantizeFp8 {
            dtype: bf,
            rows: 64,
            k: 512,
            ue8m0: true,
            specials: false,
        }),
    ));
    for dtype in [f32_, bf, f16_] {
        v.push(Case::new(
            format!("quantize_int8 {dtype}"),
            Spec::Quant(QuantSpec::QuantizeInt8 {
                dtype,
                rows: 6,
                k: 200,
                specials: true,
            }),
        ));
    }
    v
}

/// §6 cases at a preset's shapes: `gate_up` (`[2·width, hidden]`) and `down` (`[hidden, width]`) of
/// a few experts, weight-only in the preset's shipped format (or both fp8 and mxfp4 where none is
/// named), fp8 × fp8 and int8 × int8, at decode (1 row per expert) and a small prefill. Expert
/// counts and widths are scaled down (widths / 8, which keeps K a multiple of 32) to fit a test run.
pub fn preset_cases(p: &crate::presets::Preset) -> Vec<Case> {
    use ActFormat::{Float, Fp8, Int8};
    use WeightFormat as W;
    let bf = DType::BF16;
    let mut v = Vec::new();
    let s = p.scaled_widths(8);
    let (preset, hidden, width) = (p.name, s.hidden, s.expert_width);
    let gu = 2 * width;
    for (w, x) in [
        (W::Mxfp4, Float(bf)),
        (W::Fp8Block, Float(bf)),
        (W::Fp8Block, Fp8),
        (W::Int8, Int8),
    ] {
        let tag = format!("{preset} {} x {} (widths/8)", w.name(), x.name());
        v.push(gemm(&format!("{tag} gate_up decode"), w, x, bf, &[1, 1], 0, gu, hidden));
        v.push(gemm(
            &format!("{tag} down prefill"),
            w,
            x,
            bf,
            &[6, 0, 3],
            1,
            hidden,
            width,
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use moehal_core::quant::{e4m3_to_f32, e8m0_to_f32};

    #[test]
    fn normal_quantiles_are_the_tables_values() {
        // Φ⁻¹ at known points (central region and both tails).
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_963_985),
            (0.841_344_746, 1.0),
            (0.001, -3.090_232_306),
            (0.999, 3.090_232_306),
        ] {
            assert!(
                (normal_quantile(p) - z).abs() < 1e-6,
                "Φ⁻¹({p}) = {}",
                normal_quantile(p)
            );
        }
        for sigma in [W_SIGMA, X_SIGMA] {
            let t = e4m3_normal_codes(sigma);
            let v: Vec<f64> = t.iter().map(|&c| f64::from(e4m3_to_f32(c))).collect();
            assert!(t.iter().all(|c| c & 0x7F != 0x7F), "σ {sigma}: a NaN code");
            assert!(v.windows(2).all(|p| p[0] <= p[1]), "σ {sigma}: not increasing");
            // Zeros and subnormals (below 2^-6) are in; the spread is σ's (the 256 quantiles
            // cut the tails at 2.9σ: a little under σ).
            assert!(t.contains(&0) && t.contains(&0x80));
            assert!(v.iter().filter(|x| x.abs() > 0.0 && x.abs() < 1.0 / 64.0).count() >= 2);
            let mean = v.iter().sum::<f64>() / 256.0;
            let sd = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 256.0).sqrt();
            let s = f64::from(sigma);
            assert!(
                mean.abs() < 0.02 * s && (0.9 * s..1.02 * s).contains(&sd),
                "σ {sigma}: mean {mean} sd {sd}"
            );
        }
    }

    /// The §6 GEMM's drawn inputs hold OPS.md §6's domain at every pairing: codes never NaN
    /// (e4m3) or -128 (int8), scales finite and positive, E8M0 bytes not 255, and the weights'
    /// and activations' spreads are those that make `y` O(1) (x ≈ 3·N(0,1) for fp8 x, w ≈ N(0,1/K)
    /// for fp8 weights).
    #[test]
    fn gemm_inputs_are_in_the_ops_domain_with_o1_magnitudes() {
        for (w, x, w_e8m0, x_e8m0) in [
            (WeightFormat::Fp8Block, ActFormat::Fp8, false, false),
            (WeightFormat::Fp8Block, ActFormat::Fp8, true, true),
            (WeightFormat::Mxfp4, ActFormat::Float(DType::BF16), true, false),
            (WeightFormat::Int8, ActFormat::Int8, false, false),
        ] {
            let (n, k) = (256, 512);
            let q = QuantSpec::Gemm {
                w,
                x,
                y: DType::BF16,
                w_e8m0,
                x_e8m0,
                groups: vec![40, 0, 30],
                tail: 2,
                n,
                k,
                bias: false,
                row_scale: false,
            };
            let layout = input_layout(&q);
            let mut bufs: Vec<Vec<u8>> = layout
                .iter()
                .map(|(d, s)| vec![0x7F; s.iter().product::<usize>() * d.size()])
                .collect();
            let mut slices: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
            fill_inputs(&q, &mut crate::rng::seeded(4), &mut slices).unwrap();
            let (xi, wi) = if matches!(x, ActFormat::Float(_)) {
                (0, 1)
            } else {
                (0, 2)
            };
            let tag = format!("{w:?} x {x:?} e8m0 {w_e8m0}/{x_e8m0}");
            let f32s = |b: &[u8]| -> Vec<f32> {
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            };
            let scales_ok = |i: usize| match layout[i].0 {
                DType::F32 => f32s(&bufs[i]).iter().all(|s| s.is_finite() && *s > 0.0),
                _ => bufs[i].iter().all(|&b| b != 255),
            };
            assert!(scales_ok(wi + 1), "{tag}: w_scale");
            let sd = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
            match x {
                ActFormat::Fp8 => {
                    assert!(bufs[xi].iter().all(|c| c & 0x7F != 0x7F), "{tag}: x NaN code");
                    assert!(scales_ok(1), "{tag}: x_scale");
                    // Dequantized x ≈ 3·N(0, 1) (E8M0 rounds the scale up to 2^-5 or down to 2^-6).
                    let kb = k.div_ceil(FP8_BLOCK);
                    let xs: Vec<f32> = if x_e8m0 {
                        bufs[1].iter().map(|&b| e8m0_to_f32(b)).collect()
                    } else {
                        f32s(&bufs[1])
                    };
                    let v: Vec<f64> = bufs[xi]
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| f64::from(e4m3_to_f32(c) * xs[(i / k) * kb + (i % k) / FP8_BLOCK]))
                        .collect();
                    assert!((2.0..4.5).contains(&sd(&v)), "{tag}: x sd {}", sd(&v));
                }
                ActFormat::Int8 => {
                    assert!(!bufs[xi].contains(&0x80), "{tag}: x -128");
                    assert!(scales_ok(1), "{tag}: x_scale");
                }
                ActFormat::Float(_) => {}
            }
            match w {
                WeightFormat::Fp8Block => {
                    assert!(bufs[wi].iter().all(|c| c & 0x7F != 0x7F), "{tag}: w NaN code");
                    let ws: Vec<f32> = if w_e8m0 {
                        bufs[wi + 1].iter().map(|&b| e8m0_to_f32(b)).collect()
                    } else {
                        f32s(&bufs[wi + 1])
                    };
                    let (nb, kb) = (n.div_ceil(FP8_BLOCK), k.div_ceil(FP8_BLOCK));
                    let v: Vec<f64> = bufs[wi]
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| {
                            let (g, r, col) = (i / (n * k), (i / k) % n, i % k);
                            f64::from(e4m3_to_f32(c) * ws[(g * nb + r / FP8_BLOCK) * kb + col / FP8_BLOCK])
                        })
                        .collect();
                    // w ≈ N(0, 1/K), within the scales' [0.5, 1.5) (or the E8M0 power of two).
                    let rel = sd(&v) * (k as f64).sqrt();
                    assert!((0.7..1.5).contains(&rel), "{tag}: w sd·√K {rel}");
                }
                WeightFormat::Int8 => assert!(!bufs[wi].contains(&0x80), "{tag}: w -128"),
                WeightFormat::Mxfp4 => {}
            }
        }
    }
}
