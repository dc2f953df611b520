//! `quantize_fp8` / `quantize_int8` (kernels/cuda/quantize.cu, OPS.md §6): dynamic activation
//! quantization, bitwise the reference's bytes and scales. No value checks are needed (every
//! input value has a defined result), so nothing waits for the stream.

use moehal_core::ops::{QuantizeFp8, QuantizeInt8};
use moehal_core::quant::{ScaleFormat, FP8_BLOCK};
use moehal_core::{Checked, Result};

use super::grid1;
use crate::device::CudaBackend;
use crate::kernels::Unit;
use crate::raw::Arg;

/// Threads per block of both kernels (8 warps).
pub(crate) const QUANT_THREADS: u32 = 256;
/// Grid cap: the kernels are grid-stride (fp8 over warps, int8 over rows).
const GRID_CAP: usize = 1 << 16;

/// `quantize_fp8` launch: `(warps of work = M · ⌈K/128⌉, blocks)`; one warp per 128-wide group.
pub(crate) fn fp8_launch(m: usize, k: usize) -> (usize, u32) {
    let groups = m * k.div_ceil(FP8_BLOCK);
    (groups, grid1(groups, (QUANT_THREADS / 32) as usize, GRID_CAP))
}

/// `quantize_int8` launch: blocks (one per row, block-stride beyond the cap).
pub(crate) fn int8_launch(m: usize) -> u32 {
    grid1(m, 1, GRID_CAP)
}

impl CudaBackend {
    /// `Backend::quantize_fp8` on this device.
    pub(crate) fn run_quantize_fp8(&self, args: Checked<QuantizeFp8<'_>>) -> Result<()> {
        const OP: &str = "quantize_fp8";
        let a = args.into_inner();
        let (m, k) = (a.x.shape()[0], a.x.shape()[1]);
        let x = self.dptr(&a.x, OP, "x")?;
        let xq = self.dptr_mut(&a.xq, OP, "xq")?;
        let sc = self.dptr_mut(&a.x_scale, OP, "x_scale")?;
        let s = self.begin()?;
        let (groups, grid) = fp8_launch(m, k);
        if groups == 0 {
            return Ok(());
        }
        let fmt = match a.scale_format() {
            ScaleFormat::F32 => "f32",
            ScaleFormat::Ue8m0 => "ue8m0",
        };
        let name = format!("quantize_fp8_{}_{fmt}", a.x.dtype().name());
        let args = [
            Arg::P(x),
            Arg::P(xq),
            Arg::P(sc),
            Arg::I64(m as i64),
            Arg::I64(k as i64),
        ];
        self.launch(s, Unit::Quantize, &name, (grid, 1), QUANT_THREADS, 0, &args)
    }

    /// `Backend::quantize_int8` on this device.
    pub(crate) fn run_quantize_int8(&self, args: Checked<QuantizeInt8<'_>>) -> Result<()> {
        const OP: &str = "quantize_int8";
        let a = args.into_inner();
        let (m, k) = (a.x.shape()[0], a.x.shape()[1]);
        let x = self.dptr(&a.x, OP, "x")?;
        let xq = self.dptr_mut(&a.xq, OP, "xq")?;
        let sc = self.dptr_mut(&a.x_scale, OP, "x_scale")?;
        let s = self.begin()?;
        // K = 0 still writes one scale (1) per row.
        if m == 0 {
            return Ok(());
        }
        let name = format!("quantize_int8_{}", a.x.dtype().name());
        let args = [
            Arg::P(x),
            Arg::P(xq),
            Arg::P(sc),
            Arg::I64(m as i64),
            Arg::I64(k as i64),
        ];
        self.launch(s, Unit::Quantize, &name, (int8_launch(m), 1), QUANT_THREADS, 0, &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moehal_core::quant::{e8m0_to_f32, f32_to_e4m3, ue8m0_ceil};

    /// The fp8 kernel's warp → (row, group, k range) map, as quantize.cu computes it, covers every
    /// element of `[M, K]` exactly once and every scale slot once, for partial last groups, K < 128,
    /// K = 0 and grids smaller than the work (warp-stride).
    #[test]
    fn fp8_warp_map_covers_every_element_once() {
        for (m, k) in [
            (1usize, 1usize),
            (3, 127),
            (2, 128),
            (5, 129),
            (4, 300),
            (7, 0),
            (70_000, 3),
        ] {
            let (groups, grid) = fp8_launch(m, k);
            let kb = k.div_ceil(128);
            assert_eq!(groups, m * kb);
            let nw = grid as usize * (QUANT_THREADS / 32) as usize;
            assert!(groups == 0 || grid as usize <= GRID_CAP);
            let mut seen = vec![0u8; m * k];
            let mut scales = vec![0u8; m * kb];
            for first in 0..nw.min(groups.max(1)) {
                let mut w = first;
                while w < m * kb {
                    let (row, b) = (w / kb, w % kb);
                    let (k0, k1) = (b * 128, (b * 128 + 128).min(k));
                    scales[w] += 1;
                    for lane in 0..32 {
                        let mut kk = k0 + lane;
                        while kk < k1 {
                            seen[row * k + kk] += 1;
                            kk += 32;
                        }
                    }
                    w += nw;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "M {m} K {k}");
            assert!(scales.iter().all(|&c| c == 1), "M {m} K {k}");
        }
        assert_eq!(int8_launch(3), 3);
        assert_eq!(int8_launch(1 << 20), GRID_CAP as u32);
    }

    /// Mirror of quantize.cu's `q_f32_to_e4m3`: f32 scaling by 2^(3-e) and rintf, instead of the
    /// reference's f64 rounding.
    fn kernel_e4m3(v: f32) -> u8 {
        let bits = v.to_bits();
        if bits & 0x7fff_ffff > 0x7f80_0000 {
            return 0x7F;
        }
        let sign = if bits >> 31 != 0 { 0x80u32 } else { 0 };
        let a = v.abs();
        if a >= 448.0 {
            return (sign | 0x7E) as u8;
        }
        let mut code = if a < 0.015625 {
            (a * 512.0).round_ties_even() as u32
        } else {
            let e = ((a.to_bits() >> 23) & 0xFF) as i32 - 127;
            let p = f32::from_bits(((127 + 3 - e) as u32) << 23);
            let q = (a * p).round_ties_even() as i32;
            (((e + 7) << 3) + (q - 8)) as u32
        };
        code = code.min(0x7E);
        (sign | code) as u8
    }

    /// Mirror of quantize.cu's `q_ue8m0_ceil` (`__clz` as `leading_zeros`).
    fn kernel_ue8m0(s: f32) -> u8 {
        let b = s.to_bits();
        if !((b & 0x7f80_0000) != 0x7f80_0000 && s > 0.0) {
            return 255;
        }
        let (exp, man) = ((b >> 23) & 0xFF, b & 0x7F_FFFF);
        if exp == 0 {
            let top = 31 - man.leading_zeros() as i32;
            let p = top - 149 + i32::from(man & (man - 1) != 0) + 127;
            return p.max(0) as u8;
        }
        let e = exp + u32::from(man != 0);
        if e >= 255 {
            255
        } else {
            e as u8
        }
    }

    /// The kernel's f32 formulation of the e4m3 and E8M0 rules gives the reference's bytes: every
    /// f32 in [-464, 464] with the low 12 mantissa bits stepped (covering every e4m3 rounding
    /// boundary and its neighbours, subnormals, ±0), plus NaN and ±inf; and E8M0 decoding.
    #[test]
    fn kernel_e4m3_and_ue8m0_are_bitwise_the_reference() {
        let mut n = 0u64;
        for hi in 0u32..=0x43E8 {
            // 0x43E8_0000 = 464.0
            for lo in [
                0u32, 1, 0x7FF, 0x800, 0x801, 0xFFF, 0x1000, 0x7FFF, 0x8000, 0x8001, 0xFFFF,
            ] {
                let bits = (hi << 16) | lo;
                for v in [f32::from_bits(bits), -f32::from_bits(bits)] {
                    assert_eq!(kernel_e4m3(v), f32_to_e4m3(v), "e4m3 of {v:e} ({:#x})", v.to_bits());
                    if v > 0.0 {
                        assert_eq!(kernel_ue8m0(v), ue8m0_ceil(v), "ue8m0 of {v:e}");
                    }
                    n += 1;
                }
            }
        }
        assert!(n > 300_000);
        for v in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MAX,
            f32::MIN_POSITIVE,
        ] {
            assert_eq!(kernel_e4m3(v), f32_to_e4m3(v), "{v}");
            assert_eq!(kernel_ue8m0(v), ue8m0_ceil(v), "{v}");
        }
        // common.cuh ue8m0_to_f32: 255 NaN (0x7fc00000), 0 the subnormal 2^-127, else e << 23.
        assert_eq!(e8m0_to_f32(255).to_bits(), 0x7fc0_0000);
        assert_eq!(e8m0_to_f32(0).to_bits(), 1 << 22);
        for e in 1u8..255 {
            assert_eq!(e8m0_to_f32(e).to_bits(), (e as u32) << 23);
        }
    }
}
