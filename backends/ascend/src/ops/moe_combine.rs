//! `moe_combine` on `aclnnMoeFinalizeRoutingV2` (ffi/finalize_routing.rs, with `aclnnCast` for the
//! scales and the row index; dropped slots with `aclnnEqScalar`, `aclnnIndexSelect`,
//! `aclnnInplaceMaskedFillScalar` and `aclnnArange`), or the host. The `slot_row` range check is
//! `aclnnAmin` / `aclnnAmax` on the device and a control read of the two extremes (ops/checks.rs).

use moehal_ascend_sys as sys;
use moehal_core::ops::{moe_combine::check_slot_rows, Checked, MoeCombine};
use moehal_core::{Backend, DType, Reference, Result};

use crate::backend::{acl_dt, desc_of, hm, hv, reshaped, scratch_desc, Ascend};
use crate::ffi::{DevMem, Outcome, Scalar};
use crate::ops::checks::check_extremes;

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

    /// The `slot_row` range check (OPS.md §3: each entry in `[-1, R)`; the vendor op does not
    /// check, an out-of-range row index reads garbage), before anything is written. With
    /// `aclnnAmin` / `aclnnAmax` only the two extremes are read (16 bytes, a control read); without
    /// them `slot_row` itself is read. Returns whether any slot is dropped (`-1`, the minimum).
    fn combine_check_slots(&self, a: &MoeCombine<'_>, rows: usize) -> Result<bool> {
        let Some((lo, hi)) = self.index_extremes(&a.slot_row, OP_MC, "slot_row")? else {
            let slot: Vec<i64> = self.fetch(&a.slot_row)?;
            check_slot_rows(&slot, rows)?;
            return Ok(slot.iter().any(|&s| s < 0));
        };
        check_extremes(
            OP_MC,
            "slot_row",
            (lo, hi),
            -1,
            rows as i64,
            "OPS.md §3: -1 marks a dropped slot, else a row of y_perm",
        )?;
        Ok(lo == -1)
    }

    /// `Backend::moe_combine` on this device.
    pub(crate) fn run_moe_combine(&self, args: Checked<MoeCombine<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        let (t, k, h, rows) = a.dims();
        let dropped = self.combine_check_slots(&a, rows)?;
        let v = self.rt.lib.versions;
        let dt = a.y_perm.dtype();
        let mixed = dt == DType::BF16 && self.routes.finalize_bf16_f32_scales;
        let f32_scales = dt == DType::F32 || mixed;
        let mine = self.mine(a.y_perm.buffer(), "y_perm").is_ok()
            && self.mine(a.slot_row.buffer(), "slot_row").is_ok()
            && self.mine(a.weights.buffer(), "weights").is_ok()
            && self.mine(a.out.buffer(), "out").is_ok();
        // Dropped slots on the device: the mask ops, the row gather and a ramp for the row index,
        // and (f32 scales) weights a device copy can take whole.
        let drop_ok = !dropped
            || (v.scalar
                && v.eq_scalar
                && v.masked_fill
                && v.index_select
                && v.arange
                && (!f32_scales || a.weights.layout().is_contiguous()));
        let device = v.finalize && v.cast && mine && drop_ok && t * k > 0 && rows > 0 && h > 0;
        if !device {
            return self.combine_host(&a);
        }
        match self.combine_device(&a, dropped)? {
            Outcome::Ran => Ok(()),
            Outcome::Rejected(_) => self.combine_host(&a),
        }
    }

    /// `aclnnMoeFinalizeRoutingV2` with its INT32 row index and scales built on the device.
    ///
    /// Without dropped slots the row index is `aclnnCast(slot_row -> INT32)`. With dropped slots
    /// (`-1`) the expanded rows are gathered in slot order instead, so no row of `y_perm` has to be
    /// free: `mask = aclnnEqScalar(slot_row, -1)`; `idx = aclnnCast(slot_row -> INT32)` with
    /// `aclnnInplaceMaskedFillScalar(idx, mask, 0)` (any valid row); `xs =
    /// aclnnIndexSelect(y_perm, 0, idx)` (`[T·k, H]`); `aclnnInplaceMaskedFillScalar(xs, mask[:,
    /// None], 0)` and the same on a scratch copy of the scales; the row index is then
    /// `aclnnArange(0, T·k)` (slot `s` reads row `s` of `xs`). Each dropped slot adds `0 · 0 =
    /// +0`, whatever `y_perm` and the dropped weights hold (NaN included): OPS.md's "dropped slots
    /// add nothing".
    fn combine_device(&self, a: &MoeCombine<'_>, dropped: bool) -> Result<Outcome> {
        let (t, k, h, _) = a.dims();
        let n = t * k;
        let dt = a.y_perm.dtype();
        let es = dt.size();
        let mixed = dt == DType::BF16 && self.routes.finalize_bf16_f32_scales;
        // The vendor's row index is INT32: slot_row (i64, each in [-1, R) as just checked).
        let rmem = DevMem::new(&self.rt, n * 4)?;
        let ri = self.t(&scratch_desc(&rmem, sys::ACL_INT32, &[n]))?;
        let sr = self.t(&reshaped(&a.slot_row, &[n], OP_MC, "slot_row")?)?;
        if let Outcome::Rejected(e) = self.rt.cast_outcome(&sr, sys::ACL_INT32, &ri)? {
            return Ok(Outcome::Rejected(e));
        }
        let out = self.t(&desc_of(&a.out.as_ref(), OP_MC, "out")?)?;
        // Scales: the f32 router weights (f32 y_perm, or the documented bf16 mixed mode, audit L2,
        // which keeps their precision), else cast to y_perm's dtype. With dropped slots they are
        // a scratch copy, masked below.
        let smem;
        let scales = if dt == DType::F32 || mixed {
            if dropped {
                smem = DevMem::new(&self.rt, n * 4)?;
                let src = a.weights.buffer().addr() + (a.weights.offset() * 4) as u64;
                self.rt.d2d(smem.ptr, smem.len, src, n * 4)?;
                self.t(&scratch_desc(&smem, sys::ACL_FLOAT, &[t, k]))?
            } else {
                self.t(&desc_of(&a.weights, OP_MC, "weights")?)?
            }
        } else {
            smem = DevMem::new(&self.rt, n * es)?;
            let st = self.t(&scratch_desc(&smem, acl_dt(dt), &[t, k]))?;
            let w = self.t(&desc_of(&a.weights, OP_MC, "weights")?)?;
            if let Outcome::Rejected(e) = self.rt.cast_outcome(&w, acl_dt(dt), &st)? {
                return Ok(Outcome::Rejected(e));
            }
            st
        };
        if !dropped {
            let ex = self.t(&desc_of(&a.y_perm, OP_MC, "y_perm")?)?;
            return self.rt.finalize_routing(&ex, &ri, &scales, &out);
        }
        // Dropped slots (see above).
        let mmem = DevMem::new(&self.rt, n)?;
        let mask = self.t(&scratch_desc(&mmem, sys::ACL_BOOL, &[n]))?;
        let mask_n1 = self.t(&scratch_desc(&mmem, sys::ACL_BOOL, &[n, 1]))?;
        let mask_tk = self.t(&scratch_desc(&mmem, sys::ACL_BOOL, &[t, k]))?;
        let zero_i = Scalar::i64(&self.rt, 0)?;
        let zero_f = Scalar::f32(&self.rt, 0.0)?;
        let xmem = DevMem::new(&self.rt, n * h * es)?;
        let xs = self.t(&scratch_desc(&xmem, acl_dt(dt), &[n, h]))?;
        let yp = self.t(&desc_of(&a.y_perm, OP_MC, "y_perm")?)?;
        let one = Scalar::i64(&self.rt, 1)?;
        let nn = Scalar::i64(&self.rt, n as i64)?;
        // Each step in stream order; a phase-one refusal stops before `out` is written.
        macro_rules! step {
            ($e:expr) => {
                if let Outcome::Rejected(e) = $e? {
                    return Ok(Outcome::Rejected(e));
                }
            };
        }
        step!(self.rt.eq_scalar(&sr, &Scalar::i64(&self.rt, -1)?, &mask));
        step!(self.rt.masked_fill(&ri, &mask, &zero_i));
        step!(self.rt.gather_outcome(3, &yp, &ri, &xs));
        step!(self.rt.masked_fill(&xs, &mask_n1, &zero_f));
        step!(self.rt.masked_fill(&scales, &mask_tk, &zero_f));
        step!(self.rt.arange(&zero_i, &nn, &one, &ri));
        self.rt.finalize_routing(&xs, &ri, &scales, &out)
    }
}
