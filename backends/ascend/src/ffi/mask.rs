//! Masks: `aclnnEqScalar` (a BOOL mask from a comparison), `aclnnInplaceMaskedFillScalar`,
//! `aclnnIsFinite`, `aclnnLogicalNot` and `aclnnSWhere`.

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

impl Runtime {
    /// `aclnnIsFinite(self, out)`: `out[i] = self[i]` is neither ±inf nor NaN, out BOOL of self's
    /// shape ([HA 850alpha002 aclnnIsFinite.md]).
    pub fn is_finite(&self, x: &Tensor<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnIsFiniteGetWorkspaceSize, "aclnnIsFiniteGetWorkspaceSize")?;
        let l = opt(api.aclnnIsFinite, "aclnnIsFinite")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome("aclnnIsFinite", |ws, ex| unsafe { p1(x.ptr(), out.ptr(), ws, ex) }, l)
    }

    /// `aclnnLogicalNot(self, out)`: `out[i] = (self[i] == 0)` in out's dtype (BOOL here), of
    /// self's shape ([HA canncommercial/800 aclnnLogicalNot&aclnnInplaceLogicalNot.md]).
    pub fn logical_not(&self, x: &Tensor<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnLogicalNotGetWorkspaceSize, "aclnnLogicalNotGetWorkspaceSize")?;
        let l = opt(api.aclnnLogicalNot, "aclnnLogicalNot")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome("aclnnLogicalNot", |ws, ex| unsafe { p1(x.ptr(), out.ptr(), ws, ex) }, l)
    }

    /// `aclnnSWhere(condition, self, other, out)`: `out[i] = condition[i] ? self[i] : other[i]`,
    /// all three broadcast, out of the promoted dtype ([HA 83RC1 aclnnSWhere.md]).
    pub fn s_where(&self, cond: &Tensor<'_>, a: &Tensor<'_>, b: &Tensor<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnSWhereGetWorkspaceSize, "aclnnSWhereGetWorkspaceSize")?;
        let l = opt(api.aclnnSWhere, "aclnnSWhere")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnSWhere",
            |ws, ex| unsafe { p1(cond.ptr(), a.ptr(), b.ptr(), out.ptr(), ws, ex) },
            l,
        )
    }
}
