//! `moe_combine` (OPS.md §3) on raw slices: `out[t] = sum_j weights[t, j] * y_perm[slot_row[t, j]]`
//! in f32, in order `j = 0..k-1`, tokens in parallel (same bits every run).

use crate::elem::{Elem, ElemKind};
use crate::pool::Pool;
use crate::simd::Kernels;
use moehal_core::ops::moe_combine::check_slot_rows;
use moehal_core::{Error, Result};
use rayon::prelude::*;

const OP: &str = "moe_combine";
/// Multiply-adds (`T * k * H`) below which `moe_combine` runs on the calling thread (issue 16 item 9:
/// waking the pool costs more than the work; measured with `moehal bench`).
pub const SERIAL_BELOW: usize = 128 * 1024;

/// `y_perm` is `[R, H]`, `slot_row` and `weights` `[T, k]`, `out` `[T, H]`.
///
/// Errors: `InvalidArgument` for a slot row outside `[-1, R)` or mismatched lengths; nothing is written.
pub fn moe_combine<T: Elem>(
    kern: &Kernels,
    pool: &Pool,
    y_perm: &[T],
    rows: usize,
    h: usize,
    slot_row: &[i64],
    weights: &[f32],
    t: usize,
    k: usize,
    out: &mut [T],
) -> Result<()> {
    if y_perm.len() != rows * h || slot_row.len() != t * k || weights.len() != t * k || out.len() != t * h {
        return Err(Error::invalid(
            OP,
            "y_perm",
            "slice lengths do not match [R, H] / [T, k] / [T, H]",
        ));
    }
    check_slot_rows(slot_row, rows)?;
    if h == 0 || t == 0 {
        return Ok(());
    }
    let toks_per = (8192 / h).max(1);
    let body = |(ci, oc): (usize, &mut [T])| {
        let mut acc = vec![0f32; h];
        let mut tmp = vec![0f32; h];
        for (ti, orow) in oc.chunks_mut(h).enumerate() {
            let tok = ci * toks_per + ti;
            acc.fill(0.0);
            for j in 0..k {
                let r = slot_row[tok * k + j];
                if r < 0 {
                    continue;
                }
                let wv = weights[tok * k + j];
                let yr = &y_perm[r as usize * h..(r as usize + 1) * h];
                let yf: &[f32] = if T::KIND == ElemKind::F32 {
                    bytemuck::cast_slice(yr)
                } else {
                    kern.widen(yr, &mut tmp);
                    &tmp
                };
                for (a, &y) in acc.iter_mut().zip(yf) {
                    *a += wv * y;
                }
            }
            T::narrow(&acc, orow);
        }
    };
    if !pool.worth_parallel(t * k * h, SERIAL_BELOW) {
        out.chunks_mut(toks_per * h).enumerate().for_each(body);
    } else {
        pool.install(|| out.par_chunks_mut(toks_per * h).enumerate().for_each(body));
    }
    Ok(())
}
