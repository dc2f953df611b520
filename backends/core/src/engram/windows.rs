//! The N-gram window rule of `engram_hash` (`OPS.md` §4): segments, the alive mask, history and
//! sticky blocking, in random-access ([`window`]) and streaming form.

use super::{Error, Result, OP};

pub(super) fn check_window_args(
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

/// Streaming form of the window rule (the same windows as [`window`], `O(N)` per token without
/// re-walking the look-back): carries `reach`, the number of look-back steps available to the
/// next token (consecutive alive tokens of its segment, history included, capped at `N - 1`).
///
/// Start it at token 0 ([`WindowStream::new`]) or at any token `t0` ([`WindowStream::at`], for a
/// chunk of a parallel split), then call [`WindowStream::next_window`] for `t0, t0 + 1, ..` in
/// order. The arguments must have passed validation (lengths, `history.len() <= N - 1`), as
/// [`window`] checks them.
#[derive(Clone, Debug)]
pub struct WindowStream {
    n: usize,
    reach: usize,
    pad: u64,
}

impl WindowStream {
    /// The stream before token 0: `n = N >= 1`, `history_len` ids of history, pad id `pad`.
    pub fn new(n: usize, history_len: usize, pad: u64) -> Self {
        Self {
            n,
            reach: history_len.min(n.max(1) - 1),
            pad,
        }
    }

    /// The stream before token `t0 <= T`: the reach of `t0` depends only on the `N - 1` tokens
    /// before it (it is capped at `N - 1`, and a segment start or dead token resets it), so this
    /// replays at most `N - 1` tokens.
    pub fn at(
        n: usize,
        ids: &[i64],
        positions: Option<&[i64]>,
        alive: Option<&[u8]>,
        history: &[i64],
        pad: u64,
        t0: usize,
    ) -> Self {
        let back = n.max(1) - 1;
        let (mut s, from) = if t0 <= back {
            (Self::new(n, history.len(), pad), 0)
        } else {
            // Any start state reaches the true one within N - 1 steps (capped or reset).
            (Self { n, reach: 0, pad }, t0 - back)
        };
        for t in from..t0.min(ids.len()) {
            s.advance(positions, alive, t);
        }
        s
    }

    /// Move past token `t` without writing its window.
    #[inline]
    fn advance(&mut self, positions: Option<&[i64]>, alive: Option<&[u8]>, t: usize) {
        if t > 0 && positions.is_some_and(|p| p[t] <= p[t - 1]) {
            self.reach = 0;
        }
        self.reach = if is_alive(alive, t) {
            (self.reach + 1).min(self.n - 1)
        } else {
            0
        };
    }

    /// Writes the window of token `t` into `out` (`[N]`); tokens must be visited in order from
    /// the stream's start.
    #[inline]
    pub fn next_window(
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
///   validate them against `[0, V')` before hashing, e.g. via [`EngramLayer::hash_sequence`](super::EngramLayer::hash_sequence)).
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        /// A stream started at any token gives the same windows from there on.
        #[test]
        fn stream_started_anywhere_matches_random_access((n, ids, pos, alive, hist) in arb_case(), cut in 0usize..24) {
            let t0 = cut.min(ids.len());
            let mut s = WindowStream::at(n, &ids, pos.as_deref(), alive.as_deref(), &hist, 7777, t0);
            let (mut a, mut b) = (vec![0u64; n], vec![0u64; n]);
            for t in t0..ids.len() {
                s.next_window(&ids, pos.as_deref(), alive.as_deref(), &hist, t, &mut a);
                window(&ids, pos.as_deref(), alive.as_deref(), &hist, 7777, t, &mut b).unwrap();
                prop_assert_eq!(&a, &b, "t0 = {}, t = {}", t0, t);
            }
        }

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
