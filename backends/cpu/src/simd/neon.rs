//! aarch64 Advanced SIMD kernels. NEON is part of the aarch64 baseline; `Kernels::for_isa(Isa::Neon)`
//! still checks it at run time.

use super::NR;
use std::arch::aarch64::*;

#[inline]
#[target_feature(enable = "neon")]
unsafe fn micro_n<const M: usize>(a: *const f32, lda: usize, kc: usize, b: *const f32, c: *mut f32, accumulate: bool) {
    // Four column quarters of 16 (four q registers each): 4*M accumulators of the 32 registers.
    for q in 0..NR / 16 {
        let mut cr = [[vdupq_n_f32(0.0); 4]; M];
        if accumulate {
            for (i, row) in cr.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    // SAFETY: c holds M*NR f32.
                    *v = unsafe { vld1q_f32(c.add(i * NR + q * 16 + j * 4)) };
                }
            }
        }
        for k in 0..kc {
            // SAFETY: b holds kc*NR, a holds (M-1)*lda + kc.
            unsafe {
                let bp = b.add(k * NR + q * 16);
                let bv = [
                    vld1q_f32(bp),
                    vld1q_f32(bp.add(4)),
                    vld1q_f32(bp.add(8)),
                    vld1q_f32(bp.add(12)),
                ];
                for (i, row) in cr.iter_mut().enumerate() {
                    let av = *a.add(i * lda + k);
                    for j in 0..4 {
                        row[j] = vfmaq_n_f32(row[j], bv[j], av);
                    }
                }
            }
        }
        for (i, row) in cr.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                // SAFETY: c holds M*NR f32.
                unsafe { vst1q_f32(c.add(i * NR + q * 16 + j * 4), *v) };
            }
        }
    }
}

/// See `Kernels::micro`.
///
/// # Safety
/// NEON; bounds as in `Kernels::micro`; `1 <= mr <= 6`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn micro(a: *const f32, lda: usize, mr: usize, kc: usize, b: *const f32, c: *mut f32, acc: bool) {
    // SAFETY: forwarded contract.
    unsafe {
        match mr {
            1 => micro_n::<1>(a, lda, kc, b, c, acc),
            2 => micro_n::<2>(a, lda, kc, b, c, acc),
            3 => micro_n::<3>(a, lda, kc, b, c, acc),
            4 => micro_n::<4>(a, lda, kc, b, c, acc),
            5 => micro_n::<5>(a, lda, kc, b, c, acc),
            _ => micro_n::<6>(a, lda, kc, b, c, acc),
        }
    }
}
