//! The C ABI of the third group of aclnn primitives of issue 13 (finite checks, masks, selection,
//! tensor add/sub, scatter-add, top-k). Signatures exactly as the CANN pages print them (cited per
//! function); the rules live in `crate::ops::{select, tensor_arith, index, topk}` and RULES.md
//! §Primitives, third group. Their prototypes are in `moehal_acl.h` too, so `check_sig!` pins each
//! one to the header's typedef.

use super::prims::{aclScalar, prim_one};
use std::ffi::c_void;

use super::{launch, State};
use crate::ops::Prim;
use crate::sys;

/// `aclnnStatus aclnnIsFiniteGetWorkspaceSize(const aclTensor *self, aclTensor *out, uint64_t
/// *workspaceSize, aclOpExecutor **executor)` ([HA 850alpha002 aclnnIsFinite.md]; rules in
/// `Prim::is_finite`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnIsFiniteGetWorkspaceSize(
    self_: *const sys::aclTensor,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| Prim::is_finite(s.desc(self_, "self")?, s.desc(out, "out")?);
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnLogicalNotGetWorkspaceSize(const aclTensor *self, aclTensor *out, uint64_t
/// *workspaceSize, aclOpExecutor **executor)` ([HA canncommercial/800
/// aclnnLogicalNot&aclnnInplaceLogicalNot.md]; rules in `Prim::logical_not`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnLogicalNotGetWorkspaceSize(
    self_: *const sys::aclTensor,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| Prim::logical_not(false, s.desc(self_, "self")?, s.desc(out, "out")?);
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnInplaceLogicalNotGetWorkspaceSize(aclTensor *selfRef, uint64_t *workspaceSize,
/// aclOpExecutor **executor)` (same page): selfRef is the output.
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceLogicalNotGetWorkspaceSize(
    self_ref: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        let x = s.desc(self_ref, "selfRef")?;
        Prim::logical_not(true, x.clone(), x)
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnSWhereGetWorkspaceSize(const aclTensor *condition, const aclTensor *self,
/// const aclTensor *other, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor)`
/// ([HA 83RC1 aclnnSWhere.md]; rules in `Prim::s_where`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnSWhereGetWorkspaceSize(
    condition: *const sys::aclTensor,
    self_: *const sys::aclTensor,
    other: *const sys::aclTensor,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::s_where(
            s.desc(condition, "condition")?,
            s.desc(self_, "self")?,
            s.desc(other, "other")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// Phase one of the four add / sub forms.
///
/// # Safety
/// As the exported functions.
unsafe fn arith_one(
    sub: bool,
    inplace: bool,
    a: *const sys::aclTensor,
    b: *const sys::aclTensor,
    alpha: *const aclScalar,
    out: *const sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        let x = s.desc(a, if inplace { "selfRef" } else { "self" })?;
        let o = if inplace { x.clone() } else { s.desc(out, "out")? };
        Prim::tensor_arith(sub, inplace, x, s.desc(b, "other")?, s.scalar(alpha, "alpha")?, o)
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnAddGetWorkspaceSize(const aclTensor* self, const aclTensor* other, const
/// aclScalar* alpha, aclTensor* out, uint64_t* workspaceSize, aclOpExecutor** executor)` ([HA
/// canncommercial/800 aclnnAdd&aclnnInplaceAdd.md]; rules in `Prim::tensor_arith`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnAddGetWorkspaceSize(
    self_: *const sys::aclTensor,
    other: *const sys::aclTensor,
    alpha: *const aclScalar,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    // SAFETY: forwarded caller promise.
    unsafe { arith_one(false, false, self_, other, alpha, out, workspace_size, executor) }
}

/// `aclnnStatus aclnnInplaceAddGetWorkspaceSize(const aclTensor* selfRef, const aclTensor* other,
/// const aclScalar* alpha, uint64_t* workspaceSize, aclOpExecutor** executor)` (same page; selfRef
/// `const` as printed).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceAddGetWorkspaceSize(
    self_ref: *const sys::aclTensor,
    other: *const sys::aclTensor,
    alpha: *const aclScalar,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    // SAFETY: forwarded caller promise.
    unsafe { arith_one(false, true, self_ref, other, alpha, self_ref, workspace_size, executor) }
}

/// `aclnnStatus aclnnSubGetWorkspaceSize(const aclTensor *self, const aclTensor *other, const
/// aclScalar *alpha, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA
/// canncommercial/800 aclnnSub&aclnnInplaceSub.md]; rules in `Prim::tensor_arith`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnSubGetWorkspaceSize(
    self_: *const sys::aclTensor,
    other: *const sys::aclTensor,
    alpha: *const aclScalar,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    // SAFETY: forwarded caller promise.
    unsafe { arith_one(true, false, self_, other, alpha, out, workspace_size, executor) }
}

/// `aclnnStatus aclnnInplaceSubGetWorkspaceSize(aclTensor *selfRef, const aclTensor *other, const
/// aclScalar *alpha, uint64_t *workspaceSize, aclOpExecutor **executor)` (same page, as the 8.0
/// page prints it; the ops-math master page adds `const` to selfRef).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceSubGetWorkspaceSize(
    self_ref: *mut sys::aclTensor,
    other: *const sys::aclTensor,
    alpha: *const aclScalar,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    // SAFETY: forwarded caller promise.
    unsafe { arith_one(true, true, self_ref, other, alpha, self_ref, workspace_size, executor) }
}

/// `aclnnStatus aclnnScatterAddGetWorkspaceSize(const aclTensor* self, int64_t dim, const
/// aclTensor* index, const aclTensor* src, aclTensor* out, uint64_t* workspaceSize, aclOpExecutor**
/// executor)` ([HA canncommercial/800 aclnnScatterAdd.md]; rules in `Prim::scatter_add`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnScatterAddGetWorkspaceSize(
    self_: *const sys::aclTensor,
    dim: i64,
    index: *const sys::aclTensor,
    src: *const sys::aclTensor,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::scatter_add(
            s.desc(self_, "self")?,
            dim,
            s.desc(index, "index")?,
            s.desc(src, "src")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnTopkGetWorkspaceSize(const aclTensor *self, int64_t k, int64_t dim, bool
/// largest, bool sorted, aclTensor *valuesOut, aclTensor *indicesOut, uint64_t *workspaceSize,
/// aclOpExecutor **executor)` ([HA canncommercial/800 aclnnTopk.md]; rules in `Prim::topk`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnTopkGetWorkspaceSize(
    self_: *const sys::aclTensor,
    k: i64,
    dim: i64,
    largest: bool,
    sorted: bool,
    values_out: *mut sys::aclTensor,
    indices_out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::topk(
            s.desc(self_, "self")?,
            k,
            dim,
            largest,
            sorted,
            s.desc(values_out, "valuesOut")?,
            s.desc(indices_out, "indicesOut")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

launcher!(
    aclnnIsFinite,
    aclnnLogicalNot,
    aclnnInplaceLogicalNot,
    aclnnSWhere,
    aclnnAdd,
    aclnnInplaceAdd,
    aclnnSub,
    aclnnInplaceSub,
    aclnnScatterAdd,
    aclnnTopk
);

check_sig! {
    aclnnIsFiniteGetWorkspaceSize => aclnnIsFiniteGetWorkspaceSizeFn, aclnnIsFinite => aclnnIsFiniteFn,
    aclnnLogicalNotGetWorkspaceSize => aclnnLogicalNotGetWorkspaceSizeFn, aclnnLogicalNot => aclnnLogicalNotFn,
    aclnnInplaceLogicalNotGetWorkspaceSize => aclnnInplaceLogicalNotGetWorkspaceSizeFn,
    aclnnInplaceLogicalNot => aclnnInplaceLogicalNotFn,
    aclnnSWhereGetWorkspaceSize => aclnnSWhereGetWorkspaceSizeFn, aclnnSWhere => aclnnSWhereFn,
    aclnnAddGetWorkspaceSize => aclnnAddGetWorkspaceSizeFn, aclnnAdd => aclnnAddFn,
    aclnnInplaceAddGetWorkspaceSize => aclnnInplaceAddGetWorkspaceSizeFn, aclnnInplaceAdd => aclnnInplaceAddFn,
    aclnnSubGetWorkspaceSize => aclnnSubGetWorkspaceSizeFn, aclnnSub => aclnnSubFn,
    aclnnInplaceSubGetWorkspaceSize => aclnnInplaceSubGetWorkspaceSizeFn, aclnnInplaceSub => aclnnInplaceSubFn,
    aclnnScatterAddGetWorkspaceSize => aclnnScatterAddGetWorkspaceSizeFn, aclnnScatterAdd => aclnnScatterAddFn,
    aclnnTopkGetWorkspaceSize => aclnnTopkGetWorkspaceSizeFn, aclnnTopk => aclnnTopkFn,
}
