//! `moe_combine` on `aclnnMoeFinalizeRoutingV2` (ffi/finalize_routing.rs, with `aclnnCast` for the
//! scales and the row index; dropped slots with `aclnnEqScalar` + `aclnnInplaceMaskedFillScalar`,
//! ffi/mask.rs), or the host.

use moehal_ascend_sys as sys;
use moehal_core::ops::{moe_combine::check_slot_rows, Checked, MoeCombine};
use moehal_core::{Backend, DType, Reference, Result};

use crate::backend::{acl_dt, bytes_of, desc_of, hm, hv, reshaped, scratch_desc, Ascend};
use crate::ffi::{DevMem, Outcome, Scalar};

const OP_MC: &str = "moe_combine";

impl Ascend {
    /// `moe_combine` on the host (no vendor path, or a phase-one rejection).
    fn combine_host(&self, a: &MoeCombine<'_>) -> Result<()> {
        let sy = self.stage(&a.y_perm)?;
        let ss = self.stage(&a.slot_row)?;
        let sw = self.stage(&a.weights)?;
        let mut so = self.stage(&a.out.as_ref())?;
        let args = MoeCombine {
            y_perm: hv(&sy, &a.y_perm),
            slot_row: hv(&ss, &a.slot_row),
            weights: hv(&sw, &a.weights),
            out: hm(&mut so, &a.out)?,
        };
        Reference.moe_combine(args.validate()?)?;
        self.unstage(so.as_ref().expect("staged"), &a.out)
    }

    /// `Backend::moe_combine` on this device.
    pub(crate) fn run_moe_combine(&self, args: Checked<MoeCombine<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        let (t, k, h, rows) = a.dims();
        // Host read (d2h only): the range check of slot_row, which the vendor op does not make
        // (an out-of-range row index reads garbage), and the dropped slots' zero row below.
        let slot: Vec<i64> = self.fetch(&a.slot_row)?;
        check_slot_rows(&slot, rows)?;
        let v = self.rt.lib.versions;
        let dt = a.y_perm.dtype();
        let mixed = dt == DType::BF16 && self.routes.finalize_bf16_f32_scales;
        let f32_scales = dt == DType::F32 || mixed;
        let dropped = slot.iter().any(|&s| s < 0);
        // Dropped slots on the device need a row no valid slot reads (zeroed in a copy of y_perm),
        // the mask ops, and views a device copy can take whole.
        let zero_row = if dropped {
            let mut used = vec![false; rows];
            slot.iter().filter(|&&s| s >= 0).for_each(|&s| used[s as usize] = true);
            used.iter().position(|&u| !u)
        } else {
            None
        };
        let drop_ok = !dropped
            || (zero_row.is_some()
                && v.scalar
                && v.eq_scalar
                && v.masked_fill
                && v.cast
                && a.y_perm.layout().is_contiguous()
                && (!f32_scales || a.weights.layout().is_contiguous()));
        let device = v.finalize && (f32_scales || v.cast) && drop_ok && t * k > 0 && rows > 0 && h > 0;
        if !device {
            return self.combine_host(&a);
        }
        match self.combine_device(&a, &slot, zero_row)? {
            Outcome::Ran => Ok(()),
            Outcome::Rejected(_) => self.combine_host(&a),
        }
    }

    /// `aclnnMoeFinalizeRoutingV2` with its INT32 row index and scales built on the device.
    ///
    /// Dropped slots (`zero_row` is `Some(z)`: row `z` of `y_perm` is read by no valid slot):
    /// `y_perm` is copied device to device into a scratch whose row `z` is zeroed
    /// (`aclrtMemset`), the mask `slot_row == -1` is made with `aclnnEqScalar`, and
    /// `aclnnInplaceMaskedFillScalar` points the dropped slots' row index at `z` and sets their
    /// scales to 0. Each dropped slot then adds `0 · 0 = +0`, whatever `y_perm`'s unrouted rows and
    /// the dropped weights hold (NaN included), which is OPS.md's "dropped slots add nothing".
    fn combine_device(&self, a: &MoeCombine<'_>, slot: &[i64], zero_row: Option<usize>) -> Result<Outcome> {
        let (t, k, h, rows) = a.dims();
        let v = self.rt.lib.versions;
        let dt = a.y_perm.dtype();
        let es = dt.size();
        let mixed = dt == DType::BF16 && self.routes.finalize_bf16_f32_scales;
        // The vendor's row index is INT32: slot_row (i64, each in [-1, T*k) as just checked) is
        // converted on the device with aclnnCast when present, else on the host and uploaded.
        let rmem = DevMem::new(&self.rt, t * k * 4)?;
        if v.cast && self.mine(a.slot_row.buffer(), "slot_row").is_ok() {
            let src = self.t(&reshaped(&a.slot_row, &[t * k], OP_MC, "slot_row")?)?;
            let dst = self.t(&scratch_desc(&rmem, sys::ACL_INT32, &[t * k]))?;
            self.rt.cast(&src, sys::ACL_INT32, &dst)?;
        } else {
            let rows32: Vec<i32> = slot.iter().map(|&s| s as i32).collect();
            self.rt.h2d(rmem.ptr, rmem.len, bytes_of(&rows32))?;
        }
        let ri = self.t(&scratch_desc(&rmem, sys::ACL_INT32, &[t * k]))?;
        let out = self.t(&desc_of(&a.out.as_ref(), OP_MC, "out")?)?;
        // Scales: the f32 router weights (f32 y_perm, or the documented bf16 mixed mode, audit L2,
        // which keeps their precision), else cast to y_perm's dtype. With dropped slots they are
        // a scratch copy, masked below.
        let smem;
        let scales = if dt == DType::F32 || mixed {
            if zero_row.is_some() {
                self.mine(a.weights.buffer(), "weights")?;
                smem = DevMem::new(&self.rt, t * k * 4)?;
                let src = a.weights.buffer().addr() + (a.weights.offset() * 4) as u64;
                self.rt.d2d(smem.ptr, smem.len, src, t * k * 4)?;
                self.t(&scratch_desc(&smem, sys::ACL_FLOAT, &[t, k]))?
            } else {
                self.t(&desc_of(&a.weights, OP_MC, "weights")?)?
            }
        } else {
            smem = DevMem::new(&self.rt, t * k * es)?;
            let st = self.t(&scratch_desc(&smem, acl_dt(dt), &[t, k]))?;
            let w = self.t(&desc_of(&a.weights, OP_MC, "weights")?)?;
            self.rt.cast(&w, acl_dt(dt), &st)?;
            st
        };
        let Some(z) = zero_row else {
            let ex = self.t(&desc_of(&a.y_perm, OP_MC, "y_perm")?)?;
            return self.rt.finalize_routing(&ex, &ri, &scales, &out);
        };
        // Dropped slots (see above).
        self.mine(a.y_perm.buffer(), "y_perm")?;
        let ymem = DevMem::new(&self.rt, rows * h * es)?;
        let ysrc = a.y_perm.buffer().addr() + (a.y_perm.offset() * es) as u64;
        self.rt.d2d(ymem.ptr, ymem.len, ysrc, rows * h * es)?;
        self.rt.memset(ymem.ptr + (z * h * es) as u64, h * es, 0, h * es)?;
        let mmem = DevMem::new(&self.rt, t * k)?;
        let mask = self.t(&scratch_desc(&mmem, sys::ACL_BOOL, &[t * k]))?;
        let sr = self.t(&reshaped(&a.slot_row, &[t * k], OP_MC, "slot_row")?)?;
        if let Outcome::Rejected(e) = self.rt.eq_scalar(&sr, &Scalar::i64(&self.rt, -1)?, &mask)? {
            return Ok(Outcome::Rejected(e));
        }
        if let Outcome::Rejected(e) = self.rt.masked_fill(&ri, &mask, &Scalar::i64(&self.rt, z as i64)?)? {
            return Ok(Outcome::Rejected(e));
        }
        let mask2 = self.t(&scratch_desc(&mmem, sys::ACL_BOOL, &[t, k]))?;
        if let Outcome::Rejected(e) = self.rt.masked_fill(&scales, &mask2, &Scalar::f32(&self.rt, 0.0)?)? {
            return Ok(Outcome::Rejected(e));
        }
        let ex = self.t(&scratch_desc(&ymem, acl_dt(dt), &[rows, h]))?;
        self.rt.finalize_routing(&ex, &ri, &scales, &out)
    }
}
