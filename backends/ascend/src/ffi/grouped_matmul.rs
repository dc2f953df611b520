//! `aclnnGroupedMatmulV4` / `V3`: the grouped GEMM.

use std::ptr;

use moehal_core::Result;

use super::aclnn::{opt, tl};
use super::{Runtime, Tensor, TensorList};

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
