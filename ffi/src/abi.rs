//! The exported C functions (`include/moehal.h`) and every `unsafe` block of this crate.
//!
//! Each entry point runs inside `guard` (errors become a status code plus the thread-local
//! message; a panic becomes `MOEHAL_PANIC` and never unwinds into C). Raw pointers are checked for
//! NULL and read here; the checks of tensor descriptors are safe code in [`crate::tensor`].

#![allow(non_camel_case_types)]
// The `///` comments of the exported functions are the C header's documentation (cbindgen copies
// them into include/moehal.h), written for C readers: `x [M,K]` is a shape, not a rustdoc link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::{Arc, OnceLock};

use moehal::Registry;
use moehal_core::engram::{self, EngramLayer};
use moehal_core::host::HostMemory;
use moehal_core::ops::{
    EngramHash, EngramLookup, GatherRows, GroupLimit, GroupScore, GroupedGemm, GroupedGemmQ, MoeCombine, MoePermute,
    QuantizeFp8, QuantizeInt8, RouterConfig, RouterHash, RouterTopk, Scoring, Swiglu, TableFormat, WeightFormat,
    WeightLayout,
};
use moehal_core::tensor::MAX_RANK;
use moehal_core::{Backend, Buffer, DeviceInfo, Error, Location, Result, TensorMut, TensorRef};

use crate::error::{guard, guard_value, last_error_ptr};
use crate::tensor::{check, check_no_overlap, BackendSpace, Mapped, Space, TensorDesc};
use crate::types::*;

/// Opaque handle: an open backend (`moehal_backend*` in C).
pub struct moehal_backend {
    be: Arc<dyn Backend>,
    name: CString,
    dev_name: CString,
    capability: CString,
    info: DeviceInfo,
    space: BackendSpace,
}

/// Opaque handle: a block of backend memory (`moehal_buffer*` in C): allocated by `moehal_alloc` (freed by
/// `moehal_buffer_free`) or wrapped by `moehal_wrap_external` (never freed by moehal).
pub struct moehal_buffer {
    buf: Buffer,
}

/// Opaque handle: an Engram layer's hash configuration (`moehal_engram_layer*` in C).
pub struct moehal_engram_layer {
    layer: EngramLayer,
}

struct Listed {
    name: CString,
    available: bool,
    reason: CString,
}

fn registry() -> &'static (Registry, Vec<Listed>) {
    static REG: OnceLock<(Registry, Vec<Listed>)> = OnceLock::new();
    REG.get_or_init(|| {
        let reg = Registry::discover();
        let listed = reg
            .entries()
            .iter()
            .map(|e| Listed {
                name: cstring(e.name),
                available: e.status.is_ok(),
                reason: cstring(e.status.as_ref().err().map(String::as_str).unwrap_or("")),
            })
            .collect();
        (reg, listed)
    })
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// The DLPack device of a backend's memory: probed with a one-byte allocation, or by name.
fn backend_space(be: &dyn Backend) -> BackendSpace {
    let host = BackendSpace {
        device: DLDevice {
            device_type: dl_device::CPU,
            device_id: 0,
        },
        host: true,
    };
    let dev = |name: &str, ordinal: usize| BackendSpace {
        device: DLDevice {
            device_type: match name {
                "cuda" => dl_device::CUDA,
                "rocm" | "hip" => dl_device::ROCM,
                _ => dl_device::EXT_DEV,
            },
            device_id: ordinal as i32,
        },
        host: false,
    };
    match be.alloc(1).map(|b| b.location()) {
        Ok(Location::Host) => host,
        Ok(Location::Device { backend, ordinal }) => dev(&backend, ordinal),
        Err(_) => match be.name() {
            "reference" | "cpu" => host,
            n => dev(n, 0),
        },
    }
}

fn parse_scoring(v: i32) -> Result<Scoring> {
    match v {
        MOEHAL_SCORING_SOFTMAX => Ok(Scoring::Softmax),
        MOEHAL_SCORING_SIGMOID => Ok(Scoring::Sigmoid),
        MOEHAL_SCORING_SQRT_SOFTPLUS => Ok(Scoring::SqrtSoftplus),
        _ => Err(Error::invalid(
            "router_topk",
            "scoring",
            format!("unknown MOEHAL_SCORING_* value {v}"),
        )),
    }
}

fn parse_group_score(v: i32) -> Result<GroupScore> {
    match v {
        MOEHAL_GROUP_SCORE_TOP2_SUM => Ok(GroupScore::Top2Sum),
        MOEHAL_GROUP_SCORE_MAX => Ok(GroupScore::Max),
        _ => Err(Error::invalid(
            "router_topk",
            "group_score",
            format!("unknown MOEHAL_GROUP_SCORE_* value {v}"),
        )),
    }
}

fn parse_weight_format(v: i32) -> Result<WeightFormat> {
    match v {
        MOEHAL_WEIGHT_FP8_BLOCK => Ok(WeightFormat::Fp8Block),
        MOEHAL_WEIGHT_MXFP4 => Ok(WeightFormat::Mxfp4),
        MOEHAL_WEIGHT_INT8 => Ok(WeightFormat::Int8),
        _ => Err(Error::invalid(
            "grouped_gemm",
            "w_format",
            format!("unknown MOEHAL_WEIGHT_* value {v}"),
        )),
    }
}

fn parse_layout(v: i32) -> Result<WeightLayout> {
    match v {
        MOEHAL_LAYOUT_NK => Ok(WeightLayout::NK),
        MOEHAL_LAYOUT_KN => Ok(WeightLayout::KN),
        _ => Err(Error::invalid(
            "grouped_gemm",
            "layout",
            format!("unknown MOEHAL_LAYOUT_* value {v}"),
        )),
    }
}

fn parse_format(op: &'static str, v: i32) -> Result<TableFormat> {
    match v {
        MOEHAL_TABLE_F32 => Ok(TableFormat::F32),
        MOEHAL_TABLE_BF16 => Ok(TableFormat::BF16),
        MOEHAL_TABLE_F16 => Ok(TableFormat::F16),
        MOEHAL_TABLE_FP8_E4M3_UE8M0 => Ok(TableFormat::Fp8E4m3Ue8m0),
        _ => Err(Error::invalid(
            op,
            "format",
            format!("unknown MOEHAL_TABLE_* value {v}"),
        )),
    }
}

fn nonneg(op: &'static str, field: &'static str, v: i64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::invalid(op, field, format!("{v} is negative")))
}

fn router_config(c: &moehal_router_config) -> Result<RouterConfig> {
    let op = "router_topk";
    let n_group = nonneg(op, "n_group", c.n_group)?;
    let group = if n_group > 1 {
        Some(GroupLimit {
            n_group,
            topk_group: nonneg(op, "topk_group", c.topk_group)?,
            score: parse_group_score(c.group_score)?,
        })
    } else {
        None
    };
    Ok(RouterConfig {
        topk: nonneg(op, "k", c.k)?,
        scoring: parse_scoring(c.scoring)?,
        group,
        renormalize: c.renormalize != 0,
        routed_scaling_factor: c.routed_scaling_factor,
    })
}

fn view<'a>(b: &'a Buffer, m: &Mapped) -> TensorRef<'a> {
    b.view(m.dtype, &m.shape)
}
fn view_mut<'a>(b: &'a mut Buffer, m: &Mapped) -> TensorMut<'a> {
    b.view_mut(m.dtype, &m.shape)
}
fn opt_view<'a>(b: &'a Option<Buffer>, m: &Option<Mapped>) -> Option<TensorRef<'a>> {
    b.as_ref().zip(m.as_ref()).map(|(b, m)| view(b, m))
}
fn opt_view_mut<'a>(b: &'a mut Option<Buffer>, m: &Option<Mapped>) -> Option<TensorMut<'a>> {
    b.as_mut().zip(m.as_ref()).map(|(b, m)| view_mut(b, m))
}
fn refs<'a>(items: &[Option<&'a Mapped>]) -> Vec<&'a Mapped> {
    items.iter().flatten().copied().collect()
}

fn null_err(op: &'static str, field: &'static str) -> Error {
    Error::invalid(op, field, "NULL pointer")
}

/// # Safety
/// `p` is NULL or points to a valid, live `T`.
unsafe fn deref<'a, T>(op: &'static str, field: &'static str, p: *const T) -> Result<&'a T> {
    // SAFETY: NULL is rejected by `as_ref`; otherwise the caller's contract.
    unsafe { p.as_ref() }.ok_or_else(|| null_err(op, field))
}

/// Store `v` through an out pointer.
///
/// # Safety
/// `p` is NULL or valid for a write of `T`.
unsafe fn put<T>(op: &'static str, field: &'static str, p: *mut T, v: T) -> Result<()> {
    if p.is_null() {
        return Err(null_err(op, field));
    }
    // SAFETY: non-null, valid for writes by the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

/// # Safety
/// `p` is NULL (only with `n == 0`) or valid for reads of `n` elements.
unsafe fn slice<'a, T>(op: &'static str, field: &'static str, p: *const T, n: usize) -> Result<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(null_err(op, field));
    }
    // SAFETY: non-null and valid for n reads by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Copy a DLTensor's descriptor.
///
/// # Safety
/// `p` is NULL or points to a valid `DLTensor` whose `shape` (and `strides`, if non-NULL) hold
/// `ndim` elements.
unsafe fn read_desc(op: &'static str, field: &'static str, p: *const DLTensor) -> Result<TensorDesc> {
    // SAFETY: forwarded contract.
    let t = unsafe { deref(op, field, p)? };
    if t.ndim < 0 || t.ndim as usize > MAX_RANK {
        return Err(Error::invalid(
            op,
            field,
            format!("ndim = {} outside [0, {MAX_RANK}]", t.ndim),
        ));
    }
    let n = t.ndim as usize;
    // SAFETY: shape holds ndim extents (DLPack contract), checked non-NULL when ndim > 0.
    let shape = unsafe { slice(op, field, t.shape, n)? }.to_vec();
    let strides = if t.strides.is_null() {
        None
    } else {
        // SAFETY: non-NULL strides hold ndim entries (DLPack contract).
        Some(unsafe { slice(op, field, t.strides, n)? }.to_vec())
    };
    Ok(TensorDesc {
        data: t.data as u64,
        device: t.device,
        dtype: t.dtype,
        shape,
        strides,
        byte_offset: t.byte_offset,
    })
}

/// Address used for empty tensors whose `data` is NULL (nothing is ever read through it).
const EMPTY_ADDR: u64 = 256;

struct Ctx<'b> {
    h: &'b moehal_backend,
    op: &'static str,
}

impl<'b> Ctx<'b> {
    /// # Safety
    /// `b` is NULL or a live handle from `moehal_backend_open`.
    unsafe fn new(op: &'static str, b: *const moehal_backend) -> Result<Self> {
        // SAFETY: forwarded contract.
        let h = unsafe { deref(op, "backend", b)? };
        Ok(Ctx { h, op })
    }

    /// # Safety
    /// As [`read_desc`].
    unsafe fn t(&self, field: &'static str, p: *const DLTensor) -> Result<Mapped> {
        // SAFETY: forwarded contract.
        let d = unsafe { read_desc(self.op, field, p)? };
        check(self.op, field, &d, self.h.space, false)
    }

    /// A tensor that may also be host memory on a device backend (Engram tables).
    ///
    /// # Safety
    /// As [`read_desc`].
    unsafe fn t_host_ok(&self, field: &'static str, p: *const DLTensor) -> Result<Mapped> {
        // SAFETY: forwarded contract.
        let d = unsafe { read_desc(self.op, field, p)? };
        check(self.op, field, &d, self.h.space, true)
    }

    /// # Safety
    /// As [`read_desc`]; NULL means absent.
    unsafe fn opt(&self, field: &'static str, p: *const DLTensor) -> Result<Option<Mapped>> {
        if p.is_null() {
            Ok(None)
        } else {
            // SAFETY: forwarded contract.
            unsafe { self.t(field, p) }.map(Some)
        }
    }

    /// A non-owning buffer over a checked tensor's bytes.
    ///
    /// # Safety
    /// The tensor's memory is valid for `m.bytes` bytes at `m.addr`, on the device `m.space`
    /// names, for the duration of the call (and, on device backends, until the work is done),
    /// and no one else accesses the outputs meanwhile.
    unsafe fn wrap(&self, m: &Mapped) -> Result<Buffer> {
        let addr = if m.addr == 0 { EMPTY_ADDR } else { m.addr };
        match (m.space, self.h.space.host) {
            (Space::Host, false) => {
                // SAFETY: host memory of the caller, valid for m.bytes reads (contract above);
                // read-only because only tables take this path.
                let mem = unsafe { HostMemory::from_raw(addr as *mut u8, m.bytes, false)? };
                Ok(Buffer::new(Box::new(mem)))
            }
            // SAFETY: memory of this backend's device (checked by `check`), valid per contract.
            _ => unsafe { self.h.be.wrap_external(addr, m.bytes) },
        }
    }

    /// # Safety
    /// As [`Ctx::wrap`].
    unsafe fn wrap_opt(&self, m: &Option<Mapped>) -> Result<Option<Buffer>> {
        match m {
            // SAFETY: forwarded contract.
            Some(m) => unsafe { self.wrap(m) }.map(Some),
            None => Ok(None),
        }
    }
}

/// Expert ids as the C ABI takes them: int32 (used in place) or int64 (what `torch.topk` returns).
///
/// Core's `moe_permute` reads i32 ids (OPS.md §3; every backend's kernel and the Ascend vendor
/// routes take i32). An int64 `ids` tensor is therefore narrowed here: its values are copied
/// to the host (on a device backend this waits for enqueued work), each is checked to lie in
/// `[-1, E)` (so an id of 2^32 is an error, never expert 0 by truncation), and the i32 copy is
/// uploaded to a buffer of the backend. The copy costs `T*k*12` bytes of traffic, small next to
/// the op. int32 ids take no copy.
///
/// # Errors
/// `InvalidArgument` on `ids`: a dtype other than int32/int64, or an int64 id outside `[-1, E)`.
fn narrow_ids(c: &Ctx<'_>, m: &Mapped, b: Buffer, num_experts: usize) -> Result<(Mapped, Buffer)> {
    match m.dtype {
        moehal_core::DType::I32 => Ok((m.clone(), b)),
        moehal_core::DType::I64 => {
            let n = m.bytes / 8;
            let mut raw = vec![0u8; m.bytes];
            c.h.be.download(&b, 0, &mut raw)?;
            let mut narrow = Vec::with_capacity(n * 4);
            for (p, ch) in raw.chunks_exact(8).enumerate() {
                let v = i64::from_ne_bytes(ch.try_into().expect("chunks of 8"));
                if v < -1 || v >= num_experts as i64 {
                    return Err(Error::invalid(
                        c.op,
                        "ids",
                        format!("ids[{p}] = {v} (int64) outside [-1, E = {num_experts})"),
                    ));
                }
                narrow.extend_from_slice(&(v as i32).to_ne_bytes());
            }
            let mut nb = c.h.be.alloc(narrow.len())?;
            c.h.be.upload(&mut nb, 0, &narrow)?;
            let nm = Mapped {
                addr: nb.addr(),
                bytes: narrow.len(),
                dtype: moehal_core::DType::I32,
                ..m.clone()
            };
            Ok((nm, nb))
        }
        d => Err(Error::invalid(
            c.op,
            "ids",
            format!("dtype {d}: expert ids are int32 or int64"),
        )),
    }
}

/// An output of expert ids that may be int64: the op writes i32 into a scratch buffer of the
/// backend and [`widen_ids`] copies the values, sign-extended, into the caller's int64 tensor.
struct IdsOut {
    /// The view the op writes: the caller's tensor (int32) or the scratch (int64 requested).
    m: Mapped,
    scratch: Option<Buffer>,
}

/// Prepare the `ids` output of a router (see [`IdsOut`]).
///
/// # Errors
/// `InvalidArgument` for a dtype other than int32/int64; allocation errors of the backend.
fn ids_out(c: &Ctx<'_>, m: &Mapped) -> Result<IdsOut> {
    match m.dtype {
        moehal_core::DType::I32 => Ok(IdsOut {
            m: m.clone(),
            scratch: None,
        }),
        moehal_core::DType::I64 => {
            let bytes = m.bytes / 2;
            let s = c.h.be.alloc(bytes)?;
            Ok(IdsOut {
                m: Mapped {
                    addr: s.addr(),
                    bytes,
                    dtype: moehal_core::DType::I32,
                    ..m.clone()
                },
                scratch: Some(s),
            })
        }
        d => Err(Error::invalid(
            c.op,
            "ids",
            format!("dtype {d}: expert ids are int32 or int64"),
        )),
    }
}

/// Copy the i32 ids of `scratch` into the caller's int64 `out` (after the op's work).
fn widen_ids(c: &Ctx<'_>, scratch: &Buffer, out: &mut Buffer, n: usize) -> Result<()> {
    let mut raw = vec![0u8; n * 4];
    c.h.be.download(scratch, 0, &mut raw)?;
    let wide: Vec<u8> = raw
        .chunks_exact(4)
        .flat_map(|ch| (i32::from_ne_bytes(ch.try_into().expect("chunks of 4")) as i64).to_ne_bytes())
        .collect();
    c.h.be.upload(out, 0, &wide)
}

// ------------------------------------------------------------------------------------------
// Versions and errors
// ------------------------------------------------------------------------------------------

/// ABI version of the library (MOEHAL_ABI_VERSION it was built with). Thread-safe.
#[no_mangle]
pub extern "C" fn moehal_abi_version() -> u32 {
    MOEHAL_ABI_VERSION
}

/// Library version, e.g. "0.1.0"; static storage. Thread-safe.
#[no_mangle]
pub extern "C" fn moehal_version() -> *const c_char {
    static V: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(c) => c,
        Err(_) => c"unknown",
    };
    V.as_ptr()
}

/// The message of the last failing call on this thread ("" if none). The pointer stays valid
/// until the next failing call on this thread. Thread-safe (per-thread state).
#[no_mangle]
pub extern "C" fn moehal_last_error() -> *const c_char {
    guard_value(c"".as_ptr(), last_error_ptr)
}

/// "MOEHAL_OK", "MOEHAL_INVALID_ARGUMENT", ...; static storage. Thread-safe.
#[no_mangle]
pub extern "C" fn moehal_status_name(status: moehal_status) -> *const c_char {
    let s: &'static CStr = match status {
        MOEHAL_OK => c"MOEHAL_OK",
        MOEHAL_INVALID_ARGUMENT => c"MOEHAL_INVALID_ARGUMENT",
        MOEHAL_UNSUPPORTED => c"MOEHAL_UNSUPPORTED",
        MOEHAL_UNAVAILABLE => c"MOEHAL_UNAVAILABLE",
        MOEHAL_OUT_OF_MEMORY => c"MOEHAL_OUT_OF_MEMORY",
        MOEHAL_DEVICE_ERROR => c"MOEHAL_DEVICE_ERROR",
        MOEHAL_PANIC => c"MOEHAL_PANIC",
        _ => c"MOEHAL_UNKNOWN_STATUS",
    };
    s.as_ptr()
}

// ------------------------------------------------------------------------------------------
// Backends
// ------------------------------------------------------------------------------------------

/// Number of backends compiled into this library (available or not). The first call probes the
/// machine (opens every backend once); the list is then fixed. Thread-safe.
///
/// # Safety
/// `count` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn moehal_backend_count(count: *mut usize) -> moehal_status {
    guard(|| {
        let n = registry().1.len();
        // SAFETY: caller's contract.
        unsafe { put("backend_count", "count", count, n) }
    })
}

/// Entry `index` (0-based, fastest first, "reference" last): its name, whether this machine can
/// run it (1/0), and if not, why ("libcuda.so.1 not found"); "" when available. Strings have static
/// storage. Any out pointer may be NULL. Thread-safe.
///
/// # Safety
/// Each out pointer is NULL (skipped) or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn moehal_backend_entry(
    index: usize,
    name: *mut *const c_char,
    available: *mut i32,
    reason: *mut *const c_char,
) -> moehal_status {
    guard(|| {
        let list = &registry().1;
        let e = list.get(index).ok_or_else(|| {
            Error::invalid(
                "backend_entry",
                "index",
                format!("{index} out of range ({} backends)", list.len()),
            )
        })?;
        // SAFETY: each pointer is NULL (skipped) or valid for a write (caller's contract).
        unsafe {
            if !name.is_null() {
                name.write(e.name.as_ptr());
            }
            if !available.is_null() {
                available.write(e.available as i32);
            }
            if !reason.is_null() {
                reason.write(e.reason.as_ptr());
            }
        }
        Ok(())
    })
}

/// Open a backend by name ("cpu", "cuda", "ascend", "reference"); NULL or "" opens the first
/// available one. An absent backend is MOEHAL_UNAVAILABLE with the reason. *out is NULL on
/// failure. Thread-safe; handles to the same backend share it.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn moehal_backend_open(name: *const c_char, out: *mut *mut moehal_backend) -> moehal_status {
    const OP: &str = "backend_open";
    guard(|| {
        if out.is_null() {
            return Err(null_err(OP, "out"));
        }
        // SAFETY: out is non-null and valid for a write.
        unsafe { out.write(std::ptr::null_mut()) };
        let name = if name.is_null() {
            ""
        } else {
            // SAFETY: NUL-terminated by the caller's contract.
            unsafe { CStr::from_ptr(name) }
                .to_str()
                .map_err(|_| Error::invalid(OP, "name", "not UTF-8"))?
        };
        let reg = &registry().0;
        let be = if name.is_empty() {
            reg.available().next().cloned().ok_or_else(|| Error::Unavailable {
                backend: "any".into(),
                reason: "no backend is available".into(),
            })?
        } else {
            reg.open(name)?
        };
        let info = be.device_info();
        let h = moehal_backend {
            name: cstring(be.name()),
            dev_name: cstring(&info.name),
            capability: cstring(&info.capability),
            space: backend_space(be.as_ref()),
            info,
            be,
        };
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(Box::new(h))) };
        Ok(())
    })
}

/// Close a handle (NULL: no-op). Buffers allocated through it stay valid. Not thread-safe with
/// respect to other calls on the same handle.
///
/// # Safety
/// `backend` is NULL or a handle from `moehal_backend_open`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn moehal_backend_close(backend: *mut moehal_backend) {
    guard_value((), || {
        if !backend.is_null() {
            // SAFETY: made by Box::into_raw in moehal_backend_open; ownership returns here.
            drop(unsafe { Box::from_raw(backend) });
        }
    })
}

/// The backend's name, owned by the handle; NULL for a NULL handle. Thread-safe.
///
/// # Safety
/// `backend` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn moehal_backend_name(backend: *const moehal_backend) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || match unsafe { backend.as_ref() } {
        Some(h) => h.name.as_ptr(),
        None => std::ptr::null(),
    })
}

/// Describe the backend's device. Thread-safe.
///
/// # Safety
/// `backend` is NULL or a live handle; `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn moehal_backend_device_info(
    backend: *const moehal_backend,
    out: *mut moehal_device_info,
) -> moehal_status {
    const OP: &str = "backend_device_info";
    guard(|| {
        // SAFETY: caller's contract.
        let h = unsafe { deref(OP, "backend", backend)? };
        let info = moehal_device_info {
            name: h.dev_name.as_ptr(),
            capability: h.capability.as_ptr(),
            memory_bytes: h.info.memory_bytes.unwrap_or(0),
            compute_units: h.info.compute_units.map_or(-1, |c| c as i64),
            device: h.space.device,
        };
        // SAFETY: caller's contract.
        unsafe { put(OP, "out", out, info) }
    })
}

/// Enqueue this backend's subsequent work on an engine's stream (cudaStream_t on cuda);
/// MOEHAL_UNSUPPORTED on backends without streams (reference, cpu) and on ascend, which does not
/// take an engine's aclrtStream yet (it runs each op on its own stream). The stream must stay alive
/// while used. Affects every thread using the backend: do not race it with op calls.
///
/// # Safety
/// `stream` is a live stream of the backend's device and context (see `Backend::set_external_stream`).
#[no_mangle]
pub unsafe extern "C" fn moehal_set_stream(backend: *const moehal_backend, stream: *mut c_void) -> moehal_status {
    guard(|| {
        // SAFETY: caller's contract.
        let h = unsafe { deref("set_stream", "backend", backend)? };
        // SAFETY: forwarded contract.
        unsafe { h.be.set_external_stream(stream as u64) }
    })
}

/// Wait for all work enqueued on the backend. Thread-safe.
///
/// # Safety
/// `backend` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn moehal_synchronize(backend: *const moehal_backend) -> moehal_status {
    guard(|| {
        // SAFETY: caller's contract.
        let h = unsafe { deref("synchronize", "backend", backend)? };
        h.be.synchronize()
    })
}

// ------------------------------------------------------------------------------------------
// Memory
// ------------------------------------------------------------------------------------------

/// Allocate `bytes` bytes (contents unspecified; zeroed on host backends). Thread-safe.
///
/// # Safety
/// `backend` is NULL or a live handle; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn moehal_alloc(
    backend: *const moehal_backend,
    bytes: usize,
    out: *mut *mut moehal_buffer,
) -> moehal_status {
    const OP: &str = "alloc";
    guard(|| {
        if out.is_null() {
            return Err(null_err(OP, "out"));
        }
        // SAFETY: non-null out pointer, caller's contract.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: caller's contract.
        let h = unsafe { deref(OP, "backend", backend)? };
        let buf = h.be.alloc(bytes)?;
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(Box::new(moehal_buffer { buf }))) };
        Ok(())
    })
}

/// Wrap `bytes` bytes at `ptr` that the caller owns (device memory on device backends, host
/// memory on host backends) as a buffer, without copying. moehal_buffer_free releases the handle
/// only; the memory must outlive it. Thread-safe.
///
/// # Safety
/// `ptr` addresses `bytes` bytes of the backend's memory that outlive the buffer; `out` is valid
/// for a write.
#[no_mangle]
pub unsafe extern "C" fn moehal_wrap_external(
    backend: *const moehal_backend,
    ptr: *mut c_void,
    bytes: usize,
    out: *mut *mut moehal_buffer,
) -> moehal_status {
    const OP: &str = "wrap_external";
    guard(|| {
        if out.is_null() {
            return Err(null_err(OP, "out"));
        }
        // SAFETY: non-null out pointer, caller's contract.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: caller's contract.
        let h = unsafe { deref(OP, "backend", backend)? };
        if ptr.is_null() {
            return Err(null_err(OP, "ptr"));
        }
        // SAFETY: forwarded contract.
        let buf = unsafe { h.be.wrap_external(ptr as u64, bytes)? };
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(Box::new(moehal_buffer { buf }))) };
        Ok(())
    })
}

/// Free a buffer (NULL: no-op). Not thread-safe with respect to other uses of the buffer.
///
/// # Safety
/// `buffer` is NULL or from `moehal_alloc` / `moehal_wrap_external`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn moehal_buffer_free(buffer: *mut moehal_buffer) {
    guard_value((), || {
        if !buffer.is_null() {
            // SAFETY: made by Box::into_raw here; ownership returns.
            drop(unsafe { Box::from_raw(buffer) });
        }
    })
}

/// Address (in the backend's address space) and size of a buffer; either out pointer may be
/// NULL. Thread-safe.
///
/// # Safety
/// `buffer` is NULL or a live buffer; `data` and `bytes` are NULL (skipped) or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn moehal_buffer_data(
    buffer: *const moehal_buffer,
    data: *mut *mut c_void,
    bytes: *mut usize,
) -> moehal_status {
    guard(|| {
        // SAFETY: caller's contract.
        let b = unsafe { deref("buffer_data", "buffer", buffer)? };
        // SAFETY: each pointer NULL (skipped) or valid for a write.
        unsafe {
            if !data.is_null() {
                data.write(b.buf.addr() as *mut c_void);
            }
            if !bytes.is_null() {
                bytes.write(b.buf.len());
            }
        }
        Ok(())
    })
}

/// Copy `bytes` bytes from host `src` into `buffer` at byte `offset`. Not thread-safe per
/// buffer (no concurrent use of the same buffer).
///
/// # Safety
/// Handles live; `src` valid for `bytes` reads; no other thread uses `buffer` meanwhile.
#[no_mangle]
pub unsafe extern "C" fn moehal_upload(
    backend: *const moehal_backend,
    buffer: *mut moehal_buffer,
    offset: usize,
    src: *const c_void,
    bytes: usize,
) -> moehal_status {
    const OP: &str = "upload";
    guard(|| {
        // SAFETY: caller's contract (live handles, src valid for `bytes` reads).
        let (h, b, s) = unsafe {
            (
                deref(OP, "backend", backend)?,
                buffer.as_mut().ok_or_else(|| null_err(OP, "buffer"))?,
                slice(OP, "src", src as *const u8, bytes)?,
            )
        };
        h.be.upload(&mut b.buf, offset, s)
    })
}

/// Copy `bytes` bytes of `buffer` from byte `offset` into host `dst`, after all enqueued work.
/// Thread-safe (concurrent downloads of one buffer are fine; not concurrent with writes).
///
/// # Safety
/// Handles live; `dst` valid for `bytes` writes.
#[no_mangle]
pub unsafe extern "C" fn moehal_download(
    backend: *const moehal_backend,
    buffer: *const moehal_buffer,
    offset: usize,
    dst: *mut c_void,
    bytes: usize,
) -> moehal_status {
    const OP: &str = "download";
    guard(|| {
        // SAFETY: caller's contract.
        let (h, b) = unsafe { (deref(OP, "backend", backend)?, deref(OP, "buffer", buffer)?) };
        if bytes == 0 {
            return h.be.download(&b.buf, offset, &mut []);
        }
        if dst.is_null() {
            return Err(null_err(OP, "dst"));
        }
        // SAFETY: non-null, valid for `bytes` writes (caller's contract).
        let d = unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, bytes) };
        h.be.download(&b.buf, offset, d)
    })
}

// ------------------------------------------------------------------------------------------
// Engram layers
// ------------------------------------------------------------------------------------------

/// Store a new layer handle through `out`.
///
/// # Safety
/// `out` is NULL or valid for a write.
unsafe fn layer_out(op: &'static str, out: *mut *mut moehal_engram_layer, layer: Result<EngramLayer>) -> Result<()> {
    // The C ABI's errors name the function called (ffi/README.md): the layer's own rules come back
    // from moehal-core as `engram_layer`, renamed here to the constructor the caller used.
    let l = layer.map_err(|e| match e {
        Error::InvalidArgument { field, msg, .. } => Error::InvalidArgument { op, field, msg },
        Error::Unsupported { backend, msg, .. } => Error::Unsupported { op, backend, msg },
        e => e,
    })?;
    // SAFETY: forwarded contract.
    unsafe {
        put(
            op,
            "out",
            out,
            Box::into_raw(Box::new(moehal_engram_layer { layer: l })),
        )
    }
}

/// Build a layer: order N = max_order >= 2, heads K >= 1, `multipliers` = N odd 64-bit values with
/// m * (vocab_size - 1) < 2^63, `primes` = (N-1)*K distinct primes in column order (n-major, then
/// head), compressed vocabulary size V' = vocab_size, pad id < V'. More than 2^20 columns is
/// MOEHAL_UNSUPPORTED (moehal's limit, not the contract's). Thread-safe.
///
/// # Safety
/// `multipliers` holds `max_order` values, `primes` `(max_order-1)*heads`; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn moehal_engram_layer_create(
    max_order: i64,
    heads: i64,
    multipliers: *const u64,
    primes: *const u64,
    vocab_size: u64,
    pad_id: u64,
    out: *mut *mut moehal_engram_layer,
) -> moehal_status {
    const OP: &str = "engram_layer_create";
    guard(|| {
        if out.is_null() {
            return Err(null_err(OP, "out"));
        }
        // SAFETY: non-null out pointer.
        unsafe { out.write(std::ptr::null_mut()) };
        let n = nonneg(OP, "max_order", max_order)?;
        let k = nonneg(OP, "heads", heads)?;
        if n < 2 || k == 0 {
            // EngramLayer::new names the rule.
            // SAFETY: out checked non-null above.
            return unsafe { layer_out(OP, out, EngramLayer::new(n, k, vec![], vec![], vocab_size, pad_id)) };
        }
        let c = (n - 1)
            .checked_mul(k)
            .ok_or_else(|| Error::invalid(OP, "heads", "(max_order - 1) * heads overflows"))?;
        if c > engram::MAX_DERIVED_PRIMES {
            // moehal's limit on what it reads from the caller, not a rule of OPS.md: Unsupported.
            return Err(Error::unsupported(
                OP,
                "any backend",
                format!(
                    "`heads`: (max_order - 1) * heads = {c} columns exceeds the {} moehal takes (real layers have dozens)",
                    engram::MAX_DERIVED_PRIMES
                ),
            ));
        }
        // SAFETY: array lengths per the caller's contract.
        let (m, p) = unsafe {
            (
                slice(OP, "multipliers", multipliers, n)?,
                slice(OP, "primes", primes, c)?,
            )
        };
        // SAFETY: out checked non-null above.
        unsafe {
            layer_out(
                OP,
                out,
                EngramLayer::new(n, k, m.to_vec(), p.to_vec(), vocab_size, pad_id),
            )
        }
    })
}

/// DeepSeek-V4.1-Flash Engram layer `index` (0: decoder layer 1, 1: decoder layer 14): N = 4,
/// K = 8, V' = 99,092, pad 2, primes derived from vocab_n 16,000,000. Thread-safe.
///
/// # Safety
/// `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn moehal_engram_layer_v41_flash(
    index: i64,
    out: *mut *mut moehal_engram_layer,
) -> moehal_status {
    const OP: &str = "engram_layer_v41_flash";
    guard(|| {
        if out.is_null() {
            return Err(null_err(OP, "out"));
        }
        // SAFETY: non-null out pointer.
        unsafe { out.write(std::ptr::null_mut()) };
        let i = nonneg(OP, "index", index)?;
        // SAFETY: out checked non-null above.
        unsafe { layer_out(OP, out, engram::v41_flash::layer(i)) }
    })
}

/// Destroy a layer (NULL: no-op). Not thread-safe with respect to other uses of the layer.
///
/// # Safety
/// `layer` is NULL or from a `moehal_engram_layer_*` constructor, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn moehal_engram_layer_destroy(layer: *mut moehal_engram_layer) {
    guard_value((), || {
        if !layer.is_null() {
            // SAFETY: made by Box::into_raw in layer_out.
            drop(unsafe { Box::from_raw(layer) });
        }
    })
}

/// Sizes: N, K, columns C = (N-1)*K, table rows R = sum of primes. Out pointers may be NULL.
/// Thread-safe.
///
/// # Safety
/// `layer` live; each out pointer NULL (skipped) or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn moehal_engram_layer_info(
    layer: *const moehal_engram_layer,
    max_order: *mut i64,
    heads: *mut i64,
    columns: *mut i64,
    rows: *mut u64,
) -> moehal_status {
    guard(|| {
        // SAFETY: caller's contract.
        let l = &unsafe { deref("engram_layer_info", "layer", layer)? }.layer;
        // SAFETY: each pointer NULL (skipped) or valid for a write.
        unsafe {
            if !max_order.is_null() {
                max_order.write(l.max_order() as i64);
            }
            if !heads.is_null() {
                heads.write(l.heads() as i64);
            }
            if !columns.is_null() {
                columns.write(l.columns() as i64);
            }
            if !rows.is_null() {
                rows.write(l.rows());
            }
        }
        Ok(())
    })
}

/// The C primes and their row offsets (exclusive prefix sums) in column order; `capacity` >= C.
/// Either array may be NULL. Thread-safe.
///
/// # Safety
/// `layer` live; `primes` and `offsets` NULL (skipped) or valid for `capacity` writes.
#[no_mangle]
pub unsafe extern "C" fn moehal_engram_layer_primes(
    layer: *const moehal_engram_layer,
    primes: *mut u64,
    offsets: *mut u64,
    capacity: usize,
) -> moehal_status {
    const OP: &str = "engram_layer_primes";
    guard(|| {
        // SAFETY: caller's contract.
        let l = &unsafe { deref(OP, "layer", layer)? }.layer;
        let c = l.columns();
        if capacity < c {
            return Err(Error::invalid(OP, "capacity", format!("{capacity} < columns = {c}")));
        }
        // SAFETY: each pointer NULL (skipped) or valid for `capacity` >= c writes.
        unsafe {
            if !primes.is_null() {
                std::slice::from_raw_parts_mut(primes, c).copy_from_slice(l.primes());
            }
            if !offsets.is_null() {
                std::slice::from_raw_parts_mut(offsets, c).copy_from_slice(l.offsets());
            }
        }
        Ok(())
    })
}

/// The published prime rule: layers * (max_order-1) * heads primes, layer-major, each layer in
/// column order; `capacity` must hold them all. More than 2^20 primes in all is
/// MOEHAL_UNSUPPORTED (moehal's limit, not the contract's). Thread-safe.
///
/// # Safety
/// `out` valid for `capacity` writes.
#[no_mangle]
pub unsafe extern "C" fn moehal_engram_derive_primes(
    vocab_n: u64,
    max_order: i64,
    heads: i64,
    layers: i64,
    out: *mut u64,
    capacity: usize,
) -> moehal_status {
    const OP: &str = "engram_derive_primes";
    guard(|| {
        let (n, k, l) = (
            nonneg(OP, "max_order", max_order)?,
            nonneg(OP, "heads", heads)?,
            nonneg(OP, "layers", layers)?,
        );
        let all: Vec<u64> = engram::derive_primes(vocab_n, n, k, l)?.into_iter().flatten().collect();
        if capacity < all.len() {
            return Err(Error::invalid(
                OP,
                "capacity",
                format!("{capacity} < layers * (max_order-1) * heads = {}", all.len()),
            ));
        }
        if all.is_empty() {
            return Ok(());
        }
        if out.is_null() {
            return Err(null_err(OP, "out"));
        }
        // SAFETY: non-null, valid for `capacity` >= len writes.
        unsafe { std::slice::from_raw_parts_mut(out, all.len()) }.copy_from_slice(&all);
        Ok(())
    })
}

// ------------------------------------------------------------------------------------------
// Ops
// ------------------------------------------------------------------------------------------

/// §1 y[r,:] = row_scale[r] * (x[r,:] @ W_g + bias[g,:]) for the rows r of group g.
/// x [M,K] f32/bf16/f16; w [G,N,K] (MOEHAL_LAYOUT_NK) or [G,K,N] (MOEHAL_LAYOUT_KN), dtype of x;
/// group_end [G] i64 cumulative ends (non-decreasing, last <= M); row_scale [M] f32 or NULL;
/// bias [G,N] dtype of x or NULL; y [M,N] dtype of x (rows >= group_end[G-1] untouched).
///
/// # Safety
/// See the header: live handle, valid DLTensors (NULL for absent optionals), memory valid until
/// the work completes.
#[no_mangle]
pub unsafe extern "C" fn moehal_grouped_gemm(
    backend: *const moehal_backend,
    x: *const DLTensor,
    w: *const DLTensor,
    layout: i32,
    group_end: *const DLTensor,
    row_scale: *const DLTensor,
    bias: *const DLTensor,
    y: *mut DLTensor,
) -> moehal_status {
    guard(|| {
        // SAFETY: header contract (live handle, valid tensor descriptors or NULL).
        let c = unsafe { Ctx::new("grouped_gemm", backend)? };
        let layout = parse_layout(layout)?;
        // SAFETY: as above.
        let (mx, mw, mg, mr, mb, my) = unsafe {
            (
                c.t("x", x)?,
                c.t("w", w)?,
                c.t("group_end", group_end)?,
                c.opt("row_scale", row_scale)?,
                c.opt("bias", bias)?,
                c.t("y", y)?,
            )
        };
        check_no_overlap(
            c.op,
            &refs(&[Some(&mx), Some(&mw), Some(&mg), mr.as_ref(), mb.as_ref()]),
            &[&my],
        )?;
        // SAFETY: tensors checked above; memory validity is the caller's contract.
        let (bx, bw, bg, br, bb, mut by) = unsafe {
            (
                c.wrap(&mx)?,
                c.wrap(&mw)?,
                c.wrap(&mg)?,
                c.wrap_opt(&mr)?,
                c.wrap_opt(&mb)?,
                c.wrap(&my)?,
            )
        };
        let args = GroupedGemm {
            x: view(&bx, &mx),
            w: view(&bw, &mw),
            layout,
            group_end: view(&bg, &mg),
            row_scale: opt_view(&br, &mr),
            bias: opt_view(&bb, &mb),
            y: view_mut(&mut by, &my),
        };
        c.h.be.grouped_gemm(args.validate()?)
    })
}

/// §2 MoE gate. logits [T,E] f32/bf16/f16; bias [E] f32 (selection only) or NULL;
/// ids [T,k] i32 or i64 (i64: written through an i32 scratch, then widened; a copy);
/// weights [T,k] f32; expert_counts [E] i64 histogram of ids or NULL.
///
/// # Safety
/// As `moehal_grouped_gemm`; `config` points to a valid config.
#[no_mangle]
pub unsafe extern "C" fn moehal_router_topk(
    backend: *const moehal_backend,
    logits: *const DLTensor,
    bias: *const DLTensor,
    config: *const moehal_router_config,
    ids: *mut DLTensor,
    weights: *mut DLTensor,
    expert_counts: *mut DLTensor,
) -> moehal_status {
    guard(|| {
        // SAFETY: header contract.
        let c = unsafe { Ctx::new("router_topk", backend)? };
        // SAFETY: header contract.
        let cfg = router_config(unsafe { deref(c.op, "config", config)? })?;
        // SAFETY: header contract.
        let (ml, mb, mi, mw, me) = unsafe {
            (
                c.t("logits", logits)?,
                c.opt("bias", bias)?,
                c.t("ids", ids)?,
                c.t("weights", weights)?,
                c.opt("expert_counts", expert_counts)?,
            )
        };
        check_no_overlap(
            c.op,
            &refs(&[Some(&ml), mb.as_ref()]),
            &refs(&[Some(&mi), Some(&mw), me.as_ref()]),
        )?;
        let io = ids_out(&c, &mi)?;
        // SAFETY: tensors checked; memory validity is the caller's contract.
        let (bl, bb, mut bi, mut bw, mut be) = unsafe {
            (
                c.wrap(&ml)?,
                c.wrap_opt(&mb)?,
                c.wrap(&mi)?,
                c.wrap(&mw)?,
                c.wrap_opt(&me)?,
            )
        };
        let mut scratch = io.scratch;
        let args = RouterTopk {
            config: cfg,
            logits: view(&bl, &ml),
            bias: opt_view(&bb, &mb),
            ids: view_mut(scratch.as_mut().unwrap_or(&mut bi), &io.m),
            weights: view_mut(&mut bw, &mw),
            expert_counts: opt_view_mut(&mut be, &me),
        };
        c.h.be.router_topk(args.validate()?)?;
        match &scratch {
            Some(s) => widen_ids(&c, s, &mut bi, mi.bytes / 8),
            None => Ok(()),
        }
    })
}

/// §2 hash routing (DeepSeek-V4's first layers): ids[t,:] = tid2eid[token_ids[t],:], in table order
/// (a repeated id is two slots). logits [T,E] f32/bf16/f16; tid2eid [V,k] i32, every entry read in
/// [0,E); token_ids [T] i64 in [0,V) (else MOEHAL_INVALID_ARGUMENT, nothing written); config: k,
/// scoring, renormalize, routed_scaling_factor are used, the group fields are ignored; ids [T,k]
/// i32 or i64 (as moehal_router_topk); weights [T,k] f32 = scores of those ids (0 for a non-finite logit), renormalized over the k
/// slots if asked, scaled once; expert_counts [E] i64 histogram of ids or NULL.
///
/// The group fields are not validated either (one gate config may serve both kinds of layers).
///
/// # Safety
/// As `moehal_grouped_gemm`; `config` points to a valid config.
#[no_mangle]
pub unsafe extern "C" fn moehal_router_hash(
    backend: *const moehal_backend,
    logits: *const DLTensor,
    tid2eid: *const DLTensor,
    token_ids: *const DLTensor,
    config: *const moehal_router_config,
    ids: *mut DLTensor,
    weights: *mut DLTensor,
    expert_counts: *mut DLTensor,
) -> moehal_status {
    guard(|| {
        // SAFETY: header contract.
        let c = unsafe { Ctx::new("router_topk", backend)? };
        // SAFETY: header contract.
        let rc = unsafe { deref(c.op, "config", config)? };
        let cfg = RouterConfig {
            topk: nonneg(c.op, "k", rc.k)?,
            scoring: parse_scoring(rc.scoring)?,
            group: None,
            renormalize: rc.renormalize != 0,
            routed_scaling_factor: rc.routed_scaling_factor,
        };
        // SAFETY: header contract.
        let (ml, mt, mx, mi, mw, me) = unsafe {
            (
                c.t("logits", logits)?,
                c.t("tid2eid", tid2eid)?,
                c.t("token_ids", token_ids)?,
                c.t("ids", ids)?,
                c.t("weights", weights)?,
                c.opt("expert_counts", expert_counts)?,
            )
        };
        check_no_overlap(
            c.op,
            &refs(&[Some(&ml), Some(&mt), Some(&mx)]),
            &refs(&[Some(&mi), Some(&mw), me.as_ref()]),
        )?;
        let io = ids_out(&c, &mi)?;
        // SAFETY: tensors checked; memory validity is the caller's contract.
        let (bl, bt, bx, mut bi, mut bw, mut be) = unsafe {
            (
                c.wrap(&ml)?,
                c.wrap(&mt)?,
                c.wrap(&mx)?,
                c.wrap(&mi)?,
                c.wrap(&mw)?,
                c.wrap_opt(&me)?,
            )
        };
        let mut scratch = io.scratch;
        let args = RouterHash {
            config: cfg,
            logits: view(&bl, &ml),
            tid2eid: view(&bt, &mt),
            token_ids: view(&bx, &mx),
            ids: view_mut(scratch.as_mut().unwrap_or(&mut bi), &io.m),
            weights: view_mut(&mut bw, &mw),
            expert_counts: opt_view_mut(&mut be, &me),
        };
        c.h.be.router_hash(args.validate()?)?;
        match &scratch {
            Some(s) => widen_ids(&c, s, &mut bi, mi.bytes / 8),
            None => Ok(()),
        }
    })
}

/// §3 ids [T,k] i32 or i64 in [-1, E) (-1 = dropped; i64 is what torch.topk returns: each id is
/// range-checked, so 2^32 is MOEHAL_INVALID_ARGUMENT, never expert 0, then copied to i32 scratch;
/// on a device backend that copy goes through the host and waits for enqueued work)
/// -> group_end [E] i64, src_token [T*k] i64,
/// slot_row [T,k] i64 (-1 for dropped slots), and x_perm [T*k,H] = x[src_token] when x [T,H]
/// (f32/bf16/f16) is given (x and x_perm both NULL or both given).
///
/// # Safety
/// As `moehal_grouped_gemm`.
#[no_mangle]
pub unsafe extern "C" fn moehal_moe_permute(
    backend: *const moehal_backend,
    ids: *const DLTensor,
    num_experts: i64,
    x: *const DLTensor,
    group_end: *mut DLTensor,
    src_token: *mut DLTensor,
    slot_row: *mut DLTensor,
    x_perm: *mut DLTensor,
) -> moehal_status {
    guard(|| {
        // SAFETY: header contract.
        let c = unsafe { Ctx::new("moe_permute", backend)? };
        let e = nonneg(c.op, "num_experts", num_experts)?;
        // SAFETY: header contract.
        let (mi, mx, mg, ms, mr, mp) = unsafe {
            (
                c.t("ids", ids)?,
                c.opt("x", x)?,
                c.t("group_end", group_end)?,
                c.t("src_token", src_token)?,
                c.t("slot_row", slot_row)?,
                c.opt("x_perm", x_perm)?,
            )
        };
        check_no_overlap(
            c.op,
            &refs(&[Some(&mi), mx.as_ref()]),
            &refs(&[Some(&mg), Some(&ms), Some(&mr), mp.as_ref()]),
        )?;
        if e == 0 {
            return Err(Error::invalid(c.op, "num_experts", "E = 0"));
        }
        if e > i32::MAX as usize {
            return Err(Error::invalid(
                c.op,
                "num_experts",
                format!("E = {e} does not fit the i32 ids"),
            ));
        }
        // SAFETY: tensors checked; memory validity is the caller's contract.
        let (mi, bi) = narrow_ids(&c, &mi, unsafe { c.wrap(&mi)? }, e)?;
        // SAFETY: tensors checked; memory validity is the caller's contract.
        let (bx, mut bg, mut bs, mut br, mut bp) = unsafe {
            (
                c.wrap_opt(&mx)?,
                c.wrap(&mg)?,
                c.wrap(&ms)?,
                c.wrap(&mr)?,
                c.wrap_opt(&mp)?,
            )
        };
        let args = MoePermute {
            num_experts: e,
            ids: view(&bi, &mi),
            x: opt_view(&bx, &mx),
            group_end: view_mut(&mut bg, &mg),
            src_token: view_mut(&mut bs, &ms),
            slot_row: view_mut(&mut br, &mr),
            x_perm: opt_view_mut(&mut bp, &mp),
        };
        c.h.be.moe_permute(args.validate()?)
    })
}

/// §3 out [M,I] = silu(gate) * up with gate = h[:, :I], up = h[:, I:] of h [M,2I] (f32/bf16/f16);
/// `limit` NULL or -> a finite value > 0: gate <= limit and up in [-limit, limit] first.
///
/// # Safety
/// As `moehal_grouped_gemm`; `limit` is NULL or points to a float.
#[no_mangle]
pub unsafe extern "C" fn moehal_swiglu(
    backend: *const moehal_backend,
    h: *const DLTensor,
    limit: *const f32,
    out: *mut DLTensor,
) -> moehal_status {
    guard(|| {
        // SAFETY: header contract.
        let c = unsafe { Ctx::new("swiglu", backend)? };
        // SAFETY: NULL or a valid float (header contract).
        let limit = unsafe { limit.as_ref() }.copied();
        // SAFETY: header contract.
        let (mh, mo) = unsafe { (c.t("h", h)?, c.t("out", out)?) };
        check_no_overlap(c.op, &[&mh], &[&mo])?;
        // SAFETY: tensors checked; memory validity is the caller's contract.
        let (bh, mut bo) = unsafe { (c.wrap(&mh)?, c.wrap(&mo)?) };
        let args = Swiglu {
            h: view(&bh, &mh),
            out: view_mut(&mut bo, &mo),
            limit,
        };
        c.h.be.swiglu(args.validate()?)
    })
}

/// §3 out [T,H] = sum_j weights[t,j] * y_perm[slot_row[t,j]] (j ascending, f32 sums; -1 adds
/// nothing). y_perm [R,H] f32/bf16/f16; slot_row [T,k] i64; weights [T,k] f32; out dtype of y_perm.
///
/// # Safety
/// As `moehal_grouped_gemm`.
#[no_mangle]
pub unsafe extern "C" fn moehal_moe_combine(
    backend: *const moehal_backend,
    y_perm: *const DLTensor,
    slot_row: *const DLTensor,
    weights: *const DLTensor,
    out: *mut DLTensor,
) -> moehal_status {
    guard(|| {
        // SAFETY: header contract.
        let c = unsafe { Ctx::new("moe_combine", backend)? };
        // SAFETY: header contract.
        let (my, ms, mw, mo) = unsafe {
            (
                c.t("y_perm", y_perm)?,
                c.t("slot_row", slot_row)?,
                c.t("weights", weights)?,
                c.t("out", out)?,
            )
        };
        check_no_overlap(c.op, &[&my, &ms, &mw], &[&mo])?;
        // SAFETY: tensors checked; memory validity is the caller's contract.
        let (by, bs, bw, mut bo) = unsafe { (c.wrap(&my)?, c.wrap(&ms)?, c.wrap(&mw)?, c.wrap(&mo)?) };
        let args = MoeCombine {
            y_perm: view(&by, &my),
            slot_row: view(&bs, &ms),
            weights: view(&bw, &mw),
            out: view_mut(&mut bo, &mo),
        };
        c.h.be.moe_combine(args.validate()?)
    })
}

/// §4 ids [T] i64 canonical ids in [0, V'); positions [T] i64 or NULL (a new segment starts where
/// positions[t] <= positions[t-1]); alive [T] u8/bool or NULL; history: history_len <= N-1 host
/// ids before ids[0], oldest first (NULL when 0) -> rows [T, (N-1)*K] i64.
///
/// # Safety
/// As `moehal_grouped_gemm`; `layer` live; `history` valid for `history_len` reads.
#[no_mangle]
pub unsafe extern "C" fn moehal_engram_hash(
    backend: *const moehal_backend,
    layer: *const moehal_engram_layer,
    ids: *const DLTensor,
    positions: *const DLTensor,
    alive: *const DLTensor,
    history: *const i64,
    history_len: usize,
    rows: *mut DLTensor,
) -> moehal_status {
    guard(|| {
        // SAFETY: header contract.
        let c = unsafe { Ctx::new("engram_hash", backend)? };
        // SAFETY: header contract.
        let (l, hist) = unsafe {
            (
                &deref(c.op, "layer", layer)?.layer,
                slice(c.op, "history", history, history_len)?,
            )
        };
        // SAFETY: header contract.
        let (mi, mp, ma, mr) = unsafe {
            (
                c.t("ids", ids)?,
                c.opt("positions", positions)?,
                c.opt("alive", alive)?,
                c.t("rows", rows)?,
            )
        };
        check_no_overlap(c.op, &refs(&[Some(&mi), mp.as_ref(), ma.as_ref()]), &[&mr])?;
        // SAFETY: tensors checked; memory validity is the caller's contract.
        let (bi, bp, ba, mut br) = unsafe { (c.wrap(&mi)?, c.wrap_opt(&mp)?, c.wrap_opt(&ma)?, c.wrap(&mr)?) };
        let args = EngramHash {
            layer: l,
            ids: view(&bi, &mi),
            positions: opt_view(&bp, &mp),
            alive: opt_view(&ba, &ma),
            history: hist,
            rows: view_mut(&mut br, &mr),
        };
        c.h.be.engram_hash(args.validate()?)
    })
}

/// §5 out [T, C*D] = the C table rows of each token (rows [T,C] i64 in [0,R)), concatenated;
/// table [R,D] (f32/bf16/f16) or [R, D + D/32] u8 (fp8), format enum moehal_table_format.
///
/// # Safety
/// As `moehal_grouped_gemm`.
#[no_mangle]
pub unsafe extern "C" fn moehal_gather_rows(
    backend: *const moehal_backend,
    table: *const DLTensor,
    format: i32,
    rows: *const DLTensor,
    out: *mut DLTensor,
) -> moehal_status {
    guard(|| {
        // SAFETY: header contract.
        let c = unsafe { Ctx::new("gather_rows", backend)? };
        let format = parse_format(c.op, format)?;
        // SAFETY: header contract.
        let (mt, mr, mo) = unsafe { (c.t_host_ok("table", table)?, c.t("rows", rows)?, c.t("out", out)?) };
        check_no_overlap(c.op, &[&mt, &mr], &[&mo])?;
        // SAFETY: tensors checked; memory validity is the caller's contract.
        let (bt, br, mut bo) = unsafe { (c.wrap(&mt)?, c.wrap(&mr)?, c.wrap(&mo)?) };
        let args = GatherRows {
            table: view(&bt, &mt),
            format,
            rows: view(&br, &mr),
            out: view_mut(&mut bo, &mo),
        };
        c.h.be.gather_rows(args.validate()?)
    })
}

/// §5 engram_hash then gather_rows, fused where the backend can; table has R = the layer's rows.
///
/// # Safety
/// As `moehal_engram_hash`.
#[no_mangle]
pub unsafe extern "C" fn moehal_engram_lookup(
    backend: *const moehal_backend,
    layer: *const moehal_engram_layer,
    ids: *const DLTensor,
    positions: *const DLTensor,
    alive: *const DLTensor,
    history: *const i64,
    history_len: usize,
    table: *const DLTensor,
    format: i32,
    out: *mut DLTensor,
) -> moehal_status {
    guard(|| {
        // SAFETY: header contract.
        let c = unsafe { Ctx::new("engram_lookup", backend)? };
        let format = parse_format(c.op, format)?;
        // SAFETY: header contract.
        let (l, hist) = unsafe {
            (
                &deref(c.op, "layer", layer)?.layer,
                slice(c.op, "history", history, history_len)?,
            )
        };
        // SAFETY: header contract.
        let (mi, mp, ma, mt, mo) = unsafe {
            (
                c.t("ids", ids)?,
                c.opt("positions", positions)?,
                c.opt("alive", alive)?,
                c.t_host_ok("table", table)?,
                c.t("out", out)?,
            )
        };
        check_no_overlap(c.op, &refs(&[Some(&mi), mp.as_ref(), ma.as_ref(), Some(&mt)]), &[&mo])?;
        // SAFETY: tensors checked; memory validity is the caller's contract.
        let (bi, bp, ba, bt, mut bo) = unsafe {
            (
                c.wrap(&mi)?,
                c.wrap_opt(&mp)?,
                c.wrap_opt(&ma)?,
                c.wrap(&mt)?,
                c.wrap(&mo)?,
            )
        };
        let args = EngramLookup {
            layer: l,
            ids: view(&bi, &mi),
            positions: opt_view(&bp, &mp),
            alive: opt_view(&ba, &ma),
            history: hist,
            table: view(&bt, &mt),
            format,
            out: view_mut(&mut bo, &mo),
        };
        c.h.be.engram_lookup(args.validate()?)
    })
}

/// §6 grouped_gemm with quantized weights (format enum moehal_weight_format). x [M,K]: f32/bf16/f16
/// (weight-only; x_scale NULL; y and bias dtype of x), uint8 e4m3fn with fp8_block (x_scale
/// [M,ceil(K/128)] f32 or uint8 E8M0), or int8 with int8 (x_scale [M] f32, K <= 131071); y [M,N]
/// f32/bf16/f16 (rows >= group_end[G-1] untouched); group_end, row_scale, bias as moehal_grouped_gemm.
///
/// # Safety
/// As `moehal_grouped_gemm`; `x_scale` NULL for float `x`.
#[no_mangle]
pub unsafe extern "C" fn moehal_grouped_gemm_quant(
    backend: *const moehal_backend,
    x: *const DLTensor,
    x_scale: *const DLTensor,
    w_format: i32,
    w: *const DLTensor,
    w_scale: *const DLTensor,
    group_end: *const DLTensor,
    row_scale: *const DLTensor,
    bias: *const DLTensor,
    y: *mut DLTensor,
) -> moehal_status {
    guard(|| {
        // SAFETY: header contract (live handle, valid tensor descriptors or NULL).
        let c = unsafe { Ctx::new("grouped_gemm", backend)? };
        let w_format = parse_weight_format(w_format)?;
        // SAFETY: as above.
        let (mx, mxs, mw, mws, mg, mr, mb, my) = unsafe {
            (
                c.t("x", x)?,
                c.opt("x_scale", x_scale)?,
                c.t("w", w)?,
                c.t("w_scale", w_scale)?,
                c.t("group_end", group_end)?,
                c.opt("row_scale", row_scale)?,
                c.opt("bias", bias)?,
                c.t("y", y)?,
            )
        };
        check_no_overlap(
            c.op,
            &refs(&[
                Some(&mx),
                mxs.as_ref(),
                Some(&mw),
                Some(&mws),
                Some(&mg),
                mr.as_ref(),
                mb.as_ref(),
            ]),
            &[&my],
        )?;
        // SAFETY: tensors checked above; memory validity is the caller's contract.
        let (bx, bxs, bw, bws, bg, br, bb, mut by) = unsafe {
            (
                c.wrap(&mx)?,
                c.wrap_opt(&mxs)?,
                c.wrap(&mw)?,
                c.wrap(&mws)?,
                c.wrap(&mg)?,
                c.wrap_opt(&mr)?,
                c.wrap_opt(&mb)?,
                c.wrap(&my)?,
            )
        };
        let args = GroupedGemmQ {
            x: view(&bx, &mx),
            x_scale: opt_view(&bxs, &mxs),
            w_format,
            w: view(&bw, &mw),
            w_scale: view(&bws, &mws),
            group_end: view(&bg, &mg),
            row_scale: opt_view(&br, &mr),
            bias: opt_view(&bb, &mb),
            y: view_mut(&mut by, &my),
        };
        c.h.be.grouped_gemm_quant(args.validate()?)
    })
}

/// §6 x [M,K] f32/bf16/f16 -> xq [M,K] uint8 e4m3fn, x_scale [M,ceil(K/128)] f32 or uint8 E8M0 (the
/// scale tensor's dtype picks the format); per 1x128 group, amax/448 (E8M0: next power of two).
///
/// # Safety
/// As `moehal_grouped_gemm`.
#[no_mangle]
pub unsafe extern "C" fn moehal_quantize_fp8(
    backend: *const moehal_backend,
    x: *const DLTensor,
    xq: *mut DLTensor,
    x_scale: *mut DLTensor,
) -> moehal_status {
    guard(|| {
        // SAFETY: header contract.
        let c = unsafe { Ctx::new("quantize_fp8", backend)? };
        // SAFETY: header contract.
        let (mx, mq, ms) = unsafe { (c.t("x", x)?, c.t("xq", xq)?, c.t("x_scale", x_scale)?) };
        check_no_overlap(c.op, &refs(&[Some(&mx)]), &[&mq, &ms])?;
        // SAFETY: tensors checked; memory validity is the caller's contract.
        let (bx, mut bq, mut bs) = unsafe { (c.wrap(&mx)?, c.wrap(&mq)?, c.wrap(&ms)?) };
        let args = QuantizeFp8 {
            x: view(&bx, &mx),
            xq: view_mut(&mut bq, &mq),
            x_scale: view_mut(&mut bs, &ms),
        };
        c.h.be.quantize_fp8(args.validate()?)
    })
}

/// §6 x [M,K] f32/bf16/f16 -> xq [M,K] int8, x_scale [M] f32 (amax/127 per row, ties to even).
///
/// # Safety
/// As `moehal_grouped_gemm`.
#[no_mangle]
pub unsafe extern "C" fn moehal_quantize_int8(
    backend: *const moehal_backend,
    x: *const DLTensor,
    xq: *mut DLTensor,
    x_scale: *mut DLTensor,
) -> moehal_status {
    guard(|| {
        // SAFETY: header contract.
        let c = unsafe { Ctx::new("quantize_int8", backend)? };
        // SAFETY: header contract.
        let (mx, mq, ms) = unsafe { (c.t("x", x)?, c.t("xq", xq)?, c.t("x_scale", x_scale)?) };
        check_no_overlap(c.op, &refs(&[Some(&mx)]), &[&mq, &ms])?;
        // SAFETY: tensors checked; memory validity is the caller's contract.
        let (bx, mut bq, mut bs) = unsafe { (c.wrap(&mx)?, c.wrap(&mq)?, c.wrap(&ms)?) };
        let args = QuantizeInt8 {
            x: view(&bx, &mx),
            xq: view_mut(&mut bq, &mq),
            x_scale: view_mut(&mut bs, &ms),
        };
        c.h.be.quantize_int8(args.validate()?)
    })
}
