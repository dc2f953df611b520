//! Benchmark cases of OPS.md §6 (quantized `grouped_gemm`, `quantize_fp8`, `quantize_int8`), kept
//! apart from [`crate::bench`], which forwards its [`ShapeKind::QGemm`] and [`ShapeKind::Quantize`]
//! steps here.
//!
//! Shapes ([`quant_shapes`]): the Qwen3-30B-A3B gate_up projection (K 2048, N 1536, 128 experts,
//! top-8) and the DeepSeek-V4-Flash gate_up projection (K 4096, N 4096, 256 experts, top-6), each in
//! `fp8_block` × bf16 (w8a16), `mxfp4` × bf16 (w4a16), `fp8_block` × fp8 and `int8` × int8 (W8A8),
//! at 1024 tokens (prefill) and one token with cold weights (rotating over disjoint expert sets, as
//! the bf16 [`ShapeKind::DecodeCold`] case), plus `quantize_fp8` / `quantize_int8` of 1024 and 4096
//! bf16 rows. Every quantized GEMM row is compared with moehal's own bf16 row of the same shape and
//! backend in the same run (`vs bf16` = bf16 seconds / these seconds): the bf16 baselines of the
//! V4-Flash shape are added here, those of the Qwen3 shape are default shapes already.
//!
//! Inputs come from the testkit's one recipe, as every other shape's
//! (`moehal_testkit::bench::Shape::fill_inputs`: the §6 GEMM spec's `Spec::fill_inputs`, the cold
//! rows' later `group_end`s after it): e4m3 codes of normal spread (never NaN), any byte for packed
//! E2M1 pairs, i8 values in [-127, 127], f32 scales and E8M0 bytes (never 255) sized so that `y` is
//! O(1) and finite; drawn one random byte per code, in place and on all cores, so the 4 GiB of
//! V4-Flash fp8 weights take seconds. The buffers are in this module's order (x, w, w_scale,
//! \[x_scale\], group_end(s)), which the kit maps to the spec's.

use moehal_core::ops::{ActFormat, GroupedGemmQ, QuantizeFp8, QuantizeInt8, WeightFormat};
use moehal_core::quant::{ScaleFormat, FP8_BLOCK};
use moehal_core::{Backend, Buffer, DType, OpKind, Result};

use crate::bench::{BenchShape, ShapeKind};
use crate::pipeline::human_bytes;

pub use moehal_testkit::bench::{expert_bytes, qgemm_y};

/// Run one [`ShapeKind::QGemm`] step: `inp(i)` is input `i` of [`ShapeKind::fill_inputs`]; cold shapes use set
/// `step % sets`.
pub(crate) fn run_qgemm<'b>(
    backend: &dyn Backend,
    kind: &ShapeKind,
    inp: &dyn Fn(usize) -> &'b Buffer,
    step: usize,
    y: &mut Buffer,
) -> Result<()> {
    let ShapeKind::QGemm {
        w,
        x,
        num_experts: experts,
        k,
        n,
        tokens,
        topk,
        sets,
    } = *kind
    else {
        return Ok(());
    };
    let m = tokens * topk;
    let xdt = match x {
        ActFormat::Float(d) => d,
        ActFormat::Fp8 => DType::U8,
        ActFormat::Int8 => DType::I8,
    };
    let sdt = if w == WeightFormat::Mxfp4 {
        DType::U8
    } else {
        DType::F32
    };
    let (x_scale, ge0) = match x {
        ActFormat::Float(_) => (None, 3),
        ActFormat::Fp8 => (Some(inp(3).view(DType::F32, &[m, k.div_ceil(FP8_BLOCK)])), 4),
        ActFormat::Int8 => (Some(inp(3).view(DType::F32, &[m])), 4),
    };
    let set = sets.map_or(0, |s| step % s);
    let args = GroupedGemmQ {
        x: inp(0).view(xdt, &[m, k]),
        x_scale,
        w_format: w,
        w: inp(1).view(w.dtype(), &w.w_shape(experts, n, k)),
        w_scale: inp(2).view(sdt, &w.scale_shape(experts, n, k)),
        group_end: inp(ge0 + set).view(DType::I64, &[experts]),
        row_scale: None,
        bias: None,
        y: y.view_mut(qgemm_y(x), &[m, n]),
    };
    backend.grouped_gemm_quant(args.validate()?)
}

/// Run one [`ShapeKind::Quantize`] step on bf16 `x` (input 0) into `outs` (`xq`, `x_scale`).
pub(crate) fn run_quantize(
    backend: &dyn Backend,
    kind: &ShapeKind,
    x: &Buffer,
    dt: DType,
    outs: &mut [Buffer],
) -> Result<()> {
    let ShapeKind::Quantize { scale, rows, k } = *kind else {
        return Ok(());
    };
    let [xq, xs] = outs else {
        return Err(moehal_core::Error::invalid(
            "bench",
            "outputs",
            "quantize needs 2 outputs",
        ));
    };
    match scale {
        Some(fmt) => {
            let sdt = if fmt == ScaleFormat::Ue8m0 {
                DType::U8
            } else {
                DType::F32
            };
            let args = QuantizeFp8 {
                x: x.view(dt, &[rows, k]),
                xq: xq.view_mut(DType::U8, &[rows, k]),
                x_scale: xs.view_mut(sdt, &[rows, k.div_ceil(FP8_BLOCK)]),
            };
            backend.quantize_fp8(args.validate()?)
        }
        None => {
            let args = QuantizeInt8 {
                x: x.view(dt, &[rows, k]),
                xq: xq.view_mut(DType::I8, &[rows, k]),
                x_scale: xs.view_mut(DType::F32, &[rows]),
            };
            backend.quantize_int8(args.validate()?)
        }
    }
}

/// The bf16 float shape a quantized GEMM row is compared with: same K, N, top-k; same experts and
/// tokens for prefill; for cold decode any bf16 cold shape of the same K, N and top-k.
pub(crate) fn is_baseline(q: &ShapeKind, b: &BenchShape) -> bool {
    if b.dtype != DType::BF16 {
        return false;
    }
    match (q, &b.kind) {
        (
            ShapeKind::QGemm {
                num_experts: experts,
                k,
                n,
                tokens,
                topk,
                sets: None,
                ..
            },
            ShapeKind::Gemm {
                num_experts: be,
                k: bk,
                n: bn,
                tokens: bt,
                topk: btk,
            },
        ) => (experts, k, n, tokens, topk) == (be, bk, bn, bt, btk),
        (
            ShapeKind::QGemm {
                k,
                n,
                topk,
                sets: Some(_),
                ..
            },
            ShapeKind::DecodeCold {
                k: bk,
                n: bn,
                topk: btk,
                ..
            },
        ) => (k, n, topk) == (bk, bn, btk),
        _ => false,
    }
}

/// The (weight, activation) pairings benched.
const PAIRINGS: [(WeightFormat, ActFormat); 4] = [
    (WeightFormat::Fp8Block, ActFormat::Float(DType::BF16)),
    (WeightFormat::Mxfp4, ActFormat::Float(DType::BF16)),
    (WeightFormat::Fp8Block, ActFormat::Fp8),
    (WeightFormat::Int8, ActFormat::Int8),
];

/// The notes of a quantized (or V4-Flash bf16) cold-decode row of `ce` of the model's `experts`
/// experts, top-`topk`, rotating over `bytes` of weights: what it rotates over (and how many times
/// the L3 that is), and, whenever the memory budget cut it below the model's experts, by how much
/// (issue 16: a row cut to 126 of 256 experts said nothing). These rows take as many experts as
/// the budget holds, not the fewest over 4 × L3 as the Qwen3 bf16 row does.
fn cold_notes(s: &mut BenchShape, ce: usize, experts: usize, topk: usize, bytes: f64) {
    let l3 = crate::bench::l3_cache().0;
    s.notes.push(format!(
        "rotates over {} ({:.1} x the L3 of {})",
        human_bytes(bytes),
        bytes / l3 as f64,
        human_bytes(l3 as f64)
    ));
    if ce < experts {
        s.notes.push(format!(
            "cut to fit memory: {experts} -> {ce} experts ({} sets of top-{topk})",
            ce / topk
        ));
    }
    // The bench help's rule for every cold row: under 4 x L3 it says so (fresh-user report,
    // session 9: a 204 MiB mxfp4 rotation sat in a 300 MiB L3 and its `vs bf16` said nothing).
    if bytes < 4.0 * l3 as f64 {
        s.notes.push(format!(
            "not fully cold: {} of weights, under 4 x L3 (the model's {experts} experts{}); its `vs bf16` is not like with like",
            human_bytes(bytes),
            if ce < experts { ", cut by memory" } else { "" }
        ));
    }
}

/// The §6 shapes (see the module doc) for `tokens` overriding the prefill token count (counts
/// above 1 give prefill rows; 1, or no override, gives the cold decode rows), within `mem_budget`
/// bytes of inputs per shape (experts are dropped to fit, with a note, as for the float shapes).
pub fn quant_shapes(tokens: Option<&[usize]>, mem_budget: f64) -> Vec<BenchShape> {
    let prefill: Vec<usize> = tokens.map_or_else(|| vec![1024], |t| t.iter().copied().filter(|&t| t > 1).collect());
    let decode = tokens.is_none_or(|t| t.contains(&1));
    let mut v = Vec::new();
    // Weights get 90 % of the budget: the activations and group ends need the rest.
    let mem_budget = 0.9 * mem_budget;
    // (origin, K, N, experts, top-k); the Qwen3 bf16 baselines are default shapes already.
    let models = [
        ("qwen3-30b-a3b gate_up", 2048, 1536, 128, 8, false),
        ("deepseek-v4-flash gate_up", 4096, 4096, 256, 6, true),
    ];
    for (origin, k, n, experts, topk, add_baseline) in models {
        let bf16_expert = (n * k * 2) as f64;
        // Prefill: the bf16 baseline's expert count, so rows per expert match.
        let e = ((mem_budget / bf16_expert) as usize).clamp(8, experts);
        let scaled = |s: &mut BenchShape, e: usize| {
            if e < experts {
                s.notes.push(format!(
                    "scaled by expert count to fit memory: {experts} -> {e} experts (top-{topk} kept)"
                ));
            }
        };
        for &t in &prefill {
            if add_baseline {
                let mut s = BenchShape::new(
                    OpKind::GroupedGemm,
                    DType::BF16,
                    ShapeKind::Gemm {
                        num_experts: e,
                        k,
                        n,
                        tokens: t,
                        topk,
                    },
                    origin,
                );
                scaled(&mut s, e);
                v.push(s);
            }
            for (w, x) in PAIRINGS {
                let mut s = BenchShape::new(
                    OpKind::GroupedGemm,
                    qgemm_y(x),
                    ShapeKind::QGemm {
                        w,
                        x,
                        num_experts: e,
                        k,
                        n,
                        tokens: t,
                        topk,
                        sets: None,
                    },
                    origin,
                );
                scaled(&mut s, e);
                v.push(s);
            }
        }
        if decode {
            if add_baseline {
                let ce = ((mem_budget / bf16_expert) as usize).clamp(2 * topk, experts) / topk * topk;
                let mut s = BenchShape::new(
                    OpKind::GroupedGemm,
                    DType::BF16,
                    ShapeKind::DecodeCold {
                        num_experts: ce,
                        k,
                        n,
                        topk,
                        sets: ce / topk,
                        l3: crate::bench::l3_cache().0,
                    },
                    format!("{origin} decode, cold"),
                );
                cold_notes(&mut s, ce, experts, topk, ce as f64 * bf16_expert);
                v.push(s);
            }
            for (w, x) in PAIRINGS {
                let per = expert_bytes(w, n, k) as f64;
                let ce = ((mem_budget / per) as usize).clamp(2 * topk, experts) / topk * topk;
                let mut s = BenchShape::new(
                    OpKind::GroupedGemm,
                    qgemm_y(x),
                    ShapeKind::QGemm {
                        w,
                        x,
                        num_experts: ce,
                        k,
                        n,
                        tokens: 1,
                        topk,
                        sets: Some(ce / topk),
                    },
                    format!("{origin} decode, cold"),
                );
                cold_notes(&mut s, ce, experts, topk, ce as f64 * per);
                v.push(s);
            }
        }
    }
    for t in tokens.map_or_else(|| vec![1024, 4096], |t| t.to_vec()) {
        for (k, origin) in [(2048, "qwen3-30b-a3b hidden"), (4096, "deepseek-v4-flash hidden")] {
            for (op, scale) in [
                (OpKind::QuantizeFp8, Some(ScaleFormat::F32)),
                (OpKind::QuantizeFp8, Some(ScaleFormat::Ue8m0)),
                (OpKind::QuantizeInt8, None),
            ] {
                v.push(BenchShape::new(
                    op,
                    DType::BF16,
                    ShapeKind::Quantize { scale, rows: t, k },
                    origin,
                ));
            }
        }
    }
    v
}
