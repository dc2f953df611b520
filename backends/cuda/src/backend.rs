//! `impl Backend for CudaBackend`: identity, support table, memory and stream entry points; each op
//! forwards to its file in `crate::ops`.

use moehal_core::ops::{
    EngramHash, EngramLookup, GatherRows, GroupedGemm, GroupedGemmQ, MoeCombine, MoePermute, OpDesc, QuantDesc,
    QuantizeFp8, QuantizeInt8, RouterHash, RouterTopk, Swiglu,
};
use moehal_core::{Backend, Buffer, Checked, DType, DeviceInfo, Error, Result, Support};

use crate::device::{dev_err, CudaBackend};
use crate::memory::CudaMemory;
use crate::raw::{self, Stream};
use crate::NAME;

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        NAME
    }

    fn device_info(&self) -> DeviceInfo {
        DeviceInfo {
            name: self.name.clone(),
            memory_bytes: Some(self.memory),
            capability: format!("sm_{}{}", self.cc.0, self.cc.1),
            compute_units: (self.sms > 0).then_some(self.sms as usize),
            host_memory: false,
        }
    }

    fn free_memory_bytes(&self) -> Option<u64> {
        // cuMemGetInfo on this device's context (cudarc binds it to the calling thread first).
        self.ctx.mem_get_info().ok().map(|(free, _)| free as u64)
    }

    fn supports(&self, op: &OpDesc) -> Support {
        match *op {
            OpDesc::GroupedGemm { dtype: DType::F32, .. } => {
                Support::yes("decode (16-byte weight streaming) / simt 64x64")
            }
            OpDesc::GroupedGemm {
                dtype: DType::BF16 | DType::F16,
                ..
            } => Support::yes("decode (16-byte weight streaming) / mma.sync m16n8k16 128x128x32 / simt"),
            OpDesc::GroupedGemm { dtype, .. } => Support::no(format!("dtype {dtype}")),
            OpDesc::RouterTopk { .. } => Support::yes("fused warp-per-token (E <= 512)"),
            OpDesc::RouterHash { .. } => Support::yes("check kernel, then warp per token (any E)"),
            OpDesc::MoePermute { .. } => Support::yes("count + scan + stable scatter"),
            OpDesc::Swiglu { .. } => Support::yes("elementwise"),
            OpDesc::MoeCombine { .. } => Support::yes("per-token ordered sum"),
            OpDesc::EngramHash => Support::yes("thread per token"),
            OpDesc::GatherRows { host_table: true, .. } | OpDesc::EngramLookup { host_table: true, .. } => {
                Support::yes("warp per row, host table mapped (pinned, read in place)")
            }
            OpDesc::GatherRows { .. } | OpDesc::EngramLookup { .. } => Support::yes("warp per row, 16-byte copies"),
        }
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        raw::bind(&self.ctx).map_err(dev_err)?;
        let ptr = if bytes == 0 {
            0
        } else {
            raw::mem_alloc(bytes).map_err(|e| {
                if e.is_oom() {
                    Error::OutOfMemory {
                        backend: NAME.into(),
                        bytes: bytes as u64,
                    }
                } else {
                    dev_err(e)
                }
            })?
        };
        Ok(Buffer::new(Box::new(CudaMemory {
            ptr,
            len: bytes,
            ordinal: self.ordinal,
            owned: true,
            ctx: self.ctx.clone(),
        })))
    }

    fn upload(&self, dst: &mut Buffer, offset: usize, src: &[u8]) -> Result<()> {
        self.check_range(dst, offset, src.len(), "upload")?;
        let s = self.begin()?;
        raw::htod(dst.addr() + offset as u64, src, s).map_err(dev_err)
    }

    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.check_range(src, offset, dst.len(), "download")?;
        let s = self.begin()?;
        raw::dtoh(dst, src.addr() + offset as u64, s).map_err(dev_err)
    }

    fn synchronize(&self) -> Result<()> {
        let s = self.begin()?;
        s.sync().map_err(dev_err)
    }

    unsafe fn wrap_external(&self, ptr: u64, bytes: usize) -> Result<Buffer> {
        if ptr == 0 {
            return Err(Error::invalid("wrap_external", "ptr", "null pointer"));
        }
        Ok(Buffer::new(Box::new(CudaMemory {
            ptr,
            len: bytes,
            ordinal: self.ordinal,
            owned: false,
            ctx: self.ctx.clone(),
        })))
    }

    unsafe fn set_external_stream(&self, stream: u64) -> Result<()> {
        let mut cur = self.lock(&self.stream)?;
        let next = if stream == 0 {
            self.own_stream
        } else {
            Stream::borrowed(stream)
        };
        if next != *cur {
            // Work already enqueued on the old stream (uploads still in DMA, async ops) is not
            // ordered before work on the new one (both are non-blocking streams): drain it first.
            raw::bind(&self.ctx).map_err(dev_err)?;
            cur.sync().map_err(dev_err)?;
        }
        *cur = next;
        Ok(())
    }

    fn grouped_gemm(&self, args: Checked<GroupedGemm<'_>>) -> Result<()> {
        self.run_grouped_gemm(args)
    }

    fn router_topk(&self, args: Checked<RouterTopk<'_>>) -> Result<()> {
        self.run_router_topk(args)
    }

    fn router_hash(&self, args: Checked<RouterHash<'_>>) -> Result<()> {
        self.run_router_hash(args)
    }

    fn moe_permute(&self, args: Checked<MoePermute<'_>>) -> Result<()> {
        self.run_moe_permute(args)
    }

    fn swiglu(&self, args: Checked<Swiglu<'_>>) -> Result<()> {
        self.run_swiglu(args)
    }

    fn moe_combine(&self, args: Checked<MoeCombine<'_>>) -> Result<()> {
        self.run_moe_combine(args)
    }

    fn engram_hash(&self, args: Checked<EngramHash<'_>>) -> Result<()> {
        self.run_engram_hash(args)
    }

    fn gather_rows(&self, args: Checked<GatherRows<'_>>) -> Result<()> {
        self.run_gather_rows(args)
    }

    fn engram_lookup(&self, args: Checked<EngramLookup<'_>>) -> Result<()> {
        self.run_engram_lookup(args)
    }

    fn supports_quant(&self, op: &QuantDesc) -> Support {
        match *op {
            QuantDesc::QuantizeFp8 {
                dtype: DType::F32 | DType::BF16 | DType::F16,
                ..
            } => Support::yes("warp per 1x128 group (quantize.cu)"),
            QuantDesc::QuantizeInt8 {
                dtype: DType::F32 | DType::BF16 | DType::F16,
            } => Support::yes("block per row (quantize.cu)"),
            QuantDesc::QuantizeFp8 { dtype, .. } | QuantDesc::QuantizeInt8 { dtype } => {
                Support::no(format!("x dtype {dtype}"))
            }
            QuantDesc::GroupedGemm { .. } => match crate::ops::gq_kernel(op) {
                Some(_) => Support::yes("SIMT, column per thread (grouped_gemm_q.cu; tensor-core paths owed)"),
                None => Support::no("not an OPS.md §6 pairing (weight format, activation, output dtype)"),
            },
        }
    }

    fn grouped_gemm_quant(&self, args: Checked<GroupedGemmQ<'_>>) -> Result<()> {
        self.run_grouped_gemm_quant(args)
    }

    fn quantize_fp8(&self, args: Checked<QuantizeFp8<'_>>) -> Result<()> {
        self.run_quantize_fp8(args)
    }

    fn quantize_int8(&self, args: Checked<QuantizeInt8<'_>>) -> Result<()> {
        self.run_quantize_int8(args)
    }
}
