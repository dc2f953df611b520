//! `gather_rows` on `aclnnEmbedding` / `aclnnGatherV2` / `aclnnIndexSelect` (ffi/gather.rs), after
//! an `aclnnAmin` / `aclnnAmax` range check of the indices (ops/checks.rs), or the host (host
//! tables, fp8 tables, dtype conversion).

use moehal_core::ops::{gather_rows::check_rows, Checked, GatherRows, TableFormat};
use moehal_core::{Backend, Error, Location, Reference, Result};

use moehal_ascend_sys as sys;
use moehal_core::DType;

use crate::backend::{desc_of, hm, hv, reshaped, scratch_desc, Ascend};
use crate::ffi::{DevMem, Outcome, TDesc};
use crate::ops::checks::check_extremes;

const OP_GR: &str = "gather_rows";

impl Ascend {
    /// `Backend::gather_rows` on this device.
    pub(crate) fn run_gather_rows(&self, args: Checked<GatherRows<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        self.gather_locked(a)
    }

    fn gather_locked(&self, a: GatherRows<'_>) -> Result<()> {
        let (t, c, r, d) = a.dims();
        let v = self.rt.lib.versions;
        let host_table = a.table.buffer().location() == Location::Host;
        // Every operand an aclnn call reads or writes must be this device's memory
        // (aclCreateTensor does not check addresses): otherwise the host path.
        let all_mine = self.mine(a.table.buffer(), "table").is_ok()
            && self.mine(a.rows.buffer(), "rows").is_ok()
            && self.mine(a.out.buffer(), "out").is_ok();
        let device = all_mine
            && a.format != TableFormat::Fp8E4m3Ue8m0
            && a.format.storage_dtype() == a.out.dtype()
            && v.gather > 0
            && t * c > 0
            && d > 0;
        // The range check (OPS.md: rows in [0, R); aclnnEmbedding does not check, an index out of
        // range reads garbage) runs before anything is written. For a device gather it is
        // aclnnAmin / aclnnAmax of the indices and a control read of the two extremes (16 bytes);
        // otherwise (host tables, or no reductions) the indices are read.
        let extremes = if !host_table {
            self.index_extremes(&a.rows, OP_GR, "rows")?
        } else {
            None
        };
        match extremes {
            Some(lh) => check_extremes(OP_GR, "rows", lh, 0, r as i64, "OPS.md §5: rows in [0, R)")?,
            None => {
                let rows: Vec<i64> = self.fetch(&a.rows)?;
                check_rows(OP_GR, &rows, r)?;
            }
        }
        if t * c == 0 || d == 0 {
            return Ok(()); // nothing to write (the aclnn gathers refuse empty tensors)
        }
        if all_mine && a.format == TableFormat::Fp8E4m3Ue8m0 {
            if let Outcome::Ran = self.gather_fp8_device(&a)? {
                return Ok(());
            }
        }
        if !device {
            let st = self.stage(&a.table)?;
            let sr = self.stage(&a.rows)?;
            let mut so = self.stage(&a.out.as_ref())?;
            let args = GatherRows {
                table: hv(&st, &a.table),
                format: a.format,
                rows: hv(&sr, &a.rows),
                out: hm(&mut so, &a.out)?,
            };
            Reference.gather_rows(args.validate()?)?;
            return self.unstage(so.as_ref().expect("staged"), &a.out);
        }
        let table = self.t(&desc_of(&a.table, OP_GR, "table")?)?;
        let index = self.t(&reshaped(&a.rows, &[t * c], OP_GR, "rows")?)?;
        let out = self.t(&reshaped(&a.out.as_ref(), &[t * c, d], OP_GR, "out")?)?;
        self.rt.gather(v.gather, &table, &index, &out)
    }

    /// An fp8 e4m3 + ue8m0 gather dequantised on the device (OPS.md §5: `value = fp8 ·
    /// 2^(scale - 127)`, exact in f32; NaN in either is the canonical quiet NaN), for `n = T·C`
    /// rows of width `W = D + D/32` bytes:
    ///
    /// 1. `aclnnIndexSelect(table, 0, rows)` -> the `[n, W]` UINT8 rows;
    /// 2. `aclnnCast` of their code bytes (`[n, D]` view) and scale bytes (`[n, D/32]` view at
    ///    byte `D`) to INT32;
    /// 3. `aclnnIndexSelect` of the backend's f32 tables ([`Ascend::fp8_lut`], uploaded once when
    ///    the backend opened: entry `i` the e4m3 value of byte `i`, entry `256 + i` the ue8m0
    ///    scale) by those codes -> values `[n·D]` and scales `[n·D/32]`;
    /// 4. `aclnnInplaceMul(values [n, D/32, 32], scales [n, D/32, 1])` (exact: a power of two
    ///    times a 4-bit significand);
    /// 5. f32 `out` takes the values directly (step 3 writes it); bf16 `out` is `aclnnCast` of
    ///    them (one rounding, as the reference's `bf16::from_f64` of the exact f32 product).
    ///
    /// `Rejected` (nothing written) without the tables, with a non-contiguous `out`, or when a
    /// primitive refused the call at phase one.
    fn gather_fp8_device(&self, a: &GatherRows<'_>) -> Result<Outcome> {
        let (t, c, _, d) = a.dims();
        let n = t * c;
        let nb = d / 32;
        let w = d + nb;
        let refuse = |why: &str| {
            Ok(Outcome::Rejected(Error::unsupported(
                OP_GR,
                crate::ffi::NAME,
                why.to_string(),
            )))
        };
        let Some(lut) = &self.fp8_lut else {
            return refuse("no fp8 tables (aclnnIndexSelect / aclnnCast / aclnnInplaceMul missing)");
        };
        if !a.out.layout().is_contiguous() {
            return refuse("strided out");
        }
        for (b, f) in [
            (a.table.buffer(), "table"),
            (a.rows.buffer(), "rows"),
            (a.out.buffer(), "out"),
        ] {
            if self.mine(b, f).is_err() {
                return refuse("an operand is not this device's memory");
            }
        }
        let ran = |o: Outcome| matches!(o, Outcome::Ran);
        // 1. the selected rows.
        let rows_mem = DevMem::new(&self.rt, n * w)?;
        let rows_t = self.t(&scratch_desc(&rows_mem, sys::ACL_UINT8, &[n, w]))?;
        let table = self.t(&desc_of(&a.table, OP_GR, "table")?)?;
        let index = self.t(&reshaped(&a.rows, &[n], OP_GR, "rows")?)?;
        if !ran(self.rt.gather_outcome(3, &table, &index, &rows_t)?) {
            return refuse("aclnnIndexSelect refused the table");
        }
        // 2. code and scale bytes as INT32 indices.
        let view = |off: usize, cols: usize| TDesc {
            dims: vec![n as i64, cols as i64],
            strides: vec![w as i64, 1],
            offset: off as i64,
            ..scratch_desc(&rows_mem, sys::ACL_UINT8, &[n * w])
        };
        let codes = DevMem::new(&self.rt, n * d * 4)?;
        let scodes = DevMem::new(&self.rt, n * nb * 4)?;
        if !ran(self.rt.cast_outcome(
            &self.t(&view(0, d))?,
            sys::ACL_INT32,
            &self.t(&scratch_desc(&codes, sys::ACL_INT32, &[n, d]))?,
        )?) || !ran(self.rt.cast_outcome(
            &self.t(&view(d, nb))?,
            sys::ACL_INT32,
            &self.t(&scratch_desc(&scodes, sys::ACL_INT32, &[n, nb]))?,
        )?) {
            return refuse("aclnnCast refused the code bytes");
        }
        // 3. table lookups.
        let lut_desc = |off: i64| TDesc {
            dims: vec![256],
            strides: vec![1],
            offset: off,
            storage: 512,
            dtype: sys::ACL_FLOAT,
            addr: lut.addr(),
            name: "fp8 table",
        };
        let f32_out = a.out.dtype() == DType::F32;
        let vmem;
        let vals_d = if f32_out {
            reshaped(&a.out.as_ref(), &[n * d], OP_GR, "out")?
        } else {
            vmem = DevMem::new(&self.rt, n * d * 4)?;
            scratch_desc(&vmem, sys::ACL_FLOAT, &[n * d])
        };
        let smem = DevMem::new(&self.rt, n * nb * 4)?;
        let codes_t = self.t(&scratch_desc(&codes, sys::ACL_INT32, &[n * d]))?;
        let scodes_t = self.t(&scratch_desc(&scodes, sys::ACL_INT32, &[n * nb]))?;
        let scales_t = self.t(&scratch_desc(&smem, sys::ACL_FLOAT, &[n * nb]))?;
        if !ran(self
            .rt
            .gather_outcome(3, &self.t(&lut_desc(256))?, &scodes_t, &scales_t)?)
        {
            return refuse("aclnnIndexSelect refused the scale table");
        }
        if !ran(self
            .rt
            .gather_outcome(3, &self.t(&lut_desc(0))?, &codes_t, &self.t(&vals_d)?)?)
        {
            // out (f32) may be partly written: the caller's host path rewrites all of it.
            return refuse("aclnnIndexSelect refused the value table");
        }
        // 4. scale each 32-wide block.
        let vals3 = TDesc {
            dims: vec![n as i64, nb as i64, 32],
            strides: vec![(d) as i64, 32, 1],
            ..vals_d.clone()
        };
        let scales3 = TDesc {
            dims: vec![n as i64, nb as i64, 1],
            strides: vec![nb as i64, 1, 1],
            ..scratch_desc(&smem, sys::ACL_FLOAT, &[n * nb])
        };
        // A refusal here comes after f32 `out` took the unscaled values: the caller's host path
        // rewrites all of it (never an error over a half-written `out`).
        if !ran(self.rt.inplace_mul_outcome(&self.t(&vals3)?, &self.t(&scales3)?)?) {
            return refuse("aclnnInplaceMul refused the block scales");
        }
        // 5. bf16 out.
        if !f32_out {
            let out = self.t(&reshaped(&a.out.as_ref(), &[n * d], OP_GR, "out")?)?;
            // Rejected: nothing written to bf16 `out`; the caller's host path writes it.
            return self.rt.cast_outcome(&self.t(&vals_d)?, sys::ACL_BF16, &out);
        }
        Ok(Outcome::Ran)
    }
}
