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
//! hardware or in a portable model of the instructions (Intel SDM pseudocode of `TDPBF16PS` and
//! `TDPBSSD`), so the blocking, staging and padding code above the kernels is tested on every machine,
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
        check_block(a.len(), lda, mt, b.len(), ldb, bk, nt, kblocks, 32, c.len());
        #[cfg(moehal_amx_kernels)]
        // SAFETY: `self` proves AMX is present and granted; check_block bounds every tile row read
        // (A: 16*mt rows of kblocks*64 bytes, B: 16 rows of nt*64 bytes per K step) and C (32x32).
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
            )
        };
        #[cfg(not(moehal_amx_kernels))]
        match self._p {}
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
            )
        };
        #[cfg(not(moehal_amx_kernels))]
        match self._p {}
    }
}

/// Where tile block operations run: the AMX hardware, or a portable model of the instructions
/// (slow; for testing the code above the kernels on machines without AMX).
#[derive(Clone, Copy, Debug)]
pub enum TileEngine {
    /// `tdpbf16ps` / `tdpbssd` on this CPU.
    Hardware(Amx),
    /// Scalar Rust following the SDM pseudocode: per K pair (bf16) `c += a[2p]*b.lo; c += a[2p+1]*b.hi`
    /// in f32 with subnormal inputs and results flushed to zero; per K quad (int8) wrapping i32 sums.
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
        match self {
            TileEngine::Hardware(amx) => amx.bf16_block(a, lda, mt, b, ldb, bk, nt, kblocks, c),
            TileEngine::Emulated => {
                check_block(a.len(), lda, mt, b.len(), ldb, bk, nt, kblocks, 32, c.len());
                for i in 0..16 * mt {
                    for j in 0..16 * nt {
                        let mut acc = 0f32;
                        for p in 0..16 * kblocks {
                            let bv = b[(p / 16) * bk + (p % 16) * ldb + j];
                            let (a0, a1) = (a[i * lda + 2 * p], a[i * lda + 2 * p + 1]);
                            acc = ftz(acc + bf16_daz(a0) * bf16_daz(bv as u16));
                            acc = ftz(acc + bf16_daz(a1) * bf16_daz((bv >> 16) as u16));
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

    #[test]
    #[should_panic(expected = "A block out of bounds")]
    fn short_a_panics_before_any_tile_op() {
        let mut c = vec![0f32; 32 * 32];
        TileEngine::Emulated.bf16_block(&[0u16; 100], 64, 2, &[0u32; 16 * 16], 16, 256, 1, 1, &mut c);
    }
}
