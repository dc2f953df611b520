//! The vector half of `engram_hash` (OPS.md §4): `row = (h mod p) + off` for every column of a
//! token, 4 columns per AVX2 vector (2 per NEON vector), from the token's per-order hashes `h_n`.
//! The multiply-XOR hash itself stays scalar in `crate::engram` (N multiplies per token, shared by
//! all `K` heads of an order); the `C = (N - 1) * K` reductions are the work.
//!
//! # The exact reduction (f64 with FMA)
//!
//! Neither AVX2 nor NEON has a 64-bit vector multiply-high, but both have f64 FMA, which gives an
//! exact remainder: for each column the plan holds `p` and `P = f64(p)`, `pinv = fl(1/p)` and a
//! constant `c ≡ 2^32 (mod p)`: `c = 2^32 mod p` when `p < 2^21`, else `c = 2^32`. For a hash `h`
//! (any `u64`) let `hi = h >> 32`, `lo = h mod 2^32` and `y = hi·c + lo ≡ h (mod p)`. Then, in f64:
//!
//! ```text
//! X  = hi · c                 exact: hi < 2^32 and either c = 2^32 (a scaling) or c < 2^21 (X < 2^53)
//! s  = fl(X + lo)             an estimate of y
//! t  = fl(s · pinv − 0.5)     one FMA
//! q  = floor(t)
//! r  = fl(X − q · P) + lo     one FMA, then one add: both exact (below)
//! r -= P if r >= P            → r = y mod p = h mod p
//! ```
//!
//! Proof (`u = 2^-53`, `z = y / p`): `s = (X + lo)(1 + d1)`, `pinv = (1 + d2) / p`, and the FMA
//! rounds once, so `t = (s·pinv − 0.5)(1 + d3)` with `|di| <= u`, and
//! `|t − (z − 0.5)| <= z(2u + u²) + u(z(1 + u)² + 0.5) < 3.01·z·u + 0.5·u =: ε`.
//! The operand range bounds `z`: with `c = 2^32` (`p >= 2^21`) `y = h < 2^64`, so `z < 2^43`; with
//! `c < p < 2^21`, `y < 2^32·p + 2^32`, so `z < 2^33`. Either way `ε < 2^-8 < 0.5`, hence
//! `z − 1 < t < z`, and `q = floor(t)` is `Q − 1` or `Q` for `Q = floor(z)` (t is at least −1, and
//! a floor of a double is exact). So `y − q·p` lies in `[0, 2p)`, and `X − q·P = (y − q·p) − lo` is
//! an integer in `(−2^32, 2p)`: for `p < 2^51` it is representable, so the FMA (one rounding of the
//! exact value) returns it exactly, and adding `lo` gives the exact `y − q·p`. One conditional
//! subtraction of `p` leaves `y mod p = h mod p` in `[0, p)`. The integer is taken from the double
//! by adding `2^52` (exact for `r < 2^52`) and reading the bits: `bits = 0x4330_0000_0000_0000 +
//! r`; the plan stores `off − 0x4330_0000_0000_0000` (wrapping), so one 64-bit add gives `r + off`.
//! Every operation is IEEE-754 round-to-nearest (the default mode, which Rust programs do not
//! change), so AVX2 and NEON give the same bits; the unit tests below compare the kernels against
//! `h % p` on edge values (0, `p − 1`, `k·p − 1`, `k·p`, around `2^32`, `2^53`, `2^63`, `u64::MAX`)
//! and random ones, for primes on both sides of `2^21` and up to the `2^51` bound.
//!
//! # The fused kernel (plain windows)
//!
//! [`Kernels::engram_plain_rows`] (AVX2) takes the tokens whose window is plain (no positions, no
//! alive mask, `t >= N − 1`) of a uniform plan with every prime below [`FUSED_PRIME_LIMIT`] = 2^31
//! (every published layer), and hashes 4 tokens per vector: `w · m mod 2^64` from `vpmuludq`
//! pieces (`lo(w)·lo(m) + (lo(w)·hi(m) + hi(w)·lo(m))·2^32`, the last term omitted when every id
//! is below 2^32), XOR per order, then the halves `X = hi·2^32` (bits `bits(2^84) | hi`, minus
//! `2^84`, exact for `hi < 2^52`), `lo` and `s = fl(X + lo)` as above. Its reduction differs only
//! in the last steps: with `L = 2^52 + lo` (bits `MAGIC | lo`), `a = fl(X − q·P) + L` is the exact
//! `2^52 + v`, `v = y − q·p` in `[0, 2p)` (the FMA's value is exact as above, and `2^52 + v < 2^53`
//! is representable, so the add is exact), whose bits are `MAGIC + v`: for `p < 2^31`, `v < 2^32`
//! is the low 32-bit half. Then `vpminud(a, a − p)` (32-bit lanes) is `v mod p` in the low half:
//! for `v < p`, `v − p` wraps to `2^32 − p + v > v`; for `v >= p` it is `v − p < v`; the high
//! halves (`MAGIC >> 32`, `p`'s high half is 0) are unchanged, so one 64-bit add of `off − MAGIC`
//! gives `v mod p + off`. Four integer steps instead of five, off the FMA ports; the unit tests
//! compare it with the scalar hash and `%`.
//!
//! Layers with a prime `>= 2^51` or more than 4 orders (`N > 5`; every published layer has `N <= 4`)
//! get no [`HashPlan`]; `crate::engram` then reduces with its scalar reciprocal, as on a machine
//! without AVX2 or NEON.

use super::{Isa, Kernels};

/// Orders (`N − 1`) a [`HashPlan`] covers: one AVX2 register of `u64` per token.
pub const HASH_ORDERS: usize = 4;
/// Smallest prime that takes `c = 2^32` (see the module docs); below it `c = 2^32 mod p`.
const C32_FROM: u64 = 1 << 21;
/// Primes must be below this for the f64 reduction (`2p` and the FMA's value stay below `2^52`).
pub const HASH_PRIME_LIMIT: u64 = 1 << 51;
/// Primes must be below this for [`Kernels::engram_plain_rows`]: its remainder before the
/// correction, `v = y − q·p` in `[0, 2p)`, must fit 32 bits (module docs, "The fused kernel").
pub const FUSED_PRIME_LIMIT: u64 = 1 << 31;
/// The bits of `2^52` as f64: `bits(2^52 + r) = MAGIC + r` for an integer `0 <= r < 2^52`.
const MAGIC: u64 = 0x4330_0000_0000_0000;

/// Four columns' constants, laid out for one AVX2 vector (lanes past `C` are inert padding: a
/// valid prime whose results are never stored).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
struct ColVec {
    /// `f64(p)` per lane.
    p: [f64; 4],
    /// `fl(1 / p)` per lane.
    pinv: [f64; 4],
    /// `c ≡ 2^32 (mod p)` per lane (module docs).
    c: [f64; 4],
    /// `off − MAGIC` (wrapping) per lane.
    off: [u64; 4],
    /// `p` per lane as an integer (the fused kernel's `vpminud` correction).
    pi: [u64; 4],
    /// `vpermps` indices selecting each lane's order from the token's 4 hashes (2 per lane).
    idx: [u32; 8],
    /// The order slot (`n − 2`) of each lane.
    ord: [u32; 4],
}

/// One layer's per-column constants for the vector reduction, built once per call from its
/// primes and offsets ([`HashPlan::new`]).
#[derive(Clone, Debug)]
pub struct HashPlan {
    cols: usize,
    /// Heads per order `K`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    heads: usize,
    /// `K % 4 == 0` and every prime `>= 2^21` (so `c = 2^32` everywhere): each vector's lanes share
    /// one order and `X = hi · 2^32`, `s = X + lo` are computed once per order, not per vector
    /// (the AVX2 kernel's fast form; NEON builds its 2-lane vectors per pair anyway).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    uniform: bool,
    /// Every prime below [`FUSED_PRIME_LIMIT`] (the fused kernel's 32-bit correction).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    small: bool,
    vecs: Vec<ColVec>,
}

impl HashPlan {
    /// The plan for `heads` heads per order over `primes` / `offsets` (column order, `C =
    /// primes.len()` columns, orders `C / heads`); `None` when the layer falls outside the vector
    /// kernel's proven range: more than [`HASH_ORDERS`] orders, a prime `< 2` or `>=`
    /// [`HASH_PRIME_LIMIT`], mismatched lengths, or `heads == 0`.
    pub fn new(heads: usize, primes: &[u64], offsets: &[u64]) -> Option<Self> {
        let cols = primes.len();
        if heads == 0 || offsets.len() != cols || cols == 0 || !cols.is_multiple_of(heads) {
            return None;
        }
        if cols / heads > HASH_ORDERS || primes.iter().any(|&p| !(2..HASH_PRIME_LIMIT).contains(&p)) {
            return None;
        }
        let vecs = (0..cols.div_ceil(4))
            .map(|v| {
                let mut cv = ColVec {
                    p: [0.0; 4],
                    pinv: [0.0; 4],
                    c: [0.0; 4],
                    off: [0; 4],
                    pi: [0; 4],
                    idx: [0; 8],
                    ord: [0; 4],
                };
                for l in 0..4 {
                    let col = v * 4 + l;
                    // Padding lanes: prime 3, order 0, offset 0 (computed, never stored).
                    let (p, off, ord) = if col < cols {
                        (primes[col], offsets[col], (col / heads) as u32)
                    } else {
                        (3, 0, 0)
                    };
                    cv.p[l] = p as f64;
                    cv.pinv[l] = 1.0 / p as f64;
                    cv.c[l] = if p < C32_FROM {
                        ((1u64 << 32) % p) as f64
                    } else {
                        4_294_967_296.0
                    };
                    cv.off[l] = off.wrapping_sub(MAGIC);
                    cv.pi[l] = p;
                    cv.idx[2 * l] = 2 * ord;
                    cv.idx[2 * l + 1] = 2 * ord + 1;
                    cv.ord[l] = ord;
                }
                cv
            })
            .collect();
        let uniform = heads.is_multiple_of(4) && primes.iter().all(|&p| p >= C32_FROM);
        let small = primes.iter().all(|&p| p < FUSED_PRIME_LIMIT);
        Some(HashPlan {
            cols,
            heads,
            uniform,
            small,
            vecs,
        })
    }

    /// Columns `C`.
    pub fn columns(&self) -> usize {
        self.cols
    }
}

impl Kernels {
    /// Whether this table has a vector `engram_hash` reduction ([`Kernels::engram_rows`]): the
    /// AVX2+FMA kernel on x86-64 (the AVX-512 and AMX tables use it too), NEON on aarch64; the
    /// scalar table has none.
    pub fn has_engram_rows(&self) -> bool {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 | Isa::Amx => true,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => true,
            _ => false,
        }
    }

    /// Row ids of `T` tokens from their per-order hashes: `rows[t * C + col] = (h[t * 4 + o] mod
    /// p[col]) + off[col]` with `o` the order slot (`n − 2`) of column `col`, exact for every `u64`
    /// hash (module docs). `h` is `[T, 4]` (slots past `N − 1` are ignored), `rows` `[T, C]`.
    ///
    /// Returns false, writing nothing, when this table has no vector kernel
    /// ([`Kernels::has_engram_rows`]) or the lengths disagree (`T` is taken from `rows`).
    pub fn engram_rows(&self, plan: &HashPlan, h: &[u64], rows: &mut [i64]) -> bool {
        let c = plan.cols;
        if !self.has_engram_rows() || c == 0 || !rows.len().is_multiple_of(c) {
            return false;
        }
        let t = rows.len() / c;
        if h.len() != t * HASH_ORDERS {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: has_engram_rows() holds only for tables whose ISA `Kernels::for_isa` verified,
            // each of which includes AVX2 and FMA; `h` holds 4*t values, `rows` t*c, and the plan
            // has ceil(c/4) vectors of constants, which is what the kernel reads and writes.
            unsafe { rows_avx2(plan, h.as_ptr(), t, rows.as_mut_ptr()) };
            true
        }
        #[cfg(target_arch = "aarch64")]
        {
            // SAFETY: as above, for NEON (verified by `Kernels::for_isa(Isa::Neon)`).
            unsafe { rows_neon(plan, h.as_ptr(), t, rows.as_mut_ptr()) };
            true
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            let _ = (h, t);
            false
        }
    }
}

/// Largest `V'` (ids below it) for which [`Kernels::engram_plain_rows`] forms the 64-bit products
/// from two 32×32→64 multiplies (`w < 2^32`, so `w · m = w · lo(m) + (w · hi(m)) << 32` mod 2^64);
/// a larger vocabulary takes the three-multiply form.
pub const NARROW_VOCAB: u64 = 1 << 32;

impl Kernels {
    /// Whether [`Kernels::engram_plain_rows`] takes a layer with this plan and `n` multipliers:
    /// the AVX2 table (x86-64), a uniform plan ([`HashPlan`]: `K % 4 == 0`, every prime `>= 2^21`)
    /// whose primes are below [`FUSED_PRIME_LIMIT`] (every published layer: primes ≈ 16 M), and
    /// `n = N` with `N - 1` the plan's orders, `2 <= N <= 5`.
    pub fn has_engram_plain(&self, plan: &HashPlan, n: usize) -> bool {
        cfg!(target_arch = "x86_64")
            && self.has_engram_rows()
            && plan.uniform
            && plan.small
            && (2..=HASH_ORDERS + 1).contains(&n)
            && plan.cols == (n - 1) * plan.heads
    }

    /// `engram_hash` rows of the tokens `from..from + T` whose windows are plain (OPS.md §4 with no
    /// positions, no alive mask and `from >= N - 1`: `w_k(t) = ids[t - k]`), hash and reduction fused:
    /// 4 tokens per vector for the multiply-XOR (64-bit products from `vpmuludq` pieces, exact mod
    /// 2^64), their order hashes split once into the f64 halves of the module docs, then per token
    /// the uniform reduction (bitwise the values of [`Kernels::engram_rows`]). `mults` are the
    /// layer's `N` multipliers, `vocab` its `V'` (every id must lie in `[0, V')`, which the caller has
    /// validated: below [`NARROW_VOCAB`] the products take two multiplies, else three), `rows` is
    /// `[T, C]`.
    ///
    /// Returns false, writing nothing, when the table or layer is not one
    /// [`Kernels::has_engram_plain`] takes, `from < N - 1`, or the lengths disagree (`ids` must hold
    /// token `from + T - 1`).
    pub fn engram_plain_rows(
        &self,
        plan: &HashPlan,
        mults: &[u64],
        vocab: u64,
        ids: &[i64],
        from: usize,
        rows: &mut [i64],
    ) -> bool {
        let n = mults.len();
        if !self.has_engram_plain(plan, n) || from < n - 1 || !rows.len().is_multiple_of(plan.cols) {
            return false;
        }
        let t = rows.len() / plan.cols;
        if from.checked_add(t).is_none_or(|end| end > ids.len()) {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let narrow = vocab <= NARROW_VOCAB;
            // SAFETY: has_engram_plain() holds only for x86-64 tables that include AVX2 and FMA
            // (verified by `Kernels::for_isa`); the kernel reads ids[from + 1 - N .. from + t] (in
            // bounds: from >= N - 1, from + t <= ids.len()) and writes t * C row ids; the plan has
            // (N - 1) * K / 4 column vectors (uniform: C = (N - 1) K with K % 4 == 0).
            unsafe {
                let (ids, rows) = (ids.as_ptr(), rows.as_mut_ptr());
                match (n, narrow) {
                    (2, true) => plain_avx2::<2, false>(plan, mults, ids, from, t, rows),
                    (3, true) => plain_avx2::<3, false>(plan, mults, ids, from, t, rows),
                    (4, true) => plain_avx2::<4, false>(plan, mults, ids, from, t, rows),
                    (5, true) => plain_avx2::<5, false>(plan, mults, ids, from, t, rows),
                    (2, false) => plain_avx2::<2, true>(plan, mults, ids, from, t, rows),
                    (3, false) => plain_avx2::<3, true>(plan, mults, ids, from, t, rows),
                    (4, false) => plain_avx2::<4, true>(plan, mults, ids, from, t, rows),
                    _ => plain_avx2::<5, true>(plan, mults, ids, from, t, rows),
                }
            }
            true
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (vocab, ids, from, t);
            false
        }
    }
}

/// Per order and token of a 4-token group: the f64 halves of the order hash (`X = hi · 2^32`,
/// `L = 2^52 + lo`, `s = fl(X + lo)`, module docs), laid out for broadcast loads.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Halves {
    x: [f64; 4],
    lo52: [f64; 4],
    s: [f64; 4],
}

/// One vector of 4 columns of the fused kernel (module docs, "The fused kernel"): `x`, `lo52`,
/// `s` broadcast from one order hash; returns the 4 row ids.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn reduce_fused_avx2(
    cv: &ColVec,
    x: std::arch::x86_64::__m256d,
    lo52: std::arch::x86_64::__m256d,
    s: std::arch::x86_64::__m256d,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: the loads read 32-byte aligned fields of `cv`; AVX2 + FMA are enabled here.
    unsafe {
        let q = _mm256_floor_pd(_mm256_fmadd_pd(
            s,
            _mm256_load_pd(cv.pinv.as_ptr()),
            _mm256_set1_pd(-0.5),
        ));
        // 2^52 + v, v = y − q·p in [0, 2p): bits MAGIC + v, so the low 32 bits are v (p < 2^31).
        let a = _mm256_castpd_si256(_mm256_add_pd(
            _mm256_fnmadd_pd(q, _mm256_load_pd(cv.p.as_ptr()), x),
            lo52,
        ));
        // v − p wraps above v where v < p: the unsigned minimum is v mod p (high halves unchanged).
        let pi = _mm256_load_si256(cv.pi.as_ptr() as *const __m256i);
        let m = _mm256_min_epu32(a, _mm256_sub_epi32(a, pi));
        _mm256_add_epi64(m, _mm256_load_si256(cv.off.as_ptr() as *const __m256i))
    }
}

/// `w · m` mod 2^64 per u64 lane from 32×32→64 multiplies: `mv` holds `m`, `mh` holds `m >> 32`;
/// with `WIDE` false every `w` must be below 2^32 (its high half is not multiplied).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn mul64_avx2<const WIDE: bool>(
    w: std::arch::x86_64::__m256i,
    mv: std::arch::x86_64::__m256i,
    mh: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // w·m = lo(w)lo(m) + (lo(w)hi(m) + hi(w)lo(m)) 2^32 (mod 2^64); vpmuludq multiplies the low
    // 32 bits of each lane.
    let ll = _mm256_mul_epu32(w, mv);
    let mut cross = _mm256_mul_epu32(w, mh);
    if WIDE {
        cross = _mm256_add_epi64(cross, _mm256_mul_epu32(_mm256_srli_epi64::<32>(w), mv));
    }
    _mm256_add_epi64(ll, _mm256_slli_epi64::<32>(cross))
}

/// The fused kernel of [`Kernels::engram_plain_rows`] for `N` multipliers.
///
/// # Safety
/// AVX2 and FMA available; `plan` uniform with `N - 1` orders; `mults.len() == N`;
/// `ids[from + 1 - N .. from + t]` readable (`from >= N - 1`); `rows` holds `t * plan.cols`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plain_avx2<const N: usize, const WIDE: bool>(
    plan: &HashPlan,
    mults: &[u64],
    ids: *const i64,
    from: usize,
    t: usize,
    rows: *mut i64,
) {
    use std::arch::x86_64::*;
    let c = plan.cols;
    let per = plan.heads / 4;
    let mut mv = [_mm256_setzero_si256(); N];
    let mut mh = [_mm256_setzero_si256(); N];
    for k in 0..N {
        mv[k] = _mm256_set1_epi64x(mults[k] as i64);
        mh[k] = _mm256_set1_epi64x((mults[k] >> 32) as i64);
    }
    let low32 = _mm256_set1_epi64x(0xFFFF_FFFF);
    let magic = _mm256_set1_epi64x(MAGIC as i64);
    let two52 = _mm256_set1_pd(4_503_599_627_370_496.0);
    // bits(2^84 + hi·2^32) = bits(2^84) | hi for hi < 2^52 (the ulp of 2^84 is 2^32).
    let magic84 = _mm256_set1_epi64x(0x4530_0000_0000_0000);
    let two84 = _mm256_set1_pd(19_342_813_113_834_066_795_298_816.0);
    let mut halves = [Halves {
        x: [0.0; 4],
        lo52: [0.0; 4],
        s: [0.0; 4],
    }; HASH_ORDERS];
    let mut i = 0;
    while i < t {
        let g = (t - i).min(4);
        let t0 = from + i;
        if g == 4 {
            // SAFETY: tokens t0..t0 + 4 lie below from + t, and t0 - k >= from - (N - 1) >= 0.
            unsafe {
                let mut h = _mm256_setzero_si256();
                for k in 0..N {
                    let w = _mm256_loadu_si256(ids.add(t0 - k) as *const __m256i);
                    h = _mm256_xor_si256(h, mul64_avx2::<WIDE>(w, mv[k], mh[k]));
                    if k >= 1 {
                        let hi = _mm256_srli_epi64::<32>(h);
                        let x = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(hi, magic84)), two84);
                        // L = 2^52 + lo (bits MAGIC | lo), lo exact as L − 2^52.
                        let lo52 = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(h, low32), magic));
                        let lo = _mm256_sub_pd(lo52, two52);
                        let hv = &mut halves[k - 1];
                        _mm256_store_pd(hv.x.as_mut_ptr(), x);
                        _mm256_store_pd(hv.lo52.as_mut_ptr(), lo52);
                        _mm256_store_pd(hv.s.as_mut_ptr(), _mm256_add_pd(x, lo));
                    }
                }
            }
        } else {
            // The last 1-3 tokens: the same values from scalar code (exact u64 → f64 conversions
            // of halves below 2^32, the same rounding of X + lo).
            for l in 0..g {
                let tt = t0 + l;
                // SAFETY: tt - k >= from - (N - 1) >= 0 and tt < from + t.
                let mut h = unsafe { *ids.add(tt) } as u64;
                h = h.wrapping_mul(mults[0]);
                for k in 1..N {
                    // SAFETY: as above.
                    h ^= (unsafe { *ids.add(tt - k) } as u64).wrapping_mul(mults[k]);
                    let hv = &mut halves[k - 1];
                    let lo = (h & 0xFFFF_FFFF) as f64;
                    hv.x[l] = ((h >> 32) as f64) * 4_294_967_296.0;
                    hv.lo52[l] = lo + 4_503_599_627_370_496.0;
                    hv.s[l] = hv.x[l] + lo;
                }
            }
        }
        for l in 0..g {
            // SAFETY: token i + l < t, so its C row ids are in bounds; the plan has (N - 1) * per
            // column vectors (uniform plan, C = (N - 1) K).
            unsafe {
                let out = rows.add((i + l) * c);
                for (o, hv) in halves.iter().enumerate().take(N - 1) {
                    let xb = _mm256_broadcast_sd(&hv.x[l]);
                    let lb = _mm256_broadcast_sd(&hv.lo52[l]);
                    let sb = _mm256_broadcast_sd(&hv.s[l]);
                    for v in o * per..(o + 1) * per {
                        let r = reduce_fused_avx2(plan.vecs.get_unchecked(v), xb, lb, sb);
                        _mm256_storeu_si256(out.add(v * 4) as *mut __m256i, r);
                    }
                }
            }
        }
        i += g;
    }
}

/// One vector of 4 columns: the reduction of the module docs on the lanes `cv.idx` picks from the
/// token's `hi` / `lo` doubles (`hif`, `lof`: 4 f64 viewed as 8 f32 for `vpermps`); returns the 4
/// row ids.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn reduce_avx2(
    cv: &ColVec,
    hif: std::arch::x86_64::__m256,
    lof: std::arch::x86_64::__m256,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: every load reads a 32-byte field of `cv` (ColVec is 32-byte aligned, its array
    // fields are 32 bytes at multiples of 32); the intrinsics need AVX2 + FMA, enabled here.
    unsafe {
        let idx = _mm256_loadu_si256(cv.idx.as_ptr() as *const __m256i);
        let hi = _mm256_castps_pd(_mm256_permutevar8x32_ps(hif, idx));
        let lo = _mm256_castps_pd(_mm256_permutevar8x32_ps(lof, idx));
        let p = _mm256_load_pd(cv.p.as_ptr());
        let x = _mm256_mul_pd(hi, _mm256_load_pd(cv.c.as_ptr()));
        let s = _mm256_add_pd(x, lo);
        let q = _mm256_floor_pd(_mm256_fmadd_pd(
            s,
            _mm256_load_pd(cv.pinv.as_ptr()),
            _mm256_set1_pd(-0.5),
        ));
        let r = _mm256_add_pd(_mm256_fnmadd_pd(q, p, x), lo);
        finish_avx2(cv, r, p)
    }
}

/// The tail of the reduction: `r` in `[0, 2p)` (exact integers) → `r mod p + off` as `u64` lanes.
/// `r − p` is exact; its sign picks `r` (when `r < p`) or `r − p` (`r == p` gives `+0`).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn finish_avx2(
    cv: &ColVec,
    r: std::arch::x86_64::__m256d,
    p: std::arch::x86_64::__m256d,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let d = _mm256_sub_pd(r, p);
    let r = _mm256_blendv_pd(d, r, d);
    let bits = _mm256_castpd_si256(_mm256_add_pd(r, _mm256_set1_pd(4_503_599_627_370_496.0)));
    // SAFETY: `cv.off` is a 32-byte aligned field of 4 u64.
    _mm256_add_epi64(bits, unsafe { _mm256_load_si256(cv.off.as_ptr() as *const __m256i) })
}

/// One vector of 4 columns of a uniform plan ([`HashPlan`]): all lanes share one order, whose
/// `X = hi · 2^32`, `lo` and `s = X + lo` come broadcast.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn reduce_uniform_avx2(
    cv: &ColVec,
    x: std::arch::x86_64::__m256d,
    lo: std::arch::x86_64::__m256d,
    s: std::arch::x86_64::__m256d,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: the loads read 32-byte aligned fields of `cv`; AVX2 + FMA are enabled here.
    unsafe {
        let p = _mm256_load_pd(cv.p.as_ptr());
        let q = _mm256_floor_pd(_mm256_fmadd_pd(
            s,
            _mm256_load_pd(cv.pinv.as_ptr()),
            _mm256_set1_pd(-0.5),
        ));
        let r = _mm256_add_pd(_mm256_fnmadd_pd(q, p, x), lo);
        finish_avx2(cv, r, p)
    }
}

/// The AVX2 kernel: per token, the 4 hashes split into `hi` / `lo` doubles once, then per vector
/// of 4 columns a lane permute and the reduction of the module docs.
///
/// # Safety
/// AVX2 and FMA available; `h` holds `4 * t` values, `rows` `t * plan.cols`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(plan: &HashPlan, h: *const u64, t: usize, rows: *mut i64) {
    use std::arch::x86_64::*;
    let c = plan.cols;
    let full = c / 4;
    let rem = c % 4;
    let magic = _mm256_set1_epi64x(MAGIC as i64);
    let two52 = _mm256_set1_pd(4_503_599_627_370_496.0);
    let low32 = _mm256_set1_epi64x(0xFFFF_FFFF);
    // Lanes < rem are stored in the last, partial vector.
    let tail_mask = _mm256_setr_epi64x(-((rem > 0) as i64), -((rem > 1) as i64), -((rem > 2) as i64), 0);
    for i in 0..t {
        // SAFETY: token i's 4 hashes and C row ids are in bounds (caller's contract); every
        // column vector v < ceil(c/4) exists in the plan; the tail store is masked to the row.
        unsafe {
            let hv = _mm256_loadu_si256(h.add(i * 4) as *const __m256i);
            // hi, lo < 2^32 to f64 exactly: bits(2^52 + v) − 2^52.
            let hif = _mm256_sub_pd(
                _mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64::<32>(hv), magic)),
                two52,
            );
            let lof = _mm256_sub_pd(
                _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(hv, low32), magic)),
                two52,
            );
            let out = rows.add(i * c);
            if plan.uniform {
                // c = 2^32 in every lane and K % 4 == 0 (so rem == 0): per order, broadcast
                // X = hi · 2^32, lo and s = X + lo, then K / 4 vectors of that order.
                let x = _mm256_mul_pd(hif, _mm256_set1_pd(4_294_967_296.0));
                let s = _mm256_add_pd(x, lof);
                let (mut xa, mut la, mut sa) = ([0f64; 4], [0f64; 4], [0f64; 4]);
                _mm256_storeu_pd(xa.as_mut_ptr(), x);
                _mm256_storeu_pd(la.as_mut_ptr(), lof);
                _mm256_storeu_pd(sa.as_mut_ptr(), s);
                let per = plan.heads / 4;
                for o in 0..full / per {
                    let xb = _mm256_broadcast_sd(&xa[o]);
                    let lb = _mm256_broadcast_sd(&la[o]);
                    let sb = _mm256_broadcast_sd(&sa[o]);
                    for v in o * per..(o + 1) * per {
                        let r = reduce_uniform_avx2(&plan.vecs[v], xb, lb, sb);
                        _mm256_storeu_si256(out.add(v * 4) as *mut __m256i, r);
                    }
                }
                continue;
            }
            let (hif, lof) = (_mm256_castpd_ps(hif), _mm256_castpd_ps(lof));
            for v in 0..full {
                let r = reduce_avx2(&plan.vecs[v], hif, lof);
                _mm256_storeu_si256(out.add(v * 4) as *mut __m256i, r);
            }
            if rem > 0 {
                let r = reduce_avx2(&plan.vecs[full], hif, lof);
                _mm256_maskstore_epi64(out.add(full * 4), tail_mask, r);
            }
        }
    }
}

/// The NEON kernel: the same reduction, two columns per vector.
///
/// # Safety
/// NEON available; `h` holds `4 * t` values, `rows` `t * plan.cols`.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn rows_neon(plan: &HashPlan, h: *const u64, t: usize, rows: *mut i64) {
    use std::arch::aarch64::*;
    let c = plan.cols;
    let half = vdupq_n_f64(-0.5);
    for i in 0..t {
        // SAFETY: token i's 4 hashes and C row ids are in bounds (caller's contract); column
        // pairs past C are skipped and a lone last column is stored as one lane.
        unsafe {
            let hs = std::slice::from_raw_parts(h.add(i * 4), 4);
            // hi, lo < 2^32: exact in f64 (scalar conversions, then lanes picked by order).
            let hif: [f64; 4] = std::array::from_fn(|o| (hs[o] >> 32) as f64);
            let lof: [f64; 4] = std::array::from_fn(|o| (hs[o] & 0xFFFF_FFFF) as f64);
            let out = rows.add(i * c) as *mut u64;
            for (v, cv) in plan.vecs.iter().enumerate() {
                for pair in 0..2 {
                    let col = v * 4 + pair * 2;
                    if col >= c {
                        break;
                    }
                    let (o0, o1) = (cv.ord[pair * 2] as usize, cv.ord[pair * 2 + 1] as usize);
                    let hi = vcombine_f64(vdup_n_f64(hif[o0]), vdup_n_f64(hif[o1]));
                    let lo = vcombine_f64(vdup_n_f64(lof[o0]), vdup_n_f64(lof[o1]));
                    let p = vld1q_f64(cv.p.as_ptr().add(pair * 2));
                    let x = vmulq_f64(hi, vld1q_f64(cv.c.as_ptr().add(pair * 2)));
                    let s = vaddq_f64(x, lo);
                    let q = vrndmq_f64(vfmaq_f64(half, s, vld1q_f64(cv.pinv.as_ptr().add(pair * 2))));
                    let r = vaddq_f64(vfmsq_f64(x, q, p), lo);
                    let ge = vcgeq_f64(r, p);
                    let r = vsubq_f64(r, vreinterpretq_f64_u64(vandq_u64(ge, vreinterpretq_u64_f64(p))));
                    let bits = vreinterpretq_u64_f64(vaddq_f64(r, vdupq_n_f64(4_503_599_627_370_496.0)));
                    let res = vaddq_u64(bits, vld1q_u64(cv.off.as_ptr().add(pair * 2)));
                    if col + 1 < c {
                        vst1q_u64(out.add(col), res);
                    } else {
                        *out.add(col) = vgetq_lane_u64::<0>(res);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Tables with a vector kernel on this machine.
    fn vector_tables() -> Vec<&'static Kernels> {
        Isa::all_available()
            .into_iter()
            .filter_map(Kernels::for_isa)
            .filter(|k| k.has_engram_rows())
            .collect()
    }

    /// Edge hashes for prime `p`: around 0, multiples of `p`, `2^32`, `2^53`, `2^63` and `u64::MAX`.
    fn edge_hashes(p: u64) -> Vec<u64> {
        let mut v = vec![
            0,
            1,
            p - 1,
            p,
            p + 1,
            2 * p - 1,
            2 * p,
            u64::MAX,
            u64::MAX - 1,
            i64::MAX as u64,
        ];
        for base in [
            1u64 << 32,
            1 << 53,
            1 << 63,
            (1 << 63) - 1,
            u64::MAX / p * p,
            (1 << 52) / p * p,
        ] {
            for d in [-2i64, -1, 0, 1, 2] {
                v.push(base.wrapping_add(d as u64));
            }
        }
        // Multiples of p near the top of each range (where the quotient estimate is least exact).
        for top in [1u64 << 32, 1 << 40, 1 << 53, 1 << 63, u64::MAX] {
            let k = top / p;
            for kk in [k.saturating_sub(1), k] {
                let m = kk.wrapping_mul(p);
                v.extend([m.wrapping_sub(1), m, m.wrapping_add(1), m.wrapping_add(p - 1)]);
            }
        }
        v
    }

    /// Primes on both sides of 2^21, the V4.1 ones, small ones and the largest below 2^51.
    const PRIMES: [u64; 14] = [
        2,
        3,
        11,
        65_521,
        2_097_143,     // largest prime < 2^21: c = 2^32 mod p
        2_097_169,     // smallest prime > 2^21: c = 2^32
        16_000_057,    // V4.1 layer 1, n = 2, head 0
        16_000_889,    // V4.1 layer 14, n = 4, head 7
        4_294_967_291, // largest prime < 2^32
        4_294_967_311, // smallest prime > 2^32
        1_000_000_007,
        (1 << 40) - 87,
        (1 << 50) - 27,
        (1 << 51) - 129, // largest prime below HASH_PRIME_LIMIT
    ];

    #[test]
    fn primes_in_the_table_are_prime_and_in_range() {
        for p in PRIMES {
            assert!(moehal_core::engram::is_prime(p), "{p}");
            assert!(p < HASH_PRIME_LIMIT);
        }
    }

    /// Runs every vector table on the columns `primes` (`heads` per order) and compares `rows` with
    /// `h % p + off` for every token and column.
    fn check(hashes: &[u64], primes: &[u64], heads: usize) {
        let offsets: Vec<u64> = primes
            .iter()
            .scan(0u64, |acc, &p| {
                let o = *acc;
                *acc += p;
                Some(o)
            })
            .collect();
        let plan = HashPlan::new(heads, primes, &offsets).expect("in range");
        let c = primes.len();
        let orders = c / heads;
        // Token i: slot o holds hashes[(i * 4 + o) % len], so every hash meets every column.
        let t = hashes.len();
        let h: Vec<u64> = (0..t * 4).map(|j| hashes[j % hashes.len()]).collect();
        for k in vector_tables() {
            let mut rows = vec![-1i64; t * c];
            assert!(k.engram_rows(&plan, &h, &mut rows));
            for i in 0..t {
                for col in 0..c {
                    let o = col / heads;
                    assert!(o < orders);
                    let hv = h[i * 4 + o];
                    let want = (hv % primes[col] + offsets[col]) as i64;
                    assert_eq!(
                        rows[i * c + col],
                        want,
                        "{:?}: h = {hv}, p = {}, column {col}",
                        k.isa(),
                        primes[col]
                    );
                }
            }
        }
    }

    #[test]
    fn equals_u64_remainder_on_edge_values() {
        for p in PRIMES {
            // One column of this prime.
            check(&edge_hashes(p), &[p], 1);
        }
        // All primes as the columns of one call: 2 orders x 7 heads.
        let all: Vec<u64> = PRIMES.iter().flat_map(|&p| edge_hashes(p)).collect();
        check(&all, &PRIMES, 7);
        // Uniform plans (K % 4 == 0, every prime >= 2^21): the per-order broadcast path.
        check(&all, &PRIMES[5..13], 4);
        check(&all, &PRIMES[6..14], 8);
    }

    #[test]
    fn equals_u64_remainder_on_random_values() {
        let mut rng = ChaCha8Rng::seed_from_u64(0xE4A5);
        for bits in [8u32, 24, 32, 33, 40, 52, 53, 54, 62, 63, 64] {
            let hashes: Vec<u64> = (0..512)
                .map(|_| {
                    let v: u64 = rng.gen();
                    if bits == 64 {
                        v
                    } else {
                        v & ((1u64 << bits) - 1)
                    }
                })
                .collect();
            check(&hashes, &PRIMES, 7);
            check(&hashes, &PRIMES[..12], 3);
            check(&hashes, &PRIMES[4..9], 5);
            check(&hashes, &PRIMES[5..13], 4);
            check(&hashes, &PRIMES[6..14], 8);
        }
    }

    #[test]
    fn every_column_count_and_order_layout() {
        // C = 1..=32 with 1..=4 orders: partial last vectors, orders straddling vectors, uniform plans.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let hashes: Vec<u64> = (0..64).map(|_| rng.gen::<u64>() >> 1).collect();
        let pool: Vec<u64> = (16_000_000u64..)
            .filter(|&p| moehal_core::engram::is_prime(p))
            .take(32)
            .collect();
        for heads in [1, 2, 3, 4, 5, 8] {
            for orders in 1..=4 {
                check(&hashes, &pool[..heads * orders], heads);
            }
        }
    }

    #[test]
    fn plan_refuses_out_of_range_layers() {
        assert!(HashPlan::new(1, &[HASH_PRIME_LIMIT + 1], &[0]).is_none());
        assert!(HashPlan::new(1, &[1], &[0]).is_none());
        assert!(
            HashPlan::new(1, &[3, 5, 7, 11, 13], &[0, 3, 8, 15, 26]).is_none(),
            "5 orders"
        );
        assert!(
            HashPlan::new(2, &[3, 5, 7], &[0, 3, 8]).is_none(),
            "C not a multiple of K"
        );
        assert!(HashPlan::new(0, &[3], &[0]).is_none());
        assert!(HashPlan::new(1, &[3], &[]).is_none());
        let small = HashPlan::new(4, &[3, 5, 7, 11, 13, 17, 19, 23], &[0; 8]).unwrap();
        assert!(!small.uniform, "primes below 2^21 take c = 2^32 mod p");
        let big = &PRIMES[5..13];
        assert!(HashPlan::new(4, big, &[0; 8]).unwrap().uniform);
        assert!(HashPlan::new(8, big, &[0; 8]).unwrap().uniform);
        assert!(!HashPlan::new(2, big, &[0; 8]).unwrap().uniform, "K % 4 != 0");
    }

    /// `(h mod p) + off` of OPS.md §4 for the plain window of token `t`, scalar.
    fn scalar_rows(ids: &[i64], mults: &[u64], primes: &[u64], offsets: &[u64], heads: usize, t: usize) -> Vec<i64> {
        let mut h = (ids[t] as u64).wrapping_mul(mults[0]);
        let mut row = Vec::new();
        for (k, &m) in mults.iter().enumerate().skip(1) {
            h ^= (ids[t - k] as u64).wrapping_mul(m);
            for j in 0..heads {
                let col = (k - 1) * heads + j;
                row.push((h % primes[col] + offsets[col]) as i64);
            }
        }
        row
    }

    /// The fused plain-window kernel equals the scalar hash and `%` for every N, both product
    /// forms (ids below 2^32 and full 63-bit ids with random 64-bit multipliers, so products wrap),
    /// 4-token groups with 0-3 tokens left over and starts past N - 1.
    #[test]
    fn fused_plain_kernel_equals_scalar() {
        let mut rng = ChaCha8Rng::seed_from_u64(0xF05E);
        let pool: Vec<u64> = (16_000_000u64..)
            .filter(|&p| moehal_core::engram::is_prime(p))
            .take(32)
            // The ends of the fused kernel's range: the smallest prime above 2^21, the largest
            // below 2^31 (2^31 - 1) and one just below it.
            .chain([(1 << 21) + 17, (1 << 31) - 1, (1 << 31) - 19])
            .collect();
        assert!(pool
            .iter()
            .all(|&p| moehal_core::engram::is_prime(p) && p < FUSED_PRIME_LIMIT));
        let mut ran = 0;
        for n in 2..=5usize {
            for heads in [4usize, 8] {
                let cols = (n - 1) * heads;
                let mut primes: Vec<u64> = pool[..cols - 1].to_vec();
                // One prime from the ends of the uniform range in every layer.
                primes.push(pool[32 + n % 3]);
                let offsets: Vec<u64> = primes
                    .iter()
                    .scan(0u64, |a, &p| {
                        let o = *a;
                        *a += p;
                        Some(o)
                    })
                    .collect();
                let plan = HashPlan::new(heads, &primes, &offsets).unwrap();
                assert!(plan.uniform);
                for (vocab, wide) in [(129_280u64, false), (NARROW_VOCAB, false), (1 << 62, true)] {
                    let mults: Vec<u64> = (0..n)
                        .map(|_| {
                            if wide {
                                rng.gen::<u64>() | 1
                            } else {
                                rng.gen::<u64>() >> 13 | 1
                            }
                        })
                        .collect();
                    let len = 40;
                    let mut ids: Vec<i64> = (0..len).map(|_| rng.gen_range(0..vocab) as i64).collect();
                    // Edge ids: 0, V' - 1, and (wide) the largest i64.
                    ids[n] = 0;
                    ids[n + 1] = (vocab - 1) as i64;
                    if wide {
                        ids[n + 2] = i64::MAX;
                    }
                    for k in Isa::all_available().into_iter().filter_map(Kernels::for_isa) {
                        if !k.has_engram_plain(&plan, n) {
                            continue;
                        }
                        ran += 1;
                        for from in [n - 1, n, n + 3] {
                            for t in 0..=13usize {
                                let mut rows = vec![-1i64; t * cols];
                                assert!(k.engram_plain_rows(&plan, &mults, vocab, &ids, from, &mut rows));
                                for i in 0..t {
                                    assert_eq!(
                                        rows[i * cols..(i + 1) * cols],
                                        scalar_rows(&ids, &mults, &primes, &offsets, heads, from + i)[..],
                                        "{:?} N {n} K {heads} V' {vocab} from {from} T {t} token {i}",
                                        k.isa()
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        let x86_avx2 = Isa::all_available()
            .into_iter()
            .filter_map(Kernels::for_isa)
            .any(|k| cfg!(target_arch = "x86_64") && k.has_engram_rows());
        assert_eq!(ran > 0, x86_avx2, "the kernel ran wherever this machine has it");
    }

    #[test]
    fn fused_plain_kernel_declines_what_it_does_not_take() {
        let primes: Vec<u64> = (16_000_000u64..)
            .filter(|&p| moehal_core::engram::is_prime(p))
            .take(8)
            .collect();
        let offsets = vec![0u64; 8];
        let ids = vec![1i64; 16];
        let uniform = HashPlan::new(4, &primes, &offsets).unwrap();
        let mixed = HashPlan::new(2, &primes, &offsets).unwrap();
        let mut big_primes = primes.clone();
        big_primes[7] = FUSED_PRIME_LIMIT + 11; // 2^31 + 11, a prime
        assert!(moehal_core::engram::is_prime(big_primes[7]));
        let big = HashPlan::new(4, &big_primes, &offsets).unwrap();
        for k in Isa::all_available().into_iter().filter_map(Kernels::for_isa) {
            let mut rows = vec![-7i64; 8 * 2];
            assert!(!k.has_engram_plain(&mixed, 5), "K % 4 != 0");
            assert!(!k.has_engram_plain(&big, 3), "a prime >= 2^31");
            assert!(!k.engram_plain_rows(&big, &[1; 3], 99, &ids, 4, &mut rows));
            assert!(!k.engram_plain_rows(&mixed, &[1; 5], 99, &ids, 4, &mut rows));
            assert!(
                !k.engram_plain_rows(&uniform, &[1; 4], 99, &ids, 3, &mut rows),
                "N - 1 != orders"
            );
            assert!(
                !k.engram_plain_rows(&uniform, &[1; 3], 99, &ids, 1, &mut rows),
                "from < N - 1"
            );
            assert!(
                !k.engram_plain_rows(&uniform, &[1; 3], 99, &ids, 15, &mut rows),
                "ids end at 16"
            );
            assert!(
                !k.engram_plain_rows(&uniform, &[1; 3], 99, &ids, 2, &mut rows[..9]),
                "9 % C != 0"
            );
            assert!(rows.iter().all(|&r| r == -7));
            let took = k.engram_plain_rows(&uniform, &[1; 3], 99, &ids, 14, &mut rows);
            assert_eq!(took, cfg!(target_arch = "x86_64") && k.has_engram_rows());
        }
    }

    #[test]
    fn wrong_lengths_write_nothing() {
        let plan = HashPlan::new(1, &[3, 5], &[0, 3]).unwrap();
        for k in Isa::all_available().into_iter().filter_map(Kernels::for_isa) {
            let mut rows = vec![-7i64; 4];
            assert!(!k.engram_rows(&plan, &[1; 4], &mut rows), "2 tokens need 8 hashes");
            assert!(
                !k.engram_rows(&plan, &[1; 8], &mut rows[..3]),
                "3 is not a multiple of C"
            );
            assert!(rows.iter().all(|&r| r == -7));
        }
    }
}
