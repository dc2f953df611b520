//! AVX2 + FMA kernels (x86-64 without AVX-512). `Kernels::for_isa(Isa::Avx2)` verifies
//! avx2, fma and f16c before handing these out.

use super::NR;
use std::arch::x86_64::*;

/// exp(x) in f32 (see the AVX-512 version); 2^n is applied as two normal factors so that overflow
/// gives inf and deep underflow gives 0.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp(x: __m256) -> __m256 {
    let x = _mm256_max_ps(_mm256_set1_ps(-104.0), _mm256_min_ps(_mm256_set1_ps(89.0), x));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.0 / 5040.0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 720.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 120.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 24.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 6.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    // NaN lanes convert to i32::MIN; the final multiply by NaN p keeps them NaN.
    let ni = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32::<1>(ni);
    let n2 = _mm256_sub_epi32(ni, n1);
    let bias = _mm256_set1_epi32(127);
    let f1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
    let f2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
    _mm256_mul_ps(_mm256_mul_ps(p, f1), f2)
}

/// Apply `f` to `n` lanes, 8 at a time; the last partial vector goes through a zero-padded buffer.
#[inline(always)]
unsafe fn map8(src: *const f32, dst: *mut f32, n: usize, mut f: impl FnMut(__m256) -> __m256) {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i+8 <= n elements exist in both.
        unsafe { _mm256_storeu_ps(dst.add(i), f(_mm256_loadu_ps(src.add(i)))) };
        i += 8;
    }
    if i < n {
        let mut buf = [0f32; 8];
        // SAFETY: n-i < 8 elements remain in both.
        unsafe {
            std::ptr::copy_nonoverlapping(src.add(i), buf.as_mut_ptr(), n - i);
            _mm256_storeu_ps(buf.as_mut_ptr(), f(_mm256_loadu_ps(buf.as_ptr())));
            std::ptr::copy_nonoverlapping(buf.as_ptr(), dst.add(i), n - i);
        }
    }
}

/// # Safety
/// AVX2+FMA; `src`, `dst` hold `n` f32.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn sigmoid(src: *const f32, dst: *mut f32, n: usize) {
    let one = _mm256_set1_ps(1.0);
    // SAFETY: forwarded contract.
    unsafe {
        map8(src, dst, n, |x| {
            _mm256_div_ps(one, _mm256_add_ps(one, exp(_mm256_sub_ps(_mm256_setzero_ps(), x))))
        })
    }
}

/// # Safety
/// AVX2+FMA; `src`, `dst` hold `n` f32.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp_shift(src: *const f32, dst: *mut f32, n: usize, shift: f32) -> f32 {
    let s = _mm256_set1_ps(shift);
    // SAFETY: forwarded contract.
    unsafe { map8(src, dst, n, |x| exp(_mm256_sub_ps(x, s))) };
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i+8 <= n.
        acc = _mm256_add_ps(acc, unsafe { _mm256_loadu_ps(dst.add(i)) });
        i += 8;
    }
    let mut lanes = [0f32; 8];
    // SAFETY: lanes holds 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    let mut sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    while i < n {
        // SAFETY: i < n.
        sum += unsafe { *dst.add(i) };
        i += 1;
    }
    sum
}

/// # Safety
/// AVX2+FMA; `g`, `u`, `out` hold `n` f32.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn silu_mul(g: *const f32, u: *const f32, out: *mut f32, n: usize, limit: f32) {
    let lim = _mm256_set1_ps(limit);
    let neg = _mm256_set1_ps(-limit);
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    let f = |gv: __m256, uv: __m256| {
        let x = _mm256_min_ps(lim, gv);
        let y = _mm256_max_ps(neg, _mm256_min_ps(lim, uv));
        let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), x));
        _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), y)
    };
    while i + 8 <= n {
        // SAFETY: i+8 <= n elements exist in all three.
        unsafe { _mm256_storeu_ps(out.add(i), f(_mm256_loadu_ps(g.add(i)), _mm256_loadu_ps(u.add(i)))) };
        i += 8;
    }
    if i < n {
        let (mut bg, mut bu) = ([0f32; 8], [0f32; 8]);
        // SAFETY: n-i < 8 elements remain in all three.
        unsafe {
            std::ptr::copy_nonoverlapping(g.add(i), bg.as_mut_ptr(), n - i);
            std::ptr::copy_nonoverlapping(u.add(i), bu.as_mut_ptr(), n - i);
            _mm256_storeu_ps(
                bg.as_mut_ptr(),
                f(_mm256_loadu_ps(bg.as_ptr()), _mm256_loadu_ps(bu.as_ptr())),
            );
            std::ptr::copy_nonoverlapping(bg.as_ptr(), out.add(i), n - i);
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn micro_n<const M: usize>(a: *const f32, lda: usize, kc: usize, b: *const f32, c: *mut f32, accumulate: bool) {
    // Four column quarters of 16 (two ymm each): 2*M accumulators stay in the 16 registers.
    for q in 0..NR / 16 {
        let mut cr = [[_mm256_setzero_ps(); 2]; M];
        if accumulate {
            for (i, row) in cr.iter_mut().enumerate() {
                // SAFETY: c holds M*NR f32.
                unsafe {
                    row[0] = _mm256_loadu_ps(c.add(i * NR + q * 16));
                    row[1] = _mm256_loadu_ps(c.add(i * NR + q * 16 + 8));
                }
            }
        }
        for k in 0..kc {
            // SAFETY: b holds kc*NR, a holds (M-1)*lda + kc.
            unsafe {
                let bp = b.add(k * NR + q * 16);
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                for (i, row) in cr.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(i * lda + k));
                    row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                }
            }
        }
        for (i, row) in cr.iter().enumerate() {
            // SAFETY: c holds M*NR f32.
            unsafe {
                _mm256_storeu_ps(c.add(i * NR + q * 16), row[0]);
                _mm256_storeu_ps(c.add(i * NR + q * 16 + 8), row[1]);
            }
        }
    }
}

/// See `Kernels::micro`.
///
/// # Safety
/// AVX2 + FMA; bounds as in `Kernels::micro`; `1 <= mr <= 6`.
#[target_feature(enable = "avx2,fma")]
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

/// # Safety
/// AVX2; `src`, `dst` hold `n` elements.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn widen_bf16(src: *const u16, dst: *mut f32, n: usize) {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i+8 <= n.
        unsafe {
            let h = _mm_loadu_si128(src.add(i) as *const __m128i);
            let w = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
            _mm256_storeu_ps(dst.add(i), _mm256_castsi256_ps(w));
        }
        i += 8;
    }
    // SAFETY: the remaining n-i elements.
    unsafe { super::scalar::widen_bf16(src.add(i), dst.add(i), n - i) }
}

/// # Safety
/// AVX2+F16C; `src`, `dst` hold `n` elements.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn widen_f16(src: *const u16, dst: *mut f32, n: usize) {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i+8 <= n.
        unsafe {
            let h = _mm_loadu_si128(src.add(i) as *const __m128i);
            _mm256_storeu_ps(dst.add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    // SAFETY: the remaining n-i elements.
    unsafe { super::scalar::widen_f16(src.add(i), dst.add(i), n - i) }
}
