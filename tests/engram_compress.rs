//! The tokenizer compression to canonical ids (fact sheet §1.1): the normalizer's vectors and the
//! compression table's rules ([`moehal::pipeline::engram::compress`]).

use moehal::pipeline::engram::compress::{byte_level_string, normalize_token_text, CompressionTable};
use moehal_core::Error;

// ----------------------------------------------------------------------------------------------
// Normalizer and compression table
// ----------------------------------------------------------------------------------------------

#[test]
fn normalizer_vectors() {
    let cases: &[(&str, &str)] = &[
        (" The", "the"),
        ("THE", "the"),
        ("Thé", "the"),
        (" thé ", "the"),
        ("\n\n", " "),
        ("\t", " "),
        ("  \n ", " "),
        ("\u{a0}", " "),
        ("Ｆｕｌｌ", "full"),
        ("ﬁ", "fi"),
        ("Ⅻ", "xii"),
        ("İ", "i"),
        ("ä", "a"),
        ("a\u{308}", "a"),
        ("Straße", "straße"),
        ("<｜▁pad▁｜>", "<|▁pad▁|>"),
    ];
    for (input, want) in cases {
        assert_eq!(normalize_token_text(input), *want, "input {input:?}");
    }
    // Empty after normalization: falls back to the raw text.
    assert_eq!(normalize_token_text(""), "");
    assert_eq!(normalize_token_text("\u{301}"), "\u{301}"); // lone combining mark
    assert_eq!(normalize_token_text("\u{2028}"), "\u{2028}"); // not collapsed, stripped -> raw
                                                              // Inner whitespace runs collapse; outer are stripped.
    assert_eq!(normalize_token_text(" a \t\n b "), "a b");
}

fn toy_vocab() -> Vec<Vec<u8>> {
    let texts: [&[u8]; 12] = [
        b"<pad>",
        b" The",
        b"the",
        b"\n",
        b"\t\t",
        b"THE",
        b"\xe4",
        b"x",
        b"\xe4",
        b"Th\xc3\xa9",
        b"\xef\xbf\xbd",
        b"  ",
    ];
    texts.iter().map(|t| t.to_vec()).collect()
}

#[test]
fn compression_table_by_hand() {
    let vocab = toy_vocab();
    let table = CompressionTable::build(vocab.len() as u32, |t| vocab[t as usize].clone());
    // keys: 0 "<pad>", 1 "the", 2 "the", 3 " ", 4 " ", 5 "the", 6 bytes[e4], 7 "x", 8 bytes[e4],
    // 9 "the", 10 bytes[ef bf bd] (contains U+FFFD), 11 " ".
    assert_eq!(table.as_slice(), &[0, 1, 1, 2, 2, 1, 3, 4, 3, 1, 5, 2]);
    assert_eq!(table.vocab_size(), 6);
    assert_eq!(table.len(), 12);
    assert_eq!(table.canonical(9), Some(1));
    assert_eq!(table.canonical(12), None);
    let mut out = vec![42];
    table.map_ids(&[11, 0, 6], &mut out).unwrap();
    assert_eq!(out, [2, 0, 3]);
    let e = table.map_ids(&[1, 12], &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidArgument {
                op: "engram_compress",
                field: "ids",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(out, [2, 0, 3]);
}

#[test]
fn compression_table_byte_level_keys() {
    // Byte-level form: byte 0xE4 is printable Latin-1 'ä' in the GPT-2 map, byte 0x0A maps to
    // U+010A. A partial token [0xDF] keys as "ß", same as the full token "ß" (bytes c3 9f).
    assert_eq!(byte_level_string(b"\xe4 \n!"), "\u{e4}\u{120}\u{10a}!");
    let vocab: [&[u8]; 3] = [b"\xc3\x9f", b"\xdf", b"\xe4"];
    let t = CompressionTable::build_byte_level(3, |i| vocab[i as usize].to_vec());
    assert_eq!(t.as_slice(), &[0, 0, 1]);
    let t = CompressionTable::build(3, |i| vocab[i as usize].to_vec());
    assert_eq!(t.as_slice(), &[0, 1, 2]);
}

#[test]
fn compression_table_properties_on_random_vocab() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let pieces: [&[u8]; 10] = [
        b" ",
        b"\t",
        b"\n",
        b"A",
        b"a",
        b"\xc3\xa9",
        b"e\xcc\x81",
        b"\xe4",
        b"Z",
        b"\xc2\xa0",
    ];
    let vocab: Vec<Vec<u8>> = (0..2000)
        .map(|_| {
            let len = rng.gen_range(1..4);
            (0..len)
                .flat_map(|_| pieces[rng.gen_range(0..pieces.len())].to_vec())
                .collect()
        })
        .collect();
    let table = CompressionTable::build(vocab.len() as u32, |t| vocab[t as usize].clone());
    let map = table.as_slice();
    let mut max_seen: i64 = -1;
    for (t, &c) in map.iter().enumerate() {
        assert!(c as usize <= t, "cid({t}) = {c} > {t}");
        // Dense, first-appearance order: each id is at most one above the largest seen so far.
        assert!(c as i64 <= max_seen + 1);
        max_seen = max_seen.max(c as i64);
    }
    assert_eq!(max_seen + 1, table.vocab_size() as i64);
    // All whitespace-only tokens share one id.
    let ws: Vec<u32> = vocab
        .iter()
        .enumerate()
        .filter(|(_, v)| std::str::from_utf8(v).is_ok_and(|s| s.chars().all(char::is_whitespace)))
        .map(|(t, _)| map[t])
        .collect();
    assert!(ws.len() > 10);
    assert!(ws.iter().all(|&c| c == ws[0]));
    // Same normalized key <=> same id (for valid UTF-8 tokens).
    for a in 0..200 {
        for b in 0..200 {
            if let (Ok(x), Ok(y)) = (std::str::from_utf8(&vocab[a]), std::str::from_utf8(&vocab[b])) {
                let same = normalize_token_text(x) == normalize_token_text(y);
                assert_eq!(same, map[a] == map[b], "{x:?} vs {y:?}");
            }
        }
    }
}
