//! The clamp family: `aclnnClamp` and `aclnnClampMax`, whose bounds are `aclScalar`s
//! ([`Scalar`]).

use moehal_core::Result;

use super::aclnn::{opt, Outcome};
use super::{Runtime, Scalar, Tensor};

impl Runtime {
    /// `aclnnClamp(self, min, max, out)`: `out = max(min(self, max), min)` elementwise, a `None`
    /// bound being no bound ([HA canncommercial/800 aclnnClamp.md]). `self` may be a strided view
    /// (the page: "支持非连续的Tensor"); `out` has `self`'s shape and dtype. A phase-one rejection
    /// (e.g. a release that refuses a strided `out`) comes back as [`Outcome::Rejected`].
    pub fn clamp(
        &self,
        x: &Tensor<'_>,
        min: Option<&Scalar<'_>>,
        max: Option<&Scalar<'_>>,
        out: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnClampGetWorkspaceSize, "aclnnClampGetWorkspaceSize")?;
        let l = opt(api.aclnnClamp, "aclnnClamp")?;
        let mn = min.map_or(std::ptr::null(), |s| s.ptr());
        let mx = max.map_or(std::ptr::null(), |s| s.ptr());
        // SAFETY: live objects of this runtime (a NULL bound is the documented "None").
        self.two_phase_outcome(
            "aclnnClamp",
            |ws, ex| unsafe { p1(x.ptr(), mn, mx, out.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnClampMax(self, max, out)`: `out = min(self, max)` elementwise ([HA canncommercial/800
    /// aclnnClampMax&aclnnInplaceClampMax.md]). Same view and rejection rules as
    /// [`Runtime::clamp`].
    pub fn clamp_max(&self, x: &Tensor<'_>, max: &Scalar<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnClampMaxGetWorkspaceSize, "aclnnClampMaxGetWorkspaceSize")?;
        let l = opt(api.aclnnClampMax, "aclnnClampMax")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnClampMax",
            |ws, ex| unsafe { p1(x.ptr(), max.ptr(), out.ptr(), ws, ex) },
            l,
        )
    }
}
