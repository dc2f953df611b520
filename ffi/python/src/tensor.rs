//! Reading a Python tensor's memory: the numpy array interface (numpy, `ml_dtypes` bfloat16,
//! read-only arrays) or a DLPack `"dltensor"` capsule from `__dlpack__()` (torch, jax, cupy,
//! numpy). Nothing is copied: a [`Desc`] records where the bytes are, and the Python object
//! (array or capsule) that keeps them alive is held by the caller until the op has finished.
//!
//! The few `unsafe` blocks of the crate live here, each with its `// SAFETY:` comment: reading
//! the `DLTensor` behind a capsule, and viewing a host tensor's bytes for staging copies.

use moehal_core::tensor::MAX_RANK;
use moehal_core::{DType, Error, Result};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// DLPack device types (`DLDeviceType` of dlpack.h) moehal tells apart.
pub mod dl {
    /// `kDLCPU`.
    pub const CPU: i32 = 1;
    /// `kDLCUDA`.
    pub const CUDA: i32 = 2;
    /// `kDLCUDAHost` (pinned host memory).
    pub const CUDA_HOST: i32 = 3;
    /// `kDLROCM`.
    pub const ROCM: i32 = 10;
    /// `kDLROCMHost`.
    pub const ROCM_HOST: i32 = 11;
    /// `kDLExtDev` (how Ascend `npu` tensors travel).
    pub const EXT_DEV: i32 = 12;
    /// `kDLCUDAManaged`.
    pub const CUDA_MANAGED: i32 = 13;
}

/// A DLPack device `(device_type, device_id)`.
pub type Device = (i32, i32);

/// Human name of a DLPack device, for messages (`"cpu"`, `"cuda:0"`, `"npu:1"`).
pub fn device_name(d: Device) -> String {
    match d.0 {
        dl::CPU => "cpu".into(),
        dl::CUDA => format!("cuda:{}", d.1),
        dl::CUDA_HOST => "cuda pinned host".into(),
        dl::CUDA_MANAGED => format!("cuda managed:{}", d.1),
        dl::ROCM => format!("rocm:{}", d.1),
        dl::ROCM_HOST => "rocm pinned host".into(),
        dl::EXT_DEV => format!("npu:{}", d.1),
        t => format!("DLPack device type {t}:{}", d.1),
    }
}

/// Whether the CPU can address memory of device type `t`.
pub fn is_host(t: i32) -> bool {
    matches!(t, dl::CPU | dl::CUDA_HOST | dl::ROCM_HOST)
}

/// Where one argument's bytes are. `Send`: plain data, usable with the GIL released.
#[derive(Debug, Clone)]
pub struct Desc {
    /// Argument name, for messages.
    pub field: &'static str,
    /// Address of element 0 (0 only for an empty tensor).
    pub addr: u64,
    /// Bytes spanned (`numel * element size`).
    pub bytes: usize,
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first (rank at most [`MAX_RANK`]).
    pub shape: Vec<usize>,
    /// DLPack device.
    pub device: Device,
    /// The producer marked it read-only (numpy `writeable = False`).
    pub readonly: bool,
}

impl Desc {
    /// Whether the bytes are CPU-addressable.
    pub fn is_host(&self) -> bool {
        is_host(self.device.0)
    }
}

/// `DLDataType` of dlpack.h.
#[repr(C)]
#[derive(Clone, Copy)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

/// `DLTensor` of dlpack.h (the first member of `DLManagedTensor`).
#[repr(C)]
struct DLTensor {
    data: *mut std::ffi::c_void,
    device_type: i32,
    device_id: i32,
    ndim: i32,
    dtype: DLDataType,
    shape: *const i64,
    strides: *const i64,
    byte_offset: u64,
}

fn dl_dtype(op: &'static str, field: &'static str, t: DLDataType) -> Result<DType> {
    if t.lanes != 1 {
        return Err(Error::invalid(op, field, format!("vector dtype (lanes = {})", t.lanes)));
    }
    Ok(match (t.code, t.bits) {
        (2, 32) => DType::F32,
        (2, 16) => DType::F16,
        (4, 16) => DType::BF16,
        (0, 32) => DType::I32,
        (0, 64) => DType::I64,
        (0, 8) => DType::I8,
        (1, 8) | (6, 8) => DType::U8,
        (c, b) => {
            return Err(Error::invalid(
                op,
                field,
                format!(
                    "DLPack dtype (code {c}, {b} bits) is not one of float32, float16, bfloat16, int32, int64, int8, uint8, bool"
                ),
            ))
        }
    })
}

fn typestr_dtype(op: &'static str, field: &'static str, ts: &str, dtype_name: &str) -> Result<DType> {
    let (order, kind) = ts.split_at(1.min(ts.len()));
    if order == ">" && !matches!(kind, "i1" | "u1" | "b1") {
        // A valid array of a contract dtype in a byte order moehal does not read: a capability
        // it lacks (NotImplementedError), not a bad argument.
        return Err(Error::unsupported(
            op,
            "python",
            format!("`{field}`: big-endian array (typestr {ts}); moehal reads native little-endian data (use arr.astype(arr.dtype.newbyteorder('=')))"),
        ));
    }
    Ok(match kind {
        "f4" => DType::F32,
        "f2" => DType::F16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "i1" => DType::I8,
        "u1" | "b1" => DType::U8,
        "V2" if dtype_name == "bfloat16" => DType::BF16,
        _ => {
            return Err(Error::invalid(
                op,
                field,
                format!(
                    "array dtype {dtype_name} (typestr {ts}) is not one of float32, float16, bfloat16 (ml_dtypes), int32, int64, int8, uint8, bool"
                ),
            ))
        }
    })
}

/// Shape and element strides to a checked shape: rank, non-negative extents, row-major density.
fn checked_shape(
    op: &'static str,
    field: &'static str,
    shape: &[i64],
    strides: Option<&[i64]>,
    dtype: DType,
) -> Result<(Vec<usize>, usize)> {
    if shape.len() > MAX_RANK {
        return Err(Error::invalid(
            op,
            field,
            format!(
                "rank {} exceeds the largest rank moehal takes ({MAX_RANK})",
                shape.len()
            ),
        ));
    }
    let mut dims = Vec::with_capacity(shape.len());
    for (i, &s) in shape.iter().enumerate() {
        let s = usize::try_from(s).map_err(|_| Error::invalid(op, field, format!("shape[{i}] = {s} is negative")))?;
        dims.push(s);
    }
    let numel = dims
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(|| Error::invalid(op, field, format!("shape {dims:?} overflows")))?;
    let bytes = numel
        .checked_mul(dtype.size())
        .ok_or_else(|| Error::invalid(op, field, format!("shape {dims:?} overflows")))?;
    if let (Some(st), true) = (strides, numel > 0) {
        let mut expect = 1i64;
        for i in (0..dims.len()).rev() {
            if dims[i] != 1 && st[i] != expect {
                return Err(Error::invalid(
                    op,
                    field,
                    format!(
                        "strides {st:?} (elements) for shape {dims:?} are not row-major contiguous: \
                         pass a contiguous tensor (.contiguous() / np.ascontiguousarray)"
                    ),
                ));
            }
            expect = expect.saturating_mul(dims[i] as i64);
        }
    }
    Ok((dims, bytes))
}

/// Describe `obj` as argument `field` of `op`. Returns the description and the object that keeps
/// its memory alive (the array itself, or the DLPack capsule, whose destructor releases the
/// producer's tensor once dropped).
///
/// # Errors
/// `ValueError` (through [`Error::InvalidArgument`]) for an object that is neither an array nor
/// a DLPack producer, an unsupported dtype, a non-contiguous layout, a rank above 4, or
/// misaligned data; the producer's own exception if its `__dlpack__` fails.
pub fn describe(op: &'static str, field: &'static str, obj: &Bound<'_, PyAny>) -> PyResult<(Desc, PyObject)> {
    if let Ok(ai) = obj.getattr("__array_interface__") {
        let d = describe_array(op, field, obj, &ai).map_err(crate::to_py)?;
        return Ok((d, obj.clone().unbind()));
    }
    if !obj.hasattr("__dlpack__")? {
        return Err(crate::to_py(Error::invalid(
            op,
            field,
            format!(
                "a {} is not a tensor: pass an object implementing __dlpack__ (torch, numpy, jax, cupy)",
                obj.get_type().name()?
            ),
        )));
    }
    let cap = obj.call_method0("__dlpack__")?;
    // SAFETY: `cap` is a live Python object; PyCapsule_GetPointer checks its type and name and
    // returns NULL (setting an exception) if it is not a capsule named "dltensor".
    let ptr = unsafe { pyo3::ffi::PyCapsule_GetPointer(cap.as_ptr(), c"dltensor".as_ptr()) };
    if ptr.is_null() {
        let cause = PyErr::take(obj.py()).map(|e| e.to_string()).unwrap_or_default();
        return Err(crate::to_py(Error::invalid(
            op,
            field,
            format!("__dlpack__() did not return an unused \"dltensor\" capsule ({cause})"),
        )));
    }
    // SAFETY: a "dltensor" capsule holds a `DLManagedTensor*` (DLPack protocol), whose first
    // member is the `DLTensor`; it stays valid while the capsule lives, and we hold the capsule.
    let t = unsafe { &*(ptr as *const DLTensor) };
    let dtype = dl_dtype(op, field, t.dtype).map_err(crate::to_py)?;
    let ndim = usize::try_from(t.ndim).unwrap_or(usize::MAX);
    if ndim > MAX_RANK {
        return Err(crate::to_py(Error::invalid(
            op,
            field,
            format!("rank {} exceeds the largest rank moehal takes ({MAX_RANK})", t.ndim),
        )));
    }
    let shape: &[i64] = if ndim == 0 || t.shape.is_null() {
        &[]
    } else {
        // SAFETY: DLPack: `shape` points to `ndim` int64 values, valid while the capsule lives.
        unsafe { std::slice::from_raw_parts(t.shape, ndim) }
    };
    let strides: Option<&[i64]> = if t.strides.is_null() || ndim == 0 {
        None
    } else {
        // SAFETY: DLPack: non-NULL `strides` points to `ndim` int64 values (in elements).
        Some(unsafe { std::slice::from_raw_parts(t.strides, ndim) })
    };
    let (shape, bytes) = checked_shape(op, field, shape, strides, dtype).map_err(crate::to_py)?;
    let addr = (t.data as u64).wrapping_add(t.byte_offset);
    let d = Desc {
        field,
        addr,
        bytes,
        dtype,
        shape,
        device: (t.device_type, t.device_id),
        readonly: false,
    };
    check_addr(op, &d).map_err(crate::to_py)?;
    Ok((d, cap.unbind()))
}

fn describe_array(
    op: &'static str,
    field: &'static str,
    obj: &Bound<'_, PyAny>,
    ai: &Bound<'_, PyAny>,
) -> Result<Desc> {
    let bad = |m: String| Error::invalid(op, field, m);
    let ai = ai
        .downcast::<PyDict>()
        .map_err(|_| bad("__array_interface__ is not a dict".into()))?;
    let get = |k: &str| -> Result<Bound<'_, PyAny>> {
        ai.get_item(k)
            .ok()
            .flatten()
            .ok_or_else(|| Error::invalid(op, field, format!("__array_interface__ lacks `{k}`")))
    };
    let (data, readonly): (usize, bool) = get("data")?
        .extract()
        .map_err(|_| bad("__array_interface__ `data` is not (address, read-only)".into()))?;
    let shape: Vec<i64> = get("shape")?
        .extract()
        .map_err(|_| bad("__array_interface__ `shape` is not a tuple of ints".into()))?;
    let typestr: String = get("typestr")?
        .extract()
        .map_err(|_| bad("__array_interface__ `typestr` is not a string".into()))?;
    let dtype_name: String = obj
        .getattr("dtype")
        .and_then(|d| d.getattr("name"))
        .and_then(|n| n.extract())
        .unwrap_or_default();
    let dtype = typestr_dtype(op, field, &typestr, &dtype_name)?;
    let strides = match ai.get_item("strides").ok().flatten() {
        Some(s) if !s.is_none() => {
            let b: Vec<i64> = s
                .extract()
                .map_err(|_| bad("__array_interface__ `strides` is not a tuple of ints".into()))?;
            let size = dtype.size() as i64;
            // Byte strides to element strides; one that is not a multiple is non-contiguous.
            Some(
                b.iter()
                    .map(|&v| if v % size == 0 { v / size } else { i64::MIN })
                    .collect::<Vec<_>>(),
            )
        }
        _ => None,
    };
    let (shape, bytes) = checked_shape(op, field, &shape, strides.as_deref(), dtype)?;
    let d = Desc {
        field,
        addr: data as u64,
        bytes,
        dtype,
        shape,
        device: (dl::CPU, 0),
        readonly,
    };
    check_addr(op, &d)?;
    Ok(d)
}

fn check_addr(op: &'static str, d: &Desc) -> Result<()> {
    if d.bytes == 0 {
        return Ok(());
    }
    if d.addr == 0 {
        return Err(Error::invalid(op, d.field, "data pointer is NULL"));
    }
    if d.addr % d.dtype.size() as u64 != 0 {
        return Err(Error::invalid(
            op,
            d.field,
            format!(
                "address {:#x} is not aligned to the {}-byte elements of {}",
                d.addr,
                d.dtype.size(),
                d.dtype
            ),
        ));
    }
    if d.addr.checked_add(d.bytes as u64).is_none() {
        return Err(Error::invalid(
            op,
            d.field,
            "tensor extends past the end of the address space",
        ));
    }
    Ok(())
}

/// Whether two tensors share bytes (same device, overlapping ranges).
pub fn overlaps(a: &Desc, b: &Desc) -> bool {
    a.device == b.device
        && a.bytes > 0
        && b.bytes > 0
        && a.addr < b.addr + b.bytes as u64
        && b.addr < a.addr + a.bytes as u64
}

/// The bytes of a host tensor, for an upload to a device backend.
///
/// # Safety
/// `d` describes host memory valid for `d.bytes` reads (its Python owner is alive) and nobody
/// writes it meanwhile (outputs were checked not to overlap it).
pub unsafe fn host_bytes(d: &Desc) -> &[u8] {
    debug_assert!(d.is_host() && d.bytes > 0);
    // SAFETY: forwarded contract.
    unsafe { std::slice::from_raw_parts(d.addr as *const u8, d.bytes) }
}

/// The bytes of a host output tensor, for the download from a device backend.
///
/// # Safety
/// `d` describes writable host memory valid for `d.bytes` bytes (its Python owner is alive),
/// overlapping no other argument of the call, and nothing else reads or writes it meanwhile.
#[allow(clippy::mut_from_ref)]
pub unsafe fn host_bytes_mut(d: &Desc) -> &mut [u8] {
    debug_assert!(d.is_host() && d.bytes > 0);
    // SAFETY: forwarded contract.
    unsafe { std::slice::from_raw_parts_mut(d.addr as *mut u8, d.bytes) }
}
