//! Masks: `aclnnEqScalar` (a BOOL mask from a comparison) and `aclnnInplaceMaskedFillScalar`.

use moehal_core::Result;

use super::aclnn::{opt, Outcome};
use super::{Runtime, Scalar, Tensor};

impl Runtime {
    /// `aclnnEqScalar(self, other, out)`: `out[i] = (self[i] == other)`, out BOOL of self's shape
    /// ([HA canncommercial/800 aclnnEqScalar&aclnnInplaceEqScalar.md]).
    pub fn eq_scalar(&self, x: &Tensor<'_>, other: &Scalar<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnEqScalarGetWorkspaceSize, "aclnnEqScalarGetWorkspaceSize")?;
        let l = opt(api.aclnnEqScalar, "aclnnEqScalar")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnEqScalar",
            |ws, ex| unsafe { p1(x.ptr(), other.ptr(), out.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnInplaceMaskedFillScalar(selfRef, mask, value)`: `selfRef[i] = value` where `mask[i]`
    /// (BOOL, broadcast to selfRef's shape) ([HA canncommercial/800
    /// aclnnInplaceMaskedFillScalar.md]).
    pub fn masked_fill(&self, self_ref: &Tensor<'_>, mask: &Tensor<'_>, value: &Scalar<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(
            api.aclnnInplaceMaskedFillScalarGetWorkspaceSize,
            "aclnnInplaceMaskedFillScalarGetWorkspaceSize",
        )?;
        let l = opt(api.aclnnInplaceMaskedFillScalar, "aclnnInplaceMaskedFillScalar")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnInplaceMaskedFillScalar",
            |ws, ex| unsafe { p1(self_ref.ptr(), mask.ptr(), value.ptr(), ws, ex) },
            l,
        )
    }
}
