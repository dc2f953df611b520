//! `moehal bench`: medians per op, shape and backend, with GFLOP/s or GB/s and the ratio to the
//! reference measured in the same run (the reference is skipped, and the row says so, on shapes
//! where it would take more than `--ref-limit` seconds).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use moehal_core::{Backend, OpKind};

use super::{progress, write_json, CliError, CliResult, Table};
use moehal::bench::{default_shapes, preset_shapes, run_table};
use moehal::pipeline::{available_memory, human_bytes, human_seconds};
use moehal::Registry;

/// Options of `moehal bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Bench only this backend (the reference still runs for the ratios).
    #[arg(long)]
    backend: Option<String>,
    /// Only this op (grouped_gemm, router_topk, moe_permute, swiglu, moe_combine, engram_hash,
    /// gather_rows, engram_lookup).
    #[arg(long)]
    op: Option<OpKind>,
    /// Shapes of this preset instead of the defaults (peers.py shapes).
    #[arg(long)]
    preset: Option<String>,
    /// Also write one JSON object per row to this file (created, or checked writable, before the
    /// run).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Token counts replacing the defaults of every op.
    #[arg(long, num_args = 1..)]
    tokens: Option<Vec<usize>>,
    /// Skip the reference on shapes estimated to take longer than this (seconds per run).
    #[arg(long, default_value_t = 5.0)]
    ref_limit: f64,
    /// Target seconds of timed runs per shape and backend (at least 3 runs; 2 if a run takes > 1 s).
    #[arg(long, default_value_t = 1.0)]
    budget: f64,
    /// Seed of the inputs.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
}

/// A `--json` output opened before the workload runs, so that a path that cannot be written fails
/// at once instead of after minutes of work; the JSON is written by [`JsonOut::write`] at the end.
/// An existing file is kept as it is until then; a file created here and never written (the run
/// failed) is removed when this is dropped.
pub(super) struct JsonOut {
    path: PathBuf,
    file: Option<File>,
    created: bool,
}

impl JsonOut {
    /// Open (creating if absent, not truncating yet) `path` for writing.
    ///
    /// # Errors
    /// A [`CliError`] naming the path and the reason (missing directory, permissions, a
    /// directory, ...).
    pub(super) fn open(path: &Path) -> Result<Self, CliError> {
        let created = !path.exists();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| CliError(format!("cannot write the --json output {}: {e}", path.display())))?;
        Ok(JsonOut {
            path: path.to_path_buf(),
            file: Some(file),
            created,
        })
    }

    /// Replace the file's contents with `value`, pretty-printed, and a newline.
    ///
    /// # Errors
    /// A [`CliError`] naming the path on a serialization or I/O error.
    pub(super) fn write(mut self, value: &serde_json::Value) -> Result<(), CliError> {
        drop(self.file.take());
        write_json(&self.path, value)
    }
}

impl Drop for JsonOut {
    fn drop(&mut self) {
        if self.file.take().is_some() && self.created {
            // Best effort: the run failed before writing; do not leave an empty file behind.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub(super) fn run(a: Args) -> CliResult {
    let json = a.json.as_deref().map(JsonOut::open).transpose()?;
    let reg = Registry::discover();
    let mut backends: Vec<Arc<dyn Backend>> = match &a.backend {
        Some(name) => vec![reg.open(name)?],
        None => reg.available().cloned().collect(),
    };
    if !backends.iter().any(|b| b.name() == "reference") {
        backends.insert(0, reg.open("reference")?);
    }
    for e in reg.entries() {
        if let Err(reason) = &e.status {
            outln!("skipped: {} unavailable ({reason})", e.name);
        }
    }
    // One shape's inputs live once in host memory (plus one copy per device backend).
    let avail = available_memory().unwrap_or(8 << 30) as f64;
    let budget = (avail * 0.3).min(4.5 * (1u64 << 30) as f64);
    let tokens = a.tokens.as_deref();
    let mut shapes = match &a.preset {
        Some(p) => preset_shapes(moehal::presets::preset(p).map_err(CliError)?, tokens, budget),
        None => default_shapes(tokens, budget),
    };
    if let Some(op) = a.op {
        shapes.retain(|s| s.op == op);
        if shapes.is_empty() {
            return Err(CliError(format!("no bench shapes for op {op}")));
        }
    }
    let too_big: Vec<String> = shapes
        .iter()
        .filter(|s| s.input_bytes() > budget)
        .map(|s| format!("{} {} {} ({})", s.op, s.shape(), s.dtype, human_bytes(s.input_bytes())))
        .collect();
    if !too_big.is_empty() {
        return Err(CliError(format!(
            "inputs exceed the memory budget of {} (30% of available): {}",
            human_bytes(budget),
            too_big.join(", ")
        )));
    }
    let refs: Vec<&dyn Backend> = backends.iter().map(|b| b.as_ref()).collect();
    let names: Vec<&str> = refs.iter().map(|b| b.name()).collect();
    outln!(
        "bench: {} shape(s) on {} (seed {})",
        shapes.len(),
        names.join(", "),
        a.seed
    );
    let pb = progress((shapes.len() * refs.len()) as u64, "bench");
    let rows = run_table(&shapes, &refs, a.seed, a.ref_limit, a.budget, &mut |i, _, label| {
        pb.set_position(i as u64);
        pb.set_message(label.to_string());
    })?;
    pb.finish_and_clear();

    let mut t = Table::new(&[
        "op", "shape", "dtype", "backend", ">median", ">GFLOP/s", ">GB/s", ">vs ref", ">vs bf16", "note",
    ]);
    let opt = |v: Option<f64>, d: usize| v.map_or_else(|| "-".to_string(), |x| format!("{x:.d$}"));
    // Printed names: the emulator's timings are tagged (the JSON keeps the backend's name).
    let label = |name: &str| {
        refs.iter()
            .find(|b| b.name() == name)
            .map_or_else(|| name.to_string(), |b| super::backend_label(*b))
    };
    for r in &rows {
        t.row(vec![
            r.op.clone(),
            r.shape.clone(),
            r.dtype.clone(),
            label(&r.backend),
            if r.seconds.is_finite() {
                human_seconds(r.seconds)
            } else {
                "-".into()
            },
            opt(r.gflops, 1),
            opt(r.gbs, 2),
            r.ratio_vs_reference.map_or_else(|| "-".into(), |x| format!("{x:.1}x")),
            r.ratio_vs_bf16.map_or_else(|| "-".into(), |x| format!("{x:.2}x")),
            r.note.clone(),
        ]);
    }
    out!("{}", t.render());
    outln!("GB/s: weights of the experts used (grouped_gemm), logits read (router_topk), rows moved (glue), ids + rows (engram_hash), bytes gathered (gather_rows, engram_lookup); vs ref = reference time / time, same run; quantized grouped_gemm: GB/s of weights + scales, vs bf16 = moehal's bf16 time on the same shape / time, same run");
    if let Some(out) = json {
        out.write(&serde_json::to_value(&rows)?)?;
    }
    let errors = rows.iter().filter(|r| r.note.contains("error:")).count();
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
