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
use moehal_core::Backend;
use moehal_ep::{Comm, EpBytes, ExpertMap};

use super::super::{choose_backend, CliResult, Table};
use super::Args;
use moehal::pipeline::ep::{forward_ep, gather_to_root, rank_tokens, token_slice};
use moehal::pipeline::moe::{expert_weight_bytes, fit_experts_for, forward, MoeInputs, MoeWeights};
use moehal::pipeline::{human_bytes, human_seconds, rel_error, tolerance};
use moehal::Registry;

/// Entry: pick the communicator and run this process's rank(s).
pub(super) fn run(a: Args) -> CliResult {
    if let Some(n) = a.ep_threads {
        if n == 0 {
            return Err(anyhow!("--ep-threads must be at least 1"));
        }
        let comms = moehal_ep::LoopbackComm::group(n);
        let results: Vec<CliResult> = std::thread::scope(|s| {
            let hs: Vec<_> = comms
                .iter()
                .map(|c| {
                    let a = &a;
                    s.spawn(move || rank_main(c, a))
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
    run_mpi(&a)
}

#[cfg(feature = "mpi")]
fn run_mpi(a: &Args) -> CliResult {
    let comm = moehal_ep::mpi::MpiComm::init()?;
    match rank_main(&comm, a) {
        Ok(c) => Ok(c),
        Err(e) => {
            // Peers may be waiting in a collective: end the whole job.
            eprintln!("error: rank {}: {e:#}", comm.rank());
            comm.abort(1)
        }
    }
}

#[cfg(not(feature = "mpi"))]
fn run_mpi(_: &Args) -> CliResult {
    Err(anyhow!(
        "--ep needs MPI, and this moehal was built without the `mpi` feature (cargo build --features mpi, \
         with libopenmpi-dev installed); --ep-threads R runs R ranks as threads instead"
    ))
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

fn rank_main(comm: &dyn Comm, a: &Args) -> CliResult {
    let (me, r_n) = (comm.rank(), comm.size());
    let root = me == 0;
    if !a.dtype.is_float() {
        return Err(anyhow!("--dtype {} is not a float type (f32, bf16, f16)", a.dtype));
    }
    let reg = Registry::discover();
    let backend = choose_backend(&reg, a.backend.as_deref())?;
    let mut p = *moehal::presets::preset(&a.preset).map_err(anyhow::Error::msg)?;
    let mut notes = Vec::new();
    if let Some(div) = a.scale_widths {
        p = p.scaled_widths(div);
        notes.push(format!("widths scaled by 1/{div} (--scale-widths)"));
    }
    // The budget is the same on every rank (not from the memory each happens to see), so that all
    // ranks scale the preset alike; it covers the whole layer, which rank 0 also holds for the check.
    let budget = a.budget_mib.map_or(2u64 << 30, |m| m << 20);
    let quant = super::weight_formats(backend.as_ref(), &p, a.dtype, a.float_weights, &mut notes);
    let (p, fit_notes) = fit_experts_for(&p, a.dtype, quant, budget);
    notes.extend(fit_notes);
    let map = ExpertMap::contiguous(p.experts, r_n).map_err(|e| {
        anyhow!(
            "{e}: {} routed experts do not split evenly over {r_n} ranks; choose a rank count that divides {}",
            p.experts,
            p.experts
        )
    })?;
    let t = a.tokens;
    let mut inputs = MoeInputs::generate(&p, t, a.dtype, a.seed)?;
    if a.ep_skew {
        skew_to_rank0(&mut inputs, p.experts, &map);
        notes.push("--ep-skew: every token routed into rank 0's experts (the other ranks receive nothing)".into());
    }
    let (t0, t1) = rank_tokens(t, me, r_n);
    let mine = token_slice(&inputs, &p, t0, t1);
    let local = map.local_experts(me);
    let backends: [&dyn Backend; 1] = [backend.as_ref()];
    let weights = match quant {
        Some((routed, shared)) => {
            MoeWeights::upload_quant_experts(&backends, &p, routed, shared, a.seed, &local, &|_| {})?
        }
        None => MoeWeights::upload_experts(&backends, &p, a.dtype, a.seed, &local, &|_| {})?,
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

    outln!(
        "preset {}: hidden {}, expert width {}, {} routed experts, top-{}, {} shared, scoring {}",
        p.name,
        p.hidden,
        p.expert_width,
        p.experts,
        p.k,
        p.shared_experts,
        p.scoring.name()
    );
    for n in &notes {
        outln!("note: {n}");
    }
    outln!(
        "expert parallelism: {r_n} ranks over {} ({}), {} experts per rank, tokens {t}, dtype {}, backend {}, weights {}{}",
        comm.name(),
        if comm.name() == "loopback" { "threads of one process" } else { "one process per rank" },
        p.experts / r_n,
        a.dtype,
        backend.name(),
        match quant {
            Some((r, s)) => format!("{r}/{s}"),
            None => format!("{}", a.dtype),
        },
        format!(", {} per rank", human_bytes(expert_weight_bytes(&p, a.dtype, quant) as f64 / r_n as f64))
    );

    // Single process, the same layer (`moehal moe`'s forward) on the same backend, on rank 0.
    let full = match quant {
        Some((routed, shared)) => MoeWeights::upload_quant(&backends, &p, routed, shared, a.seed, &|_| {})?,
        None => MoeWeights::upload(&backends, &p, a.dtype, a.seed, &|_| {})?,
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
