//! Bounded-memory Engram over a text of any length (issue 16 item 1): the text is read in chunks
//! of at most [`StreamOptions::chunk_bytes`] bytes, and tokens are hashed and gathered
//! [`StreamOptions::batch_tokens`] at a time, so the memory in use depends on those two limits and
//! on the table, never on the length of the text.
//!
//! Chunks end just after a line break that is followed by a printable ASCII character: cl100k's
//! pre-tokenizer always splits there (no piece continues past a `\n` into a non-space character),
//! so the tokens of the chunks are the tokens of the whole text. A chunk with no such place in its
//! window is cut at the last UTF-8 character boundary instead, and counted
//! ([`StreamReport::cuts_inside_lines`]); the tokens next to such a cut may differ from those of
//! the whole text. The hash is exact across batches: each batch is hashed with the `N - 1`
//! previous ids as its history (OPS.md §4).

use std::io::Read;

use moehal_core::engram::EngramLayer;
use moehal_core::ops::{EngramHash, GatherRows};
use moehal_core::{Backend, BackendExt, Buffer, DType, Error, Reference, Result};

use super::{canonical_for_layer, fold_rows, reference_gather, EngramTable, Tokenizer, OP};

/// Limits of [`run_text`].
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Bytes of text read and tokenized at a time (at least 4).
    pub chunk_bytes: usize,
    /// Tokens hashed and gathered at a time (at least 1): the gather output holds
    /// `batch_tokens * C * D` elements.
    pub batch_tokens: usize,
    /// Tokens per batch checked bitwise against the reference gather (spread over the batch).
    pub sample_per_batch: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            chunk_bytes: 256 << 10,
            batch_tokens: 2048,
            sample_per_batch: 16,
        }
    }
}

/// What [`run_text`] measured and found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamReport {
    /// Bytes of text read.
    pub bytes: u64,
    /// Tokens.
    pub tokens: u64,
    /// Text chunks tokenized.
    pub chunks: usize,
    /// Chunks cut where no line break allowed a clean cut (see the module doc).
    pub cuts_inside_lines: usize,
    /// Batches hashed and gathered.
    pub batches: usize,
    /// Seconds of `engram_hash` on the backend (upload and download included).
    pub hash_seconds: f64,
    /// Whether every batch's hashed rows equal the reference's.
    pub hash_exact: bool,
    /// Distinct hashed rows per order `n = 2..=N` (over the `K` heads of the order).
    pub distinct: Vec<u64>,
    /// Seconds of `gather_rows` on the backend (synchronize included).
    pub gather_seconds: f64,
    /// Rows gathered (`tokens * C`).
    pub gathered_rows: u64,
    /// Tokens checked bitwise against the reference gather.
    pub sampled: usize,
    /// Sampled tokens whose gathered rows differ from the reference.
    pub sample_bad: usize,
    /// The most token ids held at once (one chunk's raw ids; at most `chunk_bytes`, since a
    /// token has at least one byte).
    pub max_tokens_in_flight: usize,
    /// The largest gather output buffer allocated, bytes.
    pub max_out_bytes: usize,
}

/// Reads UTF-8 text in chunks of at most `max` bytes, cut as described in the module doc.
pub struct TextChunks<R: Read> {
    reader: R,
    max: usize,
    carry: Vec<u8>,
    offset: u64,
    eof: bool,
}

impl<R: Read> TextChunks<R> {
    /// Chunks of at most `max` bytes (`max >= 4`, the longest UTF-8 character).
    pub fn new(reader: R, max: usize) -> Self {
        TextChunks {
            reader,
            max: max.max(4),
            carry: Vec::new(),
            offset: 0,
            eof: false,
        }
    }

    /// The next chunk and whether it was cut inside a line (`None` at the end).
    ///
    /// # Errors
    /// `InvalidArgument` (field `text`) for a read error or bytes that are not UTF-8 (with the byte
    /// offset).
    pub fn next_chunk(&mut self) -> Result<Option<(String, bool)>> {
        // The window grows by at most READ_STEP bytes per read, so memory follows the text
        // actually read, never `max` itself (`--chunk-bytes 18446744073709551615` once tried to
        // allocate that many bytes up front).
        const READ_STEP: usize = 1 << 20;
        while !self.eof && self.carry.len() < self.max {
            let have = self.carry.len();
            let want = (self.max - have).min(READ_STEP);
            self.carry.try_reserve(want).map_err(|_| Error::OutOfMemory {
                backend: "host".into(),
                bytes: have.saturating_add(want) as u64,
            })?;
            self.carry.resize(have + want, 0);
            let n = loop {
                match self.reader.read(&mut self.carry[have..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.carry.truncate(have);
                        return Err(Error::invalid(OP, "text", format!("read error: {e}")));
                    }
                }
            };
            self.carry.truncate(have + n);
            self.eof = n == 0;
        }
        // A full window: one byte more says whether the text ends there (a window exactly the
        // size of the text is then one clean chunk, not a cut inside its last line) and what
        // follows a line break at the window's end. Cuts stay at or below `max`.
        if !self.eof && self.carry.len() == self.max {
            let mut one = [0u8; 1];
            let n = loop {
                match self.reader.read(&mut one) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::invalid(OP, "text", format!("read error: {e}"))),
                }
            };
            if n == 0 {
                self.eof = true;
            } else {
                self.carry.push(one[0]);
            }
        }
        if self.carry.is_empty() {
            return Ok(None);
        }
        let (cut, inside) = if self.eof {
            (self.carry.len(), false)
        } else {
            let b = &self.carry;
            match (1..b.len())
                .rev()
                .find(|&p| b[p - 1] == b'\n' && b[p].is_ascii_graphic())
            {
                Some(p) => (p, false),
                None => {
                    // The last character boundary (a byte that is not 10xxxxxx).
                    let p = (1..b.len()).rev().find(|&p| b[p] & 0xC0 != 0x80).unwrap_or(b.len());
                    (p, true)
                }
            }
        };
        let rest = self.carry.split_off(cut);
        let bytes = std::mem::replace(&mut self.carry, rest);
        let start = self.offset;
        self.offset += bytes.len() as u64;
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::invalid(
                OP,
                "text",
                format!(
                    "not UTF-8 at byte offset {}",
                    start + e.utf8_error().valid_up_to() as u64
                ),
            )
        })?;
        Ok(Some((text, inside)))
    }
}

/// `engram_hash` of `ids` on `backend` with `history` (the ids before them): `[T, C]` rows.
///
/// # Errors
/// The op's errors.
pub fn hash_with_history(backend: &dyn Backend, layer: &EngramLayer, ids: &[i64], history: &[i64]) -> Result<Vec<i64>> {
    let t = ids.len();
    let c = layer.columns();
    let idb = backend.upload_slice(ids)?;
    let mut rows = backend.alloc(t * c * 8)?;
    let args = EngramHash {
        layer,
        ids: idb.view(DType::I64, &[t]),
        positions: None,
        alive: None,
        history,
        rows: rows.view_mut(DType::I64, &[t, c]),
    };
    backend.engram_hash(args.validate()?)?;
    backend.download_vec(&rows, t * c)
}

/// A bit per row of the layer, per order: distinct counts in memory fixed by the layer.
struct Distinct {
    bits: Vec<Vec<u64>>,
    count: Vec<u64>,
}

impl Distinct {
    fn new(layer: &EngramLayer) -> Result<Self> {
        let words = usize::try_from(layer.rows().div_ceil(64)).map_err(|_| {
            Error::unsupported(
                OP,
                "any backend",
                "the layer has more rows than this machine's address space holds",
            )
        })?;
        let orders = layer.max_order() - 1;
        Ok(Distinct {
            // Zeroed allocations: the OS backs only the pages a row falls in.
            bits: (0..orders).map(|_| vec![0u64; words]).collect(),
            count: vec![0; orders],
        })
    }

    fn add(&mut self, layer: &EngramLayer, rows: &[i64]) {
        let (c, k) = (layer.columns(), layer.heads());
        for r in rows.chunks_exact(c) {
            for (o, (bits, count)) in self.bits.iter_mut().zip(&mut self.count).enumerate() {
                for &x in &r[o * k..(o + 1) * k] {
                    let x = x as u64;
                    let (w, b) = ((x / 64) as usize, x % 64);
                    if let Some(word) = bits.get_mut(w) {
                        if *word & (1 << b) == 0 {
                            *word |= 1 << b;
                            *count += 1;
                        }
                    }
                }
            }
        }
    }
}

/// Tokenize `text`, hash and gather it on `backend` in bounded chunks and batches, checking the
/// hash (every row) and a sample of the gather (bitwise) against the reference.
///
/// `table_buf` is `table`'s bytes as `backend` reads them (the table's own buffer for host
/// backends, or a device copy). `progress(bytes_read, tokens)` is called after every batch.
///
/// # Errors
/// A text that is not UTF-8 or cannot be read (with the byte offset), a raw id outside the
/// tokenizer's table, or the ops' errors.
pub fn run_text(
    backend: &dyn Backend,
    tok: &Tokenizer,
    layer: &EngramLayer,
    table: &EngramTable,
    table_buf: &Buffer,
    text: impl Read,
    opts: StreamOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<StreamReport> {
    // A chunk of `chunk_bytes` bytes has at most that many tokens (a token has at least one
    // byte), and batches never span chunks: no batch holds more tokens than that.
    let batch = opts.batch_tokens.max(1).min(opts.chunk_bytes.max(4));
    let c = layer.columns();
    let od = table.out_dtype();
    let row_bytes = c * table.dim * od.size();
    batch.checked_mul(row_bytes).ok_or_else(|| {
        Error::invalid(
            OP,
            "batch_tokens",
            format!("{batch} tokens of {row_bytes} output bytes each overflow the address space"),
        )
    })?;
    // The gather output and its host copy are sized by the largest batch actually seen, not by
    // the limit: a short text with a huge --batch-tokens holds only its own tokens' rows.
    let mut out: Option<Buffer> = None;
    let mut got: Vec<u8> = Vec::new();
    let mut rep = StreamReport {
        hash_exact: true,
        ..StreamReport::default()
    };
    let mut distinct = Distinct::new(layer)?;
    let mut history: Vec<i64> = Vec::new();
    let keep = layer.max_order() - 1;
    let reference = Reference::new();
    let mut chunks = TextChunks::new(text, opts.chunk_bytes);
    while let Some((chunk, inside)) = chunks.next_chunk()? {
        rep.chunks += 1;
        rep.cuts_inside_lines += usize::from(inside);
        rep.bytes += chunk.len() as u64;
        let raw = tok.encode(&chunk);
        drop(chunk);
        rep.max_tokens_in_flight = rep.max_tokens_in_flight.max(raw.len());
        for part in raw.chunks(batch) {
            let (ids, _) = canonical_for_layer(tok, part, layer)?;
            let t = ids.len();
            let t0 = std::time::Instant::now();
            let rows = hash_with_history(backend, layer, &ids, &history)?;
            rep.hash_seconds += t0.elapsed().as_secs_f64();
            if rows != hash_with_history(&reference, layer, &ids, &history)? {
                rep.hash_exact = false;
            }
            distinct.add(layer, &rows);
            let start = ids.len().saturating_sub(keep);
            history.extend_from_slice(&ids[start..]);
            let drop_n = history.len().saturating_sub(keep);
            history.drain(..drop_n);

            let mapped = fold_rows(&rows, table.rows);
            let rbuf = backend.upload_slice(&mapped)?;
            let need = t * row_bytes;
            if need > rep.max_out_bytes {
                drop(out.take()); // free the smaller buffer first
                out = Some(backend.alloc(need)?);
                got.try_reserve_exact(need - got.len())
                    .map_err(|_| Error::OutOfMemory {
                        backend: "host".into(),
                        bytes: need as u64,
                    })?;
                got.resize(need, 0);
                rep.max_out_bytes = need;
            }
            let out = out
                .as_mut()
                .ok_or_else(|| Error::invalid(OP, "batch_tokens", "no output buffer"))?;
            let args = GatherRows {
                table: table_buf.view(table.format.storage_dtype(), &[table.rows, table.width]),
                format: table.format,
                rows: rbuf.view(DType::I64, &[t, c]),
                out: out.view_mut(od, &[t, c * table.dim]),
            };
            let t0 = std::time::Instant::now();
            backend.gather_rows(args.validate()?)?;
            backend.synchronize()?;
            rep.gather_seconds += t0.elapsed().as_secs_f64();
            rep.gathered_rows += (t * c) as u64;

            let step = t.div_ceil(opts.sample_per_batch.max(1)).max(1);
            let sample: Vec<usize> = (0..t).step_by(step).collect();
            let expect = reference_gather(table, &mapped, c, &sample)?;
            backend.download(out, 0, &mut got[..t * row_bytes])?;
            rep.sample_bad += sample
                .iter()
                .enumerate()
                .filter(|(i, &k)| got[k * row_bytes..(k + 1) * row_bytes] != expect[i * row_bytes..(i + 1) * row_bytes])
                .count();
            rep.sampled += sample.len();
            rep.tokens += t as u64;
            rep.batches += 1;
            progress(rep.bytes, rep.tokens);
        }
    }
    rep.distinct = distinct.count;
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::engram::{generate_table, DEFAULT_TEXT, ROW_DIM};
    use moehal_core::engram::v41_flash;

    /// The first (about) `n` bytes of the README, ending at a character boundary.
    fn head(n: usize) -> &'static str {
        let mut end = DEFAULT_TEXT.len().min(n);
        while !DEFAULT_TEXT.is_char_boundary(end) {
            end -= 1;
        }
        &DEFAULT_TEXT[..end]
    }

    fn chunks_of(text: &[u8], max: usize) -> Result<(Vec<String>, usize)> {
        let mut ch = TextChunks::new(text, max);
        let (mut v, mut inside) = (Vec::new(), 0);
        while let Some((c, cut_inside)) = ch.next_chunk()? {
            assert!(c.len() <= max.max(4), "{} > {max}", c.len());
            inside += usize::from(cut_inside);
            v.push(c);
        }
        Ok((v, inside))
    }

    #[test]
    fn chunks_cut_at_line_breaks_give_the_tokens_of_the_whole_text() {
        let tok = Tokenizer::cl100k().unwrap();
        let whole = tok.encode(DEFAULT_TEXT);
        for max in [7, 300, 4096] {
            let (chunks, inside) = chunks_of(DEFAULT_TEXT.as_bytes(), max).unwrap();
            assert_eq!(chunks.concat(), DEFAULT_TEXT, "max {max}");
            assert!(chunks.len() > 1, "max {max}");
            if max == 4096 {
                // Every README line is shorter than 4 KiB: every cut is a clean one.
                assert_eq!(inside, 0);
                let toks: Vec<u32> = chunks.iter().flat_map(|c| tok.encode(c)).collect();
                assert_eq!(toks, whole);
            }
        }
        // Multi-byte characters are never split, even without line breaks.
        let s = "é€😀".repeat(50);
        let (chunks, inside) = chunks_of(s.as_bytes(), 5).unwrap();
        assert_eq!(chunks.concat(), s);
        assert_eq!(inside, chunks.len() - 1);
    }

    #[test]
    fn a_window_the_size_of_the_text_is_one_clean_chunk() {
        let text = b"alpha beta\ngamma\n";
        let (chunks, inside) = chunks_of(text, text.len()).unwrap();
        assert_eq!((chunks.len(), inside), (1, 0), "{chunks:?}");
        // A line break at the very end of a full window is a clean cut when a letter follows.
        let (chunks, inside) = chunks_of(text, 11).unwrap();
        assert_eq!(chunks, ["alpha beta\n", "gamma\n"]);
        assert_eq!(inside, 0);
        // A huge window asks for memory as the text arrives, not for the window.
        let (chunks, _) = chunks_of(text, usize::MAX).unwrap();
        assert_eq!(chunks.concat().as_bytes(), text);
    }

    #[test]
    fn text_that_is_not_utf8_is_an_error_with_its_offset() {
        let mut bytes = b"hello\nworld\n".repeat(10);
        bytes[57] = 0xff;
        let e = chunks_of(&bytes, 16).unwrap_err();
        assert!(e.to_string().contains("not UTF-8 at byte offset 57"), "{e}");
    }

    #[test]
    fn batches_hash_exactly_as_one_pass() {
        let tok = Tokenizer::cl100k().unwrap();
        let layer = v41_flash::layer(0).unwrap();
        let (ids, _) = canonical_for_layer(&tok, &tok.encode(head(4000)), &layer).unwrap();
        let be = Reference::new();
        let once = hash_with_history(&be, &layer, &ids, &[]).unwrap();
        let keep = layer.max_order() - 1;
        let mut rows = Vec::new();
        for (b, part) in ids.chunks(7).enumerate() {
            let start = (b * 7).saturating_sub(keep);
            rows.extend(hash_with_history(&be, &layer, part, &ids[start..b * 7]).unwrap());
        }
        assert_eq!(rows, once);
    }

    #[test]
    fn memory_in_flight_does_not_grow_with_the_text() {
        let tok = Tokenizer::cl100k().unwrap();
        let layer = v41_flash::layer(0).unwrap();
        let table = generate_table(512, ROW_DIM, 1).unwrap();
        let be = Reference::new();
        let opts = StreamOptions {
            chunk_bytes: 2048,
            batch_tokens: 64,
            sample_per_batch: 4,
        };
        let run = |text: &str| {
            let mut calls = 0;
            let r = run_text(
                &be,
                &tok,
                &layer,
                &table,
                &table.buffer,
                text.as_bytes(),
                opts,
                &mut |_, _| calls += 1,
            )
            .unwrap();
            assert_eq!(calls, r.batches, "progress after every batch");
            r
        };
        let text = head(12_000);
        let cut = text.rfind('\n').unwrap() + 1;
        let text = &text[..cut];
        let small = run(text);
        let big = run(&text.repeat(4));
        let row_bytes = layer.columns() * ROW_DIM * 2;
        for r in [&small, &big] {
            assert!(r.hash_exact && r.sample_bad == 0 && r.sampled > 0);
            assert_eq!(r.max_out_bytes, 64 * row_bytes, "the gather buffer is one batch");
            assert!(r.max_tokens_in_flight <= 2048);
            assert_eq!(r.cuts_inside_lines, 0);
        }
        assert_eq!(
            big.tokens,
            4 * small.tokens,
            "a text ending in a line break repeats cleanly"
        );
        assert!(big.chunks >= 4 * small.chunks - 3 && big.batches > 3 * small.batches);
        // The whole text in one batch gives the same distinct counts as 64-token batches.
        let one = run_text(
            &be,
            &tok,
            &layer,
            &table,
            &table.buffer,
            text.as_bytes(),
            StreamOptions {
                chunk_bytes: 1 << 20,
                batch_tokens: 1 << 20,
                sample_per_batch: 4,
            },
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!((one.batches, one.tokens), (1, small.tokens));
        assert_eq!(one.distinct, small.distinct);
    }
}
