//! `moehal moe --ep`: the MoE layer of a preset with expert parallelism (docs/EP.md).
//!
//! `mpirun -n R moehal moe --preset P --tokens T --ep` (build with `--features mpi`): each MPI
//! process is a rank holding `E/R` routed experts and tokens `[r·T/R, (r+1)·T/R)`; `--ep-threads R`
//! runs the same ranks as threads of one process over the loopback communicator (any build).
//! Rank 0 prints the per-stage times (its own and the slowest rank's), the rows and bytes each rank
//! moved in dispatch and combine, and compares the gathered output with the single-process layer
//! (`moehal moe` without `--ep`) on the same backend: bitwise, or within OPS.md's tolerance of
//! the dtype (exit status 1 otherwise; `--ep-bitwise` demands bitwise).

use std::process::ExitCode;

use anyhow::anyhow;
use moehal_core::{Backend, DType};
use moehal_ep::{Comm, EpBytes, ExpertMap};

use super::super::{choose_backend, CliResult, Table};
use super::Args;
use moehal::pipeline::ep::{ep_bytes_per_token, forward_ep, gather_to_root, rank_tokens, token_slice};
use moehal::pipeline::moe::{
    expert_weight_bytes, fit_experts_for, forward, input_bytes_per_token, plan_checkpoint_layer, CheckpointPlan,
    ExpertFormats, MoeInputs, MoeWeights,
};
use moehal::pipeline::{available_memory, human_bytes, human_seconds, is_host_backend, rel_error, tolerance};
use moehal::presets::Preset;

/// Entry: open the checkpoint (if any), pick the communicator, plan the layer once per process
/// (preset, formats, the memory rule) and run this process's rank(s).
pub(super) fn run(a: Args) -> CliResult {
    // A flag this build cannot honour is a usage error (exit status 2), found before the
    // checkpoint is opened or any backend probed.
    #[cfg(not(feature = "mpi"))]
    if a.ep {
        return Err(super::super::usage(
            "--ep: this moehal was built without the `mpi` feature, so it cannot run MPI ranks; build it with \
             `cargo build --features mpi` (needs libclang and libopenmpi-dev; docs/EP.md §2) and run it under \
             `mpirun -n R`, or use --ep-threads R to run R ranks as threads of one process",
        ));
    }
    let ck = a
        .weights
        .as_ref()
        .map(|path| moehal::checkpoint::Checkpoint::open(path))
        .transpose()?;
    if let Some(n) = a.ep_threads {
        if n == 0 {
            return Err(anyhow!("--ep-threads must be at least 1"));
        }
        // Planned before any thread starts, so every rank runs the same layer and a size that
        // cannot fit is one error, not ranks failing at different points of a collective.
        let plan = make_plan(&a, ck.as_ref(), n, true)?;
        let comms = moehal_ep::LoopbackComm::group(n);
        let results: Vec<CliResult> = std::thread::scope(|s| {
            let hs: Vec<_> = comms
                .iter()
                .map(|c| {
                    let (a, plan) = (&a, &plan);
                    s.spawn(move || rank_main(c, a, plan))
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a rank thread panicked"))))
                .collect()
        });
        // Rank 0 decides; any rank's error is reported.
        let mut code = ExitCode::SUCCESS;
        for (r, res) in results.into_iter().enumerate() {
            match res {
                Ok(c) if r == 0 => code = c,
                Ok(_) => {}
                Err(e) => return Err(e.context(format!("rank {r}"))),
            }
        }
        return Ok(code);
    }
    run_mpi(&a, ck.as_ref())
}

/// Where the experts come from.
enum Source<'c> {
    /// Seeded weights of the preset, in these formats (`None`: float of `--dtype`).
    Seeded(ExpertFormats),
    /// A checkpoint's layer (`--weights`): each rank uploads its experts from the map.
    Checkpoint(Box<CheckpointPlan<'c>>),
}

/// The layer every rank of this process runs, decided once: the preset (scaled, or the
/// checkpoint's widths and counts), the notes to print, where the weights come from.
struct Plan<'c> {
    p: Preset,
    notes: Vec<String>,
    source: Source<'c>,
}

impl Plan<'_> {
    /// The formats `(routed, shared)` of quantized weights, `None` for float weights.
    fn quant(&self) -> ExpertFormats {
        match &self.source {
            Source::Seeded(q) => *q,
            Source::Checkpoint(l) => Some(l.formats()),
        }
    }

    /// Bytes of the whole layer's weights on one backend, and of its shared experts alone.
    fn weight_bytes(&self, dtype: DType) -> (u64, u64) {
        match &self.source {
            Source::Seeded(q) => (
                expert_weight_bytes(&self.p, dtype, *q),
                expert_weight_bytes(
                    &Preset {
                        num_experts: 0,
                        ..self.p
                    },
                    dtype,
                    *q,
                ),
            ),
            Source::Checkpoint(l) => (l.weight_bytes(), l.shared_weight_bytes()),
        }
    }
}

/// Plan the layer of `ranks` ranks (`threads`: all of them threads of this process) and apply
/// `moe`'s memory rule ([`super::check_memory`]) to what this process holds: the weights (every
/// rank's slice, each with the shared experts, plus rank 0's whole layer for the check) when the
/// backend is in host memory; per token the inputs (generated by each rank of the process), every
/// buffer of the expert-parallel forward summed over the ranks ([`ep_bytes_per_token`]; on one MPI
/// rank a bound, as skewed routing may send it every row) and rank 0's single-process forward.
fn make_plan<'c>(
    a: &Args,
    ck: Option<&'c moehal::checkpoint::Checkpoint>,
    ranks: usize,
    threads: bool,
) -> anyhow::Result<Plan<'c>> {
    let reg = super::super::discover()?;
    let backend = choose_backend(&reg, a.backend.as_deref())?;
    let mut notes = Vec::new();
    let (p, source) = match ck {
        Some(ck) => {
            let base = super::super::preset_arg(&a.preset)?;
            let layer = plan_checkpoint_layer(ck, a.layer, base)?;
            layer.check_backend(backend.as_ref(), a.dtype)?;
            if a.ep_skew && layer.tid2eid.is_some() {
                return Err(super::super::usage(format!(
                    "--ep-skew cannot apply to layer {} of --weights: it is hash-routed (gate.tid2eid picks the experts, not the logits --ep-skew pushes)",
                    a.layer
                )));
            }
            (layer.preset, Source::Checkpoint(Box::new(layer)))
        }
        None => {
            let mut p = *super::super::preset_arg(&a.preset)?;
            if let Some(div) = a.scale_widths {
                p = p.scaled_widths(div);
                notes.push(format!("widths scaled by 1/{div} (--scale-widths)"));
            }
            // The budget is the same on every rank (not from the memory each happens to see), so that all
            // ranks scale the preset alike; it covers the whole layer, which rank 0 also holds for the check.
            let mut budget = a.budget_mib.map_or(2u64 << 30, |m| (m as u64).saturating_mul(1 << 20));
            // A device backend holds every rank's slice and rank 0's whole layer (two layers' worth)
            // in its own memory: the rule of the single-process path (issue 16), at half the share.
            if let Some(mem) = super::device_memory(backend.as_ref()) {
                let dev = mem.bytes;
                if let Some(mib) = a.budget_mib {
                    if budget > dev / 10 * 9 / 2 {
                        // An error of this device's (live) memory, exit status 1 (as in moe.rs).
                        anyhow::bail!(
                            "--budget-mib {mib}: the ranks' slices and rank 0's whole layer need twice it, more than 90% of the device memory {} reports ({mem})",
                            backend.name()
                        );
                    }
                } else if dev / 10 * 3 < budget {
                    budget = dev / 10 * 3;
                    notes.push(format!(
                        "expert budget {}: 30% of the device memory {} reports ({mem}; the ranks' slices and rank 0's whole layer: two copies)",
                        human_bytes(budget as f64),
                        backend.name()
                    ));
                }
            }
            let quant = super::weight_formats(backend.as_ref(), &p, a.dtype, a.float_weights, &mut notes);
            let (p, fit_notes) = fit_experts_for(&p, a.dtype, quant, budget);
            notes.extend(fit_notes);
            (p, Source::Seeded(quant))
        }
    };
    // The rank count is checked before anything is sized from it: a count that does not divide the
    // routed experts (or exceeds them) cannot run, and sizing per-rank copies from it overflowed.
    if ranks == 0 || ranks > p.num_experts || p.num_experts % ranks != 0 {
        let e = p.num_experts;
        let what = if ck.is_some() {
            format!("layer {} of --weights has {e} routed experts, which", a.layer)
        } else {
            match super::super::preset_arg(&a.preset) {
                // Issue 16: the scaled count once came with no word of where it came from.
                Ok(base) if base.num_experts != e => format!(
                    "{e} routed experts (preset {} has {}; {}; --budget-mib sets the budget, and --scale-widths N narrows \
                     the experts so that more of them fit it)",
                    base.name,
                    base.num_experts,
                    notes.join("; ")
                ),
                _ => format!("{e} routed experts of preset {}", p.name),
            }
        };
        let msg = format!(
            "{what} do not split evenly over {ranks} ranks; choose a rank count that divides {e} (at most {e})"
        );
        // With --ep-threads and a preset's seeded experts the rank count is a flag value bad for
        // the preset: a usage error (2). A checkpoint's expert count is data, like a tensor's shape:
        // exit status 1 (the rule of `--weights`' routing checks); so is an `mpirun -n` count.
        return Err(if threads && ck.is_none() {
            super::super::usage(format!("--ep-threads {ranks}: {msg}"))
        } else if threads {
            anyhow!("--ep-threads {ranks}: {msg}")
        } else {
            anyhow!(msg)
        });
    }
    let plan = Plan { p, notes, source };
    let (layer, shared) = plan.weight_bytes(a.dtype);
    // Every rank's slice (the threads share one process) and rank 0's whole layer for the check.
    let slices = if threads {
        layer + (ranks as u64 - 1) * shared
    } else {
        layer
    };
    let fixed = if is_host_backend(backend.as_ref()) {
        slices + layer
    } else {
        0
    };
    let copies = if threads { ranks as u64 } else { 1 };
    let per_token = copies * input_bytes_per_token(&p, a.dtype)
        + ep_bytes_per_token(&p, a.dtype)
        + super::single_process_bytes_per_token(&p, a.dtype);
    // A device backend: the same weights and per-token buffers must fit its own memory, checked
    // before anything is uploaded.
    super::check_device_memory(backend.as_ref(), a.tokens, slices + layer, per_token, &p)?;
    super::check_memory(
        a.tokens,
        &super::MemoryNeed { fixed, per_token },
        available_memory().unwrap_or(8 << 30),
    )?;
    Ok(plan)
}

#[cfg(feature = "mpi")]
fn run_mpi(a: &Args, ck: Option<&moehal::checkpoint::Checkpoint>) -> CliResult {
    let comm = moehal_ep::mpi::MpiComm::init()?;
    match make_plan(a, ck, comm.size(), false).and_then(|plan| rank_main(&comm, a, &plan)) {
        Ok(c) => Ok(c),
        Err(e) => {
            // Peers may be waiting in a collective: end the whole job.
            eprintln!("error: rank {}: {e:#}", comm.rank());
            comm.abort(1)
        }
    }
}

#[cfg(not(feature = "mpi"))]
fn run_mpi(_: &Args, _: Option<&moehal::checkpoint::Checkpoint>) -> CliResult {
    // Unreachable from the CLI: `run` refuses --ep in this build before anything else.
    Err(anyhow!("--ep needs the `mpi` feature"))
}

/// Stage seconds and bytes of one rank, as sent to rank 0.
struct RankReport {
    tokens: usize,
    local_rows: usize,
    stages: Vec<(String, f64)>,
    bytes: EpBytes,
}

impl RankReport {
    fn encode(&self) -> Vec<u8> {
        let b = &self.bytes;
        let mut v: Vec<u64> = vec![
            self.tokens as u64,
            self.local_rows as u64,
            b.rows_sent as u64,
            b.rows_received as u64,
            b.dispatch_sent,
            b.dispatch_received,
            b.combine_sent,
            b.combine_received,
            b.to_self,
        ];
        v.extend(self.stages.iter().map(|(_, s)| s.to_bits()));
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn decode(bytes: &[u8], names: &[String]) -> RankReport {
        let v: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        RankReport {
            tokens: at(0) as usize,
            local_rows: at(1) as usize,
            bytes: EpBytes {
                rows_sent: at(2) as usize,
                rows_received: at(3) as usize,
                dispatch_sent: at(4),
                dispatch_received: at(5),
                combine_sent: at(6),
                combine_received: at(7),
                to_self: at(8),
            },
            stages: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), f64::from_bits(at(9 + i))))
                .collect(),
        }
    }
}

/// Push every token's logits towards rank 0's experts (`--ep-skew`): each token's experts then all
/// live on rank 0, and the other ranks receive nothing. Applied to the inputs of both the EP and
/// the single-process run.
fn skew_to_rank0(inp: &mut MoeInputs, experts: usize, map: &ExpertMap) {
    let mine = map.local_experts(0);
    for t in 0..inp.tokens {
        for &e in &mine {
            inp.logits[t * experts + e] += 8.0;
        }
    }
}

fn rank_main(comm: &dyn Comm, a: &Args, plan: &Plan<'_>) -> CliResult {
    let (me, r_n) = (comm.rank(), comm.size());
    let root = me == 0;
    let reg = super::super::discover()?;
    let backend = choose_backend(&reg, a.backend.as_deref())?;
    let p = plan.p;
    let quant = plan.quant();
    let mut notes = plan.notes.clone();
    let map = ExpertMap::contiguous(p.num_experts, r_n).map_err(|e| {
        anyhow!(
            "{e}: {} routed experts do not split evenly over {r_n} ranks; choose a rank count that divides {}",
            p.num_experts,
            p.num_experts
        )
    })?;
    let t = a.tokens;
    let mut inputs = match &plan.source {
        Source::Seeded(_) => MoeInputs::generate(&p, t, a.dtype, a.seed)?,
        Source::Checkpoint(l) => super::checkpoint_inputs(&p, l.tid2eid.clone(), t, a.dtype, a.seed)?,
    };
    if a.ep_skew {
        skew_to_rank0(&mut inputs, p.num_experts, &map);
        notes.push("--ep-skew: every token routed into rank 0's experts (the other ranks receive nothing)".into());
    }
    let (t0, t1) = rank_tokens(t, me, r_n);
    let mine = token_slice(&inputs, &p, t0, t1);
    let local = map.local_experts(me);
    let backends: [&dyn Backend; 1] = [backend.as_ref()];
    let weights = match (&plan.source, quant) {
        (Source::Checkpoint(l), _) => l.upload_experts(&backends, &local)?,
        (Source::Seeded(_), Some((routed, shared))) => {
            MoeWeights::upload_quant_experts(&backends, &p, routed, shared, a.seed, &local, &|_| {})?
        }
        (Source::Seeded(_), None) => MoeWeights::upload_experts(&backends, &p, a.dtype, a.seed, &local, &|_| {})?,
    };
    let w = weights.first().ok_or_else(|| anyhow!("no weights"))?;
    // Warm-up (first-touch, thread pool), then the timed run.
    forward_ep(comm, backend.as_ref(), &p, a.dtype, &map, w, &mine)?;
    let got = forward_ep(comm, backend.as_ref(), &p, a.dtype, &map, w, &mine)?;
    let names: Vec<String> = got.stages.iter().map(|s| s.name.to_string()).collect();
    let report = RankReport {
        tokens: mine.tokens,
        local_rows: got.local_rows,
        stages: got.stages.iter().map(|s| (s.name.to_string(), s.seconds)).collect(),
        bytes: got.bytes,
    };
    let outs = gather_to_root(comm, &got.out.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;
    let reports = gather_to_root(comm, &report.encode())?;
    let (Some(outs), Some(reports)) = (outs, reports) else {
        return Ok(ExitCode::SUCCESS);
    };
    debug_assert!(root);
    let reports: Vec<RankReport> = reports.iter().map(|b| RankReport::decode(b, &names)).collect();
    let ep_out: Vec<f32> = outs
        .iter()
        .flat_map(|b| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();

    match (&plan.source, &a.weights) {
        (Source::Checkpoint(l), Some(path)) => outln!("{}", super::checkpoint_header(path, a.layer, l)),
        _ => outln!(
            "preset {}: hidden {}, expert width {}, {} routed experts, top-{}, {} shared, scoring {}",
            p.name,
            p.hidden,
            p.expert_width,
            p.num_experts,
            p.topk,
            p.shared_experts,
            p.scoring.name()
        ),
    }
    for n in &notes {
        outln!("note: {n}");
    }
    outln!(
        "expert parallelism: {r_n} ranks over {} ({}), {} experts per rank, tokens {t}, dtype {}, backend {}, weights {}{}",
        comm.name(),
        if comm.name() == "loopback" { "threads of one process" } else { "one process per rank" },
        p.num_experts / r_n,
        a.dtype,
        backend.name(),
        match quant {
            Some((r, s)) => format!("{r}/{s}"),
            None => format!("{}", a.dtype),
        },
        format!(", {} per rank", human_bytes(plan.weight_bytes(a.dtype).0 as f64 / r_n as f64))
    );

    // Single process, the same layer (`moehal moe`'s forward) on the same backend, on rank 0.
    let full = match (&plan.source, quant) {
        (Source::Checkpoint(l), _) => l.upload(&backends)?,
        (Source::Seeded(_), Some((routed, shared))) => {
            MoeWeights::upload_quant(&backends, &p, routed, shared, a.seed, &|_| {})?
        }
        (Source::Seeded(_), None) => MoeWeights::upload(&backends, &p, a.dtype, a.seed, &|_| {})?,
    };
    let fw = full.first().ok_or_else(|| anyhow!("no weights"))?;
    let want = forward(backend.as_ref(), &p, a.dtype, fw, &inputs)?;

    let mut tab = Table::new(&["stage", ">rank 0", ">slowest rank", ">single process"]);
    for (i, n) in names.iter().enumerate() {
        let slow = reports.iter().map(|r| r.stages[i].1).fold(0.0, f64::max);
        let single = match n.as_str() {
            "dispatch" => want.stages.iter().find(|s| s.name == "moe_permute"),
            "combine" => want.stages.iter().find(|s| s.name == "moe_combine"),
            other => want.stages.iter().find(|s| s.name == other),
        };
        tab.row(vec![
            match n.as_str() {
                "dispatch" => "dispatch (vs moe_permute)".into(),
                "combine" => "combine (vs moe_combine)".into(),
                _ => n.clone(),
            },
            human_seconds(reports[0].stages[i].1),
            human_seconds(slow),
            single.map_or_else(String::new, |s| human_seconds(s.seconds)),
        ]);
    }
    out!("{}", tab.render());
    let mut bt = Table::new(&[
        "rank",
        ">tokens",
        ">rows sent",
        ">rows recv",
        ">expert rows",
        ">dispatch sent",
        ">dispatch recv",
        ">combine sent",
        ">combine recv",
        ">to self",
    ]);
    for (r, rep) in reports.iter().enumerate() {
        let b = &rep.bytes;
        bt.row(vec![
            r.to_string(),
            rep.tokens.to_string(),
            b.rows_sent.to_string(),
            b.rows_received.to_string(),
            rep.local_rows.to_string(),
            human_bytes(b.dispatch_sent as f64),
            human_bytes(b.dispatch_received as f64),
            human_bytes(b.combine_sent as f64),
            human_bytes(b.combine_received as f64),
            human_bytes(b.to_self as f64),
        ]);
    }
    out!("{}", bt.render());
    let idle = reports.iter().filter(|r| r.local_rows == 0).count();
    if idle > 0 {
        outln!("{idle} of {r_n} ranks received no rows");
    }

    if ep_out.len() != want.out.len() {
        return Err(anyhow!(
            "gathered {} output values, the layer has {}",
            ep_out.len(),
            want.out.len()
        ));
    }
    let differ = ep_out
        .iter()
        .zip(&want.out)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    let err = rel_error(&ep_out, &want.out);
    let tol = tolerance(a.dtype);
    let ok = if a.ep_bitwise { differ == 0 } else { err <= tol };
    if differ == 0 {
        outln!(
            "output [{t}, {}]: bitwise equal to the single-process layer on {}: PASS",
            p.hidden,
            backend.name()
        );
    } else {
        outln!(
            "output [{t}, {}]: {differ} of {} values differ from the single-process layer on {} (its GEMM rows depend on the group size); relative error {err:.3e} (tolerance {tol:.0e} for {}{}): {}",
            p.hidden,
            ep_out.len(),
            backend.name(),
            a.dtype,
            if a.ep_bitwise { ", --ep-bitwise demands bitwise" } else { "" },
            if ok { "PASS" } else { "FAIL" }
        );
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
