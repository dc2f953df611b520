//! The exported C ABI: every `#[no_mangle] extern "C"` function of the emulator, the device-memory
//! registry and the object tables. All `unsafe` of the crate lives here.
//!
//! Every export is checked at compile time against the bindgen typedef of the same name from
//! `moehal-ascend-sys` (`const _: sys::aclrtMallocFn = Some(aclrtMalloc);`), so the emulator and
//! the backend cannot disagree on a signature.

#![allow(non_snake_case)] // exports keep their C names, with or without `no_mangle`

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{c_char, c_void, CString};
use std::sync::{Mutex, MutexGuard};

use crate::ops::{Fail, GatingParams, Op};
use crate::sys;
use crate::tensor::{elem_size, Desc, HostTensor};

/// SoC name reported by `aclrtGetSocName`.
pub const SOC_NAME: &str = "Ascend910B2-emu";
const _: () = assert!(SOC_NAME.len() + 1 == SOC.len());
/// Number of emulated devices.
const DEVICES: i32 = 1;
/// Default memory reported when no cap is set (bytes).
const DEFAULT_TOTAL: usize = 64 << 30;
/// Environment variable: a cap on the device bytes in use; `aclrtMalloc` beyond it fails.
pub const MEM_CAP_ENV: &str = "MOEHAL_ACL_EMU_MEM_CAP";

macro_rules! check_sig {
    ($($name:ident => $ty:ident),* $(,)?) => { $( const _: sys::$ty = Some($name); )* };
}

struct Alloc {
    /// Requested size rounded up to 32 bytes.
    cap: usize,
}

struct Exec {
    op: Op,
    ws: u64,
    /// Set by `aclSetAclOpExecutorRepeatable`: launches do not consume it.
    repeatable: bool,
}

#[derive(Default)]
struct State {
    init: bool,
    allocs: BTreeMap<usize, Alloc>,
    used: usize,
    contexts: HashMap<usize, i32>,
    streams: HashSet<usize>,
    tensors: HashMap<usize, Desc>,
    /// Tensors owned by a tensor list (cannot be destroyed on their own).
    owned: HashSet<usize>,
    lists: HashMap<usize, Vec<usize>>,
    int_arrays: HashMap<usize, Vec<i64>>,
    /// Live `aclScalar`s (value copied at creation).
    scalars: HashMap<usize, crate::ops::Scalar>,
    execs: HashMap<usize, Exec>,
    next_handle: usize,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

// ============================================================================= copy accounting

/// Totals of the bytes `aclrtMemcpy` moved, by direction, since load or the last
/// [`moehalEmuCopyStatsReset`] (an emulator feature, no vendor API: the backend's tests read it to
/// prove that an op moves no tensor data between host and device; RULES.md I1-I3).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MoehalEmuCopyStats {
    /// Bytes copied host -> device.
    pub h2d_bytes: u64,
    /// Bytes copied device -> host.
    pub d2h_bytes: u64,
    /// Bytes copied device -> device.
    pub d2d_bytes: u64,
    /// Bytes copied host -> host through `aclrtMemcpy`.
    pub h2h_bytes: u64,
    /// Successful `aclrtMemcpy` calls host -> device (count > 0).
    pub h2d_calls: u64,
    /// Successful `aclrtMemcpy` calls device -> host (count > 0).
    pub d2h_calls: u64,
    /// aclnn launches (phase two) past the executor and workspace checks, successful or not.
    pub launches: u64,
}

/// One aclnn launch and the host<->device bytes copied since the previous launch (or the last
/// reset): the copies that fed this call. Copies after the last launch are in the totals only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MoehalEmuLaunchCopies {
    /// The launch function's name, NUL-terminated (e.g. `aclnnCast`).
    pub name: [c_char; 64],
    /// Bytes host -> device before this launch.
    pub h2d_bytes: u64,
    /// Bytes device -> host before this launch.
    pub d2h_bytes: u64,
}

/// At most this many launches are kept in the per-launch log (the totals keep counting).
pub const COPY_LOG_CAP: usize = 1 << 16;

#[derive(Default)]
struct CopyLog {
    totals: MoehalEmuCopyStats,
    /// h2d, d2h bytes since the previous launch.
    pending: (u64, u64),
    launches: Vec<(&'static str, u64, u64)>,
}

static COPIES: Mutex<Option<CopyLog>> = Mutex::new(None);

fn with_copies<R>(f: impl FnOnce(&mut CopyLog) -> R) -> R {
    let mut g = COPIES.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(CopyLog::default))
}

fn count_copy(dst_dev: bool, src_dev: bool, n: usize) {
    let n = n as u64;
    with_copies(|c| match (dst_dev, src_dev) {
        (true, false) => {
            c.totals.h2d_bytes += n;
            c.totals.h2d_calls += 1;
            c.pending.0 += n;
        }
        (false, true) => {
            c.totals.d2h_bytes += n;
            c.totals.d2h_calls += 1;
            c.pending.1 += n;
        }
        (true, true) => c.totals.d2d_bytes += n,
        (false, false) => c.totals.h2h_bytes += n,
    });
}

fn count_launch(name: &'static str) {
    with_copies(|c| {
        c.totals.launches += 1;
        let (h, d) = std::mem::take(&mut c.pending);
        if c.launches.len() < COPY_LOG_CAP {
            c.launches.push((name, h, d));
        }
    });
}

/// Copy totals since load or the last reset (emulator extension, not a vendor symbol).
///
/// Returns 0, or `ACL_ERROR_INVALID_PARAM` when `out` is NULL.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn moehalEmuCopyStats(out: *mut MoehalEmuCopyStats) -> sys::aclError {
    if out.is_null() {
        return fail(sys::ACL_ERROR_INVALID_PARAM, "moehalEmuCopyStats: out is NULL");
    }
    let t = with_copies(|c| c.totals);
    // SAFETY: non-null, and the caller promises it is writable.
    unsafe { *out = t };
    sys::ACL_SUCCESS
}

/// Zero the copy totals and the per-launch log (emulator extension, not a vendor symbol).
#[no_mangle]
pub extern "C" fn moehalEmuCopyStatsReset() {
    with_copies(|c| *c = CopyLog::default());
}

/// The per-launch log since the last reset, oldest first: writes up to `cap` entries to `out`
/// (NULL with `cap` 0 to ask for the count) and returns how many entries the log holds (at most
/// [`COPY_LOG_CAP`]). Emulator extension, not a vendor symbol.
///
/// # Safety
/// `out` must be NULL or valid for `cap` writes.
#[no_mangle]
pub unsafe extern "C" fn moehalEmuLaunchCopies(out: *mut MoehalEmuLaunchCopies, cap: usize) -> usize {
    with_copies(|c| {
        if !out.is_null() {
            for (i, &(name, h, d)) in c.launches.iter().take(cap).enumerate() {
                let mut e = MoehalEmuLaunchCopies {
                    name: [0; 64],
                    h2d_bytes: h,
                    d2h_bytes: d,
                };
                for (dst, b) in e.name.iter_mut().zip(name.bytes().take(63)) {
                    *dst = b as c_char;
                }
                // SAFETY: i < cap, and the caller promises `cap` writable entries.
                unsafe { out.add(i).write(e) };
            }
        }
        c.launches.len()
    })
}

thread_local! {
    static CUR_DEV: Cell<Option<i32>> = const { Cell::new(None) };
    static LAST_MSG: RefCell<Option<CString>> = const { RefCell::new(None) };
}

struct Guard(MutexGuard<'static, Option<State>>);
impl std::ops::Deref for Guard {
    type Target = State;
    fn deref(&self) -> &State {
        self.0.as_ref().expect("state initialised in lock()")
    }
}
impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut State {
        self.0.as_mut().expect("state initialised in lock()")
    }
}

fn lock() -> Guard {
    let mut g = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if g.is_none() {
        *g = Some(State {
            next_handle: 0x1000,
            ..State::default()
        });
    }
    Guard(g)
}

fn set_msg(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_MSG.with(|m| *m.borrow_mut() = Some(c));
}

fn fail(code: i32, msg: impl AsRef<str>) -> i32 {
    set_msg(&format!("[moehal-ascend-emu] error {code}: {}", msg.as_ref()));
    code
}

fn fail_t((code, msg): Fail) -> i32 {
    fail(code, msg)
}

fn need_device(what: &str) -> Result<i32, i32> {
    match CUR_DEV.with(|d| d.get()) {
        Some(d) => Ok(d),
        None => Err(fail(
            sys::ACL_ERROR_RT_CONTEXT_NULL,
            format!("{what}: no current device or context on this thread (call aclrtSetDevice)"),
        )),
    }
}

impl State {
    fn handle(&mut self) -> usize {
        self.next_handle += 16;
        self.next_handle
    }
    /// The allocation holding `[p, p + len)`, if it is all device memory.
    fn find(&self, p: usize, len: usize) -> Option<(usize, usize)> {
        let (&base, a) = self.allocs.range(..=p).next_back()?;
        let end = p.checked_add(len)?;
        (end <= base + a.cap).then_some((base, a.cap))
    }
    fn is_device(&self, p: usize) -> bool {
        self.find(p, 0).is_some()
    }
    fn cap() -> Option<usize> {
        std::env::var(MEM_CAP_ENV).ok().and_then(|v| v.trim().parse().ok())
    }
    /// Check a tensor's storage: format, device memory, 32-byte aligned base, view inside storage.
    /// `nz_ok` admits `ACL_FORMAT_FRACTAL_NZ` (the A8W8 GroupedMatmul weight, RULES.md NZ1), whose
    /// storage dims describe the NZ layout.
    fn check_tensor(&self, d: &Desc, what: &str, nz_ok: bool) -> Result<(), Fail> {
        let bad = |m: String| (sys::ACLNN_ERR_PARAM_INVALID, format!("{what}: {m}"));
        let esz = elem_size(d.dtype).ok_or_else(|| bad(format!("data type {} not supported", d.dtype)))?;
        // Every tensor of the emulated ops is "要求为ND" (each op page's parameter table), except the
        // A8W8 GroupedMatmulV4 weight, which may be FRACTAL_NZ (RULES.md NZ1; the op checks its
        // storage dims). Other private formats: NOT EMULATED.
        let nz = nz_ok && d.format == sys::ACL_FORMAT_FRACTAL_NZ;
        if d.format != sys::ACL_FORMAT_ND && !nz {
            return Err(bad(format!("format {} is not ACL_FORMAT_ND (2)", d.format)));
        }
        let n = d.storage_len() as usize;
        // The view must lie inside the storage. UNDOCUMENTED as a check; reading past the storage is
        // undefined on hardware, so refusing it hides nothing the backend could rely on.
        if d.numel() > 0 {
            let last = d.offset + d.dims.iter().zip(&d.strides).map(|(x, s)| (x - 1) * s).sum::<i64>();
            if last >= n as i64 {
                return Err(bad(format!(
                    "view {:?} strides {:?} offset {} exceeds storage {:?}",
                    d.dims, d.strides, d.offset, d.storage
                )));
            }
        }
        if n == 0 {
            return Ok(());
        }
        // tensorData "必须32字节对齐，否则可能会出现未定义错误" ([HA canncommercial/900
        // operatorlist_00019]): the storage BASE address. Whether the view start
        // `data + offset * elem_size` must also be aligned is UNDOCUMENTED (audit P9): lenient, an
        // element offset from an aligned base is accepted (scripts/ascend/probe.sh checks it).
        if d.data % 32 != 0 {
            return Err(bad(format!("tensor data {:#x} is not 32-byte aligned", d.data)));
        }
        if self.find(d.data, n * esz).is_none() {
            return Err(bad(format!(
                "tensor data {:#x}..+{} is not (all) device memory",
                d.data,
                n * esz
            )));
        }
        Ok(())
    }
    fn desc(&self, t: *const sys::aclTensor, what: &str) -> Result<Option<Desc>, Fail> {
        if t.is_null() {
            return Ok(None);
        }
        match self.tensors.get(&(t as usize)) {
            Some(d) => Ok(Some(d.clone())),
            None => Err((
                sys::ACLNN_ERR_PARAM_INVALID,
                format!("{what}: {t:p} is not a live aclTensor"),
            )),
        }
    }
    fn list(&self, l: *const sys::aclTensorList, what: &str) -> Result<Option<Vec<Desc>>, Fail> {
        if l.is_null() {
            return Ok(None);
        }
        let Some(items) = self.lists.get(&(l as usize)) else {
            return Err((
                sys::ACLNN_ERR_PARAM_INVALID,
                format!("{what}: {l:p} is not a live aclTensorList"),
            ));
        };
        Ok(Some(items.iter().map(|t| self.tensors[t].clone()).collect()))
    }
}

/// Copy a tensor's storage to the host. Caller holds the lock and has checked the tensor.
fn load(d: &Desc) -> HostTensor {
    let n = d.storage_len().max(0) as usize * elem_size(d.dtype).unwrap_or(1);
    let mut bytes = vec![0u8; n];
    if n > 0 {
        // SAFETY: `check_tensor` verified that [data, data + n) lies inside a live allocation made by
        // `aclrtMalloc`, and the state lock is held, so it cannot be freed concurrently.
        unsafe { std::ptr::copy_nonoverlapping(d.data as *const u8, bytes.as_mut_ptr(), n) };
    }
    HostTensor { d: d.clone(), bytes }
}

fn store(t: &HostTensor) {
    if !t.bytes.is_empty() {
        // SAFETY: as in `load`: the range was checked to be inside a live device allocation, under the lock.
        unsafe { std::ptr::copy_nonoverlapping(t.bytes.as_ptr(), t.d.data as *mut u8, t.bytes.len()) };
    }
}

// ============================================================================= runtime

/// `aclInit`: once per process; a second call returns `ACL_ERROR_REPEAT_INITIALIZE` (100002)
/// (\[RT\] acl_rt.h L1091, acl.cpp L382-391; fact sheet §2).
#[no_mangle]
pub extern "C" fn aclInit(_config_path: *const c_char) -> sys::aclError {
    // A run-time MOEHAL_ACL_EMU_CANN is a build-time variable: say so once instead of ignoring it.
    static NOTE: std::sync::Once = std::sync::Once::new();
    NOTE.call_once(|| {
        let v = std::env::var(crate::profile::ENV).ok();
        if let Some(note) = crate::profile::runtime_profile_note(v.as_deref()) {
            eprintln!("{note}");
        }
    });
    let mut s = lock();
    if s.init {
        return fail(sys::ACL_ERROR_REPEAT_INITIALIZE, "aclInit: already initialised");
    }
    s.init = true;
    sys::ACL_SUCCESS
}

/// `aclFinalize`: 100001 `ACL_ERROR_UNINITIALIZE` when not initialised (UNDOCUMENTED code, emulator
/// choice; the backend must not rely on it).
#[no_mangle]
pub extern "C" fn aclFinalize() -> sys::aclError {
    let mut s = lock();
    if !s.init {
        return fail(sys::ACL_ERROR_UNINITIALIZE, "aclFinalize: not initialised");
    }
    s.init = false;
    sys::ACL_SUCCESS
}

/// `aclGetRecentErrMsg`: the last error message of this thread, or NULL.
#[no_mangle]
pub extern "C" fn aclGetRecentErrMsg() -> *const c_char {
    LAST_MSG.with(|m| m.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
}

static SOC: &[u8] = concat!("Ascend910B2-emu", "\0").as_bytes();

/// `aclrtGetSocName`: NULL before `aclInit` ("NULL on failure", \[RT\] acl_base_rt.h; fact sheet §2).
#[no_mangle]
pub extern "C" fn aclrtGetSocName() -> *const c_char {
    if lock().init {
        SOC.as_ptr().cast()
    } else {
        std::ptr::null()
    }
}

/// `aclrtSetDevice`: binds the device to the calling thread ("per thread", \[RT\] L1549); an unknown id
/// gives 107001 `ACL_ERROR_RT_INVALID_DEVICEID` (\[RT\] rt_error_codes.h).
#[no_mangle]
pub extern "C" fn aclrtSetDevice(device_id: i32) -> sys::aclError {
    if !lock().init {
        return fail(sys::ACL_ERROR_UNINITIALIZE, "aclrtSetDevice before aclInit");
    }
    if !(0..DEVICES).contains(&device_id) {
        return fail(
            sys::ACL_ERROR_RT_INVALID_DEVICEID,
            format!("aclrtSetDevice: no device {device_id}"),
        );
    }
    CUR_DEV.with(|d| d.set(Some(device_id)));
    sys::ACL_SUCCESS
}

/// `aclrtResetDevice`: unbinds the device from the calling thread.
#[no_mangle]
pub extern "C" fn aclrtResetDevice(device_id: i32) -> sys::aclError {
    if !(0..DEVICES).contains(&device_id) {
        return fail(
            sys::ACL_ERROR_RT_INVALID_DEVICEID,
            format!("aclrtResetDevice: no device {device_id}"),
        );
    }
    CUR_DEV.with(|d| {
        if d.get() == Some(device_id) {
            d.set(None)
        }
    });
    sys::ACL_SUCCESS
}

/// `aclrtGetDevice`.
///
/// # Safety
/// `device_id` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aclrtGetDevice(device_id: *mut i32) -> sys::aclError {
    let d = match need_device("aclrtGetDevice") {
        Ok(d) => d,
        Err(e) => return e,
    };
    if device_id.is_null() {
        return fail(sys::ACL_ERROR_INVALID_PARAM, "aclrtGetDevice: null deviceId");
    }
    // SAFETY: non-null, and the caller promises it is writable.
    unsafe { *device_id = d };
    sys::ACL_SUCCESS
}

/// `aclrtGetDeviceCount`.
///
/// # Safety
/// `count` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aclrtGetDeviceCount(count: *mut u32) -> sys::aclError {
    if !lock().init {
        return fail(sys::ACL_ERROR_UNINITIALIZE, "aclrtGetDeviceCount before aclInit");
    }
    if count.is_null() {
        return fail(sys::ACL_ERROR_INVALID_PARAM, "aclrtGetDeviceCount: null count");
    }
    // SAFETY: non-null, and the caller promises it is writable.
    unsafe { *count = DEVICES as u32 };
    sys::ACL_SUCCESS
}

/// `aclrtSynchronizeDevice`: everything ran at launch, so only the thread check remains.
#[no_mangle]
pub extern "C" fn aclrtSynchronizeDevice() -> sys::aclError {
    match need_device("aclrtSynchronizeDevice") {
        Ok(_) => sys::ACL_SUCCESS,
        Err(e) => e,
    }
}

/// `aclrtCreateContext`: creates a context on `device_id` and makes it current on this thread.
///
/// # Safety
/// `context` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aclrtCreateContext(context: *mut sys::aclrtContext, device_id: i32) -> sys::aclError {
    let mut s = lock();
    if !s.init {
        return fail(sys::ACL_ERROR_UNINITIALIZE, "aclrtCreateContext before aclInit");
    }
    if context.is_null() {
        return fail(sys::ACL_ERROR_INVALID_PARAM, "aclrtCreateContext: null context");
    }
    if !(0..DEVICES).contains(&device_id) {
        return fail(
            sys::ACL_ERROR_RT_INVALID_DEVICEID,
            format!("aclrtCreateContext: no device {device_id}"),
        );
    }
    let h = s.handle();
    s.contexts.insert(h, device_id);
    CUR_DEV.with(|d| d.set(Some(device_id)));
    // SAFETY: non-null, and the caller promises it is writable.
    unsafe { *context = h as sys::aclrtContext };
    sys::ACL_SUCCESS
}

/// `aclrtDestroyContext`.
#[no_mangle]
pub extern "C" fn aclrtDestroyContext(context: sys::aclrtContext) -> sys::aclError {
    if lock().contexts.remove(&(context as usize)).is_none() {
        return fail(
            sys::ACL_ERROR_INVALID_PARAM,
            format!("aclrtDestroyContext: {context:p} is not a context"),
        );
    }
    sys::ACL_SUCCESS
}

/// `aclrtSetCurrentContext`: binds the context (and its device) to this thread.
#[no_mangle]
pub extern "C" fn aclrtSetCurrentContext(context: sys::aclrtContext) -> sys::aclError {
    let dev = lock().contexts.get(&(context as usize)).copied();
    match dev {
        Some(d) => {
            CUR_DEV.with(|c| c.set(Some(d)));
            sys::ACL_SUCCESS
        }
        None => fail(
            sys::ACL_ERROR_INVALID_PARAM,
            format!("aclrtSetCurrentContext: {context:p} is not a context"),
        ),
    }
}

/// `aclrtGetCurrentContext`.
///
/// # Safety
/// `context` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aclrtGetCurrentContext(context: *mut sys::aclrtContext) -> sys::aclError {
    if let Err(e) = need_device("aclrtGetCurrentContext") {
        return e;
    }
    if context.is_null() {
        return fail(sys::ACL_ERROR_INVALID_PARAM, "aclrtGetCurrentContext: null context");
    }
    let s = lock();
    let dev = CUR_DEV.with(|d| d.get());
    let h = s.contexts.iter().find(|(_, d)| Some(**d) == dev).map_or(0, |(h, _)| *h);
    // SAFETY: non-null, and the caller promises it is writable.
    unsafe { *context = h as sys::aclrtContext };
    sys::ACL_SUCCESS
}

/// `aclrtCreateStream`: needs a current device/context, else 107002 (fact sheet §6 #2-3).
///
/// # Safety
/// `stream` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aclrtCreateStream(stream: *mut sys::aclrtStream) -> sys::aclError {
    if let Err(e) = need_device("aclrtCreateStream") {
        return e;
    }
    if stream.is_null() {
        return fail(sys::ACL_ERROR_INVALID_PARAM, "aclrtCreateStream: null stream");
    }
    let mut s = lock();
    let h = s.handle();
    s.streams.insert(h);
    // SAFETY: non-null, and the caller promises it is writable.
    unsafe { *stream = h as sys::aclrtStream };
    sys::ACL_SUCCESS
}

/// `aclrtDestroyStream`.
#[no_mangle]
pub extern "C" fn aclrtDestroyStream(stream: sys::aclrtStream) -> sys::aclError {
    if let Err(e) = need_device("aclrtDestroyStream") {
        return e;
    }
    if !lock().streams.remove(&(stream as usize)) {
        return fail(
            sys::ACL_ERROR_INVALID_PARAM,
            format!("aclrtDestroyStream: {stream:p} is not a stream"),
        );
    }
    sys::ACL_SUCCESS
}

fn check_stream(s: &State, stream: sys::aclrtStream, what: &str) -> Result<(), i32> {
    if stream.is_null() || s.streams.contains(&(stream as usize)) {
        Ok(())
    } else {
        Err(fail(
            sys::ACL_ERROR_INVALID_PARAM,
            format!("{what}: {stream:p} is not a stream"),
        ))
    }
}

/// `aclrtSynchronizeStream`.
#[no_mangle]
pub extern "C" fn aclrtSynchronizeStream(stream: sys::aclrtStream) -> sys::aclError {
    if let Err(e) = need_device("aclrtSynchronizeStream") {
        return e;
    }
    match check_stream(&lock(), stream, "aclrtSynchronizeStream") {
        Ok(()) => sys::ACL_SUCCESS,
        Err(e) => e,
    }
}

/// `aclrtMalloc`: size 0 refused; rounds the size up to 32 bytes (the real runtime adds another
/// 32 B of padding: \[HA canncommercial/800 aclcppdevg_03_0095\]; the emulator is stricter); 64-byte
/// aligned base; fails with 207001 past `MOEHAL_ACL_EMU_MEM_CAP` (emulator feature). Needs a
/// current device (107002, fact sheet §6 #2).
///
/// # Safety
/// `dev_ptr` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aclrtMalloc(
    dev_ptr: *mut *mut c_void,
    size: usize,
    _policy: sys::aclrtMemMallocPolicy,
) -> sys::aclError {
    if let Err(e) = need_device("aclrtMalloc") {
        return e;
    }
    if dev_ptr.is_null() || size == 0 {
        return fail(
            sys::ACL_ERROR_INVALID_PARAM,
            format!("aclrtMalloc: null devPtr or zero size ({size})"),
        );
    }
    let Some(cap) = size.checked_add(31).map(|v| v & !31) else {
        return fail(sys::ACL_ERROR_INVALID_PARAM, "aclrtMalloc: size overflows");
    };
    let mut s = lock();
    if let Some(limit) = State::cap() {
        if s.used + cap > limit {
            return fail(
                sys::ACL_ERROR_RT_MEMORY_ALLOCATION,
                format!(
                    "aclrtMalloc: out of device memory ({} in use + {cap} > cap {limit})",
                    s.used
                ),
            );
        }
    }
    let Ok(layout) = std::alloc::Layout::from_size_align(cap, 64) else {
        return fail(sys::ACL_ERROR_INVALID_PARAM, "aclrtMalloc: bad size");
    };
    // SAFETY: `layout` has a non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return fail(
            sys::ACL_ERROR_RT_MEMORY_ALLOCATION,
            format!("aclrtMalloc: host allocation of {cap} bytes failed"),
        );
    }
    s.allocs.insert(p as usize, Alloc { cap });
    s.used += cap;
    // SAFETY: non-null, and the caller promises it is writable.
    unsafe { *dev_ptr = p.cast() };
    sys::ACL_SUCCESS
}

/// `aclrtFree`: `dev_ptr` must be the start of a live allocation (UNDOCUMENTED error code 100000;
/// freeing anything else is undefined on hardware).
#[no_mangle]
pub extern "C" fn aclrtFree(dev_ptr: *mut c_void) -> sys::aclError {
    if let Err(e) = need_device("aclrtFree") {
        return e;
    }
    let mut s = lock();
    let Some(a) = s.allocs.remove(&(dev_ptr as usize)) else {
        return fail(
            sys::ACL_ERROR_INVALID_PARAM,
            format!("aclrtFree: {dev_ptr:p} is not the start of a device allocation"),
        );
    };
    s.used -= a.cap;
    let layout = std::alloc::Layout::from_size_align(a.cap, 64).expect("layout was valid at allocation");
    // SAFETY: the pointer came from `alloc_zeroed` with this layout and was just removed from the
    // registry, so it is freed once.
    unsafe { std::alloc::dealloc(dev_ptr.cast(), layout) };
    sys::ACL_SUCCESS
}

/// `aclrtMemcpy`: checks `count <= destMax` (100000; inferred, fact sheet §2), that each side is
/// device or host memory as `kind` says (`ACL_MEMCPY_DEFAULT` infers it; the real runtime treats
/// kind as "reserved" and infers it: \[HA 800alpha002 aclcppdevg_03_0105\], so the emulator is
/// stricter), and that device ranges are in bounds. Copies immediately, no stream sync (same page).
///
/// # Safety
/// Host-side pointers must be valid for `count` bytes.
#[no_mangle]
pub unsafe extern "C" fn aclrtMemcpy(
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: sys::aclrtMemcpyKind,
) -> sys::aclError {
    if let Err(e) = need_device("aclrtMemcpy") {
        return e;
    }
    if count > dest_max {
        return fail(
            sys::ACL_ERROR_INVALID_PARAM,
            format!("aclrtMemcpy: count {count} > destMax {dest_max}"),
        );
    }
    if count == 0 {
        return sys::ACL_SUCCESS;
    }
    if dst.is_null() || src.is_null() {
        return fail(sys::ACL_ERROR_INVALID_PARAM, "aclrtMemcpy: null pointer");
    }
    let s = lock();
    let (d_dev, s_dev) = (s.is_device(dst as usize), s.is_device(src as usize));
    let (want_d, want_s) = match kind {
        sys::ACL_MEMCPY_HOST_TO_HOST => (false, false),
        sys::ACL_MEMCPY_HOST_TO_DEVICE => (true, false),
        sys::ACL_MEMCPY_DEVICE_TO_HOST => (false, true),
        sys::ACL_MEMCPY_DEVICE_TO_DEVICE => (true, true),
        sys::ACL_MEMCPY_DEFAULT => (d_dev, s_dev),
        k => return fail(sys::ACL_ERROR_INVALID_PARAM, format!("aclrtMemcpy: unknown kind {k}")),
    };
    let side = |is: bool| if is { "device" } else { "host" };
    if d_dev != want_d || s_dev != want_s {
        return fail(
            sys::ACL_ERROR_INVALID_PARAM,
            format!(
                "aclrtMemcpy kind {kind}: dst {dst:p} is {} memory and src {src:p} is {} memory",
                side(d_dev),
                side(s_dev)
            ),
        );
    }
    if want_d && s.find(dst as usize, dest_max).is_none() {
        return fail(
            sys::ACL_ERROR_INVALID_PARAM,
            format!("aclrtMemcpy: dst {dst:p} + destMax {dest_max} runs past its device allocation"),
        );
    }
    if want_s && s.find(src as usize, count).is_none() {
        return fail(
            sys::ACL_ERROR_INVALID_PARAM,
            format!("aclrtMemcpy: src {src:p} + {count} runs past its device allocation"),
        );
    }
    // SAFETY: device ranges were checked against the registry (lock held); host ranges are the
    // caller's promise. `copy` tolerates overlap.
    unsafe { std::ptr::copy(src.cast::<u8>(), dst.cast::<u8>(), count) };
    drop(s);
    count_copy(d_dev, s_dev, count);
    sys::ACL_SUCCESS
}

/// `aclrtMemset` on device memory, `count <= maxCount`, immediate (\[HA canncommercial/800
/// aclcppdevg_03_0103\]; host addresses are also documented, NOT EMULATED). Not exported by the
/// `omit-symbol-aclrtMemset` variant.
///
/// # Safety
/// None beyond the checks (device memory only).
#[cfg_attr(not(feature = "omit-symbol-aclrtMemset"), no_mangle)]
pub unsafe extern "C" fn aclrtMemset(
    dev_ptr: *mut c_void,
    max_count: usize,
    value: i32,
    count: usize,
) -> sys::aclError {
    if let Err(e) = need_device("aclrtMemset") {
        return e;
    }
    if count > max_count {
        return fail(
            sys::ACL_ERROR_INVALID_PARAM,
            format!("aclrtMemset: count {count} > maxCount {max_count}"),
        );
    }
    let s = lock();
    if s.find(dev_ptr as usize, max_count).is_none() {
        return fail(
            sys::ACL_ERROR_INVALID_PARAM,
            format!("aclrtMemset: {dev_ptr:p} + {max_count} is not (all) device memory"),
        );
    }
    // SAFETY: the range is inside a live device allocation (lock held).
    unsafe { std::ptr::write_bytes(dev_ptr.cast::<u8>(), value as u8, count) };
    sys::ACL_SUCCESS
}

/// `aclrtGetMemInfo`: total = the cap (or 64 GiB), free = total - in use; needs a current context
/// (107002: llama.cpp#16628, fact sheet §6 #2).
///
/// # Safety
/// `free` and `total` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aclrtGetMemInfo(
    _attr: sys::aclrtMemAttr,
    free: *mut usize,
    total: *mut usize,
) -> sys::aclError {
    if let Err(e) = need_device("aclrtGetMemInfo") {
        return e;
    }
    if free.is_null() || total.is_null() {
        return fail(sys::ACL_ERROR_INVALID_PARAM, "aclrtGetMemInfo: null pointer");
    }
    let s = lock();
    let t = State::cap().unwrap_or(DEFAULT_TOTAL);
    // SAFETY: both non-null, and the caller promises they are writable.
    unsafe {
        *total = t;
        *free = t.saturating_sub(s.used);
    }
    sys::ACL_SUCCESS
}

// ============================================================================= meta objects

/// `aclCreateTensor`: records a view descriptor (see [`Desc`]). Counts are elements. Returns NULL
/// on a bad argument ("失败则返回nullptr"), with the reason in `aclGetRecentErrMsg`:
/// negative dims, strides, offset or storage dims ("取值不支持负数" / "为非负整数", [HA
/// canncommercial/81RC1 and 900 operatorlist_00019]), or more than 8 dims (UNDOCUMENTED limit of
/// this emulator, the ops here use at most 3). `stride` NULL = row-major contiguous (UNDOCUMENTED:
/// lenient). Memory, alignment and bounds are checked when an op uses the tensor (phase one).
///
/// # Safety
/// The arrays must be valid for their lengths.
#[no_mangle]
pub unsafe extern "C" fn aclCreateTensor(
    view_dims: *const i64,
    view_dims_num: u64,
    data_type: sys::aclDataType,
    stride: *const i64,
    offset: i64,
    format: sys::aclFormat,
    storage_dims: *const i64,
    storage_dims_num: u64,
    tensor_data: *mut c_void,
) -> *mut sys::aclTensor {
    if view_dims_num > 8
        || storage_dims_num > 8
        || (view_dims_num > 0 && view_dims.is_null())
        || (storage_dims_num > 0 && storage_dims.is_null())
    {
        fail(sys::ACLNN_ERR_PARAM_INVALID, "aclCreateTensor: bad dims");
        return std::ptr::null_mut();
    }
    // SAFETY: non-null (checked) and the caller promises the lengths.
    let dims = if view_dims_num == 0 {
        vec![]
    } else {
        unsafe { std::slice::from_raw_parts(view_dims, view_dims_num as usize) }.to_vec()
    };
    // SAFETY: as above.
    let storage = if storage_dims_num == 0 {
        vec![]
    } else {
        unsafe { std::slice::from_raw_parts(storage_dims, storage_dims_num as usize) }.to_vec()
    };
    let strides = if stride.is_null() {
        let mut st = vec![1i64; dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            st[i] = st[i + 1] * dims[i + 1].max(1);
        }
        st
    } else {
        // SAFETY: non-null; one stride per view dim, the caller's promise.
        unsafe { std::slice::from_raw_parts(stride, dims.len()) }.to_vec()
    };
    if dims.iter().chain(&strides).chain(&storage).any(|&v| v < 0) || offset < 0 {
        fail(
            sys::ACLNN_ERR_PARAM_INVALID,
            format!(
                "aclCreateTensor: negative value in dims {dims:?} / strides {strides:?} / offset {offset} / storage {storage:?}"
            ),
        );
        return std::ptr::null_mut();
    }
    if elem_size(data_type).is_none() {
        fail(
            sys::ACLNN_ERR_PARAM_INVALID,
            format!("aclCreateTensor: data type {data_type} not supported"),
        );
        return std::ptr::null_mut();
    }
    let d = Desc {
        dims,
        strides,
        offset,
        dtype: data_type,
        format,
        storage,
        data: tensor_data as usize,
    };
    let mut s = lock();
    let h = s.handle();
    s.tensors.insert(h, d);
    h as *mut sys::aclTensor
}

/// `aclDestroyTensor`: not for tensors owned by a tensor list.
#[no_mangle]
pub extern "C" fn aclDestroyTensor(tensor: *const sys::aclTensor) -> sys::aclnnStatus {
    let mut s = lock();
    let h = tensor as usize;
    if s.owned.contains(&h) {
        return fail(
            sys::ACLNN_ERR_PARAM_INVALID,
            format!("aclDestroyTensor: {tensor:p} belongs to an aclTensorList (destroyed with the list)"),
        );
    }
    if s.tensors.remove(&h).is_none() {
        return fail(
            sys::ACLNN_ERR_PARAM_INVALID,
            format!("aclDestroyTensor: {tensor:p} is not a live aclTensor"),
        );
    }
    sys::ACLNN_SUCCESS
}

/// `aclCreateIntArray`: copies the host values.
///
/// # Safety
/// `value` must be valid for `size` elements.
#[no_mangle]
pub unsafe extern "C" fn aclCreateIntArray(value: *const i64, size: u64) -> *mut sys::aclIntArray {
    if value.is_null() && size > 0 {
        fail(sys::ACLNN_ERR_PARAM_NULLPTR, "aclCreateIntArray: null value");
        return std::ptr::null_mut();
    }
    // SAFETY: non-null, the caller promises `size` elements.
    let v = if size == 0 {
        vec![]
    } else {
        unsafe { std::slice::from_raw_parts(value, size as usize) }.to_vec()
    };
    let mut s = lock();
    let h = s.handle();
    s.int_arrays.insert(h, v);
    h as *mut sys::aclIntArray
}

/// `aclDestroyIntArray`.
#[no_mangle]
pub extern "C" fn aclDestroyIntArray(array: *const sys::aclIntArray) -> sys::aclnnStatus {
    if lock().int_arrays.remove(&(array as usize)).is_none() {
        return fail(
            sys::ACLNN_ERR_PARAM_INVALID,
            format!("aclDestroyIntArray: {array:p} is not a live aclIntArray"),
        );
    }
    sys::ACLNN_SUCCESS
}

/// `aclCreateTensorList`: the list takes ownership of its tensors.
///
/// # Safety
/// `value` must be valid for `size` pointers.
#[no_mangle]
pub unsafe extern "C" fn aclCreateTensorList(
    value: *const *const sys::aclTensor,
    size: u64,
) -> *mut sys::aclTensorList {
    if value.is_null() && size > 0 {
        fail(sys::ACLNN_ERR_PARAM_NULLPTR, "aclCreateTensorList: null value");
        return std::ptr::null_mut();
    }
    // SAFETY: non-null, the caller promises `size` elements.
    let items: Vec<usize> = if size == 0 {
        vec![]
    } else {
        unsafe { std::slice::from_raw_parts(value, size as usize) }
            .iter()
            .map(|p| *p as usize)
            .collect()
    };
    let mut s = lock();
    for (i, t) in items.iter().enumerate() {
        if !s.tensors.contains_key(t) || s.owned.contains(t) || items[..i].contains(t) {
            fail(
                sys::ACLNN_ERR_PARAM_INVALID,
                format!("aclCreateTensorList: entry {i} ({t:#x}) is not a live, unowned aclTensor"),
            );
            return std::ptr::null_mut();
        }
    }
    s.owned.extend(items.iter().copied());
    let h = s.handle();
    s.lists.insert(h, items);
    h as *mut sys::aclTensorList
}

/// `aclDestroyTensorList`: also destroys the tensors in it.
#[no_mangle]
pub extern "C" fn aclDestroyTensorList(array: *const sys::aclTensorList) -> sys::aclnnStatus {
    let mut s = lock();
    let Some(items) = s.lists.remove(&(array as usize)) else {
        return fail(
            sys::ACLNN_ERR_PARAM_INVALID,
            format!("aclDestroyTensorList: {array:p} is not a live aclTensorList"),
        );
    };
    for t in items {
        s.owned.remove(&t);
        s.tensors.remove(&t);
    }
    sys::ACLNN_SUCCESS
}

/// `aclSetAclOpExecutorRepeatable`: the executor survives its launches until
/// `aclDestroyAclOpExecutor` (\[OB\] aclSetAclOpExecutorRepeatable.md; \[FS §3.2\]).
#[no_mangle]
pub extern "C" fn aclSetAclOpExecutorRepeatable(executor: *mut sys::aclOpExecutor) -> sys::aclnnStatus {
    match lock().execs.get_mut(&(executor as usize)) {
        Some(e) => {
            e.repeatable = true;
            sys::ACLNN_SUCCESS
        }
        None => fail(
            sys::ACLNN_ERR_PARAM_INVALID,
            format!("aclSetAclOpExecutorRepeatable: {executor:p} is not a live executor"),
        ),
    }
}

/// `aclDestroyAclOpExecutor`: destroys a *repeatable* executor. The docs pair it with
/// `aclSetAclOpExecutorRepeatable` ("destroys an executor set repeatable ...; must be used together
/// with it", \[HA canncommercial/800 operatorlist_00021\]); what it does to a plain executor is
/// UNDOCUMENTED, so the emulator refuses it (161002) and leaves that executor alone: the backend must
/// not rely on destroying one (audit L1).
#[no_mangle]
pub extern "C" fn aclDestroyAclOpExecutor(executor: *mut sys::aclOpExecutor) -> sys::aclnnStatus {
    let mut s = lock();
    match s.execs.get(&(executor as usize)) {
        None => fail(
            sys::ACLNN_ERR_PARAM_INVALID,
            format!("aclDestroyAclOpExecutor: {executor:p} is not a live executor"),
        ),
        Some(e) if !e.repeatable => fail(
            sys::ACLNN_ERR_PARAM_INVALID,
            format!(
                "aclDestroyAclOpExecutor: {executor:p} was not made repeatable with \
                 aclSetAclOpExecutorRepeatable (destroying a plain executor is undocumented)"
            ),
        ),
        Some(_) => {
            s.execs.remove(&(executor as usize));
            sys::ACLNN_SUCCESS
        }
    }
}

// ============================================================================= version query

/// `ACL_PKG_VERSION_MAX_SIZE` (\[HA 82RC1alpha002 / 850 aclcppdevg_03_1791 aclCANNPackageVersion\]).
pub const ACL_PKG_VERSION_MAX_SIZE: usize = 128;
/// `ACL_PKG_VERSION_PARTS_MAX_SIZE` (same page).
pub const ACL_PKG_VERSION_PARTS_MAX_SIZE: usize = 64;

/// `aclCANNPackageVersion`, laid out as documented (\[HA 850 aclcppdevg_03_1791\]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AclCannPackageVersion {
    /// Full version, e.g. `8.2.RC1`.
    pub version: [c_char; ACL_PKG_VERSION_MAX_SIZE],
    /// Major version (`8`).
    pub major_version: [c_char; ACL_PKG_VERSION_PARTS_MAX_SIZE],
    /// Minor version (`2`).
    pub minor_version: [c_char; ACL_PKG_VERSION_PARTS_MAX_SIZE],
    /// Release (`RC1`, or `0` "if it cannot be found").
    pub release_version: [c_char; ACL_PKG_VERSION_PARTS_MAX_SIZE],
    /// Patch (`0` "if it cannot be found").
    pub patch_version: [c_char; ACL_PKG_VERSION_PARTS_MAX_SIZE],
    /// Reserved (empty).
    pub reserved: [c_char; ACL_PKG_VERSION_MAX_SIZE],
}

/// `aclCANNPackageName` values (\[HA 850 aclcppdevg_03_1790\]): `ACL_PKG_NAME_CANN` = 0, RUNTIME 1,
/// COMPILER 2, HCCL 3, TOOLKIT 4, OPP 5, OPP_KERNEL 6, DRIVER 7.
pub const ACL_PKG_NAME_CANN: i32 = 0;

fn put(dst: &mut [c_char], v: &str) {
    for (d, b) in dst.iter_mut().zip(v.bytes().chain(std::iter::once(0))) {
        *d = b as c_char;
    }
}

/// `aclError aclsysGetCANNVersion(aclCANNPackageName name, aclCANNPackageVersion *version)`: the
/// documented version query (\[HA CANNCommunityEdition/900beta1 aclcppdevg_03_1789\]; present in the
/// 8.1.RC1 headers \[FS §1.4\]; deprecated in favour of 9.0's `aclsysGetVersionStr`). Reports the
/// build profile (`8.1.RC1`, `8.2.RC1`, `8.3.RC1`, `8.5.0`) for CANN, RUNTIME, TOOLKIT, OPP and
/// OPP_KERNEL; COMPILER, HCCL and DRIVER are "not installed" here, which the doc says is an error
/// (100000). Needs no `aclInit` (UNDOCUMENTED: lenient).
///
/// # Safety
/// `version` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aclsysGetCANNVersion(name: i32, version: *mut AclCannPackageVersion) -> sys::aclError {
    if version.is_null() {
        return fail(sys::ACL_ERROR_INVALID_PARAM, "aclsysGetCANNVersion: null version");
    }
    if !matches!(name, 0 | 1 | 4 | 5 | 6) {
        return fail(
            sys::ACL_ERROR_INVALID_PARAM,
            format!("aclsysGetCANNVersion: package {name} is not installed in the emulator"),
        );
    }
    let full = crate::profile::version_string();
    let mut parts = full.split('.');
    let (major, minor, rel) = (
        parts.next().unwrap_or("0"),
        parts.next().unwrap_or("0"),
        parts.next().unwrap_or("0"),
    );
    let mut v = AclCannPackageVersion {
        version: [0; ACL_PKG_VERSION_MAX_SIZE],
        major_version: [0; ACL_PKG_VERSION_PARTS_MAX_SIZE],
        minor_version: [0; ACL_PKG_VERSION_PARTS_MAX_SIZE],
        release_version: [0; ACL_PKG_VERSION_PARTS_MAX_SIZE],
        patch_version: [0; ACL_PKG_VERSION_PARTS_MAX_SIZE],
        reserved: [0; ACL_PKG_VERSION_MAX_SIZE],
    };
    put(&mut v.version, full);
    put(&mut v.major_version, major);
    put(&mut v.minor_version, minor);
    put(&mut v.release_version, rel);
    put(&mut v.patch_version, "0");
    // SAFETY: non-null, and the caller promises it is writable.
    unsafe { *version = v };
    sys::ACL_SUCCESS
}

// ============================================================================= two-phase ops

/// Finish phase one: check the thread, every tensor's memory, then hand out the executor.
///
/// # Safety
/// `ws` and `exec` must be NULL or writable.
unsafe fn phase_one(
    s: &mut State,
    op: Result<Op, Fail>,
    ws: *mut u64,
    exec: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    if let Err(e) = need_device("aclnn phase one") {
        return e;
    }
    if ws.is_null() || exec.is_null() {
        return fail(
            sys::ACLNN_ERR_PARAM_NULLPTR,
            "workspaceSize or executor is a null pointer",
        );
    }
    let op = match op {
        Ok(op) => op,
        Err(f) => return fail_t(f),
    };
    let (ins, outs) = op.tensors();
    for (i, d) in ins.iter().chain(outs.iter()).enumerate() {
        if let Err(f) = s.check_tensor(d, &format!("{}: tensor {i}", op.launch_name()), op.nz_allowed(d)) {
            return fail_t(f);
        }
    }
    let size = op.workspace();
    let h = s.handle();
    s.execs.insert(
        h,
        Exec {
            op,
            ws: size,
            repeatable: false,
        },
    );
    // SAFETY: both non-null, and the caller promises they are writable.
    unsafe {
        *ws = size;
        *exec = h as *mut sys::aclOpExecutor;
    }
    sys::ACLNN_SUCCESS
}

/// Phase two: consume the executor (single use), check workspace and stream, run on the host.
fn launch(
    name: &'static str,
    workspace: *mut c_void,
    workspace_size: u64,
    executor: *mut sys::aclOpExecutor,
    stream: sys::aclrtStream,
) -> sys::aclnnStatus {
    if let Err(e) = need_device(name) {
        return e;
    }
    let mut s = lock();
    if let Err(e) = check_stream(&s, stream, name) {
        return e;
    }
    match s.execs.get(&(executor as usize)) {
        None => {
            return fail(
                sys::ACLNN_ERR_PARAM_INVALID,
                format!("{name}: {executor:p} is not a live executor (executors are single-use)"),
            )
        }
        Some(ex) if ex.op.launch_name() != name => {
            return fail(
                sys::ACLNN_ERR_PARAM_INVALID,
                format!("{name}: executor was made for {}", ex.op.launch_name()),
            );
        }
        Some(_) => {}
    }
    // A launch consumes a plain executor, whatever its outcome (single use, [FS §3.2] two-phase
    // convention); a repeatable one stays for the next launch ([OB] aclSetAclOpExecutorRepeatable.md).
    let ex = match s.execs.get(&(executor as usize)) {
        Some(e) if e.repeatable => Exec {
            op: e.op.clone(),
            ws: e.ws,
            repeatable: true,
        },
        _ => match s.execs.remove(&(executor as usize)) {
            Some(e) => e,
            None => return fail(sys::ACLNN_ERR_INNER, format!("{name}: executor vanished")),
        },
    };
    if ex.ws > 0 && (workspace_size < ex.ws || s.find(workspace as usize, ex.ws as usize).is_none()) {
        return fail(
            sys::ACLNN_ERR_PARAM_INVALID,
            format!(
                "{name}: workspace {workspace:p} ({workspace_size} bytes) is not {} bytes of device memory",
                ex.ws
            ),
        );
    }
    count_launch(name);
    let (ins, outs) = ex.op.tensors();
    // Memory may have been freed since phase one: check again.
    for d in ins.iter().chain(outs.iter()) {
        if let Err(f) = s.check_tensor(d, name, ex.op.nz_allowed(d)) {
            return fail(sys::ACLNN_ERR_RUNTIME_ERROR, f.1);
        }
    }
    let host_in: Vec<HostTensor> = ins.iter().map(|d| load(d)).collect();
    let mut host_out: Vec<HostTensor> = outs.iter().map(|d| load(d)).collect();
    if let Err(f) = ex.op.run(&host_in, &mut host_out) {
        return fail_t(f);
    }
    for t in &host_out {
        store(t);
    }
    // aclnnTransMatmulWeight "刷新" the caller's tensor: it now describes the NZ form (RULES.md NZ5).
    if let Op::TransNz { handle, nz_storage, .. } = &ex.op {
        if let Some(d) = s.tensors.get_mut(handle) {
            d.format = sys::ACL_FORMAT_FRACTAL_NZ;
            d.storage = nz_storage.clone();
        }
    }
    sys::ACLNN_SUCCESS
}

macro_rules! launcher {
    ($($name:ident),* $(,)?) => {$(
        #[doc = concat!("`", stringify!($name), "`: phase two (single-use executor).")]
        #[no_mangle]
        pub extern "C" fn $name(workspace: *mut c_void, workspace_size: u64, executor: *mut sys::aclOpExecutor, stream: sys::aclrtStream) -> sys::aclnnStatus {
            launch(stringify!($name), workspace, workspace_size, executor, stream)
        }
    )*};
}
launcher!(
    aclnnGroupedMatmulV3,
    aclnnMoeGatingTopKSoftmax,
    aclnnMoeInitRoutingV2,
    aclnnMoeFinalizeRoutingV2,
    aclnnEmbedding,
    aclnnGatherV2,
    aclnnIndexSelect,
    aclnnCast,
    aclnnSwiGlu,
    aclnnInplaceMul
);

/// `aclnnMoeGatingTopK`: phase two. Exported from CANN 8.2 only (profile cfg `cann_has_gating_topk`).
#[cfg_attr(cann_has_gating_topk, no_mangle)]
pub extern "C" fn aclnnMoeGatingTopK(
    workspace: *mut c_void,
    workspace_size: u64,
    executor: *mut sys::aclOpExecutor,
    stream: sys::aclrtStream,
) -> sys::aclnnStatus {
    launch("aclnnMoeGatingTopK", workspace, workspace_size, executor, stream)
}

/// `aclnnMoeInitRoutingV3`: phase two. Exported from CANN 8.2 only (profile cfg `cann_has_v3`).
#[cfg_attr(cann_has_v3, no_mangle)]
pub extern "C" fn aclnnMoeInitRoutingV3(
    workspace: *mut c_void,
    workspace_size: u64,
    executor: *mut sys::aclOpExecutor,
    stream: sys::aclrtStream,
) -> sys::aclnnStatus {
    launch("aclnnMoeInitRoutingV3", workspace, workspace_size, executor, stream)
}

/// `aclnnGroupedMatmulV4`: phase two (single-use executor).
#[cfg_attr(not(feature = "omit-symbol-aclnnGroupedMatmulV4"), no_mangle)]
pub extern "C" fn aclnnGroupedMatmulV4(
    workspace: *mut c_void,
    workspace_size: u64,
    executor: *mut sys::aclOpExecutor,
    stream: sys::aclrtStream,
) -> sys::aclnnStatus {
    launch("aclnnGroupedMatmulV4", workspace, workspace_size, executor, stream)
}

fn reject_list(s: &State, l: *const sys::aclTensorList, what: &str) -> Result<(), Fail> {
    match s.list(l, what)? {
        Some(v) if !v.is_empty() => Err((
            sys::ACLNN_ERR_PARAM_INVALID,
            format!("{what}: quantisation/activation inputs are not emulated"),
        )),
        _ => Ok(()),
    }
}

/// `aclnnGroupedMatmulV4GetWorkspaceSize` (single tensors, groupType 0): float (G*), or A8W8 with
/// INT8 x — scaleOptional / perTokenScaleOptional taken (RULES.md QG*).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnGroupedMatmulV4GetWorkspaceSize(
    x: *const sys::aclTensorList,
    weight: *const sys::aclTensorList,
    bias: *const sys::aclTensorList,
    scale: *const sys::aclTensorList,
    offset: *const sys::aclTensorList,
    aq_scale: *const sys::aclTensorList,
    aq_offset: *const sys::aclTensorList,
    per_token: *const sys::aclTensorList,
    group_list: *const sys::aclTensor,
    act_in: *const sys::aclTensorList,
    act_qs: *const sys::aclTensorList,
    act_qo: *const sys::aclTensorList,
    split_item: i64,
    group_type: i64,
    group_list_type: i64,
    act_type: i64,
    out: *mut sys::aclTensorList,
    act_out: *mut sys::aclTensorList,
    dyn_q_out: *mut sys::aclTensorList,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let op = (|| {
        for (l, w) in [
            (offset, "offset"),
            (aq_scale, "antiquantScale"),
            (aq_offset, "antiquantOffset"),
            (act_in, "activationInput"),
            (act_qs, "activationQuantScale"),
            (act_qo, "activationQuantOffset"),
            (act_out, "activationFeatureOut"),
            (dyn_q_out, "dynQuantScaleOut"),
        ] {
            reject_list(&s, l, w)?;
        }
        let xs = s
            .list(x, "x")?
            .ok_or_else(|| (sys::ACLNN_ERR_PARAM_NULLPTR, "x is a null pointer".to_string()))?;
        let ws = s
            .list(weight, "weight")?
            .ok_or_else(|| (sys::ACLNN_ERR_PARAM_NULLPTR, "weight is a null pointer".to_string()))?;
        let ys = s
            .list(out, "out")?
            .ok_or_else(|| (sys::ACLNN_ERR_PARAM_NULLPTR, "out is a null pointer".to_string()))?;
        let b = s.list(bias, "bias")?;
        let g = s.desc(group_list, "groupList")?;
        Op::gmm(
            "aclnnGroupedMatmulV4",
            xs,
            ws,
            b,
            g,
            split_item,
            group_type,
            group_list_type,
            act_type,
            ys,
            Some((s.list(scale, "scale")?, s.list(per_token, "perTokenScale")?)),
        )
    })();
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, workspace_size, executor) }
}

/// `aclnnGroupedMatmulV3GetWorkspaceSize` (groupList cumulative).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnGroupedMatmulV3GetWorkspaceSize(
    x: *const sys::aclTensorList,
    weight: *const sys::aclTensorList,
    bias: *const sys::aclTensorList,
    scale: *const sys::aclTensorList,
    offset: *const sys::aclTensorList,
    aq_scale: *const sys::aclTensorList,
    aq_offset: *const sys::aclTensorList,
    group_list: *const sys::aclTensor,
    split_item: i64,
    group_type: i64,
    y: *const sys::aclTensorList,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let op = (|| {
        for (l, w) in [
            (scale, "scale"),
            (offset, "offset"),
            (aq_scale, "antiquantScale"),
            (aq_offset, "antiquantOffset"),
        ] {
            reject_list(&s, l, w)?;
        }
        let xs = s
            .list(x, "x")?
            .ok_or_else(|| (sys::ACLNN_ERR_PARAM_NULLPTR, "x is a null pointer".to_string()))?;
        let ws = s
            .list(weight, "weight")?
            .ok_or_else(|| (sys::ACLNN_ERR_PARAM_NULLPTR, "weight is a null pointer".to_string()))?;
        let ys = s
            .list(y, "y")?
            .ok_or_else(|| (sys::ACLNN_ERR_PARAM_NULLPTR, "y is a null pointer".to_string()))?;
        let b = s.list(bias, "bias")?;
        let g = s.desc(group_list, "groupList")?;
        Op::gmm(
            "aclnnGroupedMatmulV3",
            xs,
            ws,
            b,
            g,
            split_item,
            group_type,
            0,
            0,
            ys,
            None,
        )
    })();
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, workspace_size, executor) }
}

/// `aclnnMoeGatingTopKSoftmaxGetWorkspaceSize`.
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnMoeGatingTopKSoftmaxGetWorkspaceSize(
    x: *const sys::aclTensor,
    finished: *const sys::aclTensor,
    k: i64,
    y_out: *const sys::aclTensor,
    expert_idx_out: *const sys::aclTensor,
    row_idx_out: *const sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let op = (|| {
        Op::topk_softmax(
            s.desc(x, "x")?,
            s.desc(finished, "finished")?,
            k,
            s.desc(y_out, "yOut")?,
            s.desc(expert_idx_out, "expertIdxOut")?,
            s.desc(row_idx_out, "rowIdxOut")?,
        )
    })();
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, workspace_size, executor) }
}

/// `aclnnMoeGatingTopKGetWorkspaceSize` (exported from CANN 8.2; rules in [`Op::gating_topk`]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[cfg_attr(cann_has_gating_topk, no_mangle)]
pub unsafe extern "C" fn aclnnMoeGatingTopKGetWorkspaceSize(
    x: *const sys::aclTensor,
    bias: *const sys::aclTensor,
    k: i64,
    k_group: i64,
    group_count: i64,
    group_select_mode: i64,
    renorm: i64,
    norm_type: i64,
    out_flag: bool,
    routed_scaling_factor: f64,
    eps: f64,
    y_out: *const sys::aclTensor,
    expert_idx_out: *const sys::aclTensor,
    out_out: *const sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let p = GatingParams {
        k,
        k_group,
        group_count,
        group_mode: group_select_mode,
        norm: norm_type,
        scale: routed_scaling_factor,
        eps,
    };
    let op = (|| {
        Op::gating_topk(
            s.desc(x, "x")?,
            s.desc(bias, "bias")?,
            p,
            renorm,
            out_flag,
            s.desc(y_out, "yOut")?,
            s.desc(expert_idx_out, "expertIdxOut")?,
            s.desc(out_out, "outOut")?,
        )
    })();
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, workspace_size, executor) }
}

/// `aclnnMoeInitRoutingV2GetWorkspaceSize` (dropless; rules in [`Op::init_routing_v2`]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnMoeInitRoutingV2GetWorkspaceSize(
    x: *const sys::aclTensor,
    expert_idx: *const sys::aclTensor,
    active_num: i64,
    _expert_capacity: i64,
    expert_num: i64,
    drop_pad_mode: i64,
    count_flag: i64,
    before_capacity_flag: bool,
    expanded_x_out: *const sys::aclTensor,
    expanded_row_idx_out: *const sys::aclTensor,
    count_out: *const sys::aclTensor,
    before_capacity_out: *const sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let op = (|| {
        // expertTokensBeforeCapacityOut belongs to the drop/pad mode (NOT EMULATED).
        s.desc(before_capacity_out, "expertTokensBeforeCapacityOut")?;
        Op::init_routing_v2(
            s.desc(x, "x")?,
            s.desc(expert_idx, "expertIdx")?,
            active_num,
            expert_num,
            drop_pad_mode,
            count_flag,
            before_capacity_flag,
            s.desc(expanded_x_out, "expandedXOut")?,
            s.desc(expanded_row_idx_out, "expandedRowIdxOut")?,
            s.desc(count_out, "expertTokensCountOrCumsumOut")?,
        )
    })();
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, workspace_size, executor) }
}

/// `aclnnMoeInitRoutingV3GetWorkspaceSize` (exported from CANN 8.2; rules in
/// [`Op::init_routing_v3`]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[cfg_attr(cann_has_v3, no_mangle)]
pub unsafe extern "C" fn aclnnMoeInitRoutingV3GetWorkspaceSize(
    x: *const sys::aclTensor,
    expert_idx: *const sys::aclTensor,
    scale: *const sys::aclTensor,
    offset: *const sys::aclTensor,
    active_num: i64,
    _expert_capacity: i64,
    expert_num: i64,
    drop_pad_mode: i64,
    num_type: i64,
    num_flag: bool,
    quant_mode: i64,
    active_expert_range: *const sys::aclIntArray,
    row_idx_type: i64,
    expanded_x_out: *const sys::aclTensor,
    expanded_row_idx_out: *const sys::aclTensor,
    count_out: *const sys::aclTensor,
    expanded_scale_out: *const sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let op = (|| {
        let range = s.int_array(active_expert_range, "activeExpertRangeOptional")?;
        Op::init_routing_v3(
            s.desc(x, "x")?,
            s.desc(expert_idx, "expertIdx")?,
            s.desc(scale, "scaleOptional")?,
            s.desc(offset, "offsetOptional")?,
            active_num,
            expert_num,
            drop_pad_mode,
            num_type,
            num_flag,
            quant_mode,
            range,
            row_idx_type,
            s.desc(expanded_x_out, "expandedXOut")?,
            s.desc(expanded_row_idx_out, "expandedRowIdxOut")?,
            s.desc(count_out, "expertTokensCountOrCumsumOut")?,
            s.desc(expanded_scale_out, "expandedScaleOut")?,
        )
    })();
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, workspace_size, executor) }
}

/// `aclnnMoeFinalizeRoutingV2GetWorkspaceSize` (dropPadMode 0: column-major row index, 2: row-major).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnMoeFinalizeRoutingV2GetWorkspaceSize(
    expanded_x: *const sys::aclTensor,
    expanded_row_idx: *const sys::aclTensor,
    x1: *const sys::aclTensor,
    x2: *const sys::aclTensor,
    bias: *const sys::aclTensor,
    scales: *const sys::aclTensor,
    expert_idx: *const sys::aclTensor,
    drop_pad_mode: i64,
    out: *const sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let op = (|| {
        Op::finalize(
            s.desc(expanded_x, "expandedX")?,
            s.desc(expanded_row_idx, "expandedRowIdx")?,
            s.desc(x1, "x1")?,
            s.desc(x2, "x2")?,
            s.desc(bias, "bias")?,
            s.desc(scales, "scales")?,
            s.desc(expert_idx, "expertIdx")?,
            drop_pad_mode,
            s.desc(out, "out")?,
        )
    })();
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, workspace_size, executor) }
}

/// `aclnnEmbeddingGetWorkspaceSize`.
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnEmbeddingGetWorkspaceSize(
    weight: *const sys::aclTensor,
    indices: *const sys::aclTensor,
    out: *const sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let op = (|| {
        Op::gather(
            "aclnnEmbedding",
            s.desc(weight, "weight")?,
            0,
            s.desc(indices, "indices")?,
            s.desc(out, "out")?,
        )
    })();
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, workspace_size, executor) }
}

/// `aclnnGatherV2GetWorkspaceSize` (dim 0).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnGatherV2GetWorkspaceSize(
    self_: *const sys::aclTensor,
    dim: i64,
    index: *const sys::aclTensor,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let op = (|| {
        Op::gather(
            "aclnnGatherV2",
            s.desc(self_, "self")?,
            dim,
            s.desc(index, "index")?,
            s.desc(out, "out")?,
        )
    })();
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, workspace_size, executor) }
}

/// `aclnnStatus aclnnIndexSelectGetWorkspaceSize(const aclTensor *self, int64_t dim, const aclTensor
/// *index, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA
/// canncommercial/800 aclnnIndexSelect.md]): any dim, views accepted; rules in
/// [`crate::ops::Prim::index_select`] (RULES.md IS*).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnIndexSelectGetWorkspaceSize(
    self_: *const sys::aclTensor,
    dim: i64,
    index: *const sys::aclTensor,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        crate::ops::Prim::index_select(
            s.desc(self_, "self")?,
            dim,
            s.desc(index, "index")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prims::prim_one(build, workspace_size, executor) }
}

/// `aclnnCastGetWorkspaceSize`.
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnCastGetWorkspaceSize(
    self_: *const sys::aclTensor,
    dtype: sys::aclDataType,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let op = (|| Op::cast(s.desc(self_, "self")?, dtype, s.desc(out, "out")?))();
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, workspace_size, executor) }
}

/// `aclnnSwiGluGetWorkspaceSize` (\[HA canncommercial/800 aclnnSwiGlu.md\]; rules in [`Op::swiglu`]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnSwiGluGetWorkspaceSize(
    x: *const sys::aclTensor,
    dim: i64,
    out: *const sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let op = (|| Op::swiglu(s.desc(x, "x")?, dim, s.desc(out, "out")?))();
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, workspace_size, executor) }
}

/// `aclnnInplaceMulGetWorkspaceSize` (\[HA canncommercial/800 aclnnMul&aclnnInplaceMul.md\]; rules in
/// [`Op::inplace_mul`]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceMulGetWorkspaceSize(
    self_ref: *mut sys::aclTensor,
    other: *const sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let op = (|| Op::inplace_mul(s.desc(self_ref, "selfRef")?, s.desc(other, "other")?))();
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, workspace_size, executor) }
}

check_sig! {
    aclInit => aclInitFn, aclFinalize => aclFinalizeFn, aclGetRecentErrMsg => aclGetRecentErrMsgFn,
    aclrtGetSocName => aclrtGetSocNameFn, aclrtSetDevice => aclrtSetDeviceFn,
    aclrtResetDevice => aclrtResetDeviceFn, aclrtGetDevice => aclrtGetDeviceFn,
    aclrtGetDeviceCount => aclrtGetDeviceCountFn, aclrtSynchronizeDevice => aclrtSynchronizeDeviceFn,
    aclrtCreateContext => aclrtCreateContextFn, aclrtDestroyContext => aclrtDestroyContextFn,
    aclrtSetCurrentContext => aclrtSetCurrentContextFn, aclrtGetCurrentContext => aclrtGetCurrentContextFn,
    aclrtCreateStream => aclrtCreateStreamFn, aclrtDestroyStream => aclrtDestroyStreamFn,
    aclrtSynchronizeStream => aclrtSynchronizeStreamFn, aclrtMalloc => aclrtMallocFn,
    aclrtFree => aclrtFreeFn, aclrtMemcpy => aclrtMemcpyFn, aclrtMemset => aclrtMemsetFn,
    aclrtGetMemInfo => aclrtGetMemInfoFn,
    aclCreateTensor => aclCreateTensorFn, aclDestroyTensor => aclDestroyTensorFn,
    aclCreateIntArray => aclCreateIntArrayFn, aclDestroyIntArray => aclDestroyIntArrayFn,
    aclCreateTensorList => aclCreateTensorListFn, aclDestroyTensorList => aclDestroyTensorListFn,
    aclDestroyAclOpExecutor => aclDestroyAclOpExecutorFn,
    // aclSetAclOpExecutorRepeatable and aclsysGetCANNVersion are not in moehal_acl.h (no typedef).
    aclnnGroupedMatmulV4GetWorkspaceSize => aclnnGroupedMatmulV4GetWorkspaceSizeFn,
    aclnnGroupedMatmulV4 => aclnnGroupedMatmulV4Fn,
    aclnnGroupedMatmulV3GetWorkspaceSize => aclnnGroupedMatmulV3GetWorkspaceSizeFn,
    aclnnGroupedMatmulV3 => aclnnGroupedMatmulV3Fn,
    aclnnMoeGatingTopKSoftmaxGetWorkspaceSize => aclnnMoeGatingTopKSoftmaxGetWorkspaceSizeFn,
    aclnnMoeGatingTopKSoftmax => aclnnMoeGatingTopKSoftmaxFn,
    aclnnMoeGatingTopKGetWorkspaceSize => aclnnMoeGatingTopKGetWorkspaceSizeFn,
    aclnnMoeGatingTopK => aclnnMoeGatingTopKFn,
    aclnnMoeInitRoutingV2GetWorkspaceSize => aclnnMoeInitRoutingV2GetWorkspaceSizeFn,
    aclnnMoeInitRoutingV2 => aclnnMoeInitRoutingV2Fn,
    aclnnMoeInitRoutingV3GetWorkspaceSize => aclnnMoeInitRoutingV3GetWorkspaceSizeFn,
    aclnnMoeInitRoutingV3 => aclnnMoeInitRoutingV3Fn,
    aclnnMoeFinalizeRoutingV2GetWorkspaceSize => aclnnMoeFinalizeRoutingV2GetWorkspaceSizeFn,
    aclnnMoeFinalizeRoutingV2 => aclnnMoeFinalizeRoutingV2Fn,
    aclnnEmbeddingGetWorkspaceSize => aclnnEmbeddingGetWorkspaceSizeFn, aclnnEmbedding => aclnnEmbeddingFn,
    aclnnGatherV2GetWorkspaceSize => aclnnGatherV2GetWorkspaceSizeFn, aclnnGatherV2 => aclnnGatherV2Fn,
    aclnnIndexSelectGetWorkspaceSize => aclnnIndexSelectGetWorkspaceSizeFn, aclnnIndexSelect => aclnnIndexSelectFn,
    aclnnCastGetWorkspaceSize => aclnnCastGetWorkspaceSizeFn, aclnnCast => aclnnCastFn,
    aclnnSwiGluGetWorkspaceSize => aclnnSwiGluGetWorkspaceSizeFn, aclnnSwiGlu => aclnnSwiGluFn,
    aclnnInplaceMulGetWorkspaceSize => aclnnInplaceMulGetWorkspaceSizeFn, aclnnInplaceMul => aclnnInplaceMulFn,
}

pub mod prims;
pub use prims::*;
pub mod prims_sort;
pub use prims_sort::*;
pub mod prims3;
pub use prims3::*;
pub mod prims_quant;
pub use prims_quant::*;
