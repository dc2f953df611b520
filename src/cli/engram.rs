//! `moehal engram`: real text → cl100k_base BPE → canonical ids → DeepSeek-V4.1-Flash layer-1
//! `engram_hash` → `gather_rows` from a table, on a backend, checked against the reference.
//! Every substitution for what this machine cannot hold (the tokenizer, the 100 GB table) is
//! printed (see [`crate::pipeline::engram`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use moehal_core::engram::v41_flash;
use moehal_core::ops::{GatherRows, OpDesc};
use moehal_core::{BackendExt, DType};

use super::{choose_backend, spinner, CliError, CliResult};
use crate::pipeline::engram::{
    canonical_for_layer, distinct_per_order, fold_rows, generate_table, hash_on, open_table, reference_gather,
    rows_for_bytes, Tokenizer, DEFAULT_TABLE_BYTES, DEFAULT_TEXT, DEFAULT_TEXT_NAME, ROW_DIM,
};
use crate::pipeline::{human_bytes, human_seconds, is_host_backend, upload_bytes};
use crate::Registry;

/// Options of `moehal engram`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Text file to tokenize (default: this repository's README.md, embedded in the binary).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Backend (default: the first available non-reference backend, else the reference).
    #[arg(long)]
    backend: Option<String>,
    /// A safetensors file with a 2-D tensor named `table` (f32, bf16, f16, or u8 / F8_E4M3 rows of
    /// D + D/32 bytes), memory-mapped.
    #[arg(long, conflicts_with = "rows")]
    table: Option<PathBuf>,
    /// Rows of the generated bf16 table (default: 256 MiB worth of 256-wide rows).
    #[arg(long)]
    rows: Option<usize>,
    /// Seed of the generated table.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub(super) fn run(a: Args) -> CliResult {
    let (text, source) = match &a.text {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| CliError(format!("reading {}: {e}", p.display())))?,
            p.display().to_string(),
        ),
        None => (DEFAULT_TEXT.to_string(), DEFAULT_TEXT_NAME.to_string()),
    };
    let reg = Registry::discover();
    let backend = choose_backend(&reg, a.backend.as_deref())?;
    let be = backend.as_ref();

    let sp = spinner("loading cl100k_base and building the compression table");
    let tok = Tokenizer::cl100k()?;
    sp.finish_and_clear();
    let raw = tok.encode(&text);
    if raw.is_empty() {
        return Err(CliError(format!("{source}: no tokens")));
    }
    let layer = v41_flash::layer(0)?;
    let (ids, folded) = canonical_for_layer(&tok, &raw, &layer)?;
    let v = &tok.vocab;
    outln!("text: {source}, {} bytes, {} tokens", text.len(), raw.len());
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

    // Hash on the backend, exact against the reference.
    let t0 = Instant::now();
    let rows = hash_on(be, &layer, &ids)?;
    let hash_s = t0.elapsed().as_secs_f64();
    let want = hash_on(&moehal_core::Reference::new(), &layer, &ids)?;
    let hash_ok = rows == want;
    outln!(
        "engram_hash on {}: {} tokens x {} columns in {} ({:.2e} tokens/s); vs reference: {}",
        be.name(),
        ids.len(),
        layer.columns(),
        human_seconds(hash_s),
        ids.len() as f64 / hash_s,
        if hash_ok { "exact" } else { "DIFFERENT" }
    );
    let distinct = distinct_per_order(&layer, &rows);
    let per: Vec<String> = distinct
        .iter()
        .enumerate()
        .map(|(i, d)| format!("order {}: {d} of {}", i + 2, ids.len() * layer.heads()))
        .collect();
    outln!("distinct hashed rows per order: {}", per.join(", "));

    // The table.
    let table = match &a.table {
        Some(p) => open_table(p)?,
        None => {
            let r = a.rows.unwrap_or_else(|| rows_for_bytes(DEFAULT_TABLE_BYTES, ROW_DIM));
            let sp = spinner(format!("generating a {} table", human_bytes((r * ROW_DIM * 2) as f64)));
            let t = generate_table(r, ROW_DIM, a.seed)?;
            sp.finish_and_clear();
            t
        }
    };
    outln!("table: {} ({})", table.source, human_bytes(table.bytes() as f64));
    outln!(
        "substitution: the real layer-1 table has {} rows x {} B (fp8 + scales); rows scaled to fit memory: row mod R (R = {})",
        v41_flash::ROWS[0],
        v41_flash::ROW_DIM + v41_flash::ROW_DIM / 32,
        table.rows
    );
    if table.rows == 0 {
        return Err(format!("the table {} has no rows: nothing to gather from", table.source).into());
    }
    let mapped = fold_rows(&rows, table.rows);
    let (t, c) = (ids.len(), layer.columns());
    let od = table.out_dtype();

    // Bind the table: host backends read it in place; device backends read host tables where they
    // support it, else get a device copy.
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
    let rbuf = be.upload_slice(&mapped)?;
    let mut out = be.alloc(t * c * table.dim * od.size())?;
    let mut gather = || -> Result<f64, CliError> {
        let args = GatherRows {
            table: tbuf.view(table.format.storage_dtype(), &[table.rows, table.width]),
            format: table.format,
            rows: rbuf.view(DType::I64, &[t, c]),
            out: out.view_mut(od, &[t, c * table.dim]),
        };
        let t0 = Instant::now();
        be.gather_rows(args.validate()?)?;
        be.synchronize()?;
        Ok(t0.elapsed().as_secs_f64())
    };
    gather()?;
    let mut times: Vec<f64> = (0..5).map(|_| gather()).collect::<Result<_, _>>()?;
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    let gathered = (t * c * table.dim * od.size()) as f64;
    outln!(
        "gather_rows on {} ({placement}): {} rows of {} -> {od}, median {} of 5: {:.3e} rows/s, {:.2} GB/s gathered",
        be.name(),
        t * c,
        table.dim,
        human_seconds(med),
        (t * c) as f64 / med,
        gathered / med / 1e9
    );

    // Verify a sample of tokens against the reference, bitwise.
    let step = t.div_ceil(1024).max(1);
    let sample: Vec<usize> = (0..t).step_by(step).collect();
    let expect = reference_gather(&table, &mapped, c, &sample)?;
    let row_bytes = c * table.dim * od.size();
    let mut got = vec![0u8; t * row_bytes];
    be.download(&out, 0, &mut got)?;
    let bad = sample
        .iter()
        .enumerate()
        .filter(|(i, &tok)| got[tok * row_bytes..(tok + 1) * row_bytes] != expect[i * row_bytes..(i + 1) * row_bytes])
        .count();
    outln!(
        "gather vs reference on {} sampled tokens: {}",
        sample.len(),
        if bad == 0 {
            "bitwise equal".to_string()
        } else {
            format!("{bad} tokens DIFFER")
        }
    );
    Ok(if hash_ok && bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
