//! `aclnnGroupedMatmulV4` / `V3`: the grouped GEMM.

use std::ptr;

use moehal_core::Result;

use super::aclnn::{opt, tl};
use super::{Outcome, Runtime, Tensor, TensorList};

impl Runtime {
    /// `aclnnGroupedMatmulV4` (`v4 = true`, groupListType 0) or `V3`: single-tensor x `[M,K]`,
    /// weight `[G,K,N]`, y `[M,N]`, splitItem 3, groupType 0 (M axis), cumulative `group` (INT64 `[G]`).
    pub fn grouped_matmul(
        &self,
        v4: bool,
        x: &TensorList<'_>,
        w: &TensorList<'_>,
        bias: Option<&TensorList<'_>>,
        group: &Tensor<'_>,
        y: &TensorList<'_>,
    ) -> Result<()> {
        let api = self.api();
        let n = ptr::null_mut();
        if v4 {
            let p1 = opt(
                api.aclnnGroupedMatmulV4GetWorkspaceSize,
                "aclnnGroupedMatmulV4GetWorkspaceSize",
            )?;
            let l = opt(api.aclnnGroupedMatmulV4, "aclnnGroupedMatmulV4")?;
            // SAFETY: every pointer is a live object of this runtime or NULL for an absent optional.
            self.two_phase(
                "aclnnGroupedMatmulV4",
                |ws, ex| unsafe {
                    p1(
                        x.ptr(),
                        w.ptr(),
                        tl(&bias),
                        n,
                        n,
                        n,
                        n,
                        n,
                        group.ptr(),
                        n,
                        n,
                        n,
                        3,
                        0,
                        0,
                        0,
                        y.ptr(),
                        n,
                        n,
                        ws,
                        ex,
                    )
                },
                l,
            )
        } else {
            let p1 = opt(
                api.aclnnGroupedMatmulV3GetWorkspaceSize,
                "aclnnGroupedMatmulV3GetWorkspaceSize",
            )?;
            let l = opt(api.aclnnGroupedMatmulV3, "aclnnGroupedMatmulV3")?;
            // SAFETY: as above.
            self.two_phase(
                "aclnnGroupedMatmulV3",
                |ws, ex| unsafe {
                    p1(
                        x.ptr(),
                        w.ptr(),
                        tl(&bias),
                        n,
                        n,
                        n,
                        n,
                        group.ptr(),
                        3,
                        0,
                        y.ptr(),
                        ws,
                        ex,
                    )
                },
                l,
            )
        }
    }
}

impl Runtime {
    /// `aclnnGroupedMatmulV4`, A8W8 dynamic quantisation (ascend-emu RULES.md QG1-QG6; [OTF V4
    /// doc] "全量化场景（有perTokenScaleOptional）": `y = (x @ w) · scale · perTokenScale`):
    /// single-tensor INT8 x `[M,K]`, INT8 weight `[G,K,N]` (ND, possibly the transposed-strides
    /// view, or FRACTAL_NZ), FLOAT per-channel `scale` `[G,N]`, FLOAT `per_token` `[M]`, y `[M,N]`,
    /// no bias, splitItem 3, groupType 0, groupListType 0 (cumulative `group`, INT64 `[G]`),
    /// actType 0. A phase-one refusal (a dtype / format combination this release does not take)
    /// comes back as [`Outcome::Rejected`] with nothing enqueued.
    pub fn grouped_matmul_a8w8(
        &self,
        x: &TensorList<'_>,
        w: &TensorList<'_>,
        scale: &TensorList<'_>,
        per_token: &TensorList<'_>,
        group: &Tensor<'_>,
        y: &TensorList<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let n = ptr::null_mut();
        let p1 = opt(
            api.aclnnGroupedMatmulV4GetWorkspaceSize,
            "aclnnGroupedMatmulV4GetWorkspaceSize",
        )?;
        let l = opt(api.aclnnGroupedMatmulV4, "aclnnGroupedMatmulV4")?;
        // SAFETY: every pointer is a live object of this runtime or NULL for an absent optional.
        self.two_phase_outcome(
            "aclnnGroupedMatmulV4",
            |ws, ex| unsafe {
                p1(
                    x.ptr(),
                    w.ptr(),
                    n,
                    scale.ptr(),
                    n,
                    n,
                    n,
                    per_token.ptr(),
                    group.ptr(),
                    n,
                    n,
                    n,
                    3,
                    0,
                    0,
                    0,
                    y.ptr(),
                    n,
                    n,
                    ws,
                    ex,
                )
            },
            l,
        )
    }
}
