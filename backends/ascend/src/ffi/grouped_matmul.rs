//! `aclnnGroupedMatmulV4` / `V3`: the grouped GEMM.

use std::ptr;

use moehal_core::Result;

use super::aclnn::{opt, tl};
use moehal_ascend_sys as sys;

use super::runtime::check;
use super::{IntArray, Outcome, Runtime, Tensor, TensorList};

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

impl Runtime {
    /// `aclnnCalculateMatmulWeightSizeV2(shape, INT8)`: the elements the FRACTAL_NZ form of an
    /// INT8 weight of `shape` (`[.., K, N]`, 2-6 dims) occupies, `batch · Align(K,16) ·
    /// Align(N,32)` ([HA 81RC1alpha002 aclnnCalculateMatmulWeightSizeV2.md]; RULES.md NZ4). A
    /// host computation: nothing is launched.
    pub fn nz_weight_elems(&self, shape: &[i64]) -> Result<u64> {
        let f = opt(
            self.api().aclnnCalculateMatmulWeightSizeV2,
            "aclnnCalculateMatmulWeightSizeV2",
        )?;
        let a = IntArray::new(self, shape)?;
        let mut n = 0u64;
        // SAFETY: a live int array of this runtime and a writable out-pointer.
        let st = unsafe { f(a.ptr(), sys::ACL_INT8, &mut n) };
        check(self.api(), st, "aclnnCalculateMatmulWeightSizeV2")?;
        Ok(n)
    }

    /// `aclnnTransMatmulWeight(w)`: rewrite the contiguous INT8 ND weight `w` (offset 0, its
    /// allocation holding [`Runtime::nz_weight_elems`] bytes) in place into FRACTAL_NZ; the runtime
    /// then describes `w` as FRACTAL_NZ, so the same aclTensor goes to the A8W8 GroupedMatmulV4
    /// ([HA 81RC1alpha001 aclnnTransMatmulWeight.md]; RULES.md NZ5). A phase-one refusal comes
    /// back as [`Outcome::Rejected`] (nothing rewritten).
    pub fn trans_matmul_weight(&self, w: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(
            api.aclnnTransMatmulWeightGetWorkspaceSize,
            "aclnnTransMatmulWeightGetWorkspaceSize",
        )?;
        let l = opt(api.aclnnTransMatmulWeight, "aclnnTransMatmulWeight")?;
        // SAFETY: a live tensor of this runtime.
        self.two_phase_outcome("aclnnTransMatmulWeight", |ws, ex| unsafe { p1(w.ptr(), ws, ex) }, l)
    }
}
