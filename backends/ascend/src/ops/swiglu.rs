//! `swiglu` on `aclnnSwiGlu` (ffi/elementwise.rs) when its documented semantics are the contract's,
//! else on the host (staged).
//!
//! aclnnSwiGlu computes `out = Swish(A) * B` with A / B the first / second half of `x` along `dim`
//! ([HA canncommercial/800 aclnnSwiGlu.md]): with `dim = 1` on `h [M, 2I]` that is OPS.md §3's
//! `silu(gate) * up`, gate = `h[:, :I]`, up = `h[:, I:]`, out in h's dtype (the page: out "数据类型与
//! 计算输入x的类型一致"). It has no clamp, so a call with `limit` runs on the host (clamping on the
//! device needs `aclnnClamp`, whose bounds are `aclScalar`s this backend does not create yet). The
//! vendor op refuses empty and non-contiguous tensors: `M = 0` or `I = 0` is a no-op here, a
//! non-contiguous view runs on the host.

use moehal_core::ops::{Checked, Swiglu};
use moehal_core::{Backend, Reference, Result};

use crate::backend::{desc_of, hm, hv, Ascend};

const OP: &str = "swiglu";

impl Ascend {
    /// Whether this call runs on `aclnnSwiGlu` (no limit, contiguous views, the op present).
    pub(crate) fn swiglu_on_device(&self, a: &Swiglu<'_>) -> bool {
        a.limit.is_none()
            && self.rt.lib.versions.swiglu
            && a.h.layout().is_contiguous()
            && a.out.as_ref().layout().is_contiguous()
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
            let x = self.t(&desc_of(&a.h, OP, "h")?)?;
            let out = self.t(&desc_of(&a.out.as_ref(), OP, "out")?)?;
            return self.rt.swiglu(&x, 1, &out);
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
