//! Engram configuration, windows and hash (`OPS.md` §4). The tokenizer compression's tests moved
//! with it to the `moehal` crate (`tests/engram_compress.rs`).

use moehal_core::engram::{derive_primes, toy, v41_flash, window, windows, EngramLayer};
use moehal_core::Error;

/// The field of an `InvalidArgument` raised by op `op` (each call names itself: the hash
/// `engram_hash`, a layer's configuration `engram_layer`, `derive_primes` `engram_derive_primes`,
/// the V4.1 table `engram_layer_v41_flash`).
fn field_in(op: &str, e: Error) -> &'static str {
    match e {
        Error::InvalidArgument { op: got, field, .. } => {
            assert_eq!(got, op, "field {field}");
            field
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

fn field_of(e: Error) -> &'static str {
    field_in("engram_hash", e)
}

// ----------------------------------------------------------------------------------------------
// Toy vector (OPS.md §4, exact)
// ----------------------------------------------------------------------------------------------

#[test]
fn toy_layer_layout() {
    let l = toy::layer().unwrap();
    assert_eq!(l.primes(), &[11, 13, 17, 19]);
    assert_eq!(l.offsets(), &[0, 11, 24, 41]);
    assert_eq!(l.columns(), 4);
    assert_eq!(l.rows(), 60);
    assert_eq!(l.column(2, 0), Some(0));
    assert_eq!(l.column(2, 1), Some(1));
    assert_eq!(l.column(3, 0), Some(2));
    assert_eq!(l.column(3, 1), Some(3));
    assert_eq!(l.column(1, 0), None);
    assert_eq!(l.column(4, 0), None);
    assert_eq!(l.column(2, 2), None);
    assert_eq!(l.prime(3), Some(19));
    assert_eq!(l.offset(3), Some(41));
    assert_eq!(l.prime(4), None);
    assert_eq!(l.offset(4), None);
}

const TOY_ROWS: [[i64; 4]; 5] = [
    [9, 21, 28, 42],
    [8, 11, 39, 59],
    [0, 18, 25, 50],
    [8, 11, 24, 46],
    [5, 22, 37, 46],
];

#[test]
fn toy_vector_via_windows_and_hash_window() {
    let l = toy::layer().unwrap();
    let ids = [7i64, 3, 7, 3, 49];
    let mut w = vec![0u64; ids.len() * 3];
    windows(3, &ids, None, None, &[], l.pad_id(), &mut w).unwrap();
    // Windows from the fact sheet table (x_t, x_t-1, x_t-2), pad 2.
    assert_eq!(w, [7, 2, 2, 3, 7, 2, 7, 3, 7, 3, 7, 3, 49, 3, 7]);
    for t in 0..ids.len() {
        let mut rows = [0i64; 4];
        l.hash_window(&w[t * 3..t * 3 + 3], &mut rows).unwrap();
        assert_eq!(rows, TOY_ROWS[t], "t = {t}");
    }
}

#[test]
fn toy_vector_via_hash_sequence() {
    let l = toy::layer().unwrap();
    let ids = [7i64, 3, 7, 3, 49];
    let mut rows = vec![0i64; 20];
    l.hash_sequence(&ids, None, None, &[], &mut rows).unwrap();
    assert_eq!(rows, TOY_ROWS.concat());
    // Positions that never decrease and an all-alive mask change nothing.
    let mut rows2 = vec![-1i64; 20];
    l.hash_sequence(&ids, Some(&[0, 1, 2, 3, 4]), Some(&[1; 5]), &[], &mut rows2)
        .unwrap();
    assert_eq!(rows2, rows);
}

#[test]
fn toy_chunked_decode_with_history_matches_full_sequence() {
    // Hashing ids[2..] with history ids[..2] must equal rows 2.. of the full sequence.
    let l = toy::layer().unwrap();
    let ids = [7i64, 3, 7, 3, 49];
    let mut rows = vec![0i64; 12];
    l.hash_sequence(&ids[2..], None, None, &ids[..2], &mut rows).unwrap();
    assert_eq!(rows, TOY_ROWS[2..].concat());
    // History of one id (x_1 = 3): chunk t=0 sees (7, 3, pad) instead of the full (7, 3, 7); h_2
    // is the same so columns 0,1 match full t=2, h_3 differs. Later tokens see no history.
    let mut rows = vec![0i64; 12];
    l.hash_sequence(&ids[2..], None, None, &ids[1..2], &mut rows).unwrap();
    assert_eq!(rows[..2], TOY_ROWS[2][..2]);
    assert_ne!(rows[2..4], TOY_ROWS[2][2..]);
    assert_eq!(rows[4..], TOY_ROWS[3..].concat()[..]);
}

#[test]
fn hash_errors_write_nothing() {
    let l = toy::layer().unwrap();
    let mut rows = [-5i64; 10];
    let f = |e| field_of(e);
    assert_eq!(
        f(l.hash_sequence(&[1, 50], None, None, &[], &mut rows[..8]).unwrap_err()),
        "ids"
    );
    assert_eq!(
        f(l.hash_sequence(&[1, -1], None, None, &[], &mut rows[..8]).unwrap_err()),
        "ids"
    );
    assert_eq!(
        f(l.hash_sequence(&[1, 2], None, None, &[], &mut rows[..7]).unwrap_err()),
        "rows"
    );
    assert_eq!(
        f(l.hash_sequence(&[1, 2], Some(&[0]), None, &[], &mut rows[..8])
            .unwrap_err()),
        "positions"
    );
    assert_eq!(
        f(l.hash_sequence(&[1, 2], None, Some(&[1, 1, 1]), &[], &mut rows[..8])
            .unwrap_err()),
        "alive"
    );
    assert_eq!(
        f(l.hash_sequence(&[1, 2], None, None, &[1, 2, 3], &mut rows[..8])
            .unwrap_err()),
        "history"
    );
    assert_eq!(
        f(l.hash_sequence(&[1, 2], None, None, &[50], &mut rows[..8]).unwrap_err()),
        "history"
    );
    assert!(rows.iter().all(|&r| r == -5));
    let mut four = [-5i64; 4];
    assert_eq!(f(l.hash_window(&[1, 2], &mut four).unwrap_err()), "window");
    assert_eq!(f(l.hash_window(&[1, 2, 50], &mut four).unwrap_err()), "window");
    assert_eq!(f(l.hash_window(&[1, 2, 3], &mut four[..3]).unwrap_err()), "rows");
    assert_eq!(four, [-5; 4]);
    let mut w = [0u64; 3];
    assert_eq!(f(window(&[1, 2], None, None, &[], 2, 2, &mut w).unwrap_err()), "t");
    assert_eq!(
        f(window(&[1, 2], None, None, &[], 2, 0, &mut []).unwrap_err()),
        "window"
    );
    assert_eq!(
        f(windows(3, &[1, 2], None, None, &[], 2, &mut [0; 5]).unwrap_err()),
        "windows"
    );
}

// ----------------------------------------------------------------------------------------------
// Sticky blocking, hand-worked (pad = 0, N = 4, ids are 10 * t + 10 so they are recognisable)
// ----------------------------------------------------------------------------------------------

const PAD: u64 = 0;

fn all_windows(ids: &[i64], pos: Option<&[i64]>, alive: Option<&[u8]>, hist: &[i64]) -> Vec<Vec<u64>> {
    let n = 4;
    let mut flat = vec![99u64; ids.len() * n];
    windows(n, ids, pos, alive, hist, PAD, &mut flat).unwrap();
    let streamed: Vec<Vec<u64>> = flat.chunks(n).map(|c| c.to_vec()).collect();
    // The random-access form must agree token by token.
    for (t, s) in streamed.iter().enumerate() {
        let mut w = vec![99u64; n];
        window(ids, pos, alive, hist, PAD, t, &mut w).unwrap();
        assert_eq!(&w, s, "t = {t}");
    }
    streamed
}

#[test]
fn segments_from_positions() {
    let ids = [10, 20, 30, 40, 50, 60];
    // positions [0,1,2,0,1,1]: segments start at t=0, t=3 (0 <= 2) and t=5 (1 <= 1).
    let w = all_windows(&ids, Some(&[0, 1, 2, 0, 1, 1]), None, &[]);
    assert_eq!(w[0], [10, 0, 0, 0]); // segment start: nothing behind
    assert_eq!(w[1], [20, 10, 0, 0]);
    assert_eq!(w[2], [30, 20, 10, 0]); // t-3 < 0
    assert_eq!(w[3], [40, 0, 0, 0]); // new segment at 3: x_2 not visible
    assert_eq!(w[4], [50, 40, 0, 0]); // reaches back to 3, blocked at 2 (and deeper)
    assert_eq!(w[5], [60, 0, 0, 0]); // equal position also starts a segment
}

#[test]
fn dead_tokens_block_sticky() {
    let ids = [10, 20, 30, 40, 50, 60];
    // t=2 dead: its own window is all pad; t=3 is blocked at k=1 so k=2 (x_1) stays pad too.
    let w = all_windows(&ids, None, Some(&[1, 1, 0, 1, 1, 1]), &[]);
    assert_eq!(w[1], [20, 10, 0, 0]);
    assert_eq!(w[2], [0, 0, 0, 0]);
    assert_eq!(w[3], [40, 0, 0, 0]);
    assert_eq!(w[4], [50, 40, 0, 0]);
    assert_eq!(w[5], [60, 50, 40, 0]); // k=3 hits dead t=2
                                       // Nonzero means alive (mask value 2).
    let w = all_windows(&ids, None, Some(&[2, 1, 1, 1, 1, 1]), &[]);
    assert_eq!(w[3], [40, 30, 20, 10]);
}

#[test]
fn history_extends_only_first_segment() {
    let ids = [10, 20, 30, 40];
    let hist = [7, 8, 9]; // oldest first: x_-3 = 7, x_-2 = 8, x_-1 = 9
    let w = all_windows(&ids, Some(&[5, 6, 0, 1]), None, &hist);
    assert_eq!(w[0], [10, 9, 8, 7]);
    assert_eq!(w[1], [20, 10, 9, 8]);
    assert_eq!(w[2], [30, 0, 0, 0]); // new segment (0 <= 6): history unreachable
    assert_eq!(w[3], [40, 30, 0, 0]);
    // Shorter history: blocked right after it ends.
    let w = all_windows(&ids, None, None, &[9]);
    assert_eq!(w[0], [10, 9, 0, 0]);
    assert_eq!(w[1], [20, 10, 9, 0]);
    assert_eq!(w[2], [30, 20, 10, 9]);
    // A dead first token cuts the history off for t=1.
    let w = all_windows(&ids, None, Some(&[0, 1, 1, 1]), &hist);
    assert_eq!(w[0], [0, 0, 0, 0]);
    assert_eq!(w[1], [20, 0, 0, 0]);
    assert_eq!(w[2], [30, 20, 0, 0]);
}

#[test]
fn sticky_blocking_hashes_by_hand() {
    // N = 2, K = 1, all multipliers 1, prime 5, V' = 10, pad 0: h_2 = w_0 XOR w_1, row = h_2 mod 5.
    let l = EngramLayer::new(2, 1, vec![1, 1], vec![5], 10, 0).unwrap();
    let ids = [3i64, 6, 9, 4];
    // alive [1,1,0,1], history [5]:
    // t0: (3,5) -> 3^5=6 -> 1; t1: (6,3) -> 5 -> 0; t2 dead: (0,0) -> 0; t3: (4,pad 0) -> 4 -> 4.
    let mut rows = [0i64; 4];
    l.hash_sequence(&ids, None, Some(&[1, 1, 0, 1]), &[5], &mut rows)
        .unwrap();
    assert_eq!(rows, [1, 0, 0, 4]);
    // positions [0,1,1,2] instead: segment restarts at t2.
    // t0: (3,5) -> 1; t1: (6,3) -> 0; t2: (9,0) -> 9 -> 4; t3: (4,9) -> 13 -> 3.
    l.hash_sequence(&ids, Some(&[0, 1, 1, 2]), None, &[5], &mut rows)
        .unwrap();
    assert_eq!(rows, [1, 0, 4, 3]);
}

// ----------------------------------------------------------------------------------------------
// Prime derivation and V4.1-Flash data
// ----------------------------------------------------------------------------------------------

#[test]
fn derive_primes_toy() {
    assert_eq!(derive_primes(11, 3, 2, 1).unwrap(), vec![vec![11, 13, 17, 19]]);
    assert_eq!(
        field_in("engram_derive_primes", derive_primes(11, 1, 2, 1).unwrap_err()),
        "max_order"
    );
    assert_eq!(
        field_in("engram_derive_primes", derive_primes(11, 3, 0, 1).unwrap_err()),
        "heads"
    );
    assert!(derive_primes(11, 3, 2, 0).unwrap().is_empty());
}

#[test]
fn v41_flash_primes_and_sums() {
    let p = derive_primes(v41_flash::VOCAB_N, 4, 8, 2).unwrap();
    let expected: [[u64; 24]; 2] = [
        [
            16000057, 16000079, 16000081, 16000097, 16000121, 16000129, 16000133, 16000183, 16000189, 16000207,
            16000211, 16000253, 16000277, 16000289, 16000307, 16000321, 16000339, 16000381, 16000393, 16000399,
            16000403, 16000409, 16000447, 16000463,
        ],
        [
            16000477, 16000487, 16000499, 16000507, 16000511, 16000573, 16000609, 16000627, 16000667, 16000669,
            16000693, 16000697, 16000711, 16000729, 16000759, 16000769, 16000781, 16000799, 16000813, 16000819,
            16000841, 16000877, 16000879, 16000889,
        ],
    ];
    assert_eq!(p[0], expected[0]);
    assert_eq!(p[1], expected[1]);
    assert_eq!(p[0].iter().sum::<u64>(), 384_006_168);
    assert_eq!(p[1].iter().sum::<u64>(), 384_016_682);
    for (i, expected) in expected.iter().enumerate() {
        let l = v41_flash::layer(i).unwrap();
        assert_eq!(l.rows(), v41_flash::ROWS[i]);
        assert_eq!(l.primes(), expected);
        assert_eq!(l.columns(), 24);
        assert_eq!(l.multipliers(), &v41_flash::MULTIPLIERS[i]);
        assert_eq!(l.vocab_size(), 99_092);
        assert_eq!(l.pad_id(), 2);
        assert_eq!(l.offset(23), Some(v41_flash::ROWS[i] - expected[23]));
        // Largest row id stays inside the table.
        let mut rows = [0i64; 24];
        l.hash_window(&[99_091; 4], &mut rows).unwrap();
        for (c, &r) in rows.iter().enumerate() {
            let off = l.offset(c).unwrap() as i64;
            assert!(r >= off && r < off + l.prime(c).unwrap() as i64);
        }
    }
    assert_eq!(
        field_in("engram_layer_v41_flash", v41_flash::layer(2).unwrap_err()),
        "index"
    );
}

// ----------------------------------------------------------------------------------------------
// Constructor validation: one test per rule
// ----------------------------------------------------------------------------------------------

fn toy_new(n: usize, k: usize, m: Vec<u64>, p: Vec<u64>, v: u64, pad: u64) -> Result<EngramLayer, Error> {
    EngramLayer::new(n, k, m, p, v, pad)
}

#[test]
fn rejects_max_order_below_two() {
    assert_eq!(
        field_in("engram_layer", toy_new(1, 1, vec![1], vec![], 50, 2).unwrap_err()),
        "max_order"
    );
}

#[test]
fn rejects_zero_heads() {
    assert_eq!(
        field_in("engram_layer", toy_new(2, 0, vec![1, 1], vec![], 50, 2).unwrap_err()),
        "heads"
    );
}

#[test]
fn rejects_zero_vocab() {
    assert_eq!(
        field_in("engram_layer", toy_new(2, 1, vec![1, 1], vec![11], 0, 0).unwrap_err()),
        "vocab_size"
    );
}

#[test]
fn rejects_pad_not_below_vocab() {
    assert_eq!(
        field_in("engram_layer", toy_new(2, 1, vec![1, 1], vec![11], 50, 50).unwrap_err()),
        "pad_id"
    );
    assert!(toy_new(2, 1, vec![1, 1], vec![11], 50, 49).is_ok());
}

#[test]
fn rejects_wrong_multiplier_count() {
    assert_eq!(
        field_in(
            "engram_layer",
            toy_new(3, 1, vec![1, 1], vec![11, 13], 50, 2).unwrap_err()
        ),
        "multipliers"
    );
}

#[test]
fn rejects_even_multiplier() {
    assert_eq!(
        field_in("engram_layer", toy_new(2, 1, vec![1, 4], vec![11], 50, 2).unwrap_err()),
        "multipliers"
    );
}

#[test]
fn rejects_multiplier_overflowing_products() {
    // V' = 50: m * 49 must stay below 2^63. 2^63 / 49 = 188232082384791343.6...
    let ok = 188_232_082_384_791_343u64; // odd, * 49 = 9223372036854775807 = 2^63 - 1
    assert!(toy_new(2, 1, vec![1, ok], vec![11], 50, 2).is_ok());
    let bad = ok + 2; // * 49 > 2^63
    assert_eq!(
        field_in(
            "engram_layer",
            toy_new(2, 1, vec![1, bad], vec![11], 50, 2).unwrap_err()
        ),
        "multipliers"
    );
    // V' = 1: every product is 0, so any odd multiplier is fine.
    assert!(toy_new(2, 1, vec![u64::MAX, u64::MAX], vec![11], 1, 0).is_ok());
}

#[test]
fn rejects_wrong_prime_count() {
    assert_eq!(
        field_in(
            "engram_layer",
            toy_new(3, 2, vec![1, 1, 1], vec![11, 13, 17], 50, 2).unwrap_err()
        ),
        "primes"
    );
}

#[test]
fn rejects_duplicate_primes() {
    assert_eq!(
        field_in(
            "engram_layer",
            toy_new(3, 2, vec![1, 1, 1], vec![11, 13, 17, 11], 50, 2).unwrap_err()
        ),
        "primes"
    );
}

#[test]
fn rejects_non_prime_moduli() {
    for bad in [0u64, 1, 15, 3_215_031_751] {
        assert_eq!(
            field_in("engram_layer", toy_new(2, 1, vec![1, 1], vec![bad], 50, 2).unwrap_err()),
            "primes"
        );
    }
}

#[test]
fn rejects_row_count_overflowing_i64() {
    // Two primes just below 2^63 sum past i64::MAX.
    let p1 = 9_223_372_036_854_775_783u64; // largest prime below 2^63
    let p2 = 9_223_372_036_854_775_643u64; // a smaller prime below 2^63
    assert!(moehal_core::engram::is_prime(p1) && moehal_core::engram::is_prime(p2));
    assert!(toy_new(2, 1, vec![1, 1], vec![p1], 50, 2).is_ok());
    assert_eq!(
        field_in(
            "engram_layer",
            toy_new(2, 2, vec![1, 1], vec![p1, p2], 50, 2).unwrap_err()
        ),
        "primes"
    );
}
