//! `moehal moe`: one full MoE layer forward of a preset (see [`moehal::pipeline::moe`]) on a
//! backend and on the reference: time per stage, and the relative error of the output against
//! the reference, which must be within the OPS.md tolerance of the dtype (exit status 1 if not).
//! Presets too big for memory are scaled by expert count, and the output says so.

use std::process::ExitCode;

use anyhow::anyhow;
use moehal_core::{Backend, DType};

use super::{choose_backend, progress_bytes, CliResult, Table};
use moehal::pipeline::moe::{
    expert_weight_bytes, fit_experts_for, forward, forward_bytes_per_token, input_bytes_per_token,
    plan_checkpoint_layer, shipped_formats, CheckpointPlan, MoeInputs, MoeWeights,
};
use moehal::pipeline::{available_memory, human_bytes, human_seconds, is_host_backend, rel_error, tolerance};

/// Options of `moehal moe`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Model preset (deepseek-v3, deepseek-v4-flash, deepseek-v4.1-flash, qwen3-30b-a3b,
    /// qwen3-235b-a22b, mixtral-8x7b).
    #[arg(long)]
    preset: String,
    /// Tokens T (at least 1).
    #[arg(long, value_parser = super::count_at_least_1, allow_negative_numbers = true)]
    tokens: usize,
    /// Backend (default: the first available non-reference backend, else the reference).
    #[arg(long)]
    backend: Option<String>,
    /// Activation and weight dtype.
    #[arg(long, default_value = "bf16", value_parser = super::float_dtype_parser())]
    dtype: DType,
    /// Seed of weights and inputs.
    #[arg(long, default_value_t = 1, value_parser = super::seed_parser, allow_negative_numbers = true)]
    seed: u64,
    /// Float expert weights (of --dtype) even for presets whose checkpoints ship quantized ones
    /// (deepseek-v4-flash: mxfp4 routed experts and an fp8_block shared expert; deepseek-v3:
    /// fp8_block), which otherwise run weight-only quantized (OPS.md §6) with --dtype activations.
    #[arg(long)]
    float_weights: bool,
    /// Divide hidden and expert widths by N (rounded up to multiples of 32), for quick runs.
    #[arg(long, value_parser = super::whole_at_least::<1>, allow_negative_numbers = true)]
    scale_widths: Option<usize>,
    /// Memory budget for the weights of one backend, in MiB (default: 4 GiB or less, from the
    /// memory available).
    #[arg(long, value_parser = super::whole_at_least::<1>, allow_negative_numbers = true)]
    budget_mib: Option<usize>,
    /// Run the reference on at most as many tokens as it is estimated to finish in this many
    /// seconds (all of them when it fits; else the first tokens, and the output says how many;
    /// finite, 0 or more).
    #[arg(
        long,
        default_value_t = 10.0,
        value_parser = super::seconds_limit,
        allow_negative_numbers = true,
        conflicts_with_all = ["ep", "ep_threads"]
    )]
    ref_limit: f64,
    /// Do not run the reference (the output is then not checked).
    #[arg(long, conflicts_with_all = ["ep", "ep_threads"])]
    no_reference: bool,
    /// Expert parallelism over MPI: run under `mpirun -n R` (needs the `mpi` feature); prints
    /// per-stage times with dispatch/combine bytes, and checks against the single-process layer.
    #[arg(long)]
    ep: bool,
    /// Expert parallelism with R ranks as threads of this process (loopback, no MPI).
    #[arg(
        long,
        value_name = "R",
        conflicts_with = "ep",
        value_parser = super::whole_at_least::<1>,
        allow_negative_numbers = true
    )]
    ep_threads: Option<usize>,
    /// With --ep: route every token into rank 0's experts (the other ranks receive nothing).
    #[arg(long, hide = true)]
    ep_skew: bool,
    /// With --ep: fail unless the output is bitwise equal to the single-process layer.
    #[arg(long, hide = true)]
    ep_bitwise: bool,
    /// Run this safetensors checkpoint's layer instead of seeded weights (DeepSeek layout:
    /// `layers.{L}.ffn.experts.{E}.w{1,2,3}.{weight,scale}`, optional `shared_experts`, and
    /// `gate.tid2eid` for a hash-routed layer); --preset gives top-k, scoring, scale and clamp, the
    /// checkpoint the widths and expert counts; with --ep / --ep-threads each rank loads its
    /// experts. Activations, logits and token ids are seeded. Not with --float-weights (the
    /// experts run in the formats the file stores). A preset that cannot route the file's
    /// experts (top-k over E; group limit: n_group not dividing E, top-k over topk_group * E /
    /// n_group) fails before any work with exit status 1: the file's expert count is data, like a
    /// wrong tensor shape, and the message names the preset's routing and the file's experts.
    #[arg(long)]
    weights: Option<std::path::PathBuf>,
    /// Layer L of --weights.
    #[arg(long, default_value_t = 0, requires = "weights", value_parser = super::whole_at_least::<0>, allow_negative_numbers = true)]
    layer: usize,
}

/// Bytes a run holds: `fixed` (the weights in host memory) plus `per_token` for every token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct MemoryNeed {
    /// Bytes independent of the token count (weights and scales, each host copy).
    pub fixed: u64,
    /// Bytes per token (inputs, activations, outputs: every buffer of the run).
    pub per_token: u64,
}

/// Issue 16's rule for impossible sizes, the one rule of every `moe` path (seeded, `--weights`,
/// `--ep-threads`, `--ep`): the run's bytes ([`MemoryNeed`]) must fit 90% of the memory available
/// (`available` bytes; the seeded weights are scaled to at most 60% of it beforehand, and the
/// output says so), else an error naming the largest token count that fits — never a silent
/// shrink, never an allocation abort.
pub(super) fn check_memory(tokens: usize, need: &MemoryNeed, available: u64) -> anyhow::Result<()> {
    let budget = available / 10 * 9;
    let room = budget.saturating_sub(need.fixed);
    let max_tokens = room / need.per_token.max(1);
    if tokens as u64 > max_tokens {
        let weights = if need.fixed > 0 {
            format!(" after {} of weights", human_bytes(need.fixed as f64))
        } else {
            String::new()
        };
        return Err(anyhow!(
            "--tokens {tokens}: the run needs ~{} per token ({} in all){weights}, more than the {} budget (90% of the {} available): {}",
            human_bytes(need.per_token as f64),
            human_bytes(need.per_token as f64 * tokens as f64),
            human_bytes(budget as f64),
            human_bytes(available as f64),
            if max_tokens == 0 {
                "no token fits: the weights alone take the budget (fewer experts fit a smaller \
                 --budget-mib; --scale-widths narrows them; a --weights file is loaded whole)"
                    .to_string()
            } else {
                format!("at most {max_tokens} tokens fit")
            }
        ));
    }
    Ok(())
}

/// Bytes per token of a single-process run: the inputs and the reference's copy of them (or of
/// their prefix), every buffer of one forward ([`forward_bytes_per_token`]; the forwards run one
/// after another), and the outputs and ids of the other forward held for the comparison.
pub(super) fn single_process_bytes_per_token(p: &moehal::presets::Preset, dtype: DType) -> u64 {
    2 * input_bytes_per_token(p, dtype) + forward_bytes_per_token(p, dtype) + p.hidden as u64 * 4 + p.topk as u64 * 4
}

/// What the reference runs on: how many of the tokens, the note that says why when not all of
/// them, and the phrase of the header line that names what the backend is compared with, so the
/// header never says "vs reference" when no reference ran (issue 16).
#[derive(Debug, Clone, PartialEq)]
struct RefPlan {
    /// Tokens the reference runs (the first ones); 0 when it does not run.
    tokens: usize,
    /// A `note:` line when the reference runs on fewer than all tokens.
    note: Option<String>,
    /// The header's comparison: `vs reference`, `vs reference on the first n of t tokens`, or why
    /// the reference was skipped.
    against: String,
}

/// How many of `t` tokens the reference runs: all if its estimated time is within `limit`
/// seconds, else the most that are (0 with `--no-reference` or when one token is over the
/// limit), with the note and the header phrase that say so. Tokens are independent in a MoE layer,
/// so the reference on the first `n` tokens checks the backend's first `n` output rows exactly as
/// a full run would.
fn reference_tokens(t: usize, est_per_token: f64, limit: f64, skip: bool) -> RefPlan {
    if skip {
        return RefPlan {
            tokens: 0,
            note: Some("reference not run (--no-reference): the output is not checked".into()),
            against: "reference not run (--no-reference)".into(),
        };
    }
    let est = est_per_token * t as f64;
    if est <= limit {
        return RefPlan {
            tokens: t,
            note: None,
            against: "vs reference".into(),
        };
    }
    let n = ((limit / est_per_token).floor() as usize).min(t);
    if n == 0 {
        let why = format!(
            "estimated {} for one token > --ref-limit {limit} s",
            human_seconds(est_per_token)
        );
        RefPlan {
            tokens: 0,
            note: Some(format!("reference not run: {why}; the output is not checked")),
            against: format!("reference skipped ({why})"),
        }
    } else {
        RefPlan {
            tokens: n,
            note: Some(format!(
                "reference on the first {n} of {t} tokens: all {t} estimated at {} > --ref-limit {limit} s ({} for {n}); tokens are independent, so their rows are checked as in a full run",
                human_seconds(est),
                human_seconds(est_per_token * n as f64)
            )),
            against: format!("vs reference on the first {n} of {t} tokens"),
        }
    }
}

/// [`reference_tokens`] for a run on `backend`; with `--backend reference --no-reference` (`same`
/// and `skip`) the reference runs once, as the backend, and nothing is compared (issue 16: it ran
/// twice, as if checked against itself, while the flag said it would not run), and the output says
/// so once.
///
/// `--ref-limit 0` allows no reference time, so it is the same rule as `--no-reference` on the
/// reference too (issue 16: the second run was estimated at 0 s and ran anyway).
fn reference_plan(t: usize, est_per_token: f64, limit: f64, skip: bool, same: bool) -> RefPlan {
    if same && (skip || limit <= 0.0) {
        let flag = if skip { "--no-reference" } else { "--ref-limit 0" };
        return RefPlan {
            tokens: 0,
            note: Some(format!(
                "--backend reference with {flag}: the reference runs once, as the backend, and its output is not checked (otherwise it is compared with a second run of itself)"
            )),
            against: format!("the reference ran once, as the backend ({flag})"),
        };
    }
    reference_tokens(t, est_per_token, limit, skip)
}

/// The reference's estimated seconds per token of one forward of `p`: the expert GEMMs'
/// multiply-adds (`(k + shared) * 3 * H * I` per token) at its measured rate for `dtype`
/// ([`moehal::bench::calibrate_reference`]), times 1.5 for shapes that leave the caches, times 4
/// for weight-only quantized weights (decoded per use).
fn reference_seconds_per_token(p: &moehal::presets::Preset, dtype: DType, quantized: bool) -> anyhow::Result<f64> {
    let rates = moehal::bench::calibrate_reference()?;
    let mads = ((p.topk + p.shared_experts) * 3 * p.hidden * p.expert_width) as f64;
    Ok(1.5 * mads / rates.get(dtype) * if quantized { 4.0 } else { 1.0 })
}

/// The first `n` tokens of `inp`.
fn input_prefix(inp: &MoeInputs, n: usize, p: &moehal::presets::Preset) -> MoeInputs {
    let row = inp.x.len() / inp.tokens.max(1);
    MoeInputs {
        tokens: n,
        x: inp.x[..n * row].to_vec(),
        logits: inp.logits[..n * p.num_experts].to_vec(),
        bias: inp.bias.clone(),
        hash: inp.hash.as_ref().map(|h| moehal::pipeline::moe::HashRoute {
            token_ids: h.token_ids[..n].to_vec(),
            tid2eid: h.tid2eid.clone(),
            vocab: h.vocab,
        }),
    }
}

/// The weight formats of `p`'s checkpoints (routed, shared) when `backend` runs both for `dtype`
/// activations, else `None` (float weights): with `--float-weights`, for presets that ship floats,
/// or — said in `notes` — for a backend without kernels for the shipped formats.
pub(super) fn weight_formats(
    backend: &dyn Backend,
    p: &moehal::presets::Preset,
    dtype: DType,
    float_weights: bool,
    notes: &mut Vec<String>,
) -> Option<(moehal_core::ops::WeightFormat, moehal_core::ops::WeightFormat)> {
    let (routed, shared) = if float_weights { None } else { shipped_formats(p) }?;
    for f in [routed, shared] {
        let desc = moehal_core::ops::QuantDesc::GroupedGemm {
            w: f,
            x: moehal_core::ops::ActFormat::Float(dtype),
            y: dtype,
        };
        if let moehal_core::Support::No { reason } = backend.supports_quant(&desc) {
            notes.push(format!(
                "{} does not run {} ({reason}): float weights instead of the shipped {routed}/{shared}",
                backend.name(),
                desc.variant()
            ));
            return None;
        }
    }
    Some((routed, shared))
}

mod ep;

pub(super) fn run(a: Args) -> CliResult {
    if a.weights.is_some() {
        reject_with_weights(&a)?;
    }
    if a.ep || a.ep_threads.is_some() {
        return ep::run(a);
    }
    let reg = super::discover()?;
    let backend = choose_backend(&reg, a.backend.as_deref())?;
    let reference = reg.open("reference")?;
    if let Some(path) = &a.weights {
        return run_checkpoint(&a, path, backend.as_ref(), reference.as_ref());
    }
    let same = backend.name() == "reference";
    let mut p = *super::preset_arg(&a.preset)?;
    let mut notes = Vec::new();
    if let Some(div) = a.scale_widths {
        let s = p.scaled_widths(div);
        notes.push(format!(
            "widths scaled by 1/{div} (--scale-widths): hidden {} -> {}, expert width {} -> {}",
            p.hidden, s.hidden, p.expert_width, s.expert_width
        ));
        p = s;
    }
    let host_copies = weight_host_copies(backend.as_ref(), same);
    let avail = available_memory().unwrap_or(8 << 30);
    let mut budget = match a.budget_mib {
        Some(m) => (m as u64).saturating_mul(1 << 20),
        None => (4u64 << 30).min(avail * 6 / 10 / host_copies.max(1)),
    };
    // Issue 16: a device backend holds its copy of the weights in device memory (DeviceInfo), so
    // the implied expert count is scaled to 60% of it as of host memory, and an explicit
    // --budget-mib over 90% of it is an error of this device (exit status 1, not a usage error:
    // the memory it reports, free memory where it can, is live state; the same flag may run on
    // another device or later).
    if let Some(mem) = device_memory(backend.as_ref()) {
        let dev = mem.bytes;
        if let Some(mib) = a.budget_mib {
            if budget > dev / 10 * 9 {
                anyhow::bail!(
                    "--budget-mib {mib}: more than 90% of the device memory {} reports ({mem})",
                    backend.name()
                );
            }
        } else if dev / 10 * 6 < budget {
            budget = dev / 10 * 6;
            notes.push(format!(
                "expert budget {}: 60% of the device memory {} reports ({mem})",
                human_bytes(budget as f64),
                backend.name()
            ));
        }
    }
    let quant = weight_formats(backend.as_ref(), &p, a.dtype, a.float_weights, &mut notes);
    // Quantized weights are budgeted at their packed bytes (codes + scales: mxfp4 ~0.53 per element).
    let (p, fit_notes) = fit_experts_for(&p, a.dtype, quant, budget);
    notes.extend(fit_notes);
    // Bytes uploaded per backend: packed codes + scales for quantized weights.
    let total = expert_weight_bytes(&p, a.dtype, quant);
    check_memory(
        a.tokens,
        &MemoryNeed {
            fixed: total * host_copies,
            per_token: single_process_bytes_per_token(&p, a.dtype),
        },
        avail,
    )?;
    check_device_memory(
        backend.as_ref(),
        a.tokens,
        total,
        single_process_bytes_per_token(&p, a.dtype),
        &p,
    )?;
    let t = a.tokens;
    let est_per_token = if a.no_reference || same {
        0.0
    } else {
        reference_seconds_per_token(&p, a.dtype, quant.is_some())?
    };
    let plan = reference_plan(t, est_per_token, a.ref_limit, a.no_reference, same);
    notes.extend(plan.note.clone());
    outln!(
        "preset {}: hidden {}, expert width {}, {} routed experts, top-{}, {} shared, scoring {}{}{}, scale {}",
        p.name,
        p.hidden,
        p.expert_width,
        p.num_experts,
        p.topk,
        p.shared_experts,
        p.scoring.name(),
        p.group.map_or_else(String::new, |g| format!(
            ", groups {}/{} {}",
            g.n_group,
            g.topk_group,
            g.score.name()
        )),
        p.swiglu_limit
            .map_or_else(String::new, |l| format!(", swiglu limit {l}")),
        p.routed_scaling_factor
    );
    for n in &notes {
        outln!("note: {n}");
    }
    print_run_line(t, a.dtype, total, backend.as_ref(), &plan, same);
    let targets = targets(backend.as_ref(), reference.as_ref(), same, plan.tokens);
    let pb = progress_bytes(total, "generating and uploading weights");
    let weights = match quant {
        Some((routed, shared)) => {
            outln!(
                "weights: routed experts {routed}, shared expert {shared} (weight-only, {} activations; --float-weights for float)",
                a.dtype
            );
            MoeWeights::upload_quant(&targets, &p, routed, shared, a.seed, &|done| pb.set_position(done))?
        }
        None => MoeWeights::upload(&targets, &p, a.dtype, a.seed, &|done| pb.set_position(done))?,
    };
    pb.finish_and_clear();
    let inputs = MoeInputs::generate(&p, t, a.dtype, a.seed)?;
    run_and_report(
        &p,
        a.dtype,
        backend.as_ref(),
        reference.as_ref(),
        &weights,
        &inputs,
        &plan,
    )
}

/// Flags that cannot apply to a checkpoint's layer are errors, never silently ignored: its
/// widths and expert count are the file's (no `--scale-widths`, no `--budget-mib` scaling), its
/// experts run in the formats it stores (no `--float-weights`).
fn reject_with_weights(a: &Args) -> anyhow::Result<()> {
    let why = if a.float_weights {
        "--float-weights: the checkpoint's experts run in the formats the file stores (weight-only quantized, --dtype activations)"
    } else if a.scale_widths.is_some() {
        "--scale-widths: the checkpoint's widths are the file's"
    } else if a.budget_mib.is_some() {
        "--budget-mib: the checkpoint's experts are all loaded (a layer is not scaled by expert count)"
    } else {
        return Ok(());
    };
    Err(super::usage(format!("--weights cannot be combined with {why}")))
}

/// The device memory a run on a device backend may use: what is free now where the backend
/// reports it ([`Backend::free_memory_bytes`]: CUDA `cuMemGetInfo`, ACL `aclrtGetMemInfo`), else the
/// total ([`moehal_core::DeviceInfo::memory_bytes`]), and which of the two it is. Issue 16: the
/// sizing rule used the total, so a device half full of another process's buffers passed it and
/// failed mid-upload.
#[derive(Debug, Clone, Copy)]
pub(super) struct DeviceMemory {
    /// The bytes the rule sizes against (free, else total).
    pub bytes: u64,
    /// The device's total bytes, where known.
    pub total: Option<u64>,
    /// Whether `bytes` is the free memory (`false`: the total; free memory not reported).
    pub free: bool,
}

impl std::fmt::Display for DeviceMemory {
    /// `2 GiB free of 4 GiB`, or `4 GiB in all (free memory not reported)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.free {
            write!(f, "{} free", human_bytes(self.bytes as f64))?;
            if let Some(t) = self.total {
                write!(f, " of {}", human_bytes(t as f64))?;
            }
            Ok(())
        } else {
            write!(
                f,
                "{} in all (free memory not reported)",
                human_bytes(self.bytes as f64)
            )
        }
    }
}

/// The device memory of a device backend ([`DeviceMemory`]), where it reports one (`None` for host
/// backends, whose memory is [`available_memory`]'s).
pub(super) fn device_memory(backend: &dyn Backend) -> Option<DeviceMemory> {
    if is_host_backend(backend) {
        return None;
    }
    let total = backend.device_info().memory_bytes;
    match backend.free_memory_bytes() {
        Some(free) => Some(DeviceMemory {
            bytes: free,
            total,
            free: true,
        }),
        None => total.map(|bytes| DeviceMemory {
            bytes,
            total,
            free: false,
        }),
    }
}

/// [`check_memory`] on a device backend's own memory ([`device_memory`]): its copy of the weights
/// (`weights` bytes) and its per-token buffers (at most `per_token`) must fit 90% of it. When the
/// smallest layer `moe` would plan (`p`: experts already scaled to fit) does not, the error says
/// what the weights need and what the device has, before anything is allocated (issue 16: a
/// 1000-byte Ascend emulator failed late, "out of memory allocating 805306368 bytes").
fn check_device_memory(
    backend: &dyn Backend,
    tokens: usize,
    weights: u64,
    per_token: u64,
    p: &moehal::presets::Preset,
) -> anyhow::Result<()> {
    let Some(mem) = device_memory(backend) else {
        return Ok(());
    };
    let dev = mem.bytes;
    if weights > dev / 10 * 9 {
        return Err(anyhow!(
            "{}'s device memory is {mem}: the weights of {} routed and {} shared experts (H {}, I {}; top-{}) need {}, more than 90% of it; nothing of this layer fits there (another backend; for a preset's seeded weights, --scale-widths narrows the experts)",
            backend.name(),
            p.num_experts,
            p.shared_experts,
            p.hidden,
            p.expert_width,
            p.topk,
            human_bytes(weights as f64)
        ));
    }
    check_memory(
        tokens,
        &MemoryNeed {
            fixed: weights,
            per_token,
        },
        dev,
    )
    .map_err(|e| anyhow!("on {}'s device memory ({mem}): {e}", backend.name()))
}

/// Host-memory copies of the weights a single-process run holds: the reference's, plus the
/// backend's if it lives in host memory (one when the backend is the reference).
fn weight_host_copies(backend: &dyn Backend, same: bool) -> u64 {
    if !same && is_host_backend(backend) {
        2
    } else {
        1
    }
}

/// The backends that get weights: the backend, and the reference when it runs on any token.
fn targets<'b>(backend: &'b dyn Backend, reference: &'b dyn Backend, same: bool, ref_t: usize) -> Vec<&'b dyn Backend> {
    if same {
        vec![reference]
    } else if ref_t == 0 {
        vec![backend]
    } else {
        vec![backend, reference]
    }
}

/// The `tokens ..., dtype ..., weights ... per backend, backend ..., vs ...` line.
fn print_run_line(t: usize, dtype: DType, weight_bytes: u64, backend: &dyn Backend, plan: &RefPlan, same: bool) {
    outln!(
        "tokens {t}, dtype {dtype}, weights {} per backend, backend {}, {}{}",
        human_bytes(weight_bytes as f64),
        backend.name(),
        plan.against,
        if same && plan.tokens > 0 {
            " (the reference against itself: a determinism check)"
        } else {
            ""
        }
    );
}

/// Run the layer on `backend` (a warm-up, then the timed forward) and on the reference for the
/// tokens `plan` says, print the stage table and the verdict (relative error of the checked rows
/// within the OPS.md tolerance of `dtype`; exit status 1 if not). `weights` are in the order of
/// [`targets`]. Shared by the seeded and the checkpoint layer.
fn run_and_report(
    p: &moehal::presets::Preset,
    dtype: DType,
    backend: &dyn Backend,
    reference: &dyn Backend,
    weights: &[MoeWeights],
    inputs: &MoeInputs,
    plan: &RefPlan,
) -> CliResult {
    let same = backend.name() == "reference";
    let (t, ref_t) = (inputs.tokens, plan.tokens);
    let pb = super::spinner(format!("forward on {}", backend.name()));
    if !same {
        // Warm-up: one-time costs (kernel compilation, first-touch) stay out of the stage times.
        forward(backend, p, dtype, &weights[0], inputs)?;
    }
    let got = forward(backend, p, dtype, &weights[0], inputs)?;
    if ref_t == 0 {
        pb.finish_and_clear();
        return report_unchecked(&got, &backend_name_label(backend), t, p.hidden, &plan.against);
    }
    pb.set_message("forward on the reference");
    let ref_inputs = if ref_t < t {
        input_prefix(inputs, ref_t, p)
    } else {
        inputs.clone()
    };
    let want = forward(
        reference,
        p,
        dtype,
        weights.last().ok_or_else(|| anyhow!("no weights"))?,
        &ref_inputs,
    )?;
    pb.finish_and_clear();
    let ref_header = if ref_t < t {
        format!(">reference ({ref_t} tokens)")
    } else {
        ">reference".to_string()
    };

    let mut tab = Table::new(&["stage", &format!(">{}", backend_name_label(backend)), &ref_header]);
    for (g, w) in got.stages.iter().zip(&want.stages) {
        tab.row(vec![g.name.into(), human_seconds(g.seconds), human_seconds(w.seconds)]);
    }
    let sum = |s: &[moehal::pipeline::moe::Stage]| s.iter().map(|x| x.seconds).sum::<f64>();
    tab.row(vec![
        "total".into(),
        human_seconds(sum(&got.stages)),
        human_seconds(sum(&want.stages)),
    ]);
    out!("{}", tab.render());
    let got_ids = &got.ids[..want.ids.len().min(got.ids.len())];
    if got_ids != want.ids.as_slice() {
        let diff = got_ids.iter().zip(&want.ids).filter(|(x, y)| x != y).count();
        outln!(
            "note: {diff} of {} routing slots differ from the reference",
            want.ids.len()
        );
    }
    let checked = &got.out[..(ref_t * p.hidden).min(got.out.len())];
    let err = rel_error(checked, &want.out);
    let tol = tolerance(dtype);
    // A relative error over no finite values says nothing: say how many outputs are NaN (an all-NaN
    // checkpoint, e.g. E8M0 scales of 255, once read as an exact PASS with no word).
    let nans = moehal::pipeline::nan_count(&want.out);
    if nans > 0 {
        outln!(
            "note: {nans} of {} checked outputs are NaN in the reference (and in this backend's output, or the check fails); the error below is over the other {}",
            want.out.len(),
            want.out.len() - nans
        );
    }
    let rows = if ref_t < t {
        format!(", first {ref_t} rows")
    } else {
        String::new()
    };
    // Issue 16: a verdict over zero compared values is not a pass (an all-NaN layer read as
    // "relative error 0.000e0: PASS", exit 0). It is its own verdict, exit status 1.
    if let Some(why) = moehal::pipeline::nothing_compared(&want.out) {
        outln!(
            "output [{t}, {}]{rows}: NOT CHECKED: {why}; an error over no compared value is not a pass",
            p.hidden
        );
        return Ok(ExitCode::FAILURE);
    }
    let ok = err <= tol;
    outln!(
        "output [{t}, {}]{rows}: relative error vs reference {err:.3e} (tolerance {tol:.0e} for {dtype}): {}",
        p.hidden,
        if ok { "PASS" } else { "FAIL" }
    );
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The printed name of the backend (tagged when it is the emulator).
fn backend_name_label(b: &dyn Backend) -> String {
    super::backend_label(b)
}

/// The stage times of a forward that was not checked against the reference (exit status 0: there
/// is nothing to fail).
fn report_unchecked(got: &moehal::pipeline::moe::MoeOutput, label: &str, t: usize, h: usize, why: &str) -> CliResult {
    let mut tab = Table::new(&["stage", &format!(">{label}")]);
    for g in &got.stages {
        tab.row(vec![g.name.into(), human_seconds(g.seconds)]);
    }
    tab.row(vec![
        "total".into(),
        human_seconds(got.stages.iter().map(|x| x.seconds).sum::<f64>()),
    ]);
    out!("{}", tab.render());
    outln!("output [{t}, {h}]: not checked: {why}");
    Ok(ExitCode::SUCCESS)
}

/// `moehal moe --weights F --layer L`: the checkpoint's layer on `backend` and on the reference
/// (weights memory-mapped, uploaded to each once), hash-routed when it has `gate.tid2eid` (token ids
/// seeded uniform in `[0, V)`), run and reported as the seeded layer ([`run_and_report`]: the same
/// memory rule, `--ref-limit` / `--no-reference`, stage table and verdict).
fn run_checkpoint(a: &Args, path: &std::path::Path, backend: &dyn Backend, reference: &dyn Backend) -> CliResult {
    let base = super::preset_arg(&a.preset)?;
    let ck = moehal::checkpoint::Checkpoint::open(path)?;
    let layer = plan_checkpoint_layer(&ck, a.layer, base)?;
    layer.check_backend(backend, a.dtype)?;
    let same = backend.name() == "reference";
    let p = layer.preset;
    let total = layer.weight_bytes();
    check_memory(
        a.tokens,
        &MemoryNeed {
            fixed: total * weight_host_copies(backend, same),
            per_token: single_process_bytes_per_token(&p, a.dtype),
        },
        available_memory().unwrap_or(8 << 30),
    )?;
    check_device_memory(
        backend,
        a.tokens,
        total,
        single_process_bytes_per_token(&p, a.dtype),
        &p,
    )?;
    let t = a.tokens;
    let est_per_token = if a.no_reference || same {
        0.0
    } else {
        reference_seconds_per_token(&p, a.dtype, true)?
    };
    let plan = reference_plan(t, est_per_token, a.ref_limit, a.no_reference, same);
    outln!("{}", checkpoint_header(path, a.layer, &layer));
    if let Some(n) = &plan.note {
        outln!("note: {n}");
    }
    print_run_line(t, a.dtype, total, backend, &plan, same);
    let targets = targets(backend, reference, same, plan.tokens);
    let weights = layer.upload(&targets)?;
    let inputs = checkpoint_inputs(&p, layer.tid2eid.clone(), t, a.dtype, a.seed)?;
    run_and_report(&p, a.dtype, backend, reference, &weights, &inputs, &plan)
}

/// The first line of a checkpoint run: file, layer, widths, expert counts and formats, routing.
pub(super) fn checkpoint_header(path: &std::path::Path, layer_index: usize, layer: &CheckpointPlan<'_>) -> String {
    let p = &layer.preset;
    let (routed, shared) = layer.formats();
    format!(
        "checkpoint {} layer {}: hidden {}, expert width {}, {} routed experts ({routed}), {} shared{}, top-{}, {}",
        path.display(),
        layer_index,
        p.hidden,
        p.expert_width,
        p.num_experts,
        p.shared_experts,
        if p.shared_experts > 0 {
            format!(" ({shared})")
        } else {
            String::new()
        },
        p.topk,
        match &layer.tid2eid {
            Some((_, v)) => format!("hash-routed (tid2eid [{v}, {}])", p.topk),
            None => format!("gated ({})", p.scoring.name()),
        }
    )
}

/// Seeded inputs of a checkpoint's layer: activations and logits as [`MoeInputs::generate`], and
/// for a hash-routed layer (`tid2eid` `[V, k]` with V) token ids uniform in `[0, V)`.
pub(super) fn checkpoint_inputs(
    p: &moehal::presets::Preset,
    tid2eid: Option<(Vec<i32>, usize)>,
    tokens: usize,
    dtype: DType,
    seed: u64,
) -> anyhow::Result<MoeInputs> {
    let mut inputs = MoeInputs::generate(p, tokens, dtype, seed)?;
    if let Some((tid2eid, vocab)) = tid2eid {
        use rand::Rng;
        let mut rng = moehal_testkit::rng::seeded(moehal::pipeline::stream_seed(seed, 103));
        inputs.hash = Some(moehal::pipeline::moe::HashRoute {
            token_ids: (0..tokens).map(|_| rng.gen_range(0..vocab.max(1)) as i64).collect(),
            tid2eid,
            vocab,
        });
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_runs_all_tokens_within_the_limit_and_a_prefix_beyond() {
        let all = reference_tokens(64, 0.01, 10.0, false);
        assert_eq!((all.tokens, all.note, all.against.as_str()), (64, None, "vs reference"));
        let some = reference_tokens(64, 1.0, 10.0, false);
        assert_eq!(some.tokens, 10);
        assert!(some.note.unwrap().contains("first 10 of 64 tokens"));
        assert_eq!(some.against, "vs reference on the first 10 of 64 tokens");
        let none = reference_tokens(64, 20.0, 10.0, false);
        assert_eq!(none.tokens, 0);
        assert!(none.note.unwrap().contains("not checked"));
        // Skipped: the header says so, with the estimate and the limit, and never "vs reference".
        assert!(
            none.against.starts_with("reference skipped (estimated") && none.against.contains("> --ref-limit 10 s"),
            "{}",
            none.against
        );
        let off = reference_tokens(64, 0.01, 10.0, true);
        assert_eq!(off.tokens, 0);
        assert!(off.note.unwrap().contains("--no-reference"));
        assert!(!off.against.contains("vs reference"), "{}", off.against);
    }

    /// `--backend reference --no-reference`: one run, unchecked, said once; without
    /// `--no-reference` the reference is compared with itself on every token.
    #[test]
    fn the_reference_as_backend_with_no_reference_runs_once() {
        let once = reference_plan(8, 0.0, 10.0, true, true);
        assert_eq!(once.tokens, 0);
        assert!(once.note.unwrap().contains("runs once"));
        assert!(!once.against.contains("vs reference"), "{}", once.against);
        // --ref-limit 0 allows no reference time: the same rule (issue 16: it ran twice).
        let zero = reference_plan(8, 0.0, 0.0, false, true);
        assert_eq!(zero.tokens, 0);
        assert!(zero.note.unwrap().contains("--ref-limit 0"));
        let twice = reference_plan(8, 0.0, 10.0, false, true);
        assert_eq!((twice.tokens, twice.note), (8, None));
        // Another backend: --no-reference skips the reference as before.
        assert_eq!(
            reference_plan(8, 0.0, 10.0, true, false),
            reference_tokens(8, 0.0, 10.0, true)
        );
    }

    #[test]
    fn tokens_that_cannot_fit_are_an_error_naming_the_most_that_fit() {
        let need = MemoryNeed {
            fixed: 0,
            per_token: 1000,
        };
        assert!(check_memory(100, &need, 1_000_000).is_ok());
        // 90% of 24,721,120 bytes is 22,249,008: 22,249 tokens of 1000 bytes.
        let e = check_memory(1_000_000_000_000, &need, 24_721_120).unwrap_err();
        assert!(e.to_string().contains("at most 22249 tokens fit"), "{e}");
        assert!(check_memory(22_249, &need, 24_721_120).is_ok());
        assert!(check_memory(22_250, &need, 24_721_120).is_err());
        // The weights come off the budget first.
        let with_weights = MemoryNeed {
            fixed: 12_249_008,
            per_token: 1000,
        };
        let e = check_memory(10_001, &with_weights, 24_721_120).unwrap_err();
        assert!(e.to_string().contains("at most 10000 tokens fit"), "{e}");
        let e = check_memory(
            1,
            &MemoryNeed {
                fixed: 30_000_000,
                per_token: 1,
            },
            24_721_120,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("no token fits") && e.to_string().contains("--budget-mib"),
            "{e}"
        );
    }

    /// Every buffer counts: the per-token bytes grow with each width and count of the layer.
    #[test]
    fn per_token_bytes_grow_with_every_dimension() {
        let p = *moehal::presets::preset("deepseek-v3").unwrap();
        let base = single_process_bytes_per_token(&p, DType::BF16);
        for q in [
            moehal::presets::Preset {
                hidden: p.hidden + 1,
                ..p
            },
            moehal::presets::Preset {
                expert_width: p.expert_width + 1,
                ..p
            },
            moehal::presets::Preset {
                num_experts: p.num_experts + 1,
                ..p
            },
            moehal::presets::Preset { topk: p.topk + 1, ..p },
            moehal::presets::Preset {
                shared_experts: p.shared_experts + 1,
                ..p
            },
        ] {
            assert!(single_process_bytes_per_token(&q, DType::BF16) > base, "{q:?}");
        }
        assert!(single_process_bytes_per_token(&p, DType::F32) > base);
        // At least the permuted rows through gate_up, swiglu and down.
        let (h, i, k) = (p.hidden as u64, p.expert_width as u64, p.topk as u64);
        assert!(base >= k * (h + 3 * i + h) * 2);
    }
}
