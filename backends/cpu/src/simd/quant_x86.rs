//! AVX-512 kernels of the quantized formats (OPS.md §6): MXFP4 decode-shape dot products that read
//! each packed weight byte once and decode it in registers, and VNNI int8 dot products.

use super::NR;
use std::arch::x86_64::*;

/// `c[i * NR + n] = Σ_k a(i, k) · W(n, k)` for `i < mr`, `n < nc`, with `W(n, k) = fl32(e2m1(code)
/// · 2^(scale − 127))` read from packed MXFP4 rows: `w` holds `nc` rows of `k / 2` bytes, `s` holds
/// `nc` rows of `k / 32` E8M0 bytes. `a` is in the split layout: row `i`, block `b` of 32 is
/// `a[i * k + 32 b .. + 16]` = the 16 even-k values, then the 16 odd-k values.
///
/// # Safety
/// AVX-512F must be available; `a` holds `mr * k` floats, `w` `nc * k / 2` bytes, `s` `nc * k / 32`
/// bytes, `c` `mr * NR` floats; `1 <= mr <= 6`, `k % 32 == 0`, `nc <= NR`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
pub unsafe fn dot_mxfp4(a: *const f32, mr: usize, k: usize, w: *const u8, s: *const u8, nc: usize, c: *mut f32) {
    // SAFETY (whole body): every pointer offset below stays within the extents the caller promised.
    unsafe {
        let table = _mm512_setr_ps(
            0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
        );
        let nib = _mm512_set1_epi32(0xF);
        let blocks = k / 32;
        for n in 0..nc {
            let wr = w.add(n * k / 2);
            let sr = s.add(n * blocks);
            let mut acc = [_mm512_setzero_ps(); 6];
            for b in 0..blocks {
                let e = *sr.add(b);
                let scale = if e == 255 {
                    f32::NAN
                } else if e == 0 {
                    f32::from_bits(1 << 22)
                } else {
                    f32::from_bits((e as u32) << 23)
                };
                // The 16 possible weight values of this block, each rounded once in f32.
                let lut = _mm512_mul_ps(table, _mm512_set1_ps(scale));
                let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(wr.add(b * 16) as *const __m128i));
                let lo = _mm512_permutexvar_ps(_mm512_and_si512(bytes, nib), lut);
                let hi = _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(bytes), lut);
                if b + 4 < blocks {
                    _mm_prefetch::<_MM_HINT_T0>(wr.add((b + 4) * 16) as *const i8);
                }
                for (i, acc_i) in acc.iter_mut().enumerate().take(mr) {
                    let ar = a.add(i * k + b * 32);
                    *acc_i = _mm512_fmadd_ps(lo, _mm512_loadu_ps(ar), *acc_i);
                    *acc_i = _mm512_fmadd_ps(hi, _mm512_loadu_ps(ar.add(16)), *acc_i);
                }
            }
            for (i, acc_i) in acc.iter().enumerate().take(mr) {
                *c.add(i * NR + n) = _mm512_reduce_add_ps(*acc_i);
            }
        }
    }
}

/// `out[i * NR + n] = Σ_k x[i * k + kk] · w[n * k + kk]` exactly in i32 for `i < rows`, `n < nc`,
/// with `vpdpbusd` (AVX512-VNNI): the signed x is biased to unsigned (`x + 128`) and the bias is
/// taken back out with `128 · Σ_k w`.
///
/// # Safety
/// AVX-512F/BW and AVX512-VNNI must be available; `x` holds `rows * k` bytes, `w` `nc * k` bytes,
/// `out` `rows * NR` values (`rows >= 1`, `nc <= NR`); `k <= 131,071` keeps every sum in i32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_i8_vnni(x: *const i8, rows: usize, w: *const i8, nc: usize, k: usize, out: *mut i32) {
    // SAFETY (whole body): every access stays within the extents the caller promised; the tail
    // loads are masked.
    unsafe {
        let bias = _mm512_set1_epi8(-128i8); // x ^ 0x80 == x + 128 as unsigned
        let ones = _mm512_set1_epi8(1);
        let full = k / 64;
        let tail = k % 64;
        let tmask: __mmask64 = if tail == 0 { 0 } else { (1u64 << tail) - 1 };
        let mut i0 = 0;
        while i0 < rows {
            let mr = (rows - i0).min(4);
            for n in 0..nc {
                let wr = w.add(n * k);
                let mut acc = [_mm512_setzero_si512(); 4];
                let mut wsum = _mm512_setzero_si512();
                for b in 0..=full {
                    let (wv, m) = if b < full {
                        (_mm512_loadu_si512(wr.add(b * 64) as *const _), !0u64)
                    } else if tail > 0 {
                        (_mm512_maskz_loadu_epi8(tmask, wr.add(b * 64)), tmask)
                    } else {
                        break;
                    };
                    wsum = _mm512_dpbusd_epi32(wsum, ones, wv);
                    for (i, acc_i) in acc.iter_mut().enumerate().take(mr) {
                        let xr = x.add((i0 + i) * k + b * 64);
                        let xv = _mm512_maskz_loadu_epi8(m, xr);
                        // Masked-off lanes hold x = 0 → 128 after the flip, but w = 0 there.
                        let xu = _mm512_xor_si512(xv, bias);
                        *acc_i = _mm512_dpbusd_epi32(*acc_i, xu, wv);
                    }
                }
                let ws = _mm512_reduce_add_epi32(wsum);
                for (i, acc_i) in acc.iter().enumerate().take(mr) {
                    // vpdpbusd wraps modulo 2^32 and the true sum fits in i32, so the wrapped
                    // difference is exact even where the biased sum alone would overflow.
                    *out.add((i0 + i) * NR + n) = _mm512_reduce_add_epi32(*acc_i).wrapping_sub(ws.wrapping_mul(128));
                }
            }
            i0 += mr;
        }
    }
}
