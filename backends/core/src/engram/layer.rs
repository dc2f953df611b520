//! [`EngramLayer`]: one layer's validated hash configuration and the scalar hash of a window and of
//! a whole sequence.

use super::windows::{check_window_args, WindowStream};
use super::{is_prime, Error, Result, OP};

/// Op name in errors about a layer's configuration ([`EngramLayer::new`]): the layer is built
/// before any hash runs, so its errors do not name `engram_hash`.
const OP_LAYER: &str = "engram_layer";

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
    ///   [`derive_primes`](super::derive_primes)).
    /// * `vocab_size`: compressed vocabulary size `V' >= 1`.
    /// * `pad_id`: compressed pad id `π < V'`.
    ///
    /// The total row count `sum(primes)` must fit `i64` (rows are written as `i64`).
    /// Errors: [`Error::InvalidArgument`] with op `"engram_layer"` naming the offending field.
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
                OP_LAYER,
                "max_order",
                format!("must be >= 2, got {max_order}"),
            ));
        }
        if heads == 0 {
            return Err(Error::invalid(OP_LAYER, "heads", "must be >= 1, got 0"));
        }
        if vocab_size == 0 {
            return Err(Error::invalid(OP_LAYER, "vocab_size", "must be >= 1, got 0"));
        }
        if pad_id >= vocab_size {
            return Err(Error::invalid(
                OP_LAYER,
                "pad_id",
                format!("pad id {pad_id} is not below vocab_size {vocab_size}"),
            ));
        }
        if multipliers.len() != max_order {
            return Err(Error::invalid(
                OP_LAYER,
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
                    OP_LAYER,
                    "multipliers",
                    format!("multiplier {k} = {m} is even (must be odd)"),
                ));
            }
            if (m as u128) * ((vocab_size - 1) as u128) >= 1u128 << 63 {
                return Err(Error::invalid(
                    OP_LAYER,
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
            .ok_or_else(|| Error::invalid(OP_LAYER, "heads", "column count (max_order - 1) * heads overflows"))?;
        if primes.len() != columns {
            return Err(Error::invalid(
                OP_LAYER,
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
            return Err(Error::invalid(
                OP_LAYER,
                "primes",
                format!("prime {} appears twice", w[0]),
            ));
        }
        for (c, &p) in primes.iter().enumerate() {
            if !is_prime(p) {
                return Err(Error::invalid(
                    OP_LAYER,
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
                .ok_or_else(|| Error::invalid(OP_LAYER, "primes", "total row count overflows i64"))?;
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

    /// Full `engram_hash` of one sequence on the host (`OPS.md` §4): windows by [`windows`](super::windows)'s rule,
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
