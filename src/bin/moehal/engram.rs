//! `moehal engram`: real text → cl100k_base BPE → canonical ids → DeepSeek-V4.1-Flash layer-1
//! `engram_hash` → `gather_rows` from a table, on a backend, checked against the reference.
//! Every substitution for what this machine cannot hold (the tokenizer, the 100 GB table) is
//! printed (see [`moehal::pipeline::engram`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;
use moehal_core::engram::v41_flash;
use moehal_core::ops::OpDesc;

use super::{backend_label, choose_backend, progress_bytes, spinner, CliResult};
use moehal::pipeline::engram::{
    generate_table, open_table, rows_for_bytes, run_text, EngramTable, StreamOptions, Tokenizer, DEFAULT_TABLE_BYTES,
    DEFAULT_TEXT, DEFAULT_TEXT_NAME, ROW_DIM,
};
use moehal::pipeline::{available_memory, human_bytes, human_seconds, is_host_backend, upload_bytes};

/// Options of `moehal engram`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Text file to tokenize (default: this repository's README.md, embedded in the binary). Read
    /// in chunks: memory does not grow with its length.
    #[arg(long)]
    text: Option<PathBuf>,
    /// Backend (default: the first available non-reference backend, else the reference).
    #[arg(long)]
    backend: Option<String>,
    /// A safetensors file with a 2-D tensor named `table` (f32, bf16, f16, or u8 / F8_E4M3 rows of
    /// D + D/32 bytes), memory-mapped. Make one with `--rows R --save-table FILE`.
    #[arg(long, conflicts_with_all = ["rows", "save_table"])]
    table: Option<PathBuf>,
    /// Rows of the generated bf16 table (default: 256 MiB worth of 256-wide rows).
    #[arg(long, value_parser = super::whole_at_least::<1>, allow_negative_numbers = true)]
    rows: Option<usize>,
    /// Seed of the generated table (0 to 2^64-1).
    #[arg(long, default_value_t = 1, value_parser = super::seed_parser, allow_negative_numbers = true)]
    seed: u64,
    /// Also write the generated table to this safetensors file (tensor `table`, bf16 [R, 256]),
    /// for later runs with `--table`. Written as soon as the table is generated, before the text
    /// is tokenized (a later failure keeps it); an existing file is an error unless `--force`.
    #[arg(long)]
    save_table: Option<PathBuf>,
    /// With --save-table: replace an existing file (the old one stays until the new one is
    /// complete).
    #[arg(long, requires = "save_table")]
    force: bool,
    /// Tokens hashed and gathered at a time (bounds the gather output buffer); default 2048. An
    /// explicit value over what memory allows is an error naming the most that fits; the implied
    /// default is scaled down to that, with a note (README: implied sizes are scaled to fit).
    #[arg(long, value_parser = super::whole_at_least::<1>, allow_negative_numbers = true)]
    batch_tokens: Option<usize>,
    /// Bytes of text read and tokenized at a time (at least 4; a value above the text's size
    /// reads the whole text at once, never more).
    #[arg(long, default_value_t = 256 << 10, value_parser = super::whole_at_least::<4>, allow_negative_numbers = true)]
    chunk_bytes: usize,
}

/// The table: opened (`--table`) or generated (`--rows`), before any text is read, so that a bad
/// table fails at once. A generated table larger than the memory available is an error naming
/// the largest that fits (issue 16's rule for impossible sizes: an error, never a silent shrink).
fn load_table(a: &Args, save: Option<TableOut>) -> anyhow::Result<EngramTable> {
    if let Some(p) = &a.table {
        return Ok(open_table(p)?);
    }
    let r = a.rows.unwrap_or_else(|| rows_for_bytes(DEFAULT_TABLE_BYTES, ROW_DIM));
    let bytes = (r as u128) * (ROW_DIM as u128) * 2;
    if let Some(avail) = available_memory() {
        let limit = avail as u128 * 6 / 10;
        if bytes > limit {
            return Err(anyhow!(
                "--rows {r}: a bf16 table of {r} x {ROW_DIM} needs {}, more than 60% of the {} available; at most {} rows fit",
                human_bytes(bytes as f64),
                human_bytes(avail as f64),
                limit / (ROW_DIM as u128 * 2)
            ));
        }
    }
    let sp = spinner(format!("generating a {} table", human_bytes(bytes as f64)));
    let t = generate_table(r, ROW_DIM, a.seed)?;
    sp.finish_and_clear();
    if let Some(out) = save {
        let path = out.path.clone();
        out.write(&t)?;
        outln!(
            "saved the table to {} (safetensors, tensor `table` bf16 [{r}, {ROW_DIM}]); reuse it with --table {}",
            path.display(),
            path.display()
        );
    }
    Ok(t)
}

/// The `--save-table` destination, checked before the table is generated so that a path that
/// cannot be written fails at once, not after the generation. The table is written to a
/// `.NAME.partial-PID` file beside it and renamed over `path` when complete, so a failed write
/// never leaves a truncated table, and `--force` replaces an old table only with a whole new
/// one; the partial file is removed if the run fails before that.
struct TableOut {
    path: PathBuf,
    partial: PathBuf,
}

impl TableOut {
    /// Check `path` (an existing file is an error unless `force`; a directory always is) and
    /// create the partial file beside it.
    ///
    /// # Errors
    /// An error naming the path and the reason in words.
    fn open(path: &Path, force: bool) -> anyhow::Result<Self> {
        let shown = path.display();
        if path.is_dir() {
            return Err(anyhow!("--save-table {shown}: is a directory"));
        }
        // The new table replaces the path by a rename: only a regular file may be replaced (a FIFO,
        // a device node or a symlink would silently become a plain file; --force does not change that).
        if let Ok(md) = std::fs::symlink_metadata(path) {
            if !md.file_type().is_file() {
                return Err(anyhow!(
                    "--save-table {shown}: exists and is not a regular file (a symlink, FIFO or device); choose another path"
                ));
            }
        }
        if path.exists() && !force {
            return Err(anyhow!(
                "--save-table {shown}: the file exists; pass --force to replace it, or choose another path"
            ));
        }
        let name = path
            .file_name()
            .ok_or_else(|| anyhow!("--save-table {shown}: not a file name"))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let partial = dir.join(format!(".{}.partial-{}", name.to_string_lossy(), std::process::id()));
        std::fs::File::create_new(&partial)
            .map_err(|e| anyhow!("--save-table {shown}: cannot create a file in {}: {e}", dir.display()))?;
        Ok(TableOut {
            path: path.to_path_buf(),
            partial,
        })
    }

    /// Write `t` as a safetensors file with one tensor `table`, then move it to the path.
    ///
    /// # Errors
    /// An error naming the file and the I/O error in words.
    fn write(self, t: &EngramTable) -> anyhow::Result<()> {
        let bytes = moehal_core::host::bytes(&t.buffer, "engram", "table")?;
        let dtype = match t.format.storage_dtype() {
            moehal_core::DType::F32 => safetensors::Dtype::F32,
            moehal_core::DType::F16 => safetensors::Dtype::F16,
            moehal_core::DType::BF16 => safetensors::Dtype::BF16,
            _ => safetensors::Dtype::U8,
        };
        // safetensors' errors print as their Debug form (`IoError(Os { code: 28, .. })`): the I/O
        // error is taken out and printed in words.
        let words = |e: safetensors::SafeTensorError| match e {
            safetensors::SafeTensorError::IoError(io) => io.to_string(),
            other => format!("{other:?}"),
        };
        let view = safetensors::tensor::TensorView::new(dtype, vec![t.rows, t.width], bytes)
            .map_err(|e| anyhow!("saving the table: {}", words(e)))?;
        safetensors::tensor::serialize_to_file([("table", view)], &None, &self.partial).map_err(|e| {
            anyhow!(
                "--save-table {}: writing {}: {}",
                self.path.display(),
                self.partial.display(),
                words(e)
            )
        })?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| {
            anyhow!(
                "--save-table {}: moving the written table from {}: {e}",
                self.path.display(),
                self.partial.display()
            )
        })
    }
}

impl Drop for TableOut {
    fn drop(&mut self) {
        // Best effort, and a no-op after the rename: no partial file is left behind.
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// The bytes of text read at a time: `--chunk-bytes`, but never more than the text has (at least
/// 4, the longest UTF-8 character), so a huge value reads the whole text at once instead of
/// asking for that much memory. `text_bytes` is `None` where the size is not known in advance (a
/// pipe, a FIFO, a character device report 0): the chunk stays as asked (the reader grows its
/// buffer as text arrives, so a huge value still allocates only what is read).
fn chunk_for(chunk_bytes: usize, text_bytes: Option<u64>) -> usize {
    match text_bytes {
        Some(n) => chunk_bytes.min(usize::try_from(n.max(4)).unwrap_or(usize::MAX)),
        None => chunk_bytes,
    }
}

/// Host and backend bytes one token of a batch holds: its gathered rows on the backend and their
/// host copy (`2 · C · D` elements of the output dtype), and its `C` hashed row ids (i64) on the
/// backend, on the host and from the reference.
fn batch_bytes_per_token(t: &EngramTable) -> u128 {
    let c = v41_flash::layer(0).map_or(0, |l| l.columns()) as u128;
    2 * c * t.dim as u128 * t.out_dtype().size() as u128 + 3 * 8 * c
}

/// The share of the available memory one batch may take.
const BATCH_MEMORY_SHARE: f64 = 0.2;

/// `--batch-tokens n` must fit [`BATCH_MEMORY_SHARE`] of `avail` bytes at `per_token` bytes a
/// token.
///
/// # Errors
/// An error naming the flag, the bytes needed, the memory available and the most tokens allowed.
fn check_batch_fits(n: usize, per_token: u128, avail: u64) -> anyhow::Result<()> {
    let limit = (avail as f64 * BATCH_MEMORY_SHARE) as u128;
    let max = limit / per_token.max(1);
    if n as u128 > max {
        return Err(anyhow!(
            "--batch-tokens {n}: a batch holds {} per token ({} in all), more than {:.0}% of the {} available: the maximum allowed here is {max}",
            human_bytes(per_token as f64),
            human_bytes(n as f64 * per_token as f64),
            BATCH_MEMORY_SHARE * 100.0,
            human_bytes(avail as f64)
        ));
    }
    Ok(())
}

/// The implied `--batch-tokens` (2048), scaled down to the most that fit memory, with the note
/// that says so; an error when not even one token fits.
fn default_batch_tokens(per_token: u128, avail: u64) -> anyhow::Result<(usize, Option<String>)> {
    const DEFAULT: usize = 2048;
    let max = (avail as f64 * BATCH_MEMORY_SHARE) as u128 / per_token.max(1);
    if max >= DEFAULT as u128 {
        return Ok((DEFAULT, None));
    }
    if max == 0 {
        // One token over the share: the same error an explicit --batch-tokens 1 gets.
        check_batch_fits(1, per_token, avail)?;
    }
    Ok((
        max as usize,
        Some(format!(
            "batch of {max} tokens (the default 2048 scaled to fit memory: {} per token, at most {:.0}% of the {} available)",
            human_bytes(per_token as f64),
            BATCH_MEMORY_SHARE * 100.0,
            human_bytes(avail as f64)
        )),
    ))
}

pub(super) fn run(a: Args) -> CliResult {
    // The parsers enforce these; kept for callers that build `Args` directly, as usage errors.
    if a.batch_tokens == Some(0) {
        return Err(super::usage("--batch-tokens must be at least 1"));
    }
    if a.chunk_bytes < 4 {
        return Err(super::usage(
            "--chunk-bytes must be at least 4 (the longest UTF-8 character)",
        ));
    }
    // Open the text (not read it) and the table first: a bad path or table fails before the
    // tokenizer loads.
    let (reader, total, source): (Box<dyn std::io::Read>, Option<u64>, String) = match &a.text {
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| anyhow!("reading {}: {e}", p.display()))?;
            let md = f.metadata().map_err(|e| anyhow!("reading {}: {e}", p.display()))?;
            if md.is_dir() {
                return Err(anyhow!("reading {}: is a directory", p.display()));
            }
            // Only a regular file's length is its text's size.
            (Box::new(f), md.is_file().then_some(md.len()), p.display().to_string())
        }
        None => (
            Box::new(DEFAULT_TEXT.as_bytes()),
            Some(DEFAULT_TEXT.len() as u64),
            DEFAULT_TEXT_NAME.to_string(),
        ),
    };
    let reg = super::discover()?;
    let backend = choose_backend(&reg, a.backend.as_deref())?;
    let be = backend.as_ref();
    let label = backend_label(be);
    let save = a
        .save_table
        .as_deref()
        .map(|p| TableOut::open(p, a.force))
        .transpose()?;
    let table = load_table(&a, save)?;
    if table.rows == 0 {
        return Err(anyhow!(
            "the table {} has no rows: nothing to gather from",
            table.source
        ));
    }
    // A chunk never needs more bytes than the text has; the batch must fit memory (issue 16's
    // rule for impossible sizes: an error naming the largest that fits).
    let chunk_bytes = chunk_for(a.chunk_bytes, total);
    let per_token = batch_bytes_per_token(&table);
    let avail = available_memory().unwrap_or(8 << 30);
    let batch_tokens = match a.batch_tokens {
        Some(n) => {
            check_batch_fits(n, per_token, avail)?;
            (n, None)
        }
        None => default_batch_tokens(per_token, avail)?,
    };

    let sp = spinner("loading cl100k_base and building the compression table");
    let tok = Tokenizer::cl100k()?;
    sp.finish_and_clear();
    let layer = v41_flash::layer(0)?;
    let folded = tok.compression.vocab_size() as u64 > layer.vocab_size();
    let v = &tok.vocab;
    outln!(
        "substitution: tokenizer cl100k_base (tiktoken-rs, bundled) stands in for DeepSeek-V4.1's own (129,280 ids, V' {})",
        v41_flash::VOCAB_SIZE
    );
    outln!(
        "compression: {} ids scanned ({} regular, {} special, {} unassigned given keys of their own, {} not UTF-8 alone keyed by bytes) -> V' = {}",
        v.n_ids,
        v.regular,
        v.specials,
        v.unassigned.len(),
        v.partial_utf8,
        tok.compression.vocab_size()
    );
    if folded {
        outln!(
            "substitution: V' {} of cl100k exceeds the layer's {}: canonical ids folded with cid % {}",
            tok.compression.vocab_size(),
            v41_flash::VOCAB_SIZE,
            v41_flash::VOCAB_SIZE
        );
    } else {
        outln!(
            "canonical ids used as is: V' {} <= the layer's {}",
            tok.compression.vocab_size(),
            v41_flash::VOCAB_SIZE
        );
    }
    outln!(
        "layer: DeepSeek-V4.1-Flash Engram layer {} (N {}, K {}, multipliers {:?}, {} primes from {} to {}, R = {} rows, pad {})",
        v41_flash::LAYERS[0],
        layer.max_order(),
        layer.heads(),
        layer.multipliers(),
        layer.columns(),
        layer.primes().iter().min().copied().unwrap_or(0),
        layer.primes().iter().max().copied().unwrap_or(0),
        layer.rows(),
        layer.pad_id()
    );
    outln!("table: {} ({})", table.source, human_bytes(table.bytes() as f64));
    // Issue 16: only the implied size is chosen by memory; --rows and --table are the user's.
    let why_rows = if a.table.is_some() {
        "the table file's rows"
    } else if a.rows.is_some() {
        "rows as given by --rows"
    } else {
        "rows scaled to fit memory (the default table is 256 MiB; --rows to choose)"
    };
    outln!(
        "substitution: the real layer-1 table has {} rows x {} B (fp8 + scales); {why_rows}: row mod R (R = {})",
        v41_flash::ROWS[0],
        v41_flash::ROW_DIM + v41_flash::ROW_DIM / 32,
        table.rows
    );
    if let Some(n) = &batch_tokens.1 {
        outln!("note: {n}");
    }

    // Bind the table: host backends read it in place; device backends read host tables where they
    // support it, else get a device copy.
    let od = table.out_dtype();
    let host = is_host_backend(be);
    let host_ok = be
        .supports(&OpDesc::GatherRows {
            table: table.format,
            out: od,
            host_table: true,
        })
        .is_yes();
    let device_copy = if host || host_ok {
        None
    } else {
        let bytes = moehal_core::host::bytes(&table.buffer, "engram", "table")?;
        Some(upload_bytes(be, bytes)?)
    };
    let placement = if host {
        "table in host memory, read in place"
    } else if host_ok {
        "host table read by the device backend"
    } else {
        "table copied to device memory (no host-table gather on this backend)"
    };
    let tbuf = device_copy.as_ref().unwrap_or(&table.buffer);

    let opts = StreamOptions {
        chunk_bytes,
        batch_tokens: batch_tokens.0,
        ..StreamOptions::default()
    };
    let pb = progress_bytes(total.unwrap_or(0), "tokenizing, hashing and gathering");
    let rep = run_text(be, &tok, &layer, &table, tbuf, reader, opts, &mut |bytes, tokens| {
        pb.set_position(bytes);
        pb.set_message(format!("{tokens} tokens"));
    })?;
    pb.finish_and_clear();
    if rep.tokens == 0 {
        return Err(anyhow!("{source}: no tokens"));
    }
    let c = layer.columns();
    outln!("text: {source}, {} bytes, {} tokens", rep.bytes, rep.tokens);
    outln!(
        "bounded memory: {} chunk(s) of at most {} of text, {} batch(es) of at most {} tokens (gather output buffer {}, at most {} token ids held at once){}",
        rep.chunks,
        human_bytes(chunk_bytes as f64),
        rep.batches,
        batch_tokens.0,
        human_bytes(rep.max_out_bytes as f64),
        rep.max_tokens_in_flight,
        if rep.cuts_inside_lines > 0 {
            format!(
                "; {} chunk(s) cut inside a line (no line break in {} of text): tokens at those cuts may differ from the whole text's",
                rep.cuts_inside_lines,
                human_bytes(chunk_bytes as f64)
            )
        } else {
            String::new()
        }
    );
    // Issue 16: on the reference itself the comparisons are a determinism check, said as `moe`
    // says it, not "vs reference: exact".
    let same = be.name() == "reference";
    let vs = if same {
        "vs a second run of the reference (the reference against itself: a determinism check)"
    } else {
        "vs reference"
    };
    outln!(
        "engram_hash on {label}: {} tokens x {} columns in {} ({:.2e} tokens/s); {vs}: {}",
        rep.tokens,
        c,
        human_seconds(rep.hash_seconds),
        rep.tokens as f64 / rep.hash_seconds,
        if rep.hash_exact { "exact" } else { "DIFFERENT" }
    );
    let per: Vec<String> = rep
        .distinct
        .iter()
        .enumerate()
        .map(|(i, d)| format!("order {}: {d} of {}", i + 2, rep.tokens * layer.heads() as u64))
        .collect();
    outln!("distinct hashed rows per order: {}", per.join(", "));
    let gathered = rep.gathered_rows as f64 * (table.dim * od.size()) as f64;
    outln!(
        "gather_rows on {label} ({placement}): {} rows of {} -> {od} in {} batch(es), {} in all: {:.3e} rows/s, {:.2} GB/s gathered",
        rep.gathered_rows,
        table.dim,
        rep.batches,
        human_seconds(rep.gather_seconds),
        rep.gathered_rows as f64 / rep.gather_seconds,
        gathered / rep.gather_seconds / 1e9
    );
    // Issue 16: a verdict over no compared value is not a pass.
    if rep.tokens == 0 || rep.sampled == 0 {
        outln!(
            "gather {vs}: NOT CHECKED: no token was {} (the text gave {} tokens); an equality over nothing is not a pass",
            if rep.tokens == 0 { "hashed" } else { "sampled" },
            rep.tokens
        );
        return Ok(ExitCode::FAILURE);
    }
    outln!(
        "gather {vs} on {} sampled tokens: {}",
        rep.sampled,
        if rep.sample_bad == 0 {
            "bitwise equal".to_string()
        } else {
            format!("{} tokens DIFFER", rep.sample_bad)
        }
    );
    Ok(if rep.hash_exact && rep.sample_bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: the implied --batch-tokens (2048) is scaled to what fits, with a note; 2048 when
    /// it fits (no note); an error only when not one token fits. (An explicit value over the limit
    /// is [`check_batch_fits`]'s error.)
    #[test]
    fn the_default_batch_is_scaled_to_fit_with_a_note() {
        let per_token = 96u128 << 20;
        let avail = 22u64 << 30;
        let (n, note) = default_batch_tokens(per_token, avail).unwrap();
        let max = (avail as f64 * BATCH_MEMORY_SHARE) as u128 / per_token;
        assert_eq!(n as u128, max);
        assert!(n < 2048 && n > 0);
        let note = note.expect("a note when scaled");
        assert!(
            note.contains("default 2048 scaled to fit memory") && !note.contains("--batch-tokens"),
            "{note}"
        );
        assert!(check_batch_fits(n, per_token, avail).is_ok());
        assert!(check_batch_fits(2048, per_token, avail)
            .unwrap_err()
            .to_string()
            .contains("--batch-tokens 2048"));
        assert_eq!(default_batch_tokens(1024, avail).unwrap(), (2048, None));
        assert!(default_batch_tokens(per_token, 1 << 20).is_err());
    }

    #[test]
    fn chunks_never_exceed_the_text_and_batches_must_fit_memory() {
        assert_eq!(chunk_for(usize::MAX, Some(1000)), 1000);
        assert_eq!(chunk_for(usize::MAX, Some(0)), 4);
        assert_eq!(chunk_for(256, Some(1 << 40)), 256);
        // A pipe's size is unknown: the chunk stays as asked (it once became 4 bytes, which
        // re-tokenized the text in 4-byte pieces).
        assert_eq!(chunk_for(256 << 10, None), 256 << 10);
        assert_eq!(
            chunk_for(usize::MAX, Some(u64::MAX)),
            usize::try_from(u64::MAX).unwrap_or(usize::MAX)
        );
        let per = 12_288u128;
        let avail = 10u64 << 30;
        let max = (avail as f64 * BATCH_MEMORY_SHARE) as u128 / per;
        assert!(check_batch_fits(max as usize, per, avail).is_ok());
        let e = check_batch_fits(max as usize + 1, per, avail).unwrap_err().to_string();
        assert!(e.contains(&format!("the maximum allowed here is {max}")), "{e}");
        let e = check_batch_fits(usize::MAX, per, avail).unwrap_err().to_string();
        assert!(e.contains("--batch-tokens 18446744073709551615"), "{e}");
    }
}
