//! Benchmark cases shared by `moehal bench` and the criterion benches (`benches/*.rs`).
//!
//! A [`BenchShape`] is one op on one shape and dtype; its shape is the test kit's bench case
//! ([`ShapeKind`] = [`moehal_testkit::bench::Shape`]: label, FLOPs, bytes, sizes and the in-place
//! filler of its inputs, beside the conformance cases of `moehal check`). [`BenchShape::host_data`]
//! allocates its inputs once in host memory and has the kit fill them in place;
//! [`BenchShape::prepare`] binds them to a backend (host backends read the host buffers in place,
//! device backends get a copy) and allocates the outputs; [`Prepared::run`] enqueues the op and
//! synchronizes, so a timer around it measures the op. [`measure`] takes medians; [`run_table`]
//! runs shapes × backends with the reference in the same run and computes the ratios.
//!
//! Default shapes are those of `benches/peers.py`: the Qwen3-30B-A3B gate_up projection
//! (K 2048, N 1536, 128 experts, top-8) at 1, 16, 128 and 1024 tokens in f32 and bf16; the
//! DeepSeek-V3 grouped router (4096 × 256), the Qwen3 router (4096 × 128) and one DeepSeek-V3
//! token; a 2^22 × 256 table gathered by 4096 tokens × 8 rows in bf16 and f32. The MoE glue and
//! the Engram hash are added at the Qwen3 / V4.1 shapes, and the fused Engram lookup (hash +
//! gather) on a bf16 table of about 2^22 × 256 by 4096 tokens × 8 columns.

use std::time::Instant;

use moehal_core::engram::{v41_flash, EngramLayer};
use moehal_core::host::HostMemory;
use moehal_core::ops::{
    EngramHash, EngramLookup, GatherRows, GroupedGemm, MoeCombine, MoePermute, RouterConfig, RouterTopk, Swiglu,
    TableFormat, WeightLayout,
};
use moehal_core::{Backend, Buffer, DType, Error, OpKind, Result};

use crate::pipeline::{human_bytes, is_host_backend};
use crate::presets::Preset;

/// The shape of one benchmark: the test kit's bench case ([`moehal_testkit::bench::Shape`]),
/// which knows its label, FLOPs, bytes and sizes and fills its inputs in place.
pub use moehal_testkit::bench::Shape as ShapeKind;
pub use moehal_testkit::bench::{lookup_layer, LOOKUP_COLUMNS};

/// One op on one shape and dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchShape {
    /// The op.
    pub op: OpKind,
    /// Data dtype (activations / table; router logits are f32, hash ids i64).
    pub dtype: DType,
    /// The shape.
    pub kind: ShapeKind,
    /// Where the shape comes from (`"qwen3-30b-a3b gate_up"`).
    pub origin: String,
    /// Notes (scaling applied), printed with the results.
    pub notes: Vec<String>,
}

impl BenchShape {
    pub(crate) fn new(op: OpKind, dtype: DType, kind: ShapeKind, origin: impl Into<String>) -> Self {
        BenchShape {
            op,
            dtype,
            kind,
            origin: origin.into(),
            notes: Vec::new(),
        }
    }

    /// Short shape string for tables and JSON (`"E128 K2048 N1536 T16 top8"`).
    pub fn shape(&self) -> String {
        self.kind.label()
    }

    /// The dtype column: the dtype, or for §6 shapes the pairing (`"mxfp4 x bf16 -> bf16"`) or the
    /// quantize variant (`"bf16 -> e4m3 + ue8m0"`).
    pub fn dtype_label(&self) -> String {
        self.kind.dtype_label(self.dtype)
    }

    /// Floating-point operations of one run (grouped GEMM: `2*M*N*K`; [`ShapeKind::flops`], the
    /// test kit's cost model [`moehal_testkit::cost`]).
    pub fn flops(&self) -> Option<f64> {
        self.kind.flops()
    }

    /// Bytes that define the op's bandwidth ([`moehal_testkit::cost`]): weights of the active
    /// experts (GEMM; an upper bound of the experts touched: `min(E, M)`), logits read (router),
    /// rows moved (glue), ids read and rows written (hash), bytes gathered (gather, lookup:
    /// `T * C * D * es`).
    pub fn bytes(&self) -> f64 {
        self.kind.bytes(self.dtype)
    }

    /// Byte sizes of the host input buffers [`host_data`](Self::host_data) allocates, in its order
    /// (data buffers, then integer buffers: ids, rows, one `group_end` per expert set).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a size overflows `usize` (a token count no machine holds).
    pub fn input_sizes(&self) -> Result<Vec<usize>> {
        self.kind.input_sizes(self.dtype)
    }

    /// Byte sizes of the outputs [`prepare`](Self::prepare) allocates on a backend, in order.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a size overflows `usize`.
    pub fn output_sizes(&self) -> Result<Vec<usize>> {
        self.kind.output_sizes(self.dtype)
    }

    /// Peak host bytes one shape takes in `moehal bench`: its inputs ([`input_sizes`](Self::input_sizes),
    /// held for the whole shape), the outputs of one backend at a time
    /// ([`output_sizes`](Self::output_sizes)), with `device_copy` a second copy of the inputs (a
    /// device backend's upload, which the Ascend emulator keeps in host memory), the `group_end`
    /// lists built before they are copied into buffers, and for cold decode the buffer of the
    /// same-run DRAM read when that is larger (it is freed before the inputs are made), plus 64 KiB
    /// for bookkeeping (the lists of buffers, a token's expert choice). Backends' internal scratch
    /// is not counted (the ops here need none beyond their outputs). tests/bench_mem.rs checks the
    /// estimate against the peak a counting allocator sees.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a size overflows `usize`: the shape cannot exist.
    pub fn mem_bytes(&self, device_copy: bool) -> Result<usize> {
        let overflow = || Error::invalid("bench", "memory", "the shape's bytes overflow usize");
        let inputs = checked_sum(&self.input_sizes()?).ok_or_else(overflow)?;
        let outputs = checked_sum(&self.output_sizes()?).ok_or_else(overflow)?;
        // The group_end lists (E i64 each) exist as Vecs while they are copied into buffers.
        // (Counted generously: the counts, the running sums or the permutation, one list per set.)
        let lists = match self.kind {
            ShapeKind::Gemm {
                num_experts: experts, ..
            }
            | ShapeKind::QGemm {
                num_experts: experts,
                sets: None,
                ..
            } => size("group_end", &[experts, 3, 8])?,
            ShapeKind::DecodeCold {
                num_experts: experts,
                sets,
                ..
            }
            | ShapeKind::QGemm {
                num_experts: experts,
                sets: Some(sets),
                ..
            } => size("group_end", &[experts, sets.saturating_add(2), 8])?,
            _ => 0,
        };
        let copy = if device_copy { inputs } else { 0 };
        let total = checked_sum(&[inputs, outputs, lists, copy, BOOKKEEPING]).ok_or_else(overflow)?;
        Ok(match self.kind {
            ShapeKind::DecodeCold { l3, .. } => total.max(dram_read_bytes(l3)),
            _ => total,
        })
    }

    /// Estimated seconds of one run on the reference, from its measured multiply-add rates
    /// (with a margin of 1.5 for shapes that leave the caches) and a copy rate of ~1 GB/s for
    /// the data-movement ops.
    pub fn reference_estimate(&self, rates: &RefRates) -> f64 {
        match self.flops() {
            Some(f) => 1.5 * f / 2.0 / rates.get(self.dtype),
            None => {
                self.bytes() / 1e9
                    + match self.kind {
                        ShapeKind::Router {
                            tokens,
                            num_experts: experts,
                            ..
                        } => tokens as f64 * experts as f64 * 50e-9,
                        ShapeKind::Hash { tokens } | ShapeKind::Lookup { tokens, .. } => tokens as f64 * 1e-6,
                        _ => 0.0,
                    }
            }
        }
    }

    /// Generate the seeded inputs in host memory.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the host allocation fails.
    pub fn host_data(&self, seed: u64) -> Result<HostData> {
        // Checked sizes first; each buffer is allocated once and filled in place (no
        // intermediate Vec: a 2 GiB table takes its bytes once).
        let sizes = self.input_sizes()?;
        let mut mems = sizes
            .iter()
            .map(|&n| HostMemory::zeroed(n))
            .collect::<Result<Vec<_>>>()?;
        {
            let mut slices = mems.iter_mut().map(HostMemory::bytes_mut).collect::<Result<Vec<_>>>()?;
            self.kind.fill_inputs(self.dtype, seed, &mut slices)?;
        }
        let bufs = mems.into_iter().map(|m| Buffer::new(Box::new(m))).collect();
        Ok(HostData {
            bufs,
            layer: self.kind.layer()?,
        })
    }

    /// Bind the inputs to `backend` and allocate the outputs.
    ///
    /// # Errors
    /// Allocation and upload errors; [`Error::Unsupported`] when the backend does not support
    /// the variant (checked with [`Backend::supports`] first).
    pub fn prepare<'b>(&self, backend: &'b dyn Backend, data: &'b HostData) -> Result<Prepared<'b>> {
        let host = is_host_backend(backend);
        let mut inputs = Vec::with_capacity(data.bufs.len());
        for b in &data.bufs {
            inputs.push(if host {
                Input::Host(b)
            } else {
                let bytes = moehal_core::host::bytes(b, "bench", "input")?;
                Input::Device(crate::pipeline::upload_bytes(backend, bytes)?)
            });
        }
        let dt = self.dtype;
        let kind = self.kind.clone();
        let mut outs: Vec<Buffer> = Vec::new();
        let out_sizes = self.output_sizes()?;
        for sz in out_sizes {
            outs.push(backend.alloc(sz)?);
        }
        let layer = data.layer.as_ref();
        let mut step = 0usize;
        let run = move || -> Result<()> {
            let inp = |i: usize| inputs[i].get();
            match &kind {
                ShapeKind::Gemm {
                    num_experts: experts,
                    k,
                    n,
                    tokens,
                    topk,
                } => {
                    let m = tokens * topk;
                    let args = GroupedGemm {
                        x: inp(0).view(dt, &[m, *k]),
                        w: inp(1).view(dt, &[*experts, *n, *k]),
                        layout: WeightLayout::NK,
                        group_end: inp(2).view(DType::I64, &[*experts]),
                        row_scale: None,
                        bias: None,
                        y: outs[0].view_mut(dt, &[m, *n]),
                    };
                    backend.grouped_gemm(args.validate()?)
                }
                ShapeKind::DecodeCold {
                    num_experts: experts,
                    k,
                    n,
                    topk,
                    sets,
                    ..
                } => {
                    let set = step % sets;
                    step += 1;
                    let args = GroupedGemm {
                        x: inp(0).view(dt, &[*topk, *k]),
                        w: inp(1).view(dt, &[*experts, *n, *k]),
                        layout: WeightLayout::NK,
                        group_end: inp(2 + set).view(DType::I64, &[*experts]),
                        row_scale: None,
                        bias: None,
                        y: outs[0].view_mut(dt, &[*topk, *n]),
                    };
                    backend.grouped_gemm(args.validate()?)
                }
                ShapeKind::Router {
                    tokens,
                    num_experts: experts,
                    config,
                    bias,
                } => {
                    let (a, b) = outs.split_at_mut(1);
                    let args = RouterTopk {
                        config: *config,
                        logits: inp(0).view(DType::F32, &[*tokens, *experts]),
                        bias: bias.then(|| inp(1).view(DType::F32, &[*experts])),
                        ids: a[0].view_mut(DType::I32, &[*tokens, config.topk]),
                        weights: b[0].view_mut(DType::F32, &[*tokens, config.topk]),
                        expert_counts: None,
                    };
                    backend.router_topk(args.validate()?)
                }
                ShapeKind::Permute {
                    tokens,
                    num_experts: experts,
                    topk,
                    hidden,
                } => {
                    let r = tokens * topk;
                    let [ge, st, sr, xp] = &mut outs[..] else {
                        return Err(Error::invalid("bench", "outputs", "permute needs 4 outputs"));
                    };
                    let args = MoePermute {
                        num_experts: *experts,
                        ids: inp(0).view(DType::I32, &[*tokens, *topk]),
                        x: Some(inp(1).view(dt, &[*tokens, *hidden])),
                        group_end: ge.view_mut(DType::I64, &[*experts]),
                        src_token: st.view_mut(DType::I64, &[r]),
                        slot_row: sr.view_mut(DType::I64, &[*tokens, *topk]),
                        x_perm: Some(xp.view_mut(dt, &[r, *hidden])),
                    };
                    backend.moe_permute(args.validate()?)
                }
                ShapeKind::Swiglu { rows, width, limit } => {
                    let args = Swiglu {
                        h: inp(0).view(dt, &[*rows, 2 * width]),
                        out: outs[0].view_mut(dt, &[*rows, *width]),
                        limit: *limit,
                    };
                    backend.swiglu(args.validate()?)
                }
                ShapeKind::Combine { tokens, topk, hidden } => {
                    let args = MoeCombine {
                        y_perm: inp(0).view(dt, &[tokens * topk, *hidden]),
                        slot_row: inp(1).view(DType::I64, &[*tokens, *topk]),
                        weights: inp(2).view(DType::F32, &[*tokens, *topk]),
                        out: outs[0].view_mut(dt, &[*tokens, *hidden]),
                    };
                    backend.moe_combine(args.validate()?)
                }
                ShapeKind::Hash { tokens } => {
                    let layer: &EngramLayer =
                        layer.ok_or_else(|| Error::invalid("bench", "layer", "hash data without a layer"))?;
                    let args = EngramHash {
                        layer,
                        ids: inp(0).view(DType::I64, &[*tokens]),
                        positions: None,
                        alive: None,
                        history: &[],
                        rows: outs[0].view_mut(DType::I64, &[*tokens, layer.columns()]),
                    };
                    backend.engram_hash(args.validate()?)
                }
                ShapeKind::Gather {
                    table_rows,
                    dim,
                    tokens,
                    cols,
                } => {
                    let args = GatherRows {
                        table: inp(0).view(dt, &[*table_rows, *dim]),
                        format: table_format(dt),
                        rows: inp(1).view(DType::I64, &[*tokens, *cols]),
                        out: outs[0].view_mut(dt, &[*tokens, cols * dim]),
                    };
                    backend.gather_rows(args.validate()?)
                }
                ShapeKind::Lookup {
                    table_rows,
                    dim,
                    tokens,
                    ..
                } => {
                    let layer: &EngramLayer =
                        layer.ok_or_else(|| Error::invalid("bench", "layer", "lookup data without a layer"))?;
                    let args = EngramLookup {
                        layer,
                        ids: inp(1).view(DType::I64, &[*tokens]),
                        positions: None,
                        alive: None,
                        history: &[],
                        table: inp(0).view(dt, &[*table_rows, *dim]),
                        format: table_format(dt),
                        out: outs[0].view_mut(dt, &[*tokens, LOOKUP_COLUMNS * dim]),
                    };
                    backend.engram_lookup(args.validate()?)
                }
                ShapeKind::QGemm { sets, .. } => {
                    let st = step;
                    step += sets.is_some() as usize;
                    crate::bench_quant::run_qgemm(backend, &kind, &inp, st, &mut outs[0])
                }
                ShapeKind::Quantize { .. } => crate::bench_quant::run_quantize(backend, &kind, inp(0), dt, &mut outs),
            }?;
            backend.synchronize()
        };
        Ok(Prepared { run: Box::new(run) })
    }
}

/// The table format whose storage dtype is `dt` (bf16 for anything not f32/f16).
fn table_format(dt: DType) -> TableFormat {
    match dt {
        DType::F32 => TableFormat::F32,
        DType::F16 => TableFormat::F16,
        _ => TableFormat::BF16,
    }
}

/// Bytes [`BenchShape::mem_bytes`] allows for the small allocations beside the buffers.
const BOOKKEEPING: usize = 64 << 10;

pub(crate) use moehal_testkit::bench::size;

/// The sum of `v`, `None` on overflow.
fn checked_sum(v: &[usize]) -> Option<usize> {
    v.iter().try_fold(0usize, |acc, &x| acc.checked_add(x))
}

/// Seeded inputs of one shape in host memory (shared by every backend of a run).
pub struct HostData {
    bufs: Vec<Buffer>,
    layer: Option<EngramLayer>,
}

impl HostData {
    /// Byte length of each input buffer ([`BenchShape::input_sizes`] of its shape).
    pub fn sizes(&self) -> Vec<usize> {
        self.bufs.iter().map(Buffer::len).collect()
    }
}

enum Input<'b> {
    Host(&'b Buffer),
    Device(Buffer),
}

impl Input<'_> {
    fn get(&self) -> &Buffer {
        match self {
            Input::Host(b) => b,
            Input::Device(b) => b,
        }
    }
}

/// One shape bound to one backend: [`run`](Self::run) enqueues the op and synchronizes.
pub struct Prepared<'b> {
    run: Box<dyn FnMut() -> Result<()> + 'b>,
}

impl Prepared<'_> {
    /// Run the op once and wait for it.
    ///
    /// # Errors
    /// The op's errors.
    pub fn run(&mut self) -> Result<()> {
        (self.run)()
    }
}

/// Timing of one shape on one backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Median seconds per run.
    pub median: f64,
    /// Fastest run.
    pub min: f64,
    /// Runs timed (after one warm-up).
    pub reps: usize,
    /// Whether [`MAX_TIMED_RUNS`] cut the runs the budget allowed (the row used less time than
    /// its budget; `moehal bench` notes it).
    pub capped: bool,
}

/// The most timed runs of one shape and backend, whatever the budget ([`measure`]).
pub const MAX_TIMED_RUNS: usize = 50;

/// One warm-up run, then `clamp(budget / warm-up, 3, MAX_TIMED_RUNS)` timed runs (2 when a run
/// takes more than a second); the median.
///
/// # Errors
/// The op's errors.
pub fn measure(p: &mut Prepared<'_>, budget_s: f64) -> Result<Measurement> {
    let t0 = Instant::now();
    p.run()?;
    let warm = t0.elapsed().as_secs_f64();
    let allowed = (budget_s / warm.max(1e-7)) as usize;
    let reps = if warm > 1.0 {
        2
    } else {
        allowed.clamp(3, MAX_TIMED_RUNS)
    };
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        p.run()?;
        ts.push(t.elapsed().as_secs_f64());
    }
    ts.sort_by(f64::total_cmp);
    let median = if reps % 2 == 1 {
        ts[reps / 2]
    } else {
        0.5 * (ts[reps / 2 - 1] + ts[reps / 2])
    };
    Ok(Measurement {
        median,
        min: ts[0],
        reps,
        capped: warm <= 1.0 && allowed > MAX_TIMED_RUNS,
    })
}

/// The reference's multiply-add rates (per second) on a grouped GEMM of 8 experts × `[512, 1024]`
/// and 64 rows, per floating dtype (f32, bf16, f16, in [`DType::FLOATS`] order), to estimate which
/// shapes it can run in reasonable time.
///
/// # Errors
/// The op's errors.
pub fn calibrate_reference() -> Result<RefRates> {
    let be = moehal_core::Reference::new();
    let mut rates = [0f64; 3];
    for (r, dt) in rates.iter_mut().zip(DType::FLOATS) {
        let shape = BenchShape::new(
            OpKind::GroupedGemm,
            dt,
            ShapeKind::Gemm {
                num_experts: 8,
                k: 1024,
                n: 512,
                tokens: 32,
                topk: 2,
            },
            "calibration",
        );
        let data = shape.host_data(1)?;
        let mut p = shape.prepare(&be, &data)?;
        let m = measure(&mut p, 0.1)?;
        *r = shape.flops().unwrap_or(0.0) / 2.0 / m.median;
    }
    Ok(RefRates(rates))
}

/// Multiply-add rates of the reference per floating dtype, from [`calibrate_reference`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefRates(pub [f64; 3]);

impl RefRates {
    /// The rate for `dtype` (the f32 rate for non-floating dtypes).
    pub fn get(&self, dtype: DType) -> f64 {
        DType::FLOATS
            .iter()
            .position(|&d| d == dtype)
            .map_or(self.0[0], |i| self.0[i])
    }
}

/// Token counts of the default grouped-GEMM shapes (peers.py).
pub const GEMM_TOKENS: [usize; 4] = [1, 16, 128, 1024];

/// The router of the preset `name` (one definition of each model's routing: the test kit's).
fn preset_router(name: &str) -> RouterConfig {
    crate::presets::preset(name)
        .map(Preset::router)
        .expect("a preset of OPS.md")
}

fn qwen3_router() -> RouterConfig {
    preset_router("qwen3-30b-a3b")
}

fn dsv3_router() -> RouterConfig {
    preset_router("deepseek-v3")
}

/// The default shapes (peers.py plus glue and hash), for `tokens` overriding every token count
/// when given. `mem_budget` bounds the input bytes of one shape: grouped GEMMs that do not fit
/// keep fewer experts and gather tables are halved until they fit, each with a note.
///
/// # Errors
/// [`Error::InvalidArgument`] when a token count times the top-k overflows `usize` (the routed
/// rows of a shape cannot be counted, let alone held).
pub fn default_shapes(tokens: Option<&[usize]>, mem_budget: f64) -> Result<Vec<BenchShape>> {
    default_shapes_of(None, tokens, mem_budget)
}

/// [`default_shapes`] of `op` only (`None`: every op). Only the shapes of `op` are built, so a
/// size error names that op (issue 16: `--op engram_hash --tokens 2^64-1` blamed the swiglu shape).
///
/// # Errors
/// As [`default_shapes`], for the shapes of `op`.
pub fn default_shapes_of(op: Option<OpKind>, tokens: Option<&[usize]>, mem_budget: f64) -> Result<Vec<BenchShape>> {
    let want = |o: OpKind| op.is_none_or(|x| x == o);
    let toks = |d: &[usize]| -> Vec<usize> { tokens.map_or_else(|| d.to_vec(), |t| t.to_vec()) };
    let mut v = Vec::new();
    for t in toks(&GEMM_TOKENS) {
        for dt in [DType::F32, DType::BF16] {
            let per_expert = (2048 * 1536 * dt.size()) as f64;
            let e = ((mem_budget / per_expert) as usize).clamp(8, 128);
            let mut s = BenchShape::new(
                OpKind::GroupedGemm,
                dt,
                ShapeKind::Gemm {
                    num_experts: e,
                    k: 2048,
                    n: 1536,
                    tokens: t,
                    topk: 8,
                },
                "qwen3-30b-a3b gate_up",
            );
            if e < 128 {
                s.notes.push(format!(
                    "scaled by expert count to fit memory: 128 -> {e} experts (top-8 kept)"
                ));
            }
            v.push(s);
        }
    }
    if tokens.is_none_or(|t| t.contains(&1)) {
        v.push(decode_cold_shape(mem_budget, l3_cache().0));
    }
    for t in toks(&[4096, 1]) {
        v.push(BenchShape::new(
            OpKind::RouterTopk,
            DType::F32,
            ShapeKind::Router {
                tokens: t,
                num_experts: 256,
                config: dsv3_router(),
                bias: true,
            },
            "deepseek-v3 gate",
        ));
        v.push(BenchShape::new(
            OpKind::RouterTopk,
            DType::F32,
            ShapeKind::Router {
                tokens: t,
                num_experts: 128,
                config: qwen3_router(),
                bias: false,
            },
            "qwen3 gate",
        ));
    }
    for t in toks(&[1024]) {
        for dt in [DType::F32, DType::BF16] {
            v.push(BenchShape::new(
                OpKind::MoePermute,
                dt,
                ShapeKind::Permute {
                    tokens: t,
                    num_experts: 128,
                    topk: 8,
                    hidden: 2048,
                },
                "qwen3-30b-a3b",
            ));
            if want(OpKind::Swiglu) {
                v.push(BenchShape::new(
                    OpKind::Swiglu,
                    dt,
                    ShapeKind::Swiglu {
                        rows: rows_of(t, 8)?,
                        width: 768,
                        limit: None,
                    },
                    "qwen3-30b-a3b",
                ));
            }
            v.push(BenchShape::new(
                OpKind::MoeCombine,
                dt,
                ShapeKind::Combine {
                    tokens: t,
                    topk: 8,
                    hidden: 2048,
                },
                "qwen3-30b-a3b",
            ));
        }
    }
    for t in toks(&[4096]) {
        v.push(BenchShape::new(
            OpKind::EngramHash,
            DType::I64,
            ShapeKind::Hash { tokens: t },
            "deepseek-v4.1-flash",
        ));
    }
    for t in toks(&[4096]) {
        for dt in [DType::BF16, DType::F32] {
            v.push(gather_shape(1 << 22, 256, t, 8, dt, "peers.py table", mem_budget));
        }
    }
    for t in toks(&[4096]) {
        v.extend(lookup_shape(1 << 19, 256, t, DType::BF16, mem_budget));
    }
    v.extend(crate::bench_quant::quant_shapes(tokens, mem_budget));
    v.retain(|s| want(s.op));
    Ok(v)
}

/// `tokens × topk` routed rows (of the `swiglu` shapes), or [`Error::InvalidArgument`] naming
/// `swiglu` when that overflows `usize`.
fn rows_of(tokens: usize, topk: usize) -> Result<usize> {
    tokens.checked_mul(topk).ok_or_else(|| {
        Error::invalid(
            "swiglu",
            "tokens",
            format!("{tokens} tokens x top-{topk} routed rows overflow usize"),
        )
    })
}

/// The last-level (L3) cache of this host in bytes and where the figure comes from: sysfs
/// `/sys/devices/system/cpu/cpu0/cache/index3/size` (`"32768K"`), else 32 MiB (`"assumed"`).
pub fn l3_cache() -> (usize, &'static str) {
    std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index3/size")
        .ok()
        .and_then(|t| parse_cache_size(&t))
        .map_or((32 << 20, "assumed"), |b| (b, "sysfs"))
}

/// A sysfs cache size (`"32768K"`, `"1M"`, `"512"`) in bytes; `None` for anything else or 0.
fn parse_cache_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let (num, mult) = match t.as_bytes().last()? {
        b'K' | b'k' => (&t[..t.len() - 1], 1usize << 10),
        b'M' | b'm' => (&t[..t.len() - 1], 1 << 20),
        b'G' | b'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult).filter(|&b| b > 0)
}

/// Bytes of the same-run DRAM read beside cold decode: 16 × the L3 (far beyond it), within
/// 256 MiB ..= 1 GiB.
pub fn dram_read_bytes(l3: usize) -> usize {
    l3.saturating_mul(16).clamp(256 << 20, 1 << 30)
}

/// The cold-decode shape (bf16, one token, top-8 of the Qwen3-30B-A3B gate_up experts, rotating
/// over disjoint expert sets, as benches/peers.py `decode`): [`cold_shape`] of `[1536, 2048]`
/// experts, at most the model's 128.
pub fn decode_cold_shape(budget: f64, l3: usize) -> BenchShape {
    cold_shape("qwen3-30b-a3b gate_up decode, cold", 128, 2048, 1536, 8, budget, l3)
}

/// A bf16 cold-decode shape of `[n, k]` experts of a model with `model_experts` experts and
/// top-`topk`: the fewest experts (a multiple of `topk`, at least 2 sets) whose weights are at least
/// 4 × `l3` bytes, so every run reads its weights from DRAM; at most the model's experts and what
/// `budget` bytes hold. Its notes say what it rotates over, when it has fewer experts than 4 × `l3`
/// needs because memory or the model cut it ("not fully cold"), and when memory cut it below the
/// model's expert count while that count would have been needed.
pub fn cold_shape(
    origin: &str,
    model_experts: usize,
    k: usize,
    n: usize,
    topk: usize,
    budget: f64,
    l3: usize,
) -> BenchShape {
    let dt = DType::BF16;
    let topk = topk.max(1);
    let per_expert = n * k * dt.size();
    let need = l3
        .saturating_mul(4)
        .div_ceil(per_expert.max(1))
        .div_ceil(topk)
        .saturating_mul(topk);
    let most = (model_experts / topk * topk).max(2 * topk);
    let fit = ((budget / per_expert.max(1) as f64) as usize) / topk * topk;
    let e = need.clamp(2 * topk, most).min(fit).max(2 * topk);
    let mut s = BenchShape::new(
        OpKind::GroupedGemm,
        dt,
        ShapeKind::DecodeCold {
            num_experts: e,
            k,
            n,
            topk,
            sets: e / topk,
            l3,
        },
        origin,
    );
    let rot = (e * per_expert) as f64;
    s.notes.push(format!(
        "rotates over {} of expert weights ({:.1} x the L3 of {})",
        human_bytes(rot),
        rot / l3 as f64,
        human_bytes(l3 as f64)
    ));
    if e < need.min(most) {
        s.notes.push(format!(
            "cut to fit memory: {e} of the {} experts 4 x L3 needs",
            need.min(most)
        ));
    }
    if e * per_expert < l3.saturating_mul(4) {
        s.notes.push(format!(
            "not fully cold: {} experts fit (memory or the model's {model_experts}), fewer than 4 x L3",
            e
        ));
    }
    s
}

/// Read bandwidth of this host in GB/s: `threads` threads each summing its share of a `bytes` buffer
/// of u64 words (written first, so every page is mapped), the fastest of 3 passes. With `bytes` far
/// above the last-level cache this is the DRAM read rate that decode can at best reach.
pub fn dram_read_gbs(bytes: usize, threads: usize) -> f64 {
    let words = (bytes / 8).max(1);
    let buf: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(threads.max(1));
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        let total = std::thread::scope(|sc| {
            let hs: Vec<_> = buf
                .chunks(chunk)
                .map(|c| sc.spawn(move || c.iter().fold(0u64, |a, &v| a.wrapping_add(v))))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.min(t.elapsed().as_secs_f64());
    }
    (words * 8) as f64 / best / 1e9
}

/// The `engram_lookup` shape: the layer of [`lookup_layer`]`(vocab_n)` (R ≈ 8 * vocab_n rows of
/// `dim`), `vocab_n` halved (and the layer rebuilt, so R stays the sum of its primes) until the
/// table fits `budget`, with a note. `None` only if the primes cannot be derived.
fn lookup_shape(vocab_n: u64, dim: usize, t: usize, dt: DType, budget: f64) -> Option<BenchShape> {
    let rows_of = |vn: u64| -> Option<usize> { lookup_layer(vn).ok().map(|l| l.rows() as usize) };
    let full = rows_of(vocab_n)?;
    let (mut vn, mut r) = (vocab_n, full);
    while vn > 128 && (r * dim * dt.size()) as f64 > budget {
        vn /= 2;
        r = rows_of(vn)?;
    }
    let mut s = BenchShape::new(
        OpKind::EngramLookup,
        dt,
        ShapeKind::Lookup {
            vocab_n: vn,
            table_rows: r,
            dim,
            tokens: t,
        },
        "engram 2^22 table, v4.1 layer-1 multipliers (N2 K8)",
    );
    if vn != vocab_n {
        s.notes.push(format!(
            "table scaled to fit memory: {full} -> {r} rows ({} -> {} of {dt}); layer rebuilt with vocab_n {vocab_n} -> {vn} so R = sum of its primes",
            human_bytes((full * dim * dt.size()) as f64),
            human_bytes((r * dim * dt.size()) as f64)
        ));
    }
    Some(s)
}

fn gather_shape(rows: usize, dim: usize, t: usize, c: usize, dt: DType, origin: &str, budget: f64) -> BenchShape {
    let mut r = rows;
    while r > 1024 && (r * dim * dt.size()) as f64 > budget {
        r /= 2;
    }
    let mut s = BenchShape::new(
        OpKind::GatherRows,
        dt,
        ShapeKind::Gather {
            table_rows: r,
            dim,
            tokens: t,
            cols: c,
        },
        origin,
    );
    if r != rows {
        s.notes.push(format!(
            "table scaled to fit memory: {rows} -> {r} rows ({} -> {} of {dt})",
            human_bytes((rows * dim * dt.size()) as f64),
            human_bytes((r * dim * dt.size()) as f64)
        ));
    }
    s
}

/// Shapes derived from a preset: the gate_up and down projections (bf16, experts scaled to fit
/// `mem_budget` with a note), its router, the glue at its widths, and the Engram hash and gather
/// for presets with Engram. Tokens: `tokens` or 1, 16, 128, 1024 (router: 4096 and 1).
///
/// # Errors
/// As [`default_shapes`]: a token count whose routed rows overflow `usize`.
pub fn preset_shapes(p: &Preset, tokens: Option<&[usize]>, mem_budget: f64) -> Result<Vec<BenchShape>> {
    preset_shapes_of(p, None, tokens, mem_budget)
}

/// [`preset_shapes`] of `op` only (`None`: every op); see [`default_shapes_of`].
///
/// # Errors
/// As [`preset_shapes`], for the shapes of `op`.
pub fn preset_shapes_of(
    p: &Preset,
    op: Option<OpKind>,
    tokens: Option<&[usize]>,
    mem_budget: f64,
) -> Result<Vec<BenchShape>> {
    let want = |o: OpKind| op.is_none_or(|x| x == o);
    let toks = |d: &[usize]| -> Vec<usize> { tokens.map_or_else(|| d.to_vec(), |t| t.to_vec()) };
    let dt = DType::BF16;
    let (h, i) = (p.hidden, p.expert_width);
    let per_expert = (2 * i * h * dt.size()) as f64;
    let e = ((mem_budget / per_expert) as usize).clamp(p.topk, p.num_experts);
    let mut v = Vec::new();
    for t in toks(&GEMM_TOKENS) {
        for (what, n, k) in [("gate_up", 2 * i, h), ("down", h, i)] {
            let mut s = BenchShape::new(
                OpKind::GroupedGemm,
                dt,
                ShapeKind::Gemm {
                    num_experts: e,
                    k,
                    n,
                    tokens: t,
                    topk: p.topk,
                },
                format!("{} {what}", p.name),
            );
            if e < p.num_experts {
                s.notes.push(format!(
                    "scaled by expert count to fit memory: {} -> {e} experts (top-{} kept)",
                    p.num_experts, p.topk
                ));
            }
            v.push(s);
        }
    }
    // Cold decode of the preset's gate_up, as the default set's Qwen3 row (issue 16: `--preset P
    // --filter cold` found nothing).
    if tokens.is_none_or(|t| t.contains(&1)) {
        v.push(cold_shape(
            &format!("{} gate_up decode, cold", p.name),
            p.num_experts,
            h,
            2 * i,
            p.topk,
            mem_budget,
            l3_cache().0,
        ));
    }
    for t in toks(&[4096, 1]) {
        v.push(BenchShape::new(
            OpKind::RouterTopk,
            DType::F32,
            ShapeKind::Router {
                tokens: t,
                num_experts: p.num_experts,
                config: p.router(),
                bias: p.bias,
            },
            format!("{} gate", p.name),
        ));
    }
    for t in toks(&[1024]) {
        v.push(BenchShape::new(
            OpKind::MoePermute,
            dt,
            ShapeKind::Permute {
                tokens: t,
                num_experts: p.num_experts,
                topk: p.topk,
                hidden: h,
            },
            p.name,
        ));
        if want(OpKind::Swiglu) {
            v.push(BenchShape::new(
                OpKind::Swiglu,
                dt,
                ShapeKind::Swiglu {
                    rows: rows_of(t, p.topk)?,
                    width: i,
                    limit: p.swiglu_limit,
                },
                p.name,
            ));
        }
        v.push(BenchShape::new(
            OpKind::MoeCombine,
            dt,
            ShapeKind::Combine {
                tokens: t,
                topk: p.topk,
                hidden: h,
            },
            p.name,
        ));
    }
    if let Some(en) = p.engram {
        for t in toks(&[4096]) {
            v.push(BenchShape::new(
                OpKind::EngramHash,
                DType::I64,
                ShapeKind::Hash { tokens: t },
                p.name,
            ));
            let c = (en.max_order - 1) * en.heads;
            let mut s = gather_shape(1 << 22, en.row_dim, t, c, dt, p.name, mem_budget);
            s.notes.push(format!(
                "the real table has {} rows of {} fp8 bytes; a bf16 table of random rows stands in",
                v41_flash::ROWS[0],
                en.row_dim + en.row_dim / 32
            ));
            v.push(s);
        }
    }
    v.retain(|s| want(s.op));
    Ok(v)
}

/// One result row of `moehal bench` (one JSON object each).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    /// Op name.
    pub op: String,
    /// Backend name.
    pub backend: String,
    /// Shape string.
    pub shape: String,
    /// Where the shape comes from.
    pub origin: String,
    /// dtype.
    pub dtype: String,
    /// Median seconds per run.
    pub seconds: f64,
    /// Runs timed.
    pub reps: usize,
    /// GFLOP/s (grouped GEMM).
    pub gflops: Option<f64>,
    /// GB/s of the op's defining bytes (see [`BenchShape::bytes`]).
    pub gbs: Option<f64>,
    /// Reference seconds / these seconds, both measured in this run (`None` when the reference
    /// was skipped on this shape).
    pub ratio_vs_reference: Option<f64>,
    /// §6 rows: moehal's bf16 seconds on the same shape and backend / these seconds, both measured
    /// in this run (`None` elsewhere, or when the bf16 row has no timing).
    pub ratio_vs_bf16: Option<f64>,
    /// Notes: scaling, skips, errors.
    pub note: String,
    /// Whether [`MAX_TIMED_RUNS`] cut the runs the budget allowed ([`Measurement::capped`]);
    /// `moehal bench` says how many rows it cut, under the table (not in the JSON).
    #[serde(skip)]
    pub capped: bool,
}

/// Run every shape on every backend given (the reference, when among them, is timed first on
/// each shape unless its estimate exceeds `ref_limit_s`; then it is skipped and the row says so).
/// `progress(i, n, label)` is called before each (shape, backend). Backends that fail or do not
/// support a shape get a row with the reason and no timing.
///
/// # Errors
/// Host allocation failures (device and op errors become rows).
pub fn run_table(
    shapes: &[BenchShape],
    backends: &[&dyn Backend],
    seed: u64,
    ref_limit_s: f64,
    budget_s: f64,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Vec<BenchRow>> {
    let has_ref = backends.iter().any(|b| b.name() == "reference");
    let rates = if has_ref {
        calibrate_reference()?
    } else {
        RefRates([1e9; 3])
    };
    let mut rows = Vec::new();
    // The shape index of each row (for the §6 rows' bf16 ratios).
    let mut row_shape = Vec::new();
    let total = shapes.len() * backends.len();
    let mut idx = 0;
    for (si, s) in shapes.iter().enumerate() {
        // Cold decode is compared with a DRAM read measured now, in the same run (2 threads, a
        // buffer of 16 x L3), before its inputs are made (the two are not held at once).
        let dram = match s.kind {
            ShapeKind::DecodeCold { l3, .. } => Some((dram_read_gbs(dram_read_bytes(l3), 2), dram_read_bytes(l3))),
            _ => None,
        };
        let data = s.host_data(seed)?;
        let mut ref_secs = None;
        // Reference first so the ratio is known for the others.
        let mut order: Vec<&dyn Backend> = backends.iter().copied().filter(|b| b.name() == "reference").collect();
        order.extend(backends.iter().copied().filter(|b| b.name() != "reference"));
        for b in order {
            progress(
                idx,
                total,
                &format!("{} {} {} on {}", s.op, s.shape(), s.dtype, b.name()),
            );
            idx += 1;
            let mut row = BenchRow {
                op: s.op.name().into(),
                backend: b.name().into(),
                shape: s.shape(),
                origin: s.origin.clone(),
                dtype: s.dtype_label(),
                seconds: f64::NAN,
                reps: 0,
                gflops: None,
                gbs: None,
                ratio_vs_reference: None,
                ratio_vs_bf16: None,
                note: s.notes.join("; "),
                capped: false,
            };
            let add_note = |row: &mut BenchRow, n: String| {
                if !row.note.is_empty() {
                    row.note.push_str("; ");
                }
                row.note.push_str(&n);
            };
            if b.name() == "reference" {
                let est = s.reference_estimate(&rates);
                if est > ref_limit_s {
                    add_note(
                        &mut row,
                        format!("reference skipped: estimated {est:.1} s > {ref_limit_s} s"),
                    );
                    rows.push(row);
                    row_shape.push(si);
                    continue;
                }
            }
            let result = s.prepare(b, &data).and_then(|mut p| measure(&mut p, budget_s));
            match result {
                Ok(m) => {
                    row.seconds = m.median;
                    row.reps = m.reps;
                    row.capped = m.capped;
                    row.gflops = s.flops().map(|f| f / m.median / 1e9);
                    row.gbs = Some(s.bytes() / m.median / 1e9);
                    if let (Some((d, db)), Some(g)) = (dram, row.gbs) {
                        add_note(
                            &mut row,
                            format!(
                                "same-run DRAM read (2 threads, {}): {d:.1} GB/s; this run {:.0}% of it",
                                human_bytes(db as f64),
                                100.0 * g / d
                            ),
                        );
                    }
                    if b.name() == "reference" {
                        ref_secs = Some(m.median);
                        row.ratio_vs_reference = Some(1.0);
                    } else {
                        row.ratio_vs_reference = ref_secs.map(|r| r / m.median);
                    }
                }
                Err(Error::Unsupported { msg, .. }) => add_note(&mut row, format!("unsupported: {msg}")),
                Err(e) => add_note(&mut row, format!("error: {e}")),
            }
            rows.push(row);
            row_shape.push(si);
        }
    }
    compare_with_bf16(shapes, &row_shape, &mut rows);
    Ok(rows)
}

/// For each quantized GEMM row: the ratio to moehal's bf16 row of the same shape and backend in
/// this run, and a note with the bytes streamed by both.
fn compare_with_bf16(shapes: &[BenchShape], row_shape: &[usize], rows: &mut [BenchRow]) {
    for i in 0..rows.len() {
        let q = &shapes[row_shape[i]];
        if !matches!(q.kind, ShapeKind::QGemm { .. }) {
            continue;
        }
        let Some(j) = (0..rows.len()).find(|&j| {
            rows[j].backend == rows[i].backend && crate::bench_quant::is_baseline(&q.kind, &shapes[row_shape[j]])
        }) else {
            continue;
        };
        let base = &shapes[row_shape[j]];
        let (bs, qs) = (rows[j].seconds, rows[i].seconds);
        if bs.is_finite() && qs.is_finite() {
            rows[i].ratio_vs_bf16 = Some(bs / qs);
        }
        let note = format!(
            "streams {} of weights + scales per run, bf16 {} ({:.2}x fewer)",
            crate::pipeline::human_bytes(q.bytes()),
            crate::pipeline::human_bytes(base.bytes()),
            base.bytes() / q.bytes()
        );
        let r = &mut rows[i];
        if !r.note.is_empty() {
            r.note.push_str("; ");
        }
        r.note.push_str(&note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moehal_core::ops::WeightFormat;
    use moehal_core::quant::ScaleFormat;

    #[test]
    fn decode_cold_rotates_over_disjoint_expert_sets() {
        let shape = BenchShape::new(
            OpKind::GroupedGemm,
            DType::BF16,
            ShapeKind::DecodeCold {
                num_experts: 24,
                k: 64,
                n: 32,
                topk: 8,
                sets: 3,
                l3: 1 << 20,
            },
            "test",
        );
        let data = shape.host_data(7).unwrap();
        // x, w, then one group_end buffer per set.
        assert_eq!(data.bufs.len(), 2 + 3);
        let mut seen = vec![0usize; 24];
        for b in &data.bufs[2..] {
            let ge: Vec<i64> = moehal_core::host::bytes(b, "t", "ge")
                .unwrap()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(*ge.last().unwrap(), 8, "each set routes the token to 8 experts");
            let mut prev = 0;
            for (e, &v) in ge.iter().enumerate() {
                assert!(v - prev == 0 || v - prev == 1);
                seen[e] += (v - prev) as usize;
                prev = v;
            }
        }
        assert!(
            seen.iter().all(|&c| c == 1),
            "sets are disjoint and cover the experts: {seen:?}"
        );
        let be = moehal_core::Reference::new();
        let mut p = shape.prepare(&be, &data).unwrap();
        for _ in 0..4 {
            p.run().unwrap();
        }
        assert_eq!(shape.bytes(), (8 * 32 * 64 * 2) as f64);
        // 4 x 32 MiB = 128 MiB of 6 MiB experts: 22, rounded up to 3 sets of 8.
        assert!(decode_cold_shape(1e12, 32 << 20).shape().contains("E24 "));
        assert!(dram_read_gbs(1 << 16, 2) > 0.0);
    }

    #[test]
    fn cold_decode_rotates_over_at_least_four_times_the_l3() {
        assert_eq!(parse_cache_size("32768K\n"), Some(32 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        for bad in ["", "K", "0K", "abc", "-1K", "12Q"] {
            assert_eq!(parse_cache_size(bad), None, "{bad:?}");
        }
        let (l3, from) = l3_cache();
        assert!(l3 >= 1 << 10 && (from == "sysfs" || l3 == 32 << 20), "{l3} {from}");
        let per = 2048 * 1536 * 2;
        for l3 in [1 << 20, 8 << 20, 32 << 20, 96 << 20, 160 << 20, 256 << 20] {
            let s = decode_cold_shape(1e12, l3);
            let ShapeKind::DecodeCold {
                num_experts: experts,
                topk,
                sets,
                ..
            } = s.kind
            else {
                panic!("{:?}", s.kind)
            };
            assert_eq!((experts % 8, sets * topk), (0, experts), "{l3}");
            assert!(sets >= 2, "{l3}");
            let rot = experts * per;
            if 4 * l3 <= 128 * per {
                assert!(rot >= 4 * l3, "{l3}: {rot}");
                // The fewest sets that do it (or the minimum of 2 sets).
                assert!(experts == 16 || (experts - 8) * per < 4 * l3, "{l3}: {experts}");
                assert!(!s.notes.iter().any(|n| n.contains("not fully cold")), "{:?}", s.notes);
            } else {
                assert_eq!(experts, 128);
                assert!(s.notes.iter().any(|n| n.contains("not fully cold")), "{:?}", s.notes);
            }
            // The DRAM read streams far more than the L3 (16x, within 256 MiB ..= 1 GiB).
            let d = dram_read_bytes(l3);
            assert!(
                (256 << 20..=1 << 30).contains(&d) && (d >= 16 * l3 || d == 1 << 30),
                "{l3}: {d}"
            );
        }
        // A memory budget below 4 x L3 keeps 2 sets and says the case is not cold.
        let s = decode_cold_shape(50e6, 32 << 20);
        assert!(s.shape().contains("E16 "), "{}", s.shape());
        assert!(s.notes.iter().any(|n| n.contains("not fully cold")), "{:?}", s.notes);
    }

    #[test]
    fn quant_shapes_run_on_the_reference_and_compare_with_their_bf16_rows() {
        let be = moehal_core::Reference::new();
        let all = default_shapes(None, 1e12).unwrap();
        let q: Vec<&BenchShape> = all
            .iter()
            .filter(|s| matches!(s.kind, ShapeKind::QGemm { .. }))
            .collect();
        // 2 models x 4 pairings x (prefill + cold decode), each with a bf16 baseline among the shapes.
        assert_eq!(q.len(), 16);
        for s in &q {
            assert!(
                all.iter().any(|b| crate::bench_quant::is_baseline(&s.kind, b)),
                "no bf16 baseline for {} {}",
                s.shape(),
                s.dtype_label()
            );
        }
        // The §6 byte target: mxfp4 streams >= 3.5x fewer bytes than bf16 (weights + scales).
        let mx = q
            .iter()
            .find(|s| {
                matches!(
                    s.kind,
                    ShapeKind::QGemm {
                        w: WeightFormat::Mxfp4,
                        sets: Some(_),
                        k: 2048,
                        ..
                    }
                )
            })
            .unwrap();
        assert!(mx.notes.iter().any(|n| n.contains("rotates over")));
        assert!(decode_cold_shape(1e12, 32 << 20).bytes() / mx.bytes() >= 3.5);
        for op in [OpKind::QuantizeFp8, OpKind::QuantizeInt8] {
            assert!(all.iter().any(|s| s.op == op), "no {op} shape");
        }
        // Small shapes of every pairing, prefill and cold, run on the reference.
        let mut small = Vec::new();
        for s in &q {
            let ShapeKind::QGemm { w, x, sets, .. } = s.kind else {
                unreachable!()
            };
            small.push(BenchShape::new(
                OpKind::GroupedGemm,
                s.dtype,
                ShapeKind::QGemm {
                    w,
                    x,
                    num_experts: 6,
                    k: 160,
                    n: 48,
                    tokens: if sets.is_some() { 1 } else { 5 },
                    topk: 2,
                    sets: sets.map(|_| 3),
                },
                "test",
            ));
        }
        small.push(BenchShape::new(
            OpKind::GroupedGemm,
            DType::BF16,
            ShapeKind::Gemm {
                num_experts: 6,
                k: 160,
                n: 48,
                tokens: 5,
                topk: 2,
            },
            "test",
        ));
        for (op, scale) in [
            (OpKind::QuantizeFp8, Some(ScaleFormat::Ue8m0)),
            (OpKind::QuantizeFp8, Some(ScaleFormat::F32)),
            (OpKind::QuantizeInt8, None),
        ] {
            small.push(BenchShape::new(
                op,
                DType::BF16,
                ShapeKind::Quantize { scale, rows: 3, k: 200 },
                "test",
            ));
        }
        let mut rows = Vec::new();
        let mut row_shape = Vec::new();
        for (i, s) in small.iter().enumerate() {
            let data = s.host_data(9).unwrap();
            let mut p = s.prepare(&be, &data).unwrap();
            let m = measure(&mut p, 0.0).unwrap();
            rows.push(BenchRow {
                op: s.op.name().into(),
                backend: "reference".into(),
                shape: s.shape(),
                origin: s.origin.clone(),
                dtype: s.dtype_label(),
                seconds: m.median,
                reps: m.reps,
                gflops: None,
                gbs: None,
                ratio_vs_reference: None,
                ratio_vs_bf16: None,
                note: String::new(),
                capped: m.capped,
            });
            row_shape.push(i);
        }
        compare_with_bf16(&small, &row_shape, &mut rows);
        // Prefill rows find the bf16 row of their shape; cold rows have none among these shapes.
        for (r, s) in rows.iter().zip(&small) {
            match s.kind {
                ShapeKind::QGemm { sets: None, .. } => {
                    assert!(r.ratio_vs_bf16.is_some_and(|x| x > 0.0), "{r:?}");
                    assert!(r.note.contains("fewer"), "{r:?}");
                }
                _ => assert!(r.ratio_vs_bf16.is_none(), "{r:?}"),
            }
        }
        assert!(rows.iter().any(|r| r.dtype == "mxfp4 x bf16 -> bf16"), "{rows:?}");
    }

    #[test]
    fn every_default_shape_runs_on_the_reference_when_scaled_down() {
        let be = moehal_core::Reference::new();
        let shapes = default_shapes(Some(&[2]), 1e6).unwrap();
        assert!(shapes.iter().any(|s| s.op == OpKind::GroupedGemm));
        // GEMMs (float and quantized) are too slow on the debug reference here; quant_shapes_run_on_the_reference runs small ones.
        for s in shapes
            .iter()
            .filter(|s| !matches!(s.kind, ShapeKind::Gemm { .. } | ShapeKind::QGemm { .. }))
        {
            let data = s.host_data(5).unwrap();
            let mut p = s.prepare(&be, &data).unwrap();
            p.run().unwrap();
        }
        let g = shapes.iter().find(|s| s.op == OpKind::GatherRows).unwrap();
        assert!(g.notes.iter().any(|n| n.contains("scaled")), "{:?}", g.notes);
        let l = shapes.iter().find(|s| s.op == OpKind::EngramLookup).unwrap();
        assert!(l.notes.iter().any(|n| n.contains("scaled")), "{:?}", l.notes);
        let table = l.input_sizes().unwrap()[0];
        assert!(table as f64 <= 1e6, "{table}");
    }

    #[test]
    fn lookup_shape_table_is_about_2_pow_22_rows_and_matches_its_layer() {
        let shapes = default_shapes(None, 1e12).unwrap();
        let l = shapes.iter().find(|s| s.op == OpKind::EngramLookup).unwrap();
        assert!(l.notes.is_empty(), "{:?}", l.notes);
        let ShapeKind::Lookup {
            vocab_n,
            table_rows,
            dim,
            tokens,
        } = l.kind
        else {
            panic!("lookup shape kind: {:?}", l.kind);
        };
        assert_eq!((vocab_n, dim, tokens), (1 << 19, 256, 4096));
        // 8 distinct primes >= 2^19: R >= 2^22, and the prime gaps there are far below 1000.
        assert!((1 << 22..(1 << 22) + 8 * 1000).contains(&table_rows), "{table_rows}");
        let layer = lookup_layer(vocab_n).unwrap();
        assert_eq!(layer.rows(), table_rows as u64);
        assert_eq!(layer.columns(), LOOKUP_COLUMNS);
        assert_eq!(l.bytes(), (4096 * 8 * 256 * 2) as f64);
    }

    #[test]
    fn lookup_data_with_a_mismatched_table_is_rejected() {
        let s = BenchShape::new(
            OpKind::EngramLookup,
            DType::BF16,
            ShapeKind::Lookup {
                vocab_n: 128,
                table_rows: 1000,
                dim: 32,
                tokens: 4,
            },
            "t",
        );
        assert!(s.host_data(1).is_err());
    }

    #[test]
    fn gemm_groups_cover_all_rows() {
        let s = BenchShape::new(
            OpKind::GroupedGemm,
            DType::BF16,
            ShapeKind::Gemm {
                num_experts: 16,
                k: 64,
                n: 32,
                tokens: 10,
                topk: 4,
            },
            "t",
        );
        let data = s.host_data(9).unwrap();
        let ge = moehal_core::host::bytes(&data.bufs[2], "t", "t").unwrap();
        let last = i64::from_le_bytes(ge[ge.len() - 8..].try_into().unwrap());
        assert_eq!(last, 40);
        let be = moehal_core::Reference::new();
        let rows = run_table(&[s], &[&be], 1, 5.0, 0.01, &mut |_, _, _| {}).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].ratio_vs_reference, Some(1.0));
        assert!(rows[0].gflops.unwrap() > 0.0);
    }

    #[test]
    fn preset_shapes_scale_experts() {
        let p = crate::presets::preset("deepseek-v3").unwrap();
        let shapes = preset_shapes(p, Some(&[1]), 1e9).unwrap();
        let g = &shapes[0];
        match g.kind {
            ShapeKind::Gemm {
                num_experts: experts, ..
            } => assert!((8..256).contains(&experts)),
            _ => panic!("first shape is a gemm"),
        }
        assert!(!g.notes.is_empty());
    }
}
