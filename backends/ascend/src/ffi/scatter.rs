//! Index construction on the device: `aclnnArange` (a ramp) and `aclnnScatter` (torch.scatter).

use moehal_core::Result;

use super::aclnn::{opt, Outcome};
use super::{Runtime, Scalar, Tensor};

impl Runtime {
    /// `aclnnArange(start, end, step, out)`: `out[i] = start + i·step` over `[start, end)`, out 1-D
    /// of `ceil((end - start) / step)` elements (INT32 / INT64 / float) ([HA canncommercial/800
    /// aclnnArange.md]; the page requires `start < end` for a positive step, so an empty range is
    /// never asked for).
    pub fn arange(&self, start: &Scalar<'_>, end: &Scalar<'_>, step: &Scalar<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnArangeGetWorkspaceSize, "aclnnArangeGetWorkspaceSize")?;
        let l = opt(api.aclnnArange, "aclnnArange")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnArange",
            |ws, ex| unsafe { p1(start.ptr(), end.ptr(), step.ptr(), out.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnScatter(self, dim, index, src, reduce = 0, out)`: `out = self`, then for 1-D
    /// tensors and `dim = 0` `out[index[i]] = src[i]` (reduce 0 = replace); index INT32 / INT64
    /// with values in `[0, self.size(dim))`, self and src of one dtype ([HA canncommercial/800
    /// aclnnScatter&aclnnInplaceScatter.md]). Callers pass a permutation as `index`, so no
    /// position is written twice.
    pub fn scatter(
        &self,
        x: &Tensor<'_>,
        dim: i64,
        index: &Tensor<'_>,
        src: &Tensor<'_>,
        out: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnScatterGetWorkspaceSize, "aclnnScatterGetWorkspaceSize")?;
        let l = opt(api.aclnnScatter, "aclnnScatter")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnScatter",
            |ws, ex| unsafe { p1(x.ptr(), dim, index.ptr(), src.ptr(), 0, out.ptr(), ws, ex) },
            l,
        )
    }
}
