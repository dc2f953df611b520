//! Everything unsafe of the backend: loading the CANN libraries, the resolved function table, and
//! RAII wrappers (runtime/device/context/stream, device memory, aclTensor / aclTensorList /
//! aclIntArray) plus one safe method per aclnn op that runs the two-phase call.

use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};
use std::ptr;

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use moehal_ascend_sys as sys;
use moehal_core::{Error, Result};

/// Backend name used in errors.
pub const NAME: &str = "ascend";

/// The non-`Option` function type inside a bindgen `Option<fn>` typedef.
pub trait OptFn {
    /// The function-pointer type.
    type Inner: Copy;
}
impl<T: Copy> OptFn for Option<T> {
    type Inner = T;
}

macro_rules! api {
    (required { $($r:ident : $rt:ident),* $(,)? } optional { $($o:ident : $ot:ident),* $(,)? }) => {
        /// The resolved function table. Required symbols are plain function pointers; op symbols
        /// that are probed by version are `Option`s.
        #[allow(non_snake_case, missing_docs)]
        pub struct Api {
            $(pub $r: <sys::$rt as OptFn>::Inner,)*
            $(pub $o: Option<<sys::$ot as OptFn>::Inner>,)*
        }
        impl Api {
            /// Resolve every symbol from `libs` (first library that has it wins). Fails with the
            /// list of every missing required name.
            fn resolve(libs: &[Library]) -> std::result::Result<Api, Vec<&'static str>> {
                let mut missing = Vec::new();
                $(
                    #[allow(non_snake_case)]
                    let $r: Option<<sys::$rt as OptFn>::Inner> = lookup::<sys::$rt>(libs, stringify!($r));
                    if $r.is_none() { missing.push(stringify!($r)); }
                )*
                if !missing.is_empty() {
                    return Err(missing);
                }
                Ok(Api {
                    $($r: $r.expect("checked above"),)*
                    $($o: lookup::<sys::$ot>(libs, stringify!($o)),)*
                })
            }
        }
    };
}

api! {
    required {
        aclInit: aclInitFn, aclGetRecentErrMsg: aclGetRecentErrMsgFn, aclrtGetSocName: aclrtGetSocNameFn,
        aclrtSetDevice: aclrtSetDeviceFn, aclrtResetDevice: aclrtResetDeviceFn,
        aclrtGetDeviceCount: aclrtGetDeviceCountFn, aclrtCreateContext: aclrtCreateContextFn,
        aclrtDestroyContext: aclrtDestroyContextFn, aclrtSetCurrentContext: aclrtSetCurrentContextFn,
        aclrtCreateStream: aclrtCreateStreamFn, aclrtDestroyStream: aclrtDestroyStreamFn,
        aclrtSynchronizeStream: aclrtSynchronizeStreamFn, aclrtMalloc: aclrtMallocFn, aclrtFree: aclrtFreeFn,
        aclrtMemcpy: aclrtMemcpyFn, aclrtMemset: aclrtMemsetFn, aclrtGetMemInfo: aclrtGetMemInfoFn,
        aclCreateTensor: aclCreateTensorFn, aclDestroyTensor: aclDestroyTensorFn,
        aclCreateIntArray: aclCreateIntArrayFn, aclDestroyIntArray: aclDestroyIntArrayFn,
        aclCreateTensorList: aclCreateTensorListFn, aclDestroyTensorList: aclDestroyTensorListFn,
    }
    optional {
        aclnnGroupedMatmulV4GetWorkspaceSize: aclnnGroupedMatmulV4GetWorkspaceSizeFn, aclnnGroupedMatmulV4: aclnnGroupedMatmulV4Fn,
        aclnnGroupedMatmulV3GetWorkspaceSize: aclnnGroupedMatmulV3GetWorkspaceSizeFn, aclnnGroupedMatmulV3: aclnnGroupedMatmulV3Fn,
        aclnnMoeGatingTopKSoftmaxGetWorkspaceSize: aclnnMoeGatingTopKSoftmaxGetWorkspaceSizeFn, aclnnMoeGatingTopKSoftmax: aclnnMoeGatingTopKSoftmaxFn,
        aclnnMoeGatingTopKGetWorkspaceSize: aclnnMoeGatingTopKGetWorkspaceSizeFn, aclnnMoeGatingTopK: aclnnMoeGatingTopKFn,
        aclnnMoeInitRoutingV2GetWorkspaceSize: aclnnMoeInitRoutingV2GetWorkspaceSizeFn, aclnnMoeInitRoutingV2: aclnnMoeInitRoutingV2Fn,
        aclnnMoeInitRoutingV3GetWorkspaceSize: aclnnMoeInitRoutingV3GetWorkspaceSizeFn, aclnnMoeInitRoutingV3: aclnnMoeInitRoutingV3Fn,
        aclnnMoeFinalizeRoutingV2GetWorkspaceSize: aclnnMoeFinalizeRoutingV2GetWorkspaceSizeFn, aclnnMoeFinalizeRoutingV2: aclnnMoeFinalizeRoutingV2Fn,
        aclnnEmbeddingGetWorkspaceSize: aclnnEmbeddingGetWorkspaceSizeFn, aclnnEmbedding: aclnnEmbeddingFn,
        aclnnGatherV2GetWorkspaceSize: aclnnGatherV2GetWorkspaceSizeFn, aclnnGatherV2: aclnnGatherV2Fn,
        aclnnIndexSelectGetWorkspaceSize: aclnnIndexSelectGetWorkspaceSizeFn, aclnnIndexSelect: aclnnIndexSelectFn,
        aclnnCastGetWorkspaceSize: aclnnCastGetWorkspaceSizeFn, aclnnCast: aclnnCastFn,
    }
}

fn lookup<T: OptFn>(libs: &[Library], name: &str) -> Option<T::Inner> {
    let mut cname = name.as_bytes().to_vec();
    cname.push(0);
    for lib in libs {
        // SAFETY: `T` is the bindgen typedef of `name` from the hand-written header (the same one the
        // emulator is checked against): an `Option` of an `extern "C"` fn pointer, pointer-sized.
        if let Ok(sym) = unsafe { lib.get::<T>(&cname) } {
            // SAFETY: `T` is `Option<fn>` (see `OptFn`), so reading it as `Option<T::Inner>` is a
            // no-op transmute of a pointer-sized value; a null symbol reads as `None`.
            let f: Option<T::Inner> = unsafe { std::mem::transmute_copy(&*sym) };
            if f.is_some() {
                return f;
            }
        }
    }
    None
}

/// Op versions present (both `aclnnX` and `aclnnXGetWorkspaceSize` resolved).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpVersions {
    /// `aclnnGroupedMatmulV4` (4), else V3 (3), else 0.
    pub gmm: u8,
    /// `aclnnMoeGatingTopKSoftmax`.
    pub gating_softmax: bool,
    /// `aclnnMoeGatingTopK`.
    pub gating: bool,
    /// `aclnnMoeInitRoutingV3` (3), else V2 (2), else 0.
    pub init_routing: u8,
    /// `aclnnMoeFinalizeRoutingV2`.
    pub finalize: bool,
    /// `aclnnEmbedding` (1), `aclnnGatherV2` (2), `aclnnIndexSelect` (3), none (0).
    pub gather: u8,
    /// `aclnnCast`.
    pub cast: bool,
}

impl Api {
    /// The aclnn ops whose two entry points both resolved, by name.
    pub fn ops(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut add = |name: &'static str, a: bool, b: bool| {
            if a && b {
                v.push(name);
            }
        };
        add(
            "aclnnGroupedMatmulV4",
            self.aclnnGroupedMatmulV4.is_some(),
            self.aclnnGroupedMatmulV4GetWorkspaceSize.is_some(),
        );
        add(
            "aclnnGroupedMatmulV3",
            self.aclnnGroupedMatmulV3.is_some(),
            self.aclnnGroupedMatmulV3GetWorkspaceSize.is_some(),
        );
        add(
            "aclnnMoeGatingTopKSoftmax",
            self.aclnnMoeGatingTopKSoftmax.is_some(),
            self.aclnnMoeGatingTopKSoftmaxGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnMoeGatingTopK",
            self.aclnnMoeGatingTopK.is_some(),
            self.aclnnMoeGatingTopKGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnMoeInitRoutingV2",
            self.aclnnMoeInitRoutingV2.is_some(),
            self.aclnnMoeInitRoutingV2GetWorkspaceSize.is_some(),
        );
        add(
            "aclnnMoeInitRoutingV3",
            self.aclnnMoeInitRoutingV3.is_some(),
            self.aclnnMoeInitRoutingV3GetWorkspaceSize.is_some(),
        );
        add(
            "aclnnMoeFinalizeRoutingV2",
            self.aclnnMoeFinalizeRoutingV2.is_some(),
            self.aclnnMoeFinalizeRoutingV2GetWorkspaceSize.is_some(),
        );
        add(
            "aclnnEmbedding",
            self.aclnnEmbedding.is_some(),
            self.aclnnEmbeddingGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnGatherV2",
            self.aclnnGatherV2.is_some(),
            self.aclnnGatherV2GetWorkspaceSize.is_some(),
        );
        add(
            "aclnnIndexSelect",
            self.aclnnIndexSelect.is_some(),
            self.aclnnIndexSelectGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnCast",
            self.aclnnCast.is_some(),
            self.aclnnCastGetWorkspaceSize.is_some(),
        );
        v
    }

    fn versions(&self) -> OpVersions {
        let both = |a: bool, b: bool| a && b;
        OpVersions {
            gmm: if both(
                self.aclnnGroupedMatmulV4.is_some(),
                self.aclnnGroupedMatmulV4GetWorkspaceSize.is_some(),
            ) {
                4
            } else if both(
                self.aclnnGroupedMatmulV3.is_some(),
                self.aclnnGroupedMatmulV3GetWorkspaceSize.is_some(),
            ) {
                3
            } else {
                0
            },
            gating_softmax: both(
                self.aclnnMoeGatingTopKSoftmax.is_some(),
                self.aclnnMoeGatingTopKSoftmaxGetWorkspaceSize.is_some(),
            ),
            gating: both(
                self.aclnnMoeGatingTopK.is_some(),
                self.aclnnMoeGatingTopKGetWorkspaceSize.is_some(),
            ),
            init_routing: if both(
                self.aclnnMoeInitRoutingV3.is_some(),
                self.aclnnMoeInitRoutingV3GetWorkspaceSize.is_some(),
            ) {
                3
            } else if both(
                self.aclnnMoeInitRoutingV2.is_some(),
                self.aclnnMoeInitRoutingV2GetWorkspaceSize.is_some(),
            ) {
                2
            } else {
                0
            },
            finalize: both(
                self.aclnnMoeFinalizeRoutingV2.is_some(),
                self.aclnnMoeFinalizeRoutingV2GetWorkspaceSize.is_some(),
            ),
            gather: if both(
                self.aclnnEmbedding.is_some(),
                self.aclnnEmbeddingGetWorkspaceSize.is_some(),
            ) {
                1
            } else if both(
                self.aclnnGatherV2.is_some(),
                self.aclnnGatherV2GetWorkspaceSize.is_some(),
            ) {
                2
            } else if both(
                self.aclnnIndexSelect.is_some(),
                self.aclnnIndexSelectGetWorkspaceSize.is_some(),
            ) {
                3
            } else {
                0
            },
            cast: both(self.aclnnCast.is_some(), self.aclnnCastGetWorkspaceSize.is_some()),
        }
    }
}

// ================================================================================ library search

/// Runtime library names, in preference order.
pub const RUNTIME_LIBS: [&str; 2] = ["libascendcl.so", "libacl_rt.so"];
/// Meta library.
pub const META_LIB: &str = "libnnopbase.so";
/// Op libraries: the monolithic one, then the per-domain splits.
pub const OP_LIBS: [&str; 7] = [
    "libopapi.so",
    "libopapi_transformer.so",
    "libopapi_nn.so",
    "libopapi_math.so",
    "libaclnn_ops_infer.so",
    "libaclnn_ops_train.so",
    "libaclnn_math.so",
];

/// Directories searched, in order: `MOEHAL_ASCEND_LIB_DIR`, then for `ASCEND_HOME_PATH` and
/// `ASCEND_TOOLKIT_HOME` their `lib64`, `<arch>-linux/lib64` and `runtime/lib64`, then each
/// `LD_LIBRARY_PATH` entry, then the same sub-folders of `/usr/local/Ascend/ascend-toolkit/latest`
/// and `/usr/local/Ascend/cann`.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("MOEHAL_ASCEND_LIB_DIR") {
        dirs.push(PathBuf::from(d));
    }
    let arch = std::env::consts::ARCH;
    let under = |root: &Path, dirs: &mut Vec<PathBuf>| {
        for sub in [
            "lib64".to_string(),
            format!("{arch}-linux/lib64"),
            "runtime/lib64".to_string(),
        ] {
            dirs.push(root.join(sub));
        }
    };
    for var in ["ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME"] {
        if let Some(r) = std::env::var_os(var) {
            under(Path::new(&r), &mut dirs);
        }
    }
    if let Some(p) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()));
    }
    for root in ["/usr/local/Ascend/ascend-toolkit/latest", "/usr/local/Ascend/cann"] {
        under(Path::new(root), &mut dirs);
    }
    dirs
}

fn open_lib(path: &Path) -> std::result::Result<Library, String> {
    // SAFETY: loading a library runs its initialisers; these are the vendor's (or the emulator's)
    // runtime libraries, loaded the way their documentation says (RTLD_NOW | RTLD_GLOBAL).
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }.map_err(|e| format!("{}: {e}", path.display()))
}

/// The loaded libraries and the function table; the libraries stay loaded as long as this lives.
pub struct Loaded {
    /// Function table.
    pub api: Api,
    /// Versions found.
    pub versions: OpVersions,
    /// Paths of the libraries loaded.
    pub paths: Vec<PathBuf>,
    _libs: Vec<Library>,
}

/// Load the runtime from the first of `dirs` that has one, meta and op libraries from the first
/// directory that has each, and resolve every symbol.
pub fn load(dirs: &[PathBuf]) -> std::result::Result<Loaded, String> {
    let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
    let Some(rt_path) = RUNTIME_LIBS.iter().find_map(|n| find(n)) else {
        let shown: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(format!(
            "libascendcl.so / libacl_rt.so not found (searched: {}; set MOEHAL_ASCEND_LIB_DIR or ASCEND_HOME_PATH)",
            if shown.is_empty() {
                "nothing".to_string()
            } else {
                shown.join(", ")
            }
        ));
    };
    let mut paths = vec![rt_path];
    paths.extend(find(META_LIB));
    paths.extend(OP_LIBS.iter().filter_map(|n| find(n)));
    let mut libs = Vec::new();
    for p in &paths {
        libs.push(open_lib(p)?);
    }
    let api = Api::resolve(&libs).map_err(|missing| {
        let shown: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
        format!("missing symbols: {} (in {})", missing.join(", "), shown.join(", "))
    })?;
    let versions = api.versions();
    Ok(Loaded {
        api,
        versions,
        paths,
        _libs: libs,
    })
}

// ================================================================================ runtime

/// The process-wide runtime state one backend holds: device, context and stream.
pub struct Runtime {
    /// Loaded libraries and function table.
    pub lib: Loaded,
    /// Device ordinal.
    pub device: i32,
    ctx: usize,
    stream: usize,
}

// SAFETY: ACL contexts and streams may be used from any thread once the context is made current
// there (`bind`); the handles are plain identifiers and the function table is immutable.
unsafe impl Send for Runtime {}
// SAFETY: as above; the backend serialises op launches itself.
unsafe impl Sync for Runtime {}

impl Runtime {
    /// Initialise ACL (a repeated `aclInit` is fine), open `device`, create a context and a stream.
    pub fn open(lib: Loaded, device: i32) -> Result<Runtime> {
        let api = &lib.api;
        // SAFETY: plain C calls with valid (null or out-) pointers.
        let st = unsafe { (api.aclInit)(ptr::null()) };
        if st != sys::ACL_SUCCESS && st != sys::ACL_ERROR_REPEAT_INITIALIZE {
            return Err(err_with(api, st, "aclInit"));
        }
        let mut count = 0u32;
        // SAFETY: out-pointer to a local.
        check(
            api,
            unsafe { (api.aclrtGetDeviceCount)(&mut count) },
            "aclrtGetDeviceCount",
        )?;
        if device < 0 || device as u32 >= count {
            return Err(Error::Unavailable {
                backend: NAME.into(),
                reason: format!("device {device} absent ({count} devices)"),
            });
        }
        // SAFETY: valid device id.
        check(api, unsafe { (api.aclrtSetDevice)(device) }, "aclrtSetDevice")?;
        let mut ctx: sys::aclrtContext = ptr::null_mut();
        // SAFETY: out-pointer to a local.
        check(
            api,
            unsafe { (api.aclrtCreateContext)(&mut ctx, device) },
            "aclrtCreateContext",
        )?;
        let mut stream: sys::aclrtStream = ptr::null_mut();
        // SAFETY: out-pointer to a local; the context is current on this thread.
        if let Err(e) = check(
            api,
            unsafe { (api.aclrtCreateStream)(&mut stream) },
            "aclrtCreateStream",
        ) {
            // SAFETY: the context was created above and is unused.
            unsafe { (api.aclrtDestroyContext)(ctx) };
            return Err(e);
        }
        Ok(Runtime {
            lib,
            device,
            ctx: ctx as usize,
            stream: stream as usize,
        })
    }

    fn api(&self) -> &Api {
        &self.lib.api
    }

    /// Make our context current on the calling thread (every entry point calls this first).
    pub fn bind(&self) -> Result<()> {
        // SAFETY: our context handle is alive as long as `self`.
        check(
            self.api(),
            unsafe { (self.api().aclrtSetCurrentContext)(self.ctx as sys::aclrtContext) },
            "aclrtSetCurrentContext",
        )
    }

    /// SoC name (`aclrtGetSocName`).
    pub fn soc_name(&self) -> String {
        // SAFETY: returns NULL or a static NUL-terminated string.
        let p = unsafe { (self.api().aclrtGetSocName)() };
        if p.is_null() {
            return "unknown Ascend SoC".into();
        }
        // SAFETY: non-null, NUL-terminated, static.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// (free, total) device memory in bytes.
    pub fn mem_info(&self) -> Result<(u64, u64)> {
        self.bind()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: out-pointers to locals.
        check(
            self.api(),
            unsafe { (self.api().aclrtGetMemInfo)(sys::ACL_HBM_MEM, &mut free, &mut total) },
            "aclrtGetMemInfo",
        )?;
        Ok((free as u64, total as u64))
    }

    /// Wait for the stream.
    pub fn sync(&self) -> Result<()> {
        self.bind()?;
        // SAFETY: our stream.
        check(
            self.api(),
            unsafe { (self.api().aclrtSynchronizeStream)(self.stream as sys::aclrtStream) },
            "aclrtSynchronizeStream",
        )
    }

    /// `aclrtMalloc`; out-of-memory codes map to [`Error::OutOfMemory`].
    pub fn malloc(&self, bytes: usize) -> Result<u64> {
        self.bind()?;
        let mut p: *mut c_void = ptr::null_mut();
        // SAFETY: out-pointer to a local.
        let st = unsafe { (self.api().aclrtMalloc)(&mut p, bytes.max(1), sys::ACL_MEM_MALLOC_HUGE_FIRST) };
        if matches!(
            st,
            sys::ACL_ERROR_RT_MEMORY_ALLOCATION | sys::ACL_ERROR_BAD_ALLOC | 207018
        ) {
            let _ = self.recent_msg();
            return Err(Error::OutOfMemory {
                backend: NAME.into(),
                bytes: bytes as u64,
            });
        }
        check(self.api(), st, "aclrtMalloc")?;
        Ok(p as u64)
    }

    /// `aclrtFree` (errors are reported, as there is nobody to return them to in `Drop`).
    pub fn free(&self, p: u64) -> Result<()> {
        self.bind()?;
        // SAFETY: `p` came from `malloc` and is freed once (owned by `DevMem`).
        check(
            self.api(),
            unsafe { (self.api().aclrtFree)(p as *mut c_void) },
            "aclrtFree",
        )
    }

    /// Host -> device copy into `dst` (device address) of capacity `dst_cap`.
    pub fn h2d(&self, dst: u64, dst_cap: usize, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.sync()?;
        // SAFETY: `src` is a valid host slice; the runtime checks the device side.
        let st = unsafe {
            (self.api().aclrtMemcpy)(
                dst as *mut c_void,
                dst_cap,
                src.as_ptr().cast(),
                src.len(),
                sys::ACL_MEMCPY_HOST_TO_DEVICE,
            )
        };
        check(self.api(), st, "aclrtMemcpy(host to device)")
    }

    /// Device -> host copy from `src` (device address) after all enqueued work.
    pub fn d2h(&self, dst: &mut [u8], src: u64) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.sync()?;
        // SAFETY: `dst` is a valid, writable host slice of `dst.len()` bytes.
        let st = unsafe {
            (self.api().aclrtMemcpy)(
                dst.as_mut_ptr().cast(),
                dst.len(),
                src as *const c_void,
                dst.len(),
                sys::ACL_MEMCPY_DEVICE_TO_HOST,
            )
        };
        check(self.api(), st, "aclrtMemcpy(device to host)")
    }

    /// `aclrtMemset` of device memory.
    pub fn memset(&self, dst: u64, cap: usize, value: u8, count: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: the runtime checks the device range.
        check(
            self.api(),
            unsafe { (self.api().aclrtMemset)(dst as *mut c_void, cap, value as i32, count) },
            "aclrtMemset",
        )
    }

    fn recent_msg(&self) -> String {
        recent(self.api())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let api = &self.lib.api;
        // SAFETY: our own handles, destroyed once, after the stream has drained.
        unsafe {
            (api.aclrtSetCurrentContext)(self.ctx as sys::aclrtContext);
            (api.aclrtSynchronizeStream)(self.stream as sys::aclrtStream);
            (api.aclrtDestroyStream)(self.stream as sys::aclrtStream);
            (api.aclrtDestroyContext)(self.ctx as sys::aclrtContext);
            (api.aclrtResetDevice)(self.device);
        }
    }
}

fn recent(api: &Api) -> String {
    // SAFETY: returns NULL or a NUL-terminated string valid until the next ACL call on this thread.
    let p = unsafe { (api.aclGetRecentErrMsg)() };
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: non-null, NUL-terminated; copied out at once.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

fn err_with(api: &Api, code: i32, what: &str) -> Error {
    let msg = recent(api);
    Error::device(
        NAME,
        code as i64,
        if msg.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {msg}")
        },
    )
}

fn check(api: &Api, code: i32, what: &str) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(err_with(api, code, what))
    }
}

// ================================================================================ aclnn objects

/// An `aclTensor` describing a strided view of device memory (counts in elements).
pub struct Tensor<'r> {
    rt: &'r Runtime,
    raw: *mut sys::aclTensor,
}

/// A tensor description handed to [`Tensor::new`].
#[derive(Debug, Clone)]
pub struct TDesc {
    /// View shape.
    pub dims: Vec<i64>,
    /// View strides.
    pub strides: Vec<i64>,
    /// Element offset from `addr`.
    pub offset: i64,
    /// Storage length in elements (1-D storage).
    pub storage: i64,
    /// ACL data type.
    pub dtype: sys::aclDataType,
    /// Device address of the storage: 32-byte aligned, as `aclCreateTensor` requires of
    /// `tensorData` ([HA] canncommercial/900 operatorlist_00019: undefined behaviour otherwise).
    pub addr: u64,
    /// The argument this tensor carries (`x`, `table`, or a scratch name), for error messages.
    pub name: &'static str,
}

impl<'r> Tensor<'r> {
    /// `aclCreateTensor` (ND format, 1-D storage).
    pub fn new(rt: &'r Runtime, d: &TDesc) -> Result<Self> {
        let api = rt.api();
        let storage = [d.storage];
        // SAFETY: arrays are valid for the lengths passed; the runtime copies them.
        let raw = unsafe {
            (api.aclCreateTensor)(
                d.dims.as_ptr(),
                d.dims.len() as u64,
                d.dtype,
                d.strides.as_ptr(),
                d.offset,
                sys::ACL_FORMAT_ND,
                storage.as_ptr(),
                1,
                d.addr as *mut c_void,
            )
        };
        if raw.is_null() {
            return Err(err_with(
                api,
                sys::ACLNN_ERR_PARAM_INVALID,
                &format!(
                    "aclCreateTensor({}: dims {:?}, strides {:?}, offset {})",
                    d.name, d.dims, d.strides, d.offset
                ),
            ));
        }
        Ok(Tensor { rt, raw })
    }
    fn ptr(&self) -> *mut sys::aclTensor {
        self.raw
    }
}

impl Drop for Tensor<'_> {
    fn drop(&mut self) {
        if !self.raw.is_null() {
            // SAFETY: created by aclCreateTensor, not owned by a list (lists take `raw` out).
            unsafe { (self.rt.api().aclDestroyTensor)(self.raw) };
        }
    }
}

/// An `aclTensorList`; it owns its tensors (destroyed with the list, never separately).
pub struct TensorList<'r> {
    rt: &'r Runtime,
    raw: *mut sys::aclTensorList,
}

impl<'r> TensorList<'r> {
    /// `aclCreateTensorList` from tensors, which the list takes over.
    pub fn new(rt: &'r Runtime, tensors: Vec<Tensor<'r>>) -> Result<Self> {
        let ptrs: Vec<*const sys::aclTensor> = tensors.iter().map(|t| t.ptr() as *const _).collect();
        // SAFETY: `ptrs` holds live tensors.
        let raw = unsafe { (rt.api().aclCreateTensorList)(ptrs.as_ptr(), ptrs.len() as u64) };
        if raw.is_null() {
            return Err(err_with(rt.api(), sys::ACLNN_ERR_PARAM_INVALID, "aclCreateTensorList"));
        }
        for t in tensors {
            std::mem::forget(t); // now owned by the list, destroyed with it
        }
        Ok(TensorList { rt, raw })
    }
    fn ptr(&self) -> *mut sys::aclTensorList {
        self.raw
    }
}

impl Drop for TensorList<'_> {
    fn drop(&mut self) {
        // SAFETY: created by aclCreateTensorList; destroys its tensors too.
        unsafe { (self.rt.api().aclDestroyTensorList)(self.raw) };
    }
}

/// An `aclIntArray` (host values, copied by the runtime); for ops with list attributes
/// (`activeExpertRangeOptional` of `aclnnMoeInitRoutingV3`).
pub struct IntArray<'r> {
    rt: &'r Runtime,
    raw: *mut sys::aclIntArray,
}

impl<'r> IntArray<'r> {
    /// `aclCreateIntArray`.
    pub fn new(rt: &'r Runtime, v: &[i64]) -> Result<Self> {
        // SAFETY: `v` is valid for its length.
        let raw = unsafe { (rt.api().aclCreateIntArray)(v.as_ptr(), v.len() as u64) };
        if raw.is_null() {
            return Err(err_with(rt.api(), sys::ACLNN_ERR_PARAM_INVALID, "aclCreateIntArray"));
        }
        Ok(IntArray { rt, raw })
    }
    fn ptr(&self) -> *const sys::aclIntArray {
        self.raw
    }
}

impl Drop for IntArray<'_> {
    fn drop(&mut self) {
        // SAFETY: created by aclCreateIntArray.
        unsafe { (self.rt.api().aclDestroyIntArray)(self.raw) };
    }
}

type Launch = unsafe extern "C" fn(*mut c_void, u64, *mut sys::aclOpExecutor, sys::aclrtStream) -> sys::aclnnStatus;

fn opt<T: Copy>(f: Option<T>, name: &str) -> Result<T> {
    f.ok_or_else(|| Error::unsupported("ascend", NAME, format!("{name} is not in the loaded op libraries")))
}

/// What a two-phase call came to when its phase one may reject the call (the backend then routes
/// the op to the host instead).
pub enum Outcome {
    /// Phase one accepted the call; it was launched and the stream drained.
    Ran,
    /// Phase one (`GetWorkspaceSize`) returned this error; nothing was enqueued.
    Rejected(Error),
}

impl Runtime {
    /// The one two-phase helper: phase one (`GetWorkspaceSize`), workspace allocation, launch on
    /// our stream, then wait (so the workspace and the descriptors can go).
    fn two_phase(
        &self,
        name: &str,
        phase1: impl FnOnce(*mut u64, *mut *mut sys::aclOpExecutor) -> sys::aclnnStatus,
        launch: Launch,
    ) -> Result<()> {
        match self.two_phase_outcome(name, phase1, launch)? {
            Outcome::Ran => Ok(()),
            Outcome::Rejected(e) => Err(e),
        }
    }

    /// [`Runtime::two_phase`], but a phase-one rejection comes back as [`Outcome::Rejected`].
    fn two_phase_outcome(
        &self,
        name: &str,
        phase1: impl FnOnce(*mut u64, *mut *mut sys::aclOpExecutor) -> sys::aclnnStatus,
        launch: Launch,
    ) -> Result<Outcome> {
        self.bind()?;
        let mut ws = 0u64;
        let mut raw: *mut sys::aclOpExecutor = ptr::null_mut();
        let st = phase1(&mut ws, &mut raw);
        if let Err(e) = check(self.api(), st, &format!("{name}GetWorkspaceSize")) {
            return Ok(Outcome::Rejected(e));
        }
        // If the workspace cannot be had, the executor of this successful phase one is not
        // launched and not destroyed: it is a plain (not repeatable) executor, and the documents
        // allow `aclDestroyAclOpExecutor` only for repeatable ones ([HA] canncommercial/800
        // operatorlist_00021, `ascend_audit.md` L1). A host-side leak on this error path only.
        let ws_mem = if ws > 0 {
            Some(DevMem::new(self, ws as usize)?)
        } else {
            None
        };
        let ws_ptr = ws_mem.as_ref().map_or(ptr::null_mut(), |m| m.ptr as *mut c_void);
        // SAFETY: the executor came from phase one of this op; workspace is `ws` device bytes.
        let st = unsafe { launch(ws_ptr, ws, raw, self.stream as sys::aclrtStream) };
        check(self.api(), st, name)?;
        self.sync()?;
        Ok(Outcome::Ran)
    }
}

/// Device memory owned by the backend, freed on drop (workspaces and scratch).
pub struct DevMem<'r> {
    rt: &'r Runtime,
    /// Device address.
    pub ptr: u64,
    /// Size in bytes.
    pub len: usize,
}

impl<'r> DevMem<'r> {
    /// Allocate `len` bytes.
    pub fn new(rt: &'r Runtime, len: usize) -> Result<Self> {
        Ok(DevMem {
            rt,
            ptr: rt.malloc(len)?,
            len,
        })
    }
}

impl Drop for DevMem<'_> {
    fn drop(&mut self) {
        let _ = self.rt.free(self.ptr);
    }
}

fn t(x: &Option<&Tensor<'_>>) -> *mut sys::aclTensor {
    x.map_or(ptr::null_mut(), |t| t.ptr())
}
fn tl(x: &Option<&TensorList<'_>>) -> *mut sys::aclTensorList {
    x.map_or(ptr::null_mut(), |t| t.ptr())
}

impl Runtime {
    /// `aclnnGroupedMatmulV4` (`v4 = true`, groupListType 0) or `V3`: single-tensor x `[M,K]`,
    /// weight `[G,K,N]`, y `[M,N]`, splitItem 3, groupType 0 (M axis), cumulative `group` (INT64 `[G]`).
    pub fn grouped_matmul(
        &self,
        v4: bool,
        x: &TensorList<'_>,
        w: &TensorList<'_>,
        bias: Option<&TensorList<'_>>,
        group: &Tensor<'_>,
        y: &TensorList<'_>,
    ) -> Result<()> {
        let api = self.api();
        let n = ptr::null_mut();
        if v4 {
            let p1 = opt(
                api.aclnnGroupedMatmulV4GetWorkspaceSize,
                "aclnnGroupedMatmulV4GetWorkspaceSize",
            )?;
            let l = opt(api.aclnnGroupedMatmulV4, "aclnnGroupedMatmulV4")?;
            // SAFETY: every pointer is a live object of this runtime or NULL for an absent optional.
            self.two_phase(
                "aclnnGroupedMatmulV4",
                |ws, ex| unsafe {
                    p1(
                        x.ptr(),
                        w.ptr(),
                        tl(&bias),
                        n,
                        n,
                        n,
                        n,
                        n,
                        group.ptr(),
                        n,
                        n,
                        n,
                        3,
                        0,
                        0,
                        0,
                        y.ptr(),
                        n,
                        n,
                        ws,
                        ex,
                    )
                },
                l,
            )
        } else {
            let p1 = opt(
                api.aclnnGroupedMatmulV3GetWorkspaceSize,
                "aclnnGroupedMatmulV3GetWorkspaceSize",
            )?;
            let l = opt(api.aclnnGroupedMatmulV3, "aclnnGroupedMatmulV3")?;
            // SAFETY: as above.
            self.two_phase(
                "aclnnGroupedMatmulV3",
                |ws, ex| unsafe {
                    p1(
                        x.ptr(),
                        w.ptr(),
                        tl(&bias),
                        n,
                        n,
                        n,
                        n,
                        group.ptr(),
                        3,
                        0,
                        y.ptr(),
                        ws,
                        ex,
                    )
                },
                l,
            )
        }
    }

    /// `aclnnMoeGatingTopKSoftmax(x, NULL, k, y, expertIdx, rowIdx)`.
    pub fn gating_topk_softmax(
        &self,
        x: &Tensor<'_>,
        k: i64,
        y: &Tensor<'_>,
        idx: &Tensor<'_>,
        row_idx: &Tensor<'_>,
    ) -> Result<()> {
        let api = self.api();
        let p1 = opt(
            api.aclnnMoeGatingTopKSoftmaxGetWorkspaceSize,
            "aclnnMoeGatingTopKSoftmaxGetWorkspaceSize",
        )?;
        let l = opt(api.aclnnMoeGatingTopKSoftmax, "aclnnMoeGatingTopKSoftmax")?;
        // SAFETY: live objects of this runtime.
        self.two_phase(
            "aclnnMoeGatingTopKSoftmax",
            |ws, ex| unsafe { p1(x.ptr(), ptr::null(), k, y.ptr(), idx.ptr(), row_idx.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnMoeGatingTopK` with renorm 0, outFlag false, routedScalingFactor 1, eps 1e-20.
    ///
    /// `out` (FLOAT `[T,E]`) is always passed: the op definition declares `out` REQUIRED and the
    /// tiling null-checks its shape and requires FLOAT whatever `outFlag` says ([OT]
    /// moe_gating_top_k_def.cpp, moe_gating_top_k_tiling.cpp; torch_npu always allocates it), see
    /// `ascend_audit.md` P4. `bias` must have the dtype of `x` (tiling: `biasDtype != xDtype` fails;
    /// audit P5): the caller guarantees it. A phase-one rejection is returned as
    /// [`Outcome::Rejected`] so the caller can route the op to the host.
    #[allow(clippy::too_many_arguments)]
    pub fn gating_topk(
        &self,
        x: &Tensor<'_>,
        bias: Option<&Tensor<'_>>,
        k: i64,
        k_group: i64,
        group_count: i64,
        group_mode: i64,
        norm: i64,
        y: &Tensor<'_>,
        idx: &Tensor<'_>,
        out: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(
            api.aclnnMoeGatingTopKGetWorkspaceSize,
            "aclnnMoeGatingTopKGetWorkspaceSize",
        )?;
        let l = opt(api.aclnnMoeGatingTopK, "aclnnMoeGatingTopK")?;
        // SAFETY: live objects of this runtime or NULL for the optional bias.
        self.two_phase_outcome(
            "aclnnMoeGatingTopK",
            |ws, ex| unsafe {
                p1(
                    x.ptr(),
                    t(&bias),
                    k,
                    k_group,
                    group_count,
                    group_mode,
                    0,
                    norm,
                    false,
                    1.0,
                    1e-20,
                    y.ptr(),
                    idx.ptr(),
                    out.ptr(),
                    ws,
                    ex,
                )
            },
            l,
        )
    }

    /// `aclnnMoeInitRoutingV3`, dropless (dropPadMode 0), unquantised (quantMode -1, no scale or
    /// offset input), with the call pattern that the 2025 and the 2026 op code both accept
    /// (`ascend_audit.md` P1-P3; what vLLM-Ascend's `TokenDispatcherWithAllGather` passes):
    /// activeNum = T·k (the 2025 tiling requires -1 or N·K), expertTokensNumType 1 = per-expert
    /// **counts** (the 2025 tiling accepts only 1 and 2), `range` = `[0, E]` (the 2025 aclnn layer
    /// dereferences it unconditionally; `None` only where a probe showed the op rejects it), rowIdxType
    /// 0 = GATHER, `expandedRowIdx[t·k+j]` = position of slot (t,j) ([OT] moe_v3_row_idx_gather.h;
    /// torch_npu doc formula), and `scale_out` FLOAT `[T·k]`, which the aclnn layer null-checks
    /// (`CheckNotNull(... expandedScaleOut)`, 161001). `counts` is INT64 `[E]`.
    #[allow(clippy::too_many_arguments)]
    pub fn init_routing_v3(
        &self,
        x: &Tensor<'_>,
        ids: &Tensor<'_>,
        active_num: i64,
        e: i64,
        range: Option<&IntArray<'_>>,
        ex_x: &Tensor<'_>,
        row_idx: &Tensor<'_>,
        counts: &Tensor<'_>,
        scale_out: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(
            api.aclnnMoeInitRoutingV3GetWorkspaceSize,
            "aclnnMoeInitRoutingV3GetWorkspaceSize",
        )?;
        let l = opt(api.aclnnMoeInitRoutingV3, "aclnnMoeInitRoutingV3")?;
        let range = range.map_or(ptr::null(), |r| r.ptr());
        // SAFETY: live objects of this runtime or NULL for absent optionals.
        self.two_phase_outcome(
            "aclnnMoeInitRoutingV3",
            |ws, exe| unsafe {
                p1(
                    x.ptr(),
                    ids.ptr(),
                    ptr::null(),
                    ptr::null(),
                    active_num,
                    0,
                    e,
                    0,
                    1,
                    true,
                    -1,
                    range,
                    0,
                    ex_x.ptr(),
                    row_idx.ptr(),
                    counts.ptr(),
                    scale_out.ptr(),
                    ws,
                    exe,
                )
            },
            l,
        )
    }

    /// `aclnnMoeInitRoutingV2`, dropless (activeNum 0 = all rows, capacity 0, dropPadMode 0),
    /// flag 1 = cumulative INT32 `[E]` counts, no before-capacity output (OPTIONAL in the op def).
    /// `expandedRowIdx[t·k+j]` = position of slot (t,j) ([OT] moe_v2_gather_out.h).
    #[allow(clippy::too_many_arguments)]
    pub fn init_routing_v2(
        &self,
        x: &Tensor<'_>,
        ids: &Tensor<'_>,
        e: i64,
        ex_x: &Tensor<'_>,
        row_idx: &Tensor<'_>,
        counts: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(
            api.aclnnMoeInitRoutingV2GetWorkspaceSize,
            "aclnnMoeInitRoutingV2GetWorkspaceSize",
        )?;
        let l = opt(api.aclnnMoeInitRoutingV2, "aclnnMoeInitRoutingV2")?;
        // SAFETY: live objects of this runtime or NULL.
        self.two_phase_outcome(
            "aclnnMoeInitRoutingV2",
            |ws, exe| unsafe {
                p1(
                    x.ptr(),
                    ids.ptr(),
                    0,
                    0,
                    e,
                    0,
                    1,
                    false,
                    ex_x.ptr(),
                    row_idx.ptr(),
                    counts.ptr(),
                    ptr::null(),
                    ws,
                    exe,
                )
            },
            l,
        )
    }

    /// `aclnnMoeFinalizeRoutingV2(expandedX, expandedRowIdx, -, -, -, scales, -, dropPadMode 2, out)`.
    ///
    /// `scales` is `[T,k]` in the dtype of `ex_x`, or FLOAT beside BFLOAT16 `ex_x` (the 910B mixed
    /// mode, [OTF] aclnnMoeFinalizeRoutingV2.md; audit L2). A phase-one rejection comes back as
    /// [`Outcome::Rejected`].
    pub fn finalize_routing(
        &self,
        ex_x: &Tensor<'_>,
        row_idx: &Tensor<'_>,
        scales: &Tensor<'_>,
        out: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(
            api.aclnnMoeFinalizeRoutingV2GetWorkspaceSize,
            "aclnnMoeFinalizeRoutingV2GetWorkspaceSize",
        )?;
        let l = opt(api.aclnnMoeFinalizeRoutingV2, "aclnnMoeFinalizeRoutingV2")?;
        let n = ptr::null();
        // SAFETY: live objects of this runtime or NULL.
        self.two_phase_outcome(
            "aclnnMoeFinalizeRoutingV2",
            |ws, exe| unsafe {
                p1(
                    ex_x.ptr(),
                    row_idx.ptr(),
                    n,
                    n,
                    n,
                    scales.ptr(),
                    n,
                    2,
                    out.ptr(),
                    ws,
                    exe,
                )
            },
            l,
        )
    }

    /// Row gather along dim 0: `which` 1 = aclnnEmbedding, 2 = aclnnGatherV2, 3 = aclnnIndexSelect.
    pub fn gather(&self, which: u8, table: &Tensor<'_>, index: &Tensor<'_>, out: &Tensor<'_>) -> Result<()> {
        let api = self.api();
        match which {
            1 => {
                let p1 = opt(api.aclnnEmbeddingGetWorkspaceSize, "aclnnEmbeddingGetWorkspaceSize")?;
                let l = opt(api.aclnnEmbedding, "aclnnEmbedding")?;
                // SAFETY: live objects of this runtime.
                self.two_phase(
                    "aclnnEmbedding",
                    |ws, ex| unsafe { p1(table.ptr(), index.ptr(), out.ptr(), ws, ex) },
                    l,
                )
            }
            2 => {
                let p1 = opt(api.aclnnGatherV2GetWorkspaceSize, "aclnnGatherV2GetWorkspaceSize")?;
                let l = opt(api.aclnnGatherV2, "aclnnGatherV2")?;
                // SAFETY: live objects of this runtime.
                self.two_phase(
                    "aclnnGatherV2",
                    |ws, ex| unsafe { p1(table.ptr(), 0, index.ptr(), out.ptr(), ws, ex) },
                    l,
                )
            }
            _ => {
                let p1 = opt(api.aclnnIndexSelectGetWorkspaceSize, "aclnnIndexSelectGetWorkspaceSize")?;
                let l = opt(api.aclnnIndexSelect, "aclnnIndexSelect")?;
                // SAFETY: live objects of this runtime.
                self.two_phase(
                    "aclnnIndexSelect",
                    |ws, ex| unsafe { p1(table.ptr(), 0, index.ptr(), out.ptr(), ws, ex) },
                    l,
                )
            }
        }
    }

    /// `aclnnCast(src, dtype, out)`.
    pub fn cast(&self, src: &Tensor<'_>, dtype: sys::aclDataType, out: &Tensor<'_>) -> Result<()> {
        let api = self.api();
        let p1 = opt(api.aclnnCastGetWorkspaceSize, "aclnnCastGetWorkspaceSize")?;
        let l = opt(api.aclnnCast, "aclnnCast")?;
        // SAFETY: live objects of this runtime.
        self.two_phase(
            "aclnnCast",
            |ws, ex| unsafe { p1(src.ptr(), dtype, out.ptr(), ws, ex) },
            l,
        )
    }
}
