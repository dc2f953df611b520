//! Engram configuration and host-side hashing helpers (`OPS.md` §4, `engram_hash`).
//!
//! DeepSeek's Engram ("conditional memory", arXiv 2601.07372) looks up, for every token, one
//! embedding row per (order `n`, head `j`) in a large table. The row index depends only on the
//! token ids, so it is computed on the host ahead of time. This module holds:
//!
//! * [`EngramLayer`]: the validated per-layer configuration (max order `N`, heads `K`, odd
//!   multipliers, distinct primes, column offsets, compressed vocabulary size `V'`, pad id `π`) and
//!   the scalar hash of one window ([`EngramLayer::hash_window`]) and of a whole sequence
//!   ([`EngramLayer::hash_sequence`]). Every host implementation (reference, CPU SIMD, Ascend
//!   host path) reuses these; device kernels mirror them.
//! * [`window`] / [`windows`]: the N-gram window rule with segments, the alive mask, history and
//!   sticky blocking, in random-access (`O(N)` per token) and streaming form.
//! * [`derive_primes`]: the published prime-layout rule.
//! * [`v41_flash`] and [`toy`]: model data (DeepSeek-V4.1-Flash and the hand-checked toy layer).
//! * [`normalize_token_text`] and [`CompressionTable`]: the tokenizer compression to canonical ids.
//!
//! Sources (see `shared/reference/engram_and_routing.md` Part 1): the DeepSeek Engram demo
//! (`deepseek-ai/Engram`, `engram_demo_v1.py`) for the hash and the compression, and the
//! DeepSeek-V4.1 ports (vLLM `vllm/models/deepseek_v41/common/engram.py`, NeMo AutoModel
//! `components/models/deepseek_v41/engram.py`) for sticky blocking, segments and the V4.1
//! configuration. Nothing here is copied code; the rules are restated from `OPS.md` §4.

use crate::{Error, Result};

/// Op name used in errors about the Engram layer configuration and the hash inputs.
pub const OP: &str = "engram_hash";

/// Op name used in errors raised by [`CompressionTable`].
pub const OP_COMPRESS: &str = "engram_compress";

/// Upper bound on the primes one [`derive_primes`] call derives (real configs use dozens).
pub const MAX_DERIVED_PRIMES: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Primality
// ---------------------------------------------------------------------------------------------

fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    ((a as u128 * b as u128) % m as u128) as u64
}

fn pow_mod(mut base: u64, mut exp: u64, m: u64) -> u64 {
    let mut acc = 1 % m;
    base %= m;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul_mod(acc, base, m);
        }
        base = mul_mod(base, base, m);
        exp >>= 1;
    }
    acc
}

/// Deterministic primality test for every `u64` (Miller–Rabin with the first twelve primes as
/// bases, which is exact below 3.3·10^24).
pub fn is_prime(n: u64) -> bool {
    const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if n < 2 {
        return false;
    }
    for &p in &BASES {
        if n % p == 0 {
            return n == p;
        }
    }
    let s = (n - 1).trailing_zeros();
    let d = (n - 1) >> s;
    'bases: for &a in &BASES {
        let mut x = pow_mod(a, d, n);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul_mod(x, x, n);
            if x == n - 1 {
                continue 'bases;
            }
        }
        return false;
    }
    true
}

/// Smallest prime `>= from`, or `None` if there is none below `u64::MAX`.
fn prime_at_or_above(from: u64) -> Option<u64> {
    let mut c = from;
    loop {
        if is_prime(c) {
            return Some(c);
        }
        c = c.checked_add(1)?;
    }
}

/// Derives the Engram primes by the published rule (`OPS.md` §4, fact sheet §1.3).
///
/// Iterates layers (config order) → orders `n = 2..=max_order` → heads `j = 0..heads`. Each order
/// restarts its search at `vocab_n - 1` and takes, for each head, the next prime above the previous
/// one (the restart point for the order's first head) that has never been used before by any
/// layer or order (a global "seen" set). Hence all primes are distinct.
///
/// Returns one `Vec` per layer of length `(max_order - 1) * heads` in column order (n-major, then
/// head), ready for [`EngramLayer::new`].
///
/// Checks: DeepSeek-V4.1-Flash (`vocab_n = 16_000_000`, `N = 4`, `K = 8`, 2 layers) sums to
/// 384,006,168 and 384,016,682 rows; the toy (`vocab_n = 11`, `N = 3`, `K = 2`, 1 layer) gives
/// `[11, 13, 17, 19]`.
///
/// Errors: `max_order < 2`, `heads == 0`, a count overflow, or no prime left below `u64::MAX`.
pub fn derive_primes(vocab_n: u64, max_order: usize, heads: usize, layers: usize) -> Result<Vec<Vec<u64>>> {
    if max_order < 2 {
        return Err(Error::invalid(
            OP,
            "max_order",
            format!("must be >= 2, got {max_order}"),
        ));
    }
    if heads == 0 {
        return Err(Error::invalid(OP, "heads", "must be >= 1, got 0"));
    }
    let columns = (max_order - 1)
        .checked_mul(heads)
        .ok_or_else(|| Error::invalid(OP, "heads", "(max_order - 1) * heads overflows usize"))?;
    if columns
        .checked_mul(layers)
        .is_none_or(|total| total > MAX_DERIVED_PRIMES)
    {
        return Err(Error::invalid(
            OP,
            "layers",
            format!("{layers} layers x {columns} columns exceeds the {MAX_DERIVED_PRIMES} primes a config can derive"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(layers);
    for _ in 0..layers {
        let mut layer = Vec::with_capacity(columns);
        for _n in 2..=max_order {
            // "Next prime above vocab_n - 1" == smallest prime >= vocab_n (no underflow at 0).
            let mut from = vocab_n;
            for _j in 0..heads {
                let p = loop {
                    let p = prime_at_or_above(from)
                        .ok_or_else(|| Error::invalid(OP, "vocab_n", "ran out of primes below 2^64"))?;
                    from = p
                        .checked_add(1)
                        .ok_or_else(|| Error::invalid(OP, "vocab_n", "ran out of primes below 2^64"))?;
                    if seen.insert(p) {
                        break p;
                    }
                };
                layer.push(p);
            }
        }
        out.push(layer);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Layer configuration
// ---------------------------------------------------------------------------------------------

/// One Engram layer's hash configuration (`OPS.md` §4), validated at construction.
///
/// Columns are numbered in n-major, then head order: `col(n, j) = (n - 2) * K + j` for
/// `n = 2..=N`, `j < K`, so there are `C = (N - 1) * K` columns. The layer's embedding table has
/// `R = sum of all primes` rows; column `c` owns rows `[offset(c), offset(c) + prime(c))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngramLayer {
    max_order: usize,
    heads: usize,
    multipliers: Vec<u64>,
    primes: Vec<u64>,
    offsets: Vec<u64>,
    rows: u64,
    vocab_size: u64,
    pad_id: u64,
}

impl EngramLayer {
    /// Builds and validates a layer.
    ///
    /// * `max_order`: `N >= 2` (orders `2..=N`; no unigram column).
    /// * `heads`: `K >= 1` heads per order.
    /// * `multipliers`: `N` odd 64-bit multipliers `m[0..N)`; `m[k] * (V' - 1) < 2^63` so no
    ///   product of a canonical id overflows (upstream they come from a seeded numpy generator and
    ///   are hard-coded per model here).
    /// * `primes`: `(N - 1) * K` moduli in column order, all distinct and prime (e.g. from
    ///   [`derive_primes`]).
    /// * `vocab_size`: compressed vocabulary size `V' >= 1`.
    /// * `pad_id`: compressed pad id `π < V'`.
    ///
    /// The total row count `sum(primes)` must fit `i64` (rows are written as `i64`).
    /// Errors: [`Error::InvalidArgument`] with op `"engram_hash"` naming the offending field.
    pub fn new(
        max_order: usize,
        heads: usize,
        multipliers: Vec<u64>,
        primes: Vec<u64>,
        vocab_size: u64,
        pad_id: u64,
    ) -> Result<Self> {
        if max_order < 2 {
            return Err(Error::invalid(
                OP,
                "max_order",
                format!("must be >= 2, got {max_order}"),
            ));
        }
        if heads == 0 {
            return Err(Error::invalid(OP, "heads", "must be >= 1, got 0"));
        }
        if vocab_size == 0 {
            return Err(Error::invalid(OP, "vocab_size", "must be >= 1, got 0"));
        }
        if pad_id >= vocab_size {
            return Err(Error::invalid(
                OP,
                "pad_id",
                format!("pad id {pad_id} is not below vocab_size {vocab_size}"),
            ));
        }
        if multipliers.len() != max_order {
            return Err(Error::invalid(
                OP,
                "multipliers",
                format!(
                    "expected max_order = {max_order} multipliers, got {}",
                    multipliers.len()
                ),
            ));
        }
        for (k, &m) in multipliers.iter().enumerate() {
            if m % 2 == 0 {
                return Err(Error::invalid(
                    OP,
                    "multipliers",
                    format!("multiplier {k} = {m} is even (must be odd)"),
                ));
            }
            if (m as u128) * ((vocab_size - 1) as u128) >= 1u128 << 63 {
                return Err(Error::invalid(
                    OP,
                    "multipliers",
                    format!(
                        "multiplier {k} = {m} times (vocab_size - 1) = {} reaches 2^63",
                        vocab_size - 1
                    ),
                ));
            }
        }
        let columns = (max_order - 1)
            .checked_mul(heads)
            .ok_or_else(|| Error::invalid(OP, "heads", "column count (max_order - 1) * heads overflows"))?;
        if primes.len() != columns {
            return Err(Error::invalid(
                OP,
                "primes",
                format!(
                    "expected (max_order - 1) * heads = {columns} primes, got {}",
                    primes.len()
                ),
            ));
        }
        let mut sorted = primes.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::invalid(OP, "primes", format!("prime {} appears twice", w[0])));
        }
        for (c, &p) in primes.iter().enumerate() {
            if !is_prime(p) {
                return Err(Error::invalid(
                    OP,
                    "primes",
                    format!("modulus {p} of column {c} is not a prime"),
                ));
            }
        }
        let mut offsets = Vec::with_capacity(columns);
        let mut total: u64 = 0;
        for &p in &primes {
            offsets.push(total);
            total = total
                .checked_add(p)
                .filter(|&t| t <= i64::MAX as u64)
                .ok_or_else(|| Error::invalid(OP, "primes", "total row count overflows i64"))?;
        }
        Ok(Self {
            max_order,
            heads,
            multipliers,
            primes,
            offsets,
            rows: total,
            vocab_size,
            pad_id,
        })
    }

    /// Max order `N` (window length).
    pub fn max_order(&self) -> usize {
        self.max_order
    }

    /// Heads `K` per order.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Column count `C = (N - 1) * K` (row ids per token).
    pub fn columns(&self) -> usize {
        self.primes.len()
    }

    /// Rows of the layer's table: `R = sum of all primes`.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Column of order `n` (`2..=N`) and head `j` (`< K`): `(n - 2) * K + j`; `None` if out of range.
    pub fn column(&self, n: usize, j: usize) -> Option<usize> {
        (n >= 2 && n <= self.max_order && j < self.heads).then(|| (n - 2) * self.heads + j)
    }

    /// Prime modulus of column `col`; `None` if `col >= C`.
    pub fn prime(&self, col: usize) -> Option<u64> {
        self.primes.get(col).copied()
    }

    /// First row of column `col` (exclusive prefix sum of the primes); `None` if `col >= C`.
    pub fn offset(&self, col: usize) -> Option<u64> {
        self.offsets.get(col).copied()
    }

    /// All primes, length `C`, column order.
    pub fn primes(&self) -> &[u64] {
        &self.primes
    }

    /// All column offsets, length `C`, column order.
    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// Multipliers `m[0..N)`.
    pub fn multipliers(&self) -> &[u64] {
        &self.multipliers
    }

    /// Compressed vocabulary size `V'`.
    pub fn vocab_size(&self) -> u64 {
        self.vocab_size
    }

    /// Compressed pad id `π`.
    pub fn pad_id(&self) -> u64 {
        self.pad_id
    }

    /// Hashes one window without validation (the caller guarantees the lengths and `w_k < V'`).
    ///
    /// `h_n = XOR_{k<n} w_k * m_k`, computed incrementally; `row = h_n mod p + off`.
    #[inline]
    fn fill_rows(&self, window: &[u64], out: &mut [i64]) {
        let k_heads = self.heads;
        let mut h = window[0].wrapping_mul(self.multipliers[0]);
        let columns = out.chunks_exact_mut(k_heads).zip(
            self.primes
                .chunks_exact(k_heads)
                .zip(self.offsets.chunks_exact(k_heads)),
        );
        // Order n = k + 1 adds w_k * m_k, then fills its K columns.
        for ((&w, &m), (rows, (primes, offsets))) in window[1..].iter().zip(&self.multipliers[1..]).zip(columns) {
            h ^= w.wrapping_mul(m);
            for ((row, &p), &off) in rows.iter_mut().zip(primes).zip(offsets) {
                // Fits i64: the total row count was checked to fit i64 at construction.
                *row = (h % p + off) as i64;
            }
        }
    }

    /// Row ids of one token from its window (`OPS.md` §4, hash step).
    ///
    /// * `window`: `[N]` canonical ids `w_0 .. w_{N-1}` (`w_0` = current token, `w_k` = `k` steps
    ///   back, already padded with `π` where blocked), each `< V'`.
    /// * `out`: `[C]` row ids in column order: `out[col(n, j)] = (h_n mod p[n][j]) + off[n][j]` with
    ///   `h_n = XOR_{k<n} (w_k * m_k)` (64-bit products, no overflow since `m_k * (V'-1) < 2^63`).
    ///
    /// Errors (nothing written): wrong lengths, or an id `>= V'`.
    pub fn hash_window(&self, window: &[u64], out: &mut [i64]) -> Result<()> {
        if window.len() != self.max_order {
            return Err(Error::invalid(
                OP,
                "window",
                format!("expected {} ids, got {}", self.max_order, window.len()),
            ));
        }
        if out.len() != self.columns() {
            return Err(Error::invalid(
                OP,
                "rows",
                format!("expected {} columns, got {}", self.columns(), out.len()),
            ));
        }
        if let Some((k, &w)) = window.iter().enumerate().find(|(_, &w)| w >= self.vocab_size) {
            return Err(Error::invalid(
                OP,
                "window",
                format!("id {w} at k = {k} is not below vocab_size {}", self.vocab_size),
            ));
        }
        self.fill_rows(window, out);
        Ok(())
    }

    /// Full `engram_hash` of one sequence on the host (`OPS.md` §4): windows by [`windows`]'s rule,
    /// then [`EngramLayer::hash_window`] per token. Streaming, `O(T * (N + C))`, no allocation.
    ///
    /// * `ids`: `[T]` canonical ids, each in `[0, V')`.
    /// * `positions`: optional `[T]` position ids (a new segment starts at `t = 0` and wherever
    ///   `positions[t] <= positions[t-1]`).
    /// * `alive`: optional `[T]` mask, nonzero = alive; a dead token's window is all `π` and it
    ///   blocks look-back through it.
    /// * `history`: up to `N - 1` canonical ids before `ids[0]`, oldest first, all alive, extending
    ///   only the first segment (chunked decode); each in `[0, V')`.
    /// * `out`: `[T, C]` row ids, row-major.
    ///
    /// Errors (validated before anything is written): length mismatches, `history.len() > N - 1`,
    /// an id or history id outside `[0, V')`.
    pub fn hash_sequence(
        &self,
        ids: &[i64],
        positions: Option<&[i64]>,
        alive: Option<&[u8]>,
        history: &[i64],
        out: &mut [i64],
    ) -> Result<()> {
        let c = self.columns();
        let expected = ids
            .len()
            .checked_mul(c)
            .ok_or_else(|| Error::invalid(OP, "rows", "T * C overflows usize"))?;
        if out.len() != expected {
            return Err(Error::invalid(
                OP,
                "rows",
                format!(
                    "expected T * C = {} * {c} = {expected} elements, got {}",
                    ids.len(),
                    out.len()
                ),
            ));
        }
        self.check_ids("ids", ids)?;
        self.check_ids("history", history)?;
        check_window_args(self.max_order, ids, positions, alive, history)?;
        let mut win = [0u64; 16];
        let mut heap;
        let win: &mut [u64] = if self.max_order <= win.len() {
            &mut win[..self.max_order]
        } else {
            heap = vec![0u64; self.max_order];
            &mut heap
        };
        let mut stream = WindowStream::new(self.max_order, history.len(), self.pad_id);
        // c >= 1 always (N >= 2, K >= 1 are validated).
        for (t, row) in out.chunks_exact_mut(c).enumerate() {
            stream.next_window(ids, positions, alive, history, t, win);
            self.fill_rows(win, row);
        }
        Ok(())
    }

    fn check_ids(&self, field: &'static str, ids: &[i64]) -> Result<()> {
        match ids
            .iter()
            .enumerate()
            .find(|(_, &x)| x < 0 || x as u64 >= self.vocab_size)
        {
            Some((t, &x)) => Err(Error::invalid(
                OP,
                field,
                format!("id {x} at index {t} is outside [0, vocab_size = {})", self.vocab_size),
            )),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Windows
// ---------------------------------------------------------------------------------------------

fn check_window_args(
    max_order: usize,
    ids: &[i64],
    positions: Option<&[i64]>,
    alive: Option<&[u8]>,
    history: &[i64],
) -> Result<()> {
    if max_order == 0 {
        return Err(Error::invalid(OP, "window", "window length N must be >= 1"));
    }
    if let Some(p) = positions {
        if p.len() != ids.len() {
            return Err(Error::invalid(
                OP,
                "positions",
                format!("expected {} positions, got {}", ids.len(), p.len()),
            ));
        }
    }
    if let Some(a) = alive {
        if a.len() != ids.len() {
            return Err(Error::invalid(
                OP,
                "alive",
                format!("expected {} mask entries, got {}", ids.len(), a.len()),
            ));
        }
    }
    if history.len() > max_order - 1 {
        return Err(Error::invalid(
            OP,
            "history",
            format!("at most N - 1 = {} ids, got {}", max_order - 1, history.len()),
        ));
    }
    Ok(())
}

#[inline]
fn is_alive(alive: Option<&[u8]>, t: usize) -> bool {
    alive.is_none_or(|a| a[t] != 0)
}

/// The id `back` steps before `ids[t]` when that lies in `ids` or `history` (history oldest first).
#[inline]
fn lookback(ids: &[i64], history: &[i64], t: usize, back: usize) -> i64 {
    if back <= t {
        ids[t - back]
    } else {
        history[history.len() - (back - t)]
    }
}

/// Streaming form of the window rule: carries `reach`, the number of look-back steps available to
/// the next token (consecutive alive tokens of its segment, history included, capped at `N - 1`).
struct WindowStream {
    n: usize,
    reach: usize,
    pad: u64,
}

impl WindowStream {
    fn new(n: usize, history_len: usize, pad: u64) -> Self {
        Self {
            n,
            reach: history_len.min(n - 1),
            pad,
        }
    }

    /// Writes the window of token `t` (tokens must be visited in order `0, 1, ..`); arguments
    /// were validated by [`check_window_args`].
    #[inline]
    fn next_window(
        &mut self,
        ids: &[i64],
        positions: Option<&[i64]>,
        alive: Option<&[u8]>,
        history: &[i64],
        t: usize,
        out: &mut [u64],
    ) {
        let pad = self.pad;
        if t > 0 && positions.is_some_and(|p| p[t] <= p[t - 1]) {
            self.reach = 0;
        }
        if !is_alive(alive, t) {
            out.fill(pad);
            self.reach = 0;
            return;
        }
        let reach = self.reach;
        out[0] = ids[t] as u64;
        for (k, w) in out.iter_mut().enumerate().skip(1) {
            *w = if k <= reach {
                lookback(ids, history, t, k) as u64
            } else {
                pad
            };
        }
        self.reach = (reach + 1).min(self.n - 1);
    }
}

/// Window of token `t` (`OPS.md` §4), random access, `O(N)`; the reference form of the rule.
///
/// * `ids`: `[T]` canonical ids; `positions`: optional `[T]`; `alive`: optional `[T]` mask
///   (nonzero = alive); `history`: up to `N - 1` ids before `ids[0]`, oldest first, all alive,
///   extending only the first segment; `pad`: the compressed pad id `π`.
/// * `out`: `[N]`, receives `w_k(t) = ids[t - k]` for `k = 0..N` (ids reinterpreted as `u64`;
///   validate them against `[0, V')` before hashing, e.g. via [`EngramLayer::hash_sequence`]).
///
/// Rule: a new segment starts at `t = 0` and wherever `positions[s] <= positions[s - 1]`. Going
/// back `k = 1, 2, ..`, once `t - k` lies before the start of `t`'s segment (and, for the first
/// segment, before the history) or is a dead token, `w_k` and every deeper entry are `pad`. A dead
/// token's own window is all `pad`.
///
/// Errors: `out` empty, `t >= T`, `positions`/`alive` length `!= T`, `history.len() > N - 1`.
pub fn window(
    ids: &[i64],
    positions: Option<&[i64]>,
    alive: Option<&[u8]>,
    history: &[i64],
    pad: u64,
    t: usize,
    out: &mut [u64],
) -> Result<()> {
    check_window_args(out.len(), ids, positions, alive, history)?;
    if t >= ids.len() {
        return Err(Error::invalid(
            OP,
            "t",
            format!("token {t} out of range for T = {}", ids.len()),
        ));
    }
    if !is_alive(alive, t) {
        out.fill(pad);
        return Ok(());
    }
    out[0] = ids[t] as u64;
    let mut blocked = false;
    for (k, w) in out.iter_mut().enumerate().skip(1) {
        if !blocked {
            if k <= t {
                let s = t - k;
                // Step from s + 1 back to s: blocked by a segment start at s + 1 or a dead s.
                let new_segment = positions.is_some_and(|p| p[s + 1] <= p[s]);
                blocked = new_segment || !is_alive(alive, s);
            } else {
                // Before ids[0]: only the history (of the first segment) is reachable.
                blocked = k - t > history.len();
            }
        }
        *w = if blocked {
            pad
        } else {
            lookback(ids, history, t, k) as u64
        };
    }
    Ok(())
}

/// Windows of all tokens (`OPS.md` §4), streaming `O(T * N)`; same rule as [`window`].
///
/// * `n`: window length `N >= 1`; `out`: `[T, N]` row-major (`out[t * N + k] = w_k(t)`).
///
/// Errors (nothing written): as [`window`], plus `out.len() != T * N`.
pub fn windows(
    n: usize,
    ids: &[i64],
    positions: Option<&[i64]>,
    alive: Option<&[u8]>,
    history: &[i64],
    pad: u64,
    out: &mut [u64],
) -> Result<()> {
    check_window_args(n, ids, positions, alive, history)?;
    if Some(out.len()) != ids.len().checked_mul(n) {
        return Err(Error::invalid(
            OP,
            "windows",
            format!("expected T * N = {} * {n} elements, got {}", ids.len(), out.len()),
        ));
    }
    let mut stream = WindowStream::new(n, history.len(), pad);
    for (t, w) in out.chunks_exact_mut(n).enumerate() {
        stream.next_window(ids, positions, alive, history, t, w);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Model data
// ---------------------------------------------------------------------------------------------

/// DeepSeek-V4.1-Flash Engram configuration (fact sheet §1.3, §1.6; NeMo AutoModel
/// `deepseek_v41/config.py`, vLLM `deepseek_v41/common/engram.py`).
pub mod v41_flash {
    use super::{derive_primes, EngramLayer};
    use crate::{Error, Result};

    /// Decoder layers (0-based, of 40) that carry Engram.
    pub const LAYERS: [usize; 2] = [1, 14];
    /// Max order `N` (orders 2, 3, 4).
    pub const MAX_ORDER: usize = 4;
    /// Heads `K` per order.
    pub const HEADS: usize = 8;
    /// Embedding row width (elements; FP8-e4m3 plus one UE8M0 scale byte per 32 → 264 bytes/row).
    pub const ROW_DIM: usize = 256;
    /// Base for the prime search (`engram_vocab_size` per (order, head)).
    pub const VOCAB_N: u64 = 16_000_000;
    /// Compressed vocabulary size `V'` of the DeepSeek tokenizer (129,280 raw ids).
    pub const VOCAB_SIZE: u64 = 99_092;
    /// Compressed pad id `π` (raw pad id 2 maps to canonical id 2).
    pub const PAD_ID: u64 = 2;
    /// Multipliers per Engram layer (`2 * r + 1`, `r ~ numpy default_rng(10007 * layer)
    /// .integers(0, B)`, `B = floor(floor((2^63 - 1) / V') / 2)`), hard-coded from the fact sheet.
    pub const MULTIPLIERS: [[u64; 4]; 2] = [
        [76632096046245, 4839876093313, 35959672319349, 73987337458391],
        [67716810739261, 51510806800915, 30921347202721, 82619226485591],
    ];
    /// Table rows per Engram layer (`engram_num_embeddings`).
    pub const ROWS: [u64; 2] = [384_006_168, 384_016_682];

    /// The validated layer `index` (0 → decoder layer 1, 1 → decoder layer 14), primes derived by
    /// [`derive_primes`]. Errors: `index > 1`.
    pub fn layer(index: usize) -> Result<EngramLayer> {
        let m = MULTIPLIERS.get(index).ok_or_else(|| {
            Error::invalid(
                super::OP,
                "layer",
                format!("V4.1-Flash has 2 Engram layers, got index {index}"),
            )
        })?;
        let mut primes = derive_primes(VOCAB_N, MAX_ORDER, HEADS, LAYERS.len())?;
        let p = primes.swap_remove(index);
        EngramLayer::new(MAX_ORDER, HEADS, m.to_vec(), p, VOCAB_SIZE, PAD_ID)
    }
}

/// The toy layer of `OPS.md` §4 (hand-checked upstream): `V' = 50`, `N = 3`, `K = 2`, primes
/// `[11, 13, 17, 19]`, `π = 2`.
pub mod toy {
    use super::{derive_primes, EngramLayer};
    use crate::Result;

    /// Compressed vocabulary size.
    pub const VOCAB_SIZE: u64 = 50;
    /// Base for the prime search.
    pub const VOCAB_N: u64 = 11;
    /// Max order.
    pub const MAX_ORDER: usize = 3;
    /// Heads per order.
    pub const HEADS: usize = 2;
    /// Pad id.
    pub const PAD_ID: u64 = 2;
    /// Multipliers (seed 0, layer 1 of the demo generator with `V' = 50`).
    pub const MULTIPLIERS: [u64; 3] = [151872553228292665, 9591860036772465, 71266316989379275];

    /// The toy layer (primes derived, offsets `[0, 11, 24, 41]`).
    pub fn layer() -> Result<EngramLayer> {
        let mut p = derive_primes(VOCAB_N, MAX_ORDER, HEADS, 1)?;
        EngramLayer::new(
            MAX_ORDER,
            HEADS,
            MULTIPLIERS.to_vec(),
            p.swap_remove(0),
            VOCAB_SIZE,
            PAD_ID,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Tokenizer compression
// ---------------------------------------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn miller_rabin_matches_trial_division() {
        let slow = |n: u64| n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0);
        for n in 0..20_000u64 {
            assert_eq!(is_prime(n), slow(n), "n = {n}");
        }
        // Strong pseudoprimes to several small bases, and large known primes.
        assert!(!is_prime(3_215_031_751));
        assert!(!is_prime(3_825_123_056_546_413_051));
        assert!(is_prime(18_446_744_073_709_551_557)); // largest prime below 2^64
        assert!(!is_prime(u64::MAX));
    }

    #[test]
    fn derive_primes_toy_and_zero_base() {
        assert_eq!(derive_primes(11, 3, 2, 1).unwrap(), vec![vec![11, 13, 17, 19]]);
        // Two layers: every order of layer 2 skips all primes used so far.
        assert_eq!(
            derive_primes(11, 3, 2, 2).unwrap(),
            vec![vec![11, 13, 17, 19], vec![23, 29, 31, 37]]
        );
        assert_eq!(derive_primes(0, 2, 3, 1).unwrap(), vec![vec![2, 3, 5]]);
        assert!(derive_primes(u64::MAX - 10, 2, 1, 1).is_err());
    }

    type Case = (usize, Vec<i64>, Option<Vec<i64>>, Option<Vec<u8>>, Vec<i64>);

    fn arb_case() -> impl Strategy<Value = Case> {
        (1usize..6, 0usize..24).prop_flat_map(|(n, t)| {
            (
                Just(n),
                proptest::collection::vec(0i64..1000, t),
                proptest::option::of(proptest::collection::vec(0i64..4, t)),
                proptest::option::of(proptest::collection::vec(0u8..3, t)),
                proptest::collection::vec(1000i64..2000, 0..n),
            )
        })
    }

    proptest! {
        /// The streaming form and the random-access form of the window rule agree.
        #[test]
        fn streaming_matches_random_access((n, ids, pos, alive, hist) in arb_case()) {
            let mut all = vec![0u64; ids.len() * n];
            windows(n, &ids, pos.as_deref(), alive.as_deref(), &hist, 7777, &mut all).unwrap();
            let mut one = vec![0u64; n];
            for t in 0..ids.len() {
                window(&ids, pos.as_deref(), alive.as_deref(), &hist, 7777, t, &mut one).unwrap();
                prop_assert_eq!(&one[..], &all[t * n..(t + 1) * n], "t = {}", t);
            }
        }
    }
}
