//! `aclnnMoeFinalizeRoutingV2`: MoE combine.

use std::ptr;

use moehal_core::Result;

use super::aclnn::opt;
use super::{Outcome, Runtime, Tensor};

impl Runtime {
    /// `aclnnMoeFinalizeRoutingV2(expandedX, expandedRowIdx, -, -, -, scales, -, dropPadMode 2, out)`.
    ///
    /// `scales` is `[T,k]` in the dtype of `ex_x`, or FLOAT beside BFLOAT16 `ex_x` (the 910B mixed
    /// mode, [OTF] aclnnMoeFinalizeRoutingV2.md; audit L2). A phase-one rejection comes back as
    /// [`Outcome::Rejected`].
    pub fn finalize_routing(
        &self,
        ex_x: &Tensor<'_>,
        row_idx: &Tensor<'_>,
        scales: &Tensor<'_>,
        out: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(
            api.aclnnMoeFinalizeRoutingV2GetWorkspaceSize,
            "aclnnMoeFinalizeRoutingV2GetWorkspaceSize",
        )?;
        let l = opt(api.aclnnMoeFinalizeRoutingV2, "aclnnMoeFinalizeRoutingV2")?;
        let n = ptr::null();
        // SAFETY: live objects of this runtime or NULL.
        self.two_phase_outcome(
            "aclnnMoeFinalizeRoutingV2",
            |ws, exe| unsafe {
                p1(
                    ex_x.ptr(),
                    row_idx.ptr(),
                    n,
                    n,
                    n,
                    scales.ptr(),
                    n,
                    2,
                    out.ptr(),
                    ws,
                    exe,
                )
            },
            l,
        )
    }
}
