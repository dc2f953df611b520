//! The fenced `unsafe` part of the crate: instruction-set kernels (AVX-512, AVX2+FMA, NEON), their
//! runtime selection, software prefetch and huge-page allocation. Everything above this module is
//! safe code that calls the safe wrappers defined here; every wrapper checks the slice bounds its
//! kernel relies on before calling it.
//!
//! Feature detection runs once per process; the chosen kernels are cached as a table of function
//! pointers ([`Kernels`]), one table per instruction set.

#![allow(unsafe_code)]

pub mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod hash;
pub mod mem;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod quant_x86;
mod scalar;

use std::sync::OnceLock;

/// Width of a packed weight panel (columns of `N`), shared by every instruction set.
pub const NR: usize = 64;
/// Most rows one microkernel call handles.
pub const MR: usize = 6;

/// An instruction-set level of the CPU kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// The AVX-512 table plus AMX tiles (AMX-TILE/BF16/INT8 granted by the kernel, see
    /// [`amx::Amx::status`]): bf16 `grouped_gemm` runs on `tdpbf16ps` tiles.
    Amx,
    /// AVX-512F (+BW/VL/DQ) with FMA and POPCNT.
    Avx512,
    /// AVX2 with FMA, F16C and POPCNT.
    Avx2,
    /// aarch64 Advanced SIMD.
    Neon,
    /// Portable Rust, no intrinsics.
    Scalar,
}

impl Isa {
    /// Lower-case name (`"avx512"`, `"avx2"`, `"neon"`, `"scalar"`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Amx => "amx",
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Neon => "neon",
            Isa::Scalar => "scalar",
        }
    }

    /// Whether this machine can run kernels of this level.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Amx => Isa::Avx512.available() && amx::Amx::get().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("popcnt")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
                    && std::arch::is_x86_feature_detected!("popcnt")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every level this machine can run, best first.
    pub fn all_available() -> Vec<Isa> {
        [Isa::Amx, Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar]
            .into_iter()
            .filter(|i| i.available())
            .collect()
    }

    /// Parse a name as printed by [`Isa::name`], ignoring ASCII case (`AVX2` is `avx2`); anything
    /// else, surrounding spaces included (`" avx2"`), is `None` (README "Environment variables").
    pub fn parse(s: &str) -> Option<Isa> {
        match s.to_ascii_lowercase().as_str() {
            "amx" => Some(Isa::Amx),
            "avx512" => Some(Isa::Avx512),
            "avx2" => Some(Isa::Avx2),
            "neon" => Some(Isa::Neon),
            "scalar" => Some(Isa::Scalar),
            _ => None,
        }
    }
}

type MicroFn = unsafe fn(*const f32, usize, usize, usize, *const f32, *mut f32, bool);
type TransposeFn = unsafe fn(*const f32, *mut f32, usize);
type UnaryFn = unsafe fn(*const f32, *mut f32, usize);
type ExpShiftFn = unsafe fn(*const f32, *mut f32, usize, f32) -> f32;
type SiluMulFn = unsafe fn(*const f32, *const f32, *mut f32, usize, f32);
type WidenFn = unsafe fn(*const u16, *mut f32, usize);
type PackFn = unsafe fn(u8, bool, *const u8, usize, usize, *mut f32);
type MicroBf16Fn = unsafe fn(*const f32, usize, usize, usize, *const u16, usize, *mut f32);
type MicroDotFn = unsafe fn(*const u32, usize, usize, usize, *const u32, *mut f32, bool);
type PackDotFn = unsafe fn(bool, *const u16, usize, usize, *mut u32);
type GroupLimitFn = unsafe fn(*mut f32, usize, usize, bool, usize) -> u32;
type SigmoidSelectFn = unsafe fn(*const f32, *const f32, *mut f32, *mut f32, usize);
type TopkSelectFn = unsafe fn(*const f32, usize, usize, u64, *mut f32, *mut u32, *mut i32) -> usize;

/// The kernels of one instruction set, as cached function pointers.
pub struct Kernels {
    isa: Isa,
    micro: MicroFn,
    transpose: TransposeFn,
    sigmoid: UnaryFn,
    exp_shift: ExpShiftFn,
    silu_mul: SiluMulFn,
    widen_bf16: WidenFn,
    widen_f16: WidenFn,
    pack_b: Option<PackFn>,
    micro_bf16: Option<MicroBf16Fn>,
    dot_nk_bf16: Option<MicroBf16Fn>,
    /// `vdpbf16ps` kernels (need AVX512-BF16 on top of the table's ISA; see [`Kernels::has_dot`]).
    micro_dot: Option<MicroDotFn>,
    pack_dot: Option<PackDotFn>,
    group_limit: Option<GroupLimitFn>,
    topk_select: Option<TopkSelectFn>,
    sigmoid_select: Option<SigmoidSelectFn>,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels").field("isa", &self.isa).finish()
    }
}

static SCALAR: Kernels = Kernels {
    isa: Isa::Scalar,
    micro: scalar::micro,
    transpose: scalar::transpose_nr16,
    sigmoid: scalar::sigmoid,
    exp_shift: scalar::exp_shift,
    silu_mul: scalar::silu_mul,
    widen_bf16: scalar::widen_bf16,
    widen_f16: scalar::widen_f16,
    pack_b: None,
    micro_bf16: None,
    dot_nk_bf16: None,
    micro_dot: None,
    pack_dot: None,
    group_limit: None,
    topk_select: None,
    sigmoid_select: None,
};

#[cfg(target_arch = "x86_64")]
static AVX512: Kernels = AVX512_TABLE;

/// The AVX-512 table with AMX on top (handed out only where [`Isa::Amx`] is available).
#[cfg(target_arch = "x86_64")]
static AMX: Kernels = Kernels {
    isa: Isa::Amx,
    ..AVX512_TABLE
};

#[cfg(target_arch = "x86_64")]
const AVX512_TABLE: Kernels = Kernels {
    isa: Isa::Avx512,
    micro: avx512::micro,
    transpose: avx512::transpose_nr16,
    sigmoid: avx512::sigmoid,
    exp_shift: avx512::exp_shift,
    silu_mul: avx512::silu_mul,
    widen_bf16: avx512::widen_bf16,
    widen_f16: avx512::widen_f16,
    pack_b: Some(avx512::pack_b),
    micro_bf16: Some(avx512::micro_bf16),
    dot_nk_bf16: Some(avx512::dot_nk_bf16),
    micro_dot: Some(avx512::micro_dot),
    pack_dot: Some(avx512::pack_dot),
    group_limit: Some(avx512::group_limit),
    topk_select: Some(avx512::topk_select),
    sigmoid_select: Some(avx512::sigmoid_select),
};

#[cfg(target_arch = "x86_64")]
static AVX2: Kernels = Kernels {
    isa: Isa::Avx2,
    micro: avx2::micro,
    transpose: scalar::transpose_nr16,
    sigmoid: avx2::sigmoid,
    exp_shift: avx2::exp_shift,
    silu_mul: avx2::silu_mul,
    widen_bf16: avx2::widen_bf16,
    widen_f16: avx2::widen_f16,
    pack_b: None,
    micro_bf16: None,
    dot_nk_bf16: None,
    micro_dot: None,
    pack_dot: None,
    group_limit: Some(avx2::group_limit),
    topk_select: Some(avx2::topk_select),
    sigmoid_select: Some(avx2::sigmoid_select),
};

#[cfg(target_arch = "aarch64")]
static NEON: Kernels = Kernels {
    isa: Isa::Neon,
    micro: neon::micro,
    transpose: scalar::transpose_nr16,
    sigmoid: neon::sigmoid,
    exp_shift: neon::exp_shift,
    silu_mul: neon::silu_mul,
    widen_bf16: neon::widen_bf16,
    widen_f16: neon::widen_f16,
    pack_b: None,
    micro_bf16: Some(neon::micro_bf16),
    dot_nk_bf16: Some(neon::dot_nk_bf16),
    // BFMMLA (BFDOT for a single row); only called where the CPU reports FEAT_BF16
    // (`Kernels::has_dot`).
    micro_dot: Some(neon::micro_bfmmla),
    pack_dot: None,
    group_limit: Some(neon::group_limit),
    topk_select: Some(neon::topk_select),
    sigmoid_select: Some(neon::sigmoid_select),
};

impl Kernels {
    /// The kernel table of `isa`, or `None` where this machine cannot run it.
    pub fn for_isa(isa: Isa) -> Option<&'static Kernels> {
        if !isa.available() {
            return None;
        }
        match isa {
            Isa::Scalar => Some(&SCALAR),
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => Some(&AMX),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(&AVX512),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(&AVX2),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => Some(&NEON),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The best table for this machine, detected once. `MOEHAL_CPU_ISA` (`amx`, `avx512`, `avx2`,
    /// `neon`, `scalar`) lowers the choice (`avx512` turns the AMX path off), e.g. to test a fallback;
    /// an unavailable or invalid request is ignored here ([`crate::env::check`] reports it: a
    /// warning for an unavailable one, an error for an invalid one, which `CpuBackend::open` returns).
    pub fn best() -> &'static Kernels {
        static BEST: OnceLock<&'static Kernels> = OnceLock::new();
        BEST.get_or_init(|| {
            if let Some(k) = std::env::var("MOEHAL_CPU_ISA")
                .ok()
                .and_then(|s| Isa::parse(&s))
                .and_then(Kernels::for_isa)
            {
                return k;
            }
            Isa::all_available()
                .into_iter()
                .find_map(Kernels::for_isa)
                .unwrap_or(&SCALAR)
        })
    }

    /// The instruction set of this table.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The AMX proof value where this is the [`Isa::Amx`] table (only handed out where AMX may run).
    pub fn amx(&self) -> Option<amx::Amx> {
        if self.isa == Isa::Amx {
            amx::Amx::get()
        } else {
            None
        }
    }

    /// GEMM microkernel on a packed f32 panel:
    /// `c[i, 0..NR] (+)= sum_k a[i*lda + k] * b[k*NR + 0..NR]` for `i < mr`, `k < kc`; `c` has row
    /// stride [`NR`]; with `accumulate == false` the old `c` is ignored.
    #[inline]
    pub fn micro(&self, a: &[f32], lda: usize, mr: usize, kc: usize, b: &[f32], c: &mut [f32], accumulate: bool) {
        assert!((1..=MR).contains(&mr));
        assert!(kc == 0 || a.len() >= (mr - 1) * lda + kc);
        assert!(b.len() >= kc * NR && c.len() >= mr * NR);
        // SAFETY: the asserts above bound every read of `a` ((mr-1)*lda + kc elements), of `b`
        // (kc*NR) and every access of `c` (mr*NR); the table only holds kernels whose instruction set
        // `Kernels::for_isa` verified on this machine.
        unsafe { (self.micro)(a.as_ptr(), lda, mr, kc, b.as_ptr(), c.as_mut_ptr(), accumulate) }
    }

    /// Transpose a `[NR][16]` block `src` (row `c`, 16 consecutive k) into `dst[k * NR + c]`,
    /// `k < 16`, `c < NR`.
    #[inline]
    pub fn transpose_nr16(&self, src: &[f32], dst: &mut [f32]) {
        assert!(src.len() >= NR * 16 && dst.len() >= NR * 16);
        // SAFETY: both slices hold NR*16 elements, the kernel touches exactly those.
        unsafe { (self.transpose)(src.as_ptr(), dst.as_mut_ptr(), 16) }
    }

    /// `dst[i] = 1 / (1 + exp(-src[i]))` (f32, within 2 ulp of the correctly rounded value).
    #[inline]
    pub fn sigmoid(&self, src: &[f32], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        // SAFETY: n elements of each slice exist.
        unsafe { (self.sigmoid)(src.as_ptr(), dst.as_mut_ptr(), n) }
    }

    /// `dst[i] = exp(src[i] - shift)`; returns the sum of `dst` (added in a fixed order).
    #[inline]
    pub fn exp_shift(&self, src: &[f32], dst: &mut [f32], shift: f32) -> f32 {
        let n = src.len().min(dst.len());
        // SAFETY: n elements of each slice exist.
        unsafe { (self.exp_shift)(src.as_ptr(), dst.as_mut_ptr(), n, shift) }
    }

    /// SwiGLU on f32: `out[i] = silu(min(g, limit)) * clamp(u, -limit, limit)` (`limit = inf` for none).
    #[inline]
    pub fn silu_mul(&self, gate: &[f32], up: &[f32], out: &mut [f32], limit: f32) {
        let n = gate.len().min(up.len()).min(out.len());
        // SAFETY: n elements of each slice exist.
        unsafe { (self.silu_mul)(gate.as_ptr(), up.as_ptr(), out.as_mut_ptr(), n, limit) }
    }
}

impl Kernels {
    /// Widen bf16 (as bits) to f32: `dst[i] = f32(src[i])`, exact.
    #[inline]
    pub fn widen_bf16(&self, src: &[half::bf16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        // SAFETY: n elements of each slice exist; bf16 is a transparent u16.
        unsafe { (self.widen_bf16)(src.as_ptr() as *const u16, dst.as_mut_ptr(), n) }
    }

    /// Widen f16 to f32, exact (subnormals, inf and NaN included).
    #[inline]
    pub fn widen_f16(&self, src: &[half::f16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        // SAFETY: n elements of each slice exist; f16 is a transparent u16.
        unsafe { (self.widen_f16)(src.as_ptr() as *const u16, dst.as_mut_ptr(), n) }
    }

    /// Widen any element type to f32 with this table's kernels.
    #[inline]
    pub fn widen<T: crate::elem::Elem>(&self, src: &[T], dst: &mut [f32]) {
        match T::KIND {
            crate::elem::ElemKind::Bf16 => self.widen_bf16(bytemuck::cast_slice(as_u16(src)), dst),
            crate::elem::ElemKind::F16 => self.widen_f16(bytemuck::cast_slice(as_u16(src)), dst),
            crate::elem::ElemKind::F32 => T::widen(src, dst),
        }
    }
}

impl Kernels {
    /// Pack a full-width block (`NR` columns, `kc` rows of k) of weights into the f32 panel `dst`
    /// (`dst[k*NR + c]`), if this table has a fused kernel for it; returns false otherwise (the caller
    /// then packs with the generic code). `nk`: element (k, c) is `src[c*ld + k]` (needs
    /// `kc % 16 == 0`), else `src[k*ld + c]`.
    #[inline]
    pub fn pack_b<T: crate::elem::Elem>(&self, src: &[T], ld: usize, nk: bool, kc: usize, dst: &mut [f32]) -> bool {
        let Some(f) = self.pack_b else { return false };
        if kc == 0 || (nk && !kc.is_multiple_of(16)) {
            return false;
        }
        let need = if nk { (NR - 1) * ld + kc } else { (kc - 1) * ld + NR };
        if src.len() < need || dst.len() < kc * NR {
            return false;
        }
        let kind = match T::KIND {
            crate::elem::ElemKind::F32 => 0,
            crate::elem::ElemKind::Bf16 => 1,
            crate::elem::ElemKind::F16 => 2,
        };
        // SAFETY: the checks above bound every element the kernel addresses (the prefetch hints may
        // point past the slice, which never faults); the table's ISA was verified by for_isa.
        unsafe { f(kind, nk, src.as_ptr() as *const u8, ld, kc, dst.as_mut_ptr()) };
        true
    }
}

impl Kernels {
    /// Small-M microkernel on bf16 weights read in place: `c[i, 0..NR] = sum_k a[i*lda + k] *
    /// b[k*ldb + 0..NR]` for `i < mr`, `k < kc` (`kc > 0`). Returns false (and does nothing) where this
    /// table has no such kernel.
    #[inline]
    pub fn micro_bf16(
        &self,
        a: &[f32],
        lda: usize,
        mr: usize,
        kc: usize,
        b: &[half::bf16],
        ldb: usize,
        c: &mut [f32],
    ) -> bool {
        let Some(f) = self.micro_bf16 else { return false };
        if !(1..=MR).contains(&mr)
            || kc == 0
            || a.len() < (mr - 1) * lda + kc
            || b.len() < (kc - 1) * ldb + NR
            || c.len() < mr * NR
        {
            return false;
        }
        // SAFETY: the checks above bound every access; prefetches are hints only; the ISA was
        // verified by for_isa.
        unsafe { f(a.as_ptr(), lda, mr, kc, b.as_ptr() as *const u16, ldb, c.as_mut_ptr()) };
        true
    }
}

impl Kernels {
    /// Small-M kernel on bf16 `NK` weights read in place: `c[i, n] = sum_k a[i*lda + k] *
    /// w[n*ldw + k]` for `i < mr`, `n < NR`, `k < kc` (`kc > 0`). Returns false (and does nothing)
    /// where this table has no such kernel.
    #[inline]
    pub fn dot_nk_bf16(
        &self,
        a: &[f32],
        lda: usize,
        mr: usize,
        kc: usize,
        w: &[half::bf16],
        ldw: usize,
        c: &mut [f32],
    ) -> bool {
        let Some(f) = self.dot_nk_bf16 else { return false };
        if !(1..=MR).contains(&mr)
            || kc == 0
            || a.len() < (mr - 1) * lda + kc
            || w.len() < (NR - 1) * ldw + kc
            || c.len() < mr * NR
        {
            return false;
        }
        // SAFETY: the checks above bound every access (masked lanes are not read); prefetches are
        // hints only; the ISA was verified by for_isa.
        unsafe { f(a.as_ptr(), lda, mr, kc, w.as_ptr() as *const u16, ldw, c.as_mut_ptr()) };
        true
    }
}

/// Quantized-format kernels (OPS.md §6). They dispatch on the table's instruction set here rather
/// than through the function-pointer tables, so other kernels can be added to those independently.
impl Kernels {
    /// Decode-shape MXFP4 dot products (see `quant_x86::dot_mxfp4`): `c[i * NR + n] = Σ_k a(i, k) ·
    /// W(n, k)` for `i < mr`, `n < nc`, `a` in the split layout (per row, per 32-block: 16 even-k then
    /// 16 odd-k values), `w` `nc` packed rows of `k / 2` bytes, `s` `nc` rows of `k / 32` E8M0
    /// bytes. Returns false (nothing written) where this table has no such kernel or the sizes do
    /// not fit.
    pub fn dot_mxfp4(&self, a: &[f32], mr: usize, k: usize, w: &[u8], s: &[u8], nc: usize, c: &mut [f32]) -> bool {
        if !matches!(self.isa, Isa::Avx512 | Isa::Amx | Isa::Avx2 | Isa::Neon)
            || !(1..=MR).contains(&mr)
            || !k.is_multiple_of(32)
            || nc > NR
            || a.len() < mr * k
            || w.len() < nc * k / 2
            || s.len() < nc * (k / 32)
            || c.len() < mr * NR
        {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if self.isa == Isa::Avx2 {
                // SAFETY: the checks above are the kernel's extents; AVX2+FMA verified by for_isa.
                unsafe { quant_x86::dot_mxfp4_avx2(a.as_ptr(), mr, k, w.as_ptr(), s.as_ptr(), nc, c.as_mut_ptr()) };
            } else {
                // SAFETY: the checks above are the kernel's extents; the table is AVX-512 or AMX
                // (x86-64 has no NEON table), verified by for_isa.
                unsafe { quant_x86::dot_mxfp4(a.as_ptr(), mr, k, w.as_ptr(), s.as_ptr(), nc, c.as_mut_ptr()) };
            }
            true
        }
        #[cfg(target_arch = "aarch64")]
        {
            // SAFETY: the checks above are the kernel's extents; the table is NEON (the only
            // vector table on aarch64), verified by for_isa.
            unsafe { neon::dot_mxfp4(a.as_ptr(), mr, k, w.as_ptr(), s.as_ptr(), nc, c.as_mut_ptr()) };
            true
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            let _ = (a, w, s, c);
            false
        }
    }

    /// FP8 E4M3FN block dequantization: `dst[i] = fl32(e4m3(src[i]) × scale)` for `i <
    /// min(src.len(), dst.len())`, one f32 rounding (subnormals kept), any NaN result written as
    /// `f32::NAN` (codes `0x7F` / `0xFF`, or a NaN `scale`). NEON: the code's bits are moved into
    /// an f32 in registers (normal codes: sign, exponent + 120, mantissa; subnormal codes:
    /// `m × 2^-9`), 16 per step; elsewhere the 256-entry table of `moehal_core::quant::e4m3_to_f32`.
    /// Both give bitwise the same values.
    pub fn decode_e4m3(&self, src: &[u8], scale: f32, dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        #[cfg(target_arch = "aarch64")]
        if self.isa == Isa::Neon {
            // SAFETY: n bytes of src and n f32 of dst exist; NEON verified by for_isa.
            unsafe { neon::decode_e4m3(src.as_ptr(), n, scale, dst.as_mut_ptr()) };
            return;
        }
        let lut = e4m3_table();
        for (d, &b) in dst[..n].iter_mut().zip(&src[..n]) {
            let v = lut[b as usize] * scale;
            *d = if v.is_nan() { f32::NAN } else { v };
        }
    }

    /// Whether [`dot_i8`](Self::dot_i8) has a kernel here (AVX-512 table and AVX512-VNNI).
    pub fn has_vnni(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.isa == Isa::Avx512 && std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Exact int8 dot products: `out[i * NR + n] = Σ_k x[i * k + kk] · w[n * k + kk]` in i32 for
    /// `i < rows`, `n < nc`, on the instruction [`int8_kernel`](Self::int8_kernel) names:
    /// AVX512-VNNI where the machine has it, else on x86 the AVX2 `vpmaddwd` kernel (weights
    /// sign-extended to i16 in L1-sized K blocks of [`I8_KB`], once per call, and reused by every
    /// row), SMMLA / SDOT on aarch64. Every kernel gives the exact sum, so the choice never changes
    /// output bits. Returns false (nothing written) where that is `None` or when the sizes do not
    /// fit (`k > 131,071` included).
    pub fn dot_i8(&self, x: &[i8], rows: usize, w: &[i8], nc: usize, k: usize, out: &mut [i32]) -> bool {
        if self.int8_kernel().is_none()
            || rows == 0
            || nc > NR
            || k > moehal_core::quant::INT8_MAX_K
            || x.len() < rows * k
            || w.len() < nc * k
            || out.len() < rows * NR
        {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        match self.int8_kernel() {
            // SAFETY: extents checked above; AVX-512 and VNNI verified by has_vnni (int8_kernel).
            Some("vpdpbusd") => unsafe {
                quant_x86::dot_i8_vnni(x.as_ptr(), rows, w.as_ptr(), nc, k, out.as_mut_ptr())
            },
            _ => dot_i8_avx2_blocked(x, rows, w, nc, k, out),
        }
        #[cfg(target_arch = "aarch64")]
        match self.int8_kernel() {
            // SAFETY: extents checked above; the NEON table and FEAT_I8MM verified by int8_kernel.
            Some("smmla") => unsafe { neon::dot_i8_smmla(x.as_ptr(), rows, w.as_ptr(), nc, k, out.as_mut_ptr()) },
            // SAFETY: as above, FEAT_DotProd.
            _ => unsafe { neon::dot_i8_sdot(x.as_ptr(), rows, w.as_ptr(), nc, k, out.as_mut_ptr()) },
        }
        true
    }

    /// The instruction [`dot_i8`](Self::dot_i8) runs on here: `"vpdpbusd"` (AVX-512 table with
    /// AVX512-VNNI), `"vpmaddwd"` (AVX2, AVX-512 or AMX table without VNNI), `"smmla"` (NEON table, FEAT_I8MM), `"sdot"` (NEON table, FEAT_DotProd), or `None`
    /// (no int8 dot kernel: the caller's portable code runs). `MOEHAL_CPU_INT8=sdot` keeps a CPU with
    /// FEAT_I8MM on SDOT (to test both; validated by [`crate::env`]).
    pub fn int8_kernel(&self) -> Option<&'static str> {
        #[cfg(target_arch = "x86_64")]
        {
            if self.has_vnni() {
                Some("vpdpbusd")
            } else if matches!(self.isa, Isa::Avx2 | Isa::Avx512 | Isa::Amx) {
                Some("vpmaddwd")
            } else {
                None
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            static CHOICE: OnceLock<Option<&'static str>> = OnceLock::new();
            if self.isa != Isa::Neon {
                return None;
            }
            *CHOICE.get_or_init(|| {
                let sdot_forced = crate::env::int8_sdot_forced();
                if std::arch::is_aarch64_feature_detected!("i8mm") && !sdot_forced {
                    Some("smmla")
                } else if std::arch::is_aarch64_feature_detected!("dotprod") {
                    Some("sdot")
                } else {
                    None
                }
            })
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        None
    }
}

/// `2 × e2m1(code)` for the 16 MXFP4 codes, as i8 (exact: 0, ±1, ±2, ±3, ±4, ±6, ±8, ±12; the code
/// of −0 gives +0, which changes no sum): the byte table of the AVX2 (`vpshufb`) and NEON (`tbl`)
/// MXFP4 kernels, used with [`e8m0_half`].
#[allow(dead_code)] // Used by the x86-64 and aarch64 kernels only.
const E2M1_X2: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// E8M0 byte `e` as the f32 `2^(e − 128)` (half the block scale; NaN for 255): [`E2M1_X2`] holds
/// `2 × e2m1`, so `table × 2^(e − 128) = e2m1 × 2^(e − 127)`, the same real number and so the same
/// f32 rounding as OPS.md's `fl32(e2m1 × scale)`.
#[allow(dead_code)] // Used by the x86-64 and aarch64 kernels only.
#[inline(always)]
fn e8m0_half(e: u8) -> f32 {
    match e {
        255 => f32::NAN,
        // 2^-128 and 2^-127: subnormal.
        0 | 1 => f32::from_bits(1 << (21 + e as u32)),
        _ => f32::from_bits((e as u32 - 1) << 23),
    }
}

/// K block of the AVX2 int8 kernel: `NR` weight rows of `I8_KB` i16 values = 32 KiB, L1-resident.
pub const I8_KB: usize = 256;

/// [`Kernels::dot_i8`] on AVX2 (sizes checked by the caller): zero `out`, then per K block of
/// [`I8_KB`] sign-extend the `nc` weight rows to i16 once and run `quant_x86::dot_i8_avx2`.
#[cfg(target_arch = "x86_64")]
fn dot_i8_avx2_blocked(x: &[i8], rows: usize, w: &[i8], nc: usize, k: usize, out: &mut [i32]) {
    thread_local! {
        static WIDE: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    for i in 0..rows {
        out[i * NR..i * NR + nc].fill(0);
    }
    WIDE.with(|wide| {
        let mut wide = wide.borrow_mut();
        if wide.len() < nc * I8_KB {
            wide.resize(nc * I8_KB, 0);
        }
        let mut k0 = 0;
        while k0 < k {
            let kc = I8_KB.min(k - k0);
            for (c, dst) in wide.chunks_mut(kc).take(nc).enumerate() {
                for (d, &v) in dst.iter_mut().zip(&w[c * k + k0..c * k + k0 + kc]) {
                    *d = i16::from(v);
                }
            }
            // SAFETY: `x` holds rows * k values, so row i's block k0..k0+kc is inside; `wide` holds
            // nc rows of kc; `out` rows * NR (checked by dot_i8); AVX2 verified by for_isa (the
            // AVX-512 tables imply it).
            unsafe { quant_x86::dot_i8_avx2(x.as_ptr().add(k0), k, rows, wide.as_ptr(), kc, nc, kc, out.as_mut_ptr()) };
            k0 += kc;
        }
    });
}

impl Kernels {
    /// Router group limit of one token (OPS.md §2 step 3) on `sel` (no NaN), `ng` groups of `per`
    /// values: group score = the largest value, or with `top2sum` the sum of the two largest of the
    /// multiset; the `topk_group` best groups (ties: lower group index) are kept and every value of
    /// the other groups is set to `-inf`. Returns the kept-group bit mask, or `None` (nothing
    /// written) where this table has no such kernel, `per % 16 != 0`, `ng > 16`, or the lengths or
    /// `topk_group` do not fit.
    #[inline]
    pub fn group_limit(&self, sel: &mut [f32], ng: usize, per: usize, top2sum: bool, topk_group: usize) -> Option<u32> {
        let f = self.group_limit?;
        if !(1..=16).contains(&ng)
            || per == 0
            || !per.is_multiple_of(16)
            || sel.len() != ng * per
            || !(1..=ng).contains(&topk_group)
        {
            return None;
        }
        // SAFETY: sel holds ng*per f32 with 1 <= ng <= 16; the ISA was verified by for_isa.
        Some(unsafe { f(sel.as_mut_ptr(), ng, per, top2sum, topk_group) })
    }

    /// Fused sigmoid scoring of one router token: for finite `l[i]`, `s[i] = sigmoid(l[i])` (as
    /// [`Kernels::sigmoid`]) and `sel[i] = s[i] + bias[i]` (`s[i]` without bias), `-inf` where not
    /// finite; for non-finite `l[i]`, `s[i] = 0`, `sel[i] = -inf`. Returns false (and does nothing)
    /// where this table has no such kernel or the lengths differ.
    #[inline]
    pub fn sigmoid_select(&self, l: &[f32], bias: Option<&[f32]>, s: &mut [f32], sel: &mut [f32]) -> bool {
        let Some(f) = self.sigmoid_select else { return false };
        let n = l.len();
        if s.len() != n || sel.len() != n || bias.is_some_and(|b| b.len() != n) {
            return false;
        }
        let bp = bias.map_or(std::ptr::null(), |b| b.as_ptr());
        // SAFETY: every slice holds n f32 (bias null or n); the ISA was verified by for_isa.
        unsafe { f(l.as_ptr(), bp, s.as_mut_ptr(), sel.as_mut_ptr(), n) };
        true
    }

    /// Top-`k` selection (`1 <= k <= 16`) of `sel` (no NaN; `-inf` = not selectable): the candidates
    /// are a superset of the `k` largest values holding every element at least as large as any member
    /// of the top `k` (so all ties) and no `-inf`, in ascending index order. Returns `Some(n)`, their
    /// count; if `n <= 16` the selection is done: `ids[..min(n, k)]` hold the winners by value
    /// descending, ties by lower index; otherwise the candidates are in `cv[..n]` (values) and
    /// `ci[..n]` (indices). `None` where this table has no such kernel or the arguments do not fit
    /// (`cv`, `ci` must hold `sel.len() + 16`, `ids` at least `k`). Blocks `b < 64` of 16 elements
    /// (`sel[16b..16b+16]`) with bit `b` of `skip` set are not read: pass a set bit only for a block
    /// that holds nothing but `-inf` (e.g. a dropped group), else the result is wrong (never unsafe).
    #[inline]
    pub fn topk_select(
        &self,
        sel: &[f32],
        k: usize,
        skip: u64,
        cv: &mut [f32],
        ci: &mut [u32],
        ids: &mut [i32],
    ) -> Option<usize> {
        let f = self.topk_select?;
        let e = sel.len();
        if !(1..=16).contains(&k) || cv.len() < e + 16 || ci.len() < e + 16 || ids.len() < k || e > i32::MAX as usize {
            return None;
        }
        // SAFETY: sel holds e f32; cv and ci hold e + 16 (the kernel's full-vector stores end
        // before that); ids holds k; the ISA was verified by for_isa.
        Some(unsafe {
            f(
                sel.as_ptr(),
                e,
                k,
                skip,
                cv.as_mut_ptr(),
                ci.as_mut_ptr(),
                ids.as_mut_ptr(),
            )
        })
    }
}

/// Ascending 16-element block indices `< nb`, leaving out the blocks `b < 64` whose bit is set in
/// `skip`: the block walk of the router's top-k kernels (see [`Kernels::topk_select`]).
pub(super) struct Blocks {
    bits: u64,
    next: usize,
    nb: usize,
}

impl Blocks {
    pub(super) fn new(nb: usize, skip: u64) -> Self {
        let all = if nb >= 64 { u64::MAX } else { (1u64 << nb) - 1 };
        Blocks {
            bits: all & !skip,
            next: 64,
            nb,
        }
    }

    #[inline(always)]
    pub(super) fn next(&mut self) -> Option<usize> {
        if self.bits != 0 {
            let b = self.bits.trailing_zeros() as usize;
            self.bits &= self.bits - 1;
            return Some(b);
        }
        if self.next < self.nb {
            self.next += 1;
            return Some(self.next - 1);
        }
        None
    }
}

/// Whether this CPU has the bf16 pair dot product of the table's `micro_dot`, detected once:
/// AVX512-BF16 (`vdpbf16ps`) on x86-64, FEAT_BF16 (`bfmmla` / `bfdot`) on aarch64.
fn cpu_has_bf16_dot() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(target_arch = "aarch64")]
        {
            std::arch::is_aarch64_feature_detected!("bf16")
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            false
        }
    })
}

impl Kernels {
    /// Whether this table has a usable bf16 pair-dot kernel on this machine: the AVX-512 table on a
    /// CPU with AVX512-BF16 (`vdpbf16ps`), or the NEON table on a CPU with FEAT_BF16 (`bfmmla`).
    pub fn has_dot(&self) -> bool {
        self.micro_dot.is_some() && cpu_has_bf16_dot()
    }

    /// `vdpbf16ps` microkernel on bf16 pairs: `c[i, 0..NR] (+)= sum_{p < kp} (lo(a) * lo(b) + hi(a) *
    /// hi(b))` with `a = a[i*lda + p]`, `b = b[p*NR + 0..NR]`, where each `u32` holds two bf16 bit
    /// patterns (the even-k element in the low half). Products of bf16 values are exact in f32; sums
    /// are f32 (the instruction flushes subnormal inputs and outputs to zero). `c` has row stride
    /// [`NR`]; with `accumulate == false` the old `c` is ignored. Returns false (and does nothing) where
    /// [`Kernels::has_dot`] is false or the slices are too short.
    #[inline]
    pub fn micro_dot(
        &self,
        a: &[u32],
        lda: usize,
        mr: usize,
        kp: usize,
        b: &[u32],
        c: &mut [f32],
        accumulate: bool,
    ) -> bool {
        let Some(f) = self.micro_dot else { return false };
        if !self.has_dot()
            || !(1..=MR).contains(&mr)
            || (kp > 0 && a.len() < (mr - 1) * lda + kp)
            || b.len() < kp * NR
            || c.len() < mr * NR
        {
            return false;
        }
        // SAFETY: the checks above bound every access; AVX512-BF16 and the table's ISA were verified.
        unsafe { f(a.as_ptr(), lda, mr, kp, b.as_ptr(), c.as_mut_ptr(), accumulate) };
        true
    }

    /// Pack a full-width block (`NR` columns, `kc` values of k) of bf16 weights into the pair panel
    /// `dst[p*NR + c] = bits(w(2p, c)) | bits(w(2p+1, c)) << 16`, `p < ceil(kc/2)` (a missing odd
    /// element is 0). `nk`: element (k, c) is `src[c*ld + k]` (needs `kc % 32 == 0`), else
    /// `src[k*ld + c]`. Returns false (the caller then packs with generic code) where this table has
    /// no such kernel or the arguments do not fit it.
    #[inline]
    pub fn pack_dot(&self, src: &[half::bf16], ld: usize, nk: bool, kc: usize, dst: &mut [u32]) -> bool {
        let Some(f) = self.pack_dot else { return false };
        if !self.has_dot() || kc == 0 || (nk && !kc.is_multiple_of(32)) {
            return false;
        }
        let need = if nk { (NR - 1) * ld + kc } else { (kc - 1) * ld + NR };
        if src.len() < need || dst.len() < kc.div_ceil(2) * NR {
            return false;
        }
        // SAFETY: the checks above bound every element the kernel addresses (prefetch hints may point
        // past the slice, which never faults); the table's ISA was verified by for_isa.
        unsafe { f(nk, src.as_ptr() as *const u16, ld, kc, dst.as_mut_ptr()) };
        true
    }
}

/// f32 values of the 256 E4M3FN bytes (`moehal_core::quant::e4m3_to_f32`).
pub(crate) fn e4m3_table() -> &'static [f32; 256] {
    static LUT: OnceLock<[f32; 256]> = OnceLock::new();
    LUT.get_or_init(|| std::array::from_fn(|b| moehal_core::quant::e4m3_to_f32(b as u8)))
}

/// The aarch64 CPU features the NEON table looks at (Arm ARM names as spelled by
/// `std::arch::is_aarch64_feature_detected!`), each with whether this machine reports it; empty on
/// other architectures. `neon` gates the table, `bf16` the BFDOT pair kernel ([`Kernels::has_dot`]),
/// `dotprod` / `i8mm` the SDOT / SMMLA int8 kernels ([`Kernels::int8_kernel`]); `fp16` and `sve` are
/// reported for information (no kernel needs them: f16 widening uses the ARMv8.0 `fcvtl`).
pub fn aarch64_features() -> Vec<(&'static str, bool)> {
    #[cfg(target_arch = "aarch64")]
    {
        vec![
            ("neon", std::arch::is_aarch64_feature_detected!("neon")),
            ("fp16", std::arch::is_aarch64_feature_detected!("fp16")),
            ("dotprod", std::arch::is_aarch64_feature_detected!("dotprod")),
            ("bf16", std::arch::is_aarch64_feature_detected!("bf16")),
            ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
            ("sve", std::arch::is_aarch64_feature_detected!("sve")),
        ]
    }
    #[cfg(not(target_arch = "aarch64"))]
    Vec::new()
}

impl Kernels {
    /// The kernel each op family runs with this table on this machine, as `(family, kernel)` pairs
    /// for `moehal devices` and the tests that prove the runtime selection:
    /// `gemm` (f32 panel microkernel), `bf16-decode` (small-M bf16 weights read in place), `bf16-dot`
    /// (pair-dot kernel: `vdpbf16ps` / `bfmmla`, or `none`), `int8-dot` ([`Kernels::int8_kernel`] or
    /// `portable`), `mxfp4-decode` ([`Kernels::dot_mxfp4`] or `portable`), `fp8-dequant`
    /// ([`Kernels::decode_e4m3`]: `neon` or `portable`), `widen` (bf16/f16 to f32), `router` (top-k
    /// selection), `activation` (sigmoid / exp / SwiGLU). A kernel named `portable` is the
    /// table-independent Rust code.
    pub fn kernel_choices(&self) -> Vec<(&'static str, String)> {
        let isa = self.isa.name();
        let or_portable = |has: bool| if has { isa.to_string() } else { "portable".to_string() };
        let bf16_dot = if !self.has_dot() {
            "none".to_string()
        } else if cfg!(target_arch = "aarch64") {
            format!("{isa}-bfmmla")
        } else {
            format!("{isa}-vdpbf16ps")
        };
        vec![
            ("gemm", format!("{isa} {MR}x{NR}")),
            (
                "bf16-decode",
                or_portable(self.micro_bf16.is_some() && self.dot_nk_bf16.is_some()),
            ),
            ("bf16-dot", bf16_dot),
            (
                "int8-dot",
                self.int8_kernel()
                    .map_or_else(|| "portable".to_string(), |k| format!("{isa}-{k}")),
            ),
            (
                "mxfp4-decode",
                or_portable(matches!(self.isa, Isa::Amx | Isa::Avx512 | Isa::Avx2 | Isa::Neon)),
            ),
            ("fp8-dequant", or_portable(self.isa == Isa::Neon)),
            ("widen", or_portable(self.isa != Isa::Scalar)),
            ("router", or_portable(self.topk_select.is_some())),
            ("activation", or_portable(self.isa != Isa::Scalar)),
        ]
    }
}

/// View a slice of a 16-bit element type as its bits.
fn as_u16<T: crate::elem::Elem>(s: &[T]) -> &[u16] {
    assert_eq!(std::mem::size_of::<T>(), 2);
    // SAFETY: T is bf16 or f16 here (size 2, alignment 2, every bit pattern valid as u16).
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u16, s.len()) }
}

/// Row-major `[rows, cols]` output shared by parallel tasks that each write one tile: a tile is a
/// (row range, column panel) pair; row ranges are checked disjoint and sorted at construction and each
/// tile can be claimed once, so no two tasks can alias.
pub struct Tiles<'a, T> {
    ptr: *mut T,
    cols: usize,
    panel: usize,
    row_ranges: Vec<(usize, usize)>,
    claimed: Vec<std::sync::atomic::AtomicBool>,
    _l: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: the tiles handed out are disjoint (see `tile`), so sharing across threads is like sharing
// disjoint &mut slices; T: Send.
unsafe impl<T: Send> Sync for Tiles<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Tiles<'_, T> {}

/// One claimed tile: `rows` rows of `width` elements with row stride `stride`.
pub struct TileMut<'t, T> {
    ptr: *mut T,
    rows: usize,
    width: usize,
    stride: usize,
    _l: std::marker::PhantomData<&'t mut T>,
}

impl<'a, T> Tiles<'a, T> {
    /// Tiles over `data` (`rows * cols` elements, row-major) with column panels of `panel` columns
    /// and the given row ranges, which must be sorted, non-empty, disjoint and within the data.
    pub fn new(data: &'a mut [T], cols: usize, panel: usize, row_ranges: Vec<(usize, usize)>) -> Self {
        let mut prev = 0;
        for &(a, b) in &row_ranges {
            assert!(a >= prev && b > a && b.checked_mul(cols).is_some_and(|e| e <= data.len()));
            prev = b;
        }
        assert!(panel > 0);
        let panels = cols.div_ceil(panel);
        let claimed = (0..row_ranges.len() * panels)
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect();
        Tiles {
            ptr: data.as_mut_ptr(),
            cols,
            panel,
            row_ranges,
            claimed,
            _l: std::marker::PhantomData,
        }
    }

    /// Claim tile (row range `ri`, column panel `p`); panics if claimed twice (an internal bug).
    pub fn tile(&self, ri: usize, p: usize) -> TileMut<'_, T> {
        let panels = self.cols.div_ceil(self.panel);
        assert!(p < panels);
        let was = self.claimed[ri * panels + p].swap(true, std::sync::atomic::Ordering::AcqRel);
        assert!(!was, "tile claimed twice");
        let (r0, r1) = self.row_ranges[ri];
        let c0 = p * self.panel;
        let width = self.panel.min(self.cols - c0);
        // SAFETY: r0*cols + c0 is inside the data (checked in new); the tile is claimed once.
        let ptr = unsafe { self.ptr.add(r0 * self.cols + c0) };
        TileMut {
            ptr,
            rows: r1 - r0,
            width,
            stride: self.cols,
            _l: std::marker::PhantomData,
        }
    }
}

impl<T> TileMut<'_, T> {
    /// Row `i` of the tile (`width` elements).
    pub fn row(&mut self, i: usize) -> &mut [T] {
        assert!(i < self.rows);
        // SAFETY: row i of this tile lies inside the data and in no other tile (rows of distinct row
        // ranges and columns of distinct panels are disjoint); &mut self prevents two live rows.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.stride), self.width) }
    }

    /// Width of the tile in columns.
    pub fn width(&self) -> usize {
        self.width
    }
}

/// Hint the CPU to start loading the cache line holding `p[0]` (no effect on correctness).
#[inline(always)]
pub fn prefetch<T>(p: &[T]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(first) = p.first() {
        // SAFETY: prefetch never faults and reads nothing architecturally; the pointer is valid anyway.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(first as *const T as *const i8) }
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(first) = p.first() {
        // SAFETY: `prfm` is a hint: it never faults and changes no architectural state.
        unsafe {
            std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) first as *const T, options(nostack, preserves_flags, readonly))
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn every_isa_matches_scalar() {
        let mut s = 7u64;
        let kc = 37;
        let lda = 41;
        let a: Vec<f32> = (0..MR * lda).map(|_| lcg(&mut s)).collect();
        let b: Vec<f32> = (0..kc * NR).map(|_| lcg(&mut s)).collect();
        let c0: Vec<f32> = (0..MR * NR).map(|_| lcg(&mut s)).collect();
        let xs: Vec<f32> = (0..200).map(|i| (i as f32 - 100.0) * 0.9 + lcg(&mut s)).collect();
        for isa in Isa::all_available() {
            let k = Kernels::for_isa(isa).unwrap();
            for mr in 1..=MR {
                for acc in [false, true] {
                    let mut c = c0.clone();
                    k.micro(&a, lda, mr, kc, &b, &mut c, acc);
                    for i in 0..mr {
                        for j in 0..NR {
                            let mut want = if acc { c0[i * NR + j] as f64 } else { 0.0 };
                            for kk in 0..kc {
                                want += a[i * lda + kk] as f64 * b[kk * NR + j] as f64;
                            }
                            assert!((c[i * NR + j] as f64 - want).abs() < 1e-4, "{isa:?} mr={mr} {i},{j}");
                        }
                    }
                    assert_eq!(&c[mr * NR..], &c0[mr * NR..], "{isa:?} wrote past mr rows");
                }
            }
            let src: Vec<f32> = (0..NR * 16).map(|i| i as f32).collect();
            let mut dst = vec![0f32; NR * 16];
            k.transpose_nr16(&src, &mut dst);
            for c in 0..NR {
                for kk in 0..16 {
                    assert_eq!(dst[kk * NR + c], src[c * 16 + kk]);
                }
            }
            let mut out = vec![0f32; xs.len()];
            k.sigmoid(&xs, &mut out);
            for (x, o) in xs.iter().zip(&out) {
                let want = 1.0 / (1.0 + (-(*x as f64)).exp());
                assert!(
                    (*o as f64 - want).abs() <= 3e-7 * want.max(1e-30) + 1e-38,
                    "{isa:?} sigmoid {x}: {o} vs {want}"
                );
            }
            let sum = k.exp_shift(&xs[..90], &mut out[..90], 3.0);
            let mut want_sum = 0.0f64;
            for (x, o) in xs[..90].iter().zip(&out[..90]) {
                let want = ((*x - 3.0) as f64).exp();
                want_sum += want;
                assert!(
                    (*o as f64 - want).abs() <= 3e-7 * want + 1e-38,
                    "{isa:?} exp {x}: {o} vs {want}"
                );
            }
            assert!((sum as f64 - want_sum).abs() <= 1e-6 * want_sum);
            let up: Vec<f32> = xs.iter().map(|x| x * 0.5 - 1.0).collect();
            for limit in [f32::INFINITY, 7.0] {
                k.silu_mul(&xs, &up, &mut out, limit);
                for i in 0..xs.len() {
                    let g = (xs[i] as f64).min(limit as f64);
                    let u = (up[i] as f64).clamp(-limit as f64, limit as f64);
                    let want = g / (1.0 + (-g).exp()) * u;
                    assert!(
                        (out[i] as f64 - want).abs() <= 1e-6 * want.abs() + 1e-30,
                        "{isa:?} silu {}: {} vs {want}",
                        xs[i],
                        out[i]
                    );
                }
            }
        }
    }

    #[test]
    fn dot_kernels_match_definition() {
        let Some(k) = Isa::all_available()
            .into_iter()
            .filter_map(Kernels::for_isa)
            .find(|k| k.has_dot())
        else {
            println!("skipped: no bf16 pair dot (AVX512-BF16 / FEAT_BF16) on this CPU");
            return;
        };
        // Small integers: every product and partial sum is exact in f32, so any order gives the same.
        let bf = |v: i32| half::bf16::from_f32(v as f32).to_bits() as u32;
        let kp = 19;
        let lda = 23;
        let a: Vec<u32> = (0..MR * lda)
            .map(|i| bf((i % 7) as i32 - 3) | bf((i % 5) as i32 - 2) << 16)
            .collect();
        let b: Vec<u32> = (0..kp * NR)
            .map(|i| bf((i % 9) as i32 - 4) | bf((i % 4) as i32 - 1) << 16)
            .collect();
        let lo = |v: u32| half::bf16::from_bits(v as u16).to_f32();
        let hi = |v: u32| half::bf16::from_bits((v >> 16) as u16).to_f32();
        for mr in 1..=MR {
            for acc in [false, true] {
                let c0: Vec<f32> = (0..MR * NR).map(|i| (i % 3) as f32).collect();
                let mut c = c0.clone();
                assert!(k.micro_dot(&a, lda, mr, kp, &b, &mut c, acc));
                for i in 0..mr {
                    for j in 0..NR {
                        let mut want = if acc { c0[i * NR + j] } else { 0.0 };
                        for p in 0..kp {
                            let (x, w) = (a[i * lda + p], b[p * NR + j]);
                            want += lo(x) * lo(w) + hi(x) * hi(w);
                        }
                        assert_eq!(c[i * NR + j], want, "mr={mr} acc={acc} {i},{j}");
                    }
                }
                assert_eq!(&c[mr * NR..], &c0[mr * NR..], "wrote past mr rows");
            }
        }
        // Packing, both layouts, an odd kc for KN (tables without a packing kernel use generic code).
        if k.pack_dot.is_none() {
            return;
        }
        let ld = 77;
        let src: Vec<half::bf16> = (0..NR * ld).map(|i| half::bf16::from_bits(i as u16 ^ 0x3c00)).collect();
        for (nk, kc) in [(true, 64usize), (false, 33)] {
            let mut dst = vec![0u32; kc.div_ceil(2) * NR];
            assert!(k.pack_dot(&src, ld, nk, kc, &mut dst));
            for q in 0..kc.div_ceil(2) {
                for c in 0..NR {
                    let at = |kk: usize| {
                        if kk >= kc {
                            0
                        } else if nk {
                            src[c * ld + kk].to_bits() as u32
                        } else {
                            src[kk * ld + c].to_bits() as u32
                        }
                    };
                    assert_eq!(dst[q * NR + c], at(2 * q) | at(2 * q + 1) << 16, "nk={nk} q={q} c={c}");
                }
            }
        }
    }

    /// The BFMMLA kernel (the NEON table's `micro_dot`) gives bitwise the BFDOT kernel's output on
    /// random bf16 data of mixed signs and magnitudes (where the roundings matter), every row count,
    /// odd and even pair counts, with and without accumulation: BFMMLA is two BFDOT steps in k order
    /// (Arm ARM `BFMatMulAdd`), so the two kernels are one arithmetic. Runs where FEAT_BF16 is
    /// reported (qemu `-cpu max` in scripts/aarch64-test.sh).
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn bfmmla_is_bitwise_bfdot() {
        if !std::arch::is_aarch64_feature_detected!("bf16") {
            println!("skipped: no FEAT_BF16");
            return;
        }
        let mut s = 11u64;
        let rnd_bf = |s: &mut u64| {
            let v = lcg(s) * 2f32.powi((lcg(s) * 20.0) as i32);
            half::bf16::from_f32(v).to_bits() as u32
        };
        let lda = 29;
        let a: Vec<u32> = (0..MR * lda).map(|_| rnd_bf(&mut s) | rnd_bf(&mut s) << 16).collect();
        for kp in [1usize, 2, 19, 24] {
            let b: Vec<u32> = (0..kp * NR).map(|_| rnd_bf(&mut s) | rnd_bf(&mut s) << 16).collect();
            let c0: Vec<f32> = (0..MR * NR).map(|_| lcg(&mut s) * 100.0).collect();
            for mr in 1..=MR {
                for acc in [false, true] {
                    let (mut c1, mut c2) = (c0.clone(), c0.clone());
                    // SAFETY: FEAT_BF16 detected above; a holds MR*lda >= (mr-1)*lda + kp (kp < lda),
                    // b holds kp*NR, c1 and c2 MR*NR.
                    unsafe {
                        neon::micro_bfdot(a.as_ptr(), lda, mr, kp, b.as_ptr(), c1.as_mut_ptr(), acc);
                        neon::micro_bfmmla(a.as_ptr(), lda, mr, kp, b.as_ptr(), c2.as_mut_ptr(), acc);
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&c1), bits(&c2), "kp={kp} mr={mr} acc={acc}");
                    assert_eq!(&c2[mr * NR..], &c0[mr * NR..], "wrote past mr rows");
                }
            }
        }
    }

    /// `decode_e4m3` on every table is `fl32(e4m3_to_f32(code) × scale)` bit for bit (NaN as
    /// `f32::NAN`) for all 256 codes and scales that are exact, rounding, subnormal (2^-127, E8M0
    /// byte 0), overflowing and NaN; an odd length runs the kernels' tails.
    #[test]
    fn decode_e4m3_matches_core() {
        let codes: Vec<u8> = (0..=255u8).chain([0x80, 0x7F, 0x01, 0x08, 0xF0, 0x77, 0x00]).collect();
        let scales = [
            1.0f32,
            0.375,
            1.1,
            f32::from_bits(1 << 22),
            2f32.powi(100),
            3e38,
            f32::NAN,
        ];
        for isa in Isa::all_available() {
            let k = Kernels::for_isa(isa).unwrap();
            for &sc in &scales {
                let mut out = vec![0f32; codes.len() + 3];
                k.decode_e4m3(&codes, sc, &mut out);
                for (i, &b) in codes.iter().enumerate() {
                    let want = moehal_core::quant::e4m3_to_f32(b) * sc;
                    let want = if want.is_nan() { f32::NAN } else { want };
                    assert_eq!(out[i].to_bits(), want.to_bits(), "{isa:?} code {b:#04x} scale {sc}");
                }
                assert_eq!(&out[codes.len()..], &[0.0; 3], "{isa:?} wrote past the codes");
            }
        }
    }

    /// `(2 × e2m1 as i8) × 2^(e − 128)` is OPS.md's dequantized weight `fl32(e2m1 × 2^(e − 127))`
    /// bit for bit, for every code and every E8M0 byte (subnormal, overflowing and NaN scales
    /// included), except that the code of −0 gives +0: the AVX2 and NEON MXFP4 kernels' rule.
    #[test]
    fn e2m1_table_times_half_scale_is_the_dequantized_weight() {
        use moehal_core::quant::{e2m1_to_f32, e8m0_to_f32};
        for e in 0..=255u8 {
            for (c, &t) in E2M1_X2.iter().enumerate() {
                let got = t as f32 * e8m0_half(e);
                let want = e2m1_to_f32(c as u8) * e8m0_to_f32(e);
                if want.is_nan() {
                    assert!(got.is_nan(), "code {c} e {e}");
                } else if want == 0.0 {
                    assert_eq!(got, 0.0, "code {c} e {e}");
                } else {
                    assert_eq!(got.to_bits(), want.to_bits(), "code {c} e {e}: {got} vs {want}");
                }
            }
        }
    }

    /// `dot_mxfp4` on every table that has it (AVX-512, AVX2, NEON) against the definition, on values
    /// where every product and partial sum is exact in f32 (so any summation order gives the same
    /// bits): small-integer activations, scales 2^-2..2^2; a NaN scale (E8M0 255) gives NaN for its
    /// column only; columns past `nc` are not written.
    #[test]
    fn mxfp4_decode_kernels_match_definition() {
        use moehal_core::quant::{e2m1_to_f32, e8m0_to_f32};
        let k = 96;
        let mut ran = 0;
        for isa in Isa::all_available() {
            let kern = Kernels::for_isa(isa).unwrap();
            for nc in [1usize, 5, NR] {
                let w: Vec<u8> = (0..nc * k / 2).map(|i| ((i * 97 + 13) % 256) as u8).collect();
                let mut sc: Vec<u8> = (0..nc * k / 32).map(|i| 125 + (i % 5) as u8).collect();
                if nc > 1 {
                    sc[k / 32] = 255; // column 1, block 0: NaN
                }
                let x: Vec<f32> = (0..MR * k).map(|i| ((i * 5 + i / 7) % 9) as f32 - 4.0).collect();
                // The kernels' split layout: per 32-block, the 16 even k then the 16 odd k.
                let mut a = vec![0f32; MR * k];
                for i in 0..MR {
                    for b in 0..k / 32 {
                        for j in 0..16 {
                            a[i * k + b * 32 + j] = x[i * k + b * 32 + 2 * j];
                            a[i * k + b * 32 + 16 + j] = x[i * k + b * 32 + 2 * j + 1];
                        }
                    }
                }
                for mr in 1..=MR {
                    let mut c = vec![-7f32; MR * NR];
                    if !kern.dot_mxfp4(&a, mr, k, &w, &sc, nc, &mut c) {
                        continue;
                    }
                    ran += 1;
                    for i in 0..mr {
                        for n in 0..NR {
                            let got = c[i * NR + n];
                            if n >= nc {
                                assert_eq!(got, -7.0, "{isa:?} wrote column {n} >= nc {nc}");
                                continue;
                            }
                            let want: f32 = (0..k)
                                .map(|kk| {
                                    let byte = w[n * k / 2 + kk / 2];
                                    let code = if kk % 2 == 0 { byte & 0xF } else { byte >> 4 };
                                    let wv = e2m1_to_f32(code) * e8m0_to_f32(sc[n * k / 32 + kk / 32]);
                                    x[i * k + kk] * wv
                                })
                                .sum();
                            if want.is_nan() {
                                assert!(got.is_nan(), "{isa:?} mr={mr} nc={nc} {i},{n}: {got}");
                            } else {
                                assert_eq!(got, want, "{isa:?} mr={mr} nc={nc} {i},{n}");
                            }
                        }
                    }
                }
            }
        }
        if cfg!(any(target_arch = "aarch64", target_arch = "x86_64")) && Kernels::best().isa() != Isa::Scalar {
            assert!(ran > 0, "the best table has an MXFP4 decode kernel; none ran");
        }
    }

    /// bf16 value with small-integer value `v` (exact), as bits.
    fn bf(v: i32) -> half::bf16 {
        half::bf16::from_f32(v as f32)
    }

    #[test]
    fn widen_kernels_are_exact() {
        // Every f16 and every bf16 bit pattern, an odd length so the scalar tails run too.
        let f16s: Vec<half::f16> = (0..=u16::MAX)
            .map(half::f16::from_bits)
            .chain([half::f16::ONE])
            .collect();
        let bf16s: Vec<half::bf16> = (0..=u16::MAX)
            .map(half::bf16::from_bits)
            .chain([half::bf16::ONE])
            .collect();
        let mut out = vec![0f32; f16s.len()];
        for isa in Isa::all_available() {
            let k = Kernels::for_isa(isa).unwrap();
            k.widen_f16(&f16s, &mut out);
            for (h, o) in f16s.iter().zip(&out) {
                let want = h.to_f32();
                assert!(
                    o.to_bits() == want.to_bits() || (o.is_nan() && want.is_nan()),
                    "{isa:?} f16 {h:?}"
                );
            }
            k.widen_bf16(&bf16s, &mut out);
            for (h, o) in bf16s.iter().zip(&out) {
                assert_eq!(o.to_bits(), (h.to_bits() as u32) << 16, "{isa:?} bf16 {h:?}");
            }
        }
    }

    #[test]
    fn decode_bf16_kernels_match_definition() {
        // Small integers: every product and partial sum is exact in f32, so any order gives the same.
        let mut tested = 0;
        for isa in Isa::all_available() {
            let k = Kernels::for_isa(isa).unwrap();
            for kc in [1usize, 7, 33] {
                let (lda, ldb, ldw) = (kc + 3, NR + 5, kc + 2);
                let a: Vec<f32> = (0..MR * lda).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
                let b: Vec<half::bf16> = (0..kc * ldb).map(|i| bf((i % 9) as i32 - 4)).collect();
                let w: Vec<half::bf16> = (0..NR * ldw).map(|i| bf((i % 13) as i32 - 6)).collect();
                for mr in 1..=MR {
                    let mut c = vec![f32::NAN; MR * NR];
                    if k.micro_bf16(&a, lda, mr, kc, &b, ldb, &mut c) {
                        tested += 1;
                        for i in 0..mr {
                            for n in 0..NR {
                                let want: f32 = (0..kc).map(|kk| a[i * lda + kk] * b[kk * ldb + n].to_f32()).sum();
                                assert_eq!(c[i * NR + n], want, "{isa:?} micro_bf16 kc={kc} mr={mr} {i},{n}");
                            }
                        }
                        assert!(c[mr * NR..].iter().all(|v| v.is_nan()), "{isa:?} wrote past mr rows");
                    }
                    let mut c = vec![f32::NAN; MR * NR];
                    if k.dot_nk_bf16(&a, lda, mr, kc, &w, ldw, &mut c) {
                        tested += 1;
                        for i in 0..mr {
                            for n in 0..NR {
                                let want: f32 = (0..kc).map(|kk| a[i * lda + kk] * w[n * ldw + kk].to_f32()).sum();
                                assert_eq!(c[i * NR + n], want, "{isa:?} dot_nk_bf16 kc={kc} mr={mr} {i},{n}");
                            }
                        }
                        assert!(c[mr * NR..].iter().all(|v| v.is_nan()), "{isa:?} wrote past mr rows");
                    }
                }
            }
        }
        if cfg!(target_arch = "aarch64") {
            assert!(tested > 0, "the NEON table has decode kernels; none ran");
        }
    }

    /// The signature of [`Kernels::dot_i8`] (x, rows, w, nc, k, out) -> ran.
    type DotI8 = dyn Fn(&[i8], usize, &[i8], usize, usize, &mut [i32]) -> bool;

    /// `dot_i8` against the i64 definition, odd row / column counts and K tails included.
    fn check_dot_i8(what: &str, f: &DotI8) -> usize {
        let mut ran = 0;
        for (rows, nc, k) in [
            (1usize, 1usize, 1usize),
            (3, 5, 7),
            (5, NR, 40),
            (8, 63, 131),
            (2, 2, 16),
        ] {
            let x: Vec<i8> = (0..rows * k).map(|i| ((i * 37 + 11) % 256) as u8 as i8).collect();
            let w: Vec<i8> = (0..nc * k).map(|i| ((i * 91 + 5) % 256) as u8 as i8).collect();
            let mut out = vec![i32::MIN; rows * NR];
            if !f(&x, rows, &w, nc, k, &mut out) {
                continue;
            }
            ran += 1;
            for i in 0..rows {
                for n in 0..NR {
                    let got = out[i * NR + n];
                    if n >= nc {
                        assert_eq!(got, i32::MIN, "{what}: wrote column {n} >= nc {nc}");
                        continue;
                    }
                    let want: i64 = (0..k).map(|kk| x[i * k + kk] as i64 * w[n * k + kk] as i64).sum();
                    assert_eq!(got as i64, want, "{what}: rows={rows} nc={nc} k={k} at {i},{n}");
                }
            }
        }
        ran
    }

    #[test]
    fn int8_dot_kernels_match_definition() {
        for isa in Isa::all_available() {
            let kern = Kernels::for_isa(isa).unwrap();
            let ran = check_dot_i8(&format!("{isa:?} dot_i8"), &|x, r, w, nc, k, o| {
                kern.dot_i8(x, r, w, nc, k, o)
            });
            assert_eq!(ran > 0, kern.int8_kernel().is_some(), "{isa:?}");
        }
        // Both aarch64 int8 kernels wherever the CPU has them (dot_i8 picks one per process).
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                // SAFETY: FEAT_DotProd detected; check_dot_i8 passes x: rows*k, w: nc*k, out: rows*NR.
                let f = |x: &[i8], r, w: &[i8], nc, k, o: &mut [i32]| {
                    unsafe { neon::dot_i8_sdot(x.as_ptr(), r, w.as_ptr(), nc, k, o.as_mut_ptr()) };
                    true
                };
                assert_eq!(check_dot_i8("sdot", &f), 5);
            }
            if std::arch::is_aarch64_feature_detected!("i8mm") {
                // SAFETY: FEAT_I8MM detected; extents as above.
                let f = |x: &[i8], r, w: &[i8], nc, k, o: &mut [i32]| {
                    unsafe { neon::dot_i8_smmla(x.as_ptr(), r, w.as_ptr(), nc, k, o.as_mut_ptr()) };
                    true
                };
                assert_eq!(check_dot_i8("smmla", &f), 5);
            }
        }
    }

    #[test]
    fn sigmoid_select_matches_definition() {
        let n = 37;
        let mut l: Vec<f32> = (0..n).map(|i| (i as f32 - 18.0) * 0.7).collect();
        l[3] = f32::INFINITY;
        l[7] = f32::NEG_INFINITY;
        l[11] = f32::NAN;
        let mut bias: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.25 - 0.5).collect();
        bias[20] = f32::INFINITY; // a finite logit whose biased score is not finite
        for isa in Isa::all_available() {
            let k = Kernels::for_isa(isa).unwrap();
            for b in [None, Some(&bias[..])] {
                let (mut s, mut sel) = (vec![7f32; n], vec![7f32; n]);
                if !k.sigmoid_select(&l, b, &mut s, &mut sel) {
                    continue;
                }
                let mut sg = vec![0f32; n];
                k.sigmoid(&l, &mut sg);
                for i in 0..n {
                    let (ws, wsel) = if l[i].is_finite() {
                        let v = sg[i] + b.map_or(0.0, |b| b[i]);
                        (sg[i], if v.is_finite() { v } else { f32::NEG_INFINITY })
                    } else {
                        (0.0, f32::NEG_INFINITY)
                    };
                    assert_eq!(
                        (s[i].to_bits(), sel[i].to_bits()),
                        (ws.to_bits(), wsel.to_bits()),
                        "{isa:?} {i}"
                    );
                }
            }
        }
    }
}
