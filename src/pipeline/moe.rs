//! One full MoE layer forward built from the ops of `OPS.md` §1–§3:
//!
//! `router_topk → moe_permute (with x) → grouped_gemm gate_up (NK, [E, 2I, H]) → swiglu (preset
//! limit) → grouped_gemm down (NK, [E, H, I]) → moe_combine`, plus the shared expert(s) of the
//! preset as a dense `grouped_gemm` with one group over all `T` tokens, `swiglu` and `down`.
//!
//! The shared output is added inside `moe_combine`: its rows are written after the `T*k` routed
//! rows of the same `y` buffer, and `slot_row`/`weights` are extended on the host (`T*(k+S)`
//! small integers) with one slot per shared expert of weight 1. The sum is then one f32
//! accumulation rounded once, on the device, exactly as the reference does it.
//!
//! Weights are seeded uniform values scaled by `sqrt(3 / fan_in)` (variance `1/fan_in`), so
//! activations stay O(1) through the layer; the router logits are seeded f32 inputs shared by
//! every backend, so routing is identical and the final outputs are comparable.

use std::time::Instant;

use moehal_core::ops::{
    GroupedGemm, GroupedGemmQ, MoeCombine, MoePermute, RouterHash, RouterTopk, Swiglu, WeightFormat, WeightLayout,
};
use moehal_core::{Backend, BackendExt, Buffer, DType, Error, Result, TensorMut, TensorRef};

use super::{download_floats, fill_random, random_floats, stream_seed, upload_bytes, UniformStream};
use crate::presets::Preset;

/// Bytes of expert weights (routed + shared, gate_up + down) of `p` in `dtype`.
pub fn weight_bytes(p: &Preset, dtype: DType) -> u64 {
    let per_expert = 3 * p.hidden as u64 * p.expert_width as u64 * dtype.size() as u64;
    (p.num_experts + p.shared_experts) as u64 * per_expert
}

/// Bytes of one expert (gate_up `[2I, H]` and down `[H, I]`) of `p` stored in `w`: packed codes
/// plus scales ([`WeightFormat::bytes`]; mxfp4 is about 0.53 bytes per element, not 1).
pub fn quant_expert_bytes(p: &Preset, w: WeightFormat) -> u64 {
    (w.bytes(1, 2 * p.expert_width, p.hidden) + w.bytes(1, p.hidden, p.expert_width)) as u64
}

/// Bytes of the expert weights of `p` as shipped: routed experts in `routed`, shared experts in
/// `shared` (codes plus scales).
pub fn quant_weight_bytes(p: &Preset, routed: WeightFormat, shared: WeightFormat) -> u64 {
    p.num_experts as u64 * quant_expert_bytes(p, routed) + p.shared_experts as u64 * quant_expert_bytes(p, shared)
}

/// The shipped weight formats of a run: `(routed, shared)` when the experts are quantized, `None`
/// when they are float tensors of the activation dtype.
pub type ExpertFormats = Option<(WeightFormat, WeightFormat)>;

/// Bytes of the expert weights of `p` as a run stores them: [`quant_weight_bytes`] (packed codes
/// plus scales) when `quant` names formats, else [`weight_bytes`] in the float `dtype`. The one
/// rule for what a layer's weights cost, used by `moe` and `moe --ep` alike (issue 10).
pub fn expert_weight_bytes(p: &Preset, dtype: DType, quant: ExpertFormats) -> u64 {
    match quant {
        Some((routed, shared)) => quant_weight_bytes(p, routed, shared),
        None => weight_bytes(p, dtype),
    }
}

/// Scale `p` by expert count so that its weights, stored as a run stores them, fit `budget` bytes:
/// [`fit_experts_quant`] at the packed bytes when `quant` names formats, else [`fit_experts`] in
/// the float `dtype`. The one budget rule of single-process and expert-parallel MoE (issue 10:
/// the EP path once budgeted quantized experts at one byte per element).
pub fn fit_experts_for(p: &Preset, dtype: DType, quant: ExpertFormats, budget: u64) -> (Preset, Vec<String>) {
    match quant {
        Some((routed, shared)) => fit_experts_quant(p, routed, shared, budget),
        None => fit_experts(p, dtype, budget),
    }
}

/// [`fit_experts`] for quantized weights: routed experts cost [`quant_expert_bytes`] in `routed`,
/// shared experts in `shared`, so an mxfp4 preset keeps as many experts as its packed bytes allow.
pub fn fit_experts_quant(p: &Preset, routed: WeightFormat, shared: WeightFormat, budget: u64) -> (Preset, Vec<String>) {
    fit_experts_by(
        p,
        quant_expert_bytes(p, routed),
        quant_expert_bytes(p, shared),
        &format!("{routed} routed / {shared} shared"),
        budget,
    )
}

/// Scale `p` by expert count so that its weights fit `budget` bytes in `dtype` (OPS.md: "presets
/// that do not fit a machine are scaled by expert count ... and say so").
///
/// `k` and the routing rule are kept; `E` is lowered to the largest count that fits, then to a
/// multiple of `n_group` when the preset limits groups, keeping `k <= topk_group * E / n_group`
/// and at least 2 experts per group for `top2_sum` (when no group count works, the group limit is
/// dropped, and that is said too). Returns the preset to run and one note per change.
pub fn fit_experts(p: &Preset, dtype: DType, budget: u64) -> (Preset, Vec<String>) {
    let per_expert = 3 * p.hidden as u64 * p.expert_width as u64 * dtype.size() as u64;
    fit_experts_by(p, per_expert, per_expert, &dtype.to_string(), budget)
}

/// [`fit_experts`] with the bytes of one routed and one shared expert given (`what` names the
/// storage in the note).
fn fit_experts_by(p: &Preset, routed: u64, shared: u64, what: &str, budget: u64) -> (Preset, Vec<String>) {
    let mut notes = Vec::new();
    let bytes_of = |q: &Preset| q.num_experts as u64 * routed + q.shared_experts as u64 * shared;
    let full = bytes_of(p);
    if full <= budget {
        return (*p, notes);
    }
    let fits = (budget.saturating_sub(p.shared_experts as u64 * shared) / routed.max(1)) as usize;
    let mut e = fits.clamp(p.topk, p.num_experts);
    let mut out = Preset { num_experts: e, ..*p };
    if let Some(g) = p.group {
        let valid = |e: usize, n: usize| {
            n > 1
                && e % n == 0
                && p.topk <= g.topk_group.min(n) * (e / n)
                && (g.score != moehal_core::ops::GroupScore::Top2Sum || e / n >= 2)
        };
        // Prefer keeping n_group: round E down to a multiple of it.
        let mut chosen = None;
        let mut e_try = e - e % g.n_group;
        while e_try >= p.topk && e_try > 0 {
            if valid(e_try, g.n_group) {
                chosen = Some((e_try, g.n_group));
                break;
            }
            e_try -= g.n_group;
        }
        if chosen.is_none() {
            chosen = (2..g.n_group).rev().find(|&n| valid(e, n)).map(|n| (e, n));
        }
        match chosen {
            Some((e2, n)) => {
                e = e2;
                let topk_group = g.topk_group.min(n);
                out = Preset {
                    num_experts: e,
                    group: Some(moehal_core::ops::GroupLimit {
                        n_group: n,
                        topk_group,
                        score: g.score,
                    }),
                    ..*p
                };
                if n != g.n_group || topk_group != g.topk_group {
                    notes.push(format!(
                        "group limit adjusted to stay valid: n_group {} -> {n}, topk_group {} -> {topk_group}",
                        g.n_group, g.topk_group
                    ));
                }
            }
            None => {
                out = Preset {
                    num_experts: e,
                    group: None,
                    ..*p
                };
                notes.push(format!(
                    "group limit (n_group {}, topk_group {}) dropped: no valid grouping of {e} experts",
                    g.n_group, g.topk_group
                ));
            }
        }
    }
    // E never goes below top-k: at that floor the weights may still exceed the budget, and the
    // note must not claim they fit (fresh-user report, session 9); the run's own memory check
    // (90% of memory) still decides whether it can go on.
    let kept = bytes_of(&out);
    let how = if kept <= budget {
        "to fit memory"
    } else {
        "toward the memory budget (top-k is the floor; the weights still exceed it)"
    };
    notes.insert(
        0,
        format!(
            "scaled by expert count {how}: {} -> {} routed experts (weights {} -> {} of {what}, budget {}); k = {} and the routing rule kept",
            p.num_experts,
            e,
            super::human_bytes(full as f64),
            super::human_bytes(kept as f64),
            super::human_bytes(budget as f64),
            p.topk
        ),
    );
    (out, notes)
}

/// Bytes per token of the host inputs of one run ([`MoeInputs`]): `x` `[H]` in `dtype`, router
/// logits `[E]` f32, and a hash-routed layer's token id (i64, counted always).
pub fn input_bytes_per_token(p: &Preset, dtype: DType) -> u64 {
    let es = dtype.size() as u64;
    p.hidden as u64 * es + p.num_experts as u64 * 4 + 8
}

/// Bytes per token of every buffer one [`forward`] of `p` allocates on its backend and on the
/// host (in `dtype`, `es` bytes an element; `k` slots and `S` shared experts a token):
/// uploaded `x` `[H]` and logits `[E]` f32 and token id; `ids`, `weights` `[k]` 4 bytes each,
/// `src_token`, `slot_row` `[k]` 8 each; `x_perm` `[k, H]`, gate_up out `[k, 2I]`, swiglu out
/// `[k, I]`, `y` `[k + S, H]`, `out` `[H]`; the shared expert's `[2I]` and `[I]`; the shared
/// combine's slot lists (`[k]` downloaded, `[k + S]` built on the host and uploaded, 12 bytes a
/// slot); the downloaded f32 output `[H]` and ids `[k]`. Buffers of the weights are not counted
/// (see [`expert_weight_bytes`]).
pub fn forward_bytes_per_token(p: &Preset, dtype: DType) -> u64 {
    let es = dtype.size() as u64;
    let (h, i, e, k, s) = (
        p.hidden as u64,
        p.expert_width as u64,
        p.num_experts as u64,
        p.topk as u64,
        p.shared_experts as u64,
    );
    let inputs = h * es + e * 4 + 8;
    let routing = k * (4 + 4 + 8 + 8);
    let rows = k * (h + 2 * i + i) * es + (k + s) * h * es + h * es;
    let shared = if s > 0 {
        (2 * i + i) * es + k * 12 + 2 * (k + s) * 12
    } else {
        0
    };
    let downloads = h * 4 + k * 4;
    inputs + routing + rows + shared + downloads
}

/// Host inputs of one forward: activations, router logits and selection bias.
#[derive(Debug, Clone)]
pub struct MoeInputs {
    /// Tokens T.
    pub tokens: usize,
    /// `[T, H]` activations in the layer dtype (bytes), uniform in `[-1, 1)`.
    pub x: Vec<u8>,
    /// `[T, E]` f32 router logits, uniform in `[-2, 2)`.
    pub logits: Vec<f32>,
    /// `[E]` f32 selection bias (presets with `e_score_correction_bias`), uniform in `[-0.1, 0.1)`.
    pub bias: Option<Vec<f32>>,
    /// Hash routing (OPS.md §2, DeepSeek-V4's first layers): token ids and the `tid2eid` table
    /// replace the learned top-k selection (`logits` still give the slot weights). `None`: top-k.
    pub hash: Option<HashRoute>,
}

/// The inputs of a hash-routed layer: `[T]` token ids in `[0, V)` and the `[V, k]` `tid2eid` table.
#[derive(Debug, Clone)]
pub struct HashRoute {
    /// `[T]` token ids.
    pub token_ids: Vec<i64>,
    /// `[V, k]` expert ids per token id, row-major.
    pub tid2eid: Vec<i32>,
    /// Rows V.
    pub vocab: usize,
}

impl MoeInputs {
    /// Seeded inputs for `tokens` tokens of preset `p` in `dtype`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a non-floating dtype.
    pub fn generate(p: &Preset, tokens: usize, dtype: DType, seed: u64) -> Result<Self> {
        let x = random_floats(dtype, tokens * p.hidden, 1.0, stream_seed(seed, 100), 0)?;
        let mut ls = UniformStream::at(stream_seed(seed, 101), 0);
        let logits = (0..tokens * p.num_experts).map(|_| 2.0 * ls.next_f32()).collect();
        let mut bs = UniformStream::at(stream_seed(seed, 102), 0);
        let bias = p
            .bias
            .then(|| (0..p.num_experts).map(|_| 0.1 * bs.next_f32()).collect());
        Ok(MoeInputs {
            tokens,
            x,
            logits,
            bias,
            hash: None,
        })
    }
}

/// The expert weights of one layer on one backend.
pub struct MoeWeights {
    /// `[E, 2I, H]` NK gate_up (gate rows first, then up rows).
    pub gate_up: Buffer,
    /// `[E, H, I]` NK down.
    pub down: Buffer,
    /// Per shared expert: `([1, 2I, H], [1, H, I])`.
    pub shared: Vec<(Buffer, Buffer)>,
    /// Quantized weights (OPS.md §6): the formats and the scale buffers; `None` for float weights.
    pub quant: Option<QuantScales>,
}

/// Formats and scales of a layer with quantized weights (the weight buffers above then hold the
/// quantized codes in layout NK; activations stay in the layer dtype: weight-only `w4a16`/`w8a16`).
pub struct QuantScales {
    /// Format of the routed experts.
    pub routed: WeightFormat,
    /// Format of the shared experts.
    pub shared: WeightFormat,
    /// Scales of `gate_up` and `down` of the routed experts.
    pub routed_scales: (Buffer, Buffer),
    /// Per shared expert, scales of `gate_up` and `down`.
    pub shared_scales: Vec<(Buffer, Buffer)>,
}

/// The formats a preset's checkpoint ships (OPS.md, Model presets): `(routed, shared)`.
/// DeepSeek-V4-Flash: MXFP4 routed experts, fp8_block shared expert; DeepSeek-V3: fp8_block both.
pub fn shipped_formats(p: &Preset) -> Option<(WeightFormat, WeightFormat)> {
    match p.name {
        "deepseek-v4-flash" => Some((WeightFormat::Mxfp4, WeightFormat::Fp8Block)),
        "deepseek-v3" => Some((WeightFormat::Fp8Block, WeightFormat::Fp8Block)),
        _ => None,
    }
}

/// The dtype of generated scales of `f` (E8M0 bytes for MXFP4, f32 otherwise).
fn scale_dtype(f: WeightFormat) -> DType {
    match f {
        WeightFormat::Mxfp4 => DType::U8,
        _ => DType::F32,
    }
}

/// Seeded quantized codes and scales of one expert matrix `[n, k]` in format `f`, scaled so that
/// the dequantized weight has a standard deviation of about `1/sqrt(k)` (as the float weights).
fn quant_matrix(f: WeightFormat, n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    use rand::RngCore;
    let mut rng = moehal_testkit::rng::seeded(seed);
    let log2_sqrt_k = (k.max(1) as f64).sqrt().log2();
    match f {
        WeightFormat::Mxfp4 => {
            // Uniform E2M1 codes have an RMS of about 2.9 (~2^1.5).
            let w = (0..n * k / 2).map(|_| rng.next_u64() as u8).collect();
            let centre = 127.0 - 1.5 - log2_sqrt_k;
            let s = (0..n * (k / 32))
                .map(|_| (centre + (rng.next_u64() % 3) as f64 - 1.0).round().clamp(1.0, 254.0) as u8)
                .collect();
            (w, s)
        }
        WeightFormat::Fp8Block => {
            // Uniform bytes (NaN codes 0x7F/0xFF replaced by ±448) have an RMS of about 130.
            let w = (0..n * k)
                .map(|_| match rng.next_u64() as u8 {
                    0x7F => 0x7E,
                    0xFF => 0xFE,
                    b => b,
                })
                .collect();
            let nb = n.div_ceil(128) * k.div_ceil(128);
            let base = 1.0 / (130.0 * (k.max(1) as f64).sqrt());
            let s: Vec<f32> = (0..nb)
                .map(|_| (base * (0.75 + 0.5 * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)) as f32)
                .collect();
            (w, bytemuck::cast_slice(&s).to_vec())
        }
        WeightFormat::Int8 => {
            let w = (0..n * k)
                .map(|_| (rng.next_u64() % 255) as u8 ^ 0x80)
                .collect::<Vec<u8>>();
            let s: Vec<f32> = (0..n)
                .map(|_| (1.0 / (73.0 * (k.max(1) as f64).sqrt())) as f32)
                .collect();
            (w, bytemuck::cast_slice(&s).to_vec())
        }
    }
}

impl MoeWeights {
    /// Seeded quantized weights of `p` (routed experts in `routed`, shared in `shared`) uploaded to
    /// every backend of `backends`, one expert matrix at a time. `progress` gets the bytes so far.
    ///
    /// # Errors
    /// Allocation and upload errors of the backends.
    pub fn upload_quant(
        backends: &[&dyn Backend],
        p: &Preset,
        routed: WeightFormat,
        shared: WeightFormat,
        seed: u64,
        progress: &dyn Fn(u64),
    ) -> Result<Vec<MoeWeights>> {
        let all: Vec<usize> = (0..p.num_experts).collect();
        Self::upload_quant_experts(backends, p, routed, shared, seed, &all, progress)
    }

    /// [`MoeWeights::upload_quant`] for the routed experts `experts` only (global ids, in the
    /// order of the local ids they get: `gate_up` is `[experts.len(), 2I, H]`), each generated
    /// exactly as in the whole layer: an expert-parallel rank's slice. Shared experts in full.
    ///
    /// # Errors
    /// Allocation and upload errors of the backends.
    pub fn upload_quant_experts(
        backends: &[&dyn Backend],
        p: &Preset,
        routed: WeightFormat,
        shared: WeightFormat,
        seed: u64,
        experts: &[usize],
        progress: &dyn Fn(u64),
    ) -> Result<Vec<MoeWeights>> {
        let (h, i) = (p.hidden, p.expert_width);
        let mut done = 0u64;
        // (weights, scales) per backend for `experts` matrices [n, k] of format f.
        let mut make =
            |f: WeightFormat, experts: &[usize], n: usize, k: usize, stream: u64| -> Result<Vec<(Buffer, Buffer)>> {
                let wlen: usize = f.w_shape(1, n, k).iter().product::<usize>() * f.dtype().size();
                let slen: usize = f.scale_shape(1, n, k).iter().product::<usize>() * scale_dtype(f).size();
                let mut bufs = backends
                    .iter()
                    .map(|b| Ok((b.alloc(experts.len() * wlen)?, b.alloc(experts.len() * slen)?)))
                    .collect::<Result<Vec<_>>>()?;
                for (li, &e) in experts.iter().enumerate() {
                    let (w, s) = quant_matrix(
                        f,
                        n,
                        k,
                        stream_seed(seed, stream) ^ (e as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93),
                    );
                    for (b, (bw, bs)) in backends.iter().zip(bufs.iter_mut()) {
                        b.upload(bw, li * wlen, &w)?;
                        b.upload(bs, li * slen, &s)?;
                    }
                    done += (w.len() + s.len()) as u64;
                    progress(done);
                }
                Ok(bufs)
            };
        let gate_up = make(routed, experts, 2 * i, h, 31)?;
        let down = make(routed, experts, h, i, 32)?;
        // Per backend, per shared expert: ((gate_up w, scale), (down w, scale)).
        type Pair = (Buffer, Buffer);
        let mut sh: Vec<Vec<(Pair, Pair)>> = backends.iter().map(|_| Vec::new()).collect();
        for si in 0..p.shared_experts {
            let gu = make(shared, &[0], 2 * i, h, 40 + 2 * si as u64)?;
            let dn = make(shared, &[0], h, i, 41 + 2 * si as u64)?;
            for ((v, g), d) in sh.iter_mut().zip(gu).zip(dn) {
                v.push((g, d));
            }
        }
        Ok(gate_up
            .into_iter()
            .zip(down)
            .zip(sh)
            .map(|(((gw, gs), (dw, ds)), sh)| {
                let (shared_w, shared_scales): (Vec<_>, Vec<_>) =
                    sh.into_iter().map(|((gw, gs), (dw, ds))| ((gw, dw), (gs, ds))).unzip();
                MoeWeights {
                    gate_up: gw,
                    down: dw,
                    shared: shared_w,
                    quant: Some(QuantScales {
                        routed,
                        shared,
                        routed_scales: (gs, ds),
                        shared_scales,
                    }),
                }
            })
            .collect())
    }
}

/// Run one pipeline stage, synchronize `backend`, and append its wall time to `stages` (the
/// body of every [`StageTimer`]).
pub(crate) fn time_stage(
    backend: &dyn Backend,
    stages: &mut Vec<Stage>,
    name: &'static str,
    f: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let t0 = Instant::now();
    f()?;
    backend.synchronize()?;
    stages.push(Stage {
        name,
        seconds: t0.elapsed().as_secs_f64(),
    });
    Ok(())
}

/// Times one pipeline stage: runs it, synchronizes the backend, records the wall time.
pub(crate) type StageTimer<'a> = dyn FnMut(&'static str, &mut dyn FnMut() -> Result<()>) -> Result<()> + 'a;

/// The routed experts on permuted rows, as three timed stages: `gate_up` (grouped GEMM
/// `[M, H] → [M, 2I]` over `groups` experts), `swiglu` (`[M, 2I] → [M, I]`), `down` (grouped GEMM
/// `[M, I] → [M, H]` into the first `M·H` elements of `y`). `x` is `[M, H]` in `dtype`,
/// `group_end` `[groups]` i64; `scratch` holds the `[M, 2I]` and `[M, I]` intermediates. Quantized weights (`w.quant`) take the
/// §6 grouped GEMM. Shared by the single-process layer and the expert-parallel one.
pub(crate) fn routed_ffn(
    backend: &dyn Backend,
    dtype: DType,
    p: &Preset,
    w: &MoeWeights,
    x: TensorRef<'_>,
    groups: usize,
    group_end: TensorRef<'_>,
    scratch: (&mut Buffer, &mut Buffer),
    y: &mut Buffer,
    timed: &mut StageTimer<'_>,
) -> Result<()> {
    let (h, i) = (p.hidden, p.expert_width);
    let m = x.shape()[0];
    let (hbuf, act) = scratch;
    let rq = |j: usize| {
        w.quant
            .as_ref()
            .map(|q| (q.routed, if j == 0 { &q.routed_scales.0 } else { &q.routed_scales.1 }))
    };
    timed("gate_up", &mut || {
        expert_gemm(
            backend,
            dtype,
            x,
            &w.gate_up,
            rq(0),
            (groups, 2 * i, h),
            group_end,
            hbuf.view_mut(dtype, &[m, 2 * i]),
        )
    })?;
    timed("swiglu", &mut || {
        let args = Swiglu {
            h: hbuf.view(dtype, &[m, 2 * i]),
            out: act.view_mut(dtype, &[m, i]),
            limit: p.swiglu_limit,
        };
        backend.swiglu(args.validate()?)
    })?;
    timed("down", &mut || {
        expert_gemm(
            backend,
            dtype,
            act.view(dtype, &[m, i]),
            &w.down,
            rq(1),
            (groups, h, i),
            group_end,
            y.view_mut(dtype, &[m, h]),
        )
    })
}

/// The shared experts on a token's own rows (no routing): for each shared expert `si`, a
/// one-group grouped GEMM `[T, H] → [T, 2I]`, swiglu, and `[T, I] → [T, H]` written at rows
/// `y_row0 + si·T ..` of `y` (`[.., H]` in `dtype`). `dense_end` is `[1]` i64 holding `T`;
/// `scratch` holds the `[T, 2I]` and `[T, I]` intermediates. Shared by the single-process layer
/// and the expert-parallel one.
pub(crate) fn shared_ffn(
    backend: &dyn Backend,
    dtype: DType,
    p: &Preset,
    w: &MoeWeights,
    x: TensorRef<'_>,
    dense_end: TensorRef<'_>,
    scratch: (&mut Buffer, &mut Buffer),
    y: &mut Buffer,
    y_row0: usize,
) -> Result<()> {
    let (h, i, t) = (p.hidden, p.expert_width, x.shape()[0]);
    let (hs, as_) = scratch;
    for (si, (gu, dn)) in w.shared.iter().enumerate() {
        let sq = |j: usize| {
            w.quant.as_ref().map(|q| {
                let sc = &q.shared_scales[si];
                (q.shared, if j == 0 { &sc.0 } else { &sc.1 })
            })
        };
        expert_gemm(
            backend,
            dtype,
            x,
            gu,
            sq(0),
            (1, 2 * i, h),
            dense_end,
            hs.view_mut(dtype, &[t, 2 * i]),
        )?;
        let args = Swiglu {
            h: hs.view(dtype, &[t, 2 * i]),
            out: as_.view_mut(dtype, &[t, i]),
            limit: p.swiglu_limit,
        };
        backend.swiglu(args.validate()?)?;
        expert_gemm(
            backend,
            dtype,
            as_.view(dtype, &[t, i]),
            dn,
            sq(1),
            (1, h, i),
            dense_end,
            y.view_mut(dtype, &[t, h]).with_offset((y_row0 + si * t) * h),
        )?;
    }
    Ok(())
}

/// One expert `grouped_gemm` (layout NK, no bias or row scale): float weights of `dtype`, or
/// quantized weights `q = (format, scales)` with activations of `dtype` (weight-only).
pub(crate) fn expert_gemm(
    backend: &dyn Backend,
    dtype: DType,
    x: TensorRef<'_>,
    w: &Buffer,
    q: Option<(WeightFormat, &Buffer)>,
    (g, n, k): (usize, usize, usize),
    group_end: TensorRef<'_>,
    y: TensorMut<'_>,
) -> Result<()> {
    match q {
        None => {
            let args = GroupedGemm {
                x,
                w: w.view(dtype, &[g, n, k]),
                layout: WeightLayout::NK,
                group_end,
                row_scale: None,
                bias: None,
                y,
            };
            backend.grouped_gemm(args.validate()?)
        }
        Some((f, s)) => {
            let args = GroupedGemmQ {
                x,
                x_scale: None,
                w_format: f,
                w: w.view(f.dtype(), &f.w_shape(g, n, k)),
                w_scale: s.view(scale_dtype(f), &f.scale_shape(g, n, k)),
                group_end,
                row_scale: None,
                bias: None,
                y,
            };
            backend.grouped_gemm_quant(args.validate()?)
        }
    }
}

impl MoeWeights {
    /// Generate the seeded weights of `p` and upload them to every backend of `backends`, one
    /// expert matrix at a time (no host copy of the whole layer). `progress` is called with the
    /// bytes generated so far. Returns the weights in the order of `backends`.
    ///
    /// # Errors
    /// Allocation and upload errors of the backends.
    pub fn upload(
        backends: &[&dyn Backend],
        p: &Preset,
        dtype: DType,
        seed: u64,
        progress: &dyn Fn(u64),
    ) -> Result<Vec<MoeWeights>> {
        let all: Vec<usize> = (0..p.num_experts).collect();
        Self::upload_experts(backends, p, dtype, seed, &all, progress)
    }

    /// [`MoeWeights::upload`] for the routed experts `experts` only (global ids, in the order of
    /// the local ids they get: `gate_up` is `[experts.len(), 2I, H]`), each generated exactly as
    /// in the whole layer: an expert-parallel rank's slice. Shared experts in full.
    ///
    /// # Errors
    /// Allocation and upload errors of the backends.
    pub fn upload_experts(
        backends: &[&dyn Backend],
        p: &Preset,
        dtype: DType,
        seed: u64,
        experts: &[usize],
        progress: &dyn Fn(u64),
    ) -> Result<Vec<MoeWeights>> {
        let (h, i) = (p.hidden, p.expert_width);
        let es = dtype.size();
        let mat = 2 * i * h; // gate_up elements per expert; down has half
        let mut done = 0u64;
        let mut make = |experts: &[usize], elems: usize, scale: f32, stream: u64| -> Result<Vec<Buffer>> {
            let mut bufs = backends
                .iter()
                .map(|b| b.alloc(experts.len() * elems * es))
                .collect::<Result<Vec<_>>>()?;
            let mut chunk = vec![0u8; elems * es];
            for (li, &e) in experts.iter().enumerate() {
                fill_random(dtype, &mut chunk, scale, stream_seed(seed, stream), (e * elems) as u64)?;
                for (b, buf) in backends.iter().zip(bufs.iter_mut()) {
                    b.upload(buf, li * elems * es, &chunk)?;
                }
                done += chunk.len() as u64;
                progress(done);
            }
            Ok(bufs)
        };
        let s_in = (3.0 / h as f32).sqrt();
        let s_mid = (3.0 / i as f32).sqrt();
        let gate_up = make(experts, mat, s_in, 1)?;
        let down = make(experts, mat / 2, s_mid, 2)?;
        let mut shared: Vec<Vec<(Buffer, Buffer)>> = backends.iter().map(|_| Vec::new()).collect();
        for s in 0..p.shared_experts {
            let gu = make(&[0], mat, s_in, 10 + 2 * s as u64)?;
            let dn = make(&[0], mat / 2, s_mid, 11 + 2 * s as u64)?;
            for ((v, g), d) in shared.iter_mut().zip(gu).zip(dn) {
                v.push((g, d));
            }
        }
        Ok(gate_up
            .into_iter()
            .zip(down)
            .zip(shared)
            .map(|((gate_up, down), shared)| MoeWeights {
                gate_up,
                down,
                shared,
                quant: None,
            })
            .collect())
    }
}

/// Time of one stage of the forward.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Stage name (`"router_topk"`, `"gate_up"`, ...).
    pub name: &'static str,
    /// Wall seconds, from enqueue to `synchronize`.
    pub seconds: f64,
}

/// Result of one forward.
#[derive(Debug, Clone)]
pub struct MoeOutput {
    /// `[T, H]` layer output widened to f32.
    pub out: Vec<f32>,
    /// Per-stage times, in pipeline order.
    pub stages: Vec<Stage>,
    /// `[T, k]` selected experts (for reporting).
    pub ids: Vec<i32>,
}

/// The router's inputs of one forward, uploaded to its backend: `[T, E]` f32 logits, the `[E]`
/// f32 selection bias if any, and a hash-routed layer's `[V, k]` i32 `tid2eid` table with `[T]`
/// i64 token ids and V.
pub(crate) struct RouterInputs {
    logits: Buffer,
    bias: Option<Buffer>,
    hash: Option<(Buffer, Buffer, usize)>,
}

impl RouterInputs {
    /// Upload the router inputs of `inp` to `backend`.
    ///
    /// # Errors
    /// The backend's allocation and upload errors.
    pub(crate) fn upload(backend: &dyn Backend, inp: &MoeInputs) -> Result<Self> {
        Ok(RouterInputs {
            logits: backend.upload_slice(&inp.logits)?,
            bias: inp.bias.as_ref().map(|b| backend.upload_slice(b)).transpose()?,
            hash: inp
                .hash
                .as_ref()
                .map(|h| {
                    Ok::<_, Error>((
                        backend.upload_slice(&h.tid2eid)?,
                        backend.upload_slice(&h.token_ids)?,
                        h.vocab,
                    ))
                })
                .transpose()?,
        })
    }

    /// Route `t` tokens of layer `p` into `ids` (`[T, k]` i32) and `weights` (`[T, k]` f32):
    /// `router_hash` for a hash-routed layer (OPS.md §2: the table picks the experts, the logits
    /// weigh them), else `router_topk` with the bias.
    ///
    /// # Errors
    /// The op's errors.
    pub(crate) fn route(
        &self,
        backend: &dyn Backend,
        p: &Preset,
        t: usize,
        ids: &mut Buffer,
        weights: &mut Buffer,
    ) -> Result<()> {
        let (e, k) = (p.num_experts, p.topk);
        if let Some((tab, tid, v)) = &self.hash {
            let args = RouterHash {
                config: p.router(),
                logits: self.logits.view(DType::F32, &[t, e]),
                tid2eid: tab.view(DType::I32, &[*v, k]),
                token_ids: tid.view(DType::I64, &[t]),
                ids: ids.view_mut(DType::I32, &[t, k]),
                weights: weights.view_mut(DType::F32, &[t, k]),
                expert_counts: None,
            };
            return backend.router_hash(args.validate()?);
        }
        let args = RouterTopk {
            config: p.router(),
            logits: self.logits.view(DType::F32, &[t, e]),
            bias: self.bias.as_ref().map(|b| b.view(DType::F32, &[e])),
            ids: ids.view_mut(DType::I32, &[t, k]),
            weights: weights.view_mut(DType::F32, &[t, k]),
            expert_counts: None,
        };
        backend.router_topk(args.validate()?)
    }
}

/// Run one MoE layer forward of preset `p` on `backend` (inputs uploaded first, untimed).
///
/// # Errors
/// Any op's error ([`Error::Unsupported`] when the backend lacks a variant), allocation errors.
pub fn forward(backend: &dyn Backend, p: &Preset, dtype: DType, w: &MoeWeights, inp: &MoeInputs) -> Result<MoeOutput> {
    let (t, e, k, h, i) = (inp.tokens, p.num_experts, p.topk, p.hidden, p.expert_width);
    let s = p.shared_experts;
    let rows = t * k;
    let es = dtype.size();
    // Inputs.
    let x = upload_bytes(backend, &inp.x)?;
    let router = RouterInputs::upload(backend, inp)?;
    // Outputs and intermediates.
    let mut ids = backend.alloc(rows * 4)?;
    let mut weights = backend.alloc(rows * 4)?;
    let mut group_end = backend.alloc(e * 8)?;
    let mut src_token = backend.alloc(rows * 8)?;
    let mut slot_row = backend.alloc(rows * 8)?;
    let mut x_perm = backend.alloc(rows * h * es)?;
    let mut hbuf = backend.alloc(rows * 2 * i * es)?;
    let mut act = backend.alloc(rows * i * es)?;
    let mut y_all = backend.alloc((rows + s * t) * h * es)?;
    let mut out = backend.alloc(t * h * es)?;
    backend.synchronize()?;

    let mut stages = Vec::new();
    let mut timed = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| time_stage(backend, &mut stages, name, f);

    timed("router_topk", &mut || {
        router.route(backend, p, t, &mut ids, &mut weights)
    })?;
    timed("moe_permute", &mut || {
        let args = MoePermute {
            num_experts: e,
            ids: ids.view(DType::I32, &[t, k]),
            x: Some(x.view(dtype, &[t, h])),
            group_end: group_end.view_mut(DType::I64, &[e]),
            src_token: src_token.view_mut(DType::I64, &[rows]),
            slot_row: slot_row.view_mut(DType::I64, &[t, k]),
            x_perm: Some(x_perm.view_mut(dtype, &[rows, h])),
        };
        backend.moe_permute(args.validate()?)
    })?;
    routed_ffn(
        backend,
        dtype,
        p,
        w,
        x_perm.view(dtype, &[rows, h]),
        e,
        group_end.view(DType::I64, &[e]),
        (&mut hbuf, &mut act),
        &mut y_all,
        &mut timed,
    )?;
    if s > 0 {
        let dense_end = backend.upload_slice(&[t as i64])?;
        let mut hs = backend.alloc(t * 2 * i * es)?;
        let mut as_ = backend.alloc(t * i * es)?;
        timed("shared_expert", &mut || {
            shared_ffn(
                backend,
                dtype,
                p,
                w,
                x.view(dtype, &[t, h]),
                dense_end.view(DType::I64, &[1]),
                (&mut hs, &mut as_),
                &mut y_all,
                rows,
            )
        })?;
    }
    timed("moe_combine", &mut || {
        if s == 0 {
            let args = MoeCombine {
                y_perm: y_all.view(dtype, &[rows, h]),
                slot_row: slot_row.view(DType::I64, &[t, k]),
                weights: weights.view(DType::F32, &[t, k]),
                out: out.view_mut(dtype, &[t, h]),
            };
            return backend.moe_combine(args.validate()?);
        }
        // Extend each token's slots with its shared-expert rows (weight 1).
        let sr: Vec<i64> = backend.download_vec(&slot_row, rows)?;
        let wt: Vec<f32> = backend.download_vec(&weights, rows)?;
        let kk = k + s;
        let mut sr2 = Vec::with_capacity(t * kk);
        let mut wt2 = Vec::with_capacity(t * kk);
        for tok in 0..t {
            sr2.extend_from_slice(&sr[tok * k..(tok + 1) * k]);
            wt2.extend_from_slice(&wt[tok * k..(tok + 1) * k]);
            for si in 0..s {
                sr2.push((rows + si * t + tok) as i64);
                wt2.push(1.0);
            }
        }
        let sr2 = backend.upload_slice(&sr2)?;
        let wt2 = backend.upload_slice(&wt2)?;
        let args = MoeCombine {
            y_perm: y_all.view(dtype, &[rows + s * t, h]),
            slot_row: sr2.view(DType::I64, &[t, kk]),
            weights: wt2.view(DType::F32, &[t, kk]),
            out: out.view_mut(dtype, &[t, h]),
        };
        backend.moe_combine(args.validate()?)
    })?;
    let out = download_floats(backend, &out, dtype, t * h)?;
    let ids: Vec<i32> = backend.download_vec(&ids, rows)?;
    if let Some((pos, &bad)) = ids.iter().enumerate().find(|(_, &v)| v < 0 || v as usize >= e) {
        return Err(Error::invalid(
            "moe",
            "ids",
            format!("router returned id {bad} at {pos}, outside [0, {e})"),
        ));
    }
    Ok(MoeOutput { out, stages, ids })
}

/// One MoE layer read from a checkpoint (see [`load_checkpoint_layer`]).
pub struct CheckpointLayer {
    /// The base preset with the checkpoint's hidden size, expert width, routed and shared expert counts.
    pub preset: Preset,
    /// The weights, per backend in the order given.
    pub weights: Vec<MoeWeights>,
    /// `gate.tid2eid` `[V, k]` as i32 with V, when the layer is hash-routed.
    pub tid2eid: Option<(Vec<i32>, usize)>,
}

/// Layer `layer` of checkpoint `ck`, validated but not yet uploaded (see
/// [`plan_checkpoint_layer`]): the preset it makes, its hash-routing table, and the expert
/// tensors still in the map, so that a run can size itself (bytes, reference time) before any
/// copy.
pub struct CheckpointPlan<'a> {
    ck: &'a crate::checkpoint::Checkpoint,
    layer: usize,
    /// The base preset with the checkpoint's hidden size, expert width, routed and shared expert counts.
    pub preset: Preset,
    /// `gate.tid2eid` `[V, k]` as i32 with V, when the layer is hash-routed.
    pub tid2eid: Option<(Vec<i32>, usize)>,
    gate_up: crate::checkpoint::QuantExperts<'a>,
    down: crate::checkpoint::QuantExperts<'a>,
    shared: Option<(crate::checkpoint::QuantExperts<'a>, crate::checkpoint::QuantExperts<'a>)>,
}

impl CheckpointPlan<'_> {
    /// Whether `backend` runs this layer's weight formats with `dtype` activations
    /// ([`Backend::supports_quant`] of each format's `grouped_gemm`), checked before anything is
    /// uploaded. A checkpoint's experts run in the formats the file stores: there is no float
    /// fallback as for a seeded preset (that would not run the checkpoint), so a backend without
    /// the kernel is an error.
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming the backend, the format (e.g. `mxfp4`), the activations and the
    /// backend's reason.
    pub fn check_backend(&self, backend: &dyn Backend, dtype: DType) -> Result<()> {
        let (routed, shared) = self.formats();
        for (what, f) in [("routed", routed), ("shared", shared)] {
            let desc = moehal_core::ops::QuantDesc::GroupedGemm {
                w: f,
                x: moehal_core::ops::ActFormat::Float(dtype),
                y: dtype,
            };
            if let moehal_core::Support::No { reason } = backend.supports_quant(&desc) {
                return Err(Error::unsupported(
                    "moe",
                    backend.name(),
                    format!(
                        "--weights layer {}: the {what} experts are {f} weights ({}), which this backend does not run ({reason}); a checkpoint runs in the formats it stores (no float fallback): choose a backend that runs {f}, e.g. --backend cpu",
                        self.layer,
                        desc.variant()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The formats `(routed, shared)` of the layer's weights (the routed format twice when the
    /// layer has no shared expert).
    pub fn formats(&self) -> (WeightFormat, WeightFormat) {
        (
            self.gate_up.format,
            self.shared.as_ref().map_or(self.gate_up.format, |s| s.0.format),
        )
    }

    /// Bytes of the layer's expert weights and scales as one backend holds them (all routed
    /// experts and the shared expert).
    pub fn weight_bytes(&self) -> u64 {
        let mut n = self.gate_up.bytes() + self.down.bytes();
        if let Some((g, d)) = &self.shared {
            n += g.bytes() + d.bytes();
        }
        n as u64
    }

    /// Bytes of the shared expert's weights and scales (0 without one).
    pub fn shared_weight_bytes(&self) -> u64 {
        self.shared.as_ref().map_or(0, |(g, d)| (g.bytes() + d.bytes()) as u64)
    }

    /// Upload every routed expert and the shared expert to each backend of `backends`, straight
    /// from the map; the weights in the order of `backends`.
    ///
    /// # Errors
    /// The backends' allocation and upload errors.
    pub fn upload(&self, backends: &[&dyn Backend]) -> Result<Vec<MoeWeights>> {
        self.upload_parts(backends, &self.gate_up, &self.down)
    }

    /// [`upload`](Self::upload) for the routed experts `experts` only (global ids, in the order of
    /// the local ids they get): an expert-parallel rank's slice. The shared expert in full.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an expert id outside the layer; the backends' errors.
    pub fn upload_experts(&self, backends: &[&dyn Backend], experts: &[usize]) -> Result<Vec<MoeWeights>> {
        use crate::checkpoint::Proj;
        if let Some(&bad) = experts.iter().find(|&&e| e >= self.preset.num_experts) {
            return Err(Error::invalid(
                "moe",
                "experts",
                format!("expert {bad} outside the layer's {}", self.preset.num_experts),
            ));
        }
        if experts.is_empty() {
            return Err(Error::invalid("moe", "experts", "no routed experts requested"));
        }
        let gu = self.ck.experts(self.layer, Proj::GateUp, experts)?;
        let dn = self.ck.experts(self.layer, Proj::Down, experts)?;
        self.upload_parts(backends, &gu, &dn)
    }

    fn upload_parts(
        &self,
        backends: &[&dyn Backend],
        gu: &crate::checkpoint::QuantExperts<'_>,
        dn: &crate::checkpoint::QuantExperts<'_>,
    ) -> Result<Vec<MoeWeights>> {
        let (routed, shared_format) = self.formats();
        let mut weights = Vec::with_capacity(backends.len());
        for be in backends {
            let (gw, gs) = gu.upload(*be)?;
            let (dw, ds) = dn.upload(*be)?;
            let (shared_w, shared_scales) = match &self.shared {
                Some((sg, sd)) => {
                    let (sgw, sgs) = sg.upload(*be)?;
                    let (sdw, sds) = sd.upload(*be)?;
                    (vec![(sgw, sdw)], vec![(sgs, sds)])
                }
                None => (Vec::new(), Vec::new()),
            };
            weights.push(MoeWeights {
                gate_up: gw,
                down: dw,
                shared: shared_w,
                quant: Some(QuantScales {
                    routed,
                    shared: shared_format,
                    routed_scales: (gs, ds),
                    shared_scales,
                }),
            });
        }
        Ok(weights)
    }
}

/// Read and validate layer `layer` of checkpoint `ck` (DeepSeek layout, [`crate::checkpoint`])
/// without copying anything: routed experts `0..E` (E = those present; every expert's tensors of
/// the dtype and shape of expert 0's, w1/w3 `[I, H]`, w2 `[H, I]`), the shared expert if present
/// (of the same widths), `gate.tid2eid` (I32 or I64 `[V, k]`) if present. `base` gives everything
/// the checkpoint does not: top-k, scoring, scale, SwiGLU clamp (its widths and expert counts are
/// replaced by the checkpoint's).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the tensor for a missing key, a wrong dtype or shape (with
/// the expected one), a zero size, gate_up and down that disagree, a routed and shared format the
/// layer cannot run (an fp8_block layer with E8M0 weight scales: `moe` runs f32 fp8 scales), a
/// `tid2eid` of another width than `k` or with an entry outside `0..E` (naming its index and
/// value), an expert missing between present ones (`experts.8` absent, `experts.9` present), a
/// gated layer whose experts `base`'s group limit cannot route (OPS.md §2: n_group dividing E, k within topk_group groups).
pub fn plan_checkpoint_layer<'a>(
    ck: &'a crate::checkpoint::Checkpoint,
    layer: usize,
    base: &Preset,
) -> Result<CheckpointPlan<'a>> {
    use crate::checkpoint::Proj;
    let bad = |tensor: String, msg: String| Error::invalid("moe", "weights", format!("tensor `{tensor}`: {msg}"));
    let e = ck.routed_experts(layer);
    if e == 0 {
        return Err(bad(
            format!("layers.{layer}.ffn.experts.0.w1.weight"),
            "missing: the layer has no routed experts".into(),
        ));
    }
    // Experts are 0..E with none missing: an expert index present past a missing one (8 missing,
    // 9 present) is an error naming the missing one, not a layer that silently ends before it.
    let prefix = format!("layers.{layer}.ffn.experts.");
    let last_present = ck
        .tensors()
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix)?.split('.').next()?.parse::<usize>().ok())
        .max();
    if let Some(last) = last_present.filter(|&m| m >= e) {
        return Err(bad(
            format!("{prefix}{e}.w1.weight"),
            format!("missing, while expert {last} is present: experts must be numbered 0..E without gaps"),
        ));
    }
    let all: Vec<usize> = (0..e).collect();
    let gu = ck.experts(layer, Proj::GateUp, &all)?;
    let dn = ck.experts(layer, Proj::Down, &all)?;
    let (h, i) = (gu.k, gu.n / 2);
    let down_name = format!("layers.{layer}.ffn.experts.0.w2.weight");
    if dn.format != gu.format {
        return Err(bad(down_name, format!("{} while w1/w3 are {}", dn.format, gu.format)));
    }
    if (dn.n, dn.k) != (h, i) {
        // w1/w3 are [I, H] (N = I outputs of K = H inputs), w2 is [H, I]: the transpose.
        let shape = &ck.tensor(&down_name)?.shape;
        return Err(bad(
            down_name,
            format!(
                "shape {shape:?} holds [N, K] = [{}, {}], expected [{h}, {i}] (w2 is [H, I] where w1/w3 are [I, H] = [{i}, {h}])",
                dn.n, dn.k
            ),
        ));
    }
    let check_scales = |q: &crate::checkpoint::QuantExperts<'_>, what: &str| {
        if q.scale_dtype != scale_dtype(q.format) {
            return Err(bad(
                format!("layers.{layer}.ffn.{what}.w1.scale"),
                format!(
                    "{} scales of {}: moe runs E8M0 scales for mxfp4, f32 for fp8_block",
                    q.scale_dtype, q.format
                ),
            ));
        }
        Ok(())
    };
    check_scales(&gu, "experts.0")?;
    check_scales(&dn, "experts.0")?;
    let has_shared = ck
        .tensors()
        .contains_key(&format!("layers.{layer}.ffn.shared_experts.w1.weight"));
    let shared = if has_shared {
        let sg = ck.shared_expert(layer, Proj::GateUp)?;
        let sd = ck.shared_expert(layer, Proj::Down)?;
        let sname = format!("layers.{layer}.ffn.shared_experts.w1.weight");
        if (sg.n, sg.k, sd.n, sd.k) != (2 * i, h, h, i) || sd.format != sg.format {
            return Err(bad(
                sname,
                format!(
                    "shared expert {} [{}, {}] / {} [{}, {}] does not match the routed experts' widths (H {h}, I {i})",
                    sg.format, sg.n, sg.k, sd.format, sd.n, sd.k
                ),
            ));
        }
        check_scales(&sg, "shared_experts")?;
        check_scales(&sd, "shared_experts")?;
        Some((sg, sd))
    } else {
        None
    };
    if base.topk > e {
        return Err(bad(
            format!("layers.{layer}.ffn.experts.{}.w1.weight", e - 1),
            format!("{e} routed experts, fewer than top-{} of the preset", base.topk),
        ));
    }
    let preset = Preset {
        hidden: h,
        expert_width: i,
        num_experts: e,
        shared_experts: has_shared as usize,
        ..*base
    };
    let tname = format!("layers.{layer}.ffn.gate.tid2eid");
    let tid2eid = match ck.tensors().get(&tname) {
        None => None,
        Some(t) => {
            if t.shape.len() != 2 || t.shape[1] != base.topk {
                return Err(bad(
                    tname,
                    format!("shape {:?}, expected [V, {}] (top-k)", t.shape, base.topk),
                ));
            }
            // V = 0 routes no token id at all: every token would fail later, in the router,
            // without naming the tensor.
            if t.shape[0] == 0 {
                return Err(bad(
                    tname,
                    format!("shape {:?}: no rows (V = 0), so no token id can be routed", t.shape),
                ));
            }
            let raw = ck.bytes(t);
            let wide: Vec<i64> = match t.dtype.as_str() {
                "I32" => raw
                    .chunks_exact(4)
                    .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap_or_default())))
                    .collect(),
                "I64" => raw
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
                other => return Err(bad(tname, format!("dtype {other}, expected I32 or I64"))),
            };
            if wide.len() != t.shape[0] * base.topk {
                return Err(bad(tname, format!("{} bytes do not hold {:?} ids", raw.len(), t.shape)));
            }
            // Every id names one of the layer's experts, checked at load (it failed late, in the
            // router, without naming the tensor): the first bad one by index and value.
            if let Some((at, &v)) = wide.iter().enumerate().find(|(_, &v)| v < 0 || v >= e as i64) {
                return Err(bad(
                    tname,
                    format!(
                        "entry [{}, {}] is expert {v}, outside 0..{e} (the layer's {e} routed experts)",
                        at / base.topk,
                        at % base.topk
                    ),
                ));
            }
            // In range of 0..e, so every id fits i32.
            let ids: Vec<i32> = wide.iter().map(|&v| v as i32).collect();
            Some((ids, t.shape[0]))
        }
    };
    if tid2eid.is_none() {
        check_group_routing(base, e, layer)?;
    }
    Ok(CheckpointPlan {
        ck,
        layer,
        preset,
        tid2eid,
        gate_up: gu,
        down: dn,
        shared,
    })
}

/// Whether a gated layer of `e` routed experts can be routed by `base`'s group limit (the rules of
/// `router_topk`, OPS.md §2: `n_group` divides E, `k <= topk_group * E / n_group`, top2_sum
/// groups of at least 2 experts), checked before any upload (issue 16: a deepseek-v3 preset on an
/// 8-expert checkpoint printed its header and failed in the router). Hash-routed layers
/// (`gate.tid2eid`) have no group limit.
fn check_group_routing(base: &Preset, e: usize, layer: usize) -> Result<()> {
    let Some(g) = base.group.filter(|g| g.n_group > 1) else {
        return Ok(());
    };
    let what = format!(
        "preset {} (n_group {}, topk_group {}, top-{}) cannot route layer {layer}'s {e} routed experts",
        base.name, g.n_group, g.topk_group, base.topk
    );
    let why = if e % g.n_group != 0 {
        Some(format!("n_group {} does not divide {e} experts", g.n_group))
    } else if base.topk > g.topk_group * (e / g.n_group) {
        Some(format!(
            "top-{} exceeds topk_group * E / n_group = {} * {e} / {} = {}",
            base.topk,
            g.topk_group,
            g.n_group,
            g.topk_group * (e / g.n_group)
        ))
    } else if g.score == moehal_core::ops::GroupScore::Top2Sum && e / g.n_group < 2 {
        Some(format!(
            "top2_sum group scores need 2 experts per group, {e} / {} = {}",
            g.n_group,
            e / g.n_group
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::invalid(
            "moe",
            "weights",
            format!("{what}: {why} (a preset whose routing fits these experts, or a checkpoint of the preset's)"),
        )),
        None => Ok(()),
    }
}

/// Read layer `layer` of checkpoint `ck` ([`plan_checkpoint_layer`]) and upload its expert
/// weights to every backend of `backends`, straight from the map (no host copy).
///
/// # Errors
/// Those of [`plan_checkpoint_layer`]; the backends' allocation and upload errors.
pub fn load_checkpoint_layer(
    backends: &[&dyn Backend],
    ck: &crate::checkpoint::Checkpoint,
    layer: usize,
    base: &Preset,
) -> Result<CheckpointLayer> {
    let plan = plan_checkpoint_layer(ck, layer, base)?;
    let weights = plan.upload(backends)?;
    Ok(CheckpointLayer {
        preset: plan.preset,
        weights,
        tid2eid: plan.tid2eid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::preset;

    #[test]
    fn fit_keeps_small_presets_and_scales_big_ones() {
        let q = preset("qwen3-30b-a3b").unwrap();
        let (p, notes) = fit_experts(q, DType::BF16, 4 << 30);
        assert_eq!(p, *q);
        assert!(notes.is_empty());
        let d = preset("deepseek-v3").unwrap();
        let (p, notes) = fit_experts(d, DType::BF16, 4 << 30);
        assert!(p.num_experts < d.num_experts && p.num_experts >= p.topk);
        assert!(weight_bytes(&p, DType::BF16) <= 4 << 30);
        let g = p.group.unwrap();
        assert_eq!(p.num_experts % g.n_group, 0);
        assert!(p.topk <= g.topk_group * p.num_experts / g.n_group);
        assert!(notes[0].contains("scaled by expert count"));
    }

    /// mxfp4 is budgeted at its packed bytes (0.5 per element + one E8M0 byte per 32), not one byte
    /// per element: V4-Flash's 256 mxfp4 experts + the fp8_block shared expert (~3.2 GiB) fit 4 GiB
    /// (at one byte per element it dropped to 169).
    #[test]
    fn fit_counts_packed_quantized_bytes() {
        let v4 = preset("deepseek-v4-flash").unwrap();
        let (h, i) = (v4.hidden as u64, v4.expert_width as u64);
        let mx = 3 * h * i / 2 + 3 * h * i / 32;
        assert_eq!(quant_expert_bytes(v4, WeightFormat::Mxfp4), mx);
        let fp8 = 3 * h * i + 4 * ((2 * i).div_ceil(128) * h.div_ceil(128) + h.div_ceil(128) * i.div_ceil(128));
        assert_eq!(quant_expert_bytes(v4, WeightFormat::Fp8Block), fp8);
        let (p, notes) = fit_experts_quant(v4, WeightFormat::Mxfp4, WeightFormat::Fp8Block, 4 << 30);
        assert_eq!(p.num_experts, 256, "{notes:?}");
        assert!(notes.is_empty());
        let (p, notes) = fit_experts_quant(v4, WeightFormat::Mxfp4, WeightFormat::Fp8Block, 2 << 30);
        assert_eq!(p.num_experts as u64, ((2u64 << 30) - fp8) / mx);
        assert!(quant_weight_bytes(&p, WeightFormat::Mxfp4, WeightFormat::Fp8Block) <= 2 << 30);
        assert!(notes[0].contains("mxfp4 routed / fp8_block shared"), "{notes:?}");
    }

    /// The one rule of `moe` and `moe --ep` (issue 10): quantized experts are budgeted at their
    /// packed bytes, float experts at the dtype's size, and the bytes reported agree with the fit.
    #[test]
    fn fit_for_uses_packed_bytes_for_quantized_and_dtype_bytes_for_float() {
        let v4 = preset("deepseek-v4-flash").unwrap();
        let q = Some((WeightFormat::Mxfp4, WeightFormat::Fp8Block));
        let budget = 2u64 << 30;
        let (p, _) = fit_experts_for(v4, DType::BF16, q, budget);
        assert_eq!(
            p,
            fit_experts_quant(v4, WeightFormat::Mxfp4, WeightFormat::Fp8Block, budget).0
        );
        // One byte per element (the old EP rule) keeps fewer experts than the packed bytes allow.
        let (u8_rule, _) = fit_experts(v4, DType::U8, budget);
        assert!(
            p.num_experts > u8_rule.num_experts,
            "{} vs {}",
            p.num_experts,
            u8_rule.num_experts
        );
        assert!(expert_weight_bytes(&p, DType::BF16, q) <= budget);
        assert_eq!(
            expert_weight_bytes(&p, DType::BF16, q),
            quant_weight_bytes(&p, WeightFormat::Mxfp4, WeightFormat::Fp8Block)
        );
        let (f, _) = fit_experts_for(v4, DType::BF16, None, budget);
        assert_eq!(f, fit_experts(v4, DType::BF16, budget).0);
        assert_eq!(
            expert_weight_bytes(&f, DType::BF16, None),
            weight_bytes(&f, DType::BF16)
        );
        assert!(expert_weight_bytes(&f, DType::BF16, None) <= budget);
    }

    /// The pipeline against the layer written out on the host in f64 from the spec (OPS.md §3:
    /// routed experts weighted by the router, plus the shared expert), with the same seeded
    /// weights regenerated on the host.
    #[test]
    fn layer_matches_a_host_f64_computation() {
        let base = *preset("deepseek-v4-flash").unwrap();
        let p = Preset {
            hidden: 64,
            expert_width: 32,
            num_experts: 8,
            topk: 3,
            ..base
        };
        let (t, h, i, e, k) = (5, p.hidden, p.expert_width, p.num_experts, p.topk);
        let seed = 11;
        let be = moehal_core::Reference::new();
        let ws = MoeWeights::upload(&[&be], &p, DType::F32, seed, &|_| {}).unwrap();
        let inp = MoeInputs::generate(&p, t, DType::F32, seed).unwrap();
        let got = forward(&be, &p, DType::F32, &ws[0], &inp).unwrap();

        let f = |stream: u64, n: usize, fan_in: usize| -> Vec<f64> {
            let b = random_floats(
                DType::F32,
                n,
                (3.0 / fan_in as f32).sqrt(),
                stream_seed(seed, stream),
                0,
            )
            .unwrap();
            super::super::decode_floats(DType::F32, &b)
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect()
        };
        let gu = f(1, e * 2 * i * h, h);
        let dn = f(2, e * h * i, i);
        let sgu = f(10, 2 * i * h, h);
        let sdn = f(11, h * i, i);
        let x = super::super::decode_floats(DType::F32, &inp.x).unwrap();
        let limit = p.swiglu_limit.map(f64::from);
        let expert = |gu: &[f64], dn: &[f64], xt: &[f32]| -> Vec<f64> {
            let hcol = |n: usize| -> f64 { (0..h).map(|c| gu[n * h + c] * xt[c] as f64).sum() };
            let act: Vec<f64> = (0..i)
                .map(|j| {
                    let (mut g, mut u) = (hcol(j), hcol(i + j));
                    if let Some(l) = limit {
                        g = g.min(l);
                        u = u.clamp(-l, l);
                    }
                    g / (1.0 + (-g).exp()) * u
                })
                .collect();
            (0..h).map(|n| (0..i).map(|j| dn[n * i + j] * act[j]).sum()).collect()
        };
        let mut want = vec![0f32; t * h];
        for tok in 0..t {
            let xt = &x[tok * h..(tok + 1) * h];
            let logits: Vec<f64> = inp.logits[tok * e..(tok + 1) * e].iter().map(|&v| v as f64).collect();
            let route = moehal_core::reference::route_token(&p.router(), &logits, inp.bias.as_deref());
            assert_eq!(&route.ids[..], &got.ids[tok * k..(tok + 1) * k]);
            let mut acc = expert(&sgu, &sdn, xt);
            for (&id, &wgt) in route.ids.iter().zip(&route.weights) {
                let id = id as usize;
                let y = expert(
                    &gu[id * 2 * i * h..(id + 1) * 2 * i * h],
                    &dn[id * h * i..(id + 1) * h * i],
                    xt,
                );
                acc.iter_mut().zip(y).for_each(|(a, v)| *a += wgt * v);
            }
            for (o, a) in want[tok * h..(tok + 1) * h].iter_mut().zip(acc) {
                *o = a as f32;
            }
        }
        let err = super::super::rel_error(&got.out, &want);
        assert!(err < 1e-5, "relative error {err}");
    }

    #[test]
    fn tiny_layer_matches_itself_on_reference() {
        let p = preset("deepseek-v4-flash").unwrap().scaled_widths(64);
        let p = Preset { num_experts: 8, ..p };
        let be = moehal_core::Reference::new();
        let ws = MoeWeights::upload(&[&be], &p, DType::F32, 1, &|_| {}).unwrap();
        let inp = MoeInputs::generate(&p, 3, DType::F32, 1).unwrap();
        let a = forward(&be, &p, DType::F32, &ws[0], &inp).unwrap();
        assert_eq!(a.out.len(), 3 * p.hidden);
        assert!(a.out.iter().all(|v| v.is_finite()));
        assert!(a.out.iter().any(|&v| v != 0.0));
        assert!(a.stages.iter().any(|s| s.name == "shared_expert"));
        // Distinct ids per token.
        for tok in a.ids.chunks(p.topk) {
            let mut v = tok.to_vec();
            v.sort();
            v.dedup();
            assert_eq!(v.len(), p.topk);
        }
    }

    /// The V4-Flash layer with its shipped formats (MXFP4 routed, fp8_block shared) on the CPU
    /// matches the reference computed from the same quantized weights, at the bf16 tolerance.
    #[cfg(feature = "cpu")]
    #[test]
    fn quantized_v4_flash_layer_matches_the_reference() {
        let p = preset("deepseek-v4-flash").unwrap().scaled_widths(16); // hidden 256, width 128
        let p = Preset { num_experts: 16, ..p };
        let (routed, shared) = shipped_formats(&p).unwrap();
        assert_eq!((routed, shared), (WeightFormat::Mxfp4, WeightFormat::Fp8Block));
        let cpu = moehal_cpu::CpuBackend::new();
        let rf = moehal_core::Reference::new();
        let ws = MoeWeights::upload_quant(&[&cpu, &rf], &p, routed, shared, 3, &|_| {}).unwrap();
        let inp = MoeInputs::generate(&p, 5, DType::BF16, 3).unwrap();
        let a = forward(&cpu, &p, DType::BF16, &ws[0], &inp).unwrap();
        let b = forward(&rf, &p, DType::BF16, &ws[1], &inp).unwrap();
        assert_eq!(a.ids, b.ids);
        let rel = super::super::rel_error(&a.out, &b.out);
        let den: f64 = b.out.iter().map(|&y| (y as f64).powi(2)).sum();
        assert!(
            den > 0.0 && rel <= super::super::tolerance(DType::BF16),
            "relative error {rel:.3e}"
        );
        // The activations stay O(1): the generated scales follow 1/sqrt(fan_in).
        let rms = (den / b.out.len() as f64).sqrt();
        assert!((0.05..20.0).contains(&rms), "output RMS {rms}");
    }
}
