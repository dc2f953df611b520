//! `moe_combine` (kernels/cuda/moe_combine.cu): device check of `slot_row`, per-token ordered sum.

use moehal_core::ops::{moe_combine::check_slot_rows, MoeCombine};
use moehal_core::{Checked, Error, Result};

use super::grid1;
use crate::device::CudaBackend;
use crate::kernels::Unit;
use crate::raw::Arg;

impl CudaBackend {
    /// `Backend::moe_combine` on this device.
    pub(crate) fn run_moe_combine(&self, args: Checked<MoeCombine<'_>>) -> Result<()> {
        const OP: &str = "moe_combine";
        let a = args.into_inner();
        let (t, k, h, r) = a.dims();
        let y = self.dptr(&a.y_perm, OP, "y_perm")?;
        let slot = self.dptr(&a.slot_row, OP, "slot_row")?;
        let w = self.dptr(&a.weights, OP, "weights")?;
        let out = self.dptr_mut(&a.out, OP, "out")?;
        let s = self.begin()?;
        if t == 0 || h == 0 {
            return Ok(());
        }
        let mut sc = self.lock(&self.scratch)?;
        let base = self.ensure_scratch(&mut sc, 256, s)?;
        self.flag_reset(base, s)?;
        if t * k > 0 {
            let args = [Arg::P(slot), Arg::I64((t * k) as i64), Arg::I64(r as i64), Arg::P(base)];
            self.launch(
                s,
                Unit::Combine,
                "combine_check",
                (grid1(t * k, 256, 4096), 1),
                256,
                0,
                &args,
            )?;
        }
        let name = format!("combine_{}", a.y_perm.dtype().name());
        let grid = (grid1(h, 256, 64), t.min(65_535) as u32);
        let args = [
            Arg::P(y),
            Arg::P(slot),
            Arg::P(w),
            Arg::P(out),
            Arg::I64(t as i64),
            Arg::I64(k as i64),
            Arg::I64(h as i64),
            Arg::P(base),
        ];
        self.launch(s, Unit::Combine, &name, grid, 256, 0, &args)?;
        let (code, idx) = self.flag_read(base, s)?;
        drop(sc);
        if code != 0 {
            let v: Vec<i64> = self.download_typed(&a.slot_row, s)?;
            check_slot_rows(&v, r)?;
            return Err(Error::invalid(
                OP,
                "slot_row",
                format!("slot_row[{idx}] outside [-1, R = {r})"),
            ));
        }
        Ok(())
    }
}
