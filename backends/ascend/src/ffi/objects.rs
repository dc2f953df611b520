//! RAII wrappers over the aclnn objects: `aclTensor`, `aclTensorList`, `aclIntArray`, `aclScalar`,
//! and device memory the backend owns; each is destroyed (freed) exactly once, on drop.

use std::ffi::c_void;

use moehal_ascend_sys as sys;
use moehal_core::Result;

use super::runtime::err_with;
use super::Runtime;

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
    pub(super) fn ptr(&self) -> *mut sys::aclTensor {
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
    pub(super) fn ptr(&self) -> *mut sys::aclTensorList {
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
    pub(super) fn ptr(&self) -> *const sys::aclIntArray {
        self.raw
    }
}

impl Drop for IntArray<'_> {
    fn drop(&mut self) {
        // SAFETY: created by aclCreateIntArray.
        unsafe { (self.rt.api().aclDestroyIntArray)(self.raw) };
    }
}

/// An `aclScalar`: a host value the runtime copies at creation, for the scalar arguments of
/// aclnn ops (`aclnnClamp`'s bounds, `aclnnMuls`'s factor). `aclCreateScalar` /
/// `aclDestroyScalar` are resolved as optional symbols: a library without them makes
/// [`Scalar::f32`] an `Unsupported` error and the ops that need a scalar run on the host.
pub struct Scalar<'r> {
    _rt: &'r Runtime,
    raw: *mut sys::aclScalar,
    destroy: <sys::aclDestroyScalarFn as super::loader::OptFn>::Inner,
}

impl<'r> Scalar<'r> {
    /// `aclCreateScalar(&v, ACL_FLOAT)`: an f32 scalar ([HA] canncommercial/800 acl_meta.h
    /// `aclCreateScalar(void *value, aclDataType dataType)`; the value is read at creation).
    pub fn f32(rt: &'r Runtime, v: f32) -> Result<Self> {
        let mut value = v;
        // SAFETY: `value` is a live f32 for the duration of the call.
        unsafe {
            Self::create(
                rt,
                (&mut value as *mut f32).cast(),
                sys::ACL_FLOAT,
                "aclCreateScalar(ACL_FLOAT)",
            )
        }
    }

    /// `aclCreateScalar(&v, ACL_INT64)`: an integer scalar (row indices, `-1` markers).
    pub fn i64(rt: &'r Runtime, v: i64) -> Result<Self> {
        let mut value = v;
        // SAFETY: `value` is a live i64 for the duration of the call.
        unsafe {
            Self::create(
                rt,
                (&mut value as *mut i64).cast(),
                sys::ACL_INT64,
                "aclCreateScalar(ACL_INT64)",
            )
        }
    }

    /// # Safety
    /// `value` must point at a live value of `dt` for the duration of the call.
    unsafe fn create(rt: &'r Runtime, value: *mut std::ffi::c_void, dt: sys::aclDataType, what: &str) -> Result<Self> {
        let api = rt.api();
        let create = super::aclnn::opt(api.aclCreateScalar, "aclCreateScalar")?;
        let destroy = super::aclnn::opt(api.aclDestroyScalar, "aclDestroyScalar")?;
        // SAFETY: `value` points at a live value of `dt` (this fn's contract); the runtime copies it.
        let raw = unsafe { create(value, dt) };
        if raw.is_null() {
            return Err(err_with(api, sys::ACLNN_ERR_PARAM_INVALID, what));
        }
        Ok(Scalar { _rt: rt, raw, destroy })
    }
    pub(super) fn ptr(&self) -> *const sys::aclScalar {
        self.raw
    }
}

impl Drop for Scalar<'_> {
    fn drop(&mut self) {
        // SAFETY: created by aclCreateScalar, destroyed once here.
        unsafe { (self.destroy)(self.raw) };
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
