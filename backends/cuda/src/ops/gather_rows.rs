//! `gather_rows` (kernels/cuda/gather_rows.cu): device check of `rows`, then the row copy or the
//! fp8 dequantizing gather, from device memory or a host table mapped in place.

use moehal_core::ops::{gather_rows::check_rows, GatherRows, TableFormat};
use moehal_core::{Checked, DType, Error, Result};

use super::grid1;
use crate::device::CudaBackend;
use crate::kernels::Unit;
use crate::raw::{self, Arg, Stream};

impl CudaBackend {
    pub(crate) fn gather_launch(
        &self,
        s: Stream,
        table: u64,
        format: TableFormat,
        out_dt: DType,
        d: usize,
        rows: u64,
        npairs: usize,
        out: u64,
        err: u64,
    ) -> Result<()> {
        if npairs == 0 || d == 0 {
            return Ok(());
        }
        let grid = (grid1(npairs, 8, 1 << 20), 1);
        match format {
            TableFormat::Fp8E4m3Ue8m0 => {
                let name = if out_dt == DType::BF16 {
                    "gather_fp8_bf16"
                } else {
                    "gather_fp8_f32"
                };
                let stride = d + d / 32;
                let args = [
                    Arg::P(table),
                    Arg::I64(d as i64),
                    Arg::I64(stride as i64),
                    Arg::P(rows),
                    Arg::I64(npairs as i64),
                    Arg::P(out),
                    Arg::P(err),
                ];
                self.launch(s, Unit::Gather, name, grid, 256, 0, &args)
            }
            _ => {
                let row_bytes = d * format.storage_dtype().size();
                let args = [
                    Arg::P(table),
                    Arg::I64(row_bytes as i64),
                    Arg::P(rows),
                    Arg::I64(npairs as i64),
                    Arg::P(out),
                    Arg::P(err),
                ];
                self.launch(s, Unit::Gather, "gather_copy", grid, 256, 0, &args)
            }
        }
    }

    /// `Backend::gather_rows` on this device.
    pub(crate) fn run_gather_rows(&self, args: Checked<GatherRows<'_>>) -> Result<()> {
        const OP: &str = "gather_rows";
        let a = args.into_inner();
        let (t, c, r, d) = a.dims();
        let rows = self.dptr(&a.rows, OP, "rows")?;
        let out = self.dptr_mut(&a.out, OP, "out")?;
        let s = self.begin()?;
        let npairs = t * c;
        if npairs == 0 {
            return Ok(());
        }
        let _host = self.host_table_guard(&a.table)?;
        let mut sc = self.lock(&self.scratch)?;
        let (table, reg) = self.table_ptr(&a.table, OP)?;
        let res = (|| {
            let base = self.ensure_scratch(&mut sc, 256, s)?;
            self.flag_reset(base, s)?;
            let args = [Arg::P(rows), Arg::I64(npairs as i64), Arg::I64(r as i64), Arg::P(base)];
            self.launch(
                s,
                Unit::Gather,
                "gather_check",
                (grid1(npairs, 256, 4096), 1),
                256,
                0,
                &args,
            )?;
            self.gather_launch(s, table, a.format, a.out.dtype(), d, rows, npairs, out, base)?;
            self.flag_read(base, s)
        })();
        if res.is_err() {
            let _ = s.sync();
        }
        if let Some(h) = reg {
            raw::host_unregister(h);
        }
        drop(sc);
        let (code, idx) = res?;
        if code != 0 {
            let v: Vec<i64> = self.download_typed(&a.rows, s)?;
            check_rows(OP, &v, r)?;
            return Err(Error::invalid(OP, "rows", format!("rows[{idx}] outside [0, R = {r})")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    // gather_rows.cu: fp8_e4m3_to_f32, ue8m0_to_f32, fp8_dequant, and common.cuh f32_to_bf16.
    fn dev_e4m3(b: u32) -> f32 {
        let sign = (b & 0x80) << 24;
        let (e, m) = ((b >> 3) & 15, b & 7);
        if e == 15 && m == 7 {
            return f32::from_bits(0x7fc0_0000);
        }
        let v = if e == 0 {
            m as f32 * 0.001_953_125
        } else {
            f32::from_bits(((e + 120) << 23) | (m << 20))
        };
        f32::from_bits(v.to_bits() | sign)
    }
    fn dev_ue8m0(b: u32) -> f32 {
        match b {
            255 => f32::from_bits(0x7fc0_0000),
            0 => f32::from_bits(0x0040_0000),
            _ => f32::from_bits(b << 23),
        }
    }
    fn dev_bf16(f: f32) -> u16 {
        let u = f.to_bits();
        if u & 0x7fff_ffff > 0x7f80_0000 {
            return ((u >> 16) | 0x40) as u16;
        }
        (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
    }

    #[test]
    fn fp8_dequant_formula_is_bitwise_the_contract() {
        use moehal_core::ops::gather_rows::fp8_dequant;
        for q in 0..256u32 {
            for s in 0..256u32 {
                let (v, sc) = (dev_e4m3(q), dev_ue8m0(s));
                let dev = if v.is_nan() || sc.is_nan() {
                    f32::from_bits(0x7fc0_0000)
                } else {
                    v * sc
                };
                let want = fp8_dequant(q as u8, s as u8);
                assert_eq!(dev.to_bits(), want.to_bits(), "q {q:#x} s {s}");
                let bf = half::bf16::from_f64(want as f64).to_bits();
                assert_eq!(dev_bf16(dev), bf, "bf16 of q {q:#x} s {s}");
            }
        }
    }
}
