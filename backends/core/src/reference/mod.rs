//! The reference backend: scalar, obviously correct, f64 accumulation, every op and every rule of
//! OPS.md. It is the oracle every other backend is checked against; speed does not matter here.

mod engram;
mod gather_rows;
mod grouped_gemm;
mod moe_combine;
mod moe_permute;
pub mod quant;
mod router_topk;
mod swiglu;

use crate::backend::{Backend, DeviceInfo, Support};
use crate::host::{self, HostMemory};
use crate::ops::{
    Checked, EngramHash, EngramLookup, GatherRows, GroupedGemm, GroupedGemmQ, MoeCombine, MoePermute, OpDesc,
    QuantDesc, QuantizeFp8, QuantizeInt8, RouterHash, RouterTopk, Swiglu,
};
use crate::{Buffer, Result};

pub use router_topk::{hash_route_token, route_token, token_scores, TokenRoute};

/// The reference backend (name `"reference"`). Memory is host memory.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reference;

impl Reference {
    /// The reference backend.
    pub fn new() -> Self {
        Reference
    }
}

impl Backend for Reference {
    fn name(&self) -> &str {
        "reference"
    }
    fn device_info(&self) -> DeviceInfo {
        DeviceInfo {
            name: "host (scalar reference, f64 accumulation)".into(),
            memory_bytes: None,
            capability: "scalar".into(),
            compute_units: Some(1),
            host_memory: true,
        }
    }
    fn supports(&self, op: &OpDesc) -> Support {
        match op {
            OpDesc::GatherRows { host_table: true, .. } | OpDesc::EngramLookup { host_table: true, .. } => {
                Support::no("host backend: tables and outputs are both host memory")
            }
            _ => Support::yes("reference (scalar, f64)"),
        }
    }
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        Ok(Buffer::new(Box::new(HostMemory::zeroed(bytes)?)))
    }
    fn upload(&self, dst: &mut Buffer, offset: usize, src: &[u8]) -> Result<()> {
        host::upload(dst, offset, src)
    }
    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        host::download(src, offset, dst)
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    unsafe fn wrap_external(&self, ptr: u64, bytes: usize) -> Result<Buffer> {
        // SAFETY: forwarded contract of Backend::wrap_external (host memory for host backends).
        let mem = unsafe { HostMemory::from_raw(ptr as *mut u8, bytes, true)? };
        Ok(Buffer::new(Box::new(mem)))
    }
    fn grouped_gemm(&self, args: Checked<GroupedGemm<'_>>) -> Result<()> {
        grouped_gemm::run(args.into_inner())
    }
    fn router_topk(&self, args: Checked<RouterTopk<'_>>) -> Result<()> {
        router_topk::run(args.into_inner())
    }
    fn router_hash(&self, args: Checked<RouterHash<'_>>) -> Result<()> {
        router_topk::run_hash(args.into_inner())
    }
    fn moe_permute(&self, args: Checked<MoePermute<'_>>) -> Result<()> {
        moe_permute::run(args.into_inner())
    }
    fn swiglu(&self, args: Checked<Swiglu<'_>>) -> Result<()> {
        swiglu::run(args.into_inner())
    }
    fn moe_combine(&self, args: Checked<MoeCombine<'_>>) -> Result<()> {
        moe_combine::run(args.into_inner())
    }
    fn engram_hash(&self, args: Checked<EngramHash<'_>>) -> Result<()> {
        engram::hash(args.into_inner())
    }
    fn gather_rows(&self, args: Checked<GatherRows<'_>>) -> Result<()> {
        gather_rows::run(args.into_inner())
    }
    fn engram_lookup(&self, args: Checked<EngramLookup<'_>>) -> Result<()> {
        engram::lookup(args.into_inner())
    }
    fn supports_quant(&self, _op: &QuantDesc) -> Support {
        Support::yes("reference (decoded values, f64)")
    }
    fn grouped_gemm_quant(&self, args: Checked<GroupedGemmQ<'_>>) -> Result<()> {
        quant::grouped_gemm(args.into_inner())
    }
    fn quantize_fp8(&self, args: Checked<QuantizeFp8<'_>>) -> Result<()> {
        quant::quantize_fp8(args.into_inner())
    }
    fn quantize_int8(&self, args: Checked<QuantizeInt8<'_>>) -> Result<()> {
        quant::quantize_int8(args.into_inner())
    }
}
