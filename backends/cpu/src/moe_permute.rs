//! `moe_permute` (OPS.md §3) on raw slices: a parallel, deterministic counting sort of the
//! `(token, slot)` pairs by expert; within an expert rows are in `(t, j)` order.

use crate::pool::Pool;
use moehal_core::ops::moe_permute::check_ids;
use moehal_core::{Error, Result};
use rayon::prelude::*;

const OP: &str = "moe_permute";
/// Tokens per parallel task of the sort.
const CHUNK: usize = 256;
/// Slots (`T * k`) below which the sort runs serially on the calling thread with one scratch
/// vector (waking the pool costs more than the work: issue 16 item 9, measured with `moehal bench`).
pub const SERIAL_BELOW: usize = 4096;
/// Bytes of `x_perm` below which the row copy runs serially on the calling thread, and the least
/// bytes per parallel task above it.
const SERIAL_COPY_BYTES: usize = 4 << 20;

/// Permute `ids` (`[T, k]`, values in `[-1, E)`): writes `group_end [E]`, `src_token[..routed]`,
/// `slot_row [T, k]` (`-1` for dropped slots) and, when `x` is given (`[T, row_bytes]` bytes),
/// `x_perm[..routed]` rows. Entries past the routed rows are left untouched.
///
/// Errors: `InvalidArgument` for an id outside `[-1, E)` or mismatched lengths; nothing is written.
pub fn moe_permute(
    pool: &Pool,
    ids: &[i32],
    t: usize,
    k: usize,
    e: usize,
    group_end: &mut [i64],
    src_token: &mut [i64],
    slot_row: &mut [i64],
    x: Option<(&[u8], usize, &mut [u8])>,
) -> Result<()> {
    if ids.len() != t * k || group_end.len() != e || src_token.len() != t * k || slot_row.len() != t * k {
        return Err(Error::invalid(OP, "ids", "slice lengths do not match [T, k] / [E]"));
    }
    if let Some((xs, rb, xp)) = &x {
        if xs.len() != t * rb || xp.len() != t * k * rb {
            return Err(Error::invalid(
                OP,
                "x",
                "x / x_perm lengths do not match [T, H] / [T*k, H]",
            ));
        }
    }
    check_ids(ids, e)?;
    let row = CHUNK * k.max(1);
    if !pool.worth_parallel(ids.len(), SERIAL_BELOW) {
        serial(ids, k, group_end, src_token, slot_row, x);
        return Ok(());
    }
    let histogram = |c: &[i32]| {
        let mut h = vec![0i64; e];
        for &id in c {
            if id >= 0 {
                h[id as usize] += 1;
            }
        }
        h
    };
    // Per-chunk histograms (parallel), then exclusive starts per (chunk, expert).
    let hist: Vec<Vec<i64>> = pool.install(|| ids.par_chunks(row.max(1)).map(histogram).collect());
    let mut acc = 0i64;
    let mut starts = vec![vec![0i64; e]; hist.len()];
    for g in 0..e {
        for (ci, h) in hist.iter().enumerate() {
            starts[ci][g] = acc;
            acc += h[g];
        }
        group_end[g] = acc;
    }
    let place = |((sr, idc), cur): ((&mut [i64], &[i32]), &mut Vec<i64>)| {
        for (o, &id) in sr.iter_mut().zip(idc) {
            if id >= 0 {
                *o = cur[id as usize];
                cur[id as usize] += 1;
            } else {
                *o = -1;
            }
        }
    };
    pool.install(|| {
        slot_row
            .par_chunks_mut(row.max(1))
            .zip(ids.par_chunks(row.max(1)))
            .zip(starts.par_iter_mut())
            .for_each(place)
    });
    finish(pool, slot_row, src_token, k, acc as usize, x);
    Ok(())
}

/// The serial path (small shapes, or one worker): one counting sort with one scratch vector (no
/// per-chunk tables), `slot_row` and `src_token` written in the same pass, and the rows copied in
/// slot order, so each token's row is read `k` times in a row while it is in L1 (in destination
/// order the reads jump between tokens). Never more work than the reference, which this path
/// matches at small shapes (issue 16 item 9: `moehal bench --tokens 1,4,16,64` had it at 0.6-0.9x).
fn serial(
    ids: &[i32],
    k: usize,
    group_end: &mut [i64],
    src_token: &mut [i64],
    slot_row: &mut [i64],
    x: Option<(&[u8], usize, &mut [u8])>,
) {
    let mut cur = vec![0i64; group_end.len()];
    for &id in ids {
        if id >= 0 {
            cur[id as usize] += 1;
        }
    }
    let mut acc = 0i64;
    for (g, c) in cur.iter_mut().enumerate() {
        let n = *c;
        *c = acc;
        acc += n;
        group_end[g] = acc;
    }
    let k = k.max(1);
    for (s, (o, &id)) in slot_row.iter_mut().zip(ids).enumerate() {
        if id >= 0 {
            let r = cur[id as usize];
            cur[id as usize] += 1;
            *o = r;
            src_token[r as usize] = (s / k) as i64;
        } else {
            *o = -1;
        }
    }
    if let Some((xs, rb, xp)) = x {
        if rb > 0 {
            for (s, &r) in slot_row.iter().enumerate() {
                if r >= 0 {
                    let tok = s / k;
                    xp[r as usize * rb..][..rb].copy_from_slice(&xs[tok * rb..][..rb]);
                }
            }
        }
    }
}

/// `src_token` from `slot_row`, then the `x_perm` rows (serially up to [`SERIAL_COPY_BYTES`]).
fn finish(
    pool: &Pool,
    slot_row: &[i64],
    src_token: &mut [i64],
    k: usize,
    routed: usize,
    x: Option<(&[u8], usize, &mut [u8])>,
) {
    for (s, &r) in slot_row.iter().enumerate() {
        if r >= 0 {
            src_token[r as usize] = (s / k) as i64;
        }
    }
    if let Some((xs, rb, xp)) = x {
        if rb > 0 {
            let src_token = &*src_token;
            let copy = |(r, dst): (usize, &mut [u8])| {
                let tok = src_token[r] as usize;
                dst.copy_from_slice(&xs[tok * rb..(tok + 1) * rb]);
            };
            if !pool.worth_parallel(routed * rb, SERIAL_COPY_BYTES + 1) {
                xp[..routed * rb].chunks_mut(rb).enumerate().for_each(copy);
            } else {
                let min_rows = SERIAL_COPY_BYTES.div_ceil(16 * rb).max(1);
                pool.install(|| {
                    xp[..routed * rb]
                        .par_chunks_mut(rb)
                        .enumerate()
                        .with_min_len(min_rows)
                        .for_each(copy)
                });
            }
        }
    }
}
