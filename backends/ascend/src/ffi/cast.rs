//! `aclnnCast`: dtype conversion.

use moehal_ascend_sys as sys;
use moehal_core::Result;

use super::aclnn::opt;
use super::{Runtime, Tensor};

impl Runtime {
    /// `aclnnCast(src, dtype, out)`.
    pub fn cast(&self, src: &Tensor<'_>, dtype: sys::aclDataType, out: &Tensor<'_>) -> Result<()> {
        let api = self.api();
        let p1 = opt(api.aclnnCastGetWorkspaceSize, "aclnnCastGetWorkspaceSize")?;
        let l = opt(api.aclnnCast, "aclnnCast")?;
        // SAFETY: live objects of this runtime.
        self.two_phase(
            "aclnnCast",
            |ws, ex| unsafe { p1(src.ptr(), dtype, out.ptr(), ws, ex) },
            l,
        )
    }
}
