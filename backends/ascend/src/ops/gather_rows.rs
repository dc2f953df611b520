//! `gather_rows` on `aclnnEmbedding` / `aclnnGatherV2` / `aclnnIndexSelect` (ffi/gather.rs), after
//! an `aclnnAmin` / `aclnnAmax` range check of the indices (ops/checks.rs), or the host (host
//! tables, fp8 tables, dtype conversion).

use moehal_core::ops::{gather_rows::check_rows, Checked, GatherRows, TableFormat};
use moehal_core::{Backend, Error, Location, Reference, Result};

use crate::backend::{desc_of, hm, hv, reshaped, Ascend};

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
        let device = !host_table
            && a.format != TableFormat::Fp8E4m3Ue8m0
            && a.format.storage_dtype() == a.out.dtype()
            && v.gather > 0
            && t * c > 0
            && d > 0;
        // The range check (OPS.md: rows in [0, R); aclnnEmbedding does not check, an index out of
        // range reads garbage) runs before anything is written. For a device gather it is
        // aclnnAmin / aclnnAmax of the indices and a control read of the two extremes (16 bytes);
        // otherwise (host tables, fp8, or no reductions) the indices are read.
        let extremes = if !host_table && a.format != TableFormat::Fp8E4m3Ue8m0 {
            self.index_extremes(&a.rows, OP_GR, "rows")?
        } else {
            None
        };
        match extremes {
            Some((lo, hi)) if lo < 0 || hi >= r as i64 => {
                let bad = if lo < 0 { lo } else { hi };
                return Err(Error::invalid(
                    OP_GR,
                    "rows",
                    format!("a row index {bad} is outside [0, R = {r}) (aclnnAmin/aclnnAmax of rows: {lo}, {hi})"),
                ));
            }
            Some(_) => {}
            None => {
                let rows: Vec<i64> = self.fetch(&a.rows)?;
                check_rows(OP_GR, &rows, r)?;
            }
        }
        if t * c == 0 || d == 0 {
            return Ok(()); // nothing to write (the aclnn gathers refuse empty tensors)
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
}
