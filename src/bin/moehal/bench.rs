//! `moehal bench`: medians per op, shape and backend, with GFLOP/s or GB/s and the ratio to the
//! reference measured in the same run (the reference is skipped, and the row says so, on shapes
//! where it would take more than `--ref-limit` seconds).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;
use moehal_core::{Backend, OpKind};

use super::{progress, write_json, CliResult, Table};
use moehal::bench::{default_shapes_of, preset_shapes_of, run_table, BenchShape};
use moehal::pipeline::{available_memory, human_bytes, human_seconds};

/// Options of `moehal bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct Args {
    /// Bench only this backend (the reference still runs for the ratios).
    #[arg(long)]
    backend: Option<String>,
    /// Only this op.
    #[arg(long, value_parser = super::op_parser())]
    op: Option<OpKind>,
    /// Shapes of this preset instead of the defaults (peers.py shapes).
    #[arg(long)]
    preset: Option<String>,
    /// Only shapes whose op, shape or dtype column (as printed) contains this text, ignoring case
    /// (`--filter cold`, `--filter mxfp4`, `--filter e256`); not empty.
    #[arg(long, value_parser = super::non_empty_filter)]
    filter: Option<String>,
    /// Also write the rows to this file as one JSON array with one object per row (the file is
    /// created, or checked writable, before the run; a FIFO needs its reader within 2 s).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Token counts replacing the defaults of every op (each at least 1; `--tokens 1 16` or
    /// `--tokens 1,16`; a count given twice runs once).
    #[arg(long, num_args = 1.., value_delimiter = ',', value_parser = super::count_at_least_1, allow_negative_numbers = true)]
    tokens: Option<Vec<usize>>,
    /// Skip the reference on shapes estimated to take longer than this (seconds per run; finite,
    /// 0 or more).
    #[arg(long, default_value_t = 5.0, value_parser = super::seconds_limit, allow_negative_numbers = true)]
    ref_limit: f64,
    /// Target seconds of timed runs per shape and backend (at least 3 runs; 2 if a run takes > 1 s;
    /// at most 50 runs, so a fast shape may take less than this: a note under the table says how
    /// many rows the cap cut).
    #[arg(long, default_value_t = 1.0, value_parser = super::seconds_budget, allow_negative_numbers = true)]
    budget: f64,
    /// Seed of the inputs.
    #[arg(long, default_value_t = 0x5eed, value_parser = super::seed_parser, allow_negative_numbers = true)]
    seed: u64,
}

/// Printed after the options of `moehal bench --help`.
const AFTER_HELP: &str = "\
Cold decode: the rows `grouped_gemm ... T1 topK cold (N sets)` (no --tokens, or one that includes
1) run one token through N disjoint sets of top-K experts in turn, so that every run reads its
weights from DRAM. The bf16 rows of the default set (Qwen3-30B-A3B gate_up) and of a --preset (its
gate_up) take the fewest sets whose weights hold at least 4 x the L3 (read from
/sys/devices/system/cpu/cpu0/cache/index3/size, else 32 MiB assumed), within the model's experts
and the memory budget below. The quantized rows and the DeepSeek-V4-Flash bf16 baseline take as
many of the model's experts as the memory budget holds (their `vs bf16` compares like with like),
so they usually rotate over far more than 4 x L3 (with a large L3 a small model's packed weights may
not: that row's note then says it is not fully cold). Every cold row's note says what it rotates over (and how
many times the L3 that is); a row cut below the model's experts by memory says so ('cut to fit
memory: 256 -> 126 experts'), and one under 4 x L3 says it is not fully cold. The bf16 rows' notes
also give a 2-thread read of a 16 x L3 buffer (256 MiB to 1 GiB) measured in the same run, and the
run's GB/s as a share of it.

Memory: a shape's inputs, one backend's outputs and (with a device backend) an upload copy must fit
30% of the available memory, at most 4.5 GiB. A --tokens value that does not fit (or whose sizes
overflow) is an error (exit status 1) that names the op, the shape and the largest token count that
does; preset sizes (experts, tables) are scaled down instead, with a note.";

/// A `--json` output opened before the workload runs, so that a path that cannot be written fails
/// at once instead of after minutes of work; the JSON is written by [`JsonOut::write`] at the end.
/// An existing file is kept as it is until then; a file created here and never written (the run
/// failed) is removed when this is dropped.
///
/// A path that is not a regular file (a character device such as `/dev/full` or `/dev/stdout`, a
/// FIFO) is a stream: opening it proves nothing (issue 16: `check --json /dev/full` ran every case
/// and only then failed to write), so [`JsonOut::open`] writes one newline to it at once — JSON
/// allows whitespace before a value — and the JSON follows through the same handle at the end.
///
/// A regular file that is this process's stdout (`--json /dev/stdout > file`: the same device and
/// inode as fd 1) is neither truncated nor rewritten from its start — that would wipe the table
/// already printed there (issue 16) —: the JSON is written through stdout, after the table.
pub(super) struct JsonOut {
    path: PathBuf,
    file: Option<File>,
    created: bool,
    stream: bool,
    to_stdout: bool,
}

/// Whether `path` names the same file (device and inode, symlinks such as `/dev/stdout` followed)
/// as this process's stdout. `false` when either cannot be stat'ed (a closed stdout, a missing path).
#[cfg(unix)]
fn is_stdout(path: &Path) -> bool {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let Ok(p) = std::fs::metadata(path) else {
        return false;
    };
    // fstat of fd 1 through a duplicate of it (closed when `f` drops; fd 1 stays open).
    let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() else {
        return false;
    };
    let f = File::from(fd);
    f.metadata().is_ok_and(|s| s.dev() == p.dev() && s.ino() == p.ino())
}

/// Without device and inode numbers to compare, no path is taken for stdout.
#[cfg(not(unix))]
fn is_stdout(_path: &Path) -> bool {
    false
}

/// How long [`open_fifo`] waits for a FIFO's reader to appear before it is an error.
#[cfg(unix)]
const FIFO_READER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A FIFO at `path` opened for writing without blocking (`O_NONBLOCK`): a blocking open would
/// wait, silently and before the run, until some process opened the FIFO for reading (issue 16:
/// `mkfifo f; moehal check --json f` hung). With no reader the kernel answers `ENXIO` at once; still
/// none after [`FIFO_READER_WAIT`] (2 s), that is an error naming the path; with one, this handle is the output (switched back to
/// blocking writes, so the JSON is never cut short by `EAGAIN`). Not reopened: a reader such as
/// `cat f` would see the end of the file when this handle closed. `None` when `path` is not a FIFO
/// (a regular file, a missing path, a device): it is opened as before.
///
/// # Errors
/// `cannot write the --json output PATH: it is a FIFO with no reader (start the reader first, or
/// give a regular file)`, or the open's own error naming the path.
#[cfg(unix)]
fn open_fifo(path: &Path) -> anyhow::Result<Option<File>> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    if !std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo()) {
        return Ok(None);
    }
    let cannot = |e: std::io::Error| anyhow!("cannot write the --json output {}: {e}", path.display());
    // A reader started with this process (`cat f & moehal ... --json f`) may open its end a
    // moment later: `ENXIO` is retried for FIFO_READER_WAIT before it is an error.
    let start = std::time::Instant::now();
    let file = loop {
        match OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path) {
            Ok(f) => break f,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if start.elapsed() >= FIFO_READER_WAIT {
                    return Err(anyhow!(
                        "cannot write the --json output {}: it is a FIFO with no reader (start the reader first, or give a regular file)",
                        path.display()
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(cannot(e)),
        }
    };
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL / F_SETFL on a descriptor this function owns (`file`), open for the calls.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(cannot(std::io::Error::last_os_error()));
    }
    Ok(Some(file))
}

/// No FIFOs to probe off Unix.
#[cfg(not(unix))]
fn open_fifo(_path: &Path) -> anyhow::Result<Option<File>> {
    Ok(None)
}

impl JsonOut {
    /// Open (creating if absent, not truncating yet) `path` for writing; a stream (not a regular
    /// file) is probed with a one-newline write.
    ///
    /// # Errors
    /// An error naming the path and the reason (missing directory, permissions, a
    /// directory, a device with no space such as `/dev/full`, ...).
    pub(super) fn open(path: &Path) -> anyhow::Result<Self> {
        use std::io::Write as _;
        let cannot = |e: std::io::Error| anyhow!("cannot write the --json output {}: {e}", path.display());
        let created = !path.exists();
        let stream = std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir());
        if !stream && is_stdout(path) {
            // A regular file that is stdout: written through stdout at the end (its writes are
            // probed and reported as every stdout write is).
            return Ok(JsonOut {
                path: path.to_path_buf(),
                file: None,
                created: false,
                stream: false,
                to_stdout: true,
            });
        }
        let mut file = match open_fifo(path)? {
            Some(fifo) => fifo,
            None => OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(cannot)?,
        };
        if stream {
            file.write_all(b"\n").and_then(|()| file.flush()).map_err(cannot)?;
        }
        Ok(JsonOut {
            path: path.to_path_buf(),
            file: Some(file),
            created,
            stream,
            to_stdout: false,
        })
    }

    /// Replace the file's contents with `value`, pretty-printed, and a newline (a stream gets
    /// them after the probe's newline; stdout's file gets them after what was printed).
    ///
    /// # Errors
    /// An error naming the path on a serialization or I/O error.
    pub(super) fn write(mut self, value: &serde_json::Value) -> anyhow::Result<()> {
        use std::io::Write as _;
        if self.to_stdout {
            let s = serde_json::to_string_pretty(value)? + "\n";
            let mut o = std::io::stdout().lock();
            return o
                .write_all(s.as_bytes())
                .and_then(|()| o.flush())
                .map_err(|e| anyhow!("writing {}: {e}", self.path.display()));
        }
        let file = self.file.take();
        match file {
            Some(mut f) if self.stream => {
                let s = serde_json::to_string_pretty(value)? + "\n";
                f.write_all(s.as_bytes())
                    .and_then(|()| f.flush())
                    .map_err(|e| anyhow!("writing {}: {e}", self.path.display()))
            }
            _ => write_json(&self.path, value),
        }
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

/// Whether `s` fits `budget` bytes of host memory ([`BenchShape::mem_bytes`]; a shape whose size
/// overflows does not).
fn fits(s: &BenchShape, device_copy: bool, budget: f64) -> bool {
    s.mem_bytes(device_copy).is_ok_and(|b| b as f64 <= budget)
}

/// The largest token count `t <= most` whose shapes (`shapes_for(t)`; an error: they cannot exist)
/// all fit `budget` bytes ([`fits`]), or 0 when not even one token fits. Memory grows with the
/// token count, so this is a bisection over `1..=most`.
fn largest_fitting_tokens(
    most: usize,
    budget: f64,
    device_copy: bool,
    shapes_for: impl Fn(usize) -> moehal::Result<Vec<BenchShape>>,
) -> usize {
    let all_fit = |t: usize| shapes_for(t).is_ok_and(|v| v.iter().all(|s| fits(s, device_copy, budget)));
    // Invariant: `lo` fits (0 vacuously), `hi + 1` does not (or is past `most`).
    let (mut lo, mut hi) = (0usize, most);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if all_fit(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Whether `--filter f` keeps `s`: its op, shape or dtype column, as printed, contains `f`,
/// ignoring case (issue 16: the filter matched the origin, which is not printed, and was
/// case-sensitive).
fn filter_matches(s: &BenchShape, f: &str) -> bool {
    let f = f.to_lowercase();
    [s.op.name().to_string(), s.shape(), s.dtype_label()]
        .iter()
        .any(|c| c.to_lowercase().contains(&f))
}

/// Why a filter found nothing, when a reason is known: cold rows need one token.
fn no_shape_hint(filter: Option<&str>, tokens: Option<&[usize]>) -> String {
    match (filter, tokens) {
        (Some(f), Some(t)) if f.to_lowercase().contains("cold") && !t.contains(&1) => {
            "; cold-decode rows are one-token rows: they exist only without --tokens or with a --tokens list that includes 1".into()
        }
        _ => String::new(),
    }
}

pub(super) fn run(a: Args) -> CliResult {
    // Flags first: a bad --preset is a usage error before any backend is probed or "skipped:"
    // printed (issue 16).
    let preset = a.preset.as_deref().map(super::preset_arg).transpose()?;
    let json = a.json.as_deref().map(JsonOut::open).transpose()?;
    let reg = super::discover()?;
    let mut backends: Vec<Arc<dyn Backend>> = match &a.backend {
        Some(name) => vec![reg.open(name).map_err(|e| super::backend_error(name, e))?],
        None => reg.available().cloned().collect(),
    };
    if !backends.iter().any(|b| b.name() == "reference") {
        backends.insert(0, reg.open("reference")?);
    }
    // Skips only of what was asked for: every backend when none was named (a named one that is
    // unavailable is an error above), so `--backend cpu` prints no "skipped: cuda" (issue 16).
    if a.backend.is_none() {
        for e in reg.entries() {
            if let Err(reason) = &e.status {
                outln!("skipped: {} unavailable ({reason})", e.name);
            }
        }
    }
    // One shape's inputs live once in host memory, plus one backend's outputs at a time, plus an
    // upload copy while a device backend runs it (the Ascend emulator's device memory is host memory).
    let device_copy = backends.iter().any(|b| !moehal::pipeline::is_host_backend(b.as_ref()));
    let avail = available_memory().unwrap_or(8 << 30) as f64;
    let budget = (avail * 0.3).min(4.5 * (1u64 << 30) as f64);
    // The shapes of the run for these token counts (`None`: the defaults), of `--op` only. Big
    // tables and expert sets are scaled to half the budget when an upload copy doubles them.
    let scale_to = if device_copy { budget / 2.0 } else { budget };
    let shapes_for = |tokens: Option<&[usize]>| {
        // Only the shapes of --op are built, so that a size error names that op.
        let mut v = match preset {
            Some(p) => preset_shapes_of(p, a.op, tokens, scale_to),
            None => default_shapes_of(a.op, tokens, scale_to),
        }?;
        if let Some(f) = &a.filter {
            v.retain(|s| filter_matches(s, f));
        }
        Ok::<_, moehal::Error>(v)
    };
    // A count given twice runs once (first order kept).
    let tokens: Option<Vec<usize>> = a.tokens.as_ref().map(|t| {
        let mut seen = Vec::with_capacity(t.len());
        for &x in t {
            if !seen.contains(&x) {
                seen.push(x);
            }
        }
        seen
    });
    let describe = |s: &BenchShape| {
        format!(
            "{} {} {} ({})",
            s.op,
            s.shape(),
            s.dtype_label(),
            s.mem_bytes(device_copy).map_or_else(
                |_| "more bytes than usize counts".to_string(),
                |b| human_bytes(b as f64)
            )
        )
    };
    // Shapes that cannot exist (sizes overflow) are over the budget like those that do not fit.
    let (shapes, too_big): (Vec<BenchShape>, Vec<String>) = match shapes_for(tokens.as_deref()) {
        Ok(v) => {
            let big = v
                .iter()
                .filter(|s| !fits(s, device_copy, budget))
                .map(describe)
                .collect();
            (v, big)
        }
        Err(e) => (Vec::new(), vec![format!("shapes that cannot exist ({e})")]),
    };
    if shapes.is_empty() && too_big.is_empty() {
        // A combination of flags that selects nothing: a usage error.
        return Err(super::usage(format!(
            "no bench shapes for op {}{}{}{}",
            a.op.map_or_else(|| "(any)".to_string(), |o| o.to_string()),
            a.preset
                .as_deref()
                .map_or_else(String::new, |p| format!(" in preset {p}")),
            a.filter.as_deref().map_or_else(String::new, |f| format!(
                " matching --filter {f:?} (op, shape or dtype column, ignoring case)"
            )),
            no_shape_hint(a.filter.as_deref(), tokens.as_deref())
        )));
    }
    if !too_big.is_empty() {
        // Issue 16: an impossible size is an error that names the largest one that is possible.
        let fit = match tokens.as_deref().and_then(|t| t.iter().max()) {
            Some(&most) => match largest_fitting_tokens(most, budget, device_copy, |t| shapes_for(Some(&[t]))) {
                0 => "; not even 1 token fits".to_string(),
                n => format!("; the largest token count that fits is {n} (--tokens {n})"),
            },
            None => String::new(),
        };
        return Err(anyhow!(
            "{}shapes exceed the memory budget of {} (30% of the memory available, capped at 4.5 GiB; inputs, outputs and copies): {}{fit}",
            tokens.as_deref().map_or_else(String::new, |t| format!(
                "--tokens {}: ",
                t.iter().map(usize::to_string).collect::<Vec<_>>().join(" ")
            )),
            human_bytes(budget),
            too_big.join(", ")
        ));
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
    // Issue 16: the run cap is said, not silent.
    let capped = rows.iter().filter(|r| r.capped).count();
    if capped > 0 {
        outln!(
            "note: {capped} of {} rows reached the cap of {} timed runs before their --budget of {} s: they took less time than the budget",
            rows.len(),
            moehal::bench::MAX_TIMED_RUNS,
            a.budget
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use moehal::bench::default_shapes;

    /// The bisection's answer is the boundary: it fits, one more token does not.
    #[test]
    fn the_largest_fitting_token_count_is_the_boundary() {
        for (op, budget) in [
            (OpKind::RouterTopk, 1e6),
            (OpKind::GroupedGemm, 4.5 * (1u64 << 30) as f64),
            (OpKind::MoePermute, 3e7),
        ] {
            let shapes_for = |t: usize| {
                let mut v = default_shapes(Some(&[t]), budget)?;
                v.retain(|s| s.op == op);
                Ok(v)
            };
            let all_fit =
                |t: usize| shapes_for(t).is_ok_and(|v: Vec<BenchShape>| v.iter().all(|s| fits(s, false, budget)));
            let n = largest_fitting_tokens(1 << 40, budget, false, shapes_for);
            assert!(n > 0 && all_fit(n) && !all_fit(n + 1), "{op}: {n}");
            // A bound below the boundary is the answer itself.
            assert_eq!(largest_fitting_tokens(n / 2, budget, false, shapes_for), n / 2);
            // Token counts whose sizes overflow usize cannot fit, and the bisection still answers.
            assert!(!all_fit(usize::MAX));
            assert_eq!(largest_fitting_tokens(usize::MAX, budget, false, shapes_for), n);
            // An upload copy halves the room for inputs: fewer tokens fit.
            assert!(largest_fitting_tokens(1 << 40, budget, true, shapes_for) < n);
        }
        // Not even one token: 0.
        let none = largest_fitting_tokens(1000, 1.0, false, |t| default_shapes(Some(&[t]), 1.0));
        assert_eq!(none, 0);
    }

    /// Every op that `--op` offers (OpKind::ALL) has bench shapes.
    #[test]
    fn every_op_in_the_help_has_bench_shapes() {
        let shapes = default_shapes(None, 4.5 * (1u64 << 30) as f64).unwrap();
        for op in OpKind::ALL {
            assert!(shapes.iter().any(|s| s.op == op), "no bench shape for {op}");
        }
    }
}
