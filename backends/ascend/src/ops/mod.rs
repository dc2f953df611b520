//! One file per op family: each adds `run_<op>` to [`Ascend`](crate::Ascend), which the `Backend`
//! impl calls after core's validation. The aclnn calls themselves are in `crate::ffi`, one file per
//! aclnn op family.

mod checks;
mod engram;
mod gather_rows;
mod grouped_gemm;
mod grouped_gemm_quant;
mod moe_combine;
mod moe_permute;

pub(crate) use moe_permute::permute_composable_with;
pub(crate) use router_topk::composed_prims;
mod router_topk;
mod swiglu;
