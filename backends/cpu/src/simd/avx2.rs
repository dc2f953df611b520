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

// ---- Router (OPS.md §2): fused sigmoid scoring, group limit, top-k candidate selection ------------

/// Fused sigmoid scoring of one token (see `Kernels::sigmoid_select`): for finite `x = l[i]`,
/// `s[i] = sigmoid(x)` (the arithmetic of [`sigmoid`], so the same bits) and `sel[i] = s[i] +
/// bias[i]` (or `s[i]` without bias), `-inf` where that sum is not finite; for non-finite `x`,
/// `s[i] = 0` and `sel[i] = -inf`.
///
/// # Safety
/// AVX2+FMA; `l`, `s`, `sel` hold `n` f32; `bias` is null or holds `n` f32.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn sigmoid_select(l: *const f32, bias: *const f32, s: *mut f32, sel: *mut f32, n: usize) {
    let one = _mm256_set1_ps(1.0);
    let zero = _mm256_setzero_ps();
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let f = |x: __m256, b: Option<__m256>| {
        // Finite iff x - x == 0 (inf - inf and NaN give NaN, which compares unequal).
        let fin = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_sub_ps(x, x), zero);
        let e = exp(_mm256_sub_ps(zero, x));
        let sg = _mm256_and_ps(fin, _mm256_div_ps(one, _mm256_add_ps(one, e)));
        let v = match b {
            Some(b) => _mm256_add_ps(sg, b),
            None => sg,
        };
        let ok = _mm256_and_ps(fin, _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_sub_ps(v, v), zero));
        (sg, _mm256_blendv_ps(ninf, v, ok))
    };
    let has_bias = !bias.is_null();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n elements exist in every array; bias is read only when non-null.
        unsafe {
            let b = has_bias.then(|| _mm256_loadu_ps(bias.add(i)));
            let (sg, v) = f(_mm256_loadu_ps(l.add(i)), b);
            _mm256_storeu_ps(s.add(i), sg);
            _mm256_storeu_ps(sel.add(i), v);
        }
        i += 8;
    }
    if i < n {
        // The last partial vector goes through zero-padded buffers (padding lanes are not stored).
        let m = n - i;
        let (mut xb, mut bb, mut sb, mut vb) = ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
        // SAFETY: m < 8 elements remain in every array; bias is read only when non-null.
        unsafe {
            std::ptr::copy_nonoverlapping(l.add(i), xb.as_mut_ptr(), m);
            if has_bias {
                std::ptr::copy_nonoverlapping(bias.add(i), bb.as_mut_ptr(), m);
            }
            let (sg, v) = f(
                _mm256_loadu_ps(xb.as_ptr()),
                has_bias.then(|| _mm256_loadu_ps(bb.as_ptr())),
            );
            _mm256_storeu_ps(sb.as_mut_ptr(), sg);
            _mm256_storeu_ps(vb.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(sb.as_ptr(), s.add(i), m);
            std::ptr::copy_nonoverlapping(vb.as_ptr(), sel.add(i), m);
        }
    }
}

/// A running "two largest of a multiset" per lane: `(a, b)` with `a >= b` lane-wise (no NaN).
#[derive(Clone, Copy)]
struct Top2 {
    a: __m256,
    b: __m256,
}

/// The two largest of the union of two lane-wise top-two multisets: `a = max(a1, a2)`, `b =
/// max(min(a1, a2), b1, b2)` (each `b <= a`, so the loser of the `a`s competes with both `b`s).
/// Exact selections (no arithmetic), so the order of merging does not change the values.
#[inline]
#[target_feature(enable = "avx2")]
fn merge2(x: Top2, y: Top2) -> Top2 {
    Top2 {
        a: _mm256_max_ps(x.a, y.a),
        b: _mm256_max_ps(_mm256_min_ps(x.a, y.a), _mm256_max_ps(x.b, y.b)),
    }
}

/// Lane-wise top two of 8 per-group accumulators, reduced across lanes in one transposed pass:
/// lane `g` of the result holds the two largest of all 8 lanes of `t[g]`. Three levels of shuffles
/// (32-bit interleave, 64-bit interleave, 128-bit halves), each merging disjoint lane sets.
#[inline]
#[target_feature(enable = "avx2")]
fn reduce_top2_x8(t: &[Top2; 8]) -> Top2 {
    // Level 1: W_p lanes [g0(0,2), g1(0,2), g0(1,3), g1(1,3) | g0(4,6), g1(4,6), g0(5,7), g1(5,7)]
    // for the group pair (g0, g1) = (2p, 2p + 1).
    let l1 = |x: Top2, y: Top2| {
        let lo = Top2 {
            a: _mm256_unpacklo_ps(x.a, y.a),
            b: _mm256_unpacklo_ps(x.b, y.b),
        };
        let hi = Top2 {
            a: _mm256_unpackhi_ps(x.a, y.a),
            b: _mm256_unpackhi_ps(x.b, y.b),
        };
        merge2(lo, hi)
    };
    let w = [l1(t[0], t[1]), l1(t[2], t[3]), l1(t[4], t[5]), l1(t[6], t[7])];
    // Level 2: X_q lanes [g0(0..3), g1(0..3), g2(0..3), g3(0..3) | the same over lanes 4..7] for
    // groups 4q..4q+3.
    let l2 = |x: Top2, y: Top2| {
        let lo = |u: __m256, v: __m256| _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(u), _mm256_castps_pd(v)));
        let hi = |u: __m256, v: __m256| _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(u), _mm256_castps_pd(v)));
        merge2(
            Top2 {
                a: lo(x.a, y.a),
                b: lo(x.b, y.b),
            },
            Top2 {
                a: hi(x.a, y.a),
                b: hi(x.b, y.b),
            },
        )
    };
    let x0 = l2(w[0], w[1]);
    let x1 = l2(w[2], w[3]);
    // Level 3: lane g = group g over all 8 lanes.
    merge2(
        Top2 {
            a: _mm256_permute2f128_ps::<0x20>(x0.a, x1.a),
            b: _mm256_permute2f128_ps::<0x20>(x0.b, x1.b),
        },
        Top2 {
            a: _mm256_permute2f128_ps::<0x31>(x0.a, x1.a),
            b: _mm256_permute2f128_ps::<0x31>(x0.b, x1.b),
        },
    )
}

/// Group limit of one router token (see `Kernels::group_limit`) for `ng <= 16` groups of `per`
/// values (`per % 16 == 0`) of `sel` (no NaN): group score = the largest value, or with `top2sum`
/// the sum of the two largest of the multiset (`fl32(a + b)`, as the portable code adds them); the
/// `topk_group` best groups (score descending, lower group index first on ties) are kept, every
/// value of the others becomes `-inf`. Returns the kept-group bit mask.
///
/// Each group's lane-wise top two is one pass over its values; the 8 groups of a batch are then
/// reduced across lanes together ([`reduce_top2_x8`]), so all group scores land in one register.
///
/// # Safety
/// AVX2; `sel` holds `ng*per` f32; `1 <= ng <= 16`.
#[target_feature(enable = "avx2,fma,popcnt")]
pub(super) unsafe fn group_limit(sel: *mut f32, ng: usize, per: usize, top2sum: bool, topk_group: usize) -> u32 {
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let empty = Top2 { a: ninf, b: ninf };
    let mut score = [f32::NEG_INFINITY; 16];
    for g0 in (0..ng).step_by(8) {
        let mut t = [empty; 8];
        for (gi, tg) in t.iter_mut().enumerate().take(ng - g0) {
            let base = (g0 + gi) * per;
            let mut acc = empty;
            for j in (0..per).step_by(8) {
                // SAFETY: element base + j + 7 < ng*per.
                let v = unsafe { _mm256_loadu_ps(sel.add(base + j)) };
                // Lane-wise running top two (no NaN: min/max are exact selections).
                acc.b = _mm256_max_ps(acc.b, _mm256_min_ps(v, acc.a));
                acc.a = _mm256_max_ps(acc.a, v);
            }
            *tg = acc;
        }
        let r = reduce_top2_x8(&t);
        let sc = if top2sum { _mm256_add_ps(r.a, r.b) } else { r.a };
        // SAFETY: g0 + 8 <= 16 = score.len().
        unsafe { _mm256_storeu_ps(score.as_mut_ptr().add(g0), sc) };
    }
    // rank[j] = #{i : score[i] > score[j], or equal with i < j}, for all j at once; padding lanes
    // (-inf, higher index) never precede a real group.
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let nv = ng.div_ceil(8);
    // SAFETY: score holds 16 f32.
    let sv = unsafe { [_mm256_loadu_ps(score.as_ptr()), _mm256_loadu_ps(score.as_ptr().add(8))] };
    let mut rank = [_mm256_setzero_si256(); 2];
    for i in 0..ng {
        // SAFETY: i < ng <= 16.
        let bi = unsafe { _mm256_broadcast_ss(&*score.as_ptr().add(i)) };
        for h in 0..nv {
            let later = _mm256_cmpgt_epi32(
                _mm256_add_epi32(iota, _mm256_set1_epi32(8 * h as i32)),
                _mm256_set1_epi32(i as i32),
            );
            let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(bi, sv[h]);
            let eq = _mm256_and_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(bi, sv[h]), _mm256_castsi256_ps(later));
            // A true compare is all ones (-1): subtracting it counts one.
            rank[h] = _mm256_sub_epi32(rank[h], _mm256_castps_si256(_mm256_or_ps(gt, eq)));
        }
    }
    let lim = _mm256_set1_epi32(topk_group as i32);
    let mut keep = 0u32;
    for (h, r) in rank.iter().enumerate().take(nv) {
        let m = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(lim, *r))) as u32;
        keep |= m << (8 * h);
    }
    keep &= (1u32 << ng) - 1;
    for g in 0..ng {
        if keep & (1 << g) == 0 {
            for j in (0..per).step_by(8) {
                // SAFETY: element g*per + j + 7 < ng*per.
                unsafe { _mm256_storeu_ps(sel.add(g * per + j), ninf) };
            }
        }
    }
    keep
}

/// `COMPRESS[m]`: the lane numbers of the set bits of `m`, ascending, one per byte (low byte
/// first), for a left-packing `vpermps`.
static COMPRESS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut m = 0;
    while m < 256 {
        let (mut v, mut n, mut b) = (0u64, 0, 0);
        while b < 8 {
            if m & (1 << b) != 0 {
                v |= (b as u64) << (8 * n);
                n += 1;
            }
            b += 1;
        }
        t[m] = v;
        m += 1;
    }
    t
};

/// The 8 values at `p` where `valid >= 8`, else the first `valid` with `-inf` after them (the
/// masked load reads nothing past them).
///
/// # Safety
/// AVX2; `p` holds `min(valid, 8)` f32.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_or_ninf(p: *const f32, valid: usize) -> __m256 {
    if valid >= 8 {
        // SAFETY: 8 elements exist.
        unsafe { _mm256_loadu_ps(p) }
    } else {
        let m = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(valid as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        // SAFETY: lanes >= valid are masked off and not read.
        let v = unsafe { _mm256_maskload_ps(p, m) };
        _mm256_blendv_ps(_mm256_set1_ps(f32::NEG_INFINITY), v, _mm256_castsi256_ps(m))
    }
}

/// Top-`k` selection (`1 <= k <= 16`) over `sel[0..e]` (no NaN; `-inf` = not selectable), the
/// contract of `Kernels::topk_select` and the algorithm of the AVX-512 kernel on two 8-lane
/// registers: with `tau` the k-th largest of the 16 lane-wise maxima (even and odd halves of each
/// 16-element block), at least `k` distinct elements are `>= tau`, so every member of the top k and
/// every element tied with one is; the candidates `v >= tau`, `v > -inf` are left-packed in
/// ascending index order into `cv` / `ci` (a `vpermps` by [`COMPRESS`], branch-free). Returns their
/// count `n`; if `n <= 16`, `ids[r]` gets the candidate of rank `r < min(n, k)` (rank = number of
/// candidates greater, or equal with a lower index), ranked in registers. Blocks `b < 64` of 16
/// elements with bit `b` of `skip` set are not read.
///
/// # Safety
/// AVX2; `sel` holds `e` f32; `cv` and `ci` hold `e + 16` elements; `ids` holds `k`.
#[target_feature(enable = "avx2,fma,popcnt")]
pub(super) unsafe fn topk_select(
    sel: *const f32,
    e: usize,
    k: usize,
    skip: u64,
    cv: *mut f32,
    ci: *mut u32,
    ids: *mut i32,
) -> usize {
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let nb = e.div_ceil(16);
    let mut mx = [ninf; 2];
    let mut blocks = super::Blocks::new(nb, skip);
    while let Some(b) = blocks.next() {
        let i = b * 16;
        for (h, m) in mx.iter_mut().enumerate() {
            let off = i + 8 * h;
            // SAFETY: only elements below e are read (off < e when valid > 0).
            let v = unsafe { load_or_ninf(sel.add(off.min(e)), e.saturating_sub(off)) };
            *m = _mm256_max_ps(*m, v);
        }
    }
    // cnt[j] = #{lane maxima greater than lane j} (all 16 at once: one broadcast per lane); tau =
    // min { M[j] : cnt[j] < k } = the k-th largest lane maximum.
    let mut lane = [0f32; 16];
    // SAFETY: lane holds 16 f32.
    unsafe {
        _mm256_storeu_ps(lane.as_mut_ptr(), mx[0]);
        _mm256_storeu_ps(lane.as_mut_ptr().add(8), mx[1]);
    }
    let mut cnt = [_mm256_setzero_si256(); 2];
    for v in &lane {
        let b = _mm256_set1_ps(*v);
        for h in 0..2 {
            cnt[h] = _mm256_sub_epi32(cnt[h], _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(b, mx[h])));
        }
    }
    let kv = _mm256_set1_epi32(k as i32);
    let pinf = _mm256_set1_ps(f32::INFINITY);
    let small = |h: usize| _mm256_castsi256_ps(_mm256_cmpgt_epi32(kv, cnt[h]));
    let tm = _mm256_min_ps(
        _mm256_blendv_ps(pinf, mx[0], small(0)),
        _mm256_blendv_ps(pinf, mx[1], small(1)),
    );
    let tm = _mm256_min_ps(tm, _mm256_permute2f128_ps::<0x01>(tm, tm));
    let tm = _mm256_min_ps(tm, _mm256_permute_ps::<0b01_00_11_10>(tm));
    let tv = _mm256_min_ps(tm, _mm256_permute_ps::<0b10_11_00_01>(tm));
    let mut n = 0usize;
    let mut blocks = super::Blocks::new(nb, skip);
    while let Some(b) = blocks.next() {
        for h in 0..2 {
            let off = b * 16 + 8 * h;
            // SAFETY: only elements below e are read; n <= off (indices ascend, each adds at most
            // one), so the 8-lane stores at cv + n and ci + n end before e + 16.
            unsafe {
                let v = load_or_ninf(sel.add(off.min(e)), e.saturating_sub(off));
                let c = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(v, tv), _mm256_cmp_ps::<_CMP_GT_OQ>(v, ninf));
                let m = _mm256_movemask_ps(c) as usize;
                let perm = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(COMPRESS[m] as i64));
                // Branch-free: whether a vector holds candidates is data-dependent and unpredictable.
                _mm256_storeu_ps(cv.add(n), _mm256_permutevar8x32_ps(v, perm));
                _mm256_storeu_si256(
                    ci.add(n) as *mut __m256i,
                    _mm256_add_epi32(perm, _mm256_set1_epi32(off as i32)),
                );
                n += m.count_ones() as usize;
            }
        }
    }
    if n <= 16 {
        // The candidates in two registers (lanes >= n: -inf, never greater than or equal to one).
        // SAFETY: cv holds e + 16 >= 16 initialized f32 (lanes past n are replaced).
        let v = unsafe { [load_or_ninf(cv, n), load_or_ninf(cv.add(8), n.saturating_sub(8))] };
        // Ranks land in a 17-slot buffer (rank >= k goes to the spare slot 16): no unpredictable branch.
        let mut out = [0i32; 17];
        for j in 0..n {
            // SAFETY: j < n candidates were written.
            let (vj, ij) = unsafe { (*cv.add(j), *ci.add(j)) };
            let b = _mm256_set1_ps(vj);
            let mm = |m: __m256| _mm256_movemask_ps(m) as u32;
            let gt = mm(_mm256_cmp_ps::<_CMP_GT_OQ>(v[0], b)) | mm(_mm256_cmp_ps::<_CMP_GT_OQ>(v[1], b)) << 8;
            let eq = mm(_mm256_cmp_ps::<_CMP_EQ_OQ>(v[0], b)) | mm(_mm256_cmp_ps::<_CMP_EQ_OQ>(v[1], b)) << 8;
            let rank = (gt | (eq & ((1u32 << j) - 1))).count_ones() as usize;
            out[if rank < k { rank } else { 16 }] = ij as i32;
        }
        for (r, &id) in out.iter().enumerate().take(n.min(k)) {
            // SAFETY: r < k and ids holds k.
            unsafe { *ids.add(r) = id };
        }
    }
    n
}
