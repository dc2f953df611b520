//! The `moehal` command line (one module per subcommand); see `moehal --help`.
//!
//! `moehal devices | kernels | check | bench | moe | engram`; with no subcommand it runs the
//! default of `moehal check`. Progress bars are drawn on stderr only when it is a terminal;
//! results go to stdout.
//!
//! The binary lives apart from the library (issue 12 item 2): clap, indicatif and the table and
//! JSON printing are its dependencies, built only with the `cli` feature, so engines and the C ABI
//! link `moehal` without them. What a library user needs (pipelines, checkpoint loading, the
//! registry) stays in the library.

/// `println!` to stdout through [`stdout_write`]: a write error (a full disk, a closed pipe) does
/// not panic; the first one is kept and reported when the command ends ([`finish_stdout`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        $crate::stdout_write(format_args!("{}\n", format_args!($($arg)*)));
    }};
}

/// `eprintln!` that cannot panic: std's panics when stderr cannot be written (`2>&1 | head` after
/// the reader left, `2>/dev/full`), which turned every error and warning into exit status 101. A
/// message that cannot be written is dropped; the exit status stays the one the README documents.
/// Defined before the modules, so it shadows std's `eprintln!` in all of them.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `print!` to stdout through [`stdout_write`].
macro_rules! out {
    ($($arg:tt)*) => {{
        $crate::stdout_write(format_args!($($arg)*));
    }};
}

mod bench;
mod check;
mod devices;
mod engram;
mod kernels;
mod moe;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use moehal_core::{Backend, OpKind};

use moehal::Registry;

/// moehal: MoE / Engram kernels on every backend of this machine, checked against one reference.
#[derive(Debug, Parser)]
#[command(name = "moehal", version, about, long_about = None, after_help = EXIT_STATUS)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every compiled-in backend: available or not (and why), device, memory, capability.
    Devices,
    /// The support matrix: op × variant × backend → kernel, or why not.
    Kernels(kernels::Args),
    /// Check backends against the reference on the conformance cases.
    Check(check::Args),
    /// Time ops per backend, with the reference in the same run for ratios.
    Bench(bench::Args),
    /// One full MoE layer forward of a preset, timed per stage, compared with the reference.
    Moe(moe::Args),
    /// Real text → cl100k BPE → canonical ids → V4.1 Engram hash → table gather.
    Engram(engram::Args),
}

/// Printed after `moehal --help`: the one rule of exit statuses (issue 16).
const EXIT_STATUS: &str = "\
Exit status: 0 when the command did its work and everything it checked matched; 1 when a check
failed or compared no value (NOT CHECKED: every output NaN) or the work could not be done (a
file or its contents: a checkpoint its --preset cannot route or --ep-threads cannot split; a
device; MOEHAL_REQUIRE_CUDA=1 without CUDA; the memory of this machine or device; an output
file, probed before the work; stdout);
2 on a usage error: an unknown flag, or a flag value that is bad alone or with the other flags
(out of range for the preset, op or dtype chosen; an unknown preset or backend name), or a flag
this build cannot honour (--ep without the mpi feature); the message names the flag.";

/// A usage error found after parsing: a flag value that is bad alone or in combination with the
/// other flags (an unknown preset, a flag that cannot apply to another). It exits with status 2,
/// as clap's own usage errors do, and its message names the flag (issue 16: one rule for every
/// bad flag value, whether clap or the command finds it).
#[derive(Debug)]
pub(crate) struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A [`Usage`] error with this message (it should start with the flag, e.g. `--preset x: ...`).
pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// The exit status of a subcommand's error: 2 for a [`Usage`] error, 1 for anything else.
fn error_status(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<Usage>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

/// A registry error for `--backend NAME` as the CLI reports it: an unknown name (not compiled
/// into this build) is a usage error naming the flag; an unavailable backend a runtime error.
pub(crate) fn backend_error(name: &str, e: moehal::Error) -> anyhow::Error {
    let msg = e.to_string();
    if name.trim().is_empty() {
        usage(format!("--backend: the value is empty: name a backend ({msg})"))
    } else if msg.contains("not compiled into this build") {
        usage(format!("--backend {name}: {msg}"))
    } else {
        anyhow::Error::from(e)
    }
}

/// `MOEHAL_REQUIRE_CUDA` (the CUDA crate's `REQUIRE_ENV`): set to anything but empty or `0`,
/// this machine must have a working CUDA backend.
#[cfg(feature = "cuda")]
use moehal_cuda::{cuda_required, REQUIRE_ENV as REQUIRE_CUDA};

/// The name of the variable in a build without the `cuda` feature (then it can never be met).
#[cfg(not(feature = "cuda"))]
const REQUIRE_CUDA: &str = "MOEHAL_REQUIRE_CUDA";

/// The rule of `moehal_cuda::cuda_required`, for a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
fn cuda_required() -> bool {
    std::env::var_os(REQUIRE_CUDA).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The backends of this machine ([`Registry::discover`]), and, under `MOEHAL_REQUIRE_CUDA=1`, an
/// error (exit status 1) with the reason when the CUDA backend is unavailable or not compiled in.
/// Issue 16: the variable made only the CUDA tests fail, while `moehal check` without `--backend`
/// skipped CUDA with one `skipped:` line and exited 0 on a GPU machine whose driver was missing;
/// now every command that probes the backends fails there, whatever `--backend` names.
///
/// # Errors
/// `MOEHAL_REQUIRE_CUDA=1 but the CUDA backend is unavailable: <reason>`.
pub(crate) fn discover() -> anyhow::Result<Registry> {
    let reg = Registry::discover();
    require_cuda(&reg)?;
    Ok(reg)
}

/// [`discover`]'s check of `MOEHAL_REQUIRE_CUDA` on an already probed registry.
///
/// # Errors
/// As [`discover`].
pub(crate) fn require_cuda(reg: &Registry) -> anyhow::Result<()> {
    if !cuda_required() {
        return Ok(());
    }
    match reg.open("cuda") {
        Ok(_) => Ok(()),
        Err(e) => Err(anyhow!(
            "{REQUIRE_CUDA}=1 but the CUDA backend is unavailable: {} (unset {REQUIRE_CUDA} to run on the other backends)",
            match e {
                moehal::Error::Unavailable { reason, .. } => reason,
                other => other.to_string(),
            }
        )),
    }
}

/// A preset by name, or a usage error naming `--preset` and the presets there are.
pub(crate) fn preset_arg(name: &str) -> anyhow::Result<&'static moehal::presets::Preset> {
    moehal::presets::preset(name).map_err(|e| usage(format!("--preset {name}: {e}")))
}

/// The result of a subcommand: its exit status, or an error printed as `error: ...` (with its
/// causes, `anyhow`'s `{:#}`), exit status 1.
type CliResult = anyhow::Result<ExitCode>;

/// Run the CLI on the process arguments and return the exit status.
fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return clap_exit(&e),
    };
    // Environment variables first: a bad value is an error before any work, a doubtful one a
    // warning on stderr (the library itself does not print).
    match moehal::backends::check_env() {
        Ok(warnings) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        None => check::run(check::Args::default()),
        Some(Command::Devices) => devices::run(),
        Some(Command::Kernels(a)) => kernels::run(a),
        Some(Command::Check(a)) => check::run(a),
        Some(Command::Bench(a)) => bench::run(a),
        Some(Command::Moe(a)) => moe::run(a),
        Some(Command::Engram(a)) => engram::run(a),
    };
    let mut said = String::new();
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            said = format!("{e:#}");
            eprintln!("error: {said}");
            error_status(&e)
        }
    };
    // Results that never reached stdout are a failure, whatever the command found. One failure,
    // one line: when the command's own error already reported this I/O error (`--json
    // /dev/stdout | head -c 10`: the JSON went through stdout), it is not said twice.
    match finish_stdout() {
        Ok(()) => code,
        Err(e) => {
            let text = e.to_string();
            if !(said.contains("stdout") && said.contains(&text)) {
                eprintln!("error: writing the results to stdout: {text}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The first error of a write to stdout (`None`: every write so far succeeded).
static STDOUT_ERROR: std::sync::Mutex<Option<std::io::Error>> = std::sync::Mutex::new(None);

/// Write `args` to stdout (the body of `outln!` and `out!`). Never panics: the first write error
/// is kept for [`finish_stdout`] and later writes are skipped (a full disk or a closed pipe does
/// not get better), so `moehal check > /dev/full` and `moehal kernels | head -1` end with an error
/// and a non-zero exit status instead of a panic or a silent success.
pub(crate) fn stdout_write(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut err = STDOUT_ERROR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if err.is_none() {
        if let Err(e) = std::io::stdout().lock().write_fmt(args) {
            *err = Some(e);
        }
    }
}

/// Flush stdout and return the first error of any write to it ([`stdout_write`]), or of the flush.
///
/// # Errors
/// That I/O error (e.g. `No space left on device` for `> /dev/full`, `Broken pipe` after the
/// reader of a pipe exited).
fn finish_stdout() -> std::io::Result<()> {
    use std::io::Write as _;
    let mut err = STDOUT_ERROR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(e) = err.take() {
        return Err(e);
    }
    std::io::stdout().lock().flush()
}

/// clap value parser of a count that must be at least 1 (`--tokens`). Issue 16 asked what `--tokens
/// 0` means: nothing useful (a bench row of an empty op times the call overhead and reports 0 GB/s;
/// a MoE layer of no tokens checks nothing), so it is a usage error naming the flag, before any work.
pub(crate) fn count_at_least_1(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|e| format!("{e} (expected a whole number, at least 1)"))?;
    if n == 0 {
        return Err("must be at least 1 (an empty run would measure and check nothing)".into());
    }
    Ok(n)
}

/// clap value parser of a time limit in seconds (`--ref-limit`): finite and 0 or more. `nan`,
/// `inf` and negative numbers parse as `f64` but have no meaning as a limit (every comparison with
/// NaN is false, so a NaN limit silently skipped the reference), so they are rejected, naming the flag.
pub(crate) fn seconds_limit(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|e| format!("{e} (expected seconds, e.g. 10 or 0.5)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("must be a finite number of seconds, 0 or more (got {s})"));
    }
    // `-0` is zero: normalised, so that no output says "-0 s" (issue 16).
    Ok(if v == 0.0 { 0.0 } else { v })
}

/// clap value parser of a time budget in seconds (`bench --budget`): finite and more than 0. One
/// rule and one message for every value outside it (`-1`, `0`, `nan`, `inf` once got two
/// different messages, one of which said 0 was allowed).
pub(crate) fn seconds_budget(s: &str) -> Result<f64, String> {
    const RULE: &str = "must be a finite number of seconds, more than 0 (e.g. 1 or 0.5)";
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err(format!("{RULE}; got {s}")),
        Err(e) => Err(format!("{e}; {RULE}")),
    }
}

/// clap value parser of a seed (`--seed`): a whole number from 0 to 2^64-1. clap's own parser
/// says only "invalid digit found in string" for `-1`.
pub(crate) fn seed_parser(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("seeds are whole numbers from 0 to 2^64-1 = {} (got {s})", u64::MAX))
}

/// What clap's `exit()` does for a parse result that is not a command (help, version, usage
/// error), except that a failed write of help or version text to stdout (`--help > /dev/full`)
/// is an error with exit status 1 like every other command's output, not a silent 0.
fn clap_exit(e: &clap::Error) -> ExitCode {
    use std::io::Write;
    if !e.use_stderr() {
        let text = e.render().to_string();
        let mut out = std::io::stdout().lock();
        return match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: writing the help to stdout: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let _ = e.print();
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

/// clap value parser of a whole number of at least `MIN` (`engram --chunk-bytes` 4, `--batch-tokens`
/// and `--rows` 1, `moe --layer` 0, `moe --scale-widths`, `--budget-mib` and `--ep-threads` 1: 0
/// would divide by zero, budget nothing or run no rank), saying the accepted range for `-1`, `1.5`
/// or a value past `usize::MAX` instead of clap's "invalid digit" or "unexpected argument". The
/// one parser of such counts (issue 16 item 12: a second one, `positive_whole`, said the same
/// rule in other words).
pub(crate) fn whole_at_least<const MIN: usize>(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(v) if v >= MIN => Ok(v),
        _ => Err(format!("must be a whole number from {MIN} to {} (got {s})", usize::MAX)),
    }
}

/// clap value parser of a name filter (`check --case`, `--dtype`, `bench --filter`): an empty filter would match
/// every name (each contains the empty string), which is never what was meant.
pub(crate) fn non_empty_filter(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("must not be empty (an empty filter would match everything)".into());
    }
    Ok(s.to_string())
}

/// clap value parser of `--op`: the possible values are the names of [`OpKind::ALL`], the one list
/// of ops, so `--help` (which prints them) cannot drift from the ops the library has again (it
/// once listed 8 of 10, without quantize_fp8 and quantize_int8).
pub(crate) fn op_parser() -> impl clap::builder::TypedValueParser<Value = OpKind> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(OpKind::ALL.map(OpKind::name)).try_map(|s| s.parse::<OpKind>())
}

/// clap value parser of an activation dtype (`moe --dtype`): the float dtypes, and only those, are
/// listed and accepted (issue 16: `i32` was listed by the dtype parser's error and then rejected).
pub(crate) fn float_dtype_parser() -> impl clap::builder::TypedValueParser<Value = moehal_core::DType> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["f32", "bf16", "f16"]).try_map(|s| s.parse::<moehal_core::DType>())
}

/// A progress bar of `len` steps on stderr (hidden when stderr is not a terminal).
pub(crate) fn progress(len: u64, msg: impl Into<String>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}") {
        pb.set_style(style);
    }
    pb.set_message(msg.into());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A byte-count progress bar (uploads, generation).
pub(crate) fn progress_bytes(len: u64, msg: impl Into<String>) -> ProgressBar {
    let pb = progress(len, msg);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {msg}")
    {
        pb.set_style(style);
    }
    pb
}

/// A spinner for a step of unknown length (hidden when stderr is not a terminal).
pub(crate) fn spinner(msg: impl Into<String>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
        pb.set_style(style);
    }
    pb.set_message(msg.into());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// The backend a subcommand runs on: `name` if given (an error with the registry's reason when
/// it is unknown or unavailable), else the first available non-reference backend, else the
/// reference.
pub(crate) fn choose_backend(reg: &Registry, name: Option<&str>) -> anyhow::Result<Arc<dyn Backend>> {
    match name {
        Some(n) => reg.open(n).map_err(|e| backend_error(n, e)),
        None => reg
            .available()
            .find(|b| b.name() != "reference")
            .or_else(|| reg.available().find(|b| b.name() == "reference"))
            .cloned()
            .ok_or_else(|| anyhow!("no backend available")),
    }
}

/// The name a backend's timings are printed under: its name, tagged ` (emulator)` when the
/// device is the ACL emulator (`moehal-ascend-emu`, whose SoC name ends in `-emu`), so that
/// emulator timings are never read as Ascend silicon timings.
pub(crate) fn backend_label(b: &dyn Backend) -> String {
    label_for(b.name(), &b.device_info().name)
}

/// [`backend_label`] from a backend name and its device name.
pub(crate) fn label_for(name: &str, device: &str) -> String {
    if is_emulator(device) {
        format!("{name} (emulator)")
    } else {
        name.to_string()
    }
}

/// Whether a device name is the one the ACL emulator reports: `aclrtGetSocName` of
/// `moehal-ascend-emu` answers `Ascend910B2-emu` (its `SOC_NAME`), and no Ascend SoC name ends in
/// `-emu`. The loaded library's own word, not a guess from the directory it was loaded from.
pub(crate) fn is_emulator(device: &str) -> bool {
    device.ends_with("-emu")
}

/// For `moehal devices` and `moehal kernels`: a line saying that backend `name` is the emulator,
/// when its device (`device`, the name the library reports) is, else `None`. Issue 16: both
/// printed the emulator as `ascend`, `available`, so a user could take its answers for an NPU's.
pub(crate) fn emulator_note(name: &str, device: &str) -> Option<String> {
    is_emulator(device).then(|| {
        format!(
            "note: {name} is the ACL emulator moehal-ascend-emu (its library reports the device {device}), not Ascend hardware: what it runs and times is the emulator's"
        )
    })
}

/// A plain text table with aligned columns, drawn by comfy-table: a header, a rule of dashes, no
/// borders, two spaces between columns, no trailing spaces (so `grep` and `awk` read it).
pub(crate) struct Table {
    inner: comfy_table::Table,
}

impl Table {
    /// A table with these column headers; columns whose header starts with `>` are right-aligned.
    pub(crate) fn new(headers: &[&str]) -> Self {
        use comfy_table::{CellAlignment, TableComponent};
        let mut inner = comfy_table::Table::new();
        inner
            .load_preset(comfy_table::presets::NOTHING)
            .set_style(TableComponent::HeaderLines, '-')
            .set_style(TableComponent::MiddleHeaderIntersections, ' ')
            .set_style(TableComponent::VerticalLines, ' ')
            .set_header(headers.iter().map(|h| h.trim_start_matches('>')).collect::<Vec<_>>());
        let n = headers.len();
        for (i, h) in headers.iter().enumerate() {
            if let Some(c) = inner.column_mut(i) {
                // One space of padding and the separator: two spaces between columns.
                c.set_padding((0, u16::from(i + 1 < n)));
                if h.starts_with('>') {
                    c.set_cell_alignment(CellAlignment::Right);
                }
            }
        }
        Table { inner }
    }

    /// Add a row (missing cells are empty).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.inner.add_row(cells);
    }

    /// Render, one line per row, each ending in a newline.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for line in self.inner.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Write `value` as pretty JSON to `path`.
pub(crate) fn write_json(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let s = serde_json::to_string_pretty(value)?;
    std::fs::write(path, s + "\n").map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_timings_are_tagged() {
        assert_eq!(label_for("ascend", "Ascend910B2-emu"), "ascend (emulator)");
        assert_eq!(label_for("ascend", "Ascend910B2"), "ascend");
        assert_eq!(label_for("cpu", "AMD EPYC"), "cpu");
        let note = emulator_note("ascend", "Ascend910B2-emu").unwrap();
        assert!(
            note.contains("ascend is the ACL emulator")
                && note.contains("Ascend910B2-emu")
                && note.contains("not Ascend hardware"),
            "{note}"
        );
        assert_eq!(emulator_note("ascend", "Ascend910B2"), None);
        assert_eq!(emulator_note("cpu", "AMD EPYC"), None);
    }

    #[test]
    fn table_aligns() {
        let mut t = Table::new(&["a", ">b"]);
        t.row(vec!["xyz".into(), "1".into()]);
        t.row(vec!["q".into(), "123".into()]);
        let s = t.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "a      b");
        assert!(lines[1].chars().all(|c| c == '-' || c == ' '), "{}", lines[1]);
        assert_eq!(lines[2], "xyz    1");
        assert_eq!(lines[3], "q    123");
        assert_eq!(lines.len(), 4);
        // Short rows leave their last cells empty, with no trailing spaces.
        let mut t = Table::new(&["a", "b", ">c"]);
        t.row(vec!["long cell".into()]);
        t.row(vec!["x".into(), "y".into(), "µs".into()]);
        let s = t.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[2], "long cell");
        assert_eq!(lines[3], "x          y  µs");
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["moehal", "bench", "--tokens", "1", "16", "--op", "grouped_gemm"]).unwrap();
        assert!(matches!(c.command, Some(Command::Bench(_))));
        assert!(Cli::try_parse_from(["moehal", "moe", "--tokens", "4"]).is_err());
    }

    #[test]
    fn counts_and_limits_are_checked_when_parsed() {
        assert_eq!(count_at_least_1("3"), Ok(3));
        assert!(count_at_least_1("0").unwrap_err().contains("at least 1"));
        assert!(count_at_least_1("-2").is_err());
        assert_eq!(seconds_limit("0"), Ok(0.0));
        assert_eq!(seconds_limit("2.5"), Ok(2.5));
        for bad in ["nan", "NaN", "inf", "-inf", "-0.1", "ten"] {
            assert!(seconds_limit(bad).is_err(), "{bad}");
        }
        // Negative zero is zero, with a positive sign (it printed as "-0 s").
        for zero in ["-0", "-0.0", "0.0"] {
            let v = seconds_limit(zero).unwrap();
            assert!(v == 0.0 && v.is_sign_positive(), "{zero}: {v}");
        }
        assert_eq!(seconds_budget("0.5"), Ok(0.5));
        // One rule, one message, for every value outside it.
        let rule = seconds_budget("0").unwrap_err();
        for bad in ["-1", "0", "-0", "nan", "inf", "ten"] {
            let e = seconds_budget(bad).unwrap_err();
            assert!(
                e.contains("must be a finite number of seconds, more than 0"),
                "{bad}: {e}"
            );
        }
        assert!(rule.ends_with("got 0"), "{rule}");
        // Seeds: every u64, and words for anything else.
        assert_eq!(seed_parser("0"), Ok(0));
        assert_eq!(seed_parser("18446744073709551615"), Ok(u64::MAX));
        for bad in ["-1", "18446744073709551616", "x", ""] {
            let e = seed_parser(bad).unwrap_err();
            assert!(e.contains("from 0 to 2^64-1"), "{bad}: {e}");
        }
        assert!(non_empty_filter("").is_err() && non_empty_filter("  ").is_err());
        assert_eq!(non_empty_filter("bf16").as_deref(), Ok("bf16"));
        // --op takes every name of OpKind::ALL and nothing else.
        for op in OpKind::ALL {
            let c = Cli::try_parse_from(["moehal", "bench", "--op", op.name()]);
            assert!(c.is_ok(), "{op}");
        }
        assert!(Cli::try_parse_from(["moehal", "bench", "--op", "matmul"]).is_err());
    }
}
