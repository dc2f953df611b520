//! The validation harness: runs any backend against the reference on one case and applies the
//! Conformance rules of OPS.md.
//!
//! For every case: fresh inputs from a seeded generator (the seed is printed on failure), the same
//! inputs uploaded to the backend under test and to the [`Reference`]; every output is surrounded
//! by guard regions and poisoned before the run (floats with NaN, integers with `0xA5` bytes), so
//! unwritten elements and out-of-bounds writes show. The tests, `moehal check` and the C-ABI tests
//! all use it.

use std::time::Instant;

use half::{bf16, f16};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::presets::Preset;
use moehal_core::conformance;

pub mod bench;
pub mod cost;
pub mod presets;
pub mod quant;
pub mod rng;
use moehal_core::engram::{self, EngramLayer};
use moehal_core::ops::{
    EngramHash, EngramLookup, GatherRows, GroupLimit, GroupScore, GroupedGemm, MoeCombine, MoePermute, OpDesc,
    RouterConfig, RouterHash, RouterTopk, Scoring, Swiglu, TableFormat, WeightLayout,
};
use moehal_core::{Backend, Buffer, DType, Error, Float, OpKind, Reference, Support, TensorMut, TensorRef};

/// Elements of guard region on each side of every output and every input (OPS.md §Conformance:
/// "surround outputs with guard regions that must stay untouched"). Output guards are poisoned and
/// must read back unchanged; inputs sit at this element offset in their buffers, behind poison, so
/// a backend that ignores view offsets reads poison. 64 elements are 256 bytes of f32: wider than
/// any vector store or tile row the kernels issue (AVX-512: 64 bytes; AMX rows: 64 bytes).
pub const GUARD: usize = 64;

/// Outcome of one case on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Matches the reference within the contract's tolerance.
    Pass,
    /// Differs from the reference, wrote out of bounds, or failed.
    Fail,
    /// The backend does not support this variant (reported, not failed, not skipped silently).
    Unsupported,
}

impl Verdict {
    /// Upper-case label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Unsupported => "UNSUPPORTED",
        }
    }
}

/// Result of [`run_case`].
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The op.
    pub op: OpKind,
    /// Backend name.
    pub backend: String,
    /// Case name.
    pub case: String,
    /// dtype / variant label.
    pub dtype: String,
    /// The error metric as printed (`"rel 3.1e-06"`, `"exact"`, `"ids equal, |dw| 2.0e-07"`).
    pub metric: String,
    /// Verdict.
    pub verdict: Verdict,
    /// Seconds the backend took for the op (upload and download excluded, synchronize included).
    pub seconds: f64,
    /// The seed of the inputs.
    pub seed: u64,
    /// The bound the result was held to ([`tolerance_label`]: `"rel <= 1e-5"`, `"bitwise"`, ...).
    pub tolerance: String,
    /// Why it failed or is unsupported (empty on pass).
    pub detail: String,
}

/// Which Engram layer a case hashes with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerChoice {
    /// The toy layer of OPS.md (V' 50, N 3, K 2; 60 table rows).
    Toy,
    /// DeepSeek-V4.1-Flash layer 0 or 1 (real multipliers and primes).
    V41(usize),
    /// A small layer: primes derived from `vocab_n`, N, K, real V4.1 layer-1 multipliers truncated to N.
    Small {
        /// Base of the prime search.
        vocab_n: u64,
        /// Max order.
        n: usize,
        /// Heads.
        k: usize,
    },
}

impl LayerChoice {
    fn build(self) -> EngramLayer {
        let built = match self {
            LayerChoice::Toy => engram::toy::layer(),
            LayerChoice::V41(i) => engram::v41_flash::layer(i),
            LayerChoice::Small { vocab_n, n, k } => engram::derive_primes(vocab_n, n, k, 1).and_then(|p| {
                let m = engram::v41_flash::MULTIPLIERS[0][..n].to_vec();
                EngramLayer::new(
                    n,
                    k,
                    m,
                    p[0].clone(),
                    engram::v41_flash::VOCAB_SIZE,
                    engram::v41_flash::PAD_ID,
                )
            }),
        };
        built.expect("built-in Engram layers are valid")
    }
}

/// How router logits are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Logits {
    /// Normal(0, 2) — distinct values, no ties.
    Random,
    /// Few distinct values, so exact ties are everywhere (lower index must win).
    Ties,
    /// Random with NaN and ±inf sprinkled in; the first row entirely NaN.
    NonFinite,
    /// Exact f32 score ties (OPS.md §2 step 1), no randomness: rows cycle through sigmoid
    /// saturation (logits >= 20 all score 1.0), underflow (5 then logits -200..-400: softmax and
    /// sigmoid scores 0, sqrt_softplus 0 or an f32 subnormal), equal logits, and equal pairs.
    TieClasses,
    /// Selection scores that tie only after `fl32(s + bias)` (step 2): bias 1024 on every expert
    /// (any bias the case asks for is replaced) and logits 0 or 1e-5 by group, so experts and whole
    /// groups tie although their exact scores differ.
    BiasRounding,
    /// Group scores that tie only as f32 sums (step 3, `top2_sum`): logits -300 (sigmoid and
    /// sqrt_softplus scores 0, so `ŝ` = bias), bias 1 on each group's first expert and 2^-24 on
    /// the second expert of odd groups: `fl32(1 + 2^-24) = 1`.
    GroupSumRounding,
    /// Random logits in which rows cycle through five patterns: all equal, one NaN with +inf and
    /// -inf, all NaN (nothing selectable), many exact ties (every third expert 1.25), and one
    /// finite logit (the rest NaN).
    Edge,
}

/// What a hash-routing case breaks on purpose (value checks; nothing may be written).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HashBad {
    /// One token id equals V.
    TokenId,
    /// One looked-up `tid2eid` entry equals E.
    Entry,
}

/// What the backend is expected to do with a case's inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// Compute the op.
    Ok,
    /// Reject the inputs with `InvalidArgument` on this field and write nothing.
    Invalid(&'static str),
}

/// One conformance case: an op, its shape and options, and how its inputs are drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// `grouped_gemm`: `groups` lists the rows of each group; `tail` extra rows past the last group.
    GroupedGemm {
        /// dtype of x, w, y.
        dtype: DType,
        /// Weight layout.
        layout: WeightLayout,
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
        /// Corrupt `group_end` (decreasing) to test the value check.
        bad_group_end: bool,
    },
    /// `router_topk`.
    RouterTopk {
        /// Logits dtype.
        dtype: DType,
        /// Tokens.
        tokens: usize,
        /// Experts.
        num_experts: usize,
        /// Options.
        config: RouterConfig,
        /// With selection bias; `Some(negative)` shifts it so every selection score is negative.
        bias: Option<bool>,
        /// Logit pattern.
        logits: Logits,
    },
    /// `router_topk` with hash routing (OPS.md §2 "Hash routing"): random `tid2eid` `[V, k]` (repeats
    /// allowed) and token ids.
    RouterHash {
        /// Logits dtype.
        dtype: DType,
        /// Tokens.
        tokens: usize,
        /// Experts.
        num_experts: usize,
        /// Rows of `tid2eid`.
        vocab: usize,
        /// Options (`group` is ignored by the op).
        config: RouterConfig,
        /// Logit pattern (`Random` or `NonFinite`).
        logits: Logits,
        /// A value error to plant.
        bad: Option<HashBad>,
    },
    /// `router_topk` on one token of given f32 logits (and bias) whose ids are known: the tie
    /// classes of OPS.md §2 steps 1–3 written out. The ids must equal `want` and the reference's
    /// exactly (no near-tie latitude), expert counts too, and the weights the reference's within
    /// `weight_abs` (at most [`conformance::ROUTER_WEIGHT_ABS`]).
    RouterKnown {
        /// Options.
        config: RouterConfig,
        /// The token's logits `[E]`.
        logits: Vec<f32>,
        /// Selection bias `[E]`.
        bias: Option<Vec<f32>>,
        /// The ids the lower-index rule gives.
        want: Vec<i32>,
        /// Bound on `|w - w_ref|`.
        weight_abs: f64,
    },
    /// `moe_permute`.
    MoePermute {
        /// Tokens.
        tokens: usize,
        /// Slots per token.
        topk: usize,
        /// Experts.
        num_experts: usize,
        /// Also permute activations of this dtype with this width.
        x: Option<(DType, usize)>,
        /// Fraction of slots dropped (`-1`).
        drop: f64,
        /// Allow the same expert twice in a token.
        repeat: bool,
        /// Put an out-of-range id in (value check).
        bad_id: bool,
    },
    /// `swiglu`.
    Swiglu {
        /// dtype.
        dtype: DType,
        /// Rows.
        rows: usize,
        /// Output width I.
        intermediate: usize,
        /// Clamp.
        limit: Option<f32>,
    },
    /// `moe_combine`.
    MoeCombine {
        /// dtype.
        dtype: DType,
        /// Tokens.
        tokens: usize,
        /// Slots.
        topk: usize,
        /// Width.
        hidden: usize,
        /// Fraction of dropped slots.
        drop: f64,
        /// Put an out-of-range slot row in (value check).
        bad_row: bool,
    },
    /// `engram_hash`.
    EngramHash {
        /// Layer.
        layer: LayerChoice,
        /// Tokens.
        tokens: usize,
        /// With positions (several segments).
        positions: bool,
        /// With an alive mask.
        alive: bool,
        /// History length (<= N-1).
        history: usize,
        /// Fixed ids instead of random ones.
        ids: Option<Vec<i64>>,
        /// Put an id >= V' in (value check).
        bad_id: bool,
    },
    /// `gather_rows`.
    GatherRows {
        /// Table format.
        format: TableFormat,
        /// Output dtype.
        out: DType,
        /// Table rows.
        table_rows: usize,
        /// Row width D.
        dim: usize,
        /// Tokens.
        tokens: usize,
        /// Columns.
        cols: usize,
        /// Put an out-of-range row in (value check).
        bad_row: bool,
        /// The table in host memory (`moehal_core::host`), not uploaded: a backend that gathers
        /// from pinned or mapped host tables (OPS.md §5: "the table may live in host memory") reads it in place.
        host_table: bool,
    },
    /// `engram_lookup` (table of exactly the layer's rows).
    EngramLookup {
        /// Layer.
        layer: LayerChoice,
        /// Table format.
        format: TableFormat,
        /// Output dtype.
        out: DType,
        /// Row width D.
        dim: usize,
        /// Tokens.
        tokens: usize,
        /// With positions, alive mask and history.
        extras: bool,
    },
    /// OPS.md §6: quantized `grouped_gemm` and the quantize ops (see [`quant`]).
    Quant(quant::QuantSpec),
}

/// A value error planted in a case's inputs after they are drawn: one element set to a value the
/// op's contract (OPS.md) rejects. The backend must return `InvalidArgument` naming the field and
/// write nothing (every output keeps its poison). Each kind is a boundary a range check can get
/// wrong with a signed/unsigned mix-up, which the `bad_*` flags of [`Spec`] (values just past the
/// top of the range) do not reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt {
    /// `grouped_gemm`: `group_end[G-1] = M + 1`, past the rows of `x` (OPS.md §1: `group_end[G-1] <= M`).
    GroupEndPastRows,
    /// `grouped_gemm`: `group_end[0] = -1` (OPS.md §1: non-decreasing from `group_end[-1] = 0`).
    GroupEndNegative,
    /// `moe_permute`: one id `= -2` (OPS.md §3: only `-1` marks a dropped slot).
    PermuteIdBelowDropped,
    /// `router_topk` hash routing: one token id `= -1` (OPS.md §2 "Hash routing": ids in `[0, V)`).
    RouterTokenNegative,
    /// `engram_hash`: one token id `= -1` (OPS.md §4: ids in `[0, V')`).
    HashTokenNegative,
}

impl Corrupt {
    /// The input field the backend must name in its `InvalidArgument`.
    pub fn field(self) -> &'static str {
        match self {
            Corrupt::GroupEndPastRows | Corrupt::GroupEndNegative => "group_end",
            Corrupt::PermuteIdBelowDropped | Corrupt::HashTokenNegative => "ids",
            Corrupt::RouterTokenNegative => "token_ids",
        }
    }

    /// Plant the value in `inputs` (drawn for `spec`); `Err` if the kind does not fit the op.
    fn apply(self, spec: &Spec, inputs: &mut Inputs) -> Result<(), String> {
        fn set<T: moehal_core::Element>(t: &mut HostTensor, i: usize, v: T) -> Result<(), String> {
            let n = t.numel();
            if t.dtype != T::DTYPE || i >= n {
                return Err(format!("cannot set element {i} of a {} tensor of {n}", t.dtype));
            }
            let es = std::mem::size_of::<T>();
            t.bytes[i * es..(i + 1) * es].copy_from_slice(bytemuck::bytes_of(&v));
            Ok(())
        }
        let ts = &mut inputs.tensors;
        match (self, spec) {
            (Corrupt::GroupEndPastRows, Spec::GroupedGemm { groups, tail, .. }) if !groups.is_empty() => {
                let m: usize = groups.iter().sum::<usize>() + tail;
                set(&mut ts[2], groups.len() - 1, m as i64 + 1)
            }
            (Corrupt::GroupEndNegative, Spec::GroupedGemm { groups, .. }) if !groups.is_empty() => {
                set(&mut ts[2], 0, -1i64)
            }
            (Corrupt::PermuteIdBelowDropped, Spec::MoePermute { tokens: t, topk: k, .. }) if t * k > 0 => {
                set(&mut ts[0], t * k / 2, -2i32)
            }
            (Corrupt::RouterTokenNegative, Spec::RouterHash { tokens: t, .. }) if *t > 0 => {
                set(&mut ts[2], t / 2, -1i64)
            }
            (Corrupt::HashTokenNegative, Spec::EngramHash { .. }) if ts[0].numel() > 0 => {
                let last = ts[0].numel() - 1;
                set(&mut ts[0], last, -1i64)
            }
            (c, _) => Err(format!("{c:?} does not apply to this case")),
        }
    }
}

/// A named case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    name: String,
    /// What to run.
    pub spec: Spec,
    /// A value error planted in the drawn inputs (see [`Corrupt`]).
    corrupt: Option<Corrupt>,
}

impl Case {
    /// A case with a name.
    pub fn new(name: impl Into<String>, spec: Spec) -> Self {
        Case {
            name: name.into(),
            spec,
            corrupt: None,
        }
    }
    /// The same case with a value error planted in its inputs: the backend must reject it.
    pub fn corrupted(mut self, c: Corrupt) -> Self {
        self.corrupt = Some(c);
        self
    }
    /// The inputs of one run: drawn from the spec with `seed`, then corrupted if asked.
    fn inputs(&self, seed: u64) -> Result<Inputs, String> {
        let mut inputs = make_inputs(&self.spec, seed)?;
        if let Some(c) = self.corrupt {
            c.apply(&self.spec, &mut inputs)?;
        }
        Ok(inputs)
    }
    /// The op.
    pub fn op(&self) -> OpKind {
        match &self.spec {
            Spec::GroupedGemm { .. } => OpKind::GroupedGemm,
            Spec::RouterTopk { .. } | Spec::RouterHash { .. } | Spec::RouterKnown { .. } => OpKind::RouterTopk,
            Spec::MoePermute { .. } => OpKind::MoePermute,
            Spec::Swiglu { .. } => OpKind::Swiglu,
            Spec::MoeCombine { .. } => OpKind::MoeCombine,
            Spec::EngramHash { .. } => OpKind::EngramHash,
            Spec::GatherRows { .. } => OpKind::GatherRows,
            Spec::EngramLookup { .. } => OpKind::EngramLookup,
            Spec::Quant(q) => q.op(),
        }
    }
    /// The case name.
    pub fn name(&self) -> String {
        self.name.clone()
    }
    /// The dtype / variant label.
    pub fn dtype(&self) -> String {
        match &self.spec {
            Spec::GroupedGemm { dtype, layout, .. } => format!("{dtype} {layout:?}"),
            Spec::RouterTopk { dtype, .. } | Spec::Swiglu { dtype, .. } | Spec::MoeCombine { dtype, .. } => {
                dtype.to_string()
            }
            Spec::RouterHash { dtype, .. } => format!("{dtype} hash"),
            Spec::RouterKnown { .. } => "f32 known ids".into(),
            Spec::MoePermute { x: Some((d, _)), .. } => format!("i32+{d}"),
            Spec::MoePermute { x: None, .. } => "i32".into(),
            Spec::EngramHash { .. } => "i64".into(),
            Spec::GatherRows { format, out, .. } | Spec::EngramLookup { format, out, .. } => {
                if format.storage_dtype() == *out {
                    out.to_string()
                } else {
                    format!("{}->{out}", format.name())
                }
            }
            Spec::Quant(q) => q.label(),
        }
    }
    /// FLOPs of one run ([`cost`]): the float and quantized grouped GEMMs (`2 · M · N · K` over
    /// the routed rows); `None` for the memory-bound ops.
    pub fn flops(&self) -> Option<f64> {
        match &self.spec {
            Spec::GroupedGemm { groups, n, k, .. } | Spec::Quant(quant::QuantSpec::Gemm { groups, n, k, .. }) => {
                Some(cost::gemm_flops(groups.iter().sum(), *n, *k))
            }
            _ => None,
        }
    }
    /// Bytes that define the op's bandwidth in one run ([`cost`]): weights of the groups with rows
    /// (GEMM), logits (router), rows moved (glue), ids and rows (hash), bytes gathered.
    pub fn bytes(&self) -> f64 {
        let touched = |groups: &[usize]| groups.iter().filter(|&&g| g > 0).count();
        match &self.spec {
            Spec::GroupedGemm {
                dtype, groups, n, k, ..
            } => cost::gemm_bytes(touched(groups), *n, *k, dtype.size()),
            Spec::Quant(q) => q.bytes(),
            Spec::RouterTopk {
                dtype,
                tokens: t,
                num_experts: e,
                ..
            }
            | Spec::RouterHash {
                dtype,
                tokens: t,
                num_experts: e,
                ..
            } => cost::router_bytes(*t, *e, dtype.size()),
            Spec::RouterKnown { logits, .. } => cost::router_bytes(1, logits.len(), 4),
            Spec::MoePermute {
                tokens: t, topk: k, x, ..
            } => x.map_or(0.0, |(d, h)| cost::permute_bytes(*t, *k, h, d.size())),
            Spec::Swiglu {
                dtype,
                rows: m,
                intermediate: i,
                ..
            } => cost::swiglu_bytes(*m, *i, dtype.size()),
            Spec::MoeCombine {
                dtype,
                tokens: t,
                topk: k,
                hidden: h,
                ..
            } => cost::combine_bytes(*t, *k, *h, dtype.size()),
            Spec::EngramHash {
                layer, tokens: t, ids, ..
            } => cost::hash_bytes(ids.as_ref().map_or(*t, Vec::len), layer.build().columns()),
            Spec::GatherRows {
                out,
                dim: d,
                tokens: t,
                cols: c,
                ..
            } => cost::gather_bytes(*t, *c, *d, out.size()),
            Spec::EngramLookup {
                layer,
                out,
                dim: d,
                tokens: t,
                ..
            } => cost::gather_bytes(*t, layer.build().columns(), *d, out.size()),
        }
    }
    fn expect(&self) -> Expect {
        if let Some(c) = self.corrupt {
            return Expect::Invalid(c.field());
        }
        match &self.spec {
            Spec::GroupedGemm {
                bad_group_end: true, ..
            } => Expect::Invalid("group_end"),
            Spec::MoePermute { bad_id: true, .. } => Expect::Invalid("ids"),
            Spec::RouterHash {
                bad: Some(HashBad::TokenId),
                ..
            } => Expect::Invalid("token_ids"),
            Spec::RouterHash {
                bad: Some(HashBad::Entry),
                ..
            } => Expect::Invalid("tid2eid"),
            Spec::MoeCombine { bad_row: true, .. } => Expect::Invalid("slot_row"),
            Spec::EngramHash { bad_id: true, .. } => Expect::Invalid("ids"),
            Spec::GatherRows { bad_row: true, .. } => Expect::Invalid("rows"),
            // A 0-row table gathered by at least one index: every index is out of range (OPS.md §5).
            Spec::GatherRows {
                table_rows: 0,
                tokens,
                cols,
                ..
            } if tokens * cols > 0 => Expect::Invalid("rows"),
            _ => Expect::Ok,
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Host tensors: inputs and downloaded outputs
// ------------------------------------------------------------------------------------------------

/// A host copy of a tensor.
#[derive(Debug, Clone)]
struct HostTensor {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl HostTensor {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    fn as_f64(&self) -> Vec<f64> {
        match self.dtype {
            DType::F32 => typed::<f32>(&self.bytes).iter().map(|v| v.to_f64()).collect(),
            DType::BF16 => typed::<bf16>(&self.bytes).iter().map(|v| v.to_f64()).collect(),
            DType::F16 => typed::<f16>(&self.bytes).iter().map(|v| Float::to_f64(*v)).collect(),
            DType::I32 => typed::<i32>(&self.bytes).iter().map(|&v| v as f64).collect(),
            DType::I64 => typed::<i64>(&self.bytes).iter().map(|&v| v as f64).collect(),
            DType::U8 => self.bytes.iter().map(|&v| v as f64).collect(),
            DType::I8 => self.bytes.iter().map(|&v| v as i8 as f64).collect(),
        }
    }
}

fn typed<T: moehal_core::Element>(b: &[u8]) -> Vec<T> {
    bytemuck::pod_collect_to_vec(b)
}

fn poison_byte(dtype: DType) -> u8 {
    if dtype.is_float() {
        0xFF
    } else {
        0xA5
    }
}

/// Memory of one run on one backend: uploaded inputs and poisoned, guarded outputs.
struct Run<'b> {
    be: &'b dyn Backend,
}

impl<'b> Run<'b> {
    /// Upload an input behind a poisoned guard region of [`GUARD`] elements on each side: the
    /// view starts at element `GUARD`, so a backend that ignores view offsets reads poison.
    /// With `host`, the buffer is host memory (`moehal_core::host`) that the backend did not
    /// allocate.
    fn input(&self, t: &HostTensor, host: bool) -> moehal_core::Result<Buffer> {
        let es = t.dtype.size();
        let mut bytes = vec![poison_byte(t.dtype); (t.numel() + 2 * GUARD) * es];
        bytes[GUARD * es..GUARD * es + t.bytes.len()].copy_from_slice(&t.bytes);
        if host {
            return moehal_core::host::buffer_from_slice(&bytes);
        }
        let mut b = self.be.alloc(bytes.len())?;
        self.be.upload(&mut b, 0, &bytes)?;
        Ok(b)
    }
    fn output(&self, dtype: DType, n: usize) -> moehal_core::Result<Buffer> {
        let bytes = (n + 2 * GUARD) * dtype.size();
        let mut b = self.be.alloc(bytes)?;
        self.be.upload(&mut b, 0, &vec![poison_byte(dtype); bytes])?;
        Ok(b)
    }
    /// Download an output; `Err` names a guard that was overwritten.
    fn fetch(&self, b: &Buffer, dtype: DType, shape: &[usize]) -> Result<HostTensor, String> {
        let n: usize = shape.iter().product();
        let es = dtype.size();
        let mut all = vec![0u8; (n + 2 * GUARD) * es];
        self.be
            .download(b, 0, &mut all)
            .map_err(|e| format!("download failed: {e}"))?;
        let p = poison_byte(dtype);
        let (lo, rest) = all.split_at(GUARD * es);
        let (mid, hi) = rest.split_at(n * es);
        if let Some(i) = lo.iter().chain(hi).position(|&x| x != p) {
            return Err(format!("guard region overwritten (byte {i} of the guards)"));
        }
        Ok(HostTensor {
            dtype,
            shape: shape.to_vec(),
            bytes: mid.to_vec(),
        })
    }
}

fn view<'a>(b: &'a Buffer, t: &HostTensor) -> TensorRef<'a> {
    TensorRef::new(b, t.dtype, &t.shape).with_offset(GUARD)
}

fn out_view<'a>(b: &'a mut Buffer, dtype: DType, shape: &[usize]) -> TensorMut<'a> {
    TensorMut::new(b, dtype, shape).with_offset(GUARD)
}

// ------------------------------------------------------------------------------------------------
// Inputs
// ------------------------------------------------------------------------------------------------

/// The host inputs of one case, drawn from the seed.
struct Inputs {
    tensors: Vec<HostTensor>,
    history: Vec<i64>,
    layer: Option<EngramLayer>,
}

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller: enough for test data.
    let (u1, u2): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen());
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

fn randn(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| normal(rng) * scale).collect()
}

/// Random bytes that are valid fp8 table rows of `d` codes and `d / 32` E8M0 scales, written
/// into `v` (whole rows), with NaN, zero, subnormal and max encodings mixed in.
fn fp8_table(rng: &mut ChaCha8Rng, v: &mut [u8], d: usize) {
    let w = d + d / 32;
    for row in v.chunks_exact_mut(w.max(1)) {
        for b in &mut row[..d] {
            *b = match rng.gen_range(0..20) {
                0 => 0x7F,                // NaN
                1 => 0x80,                // -0
                2 => rng.gen_range(1..8), // subnormal
                3 => 0x7E,                // 448
                _ => rng.gen(),
            };
        }
        for s in &mut row[d..] {
            *s = rng.gen_range(110..140);
        }
    }
}

fn sequence_extras(
    rng: &mut ChaCha8Rng,
    t: usize,
    positions: bool,
    alive: bool,
) -> (Option<Vec<i64>>, Option<Vec<u8>>) {
    let pos = positions.then(|| {
        let mut p = Vec::with_capacity(t);
        let mut cur = 0i64;
        for i in 0..t {
            cur = if i > 0 && rng.gen_bool(0.1) {
                rng.gen_range(0..3)
            } else {
                cur + 1
            };
            p.push(cur);
        }
        p
    });
    let al = alive.then(|| (0..t).map(|_| u8::from(!rng.gen_bool(0.15))).collect());
    (pos, al)
}

/// Logits of the tie-class patterns of [`Logits`] (deterministic; `[t, e]`).
fn tie_class_logits(kind: Logits, t: usize, e: usize, config: &RouterConfig) -> Vec<f32> {
    let per = config.effective_group().map_or(4.min(e), |g| e / g.n_group).max(1);
    let mut l = vec![0f32; t * e];
    for (ti, row) in l.chunks_mut(e.max(1)).enumerate().take(t) {
        for (i, v) in row.iter_mut().enumerate() {
            *v = match kind {
                Logits::TieClasses => match ti % 4 {
                    0 => [20.5, 100.0, 30.0, 25.0, -1.5, 0.25, 40.0, 22.0][i % 8],
                    1 if i == 0 => 5.0,
                    1 => [-300.0, -200.0, -250.0, -400.0][i % 4],
                    2 => 0.75,
                    _ => ((i / 2) % 4) as f32 * 0.5,
                },
                Logits::BiasRounding => {
                    let g = i / per;
                    match ti % 3 {
                        0 => f32::from(u8::from(g % 2 == 1)) * 1e-5,
                        1 => f32::from(u8::from(g % 2 == 0)) * 1e-5,
                        _ => (i % 3) as f32 * 1e-5,
                    }
                }
                _ => -300.0,
            };
        }
    }
    l
}

/// The bias a tie-class pattern needs (`None`: keep the drawn bias).
fn tie_class_bias(kind: Logits, e: usize, config: &RouterConfig) -> Option<Vec<f32>> {
    let per = config.effective_group().map_or(e, |g| e / g.n_group).max(1);
    match kind {
        Logits::BiasRounding => Some(vec![1024.0; e]),
        Logits::GroupSumRounding => Some(
            (0..e)
                .map(|i| match i % per {
                    0 => 1.0,
                    1 if (i / per) % 2 == 1 => 2f32.powi(-24),
                    _ => 0.0,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// `Ok` when `bufs` are exactly `want` bytes long, one per entry, else
/// [`Error::InvalidArgument`] of `op`, field `inputs`, giving both lists.
pub(crate) fn check_buffers(op: &'static str, want: &[usize], bufs: &[&mut [u8]]) -> moehal_core::Result<()> {
    let got: Vec<usize> = bufs.iter().map(|b| b.len()).collect();
    if got != want {
        return Err(Error::invalid(
            op,
            "inputs",
            format!("buffers of {got:?} bytes, the case takes {want:?}"),
        ));
    }
    Ok(())
}

/// Write `values` into `buf` as little-endian `T`s, one per `size_of::<T>()` bytes (no alignment
/// needed; the values past the end of `buf` are not drawn).
fn put<T: bytemuck::Pod>(buf: &mut [u8], values: impl IntoIterator<Item = T>) {
    for (c, v) in buf.chunks_exact_mut(std::mem::size_of::<T>()).zip(values) {
        c.copy_from_slice(bytemuck::bytes_of(&v));
    }
}

/// 32-bit words of the generator one [`normal`] draw takes: two `u64`s (`gen_range` over
/// `[1e-12, 1)` never rejects: its largest value rounds below 1).
const NORMAL_WORDS: u128 = 4;

/// Fill `buf` (floats of `dtype`) with `scale ·` N(0, 1) draws of `rng`, in element order, and
/// leave `rng` after the last draw. Large buffers are filled on all cores, each thread entering
/// the ChaCha stream at its first element's word ([`NORMAL_WORDS`] per element), so the bytes are
/// those of the one-thread fill whatever the split (a 2 GiB bench table takes seconds, not
/// minutes).
fn put_randn(rng: &mut ChaCha8Rng, dtype: DType, buf: &mut [u8], scale: f32) -> moehal_core::Result<()> {
    let base = rng.get_word_pos();
    let start = rng.clone();
    rng::encode_floats_split(dtype, buf, |first| {
        let mut r = start.clone();
        r.set_word_pos(base + NORMAL_WORDS * u128::from(first));
        move || normal(&mut r) * scale
    })?;
    let n = buf.len() / dtype.size().max(1);
    rng.set_word_pos(base + NORMAL_WORDS * n as u128);
    Ok(())
}

/// Overwrite element `i` of `buf` (floats of `dtype`) with `v`.
fn set_float(dtype: DType, buf: &mut [u8], i: usize, v: f32) -> moehal_core::Result<()> {
    let es = dtype.size();
    rng::encode_floats(dtype, &mut buf[i * es..(i + 1) * es], |_| v)
}

/// Encode the f32 values `v` as floats of `dtype` into `buf`.
fn put_floats(dtype: DType, buf: &mut [u8], v: &[f32]) -> moehal_core::Result<()> {
    rng::encode_floats(dtype, buf, |i| v[i])
}

/// dtype and shape of a gather table of `r` rows of `d` in `format`.
fn table_layout(format: TableFormat, r: usize, d: usize) -> (DType, Vec<usize>) {
    match format {
        TableFormat::Fp8E4m3Ue8m0 => (DType::U8, vec![r, d + d / 32]),
        f => (f.storage_dtype(), vec![r, d]),
    }
}

/// Fill a gather table (`buf` of [`table_layout`]): fp8 rows with specials ([`fp8_table`]), or
/// N(0, 1) floats.
/// Fill a gather table: fp8 rows as [`fp8_table`]; plain tables with uniform values in `[-1, 1)`
/// of a counter-based stream seeded from `rng` ([`rng::fill_random`], on all cores). A gather is a
/// copy, so the values only need to be varied; normal draws (Box-Muller, ~40 ns each) made the
/// 2^22 × 256 tables of `moehal bench --op gather_rows` take minutes to fill on a loaded 2-core
/// machine (fresh-user report, session 9).
fn fill_table(rng: &mut ChaCha8Rng, format: TableFormat, buf: &mut [u8], d: usize) -> moehal_core::Result<()> {
    match format {
        TableFormat::Fp8E4m3Ue8m0 => {
            fp8_table(rng, buf, d);
            Ok(())
        }
        f => {
            let seed: u64 = rng.gen();
            rng::fill_random(f.storage_dtype(), buf, 1.0, seed, 0)
        }
    }
}

impl Spec {
    /// dtype and shape of each input tensor, in the order [`fill_inputs`](Self::fill_inputs)
    /// writes them (the order the op's arguments take them: data, then indices, then the
    /// optional inputs). The Engram history is not a tensor: `fill_inputs` returns it.
    pub fn input_layout(&self) -> Vec<(DType, Vec<usize>)> {
        let mut v = Vec::new();
        match self {
            Spec::Quant(q) => v = quant::input_layout(q),
            Spec::GroupedGemm {
                dtype,
                layout,
                groups,
                tail,
                n,
                k,
                bias,
                row_scale,
                ..
            } => {
                let (g, n, k) = (groups.len(), *n, *k);
                let m: usize = groups.iter().sum::<usize>() + tail;
                v.push((*dtype, vec![m, k]));
                v.push((
                    *dtype,
                    match layout {
                        WeightLayout::NK => vec![g, n, k],
                        WeightLayout::KN => vec![g, k, n],
                    },
                ));
                v.push((DType::I64, vec![g]));
                if *row_scale {
                    v.push((DType::F32, vec![m]));
                }
                if *bias {
                    v.push((*dtype, vec![g, n]));
                }
            }
            Spec::RouterTopk {
                dtype,
                tokens: t,
                num_experts: e,
                bias,
                ..
            } => {
                v.push((*dtype, vec![*t, *e]));
                if bias.is_some() {
                    v.push((DType::F32, vec![*e]));
                }
            }
            Spec::RouterKnown { logits, bias, .. } => {
                v.push((DType::F32, vec![1, logits.len()]));
                if let Some(b) = bias {
                    v.push((DType::F32, vec![b.len()]));
                }
            }
            Spec::RouterHash {
                dtype,
                tokens: t,
                num_experts: e,
                vocab,
                config,
                ..
            } => {
                v.push((*dtype, vec![*t, *e]));
                v.push((DType::I32, vec![*vocab, config.topk]));
                v.push((DType::I64, vec![*t]));
            }
            Spec::MoePermute {
                tokens: t, topk: k, x, ..
            } => {
                v.push((DType::I32, vec![*t, *k]));
                if let Some((d, h)) = x {
                    v.push((*d, vec![*t, *h]));
                }
            }
            Spec::Swiglu {
                dtype,
                rows: m,
                intermediate: i,
                ..
            } => v.push((*dtype, vec![*m, 2 * i])),
            Spec::MoeCombine {
                dtype,
                tokens: t,
                topk: k,
                hidden: h,
                ..
            } => {
                v.push((*dtype, vec![t * k, *h]));
                v.push((DType::I64, vec![*t, *k]));
                v.push((DType::F32, vec![*t, *k]));
            }
            Spec::EngramHash {
                tokens,
                positions,
                alive,
                ids,
                ..
            } => {
                let t = ids.as_ref().map_or(*tokens, Vec::len);
                v.push((DType::I64, vec![t]));
                if *positions {
                    v.push((DType::I64, vec![t]));
                }
                if *alive {
                    v.push((DType::U8, vec![t]));
                }
            }
            Spec::GatherRows {
                format,
                table_rows: r,
                dim: d,
                tokens: t,
                cols: c,
                ..
            } => {
                v.push(table_layout(*format, *r, *d));
                v.push((DType::I64, vec![*t, *c]));
            }
            Spec::EngramLookup {
                layer,
                format,
                dim: d,
                tokens: t,
                extras,
                ..
            } => {
                v.push(table_layout(*format, layer.build().rows() as usize, *d));
                v.push((DType::I64, vec![*t]));
                if *extras {
                    v.push((DType::I64, vec![*t]));
                    v.push((DType::U8, vec![*t]));
                }
            }
        }
        v
    }

    /// Write the seeded inputs of this spec into `bufs`, one per [`input_layout`](Self::input_layout)
    /// entry and of exactly its byte length (any contents: every byte is written; no alignment
    /// needed), and return the Engram history (empty for the other ops). This is the one input
    /// recipe of the kit: `moehal check` and every backend test allocate the buffers and call it.
    /// Values: floats N(0, 1) (weights `1/√K`, router logits ×2, swiglu ×2 or ×8 with a clamp),
    /// routed ids / permutations / rows uniform as an engine produces them, plus the patterns,
    /// drops and planted value errors the spec's fields ask for.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (op `testkit`, field `inputs`) when the number or the lengths of
    /// `bufs` do not match the layout.
    pub fn fill_inputs(&self, seed: u64, bufs: &mut [&mut [u8]]) -> moehal_core::Result<Vec<i64>> {
        let want: Vec<usize> = self
            .input_layout()
            .iter()
            .map(|(d, s)| s.iter().product::<usize>() * d.size())
            .collect();
        check_buffers("testkit", &want, bufs)?;
        let mut rng = rng::seeded(seed);
        let mut history = Vec::new();
        match self {
            Spec::Quant(q) => quant::fill_inputs(q, &mut rng, bufs)?,
            Spec::GroupedGemm {
                dtype,
                groups,
                tail,
                k,
                bias,
                row_scale,
                bad_group_end,
                ..
            } => {
                let g = groups.len();
                let m: usize = groups.iter().sum::<usize>() + tail;
                let scale = 1.0 / (*k as f32).sqrt().max(1.0);
                put_randn(&mut rng, *dtype, bufs[0], 1.0)?;
                put_randn(&mut rng, *dtype, bufs[1], scale)?;
                let mut ends: Vec<i64> = groups
                    .iter()
                    .scan(0i64, |acc, &c| {
                        *acc += c as i64;
                        Some(*acc)
                    })
                    .collect();
                if *bad_group_end && g >= 2 {
                    ends[0] = ends[g - 1] + 1;
                }
                put(bufs[2], ends);
                let mut next = 3;
                if *row_scale {
                    put(bufs[next], (0..m).map(|_| rng.gen_range(0.0f32..1.0)));
                    next += 1;
                }
                if *bias {
                    put_randn(&mut rng, *dtype, bufs[next], 0.5)?;
                }
            }
            Spec::RouterTopk {
                dtype,
                tokens: t,
                num_experts: e,
                bias,
                logits,
                config,
            } => {
                let (t, e, dt) = (*t, *e, *dtype);
                match logits {
                    // N(0, 4) logits written in place (bench-sized [T, E]), then the patterns.
                    Logits::Random | Logits::NonFinite | Logits::Edge => {
                        let l = &mut *bufs[0];
                        put_randn(&mut rng, dt, l, 2.0)?;
                        if *logits == Logits::Edge && e > 0 {
                            for ti in 0..t {
                                let r = ti * e;
                                match ti % 5 {
                                    0 => (r..r + e).try_for_each(|i| set_float(dt, l, i, 0.5))?,
                                    1 => {
                                        set_float(dt, l, r, f32::NAN)?;
                                        set_float(dt, l, r + e - 1, f32::INFINITY)?;
                                        set_float(dt, l, r + e / 2, f32::NEG_INFINITY)?;
                                    }
                                    2 => (r..r + e).try_for_each(|i| set_float(dt, l, i, f32::NAN))?,
                                    3 => (r..r + e).step_by(3).try_for_each(|i| set_float(dt, l, i, 1.25))?,
                                    _ => (r + 1..r + e).try_for_each(|i| set_float(dt, l, i, f32::NAN))?,
                                }
                            }
                        }
                        if *logits == Logits::NonFinite {
                            for i in 0..t * e {
                                let v = if i < e {
                                    f32::NAN
                                } else {
                                    match rng.gen_range(0..10) {
                                        0 => f32::NAN,
                                        1 => f32::INFINITY,
                                        2 => f32::NEG_INFINITY,
                                        _ => continue,
                                    }
                                };
                                set_float(dt, l, i, v)?;
                            }
                        }
                    }
                    Logits::Ties => {
                        let l: Vec<f32> = (0..t * e).map(|_| rng.gen_range(0..3) as f32 * 0.5).collect();
                        put_floats(dt, bufs[0], &l)?;
                    }
                    tie => put_floats(dt, bufs[0], &tie_class_logits(*tie, t, e, config))?,
                }
                if let Some(negative) = bias {
                    let mut b: Vec<f32> = if *logits == Logits::Ties {
                        (0..e).map(|i| (i % 3) as f32 * 0.25).collect()
                    } else {
                        randn(&mut rng, e, 0.1)
                    };
                    if *negative {
                        // Every selection score s + b is negative (s <= 1 for sigmoid): the group
                        // limit must mask with -inf, never 0.
                        b.iter_mut().for_each(|v| *v = -1.5 - v.abs());
                    }
                    if let Some(tb) = tie_class_bias(*logits, e, config) {
                        b = tb;
                    }
                    put(bufs[1], b);
                }
            }
            Spec::RouterKnown { logits, bias, .. } => {
                put(bufs[0], logits.iter().copied());
                if let Some(b) = bias {
                    put(bufs[1], b.iter().copied());
                }
            }
            Spec::RouterHash {
                dtype,
                tokens: t,
                num_experts: e,
                vocab,
                config,
                logits,
                bad,
            } => {
                let k = config.topk;
                let mut l = randn(&mut rng, t * e, 2.0);
                if *logits == Logits::NonFinite {
                    for (i, v) in l.iter_mut().enumerate() {
                        if i < *e || rng.gen_range(0..6) == 0 {
                            *v = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][i % 3];
                        }
                    }
                }
                let mut table: Vec<i32> = (0..vocab * k).map(|_| rng.gen_range(0..*e as i32)).collect();
                let mut ids: Vec<i64> = (0..*t).map(|_| rng.gen_range(0..*vocab as i64)).collect();
                if *t > 0 {
                    let victim = *t / 2;
                    match bad {
                        Some(HashBad::TokenId) => ids[victim] = *vocab as i64,
                        Some(HashBad::Entry) => table[ids[victim] as usize * k + k - 1] = *e as i32,
                        None => {}
                    }
                }
                put_floats(*dtype, bufs[0], &l)?;
                put(bufs[1], table);
                put(bufs[2], ids);
            }
            Spec::MoePermute {
                tokens: t,
                topk: k,
                num_experts: e,
                x,
                drop,
                repeat,
                bad_id,
            } => {
                // In place where the buffer is i32-aligned (host memory; bench-sized T·k).
                match bytemuck::try_cast_slice_mut::<u8, i32>(bufs[0]) {
                    Ok(ids) => {
                        ids.fill(0);
                        rng::routed_ids_into(&mut rng, ids, *k, *e, *drop, *repeat);
                    }
                    Err(_) => put(bufs[0], rng::routed_ids(&mut rng, *t, *k, *e, *drop, *repeat)),
                }
                if *bad_id && t * k > 0 {
                    put(&mut bufs[0][(t * k / 2) * 4..], [*e as i32]);
                }
                if let Some((d, _)) = x {
                    put_randn(&mut rng, *d, bufs[1], 1.0)?;
                }
            }
            Spec::Swiglu { dtype, limit, .. } => {
                let spread = if limit.is_some() { 8.0 } else { 2.0 };
                put_randn(&mut rng, *dtype, bufs[0], spread)?;
            }
            Spec::MoeCombine {
                dtype,
                tokens: t,
                topk: k,
                drop,
                bad_row,
                ..
            } => {
                let rows = t * k;
                put_randn(&mut rng, *dtype, bufs[0], 1.0)?;
                // A shuffled permutation of the rows with drops, in place where the buffer is
                // i64-aligned (host memory; bench-sized T·k), else through a Vec.
                let draw = |rng: &mut ChaCha8Rng, perm: &mut [i64]| {
                    for (i, r) in perm.iter_mut().enumerate() {
                        *r = i as i64;
                    }
                    for i in (1..perm.len()).rev() {
                        perm.swap(i, rng.gen_range(0..=i));
                    }
                    for r in perm.iter_mut() {
                        if rng.gen_bool(*drop) {
                            *r = -1;
                        }
                    }
                };
                match bytemuck::try_cast_slice_mut::<u8, i64>(bufs[1]) {
                    Ok(perm) => draw(&mut rng, perm),
                    Err(_) => {
                        let mut perm = vec![0i64; rows];
                        draw(&mut rng, &mut perm);
                        put(bufs[1], perm);
                    }
                }
                if *bad_row && rows > 0 {
                    put(bufs[1], [rows as i64]);
                }
                put(bufs[2], (0..rows).map(|_| rng.gen_range(0.0f32..1.0)));
            }
            Spec::EngramHash {
                layer: lc,
                tokens: t,
                positions,
                alive,
                history: hl,
                ids,
                bad_id,
            } => {
                let v = lc.build().vocab_size();
                // Written in place (bench-sized T).
                let t = match ids {
                    Some(x) => {
                        put(bufs[0], x.iter().copied());
                        x.len()
                    }
                    None => {
                        put(bufs[0], std::iter::repeat_with(|| rng.gen_range(0..v) as i64));
                        *t
                    }
                };
                if *bad_id && t > 0 {
                    put(&mut bufs[0][(t - 1) * 8..], [v as i64]);
                }
                let (p, a) = sequence_extras(&mut rng, t, *positions, *alive);
                let mut next = 1;
                if let Some(p) = p {
                    put(bufs[next], p);
                    next += 1;
                }
                if let Some(a) = a {
                    put(bufs[next], a);
                }
                history = (0..*hl).map(|_| rng.gen_range(0..v) as i64).collect();
            }
            Spec::GatherRows {
                format,
                table_rows: r,
                dim: d,
                bad_row,
                ..
            } => {
                fill_table(&mut rng, *format, bufs[0], *d)?;
                if *r == 0 {
                    // OPS.md §5: every row index must be in [0, R), else an error; a 0-row table
                    // has no valid index, so every index is R = 0 (the first one out of range) and
                    // the case expects that error ([`Case::expect`]) instead of a panic here.
                    put(bufs[1], std::iter::repeat(0i64));
                } else {
                    put(bufs[1], std::iter::repeat_with(|| rng.gen_range(0..*r) as i64));
                }
                if *bad_row && !bufs[1].is_empty() {
                    put(bufs[1], [*r as i64]);
                }
            }
            Spec::EngramLookup {
                layer: lc,
                format,
                dim: d,
                tokens: t,
                extras,
                ..
            } => {
                let l = lc.build();
                fill_table(&mut rng, *format, bufs[0], *d)?;
                let v = l.vocab_size();
                put(bufs[1], std::iter::repeat_with(|| rng.gen_range(0..v) as i64));
                let (p, a) = sequence_extras(&mut rng, *t, *extras, *extras);
                if let (Some(p), Some(a)) = (p, a) {
                    put(bufs[2], p);
                    put(bufs[3], a);
                }
                if *extras {
                    history = (0..l.max_order() - 1).map(|_| rng.gen_range(0..v) as i64).collect();
                }
            }
        }
        Ok(history)
    }
}

/// The inputs of `spec` for `seed`: buffers of [`Spec::input_layout`] filled by
/// [`Spec::fill_inputs`], and the spec's Engram layer.
fn make_inputs(spec: &Spec, seed: u64) -> Result<Inputs, String> {
    let layout = spec.input_layout();
    let mut bytes: Vec<Vec<u8>> = layout
        .iter()
        .map(|(d, s)| vec![0u8; s.iter().product::<usize>() * d.size()])
        .collect();
    let history = {
        let mut slices: Vec<&mut [u8]> = bytes.iter_mut().map(Vec::as_mut_slice).collect();
        spec.fill_inputs(seed, &mut slices).map_err(|e| e.to_string())?
    };
    let tensors = layout
        .into_iter()
        .zip(bytes)
        .map(|((dtype, shape), bytes)| HostTensor { dtype, shape, bytes })
        .collect();
    let layer = match spec {
        Spec::EngramHash { layer, .. } | Spec::EngramLookup { layer, .. } => Some(layer.build()),
        _ => None,
    };
    Ok(Inputs {
        tensors,
        history,
        layer,
    })
}

// ------------------------------------------------------------------------------------------------
// Execution on one backend
// ------------------------------------------------------------------------------------------------

/// What one backend produced.
struct Outcome {
    result: moehal_core::Result<()>,
    outputs: Vec<HostTensor>,
    seconds: f64,
    guard_error: Option<String>,
}

fn timed(be: &dyn Backend, f: impl FnOnce() -> moehal_core::Result<()>) -> (moehal_core::Result<()>, f64) {
    let t0 = Instant::now();
    let r = f().and_then(|_| be.synchronize());
    (r, t0.elapsed().as_secs_f64())
}

fn execute(be: &dyn Backend, spec: &Spec, inp: &Inputs) -> moehal_core::Result<Outcome> {
    let run = Run { be };
    // A host table is input 0 of gather_rows.
    let host0 = matches!(spec, Spec::GatherRows { host_table: true, .. });
    let ins: Vec<Buffer> = inp
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| run.input(t, host0 && i == 0))
        .collect::<Result<_, _>>()?;
    let v = |i: usize| view(&ins[i], &inp.tensors[i]);
    // (dtype, shape) of every output, in order.
    let out_specs: Vec<(DType, Vec<usize>)> = output_specs(spec, inp);
    let mut outs: Vec<Buffer> = out_specs
        .iter()
        .map(|(d, s)| run.output(*d, s.iter().product()))
        .collect::<Result<_, _>>()?;
    let (result, seconds) = {
        let mut it = outs.iter_mut().zip(&out_specs).map(|(b, (d, s))| out_view(b, *d, s));
        match spec {
            Spec::Quant(q) => timed(be, || quant::execute(be, q, &v, &mut it)),
            Spec::GroupedGemm {
                layout,
                bias,
                row_scale,
                ..
            } => {
                let mut next = 3;
                let rs = row_scale.then(|| {
                    next += 1;
                    v(next - 1)
                });
                let b = bias.then(|| v(next));
                let args = GroupedGemm {
                    x: v(0),
                    w: v(1),
                    layout: *layout,
                    group_end: v(2),
                    row_scale: rs,
                    bias: b,
                    y: it.next().expect("y"),
                };
                timed(be, || be.grouped_gemm(args.validate()?))
            }
            Spec::RouterTopk { config, bias, .. } => {
                let args = RouterTopk {
                    config: *config,
                    logits: v(0),
                    bias: bias.map(|_| v(1)),
                    ids: it.next().expect("ids"),
                    weights: it.next().expect("weights"),
                    expert_counts: it.next(),
                };
                timed(be, || be.router_topk(args.validate()?))
            }
            Spec::RouterKnown { config, bias, .. } => {
                let args = RouterTopk {
                    config: *config,
                    logits: v(0),
                    bias: bias.as_ref().map(|_| v(1)),
                    ids: it.next().expect("ids"),
                    weights: it.next().expect("weights"),
                    expert_counts: it.next(),
                };
                timed(be, || be.router_topk(args.validate()?))
            }
            Spec::RouterHash { config, .. } => {
                let args = RouterHash {
                    config: *config,
                    logits: v(0),
                    tid2eid: v(1),
                    token_ids: v(2),
                    ids: it.next().expect("ids"),
                    weights: it.next().expect("weights"),
                    expert_counts: it.next(),
                };
                timed(be, || be.router_hash(args.validate()?))
            }
            Spec::MoePermute { num_experts: e, x, .. } => {
                let args = MoePermute {
                    num_experts: *e,
                    ids: v(0),
                    x: x.map(|_| v(1)),
                    group_end: it.next().expect("group_end"),
                    src_token: it.next().expect("src_token"),
                    slot_row: it.next().expect("slot_row"),
                    x_perm: it.next(),
                };
                timed(be, || be.moe_permute(args.validate()?))
            }
            Spec::Swiglu { limit, .. } => {
                let args = Swiglu {
                    h: v(0),
                    out: it.next().expect("out"),
                    limit: *limit,
                };
                timed(be, || be.swiglu(args.validate()?))
            }
            Spec::MoeCombine { .. } => {
                let args = MoeCombine {
                    y_perm: v(0),
                    slot_row: v(1),
                    weights: v(2),
                    out: it.next().expect("out"),
                };
                timed(be, || be.moe_combine(args.validate()?))
            }
            Spec::EngramHash { positions, alive, .. } => {
                let mut next = 1;
                let mut opt = |on: bool| {
                    on.then(|| {
                        next += 1;
                        v(next - 1)
                    })
                };
                let (p, a) = (opt(*positions), opt(*alive));
                let args = EngramHash {
                    layer: inp.layer.as_ref().expect("layer"),
                    ids: v(0),
                    positions: p,
                    alive: a,
                    history: &inp.history,
                    rows: it.next().expect("rows"),
                };
                timed(be, || be.engram_hash(args.validate()?))
            }
            Spec::GatherRows { format, .. } => {
                let args = GatherRows {
                    table: v(0),
                    format: *format,
                    rows: v(1),
                    out: it.next().expect("out"),
                };
                timed(be, || be.gather_rows(args.validate()?))
            }
            Spec::EngramLookup { format, extras, .. } => {
                let args = EngramLookup {
                    layer: inp.layer.as_ref().expect("layer"),
                    table: v(0),
                    format: *format,
                    ids: v(1),
                    positions: extras.then(|| v(2)),
                    alive: extras.then(|| v(3)),
                    history: &inp.history,
                    out: it.next().expect("out"),
                };
                timed(be, || be.engram_lookup(args.validate()?))
            }
        }
    };
    let mut outputs = Vec::new();
    let mut guard_error = None;
    for (b, (d, s)) in outs.iter().zip(&out_specs) {
        match run.fetch(b, *d, s) {
            Ok(t) => outputs.push(t),
            Err(e) => {
                guard_error.get_or_insert(e);
                outputs.push(HostTensor {
                    dtype: *d,
                    shape: s.clone(),
                    bytes: vec![0; s.iter().product::<usize>() * d.size()],
                });
            }
        }
    }
    Ok(Outcome {
        result,
        outputs,
        seconds,
        guard_error,
    })
}

fn output_specs(spec: &Spec, inp: &Inputs) -> Vec<(DType, Vec<usize>)> {
    match spec {
        Spec::Quant(q) => quant::output_specs(q),
        Spec::GroupedGemm {
            dtype, groups, tail, n, ..
        } => {
            vec![(*dtype, vec![groups.iter().sum::<usize>() + tail, *n])]
        }
        Spec::RouterKnown { config, logits, .. } => vec![
            (DType::I32, vec![1, config.topk]),
            (DType::F32, vec![1, config.topk]),
            (DType::I64, vec![logits.len()]),
        ],
        Spec::RouterTopk {
            tokens: t,
            num_experts: e,
            config,
            ..
        }
        | Spec::RouterHash {
            tokens: t,
            num_experts: e,
            config,
            ..
        } => {
            vec![
                (DType::I32, vec![*t, config.topk]),
                (DType::F32, vec![*t, config.topk]),
                (DType::I64, vec![*e]),
            ]
        }
        Spec::MoePermute {
            tokens: t,
            topk: k,
            num_experts: e,
            x,
            ..
        } => {
            let mut v = vec![
                (DType::I64, vec![*e]),
                (DType::I64, vec![t * k]),
                (DType::I64, vec![*t, *k]),
            ];
            if let Some((d, h)) = x {
                v.push((*d, vec![t * k, *h]));
            }
            v
        }
        Spec::Swiglu {
            dtype,
            rows: m,
            intermediate: i,
            ..
        } => vec![(*dtype, vec![*m, *i])],
        Spec::MoeCombine {
            dtype,
            tokens: t,
            hidden: h,
            ..
        } => vec![(*dtype, vec![*t, *h])],
        Spec::EngramHash { .. } => {
            let l = inp.layer.as_ref().expect("layer");
            vec![(DType::I64, vec![inp.tensors[0].numel(), l.columns()])]
        }
        Spec::GatherRows {
            out,
            dim: d,
            tokens: t,
            cols: c,
            ..
        } => vec![(*out, vec![*t, c * d])],
        Spec::EngramLookup {
            out, dim: d, tokens: t, ..
        } => {
            let l = inp.layer.as_ref().expect("layer");
            vec![(*out, vec![*t, l.columns() * d])]
        }
    }
}

fn desc_of(spec: &Spec) -> OpDesc {
    match spec {
        Spec::Quant(_) => unreachable!("§6 cases are keyed by QuantDesc (Backend::supports_quant)"),
        Spec::GroupedGemm { dtype, layout, .. } => OpDesc::GroupedGemm {
            dtype: *dtype,
            layout: *layout,
        },
        Spec::RouterTopk { dtype, config, .. } => OpDesc::RouterTopk {
            dtype: *dtype,
            scoring: config.scoring,
            group: config.effective_group().map(|g| g.score),
        },
        Spec::RouterKnown { config, .. } => OpDesc::RouterTopk {
            dtype: DType::F32,
            scoring: config.scoring,
            group: config.effective_group().map(|g| g.score),
        },
        Spec::RouterHash { dtype, config, .. } => OpDesc::RouterHash {
            dtype: *dtype,
            scoring: config.scoring,
        },
        Spec::MoePermute { x, .. } => OpDesc::MoePermute { x: x.map(|(d, _)| d) },
        Spec::Swiglu { dtype, .. } => OpDesc::Swiglu { dtype: *dtype },
        Spec::MoeCombine { dtype, .. } => OpDesc::MoeCombine { dtype: *dtype },
        Spec::EngramHash { .. } => OpDesc::EngramHash,
        Spec::GatherRows {
            format,
            out,
            host_table,
            ..
        } => OpDesc::GatherRows {
            table: *format,
            out: *out,
            host_table: *host_table,
        },
        Spec::EngramLookup { format, out, .. } => OpDesc::EngramLookup {
            table: *format,
            out: *out,
            host_table: false,
        },
    }
}

// ------------------------------------------------------------------------------------------------
// Comparison
// ------------------------------------------------------------------------------------------------

/// The bound a case is held to, in words for the `tol` column of `moehal check`: `rel <= T`
/// (OPS.md relative error of the dtype), `bitwise` (integer and gather outputs), the router's rule
/// (`ids exact, |dw| <= 1e-5`), or `error on `field`` for a case that must be rejected.
pub fn tolerance_label(case: &Case) -> String {
    if let Expect::Invalid(field) = case.expect() {
        return format!("error on `{field}`");
    }
    match &case.spec {
        Spec::Quant(q) => quant::tolerance_label(q),
        Spec::GroupedGemm { dtype, .. } | Spec::Swiglu { dtype, .. } | Spec::MoeCombine { dtype, .. } => {
            format!("rel <= {:.0e}", tolerance(*dtype))
        }
        Spec::RouterTopk { .. } => format!(
            "ids exact (near-ties {:.0e}), |dw| <= {:.0e}",
            conformance::NEAR_TIE_REL,
            conformance::ROUTER_WEIGHT_ABS
        ),
        Spec::RouterHash { .. } => format!("ids exact, |dw| <= {:.0e}", conformance::ROUTER_WEIGHT_ABS),
        Spec::RouterKnown { weight_abs, .. } => format!("ids known, |dw| <= {weight_abs:.0e}"),
        Spec::MoePermute { .. } | Spec::EngramHash { .. } | Spec::GatherRows { .. } | Spec::EngramLookup { .. } => {
            "bitwise".into()
        }
    }
}

/// The relative-error bound `‖out − ref‖ / ‖ref‖` of OPS.md §Conformance for an output of
/// `dtype`: f32 `1e-5`, f16 `2e-3`, bf16 `1e-2`. Integer outputs (ids, rows, quantized codes) are
/// exact in the contract, so their bound is `0` — never the bf16 bound a catch-all arm would give.
/// This is the one tolerance table of the workspace: `moehal check`, the pipelines (`moehal moe`)
/// and every backend's tests use it.
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        DType::BF16 => 1e-2,
        DType::I32 | DType::I64 | DType::U8 | DType::I8 => 0.0,
    }
}

/// The relative error `‖out − ref‖ / ‖ref‖` of OPS.md §Conformance, in f64, over the elements `i`
/// where `mask(i)`: elements NaN in both are skipped, an infinity must be the reference's (and is
/// then skipped), and a NaN or infinity on one side only, or slices of two lengths, is `Err`
/// naming the element (the lengths). With an all-zero reference it is the absolute
/// `‖out − ref‖`. The one measure of the workspace:
/// `moehal check` (through [`run_case`]), the pipelines (`moehal::pipeline::rel_error`) and the
/// backends' own tests use it.
pub fn rel_error<A: Copy + Into<f64>, B: Copy + Into<f64>>(
    out: &[A],
    reference: &[B],
    mask: impl Fn(usize) -> bool,
) -> Result<f64, String> {
    if out.len() != reference.len() {
        return Err(format!(
            "{} output values for {} reference values",
            out.len(),
            reference.len()
        ));
    }
    let (mut num, mut den) = (0f64, 0f64);
    let o = |i: usize| -> f64 { out[i].into() };
    let r = |i: usize| -> f64 { reference[i].into() };
    for i in 0..reference.len() {
        if !mask(i) {
            continue;
        }
        let (o, r) = (o(i), r(i));
        match (o.is_nan(), r.is_nan()) {
            (false, false) => {}
            (true, false) => return Err(format!("NaN at element {i} where the reference has {r}")),
            (false, true) => return Err(format!("{o} at element {i} where the reference has NaN")),
            (true, true) => continue,
        }
        if r.is_infinite() || o.is_infinite() {
            if o != r {
                return Err(format!("{o} at element {i}, reference {r}"));
            }
            continue;
        }
        num += (o - r) * (o - r);
        den += r * r;
    }
    Ok(if den > 0.0 { (num / den).sqrt() } else { num.sqrt() })
}

/// OPS.md §Conformance for the `y` of a grouped GEMM run on NaN-poisoned output, as the backends'
/// own kernel tests judge it: the values from `routed` on (the guard rows past `group_end[G-1]`)
/// are still NaN, and the routed ones are within `tol` of `reference` by [`rel_error`]. Returns
/// the relative error.
///
/// # Errors
/// What is wrong, in words: a guard row written, a NaN or infinity the reference lacks, or the
/// error over `tol`.
pub fn check_rows<A: Copy + Into<f64>, B: Copy + Into<f64>>(
    out: &[A],
    reference: &[B],
    routed: usize,
    tol: f64,
) -> Result<f64, String> {
    if let Some(i) = out[routed..].iter().position(|&v| !v.into().is_nan()) {
        return Err(format!(
            "guard element {} (past the {routed} routed values) written",
            routed + i
        ));
    }
    let rel = rel_error(&out[..routed], &reference[..routed], |_| true)?;
    if rel > tol {
        return Err(format!("rel {rel:.3e} > {tol:.0e}"));
    }
    Ok(rel)
}

fn first_diff(a: &[u8], b: &[u8], es: usize) -> Option<usize> {
    a.chunks(es).zip(b.chunks(es)).position(|(x, y)| x != y)
}

fn compare(spec: &Spec, inp: &Inputs, out: &Outcome, reference: &Outcome) -> (String, Result<(), String>) {
    match spec {
        Spec::Quant(q) => quant::compare(q, out, reference),
        Spec::GroupedGemm { dtype, groups, n, .. } => {
            let routed = groups.iter().sum::<usize>() * n;
            // Tail rows are not written: their bits must be the poison.
            let (o, r) = (&out.outputs[0], &reference.outputs[0]);
            let es = dtype.size();
            if o.bytes[routed * es..] != r.bytes[routed * es..] {
                return (
                    "tail written".into(),
                    Err("rows past group_end[G-1] were written".into()),
                );
            }
            arithmetic(*dtype, o, r, |i| i < routed)
        }
        Spec::Swiglu { dtype, .. } | Spec::MoeCombine { dtype, .. } => {
            arithmetic(*dtype, &out.outputs[0], &reference.outputs[0], |_| true)
        }
        Spec::RouterTopk {
            config, num_experts: e, ..
        } => compare_router(config, *e, inp, out),
        Spec::RouterHash { .. } => compare_router_hash(out, reference, conformance::ROUTER_WEIGHT_ABS),
        Spec::RouterKnown { want, weight_abs, .. } => {
            let ids = typed::<i32>(&out.outputs[0].bytes);
            let ref_ids = typed::<i32>(&reference.outputs[0].bytes);
            if ref_ids != *want {
                return (
                    "reference".into(),
                    Err(format!("the reference chose {ref_ids:?}, the tie rule {want:?}")),
                );
            }
            if ids != *want {
                return (
                    "mismatch".into(),
                    Err(format!("ids {ids:?}, the tie rule gives {want:?}")),
                );
            }
            compare_router_hash(out, reference, weight_abs.min(conformance::ROUTER_WEIGHT_ABS))
        }
        Spec::MoePermute {
            tokens: t, topk: k, x, ..
        } => {
            let ge = typed::<i64>(&reference.outputs[0].bytes);
            let routed = ge.last().copied().unwrap_or(0) as usize;
            let checks: [(&str, usize, usize); 3] = [
                ("group_end", 0, usize::MAX),
                ("slot_row", 2, usize::MAX),
                ("src_token", 1, routed),
            ];
            for (name, i, limit) in checks {
                let es = 8;
                let lim = limit.min(out.outputs[i].numel()) * es;
                if let Some(p) = first_diff(&out.outputs[i].bytes[..lim], &reference.outputs[i].bytes[..lim], es) {
                    return (
                        "mismatch".into(),
                        Err(format!("{name}[{p}] differs from the reference")),
                    );
                }
            }
            if let Some((d, h)) = x {
                let lim = routed * h * d.size();
                if let Some(p) = first_diff(
                    &out.outputs[3].bytes[..lim],
                    &reference.outputs[3].bytes[..lim],
                    d.size(),
                ) {
                    return ("mismatch".into(), Err(format!("x_perm element {p} differs")));
                }
            }
            let _ = (t, k);
            ("exact".into(), Ok(()))
        }
        Spec::EngramHash { .. } | Spec::GatherRows { .. } | Spec::EngramLookup { .. } => {
            let (o, r) = (&out.outputs[0], &reference.outputs[0]);
            match first_diff(&o.bytes, &r.bytes, o.dtype.size()) {
                None => ("exact".into(), Ok(())),
                Some(p) => (
                    "mismatch".into(),
                    Err(format!("element {p} differs bitwise from the reference")),
                ),
            }
        }
    }
}

fn arithmetic(
    dtype: DType,
    o: &HostTensor,
    r: &HostTensor,
    mask: impl Fn(usize) -> bool,
) -> (String, Result<(), String>) {
    arithmetic_tol(tolerance(dtype), o, r, mask)
}

/// [`arithmetic`] with an explicit relative-error bound.
fn arithmetic_tol(
    tol: f64,
    o: &HostTensor,
    r: &HostTensor,
    mask: impl Fn(usize) -> bool,
) -> (String, Result<(), String>) {
    match rel_error(&o.as_f64(), &r.as_f64(), mask) {
        Ok(e) => {
            let m = format!("rel {e:.1e}");
            if e <= tol {
                (m, Ok(()))
            } else {
                (m, Err(format!("relative error {e:.3e} > {tol:.0e}")))
            }
        }
        Err(msg) => ("NaN".into(), Err(msg)),
    }
}

/// OPS.md §Conformance for `router_topk`: the rule lives in [`moehal_core::conformance`] (shared
/// with the backend test suites), which recomputes the reference routing token by token.
fn compare_router(config: &RouterConfig, e: usize, inp: &Inputs, out: &Outcome) -> (String, Result<(), String>) {
    let ids = typed::<i32>(&out.outputs[0].bytes);
    let weights = typed::<f32>(&out.outputs[1].bytes);
    let counts = typed::<i64>(&out.outputs[2].bytes);
    let logits = inp.tensors[0].as_f64();
    let bias = inp.tensors.get(1).map(|b| typed::<f32>(&b.bytes));
    match conformance::check_router(config, e, &logits, bias.as_deref(), &ids, &weights, Some(&counts)) {
        Ok(sum) if sum.near_ties > 0 => (
            format!("ids ok ({} near-ties), |dw| {:.1e}", sum.near_ties, sum.max_weight_diff),
            Ok(()),
        ),
        Ok(sum) => (format!("ids equal, |dw| {:.1e}", sum.max_weight_diff), Ok(())),
        Err(msg) => ("mismatch".into(), Err(msg)),
    }
}

/// Hash routing (and known ids): ids and counts exact (a table lookup), weights within `weight_abs`
/// (the router tolerance, or a tighter bound a case asks for).
fn compare_router_hash(out: &Outcome, reference: &Outcome, weight_abs: f64) -> (String, Result<(), String>) {
    for (i, name) in [(0, "ids"), (2, "expert_counts")] {
        let (o, r) = (&out.outputs[i], &reference.outputs[i]);
        if let Some(p) = first_diff(&o.bytes, &r.bytes, o.dtype.size()) {
            return (
                "mismatch".into(),
                Err(format!("{name}[{p}] differs from the reference")),
            );
        }
    }
    let (wo, wr) = (
        typed::<f32>(&out.outputs[1].bytes),
        typed::<f32>(&reference.outputs[1].bytes),
    );
    let mut max_dw = 0f64;
    for (j, (&a, &b)) in wo.iter().zip(&wr).enumerate() {
        let dw = (a as f64 - b as f64).abs();
        if dw.is_nan() || dw > weight_abs {
            return ("weights".into(), Err(format!("weight {j}: {a} vs reference {b}")));
        }
        max_dw = max_dw.max(dw);
    }
    (format!("ids exact, |dw| {max_dw:.1e}"), Ok(()))
}

/// Run `case` on `backend` and on the reference with inputs from `seed`, and judge the result.
pub fn run_case(backend: &dyn Backend, case: &Case, seed: u64) -> CaseResult {
    let mut res = CaseResult {
        op: case.op(),
        backend: backend.name().to_string(),
        case: case.name(),
        dtype: case.dtype(),
        metric: String::new(),
        verdict: Verdict::Fail,
        seconds: 0.0,
        seed,
        tolerance: tolerance_label(case),
        detail: String::new(),
    };
    let support = match &case.spec {
        Spec::Quant(q) => backend.supports_quant(&q.desc()),
        spec => backend.supports(&desc_of(spec)),
    };
    if let Support::No { reason } = support {
        res.verdict = Verdict::Unsupported;
        res.metric = "-".into();
        res.detail = reason;
        return res;
    }
    let inputs = match case.inputs(seed) {
        Ok(i) => i,
        Err(e) => {
            res.metric = "setup".into();
            res.detail = format!("case setup failed: {e} (case seed {seed})");
            return res;
        }
    };
    let fail = |mut r: CaseResult, metric: &str, msg: String| {
        r.metric = metric.into();
        // The rerun command needs the base seed and the case's place in its list, which the
        // caller knows: see [`rerun_command`].
        r.detail = format!("{msg} (case seed {seed})");
        r
    };
    let reference = match execute(&Reference, &case.spec, &inputs) {
        Ok(o) => o,
        Err(e) => return fail(res, "setup", format!("reference setup failed: {e}")),
    };
    let out = match execute(backend, &case.spec, &inputs) {
        Ok(o) => o,
        Err(e) => return fail(res, "setup", format!("setup failed: {e}")),
    };
    res.seconds = out.seconds;
    if let Some(g) = &out.guard_error {
        return fail(res, "guard", g.clone());
    }
    match (case.expect(), &out.result) {
        (_, Err(Error::Unsupported { msg, .. })) => {
            res.verdict = Verdict::Unsupported;
            res.metric = "-".into();
            res.detail = msg.clone();
            res
        }
        (Expect::Invalid(field), Err(Error::InvalidArgument { field: f, .. })) if *f == field => {
            // Nothing may be written: every output still holds its poison.
            let untouched = out
                .outputs
                .iter()
                .all(|t| t.bytes.iter().all(|&b| b == poison_byte(t.dtype)));
            if untouched {
                res.verdict = Verdict::Pass;
                res.metric = format!("rejected `{field}`");
                res
            } else {
                fail(res, "wrote", "rejected the input but wrote outputs".into())
            }
        }
        (Expect::Invalid(field), other) => fail(
            res,
            "no error",
            format!("expected InvalidArgument on `{field}`, got {other:?}"),
        ),
        (Expect::Ok, Err(e)) => fail(res, "error", e.to_string()),
        (Expect::Ok, Ok(())) => {
            if let Err(e) = &reference.result {
                return fail(res, "reference", format!("the reference failed: {e}"));
            }
            let (metric, verdict) = compare(&case.spec, &inputs, &out, &reference);
            match verdict {
                Ok(()) => {
                    res.metric = metric;
                    res.verdict = Verdict::Pass;
                    res
                }
                Err(msg) => fail(res, &metric, msg),
            }
        }
    }
}

/// OPS.md "Determinism": run `case` twice on `backend` with the same inputs (from `seed`) and
/// require bitwise identical outputs, NaN payloads and untouched poison included. Two runs that
/// both fail (a rejected case) have nothing to compare and pass; one failing and one not is an
/// error.
pub fn check_deterministic(backend: &dyn Backend, case: &Case, seed: u64) -> Result<(), String> {
    let inputs = case.inputs(seed)?;
    let run = || execute(backend, &case.spec, &inputs).map_err(|e| format!("setup failed: {e}"));
    let (a, b) = (run()?, run()?);
    match (&a.result, &b.result) {
        (Err(_), Err(_)) => return Ok(()),
        (Ok(()), Ok(())) => {}
        (x, y) => return Err(format!("two runs on the same inputs returned {x:?} and {y:?}")),
    }
    for (i, (x, y)) in a.outputs.iter().zip(&b.outputs).enumerate() {
        if let Some(p) = first_diff(&x.bytes, &y.bytes, x.dtype.size()) {
            return Err(format!(
                "output {i}, element {p}: two runs on the same inputs differ (not deterministic)"
            ));
        }
    }
    Ok(())
}

/// What [`check_backend`] found on one backend.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Backend name (with the caller's label, if any).
    pub backend: String,
    /// Cases that passed.
    pub passed: usize,
    /// One line per unsupported case (`case [dtype]: reason`); reported, never silently skipped.
    pub unsupported: Vec<String>,
    /// One line per failed case: case, dtype, metric, detail (with the case seed).
    pub failures: Vec<String>,
}

impl Summary {
    /// Panic with every failure line if any case failed: how a backend crate's test ends.
    pub fn assert_pass(&self) {
        assert!(
            self.failures.is_empty(),
            "{}: {} conformance failure(s):\n{}",
            self.backend,
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// Run every case of `cases` on `backend` against the reference (case `i` with the inputs of
/// [`case_seed`]`(base_seed, i)`), and, with `determinism`, run each passing case twice more to require bitwise identical outputs ([`check_deterministic`]). `label` names the
/// backend variant in the messages (`"cpu Avx2"`, `"ascend (CANN 8.5)"`). Prints one line per
/// unsupported case and a summary line; returns the [`Summary`] (call [`Summary::assert_pass`]).
/// This is the whole conformance test of a backend crate:
///
/// ```no_run
/// # fn be() -> moehal_core::Reference { moehal_core::Reference }
/// let cases = moehal_testkit::default_cases();
/// moehal_testkit::check_backend(&be(), "reference", &cases, 0x5EED, true).assert_pass();
/// ```
pub fn check_backend(backend: &dyn Backend, label: &str, cases: &[Case], base_seed: u64, determinism: bool) -> Summary {
    let mut sum = Summary {
        backend: label.to_string(),
        ..Summary::default()
    };
    for (i, case) in cases.iter().enumerate() {
        let seed = case_seed(base_seed, i);
        let r = run_case(backend, case, seed);
        let row = format!("{label}: {} / {} [{}]", r.op, r.case, r.dtype);
        match r.verdict {
            Verdict::Pass => match determinism.then(|| check_deterministic(backend, case, seed)) {
                Some(Err(msg)) => sum
                    .failures
                    .push(format!("{row} determinism: {msg} (case seed {seed})")),
                _ => sum.passed += 1,
            },
            Verdict::Unsupported => {
                println!("{row} unsupported: {}", r.detail);
                sum.unsupported.push(format!("{} [{}]: {}", r.case, r.dtype, r.detail));
            }
            Verdict::Fail => sum.failures.push(format!("{row} {}: {}", r.metric, r.detail)),
        }
    }
    println!(
        "{label}: {} passed, {} unsupported, {} failed of {} cases",
        sum.passed,
        sum.unsupported.len(),
        sum.failures.len(),
        cases.len()
    );
    sum
}

// ------------------------------------------------------------------------------------------------
// Case lists
// ------------------------------------------------------------------------------------------------

fn gemm(name: &str, dtype: DType, layout: WeightLayout, groups: &[usize], tail: usize, n: usize, k: usize) -> Case {
    Case::new(
        name,
        Spec::GroupedGemm {
            dtype,
            layout,
            groups: groups.to_vec(),
            tail,
            n,
            k,
            bias: false,
            row_scale: false,
            bad_group_end: false,
        },
    )
}

fn with_gemm(mut c: Case, f: impl FnOnce(&mut bool, &mut bool, &mut bool)) -> Case {
    if let Spec::GroupedGemm {
        bias,
        row_scale,
        bad_group_end,
        ..
    } = &mut c.spec
    {
        f(bias, row_scale, bad_group_end);
    }
    c
}

fn router(
    name: &str,
    dtype: DType,
    t: usize,
    e: usize,
    config: RouterConfig,
    bias: Option<bool>,
    logits: Logits,
) -> Case {
    Case::new(
        name,
        Spec::RouterTopk {
            dtype,
            tokens: t,
            num_experts: e,
            config,
            bias,
            logits,
        },
    )
}

fn rc(k: usize, scoring: Scoring, group: Option<GroupLimit>, renormalize: bool, scale: f32) -> RouterConfig {
    RouterConfig {
        topk: k,
        scoring,
        group,
        renormalize,
        routed_scaling_factor: scale,
    }
}

/// The edge cases OPS.md names, for every op (small shapes).
pub fn edge_cases() -> Vec<Case> {
    use DType::*;
    use WeightLayout::*;
    let mut v = Vec::new();
    for dt in [F32, BF16, F16] {
        for lay in [NK, KN] {
            let tag = format!("{lay:?}");
            v.push(with_gemm(
                gemm(
                    &format!("gemm {tag} empty groups + tail"),
                    dt,
                    lay,
                    &[3, 0, 17, 0, 1, 9],
                    5,
                    48,
                    40,
                ),
                |b, r, _| {
                    *b = true;
                    *r = true;
                },
            ));
            v.push(gemm(&format!("gemm {tag} plain"), dt, lay, &[33, 7], 0, 33, 65));
        }
    }
    v.push(with_gemm(
        gemm("gemm K=0 (row_scale * bias)", F32, NK, &[2, 3], 1, 8, 0),
        |b, r, _| {
            *b = true;
            *r = true;
        },
    ));
    v.push(gemm("gemm K=0 no bias (zeros)", BF16, KN, &[4], 0, 8, 0));
    v.push(gemm("gemm M=0", F32, NK, &[0, 0], 0, 8, 8));
    v.push(gemm("gemm N=0", F16, NK, &[3, 2], 0, 0, 8));
    v.push(with_gemm(
        gemm("gemm bias only", BF16, NK, &[5, 6], 2, 24, 32),
        |b, _, _| *b = true,
    ));
    v.push(with_gemm(
        gemm("gemm bad group_end", F32, NK, &[4, 4], 0, 8, 8),
        |_, _, bad| *bad = true,
    ));
    v.push(gemm("gemm group_end past M", BF16, KN, &[3, 2], 1, 8, 8).corrupted(Corrupt::GroupEndPastRows));
    v.push(gemm("gemm group_end negative", F32, NK, &[3, 2], 0, 8, 8).corrupted(Corrupt::GroupEndNegative));

    let ds = Some(GroupLimit {
        n_group: 4,
        topk_group: 2,
        score: GroupScore::Top2Sum,
    });
    v.push(router(
        "router softmax renorm",
        F32,
        37,
        64,
        rc(8, Scoring::Softmax, None, true, 1.0),
        None,
        Logits::Random,
    ));
    v.push(router(
        "router softmax no renorm, scale",
        BF16,
        19,
        32,
        rc(4, Scoring::Softmax, None, false, 2.0),
        None,
        Logits::Random,
    ));
    // Softmax with a group limit and no selection bias (OPS.md §2 step 3 applies the limit to every
    // scoring): a CPU shortcut once returned the global top-k for exactly this combination.
    for (name, dt, score, keep) in [
        (
            "router softmax groups 4/1 top2_sum, no bias",
            F32,
            GroupScore::Top2Sum,
            1,
        ),
        ("router softmax groups 8/3 max, no bias", BF16, GroupScore::Max, 3),
    ] {
        let n_group = if keep == 1 { 4 } else { 8 };
        v.push(router(
            name,
            dt,
            29,
            64,
            rc(
                4,
                Scoring::Softmax,
                Some(GroupLimit {
                    n_group,
                    topk_group: keep,
                    score,
                }),
                true,
                1.0,
            ),
            None,
            Logits::Random,
        ));
    }
    v.push(router(
        "router sigmoid+bias groups top2_sum",
        F32,
        33,
        64,
        rc(6, Scoring::Sigmoid, ds, true, 2.5),
        Some(false),
        Logits::Random,
    ));
    v.push(router(
        "router groups, bias makes all scores negative",
        F32,
        17,
        16,
        rc(4, Scoring::Sigmoid, ds, true, 2.5),
        Some(true),
        Logits::Random,
    ));
    v.push(router(
        "router groups max",
        F16,
        21,
        48,
        rc(
            3,
            Scoring::Sigmoid,
            Some(GroupLimit {
                n_group: 6,
                topk_group: 3,
                score: GroupScore::Max,
            }),
            false,
            1.0,
        ),
        Some(false),
        Logits::Random,
    ));
    v.push(router(
        "router sqrt_softplus+bias",
        BF16,
        29,
        40,
        rc(6, Scoring::SqrtSoftplus, None, true, 1.5),
        Some(false),
        Logits::Random,
    ));
    v.push(router(
        "router ties (lower index wins)",
        F32,
        25,
        24,
        rc(5, Scoring::Softmax, None, true, 1.0),
        None,
        Logits::Ties,
    ));
    v.push(router(
        "router ties with groups",
        F32,
        25,
        32,
        rc(6, Scoring::Sigmoid, ds, true, 1.0),
        Some(false),
        Logits::Ties,
    ));
    v.push(router(
        "router NaN/inf logits, all-NaN row",
        F32,
        23,
        16,
        rc(4, Scoring::Sigmoid, ds, true, 2.5),
        Some(false),
        Logits::NonFinite,
    ));
    v.push(router(
        "router NaN softmax",
        F16,
        23,
        16,
        rc(4, Scoring::Softmax, None, true, 1.0),
        None,
        Logits::NonFinite,
    ));
    v.push(router(
        "router k = E",
        F32,
        9,
        8,
        rc(8, Scoring::Softmax, None, true, 1.0),
        None,
        Logits::Random,
    ));
    v.push(router(
        "router T = 1",
        F32,
        1,
        64,
        rc(8, Scoring::Sigmoid, None, true, 1.0),
        Some(false),
        Logits::Random,
    ));
    v.extend(router_tie_cases());
    v.extend(router_hash_cases());
    v.push(router(
        "router T = 0",
        F32,
        0,
        64,
        rc(8, Scoring::Sigmoid, None, true, 1.0),
        None,
        Logits::Random,
    ));

    let perm = |name: &str, t, k, e, x, drop, repeat, bad_id| {
        Case::new(
            name,
            Spec::MoePermute {
                tokens: t,
                topk: k,
                num_experts: e,
                x,
                drop,
                repeat,
                bad_id,
            },
        )
    };
    v.push(perm("permute ids only", 50, 4, 16, None, 0.0, false, false));
    for dt in [F32, BF16, F16] {
        v.push(perm(
            "permute with x, -1 slots, repeated expert",
            41,
            3,
            8,
            Some((dt, 24)),
            0.2,
            true,
            false,
        ));
    }
    v.push(perm("permute all dropped", 6, 2, 4, None, 1.0, false, false));
    v.push(perm("permute bad id", 6, 2, 4, None, 0.0, false, true));
    v.push(
        perm("permute id -2", 6, 2, 4, Some((DType::F32, 8)), 0.0, false, false)
            .corrupted(Corrupt::PermuteIdBelowDropped),
    );

    for dt in [F32, BF16, F16] {
        v.push(Case::new(
            "swiglu",
            Spec::Swiglu {
                dtype: dt,
                rows: 23,
                intermediate: 40,
                limit: None,
            },
        ));
        v.push(Case::new(
            "swiglu limit 10",
            Spec::Swiglu {
                dtype: dt,
                rows: 23,
                intermediate: 40,
                limit: Some(10.0),
            },
        ));
        v.push(Case::new(
            "combine -1 slots",
            Spec::MoeCombine {
                dtype: dt,
                tokens: 31,
                topk: 4,
                hidden: 40,
                drop: 0.2,
                bad_row: false,
            },
        ));
    }
    v.push(Case::new(
        "swiglu M = 0",
        Spec::Swiglu {
            dtype: F32,
            rows: 0,
            intermediate: 8,
            limit: None,
        },
    ));
    v.push(Case::new(
        "combine bad slot row",
        Spec::MoeCombine {
            dtype: F32,
            tokens: 4,
            topk: 2,
            hidden: 8,
            drop: 0.0,
            bad_row: true,
        },
    ));

    let hash = |name: &str, layer, t, positions, alive, history, ids: Option<Vec<i64>>, bad_id| {
        Case::new(
            name,
            Spec::EngramHash {
                layer,
                tokens: t,
                positions,
                alive,
                history,
                ids,
                bad_id,
            },
        )
    };
    v.push(hash(
        "hash OPS.md toy vector",
        LayerChoice::Toy,
        5,
        false,
        false,
        0,
        Some(vec![7, 3, 7, 3, 49]),
        false,
    ));
    v.push(hash(
        "hash toy positions/alive/history",
        LayerChoice::Toy,
        64,
        true,
        true,
        2,
        None,
        false,
    ));
    v.push(hash(
        "hash V4.1 layer 1",
        LayerChoice::V41(0),
        200,
        false,
        false,
        0,
        None,
        false,
    ));
    v.push(hash(
        "hash V4.1 layer 14 segments+dead+history",
        LayerChoice::V41(1),
        200,
        true,
        true,
        3,
        None,
        false,
    ));
    v.push(hash("hash id >= V'", LayerChoice::Toy, 8, false, false, 0, None, true));
    v.push(hash("hash id -1", LayerChoice::Toy, 8, true, false, 0, None, false).corrupted(Corrupt::HashTokenNegative));

    let g = |name: &str, format, out, r, d, t, c, bad_row| {
        Case::new(
            name,
            Spec::GatherRows {
                format,
                out,
                table_rows: r,
                dim: d,
                tokens: t,
                cols: c,
                bad_row,
                host_table: false,
            },
        )
    };
    for (f, o) in TableFormat::PAIRS {
        v.push(g("gather", f, o, 97, 64, 13, 3, false));
    }
    v.push(g(
        "gather fp8 d=256 (264-byte rows)",
        TableFormat::Fp8E4m3Ue8m0,
        BF16,
        50,
        256,
        7,
        4,
        false,
    ));
    v.push(g(
        "gather row out of range",
        TableFormat::BF16,
        BF16,
        10,
        32,
        3,
        2,
        true,
    ));
    v.push(g(
        "gather D = 0 (empty rows, indices still checked)",
        TableFormat::BF16,
        BF16,
        10,
        0,
        3,
        2,
        false,
    ));
    for (f, o) in [
        (TableFormat::BF16, BF16),
        (TableFormat::Fp8E4m3Ue8m0, BF16),
        (TableFormat::F32, F32),
    ] {
        v.push(Case::new(
            "lookup toy layer",
            Spec::EngramLookup {
                layer: LayerChoice::Toy,
                format: f,
                out: o,
                dim: 32,
                tokens: 40,
                extras: true,
            },
        ));
    }
    v
}

/// The shape sweep the backend crates' own conformance tests ran before the kit (moved here so that
/// every backend runs it): grouped GEMM block and panel tails in K and N, decode and prefill row
/// counts, empty and tail groups, each option; router every scoring × k × renormalize, k = E, the
/// [`Logits::Edge`] rows, 256 experts in groups; hash routing with k = E and tiny vocabularies;
/// permute with dropped and repeated slots up to a 4 MiB `x_perm` (the parallel copy); SwiGLU at
/// clamps 10 and 0.5 and widths to 3000; combine; Engram hashing up to 20,000 tokens (past the
/// parallel threshold, 16 Ki) on the toy and a small layer; gather of every table format with
/// empty and 256-wide rows; lookup of every format. Every float case in f32, bf16 and f16.
pub fn sweep_cases() -> Vec<Case> {
    use DType::*;
    let mut v = Vec::new();
    // grouped_gemm: (M, K, N, G); rows past M - M/5 are the tail, group 1 empty when G > 2.
    for (m, k, n, g) in [
        (0usize, 8usize, 8usize, 2usize),
        (6, 0, 5, 2),
        (5, 7, 0, 2),
        (13, 37, 70, 4),
        (40, 130, 64, 3),
        (3, 300, 129, 8),
        (150, 20, 33, 2),
    ] {
        let used = m - m / 5;
        let mut groups = vec![used / g; g];
        groups[g - 1] += used % g;
        if g > 2 {
            groups[2] += groups[1];
            groups[1] = 0;
        }
        for dt in [F32, BF16, F16] {
            for layout in [WeightLayout::NK, WeightLayout::KN] {
                for (opt, rs, b) in [
                    ("", false, false),
                    (" row_scale", true, false),
                    (" row_scale+bias", true, true),
                ] {
                    v.push(with_gemm(
                        gemm(
                            &format!("sweep gemm M {m} K {k} N {n} G {g}{opt}"),
                            dt,
                            layout,
                            &groups,
                            m - used,
                            n,
                            k,
                        ),
                        |bias, row_scale, _| {
                            *bias = b;
                            *row_scale = rs;
                        },
                    ));
                }
            }
        }
    }
    // router_topk.
    let grouped = |k, scoring, n_group, topk_group, score, renormalize, scale| {
        rc(
            k,
            scoring,
            Some(GroupLimit {
                n_group,
                topk_group,
                score,
            }),
            renormalize,
            scale,
        )
    };
    for dt in [F32, BF16, F16] {
        for scoring in Scoring::ALL {
            let sn = scoring.name();
            for (k, renorm) in [(1, true), (4, false), (8, true)] {
                let c = rc(k, scoring, None, renorm, 2.5);
                let r = if renorm { " renorm" } else { "" };
                v.push(router(
                    &format!("sweep router {sn} k {k}{r}"),
                    dt,
                    37,
                    64,
                    c,
                    Some(false),
                    Logits::Random,
                ));
                v.push(router(
                    &format!("sweep router {sn} k {k}{r} edge rows"),
                    dt,
                    25,
                    64,
                    c,
                    None,
                    Logits::Edge,
                ));
                v.push(router(
                    &format!("sweep router {sn} k {k}{r} edge rows, bias, E 16"),
                    dt,
                    10,
                    16,
                    c,
                    Some(false),
                    Logits::Edge,
                ));
            }
            v.push(router(
                &format!("sweep router {sn} k = E edge rows"),
                dt,
                10,
                16,
                rc(16, scoring, None, true, 1.0),
                Some(false),
                Logits::Edge,
            ));
        }
        for gs in [GroupScore::Top2Sum, GroupScore::Max] {
            for scoring in [Scoring::Sigmoid, Scoring::Softmax] {
                let tag = format!("{} {}", scoring.name(), gs.name());
                let c = grouped(8, scoring, 8, 4, gs, true, 2.5);
                v.push(router(
                    &format!("sweep router E 256 groups 8/4 {tag}"),
                    dt,
                    70,
                    256,
                    c,
                    Some(false),
                    Logits::Random,
                ));
                v.push(router(
                    &format!("sweep router E 256 groups 8/4 {tag} edge rows"),
                    dt,
                    20,
                    256,
                    c,
                    Some(false),
                    Logits::Edge,
                ));
                v.push(router(
                    &format!("sweep router k = every expert of the kept groups {tag}"),
                    dt,
                    20,
                    16,
                    grouped(8, scoring, 4, 2, gs, false, 1.0),
                    Some(false),
                    Logits::Edge,
                ));
            }
        }
    }
    for (t, e, vocab, k) in [
        (37usize, 256usize, 1000usize, 6usize),
        (20, 16, 7, 16),
        (5, 8, 3, 2),
        (0, 8, 3, 2),
    ] {
        for scoring in Scoring::ALL {
            v.push(Case::new(
                format!("sweep router hash T {t} E {e} V {vocab} k {k} {}", scoring.name()),
                Spec::RouterHash {
                    dtype: F32,
                    tokens: t,
                    num_experts: e,
                    vocab,
                    config: rc(k, scoring, None, k != 2, 1.5),
                    logits: Logits::NonFinite,
                    bad: None,
                },
            ));
        }
    }
    // moe_permute: ids with dropped slots and repeated experts, with and without x.
    for (t, k, e, h) in [
        (0usize, 2usize, 4usize, 3usize),
        (1, 1, 1, 5),
        (50, 4, 8, 7),
        (700, 8, 16, 4),
        (300, 6, 128, 1),
        (1200, 8, 64, 256),
    ] {
        for x in [None, Some((F32, h)), Some((BF16, h)), Some((F16, h))] {
            v.push(Case::new(
                format!("sweep permute T {t} k {k} E {e} H {h}"),
                Spec::MoePermute {
                    tokens: t,
                    topk: k,
                    num_experts: e,
                    x,
                    drop: 1.0 / (e as f64 + 1.0),
                    repeat: true,
                    bad_id: false,
                },
            ));
        }
    }
    for dt in [F32, BF16, F16] {
        for (m, i) in [(0usize, 4usize), (3, 1), (17, 45), (64, 768), (5, 3000)] {
            for limit in [None, Some(10.0f32), Some(0.5)] {
                let l = limit.map_or_else(String::new, |l| format!(" limit {l}"));
                v.push(Case::new(
                    format!("sweep swiglu M {m} I {i}{l}"),
                    Spec::Swiglu {
                        dtype: dt,
                        rows: m,
                        intermediate: i,
                        limit,
                    },
                ));
            }
        }
        for (t, k, h) in [(0usize, 2usize, 8usize), (1, 1, 1), (40, 8, 100), (300, 6, 64)] {
            v.push(Case::new(
                format!("sweep combine T {t} k {k} H {h}"),
                Spec::MoeCombine {
                    dtype: dt,
                    tokens: t,
                    topk: k,
                    hidden: h,
                    drop: 0.15,
                    bad_row: false,
                },
            ));
        }
    }
    // Engram.
    let small = LayerChoice::Small {
        vocab_n: 1000,
        n: 4,
        k: 3,
    };
    for (lname, layer, max_order) in [("toy", LayerChoice::Toy, 3), ("small", small, 4)] {
        for t in [0usize, 1, 5, 200, 1000, 20_000] {
            for extras in [false, true] {
                v.push(Case::new(
                    format!(
                        "sweep hash {lname} T {t}{}",
                        if extras { " positions/alive/history" } else { "" }
                    ),
                    Spec::EngramHash {
                        layer,
                        tokens: t,
                        positions: extras,
                        alive: extras,
                        history: if extras { max_order - 1 } else { 0 },
                        ids: None,
                        bad_id: false,
                    },
                ));
            }
        }
    }
    for (f, o) in TableFormat::PAIRS {
        for (r, d, t, c) in [(10usize, 32usize, 0usize, 3usize), (50, 64, 7, 3), (300, 256, 150, 8)] {
            for bad_row in [false, true] {
                if bad_row && t == 0 {
                    continue;
                }
                v.push(Case::new(
                    format!(
                        "sweep gather R {r} D {d} T {t} C {c}{}",
                        if bad_row { " bad row" } else { "" }
                    ),
                    Spec::GatherRows {
                        format: f,
                        out: o,
                        table_rows: r,
                        dim: d,
                        tokens: t,
                        cols: c,
                        bad_row,
                        host_table: false,
                    },
                ));
                if !bad_row && t > 0 {
                    v.push(Case::new(
                        format!("sweep gather R {r} D {d} T {t} C {c} host table"),
                        Spec::GatherRows {
                            format: f,
                            out: o,
                            table_rows: r,
                            dim: d,
                            tokens: t,
                            cols: c,
                            bad_row,
                            host_table: true,
                        },
                    ));
                }
            }
        }
        for (t, extras) in [(0usize, false), (5, true), (200, false), (1000, true)] {
            v.push(Case::new(
                format!(
                    "sweep lookup small layer T {t}{}",
                    if extras { " positions/alive/history" } else { "" }
                ),
                Spec::EngramLookup {
                    layer: small,
                    format: f,
                    out: o,
                    dim: 32,
                    tokens: t,
                    extras,
                },
            ));
        }
    }
    v
}

/// One-token routings with known ids, from the tie classes of OPS.md §2 steps 1–3 (saturated
/// sigmoid, exp underflow, sqrt_softplus subnormals, equal logits, `fl32(s + bias)` ties across
/// experts and groups, f32 `top2_sum` group ties, 16-expert groups), held to exact ids and
/// weights within 1e-6. Stricter than the contract where scores underflow (OPS.md lets scores
/// below 1e-30 go either way): a backend that computes those scores as the reference does (the
/// CPU backend) runs them; a device backend whose exp or sqrt flushes subnormals may not.
pub fn router_known_ties() -> Vec<Case> {
    let g = |n_group, topk_group, score| {
        Some(GroupLimit {
            n_group,
            topk_group,
            score,
        })
    };
    let cfg = |k, scoring, group| rc(k, scoring, group, true, 1.0);
    let sat = [20.5f32, 100.0, 30.0, 25.0, -1.5, 0.25, 40.0, 22.0];
    let known = |name: &str, config, logits: Vec<f32>, bias: Option<Vec<f32>>, want: Vec<i32>| {
        Case::new(
            format!("router known ties: {name}"),
            Spec::RouterKnown {
                config,
                logits,
                bias,
                want,
                weight_abs: 1e-6,
            },
        )
    };
    let group_sum_16: Vec<f32> = (0..64)
        .map(|i| match i % 16 {
            0 => 1.0,
            1 if (i / 16) % 2 == 1 => 2f32.powi(-24),
            _ => 0.0,
        })
        .collect();
    vec![
        // sigmoid(x >= 20) rounds to 1.0: two experts, and 8 experts with 6 saturated.
        known(
            "saturation",
            cfg(1, Scoring::Sigmoid, None),
            vec![20.5, 100.0],
            None,
            vec![0],
        ),
        known(
            "saturation 8",
            cfg(4, Scoring::Sigmoid, None),
            sat.to_vec(),
            None,
            vec![0, 1, 2, 3],
        ),
        // e^-200, e^-300 underflow to 0 in f32.
        known(
            "softmax underflow",
            cfg(2, Scoring::Softmax, None),
            vec![0.0, -300.0, -200.0],
            None,
            vec![0, 1],
        ),
        known(
            "sigmoid underflow",
            cfg(3, Scoring::Sigmoid, None),
            vec![5.0, -300.0, -200.0, -250.0],
            None,
            vec![0, 1, 2],
        ),
        // sqrt_softplus(-200) = e^-100 = 3.7e-44 is a subnormal, sqrt_softplus(-300) = 0: [0, 2].
        known(
            "sqrt_softplus underflow",
            cfg(2, Scoring::SqrtSoftplus, None),
            vec![5.0, -300.0, -200.0],
            None,
            vec![0, 2],
        ),
        known(
            "sqrt_softplus subnormals",
            cfg(4, Scoring::SqrtSoftplus, None),
            vec![-180.0, -300.0, -200.0, -190.0, -200.0, -400.0],
            None,
            vec![0, 3, 2, 4],
        ),
        known(
            "equal",
            cfg(3, Scoring::Softmax, None),
            vec![0.75; 6],
            None,
            vec![0, 1, 2],
        ),
        // fl32(s + 1024) equal for s = .5 and .5000025: experts and groups tie.
        known(
            "bias rounding",
            cfg(1, Scoring::Sigmoid, None),
            vec![0.0, 1e-5],
            Some(vec![1024.0; 2]),
            vec![0],
        ),
        known(
            "bias rounding across groups",
            cfg(2, Scoring::Sigmoid, g(2, 1, GroupScore::Top2Sum)),
            vec![0.0, 0.0, 1e-5, 1e-5],
            Some(vec![1024.0; 4]),
            vec![0, 1],
        ),
        known(
            "bias rounding across groups, max",
            cfg(2, Scoring::SqrtSoftplus, g(2, 1, GroupScore::Max)),
            vec![0.0, 0.0, 1e-5, 1e-5],
            Some(vec![1024.0; 4]),
            vec![0, 1],
        ),
        // top2_sum in f32: 1 + 2^-24 rounds to 1, a group tie.
        known(
            "f32 group sum",
            cfg(1, Scoring::Sigmoid, g(2, 1, GroupScore::Top2Sum)),
            vec![-300.0; 4],
            Some(vec![1.0, 0.0, 1.0, 2f32.powi(-24)]),
            vec![0],
        ),
        // The same on 16-expert groups (the AVX-512 group kernel): 4 groups, keep 2.
        known(
            "f32 group sum, 16 per group",
            cfg(3, Scoring::SqrtSoftplus, g(4, 2, GroupScore::Top2Sum)),
            vec![-300.0; 64],
            Some(group_sum_16),
            vec![0, 16, 17],
        ),
        known(
            "saturation, 16 per group",
            cfg(6, Scoring::Sigmoid, g(4, 1, GroupScore::Top2Sum)),
            (0..64).map(|i| sat[i % 8] - (i / 16) as f32 * 0.125).collect(),
            None,
            vec![0, 1, 2, 3, 6, 7],
        ),
    ]
}

/// The tie classes OPS.md §2 steps 1–3 pin (exact f32 ties from saturation, underflow, equal
/// logits, equal biased scores across groups, f32 group sums): every backend must follow the
/// lower-index rule on them exactly, or differ only at near-ties (underflowed scores).
fn router_tie_cases() -> Vec<Case> {
    use DType::*;
    let mut v = Vec::new();
    let g = |n_group, topk_group, score| {
        Some(GroupLimit {
            n_group,
            topk_group,
            score,
        })
    };
    for scoring in Scoring::ALL {
        let n = scoring.name();
        v.push(router(
            &format!("router tie classes {n}"),
            F32,
            16,
            32,
            rc(3, scoring, None, true, 1.0),
            None,
            Logits::TieClasses,
        ));
        v.push(router(
            &format!("router biased ties {n}"),
            F32,
            9,
            32,
            rc(2, scoring, None, true, 1.0),
            Some(false),
            Logits::BiasRounding,
        ));
        v.push(router(
            &format!("router biased ties across groups {n}"),
            F32,
            9,
            32,
            rc(4, scoring, g(8, 2, GroupScore::Top2Sum), true, 1.0),
            Some(false),
            Logits::BiasRounding,
        ));
    }
    v.push(router(
        "router tie classes with groups",
        BF16,
        16,
        64,
        rc(6, Scoring::Sigmoid, g(8, 3, GroupScore::Top2Sum), true, 2.5),
        None,
        Logits::TieClasses,
    ));
    v.push(router(
        "router biased ties across groups, max",
        F16,
        9,
        32,
        rc(4, Scoring::Sigmoid, g(4, 2, GroupScore::Max), false, 1.0),
        Some(false),
        Logits::BiasRounding,
    ));
    for scoring in [Scoring::Sigmoid, Scoring::SqrtSoftplus] {
        v.push(router(
            &format!("router f32 group-sum ties {}", scoring.name()),
            F32,
            4,
            32,
            rc(4, scoring, g(8, 3, GroupScore::Top2Sum), true, 1.0),
            Some(false),
            Logits::GroupSumRounding,
        ));
    }
    v
}

/// Hash routing (OPS.md §2): DeepSeek-V4-Flash's shape, non-finite logits, ignored (invalid) group
/// arguments, repeats, and the two value errors.
fn router_hash_cases() -> Vec<Case> {
    use DType::*;
    let hash = |name: &str, dtype, t, e, vocab, config, logits, bad| {
        Case::new(
            name,
            Spec::RouterHash {
                dtype,
                tokens: t,
                num_experts: e,
                vocab,
                config,
                logits,
                bad,
            },
        )
    };
    let v4 = rc(6, Scoring::SqrtSoftplus, None, true, 1.5);
    // Group arguments that top-k validation would reject: hash routing ignores them.
    let odd_groups = Some(GroupLimit {
        n_group: 3,
        topk_group: 0,
        score: GroupScore::Top2Sum,
    });
    vec![
        hash(
            "router hash (V4 first layers)",
            BF16,
            37,
            256,
            1000,
            v4,
            Logits::Random,
            None,
        ),
        hash(
            "router hash NaN/inf logits",
            F32,
            23,
            16,
            50,
            rc(4, Scoring::Softmax, None, true, 1.0),
            Logits::NonFinite,
            None,
        ),
        hash(
            "router hash k = E, repeats, groups ignored",
            F16,
            9,
            8,
            5,
            rc(8, Scoring::Sigmoid, odd_groups, false, 2.5),
            Logits::Random,
            None,
        ),
        hash("router hash T = 0", F32, 0, 16, 4, v4, Logits::Random, None),
        hash(
            "router hash bad token id",
            F32,
            8,
            16,
            10,
            v4,
            Logits::Random,
            Some(HashBad::TokenId),
        ),
        hash(
            "router hash bad table entry",
            F32,
            8,
            16,
            10,
            v4,
            Logits::Random,
            Some(HashBad::Entry),
        ),
        hash("router hash token id -1", F32, 8, 16, 10, v4, Logits::Random, None)
            .corrupted(Corrupt::RouterTokenNegative),
    ]
}

/// Cases derived from one preset, scaled to run in seconds on 2 cores: real routing (E, k, scoring,
/// groups) at 64 tokens; grouped GEMM with 8 of the experts and widths divided by 32; SwiGLU and
/// combine at the preset's limit and k; Engram at the real V4.1 hash.
pub fn preset_cases(p: &Preset) -> Vec<Case> {
    let mut v = Vec::new();
    let s = p.scaled_widths(32);
    let t = 64;
    v.push(router(
        &format!("{} router (T {t})", p.name),
        DType::BF16,
        t,
        p.num_experts,
        p.router(),
        p.bias.then_some(false),
        Logits::Random,
    ));
    let groups = [t * p.topk / 8; 8];
    for dt in [DType::BF16, DType::F32] {
        v.push(gemm(
            &format!("{} gate_up (8 experts, widths/32)", p.name),
            dt,
            WeightLayout::NK,
            &groups,
            0,
            2 * s.expert_width,
            s.hidden,
        ));
        v.push(gemm(
            &format!("{} down (8 experts, widths/32)", p.name),
            dt,
            WeightLayout::NK,
            &groups,
            0,
            s.hidden,
            s.expert_width,
        ));
    }
    v.push(Case::new(
        format!("{} permute", p.name),
        Spec::MoePermute {
            tokens: t,
            topk: p.topk,
            num_experts: p.num_experts,
            x: Some((DType::BF16, s.hidden)),
            drop: 0.0,
            repeat: false,
            bad_id: false,
        },
    ));
    v.push(Case::new(
        format!("{} swiglu", p.name),
        Spec::Swiglu {
            dtype: DType::BF16,
            rows: t,
            intermediate: s.expert_width,
            limit: p.swiglu_limit,
        },
    ));
    v.push(Case::new(
        format!("{} combine", p.name),
        Spec::MoeCombine {
            dtype: DType::BF16,
            tokens: t,
            topk: p.topk,
            hidden: s.hidden,
            drop: 0.0,
            bad_row: false,
        },
    ));
    if let Some(e) = p.engram {
        for layer in 0..e.layers.len() {
            v.push(Case::new(
                format!("{} engram layer {} hash", p.name, e.layers[layer]),
                Spec::EngramHash {
                    layer: LayerChoice::V41(layer),
                    tokens: 256,
                    positions: true,
                    alive: true,
                    history: 3,
                    ids: None,
                    bad_id: false,
                },
            ));
        }
        v.push(Case::new(
            format!("{} engram lookup (small primes, fp8 rows of {})", p.name, e.row_dim),
            Spec::EngramLookup {
                layer: LayerChoice::Small {
                    vocab_n: 500,
                    n: e.max_order,
                    k: e.heads,
                },
                format: TableFormat::Fp8E4m3Ue8m0,
                out: DType::BF16,
                dim: e.row_dim,
                tokens: 32,
                extras: true,
            },
        ));
    }
    v.extend(quant::preset_cases(p));
    v
}

/// The embedded default of `moehal check`: every edge case plus the cases of every preset.
pub fn default_cases() -> Vec<Case> {
    let mut v = edge_cases();
    v.extend(quant::edge_cases());
    for p in crate::presets::PRESETS {
        v.extend(preset_cases(p));
    }
    v
}

/// The cases of `cases` that `moehal check --op OP --case NAME --dtype LABEL` runs, each with its
/// index in `cases` (the index, not the position among the selected, derives its seed with
/// [`case_seed`], so a filtered run gives a case the same inputs as the full run with the same
/// base seed). `op` matches [`OpKind::name`]; `case` matches the case name exactly, or, when no
/// name is equal, every case whose name contains it; `dtype` matches [`Case::dtype`] exactly.
pub fn select<'a>(
    cases: &'a [Case],
    op: Option<OpKind>,
    case: Option<&str>,
    dtype: Option<&str>,
) -> Vec<(usize, &'a Case)> {
    let by_op: Vec<(usize, &Case)> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| op.is_none_or(|o| c.op() == o) && dtype.is_none_or(|d| c.dtype() == d))
        .collect();
    match case {
        None => by_op,
        Some(name) => {
            let exact: Vec<(usize, &Case)> = by_op.iter().copied().filter(|(_, c)| c.name() == name).collect();
            if exact.is_empty() {
                by_op.into_iter().filter(|(_, c)| c.name().contains(name)).collect()
            } else {
                exact
            }
        }
    }
}

/// `s` as one word of a POSIX shell: as it is when it holds only safe characters, else in single
/// quotes (a `'` inside written as `'\''`). Used by [`rerun_command`] and the CLI's `rerun:` line.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.,=/+:".contains(ch))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The `moehal check` command line that reruns exactly one case: same backend, same case list
/// (`preset`), the case picked by op, exact name and dtype label, and the same base seed, so that
/// [`select`] and [`case_seed`] give it the same inputs as the run that printed it.
pub fn rerun_command(backend: &str, preset: Option<&str>, case: &Case, base_seed: u64) -> String {
    format!(
        "moehal check --backend {backend}{} --op {} --case {} --dtype {} --seed {base_seed}",
        preset.map_or_else(String::new, |p| format!(" --preset {}", shell_quote(p))),
        case.op().name(),
        shell_quote(&case.name()),
        shell_quote(&case.dtype()),
    )
}

/// A seed for `case` derived from a base seed (so each case gets fresh inputs, reproducibly).
pub fn case_seed(base: u64, index: usize) -> u64 {
    base ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    /// Review of issue 12: a gather from a 0-row table with T * C > 0 indices is built without a
    /// panic (the recipe drew `gen_range(0..0)`); its indices are all out of range (0 = R) and the
    /// case expects, and the reference gives, the `rows` error of OPS.md §5. With no index it is
    /// an ordinary empty gather.
    /// The one relative-error measure and the GEMM row rule on their edges: NaN only with the
    /// reference's, infinities only the reference's, an all-zero reference gives the absolute
    /// norm, guard values must stay NaN.
    #[test]
    fn rel_error_and_check_rows_edges() {
        let all = |_| true;
        assert_eq!(rel_error(&[3.0f32, 0.0], &[4.0f32, 0.0], all), Ok(0.25));
        assert_eq!(rel_error(&[f64::NAN, 2.0], &[f64::NAN, 2.0], all), Ok(0.0));
        assert_eq!(rel_error(&[f64::INFINITY], &[f64::INFINITY], all), Ok(0.0));
        assert_eq!(rel_error(&[0.5f32], &[0.0f64], all), Ok(0.5));
        for (o, r) in [
            (f64::NAN, 1.0),
            (1.0, f64::NAN),
            (f64::INFINITY, 1.0),
            (1.0, f64::NEG_INFINITY),
        ] {
            assert!(rel_error(&[o], &[r], all).unwrap_err().contains("element 0"), "{o} {r}");
        }
        assert!(rel_error(&[1.0f32], &[1.0f32, 2.0], all).is_err());
        assert_eq!(rel_error(&[9.0, 1.0], &[1.0, 1.0], |i| i == 1), Ok(0.0));
        assert_eq!(check_rows(&[1.0f32, f32::NAN], &[1.0f64, 5.0], 1, 0.0), Ok(0.0));
        assert!(check_rows(&[1.0f32, 0.0], &[1.0f64, 5.0], 1, 0.0)
            .unwrap_err()
            .contains("guard element 1"));
        assert!(check_rows(&[1.1f32], &[1.0f64], 1, 1e-2)
            .unwrap_err()
            .contains("> 1e-2"));
    }

    #[test]
    fn a_gather_from_a_zero_row_table_is_the_rows_error_not_a_panic() {
        let spec = |tokens| Spec::GatherRows {
            format: TableFormat::F32,
            out: DType::F32,
            table_rows: 0,
            dim: 8,
            tokens,
            cols: 3,
            bad_row: false,
            host_table: false,
        };
        let case = Case::new("gather R 0", spec(2));
        assert_eq!(case.expect(), Expect::Invalid("rows"));
        let inputs = case.inputs(5).expect("the case builds");
        let rows: Vec<i64> = bytemuck::pod_collect_to_vec(&inputs.tensors[1].bytes);
        assert_eq!(rows, vec![0i64; 6]);
        let r = run_case(&Reference, &case, 5);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert!(r.metric.contains("rows"), "{r:?}");
        let empty = Case::new("gather R 0 T 0", spec(0));
        assert_eq!(empty.expect(), Expect::Ok);
        let r = run_case(&Reference, &empty, 5);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    }

    #[test]
    fn the_threaded_normal_fill_is_the_one_thread_fill() {
        // Above the threading cut, an element count no thread split divides evenly.
        let n = (3 << 16) + 5;
        for dtype in [DType::F32, DType::BF16] {
            let mut one = rng::seeded(9);
            one.next_u32(); // start off a block boundary
            let mut many = one.clone();
            let want: Vec<u8> = {
                let mut b = vec![0u8; n * dtype.size()];
                rng::encode_floats(dtype, &mut b, |_| normal(&mut one) * 0.5).unwrap();
                b
            };
            let mut got = vec![0u8; n * dtype.size()];
            put_randn(&mut many, dtype, &mut got, 0.5).unwrap();
            assert!(got == want, "{dtype}: threaded fill differs");
            // The generator continues where the one-thread fill left it.
            assert_eq!(many.next_u64(), one.next_u64(), "{dtype}");
        }
    }
}
