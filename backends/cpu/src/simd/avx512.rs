//! AVX-512F kernels. Every function requires avx512f (+bw/vl/dq) and fma, which
//! `Kernels::for_isa(Isa::Avx512)` verifies before handing these out.

use super::NR;
use std::arch::x86_64::*;

/// Elements to prefetch ahead in streaming conversions (2 KiB of bf16; tuned on the dev machine).
const PF_AHEAD: usize = 1024;

/// exp(x) in f32: Cody-Waite reduction, degree-7 Taylor on |r| <= ln2/2, scalef for 2^n (correct
/// overflow to inf, gradual underflow to 0). NaN propagates.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
pub(super) fn exp(x: __m512) -> __m512 {
    // min/max return their second operand when either is NaN: NaN passes through the clamp.
    let x = _mm512_max_ps(_mm512_set1_ps(-104.0), _mm512_min_ps(_mm512_set1_ps(89.0), x));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0 / 720.0));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0 / 120.0));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0 / 24.0));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0 / 6.0));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
    _mm512_scalef_ps(p, n)
}

#[inline]
fn tail_mask(rem: usize) -> __mmask16 {
    if rem >= 16 {
        0xffff
    } else {
        ((1u32 << rem) - 1) as __mmask16
    }
}

/// # Safety
/// AVX-512F; `src`, `dst` hold `n` f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
pub(super) unsafe fn sigmoid(src: *const f32, dst: *mut f32, n: usize) {
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    while i < n {
        let m = tail_mask(n - i);
        // SAFETY: masked lanes past n are neither read nor written.
        unsafe {
            let x = _mm512_maskz_loadu_ps(m, src.add(i));
            let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
            _mm512_mask_storeu_ps(dst.add(i), m, _mm512_div_ps(one, _mm512_add_ps(one, e)));
        }
        i += 16;
    }
}

/// # Safety
/// AVX-512F; `src`, `dst` hold `n` f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
pub(super) unsafe fn exp_shift(src: *const f32, dst: *mut f32, n: usize, shift: f32) -> f32 {
    let s = _mm512_set1_ps(shift);
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i < n {
        let m = tail_mask(n - i);
        // SAFETY: masked lanes past n are neither read nor written.
        unsafe {
            let x = _mm512_maskz_loadu_ps(m, src.add(i));
            let e = exp(_mm512_sub_ps(x, s));
            acc = _mm512_mask_add_ps(acc, m, acc, e);
            _mm512_mask_storeu_ps(dst.add(i), m, e);
        }
        i += 16;
    }
    _mm512_reduce_add_ps(acc)
}

/// # Safety
/// AVX-512F; `g`, `u`, `out` hold `n` f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
pub(super) unsafe fn silu_mul(g: *const f32, u: *const f32, out: *mut f32, n: usize, limit: f32) {
    let lim = _mm512_set1_ps(limit);
    let neg = _mm512_set1_ps(-limit);
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    while i < n {
        let m = tail_mask(n - i);
        // SAFETY: masked lanes past n are neither read nor written.
        unsafe {
            let x = _mm512_min_ps(lim, _mm512_maskz_loadu_ps(m, g.add(i)));
            let y = _mm512_max_ps(neg, _mm512_min_ps(lim, _mm512_maskz_loadu_ps(m, u.add(i))));
            let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
            let s = _mm512_div_ps(x, _mm512_add_ps(one, e));
            _mm512_mask_storeu_ps(out.add(i), m, _mm512_mul_ps(s, y));
        }
        i += 16;
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
unsafe fn micro_n<const M: usize>(a: *const f32, lda: usize, kc: usize, b: *const f32, c: *mut f32, accumulate: bool) {
    let mut cr = [[_mm512_setzero_ps(); 4]; M];
    if accumulate {
        for (i, row) in cr.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                // SAFETY: c holds M*NR f32.
                *v = unsafe { _mm512_loadu_ps(c.add(i * NR + j * 16)) };
            }
        }
    }
    for k in 0..kc {
        // SAFETY: b holds kc*NR f32, a holds (M-1)*lda + kc.
        unsafe {
            let bp = b.add(k * NR);
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            let b2 = _mm512_loadu_ps(bp.add(32));
            let b3 = _mm512_loadu_ps(bp.add(48));
            for (i, row) in cr.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(i * lda + k));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                row[2] = _mm512_fmadd_ps(av, b2, row[2]);
                row[3] = _mm512_fmadd_ps(av, b3, row[3]);
            }
        }
    }
    for (i, row) in cr.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: c holds M*NR f32.
            unsafe { _mm512_storeu_ps(c.add(i * NR + j * 16), *v) };
        }
    }
}

/// See `Kernels::micro`.
///
/// # Safety
/// AVX-512F + FMA; bounds as in `Kernels::micro`; `1 <= mr <= 6`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
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

/// 16x16 transpose of rows `r` (in place).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
fn transpose16(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    for p in 0..8 {
        t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    let mut u = [_mm512_setzero_pd(); 16];
    for g in 0..4 {
        let (t0, t1, t2, t3) = (
            _mm512_castps_pd(t[4 * g]),
            _mm512_castps_pd(t[4 * g + 1]),
            _mm512_castps_pd(t[4 * g + 2]),
            _mm512_castps_pd(t[4 * g + 3]),
        );
        // u[4g + q] holds, in 128-bit lane j, element 4j+q of rows 4g..4g+4.
        u[4 * g] = _mm512_unpacklo_pd(t0, t2);
        u[4 * g + 1] = _mm512_unpackhi_pd(t0, t2);
        u[4 * g + 2] = _mm512_unpacklo_pd(t1, t3);
        u[4 * g + 3] = _mm512_unpackhi_pd(t1, t3);
    }
    for q in 0..4 {
        let (u0, u4, u8, u12) = (
            _mm512_castpd_ps(u[q]),
            _mm512_castpd_ps(u[4 + q]),
            _mm512_castpd_ps(u[8 + q]),
            _mm512_castpd_ps(u[12 + q]),
        );
        let v0 = _mm512_shuffle_f32x4::<0x88>(u0, u4);
        let v1 = _mm512_shuffle_f32x4::<0xdd>(u0, u4);
        let v2 = _mm512_shuffle_f32x4::<0x88>(u8, u12);
        let v3 = _mm512_shuffle_f32x4::<0xdd>(u8, u12);
        r[q] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
        r[8 + q] = _mm512_shuffle_f32x4::<0xdd>(v0, v2);
        r[4 + q] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
        r[12 + q] = _mm512_shuffle_f32x4::<0xdd>(v1, v3);
    }
}

/// See `Kernels::transpose_nr16`.
///
/// # Safety
/// AVX-512F; `src` and `dst` hold `NR*16` f32; `kw == 16`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
pub(super) unsafe fn transpose_nr16(src: *const f32, dst: *mut f32, _kw: usize) {
    for cb in 0..NR / 16 {
        let mut r = [_mm512_setzero_ps(); 16];
        for (c, v) in r.iter_mut().enumerate() {
            // SAFETY: row cb*16+c of src, 16 f32, lies within NR*16.
            *v = unsafe { _mm512_loadu_ps(src.add((cb * 16 + c) * 16)) };
        }
        transpose16(&mut r);
        for (k, v) in r.iter().enumerate() {
            // SAFETY: dst[k*NR + cb*16 .. +16] lies within NR*16.
            unsafe { _mm512_storeu_ps(dst.add(k * NR + cb * 16), *v) };
        }
    }
}

/// # Safety
/// AVX-512F+BW; `src`, `dst` hold `n` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
pub(super) unsafe fn widen_bf16(src: *const u16, dst: *mut f32, n: usize) {
    let mut i = 0;
    while i < n {
        let m = tail_mask(n - i);
        if i % 32 == 0 {
            // Stream ahead: a prefetch never faults, wrapping_add keeps the pointer arithmetic defined.
            _mm_prefetch::<_MM_HINT_T0>(src.wrapping_add(i + PF_AHEAD) as *const i8);
        }
        // SAFETY: masked lanes past n are neither read nor written.
        unsafe {
            let h = _mm256_maskz_loadu_epi16(m, src.add(i) as *const i16);
            let w = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
            _mm512_mask_storeu_ps(dst.add(i), m, _mm512_castsi512_ps(w));
        }
        i += 16;
    }
}

/// # Safety
/// AVX-512F+BW; `src`, `dst` hold `n` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
pub(super) unsafe fn widen_f16(src: *const u16, dst: *mut f32, n: usize) {
    let mut i = 0;
    while i < n {
        let m = tail_mask(n - i);
        // SAFETY: masked lanes past n are neither read nor written.
        unsafe {
            let h = _mm256_maskz_loadu_epi16(m, src.add(i) as *const i16);
            _mm512_mask_storeu_ps(dst.add(i), m, _mm512_cvtph_ps(h));
        }
        i += 16;
    }
}

/// Load 16 elements of kind `kind` (0 f32, 1 bf16, 2 f16) at `p` as f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
unsafe fn load16(kind: u8, p: *const u8) -> __m512 {
    // SAFETY: the caller guarantees 16 elements at p.
    unsafe {
        match kind {
            0 => _mm512_loadu_ps(p as *const f32),
            1 => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(
                p as *const __m256i,
            )))),
            _ => _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
        }
    }
}

/// Pack a full `kc x NR` block of weights into the f32 panel `dst[k*NR + c]`.
/// `nk == false` (KN or packed): element (k, c) at `src + (k*ld + c)*es`;
/// `nk == true`: element (k, c) at `src + (c*ld + k)*es`, and `kc % 16 == 0`.
///
/// # Safety
/// AVX-512F+BW; every addressed element exists; `dst` holds `kc*NR` f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
pub(super) unsafe fn pack_b(kind: u8, nk: bool, src: *const u8, ld: usize, kc: usize, dst: *mut f32) {
    let es = if kind == 0 { 4 } else { 2 };
    if !nk {
        for k in 0..kc {
            // Prefetch the same columns 16 rows ahead (rows are `ld` apart: no sequential stream).
            let ahead = src.wrapping_add((k + 16) * ld * es);
            let mut off = 0;
            while off < NR * es {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(off) as *const i8);
                off += 64;
            }
            for j in 0..NR / 16 {
                // SAFETY: row k, columns j*16..j*16+16 exist (caller); dst row k exists.
                unsafe {
                    let v = load16(kind, src.add((k * ld + j * 16) * es));
                    _mm512_storeu_ps(dst.add(k * NR + j * 16), v);
                }
            }
        }
        return;
    }
    let mut k0 = 0;
    while k0 + 16 <= kc {
        for cb in 0..NR / 16 {
            let mut r = [_mm512_setzero_ps(); 16];
            for (c, v) in r.iter_mut().enumerate() {
                let row = cb * 16 + c;
                // SAFETY: weight row `row`, k0..k0+16 exist (caller).
                unsafe {
                    let p = src.add((row * ld + k0) * es);
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(16 * 16 * es) as *const i8);
                    *v = load16(kind, p);
                }
            }
            transpose16(&mut r);
            for (k, v) in r.iter().enumerate() {
                // SAFETY: dst row k0+k exists.
                unsafe { _mm512_storeu_ps(dst.add((k0 + k) * NR + cb * 16), *v) };
            }
        }
        k0 += 16;
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
unsafe fn micro_bf16_n<const M: usize>(a: *const f32, lda: usize, kc: usize, b: *const u16, ldb: usize, c: *mut f32) {
    let mut cr = [[_mm512_setzero_ps(); 4]; M];
    for k in 0..kc {
        // SAFETY: row k of b holds NR bf16 at b + k*ldb; a holds (M-1)*lda + kc f32; the prefetch
        // address is only a hint (wrapping arithmetic, never dereferenced).
        unsafe {
            let bp = b.add(k * ldb);
            let ahead = b.wrapping_add((k + 24) * ldb) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
            let cv = |j: usize| {
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(
                    bp.add(j * 16) as *const __m256i,
                ))))
            };
            let (b0, b1, b2, b3) = (cv(0), cv(1), cv(2), cv(3));
            for (i, row) in cr.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(i * lda + k));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                row[2] = _mm512_fmadd_ps(av, b2, row[2]);
                row[3] = _mm512_fmadd_ps(av, b3, row[3]);
            }
        }
    }
    for (i, row) in cr.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: c holds M*NR f32.
            unsafe { _mm512_storeu_ps(c.add(i * NR + j * 16), *v) };
        }
    }
}

/// Small-M microkernel reading bf16 weights in place (rows of `NR` bf16, `ldb` apart), widening in
/// registers: `c[i, 0..NR] = sum_k a[i*lda + k] * b[k*ldb + 0..NR]`. Used when a group has at most
/// `MR` rows, so each weight is read once, straight from memory, with no staging.
///
/// # Safety
/// AVX-512F/BW/VL + FMA; `a` holds `(mr-1)*lda + kc` f32, `b` holds `(kc-1)*ldb + NR` bf16 (kc > 0),
/// `c` holds `mr*NR` f32; `1 <= mr <= 6`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
pub(super) unsafe fn micro_bf16(
    a: *const f32,
    lda: usize,
    mr: usize,
    kc: usize,
    b: *const u16,
    ldb: usize,
    c: *mut f32,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match mr {
            1 => micro_bf16_n::<1>(a, lda, kc, b, ldb, c),
            2 => micro_bf16_n::<2>(a, lda, kc, b, ldb, c),
            3 => micro_bf16_n::<3>(a, lda, kc, b, ldb, c),
            4 => micro_bf16_n::<4>(a, lda, kc, b, ldb, c),
            5 => micro_bf16_n::<5>(a, lda, kc, b, ldb, c),
            _ => micro_bf16_n::<6>(a, lda, kc, b, ldb, c),
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
unsafe fn dot_nk_bf16_n<const M: usize>(a: *const f32, lda: usize, kc: usize, w: *const u16, ldw: usize, c: *mut f32) {
    for nb in (0..NR).step_by(4) {
        let mut acc = [[_mm512_setzero_ps(); 4]; M];
        let mut k = 0;
        while k < kc {
            let m = tail_mask(kc - k);
            // SAFETY: rows nb..nb+4 of w hold kc bf16 each (ldw apart), a holds (M-1)*lda + kc; masked
            // lanes past kc are not read; prefetch addresses are hints only.
            unsafe {
                let mut wv = [_mm512_setzero_ps(); 4];
                for (r, v) in wv.iter_mut().enumerate() {
                    let p = w.add((nb + r) * ldw + k);
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(512) as *const i8);
                    let h = _mm256_maskz_loadu_epi16(m, p as *const i16);
                    *v = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_maskz_loadu_ps(m, a.add(i * lda + k));
                    for r in 0..4 {
                        row[r] = _mm512_fmadd_ps(av, wv[r], row[r]);
                    }
                }
            }
            k += 16;
        }
        for (i, row) in acc.iter().enumerate() {
            for (r, v) in row.iter().enumerate() {
                // SAFETY: c holds M*NR f32.
                unsafe { *c.add(i * NR + nb + r) = _mm512_reduce_add_ps(*v) };
            }
        }
    }
}

/// Small-M kernel on bf16 `NK` weights read in place (dot products along K):
/// `c[i, n] = sum_k a[i*lda + k] * w[n*ldw + k]` for `i < mr`, `n < NR`, `k < kc`.
///
/// # Safety
/// AVX-512F/BW/VL + FMA; `a` holds `(mr-1)*lda + kc` f32, `w` holds `(NR-1)*ldw + kc` bf16, `c` holds
/// `mr*NR` f32; `1 <= mr <= 6`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
pub(super) unsafe fn dot_nk_bf16(
    a: *const f32,
    lda: usize,
    mr: usize,
    kc: usize,
    w: *const u16,
    ldw: usize,
    c: *mut f32,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match mr {
            1 => dot_nk_bf16_n::<1>(a, lda, kc, w, ldw, c),
            2 => dot_nk_bf16_n::<2>(a, lda, kc, w, ldw, c),
            3 => dot_nk_bf16_n::<3>(a, lda, kc, w, ldw, c),
            4 => dot_nk_bf16_n::<4>(a, lda, kc, w, ldw, c),
            5 => dot_nk_bf16_n::<5>(a, lda, kc, w, ldw, c),
            _ => dot_nk_bf16_n::<6>(a, lda, kc, w, ldw, c),
        }
    }
}
