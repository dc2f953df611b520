//! [`CudaBackend`]: the `Backend` trait on one CUDA device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{sys, CudaContext};
use moehal_core::ops::{
    engram_hash::check_canonical_ids, gather_rows::check_rows, grouped_gemm::check_group_end,
    moe_combine::check_slot_rows, moe_permute::check_ids, EngramHash, EngramLookup, GatherRows, GroupScore,
    GroupedGemm, MoeCombine, MoePermute, OpDesc, RouterTopk, Scoring, Swiglu, TableFormat, WeightLayout,
};
use moehal_core::{
    Backend, Buffer, Checked, DType, DeviceInfo, DeviceMemory, Error, Location, Result, Support, TensorMut, TensorRef,
};

use crate::kernels::{self, Unit};
use crate::raw::{self, Arg, CuError, Function, Module, Stream};
use crate::NAME;

/// Which grouped-GEMM kernel family to use (for benchmarks; `Auto` picks by shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemmPath {
    /// Decode kernel when rows per group are few (`M <= 64` or `M <= 2G`), else tensor cores
    /// (bf16/f16, aligned), else the SIMT kernel.
    #[default]
    Auto,
    /// `mma.sync` tensor-core kernel (bf16/f16 only; falls back to `Auto` where it does not apply).
    TensorCore,
    /// Weight-streaming decode kernel (falls back to `Auto` where it does not apply).
    Decode,
    /// Generic SIMT kernel (any dtype, shape, alignment).
    Simt,
}

impl GemmPath {
    fn tag(self) -> &'static str {
        match self {
            GemmPath::TensorCore => "tc",
            GemmPath::Decode => "dec",
            GemmPath::Simt | GemmPath::Auto => "simt",
        }
    }
}

fn dev_err(e: CuError) -> Error {
    if e.is_oom() {
        Error::OutOfMemory {
            backend: NAME.into(),
            bytes: 0,
        }
    } else {
        Error::device(NAME, e.code, e.msg)
    }
}

/// Device memory of this backend (owned, or an engine's pointer wrapped without copying).
struct CudaMemory {
    ptr: u64,
    len: usize,
    ordinal: usize,
    owned: bool,
    ctx: Arc<CudaContext>,
}

impl DeviceMemory for CudaMemory {
    fn addr(&self) -> u64 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
    fn location(&self) -> Location {
        Location::Device {
            backend: NAME.into(),
            ordinal: self.ordinal,
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for CudaMemory {
    fn drop(&mut self) {
        if self.owned && self.ptr != 0 && raw::bind(&self.ctx).is_ok() {
            let _ = raw::mem_free(self.ptr);
        }
    }
}

/// Growable device scratch (error flag, prefixes, counters); used under its mutex only, and every
/// op that uses it waits for its stream before releasing the lock.
struct Scratch {
    ptr: u64,
    len: usize,
}

/// Offsets inside the scratch, 256-byte aligned. Region 0 is always the 16-byte error flag.
struct Carve {
    next: usize,
}
impl Carve {
    fn new() -> Self {
        Carve { next: 256 }
    }
    fn take(&mut self, bytes: usize) -> usize {
        let at = self.next;
        self.next = (at + bytes + 255) & !255;
        at
    }
}

/// The CUDA backend on one device. Create it with [`crate::open`].
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    ordinal: usize,
    cc: (i32, i32),
    name: String,
    memory: u64,
    sms: i32,
    own_stream: Stream,
    stream: Mutex<Stream>,
    modules: Mutex<HashMap<Unit, Arc<Module>>>,
    funcs: Mutex<HashMap<String, Function>>,
    scratch: Mutex<Scratch>,
    gemm_path: Mutex<GemmPath>,
}

const TC_SMEM: u32 = 61_440; // grouped_gemm.cu: TC_STAGES * (TC_A_STAGE + TC_B_STAGE) * 2

fn cdiv(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}
fn grid1(n: usize, per_block: usize, cap: usize) -> u32 {
    cdiv(n, per_block).clamp(1, cap) as u32
}

/// Upper bound of the m-tile slots of `grouped_gemm` (the kernels' `tile_prefix[G]` for tiles of
/// `bm` rows): `sum_g ceil(rows_g / bm) <= ceil(M / bm) + G`.
fn gemm_slots(m: usize, bm: usize, g: usize) -> usize {
    cdiv(m, bm) + g
}

/// `moe_permute` chunking of `n > 0` flat slots: `(chunk, nchunks)`; `chunk` is a multiple of 32
/// (one warp step), at least 256, and there are at most 256 chunks.
fn permute_chunks(n: usize) -> (usize, usize) {
    let chunk = cdiv(cdiv(n, 256).max(256), 32) * 32;
    (chunk, cdiv(n, chunk))
}

/// Scratch bytes `engram_launch` carves after its start (four 256-aligned regions: multipliers
/// `[N]`, primes `[C]`, offsets `[C]`, history `[max(hl, 1)]`, all 8-byte words).
fn engram_scratch(n: usize, c: usize, hl: usize) -> usize {
    4 * 256 + (n + 2 * c + hl + 1) * 8
}

impl CudaBackend {
    pub(crate) fn new(ordinal: usize) -> Result<Self> {
        let n = raw::device_count().map_err(dev_err)?;
        if ordinal >= n.max(0) as usize {
            return Err(Error::Unavailable {
                backend: NAME.into(),
                reason: format!("no CUDA device {ordinal} ({n} present)"),
            });
        }
        let ctx = raw::context(ordinal).map_err(dev_err)?;
        raw::bind(&ctx).map_err(dev_err)?;
        let cc = ctx
            .compute_capability()
            .map_err(|e| dev_err(CuError::driver("compute capability", e)))?;
        if cc.0 < 8 {
            return Err(Error::Unavailable {
                backend: NAME.into(),
                reason: format!(
                    "compute capability {}.{} is below 8.0 (the kernels use cp.async and bf16 mma)",
                    cc.0, cc.1
                ),
            });
        }
        let name = ctx.name().unwrap_or_else(|_| "unknown".into());
        let memory = ctx.total_mem().unwrap_or(0) as u64;
        let sms = raw::attribute(&ctx, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).unwrap_or(0);
        let own_stream = Stream::create().map_err(dev_err)?;
        Ok(CudaBackend {
            ctx,
            ordinal,
            cc,
            name,
            memory,
            sms,
            own_stream,
            stream: Mutex::new(own_stream),
            modules: Mutex::new(HashMap::new()),
            funcs: Mutex::new(HashMap::new()),
            scratch: Mutex::new(Scratch { ptr: 0, len: 0 }),
            gemm_path: Mutex::new(GemmPath::Auto),
        })
    }

    /// Choose the grouped-GEMM kernel family (benchmarks compare them; `Auto` is the default).
    pub fn set_gemm_path(&self, path: GemmPath) {
        if let Ok(mut p) = self.gemm_path.lock() {
            *p = path;
        }
    }

    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// Compile (if needed) and load every kernel file now, instead of on first use.
    ///
    /// # Errors
    /// NVRTC or module-load failures.
    pub fn warm_up(&self) -> Result<()> {
        // Module loads need the context current on this thread (it may not be the one that opened us).
        raw::bind(&self.ctx).map_err(dev_err)?;
        for u in [
            Unit::GroupedGemm,
            Unit::Router,
            Unit::Permute,
            Unit::Swiglu,
            Unit::Combine,
            Unit::Engram,
            Unit::Gather,
        ] {
            self.module(u)?;
        }
        Ok(())
    }

    fn lock<'a, T>(&self, m: &'a Mutex<T>) -> Result<std::sync::MutexGuard<'a, T>> {
        m.lock()
            .map_err(|_| Error::device(NAME, -1, "internal lock poisoned by an earlier panic"))
    }

    /// Bind the context to this thread and return the stream ops enqueue on.
    fn begin(&self) -> Result<Stream> {
        raw::bind(&self.ctx).map_err(dev_err)?;
        Ok(*self.lock(&self.stream)?)
    }

    fn module(&self, unit: Unit) -> Result<Arc<Module>> {
        let mut mods = self.lock(&self.modules)?;
        if let Some(m) = mods.get(&unit) {
            return Ok(m.clone());
        }
        let img =
            kernels::image(unit, self.cc).map_err(|log| Error::device(NAME, -1, format!("kernel compile: {log}")))?;
        let m = Arc::new(Module::load(&img).map_err(dev_err)?);
        mods.insert(unit, m.clone());
        Ok(m)
    }

    fn func(&self, unit: Unit, name: &str, dyn_smem: u32) -> Result<Function> {
        if let Some(f) = self.lock(&self.funcs)?.get(name) {
            return Ok(*f);
        }
        let m = self.module(unit)?;
        let f = m.function(name).map_err(dev_err)?;
        if dyn_smem > 48 * 1024 {
            f.set_max_dynamic_smem(dyn_smem as i32).map_err(dev_err)?;
        }
        self.lock(&self.funcs)?.insert(name.to_string(), f);
        Ok(f)
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        s: Stream,
        unit: Unit,
        name: &str,
        grid: (u32, u32),
        block: u32,
        smem: u32,
        args: &[Arg],
    ) -> Result<()> {
        let f = self.func(unit, name, smem)?;
        raw::launch(f, (grid.0, grid.1, 1), (block, 1, 1), smem, s, args).map_err(dev_err)
    }

    fn ensure_scratch<'a>(&self, sc: &mut std::sync::MutexGuard<'a, Scratch>, bytes: usize, s: Stream) -> Result<u64> {
        if sc.len < bytes {
            if sc.ptr != 0 {
                s.sync().map_err(dev_err)?;
                raw::mem_free(sc.ptr).map_err(dev_err)?;
                sc.ptr = 0;
                sc.len = 0;
            }
            let want = bytes.next_power_of_two().max(1 << 16);
            sc.ptr = raw::mem_alloc(want).map_err(|e| {
                if e.is_oom() {
                    Error::OutOfMemory {
                        backend: NAME.into(),
                        bytes: want as u64,
                    }
                } else {
                    dev_err(e)
                }
            })?;
            sc.len = want;
        }
        Ok(sc.ptr)
    }

    /// Reset the error flag at `base` (code 0, index u64::MAX).
    fn flag_reset(&self, base: u64, s: Stream) -> Result<()> {
        raw::memset8(base, 0, 8, s).map_err(dev_err)?;
        raw::memset8(base + 8, 0xff, 8, s).map_err(dev_err)
    }

    /// Wait for the stream and read the flag: `(code, first index)`.
    fn flag_read(&self, base: u64, s: Stream) -> Result<(i32, u64)> {
        let mut b = [0u8; 16];
        raw::dtoh(&mut b, base, s).map_err(dev_err)?;
        let code = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let idx = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        Ok((code, idx))
    }

    fn download_typed<T: moehal_core::Element>(&self, t: &TensorRef<'_>, s: Stream) -> Result<Vec<T>> {
        let n = t.numel();
        let mut v = vec![T::zeroed(); n];
        raw::dtoh(bytemuck::cast_slice_mut(&mut v), t.addr(), s).map_err(dev_err)?;
        Ok(v)
    }

    fn own(&self, buf: &Buffer) -> bool {
        buf.downcast_ref::<CudaMemory>()
            .is_some_and(|m| m.ordinal == self.ordinal)
    }

    fn dptr(&self, t: &TensorRef<'_>, op: &'static str, field: &'static str) -> Result<u64> {
        if self.own(t.buffer()) {
            Ok(t.addr())
        } else {
            Err(Error::invalid(
                op,
                field,
                format!(
                    "not memory of cuda:{} (location {:?})",
                    self.ordinal,
                    t.buffer().location()
                ),
            ))
        }
    }

    fn dptr_mut(&self, t: &TensorMut<'_>, op: &'static str, field: &'static str) -> Result<u64> {
        if self.own(t.buffer()) {
            Ok(t.addr())
        } else {
            Err(Error::invalid(
                op,
                field,
                format!(
                    "not memory of cuda:{} (location {:?})",
                    self.ordinal,
                    t.buffer().location()
                ),
            ))
        }
    }

    fn opt_ptr(&self, t: Option<&TensorRef<'_>>, op: &'static str, field: &'static str) -> Result<u64> {
        t.map(|t| self.dptr(t, op, field)).transpose().map(|p| p.unwrap_or(0))
    }

    fn check_range(&self, buf: &Buffer, offset: usize, len: usize, op: &'static str) -> Result<()> {
        if !self.own(buf) {
            return Err(Error::invalid(
                op,
                "buffer",
                format!("not memory of cuda:{}", self.ordinal),
            ));
        }
        match offset.checked_add(len) {
            Some(e) if e <= buf.len() => Ok(()),
            _ => Err(Error::invalid(
                op,
                "range",
                format!("{offset} + {len} bytes exceeds the buffer of {} bytes", buf.len()),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_choice(
        &self,
        dt: DType,
        layout: WeightLayout,
        m: usize,
        n: usize,
        k: usize,
        g: usize,
        x: u64,
        w: u64,
    ) -> GemmPath {
        let vec = 16 / dt.size();
        let aligned = (x | w) % 16 == 0;
        let dec_ok = g <= 65_535
            && aligned
            && match layout {
                WeightLayout::NK => k % vec == 0,
                WeightLayout::KN => n % vec == 0,
            };
        let tc_ok = dt != DType::F32 && aligned && k % 8 == 0 && (layout == WeightLayout::NK || n % 8 == 0);
        let want = self.gemm_path.lock().map(|p| *p).unwrap_or_default();
        match want {
            GemmPath::TensorCore if tc_ok => return GemmPath::TensorCore,
            GemmPath::Decode if dec_ok => return GemmPath::Decode,
            GemmPath::Simt => return GemmPath::Simt,
            _ => {}
        }
        if dec_ok && (m <= 64 || m <= 2 * g) {
            GemmPath::Decode
        } else if tc_ok {
            GemmPath::TensorCore
        } else {
            GemmPath::Simt
        }
    }

    /// For a host table: the process-wide lock that spans its registration, use and
    /// unregistration. Without it an op that finds the range already registered (by a concurrent op,
    /// possibly of another backend on the same device) could read it after that op unregisters it.
    fn host_table_guard(&self, t: &TensorRef<'_>) -> Result<Option<std::sync::MutexGuard<'static, ()>>> {
        static HOST_TABLES: Mutex<()> = Mutex::new(());
        if self.own(t.buffer()) {
            return Ok(None);
        }
        self.lock(&HOST_TABLES).map(Some)
    }

    /// Table address as the device sees it; registers host memory (mapped, read-only) when needed.
    /// Returns `(device address of element 0, host address to unregister)`.
    fn table_ptr(&self, t: &TensorRef<'_>, op: &'static str) -> Result<(u64, Option<u64>)> {
        if self.own(t.buffer()) {
            return Ok((t.addr(), None));
        }
        if t.buffer().location() != Location::Host {
            return Err(Error::invalid(
                op,
                "table",
                format!("neither host memory nor memory of cuda:{}", self.ordinal),
            ));
        }
        let base = t.buffer().addr();
        let (d, ours) = raw::host_register(base, t.buffer().len()).map_err(dev_err)?;
        Ok((d + (t.addr() - base), ours.then_some(base)))
    }

    #[allow(clippy::too_many_arguments)]
    fn gather_launch(
        &self,
        s: Stream,
        table: u64,
        format: TableFormat,
        out_dt: DType,
        d: usize,
        rows: u64,
        npairs: usize,
        out: u64,
        err: u64,
    ) -> Result<()> {
        if npairs == 0 || d == 0 {
            return Ok(());
        }
        let grid = (grid1(npairs, 8, 1 << 20), 1);
        match format {
            TableFormat::Fp8E4m3Ue8m0 => {
                let name = if out_dt == DType::BF16 {
                    "gather_fp8_bf16"
                } else {
                    "gather_fp8_f32"
                };
                let stride = d + d / 32;
                let args = [
                    Arg::P(table),
                    Arg::I64(d as i64),
                    Arg::I64(stride as i64),
                    Arg::P(rows),
                    Arg::I64(npairs as i64),
                    Arg::P(out),
                    Arg::P(err),
                ];
                self.launch(s, Unit::Gather, name, grid, 256, 0, &args)
            }
            _ => {
                let row_bytes = d * format.storage_dtype().size();
                let args = [
                    Arg::P(table),
                    Arg::I64(row_bytes as i64),
                    Arg::P(rows),
                    Arg::I64(npairs as i64),
                    Arg::P(out),
                    Arg::P(err),
                ];
                self.launch(s, Unit::Gather, "gather_copy", grid, 256, 0, &args)
            }
        }
    }

    /// Upload the layer constants and history, check ids, hash into `rows_out`. Returns nothing;
    /// the caller reads the flag.
    #[allow(clippy::too_many_arguments)]
    fn engram_launch(
        &self,
        s: Stream,
        scratch_base: u64,
        carve: &mut Carve,
        layer: &moehal_core::engram::EngramLayer,
        ids: u64,
        t: usize,
        positions: u64,
        alive: u64,
        history: &[i64],
        rows_out: u64,
    ) -> Result<()> {
        let c = layer.columns();
        let n = layer.max_order();
        let mult = scratch_base + carve.take(n * 8) as u64;
        let primes = scratch_base + carve.take(c * 8) as u64;
        let offs = scratch_base + carve.take(c * 8) as u64;
        let hist = scratch_base + carve.take(history.len().max(1) * 8) as u64;
        raw::htod(mult, bytemuck::cast_slice(layer.multipliers()), s).map_err(dev_err)?;
        raw::htod(primes, bytemuck::cast_slice(layer.primes()), s).map_err(dev_err)?;
        raw::htod(offs, bytemuck::cast_slice(layer.offsets()), s).map_err(dev_err)?;
        raw::htod(hist, bytemuck::cast_slice(history), s).map_err(dev_err)?;
        if t == 0 {
            return Ok(());
        }
        let grid = (grid1(t, 256, 65_535), 1);
        self.launch(
            s,
            Unit::Engram,
            "engram_check",
            grid,
            256,
            0,
            &[
                Arg::P(ids),
                Arg::I64(t as i64),
                Arg::U64(layer.vocab_size()),
                Arg::P(scratch_base),
            ],
        )?;
        let args = [
            Arg::P(ids),
            Arg::P(positions),
            Arg::P(alive),
            Arg::P(hist),
            Arg::I64(history.len() as i64),
            Arg::I64(t as i64),
            Arg::I32(n as i32),
            Arg::I32(layer.heads() as i32),
            Arg::P(mult),
            Arg::P(primes),
            Arg::P(offs),
            Arg::U64(layer.pad_id()),
            Arg::P(rows_out),
            Arg::P(scratch_base),
        ];
        self.launch(s, Unit::Engram, "engram_hash", grid, 256, 0, &args)
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        if raw::bind(&self.ctx).is_err() {
            return;
        }
        // Every stream of the context, not only ours: an engine's stream (set_external_stream) may
        // still run our kernels, and the modules and scratch are released below.
        let _ = self.ctx.synchronize();
        if let Ok(sc) = self.scratch.get_mut() {
            if sc.ptr != 0 {
                let _ = raw::mem_free(sc.ptr);
            }
        }
        if let Ok(mods) = self.modules.get_mut() {
            for m in mods.values() {
                m.unload();
            }
        }
        self.own_stream.destroy();
    }
}

fn layout_tag(l: WeightLayout) -> &'static str {
    match l {
        WeightLayout::NK => "nk",
        WeightLayout::KN => "kn",
    }
}

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
        }
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
            OpDesc::RouterHash { .. } => Support::no("hash routing (tid2eid) has no CUDA kernel yet"),
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
        const OP: &str = "grouped_gemm";
        let a = args.into_inner();
        let d = a.dims();
        let dt = a.x.dtype();
        let x = self.dptr(&a.x, OP, "x")?;
        let w = self.dptr(&a.w, OP, "w")?;
        let ge = self.dptr(&a.group_end, OP, "group_end")?;
        let rs = self.opt_ptr(a.row_scale.as_ref(), OP, "row_scale")?;
        let bias = self.opt_ptr(a.bias.as_ref(), OP, "bias")?;
        let y = self.dptr_mut(&a.y, OP, "y")?;
        if d.groups == 0 {
            return Ok(());
        }
        let s = self.begin()?;
        let path = self.gemm_choice(dt, a.layout, d.m, d.n, d.k, d.groups, x, w);
        let bm: usize = match path {
            GemmPath::TensorCore => 128,
            _ => 64,
        };
        let mut sc = self.lock(&self.scratch)?;
        let mut carve = Carve::new();
        let prefix_off = carve.take((d.groups + 1) * 8);
        let base = self.ensure_scratch(&mut sc, carve.next, s)?;
        let prefix = base + prefix_off as u64;
        self.flag_reset(base, s)?;
        let check = [
            Arg::P(ge),
            Arg::I64(d.groups as i64),
            Arg::I64(d.m as i64),
            Arg::I64(bm as i64),
            Arg::P(prefix),
            Arg::P(base),
        ];
        self.launch(s, Unit::GroupedGemm, "gg_check", (1, 1), 1024, 0, &check)?;
        if d.m > 0 && d.n > 0 {
            let name = format!("gg_{}_{}_{}", path.tag(), dt.name(), layout_tag(a.layout));
            match path {
                GemmPath::Decode => {
                    let cols = match a.layout {
                        WeightLayout::NK => 64,
                        WeightLayout::KN => 32 * (16 / dt.size()),
                    };
                    let grid = (cdiv(d.n, cols) as u32, d.groups as u32);
                    let args = [
                        Arg::P(x),
                        Arg::P(ge),
                        Arg::P(w),
                        Arg::P(rs),
                        Arg::P(bias),
                        Arg::P(y),
                        Arg::I64(d.m as i64),
                        Arg::I64(d.n as i64),
                        Arg::I64(d.k as i64),
                        Arg::I64(d.groups as i64),
                        Arg::P(base),
                    ];
                    self.launch(s, Unit::GroupedGemm, &name, grid, 256, 0, &args)?;
                }
                _ => {
                    let (bn, smem) = if path == GemmPath::TensorCore {
                        (128, TC_SMEM)
                    } else {
                        (64, 0)
                    };
                    let slots = gemm_slots(d.m, bm, d.groups);
                    let grid = (cdiv(d.n, bn) as u32, slots.min(65_535) as u32);
                    let args = [
                        Arg::P(x),
                        Arg::P(ge),
                        Arg::P(w),
                        Arg::P(rs),
                        Arg::P(bias),
                        Arg::P(y),
                        Arg::I64(d.m as i64),
                        Arg::I64(d.n as i64),
                        Arg::I64(d.k as i64),
                        Arg::I64(d.groups as i64),
                        Arg::P(prefix),
                        Arg::P(base),
                    ];
                    self.launch(s, Unit::GroupedGemm, &name, grid, 256, smem, &args)?;
                }
            }
        }
        let (code, idx) = self.flag_read(base, s)?;
        drop(sc);
        if code != 0 {
            let v: Vec<i64> = self.download_typed(&a.group_end, s)?;
            check_group_end(&v, d.m)?;
            return Err(Error::invalid(
                OP,
                "group_end",
                format!("group_end[{idx}] is out of order or outside [0, M = {}]", d.m),
            ));
        }
        Ok(())
    }

    fn router_topk(&self, args: Checked<RouterTopk<'_>>) -> Result<()> {
        const OP: &str = "router_topk";
        let a = args.into_inner();
        let (t, e) = a.dims();
        if e > 512 {
            return Err(Error::unsupported(
                OP,
                NAME,
                format!("E = {e} experts (the fused kernel holds at most 512)"),
            ));
        }
        let logits = self.dptr(&a.logits, OP, "logits")?;
        let bias = self.opt_ptr(a.bias.as_ref(), OP, "bias")?;
        let ids = self.dptr_mut(&a.ids, OP, "ids")?;
        let weights = self.dptr_mut(&a.weights, OP, "weights")?;
        let counts = a
            .expert_counts
            .as_ref()
            .map(|c| self.dptr_mut(c, OP, "expert_counts"))
            .transpose()?
            .unwrap_or(0);
        let s = self.begin()?;
        if counts != 0 {
            raw::memset8(counts, 0, e * 8, s).map_err(dev_err)?;
        }
        if t == 0 {
            return Ok(());
        }
        let cfg = a.config;
        let epl = if e <= 128 {
            4
        } else if e <= 256 {
            8
        } else {
            16
        };
        let name = format!("router_topk_{}_{epl}", a.logits.dtype().name());
        let score = match cfg.scoring {
            Scoring::Softmax => 0,
            Scoring::Sigmoid => 1,
            Scoring::SqrtSoftplus => 2,
        };
        let (ng, tg, gk) = match cfg.effective_group() {
            Some(g) => (
                g.n_group as i32,
                g.topk_group as i32,
                if g.score == GroupScore::Top2Sum { 0 } else { 1 },
            ),
            None => (1, 1, 0),
        };
        let args = [
            Arg::P(logits),
            Arg::I64(t as i64),
            Arg::I32(e as i32),
            Arg::I32(cfg.k as i32),
            Arg::I32(score),
            Arg::P(bias),
            Arg::I32(ng),
            Arg::I32(tg),
            Arg::I32(gk),
            Arg::I32(cfg.renormalize as i32),
            Arg::F32(cfg.routed_scaling_factor),
            Arg::P(ids),
            Arg::P(weights),
            Arg::P(counts),
        ];
        self.launch(s, Unit::Router, &name, (cdiv(t, 8) as u32, 1), 256, 0, &args)
    }

    fn moe_permute(&self, args: Checked<MoePermute<'_>>) -> Result<()> {
        const OP: &str = "moe_permute";
        let a = args.into_inner();
        let (t, k) = a.dims();
        let e = a.num_experts;
        let n = t * k;
        let ids = self.dptr(&a.ids, OP, "ids")?;
        let ge = self.dptr_mut(&a.group_end, OP, "group_end")?;
        let src = self.dptr_mut(&a.src_token, OP, "src_token")?;
        let slot = self.dptr_mut(&a.slot_row, OP, "slot_row")?;
        let x = self.opt_ptr(a.x.as_ref(), OP, "x")?;
        let xp = a
            .x_perm
            .as_ref()
            .map(|p| self.dptr_mut(p, OP, "x_perm"))
            .transpose()?
            .unwrap_or(0);
        let s = self.begin()?;
        if n == 0 {
            return raw::memset8(ge, 0, e * 8, s).map_err(dev_err);
        }
        let (chunk, nchunks) = permute_chunks(n);
        let mut sc = self.lock(&self.scratch)?;
        let mut carve = Carve::new();
        let cnt_off = carve.take(nchunks * e * 8);
        let total_off = carve.take(e * 8);
        let start_off = carve.take(e * 8);
        let base = self.ensure_scratch(&mut sc, carve.next, s)?;
        let (cnt, total, start) = (base + cnt_off as u64, base + total_off as u64, base + start_off as u64);
        self.flag_reset(base, s)?;
        raw::memset8(cnt, 0, nchunks * e * 8, s).map_err(dev_err)?;
        let (n64, e64) = (n as i64, e as i64);
        self.launch(
            s,
            Unit::Permute,
            "perm_check",
            (grid1(n, 256, 4096), 1),
            256,
            0,
            &[Arg::P(ids), Arg::I64(n64), Arg::I64(e64), Arg::P(base)],
        )?;
        let wgrid = (cdiv(nchunks, 8) as u32, 1);
        let count = [
            Arg::P(ids),
            Arg::I64(n64),
            Arg::I64(e64),
            Arg::P(cnt),
            Arg::I64(nchunks as i64),
            Arg::I64(chunk as i64),
            Arg::P(base),
        ];
        self.launch(s, Unit::Permute, "perm_count", wgrid, 256, 0, &count)?;
        let colscan = [
            Arg::P(cnt),
            Arg::I64(nchunks as i64),
            Arg::I64(e64),
            Arg::P(total),
            Arg::P(base),
        ];
        self.launch(
            s,
            Unit::Permute,
            "perm_colscan",
            (grid1(e, 256, 65_535), 1),
            256,
            0,
            &colscan,
        )?;
        self.launch(
            s,
            Unit::Permute,
            "perm_scan",
            (1, 1),
            1024,
            0,
            &[Arg::P(total), Arg::I64(e64), Arg::P(ge), Arg::P(start), Arg::P(base)],
        )?;
        let scatter = [
            Arg::P(ids),
            Arg::I64(n64),
            Arg::I64(k as i64),
            Arg::I64(e64),
            Arg::P(cnt),
            Arg::P(start),
            Arg::P(slot),
            Arg::P(src),
            Arg::I64(nchunks as i64),
            Arg::I64(chunk as i64),
            Arg::P(base),
        ];
        self.launch(s, Unit::Permute, "perm_scatter", wgrid, 256, 0, &scatter)?;
        if let Some(xv) = a.x.as_ref() {
            let row_bytes = xv.shape()[1] * xv.dtype().size();
            if row_bytes > 0 {
                let args = [
                    Arg::P(x),
                    Arg::I64(row_bytes as i64),
                    Arg::P(src),
                    Arg::P(ge),
                    Arg::I64(e64),
                    Arg::I64(n64),
                    Arg::P(xp),
                    Arg::P(base),
                ];
                self.launch(s, Unit::Permute, "perm_rows", (grid1(n, 8, 65_535), 1), 256, 0, &args)?;
            }
        }
        let (code, idx) = self.flag_read(base, s)?;
        drop(sc);
        if code != 0 {
            let v: Vec<i32> = self.download_typed(&a.ids, s)?;
            check_ids(&v, e)?;
            return Err(Error::invalid(OP, "ids", format!("ids[{idx}] outside [-1, E = {e})")));
        }
        Ok(())
    }

    fn swiglu(&self, args: Checked<Swiglu<'_>>) -> Result<()> {
        const OP: &str = "swiglu";
        let a = args.into_inner();
        let (m, i) = a.dims();
        let h = self.dptr(&a.h, OP, "h")?;
        let out = self.dptr_mut(&a.out, OP, "out")?;
        let s = self.begin()?;
        if m * i == 0 {
            return Ok(());
        }
        let name = format!("swiglu_{}", a.h.dtype().name());
        let args = [
            Arg::P(h),
            Arg::P(out),
            Arg::I64(m as i64),
            Arg::I64(i as i64),
            Arg::I32(a.limit.is_some() as i32),
            Arg::F32(a.limit.unwrap_or(0.0)),
        ];
        self.launch(s, Unit::Swiglu, &name, (grid1(m * i, 256, 1 << 20), 1), 256, 0, &args)
    }

    fn moe_combine(&self, args: Checked<MoeCombine<'_>>) -> Result<()> {
        const OP: &str = "moe_combine";
        let a = args.into_inner();
        let (t, k, h, r) = a.dims();
        let y = self.dptr(&a.y_perm, OP, "y_perm")?;
        let slot = self.dptr(&a.slot_row, OP, "slot_row")?;
        let w = self.dptr(&a.weights, OP, "weights")?;
        let out = self.dptr_mut(&a.out, OP, "out")?;
        let s = self.begin()?;
        if t == 0 || h == 0 {
            return Ok(());
        }
        let mut sc = self.lock(&self.scratch)?;
        let base = self.ensure_scratch(&mut sc, 256, s)?;
        self.flag_reset(base, s)?;
        if t * k > 0 {
            let args = [Arg::P(slot), Arg::I64((t * k) as i64), Arg::I64(r as i64), Arg::P(base)];
            self.launch(
                s,
                Unit::Combine,
                "combine_check",
                (grid1(t * k, 256, 4096), 1),
                256,
                0,
                &args,
            )?;
        }
        let name = format!("combine_{}", a.y_perm.dtype().name());
        let grid = (grid1(h, 256, 64), t.min(65_535) as u32);
        let args = [
            Arg::P(y),
            Arg::P(slot),
            Arg::P(w),
            Arg::P(out),
            Arg::I64(t as i64),
            Arg::I64(k as i64),
            Arg::I64(h as i64),
            Arg::P(base),
        ];
        self.launch(s, Unit::Combine, &name, grid, 256, 0, &args)?;
        let (code, idx) = self.flag_read(base, s)?;
        drop(sc);
        if code != 0 {
            let v: Vec<i64> = self.download_typed(&a.slot_row, s)?;
            check_slot_rows(&v, r)?;
            return Err(Error::invalid(
                OP,
                "slot_row",
                format!("slot_row[{idx}] outside [-1, R = {r})"),
            ));
        }
        Ok(())
    }

    fn engram_hash(&self, args: Checked<EngramHash<'_>>) -> Result<()> {
        const OP: &str = "engram_hash";
        let a = args.into_inner();
        let t = a.ids.numel();
        let ids = self.dptr(&a.ids, OP, "ids")?;
        let pos = self.opt_ptr(a.positions.as_ref(), OP, "positions")?;
        let alive = self.opt_ptr(a.alive.as_ref(), OP, "alive")?;
        let rows = self.dptr_mut(&a.rows, OP, "rows")?;
        let s = self.begin()?;
        let mut sc = self.lock(&self.scratch)?;
        let c = a.layer.columns();
        let need = 256 + engram_scratch(a.layer.max_order(), c, a.history.len());
        let base = self.ensure_scratch(&mut sc, need, s)?;
        self.flag_reset(base, s)?;
        let mut carve = Carve::new();
        self.engram_launch(s, base, &mut carve, a.layer, ids, t, pos, alive, a.history, rows)?;
        let (code, idx) = self.flag_read(base, s)?;
        drop(sc);
        if code != 0 {
            let v: Vec<i64> = self.download_typed(&a.ids, s)?;
            check_canonical_ids(OP, "ids", &v, a.layer.vocab_size())?;
            return Err(Error::invalid(OP, "ids", format!("ids[{idx}] outside [0, V')")));
        }
        Ok(())
    }

    fn gather_rows(&self, args: Checked<GatherRows<'_>>) -> Result<()> {
        const OP: &str = "gather_rows";
        let a = args.into_inner();
        let (t, c, r, d) = a.dims();
        let rows = self.dptr(&a.rows, OP, "rows")?;
        let out = self.dptr_mut(&a.out, OP, "out")?;
        let s = self.begin()?;
        let npairs = t * c;
        if npairs == 0 {
            return Ok(());
        }
        let _host = self.host_table_guard(&a.table)?;
        let mut sc = self.lock(&self.scratch)?;
        let (table, reg) = self.table_ptr(&a.table, OP)?;
        let res = (|| {
            let base = self.ensure_scratch(&mut sc, 256, s)?;
            self.flag_reset(base, s)?;
            let args = [Arg::P(rows), Arg::I64(npairs as i64), Arg::I64(r as i64), Arg::P(base)];
            self.launch(
                s,
                Unit::Gather,
                "gather_check",
                (grid1(npairs, 256, 4096), 1),
                256,
                0,
                &args,
            )?;
            self.gather_launch(s, table, a.format, a.out.dtype(), d, rows, npairs, out, base)?;
            self.flag_read(base, s)
        })();
        if res.is_err() {
            let _ = s.sync();
        }
        if let Some(h) = reg {
            raw::host_unregister(h);
        }
        drop(sc);
        let (code, idx) = res?;
        if code != 0 {
            let v: Vec<i64> = self.download_typed(&a.rows, s)?;
            check_rows(OP, &v, r)?;
            return Err(Error::invalid(OP, "rows", format!("rows[{idx}] outside [0, R = {r})")));
        }
        Ok(())
    }

    fn engram_lookup(&self, args: Checked<EngramLookup<'_>>) -> Result<()> {
        const OP: &str = "engram_lookup";
        let a = args.into_inner();
        let t = a.ids.numel();
        let c = a.layer.columns();
        let ids = self.dptr(&a.ids, OP, "ids")?;
        let pos = self.opt_ptr(a.positions.as_ref(), OP, "positions")?;
        let alive = self.opt_ptr(a.alive.as_ref(), OP, "alive")?;
        let out = self.dptr_mut(&a.out, OP, "out")?;
        let s = self.begin()?;
        if t == 0 {
            return Ok(());
        }
        let d = a.format.row_dim(a.table.shape()[1]).unwrap_or(0);
        let _host = self.host_table_guard(&a.table)?;
        let mut sc = self.lock(&self.scratch)?;
        let (table, reg) = self.table_ptr(&a.table, OP)?;
        let res = (|| {
            let mut carve = Carve::new();
            let rows_off = carve.take(t * c * 8);
            let need = carve.next + engram_scratch(a.layer.max_order(), c, a.history.len());
            let base = self.ensure_scratch(&mut sc, need, s)?;
            let rows = base + rows_off as u64;
            self.flag_reset(base, s)?;
            self.engram_launch(s, base, &mut carve, a.layer, ids, t, pos, alive, a.history, rows)?;
            self.gather_launch(s, table, a.format, a.out.dtype(), d, rows, t * c, out, base)?;
            self.flag_read(base, s)
        })();
        if res.is_err() {
            let _ = s.sync();
        }
        if let Some(h) = reg {
            raw::host_unregister(h);
        }
        drop(sc);
        let (code, idx) = res?;
        if code != 0 {
            let v: Vec<i64> = self.download_typed(&a.ids, s)?;
            check_canonical_ids(OP, "ids", &v, a.layer.vocab_size())?;
            return Err(Error::invalid(OP, "ids", format!("ids[{idx}] outside [0, V')")));
        }
        Ok(())
    }
}

/// Host-side checks of the launch arithmetic and of the kernels' index and selection rules,
/// transliterated from `kernels/cuda` (no GPU needed).
#[cfg(test)]
mod tests {
    use super::*;
    use moehal_core::ops::{GroupLimit, RouterConfig};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn define(src: &str, name: &str) -> usize {
        let pre = format!("#define {name} ");
        let line = src
            .lines()
            .find(|l| l.starts_with(&pre))
            .unwrap_or_else(|| panic!("no {name}"));
        line[pre.len()..].split_whitespace().next().unwrap().parse().unwrap()
    }

    #[test]
    fn tc_shared_memory_matches_the_kernel_tiles() {
        let src = kernels::SOURCES[Unit::GroupedGemm as usize].1;
        let (m, n, k, st) = (
            define(src, "TC_M"),
            define(src, "TC_N"),
            define(src, "TC_K"),
            define(src, "TC_STAGES"),
        );
        assert!(src.contains("#define TC_LDA (TC_K + 8)") && src.contains("#define TC_LDB_KN (TC_N + 8)"));
        let a = m * (k + 8);
        let b = (n * (k + 8)).max(k * (n + 8));
        assert_eq!(TC_SMEM as usize, st * (a + b) * 2);
        const { assert!(TC_SMEM <= 227 * 1024) };
    }

    /// gg_check's tile prefix + gg_find_group + the slot -> rows rule of gg_simt / gg_tc.
    fn schedule(group_end: &[i64], bm: i64) -> Vec<(i64, i64, i64)> {
        let g = group_end.len();
        let mut prefix = vec![0i64; g + 1];
        for i in 0..g {
            let p = if i == 0 { 0 } else { group_end[i - 1] };
            prefix[i + 1] = prefix[i] + (group_end[i] - p + bm - 1) / bm;
        }
        let total = prefix[g];
        let mut out = Vec::new();
        for slot in 0..total {
            let (mut lo, mut hi) = (0i64, g as i64 - 1);
            while lo < hi {
                let mid = (lo + hi + 1) >> 1;
                if prefix[mid as usize] <= slot {
                    lo = mid
                } else {
                    hi = mid - 1
                }
            }
            let gi = lo as usize;
            let gstart = if gi == 0 { 0 } else { group_end[gi - 1] };
            let row0 = gstart + (slot - prefix[gi]) * bm;
            out.push((gi as i64, row0, bm.min(group_end[gi] - row0)));
        }
        out
    }

    #[test]
    fn gemm_tiles_cover_every_routed_row_once_and_nothing_past_the_last_group() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for case in 0..300 {
            let g = rng.gen_range(1..40usize);
            let mut ends = Vec::with_capacity(g);
            let mut acc = 0i64;
            for _ in 0..g {
                // many empty groups (leading, trailing, runs), some larger than a tile
                acc += match rng.gen_range(0..4) {
                    0 => 0,
                    1 => rng.gen_range(1..4),
                    2 => rng.gen_range(1..200),
                    _ => 128,
                };
                ends.push(acc);
            }
            let m = acc as usize + rng.gen_range(0..50usize); // guard rows past group_end[G-1]
            for bm in [64i64, 128] {
                let mut seen = vec![0u8; m];
                let sched = schedule(&ends, bm);
                assert!(
                    sched.len() <= gemm_slots(m, bm as usize, g),
                    "case {case}: grid too small"
                );
                for (gi, row0, rows) in sched {
                    assert!(rows >= 1 && rows <= bm, "case {case}: tile of {rows} rows");
                    let gstart = if gi == 0 { 0 } else { ends[gi as usize - 1] };
                    assert!(row0 >= gstart && row0 + rows <= ends[gi as usize]);
                    for r in row0..row0 + rows {
                        seen[r as usize] += 1;
                    }
                }
                let last = *ends.last().unwrap() as usize;
                assert!(
                    seen[..last].iter().all(|&c| c == 1),
                    "case {case}: row not covered once"
                );
                assert!(seen[last..].iter().all(|&c| c == 0), "case {case}: guard row touched");
            }
        }
    }

    /// perm_count + perm_colscan + perm_scan + perm_scatter, warp step by warp step.
    fn permute_sim(ids: &[i32], k: usize, e: usize) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
        let n = ids.len();
        let (chunk, nchunks) = permute_chunks(n);
        let mut cnt = vec![0i64; nchunks * e];
        for c in 0..nchunks {
            for f in c * chunk..((c + 1) * chunk).min(n) {
                if ids[f] >= 0 {
                    cnt[c * e + ids[f] as usize] += 1;
                }
            }
        }
        let mut total = vec![0i64; e];
        for x in 0..e {
            let mut acc = 0;
            for c in 0..nchunks {
                let v = cnt[c * e + x];
                cnt[c * e + x] = acc;
                acc += v;
            }
            total[x] = acc;
        }
        let mut group_end = vec![0i64; e];
        let mut start = vec![0i64; e];
        let mut run = 0;
        for x in 0..e {
            start[x] = run;
            run += total[x];
            group_end[x] = run;
        }
        let mut slot_row = vec![-1i64; n];
        let mut src = vec![-1i64; n];
        for c in 0..nchunks {
            let mut s = 0;
            while s < chunk {
                let lanes: Vec<i32> = (0..32)
                    .map(|l| {
                        let f = c * chunk + s + l;
                        if f < n {
                            ids[f]
                        } else {
                            -1
                        }
                    })
                    .collect();
                for (l, &x) in lanes.iter().enumerate() {
                    if x >= 0 {
                        let rank = lanes[..l].iter().filter(|&&y| y == x).count() as i64;
                        let pos = start[x as usize] + cnt[c * e + x as usize] + rank;
                        let f = c * chunk + s + l;
                        slot_row[f] = pos;
                        src[pos as usize] = (f / k) as i64;
                    }
                }
                for x in 0..e {
                    cnt[c * e + x] += lanes.iter().filter(|&&y| y == x as i32).count() as i64;
                }
                s += 32;
            }
        }
        (group_end, slot_row, src)
    }

    #[test]
    fn permute_chunking_and_scatter_follow_t_j_order() {
        for n in [1usize, 31, 32, 255, 256, 257, 8191, 65_536, 65_537, 1 << 20, 10_000_003] {
            let (chunk, nchunks) = permute_chunks(n);
            assert!(chunk % 32 == 0 && chunk >= 256 && nchunks <= 256, "n = {n}");
            assert!(chunk * nchunks >= n && (nchunks - 1) * chunk < n, "n = {n}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for case in 0..60 {
            let (t, k, e) = (
                rng.gen_range(1..3000usize),
                rng.gen_range(1..9usize),
                rng.gen_range(1..70usize),
            );
            let ids: Vec<i32> = (0..t * k)
                .map(|_| {
                    if rng.gen_range(0..10) == 0 {
                        -1
                    } else {
                        rng.gen_range(0..e as i32)
                    }
                })
                .collect();
            let (ge, slot_row, src) = permute_sim(&ids, k, e);
            // expected: stable sort of the routed flat slots by expert
            let mut order: Vec<usize> = (0..ids.len()).filter(|&f| ids[f] >= 0).collect();
            order.sort_by_key(|&f| ids[f]);
            for (row, &f) in order.iter().enumerate() {
                assert_eq!(slot_row[f], row as i64, "case {case}: slot {f}");
                assert_eq!(src[row], (f / k) as i64, "case {case}: row {row}");
            }
            assert!(ids.iter().zip(&slot_row).all(|(&i, &r)| (i < 0) == (r < 0)));
            for (x, &end) in ge.iter().enumerate() {
                assert_eq!(end, ids.iter().filter(|&&i| i >= 0 && i <= x as i32).count() as i64);
            }
        }
    }

    #[test]
    fn engram_scratch_bound_covers_the_carve() {
        for n in 2..=8usize {
            for heads in [1usize, 2, 8, 33, 100] {
                let c = (n - 1) * heads;
                for hl in 0..n {
                    for rows_first in [0usize, 1, 4096 * 24 + 8] {
                        let mut carve = Carve::new();
                        if rows_first > 0 {
                            carve.take(rows_first);
                        }
                        let start = carve.next;
                        let ends = [
                            carve.take(n * 8) + n * 8,
                            carve.take(c * 8) + c * 8,
                            carve.take(c * 8) + c * 8,
                            carve.take(hl.max(1) * 8) + hl.max(1) * 8,
                        ];
                        let need = start + engram_scratch(n, c, hl);
                        assert!(ends.iter().all(|&x| x <= need), "n {n} c {c} hl {hl}");
                        assert!(carve.next <= need);
                    }
                }
            }
        }
    }

    // gather_rows.cu: fp8_e4m3_to_f32, ue8m0_to_f32, fp8_dequant, and common.cuh f32_to_bf16.
    fn dev_e4m3(b: u32) -> f32 {
        let sign = (b & 0x80) << 24;
        let (e, m) = ((b >> 3) & 15, b & 7);
        if e == 15 && m == 7 {
            return f32::from_bits(0x7fc0_0000);
        }
        let v = if e == 0 {
            m as f32 * 0.001_953_125
        } else {
            f32::from_bits(((e + 120) << 23) | (m << 20))
        };
        f32::from_bits(v.to_bits() | sign)
    }
    fn dev_ue8m0(b: u32) -> f32 {
        match b {
            255 => f32::from_bits(0x7fc0_0000),
            0 => f32::from_bits(0x0040_0000),
            _ => f32::from_bits(b << 23),
        }
    }
    fn dev_bf16(f: f32) -> u16 {
        let u = f.to_bits();
        if u & 0x7fff_ffff > 0x7f80_0000 {
            return ((u >> 16) | 0x40) as u16;
        }
        (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
    }

    #[test]
    fn fp8_dequant_formula_is_bitwise_the_contract() {
        use moehal_core::ops::gather_rows::fp8_dequant;
        for q in 0..256u32 {
            for s in 0..256u32 {
                let (v, sc) = (dev_e4m3(q), dev_ue8m0(s));
                let dev = if v.is_nan() || sc.is_nan() {
                    f32::from_bits(0x7fc0_0000)
                } else {
                    v * sc
                };
                let want = fp8_dequant(q as u8, s as u8);
                assert_eq!(dev.to_bits(), want.to_bits(), "q {q:#x} s {s}");
                let bf = half::bf16::from_f64(want as f64).to_bits();
                assert_eq!(dev_bf16(dev), bf, "bf16 of q {q:#x} s {s}");
            }
        }
    }

    /// router_topk.cu steps 2-5 (selection score, group limit, iterated arg-max, fill slots,
    /// weights) on the reference's unbiased scores (f32 values): `ŝ` and the group scores in f32 as
    /// the kernel forms them, the weights in f64.
    fn router_mirror(cfg: &RouterConfig, logits: &[f64], s: &[f64], bias: Option<&[f32]>) -> (Vec<i32>, Vec<f64>) {
        let e = logits.len();
        let ninf = f32::NEG_INFINITY;
        let better = |av: f32, ai: usize, bv: f32, bi: usize| av > bv || (av == bv && ai < bi);
        let mut sh: Vec<f32> = (0..e)
            .map(|i| {
                if !logits[i].is_finite() {
                    return ninf;
                }
                let v = s[i] as f32 + bias.map_or(0.0, |b| b[i]);
                if v.is_finite() {
                    v
                } else {
                    ninf
                }
            })
            .collect();
        if let Some(g) = cfg.effective_group() {
            let gs = e / g.n_group;
            let gsc: Vec<f32> = (0..g.n_group)
                .map(|q| {
                    let (mut b1, mut b2) = (ninf, ninf);
                    for &v in &sh[q * gs..(q + 1) * gs] {
                        if v > b1 {
                            b2 = b1;
                            b1 = v;
                        } else if v > b2 {
                            b2 = v;
                        }
                    }
                    if g.score == GroupScore::Top2Sum {
                        b1 + b2
                    } else {
                        b1
                    }
                })
                .collect();
            let mut keep = vec![false; g.n_group];
            for _ in 0..g.topk_group {
                let (mut cv, mut ci) = (ninf, usize::MAX);
                for q in 0..g.n_group {
                    if !keep[q] && better(gsc[q], q, cv, ci) {
                        (cv, ci) = (gsc[q], q);
                    }
                }
                keep[ci] = true;
            }
            for (i, v) in sh.iter_mut().enumerate() {
                if !keep[i / gs] {
                    *v = ninf;
                }
            }
        }
        let mut chosen = vec![false; e];
        let (mut ids, mut w) = (Vec::new(), Vec::new());
        for _ in 0..cfg.k {
            let (mut cv, mut ci) = (ninf, usize::MAX);
            for i in 0..e {
                if !chosen[i] && better(sh[i], i, cv, ci) {
                    (cv, ci) = (sh[i], i);
                }
            }
            chosen[ci] = true;
            ids.push(ci as i32);
            w.push(if cv == ninf { 0.0 } else { s[ci] });
        }
        let den = w.iter().sum::<f64>() + 1e-20;
        for x in w.iter_mut() {
            if cfg.renormalize {
                *x /= den;
            }
            *x *= cfg.routed_scaling_factor as f64;
        }
        (ids, w)
    }

    #[test]
    fn router_selection_rule_matches_the_reference_with_ties_and_non_finite_logits() {
        use moehal_core::reference::route_token;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for case in 0..3000 {
            let e = [4usize, 8, 16, 64, 256][rng.gen_range(0..5)];
            let logits: Vec<f64> = (0..e)
                .map(|_| match rng.gen_range(0..12) {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    2 => f64::NEG_INFINITY,
                    _ => rng.gen_range(-2..3) as f64, // small set: many exact ties
                })
                .collect();
            let bias: Option<Vec<f32>> = rng
                .gen_bool(0.5)
                .then(|| (0..e).map(|_| [0.0, 0.5, -0.5][rng.gen_range(0..3)]).collect());
            let scoring = [Scoring::Softmax, Scoring::Sigmoid, Scoring::SqrtSoftplus][rng.gen_range(0..3)];
            let group = if rng.gen_bool(0.5) {
                let n_group = [2usize, 4][rng.gen_range(0..2)];
                // top2_sum needs two experts a group (validation rejects it otherwise)
                let score = if e / n_group >= 2 && rng.gen_bool(0.5) {
                    GroupScore::Top2Sum
                } else {
                    GroupScore::Max
                };
                Some(GroupLimit {
                    n_group,
                    topk_group: rng.gen_range(1..=n_group),
                    score,
                })
            } else {
                None
            };
            let per_group = group.map_or(e, |g| g.topk_group * e / g.n_group);
            let cfg = RouterConfig {
                k: rng.gen_range(1..=per_group.min(e)),
                scoring,
                group,
                renormalize: rng.gen_bool(0.5),
                routed_scaling_factor: 2.5,
            };
            let r = route_token(&cfg, &logits, bias.as_deref());
            let (ids, w) = router_mirror(&cfg, &logits, &r.scores, bias.as_deref());
            assert_eq!(ids, r.ids, "case {case}: {cfg:?} {logits:?} {bias:?}");
            for (a, b) in w.iter().zip(&r.weights) {
                assert!((a - b).abs() <= 1e-12, "case {case}: weight {a} vs {b}");
            }
        }
    }
}
