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

/// Widen bf16 bits to f32 (exact): `dst[i] = f32::from_bits((src[i] as u32) << 16)`.
///
/// # Safety
/// NEON; `src` and `dst` hold `n` elements.
#[target_feature(enable = "neon")]
pub(super) unsafe fn widen_bf16(src: *const u16, dst: *mut f32, n: usize) {
    let mut i = 0;
    // SAFETY: i + 8 <= n elements of both are read / written; the tail is done one by one.
    unsafe {
        while i + 8 <= n {
            let h = vld1q_u16(src.add(i));
            vst1q_f32(dst.add(i), vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))));
            vst1q_f32(dst.add(i + 4), vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)));
            i += 8;
        }
        while i < n {
            *dst.add(i) = f32::from_bits((*src.add(i) as u32) << 16);
            i += 1;
        }
    }
}

/// Widen IEEE f16 bits to f32 (exact, subnormals, inf and NaN included) with `fcvtl`, which is part of
/// the ARMv8.0 Advanced SIMD baseline (no FEAT_FP16 needed). Written as `asm!` because the
/// `float16x4_t` intrinsics are not stable Rust.
///
/// # Safety
/// NEON; `src` and `dst` hold `n` elements.
#[target_feature(enable = "neon")]
pub(super) unsafe fn widen_f16(src: *const u16, dst: *mut f32, n: usize) {
    let mut i = 0;
    // SAFETY: i + 4 <= n elements of both are read / written; the asm only converts registers.
    unsafe {
        while i + 4 <= n {
            let h = vld1_u16(src.add(i));
            let f: float32x4_t;
            std::arch::asm!("fcvtl {o:v}.4s, {h:v}.4h", h = in(vreg) h, o = lateout(vreg) f,
                options(pure, nomem, nostack, preserves_flags));
            vst1q_f32(dst.add(i), f);
            i += 4;
        }
        while i < n {
            *dst.add(i) = half::f16::from_bits(*src.add(i)).to_f32();
            i += 1;
        }
    }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn micro_bf16_n<const M: usize>(a: *const f32, lda: usize, kc: usize, b: *const u16, ldb: usize, c: *mut f32) {
    // Four column quarters of 16 (four q registers each, 4*M of the 32 registers); each quarter reads
    // its 32 bytes of every weight row, so every weight is loaded exactly once per call.
    for q in 0..NR / 16 {
        let mut cr = [[vdupq_n_f32(0.0); 4]; M];
        for k in 0..kc {
            // SAFETY: row k of b holds NR bf16 at b + k*ldb; a holds (M-1)*lda + kc f32.
            unsafe {
                let bp = b.add(k * ldb + q * 16);
                let (h0, h1) = (vld1q_u16(bp), vld1q_u16(bp.add(8)));
                let bv = [
                    vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h0))),
                    vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h0)),
                    vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h1))),
                    vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h1)),
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

/// Small-M microkernel reading bf16 weights in place (decode): see `Kernels::micro_bf16`.
///
/// # Safety
/// NEON; `a` holds `(mr-1)*lda + kc` f32, `b` holds `(kc-1)*ldb + NR` bf16 (kc > 0), `c` holds
/// `mr*NR` f32; `1 <= mr <= 6`.
#[target_feature(enable = "neon")]
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
#[target_feature(enable = "neon")]
unsafe fn dot_nk_bf16_n<const M: usize>(a: *const f32, lda: usize, kc: usize, w: *const u16, ldw: usize, c: *mut f32) {
    let k4 = kc - kc % 4;
    for nb in (0..NR).step_by(4) {
        let mut acc = [[vdupq_n_f32(0.0); 4]; M];
        let mut k = 0;
        while k < k4 {
            // SAFETY: rows nb..nb+4 of w hold kc bf16 each (ldw apart); a holds (M-1)*lda + kc; k + 4 <= kc.
            unsafe {
                let mut wv = [vdupq_n_f32(0.0); 4];
                for (r, v) in wv.iter_mut().enumerate() {
                    *v = vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(w.add((nb + r) * ldw + k))));
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = vld1q_f32(a.add(i * lda + k));
                    for r in 0..4 {
                        row[r] = vfmaq_f32(row[r], av, wv[r]);
                    }
                }
            }
            k += 4;
        }
        for (i, row) in acc.iter().enumerate() {
            for (r, v) in row.iter().enumerate() {
                let mut s = vaddvq_f32(*v);
                for kk in k4..kc {
                    // SAFETY: kk < kc: inside row nb + r of w and row i of a.
                    unsafe {
                        s += *a.add(i * lda + kk) * f32::from_bits((*w.add((nb + r) * ldw + kk) as u32) << 16);
                    }
                }
                // SAFETY: c holds M*NR f32.
                unsafe { *c.add(i * NR + nb + r) = s };
            }
        }
    }
}

/// Small-M kernel on bf16 `NK` weights read in place (decode, dot products along K): see
/// `Kernels::dot_nk_bf16`.
///
/// # Safety
/// NEON; `a` holds `(mr-1)*lda + kc` f32, `w` holds `(NR-1)*ldw + kc` bf16, `c` holds `mr*NR` f32;
/// `1 <= mr <= 6`.
#[target_feature(enable = "neon")]
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

// ---- Extensions beyond the ARMv8.0 baseline, each behind its own runtime check -------------------
//
// BFDOT (FEAT_BF16), SDOT (FEAT_DotProd) and SMMLA (FEAT_I8MM) are written as `asm!`: their
// intrinsics are not all stable Rust. Each function enables its feature with `#[target_feature]`
// (which the inline assembler honours) and is only called where `std::arch::is_aarch64_feature_detected!`
// reported the feature (see `Kernels::has_dot`, `Kernels::int8_kernel`).

/// `d += bfdot(a, b)`: lane j of `d` gets `a[2j]*b[2j] + a[2j+1]*b[2j+1]` (bf16 pairs).
#[inline]
#[target_feature(enable = "neon,bf16")]
fn bfdot(d: float32x4_t, a: uint32x4_t, b: uint32x4_t) -> float32x4_t {
    let mut d = d;
    // SAFETY: register-only arithmetic; FEAT_BF16 is enabled for this function and verified by callers.
    unsafe {
        std::arch::asm!("bfdot {d:v}.4s, {a:v}.8h, {b:v}.8h", d = inout(vreg) d, a = in(vreg) a, b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags));
    }
    d
}

#[inline]
#[target_feature(enable = "neon,bf16")]
unsafe fn micro_dot_n<const M: usize>(
    a: *const u32,
    lda: usize,
    kp: usize,
    b: *const u32,
    c: *mut f32,
    accumulate: bool,
) {
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
        for p in 0..kp {
            // SAFETY: b holds kp*NR pairs, a holds (M-1)*lda + kp.
            unsafe {
                let bp = b.add(p * NR + q * 16);
                let bv = [
                    vld1q_u32(bp),
                    vld1q_u32(bp.add(4)),
                    vld1q_u32(bp.add(8)),
                    vld1q_u32(bp.add(12)),
                ];
                for (i, row) in cr.iter_mut().enumerate() {
                    let av = vdupq_n_u32(*a.add(i * lda + p));
                    for j in 0..4 {
                        row[j] = bfdot(row[j], av, bv[j]);
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

/// BFDOT microkernel on bf16 pairs, the layout of `Kernels::micro_dot`: `c[i, 0..NR] (+)= sum_p
/// (lo(a) * lo(b) + hi(a) * hi(b))`. BFDOT's own rounding applies (Arm ARM `BFDotAdd`: without
/// FEAT_EBF16, or with FPCR.EBF = 0 as Linux leaves it, the two products are rounded to f32, summed,
/// the sum rounded, then added to the accumulator, every rounding round-to-odd, subnormal inputs
/// and results flushed to zero). Each element of `c` is one chain of `BFDotAdd` steps, `p`
/// ascending.
///
/// # Safety
/// NEON + FEAT_BF16; `a` holds `(mr-1)*lda + kp` u32, `b` holds `kp*NR`, `c` holds `mr*NR` f32;
/// `1 <= mr <= 6`.
#[target_feature(enable = "neon,bf16")]
pub(super) unsafe fn micro_bfdot(
    a: *const u32,
    lda: usize,
    mr: usize,
    kp: usize,
    b: *const u32,
    c: *mut f32,
    acc: bool,
) {
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

/// `d += bfmmla(a, b)`: with `a` the 2x4 bf16 matrix A (row i = the four values of 64-bit half
/// i), `b` the 2x4 matrix B, `d` (2x2 f32, row-major) += A · Bᵀ.
///
/// What the instruction computes (Arm ARM, `BFMMLA` → `BFMatMulAdd`): for each of the four
/// results, `sum = d[i][j]; sum = BFDotAdd(sum, A[i][0], A[i][1], B[j][0], B[j][1]); sum =
/// BFDotAdd(sum, A[i][2], A[i][3], B[j][2], B[j][3])`, i.e. exactly two BFDOT steps in k order,
/// with BFDOT's rounding (see [`micro_bfdot`]). So a BFMMLA kernel that walks k in the same pair
/// order as the BFDOT kernel gives the same bits (the test `bfmmla_is_bitwise_bfdot` checks it).
#[inline]
#[target_feature(enable = "neon,bf16")]
fn bfmmla(d: float32x4_t, a: uint32x4_t, b: uint32x4_t) -> float32x4_t {
    let mut d = d;
    // SAFETY: register-only arithmetic; FEAT_BF16 is enabled for this function and verified by callers.
    unsafe {
        std::arch::asm!("bfmmla {d:v}.4s, {a:v}.8h, {b:v}.8h", d = inout(vreg) d, a = in(vreg) a, b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags));
    }
    d
}

/// BFMMLA tile: `P` row pairs (rows `2r` and `min(2r + 1, mr - 1)`; a duplicated odd last row is
/// computed and not stored) by one quarter of 16 columns at a time (8 column pairs, `8 P` of the 32
/// registers). Accumulator `acc[r][2g + h]` holds `[c(i0, c), c(i0, c+1), c(i1, c), c(i1, c+1)]`
/// for columns `c = 4g + 2h`. Per k quad, the pair panel's rows `p` and `p + 1` are zipped into
/// BFMMLA's column-pair operand; an odd last pair runs as one BFDOT step on the same lanes.
#[inline]
#[target_feature(enable = "neon,bf16")]
unsafe fn micro_mmla_n<const P: usize>(
    a: *const u32,
    lda: usize,
    mr: usize,
    kp: usize,
    b: *const u32,
    c: *mut f32,
    accumulate: bool,
) {
    let rows: [(usize, usize); P] = std::array::from_fn(|r| (2 * r, (2 * r + 1).min(mr - 1)));
    for q in 0..NR / 16 {
        let mut acc = [[vdupq_n_f32(0.0); 8]; P];
        if accumulate {
            for (r, &(i0, i1)) in rows.iter().enumerate() {
                for g in 0..4 {
                    // SAFETY: rows i0, i1 < mr of c hold NR f32 each.
                    let (r0, r1) = unsafe {
                        (
                            vreinterpretq_u64_f32(vld1q_f32(c.add(i0 * NR + q * 16 + g * 4))),
                            vreinterpretq_u64_f32(vld1q_f32(c.add(i1 * NR + q * 16 + g * 4))),
                        )
                    };
                    acc[r][2 * g] = vreinterpretq_f32_u64(vzip1q_u64(r0, r1));
                    acc[r][2 * g + 1] = vreinterpretq_f32_u64(vzip2q_u64(r0, r1));
                }
            }
        }
        let mut p = 0;
        while p + 2 <= kp {
            // SAFETY: pairs p, p+1 < kp of rows i0, i1 < mr of a; rows p, p+1 of the b panel.
            unsafe {
                let av: [uint32x4_t; P] = std::array::from_fn(|r| {
                    let (i0, i1) = rows[r];
                    vcombine_u32(vld1_u32(a.add(i0 * lda + p)), vld1_u32(a.add(i1 * lda + p)))
                });
                for g in 0..4 {
                    let b0 = vld1q_u32(b.add(p * NR + q * 16 + g * 4));
                    let b1 = vld1q_u32(b.add((p + 1) * NR + q * 16 + g * 4));
                    let (lo, hi) = (vzip1q_u32(b0, b1), vzip2q_u32(b0, b1));
                    for r in 0..P {
                        acc[r][2 * g] = bfmmla(acc[r][2 * g], av[r], lo);
                        acc[r][2 * g + 1] = bfmmla(acc[r][2 * g + 1], av[r], hi);
                    }
                }
            }
            p += 2;
        }
        if p < kp {
            // SAFETY: pair p < kp of rows i0, i1 < mr of a; row p of the b panel.
            unsafe {
                let av: [uint32x4_t; P] = std::array::from_fn(|r| {
                    let (i0, i1) = rows[r];
                    vcombine_u32(vdup_n_u32(*a.add(i0 * lda + p)), vdup_n_u32(*a.add(i1 * lda + p)))
                });
                for g in 0..4 {
                    let b0 = vld1q_u32(b.add(p * NR + q * 16 + g * 4));
                    let lo = vcombine_u32(vget_low_u32(b0), vget_low_u32(b0));
                    let hi = vcombine_u32(vget_high_u32(b0), vget_high_u32(b0));
                    for r in 0..P {
                        acc[r][2 * g] = bfdot(acc[r][2 * g], av[r], lo);
                        acc[r][2 * g + 1] = bfdot(acc[r][2 * g + 1], av[r], hi);
                    }
                }
            }
        }
        for (r, &(i0, i1)) in rows.iter().enumerate() {
            for g in 0..4 {
                let (lo, hi) = (
                    vreinterpretq_u64_f32(acc[r][2 * g]),
                    vreinterpretq_u64_f32(acc[r][2 * g + 1]),
                );
                // SAFETY: rows i0, i1 < mr of c hold NR f32 each.
                unsafe {
                    vst1q_f32(
                        c.add(i0 * NR + q * 16 + g * 4),
                        vreinterpretq_f32_u64(vzip1q_u64(lo, hi)),
                    );
                    if i1 != i0 {
                        vst1q_f32(
                            c.add(i1 * NR + q * 16 + g * 4),
                            vreinterpretq_f32_u64(vzip2q_u64(lo, hi)),
                        );
                    }
                }
            }
        }
    }
}

/// The NEON table's `micro_dot` (same contract and the same bits as [`micro_bfdot`]): BFMMLA on row
/// pairs, 2 rows × 2 columns × 4 values of k per instruction (Arm expects BFMMLA to reach at least
/// the bf16 throughput of two BFDOTs); a single row runs on BFDOT, where BFMMLA would compute a
/// duplicate row for nothing.
///
/// # Safety
/// As [`micro_bfdot`].
#[target_feature(enable = "neon,bf16")]
pub(super) unsafe fn micro_bfmmla(
    a: *const u32,
    lda: usize,
    mr: usize,
    kp: usize,
    b: *const u32,
    c: *mut f32,
    acc: bool,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match mr {
            1 => micro_bfdot(a, lda, mr, kp, b, c, acc),
            2 => micro_mmla_n::<1>(a, lda, mr, kp, b, c, acc),
            3 | 4 => micro_mmla_n::<2>(a, lda, mr, kp, b, c, acc),
            _ => micro_mmla_n::<3>(a, lda, mr, kp, b, c, acc),
        }
    }
}

/// Σ_{kk in from..k} x[kk] · w[kk] in wrapping i32 (the tails of the vector loops).
///
/// # Safety
/// `x` and `w` hold `k` elements.
unsafe fn dot_i8_tail(x: *const i8, w: *const i8, from: usize, k: usize) -> i32 {
    let mut s = 0i32;
    for kk in from..k {
        // SAFETY: kk < k.
        s = s.wrapping_add(unsafe { *x.add(kk) as i32 * *w.add(kk) as i32 });
    }
    s
}

/// `d += sdot(a, b)`: lane j of `d` gets the sum of the four byte products `a[4j+t] * b[4j+t]`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot(d: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut d = d;
    // SAFETY: register-only arithmetic; FEAT_DotProd is enabled here and verified by callers.
    unsafe {
        std::arch::asm!("sdot {d:v}.4s, {a:v}.16b, {b:v}.16b", d = inout(vreg) d, a = in(vreg) a, b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags));
    }
    d
}

/// Exact int8 dot products with SDOT (see `Kernels::dot_i8`): `out[i * NR + n] = Σ_kk x[i*k + kk] ·
/// w[n*k + kk]` for `i < rows`, `n < nc`. Each weight vector is loaded once per block of four rows.
///
/// # Safety
/// NEON + FEAT_DotProd; `x` holds `rows*k`, `w` holds `nc*k`, `out` holds `rows*NR`; `nc <= NR`.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn dot_i8_sdot(x: *const i8, rows: usize, w: *const i8, nc: usize, k: usize, out: *mut i32) {
    let k16 = k - k % 16;
    let mut i0 = 0;
    while i0 < rows {
        let m = (rows - i0).min(4);
        for n in 0..nc {
            // SAFETY: rows i0..i0+m of x and row n of w hold k each; every load ends by k16 <= k.
            unsafe {
                let wr = w.add(n * k);
                let mut acc = [vdupq_n_s32(0); 4];
                let mut kk = 0;
                while kk < k16 {
                    let wv = vld1q_s8(wr.add(kk));
                    for (r, v) in acc.iter_mut().enumerate().take(m) {
                        *v = sdot(*v, vld1q_s8(x.add((i0 + r) * k + kk)), wv);
                    }
                    kk += 16;
                }
                for (r, v) in acc.iter().enumerate().take(m) {
                    let xr = x.add((i0 + r) * k);
                    *out.add((i0 + r) * NR + n) = vaddvq_s32(*v).wrapping_add(dot_i8_tail(xr, wr, k16, k));
                }
            }
        }
        i0 += m;
    }
}

/// `d += smmla(a, b)`: with `a` the 2x8 int8 matrix A (rows = the two halves), `b` the 2x8 matrix B,
/// `d` (2x2 i32, row-major) += A · Bᵀ.
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn smmla(d: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut d = d;
    // SAFETY: register-only arithmetic; FEAT_I8MM is enabled here and verified by callers.
    unsafe {
        std::arch::asm!("smmla {d:v}.4s, {a:v}.16b, {b:v}.16b", d = inout(vreg) d, a = in(vreg) a, b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags));
    }
    d
}

/// Exact int8 dot products with SMMLA (same contract as [`dot_i8_sdot`]): 2 rows × 2 weight rows per
/// instruction, 8 values of k each; an odd last row or column repeats its neighbour's data and the
/// duplicate result is not stored.
///
/// # Safety
/// NEON + FEAT_I8MM; `x` holds `rows*k`, `w` holds `nc*k`, `out` holds `rows*NR`; `nc <= NR`.
#[target_feature(enable = "neon,i8mm")]
pub(super) unsafe fn dot_i8_smmla(x: *const i8, rows: usize, w: *const i8, nc: usize, k: usize, out: *mut i32) {
    let k8 = k - k % 8;
    for i in (0..rows).step_by(2) {
        let i1 = (i + 1).min(rows - 1);
        for n in (0..nc).step_by(2) {
            let n1 = (n + 1).min(nc - 1);
            // SAFETY: rows i, i1 < rows of x and n, n1 < nc of w hold k each; loads end by k8 <= k;
            // stores go to rows < rows, columns < nc <= NR of out.
            unsafe {
                let (x0, x1, w0, w1) = (x.add(i * k), x.add(i1 * k), w.add(n * k), w.add(n1 * k));
                let mut acc = vdupq_n_s32(0);
                let mut kk = 0;
                while kk < k8 {
                    let av = vcombine_s8(vld1_s8(x0.add(kk)), vld1_s8(x1.add(kk)));
                    let bv = vcombine_s8(vld1_s8(w0.add(kk)), vld1_s8(w1.add(kk)));
                    acc = smmla(acc, av, bv);
                    kk += 8;
                }
                let mut r = [0i32; 4];
                vst1q_s32(r.as_mut_ptr(), acc);
                *out.add(i * NR + n) = r[0].wrapping_add(dot_i8_tail(x0, w0, k8, k));
                if n1 != n {
                    *out.add(i * NR + n1) = r[1].wrapping_add(dot_i8_tail(x0, w1, k8, k));
                }
                if i1 != i {
                    *out.add(i1 * NR + n) = r[2].wrapping_add(dot_i8_tail(x1, w0, k8, k));
                    if n1 != n {
                        *out.add(i1 * NR + n1) = r[3].wrapping_add(dot_i8_tail(x1, w1, k8, k));
                    }
                }
            }
        }
    }
}

// ---- Quantized formats (OPS.md §6): MXFP4 decode, FP8 E4M3 dequantization -----------------------

/// 16 i8 lanes to four f32x4 (lanes 0-3, 4-7, 8-11, 12-15), each times `sv`.
#[inline]
#[target_feature(enable = "neon")]
fn widen_i8x16(x: int8x16_t, sv: float32x4_t) -> [float32x4_t; 4] {
    let (l, h) = (vmovl_s8(vget_low_s8(x)), vmovl_high_s8(x));
    [
        vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(l))), sv),
        vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(l)), sv),
        vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(h))), sv),
        vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(h)), sv),
    ]
}

/// NEON form of the decode-shape MXFP4 dot products (contract of `Kernels::dot_mxfp4`, as the AVX2
/// kernel): per 32-block, the 16 packed bytes are split into nibbles, `tbl` maps each code to
/// `2 × e2m1` as an i8 (`E2M1_X2`), the i8 are widened to f32 and multiplied by `2^(scale − 128)`
/// (`e8m0_half`: one rounding, the f32 dequantized weight of OPS.md §6 bit for bit), then FMA with
/// the split-layout activations (low nibbles = the 16 even k, high nibbles = the 16 odd k). Each
/// weight byte is read once.
///
/// # Safety
/// NEON; `a` holds `mr * k` floats, `w` `nc * k / 2` bytes, `s` `nc * k / 32` bytes, `c` `mr * NR`
/// floats; `1 <= mr <= 6`, `k % 32 == 0`, `nc <= NR`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn dot_mxfp4(a: *const f32, mr: usize, k: usize, w: *const u8, s: *const u8, nc: usize, c: *mut f32) {
    // SAFETY: same extents, forwarded.
    unsafe {
        match mr {
            1 => mxfp4_rows::<1>(a, k, w, s, nc, c),
            2 => mxfp4_rows::<2>(a, k, w, s, nc, c),
            3 => mxfp4_rows::<3>(a, k, w, s, nc, c),
            4 => mxfp4_rows::<4>(a, k, w, s, nc, c),
            5 => mxfp4_rows::<5>(a, k, w, s, nc, c),
            _ => mxfp4_rows::<6>(a, k, w, s, nc, c),
        }
    }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn mxfp4_rows<const R: usize>(a: *const f32, k: usize, w: *const u8, s: *const u8, nc: usize, c: *mut f32) {
    // SAFETY (whole body): every pointer offset stays within dot_mxfp4's extents (`a` R rows of k,
    // `w` nc rows of k/2 bytes, `s` nc rows of k/32, `c` R rows of NR).
    unsafe {
        let table = vld1q_s8(super::E2M1_X2.as_ptr());
        let nib = vdupq_n_u8(0x0F);
        let blocks = k / 32;
        for n in 0..nc {
            let wr = w.add(n * k / 2);
            let sr = s.add(n * blocks);
            let mut acc0 = [vdupq_n_f32(0.0); R];
            let mut acc1 = [vdupq_n_f32(0.0); R];
            for b in 0..blocks {
                if b + 32 < blocks {
                    super::prefetch(std::slice::from_raw_parts(wr.add((b + 32) * 16), 1));
                }
                let sv = vdupq_n_f32(super::e8m0_half(*sr.add(b)));
                let bytes = vld1q_u8(wr.add(b * 16));
                let lo = widen_i8x16(vqtbl1q_s8(table, vandq_u8(bytes, nib)), sv);
                let hi = widen_i8x16(vqtbl1q_s8(table, vshrq_n_u8::<4>(bytes)), sv);
                for i in 0..R {
                    let ar = a.add(i * k + b * 32);
                    for j in 0..4 {
                        acc0[i] = vfmaq_f32(acc0[i], lo[j], vld1q_f32(ar.add(4 * j)));
                        acc1[i] = vfmaq_f32(acc1[i], hi[j], vld1q_f32(ar.add(16 + 4 * j)));
                    }
                }
            }
            for i in 0..R {
                *c.add(i * NR + n) = vaddvq_f32(vaddq_f32(acc0[i], acc1[i]));
            }
        }
    }
}

/// Four E4M3FN codes (one per u32 lane, `0..=255`) to `fl32(e4m3 × scale)`, NaN results as
/// `f32::NAN`. Normal codes (exponent field `e` in 1..=15) are exact as the f32 with bits `sign <<
/// 31 | (code & 0x7F) << 20` plus `120 << 23` (the exponent rebased from bias 7 to 127); subnormal
/// codes (`e = 0`) are `m × 2^-9`, exact in f32; `0x7F` / `0xFF` are NaN (OCP e4m3fn).
#[inline]
#[target_feature(enable = "neon")]
fn e4m3x4(code: uint32x4_t, scale: float32x4_t) -> float32x4_t {
    let mag = vandq_u32(code, vdupq_n_u32(0x7F));
    let sign = vshlq_n_u32::<24>(vandq_u32(code, vdupq_n_u32(0x80)));
    let normal = vaddq_u32(vshlq_n_u32::<20>(mag), vdupq_n_u32(120 << 23));
    let sub = vreinterpretq_u32_f32(vmulq_f32(
        vcvtq_f32_u32(vandq_u32(code, vdupq_n_u32(7))),
        vdupq_n_f32(1.0 / 512.0),
    ));
    let is_sub = vceqq_u32(vandq_u32(code, vdupq_n_u32(0x78)), vdupq_n_u32(0));
    let v = vreinterpretq_f32_u32(vorrq_u32(vbslq_u32(is_sub, sub, normal), sign));
    let r = vmulq_f32(v, scale);
    let ok = vandq_u32(vceqq_f32(r, r), vmvnq_u32(vceqq_u32(mag, vdupq_n_u32(0x7F))));
    vbslq_f32(ok, r, vdupq_n_f32(f32::NAN))
}

/// See `Kernels::decode_e4m3`: `dst[i] = fl32(e4m3(src[i]) × scale)`, NaN as `f32::NAN`, 16 codes
/// per step, the tail four at a time through a zero-padded copy.
///
/// # Safety
/// NEON; `src` holds `n` bytes, `dst` `n` floats.
#[target_feature(enable = "neon")]
pub(super) unsafe fn decode_e4m3(src: *const u8, n: usize, scale: f32, dst: *mut f32) {
    let sv = vdupq_n_f32(scale);
    let mut i = 0;
    // SAFETY: every load reads bytes i..i+16 <= n of src, every store writes i..i+16 <= n of dst.
    unsafe {
        while i + 16 <= n {
            let b = vld1q_u8(src.add(i));
            let (h0, h1) = (vmovl_u8(vget_low_u8(b)), vmovl_high_u8(b));
            let words = [
                vmovl_u16(vget_low_u16(h0)),
                vmovl_high_u16(h0),
                vmovl_u16(vget_low_u16(h1)),
                vmovl_high_u16(h1),
            ];
            for (j, w) in words.into_iter().enumerate() {
                vst1q_f32(dst.add(i + 4 * j), e4m3x4(w, sv));
            }
            i += 16;
        }
    }
    while i < n {
        let m = (n - i).min(4);
        let mut codes = [0u32; 4];
        let mut out = [0f32; 4];
        for (j, c) in codes.iter_mut().enumerate().take(m) {
            // SAFETY: i + j < n.
            *c = unsafe { *src.add(i + j) } as u32;
        }
        // SAFETY: both arrays hold four lanes.
        unsafe { vst1q_f32(out.as_mut_ptr(), e4m3x4(vld1q_u32(codes.as_ptr()), sv)) };
        for (j, o) in out.iter().enumerate().take(m) {
            // SAFETY: i + j < n.
            unsafe { *dst.add(i + j) = *o };
        }
        i += m;
    }
}

// ---- Activations: sigmoid, exp, SwiGLU (the router's scoring and the expert MLP's glue) ----------

/// exp(x) in f32, the same argument reduction and degree-7 polynomial as the AVX2 / AVX-512 kernels:
/// `x = n ln2 + r` (ln2 split in two), `exp(r)` by Horner, `2^n` applied as two normal factors so
/// that overflow gives inf and deep underflow gives 0. NaN stays NaN.
#[inline]
#[target_feature(enable = "neon")]
fn exp4(x: float32x4_t) -> float32x4_t {
    let x = vmaxq_f32(vdupq_n_f32(-104.0), vminq_f32(vdupq_n_f32(89.0), x));
    let n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(std::f32::consts::LOG2_E)));
    let r = vfmsq_f32(x, n, vdupq_n_f32(0.693_359_4));
    let r = vfmsq_f32(r, n, vdupq_n_f32(-2.121_944_4e-4));
    let mut p = vdupq_n_f32(1.0 / 5040.0);
    p = vfmaq_f32(vdupq_n_f32(1.0 / 720.0), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0 / 120.0), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0 / 24.0), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0 / 6.0), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0), p, r);
    // NaN lanes convert to 0 (factors 1); p is NaN there, so the product stays NaN.
    let ni = vcvtq_s32_f32(n);
    let n1 = vshrq_n_s32::<1>(ni);
    let n2 = vsubq_s32(ni, n1);
    let bias = vdupq_n_s32(127);
    let f1 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n1, bias)));
    let f2 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n2, bias)));
    vmulq_f32(vmulq_f32(p, f1), f2)
}

/// Apply `f` to `n` lanes, 4 at a time; the last partial vector goes through a zero-padded buffer.
#[inline(always)]
unsafe fn map4(src: *const f32, dst: *mut f32, n: usize, mut f: impl FnMut(float32x4_t) -> float32x4_t) {
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i+4 <= n elements exist in both.
        unsafe { vst1q_f32(dst.add(i), f(vld1q_f32(src.add(i)))) };
        i += 4;
    }
    if i < n {
        let mut buf = [0f32; 4];
        // SAFETY: n-i < 4 elements remain in both.
        unsafe {
            std::ptr::copy_nonoverlapping(src.add(i), buf.as_mut_ptr(), n - i);
            vst1q_f32(buf.as_mut_ptr(), f(vld1q_f32(buf.as_ptr())));
            std::ptr::copy_nonoverlapping(buf.as_ptr(), dst.add(i), n - i);
        }
    }
}

/// `dst[i] = 1 / (1 + exp(-src[i]))`.
///
/// # Safety
/// NEON; `src`, `dst` hold `n` f32.
#[target_feature(enable = "neon")]
pub(super) unsafe fn sigmoid(src: *const f32, dst: *mut f32, n: usize) {
    let one = vdupq_n_f32(1.0);
    // SAFETY: forwarded contract.
    unsafe { map4(src, dst, n, |x| vdivq_f32(one, vaddq_f32(one, exp4(vnegq_f32(x))))) }
}

/// `dst[i] = exp(src[i] - shift)`; returns the sum of `dst` (four lane sums, then the tail, in order).
///
/// # Safety
/// NEON; `src`, `dst` hold `n` f32.
#[target_feature(enable = "neon")]
pub(super) unsafe fn exp_shift(src: *const f32, dst: *mut f32, n: usize, shift: f32) -> f32 {
    let s = vdupq_n_f32(shift);
    // SAFETY: forwarded contract.
    unsafe { map4(src, dst, n, |x| exp4(vsubq_f32(x, s))) };
    let mut acc = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i+4 <= n.
        acc = vaddq_f32(acc, unsafe { vld1q_f32(dst.add(i)) });
        i += 4;
    }
    let mut sum =
        (vgetq_lane_f32::<0>(acc) + vgetq_lane_f32::<2>(acc)) + (vgetq_lane_f32::<1>(acc) + vgetq_lane_f32::<3>(acc));
    while i < n {
        // SAFETY: i < n.
        sum += unsafe { *dst.add(i) };
        i += 1;
    }
    sum
}

/// SwiGLU: `out[i] = silu(min(g, limit)) * clamp(u, -limit, limit)`.
///
/// # Safety
/// NEON; `g`, `u`, `out` hold `n` f32.
#[target_feature(enable = "neon")]
pub(super) unsafe fn silu_mul(g: *const f32, u: *const f32, out: *mut f32, n: usize, limit: f32) {
    let (lim, neg, one) = (vdupq_n_f32(limit), vdupq_n_f32(-limit), vdupq_n_f32(1.0));
    let f = |gv: float32x4_t, uv: float32x4_t| {
        let x = vminq_f32(lim, gv);
        let y = vmaxq_f32(neg, vminq_f32(lim, uv));
        vmulq_f32(vdivq_f32(x, vaddq_f32(one, exp4(vnegq_f32(x)))), y)
    };
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i+4 <= n elements exist in all three.
        unsafe { vst1q_f32(out.add(i), f(vld1q_f32(g.add(i)), vld1q_f32(u.add(i)))) };
        i += 4;
    }
    if i < n {
        let (mut bg, mut bu) = ([0f32; 4], [0f32; 4]);
        // SAFETY: n-i < 4 elements remain in all three.
        unsafe {
            std::ptr::copy_nonoverlapping(g.add(i), bg.as_mut_ptr(), n - i);
            std::ptr::copy_nonoverlapping(u.add(i), bu.as_mut_ptr(), n - i);
            vst1q_f32(bg.as_mut_ptr(), f(vld1q_f32(bg.as_ptr()), vld1q_f32(bu.as_ptr())));
            std::ptr::copy_nonoverlapping(bg.as_ptr(), out.add(i), n - i);
        }
    }
}

// ---- Router (OPS.md §2): fused sigmoid scoring, group limit, top-k candidate selection ------------

/// Fused sigmoid scoring of one token (see `Kernels::sigmoid_select`): for finite `x = l[i]`,
/// `s[i] = sigmoid(x)` (as [`sigmoid`]) and `sel[i] = s[i] + bias[i]` (or `s[i]` without bias),
/// `-inf` where that sum is not finite; for non-finite `x`, `s[i] = 0` and `sel[i] = -inf`.
///
/// # Safety
/// NEON; `l`, `s`, `sel` hold `n` f32; `bias` is null or holds `n` f32.
#[target_feature(enable = "neon")]
pub(super) unsafe fn sigmoid_select(l: *const f32, bias: *const f32, s: *mut f32, sel: *mut f32, n: usize) {
    let (one, zero, ninf) = (vdupq_n_f32(1.0), vdupq_n_f32(0.0), vdupq_n_f32(f32::NEG_INFINITY));
    let mut i = 0;
    while i < n {
        let m = (n - i).min(4);
        // The last partial vector goes through zero-padded buffers (padding lanes are not stored).
        let (mut xb, mut bb, mut sb, mut vb) = ([0f32; 4], [0f32; 4], [0f32; 4], [0f32; 4]);
        // SAFETY: m <= n - i elements exist in every array; bias is read only when non-null.
        unsafe {
            std::ptr::copy_nonoverlapping(l.add(i), xb.as_mut_ptr(), m);
            if !bias.is_null() {
                std::ptr::copy_nonoverlapping(bias.add(i), bb.as_mut_ptr(), m);
            }
            let x = vld1q_f32(xb.as_ptr());
            // Finite iff x - x == 0 (inf - inf and NaN give NaN, which compares unequal).
            let fin = vceqq_f32(vsubq_f32(x, x), zero);
            let sg = vdivq_f32(one, vaddq_f32(one, exp4(vnegq_f32(x))));
            let sg = vreinterpretq_f32_u32(vandq_u32(fin, vreinterpretq_u32_f32(sg)));
            let v = if bias.is_null() {
                sg
            } else {
                vaddq_f32(sg, vld1q_f32(bb.as_ptr()))
            };
            let ok = vandq_u32(fin, vceqq_f32(vsubq_f32(v, v), zero));
            vst1q_f32(sb.as_mut_ptr(), sg);
            vst1q_f32(vb.as_mut_ptr(), vbslq_f32(ok, v, ninf));
            std::ptr::copy_nonoverlapping(sb.as_ptr(), s.add(i), m);
            std::ptr::copy_nonoverlapping(vb.as_ptr(), sel.add(i), m);
        }
        i += 4;
    }
}

/// Group limit of one router token (see `Kernels::group_limit`) for `ng <= 16` groups of `per`
/// values (`per % 16 == 0`, no NaN): group score = the largest value, or with `top2sum` the sum of
/// the two largest of the multiset; the `topk_group` best groups (score descending, lower group
/// index first on ties) are kept, every value of the others becomes `-inf`. Returns the kept mask.
///
/// # Safety
/// NEON; `sel` holds `ng*per` f32; `1 <= ng <= 16`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn group_limit(sel: *mut f32, ng: usize, per: usize, top2sum: bool, topk_group: usize) -> u32 {
    let ninf = vdupq_n_f32(f32::NEG_INFINITY);
    let mut score = [f32::NEG_INFINITY; 16];
    for (g, sc) in score.iter_mut().enumerate().take(ng) {
        // Lane-wise running top two over the group's 16-wide blocks (no NaN: min/max select exactly).
        let (mut t1, mut t2) = ([ninf; 4], [ninf; 4]);
        for j in (0..per).step_by(16) {
            for q in 0..4 {
                // SAFETY: element g*per + j + 4q + 3 < ng*per.
                let v = unsafe { vld1q_f32(sel.add(g * per + j + 4 * q)) };
                t2[q] = vmaxq_f32(t2[q], vminq_f32(v, t1[q]));
                t1[q] = vmaxq_f32(t1[q], v);
            }
        }
        let (mut a1, mut a2) = ([0f32; 16], [0f32; 16]);
        for q in 0..4 {
            // SAFETY: a1 and a2 hold 16 f32.
            unsafe {
                vst1q_f32(a1.as_mut_ptr().add(4 * q), t1[q]);
                vst1q_f32(a2.as_mut_ptr().add(4 * q), t2[q]);
            }
        }
        let m1 = a1.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        *sc = if top2sum {
            // Remove one instance of m1 (its lowest lane), put that lane's second value in its place.
            let first = a1.iter().position(|&v| v == m1).unwrap_or(0);
            a1[first] = a2[first];
            m1 + a1.iter().copied().fold(f32::NEG_INFINITY, f32::max)
        } else {
            m1
        };
    }
    let mut keep = 0u32;
    for j in 0..ng {
        let rank = (0..ng)
            .filter(|&i| score[i] > score[j] || (score[i] == score[j] && i < j))
            .count();
        if rank < topk_group {
            keep |= 1 << j;
        }
    }
    for g in 0..ng {
        if keep & (1 << g) == 0 {
            for j in (0..per).step_by(4) {
                // SAFETY: element g*per + j + 3 < ng*per.
                unsafe { vst1q_f32(sel.add(g * per + j), ninf) };
            }
        }
    }
    keep
}

/// Top-`k` selection (`1 <= k <= 16`) over `sel[0..e]` (no NaN; `-inf` = not selectable), the
/// contract of `Kernels::topk_select` and the same algorithm as the AVX-512 kernel: with `tau` the
/// k-th largest of the 16 lane-wise maxima (at least `k` distinct elements are `>= tau`, so every
/// member of the top k and every element tied with one is), the candidates are the elements
/// `v >= tau`, `v > -inf`, gathered in ascending index order. Returns their count `n`; if `n <= 16`,
/// `ids[r]` gets the candidate of rank `r < min(n, k)` (rank = number of candidates greater, or
/// equal with a lower index), else the candidates are left in `cv` / `ci`. Blocks `b < 64` of 16
/// elements with bit `b` of `skip` set are not read.
///
/// # Safety
/// NEON; `sel` holds `e` f32; `cv` and `ci` hold `e + 16` elements; `ids` holds `k`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn topk_select(
    sel: *const f32,
    e: usize,
    k: usize,
    skip: u64,
    cv: *mut f32,
    ci: *mut u32,
    ids: *mut i32,
) -> usize {
    let nb = e.div_ceil(16);
    let ninf = vdupq_n_f32(f32::NEG_INFINITY);
    let mut mx = [ninf; 4];
    let mut blocks = super::Blocks::new(nb, skip);
    while let Some(b) = blocks.next() {
        let i = b * 16;
        if i + 16 <= e {
            for (q, m) in mx.iter_mut().enumerate() {
                // SAFETY: i + 16 <= e.
                *m = vmaxq_f32(*m, unsafe { vld1q_f32(sel.add(i + 4 * q)) });
            }
        } else {
            let mut buf = [f32::NEG_INFINITY; 16];
            // SAFETY: e - i < 16 elements remain.
            unsafe { std::ptr::copy_nonoverlapping(sel.add(i), buf.as_mut_ptr(), e - i) };
            for (q, m) in mx.iter_mut().enumerate() {
                // SAFETY: buf holds 16 f32.
                *m = vmaxq_f32(*m, unsafe { vld1q_f32(buf.as_ptr().add(4 * q)) });
            }
        }
    }
    let mut lane = [0f32; 16];
    for (q, m) in mx.iter().enumerate() {
        // SAFETY: lane holds 16 f32.
        unsafe { vst1q_f32(lane.as_mut_ptr().add(4 * q), *m) };
    }
    // tau = min { lane[j] : #{lanes greater than lane[j]} < k } = the k-th largest lane maximum.
    let tau = (0..16)
        .filter(|&j| lane.iter().filter(|&&v| v > lane[j]).count() < k)
        .map(|j| lane[j])
        .fold(f32::INFINITY, f32::min);
    let tv = vdupq_n_f32(tau);
    let mut n = 0usize;
    let mut blocks = super::Blocks::new(nb, skip);
    while let Some(b) = blocks.next() {
        let i0 = b * 16;
        let end = (i0 + 16).min(e);
        let mut i = i0;
        while i < end {
            let w = (end - i).min(4);
            let mut buf = [f32::NEG_INFINITY; 4];
            // SAFETY: w <= end - i elements remain; n <= i (indices ascend, each adds at most one),
            // so the stores at cv + n and ci + n stay below e.
            unsafe {
                std::ptr::copy_nonoverlapping(sel.add(i), buf.as_mut_ptr(), w);
                let v = vld1q_f32(buf.as_ptr());
                let c = vandq_u32(vcgeq_f32(v, tv), vcgtq_f32(v, ninf));
                if vmaxvq_u32(c) != 0 {
                    for (t, &x) in buf.iter().enumerate().take(w) {
                        if x >= tau && x > f32::NEG_INFINITY {
                            *cv.add(n) = x;
                            *ci.add(n) = (i + t) as u32;
                            n += 1;
                        }
                    }
                }
            }
            i += 4;
        }
    }
    if n <= 16 {
        let mut out = [0i32; 17];
        for j in 0..n {
            // SAFETY: j < n candidates were written.
            let (vj, ij) = unsafe { (*cv.add(j), *ci.add(j)) };
            let mut rank = 0;
            for t in 0..n {
                // SAFETY: t < n.
                let vt = unsafe { *cv.add(t) };
                rank += usize::from(vt > vj || (vt == vj && t < j));
            }
            out[if rank < k { rank } else { 16 }] = ij as i32;
        }
        for (r, &id) in out.iter().enumerate().take(n.min(k)) {
            // SAFETY: r < k and ids holds k.
            unsafe { *ids.add(r) = id };
        }
    }
    n
}
