//! AMX (Advanced Matrix Extensions) tile microkernels: detection and the safe wrappers around the C
//! kernels of `csrc/amx.c` (stable Rust has no AMX intrinsics; `build.rs` compiles that file with
//! `-mamx-tile -mamx-bf16 -mamx-int8` on x86-64 targets only, and sets `cfg(moehal_amx_kernels)` when
//! it succeeds; without it no [`Amx`] value can exist).
//!
//! Detection, once per process ([`Amx::get`]): CPUID leaf 7 sub-leaf 0 must report AMX-TILE (EDX bit
//! 24), AMX-BF16 (bit 22) and AMX-INT8 (bit 25) (Intel SDM vol. 2A, "CPUID"), and Linux must grant
//! this process the tile data state: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` then
//! `ARCH_GET_XCOMP_PERM` showing bit 18 (kernel Documentation/arch/x86/xstate.rst). Any failure leaves
//! [`Amx::get`] at `None` and [`Amx::status`] says why; the callers then use the AVX-512 kernels.
//!
//! An [`Amx`] value is the proof that the tile instructions may run, so the block functions take it
//! by value and check only slice bounds. [`TileEngine`] runs the same block operations either on the
//! hardware or in a portable model of the instructions (`TDPBF16PS` as measured on Sapphire Rapids,
//! see [`TileEngine::Emulated`]; the Intel SDM pseudocode of `TDPBSSD`), so the blocking, staging and padding code above the kernels is tested on every machine,
//! and the hardware kernels wherever AMX exists.

/// An uninhabited type: on targets without AMX no [`Amx`] value can exist.
#[cfg(not(moehal_amx_kernels))]
#[derive(Clone, Copy, Debug)]
enum Never {}

/// Proof that AMX-TILE/BF16/INT8 are present and granted to this process. Obtain with [`Amx::get`].
#[derive(Clone, Copy, Debug)]
pub struct Amx {
    #[cfg(moehal_amx_kernels)]
    _p: (),
    #[cfg(not(moehal_amx_kernels))]
    _p: Never,
}

#[cfg(moehal_amx_kernels)]
mod ffi {
    extern "C" {
        pub fn moehal_amx_bf16_block(
            a: *const u8,
            lda: usize,
            mt: i32,
            b: *const u8,
            ldb: usize,
            bk: usize,
            bj: usize,
            nt: i32,
            kblocks: usize,
            c: *mut u8,
            ldc: usize,
            pfd: usize,
            nx: *const u8,
            nx_lines: usize,
        );
        pub fn moehal_amx_s8_block(
            a: *const u8,
            lda: usize,
            mt: i32,
            b: *const u8,
            ldb: usize,
            bk: usize,
            bj: usize,
            nt: i32,
            kblocks: usize,
            c: *mut u8,
            ldc: usize,
            pfd: usize,
            nx: *const u8,
            nx_lines: usize,
        );
    }
}

#[cfg(moehal_amx_kernels)]
fn detect() -> Result<(), String> {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // SAFETY: CPUID is present on every x86-64 CPU; leaf 7 is read only if leaf 0 reports it.
    #[allow(unused_unsafe)]
    let max = unsafe { __cpuid(0) }.eax;
    if max < 7 {
        return Err("CPUID leaf 7 absent".into());
    }
    // SAFETY: as above, leaf 7 exists.
    #[allow(unused_unsafe)]
    let edx = unsafe { __cpuid_count(7, 0) }.edx;
    let (tile, bf16, int8) = (edx >> 24 & 1 == 1, edx >> 22 & 1 == 1, edx >> 25 & 1 == 1);
    if !(tile && bf16 && int8) {
        return Err(format!(
            "CPU lacks AMX (cpuid: amx-tile {tile}, amx-bf16 {bf16}, amx-int8 {int8})"
        ));
    }
    if !(std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")) {
        return Err("AMX present but AVX-512 absent (the AMX path needs the avx512 table)".into());
    }
    const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these codes only changes/reads this process's xstate permissions.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
    if r != 0 {
        return Err(format!(
            "arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut mask: u64 = 0;
    // SAFETY: ARCH_GET_XCOMP_PERM writes one u64 through the pointer, which is valid.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &mut mask as *mut u64) };
    if r != 0 || mask >> XFEATURE_XTILEDATA & 1 == 0 {
        return Err(format!("tile data not granted (xcomp perm mask {mask:#x}, rc {r})"));
    }
    Ok(())
}

#[cfg(not(moehal_amx_kernels))]
fn detect() -> Result<(), String> {
    if cfg!(target_arch = "x86_64") {
        Err("this build has no AMX kernels (the C compiler could not build csrc/amx.c with -mamx-*)".into())
    } else {
        Err(format!("AMX is x86-64 only (target {})", std::env::consts::ARCH))
    }
}

impl Amx {
    /// Whether AMX may run in this process, and if not, why (detected once, then cached).
    pub fn status() -> &'static Result<(), String> {
        static STATUS: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        STATUS.get_or_init(detect)
    }

    /// The proof value if AMX may run here (see [`Amx::status`]).
    pub fn get() -> Option<Amx> {
        #[cfg(moehal_amx_kernels)]
        {
            Amx::status().as_ref().ok().map(|_| Amx { _p: () })
        }
        #[cfg(not(moehal_amx_kernels))]
        {
            None
        }
    }
}

/// Rows and columns of one output block.
pub const BLOCK: usize = 32;

fn check_block(
    a_len: usize,
    lda: usize,
    mt: usize,
    b_len: usize,
    ldb: usize,
    bk: usize,
    nt: usize,
    kb: usize,
    step: usize,
    c_len: usize,
) {
    assert!((1..=2).contains(&mt) && (1..=2).contains(&nt), "mt/nt must be 1 or 2");
    assert!(c_len >= BLOCK * BLOCK, "c must hold a 32x32 block");
    if kb > 0 {
        let a_need = (16 * mt - 1).checked_mul(lda).and_then(|v| v.checked_add(kb * step));
        assert!(a_need.is_some_and(|n| n <= a_len), "A block out of bounds");
        let b_need = (kb - 1).checked_mul(bk).and_then(|v| v.checked_add(15 * ldb + nt * 16));
        assert!(b_need.is_some_and(|n| n <= b_len), "B block out of bounds");
    }
}

impl Amx {
    /// One bf16 output block: `c[i*32 + j] = sum_{p < 16*kblocks} (a(i,2p) b(p,j).lo + a(i,2p+1)
    /// b(p,j).hi)` in f32 for `i < 16*mt`, `j < 16*nt`, where `a(i, k) = a[i*lda + k]` (bf16 bits) and
    /// `b(p, j) = b[(p/16)*bk + (p%16)*ldb + j]` holds the bf16 pair (k = 2p in the low half, 2p+1 in
    /// the high half; the VNNI layout of `tdpbf16ps`). Strides are in elements. Products are exact,
    /// sums f32 in the hardware's order; subnormal inputs and results are flushed to zero. Entries of
    /// `c` outside the computed block are left as they were.
    ///
    /// Panics if `mt`/`nt` are not 1 or 2, `c` holds fewer than 32*32 values, or the slices are too
    /// short for the block (internal bugs: the callers size them).
    pub fn bf16_block(
        self,
        a: &[u16],
        lda: usize,
        mt: usize,
        b: &[u32],
        ldb: usize,
        bk: usize,
        nt: usize,
        kblocks: usize,
        c: &mut [f32],
    ) {
        self.bf16_block_pf(a, lda, mt, b, ldb, bk, nt, kblocks, c, 0, &[])
    }

    /// [`Amx::bf16_block`] that also prefetches the A rows `pfd` K steps (of 32 bf16) ahead into L1
    /// (`pfd` 0: none). A hint for A read from memory once (the in-place weights of the NK
    /// orientation); results are the same for any `pfd`. The cache lines of `next` (memory the caller
    /// reads next, e.g. the following task's weights) are prefetched into L2, spread over the K steps
    /// (empty: none).
    pub fn bf16_block_pf(
        self,
        a: &[u16],
        lda: usize,
        mt: usize,
        b: &[u32],
        ldb: usize,
        bk: usize,
        nt: usize,
        kblocks: usize,
        c: &mut [f32],
        pfd: usize,
        next: &[u16],
    ) {
        check_block(a.len(), lda, mt, b.len(), ldb, bk, nt, kblocks, 32, c.len());
        #[cfg(moehal_amx_kernels)]
        // SAFETY: `self` proves AMX is present and granted; check_block bounds every tile row read
        // (A: 16*mt rows of kblocks*64 bytes, B: 16 rows of nt*64 bytes per K step) and C (32x32);
        // the kernel prefetches only A rows of K steps below `kblocks` (and a prefetch never faults).
        unsafe {
            ffi::moehal_amx_bf16_block(
                a.as_ptr() as *const u8,
                lda * 2,
                mt as i32,
                b.as_ptr() as *const u8,
                ldb * 4,
                bk * 4,
                64,
                nt as i32,
                kblocks,
                c.as_mut_ptr() as *mut u8,
                BLOCK * 4,
                pfd,
                next.as_ptr() as *const u8,
                next.len() * 2 / 64,
            )
        };
        #[cfg(not(moehal_amx_kernels))]
        {
            let _ = (pfd, next);
            match self._p {}
        }
    }

    /// One int8 output block: `c[i*32 + j] = sum_{p < 16*kblocks} sum_{q < 4} a(i, 4p+q) * b(p,j)[q]`
    /// in wrapping i32 for `i < 16*mt`, `j < 16*nt`, where `a(i, k) = a[i*lda + k]` and `b(p, j) =
    /// b[(p/16)*bk + (p%16)*ldb + j]` holds four signed bytes (k = 4p + q in byte q, little-endian: the
    /// VNNI layout of `tdpbssd`). Strides are in elements.
    ///
    /// Panics as [`Amx::bf16_block`].
    pub fn s8_block(
        self,
        a: &[i8],
        lda: usize,
        mt: usize,
        b: &[u32],
        ldb: usize,
        bk: usize,
        nt: usize,
        kblocks: usize,
        c: &mut [i32],
    ) {
        check_block(a.len(), lda, mt, b.len(), ldb, bk, nt, kblocks, 64, c.len());
        #[cfg(moehal_amx_kernels)]
        // SAFETY: as bf16_block; K steps are 64 bytes of A as well.
        unsafe {
            ffi::moehal_amx_s8_block(
                a.as_ptr() as *const u8,
                lda,
                mt as i32,
                b.as_ptr() as *const u8,
                ldb * 4,
                bk * 4,
                64,
                nt as i32,
                kblocks,
                c.as_mut_ptr() as *mut u8,
                BLOCK * 4,
                0,
                std::ptr::null(),
                0,
            )
        };
        #[cfg(not(moehal_amx_kernels))]
        match self._p {}
    }
}

impl Amx {
    /// The epilogue of one bf16 output row of a 32x32 f32 block `c` (as [`Amx::bf16_block`] writes
    /// it): `dst[j] = bf16(( v_j + bias[j]) * scale)` for `j < dst.len()` (at most 32), where `v_j =
    /// c[j*32 + bi]` if `transposed` (the block holds yᵀ) else `c[bi*32 + j]`; the add is skipped
    /// without `bias`, the multiply without `scale`. f32 operations in that order, then
    /// round-to-nearest-even with NaN kept quiet: bit for bit the scalar epilogue
    /// ([`crate::elem::f32_to_bf16_bits`]), in AVX-512 (which an [`Amx`] value implies).
    ///
    /// Panics if `c` holds fewer than 32*32 values, `bi` ≥ 32, `dst` is longer than 32 or `bias`
    /// shorter than `dst`.
    pub fn bf16_row_out(
        self,
        c: &[f32],
        transposed: bool,
        bi: usize,
        bias: Option<&[f32]>,
        scale: Option<f32>,
        dst: &mut [u16],
    ) {
        assert!(
            c.len() >= BLOCK * BLOCK && bi < BLOCK && dst.len() <= BLOCK,
            "epilogue row out of the block"
        );
        assert!(bias.is_none_or(|b| b.len() >= dst.len()), "bias shorter than the row");
        #[cfg(moehal_amx_kernels)]
        // SAFETY: an `Amx` value exists only after `detect` saw avx512f and avx512bw; the asserts
        // above bound every read of `c` (32x32) and `bias` (masked to dst.len()) and every write.
        unsafe {
            avx512::row_out(
                c.as_ptr(),
                transposed,
                bi,
                bias.map(|b| b.as_ptr()),
                scale,
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        #[cfg(not(moehal_amx_kernels))]
        {
            let _ = (transposed, scale);
            match self._p {}
        }
    }

    /// Stage rows `s..s+mg` of the row-major bf16 matrix `x` (`k` columns) as VNNI pairs:
    /// `dst[p*mgp + i] = x[s+i][2p] | x[s+i][2p+1] << 16` for `p < k/2`, `i < mg`; when `k` is odd,
    /// `dst[(k/2)*mgp + i] = x[s+i][k-1]`; every other entry of `dst` is zero. (The B operand of the
    /// NK orientation, in AVX-512 gathers.)
    ///
    /// Panics if `mg > mgp`, `mgp` is not a multiple of 16, `x` lacks the rows or `dst` is shorter
    /// than `k.div_ceil(2) * mgp`.
    pub fn stage_pairs(self, x: &[u16], k: usize, s: usize, mg: usize, mgp: usize, dst: &mut [u32]) {
        assert!(mg <= mgp && mgp % 16 == 0, "bad staging width");
        assert!(
            (s + mg) * k <= x.len() && k.div_ceil(2) * mgp <= dst.len(),
            "staging out of bounds"
        );
        let kh = k / 2;
        // Gather offsets are i32 elements from the first row of a 16-row group.
        let fits = 16usize.checked_mul(k).is_some_and(|v| v < (i32::MAX / 2) as usize);
        // (Without the AMX kernels no `Amx` exists; the scalar branch keeps this compiling there.)
        let _ = self;
        if cfg!(moehal_amx_kernels) && fits && kh > 0 {
            #[cfg(moehal_amx_kernels)]
            for i0 in (0..mg).step_by(16) {
                let rows = 16.min(mg - i0);
                // SAFETY: avx512f is implied by `self`; lanes below `rows` read x[(s+i0+l)*k + 2p..+2]
                // with p < k/2 (inside x, asserted above), the others are masked off; each store
                // writes dst[p*mgp + i0..+16] with i0 + 16 <= mgp.
                unsafe { avx512::stage16(x.as_ptr().add((s + i0) * k), k, rows, kh, dst.as_mut_ptr().add(i0), mgp) };
            }
        } else {
            return stage_pairs_scalar(x, k, s, mg, mgp, dst);
        }
        dst[kh * mgp..].fill(0);
        if k % 2 == 1 {
            for i in 0..mg {
                dst[kh * mgp + i] = x[(s + i) * k + k - 1] as u32;
            }
        }
    }
}

/// [`Amx::stage_pairs`] in scalar code (same arguments and result; every entry of `dst` written):
/// the emulated engine's staging and the hardware's fallback for a K too large for i32 gathers.
pub fn stage_pairs_scalar(x: &[u16], k: usize, s: usize, mg: usize, mgp: usize, dst: &mut [u32]) {
    dst.fill(0);
    let kh = k / 2;
    for i in 0..mg {
        let row = &x[(s + i) * k..(s + i + 1) * k];
        for (p, pr) in row.chunks_exact(2).enumerate() {
            dst[p * mgp + i] = pr[0] as u32 | (pr[1] as u32) << 16;
        }
        if k % 2 == 1 {
            dst[kh * mgp + i] = row[k - 1] as u32;
        }
    }
}

/// E4M3FN byte → bf16 bits, exact (every e4m3 value, subnormals included, is a normal bf16);
/// 0x7F / 0xFF (NaN) → the quiet bf16 NaN with the code's sign.
pub fn e4m3_to_bf16_bits(b: u8) -> u16 {
    let v = moehal_core::quant::e4m3_to_f32(b);
    if v.is_nan() {
        return ((b as u16 & 0x80) << 8) | 0x7fc0;
    }
    (v.to_bits() >> 16) as u16
}

/// Whether an MXFP4 block scale byte gives only normal, finite bf16 weights: `e2m1 × 2^(e−127)` for
/// every magnitude 0.5…6 is a normal bf16 for `e` in 2..=252 (byte 0/1 give subnormals, which the
/// tiles flush; 253/254 overflow 6·2^e; 255 is NaN).
pub fn mxfp4_scale_exact(e: u8) -> bool {
    (2..=252).contains(&e)
}

/// MXFP4 pairs → bf16 bits: `bytes` (K/2, two E2M1 codes each, the even k in the low nibble) with one
/// E8M0 byte per 32 values in `scales`, into `dst` (K values in k order). Every value is exact (see
/// [`mxfp4_scale_exact`]); returns false, with `dst` partly written, if some scale is outside that
/// range. Scalar form: the reference for [`Amx::dequant_mxfp4_row`].
pub fn mxfp4_row_scalar(bytes: &[u8], scales: &[u8], dst: &mut [u16]) -> bool {
    for ((blk, &e), d) in bytes.chunks(16).zip(scales).zip(dst.chunks_mut(32)) {
        if !mxfp4_scale_exact(e) {
            return false;
        }
        let s = moehal_core::quant::e8m0_to_f32(e);
        for (pair, &b) in d.chunks_mut(2).zip(blk) {
            pair[0] = ((moehal_core::quant::e2m1_to_f32(b & 15) * s).to_bits() >> 16) as u16;
            pair[1] = ((moehal_core::quant::e2m1_to_f32(b >> 4) * s).to_bits() >> 16) as u16;
        }
    }
    true
}

impl Amx {
    /// [`e4m3_to_bf16_bits`] over a row in AVX-512 (`dst.len() == codes.len()`; panics otherwise).
    pub fn dequant_fp8_row(self, codes: &[u8], dst: &mut [u16]) {
        assert_eq!(codes.len(), dst.len(), "fp8 row lengths");
        let _ = self;
        let whole = if cfg!(moehal_amx_kernels) {
            codes.len() / 32 * 32
        } else {
            0
        };
        #[cfg(moehal_amx_kernels)]
        for (c, d) in codes[..whole].chunks_exact(32).zip(dst[..whole].chunks_exact_mut(32)) {
            // SAFETY: avx512f/bw are implied by `self`; 32 bytes are read and 32 u16 written.
            unsafe { avx512::fp8_32(c.as_ptr(), d.as_mut_ptr()) };
        }
        for (d, &c) in dst[whole..].iter_mut().zip(&codes[whole..]) {
            *d = e4m3_to_bf16_bits(c);
        }
    }

    /// [`mxfp4_row_scalar`] in AVX-512 (same values and result; `bytes.len()` a multiple of 16,
    /// `scales` one per 16 bytes, `dst` twice `bytes` long; panics otherwise).
    pub fn dequant_mxfp4_row(self, bytes: &[u8], scales: &[u8], dst: &mut [u16]) -> bool {
        assert!(
            bytes.len() % 16 == 0 && scales.len() == bytes.len() / 16 && dst.len() == 2 * bytes.len(),
            "mxfp4 row lengths"
        );
        if !scales.iter().all(|&e| mxfp4_scale_exact(e)) {
            return false;
        }
        let _ = self;
        if !cfg!(moehal_amx_kernels) {
            return mxfp4_row_scalar(bytes, scales, dst);
        }
        #[cfg(moehal_amx_kernels)]
        for ((b, &e), d) in bytes.chunks_exact(16).zip(scales).zip(dst.chunks_exact_mut(32)) {
            // SAFETY: avx512f/bw are implied by `self`; 16 bytes are read and 32 u16 written.
            unsafe { avx512::mxfp4_32(b.as_ptr(), e, d.as_mut_ptr()) };
        }
        true
    }

    /// `acc[j*32 + i] += f[i] * c[j*32 + i]` for a 32x32 block (a factor per column), f32 multiply then
    /// add: bit for bit the scalar loop. Panics if a slice is too short.
    pub fn scale_add_cols(self, acc: &mut [f32], c: &[f32], f: &[f32; BLOCK]) {
        assert!(
            acc.len() >= BLOCK * BLOCK && c.len() >= BLOCK * BLOCK,
            "scale_add_cols block"
        );
        #[cfg(moehal_amx_kernels)]
        // SAFETY: avx512f is implied by `self`; 1024 floats of acc and c, 32 of f.
        unsafe {
            avx512::scale_add_cols(acc.as_mut_ptr(), c.as_ptr(), f.as_ptr())
        };
        #[cfg(not(moehal_amx_kernels))]
        {
            let _ = f;
            match self._p {}
        }
    }

    /// `acc[i] += s * c[i]` for `i < 1024` (a 32x32 block), f32 multiply then add (no fusion): bit for
    /// bit the scalar loop. Panics if either slice is shorter than 1024.
    pub fn scale_add(self, acc: &mut [f32], c: &[f32], s: f32) {
        assert!(
            acc.len() >= BLOCK * BLOCK && c.len() >= BLOCK * BLOCK,
            "scale_add block"
        );
        #[cfg(moehal_amx_kernels)]
        // SAFETY: avx512f is implied by `self`; 1024 floats of each slice (asserted).
        unsafe {
            avx512::scale_add(acc.as_mut_ptr(), c.as_ptr(), s)
        };
        #[cfg(not(moehal_amx_kernels))]
        {
            let _ = s;
            match self._p {}
        }
    }

    /// The smallest non-zero magnitude (`bits & 0x7fff`) among the bf16 values `v`, or 0 when every
    /// value is ±0 or `v` is empty; NaN and ±inf count as large. In AVX-512: the same value as
    /// [`bf16_min_magnitude_scalar`].
    pub fn bf16_min_magnitude(self, v: &[u16]) -> u16 {
        let _ = self;
        #[cfg(moehal_amx_kernels)]
        // SAFETY: avx512f/avx512bw are implied by `self`; the kernel reads v[..v.len()] only (the
        // tail with a masked load).
        return unsafe { avx512::min_magnitude(v.as_ptr(), v.len()) };
        #[cfg(not(moehal_amx_kernels))]
        bf16_min_magnitude_scalar(v)
    }
}

/// [`Amx::bf16_min_magnitude`] in scalar code.
pub fn bf16_min_magnitude_scalar(v: &[u16]) -> u16 {
    // (m - 1) wraps 0 to 0xffff, so the minimum skips zeros; the + 1 undoes it (0xffff + 1 = 0: none).
    v.iter()
        .fold(u16::MAX, |acc, &b| acc.min((b & 0x7fff).wrapping_sub(1)))
        .wrapping_add(1)
}

/// Whether `tdpbf16ps` computes a block exactly as f32 arithmetic would, given the smallest non-zero
/// magnitudes ([`Amx::bf16_min_magnitude`]; 0: all zero) of its two operands: the instruction treats
/// subnormal inputs as zero and flushes subnormal results (Intel SDM vol. 2C, `TDPBF16PS`: "DAZ",
/// "FTZ"), so it is exact when neither operand has a subnormal and no product of non-zero operands
/// falls below 2^-126 (biased exponents `ex + ew >= 128`). The one case left is a sum that cancels
/// into the subnormal range at the end of an instruction (32 K), which the tile write-back flushes:
/// below the output tolerance of OPS.md only where larger outputs dominate the norm (not where every
/// output is that small: ignored tests `*_sums_cancelling_into_subnormals` in
/// `tests/amx_subnormal_review.rs`). Callers compute a block that fails this with exact f32 code instead.
pub fn bf16_tiles_exact(mx: u16, mw: u16) -> bool {
    let (ex, ew) = (mx >> 7, mw >> 7);
    mx == 0 || mw == 0 || (ex >= 1 && ew >= 1 && ex + ew >= 128)
}

/// Whether values whose smallest non-zero magnitude is `m` ([`Amx::bf16_min_magnitude`]) include a
/// subnormal (which `tdpbf16ps` would read as zero).
pub fn bf16_has_subnormal(m: u16) -> bool {
    m != 0 && m >> 7 == 0
}

#[cfg(moehal_amx_kernels)]
mod avx512 {
    use std::arch::x86_64::*;

    /// See [`super::Amx::bf16_min_magnitude`].
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn min_magnitude(v: *const u16, n: usize) -> u16 {
        let (mag, one) = (_mm512_set1_epi16(0x7fff), _mm512_set1_epi16(1));
        let mut acc = _mm512_set1_epi16(-1);
        let mut i = 0;
        while i + 32 <= n {
            let x = _mm512_loadu_si512(v.add(i) as *const __m512i);
            acc = _mm512_min_epu16(acc, _mm512_sub_epi16(_mm512_and_si512(x, mag), one));
            i += 32;
        }
        if i < n {
            // Masked-off lanes load 0, whose key (0 - 1 = 0xffff) never lowers the minimum.
            let x = _mm512_maskz_loadu_epi16((1u32 << (n - i)) - 1, v.add(i) as *const i16);
            acc = _mm512_min_epu16(acc, _mm512_sub_epi16(_mm512_and_si512(x, mag), one));
        }
        let mut lanes = [0u16; 32];
        _mm512_storeu_si512(lanes.as_mut_ptr() as *mut __m512i, acc);
        lanes.iter().copied().min().unwrap_or(u16::MAX).wrapping_add(1)
    }

    /// See [`super::Amx::bf16_row_out`]; `n` ≤ 32 outputs.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn row_out(
        c: *const f32,
        transposed: bool,
        bi: usize,
        bias: Option<*const f32>,
        scale: Option<f32>,
        dst: *mut u16,
        n: usize,
    ) {
        let (mut v0, mut v1) = if transposed {
            let idx = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(32),
            );
            (
                _mm512_i32gather_ps::<4>(idx, c.add(bi)),
                _mm512_i32gather_ps::<4>(idx, c.add(16 * 32 + bi)),
            )
        } else {
            (_mm512_loadu_ps(c.add(bi * 32)), _mm512_loadu_ps(c.add(bi * 32 + 16)))
        };
        let m = if n >= 32 { u32::MAX } else { (1u32 << n) - 1 };
        let (m0, m1) = (m as u16, (m >> 16) as u16);
        if let Some(b) = bias {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, b));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, b.add(16)));
        }
        if let Some(sv) = scale {
            let sv = _mm512_set1_ps(sv);
            v0 = _mm512_mul_ps(v0, sv);
            v1 = _mm512_mul_ps(v1, sv);
        }
        let lo = _mm512_cvtepi32_epi16(narrow(v0));
        let hi = _mm512_cvtepi32_epi16(narrow(v1));
        let out = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        _mm512_mask_storeu_epi16(dst as *mut i16, m, out);
    }

    /// f32 → bf16 bits in the low half of each lane: round-to-nearest-even, NaN kept quiet with its
    /// sign (as `elem::f32_to_bf16_bits`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn narrow(v: __m512) -> __m512i {
        let x = _mm512_castps_si512(v);
        let nan = _mm512_cmpgt_epu32_mask(
            _mm512_and_si512(x, _mm512_set1_epi32(0x7fff_ffff)),
            _mm512_set1_epi32(0x7f80_0000),
        );
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(1));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(x, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))));
        let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(0x0040));
        _mm512_mask_blend_epi32(nan, rounded, quiet)
    }

    /// 32 E4M3FN codes → bf16 bits (see [`super::e4m3_to_bf16_bits`]).
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn fp8_32(codes: *const u8, dst: *mut u16) {
        let c = _mm512_cvtepu8_epi16(_mm256_loadu_si256(codes as *const __m256i));
        let sign = _mm512_slli_epi16::<8>(_mm512_and_si512(c, _mm512_set1_epi16(0x80)));
        let mag = _mm512_and_si512(c, _mm512_set1_epi16(0x7f));
        // Normal codes: exponent field e (bits 3..6) and mantissa m (0..2) move to bf16's bits 7..10
        // and 4..6, the exponent rebiased from 7 to 127.
        let normal = _mm512_add_epi16(_mm512_slli_epi16::<4>(mag), _mm512_set1_epi16(120 << 7));
        // Subnormal codes (e = 0): m · 2^-9, from a table indexed by m (m = 0 gives +0).
        const SUB: [u16; 32] = {
            let mut t = [0u16; 32];
            let v = [0x0000, 0x3b00, 0x3b80, 0x3bc0, 0x3c00, 0x3c20, 0x3c40, 0x3c60];
            let mut i = 0;
            while i < 8 {
                t[i] = v[i];
                i += 1;
            }
            t
        };
        let sub_table = _mm512_loadu_si512(SUB.as_ptr() as *const __m512i);
        let sub = _mm512_permutexvar_epi16(_mm512_and_si512(mag, _mm512_set1_epi16(7)), sub_table);
        let is_sub = _mm512_cmplt_epu16_mask(mag, _mm512_set1_epi16(8));
        let is_nan = _mm512_cmpeq_epi16_mask(mag, _mm512_set1_epi16(0x7f));
        let v = _mm512_mask_blend_epi16(is_sub, normal, sub);
        let v = _mm512_mask_blend_epi16(is_nan, v, _mm512_set1_epi16(0x7fc0));
        _mm512_storeu_si512(dst as *mut __m512i, _mm512_or_si512(v, sign));
    }

    /// 16 MXFP4 bytes (32 values) with scale byte `e` (in 2..=252) → bf16 bits in k order.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn mxfp4_32(bytes: *const u8, e: u8, dst: *mut u16) {
        // 16 bytes → 16 u32 lanes (low nibble in the low u16, high nibble in the high u16).
        let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(bytes as *const __m128i));
        let codes = _mm512_or_si512(
            _mm512_and_si512(b, _mm512_set1_epi32(0xf)),
            _mm512_slli_epi32::<16>(_mm512_srli_epi32::<4>(b)),
        );
        // E2M1 codes → bf16 bits of ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}.
        const E2M1: [u16; 32] = {
            let mut t = [0u16; 32];
            let v = [
                0x0000, 0x3f00, 0x3f80, 0x3fc0, 0x4000, 0x4040, 0x4080, 0x40c0, 0x8000, 0xbf00, 0xbf80, 0xbfc0, 0xc000,
                0xc040, 0xc080, 0xc0c0,
            ];
            let mut i = 0;
            while i < 16 {
                t[i] = v[i];
                i += 1;
            }
            t
        };
        let table = _mm512_loadu_si512(E2M1.as_ptr() as *const __m512i);
        let v = _mm512_permutexvar_epi16(codes, table);
        // × 2^(e−127): add to the exponent field of the non-zero values (normal results, as e is in
        // range).
        let nonzero = _mm512_test_epi16_mask(v, _mm512_set1_epi16(0x7fff));
        let shift = _mm512_set1_epi16(((e as i16) - 127) << 7);
        let v = _mm512_mask_add_epi16(v, nonzero, v, shift);
        _mm512_storeu_si512(dst as *mut __m512i, v);
    }

    /// `acc[j*32 + i] += f[i] * c[j*32 + i]` for a 32x32 block.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scale_add_cols(acc: *mut f32, c: *const f32, f: *const f32) {
        let (f0, f1) = (_mm512_loadu_ps(f), _mm512_loadu_ps(f.add(16)));
        for j in 0..32 {
            let (a, cc) = (acc.add(j * 32), c.add(j * 32));
            _mm512_storeu_ps(
                a,
                _mm512_add_ps(_mm512_loadu_ps(a), _mm512_mul_ps(f0, _mm512_loadu_ps(cc))),
            );
            _mm512_storeu_ps(
                a.add(16),
                _mm512_add_ps(
                    _mm512_loadu_ps(a.add(16)),
                    _mm512_mul_ps(f1, _mm512_loadu_ps(cc.add(16))),
                ),
            );
        }
    }

    /// `acc[i] += s * c[i]` for 1024 floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scale_add(acc: *mut f32, c: *const f32, s: f32) {
        let sv = _mm512_set1_ps(s);
        for i in (0..1024).step_by(16) {
            let a = _mm512_loadu_ps(acc.add(i));
            _mm512_storeu_ps(
                acc.add(i),
                _mm512_add_ps(a, _mm512_mul_ps(sv, _mm512_loadu_ps(c.add(i)))),
            );
        }
    }

    /// See [`super::Amx::stage_pairs`]: `rows` (≤ 16) rows from `x` (`k` apart), pairs `p < kh`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn stage16(x: *const u16, k: usize, rows: usize, kh: usize, dst: *mut u32, mgp: usize) {
        let mask: u16 = if rows >= 16 { u16::MAX } else { (1u16 << rows) - 1 };
        // Offsets in u16 elements (scale 2): lane l reads row l.
        let mut idx = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(k as i32),
        );
        let two = _mm512_set1_epi32(2);
        for p in 0..kh {
            let v = _mm512_mask_i32gather_epi32::<2>(_mm512_setzero_si512(), mask, idx, x as *const i32);
            _mm512_storeu_si512(dst.add(p * mgp) as *mut __m512i, v);
            idx = _mm512_add_epi32(idx, two);
        }
    }
}

/// Where tile block operations run: the AMX hardware, or a portable model of the instructions
/// (slow; for testing the code above the kernels on machines without AMX).
#[derive(Clone, Copy, Debug)]
pub enum TileEngine {
    /// `tdpbf16ps` / `tdpbssd` on this CPU.
    Hardware(Amx),
    /// Scalar Rust following what Sapphire Rapids' `tdpbf16ps` was measured to do (not the SDM
    /// pseudocode's `c += a[2p]*b.lo; c += a[2p+1]*b.hi`, whose roundings and flushes differ): per
    /// instruction (32 K), the even-K and the odd-K products summed in two f32 chains from zero
    /// (subnormal inputs read as zero, each partial sum flushed to zero when subnormal), then
    /// `c = ftz(c + ftz(even + odd))`; bitwise the hardware on random blocks and on sums through the
    /// subnormal range (tests/amx_subnormal_review.rs). Per K quad (int8) wrapping i32 sums.
    Emulated,
}

/// bf16 bits to f32 with subnormals flushed to zero (the DAZ of `tdpbf16ps`).
fn bf16_daz(b: u16) -> f32 {
    if b & 0x7f80 == 0 {
        f32::from_bits((b as u32 & 0x8000) << 16)
    } else {
        f32::from_bits((b as u32) << 16)
    }
}

/// f32 with a subnormal result flushed to zero (keeping the sign).
fn ftz(v: f32) -> f32 {
    if v.is_subnormal() {
        f32::from_bits(v.to_bits() & 0x8000_0000)
    } else {
        v
    }
}

impl TileEngine {
    /// The hardware engine where AMX may run here, else the emulation.
    pub fn best() -> TileEngine {
        Amx::get().map_or(TileEngine::Emulated, TileEngine::Hardware)
    }

    /// [`Amx::bf16_min_magnitude`] on this engine.
    pub fn bf16_min_magnitude(self, v: &[u16]) -> u16 {
        match self {
            TileEngine::Hardware(amx) => amx.bf16_min_magnitude(v),
            TileEngine::Emulated => bf16_min_magnitude_scalar(v),
        }
    }

    /// [`Amx::bf16_block`] on this engine (same arguments, results and panics).
    pub fn bf16_block(
        self,
        a: &[u16],
        lda: usize,
        mt: usize,
        b: &[u32],
        ldb: usize,
        bk: usize,
        nt: usize,
        kblocks: usize,
        c: &mut [f32],
    ) {
        self.bf16_block_pf(a, lda, mt, b, ldb, bk, nt, kblocks, c, 0, &[])
    }

    /// [`Amx::bf16_block_pf`] on this engine (the emulation ignores `pfd` and `next`).
    pub fn bf16_block_pf(
        self,
        a: &[u16],
        lda: usize,
        mt: usize,
        b: &[u32],
        ldb: usize,
        bk: usize,
        nt: usize,
        kblocks: usize,
        c: &mut [f32],
        pfd: usize,
        next: &[u16],
    ) {
        match self {
            TileEngine::Hardware(amx) => amx.bf16_block_pf(a, lda, mt, b, ldb, bk, nt, kblocks, c, pfd, next),
            TileEngine::Emulated => {
                check_block(a.len(), lda, mt, b.len(), ldb, bk, nt, kblocks, 32, c.len());
                for i in 0..16 * mt {
                    for j in 0..16 * nt {
                        // Per instruction (32 K): the even and the odd K in two f32 chains from 0,
                        // each sum rounded and flushed, then added to the tile's value.
                        let mut acc = 0f32;
                        for kb in 0..kblocks {
                            let (mut ev, mut od) = (0f32, 0f32);
                            for p in 16 * kb..16 * kb + 16 {
                                let bv = b[(p / 16) * bk + (p % 16) * ldb + j];
                                let (a0, a1) = (a[i * lda + 2 * p], a[i * lda + 2 * p + 1]);
                                ev = ftz(ev + bf16_daz(a0) * bf16_daz(bv as u16));
                                od = ftz(od + bf16_daz(a1) * bf16_daz((bv >> 16) as u16));
                            }
                            acc = ftz(acc + ftz(ev + od));
                        }
                        c[i * BLOCK + j] = acc;
                    }
                }
            }
        }
    }

    /// [`Amx::s8_block`] on this engine (same arguments, results and panics).
    pub fn s8_block(
        self,
        a: &[i8],
        lda: usize,
        mt: usize,
        b: &[u32],
        ldb: usize,
        bk: usize,
        nt: usize,
        kblocks: usize,
        c: &mut [i32],
    ) {
        match self {
            TileEngine::Hardware(amx) => amx.s8_block(a, lda, mt, b, ldb, bk, nt, kblocks, c),
            TileEngine::Emulated => {
                check_block(a.len(), lda, mt, b.len(), ldb, bk, nt, kblocks, 64, c.len());
                for i in 0..16 * mt {
                    for j in 0..16 * nt {
                        let mut acc = 0i32;
                        for p in 0..16 * kblocks {
                            let bv = b[(p / 16) * bk + (p % 16) * ldb + j].to_le_bytes();
                            for (q, &bq) in bv.iter().enumerate() {
                                acc = acc.wrapping_add(a[i * lda + 4 * p + q] as i32 * bq as i8 as i32);
                            }
                        }
                        c[i * BLOCK + j] = acc;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hardware kernels against the emulation, bit for bit, on every tile combination, where AMX
    /// runs (elsewhere this prints why and checks the emulation against a direct sum).
    #[test]
    fn blocks_match_model() {
        let mut s = 1u64;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let (kb, lda, ldb) = (3usize, 3 * 32 + 8, 40usize);
        let bk = 16 * ldb;
        // bf16 values of a few bits of mantissa so the f32 sums are exact whatever the order.
        let a: Vec<u16> = (0..32 * lda)
            .map(|_| half::bf16::from_f32((next() % 17) as f32 - 8.0).to_bits())
            .collect();
        let b: Vec<u32> = (0..kb * bk)
            .map(|_| {
                let lo = half::bf16::from_f32((next() % 9) as f32 - 4.0).to_bits() as u32;
                let hi = half::bf16::from_f32((next() % 9) as f32 - 4.0).to_bits() as u32;
                lo | hi << 16
            })
            .collect();
        let a8: Vec<i8> = (0..32 * 2 * lda).map(|_| next() as i8).collect();
        let hw = Amx::get();
        if hw.is_none() {
            println!("AMX unavailable ({:?}): checking the model only", Amx::status());
        }
        for mt in 1..=2 {
            for nt in 1..=2 {
                let mut ce = vec![f32::NAN; 32 * 32];
                TileEngine::Emulated.bf16_block(&a, lda, mt, &b, ldb, bk, nt, kb, &mut ce);
                for i in 0..32 {
                    for j in 0..32 {
                        if i < 16 * mt && j < 16 * nt {
                            let mut want = 0f64;
                            for p in 0..16 * kb {
                                let bv = b[(p / 16) * bk + (p % 16) * ldb + j];
                                want += bf16_daz(a[i * lda + 2 * p]) as f64 * bf16_daz(bv as u16) as f64;
                                want += bf16_daz(a[i * lda + 2 * p + 1]) as f64 * bf16_daz((bv >> 16) as u16) as f64;
                            }
                            assert_eq!(ce[i * 32 + j] as f64, want, "model ({i},{j})");
                        } else {
                            assert!(ce[i * 32 + j].is_nan(), "model wrote outside the block");
                        }
                    }
                }
                let mut ie = vec![i32::MIN; 32 * 32];
                TileEngine::Emulated.s8_block(&a8, 2 * lda, mt, &b, ldb, bk, nt, kb, &mut ie);
                for i in 0..16 * mt {
                    for j in 0..16 * nt {
                        let mut want = 0i64;
                        for p in 0..16 * kb {
                            let bv = b[(p / 16) * bk + (p % 16) * ldb + j].to_le_bytes();
                            for q in 0..4 {
                                want += a8[i * 2 * lda + 4 * p + q] as i64 * bv[q] as i8 as i64;
                            }
                        }
                        assert_eq!(ie[i * 32 + j] as i64, want, "int8 model ({i},{j})");
                    }
                }
                if let Some(amx) = hw {
                    let mut ch = vec![f32::NAN; 32 * 32];
                    amx.bf16_block(&a, lda, mt, &b, ldb, bk, nt, kb, &mut ch);
                    let (he, hh): (Vec<u32>, Vec<u32>) = (
                        ce.iter().map(|v| v.to_bits()).collect(),
                        ch.iter().map(|v| v.to_bits()).collect(),
                    );
                    assert_eq!(he, hh, "bf16 hardware vs model, mt {mt} nt {nt}");
                    let mut ih = vec![i32::MIN; 32 * 32];
                    amx.s8_block(&a8, 2 * lda, mt, &b, ldb, bk, nt, kb, &mut ih);
                    assert_eq!(ie, ih, "int8 hardware vs model, mt {mt} nt {nt}");
                }
            }
        }
    }

    /// The AVX-512 epilogue against the scalar rule, bit for bit: rounding ties, NaN, infinities,
    /// subnormals, every row width, with and without bias and scale, both orientations.
    #[test]
    fn row_out_matches_scalar_epilogue() {
        let Some(amx) = Amx::get() else {
            println!("AMX unavailable ({:?}): nothing to check", Amx::status());
            return;
        };
        let mut s = 7u64;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 32) as u32
        };
        let specials = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e-40,
            f32::MAX,
        ];
        for case in 0..40 {
            let c: Vec<f32> = (0..BLOCK * BLOCK)
                .map(|i| match next() % 8 {
                    // Exact ties of the bf16 rounding (low 16 bits 0x8000), odd and even.
                    0 => f32::from_bits(next() & 0xffff_0000 | 0x8000),
                    1 => specials[i % specials.len()],
                    _ => f32::from_bits(next()),
                })
                .collect();
            let bias: Vec<f32> = (0..BLOCK).map(|_| (next() % 1000) as f32 / 37.0 - 13.0).collect();
            let nc = [1usize, 16, 17, 31, 32][case % 5];
            let transposed = case % 2 == 0;
            let scale = (case % 3 != 0).then(|| (next() % 100) as f32 / 7.0 - 3.0);
            let with_bias = case % 4 < 2;
            for bi in 0..BLOCK {
                let mut got = [0xdeadu16; BLOCK];
                amx.bf16_row_out(
                    &c,
                    transposed,
                    bi,
                    with_bias.then_some(&bias[..nc]),
                    scale,
                    &mut got[..nc],
                );
                for j in 0..nc {
                    let mut v = if transposed {
                        c[j * BLOCK + bi]
                    } else {
                        c[bi * BLOCK + j]
                    };
                    if with_bias {
                        v += bias[j];
                    }
                    if let Some(sv) = scale {
                        v *= sv;
                    }
                    assert_eq!(got[j], crate::elem::f32_to_bf16_bits(v), "case {case} row {bi} col {j}");
                }
                assert!(got[nc..].iter().all(|&v| v == 0xdead), "wrote past the row");
            }
        }
    }

    /// The smallest non-zero magnitude: AVX-512 = scalar on every length up to 100 (tails) with zeros,
    /// signs, subnormals, inf and NaN placed anywhere; and the exactness rule at its edges.
    #[test]
    fn min_magnitude_and_exactness_rule() {
        let specials = [
            0u16, 0x8000, 0x0001, 0x8001, 0x007f, 0x0080, 0x3f80, 0x7f80, 0xff80, 0x7fc0, 0x1234,
        ];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for len in 0..100 {
            for _ in 0..20 {
                let v: Vec<u16> = (0..len)
                    .map(|_| match next() % 4 {
                        0 => specials[(next() % specials.len() as u64) as usize],
                        1 => 0,
                        _ => next() as u16,
                    })
                    .collect();
                let want = v.iter().map(|b| b & 0x7fff).filter(|&m| m != 0).min().unwrap_or(0);
                assert_eq!(bf16_min_magnitude_scalar(&v), want, "{v:?}");
                if let Some(hw) = Amx::get() {
                    assert_eq!(hw.bf16_min_magnitude(&v), want, "{v:?}");
                }
            }
        }
        let e = |x: u16| x << 7; // the smallest magnitude with biased exponent x
        assert!(bf16_tiles_exact(0, 1) && bf16_tiles_exact(1, 0));
        assert!(bf16_tiles_exact(e(64), e(64)) && bf16_tiles_exact(e(1), e(127)));
        assert!(!bf16_tiles_exact(e(64) - 1, e(64)) && !bf16_tiles_exact(e(63), e(64)));
        assert!(!bf16_tiles_exact(0x7f, e(200)) && !bf16_tiles_exact(e(200), 1));
        assert!(bf16_has_subnormal(1) && bf16_has_subnormal(0x7f));
        assert!(!bf16_has_subnormal(0) && !bf16_has_subnormal(0x80));
    }

    /// The AVX-512 staging against its definition, for odd and even K and partial 16-row groups.
    #[test]
    fn stage_pairs_matches_definition() {
        let Some(amx) = Amx::get() else {
            println!("AMX unavailable ({:?}): nothing to check", Amx::status());
            return;
        };
        for (k, s, mg) in [
            (64usize, 0usize, 32usize),
            (37, 3, 5),
            (2, 1, 17),
            (1, 0, 3),
            (130, 2, 16),
            (33, 0, 40),
        ] {
            let rows = s + mg + 1;
            let x: Vec<u16> = (0..rows * k).map(|i| (i as u16).wrapping_mul(40503) | 1).collect();
            let mgp = mg.div_ceil(16) * 16;
            let kp = k.div_ceil(32) * 32;
            let mut dst = vec![0x5555_5555u32; kp / 2 * mgp];
            amx.stage_pairs(&x, k, s, mg, mgp, &mut dst);
            for p in 0..kp / 2 {
                for i in 0..mgp {
                    let at = |kk: usize| {
                        if i < mg && kk < k {
                            x[(s + i) * k + kk] as u32
                        } else {
                            0
                        }
                    };
                    let want = at(2 * p) | at(2 * p + 1) << 16;
                    assert_eq!(dst[p * mgp + i], want, "k {k} s {s} mg {mg}: p {p} i {i}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "A block out of bounds")]
    fn short_a_panics_before_any_tile_op() {
        let mut c = vec![0f32; 32 * 32];
        TileEngine::Emulated.bf16_block(&[0u16; 100], 64, 2, &[0u32; 16 * 16], 16, 256, 1, 1, &mut c);
    }
}
