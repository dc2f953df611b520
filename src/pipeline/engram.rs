//! The Engram path on real text: tokenizer → canonical ids → `engram_hash` → `gather_rows`.
//!
//! - Tokenizer: OpenAI's `cl100k_base` BPE from `tiktoken-rs` (bundled, no network). DeepSeek-V4.1
//!   uses its own 129,280-id tokenizer whose compression gives `V' = 99,092`; that tokenizer is not
//!   bundled here, so cl100k stands in for it and every consequence is reported
//!   (`Substitutions` in the CLI).
//! - Canonical ids: [`compress::CompressionTable::build`] over every id of cl100k
//!   (each decoded alone to bytes; ids with no token get a key of their own).
//! - Hash: the real DeepSeek-V4.1-Flash layer-1 configuration
//!   ([`moehal_core::engram::v41_flash::layer`]`(0)`: multipliers, primes, `V' = 99,092`, `π = 2`).
//!   Canonical ids must be below 99,092; when cl100k's `V'` exceeds that, ids are folded with
//!   `cid % 99_092` (reported).
//! - Table: the real layer has 384,006,168 rows of 264 bytes (fp8 + scales, ~100 GB). Here the
//!   table is generated with `R` rows (or memory-mapped from a safetensors file) and each hashed row
//!   is mapped to `row % R` on the host (reported).

use std::collections::HashSet;
use std::path::Path;

use moehal_core::engram::{v41_flash, EngramLayer};
use moehal_core::host::HostMemory;
use moehal_core::ops::{EngramHash, GatherRows, TableFormat};
use moehal_core::{Backend, BackendExt, Buffer, DType, Error, Reference, Result};

use super::{fill_random, stream_seed};

const OP: &str = "engram";

pub mod compress;
pub mod header;
#[cfg(feature = "cli")]
mod tokenizer;
#[cfg(feature = "cli")]
pub use tokenizer::{canonical_for_layer, Tokenizer, Vocabulary};
#[cfg(feature = "cli")]
mod stream;
#[cfg(feature = "cli")]
pub use stream::{hash_with_history, run_text, StreamOptions, StreamReport, TextChunks};

/// The default text, embedded so it works from any directory: this repository's README.md.
pub const DEFAULT_TEXT: &str = include_str!("../../README.md");

/// The name of [`DEFAULT_TEXT`] as printed.
pub const DEFAULT_TEXT_NAME: &str = "README.md (embedded)";

/// Row width `D` of the DeepSeek-V4.1-Flash Engram table.
pub const ROW_DIM: usize = v41_flash::ROW_DIM;

/// Default size of a generated table (256 MiB).
pub const DEFAULT_TABLE_BYTES: usize = 256 << 20;

/// Distinct hashed rows per order `n = 2..=N` (over all `K` heads of the order).
pub fn distinct_per_order(layer: &EngramLayer, rows: &[i64]) -> Vec<usize> {
    let (c, k) = (layer.columns(), layer.heads());
    (2..=layer.max_order())
        .map(|n| {
            let lo = (n - 2) * k;
            let set: HashSet<i64> = rows
                .chunks_exact(c)
                .flat_map(|r| r[lo..lo + k].iter().copied())
                .collect();
            set.len()
        })
        .collect()
}

/// A table in host memory (generated, or memory-mapped from a file).
pub struct EngramTable {
    /// The bytes, `[rows, width]` of `format.storage_dtype()`, host memory.
    pub buffer: Buffer,
    /// Storage format.
    pub format: TableFormat,
    /// Rows R.
    pub rows: usize,
    /// Stored row width (elements; bytes for fp8).
    pub width: usize,
    /// Row dim D of the output.
    pub dim: usize,
    /// Where it came from, for the report.
    pub source: String,
}

impl EngramTable {
    /// Bytes of the table.
    pub fn bytes(&self) -> usize {
        self.rows * self.width * self.format.storage_dtype().size()
    }
    /// The output dtype of a gather from this table (bf16 for fp8 tables).
    pub fn out_dtype(&self) -> DType {
        match self.format {
            TableFormat::Fp8E4m3Ue8m0 => DType::BF16,
            f => f.storage_dtype(),
        }
    }
}

/// Rows of a generated bf16 table of about `bytes` bytes with rows of `dim` elements.
pub fn rows_for_bytes(bytes: usize, dim: usize) -> usize {
    (bytes / (dim * 2)).max(1)
}

/// A seeded bf16 table `[rows, dim]`, uniform in `[-1, 1)`.
///
/// # Errors
/// [`Error::OutOfMemory`] when the host allocation fails; `rows == 0` is invalid.
pub fn generate_table(rows: usize, dim: usize, seed: u64) -> Result<EngramTable> {
    if rows == 0 || dim == 0 {
        return Err(Error::invalid(
            OP,
            "rows",
            "a table needs at least one row and one column",
        ));
    }
    let bytes = rows
        .checked_mul(dim * 2)
        .ok_or_else(|| Error::invalid(OP, "rows", format!("{rows} rows of {dim} bf16 overflow")))?;
    let mut mem = HostMemory::zeroed(bytes)?;
    fill_random(DType::BF16, mem.bytes_mut()?, 1.0, stream_seed(seed, 200), 0)?;
    Ok(EngramTable {
        buffer: Buffer::new(Box::new(mem)),
        format: TableFormat::BF16,
        rows,
        width: dim,
        dim,
        source: format!("generated bf16 [{rows}, {dim}], seeded uniform [-1, 1)"),
    })
}

/// The tensor `table` of a safetensors file, memory-mapped read-only (f32, bf16, f16, or u8 /
/// F8_E4M3 as `fp8_e4m3_ue8m0` rows of `D + D/32` bytes). Misaligned data is copied once into an
/// aligned host buffer (reported in `source`).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the problem: unreadable file, no tensor `table`, not 2-D,
/// unsupported dtype, bad fp8 row width.
pub fn open_table(path: &Path) -> Result<EngramTable> {
    let bad = |msg: String| Error::invalid(OP, "table", format!("{}: {msg}", path.display()));
    // What the path is, before it is opened: opening a FIFO blocks until a writer appears.
    let md = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if let Some(what) = not_a_regular_file(&md) {
        return Err(bad(what));
    }
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    // The header is checked here first, so that every malformed file gets a sentence with sizes
    // and offsets instead of the safetensors crate's error code.
    if let Some(msg) = safetensors_header_problem(&file, md.len()) {
        return Err(bad(msg));
    }
    // SAFETY-free: memmap2's map is unsafe only if the file is changed while mapped; we map
    // read-only through the safe wrapper below.
    let map = map_readonly(&file).map_err(|e| bad(format!("cannot memory-map the file: {e}")))?;
    // Our own header parser: it knows every dtype of the format, so another tensor's dtype
    // (an F8_E8M0 scale tensor) never makes the table unreadable.
    let head = header::parse(&map).map_err(bad)?;
    let info = head.get("table").ok_or_else(|| {
        let names: Vec<&str> = head.tensors.iter().take(8).map(|t| t.name.as_str()).collect();
        bad(format!(
            "no tensor named `table` (the file has {} tensor(s){}{})",
            head.tensors.len(),
            if names.is_empty() { "" } else { ": " },
            names.join(", ")
        ))
    })?;
    if info.shape.len() != 2 {
        return Err(bad(format!(
            "tensor `table` has shape {:?}, expected [R, W]",
            info.shape
        )));
    }
    let format = match info.dtype.as_str() {
        "F32" => TableFormat::F32,
        "BF16" => TableFormat::BF16,
        "F16" => TableFormat::F16,
        "U8" | "F8_E4M3" => TableFormat::Fp8E4m3Ue8m0,
        other => {
            return Err(bad(format!(
                "tensor `table` has dtype {other}, which the Engram gather does not read (supported: F32, BF16, F16, or U8 / F8_E4M3 rows of D + D/32 bytes)"
            )))
        }
    };
    let too_big = |what: &str| {
        bad(format!(
            "tensor `table` {:?}: {what} exceeds this machine's address space",
            info.shape
        ))
    };
    let rows = usize::try_from(info.shape[0]).map_err(|_| too_big("the row count"))?;
    let width = usize::try_from(info.shape[1]).map_err(|_| too_big("the row width"))?;
    let dim = format.row_dim(width).ok_or_else(|| {
        bad(format!(
            "fp8 rows of {width} bytes are not D + D/32 with D divisible by 32"
        ))
    })?;
    // An empty table has nothing to gather: one rule for 0 rows and 0 columns, naming the table
    // and its shape (0 columns once passed here and was blamed on `--batch-tokens` later).
    if rows == 0 || dim == 0 {
        return Err(bad(format!(
            "tensor `table` has shape {:?} ({} rows of {} values): an empty table, nothing to gather (a table needs at least 1 row and 1 column)",
            info.shape, rows, dim
        )));
    }
    // The header is checked against the file: the offsets lie inside it (so they fit a usize).
    let at = |off: u64| usize::try_from(8 + head.len + off).map_err(|_| too_big("the data offset"));
    let (start, end) = (at(info.data_offsets.0)?, at(info.data_offsets.1)?);
    let want = rows
        .checked_mul(width)
        .and_then(|n| n.checked_mul(format.storage_dtype().size()));
    if end > map.len() || Some(end - start) != want {
        return Err(bad(format!(
            "tensor `table` {:?} [{rows}, {width}] needs {} bytes, but its data_offsets [{}, {}) span {} bytes at file offsets [{start}, {end}) of a {}-byte file",
            info.dtype,
            want.map_or_else(|| "more than 2^64".to_string(), |w| w.to_string()),
            info.data_offsets.0,
            info.data_offsets.1,
            end.saturating_sub(start),
            map.len()
        )));
    }
    let align = format.storage_dtype().size();
    let aligned = (map.as_ptr() as usize + start) % align == 0;
    let (buffer, how) = if aligned {
        let owner = MapSlice { map, start, end };
        (
            Buffer::new(Box::new(HostMemory::from_owner(owner))),
            "memory-mapped in place",
        )
    } else {
        let mut mem = HostMemory::zeroed(end - start)?;
        mem.bytes_mut()?.copy_from_slice(&map[start..end]);
        (
            Buffer::new(Box::new(mem)),
            "copied to an aligned buffer (data misaligned in the file)",
        )
    };
    Ok(EngramTable {
        buffer,
        format,
        rows,
        width,
        dim,
        source: format!(
            "{} tensor `table` {} [{rows}, {width}], {how}",
            path.display(),
            format.name()
        ),
    })
}

/// Why a safetensors input (an Engram `--table`, a `--weights` checkpoint) whose metadata is `md`
/// cannot be read, or `None` for a regular file: `"is a directory, not a safetensors file"`,
/// `"is a FIFO (named pipe), not a safetensors file: ..."`, a character or block device, a socket.
/// Such inputs are memory-mapped, which only a regular file can be; checked on the metadata,
/// before the file is opened, since opening a FIFO blocks until some process writes to it and a
/// device such as `/dev/zero` never ends (issue 16: `--weights FIFO` hung silently).
pub(crate) fn not_a_regular_file(md: &std::fs::Metadata) -> Option<String> {
    let ft = md.file_type();
    if ft.is_file() {
        return None;
    }
    let what = if ft.is_dir() {
        "a directory"
    } else {
        special_file_kind(&ft)
    };
    Some(format!(
        "is {what}, not a safetensors file (it is memory-mapped, so it must be a regular file)"
    ))
}

#[cfg(unix)]
fn special_file_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(not(unix))]
fn special_file_kind(_ft: &std::fs::FileType) -> &'static str {
    "not a regular file"
}

/// The safetensors header limit (the `safetensors` crate refuses larger headers).
const MAX_HEADER: u64 = 100_000_000;

/// What is wrong with the first `8 + N` bytes of a safetensors file of `len` bytes (N = the
/// little-endian u64 at offset 0), in words with sizes and offsets; `None` if they look valid.
pub(crate) fn safetensors_header_problem(file: &std::fs::File, len: u64) -> Option<String> {
    use std::io::Read;
    if len < 8 {
        return Some(format!(
            "not a safetensors file: {len} bytes, shorter than the 8-byte header length that starts one"
        ));
    }
    let mut n8 = [0u8; 8];
    if let Err(e) = (&*file).read_exact(&mut n8) {
        return Some(format!("cannot read the first 8 bytes: {e}"));
    }
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER {
        return Some(format!(
            "not a safetensors file: the header length at offset 0 reads {n} bytes, more than the {MAX_HEADER}-byte limit (file of {len} bytes)"
        ));
    }
    if n > len - 8 {
        return Some(format!(
            "truncated or not a safetensors file: the header length at offset 0 says {n} bytes of JSON at offsets [8, {}), but the file has {len} bytes",
            8 + n
        ));
    }
    let mut first = [0u8; 1];
    if n > 0 && (&*file).read_exact(&mut first).is_ok() && first[0] != b'{' {
        return Some(format!(
            "not a safetensors file: the {n}-byte header at offset 8 does not start with '{{' (byte {:#04x})",
            first[0]
        ));
    }
    None
}

fn map_readonly(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and private to this process; the file is a table the user
    // named, which moehal never writes. A concurrent writer could change the bytes under us,
    // as with any memory-mapped input, which is documented for `--table`.
    unsafe { memmap2::Mmap::map(file) }
}

struct MapSlice {
    map: memmap2::Mmap,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

/// `rows` mapped into a table of `r` rows: `row % r`.
pub fn fold_rows(rows: &[i64], r: usize) -> Vec<i64> {
    rows.iter().map(|&x| x.rem_euclid(r as i64)).collect()
}

/// `engram_hash` of `ids` on `backend`: `[T, C]` rows, downloaded.
///
/// # Errors
/// The op's errors.
pub fn hash_on(backend: &dyn Backend, layer: &EngramLayer, ids: &[i64]) -> Result<Vec<i64>> {
    let t = ids.len();
    let c = layer.columns();
    let idb = backend.upload_slice(ids)?;
    let mut rows = backend.alloc(t * c * 8)?;
    let args = EngramHash {
        layer,
        ids: idb.view(DType::I64, &[t]),
        positions: None,
        alive: None,
        history: &[],
        rows: rows.view_mut(DType::I64, &[t, c]),
    };
    backend.engram_hash(args.validate()?)?;
    backend.download_vec(&rows, t * c)
}

/// `gather_rows` on the reference for a subset of tokens: the expected output bytes of those
/// tokens (`[tokens.len(), C*D]` of the table's output dtype).
///
/// # Errors
/// The op's errors.
pub fn reference_gather(table: &EngramTable, rows: &[i64], c: usize, tokens: &[usize]) -> Result<Vec<u8>> {
    let be = Reference::new();
    let sample: Vec<i64> = tokens
        .iter()
        .flat_map(|&t| rows[t * c..(t + 1) * c].iter().copied())
        .collect();
    let s = tokens.len();
    let rb = be.upload_slice(&sample)?;
    let od = table.out_dtype();
    let mut out = be.alloc(s * c * table.dim * od.size())?;
    let args = GatherRows {
        table: table
            .buffer
            .view(table.format.storage_dtype(), &[table.rows, table.width]),
        format: table.format,
        rows: rb.view(DType::I64, &[s, c]),
        out: out.view_mut(od, &[s, c * table.dim]),
    };
    be.gather_rows(args.validate()?)?;
    let mut bytes = vec![0u8; out.len()];
    be.download(&out, 0, &mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_and_distinct() {
        assert_eq!(fold_rows(&[0, 5, 11, 384_006_167], 5), vec![0, 0, 1, 384_006_167 % 5]);
        let layer = moehal_core::engram::toy::layer().unwrap();
        // C = 4 columns: orders 2 (cols 0,1), 3 (cols 2,3).
        let rows = [1i64, 2, 3, 4, 1, 5, 3, 4];
        assert_eq!(distinct_per_order(&layer, &rows), vec![3, 2]);
    }

    #[test]
    fn generated_table_shape() {
        let t = generate_table(16, 32, 1).unwrap();
        assert_eq!(t.bytes(), 16 * 32 * 2);
        assert_eq!(t.out_dtype(), DType::BF16);
        assert!(generate_table(0, 32, 1).is_err());
    }
}
