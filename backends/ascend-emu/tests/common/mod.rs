//! Helpers for the rule tests: device tensors from host values, and phase one + launch through the
//! exported C ABI. Every test calls [`setup`] first (the device binding is per thread).

#![allow(dead_code)]

use std::ffi::{c_void, CStr};
use std::ptr;
use std::sync::Once;

use ascendcl::abi::*;
use ascendcl::sys;
use half::{bf16, f16};

/// A launch function (`aclnnXxx`).
pub type Launch = extern "C" fn(*mut c_void, u64, *mut sys::aclOpExecutor, sys::aclrtStream) -> i32;

static INIT: Once = Once::new();

/// `aclInit` once per process, `aclrtSetDevice(0)` on this thread, and a fresh stream.
pub fn setup() -> sys::aclrtStream {
    INIT.call_once(|| assert_eq!(aclInit(ptr::null()), sys::ACL_SUCCESS));
    assert_eq!(aclrtSetDevice(0), sys::ACL_SUCCESS);
    let mut s: sys::aclrtStream = ptr::null_mut();
    // SAFETY: out-pointer to a local.
    assert_eq!(unsafe { aclrtCreateStream(&mut s) }, sys::ACL_SUCCESS);
    s
}

/// The message of the last error on this thread.
pub fn msg() -> String {
    let p = aclGetRecentErrMsg();
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null, NUL-terminated, valid until the next call on this thread.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A device buffer and a tensor over it.
pub struct Dev {
    /// Device address (storage base).
    pub ptr: *mut c_void,
    /// Buffer bytes.
    pub bytes: usize,
    /// The aclTensor.
    pub t: *mut sys::aclTensor,
    /// Element type.
    pub dt: sys::aclDataType,
}

/// Device bytes holding `data` (at least 1 byte allocated).
pub fn upload(data: &[u8]) -> *mut c_void {
    let mut p: *mut c_void = ptr::null_mut();
    // SAFETY: out-pointer to a local; `data` is valid for its length.
    unsafe {
        assert_eq!(aclrtMalloc(&mut p, data.len().max(1), 0), sys::ACL_SUCCESS);
        if !data.is_empty() {
            assert_eq!(
                aclrtMemcpy(
                    p,
                    data.len(),
                    data.as_ptr().cast(),
                    data.len(),
                    sys::ACL_MEMCPY_HOST_TO_DEVICE
                ),
                sys::ACL_SUCCESS
            );
        }
    }
    p
}

/// A tensor descriptor: view `dims` / `strides` at element `offset` of a storage of `storage`
/// elements at `base`, format `fmt`. NULL when aclCreateTensor refuses.
pub fn view(
    base: *mut c_void,
    dt: sys::aclDataType,
    dims: &[i64],
    strides: Option<&[i64]>,
    offset: i64,
    storage: &[i64],
    fmt: sys::aclFormat,
) -> *mut sys::aclTensor {
    // SAFETY: arrays valid for their lengths; strides has one entry per dim.
    unsafe {
        aclCreateTensor(
            dims.as_ptr(),
            dims.len() as u64,
            dt,
            strides.map_or(ptr::null(), |s| s.as_ptr()),
            offset,
            fmt,
            storage.as_ptr(),
            storage.len() as u64,
            base,
        )
    }
}

/// A contiguous ND tensor holding `data`.
pub fn tensor(data: &[u8], dims: &[i64], dt: sys::aclDataType) -> Dev {
    let ptr = upload(data);
    let t = view(ptr, dt, dims, None, 0, dims, sys::ACL_FORMAT_ND);
    assert!(!t.is_null(), "aclCreateTensor: {}", msg());
    Dev {
        ptr,
        bytes: data.len(),
        t,
        dt,
    }
}

/// A zero-filled contiguous tensor.
pub fn zeros(dims: &[i64], dt: sys::aclDataType) -> Dev {
    let n: i64 = dims.iter().product();
    let esz = ascendcl::tensor::elem_size(dt).unwrap();
    tensor(&vec![0u8; n as usize * esz], dims, dt)
}

/// A tensor pre-filled with a byte pattern (to see unwritten elements).
pub fn filled(dims: &[i64], dt: sys::aclDataType, byte: u8) -> Dev {
    let n: i64 = dims.iter().product();
    let esz = ascendcl::tensor::elem_size(dt).unwrap();
    tensor(&vec![byte; n as usize * esz], dims, dt)
}

/// Device bytes back to the host.
pub fn read(d: &Dev) -> Vec<u8> {
    let mut v = vec![0u8; d.bytes];
    // SAFETY: host buffer of `bytes`; the device side is checked by the emulator.
    unsafe {
        assert_eq!(
            aclrtMemcpy(
                v.as_mut_ptr().cast(),
                d.bytes,
                d.ptr,
                d.bytes,
                sys::ACL_MEMCPY_DEVICE_TO_HOST
            ),
            sys::ACL_SUCCESS
        );
    }
    v
}

pub fn f32b(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
pub fn f16b(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect()
}
pub fn bf16b(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect()
}
pub fn i32b(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
pub fn i64b(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
pub fn as_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
pub fn as_f16(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}
pub fn as_bf16(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2)
        .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}
pub fn as_i32(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
pub fn as_i64(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Phase two after a successful phase one: allocate the workspace, launch, free it.
pub fn launch(stream: sys::aclrtStream, ws: u64, exec: *mut sys::aclOpExecutor, f: Launch) -> i32 {
    let mut w: *mut c_void = ptr::null_mut();
    if ws > 0 {
        // SAFETY: out-pointer to a local.
        assert_eq!(unsafe { aclrtMalloc(&mut w, ws as usize, 0) }, sys::ACL_SUCCESS);
    }
    let rc = f(w, ws, exec, stream);
    if !w.is_null() {
        assert_eq!(aclrtFree(w), sys::ACL_SUCCESS);
    }
    rc
}

/// A tensor list of one tensor.
pub fn list1(t: *mut sys::aclTensor) -> *mut sys::aclTensorList {
    // SAFETY: one valid pointer.
    let l = unsafe { aclCreateTensorList([t as *const sys::aclTensor].as_ptr(), 1) };
    assert!(!l.is_null(), "aclCreateTensorList: {}", msg());
    l
}

/// An aclIntArray.
pub fn ints(v: &[i64]) -> *mut sys::aclIntArray {
    // SAFETY: valid for its length.
    unsafe { aclCreateIntArray(v.as_ptr(), v.len() as u64) }
}

/// The profile of this build.
pub fn rel() -> ascendcl::profile::Release {
    ascendcl::profile::release()
}

/// An executor handle.
pub type Exec = *mut sys::aclOpExecutor;

/// A host scalar of `dt` holding `v` (whose size must be `dt`'s), through `aclCreateScalar`.
pub fn scalar<T>(mut v: T, dt: sys::aclDataType) -> *mut aclScalar {
    // SAFETY: points at a live value of `dt`'s size (the caller's promise).
    let s = unsafe { aclCreateScalar((&mut v as *mut T).cast::<c_void>(), dt) };
    assert!(!s.is_null(), "{}", msg());
    s
}

/// A FLOAT scalar.
pub fn scalar_f32(v: f32) -> *mut aclScalar {
    scalar(v, sys::ACL_FLOAT)
}

/// Run a phase one that writes the workspace size and the executor: (status, size, executor).
pub fn p1(f: impl FnOnce(*mut u64, *mut Exec) -> i32) -> (i32, u64, Exec) {
    let (mut ws, mut ex) = (0u64, ptr::null_mut());
    let rc = f(&mut ws, &mut ex);
    (rc, ws, ex)
}

/// No tensor: a NULL aclTensor (for the 161001 checks).
pub fn none() -> Dev {
    Dev {
        ptr: ptr::null_mut(),
        bytes: 0,
        t: ptr::null_mut(),
        dt: sys::ACL_FLOAT,
    }
}
