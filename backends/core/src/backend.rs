//! The `Backend` trait: one interface for every device.

use crate::ops::{
    Checked, EngramHash, EngramLookup, GatherRows, GroupedGemm, GroupedGemmQ, MoeCombine, MoePermute, OpDesc,
    QuantDesc, QuantizeFp8, QuantizeInt8, RouterHash, RouterTopk, Swiglu,
};
use crate::{Buffer, DType, Element, Error, Result};

/// What a backend says about one op variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Supported; `kernel` names the implementation that serves it (e.g. `"avx512bf16 blocked"`).
    Yes {
        /// Kernel (or kernel family) that runs it.
        kernel: String,
    },
    /// Not supported, and why.
    No {
        /// Why not (missing instruction set, vendor op absent, ...).
        reason: String,
    },
}

impl Support {
    /// Shorthand for [`Support::Yes`].
    pub fn yes(kernel: impl Into<String>) -> Self {
        Support::Yes { kernel: kernel.into() }
    }
    /// Shorthand for [`Support::No`].
    pub fn no(reason: impl Into<String>) -> Self {
        Support::No { reason: reason.into() }
    }
    /// Whether the op is supported.
    pub fn is_yes(&self) -> bool {
        matches!(self, Support::Yes { .. })
    }
}

/// A description of the device behind a backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    /// Device name (CPU model, GPU name, Ascend SoC name).
    pub name: String,
    /// Device memory in bytes, where known.
    pub memory_bytes: Option<u64>,
    /// Compute capability / instruction sets / kernel libraries (`"sm_90"`, `"avx512f avx512bf16"`,
    /// `"aclnn GroupedMatmulV4 MoeInitRoutingV3 …"`); the device's own name is [`DeviceInfo::name`].
    pub capability: String,
    /// Threads or compute units used, where meaningful.
    pub compute_units: Option<usize>,
    /// Whether the backend computes on the host: its [`Backend::alloc`] returns host memory
    /// ([`Location::Host`](crate::Location::Host)), as the reference and the CPU backend do. Device
    /// backends (CUDA, Ascend) say `false`; for them a host-resident Engram table is a separate
    /// variant (`host_table` of [`OpDesc::GatherRows`] / [`OpDesc::EngramLookup`]). The default is
    /// `false`.
    pub host_memory: bool,
}

/// One device that runs the ops of OPS.md. Object safe, `Send + Sync`.
///
/// Ops take arguments that passed core validation ([`Checked`]); a backend still checks the rules
/// that depend on element values (see [`crate::ops`]) before writing anything, and reports a
/// missing capability as [`Error::Unsupported`]. Device backends enqueue ops on their stream;
/// [`download`](Backend::download) and [`synchronize`](Backend::synchronize) wait for them.
pub trait Backend: Send + Sync {
    /// Short name (`"reference"`, `"cpu"`, `"cuda"`, `"ascend"`).
    fn name(&self) -> &str;
    /// The device.
    fn device_info(&self) -> DeviceInfo;
    /// Device memory free now, in bytes, where the backend can ask its runtime (CUDA
    /// `cuMemGetInfo`, ACL `aclrtGetMemInfo`); `None` (the default) where it cannot, or for a
    /// backend in host memory. [`DeviceInfo::memory_bytes`] is the total; a caller that sizes a
    /// run against the device (`moehal moe`) uses this when it is known, since other processes
    /// and earlier allocations hold part of the total.
    fn free_memory_bytes(&self) -> Option<u64> {
        None
    }
    /// Whether (and by which kernel) this backend runs `op`.
    fn supports(&self, op: &OpDesc) -> Support;

    /// Allocate `bytes` bytes of device memory (contents unspecified unless the backend says so).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] or [`Error::Device`].
    fn alloc(&self, bytes: usize) -> Result<Buffer>;
    /// Copy host bytes into `dst` at byte `offset`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the range leaves `dst` or `dst` is not this backend's memory.
    fn upload(&self, dst: &mut Buffer, offset: usize, src: &[u8]) -> Result<()>;
    /// Copy bytes of `src` starting at `offset` to the host, after all enqueued work.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the range leaves `src` or `src` is not this backend's memory.
    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()>;
    /// Wait for all enqueued work.
    ///
    /// # Errors
    /// [`Error::Device`] when the device reports a failure of earlier work.
    fn synchronize(&self) -> Result<()>;
    /// Wrap memory the caller owns (an engine's tensor) as a [`Buffer`], without copying. Dropping
    /// the buffer does not free it.
    ///
    /// # Safety
    /// `ptr` must address `bytes` bytes of memory of this backend's device that stay valid (and
    /// unused by others while ops run on them) for the life of the buffer.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a null pointer, [`Error::Unsupported`] if the backend cannot.
    unsafe fn wrap_external(&self, ptr: u64, bytes: usize) -> Result<Buffer>;
    /// Enqueue subsequent work on an engine's stream (`cudaStream_t`, `aclrtStream`).
    ///
    /// # Safety
    /// `stream` must be a valid stream of this backend's device and context, alive while used.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for backends without streams (the default).
    unsafe fn set_external_stream(&self, stream: u64) -> Result<()> {
        let _ = stream;
        Err(Error::unsupported(
            "set_external_stream",
            self.name(),
            "this backend has no streams",
        ))
    }

    /// OPS.md §1.
    ///
    /// # Errors
    /// Value-dependent [`Error::InvalidArgument`], [`Error::Unsupported`], device errors.
    fn grouped_gemm(&self, args: Checked<GroupedGemm<'_>>) -> Result<()>;
    /// OPS.md §2.
    ///
    /// # Errors
    /// [`Error::Unsupported`], device errors.
    fn router_topk(&self, args: Checked<RouterTopk<'_>>) -> Result<()>;
    /// OPS.md §2 "Hash routing" ([`RouterHash`]). The default reports [`Error::Unsupported`]; a
    /// backend that implements it also answers yes for [`OpDesc::RouterHash`] in `supports`.
    ///
    /// # Errors
    /// Value-dependent [`Error::InvalidArgument`] (token id outside `[0, V)`, table entry outside
    /// `[0, E)`; nothing is written then), [`Error::Unsupported`], device errors.
    fn router_hash(&self, args: Checked<RouterHash<'_>>) -> Result<()> {
        let _ = args;
        Err(Error::unsupported(
            "router_topk",
            self.name(),
            "hash routing (tid2eid) is not implemented by this backend",
        ))
    }
    /// OPS.md §3.
    ///
    /// # Errors
    /// Value-dependent [`Error::InvalidArgument`] (ids), [`Error::Unsupported`], device errors.
    fn moe_permute(&self, args: Checked<MoePermute<'_>>) -> Result<()>;
    /// OPS.md §3.
    ///
    /// # Errors
    /// [`Error::Unsupported`], device errors.
    fn swiglu(&self, args: Checked<Swiglu<'_>>) -> Result<()>;
    /// OPS.md §3.
    ///
    /// # Errors
    /// Value-dependent [`Error::InvalidArgument`] (slot rows), [`Error::Unsupported`], device errors.
    fn moe_combine(&self, args: Checked<MoeCombine<'_>>) -> Result<()>;
    /// OPS.md §4.
    ///
    /// # Errors
    /// Value-dependent [`Error::InvalidArgument`] (ids), [`Error::Unsupported`], device errors.
    fn engram_hash(&self, args: Checked<EngramHash<'_>>) -> Result<()>;
    /// OPS.md §5.
    ///
    /// # Errors
    /// Value-dependent [`Error::InvalidArgument`] (rows), [`Error::Unsupported`], device errors.
    fn gather_rows(&self, args: Checked<GatherRows<'_>>) -> Result<()>;
    /// OPS.md §5: `engram_hash` then `gather_rows` (the contract's own definition of the fused op).
    ///
    /// The default runs exactly that composition on this backend: it allocates the `[T, C]` i64
    /// rows with [`Backend::alloc`] (at least 8 bytes), calls [`Backend::engram_hash`] into them,
    /// then [`Backend::gather_rows`] from them. A backend overrides it when it fuses the two (no
    /// rows buffer, one launch) or names this op in its errors.
    ///
    /// # Errors
    /// Value-dependent [`Error::InvalidArgument`] (ids; reported under `engram_hash` by the
    /// default), [`Error::Unsupported`], out of memory for the rows, device errors.
    fn engram_lookup(&self, args: Checked<EngramLookup<'_>>) -> Result<()> {
        let a = args.into_inner();
        let (t, c) = (a.ids.numel(), a.layer.columns());
        let mut rows = self.alloc((t * c * 8).max(8))?;
        let hash = EngramHash {
            layer: a.layer,
            ids: a.ids,
            positions: a.positions,
            alive: a.alive,
            history: a.history,
            rows: rows.view_mut(DType::I64, &[t, c]),
        };
        self.engram_hash(hash.validate()?)?;
        let gather = GatherRows {
            table: a.table,
            format: a.format,
            rows: rows.view(DType::I64, &[t, c]),
            out: a.out,
        };
        self.gather_rows(gather.validate()?)
    }

    /// Whether (and by which kernel) this backend runs the quantized variant `op` (OPS.md §6).
    /// The default answers `No`: a backend without quantized kernels reports every §6 variant
    /// unsupported, with this reason, until it gets them.
    fn supports_quant(&self, op: &QuantDesc) -> Support {
        let _ = op;
        Support::no(QUANT_PENDING)
    }
    /// OPS.md §6 `grouped_gemm` with quantized operands. Default: [`Error::Unsupported`].
    ///
    /// # Errors
    /// Value-dependent [`Error::InvalidArgument`] (`group_end`), [`Error::Unsupported`], device errors.
    fn grouped_gemm_quant(&self, args: Checked<GroupedGemmQ<'_>>) -> Result<()> {
        Err(Error::unsupported(
            "grouped_gemm",
            self.name(),
            format!("{}: {QUANT_PENDING}", args.desc().variant()),
        ))
    }
    /// OPS.md §6 `quantize_fp8`. Default: [`Error::Unsupported`].
    ///
    /// # Errors
    /// [`Error::Unsupported`], device errors.
    fn quantize_fp8(&self, args: Checked<QuantizeFp8<'_>>) -> Result<()> {
        Err(Error::unsupported(
            "quantize_fp8",
            self.name(),
            format!("{}: {QUANT_PENDING}", args.desc().variant()),
        ))
    }
    /// OPS.md §6 `quantize_int8`. Default: [`Error::Unsupported`].
    ///
    /// # Errors
    /// [`Error::Unsupported`], device errors.
    fn quantize_int8(&self, args: Checked<QuantizeInt8<'_>>) -> Result<()> {
        Err(Error::unsupported(
            "quantize_int8",
            self.name(),
            format!("{}: {QUANT_PENDING}", args.desc().variant()),
        ))
    }
}

/// Why a backend without §6 kernels reports them unsupported.
pub const QUANT_PENDING: &str = "quantized formats (OPS.md §6) have no kernels on this backend yet";

/// Typed conveniences over any backend (generic, so outside the object-safe trait).
pub trait BackendExt: Backend {
    /// Allocate a buffer holding a copy of `data`.
    ///
    /// # Errors
    /// As [`Backend::alloc`] and [`Backend::upload`].
    fn upload_slice<T: Element>(&self, data: &[T]) -> Result<Buffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let mut b = self.alloc(bytes.len())?;
        self.upload(&mut b, 0, bytes)?;
        Ok(b)
    }
    /// Download `n` elements of `T` from the start of `buf`.
    ///
    /// # Errors
    /// As [`Backend::download`].
    fn download_vec<T: Element>(&self, buf: &Buffer, n: usize) -> Result<Vec<T>> {
        let mut v = vec![T::zeroed(); n];
        self.download(buf, 0, bytemuck::cast_slice_mut(&mut v))?;
        Ok(v)
    }
    /// Allocate a buffer for `n` elements of `T` filled with copies of `value` (e.g. NaN poison).
    ///
    /// # Errors
    /// As [`Backend::alloc`] and [`Backend::upload`].
    fn filled<T: Element>(&self, n: usize, value: T) -> Result<Buffer> {
        self.upload_slice(&vec![value; n])
    }
}

impl<B: Backend + ?Sized> BackendExt for B {}
