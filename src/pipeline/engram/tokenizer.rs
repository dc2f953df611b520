//! The tokenizer half of the Engram text pipeline (feature `cli`): cl100k BPE from
//! `tiktoken-rs`, the compression table over its vocabulary, and canonical ids for a layer.

use super::compress::CompressionTable;
use moehal_core::engram::EngramLayer;
use moehal_core::{Error, Result};

use super::OP;

/// The cl100k vocabulary as seen by the compression.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    /// Ids scanned: `0..n_ids` (the largest id of the tokenizer plus one).
    pub n_ids: u32,
    /// Regular (BPE) ids that decode to bytes.
    pub regular: usize,
    /// Special ids (`<|endoftext|>`, ...).
    pub specials: usize,
    /// Ids in `0..n_ids` with no token; each got a key of its own.
    pub unassigned: Vec<u32>,
    /// Ids whose bytes are not valid UTF-8 on their own (keyed by raw bytes).
    pub partial_utf8: usize,
}

/// The tokenizer and its compression table.
pub struct Tokenizer {
    bpe: tiktoken_rs::CoreBPE,
    /// Raw id → canonical id.
    pub compression: CompressionTable,
    /// What the scan found.
    pub vocab: Vocabulary,
}

/// The special tokens of cl100k_base, as tiktoken-rs defines them.
const CL100K_SPECIALS: [&str; 5] = [
    tiktoken_rs::ENDOFTEXT,
    tiktoken_rs::FIM_PREFIX,
    tiktoken_rs::FIM_MIDDLE,
    tiktoken_rs::FIM_SUFFIX,
    tiktoken_rs::ENDOFPROMPT,
];

impl Tokenizer {
    /// Load cl100k_base and build the compression table over all of its ids.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (op `engram`) if the bundled tokenizer fails to load.
    pub fn cl100k() -> Result<Self> {
        let bpe = tiktoken_rs::cl100k_base().map_err(|e| Error::invalid(OP, "tokenizer", e.to_string()))?;
        let special_ids: Vec<u32> = CL100K_SPECIALS
            .iter()
            .flat_map(|s| bpe.encode_with_special_tokens(s))
            .collect();
        let max_special = special_ids.iter().copied().max().unwrap_or(0);
        // Regular ids: scan until the first id past the specials' range that does not decode.
        let n_ids = max_special + 1;
        let mut unassigned = Vec::new();
        let mut partial = 0usize;
        let mut regular = 0usize;
        let compression = CompressionTable::build(n_ids, |id| match token_bytes(&bpe, id) {
            TokenBytes::Text(s) => {
                if !special_ids.contains(&id) {
                    regular += 1;
                }
                s.into_bytes()
            }
            TokenBytes::Partial(b) => {
                regular += 1;
                partial += 1;
                b
            }
            TokenBytes::Unassigned => {
                unassigned.push(id);
                // Invalid UTF-8 (so the key space is the raw-bytes one), unique per id, and no
                // cl100k token starts with these four bytes.
                let mut b = vec![0xff, 0xff, 0xff, 0xff];
                b.extend_from_slice(format!("moehal-unassigned-{id}").as_bytes());
                b
            }
        });
        let vocab = Vocabulary {
            n_ids,
            regular,
            specials: special_ids.len(),
            unassigned,
            partial_utf8: partial,
        };
        Ok(Tokenizer {
            bpe,
            compression,
            vocab,
        })
    }

    /// Raw ids of `text` (ordinary encoding: special-token text is encoded as plain text).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }
}

enum TokenBytes {
    Text(String),
    Partial(Vec<u8>),
    Unassigned,
}

/// The bytes of one token alone. `CoreBPE::decode` fails both for ids without a token and for
/// tokens that are not valid UTF-8 alone; only the latter have bytes (read through
/// `_decode_native_and_split`, which indexes the decoder and must only see assigned ids).
fn token_bytes(bpe: &tiktoken_rs::CoreBPE, id: u32) -> TokenBytes {
    match bpe.decode(vec![id]) {
        Ok(s) => TokenBytes::Text(s),
        Err(e) if e.to_string().contains("Invalid token") => TokenBytes::Unassigned,
        Err(_) => match bpe._decode_native_and_split(vec![id]).next() {
            Some(b) => TokenBytes::Partial(b),
            None => TokenBytes::Unassigned,
        },
    }
}

/// Canonical ids for the V4.1 layer (`V' = 99,092`): `cid` when `V'(cl100k) <= 99,092`, else
/// `cid % 99,092`. Returns the ids and whether they were folded.
///
/// # Errors
/// [`Error::InvalidArgument`] for a raw id outside the table, or (a bug) an id left out of range.
pub fn canonical_for_layer(tok: &Tokenizer, raw: &[u32], layer: &EngramLayer) -> Result<(Vec<i64>, bool)> {
    let mut ids = Vec::new();
    tok.compression.map_ids(raw, &mut ids)?;
    let v = layer.vocab_size();
    let fold = tok.compression.vocab_size() as u64 > v;
    if fold {
        for id in ids.iter_mut() {
            *id = (*id as u64 % v) as i64;
        }
    }
    moehal_core::ops::engram_hash::check_canonical_ids(OP, "ids", &ids, v)?;
    Ok((ids, fold))
}
