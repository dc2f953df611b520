//! `aclnnCast`: dtype conversion.

use moehal_ascend_sys as sys;
use moehal_core::Result;

use super::aclnn::{opt, Outcome};
use super::{Runtime, Tensor};

impl Runtime {
    /// `aclnnCast(src, dtype, out)`.
    pub fn cast(&self, src: &Tensor<'_>, dtype: sys::aclDataType, out: &Tensor<'_>) -> Result<()> {
        match self.cast_outcome(src, dtype, out)? {
            Outcome::Ran => Ok(()),
            Outcome::Rejected(e) => Err(e),
        }
    }

    /// [`Runtime::cast`], with a phase-one refusal as [`Outcome::Rejected`] (nothing launched).
    pub fn cast_outcome(&self, src: &Tensor<'_>, dtype: sys::aclDataType, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnCastGetWorkspaceSize, "aclnnCastGetWorkspaceSize")?;
        let l = opt(api.aclnnCast, "aclnnCast")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnCast",
            |ws, ex| unsafe { p1(src.ptr(), dtype, out.ptr(), ws, ex) },
            l,
        )
    }
}
