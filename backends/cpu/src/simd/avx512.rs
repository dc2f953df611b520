//! AVX-512F kernels. Every function requires avx512f (+bw/vl/dq), fma and popcnt, which
//! `Kernels::for_isa(Isa::Avx512)` verifies before handing these out (the `vdpbf16ps` kernels also
//! need avx512bf16, checked by `Kernels::has_dot`).

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

/// `__m512i` bits as a vector of 32 bf16 (the operand type of `vdpbf16ps`).
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn as_bh(v: __m512i) -> __m512bh {
    // SAFETY: both are plain 64-byte SIMD vectors; every bit pattern is a valid value of either.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")]
unsafe fn micro_dot_n<const M: usize>(
    a: *const u32,
    lda: usize,
    kp: usize,
    b: *const u32,
    c: *mut f32,
    accumulate: bool,
) {
    let mut cr = [[_mm512_setzero_ps(); 4]; M];
    if accumulate {
        for (i, row) in cr.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                // SAFETY: c holds M*NR f32.
                *v = unsafe { _mm512_loadu_ps(c.add(i * NR + j * 16)) };
            }
        }
    }
    for p in 0..kp {
        // SAFETY: b holds kp*NR pairs, a holds (M-1)*lda + kp pairs.
        unsafe {
            let bp = b.add(p * NR);
            let b0 = as_bh(_mm512_loadu_si512(bp as *const _));
            let b1 = as_bh(_mm512_loadu_si512(bp.add(16) as *const _));
            let b2 = as_bh(_mm512_loadu_si512(bp.add(32) as *const _));
            let b3 = as_bh(_mm512_loadu_si512(bp.add(48) as *const _));
            for (i, row) in cr.iter_mut().enumerate() {
                let av = as_bh(_mm512_set1_epi32(*a.add(i * lda + p) as i32));
                row[0] = _mm512_dpbf16_ps(row[0], av, b0);
                row[1] = _mm512_dpbf16_ps(row[1], av, b1);
                row[2] = _mm512_dpbf16_ps(row[2], av, b2);
                row[3] = _mm512_dpbf16_ps(row[3], av, b3);
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

/// `vdpbf16ps` microkernel on bf16 pairs (see `Kernels::micro_dot`): `c[i, 0..NR] (+)= sum_p
/// dot2(a[i*lda + p], b[p*NR + 0..NR])`, each `u32` holding two bf16 (element `2p` in the low half).
///
/// # Safety
/// AVX-512F/BW + AVX512-BF16; `a` holds `(mr-1)*lda + kp` pairs, `b` holds `kp*NR` pairs, `c` holds
/// `mr*NR` f32; `1 <= mr <= 6`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")]
pub(super) unsafe fn micro_dot(a: *const u32, lda: usize, mr: usize, kp: usize, b: *const u32, c: *mut f32, acc: bool) {
    // SAFETY: forwarded contract.
    unsafe {
        match mr {
            1 => micro_dot_n::<1>(a, lda, kp, b, c, acc),
            2 => micro_dot_n::<2>(a, lda, kp, b, c, acc),
            3 => micro_dot_n::<3>(a, lda, kp, b, c, acc),
            4 => micro_dot_n::<4>(a, lda, kp, b, c, acc),
            5 => micro_dot_n::<5>(a, lda, kp, b, c, acc),
            _ => micro_dot_n::<6>(a, lda, kp, b, c, acc),
        }
    }
}

/// Pack a full-width block of bf16 weights (`NR` columns, `kc` values of k) into the pair panel
/// `dst[p*NR + c] = w(2p, c) | w(2p+1, c) << 16` (`p < ceil(kc/2)`, a missing odd element is 0).
/// `nk == false`: element (k, c) at `src[k*ld + c]`; `nk == true`: at `src[c*ld + k]`, and
/// `kc % 32 == 0`.
///
/// # Safety
/// AVX-512F/BW; every addressed element exists; `dst` holds `ceil(kc/2)*NR` u32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
pub(super) unsafe fn pack_dot(nk: bool, src: *const u16, ld: usize, kc: usize, dst: *mut u32) {
    if !nk {
        let kp = kc.div_ceil(2);
        for p in 0..kp {
            let ahead = src.wrapping_add((2 * p + 16) * ld);
            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(32) as *const i8);
            for j in 0..NR / 16 {
                // SAFETY: rows 2p and (if it exists) 2p+1, columns j*16..j*16+16 exist; dst row p exists.
                unsafe {
                    let lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(src.add(2 * p * ld + j * 16) as *const __m256i));
                    let hi = if 2 * p + 1 < kc {
                        _mm512_cvtepu16_epi32(_mm256_loadu_si256(src.add((2 * p + 1) * ld + j * 16) as *const __m256i))
                    } else {
                        _mm512_setzero_si512()
                    };
                    let v = _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi));
                    _mm512_storeu_si512(dst.add(p * NR + j * 16) as *mut _, v);
                }
            }
        }
        return;
    }
    let mut k0 = 0;
    while k0 + 32 <= kc {
        for cb in 0..NR / 16 {
            let mut r = [_mm512_setzero_ps(); 16];
            for (c, v) in r.iter_mut().enumerate() {
                // SAFETY: weight row cb*16+c, k0..k0+32 exist (caller).
                unsafe {
                    let p = src.add((cb * 16 + c) * ld + k0);
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(128) as *const i8);
                    *v = _mm512_loadu_ps(p as *const f32);
                }
            }
            // A transpose of 32-bit lanes moves the pairs as units (pure data movement, no arithmetic).
            transpose16(&mut r);
            for (q, v) in r.iter().enumerate() {
                // SAFETY: dst row k0/2 + q exists.
                unsafe { _mm512_storeu_ps(dst.add((k0 / 2 + q) * NR + cb * 16) as *mut f32, *v) };
            }
        }
        k0 += 32;
    }
}

/// Group limit of one router token (OPS.md §2 step 3) for `ng <= 16` groups of `per` values
/// (`per % 16 == 0`) of `sel` (no NaN): group score = largest value (`top2sum == false`) or sum of
/// the two largest of the multiset; the `topk_group` best groups (score descending, lower group
/// index first on ties) are kept, every value of the others becomes `-inf`. Returns the kept-group
/// bit mask.
///
/// # Safety
/// AVX-512F; `sel` holds `ng*per` f32; `1 <= ng <= 16`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,popcnt")]
pub(super) unsafe fn group_limit(sel: *mut f32, ng: usize, per: usize, top2sum: bool, topk_group: usize) -> u32 {
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut score = [f32::NEG_INFINITY; 16];
    for (g, sc) in score.iter_mut().enumerate().take(ng) {
        let (mut t1, mut t2) = (ninf, ninf);
        for j in (0..per).step_by(16) {
            // SAFETY: element g*per + j + 15 < ng*per.
            let v = unsafe { _mm512_loadu_ps(sel.add(g * per + j)) };
            // Lane-wise running top two (no NaN: min/max are exact selections).
            t2 = _mm512_max_ps(t2, _mm512_min_ps(v, t1));
            t1 = _mm512_max_ps(t1, v);
        }
        let m1 = _mm512_reduce_max_ps(t1);
        *sc = if top2sum {
            // Remove one instance of m1 (its lowest lane), put that lane's second value in its place.
            let eq = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(t1, _mm512_set1_ps(m1));
            let first = eq & eq.wrapping_neg();
            m1 + _mm512_reduce_max_ps(_mm512_mask_blend_ps(first, t1, t2))
        } else {
            m1
        };
    }
    // rank[j] = #{groups before j in the order}; rotation r brings group (j + r) mod 16 to lane j,
    // which has a lower index than j exactly for lanes j >= 16 - r. Padding lanes (-inf, higher
    // index) never precede a real group.
    // SAFETY: score holds 16 f32.
    let sv = unsafe { _mm512_loadu_ps(score.as_ptr()) };
    let si = _mm512_castps_si512(sv);
    let one = _mm512_set1_epi32(1);
    let mut rank = _mm512_setzero_si512();
    macro_rules! rot {
        ($($r:literal)*) => {$(
            let rv = _mm512_castsi512_ps(_mm512_alignr_epi32::<$r>(si, si));
            let lower: u16 = !((1u32 << (16 - $r)) - 1) as u16;
            let before = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(rv, sv)
                | _mm512_mask_cmp_ps_mask::<_CMP_EQ_OQ>(lower, rv, sv);
            rank = _mm512_mask_add_epi32(rank, before, rank, one);
        )*};
    }
    rot!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    let real = tail_mask(ng);
    let keep = _mm512_mask_cmplt_epi32_mask(real, rank, _mm512_set1_epi32(topk_group as i32));
    for g in 0..ng {
        if keep & (1 << g) == 0 {
            for j in (0..per).step_by(16) {
                // SAFETY: element g*per + j + 15 < ng*per.
                unsafe { _mm512_storeu_ps(sel.add(g * per + j), ninf) };
            }
        }
    }
    keep as u32
}

/// Top-`k` selection (`1 <= k <= 16`) over `sel[0..e]` (no NaN; `-inf` = not selectable).
///
/// With `tau` the k-th largest of the 16 lane-wise maxima (at least `k` distinct elements are
/// `>= tau`, so every member of the top k, and every element tied with one, is), the candidates are
/// the elements `v >= tau`, `v > -inf`, gathered in ascending index order. Returns their count `n`.
/// If `n <= 16` the selection is finished here: `ids[r]` gets the candidate of rank `r < min(n, k)`
/// (rank = number of candidates greater, or equal with a lower index). Otherwise the candidates are
/// left in `cv` (values) and `ci` (indices) for the caller to finish. Blocks `b < 64` of 16 elements
/// with bit `b` of `skip` set are not read: the caller knows they hold only `-inf`.
///
/// # Safety
/// AVX-512F; `sel` holds `e` f32; `cv` and `ci` hold `e + 16` elements; `ids` holds `k`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,popcnt")]
pub(super) unsafe fn topk_select(
    sel: *const f32,
    e: usize,
    k: usize,
    skip: u64,
    cv: *mut f32,
    ci: *mut u32,
    ids: *mut i32,
) -> usize {
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let nb = e.div_ceil(16);
    let mut mx = ninf;
    let mut blocks = super::Blocks::new(nb, skip);
    while let Some(b) = blocks.next() {
        let i = b * 16;
        let m = tail_mask(e - i);
        // SAFETY: masked lanes past e are not read.
        mx = _mm512_max_ps(mx, unsafe { _mm512_mask_loadu_ps(ninf, m, sel.add(i)) });
    }
    // cnt[j] = #{lanes greater than lane j}; tau = min { M[j] : cnt[j] < k } = the k-th largest.
    let mxi = _mm512_castps_si512(mx);
    let one = _mm512_set1_epi32(1);
    let mut cnt = _mm512_setzero_si512();
    macro_rules! rot {
        ($($r:literal)*) => {$(
            let rv = _mm512_castsi512_ps(_mm512_alignr_epi32::<$r>(mxi, mxi));
            cnt = _mm512_mask_add_epi32(cnt, _mm512_cmp_ps_mask::<_CMP_GT_OQ>(rv, mx), cnt, one);
        )*};
    }
    rot!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    let small = _mm512_cmplt_epi32_mask(cnt, _mm512_set1_epi32(k as i32));
    let tau = _mm512_mask_reduce_min_ps(small, mx);
    let tv = _mm512_set1_ps(tau);
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let mut n = 0usize;
    let mut blocks = super::Blocks::new(nb, skip);
    while let Some(b) = blocks.next() {
        let i = b * 16;
        let m = tail_mask(e - i);
        let idx = _mm512_add_epi32(iota, _mm512_set1_epi32(i as i32));
        // SAFETY: masked lanes past e are not read; n <= i here (blocks ascend), so the 16-lane
        // stores at cv + n and ci + n end before e + 16.
        unsafe {
            let v = _mm512_mask_loadu_ps(ninf, m, sel.add(i));
            let c = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, tv) & _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, ninf) & m;
            // Branch-free: whether a vector holds candidates is data-dependent and unpredictable.
            _mm512_storeu_ps(cv.add(n), _mm512_maskz_compress_ps(c, v));
            _mm512_storeu_si512(ci.add(n) as *mut _, _mm512_maskz_compress_epi32(c, idx));
            n += c.count_ones() as usize;
        }
    }
    if n <= 16 {
        let lanes = tail_mask(n);
        // SAFETY: cv/ci hold n valid candidates (masked lanes are not read).
        let (v, ix) = unsafe {
            (
                _mm512_mask_loadu_ps(ninf, lanes, cv),
                _mm512_maskz_loadu_epi32(lanes, ci as *const i32),
            )
        };
        let mut ixs = [0i32; 16];
        let mut vs = [0f32; 16];
        // SAFETY: both arrays hold 16 elements.
        unsafe {
            _mm512_storeu_si512(ixs.as_mut_ptr() as *mut _, ix);
            _mm512_storeu_ps(vs.as_mut_ptr(), v);
        }
        // Ranks land in a 17-slot buffer (rank >= k goes to the spare slot 16): no unpredictable branch.
        let mut out = [0i32; 17];
        for j in 0..n {
            let b = _mm512_set1_ps(vs[j]);
            let before = ((1u32 << j) - 1) as u16;
            let gt = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(lanes, v, b);
            let eq = _mm512_mask_cmp_ps_mask::<_CMP_EQ_OQ>(before, v, b);
            let rank = (gt | eq).count_ones() as usize;
            out[if rank < k { rank } else { 16 }] = ixs[j];
        }
        for (r, &id) in out.iter().enumerate().take(n.min(k)) {
            // SAFETY: r < k and ids holds k.
            unsafe { *ids.add(r) = id };
        }
    }
    n
}

/// Fused sigmoid scoring of one token (OPS.md §2 steps 1, 2, 6): for finite `x = l[i]`, `s[i] =
/// sigmoid(x)` and `sel[i] = s[i] + bias[i]` (or `s[i]` without bias), `-inf` where that sum is not
/// finite; for non-finite `x`, `s[i] = 0` and `sel[i] = -inf`. Same arithmetic as `sigmoid`.
///
/// # Safety
/// AVX-512F; `l`, `s`, `sel` hold `n` f32; `bias` is null or holds `n` f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
pub(super) unsafe fn sigmoid_select(l: *const f32, bias: *const f32, s: *mut f32, sel: *mut f32, n: usize) {
    let one = _mm512_set1_ps(1.0);
    let zero = _mm512_setzero_ps();
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i < n {
        let m = tail_mask(n - i);
        // SAFETY: masked lanes past n are neither read nor written.
        unsafe {
            let x = _mm512_maskz_loadu_ps(m, l.add(i));
            // Finite iff x - x == 0 (inf - inf and NaN give NaN, which compares unequal).
            let fin = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_sub_ps(x, x), zero);
            let e = exp(_mm512_sub_ps(zero, x));
            let sg = _mm512_maskz_mov_ps(fin, _mm512_div_ps(one, _mm512_add_ps(one, e)));
            let b = if bias.is_null() {
                zero
            } else {
                _mm512_maskz_loadu_ps(m, bias.add(i))
            };
            let v = if bias.is_null() { sg } else { _mm512_add_ps(sg, b) };
            let vfin = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_sub_ps(v, v), zero);
            _mm512_mask_storeu_ps(s.add(i), m, sg);
            _mm512_mask_storeu_ps(sel.add(i), m, _mm512_mask_mov_ps(ninf, fin & vfin, v));
        }
        i += 16;
    }
}
