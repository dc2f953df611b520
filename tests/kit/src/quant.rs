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

use super::{arithmetic_tol, first_diff, normal, put, put_floats, put_randn, randn, tolerance, Case, Outcome, Spec};
use moehal_core::ops::{ActFormat, GroupedGemmQ, QuantDesc, QuantizeFp8, QuantizeInt8, WeightFormat};
use moehal_core::quant::{f32_to_e4m3, quantize_fp8_group, ScaleFormat, FP8_BLOCK};
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

/// E8M0 scale bytes uniform in `lo..=hi`, written into `out`.
fn e8m0_bytes(rng: &mut ChaCha8Rng, out: &mut [u8], lo: u8, hi: u8) {
    for b in out {
        *b = rng.gen_range(lo..=hi);
    }
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
                    let f = randn(rng, m * k, 3.0);
                    let kb = k.div_ceil(FP8_BLOCK);
                    let fmt = if *x_e8m0 { ScaleFormat::Ue8m0 } else { ScaleFormat::F32 };
                    let (codes, scales) = bufs.split_at_mut(1);
                    for r in 0..m {
                        for b in 0..kb {
                            let (k0, k1) = (r * k + b * FP8_BLOCK, r * k + ((b + 1) * FP8_BLOCK).min(k));
                            let (s, byte) = quantize_fp8_group(&f[k0..k1], fmt, &mut codes[0][k0..k1]);
                            let i = r * kb + b;
                            if *x_e8m0 {
                                scales[0][i] = byte;
                            } else {
                                scales[0][4 * i..4 * i + 4].copy_from_slice(&s.to_le_bytes());
                            }
                        }
                    }
                    2
                }
                ActFormat::Int8 => {
                    put(bufs[0], (0..m * k).map(|_| rng.gen_range(-127i8..=127)));
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
                    for c in wb[0].iter_mut() {
                        *c = f32_to_e4m3(normal(rng) * 64.0);
                    }
                    // amp / 64 ≈ 2^(-6 - log2 √k): E8M0 bytes around 127 - 6 - log2 √k.
                    let centre = 127 - 6 - ((k as f32).sqrt().max(1.0).log2().round() as u8);
                    if *w_e8m0 {
                        e8m0_bytes(rng, rest[0], centre - 1, centre + 1);
                    } else {
                        f32_scales(rng, rest[0]);
                    }
                }
                WeightFormat::Mxfp4 => {
                    // Two E2M1 codes per byte, the first in the low nibble (`pack_nibbles`).
                    for c in wb[0].iter_mut() {
                        let lo = rng.gen_range(0u8..16);
                        *c = lo | rng.gen_range(0u8..16) << 4;
                    }
                    let centre = 127 - 1 - ((k as f32).sqrt().max(1.0).log2().round() as u8);
                    e8m0_bytes(rng, rest[0], centre - 1, centre + 1);
                }
                WeightFormat::Int8 => {
                    put(wb[0], (0..g * n * k).map(|_| rng.gen_range(-127i8..=127)));
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

/// The bound [`compare`] holds a case to, as printed in the `tol` column of `moehal check`.
pub(super) fn tolerance_label(q: &QuantSpec) -> String {
    match q {
        QuantSpec::Gemm { x, y, .. } => {
            let tol = match x {
                ActFormat::Fp8 => tolerance(*y).max(1e-3),
                _ => tolerance(*y),
            };
            format!("rel <= {tol:.0e}")
        }
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
            let tol = match x {
                ActFormat::Fp8 => tolerance(*y).max(1e-3),
                _ => tolerance(*y),
            };
            arithmetic_tol(tol, o, r, |i| i < routed)
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
