//! The device, its stream and the module cache: [`CudaBackend`]'s state, how it opens, binds its
//! context, loads (NVRTC-compiled) modules once and launches kernels. The ops live in `crate::ops`,
//! one file per `kernels/cuda` file; memory in `crate::memory`; the `Backend` glue in
//! `crate::backend`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{sys, CudaContext};
use moehal_core::{Error, Result};

use crate::kernels::{self, Unit};
use crate::memory::Scratch;
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
    pub(crate) fn tag(self) -> &'static str {
        match self {
            GemmPath::TensorCore => "tc",
            GemmPath::Decode => "dec",
            GemmPath::Simt | GemmPath::Auto => "simt",
        }
    }
}

pub(crate) fn dev_err(e: CuError) -> Error {
    if e.is_oom() {
        Error::OutOfMemory {
            backend: NAME.into(),
            bytes: 0,
        }
    } else {
        Error::device(NAME, e.code, e.msg)
    }
}

/// The CUDA backend on one device. Create it with [`crate::open`].
pub struct CudaBackend {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) ordinal: usize,
    pub(crate) cc: (i32, i32),
    pub(crate) name: String,
    pub(crate) memory: u64,
    pub(crate) sms: i32,
    pub(crate) own_stream: Stream,
    pub(crate) stream: Mutex<Stream>,
    pub(crate) modules: Mutex<HashMap<Unit, Arc<Module>>>,
    pub(crate) funcs: Mutex<HashMap<String, Function>>,
    pub(crate) scratch: Mutex<Scratch>,
    pub(crate) gemm_path: Mutex<GemmPath>,
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
            Unit::Quantize,
            Unit::GemmQuant,
        ] {
            self.module(u)?;
        }
        Ok(())
    }

    pub(crate) fn lock<'a, T>(&self, m: &'a Mutex<T>) -> Result<std::sync::MutexGuard<'a, T>> {
        m.lock()
            .map_err(|_| Error::device(NAME, -1, "internal lock poisoned by an earlier panic"))
    }

    /// Bind the context to this thread and return the stream ops enqueue on.
    pub(crate) fn begin(&self) -> Result<Stream> {
        raw::bind(&self.ctx).map_err(dev_err)?;
        Ok(*self.lock(&self.stream)?)
    }

    pub(crate) fn module(&self, unit: Unit) -> Result<Arc<Module>> {
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

    pub(crate) fn func(&self, unit: Unit, name: &str, dyn_smem: u32) -> Result<Function> {
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

    pub(crate) fn launch(
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
