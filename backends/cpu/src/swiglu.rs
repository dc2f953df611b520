//! `swiglu` (OPS.md §3) on raw slices: `out = silu(min(gate, limit)) * clamp(up, -limit, limit)`,
//! rows in parallel, SIMD `exp`; deterministic (each element depends on its inputs only).

use crate::elem::{Elem, ElemKind};
use crate::pool::Pool;
use crate::simd::Kernels;
use moehal_core::{Error, Result};
use rayon::prelude::*;

const OP: &str = "swiglu";
/// Outputs (`M * I`) below which `swiglu` runs on the calling thread (issue 16 item 9: waking the
/// pool costs more than the work; measured with `moehal bench`).
pub const SERIAL_BELOW: usize = 16 * 1024;

/// `h` is `[M, 2I]`, `out` `[M, I]`; `limit` as validated by core (finite, > 0) or none.
///
/// Errors: `InvalidArgument` for mismatched lengths; nothing is written.
pub fn swiglu<T: Elem>(
    kern: &Kernels,
    pool: &Pool,
    h: &[T],
    m: usize,
    i: usize,
    limit: Option<f32>,
    out: &mut [T],
) -> Result<()> {
    if h.len() != m * 2 * i || out.len() != m * i {
        return Err(Error::invalid(OP, "h", "slice lengths do not match [M, 2I] / [M, I]"));
    }
    if i == 0 || m == 0 {
        return Ok(());
    }
    let lim = limit.unwrap_or(f32::INFINITY);
    let rows_per = (16384 / i).max(1);
    let body = |(ci, oc): (usize, &mut [T])| {
        let mut g = vec![0f32; i];
        let mut u = vec![0f32; i];
        let mut o = vec![0f32; i];
        for (ri, orow) in oc.chunks_mut(i).enumerate() {
            let r = ci * rows_per + ri;
            let hr = &h[r * 2 * i..(r + 1) * 2 * i];
            if T::KIND == ElemKind::F32 {
                let hf: &[f32] = bytemuck::cast_slice(hr);
                kern.silu_mul(&hf[..i], &hf[i..], bytemuck::cast_slice_mut(orow), lim);
            } else {
                kern.widen(&hr[..i], &mut g);
                kern.widen(&hr[i..], &mut u);
                kern.silu_mul(&g, &u, &mut o, lim);
                T::narrow(&o, orow);
            }
        }
    };
    if !pool.worth_parallel(m * i, SERIAL_BELOW) {
        out.chunks_mut(rows_per * i).enumerate().for_each(body);
    } else {
        pool.install(|| out.par_chunks_mut(rows_per * i).enumerate().for_each(body));
    }
    Ok(())
}
