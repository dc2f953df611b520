//! x86 kernels of the quantized formats (OPS.md §6): MXFP4 decode-shape dot products that read
//! each packed weight byte once and decode it in registers (AVX-512: a 16-entry f32 permute; AVX2:
//! a `vpshufb` table of `2 × e2m1` as i8), and exact int8 dot products (AVX512-VNNI `vpdpbusd`;
//! AVX2: sign-extension to i16 and `vpmaddwd`).

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

/// AVX2 form of [`dot_mxfp4`] (same contract): per 32-block, the 16 packed bytes are split into
/// nibbles, `vpshufb` maps each code to `2 × e2m1` as an i8 (exact: 0, ±1, ±2, ±3, ±4, ±6, ±8,
/// ±12; the code of −0 gives +0, which changes no sum), the i8 are widened to f32 and multiplied by
/// `2^(scale − 128)` (one exact-or-IEEE rounding, as the f32 dequantized weight), then FMA with the
/// split-layout activations.
///
/// # Safety
/// AVX2 and FMA must be available; extents as [`dot_mxfp4`].
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_mxfp4_avx2(a: *const f32, mr: usize, k: usize, w: *const u8, s: *const u8, nc: usize, c: *mut f32) {
    // SAFETY: same extents, forwarded; the instruction sets are this function's.
    unsafe {
        match mr {
            1 => mxfp4_rows_avx2::<1>(a, k, w, s, nc, c),
            2 => mxfp4_rows_avx2::<2>(a, k, w, s, nc, c),
            3 => mxfp4_rows_avx2::<3>(a, k, w, s, nc, c),
            4 => mxfp4_rows_avx2::<4>(a, k, w, s, nc, c),
            5 => mxfp4_rows_avx2::<5>(a, k, w, s, nc, c),
            _ => mxfp4_rows_avx2::<6>(a, k, w, s, nc, c),
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn mxfp4_rows_avx2<const R: usize>(a: *const f32, k: usize, w: *const u8, s: *const u8, nc: usize, c: *mut f32) {
    // SAFETY (whole body): every pointer offset stays within the extents of dot_mxfp4's contract
    // (`a` R rows of k, `w` nc rows of k/2 bytes, `s` nc rows of k/32, `c` R rows of NR).
    unsafe {
        let table = _mm_loadu_si128(super::E2M1_X2.as_ptr() as *const __m128i);
        let nib = _mm_set1_epi8(0x0F);
        let blocks = k / 32;
        for n in 0..nc {
            let wr = w.add(n * k / 2);
            let sr = s.add(n * blocks);
            let mut acc0 = [_mm256_setzero_ps(); R];
            let mut acc1 = [_mm256_setzero_ps(); R];
            for b in 0..blocks {
                if b + 32 < blocks {
                    _mm_prefetch::<_MM_HINT_T0>(wr.add((b + 32) * 16) as *const i8);
                }
                let sv = _mm256_set1_ps(super::e8m0_half(*sr.add(b)));
                let bytes = _mm_loadu_si128(wr.add(b * 16) as *const __m128i);
                let lo = _mm_shuffle_epi8(table, _mm_and_si128(bytes, nib));
                let hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16::<4>(bytes), nib));
                macro_rules! widen {
                    ($v:expr) => {
                        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32($v)), sv)
                    };
                }
                let w0 = widen!(lo);
                let w1 = widen!(_mm_srli_si128::<8>(lo));
                let w2 = widen!(hi);
                let w3 = widen!(_mm_srli_si128::<8>(hi));
                for i in 0..R {
                    let ar = a.add(i * k + b * 32);
                    acc0[i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(ar), acc0[i]);
                    acc1[i] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(ar.add(8)), acc1[i]);
                    acc0[i] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(ar.add(16)), acc0[i]);
                    acc1[i] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(ar.add(24)), acc1[i]);
                }
            }
            for i in 0..R {
                *c.add(i * NR + n) = hsum_ps(_mm256_add_ps(acc0[i], acc1[i]));
            }
        }
    }
}

#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    // SAFETY: register-only AVX/SSE operations; callers run with AVX2 enabled.
    unsafe {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)))
    }
}

#[inline(always)]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    // SAFETY: register-only AVX2/SSE operations; callers run with AVX2 enabled.
    unsafe {
        let q = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let d = _mm_add_epi32(q, _mm_shuffle_epi32::<0b01_00_11_10>(q));
        _mm_cvtsi128_si32(_mm_add_epi32(d, _mm_shuffle_epi32::<0b10_11_00_01>(d)))
    }
}

/// AVX2 int8 dot products, accumulating: `out[i * NR + n] += Σ_{kk < kc} x[i * ldx + kk] ·
/// w[n * ldw + kk]` (wrapping i32 adds; exact where the true sum fits i32, as OPS.md's `K <=
/// 131,071` guarantees) for `i < rows`, `n < nc`. `x` is i8 read in place and sign-extended in
/// registers; `w` is i8 already sign-extended to i16 (an L1-resident block, filled once per task
/// and reused by every row); `vpmaddwd` forms exact i32 pair sums (at most 2 · 128 · 128 = 2^15).
/// Rows are taken two at a time against four columns (8 accumulators); the `kc % 16` tail is scalar.
///
/// # Safety
/// AVX2 must be available; `x` holds `(rows − 1) * ldx + kc` values, `w` `(nc − 1) * ldw + kc`,
/// `out` `rows * NR` (`nc <= NR`).
#[target_feature(enable = "avx2")]
pub unsafe fn dot_i8_avx2(
    x: *const i8,
    ldx: usize,
    rows: usize,
    w: *const i16,
    ldw: usize,
    nc: usize,
    kc: usize,
    out: *mut i32,
) {
    // SAFETY: forwarded extents; each tile call reads rows i0.., columns n0.. inside them.
    unsafe {
        let mut i0 = 0;
        while i0 < rows {
            let r = (rows - i0).min(2);
            let mut n0 = 0;
            while n0 < nc {
                let cn = (nc - n0).min(4);
                let (xp, wp, op) = (x.add(i0 * ldx), w.add(n0 * ldw), out.add(i0 * NR + n0));
                match (r, cn) {
                    (2, 4) => i8_tile::<2, 4>(xp, ldx, wp, ldw, kc, op),
                    (1, 4) => i8_tile::<1, 4>(xp, ldx, wp, ldw, kc, op),
                    (2, _) => {
                        for j in 0..cn {
                            i8_tile::<2, 1>(xp, ldx, wp.add(j * ldw), ldw, kc, op.add(j));
                        }
                    }
                    _ => {
                        for j in 0..cn {
                            i8_tile::<1, 1>(xp, ldx, wp.add(j * ldw), ldw, kc, op.add(j));
                        }
                    }
                }
                n0 += cn;
            }
            i0 += r;
        }
    }
}

#[target_feature(enable = "avx2")]
unsafe fn i8_tile<const R: usize, const C: usize>(
    x: *const i8,
    ldx: usize,
    w: *const i16,
    ldw: usize,
    kc: usize,
    out: *mut i32,
) {
    // SAFETY (whole body): reads `x` rows 0..R and `w` rows 0..C up to kc (the vector loop stops at
    // the last full 16), writes out[i * NR + j] for i < R, j < C: within dot_i8_avx2's extents.
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); C]; R];
        let k16 = kc / 16 * 16;
        let mut kk = 0;
        while kk < k16 {
            let mut wv = [_mm256_setzero_si256(); C];
            for (j, wj) in wv.iter_mut().enumerate() {
                *wj = _mm256_loadu_si256(w.add(j * ldw + kk) as *const __m256i);
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let xv = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(i * ldx + kk) as *const __m128i));
                for (a, &wj) in acc_i.iter_mut().zip(&wv) {
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(xv, wj));
                }
            }
            kk += 16;
        }
        for (i, acc_i) in acc.iter().enumerate() {
            for (j, &a) in acc_i.iter().enumerate() {
                let mut t = hsum_epi32(a);
                for q in k16..kc {
                    t = t.wrapping_add(*x.add(i * ldx + q) as i32 * *w.add(j * ldw + q) as i32);
                }
                let o = out.add(i * NR + j);
                *o = (*o).wrapping_add(t);
            }
        }
    }
}
