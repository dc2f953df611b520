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
        let _ = self.own_stream.sync();
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
        *cur = if stream == 0 {
            self.own_stream
        } else {
            Stream::borrowed(stream)
        };
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
                    let slots = cdiv(d.m, bm) + d.groups;
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
        let chunk = cdiv(cdiv(n, 256).max(256), 32) * 32;
        let nchunks = cdiv(n, chunk);
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
        let need = 256 + 4 * 256 + (a.layer.max_order() + 2 * c + a.history.len() + 1) * 8;
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
        let (table, reg) = self.table_ptr(&a.table, OP)?;
        let mut sc = self.lock(&self.scratch)?;
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
        let (table, reg) = self.table_ptr(&a.table, OP)?;
        let mut sc = self.lock(&self.scratch)?;
        let res = (|| {
            let mut carve = Carve::new();
            let rows_off = carve.take(t * c * 8);
            let need = carve.next + 4 * 256 + (a.layer.max_order() + 2 * c + a.history.len() + 1) * 8;
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
