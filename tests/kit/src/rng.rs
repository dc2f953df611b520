//! The workspace's one seeded random generator and the draws built on it.
//!
//! Every seeded input in the workspace comes from here: the conformance cases ([`crate::Case`]),
//! `moehal check`, `moehal bench` (its shapes' inputs, `moehal::bench`), the MoE and Engram
//! pipelines (`moehal::pipeline`: weights, activations, token ids) and the criterion benches. The
//! generator is ChaCha8 (`rand_chacha`), seeded with [`seeded`]; independent streams of one seed
//! come from [`stream_seed`]. ChaCha is counter-based, so [`UniformStream::at`] can start at any
//! element: a tensor filled in chunks (on several threads) is the same tensor whatever the split.
//!
//! The integer draws ([`distinct`], [`routed_ids_into`], [`routed_group_end`],
//! [`cold_group_ends`]) write routing decisions the way an engine's router would produce them
//! (distinct experts per token unless repeats are asked for); those that fill a slice write in
//! place, so a benchmark of 10^6 tokens allocates its ids once.

use half::{bf16, f16};
use moehal_core::{DType, Error, Result};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The seeded generator of the workspace (ChaCha8; `rand` 0.8 traits).
pub type SeededRng = ChaCha8Rng;

/// The generator for `seed` (`ChaCha8Rng::seed_from_u64`; the conformance cases' case seeds,
/// [`crate::case_seed`], go through this).
pub fn seeded(seed: u64) -> SeededRng {
    SeededRng::seed_from_u64(seed)
}

/// A seed for the independent stream `stream` of `seed` (so that two tensors drawn from one
/// seed never share values): the first word of ChaCha8 stream `stream` under key `seed`.
pub fn stream_seed(seed: u64, stream: u64) -> u64 {
    let mut r = seeded(seed);
    r.set_stream(stream);
    r.next_u64()
}

/// Uniform floats in `[-1, 1)` with 24 random bits each: element `i` of stream `seed` is made
/// from 32-bit word `i` of [`seeded`]`(seed)`, so the stream can be entered at any element.
#[derive(Debug, Clone)]
pub struct UniformStream {
    rng: SeededRng,
}

impl UniformStream {
    /// The stream `seed`, positioned at element `first`.
    pub fn at(seed: u64, first: u64) -> Self {
        let mut rng = seeded(seed);
        rng.set_word_pos(u128::from(first));
        UniformStream { rng }
    }
    /// The next element, in `[-1, 1)`.
    #[inline]
    pub fn next_f32(&mut self) -> f32 {
        let bits = self.rng.next_u32() >> 8; // 24 bits
        bits as f32 * (2.0 / (1u32 << 24) as f32) - 1.0
    }
}

/// `k` distinct values of `[0, n)` in draw order (all of `[0, n)`, shuffled, when `k >= n`).
pub fn distinct(rng: &mut SeededRng, n: usize, k: usize) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::with_capacity(k.min(n));
    while chosen.len() < k.min(n) {
        let c = rng.gen_range(0..n);
        if !chosen.contains(&c) {
            chosen.push(c);
        }
    }
    chosen
}

/// Router ids `[T, k]` (`ids.len() = T·k`) written in place: each token's `k` ids drawn from
/// `[0, e)`, distinct within the token unless `repeat` (or `k > e`, where repeats are
/// unavoidable), then each slot dropped (set to `-1`) with probability `drop`.
///
/// With `k = 0` or `e = 0` (no id to draw) `ids` is left as it is.
pub fn routed_ids_into(rng: &mut SeededRng, ids: &mut [i32], k: usize, e: usize, drop: f64, repeat: bool) {
    if k == 0 || e == 0 {
        return;
    }
    for row in ids.chunks_mut(k) {
        let mut len = 0;
        while len < row.len() {
            let id = rng.gen_range(0..e) as i32;
            if repeat || !row[..len].contains(&id) || len >= e {
                row[len] = id;
                len += 1;
            }
        }
        for id in row.iter_mut() {
            if rng.gen_bool(drop) {
                *id = -1;
            }
        }
    }
}

/// Router ids `[t, k]` as [`routed_ids_into`] does, in a new vector.
pub fn routed_ids(rng: &mut SeededRng, t: usize, k: usize, e: usize, drop: f64, repeat: bool) -> Vec<i32> {
    let mut ids = vec![0i32; t * k];
    routed_ids_into(rng, &mut ids, k, e, drop, repeat);
    ids
}

/// Cumulative `group_end` `[E]` of `tokens` tokens each routed to `topk` distinct experts of
/// `experts` (uniformly at random, [`distinct`]): the grouped GEMM's groups after `moe_permute`.
pub fn routed_group_end(rng: &mut SeededRng, experts: usize, tokens: usize, topk: usize) -> Vec<i64> {
    let mut sizes = vec![0i64; experts];
    for _ in 0..tokens {
        for e in distinct(rng, experts, topk) {
            sizes[e] += 1;
        }
    }
    running_sum(sizes)
}

/// The `group_end` `[E]` of each of `sets` disjoint sets of `topk` experts (one token routed to
/// each set's experts): a seeded permutation of the experts, cut into sets. At most
/// `experts / topk` sets come back. Used for cold decode, where run `i` uses set `i % sets` so
/// that the other sets' weights pass through the caches between two uses of a set.
pub fn cold_group_ends(rng: &mut SeededRng, experts: usize, topk: usize, sets: usize) -> Vec<Vec<i64>> {
    let mut perm: Vec<usize> = (0..experts).collect();
    rand::seq::SliceRandom::shuffle(&mut perm[..], rng);
    if topk == 0 {
        return vec![vec![0; experts]; sets];
    }
    perm.chunks_exact(topk)
        .take(sets)
        .map(|set| running_sum((0..experts).map(|e| set.contains(&e) as i64).collect()))
        .collect()
}

fn running_sum(mut v: Vec<i64>) -> Vec<i64> {
    let mut acc = 0i64;
    for x in &mut v {
        acc += *x;
        *x = acc;
    }
    v
}

/// Encode `n` elements `value(i)` as `dtype` bytes (little endian; `f32`, `bf16` or `f16`,
/// rounded to nearest even), into `out` (`n * dtype.size()` bytes).
///
/// # Errors
/// [`Error::InvalidArgument`] for a non-floating dtype or a wrong `out` length.
pub fn encode_floats(dtype: DType, out: &mut [u8], mut value: impl FnMut(usize) -> f32) -> Result<()> {
    if !dtype.is_float() || out.len() % dtype.size() != 0 {
        return Err(Error::invalid(
            "pipeline",
            "dtype",
            format!("cannot encode floats as {dtype} into {} bytes", out.len()),
        ));
    }
    match dtype {
        DType::F32 => {
            for (i, c) in out.chunks_exact_mut(4).enumerate() {
                c.copy_from_slice(&value(i).to_le_bytes());
            }
        }
        DType::BF16 => {
            for (i, c) in out.chunks_exact_mut(2).enumerate() {
                c.copy_from_slice(&bf16::from_f32(value(i)).to_le_bytes());
            }
        }
        _ => {
            for (i, c) in out.chunks_exact_mut(2).enumerate() {
                c.copy_from_slice(&f16::from_f32(value(i)).to_le_bytes());
            }
        }
    }
    Ok(())
}

/// Fill `out` (whole elements of `dtype`) with `scale` times elements `first..` of
/// [`UniformStream`] `seed`, on all cores ([`encode_floats_split`]).
///
/// # Errors
/// As [`encode_floats`].
pub fn fill_random(dtype: DType, out: &mut [u8], scale: f32, seed: u64, first: u64) -> Result<()> {
    encode_floats_split(dtype, out, |at| {
        let mut u = UniformStream::at(seed, first + at);
        move || scale * u.next_f32()
    })
}

/// Encode `out` (whole elements of `dtype`, [`encode_floats`]) on all cores (at most 16; one
/// below 2^16 elements): the chunk starting at element `at` takes its values, in element order,
/// from the generator `start(at)`. With a generator that can be entered at any element (a
/// counter-based stream) the bytes are the same whatever the split.
///
/// # Errors
/// As [`encode_floats`].
pub fn encode_floats_split<G>(dtype: DType, out: &mut [u8], start: impl Fn(u64) -> G + Sync) -> Result<()>
where
    G: FnMut() -> f32 + Send,
{
    let es = dtype.size();
    let n = out.len() / es.max(1);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(16);
    if threads <= 1 || n < 1 << 16 {
        let mut g = start(0);
        return encode_floats(dtype, out, |_| g());
    }
    let per = n.div_ceil(threads);
    let start = &start;
    std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per * es)
            .enumerate()
            .map(|(c, chunk)| {
                s.spawn(move || {
                    let mut g = start((c * per) as u64);
                    encode_floats(dtype, chunk, |_| g())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::invalid("pipeline", "fill", "thread panicked")))
        })
    })
}

/// Fill `out` with `map` of the next `out.len()` bytes of `rng` (the little-endian bytes of its
/// 32-bit words, as [`RngCore::fill_bytes`] writes them), on all cores (at most 16; one below
/// 2^16 bytes), and leave `rng` after the `out.len().div_ceil(4)` words drawn. Each thread enters
/// the ChaCha stream at its first byte's word, so the bytes are those of the one-thread fill
/// whatever the split. For code buffers (fp8, int8, packed fp4 codes, E8M0 scales): a 4 GiB bench
/// weight buffer takes seconds, where one draw per byte took minutes.
pub fn fill_bytes_split(rng: &mut SeededRng, out: &mut [u8], map: impl Fn(u8) -> u8 + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(16);
    fill_bytes_on(rng, out, threads, &map);
}

/// [`fill_bytes_split`] on `threads` threads.
fn fill_bytes_on(rng: &mut SeededRng, out: &mut [u8], threads: usize, map: &(impl Fn(u8) -> u8 + Sync)) {
    let base = rng.get_word_pos();
    let n = out.len();
    // Mapped 16 KiB at a time, while the bytes are in the cache (whole words each, so the
    // pieces draw the stream's words in order).
    let fill = |r: &mut SeededRng, chunk: &mut [u8]| {
        for piece in chunk.chunks_mut(16 << 10) {
            r.fill_bytes(piece);
            for b in piece.iter_mut() {
                *b = map(*b);
            }
        }
    };
    if threads <= 1 || n < 1 << 16 {
        fill(rng, out);
    } else {
        // Whole 64-byte ChaCha blocks per thread, so every chunk starts on a word.
        let per = n.div_ceil(threads).next_multiple_of(64);
        let fill = &fill;
        std::thread::scope(|s| {
            for (c, chunk) in out.chunks_mut(per).enumerate() {
                let mut r = rng.clone();
                r.set_word_pos(base + (c * per / 4) as u128);
                s.spawn(move || fill(&mut r, chunk));
            }
        });
    }
    rng.set_word_pos(base + n.div_ceil(4) as u128);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_stream_is_split_independent_and_in_range() {
        let mut whole = UniformStream::at(7, 0);
        let a: Vec<f32> = (0..10_000).map(|_| whole.next_f32()).collect();
        let mut tail = UniformStream::at(7, 4321);
        assert!(a[4321..].iter().all(|&x| x == tail.next_f32()));
        assert!(a.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        let mut other = UniformStream::at(stream_seed(7, 1), 0);
        assert!(a[..100].iter().any(|&x| x != other.next_f32()));
        assert_ne!(stream_seed(7, 1), stream_seed(7, 2));
    }

    #[test]
    fn byte_fill_is_split_independent_and_leaves_the_stream_where_one_thread_does() {
        // 300_001 bytes: above the one-thread cut, not a multiple of 4 or of a block.
        let n = 300_001;
        let mut one = seeded(5);
        one.next_u32(); // start off a block boundary
        let mut plain = one.clone();
        let mut want = vec![0u8; n];
        plain.fill_bytes(&mut want);
        let want: Vec<u8> = want.iter().map(|b| b ^ 0x5A).collect();
        let after = plain.next_u64();
        for threads in [1, 2, 3, 7, 16] {
            let mut r = one.clone();
            let mut got = vec![0xEEu8; n];
            fill_bytes_on(&mut r, &mut got, threads, &|b| b ^ 0x5A);
            assert!(got == want, "{threads} threads: other bytes than one fill_bytes");
            assert_eq!(r.next_u64(), after, "{threads} threads: the stream continues elsewhere");
        }
        // Small buffers (one thread) and the public entry agree too.
        let mut r = seeded(5);
        let mut small = [0u8; 7];
        fill_bytes_split(&mut r, &mut small, |b| b);
        let mut p = seeded(5);
        let mut s2 = [0u8; 7];
        p.fill_bytes(&mut s2);
        assert_eq!(small, s2);
        assert_eq!(r.next_u32(), p.next_u32());
    }

    #[test]
    fn routed_draws_keep_their_rules() {
        let mut rng = seeded(3);
        let ids = routed_ids(&mut rng, 50, 8, 16, 0.0, false);
        for row in ids.chunks(8) {
            let mut r = row.to_vec();
            r.sort_unstable();
            r.dedup();
            assert_eq!(r.len(), 8, "distinct per token: {row:?}");
            assert!(row.iter().all(|&i| (0..16).contains(&i)));
        }
        let ge = routed_group_end(&mut rng, 16, 50, 8);
        assert_eq!(ge.last(), Some(&400));
        assert!(ge.windows(2).all(|w| w[0] <= w[1]));
        let sets = cold_group_ends(&mut rng, 16, 4, 4);
        assert_eq!(sets.len(), 4);
        let mut used = [0; 16];
        for ge in &sets {
            assert_eq!(ge[15], 4);
            let mut prev = 0;
            for (e, &x) in ge.iter().enumerate() {
                used[e] += x - prev;
                prev = x;
            }
        }
        assert_eq!(used, [1; 16], "the sets are disjoint and cover the experts");
        assert_eq!(distinct(&mut rng, 3, 5).len(), 3);
    }
}
