//! [`CpuBackend`]: the `moehal_core::Backend` implementation of this crate. Dtype dispatch happens
//! here, once per op; value-dependent validation runs inside each op before anything is written.

use crate::elem::Elem;
use crate::engram::{self, GatherOut, Table};
use crate::grouped_gemm::{self, Bf16Kernel, GemmArgs, Layout, PackedWeights, Weights};
use crate::pool::Pool;
use crate::simd::{mem, Isa, Kernels};
use crate::{moe_combine, moe_permute, router_topk, swiglu};
use half::{bf16, f16};
use moehal_core::host::{self, slice, slice_mut, HostMemory};
use moehal_core::ops::{
    Checked, EngramHash, EngramLookup, GatherRows, GroupedGemm, GroupedGemmQ, MoeCombine, MoePermute, OpDesc,
    QuantDesc, QuantizeFp8, QuantizeInt8, RouterHash, RouterTopk, Swiglu, TableFormat, WeightLayout,
};
use moehal_core::{Backend, Buffer, DType, DeviceInfo, Error, Result, Support, TensorMut, TensorRef};

const NAME: &str = "cpu";

/// The CPU backend: host memory, SIMD kernels of the best instruction set of this machine, threads
/// from a rayon pool (by default the process-wide one, shared by every `CpuBackend::new()`).
#[derive(Debug, Clone)]
pub struct CpuBackend {
    kern: &'static Kernels,
    pool: Pool,
    /// Forced bf16 kernel; `None` = [`grouped_gemm::bf16_kernel_default`] (resolved at first use).
    bf16: Option<Bf16Kernel>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// Best kernels, process-wide pool (all cores unless `MOEHAL_CPU_THREADS` or
    /// [`crate::pool::set_default_threads`] say otherwise).
    pub fn new() -> Self {
        CpuBackend {
            kern: Kernels::best(),
            pool: Pool::global().clone(),
            bf16: None,
        }
    }

    /// [`CpuBackend::new`] after validating the environment ([`crate::env::check`]): the way a
    /// program opens the backend when it wants a bad `MOEHAL_CPU_THREADS`, `MOEHAL_CPU_ISA` or
    /// `MOEHAL_CPU_BF16` to be an error rather than ignored. Warnings (more threads than cores, an
    /// instruction set this CPU lacks) are not errors: [`crate::env::check`] returns them for the
    /// caller to show.
    ///
    /// Errors: `InvalidArgument` (op `env`, field = the variable) naming the value and the
    /// accepted values.
    pub fn open() -> Result<Self> {
        crate::env::check()?;
        Ok(Self::new())
    }

    /// Best kernels on a dedicated pool of `threads` workers (0 = all cores).
    ///
    /// Errors: `Device` if the threads cannot be started.
    pub fn with_threads(threads: usize) -> Result<Self> {
        Ok(CpuBackend {
            kern: Kernels::best(),
            pool: Pool::new(threads)?,
            bf16: None,
        })
    }

    /// The kernels of a given instruction set (e.g. to test a fallback), on the shared pool.
    ///
    /// Errors: `Unsupported` if this machine cannot run `isa`.
    pub fn with_isa(isa: Isa) -> Result<Self> {
        let kern = Kernels::for_isa(isa).ok_or_else(|| {
            Error::unsupported(
                "new",
                NAME,
                format!("instruction set {} not available on this CPU", isa.name()),
            )
        })?;
        Ok(CpuBackend {
            kern,
            pool: Pool::global().clone(),
            bf16: None,
        })
    }

    /// This backend with the bf16 `grouped_gemm` kernel forced to `k` (instead of the per-machine
    /// default), e.g. to test both.
    ///
    /// Errors: `Unsupported` if this machine cannot run `k` with this backend's kernel table.
    pub fn with_bf16_kernel(mut self, k: Bf16Kernel) -> Result<Self> {
        if !k.available(self.kern) {
            return Err(Error::unsupported(
                "new",
                NAME,
                format!(
                    "bf16 kernel {} not available with this table (dot needs AVX512-BF16, amx the amx table; table: {})",
                    k.name(),
                    self.kern.isa().name()
                ),
            ));
        }
        self.bf16 = Some(k);
        Ok(self)
    }

    /// The bf16 `grouped_gemm` kernel this backend uses (forced, or the per-machine default: dot on AMD, FMA elsewhere).
    pub fn bf16_kernel(&self) -> Bf16Kernel {
        self.bf16
            .unwrap_or_else(|| grouped_gemm::bf16_kernel_default(self.kern))
    }

    /// The kernel table in use.
    pub fn kernels(&self) -> &'static Kernels {
        self.kern
    }

    /// The thread pool in use.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// `grouped_gemm` with weights prepared once by [`PackedWeights::new`] (no per-call weight
    /// traffic beyond one streaming read). `x`, `bias`, `y` as in the op; `group_end` host i64.
    ///
    /// Errors: `InvalidArgument` as for the op.
    pub fn grouped_gemm_packed<T: Elem>(
        &self,
        x: &[T],
        m: usize,
        group_end: &[i64],
        w: &PackedWeights<T>,
        row_scale: Option<&[f32]>,
        bias: Option<&[T]>,
        y: &mut [T],
    ) -> Result<()> {
        let args = GemmArgs {
            x,
            m,
            k: w.k(),
            n: w.n(),
            group_end,
            w: Weights::Packed(w),
            row_scale,
            bias,
        };
        grouped_gemm::grouped_gemm_with(self.kern, &self.pool, &args, y, self.bf16_kernel())
    }
}

fn gemm_typed<T: Elem + moehal_core::Element>(be: &CpuBackend, a: &mut GroupedGemm<'_>) -> Result<()> {
    const OP: &str = "grouped_gemm";
    let d = a.dims();
    let layout = match a.layout {
        WeightLayout::NK => Layout::NK,
        WeightLayout::KN => Layout::KN,
    };
    let x = slice::<T>(&a.x, OP, "x")?;
    let w = slice::<T>(&a.w, OP, "w")?;
    let ge = slice::<i64>(&a.group_end, OP, "group_end")?;
    let rs = a
        .row_scale
        .as_ref()
        .map(|t| slice::<f32>(t, OP, "row_scale"))
        .transpose()?;
    let bias = a.bias.as_ref().map(|t| slice::<T>(t, OP, "bias")).transpose()?;
    let y = slice_mut::<T>(&mut a.y, OP, "y")?;
    let args = GemmArgs {
        x,
        m: d.m,
        k: d.k,
        n: d.n,
        group_end: ge,
        w: Weights::Raw(w, layout),
        row_scale: rs,
        bias,
    };
    let b = if T::KIND == crate::elem::ElemKind::Bf16 {
        be.bf16_kernel()
    } else {
        Bf16Kernel::Fma
    };
    grouped_gemm::grouped_gemm_with(be.kern, &be.pool, &args, y, b)
}

fn router_typed<T: Elem + moehal_core::Element>(be: &CpuBackend, a: &mut RouterTopk<'_>) -> Result<()> {
    const OP: &str = "router_topk";
    let (t, e) = a.dims();
    let logits = slice::<T>(&a.logits, OP, "logits")?;
    let bias = a.bias.as_ref().map(|b| slice::<f32>(b, OP, "bias")).transpose()?;
    let cfg = a.config;
    // The raw op checks every length before writing; outputs are written in place.
    let ids = slice_mut::<i32>(&mut a.ids, OP, "ids")?;
    let w = slice_mut::<f32>(&mut a.weights, OP, "weights")?;
    let counts = a
        .expert_counts
        .as_mut()
        .map(|ec| slice_mut::<i64>(ec, OP, "expert_counts"))
        .transpose()?;
    router_topk::router_topk(be.kern, &be.pool, &cfg, logits, t, e, bias, ids, w, counts)
}

fn router_hash_typed<T: Elem + moehal_core::Element>(be: &CpuBackend, a: &mut RouterHash<'_>) -> Result<()> {
    const OP: &str = "router_topk";
    let (t, e) = a.dims();
    let logits = slice::<T>(&a.logits, OP, "logits")?;
    let table = slice::<i32>(&a.tid2eid, OP, "tid2eid")?;
    let tokens = slice::<i64>(&a.token_ids, OP, "token_ids")?;
    let cfg = a.config;
    // The raw op checks lengths and every row it reads before writing.
    let ids = slice_mut::<i32>(&mut a.ids, OP, "ids")?;
    let w = slice_mut::<f32>(&mut a.weights, OP, "weights")?;
    let counts = a
        .expert_counts
        .as_mut()
        .map(|ec| slice_mut::<i64>(ec, OP, "expert_counts"))
        .transpose()?;
    router_topk::router_hash(be.kern, &cfg, logits, t, e, table, tokens, ids, w, counts)
}

fn swiglu_typed<T: Elem + moehal_core::Element>(be: &CpuBackend, a: &mut Swiglu<'_>) -> Result<()> {
    let (m, i) = a.dims();
    let h = slice::<T>(&a.h, "swiglu", "h")?;
    let out = slice_mut::<T>(&mut a.out, "swiglu", "out")?;
    swiglu::swiglu(be.kern, &be.pool, h, m, i, a.limit, out)
}

fn combine_typed<T: Elem + moehal_core::Element>(be: &CpuBackend, a: &mut MoeCombine<'_>) -> Result<()> {
    const OP: &str = "moe_combine";
    let (t, k, h, r) = a.dims();
    let y = slice::<T>(&a.y_perm, OP, "y_perm")?;
    let sr = slice::<i64>(&a.slot_row, OP, "slot_row")?;
    let w = slice::<f32>(&a.weights, OP, "weights")?;
    let out = slice_mut::<T>(&mut a.out, OP, "out")?;
    moe_combine::moe_combine(be.kern, &be.pool, y, r, h, sr, w, t, k, out)
}

/// Bytes of a host tensor view.
fn view_bytes<'a>(t: &TensorRef<'a>, op: &'static str, field: &'static str) -> Result<&'a [u8]> {
    Ok(match t.dtype() {
        DType::F32 => bytemuck::cast_slice(slice::<f32>(t, op, field)?),
        DType::BF16 => bytemuck::cast_slice(slice::<bf16>(t, op, field)?),
        DType::F16 => bytemuck::cast_slice(slice::<f16>(t, op, field)?),
        DType::I32 => bytemuck::cast_slice(slice::<i32>(t, op, field)?),
        DType::I64 => bytemuck::cast_slice(slice::<i64>(t, op, field)?),
        DType::U8 => slice::<u8>(t, op, field)?,
        DType::I8 => bytemuck::cast_slice(slice::<i8>(t, op, field)?),
    })
}

/// The bytes of a rank-2 view that its op's `validate` already checked (dtype, contiguity,
/// alignment, extent inside the buffer: [`TensorRef::check`]), without checking them again.
///
/// Issue 16 item 9: `gather_rows` of 8 rows went through [`slice()`] / [`slice_mut()`] for the
/// table and the output, whose dtype, contiguity, alignment and bounds checks repeat `validate`'s;
/// in a `perf record` of 8-row calls (`examples/gather_gap.rs`, benches/RESULTS.md) those repeats
/// were ~8% of the call, part of the 0.1 us by which the CPU backend trailed the reference (which
/// takes the table and output with [`host::bytes`]). Still no panic path: the range is taken
/// with `get`.
#[inline]
fn checked_bytes<'a>(t: &TensorRef<'a>, op: &'static str, field: &'static str) -> Result<&'a [u8]> {
    let es = t.dtype().size();
    let (start, len) = (t.offset() * es, t.shape().iter().product::<usize>() * es);
    let b = host::bytes(t.buffer(), op, field)?;
    if len == 0 {
        // An empty view (as `slice` has it): no range to take, whatever its offset.
        return Ok(&[]);
    }
    b.get(start..start + len)
        .ok_or_else(|| Error::invalid(op, field, "view outside its buffer"))
}

/// [`checked_bytes`] of an output view.
#[inline]
fn checked_bytes_mut<'b>(t: &'b mut TensorMut<'_>, op: &'static str, field: &'static str) -> Result<&'b mut [u8]> {
    let es = t.dtype().size();
    let (start, len) = (t.offset() * es, t.shape().iter().product::<usize>() * es);
    let b = host::bytes_mut(t.buffer_mut(), op, field)?;
    if len == 0 {
        return Ok(&mut []);
    }
    b.get_mut(start..start + len)
        .ok_or_else(|| Error::invalid(op, field, "view outside its buffer"))
}

/// The table of a validated `gather_rows` / `engram_lookup`.
#[inline]
fn table_of<'a>(t: &TensorRef<'a>, format: TableFormat, op: &'static str) -> Result<Table<'a>> {
    let w = t.shape()[1];
    let data = checked_bytes(t, op, "table")?;
    Ok(match format {
        TableFormat::Fp8E4m3Ue8m0 => Table::Fp8 {
            data,
            d: format.row_dim(w).unwrap_or(0),
            rows: t.shape()[0],
        },
        _ => Table::Plain {
            data,
            row_bytes: w * t.dtype().size(),
            rows: t.shape()[0],
        },
    })
}

#[inline]
fn out_of<'b>(out: &'b mut TensorMut<'_>, format: TableFormat, op: &'static str) -> Result<GatherOut<'b>> {
    Ok(match (format, out.dtype()) {
        (TableFormat::Fp8E4m3Ue8m0, DType::F32) => GatherOut::F32(slice_mut::<f32>(out, op, "out")?),
        (TableFormat::Fp8E4m3Ue8m0, DType::BF16) => GatherOut::Bf16(slice_mut::<bf16>(out, op, "out")?),
        (TableFormat::Fp8E4m3Ue8m0, d) => return Err(Error::unsupported(op, NAME, format!("fp8 table to {d}"))),
        (_, DType::F32 | DType::BF16 | DType::F16) => GatherOut::Bytes(checked_bytes_mut(out, op, "out")?),
        (_, d) => return Err(Error::unsupported(op, NAME, format!("output dtype {d}"))),
    })
}

macro_rules! by_float {
    ($dt:expr, $op:expr, $T:ident => $body:expr) => {
        match $dt {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::BF16 => {
                type $T = bf16;
                $body
            }
            DType::F16 => {
                type $T = f16;
                $body
            }
            d => Err(Error::unsupported($op, NAME, format!("dtype {d}"))),
        }
    };
}

/// Why this table does not use AMX, where that is worth saying (empty on the AMX table and on
/// non-x86 targets): `MOEHAL_CPU_ISA` chose a lower table, or detection failed (the reason).
fn amx_note(kern: &Kernels) -> String {
    if kern.isa() == Isa::Amx || !cfg!(target_arch = "x86_64") {
        return String::new();
    }
    match crate::simd::amx::Amx::status() {
        Ok(()) => format!("; amx available, not used: {} table selected", kern.isa().name()),
        Err(why) => format!("; no amx: {why}"),
    }
}

/// On aarch64, the CPU features found and the kernel of each op family (issue 14: `moehal devices`
/// names them), e.g. `; features: neon fp16 dotprod (no bf16 i8mm sve); kernels: gemm=neon 6x64
/// ...`; empty elsewhere (the x86 tables are named by the ISA and the AMX note).
fn aarch64_note(kern: &Kernels) -> String {
    if !cfg!(target_arch = "aarch64") {
        return String::new();
    }
    let feats = crate::simd::aarch64_features();
    let name = |want: bool| {
        feats
            .iter()
            .filter(|(_, has)| *has == want)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (found, missing) = (name(true), name(false));
    let kernels = kern
        .kernel_choices()
        .iter()
        .map(|(family, k)| format!("{family}={k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let missing = if missing.is_empty() {
        String::new()
    } else {
        format!(" (no {missing})")
    };
    format!("; features: {found}{missing}; kernels: {kernels}")
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        NAME
    }

    fn device_info(&self) -> DeviceInfo {
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        DeviceInfo {
            name: model,
            memory_bytes: None,
            capability: format!(
                "{} bf16-{}{}{}",
                self.kern.isa().name(),
                self.bf16_kernel().name(),
                amx_note(self.kern),
                aarch64_note(self.kern)
            ),
            compute_units: Some(self.pool.threads()),
            host_memory: true,
        }
    }

    fn supports(&self, op: &OpDesc) -> Support {
        let isa = self.kern.isa().name();
        match op {
            OpDesc::GatherRows { host_table: true, .. } | OpDesc::EngramLookup { host_table: true, .. } => {
                Support::no("host backend: tables and outputs are both host memory")
            }
            OpDesc::GroupedGemm { dtype, .. } if *dtype == DType::BF16 && self.bf16_kernel() == Bf16Kernel::Amx => {
                Support::yes(format!(
                    "amx tdpbf16ps 32x32 tile blocks (groups of <= {} rows: avx512 decode kernels)",
                    crate::simd::MR
                ))
            }
            OpDesc::GroupedGemm { dtype, .. } if *dtype == DType::BF16 && self.bf16_kernel() == Bf16Kernel::Dot => {
                Support::yes(format!(
                    "{isa} avx512bf16 vdpbf16ps {}x{} pair microkernel",
                    crate::simd::MR,
                    crate::simd::NR
                ))
            }
            OpDesc::GroupedGemm { .. } => Support::yes(format!(
                "{isa} f32-panel {}x{} microkernel (bf16: {}{})",
                crate::simd::MR,
                crate::simd::NR,
                self.bf16_kernel().name(),
                amx_note(self.kern)
            )),
            OpDesc::RouterTopk { .. } | OpDesc::Swiglu { .. } => Support::yes(format!("{isa} fused per token")),
            OpDesc::RouterHash { .. } => Support::yes(format!("{isa} table lookup + scores per token")),
            OpDesc::GatherRows { .. } | OpDesc::EngramLookup { .. } => Support::yes("prefetching gather"),
            _ => Support::yes(format!("{isa} parallel")),
        }
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        const HUGE: usize = 2 << 20;
        if bytes >= HUGE {
            // A fresh anonymous mapping advised for transparent huge pages before any page is
            // touched (zeroing first would fault in 4 KiB pages): random gathers over multi-GiB
            // tables then miss the TLB far less.
            let buf = mem::HugeBuf::<u8>::zeroed(bytes).ok_or(Error::OutOfMemory {
                backend: NAME.into(),
                bytes: bytes as u64,
            })?;
            return Ok(Buffer::new(Box::new(HostMemory::from_owner_mut(buf))));
        }
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

    #[allow(unsafe_code)]
    unsafe fn wrap_external(&self, ptr: u64, bytes: usize) -> Result<Buffer> {
        // SAFETY: forwarded contract of Backend::wrap_external (host memory for this backend).
        unsafe { mem::wrap_host(ptr, bytes) }
    }

    fn grouped_gemm(&self, args: Checked<GroupedGemm<'_>>) -> Result<()> {
        let mut a = args.into_inner();
        by_float!(a.x.dtype(), "grouped_gemm", T => gemm_typed::<T>(self, &mut a))
    }

    fn router_topk(&self, args: Checked<RouterTopk<'_>>) -> Result<()> {
        let mut a = args.into_inner();
        by_float!(a.logits.dtype(), "router_topk", T => router_typed::<T>(self, &mut a))
    }

    fn router_hash(&self, args: Checked<RouterHash<'_>>) -> Result<()> {
        let mut a = args.into_inner();
        by_float!(a.logits.dtype(), "router_topk", T => router_hash_typed::<T>(self, &mut a))
    }

    fn moe_permute(&self, args: Checked<MoePermute<'_>>) -> Result<()> {
        const OP: &str = "moe_permute";
        let mut a = args.into_inner();
        let (t, k) = a.dims();
        let ids = slice::<i32>(&a.ids, OP, "ids")?;
        // The ids are checked once, by the raw op, before it writes anything.
        let x = a.x.as_ref().map(|x| view_bytes(x, OP, "x")).transpose()?;
        let rb = a.x.as_ref().map_or(0, |x| x.shape()[1] * x.dtype().size());
        let xp: Option<&mut [u8]> = match a.x_perm.as_mut() {
            Some(xp) => Some(match xp.dtype() {
                DType::F32 => bytemuck::cast_slice_mut(slice_mut::<f32>(xp, OP, "x_perm")?),
                DType::BF16 => bytemuck::cast_slice_mut(slice_mut::<bf16>(xp, OP, "x_perm")?),
                DType::F16 => bytemuck::cast_slice_mut(slice_mut::<f16>(xp, OP, "x_perm")?),
                d => return Err(Error::unsupported(OP, NAME, format!("x dtype {d}"))),
            }),
            None => None,
        };
        // Outputs come from distinct buffers (the borrow rules of TensorMut guarantee it); the raw op
        // checks the ids before writing anything.
        let routed_x = match (x, xp) {
            (Some(xs), Some(xp)) => Some((xs, rb, xp)),
            _ => None,
        };
        let ge = slice_mut::<i64>(&mut a.group_end, OP, "group_end")?;
        let st = slice_mut::<i64>(&mut a.src_token, OP, "src_token")?;
        let sr = slice_mut::<i64>(&mut a.slot_row, OP, "slot_row")?;
        moe_permute::moe_permute(&self.pool, ids, t, k, a.num_experts, ge, st, sr, routed_x)
    }

    fn swiglu(&self, args: Checked<Swiglu<'_>>) -> Result<()> {
        let mut a = args.into_inner();
        by_float!(a.h.dtype(), "swiglu", T => swiglu_typed::<T>(self, &mut a))
    }

    fn moe_combine(&self, args: Checked<MoeCombine<'_>>) -> Result<()> {
        let mut a = args.into_inner();
        by_float!(a.y_perm.dtype(), "moe_combine", T => combine_typed::<T>(self, &mut a))
    }

    fn engram_hash(&self, args: Checked<EngramHash<'_>>) -> Result<()> {
        const OP: &str = "engram_hash";
        let mut a = args.into_inner();
        let ids = slice::<i64>(&a.ids, OP, "ids")?;
        let pos = a
            .positions
            .as_ref()
            .map(|p| slice::<i64>(p, OP, "positions"))
            .transpose()?;
        let alive = a.alive.as_ref().map(|p| slice::<u8>(p, OP, "alive")).transpose()?;
        let rows = slice_mut::<i64>(&mut a.rows, OP, "rows")?;
        engram::engram_hash(self.kern, &self.pool, a.layer, ids, pos, alive, a.history, rows)
    }

    fn gather_rows(&self, args: Checked<GatherRows<'_>>) -> Result<()> {
        const OP: &str = "gather_rows";
        let mut a = args.into_inner();
        let (t, c) = {
            let s = a.rows.shape();
            (s[0], s[1])
        };
        // Validated i64 `[T, C]`, contiguous, aligned, inside its buffer (`validate`): its bytes
        // are taken straight from the buffer, `get` instead of a panic path; an empty view is a
        // dangling pointer, so it takes no cast.
        let n = t * c;
        let rows: &[i64] = if n == 0 {
            &[]
        } else {
            let start = a.rows.offset() * 8;
            let rb = host::bytes(a.rows.buffer(), OP, "rows")?
                .get(start..start + n * 8)
                .ok_or_else(|| Error::invalid(OP, "rows", "view outside its buffer"))?;
            bytemuck::try_cast_slice(rb).map_err(|e| Error::invalid(OP, "rows", format!("{e:?}")))?
        };
        if a.format != TableFormat::Fp8E4m3Ue8m0 && n < engram::GATHER_SERIAL_BELOW {
            // The decode step's case (issue 16 item 9): a plain table and few rows, a copy on this
            // thread whatever the pool's size. Straight to the copy loop: no table / output enums,
            // no shape products (`validate` made the output `[T, C * W]` of the table's dtype);
            // `gather_plain_serial` checks the lengths it relies on.
            let (r, w) = {
                let s = a.table.shape();
                (s[0], s[1])
            };
            let es = a.table.dtype().size();
            let row_bytes = w * es;
            // The table from its offset on (an empty table's offset may be anywhere: no bytes).
            let table = host::bytes(a.table.buffer(), OP, "table")?
                .get(a.table.offset() * es..)
                .unwrap_or(&[]);
            let len = n * row_bytes;
            let start = a.out.offset() * es;
            let out = if len == 0 {
                &mut []
            } else {
                host::bytes_mut(a.out.buffer_mut(), OP, "out")?
                    .get_mut(start..start + len)
                    .ok_or_else(|| Error::invalid(OP, "out", "view outside its buffer"))?
            };
            return engram::gather_plain_serial(table, row_bytes, r, rows, out);
        }
        let table = table_of(&a.table, a.format, OP)?;
        let out = out_of(&mut a.out, a.format, OP)?;
        engram::gather_rows(&self.pool, table, rows, c, out)
    }

    fn engram_lookup(&self, args: Checked<EngramLookup<'_>>) -> Result<()> {
        const OP: &str = "engram_lookup";
        let mut a = args.into_inner();
        let ids = slice::<i64>(&a.ids, OP, "ids")?;
        let pos = a
            .positions
            .as_ref()
            .map(|p| slice::<i64>(p, OP, "positions"))
            .transpose()?;
        let alive = a.alive.as_ref().map(|p| slice::<u8>(p, OP, "alive")).transpose()?;
        let table = table_of(&a.table, a.format, OP)?;
        let out = out_of(&mut a.out, a.format, OP)?;
        engram::engram_lookup(self.kern, &self.pool, a.layer, ids, pos, alive, a.history, table, out)
    }
    fn supports_quant(&self, op: &QuantDesc) -> Support {
        crate::quant::support(self.kern, op)
    }
    fn grouped_gemm_quant(&self, args: Checked<GroupedGemmQ<'_>>) -> Result<()> {
        crate::quant::run_checked(self.kern, &self.pool, args.into_inner())
    }
    fn quantize_fp8(&self, args: Checked<QuantizeFp8<'_>>) -> Result<()> {
        crate::quant::quantize_fp8_checked(&self.pool, args.into_inner())
    }
    fn quantize_int8(&self, args: Checked<QuantizeInt8<'_>>) -> Result<()> {
        crate::quant::quantize_int8_checked(&self.pool, args.into_inner())
    }
}
