//! `moe_combine` on `aclnnMoeFinalizeRoutingV2` (ffi/finalize_routing.rs, with `aclnnCast` for the
//! scales), or the host.

use moehal_ascend_sys as sys;
use moehal_core::ops::{moe_combine::check_slot_rows, Checked, MoeCombine};
use moehal_core::{Backend, DType, Reference, Result};

use crate::backend::{acl_dt, bytes_of, desc_of, hm, hv, reshaped, scratch_desc, Ascend};
use crate::ffi::{DevMem, Outcome};

const OP_MC: &str = "moe_combine";

impl Ascend {
    /// `moe_combine` on the host (dropped slots, or no vendor path).
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
        let slot: Vec<i64> = self.fetch(&a.slot_row)?;
        check_slot_rows(&slot, rows)?;
        let v = self.rt.lib.versions;
        let dt = a.y_perm.dtype();
        let mixed = dt == DType::BF16 && self.routes.finalize_bf16_f32_scales;
        let device = v.finalize
            && (dt == DType::F32 || mixed || v.cast)
            && !slot.iter().any(|&s| s < 0)
            && t * k > 0
            && rows > 0
            && h > 0;
        if !device {
            return self.combine_host(&a);
        }
        // The vendor's row index is INT32: slot_row (i64, each in [0, T*k) as just checked) is
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
        let ex = self.t(&desc_of(&a.y_perm, OP_MC, "y_perm")?)?;
        let ri = self.t(&scratch_desc(&rmem, sys::ACL_INT32, &[t * k]))?;
        let out = self.t(&desc_of(&a.out.as_ref(), OP_MC, "out")?)?;
        let w = self.t(&desc_of(&a.weights, OP_MC, "weights")?)?;
        let o = if dt == DType::F32 || mixed {
            // f32 scales: matching f32 y_perm, or the documented bf16 mixed mode (audit L2),
            // which keeps the router weights' precision.
            self.rt.finalize_routing(&ex, &ri, &w, &out)?
        } else {
            // Scales in the dtype of expandedX: cast the f32 router weights.
            let smem = DevMem::new(&self.rt, t * k * dt.size())?;
            let st = self.t(&scratch_desc(&smem, acl_dt(dt), &[t, k]))?;
            self.rt.cast(&w, acl_dt(dt), &st)?;
            self.rt.finalize_routing(&ex, &ri, &st, &out)?
        };
        match o {
            Outcome::Ran => Ok(()),
            Outcome::Rejected(_) => self.combine_host(&a),
        }
    }
}
