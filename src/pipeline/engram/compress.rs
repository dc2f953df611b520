//! The tokenizer compression to canonical ids (fact sheet §1.1, `reference/engram_and_routing.md`
//! of the shared documents): [`normalize_token_text`], [`byte_level_string`] and
//! [`CompressionTable`].
//!
//! Canonical ids are what `engram_hash` takes (OPS.md §4), but making them is the engine's
//! tokenizer side, not an op: this lives with the Engram text pipeline, and `moehal-core` keeps
//! only the hash, the layer and the check that ids are below `V'`.

use moehal_core::{Error, Result};

/// Op name used in errors raised by [`CompressionTable`].
pub const OP_COMPRESS: &str = "engram_compress";

/// Normalizes the decoded text of one token into its compression key (fact sheet §1.1).
///
/// NFKC → NFD → drop combining marks (`General_Category = Mark`) → lowercase (char by char, as the
/// HF `tokenizers` `Lowercase` normalizer: no final-sigma context) → collapse every run of
/// `{' ', '\t', '\r', '\n'}` to one space → if the result is exactly `" "` keep it, else strip
/// outer whitespace (Unicode `White_Space`). An empty result falls back to the raw text `s`.
///
/// Examples: `" The"`, `"THE"`, `"Thé"` → `"the"`; `"\n\n"`, `"\u{a0}"` → `" "`; `"ﬁ"` → `"fi"`.
pub fn normalize_token_text(s: &str) -> String {
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization;
    let nfkc: String = s.nfkc().collect();
    let mut out = String::with_capacity(nfkc.len());
    let mut in_ws_run = false;
    for c in nfkc
        .nfd()
        .filter(|&c| !is_combining_mark(c))
        .flat_map(char::to_lowercase)
    {
        if matches!(c, ' ' | '\t' | '\r' | '\n') {
            if !in_ws_run {
                out.push(' ');
            }
            in_ws_run = true;
        } else {
            out.push(c);
            in_ws_run = false;
        }
    }
    if out == " " {
        return out;
    }
    let stripped = out.trim();
    if stripped.is_empty() {
        s.to_string()
    } else {
        stripped.to_string()
    }
}

/// GPT-2 / byte-level-BPE byte-to-char map: the "raw vocab string" of a byte-level token.
///
/// Printable bytes `!..=~`, `¡..=¬`, `®..=ÿ` map to the same code point; the other 68 bytes map to
/// `U+0100 + i` in ascending byte order. Used by [`CompressionTable::build_byte_level`].
pub fn byte_level_string(bytes: &[u8]) -> String {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            b as char
        } else {
            let c = char::from_u32(256 + extra).unwrap_or('\u{FFFD}');
            extra += 1;
            c
        };
    }
    bytes.iter().map(|&b| table[b as usize]).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Text(String),
    Bytes(Vec<u8>),
}

/// Tokenizer compression table: raw token id → dense canonical id in `[0, V')` (fact sheet §1.1).
///
/// Built once per tokenizer. Canonical id = order of first appearance of the token's key in an
/// ascending scan of raw ids, so `canonical(t) <= t` and the ids are dense. Source: DeepSeek Engram
/// demo `CompressedTokenizer`, V4.1 ports (which refuse to run unless `V'` = 99,092 for the
/// DeepSeek tokenizer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionTable {
    map: Vec<u32>,
    vocab: usize,
}

impl CompressionTable {
    fn build_with(n_tokens: u32, mut key: impl FnMut(u32) -> Key) -> Self {
        let mut seen = std::collections::HashMap::new();
        let mut map = Vec::with_capacity(n_tokens as usize);
        for t in 0..n_tokens {
            let next = seen.len() as u32;
            map.push(*seen.entry(key(t)).or_insert(next));
        }
        Self { map, vocab: seen.len() }
    }

    /// Builds the table from `decode(t)`, the raw bytes of the single token `t` (specials kept, no
    /// clean-up of spaces), for `t = 0..n_tokens`.
    ///
    /// Key: if the bytes decode to text without U+FFFD, `normalize_token_text(text)`; otherwise
    /// (a partial UTF-8 token) the raw bytes, in a key space of their own. Upstream keys such a
    /// token by its raw vocab *string*, which shares the text key space; see
    /// [`CompressionTable::build_byte_level`] for that exact form.
    pub fn build(n_tokens: u32, mut decode: impl FnMut(u32) -> Vec<u8>) -> Self {
        Self::build_with(n_tokens, |t| {
            let bytes = decode(t);
            match String::from_utf8(bytes) {
                Ok(s) if !s.contains('\u{FFFD}') => Key::Text(normalize_token_text(&s)),
                Ok(s) => Key::Bytes(s.into_bytes()),
                Err(e) => Key::Bytes(e.into_bytes()),
            }
        })
    }

    /// As [`CompressionTable::build`], but a token whose bytes decode with U+FFFD is keyed by its
    /// byte-level-BPE vocab string ([`byte_level_string`]) in the same key space as normalized
    /// texts, as the upstream Python does for byte-level tokenizers such as DeepSeek's.
    pub fn build_byte_level(n_tokens: u32, mut decode: impl FnMut(u32) -> Vec<u8>) -> Self {
        Self::build_with(n_tokens, |t| {
            let bytes = decode(t);
            let text = String::from_utf8_lossy(&bytes);
            if text.contains('\u{FFFD}') {
                Key::Text(byte_level_string(&bytes))
            } else {
                Key::Text(normalize_token_text(&text))
            }
        })
    }

    /// Compressed vocabulary size `V'` (number of distinct keys).
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Raw vocabulary size (entries of the table).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when built for zero tokens.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The whole map, `[n_tokens]`, raw id → canonical id.
    pub fn as_slice(&self) -> &[u32] {
        &self.map
    }

    /// Canonical id of raw id `raw`; `None` if `raw >= n_tokens`.
    pub fn canonical(&self, raw: u32) -> Option<u32> {
        self.map.get(raw as usize).copied()
    }

    /// Maps raw ids `[T]` to canonical ids, replacing the contents of `out` with `T` `i64`s.
    ///
    /// Errors (op `"engram_compress"`, `out` untouched): a raw id `>= n_tokens`.
    pub fn map_ids(&self, raw: &[u32], out: &mut Vec<i64>) -> Result<()> {
        if let Some((i, &r)) = raw.iter().enumerate().find(|(_, &r)| r as usize >= self.map.len()) {
            return Err(Error::invalid(
                OP_COMPRESS,
                "ids",
                format!("raw id {r} at index {i} is not below n_tokens {}", self.map.len()),
            ));
        }
        out.clear();
        out.extend(raw.iter().map(|&r| self.map[r as usize] as i64));
        Ok(())
    }
}
