//! The ACL runtime one backend holds (device, context, stream) as an RAII value: open, bind, memory
//! and copies; and how ACL status codes become [`Error`]s.

use std::ffi::{c_void, CStr};
use std::ptr;

use moehal_ascend_sys as sys;
use moehal_core::{Error, Result};

use super::{Api, Loaded, NAME};

/// The process-wide runtime state one backend holds: device, context and stream.
pub struct Runtime {
    /// Loaded libraries and function table.
    pub lib: Loaded,
    /// Device ordinal.
    pub device: i32,
    pub(super) ctx: usize,
    pub(super) stream: usize,
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

    pub(super) fn api(&self) -> &Api {
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
        // No device holds more than isize::MAX bytes: out of memory, as on every other backend
        // (the runtime's answer to a size its alignment overflows is a parameter error).
        if bytes > isize::MAX as usize {
            return Err(Error::OutOfMemory {
                backend: NAME.into(),
                bytes: bytes as u64,
            });
        }
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

    /// Device -> device copy of `len` bytes (`aclrtMemcpy` DEVICE_TO_DEVICE) after all enqueued
    /// work; no tensor data crosses to the host.
    pub fn d2d(&self, dst: u64, dst_cap: usize, src: u64, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.sync()?;
        // SAFETY: device addresses; the runtime checks both ranges.
        let st = unsafe {
            (self.api().aclrtMemcpy)(
                dst as *mut c_void,
                dst_cap,
                src as *const c_void,
                len,
                sys::ACL_MEMCPY_DEVICE_TO_DEVICE,
            )
        };
        check(self.api(), st, "aclrtMemcpy(device to device)")
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

pub(super) fn recent(api: &Api) -> String {
    // SAFETY: returns NULL or a NUL-terminated string valid until the next ACL call on this thread.
    let p = unsafe { (api.aclGetRecentErrMsg)() };
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: non-null, NUL-terminated; copied out at once.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

pub(super) fn err_with(api: &Api, code: i32, what: &str) -> Error {
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

pub(super) fn check(api: &Api, code: i32, what: &str) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(err_with(api, code, what))
    }
}
