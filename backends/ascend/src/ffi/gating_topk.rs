//! `aclnnMoeGatingTopKSoftmax` and `aclnnMoeGatingTopK`: the router.

use std::ptr;

use moehal_core::Result;

use super::aclnn::{opt, t};
use super::{Outcome, Runtime, Tensor};

impl Runtime {
    /// `aclnnMoeGatingTopKSoftmax(x, NULL, k, y, expertIdx, rowIdx)`.
    pub fn gating_topk_softmax(
        &self,
        x: &Tensor<'_>,
        k: i64,
        y: &Tensor<'_>,
        idx: &Tensor<'_>,
        row_idx: &Tensor<'_>,
    ) -> Result<()> {
        let api = self.api();
        let p1 = opt(
            api.aclnnMoeGatingTopKSoftmaxGetWorkspaceSize,
            "aclnnMoeGatingTopKSoftmaxGetWorkspaceSize",
        )?;
        let l = opt(api.aclnnMoeGatingTopKSoftmax, "aclnnMoeGatingTopKSoftmax")?;
        // SAFETY: live objects of this runtime.
        self.two_phase(
            "aclnnMoeGatingTopKSoftmax",
            |ws, ex| unsafe { p1(x.ptr(), ptr::null(), k, y.ptr(), idx.ptr(), row_idx.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnMoeGatingTopK` with renorm 0, outFlag false, routedScalingFactor 1, eps 1e-20.
    ///
    /// `out` (FLOAT `[T,E]`) is always passed: the op definition declares `out` REQUIRED and the
    /// tiling null-checks its shape and requires FLOAT whatever `outFlag` says ([OT]
    /// moe_gating_top_k_def.cpp, moe_gating_top_k_tiling.cpp; torch_npu always allocates it), see
    /// `ascend_audit.md` P4. `bias` must have the dtype of `x` (tiling: `biasDtype != xDtype` fails;
    /// audit P5): the caller guarantees it. A phase-one rejection is returned as
    /// [`Outcome::Rejected`] so the caller can route the op to the host.
    pub fn gating_topk(
        &self,
        x: &Tensor<'_>,
        bias: Option<&Tensor<'_>>,
        k: i64,
        k_group: i64,
        group_count: i64,
        group_mode: i64,
        norm: i64,
        y: &Tensor<'_>,
        idx: &Tensor<'_>,
        out: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(
            api.aclnnMoeGatingTopKGetWorkspaceSize,
            "aclnnMoeGatingTopKGetWorkspaceSize",
        )?;
        let l = opt(api.aclnnMoeGatingTopK, "aclnnMoeGatingTopK")?;
        // SAFETY: live objects of this runtime or NULL for the optional bias.
        self.two_phase_outcome(
            "aclnnMoeGatingTopK",
            |ws, ex| unsafe {
                p1(
                    x.ptr(),
                    t(&bias),
                    k,
                    k_group,
                    group_count,
                    group_mode,
                    0,
                    norm,
                    false,
                    1.0,
                    1e-20,
                    y.ptr(),
                    idx.ptr(),
                    out.ptr(),
                    ws,
                    ex,
                )
            },
            l,
        )
    }
}
