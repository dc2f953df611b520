//! The only `unsafe` of moehal-cuda: thin wrappers over the CUDA driver and NVRTC as cudarc 0.19
//! exposes them (`cudarc::driver::{result, sys}`, `cudarc::nvrtc::{result, sys}`), with dynamic
//! loading. Every call's status is checked and turned into a [`CuError`]; nothing here panics on a
//! machine without CUDA because callers probe the libraries ([`driver_present`], ...) first.

use std::ffi::{c_void, CString};
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, DriverError};
use cudarc::nvrtc;

/// A failed CUDA call: the driver status and what was being done.
#[derive(Debug, Clone)]
pub(crate) struct CuError {
    /// `CUresult` (or `nvrtcResult`) as an integer.
    pub code: i64,
    /// What failed, with the driver's name for the status.
    pub msg: String,
}

impl CuError {
    pub(crate) fn driver(what: &str, e: DriverError) -> Self {
        let name = e
            .error_name()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("{:?}", e.0));
        CuError {
            code: e.0 as i64,
            msg: format!("{what}: {name}"),
        }
    }
    pub(crate) fn is_oom(&self) -> bool {
        self.code == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY as i64
    }
}

pub(crate) type CuResult<T> = std::result::Result<T, CuError>;

fn chk(what: &str, r: sys::CUresult) -> CuResult<()> {
    r.result().map_err(|e| CuError::driver(what, e))
}

/// Whether `libcuda` can be loaded (no panic).
pub(crate) fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the candidate names; no symbol is called.
    unsafe { sys::is_culib_present() }
}

/// Whether `libnvrtc` can be loaded (no panic).
pub(crate) fn nvrtc_present() -> bool {
    // SAFETY: as above.
    unsafe { nvrtc::sys::is_culib_present() }
}

/// Whether `libcublas` can be loaded (no panic).
pub(crate) fn cublas_present() -> bool {
    // SAFETY: as above.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

/// The NVRTC version `(major, minor)`.
pub(crate) fn nvrtc_version() -> CuResult<(i32, i32)> {
    let (mut a, mut b) = (0i32, 0i32);
    // SAFETY: two valid out-pointers.
    let r = unsafe { nvrtc::sys::nvrtcVersion(&mut a, &mut b) };
    if r != nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(CuError {
            code: r as i64,
            msg: "nvrtcVersion".into(),
        });
    }
    Ok((a, b))
}

/// Compile CUDA C++ `src` with NVRTC for `arch` (`"sm_90"`: a cubin; `"compute_90"`: PTX).
/// Returns the image, NUL-terminated for PTX, and the compile log on failure.
pub(crate) fn nvrtc_compile(src: &str, name: &str, arch: &str, extra: &[&str]) -> std::result::Result<Vec<u8>, String> {
    let csrc = CString::new(src).map_err(|_| format!("{name}: source contains a NUL byte"))?;
    let cname = CString::new(name).map_err(|_| format!("{name}: name contains a NUL byte"))?;
    let prog =
        nvrtc::result::create_program(&csrc, Some(&cname)).map_err(|e| format!("{name}: nvrtcCreateProgram: {e:?}"))?;
    struct Prog(nvrtc::sys::nvrtcProgram);
    impl Drop for Prog {
        fn drop(&mut self) {
            // SAFETY: the program was created above and is destroyed once; errors are ignored.
            let _ = unsafe { nvrtc::result::destroy_program(self.0) };
        }
    }
    let prog = Prog(prog);
    let mut opts: Vec<String> = vec![
        format!("--gpu-architecture={arch}"),
        "-std=c++17".into(),
        "-lineinfo".into(),
    ];
    opts.extend(extra.iter().map(|s| s.to_string()));
    // SAFETY: `prog` is a valid program; options are valid strings.
    let res = unsafe { nvrtc::result::compile_program(prog.0, &opts) };
    if let Err(e) = res {
        // SAFETY: valid program.
        let log = unsafe { nvrtc::result::get_program_log(prog.0) }
            .map(|v| {
                let bytes: Vec<u8> = v.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .unwrap_or_default();
        return Err(format!("{name}: NVRTC failed for {arch} ({e:?}):\n{log}"));
    }
    if arch.starts_with("sm_") {
        let mut size = 0usize;
        // SAFETY: valid program and out-pointer.
        let r = unsafe { nvrtc::sys::nvrtcGetCUBINSize(prog.0, &mut size) };
        if r != nvrtc::sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
            return Err(format!("{name}: nvrtcGetCUBINSize failed ({r:?})"));
        }
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` holds `size` bytes as NVRTC asked.
        let r = unsafe { nvrtc::sys::nvrtcGetCUBIN(prog.0, buf.as_mut_ptr() as *mut std::ffi::c_char) };
        if r != nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(format!("{name}: nvrtcGetCUBIN failed ({r:?})"));
        }
        Ok(buf)
    } else {
        // SAFETY: valid program.
        let ptx = unsafe { nvrtc::result::get_ptx(prog.0) }.map_err(|e| format!("{name}: nvrtcGetPTX: {e:?}"))?;
        let mut bytes: Vec<u8> = ptx.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        bytes.push(0);
        Ok(bytes)
    }
}

/// Device count through the driver (after `cuInit`).
pub(crate) fn device_count() -> CuResult<i32> {
    result::init().map_err(|e| CuError::driver("cuInit", e))?;
    result::device::get_count().map_err(|e| CuError::driver("cuDeviceGetCount", e))
}

/// The primary context of device `ordinal` (retained by cudarc; released when dropped).
pub(crate) fn context(ordinal: usize) -> CuResult<Arc<CudaContext>> {
    CudaContext::new(ordinal).map_err(|e| CuError::driver("cuDevicePrimaryCtxRetain", e))
}

/// A device attribute.
pub(crate) fn attribute(ctx: &CudaContext, a: sys::CUdevice_attribute) -> CuResult<i32> {
    ctx.attribute(a).map_err(|e| CuError::driver("cuDeviceGetAttribute", e))
}

/// A `CUstream` handle (owned or borrowed), usable from any thread.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Stream(pub sys::CUstream);
// SAFETY: a CUstream is an opaque handle that the driver lets any thread use.
unsafe impl Send for Stream {}
// SAFETY: as above.
unsafe impl Sync for Stream {}

impl Stream {
    /// A new non-blocking stream of the current context.
    pub(crate) fn create() -> CuResult<Self> {
        result::stream::create(result::stream::StreamKind::NonBlocking)
            .map(Stream)
            .map_err(|e| CuError::driver("cuStreamCreate", e))
    }
    /// Wrap an engine's stream (not destroyed by us).
    pub(crate) fn borrowed(raw: u64) -> Self {
        Stream(raw as usize as sys::CUstream)
    }
    /// Destroy a stream created by [`Stream::create`].
    pub(crate) fn destroy(self) {
        // SAFETY: only called for streams this crate created, once.
        let _ = unsafe { result::stream::destroy(self.0) };
    }
    /// Wait for all work on the stream.
    pub(crate) fn sync(self) -> CuResult<()> {
        // SAFETY: a valid stream of the current context.
        unsafe { result::stream::synchronize(self.0) }.map_err(|e| CuError::driver("cuStreamSynchronize", e))
    }
}

/// Make `ctx` current on this thread.
pub(crate) fn bind(ctx: &CudaContext) -> CuResult<()> {
    ctx.bind_to_thread().map_err(|e| CuError::driver("cuCtxSetCurrent", e))
}

/// `cuMemAlloc` of `bytes` (> 0) bytes.
pub(crate) fn mem_alloc(bytes: usize) -> CuResult<u64> {
    // SAFETY: plain allocation in the current context.
    unsafe { result::malloc_sync(bytes) }.map_err(|e| CuError::driver("cuMemAlloc", e))
}

/// `cuMemFree`.
pub(crate) fn mem_free(ptr: u64) -> CuResult<()> {
    // SAFETY: `ptr` came from `mem_alloc` and is freed once (the owner's Drop).
    unsafe { result::free_sync(ptr) }.map_err(|e| CuError::driver("cuMemFree", e))
}

/// Host to device copy, ordered on `stream`. The source may be freed when this returns (pageable
/// sources are staged before the call returns).
pub(crate) fn htod(dst: u64, src: &[u8], stream: Stream) -> CuResult<()> {
    if src.is_empty() {
        return Ok(());
    }
    // SAFETY: the caller checked that `dst .. dst + src.len()` is inside one device allocation.
    chk("cuMemcpyHtoDAsync", unsafe {
        sys::cuMemcpyHtoDAsync_v2(dst, src.as_ptr() as *const c_void, src.len(), stream.0)
    })
}

/// Device to host copy; waits for the stream, so `dst` is filled on return.
pub(crate) fn dtoh(dst: &mut [u8], src: u64, stream: Stream) -> CuResult<()> {
    if dst.is_empty() {
        return stream.sync();
    }
    // SAFETY: the caller checked the source range; `dst` is valid for writes of its length and
    // outlives the copy because we synchronise before returning.
    chk("cuMemcpyDtoHAsync", unsafe {
        sys::cuMemcpyDtoHAsync_v2(dst.as_mut_ptr() as *mut c_void, src, dst.len(), stream.0)
    })?;
    stream.sync()
}

/// Fill `bytes` bytes at `dst` with `value`, on `stream`.
pub(crate) fn memset8(dst: u64, value: u8, bytes: usize, stream: Stream) -> CuResult<()> {
    if bytes == 0 {
        return Ok(());
    }
    // SAFETY: the caller checked the range.
    chk("cuMemsetD8Async", unsafe {
        sys::cuMemsetD8Async(dst, value, bytes, stream.0)
    })
}

/// A loaded module (kept for the life of its backend).
pub(crate) struct Module(sys::CUmodule);
// SAFETY: module handles may be used from any thread of the process.
unsafe impl Send for Module {}
// SAFETY: as above.
unsafe impl Sync for Module {}

impl Module {
    /// Load a cubin or NUL-terminated PTX image into the current context.
    pub(crate) fn load(image: &[u8]) -> CuResult<Self> {
        // SAFETY: `image` is a complete cubin, or PTX ending in NUL (see `nvrtc_compile`).
        unsafe { result::module::load_data(image.as_ptr() as *const c_void) }
            .map(Module)
            .map_err(|e| CuError::driver("cuModuleLoadData", e))
    }
    /// Look up a kernel.
    pub(crate) fn function(&self, name: &str) -> CuResult<Function> {
        let c = CString::new(name).map_err(|_| CuError {
            code: -1,
            msg: format!("bad kernel name {name}"),
        })?;
        // SAFETY: the module is loaded and not unloaded while `self` lives.
        unsafe { result::module::get_function(self.0, c) }
            .map(Function)
            .map_err(|e| CuError::driver(&format!("cuModuleGetFunction({name})"), e))
    }
    /// Unload (called by the owning backend on drop, with its context current).
    pub(crate) fn unload(&self) {
        // SAFETY: called once, when no launch can use the module any more.
        let _ = unsafe { result::module::unload(self.0) };
    }
}

/// A kernel handle.
#[derive(Clone, Copy)]
pub(crate) struct Function(sys::CUfunction);
// SAFETY: function handles may be used from any thread of the process.
unsafe impl Send for Function {}
// SAFETY: as above.
unsafe impl Sync for Function {}

impl Function {
    /// Allow `bytes` of dynamic shared memory.
    pub(crate) fn set_max_dynamic_smem(&self, bytes: i32) -> CuResult<()> {
        // SAFETY: valid function handle.
        chk("cuFuncSetAttribute", unsafe {
            sys::cuFuncSetAttribute(
                self.0,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes,
            )
        })
    }
}

/// One kernel argument, by value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    /// A device address (`T*`); 0 for null.
    P(u64),
    /// `long long`.
    I64(i64),
    /// `unsigned long long`.
    U64(u64),
    /// `int`.
    I32(i32),
    /// `float`.
    F32(f32),
}

/// Launch `f` on `stream`, then check the launch status.
pub(crate) fn launch(
    f: Function,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    smem: u32,
    stream: Stream,
    args: &[Arg],
) -> CuResult<()> {
    // Own copies of the values; the driver reads them through these pointers during the call.
    let mut vals: Vec<Arg> = args.to_vec();
    let mut ptrs: Vec<*mut c_void> = vals
        .iter_mut()
        .map(|a| match a {
            Arg::P(v) | Arg::U64(v) => v as *mut u64 as *mut c_void,
            Arg::I64(v) => v as *mut i64 as *mut c_void,
            Arg::I32(v) => v as *mut i32 as *mut c_void,
            Arg::F32(v) => v as *mut f32 as *mut c_void,
        })
        .collect();
    // SAFETY: `f` is a loaded kernel whose parameter list matches `args` (each kernel's call site in
    // backend.rs mirrors its `extern "C"` signature in kernels/cuda); every pointer argument was
    // checked to lie inside a live allocation of the current context; `vals` outlives the call.
    unsafe { result::launch_kernel(f.0, grid, block, smem, stream.0, &mut ptrs) }
        .map_err(|e| CuError::driver("cuLaunchKernel", e))
}

/// Page-lock a host range and map it for the device (read-only). Returns the device address and
/// whether this call registered it (then [`host_unregister`] must follow).
pub(crate) fn host_register(ptr: u64, bytes: usize) -> CuResult<(u64, bool)> {
    let p = ptr as usize as *mut c_void;
    let flags = sys::CU_MEMHOSTREGISTER_DEVICEMAP | sys::CU_MEMHOSTREGISTER_READ_ONLY;
    // SAFETY: the caller passes a live host range of `bytes` bytes (a host Buffer it borrows for the op).
    let mut r = unsafe { sys::cuMemHostRegister_v2(p, bytes, flags) };
    if r != sys::CUresult::CUDA_SUCCESS && r != sys::CUresult::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED {
        // READ_ONLY needs CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED; writable host memory
        // maps without it. A read-only mapping (mmap'd file) keeps the first error.
        // SAFETY: as above.
        let r2 = unsafe { sys::cuMemHostRegister_v2(p, bytes, sys::CU_MEMHOSTREGISTER_DEVICEMAP) };
        if r2 == sys::CUresult::CUDA_SUCCESS || r2 == sys::CUresult::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED {
            r = r2;
        }
    }
    let ours = match r {
        sys::CUresult::CUDA_SUCCESS => true,
        sys::CUresult::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED => false,
        other => return Err(CuError::driver("cuMemHostRegister", DriverError(other))),
    };
    let mut d: sys::CUdeviceptr = 0;
    // SAFETY: `p` is registered (by us or earlier) with DEVICEMAP.
    let r = unsafe { sys::cuMemHostGetDevicePointer_v2(&mut d, p, 0) };
    if let Err(e) = chk("cuMemHostGetDevicePointer", r) {
        if ours {
            host_unregister(ptr);
        }
        return Err(e);
    }
    Ok((d, ours))
}

/// Undo [`host_register`].
pub(crate) fn host_unregister(ptr: u64) {
    // SAFETY: `ptr` was registered by `host_register` and no enqueued work uses it (the caller synchronised).
    let _ = unsafe { sys::cuMemHostUnregister(ptr as usize as *mut c_void) };
}
