//! One file per op family, matching `kernels/cuda` one to one: each adds `run_<op>` to
//! [`CudaBackend`](crate::CudaBackend), which the `Backend` impl calls after core's validation.

mod engram_hash;
mod gather_rows;
mod grouped_gemm;
mod grouped_gemm_quant;
mod moe_combine;
mod moe_permute;
mod quantize;
mod router_topk;
mod swiglu;

pub(crate) use grouped_gemm_quant::gq_kernel;

pub(crate) fn cdiv(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}
pub(crate) fn grid1(n: usize, per_block: usize, cap: usize) -> u32 {
    cdiv(n, per_block).clamp(1, cap) as u32
}
