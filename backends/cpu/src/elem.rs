//! Floating element types of the CPU kernels (`f32`, `bf16`, `f16`) and their conversions.
//!
//! Every conversion to a narrower type rounds once, to nearest even, exactly as the `half` crate does
//! (OPS.md, Conventions), so CPU outputs match the reference bit for bit where the maths is exact.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Element type tag of the raw-slice kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElemKind {
    /// IEEE binary32.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE binary16.
    F16,
}

/// A floating element the kernels read and write (`f32`, `half::bf16`, `half::f16`).
pub trait Elem: bytemuck::Pod + Send + Sync + Default + PartialEq + std::fmt::Debug {
    /// The tag of this type.
    const KIND: ElemKind;
    /// Widen one element to f32 (exact).
    fn to_f32(self) -> f32;
    /// Round one f32 to this type (round-to-nearest-even).
    fn from_f32(v: f32) -> Self;
    /// Widen `src` into `dst` (same length; exact).
    fn widen(src: &[Self], dst: &mut [f32]);
    /// Round `src` into `dst` (same length; round-to-nearest-even).
    fn narrow(src: &[f32], dst: &mut [Self]);
}

/// f32 → bf16 bits, round-to-nearest-even, NaN kept quiet with its sign; bit-identical to
/// `half::bf16::from_f32`, branch-free so that loops over it vectorize.
#[inline(always)]
pub fn f32_to_bf16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    let nan = (x & 0x7fff_ffff) > 0x7f80_0000;
    let rounded = (x.wrapping_add(0x7fff + ((x >> 16) & 1)) >> 16) as u16;
    let quiet = ((x >> 16) as u16) | 0x0040;
    if nan {
        quiet
    } else {
        rounded
    }
}

/// bf16 bits → f32 (exact).
#[inline(always)]
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

impl Elem for f32 {
    const KIND: ElemKind = ElemKind::F32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    fn widen(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn narrow(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
}

impl Elem for bf16 {
    const KIND: ElemKind = ElemKind::Bf16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16_bits_to_f32(self.to_bits())
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_bits(f32_to_bf16_bits(v))
    }
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = bf16_bits_to_f32(s.to_bits());
        }
    }
    fn narrow(src: &[f32], dst: &mut [Self]) {
        let dst: &mut [u16] = bytemuck::cast_slice_mut(dst);
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32_to_bf16_bits(*s);
        }
    }
}

impl Elem for f16 {
    const KIND: ElemKind = ElemKind::F16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn widen(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn narrow(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_half() {
        let specials = [
            0.0f32,
            -0.0,
            1.0,
            f32::MIN_POSITIVE,
            1e-40,
            -1e-40,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7f80_0001),
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0x3f80_8001),
            f32::from_bits(0x7f7f_ffff),
        ];
        for &v in &specials {
            assert_eq!(
                f32_to_bf16_bits(v),
                bf16::from_f32(v).to_bits(),
                "{v:e} {:#x}",
                v.to_bits()
            );
        }
        let mut x: u32 = 0x1234_5678;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = f32::from_bits(x);
            assert_eq!(f32_to_bf16_bits(v), bf16::from_f32(v).to_bits(), "{:#x}", x);
        }
    }
}
