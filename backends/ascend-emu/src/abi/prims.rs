//! The C ABI of the general aclnn primitives (issue 13): `aclCreateScalar` / `aclDestroyScalar`
//! and each primitive's two phases. Signatures exactly as the CANN pages print them (cited per
//! function); the rules live in [`crate::ops::prim`] and RULES.md §Primitives. Those the backend's
//! `moehal_acl.h` declares are pinned to its typedefs by `check_sig!` (end of this file).

use std::ffi::c_void;

use super::{fail, launch, lock, phase_one, State};
use crate::ops::{Binary, Fail, Op, Prim, Scalar, Unary};
use crate::sys;
use crate::tensor::elem_size;

/// The opaque `aclScalar` of `acl_meta.h` / aclnn's `aclnn/acl_meta.h` (a handle; its layout is
/// private to the library): the header's type, so `check_sig!` can pin the scalar-taking functions.
pub use crate::sys::aclScalar;

impl State {
    pub(super) fn scalar(&self, s: *const aclScalar, what: &str) -> Result<Option<Scalar>, Fail> {
        if s.is_null() {
            return Ok(None);
        }
        match self.scalars.get(&(s as usize)) {
            Some(v) => Ok(Some(*v)),
            None => Err((
                sys::ACLNN_ERR_PARAM_INVALID,
                format!("{what}: {s:p} is not a live aclScalar"),
            )),
        }
    }
    /// A live aclIntArray's values, `None` for NULL, 161002 for anything else.
    pub(super) fn int_array(&self, a: *const sys::aclIntArray, what: &str) -> Result<Option<Vec<i64>>, Fail> {
        if a.is_null() {
            return Ok(None);
        }
        match self.int_arrays.get(&(a as usize)) {
            Some(v) => Ok(Some(v.clone())),
            None => Err((
                sys::ACLNN_ERR_PARAM_INVALID,
                format!("{what}: {a:p} is not a live aclIntArray"),
            )),
        }
    }
}

/// `aclScalar *aclCreateScalar(void *value, aclDataType dataType)` ([HA canncommercial/800
/// operatorlist_00017]): copies `*value` (host memory, `dataType`'s size) into a new scalar.
/// Returns NULL ("失败则返回nullptr") for a NULL value or a type the emulator does not model
/// (COMPLEX, STRING, UNDEFINED), with the reason in `aclGetRecentErrMsg`.
///
/// # Safety
/// `value` must be NULL or readable for the size of `data_type`.
#[no_mangle]
pub unsafe extern "C" fn aclCreateScalar(value: *mut c_void, data_type: sys::aclDataType) -> *mut aclScalar {
    let Some(n) = elem_size(data_type) else {
        fail(
            sys::ACLNN_ERR_PARAM_INVALID,
            format!("aclCreateScalar: data type {data_type} not supported"),
        );
        return std::ptr::null_mut();
    };
    if value.is_null() {
        fail(sys::ACLNN_ERR_PARAM_NULLPTR, "aclCreateScalar: value is NULL");
        return std::ptr::null_mut();
    }
    // SAFETY: non-null; the caller promises `n` readable bytes (the size of its data type).
    let bytes = unsafe { std::slice::from_raw_parts(value.cast::<u8>(), n) };
    let Some(v) = Scalar::decode(data_type, bytes) else {
        fail(
            sys::ACLNN_ERR_PARAM_INVALID,
            format!("aclCreateScalar: data type {data_type} not supported"),
        );
        return std::ptr::null_mut();
    };
    let mut s = lock();
    let h = s.handle();
    s.scalars.insert(h, v);
    h as *mut aclScalar
}

/// `aclnnStatus aclDestroyScalar(const aclScalar *scalar)` ([HA canncommercial/800
/// operatorlist_00017] pairs it with aclCreateScalar). Anything but a live scalar → 161002
/// (a second destroy included: UNDOCUMENTED, strict).
#[no_mangle]
pub extern "C" fn aclDestroyScalar(scalar: *const aclScalar) -> sys::aclnnStatus {
    if lock().scalars.remove(&(scalar as usize)).is_none() {
        return fail(
            sys::ACLNN_ERR_PARAM_INVALID,
            format!("aclDestroyScalar: {scalar:p} is not a live aclScalar"),
        );
    }
    sys::ACLNN_SUCCESS
}

/// Phase one for a primitive: build it under the lock and hand it to the common checks.
///
/// # Safety
/// `ws` and `exec` must be NULL or writable.
pub(super) unsafe fn prim_one(
    build: impl FnOnce(&State) -> Result<Prim, Fail>,
    ws: *mut u64,
    exec: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let op = build(&s).and_then(Prim::check_empty).map(Op::Prim);
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, ws, exec) }
}

/// `aclnnClampGetWorkspaceSize(const aclTensor *self, const aclScalar *clipValueMin, const
/// aclScalar *clipValueMax, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor)`
/// ([HA canncommercial/800 aclnnClamp.md]; rules in [`Prim::clamp`]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnClampGetWorkspaceSize(
    self_: *const sys::aclTensor,
    clip_value_min: *const aclScalar,
    clip_value_max: *const aclScalar,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::clamp(
            "aclnnClamp",
            s.desc(self_, "self")?,
            s.scalar(clip_value_min, "clipValueMin")?,
            s.scalar(clip_value_max, "clipValueMax")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnClampMinGetWorkspaceSize(const aclTensor *self, const aclScalar *clipValueMin, aclTensor
/// *out, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA CANNCommunityEdition/81RC1beta1
/// aclnnClampMin.md]; return codes [HA Atlas200IDKA2 23.0.RC2 aclcppdevg_03_0251]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnClampMinGetWorkspaceSize(
    self_: *const sys::aclTensor,
    clip_value_min: *const aclScalar,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::clamp(
            "aclnnClampMin",
            s.desc(self_, "self")?,
            s.scalar(clip_value_min, "clipValueMin")?,
            None,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnClampMaxGetWorkspaceSize(const aclTensor *self, const aclScalar *clipValueMax, aclTensor
/// *out, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA Atlas200IDKA2 23.0.RC2
/// aclcppdevg_03_0249]; [HA canncommercial/800 aclnnClampMax.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnClampMaxGetWorkspaceSize(
    self_: *const sys::aclTensor,
    clip_value_max: *const aclScalar,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::clamp(
            "aclnnClampMax",
            s.desc(self_, "self")?,
            None,
            s.scalar(clip_value_max, "clipValueMax")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnMulsGetWorkspaceSize(const aclTensor *self, const aclScalar *other, aclTensor *out,
/// uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA canncommercial/800
/// aclnnMuls&aclnnInplaceMuls.md]; rules in [`Prim::muls`]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnMulsGetWorkspaceSize(
    self_: *const sys::aclTensor,
    other: *const aclScalar,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::muls(
            "aclnnMuls",
            s.desc(self_, "self")?,
            s.scalar(other, "other")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnInplaceMulsGetWorkspaceSize(aclTensor *selfRef, const aclScalar *other, uint64_t
/// *workspaceSize, aclOpExecutor **executor)` (same page).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceMulsGetWorkspaceSize(
    self_ref: *mut sys::aclTensor,
    other: *const aclScalar,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        let x = s.desc(self_ref, "selfRef")?;
        Prim::muls("aclnnInplaceMuls", x.clone(), s.scalar(other, "other")?, x)
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnMulGetWorkspaceSize(const aclTensor *self, const aclTensor *other, aclTensor *out,
/// uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA canncommercial/800
/// aclnnMul&aclnnInplaceMul.md]; rules in [`Prim::binary`]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnMulGetWorkspaceSize(
    self_: *const sys::aclTensor,
    other: *const sys::aclTensor,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::binary(
            Binary::Mul,
            false,
            s.desc(self_, "self")?,
            s.desc(other, "other")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnDivGetWorkspaceSize(const aclTensor *self, const aclTensor *other, aclTensor *out,
/// uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA canncommercial/800 aclnnDiv&aclnnInplaceDiv.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnDivGetWorkspaceSize(
    self_: *const sys::aclTensor,
    other: *const sys::aclTensor,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::binary(
            Binary::Div,
            false,
            s.desc(self_, "self")?,
            s.desc(other, "other")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnSigmoidGetWorkspaceSize(const aclTensor *self, aclTensor *out, uint64_t *workspaceSize,
/// aclOpExecutor **executor)` ([HA canncommercial/800 aclnnSigmoid&aclnnInplaceSigmoid.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnSigmoidGetWorkspaceSize(
    self_: *const sys::aclTensor,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| Prim::unary(Unary::Sigmoid, false, s.desc(self_, "self")?, s.desc(out, "out")?);
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnSqrtGetWorkspaceSize(const aclTensor *self, aclTensor *out, uint64_t *workspaceSize,
/// aclOpExecutor **executor)` ([HA canncommercial/800 aclnnSqrt&aclnnInplaceSqrt.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnSqrtGetWorkspaceSize(
    self_: *const sys::aclTensor,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| Prim::unary(Unary::Sqrt, false, s.desc(self_, "self")?, s.desc(out, "out")?);
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnSoftplusGetWorkspaceSize(const aclTensor *self, const aclScalar *beta, const aclScalar
/// *threshold, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA
/// canncommercial/800 aclnnSoftplus.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnSoftplusGetWorkspaceSize(
    self_: *const sys::aclTensor,
    beta: *const aclScalar,
    threshold: *const aclScalar,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::softplus(
            s.desc(self_, "self")?,
            s.scalar(beta, "beta")?,
            s.scalar(threshold, "threshold")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnSoftmaxGetWorkspaceSize(const aclTensor *self, int64_t dim, aclTensor *out, uint64_t
/// *workspaceSize, aclOpExecutor **executor)` ([HA canncommercial/800 aclnnSoftmax.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnSoftmaxGetWorkspaceSize(
    self_: *const sys::aclTensor,
    dim: i64,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| Prim::softmax(s.desc(self_, "self")?, dim, s.desc(out, "out")?);
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnReduceSumGetWorkspaceSize(const aclTensor *self, const aclIntArray *dims, bool keepDims,
/// aclDataType dtype, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA
/// canncommercial/800 aclnnReduceSum.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnReduceSumGetWorkspaceSize(
    self_: *const sys::aclTensor,
    dims: *const sys::aclIntArray,
    keep_dims: bool,
    dtype: sys::aclDataType,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::reduce_sum(
            s.desc(self_, "self")?,
            s.int_array(dims, "dims")?,
            keep_dims,
            dtype,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnGatherGetWorkspaceSize(const aclTensor *self, const int64_t dim, const aclTensor *index,
/// aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA canncommercial/800
/// aclnnGather.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnGatherGetWorkspaceSize(
    self_: *const sys::aclTensor,
    dim: i64,
    index: *const sys::aclTensor,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::gather(
            s.desc(self_, "self")?,
            dim,
            s.desc(index, "index")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnInplaceMaskedFillScalarGetWorkspaceSize(aclTensor *selfRef, const aclTensor *mask, const
/// aclScalar *value, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA canncommercial/800
/// aclnnInplaceMaskedFillScalar.md]; only the in-place form is documented).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceMaskedFillScalarGetWorkspaceSize(
    self_ref: *mut sys::aclTensor,
    mask: *const sys::aclTensor,
    value: *const aclScalar,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::masked_fill(
            s.desc(self_ref, "selfRef")?,
            s.desc(mask, "mask")?,
            s.scalar(value, "value")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnCumsumGetWorkspaceSize(const aclTensor *self, int64_t dim, aclDataType dtype, aclTensor
/// *out, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA canncommercial/800
/// aclnnCumsum.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnCumsumGetWorkspaceSize(
    self_: *const sys::aclTensor,
    dim: i64,
    dtype: sys::aclDataType,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| Prim::cumsum(s.desc(self_, "self")?, dim, dtype, s.desc(out, "out")?);
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnEqScalarGetWorkspaceSize(const aclTensor *self, const aclScalar *other, aclTensor *out,
/// uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA canncommercial/800
/// aclnnEqScalar&aclnnInplaceEqScalar.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnEqScalarGetWorkspaceSize(
    self_: *const sys::aclTensor,
    other: *const aclScalar,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| Prim::eq_scalar(s.desc(self_, "self")?, s.scalar(other, "other")?, s.desc(out, "out")?);
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnInplaceZeroGetWorkspaceSize(aclTensor *selfRef, uint64_t *workspaceSize, aclOpExecutor
/// **executor)` ([HA canncommercial/800 aclnnInplaceZero.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceZeroGetWorkspaceSize(
    self_ref: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| Prim::zero(s.desc(self_ref, "selfRef")?);
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnDivsGetWorkspaceSize(const aclTensor *self, const aclScalar *other, aclTensor *out,
/// uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA canncommercial/800
/// aclnnDivs&aclnnInplaceDivs.md]; rules in [`Prim::muls`]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnDivsGetWorkspaceSize(
    self_: *const sys::aclTensor,
    other: *const aclScalar,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::muls(
            "aclnnDivs",
            s.desc(self_, "self")?,
            s.scalar(other, "other")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnInplaceDivsGetWorkspaceSize(aclTensor *selfRef, const aclScalar *other, uint64_t
/// *workspaceSize, aclOpExecutor **executor)` (same page).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceDivsGetWorkspaceSize(
    self_ref: *mut sys::aclTensor,
    other: *const aclScalar,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        let x = s.desc(self_ref, "selfRef")?;
        Prim::muls("aclnnInplaceDivs", x.clone(), s.scalar(other, "other")?, x)
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnInplaceDivGetWorkspaceSize(aclTensor *selfRef, const aclTensor *other, uint64_t
/// *workspaceSize, aclOpExecutor **executor)` ([HA canncommercial/800 aclnnDiv&aclnnInplaceDiv.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceDivGetWorkspaceSize(
    self_ref: *mut sys::aclTensor,
    other: *const sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        let x = s.desc(self_ref, "selfRef")?;
        Prim::binary(Binary::Div, true, x.clone(), s.desc(other, "other")?, x)
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnInplaceSigmoidGetWorkspaceSize(aclTensor *selfRef, uint64_t *workspaceSize, aclOpExecutor
/// **executor)` ([HA canncommercial/800 aclnnSigmoid&aclnnInplaceSigmoid.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceSigmoidGetWorkspaceSize(
    self_ref: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        let x = s.desc(self_ref, "selfRef")?;
        Prim::unary(Unary::Sigmoid, true, x.clone(), x)
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnInplaceSqrtGetWorkspaceSize(aclTensor *self, uint64_t *workspaceSize, aclOpExecutor
/// **executor)` ([HA canncommercial/800 aclnnSqrt&aclnnInplaceSqrt.md]).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceSqrtGetWorkspaceSize(
    self_: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        let x = s.desc(self_, "self")?;
        Prim::unary(Unary::Sqrt, true, x.clone(), x)
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

launcher!(
    aclnnClamp,
    aclnnClampMin,
    aclnnClampMax,
    aclnnMuls,
    aclnnInplaceMuls,
    aclnnMul,
    aclnnDiv,
    aclnnSigmoid,
    aclnnSqrt,
    aclnnSoftplus,
    aclnnSoftmax,
    aclnnReduceSum,
    aclnnGather,
    aclnnInplaceMaskedFillScalar,
    aclnnCumsum,
    aclnnEqScalar,
    aclnnInplaceZero,
    aclnnDivs,
    aclnnInplaceDivs,
    aclnnInplaceDiv,
    aclnnInplaceSigmoid,
    aclnnInplaceSqrt
);

// The primitives the backend's header declares: each export has the header's signature.
check_sig! {
    aclnnClampGetWorkspaceSize => aclnnClampGetWorkspaceSizeFn, aclnnClamp => aclnnClampFn,
    aclnnClampMaxGetWorkspaceSize => aclnnClampMaxGetWorkspaceSizeFn, aclnnClampMax => aclnnClampMaxFn,
    aclnnEqScalarGetWorkspaceSize => aclnnEqScalarGetWorkspaceSizeFn, aclnnEqScalar => aclnnEqScalarFn,
    aclnnInplaceMaskedFillScalarGetWorkspaceSize => aclnnInplaceMaskedFillScalarGetWorkspaceSizeFn, aclnnInplaceMaskedFillScalar => aclnnInplaceMaskedFillScalarFn,
    aclnnSoftmaxGetWorkspaceSize => aclnnSoftmaxGetWorkspaceSizeFn, aclnnSoftmax => aclnnSoftmaxFn,
    aclnnSigmoidGetWorkspaceSize => aclnnSigmoidGetWorkspaceSizeFn, aclnnSigmoid => aclnnSigmoidFn,
    aclnnGatherGetWorkspaceSize => aclnnGatherGetWorkspaceSizeFn, aclnnGather => aclnnGatherFn,
    aclnnReduceSumGetWorkspaceSize => aclnnReduceSumGetWorkspaceSizeFn, aclnnReduceSum => aclnnReduceSumFn,
    aclnnDivGetWorkspaceSize => aclnnDivGetWorkspaceSizeFn, aclnnDiv => aclnnDivFn,
    aclnnMulsGetWorkspaceSize => aclnnMulsGetWorkspaceSizeFn, aclnnMuls => aclnnMulsFn,
}
