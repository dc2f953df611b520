//! `swiglu` on the host (staged): CANN's SwiGLU kernels do not have the contract's clamp semantics.

use moehal_core::ops::{Checked, Swiglu};
use moehal_core::{Backend, Reference, Result};

use crate::backend::{hm, hv, Ascend};

impl Ascend {
    /// `Backend::swiglu` on this device.
    pub(crate) fn run_swiglu(&self, args: Checked<Swiglu<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
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
