//! `moehal check`: every available backend (or `--backend B`) × the conformance cases (the
//! embedded default, or the cases of one `--preset`) through [`harness::run_case`], which runs
//! the same seeded inputs on the backend and on the reference. `--op` and `--case` pick cases
//! without changing their inputs (each case's seed comes from the base seed and its index in the
//! full list), so the `rerun:` line printed under a failure reproduces it exactly; the `tol`
//! column shows the bound each row was held to.
//!
//! The reference is not checked against itself as a matter of course (that row proves nothing
//! about a device): it runs only when it is the only backend available (then as a sanity check of
//! the harness, and the output says so) or when asked for with `--backend reference`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use moehal_core::Backend;

use super::bench::JsonOut;
use super::{progress, CliResult, Table};
use moehal::harness::{self, Verdict};
use moehal::pipeline::human_seconds;

/// Options of `moehal check`.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct Args {
    /// Check only this backend (an error, with the reason, if it is unknown or unavailable).
    #[arg(long)]
    backend: Option<String>,
    /// Run the cases of this preset instead of the default set.
    #[arg(long)]
    preset: Option<String>,
    /// Also write every result as JSON to this file (created, or checked writable, before the
    /// run; a FIFO needs its reader within 2 s): one object, {"base_seed": "S", "results": [...]}, one result per row (op, backend,
    /// case, dtype, metric, tolerance, verdict, seconds, seed, detail). Seeds are decimal strings:
    /// they are 64-bit, and a JSON number above 2^53 loses digits in readers that parse numbers as
    /// doubles (JavaScript's JSON.parse, jq). `--seed S` with --op, --case and --dtype of a row
    /// gives that row its seed again.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Base seed of the inputs (default: fresh from the clock; printed, recorded as `base_seed`
    /// by --json, and each case's seed is in its result).
    #[arg(long, value_parser = super::seed_parser, allow_negative_numbers = true)]
    seed: Option<u64>,
    /// Only the cases of this op.
    #[arg(long, value_parser = super::op_parser())]
    op: Option<moehal_core::OpKind>,
    /// Only the case of this name (exact), or, when no name is equal, the cases whose names
    /// contain it. A filtered case gets the same inputs as in the full run with the same --seed.
    /// An empty name is an error (it would match every case).
    #[arg(long, value_parser = super::non_empty_filter)]
    case: Option<String>,
    /// Only the cases of this dtype / variant label, exactly as in the `dtype` column (e.g.
    /// `bf16 NK`, `fp8_e4m3_ue8m0->bf16`). An empty label is an error.
    #[arg(long, value_parser = super::non_empty_filter)]
    dtype: Option<String>,
}

/// The file `moehal check --json` writes: the run's base seed, once, and one [`JsonRow`] per
/// result. The field names are the file's format (scripts read them). Issue 16: the file was a
/// bare array of rows, without the base seed that `--seed` takes to rerun a row.
#[derive(Debug, serde::Serialize)]
struct JsonFile<'a> {
    /// The base seed (`--seed`), as a decimal string (see [`JsonRow::seed`]).
    #[serde(serialize_with = "seed_string")]
    base_seed: u64,
    results: Vec<JsonRow<'a>>,
}

/// A seed as a decimal string: seeds are `u64`, and a JSON number above 2^53 is rounded by readers
/// that parse numbers as doubles (JavaScript, jq), so a seed written as a number could not be
/// given back to `--seed` (issue 16).
fn seed_string<S: serde::Serializer>(seed: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(seed)
}

/// One object of `moehal check --json`: a result of [`harness::run_case`], with the op and the
/// verdict by name. The field names are the file's format (scripts read them).
#[derive(Debug, serde::Serialize)]
struct JsonRow<'a> {
    op: &'static str,
    backend: &'a str,
    case: &'a str,
    dtype: &'a str,
    metric: &'a str,
    tolerance: &'a str,
    verdict: &'static str,
    seconds: f64,
    /// The case's own seed (`harness::case_seed` of the base seed and the case's index in the
    /// full list), as a decimal string.
    #[serde(serialize_with = "seed_string")]
    seed: u64,
    detail: &'a str,
}

impl<'a> JsonRow<'a> {
    fn of(r: &'a harness::CaseResult) -> Self {
        JsonRow {
            op: r.op.name(),
            backend: &r.backend,
            case: &r.case,
            dtype: &r.dtype,
            metric: &r.metric,
            tolerance: &r.tolerance,
            verdict: r.verdict.label(),
            seconds: r.seconds,
            seed: r.seed,
            detail: &r.detail,
        }
    }
}

/// The `MOEHAL_*` variables among `vars` (the environment), sorted, as `NAME=VALUE ` words quoted
/// for a POSIX shell, to put before a `rerun:` command: they shape the run (the Ascend library
/// directory, the emulator's memory cap, thread counts), so a rerun without them is another run
/// (issue 16). Empty when none is set.
fn env_prefix(vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>) -> String {
    let mut set: Vec<(String, String)> = vars
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("MOEHAL_").then(|| (k, v.to_string_lossy().into_owned()))
        })
        .collect();
    set.sort();
    set.iter()
        .map(|(k, v)| format!("{k}={} ", harness::shell_quote(v)))
        .collect()
}

pub(super) fn run(a: Args) -> CliResult {
    let json = a.json.as_deref().map(JsonOut::open).transpose()?;
    let reg = super::discover()?;
    let all_cases = match &a.preset {
        Some(p) => harness::preset_cases(super::preset_arg(p)?),
        None => harness::default_cases(),
    };
    let cases = harness::select(&all_cases, a.op, a.case.as_deref(), a.dtype.as_deref());
    if cases.is_empty() {
        // A combination of flags that selects nothing: a usage error.
        return Err(super::usage(format!(
            "no case matches{}{}{} (in {} cases of {})",
            a.op.map_or_else(String::new, |o| format!(" --op {o}")),
            a.case.as_deref().map_or_else(String::new, |c| format!(" --case {c}")),
            a.dtype.as_deref().map_or_else(String::new, |d| format!(" --dtype {d}")),
            all_cases.len(),
            a.preset.as_deref().map_or("the default set", |p| p)
        )));
    }
    let backends: Vec<Arc<dyn Backend>> = match &a.backend {
        Some(name) => vec![reg.open(name).map_err(|e| super::backend_error(name, e))?],
        None => {
            let devices: Vec<_> = reg.available().filter(|b| b.name() != "reference").cloned().collect();
            if devices.is_empty() {
                outln!("note: the reference is the only backend available: it is checked against itself (a sanity check of the harness, not of a device)");
                reg.available().cloned().collect()
            } else {
                outln!("note: the reference is the oracle and is not checked against itself (use --backend reference for that)");
                devices
            }
        }
    };
    for e in reg.entries() {
        if let Err(reason) = &e.status {
            if a.backend.is_none() {
                outln!("skipped: {} unavailable ({reason})", e.name);
            }
        }
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64 & 0xffff_ffff)
    });
    let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
    outln!(
        "checking {} case(s) on {} (seed {seed}; rerun with --seed {seed})",
        cases.len(),
        names.join(", ")
    );
    let pb = progress((cases.len() * backends.len()) as u64, "check");
    let mut results = Vec::new();
    for b in &backends {
        for &(i, c) in &cases {
            pb.set_message(format!("{} {}", b.name(), c.name()));
            results.push((c, harness::run_case(b.as_ref(), c, harness::case_seed(seed, i))));
            pb.inc(1);
        }
    }
    pb.finish_and_clear();

    let labels: Vec<(String, String)> = backends
        .iter()
        .map(|b| (b.name().to_string(), super::backend_label(b.as_ref())))
        .collect();
    let label = |name: &str| {
        labels
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| name.to_string(), |(_, l)| l.clone())
    };
    let mut t = Table::new(&["op", "backend", "case", "dtype", "error", "tol", "verdict", ">time"]);
    for (_, r) in &results {
        t.row(vec![
            r.op.name().into(),
            label(&r.backend),
            r.case.clone(),
            r.dtype.clone(),
            r.metric.clone(),
            r.tolerance.clone(),
            r.verdict.label().into(),
            human_seconds(r.seconds),
        ]);
    }
    out!("{}", t.render());
    let count = |v: Verdict| results.iter().filter(|(_, r)| r.verdict == v).count();
    let (pass, fail, unsup) = (count(Verdict::Pass), count(Verdict::Fail), count(Verdict::Unsupported));
    for (case, r) in results.iter().filter(|(_, r)| r.verdict != Verdict::Pass) {
        let what = if r.verdict == Verdict::Fail {
            "FAIL"
        } else {
            "unsupported"
        };
        outln!(
            "{what}: {} / {} / {} (seed {}): {}",
            r.backend,
            r.op,
            r.case,
            r.seed,
            r.detail
        );
        if r.verdict == Verdict::Fail {
            outln!(
                "  rerun: {}{}",
                env_prefix(std::env::vars_os()),
                harness::rerun_command(&r.backend, a.preset.as_deref(), case, seed)
            );
        }
    }
    outln!("{pass} passed, {fail} failed, {unsup} unsupported");
    if let Some(out) = json {
        let file = JsonFile {
            base_seed: seed,
            results: results.iter().map(|(_, r)| JsonRow::of(r)).collect(),
        };
        out.write(&serde_json::to_value(file)?)?;
    }
    Ok(if fail > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rerun_line_keeps_the_moehal_environment_quoted() {
        let vars = [
            ("PATH", "/bin"),
            ("MOEHAL_THREADS", "2"),
            ("MOEHAL_ASCEND_LIB_DIR", "/opt/my lib"),
            ("MOEHAL_X", "it's"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        assert_eq!(
            env_prefix(vars.into_iter()),
            "MOEHAL_ASCEND_LIB_DIR='/opt/my lib' MOEHAL_THREADS=2 MOEHAL_X='it'\\''s' "
        );
        assert_eq!(env_prefix(std::iter::empty()), "");
    }

    /// Seeds past 2^53 (every seed is a u64) are written as strings, digit for digit.
    #[test]
    fn seeds_are_written_as_decimal_strings() {
        let r = harness::CaseResult {
            op: moehal_core::OpKind::Swiglu,
            backend: "cpu".into(),
            case: "c".into(),
            dtype: "f32".into(),
            metric: "rel 0".into(),
            verdict: Verdict::Pass,
            seconds: 0.5,
            seed: u64::MAX - 1,
            tolerance: "bitwise".into(),
            detail: String::new(),
        };
        let file = JsonFile {
            base_seed: (1 << 53) + 1,
            results: vec![JsonRow::of(&r)],
        };
        let v = serde_json::to_value(&file).unwrap();
        assert_eq!(v["base_seed"], "9007199254740993");
        assert_eq!(v["results"][0]["seed"], "18446744073709551614");
        assert_eq!(v["results"][0]["seconds"], 0.5);
    }
}
