//! `swiglu` on `aclnnSwiGlu` (ffi/elementwise.rs), with `limit` composed from `aclnnClampMax` /
//! `aclnnClamp` (ffi/clamp.rs) before it, when their documented semantics are the contract's;
//! else on the host (staged).
//!
//! aclnnSwiGlu computes `out = Swish(A) * B` with A / B the first / second half of `x` along `dim`
//! ([HA canncommercial/800 aclnnSwiGlu.md]): with `dim = 1` on `h [M, 2I]` that is OPS.md §3's
//! `silu(gate) * up`, gate = `h[:, :I]`, up = `h[:, I:]`, out in h's dtype (the page: out "数据类型与
//! 计算输入x的类型一致"). It has no clamp. OPS.md's `limit` is `gate <= limit` (no lower bound on
//! the gate) and `up` into `[-limit, limit]`, so one aclnnClamp over `h` is not it (it would also
//! raise a gate below `-limit`, and `silu(-limit)` is not `silu(gate)`). The device composition is:
//!
//! 1. `aclnnClampMax(h[:, :I], limit) -> s[:, :I]` (`min(x, max)`, [HA canncommercial/800
//!    aclnnClampMax&aclnnInplaceClampMax.md]),
//! 2. `aclnnClamp(h[:, I:], -limit, limit) -> s[:, I:]` (`max(min(x, max), min)`, [HA
//!    canncommercial/800 aclnnClamp.md]),
//! 3. `aclnnSwiGlu(s, 1, out)`,
//!
//! with `s` a contiguous `[M, 2I]` device scratch and the halves strided views (both pages: self
//! "支持非连续的Tensor"; a release that refuses the strided `out` at phase one sends the call to
//! the host). The bounds are `aclScalar`s of the f32 `limit`. The clamp must give exactly the
//! reference's clamped value, so it runs in h's dtype only where `limit` is exact in that dtype
//! (f32 always; 10 and 0.5 in bf16/f16); otherwise `h` is first cast to an f32 scratch with
//! `aclnnCast`, clamped and SwiGlu'd in f32, and the f32 result cast to out's dtype (the same one
//! f32 computation the no-limit path does inside aclnnSwiGlu).
//!
//! NaN: OPS.md keeps a NaN gate or up NaN (the reference clamps with comparisons that let NaN
//! through). The clamp pages give only `min`/`max` formulas and are silent on NaN; aclnn's clamp
//! family is the backend of `torch.clamp` (torch_npu), which propagates NaN, and this backend
//! relies on that. UNCONFIRMED on hardware; the conformance suite's NaN cases check it against the
//! emulator only.
//!
//! The vendor ops refuse empty tensors: `M = 0` or `I = 0` is a no-op here. Without `limit`,
//! aclnnSwiGlu needs a contiguous `h` (a strided one runs on the host); with `limit`, `h` is only
//! read by the clamps, so a strided `h` stays on the device. `out` must be contiguous.

use moehal_ascend_sys as sys;
use moehal_core::ops::{Checked, Swiglu};
use moehal_core::{Backend, DType, Reference, Result};

use crate::backend::{acl_dt, desc_of, hm, hv, scratch_desc, Ascend};
use crate::ffi::{DevMem, Outcome, Scalar, TDesc};

const OP: &str = "swiglu";

/// Whether `limit` (and so `-limit`) is exactly representable in `dt`, so that a clamp computed
/// in `dt` yields the reference's clamped value.
fn limit_exact_in(limit: f32, dt: DType) -> bool {
    match dt {
        DType::F32 => true,
        DType::BF16 => half::bf16::from_f32(limit).to_f32() == limit,
        DType::F16 => half::f16::from_f32(limit).to_f32() == limit,
        _ => false,
    }
}

/// The gate (`[:, :I]`) and up (`[:, I:]`) halves of a `[M, 2I]` view.
fn halves(d: &TDesc, i: usize) -> (TDesc, TDesc) {
    let mut gate = d.clone();
    gate.dims[1] = i as i64;
    let mut up = gate.clone();
    up.offset += i as i64 * d.strides[1];
    (gate, up)
}

impl Ascend {
    /// Whether this call runs on the device: aclnnSwiGlu present and a contiguous `out`; without
    /// `limit` a contiguous `h`; with `limit` the scalars and both clamps (and aclnnCast where
    /// `limit` is not exact in h's dtype).
    pub(crate) fn swiglu_on_device(&self, a: &Swiglu<'_>) -> bool {
        let v = self.rt.lib.versions;
        if !v.swiglu || !a.out.as_ref().layout().is_contiguous() {
            return false;
        }
        match a.limit {
            None => a.h.layout().is_contiguous(),
            Some(l) => v.scalar && v.clamp && v.clamp_max && (limit_exact_in(l, a.h.dtype()) || v.cast),
        }
    }

    /// The clamp-then-SwiGlu composition (module docs); `Ok(false)` when a clamp's phase one
    /// refused the call (nothing written to `out`).
    fn swiglu_limit_device(&self, a: &Swiglu<'_>, limit: f32) -> Result<bool> {
        let (m, i) = a.dims();
        let dt = a.h.dtype();
        let hd = desc_of(&a.h, OP, "h")?;
        let od = desc_of(&a.out.as_ref(), OP, "out")?;
        let hi = Scalar::f32(&self.rt, limit)?;
        let lo = Scalar::f32(&self.rt, -limit)?;
        // Where the clamp runs: h's dtype when `limit` is exact there, else f32 (h cast first).
        let work = if limit_exact_in(limit, dt) { dt } else { DType::F32 };
        let mut keep = Vec::new();
        let src = if work == dt {
            hd
        } else {
            let f = DevMem::new(&self.rt, m * 2 * i * 4)?;
            let fd = scratch_desc(&f, sys::ACL_FLOAT, &[m, 2 * i]);
            self.rt.cast(&self.t(&hd)?, sys::ACL_FLOAT, &self.t(&fd)?)?;
            keep.push(f);
            fd
        };
        let s = DevMem::new(&self.rt, m * 2 * i * work.size())?;
        let sd = scratch_desc(&s, acl_dt(work), &[m, 2 * i]);
        let (sg, su) = halves(&src, i);
        let (dg, du) = halves(&sd, i);
        if let Outcome::Rejected(_) = self.rt.clamp_max(&self.t(&sg)?, &hi, &self.t(&dg)?)? {
            return Ok(false);
        }
        if let Outcome::Rejected(_) = self.rt.clamp(&self.t(&su)?, Some(&lo), Some(&hi), &self.t(&du)?)? {
            return Ok(false);
        }
        if work == dt {
            self.rt.swiglu(&self.t(&sd)?, 1, &self.t(&od)?)?;
        } else {
            let y = DevMem::new(&self.rt, m * i * 4)?;
            let yd = scratch_desc(&y, sys::ACL_FLOAT, &[m, i]);
            self.rt.swiglu(&self.t(&sd)?, 1, &self.t(&yd)?)?;
            self.rt.cast(&self.t(&yd)?, acl_dt(dt), &self.t(&od)?)?;
        }
        Ok(true)
    }

    /// `Backend::swiglu` on this device.
    pub(crate) fn run_swiglu(&self, args: Checked<Swiglu<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        let (m, i) = a.dims();
        if m == 0 || i == 0 {
            return Ok(());
        }
        if self.swiglu_on_device(&a) {
            self.mine(a.h.buffer(), "h")?;
            self.mine(a.out.buffer(), "out")?;
            match a.limit {
                None => {
                    let x = self.t(&desc_of(&a.h, OP, "h")?)?;
                    let out = self.t(&desc_of(&a.out.as_ref(), OP, "out")?)?;
                    return self.rt.swiglu(&x, 1, &out);
                }
                Some(l) => {
                    if self.swiglu_limit_device(&a, l)? {
                        return Ok(());
                    }
                }
            }
        }
        let sh = self.stage(&a.h)?;
        let mut so = self.stage(&a.out.as_ref())?;
        let args = Swiglu {
            h: hv(&sh, &a.h),
            out: hm(&mut so, &a.out)?,
            limit: a.limit,
        };
        Reference.swiglu(args.validate()?)?;
        self.unstage(so.as_ref().expect("staged"), &a.out)
    }
}
