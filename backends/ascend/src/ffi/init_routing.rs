//! `aclnnMoeInitRoutingV3` / `V2`: MoE permute (dispatch).

use std::ptr;

use moehal_core::Result;

use super::aclnn::opt;
use super::{IntArray, Outcome, Runtime, Tensor};

impl Runtime {
    /// `aclnnMoeInitRoutingV3`, dropless (dropPadMode 0), unquantised (quantMode -1, no scale or
    /// offset input), with the call pattern that the 2025 and the 2026 op code both accept
    /// (`ascend_audit.md` P1-P3; what vLLM-Ascend's `TokenDispatcherWithAllGather` passes):
    /// activeNum = T·k (the 2025 tiling requires -1 or N·K), expertTokensNumType 1 = per-expert
    /// **counts** (the 2025 tiling accepts only 1 and 2), `range` = `[0, E]` (the 2025 aclnn layer
    /// dereferences it unconditionally; `None` only where a probe showed the op rejects it), rowIdxType
    /// 0 = GATHER, `expandedRowIdx[t·k+j]` = position of slot (t,j) ([OT] moe_v3_row_idx_gather.h;
    /// torch_npu doc formula), and `scale_out` FLOAT `[T·k]`, which the aclnn layer null-checks
    /// (`CheckNotNull(... expandedScaleOut)`, 161001). `counts` is INT64 `[E]`.
    pub fn init_routing_v3(
        &self,
        x: &Tensor<'_>,
        ids: &Tensor<'_>,
        active_num: i64,
        e: i64,
        range: Option<&IntArray<'_>>,
        ex_x: &Tensor<'_>,
        row_idx: &Tensor<'_>,
        counts: &Tensor<'_>,
        scale_out: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(
            api.aclnnMoeInitRoutingV3GetWorkspaceSize,
            "aclnnMoeInitRoutingV3GetWorkspaceSize",
        )?;
        let l = opt(api.aclnnMoeInitRoutingV3, "aclnnMoeInitRoutingV3")?;
        let range = range.map_or(ptr::null(), |r| r.ptr());
        // SAFETY: live objects of this runtime or NULL for absent optionals.
        self.two_phase_outcome(
            "aclnnMoeInitRoutingV3",
            |ws, exe| unsafe {
                p1(
                    x.ptr(),
                    ids.ptr(),
                    ptr::null(),
                    ptr::null(),
                    active_num,
                    0,
                    e,
                    0,
                    1,
                    true,
                    -1,
                    range,
                    0,
                    ex_x.ptr(),
                    row_idx.ptr(),
                    counts.ptr(),
                    scale_out.ptr(),
                    ws,
                    exe,
                )
            },
            l,
        )
    }

    /// `aclnnMoeInitRoutingV2`, dropless (activeNum 0 = all rows, capacity 0, dropPadMode 0),
    /// flag 1 = cumulative INT32 `[E]` counts, no before-capacity output (OPTIONAL in the op def).
    /// `expandedRowIdx[t·k+j]` = position of slot (t,j) ([OT] moe_v2_gather_out.h).
    pub fn init_routing_v2(
        &self,
        x: &Tensor<'_>,
        ids: &Tensor<'_>,
        e: i64,
        ex_x: &Tensor<'_>,
        row_idx: &Tensor<'_>,
        counts: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(
            api.aclnnMoeInitRoutingV2GetWorkspaceSize,
            "aclnnMoeInitRoutingV2GetWorkspaceSize",
        )?;
        let l = opt(api.aclnnMoeInitRoutingV2, "aclnnMoeInitRoutingV2")?;
        // SAFETY: live objects of this runtime or NULL.
        self.two_phase_outcome(
            "aclnnMoeInitRoutingV2",
            |ws, exe| unsafe {
                p1(
                    x.ptr(),
                    ids.ptr(),
                    0,
                    0,
                    e,
                    0,
                    1,
                    false,
                    ex_x.ptr(),
                    row_idx.ptr(),
                    counts.ptr(),
                    ptr::null(),
                    ws,
                    exe,
                )
            },
            l,
        )
    }
}
