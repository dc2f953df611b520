//! Portable kernels (no intrinsics): the fallback of every table and the oracle of the unit tests.
//! They take raw pointers only to share the function-pointer types of the SIMD tables.

use super::NR;

/// See [`super::Kernels::micro`].
///
/// # Safety
/// `a` holds `(mr-1)*lda + kc` f32, `b` holds `kc*NR`, `c` holds `mr*NR`.
pub(super) unsafe fn micro(a: *const f32, lda: usize, mr: usize, kc: usize, b: *const f32, c: *mut f32, acc: bool) {
    // SAFETY: lengths guaranteed by the caller (checked in the safe wrapper).
    let (a, b, c) = unsafe {
        (
            std::slice::from_raw_parts(a, if kc == 0 { 0 } else { (mr - 1) * lda + kc }),
            std::slice::from_raw_parts(b, kc * NR),
            std::slice::from_raw_parts_mut(c, mr * NR),
        )
    };
    for i in 0..mr {
        let mut row = [0f32; NR];
        if acc {
            row.copy_from_slice(&c[i * NR..(i + 1) * NR]);
        }
        for k in 0..kc {
            let av = a[i * lda + k];
            let bk = &b[k * NR..(k + 1) * NR];
            for j in 0..NR {
                row[j] = av.mul_add(bk[j], row[j]);
            }
        }
        c[i * NR..(i + 1) * NR].copy_from_slice(&row);
    }
}

/// See [`super::Kernels::transpose_nr16`].
///
/// # Safety
/// `src` and `dst` hold `NR*kw` f32.
pub(super) unsafe fn transpose_nr16(src: *const f32, dst: *mut f32, kw: usize) {
    // SAFETY: lengths guaranteed by the caller.
    let (s, d) = unsafe {
        (
            std::slice::from_raw_parts(src, NR * kw),
            std::slice::from_raw_parts_mut(dst, NR * kw),
        )
    };
    for c in 0..NR {
        for k in 0..kw {
            d[k * NR + c] = s[c * kw + k];
        }
    }
}

/// # Safety
/// `src` and `dst` hold `n` f32.
pub(super) unsafe fn sigmoid(src: *const f32, dst: *mut f32, n: usize) {
    // SAFETY: lengths guaranteed by the caller.
    let (s, d) = unsafe {
        (
            std::slice::from_raw_parts(src, n),
            std::slice::from_raw_parts_mut(dst, n),
        )
    };
    for (o, x) in d.iter_mut().zip(s) {
        *o = 1.0 / (1.0 + (-x).exp());
    }
}

/// # Safety
/// `src` and `dst` hold `n` f32.
pub(super) unsafe fn exp_shift(src: *const f32, dst: *mut f32, n: usize, shift: f32) -> f32 {
    // SAFETY: lengths guaranteed by the caller.
    let (s, d) = unsafe {
        (
            std::slice::from_raw_parts(src, n),
            std::slice::from_raw_parts_mut(dst, n),
        )
    };
    let mut sum = 0f32;
    for (o, x) in d.iter_mut().zip(s) {
        *o = (x - shift).exp();
        sum += *o;
    }
    sum
}

/// # Safety
/// `g`, `u`, `out` hold `n` f32.
pub(super) unsafe fn silu_mul(g: *const f32, u: *const f32, out: *mut f32, n: usize, limit: f32) {
    // SAFETY: lengths guaranteed by the caller.
    let (g, u, o) = unsafe {
        (
            std::slice::from_raw_parts(g, n),
            std::slice::from_raw_parts(u, n),
            std::slice::from_raw_parts_mut(out, n),
        )
    };
    for i in 0..n {
        // NaN-propagating clamps (f32::min would drop a NaN gate).
        let x = if g[i] > limit { limit } else { g[i] };
        let y = if u[i] > limit {
            limit
        } else if u[i] < -limit {
            -limit
        } else {
            u[i]
        };
        o[i] = x / (1.0 + (-x).exp()) * y;
    }
}

/// # Safety
/// `src`, `dst` hold `n` elements.
pub(super) unsafe fn widen_bf16(src: *const u16, dst: *mut f32, n: usize) {
    // SAFETY: lengths guaranteed by the caller.
    let (s, d) = unsafe {
        (
            std::slice::from_raw_parts(src, n),
            std::slice::from_raw_parts_mut(dst, n),
        )
    };
    for (o, b) in d.iter_mut().zip(s) {
        *o = f32::from_bits((*b as u32) << 16);
    }
}

/// # Safety
/// `src`, `dst` hold `n` elements.
pub(super) unsafe fn widen_f16(src: *const u16, dst: *mut f32, n: usize) {
    // SAFETY: lengths guaranteed by the caller.
    let (s, d) = unsafe {
        (
            std::slice::from_raw_parts(src, n),
            std::slice::from_raw_parts_mut(dst, n),
        )
    };
    for (o, b) in d.iter_mut().zip(s) {
        *o = half::f16::from_bits(*b).to_f32();
    }
}
