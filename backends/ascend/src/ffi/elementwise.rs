//! Elementwise aclnn ops: `aclnnSwiGlu` and `aclnnInplaceMul`.

use moehal_core::Result;

use super::aclnn::opt;
use super::{Outcome, Runtime, Tensor};

impl Runtime {
    /// `aclnnSwiGlu(x, dim, out)`: `out = Swish(A) * B`, A / B the first / second half of `x`
    /// along `dim` ([HA canncommercial/800 aclnnSwiGlu.md]). `x` and `out` contiguous, not empty.
    pub fn swiglu(&self, x: &Tensor<'_>, dim: i64, out: &Tensor<'_>) -> Result<()> {
        let api = self.api();
        let p1 = opt(api.aclnnSwiGluGetWorkspaceSize, "aclnnSwiGluGetWorkspaceSize")?;
        let l = opt(api.aclnnSwiGlu, "aclnnSwiGlu")?;
        // SAFETY: live objects of this runtime.
        self.two_phase(
            "aclnnSwiGlu",
            |ws, ex| unsafe { p1(x.ptr(), dim, out.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnInplaceMul(selfRef, other)`: `selfRef *= other`, `other` broadcast to `selfRef`'s
    /// shape, computed in the promoted dtype and stored in `selfRef`'s ([HA canncommercial/800
    /// aclnnMul&aclnnInplaceMul.md]). A phase-one rejection (nothing enqueued, `selfRef` as it
    /// was) comes back as [`Outcome::Rejected`], so a caller that already wrote its output can
    /// finish on the host instead of returning an error over a half-written result.
    pub fn inplace_mul_outcome(&self, self_ref: &Tensor<'_>, other: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnInplaceMulGetWorkspaceSize, "aclnnInplaceMulGetWorkspaceSize")?;
        let l = opt(api.aclnnInplaceMul, "aclnnInplaceMul")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnInplaceMul",
            |ws, ex| unsafe { p1(self_ref.ptr(), other.ptr(), ws, ex) },
            l,
        )
    }
}
