//! The C ABI of the second group of aclnn primitives of issue 13 (sorting, ranges, scatters,
//! integer arithmetic: the pieces of a device-side moe_permute). Signatures exactly as the CANN
//! pages print them (cited per function); the rules live in `crate::ops::{sort, arith, index}`
//! and RULES.md §Primitives (SO*, AS*, AR*, ...). Their prototypes are in `moehal_acl.h` too, so
//! `check_sig!` pins each one to the header's typedef.

use super::prims::{aclScalar, prim_one};
use std::ffi::c_void;

use super::{launch, State};
use crate::ops::{Prim, ScalarOp};
use crate::sys;

/// `aclnnStatus aclnnSortGetWorkspaceSize(const aclTensor *self, bool stable, int64_t dim, bool
/// descending, aclTensor *valuesOut, aclTensor *indicesOut, uint64_t *workspaceSize, aclOpExecutor
/// **executor)` ([OM math/sort/docs/aclnnSort.md]; [HA 82RC1alpha002 aclnnSort.md]; rules in
/// `Prim::sort`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnSortGetWorkspaceSize(
    self_: *const sys::aclTensor,
    stable: bool,
    dim: i64,
    descending: bool,
    values_out: *mut sys::aclTensor,
    indices_out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::sort(
            s.desc(self_, "self")?,
            stable,
            dim,
            descending,
            s.desc(values_out, "valuesOut")?,
            s.desc(indices_out, "indicesOut")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnArgsortGetWorkspaceSize(const aclTensor *self, int64_t dim, bool descending,
/// aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA Atlas200IDKA2
/// 23.0.RC2 aclcppdevg_03_0214]; [OM math/sort/op_api/aclnn_argsort.h]; rules in `Prim::argsort`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnArgsortGetWorkspaceSize(
    self_: *const sys::aclTensor,
    dim: i64,
    descending: bool,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| Prim::argsort(s.desc(self_, "self")?, dim, descending, s.desc(out, "out")?);
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnArangeGetWorkspaceSize(const aclScalar *start, const aclScalar *end, const
/// aclScalar *step, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA
/// canncommercial/800 aclnnArange.md]; [OM math/range/docs/aclnnArange.md]; rules in
/// `Prim::arange`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnArangeGetWorkspaceSize(
    start: *const aclScalar,
    end: *const aclScalar,
    step: *const aclScalar,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::arange(
            s.scalar(start, "start")?,
            s.scalar(end, "end")?,
            s.scalar(step, "step")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnSearchSortedGetWorkspaceSize(const aclTensor *sortedSequence, const aclTensor
/// *self, bool outInt32, bool right, const aclTensor *sorter, aclTensor *out, uint64_t
/// *workspaceSize, aclOpExecutor **executor)` ([OM math/search_sorted/docs/aclnnSearchSorted.md];
/// [HA 83RC1 aclnnSearchSorted.md]; rules in `Prim::search_sorted`). sorter may be NULL.
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnSearchSortedGetWorkspaceSize(
    sorted_sequence: *const sys::aclTensor,
    self_: *const sys::aclTensor,
    out_int32: bool,
    right: bool,
    sorter: *const sys::aclTensor,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::search_sorted(
            s.desc(sorted_sequence, "sortedSequence")?,
            s.desc(self_, "self")?,
            out_int32,
            right,
            s.desc(sorter, "sorter")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnScatterGetWorkspaceSize(const aclTensor* self, int64_t dim, const aclTensor*
/// index, const aclTensor* src, int64_t reduce, aclTensor* out, uint64_t* workspaceSize,
/// aclOpExecutor** executor)` ([HA canncommercial/800 aclnnScatter&aclnnInplaceScatter.md]; rules
/// in `Prim::scatter`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnScatterGetWorkspaceSize(
    self_: *const sys::aclTensor,
    dim: i64,
    index: *const sys::aclTensor,
    src: *const sys::aclTensor,
    reduce: i64,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::scatter(
            false,
            s.desc(self_, "self")?,
            dim,
            s.desc(index, "index")?,
            s.desc(src, "src")?,
            reduce,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnInplaceScatterGetWorkspaceSize(aclTensor* selfRef, int64_t dim, const
/// aclTensor* index, const aclTensor* src, int64_t reduce, uint64_t* workspaceSize, aclOpExecutor**
/// executor)` (same page): selfRef is the output.
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceScatterGetWorkspaceSize(
    self_ref: *mut sys::aclTensor,
    dim: i64,
    index: *const sys::aclTensor,
    src: *const sys::aclTensor,
    reduce: i64,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        let x = s.desc(self_ref, "selfRef")?;
        Prim::scatter(
            true,
            x.clone(),
            dim,
            s.desc(index, "index")?,
            s.desc(src, "src")?,
            reduce,
            x,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnFloorDividesGetWorkspaceSize(const aclTensor *self, const aclScalar *other,
/// aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA canncommercial/800
/// aclnnFloorDivides&aclnnInplaceFloorDivides.md]; rules in `Prim::scalar_arith`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnFloorDividesGetWorkspaceSize(
    self_: *const sys::aclTensor,
    other: *const aclScalar,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::scalar_arith(
            ScalarOp::FloorDiv,
            false,
            s.desc(self_, "self")?,
            s.scalar(other, "other")?,
            None,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnInplaceFloorDividesGetWorkspaceSize(aclTensor *selfRef, const aclScalar
/// *other, uint64_t *workspaceSize, aclOpExecutor **executor)` (same page).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceFloorDividesGetWorkspaceSize(
    self_ref: *mut sys::aclTensor,
    other: *const aclScalar,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        let x = s.desc(self_ref, "selfRef")?;
        Prim::scalar_arith(ScalarOp::FloorDiv, true, x.clone(), s.scalar(other, "other")?, None, x)
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnAddsGetWorkspaceSize(const aclTensor* self, const aclScalar* other, const
/// aclScalar* alpha, aclTensor* out, uint64_t* workspaceSize, aclOpExecutor** executor)` ([HA
/// canncommercial/800 aclnnAdds.md]; rules in `Prim::scalar_arith`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnAddsGetWorkspaceSize(
    self_: *const sys::aclTensor,
    other: *const aclScalar,
    alpha: *const aclScalar,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::scalar_arith(
            ScalarOp::Add,
            false,
            s.desc(self_, "self")?,
            s.scalar(other, "other")?,
            s.scalar(alpha, "alpha")?,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnInplaceAddsGetWorkspaceSize(const aclTensor *selfRef, const aclScalar *other,
/// const aclScalar *alpha, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA
/// canncommercial/800 aclnnInplaceAdds.md]; the page prints selfRef `const`, kept as printed).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnInplaceAddsGetWorkspaceSize(
    self_ref: *const sys::aclTensor,
    other: *const aclScalar,
    alpha: *const aclScalar,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        let x = s.desc(self_ref, "selfRef")?;
        Prim::scalar_arith(
            ScalarOp::Add,
            true,
            x.clone(),
            s.scalar(other, "other")?,
            s.scalar(alpha, "alpha")?,
            x,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnAmaxGetWorkspaceSize(const aclTensor *self, const aclIntArray *dim, bool
/// keepDim, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA 82RC1alpha002
/// aclnnAmax.md]; rules in `Prim::amax`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnAmaxGetWorkspaceSize(
    self_: *const sys::aclTensor,
    dim: *const sys::aclIntArray,
    keep_dim: bool,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::amax(
            true,
            s.desc(self_, "self")?,
            s.int_array(dim, "dim")?,
            keep_dim,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

/// `aclnnStatus aclnnAminGetWorkspaceSize(const aclTensor *self, const aclIntArray *dim, bool
/// keepDim, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor)` ([HA 82RC1alpha001
/// aclnnAmin.md]; rules in `Prim::amax`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnAminGetWorkspaceSize(
    self_: *const sys::aclTensor,
    dim: *const sys::aclIntArray,
    keep_dim: bool,
    out: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::amax(
            false,
            s.desc(self_, "self")?,
            s.int_array(dim, "dim")?,
            keep_dim,
            s.desc(out, "out")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

launcher!(
    aclnnAmax,
    aclnnAmin,
    aclnnFloorDivides,
    aclnnInplaceFloorDivides,
    aclnnAdds,
    aclnnInplaceAdds,
    aclnnSort,
    aclnnArgsort,
    aclnnArange,
    aclnnSearchSorted,
    aclnnScatter,
    aclnnInplaceScatter
);

check_sig! {
    aclnnSortGetWorkspaceSize => aclnnSortGetWorkspaceSizeFn, aclnnSort => aclnnSortFn,
    aclnnArgsortGetWorkspaceSize => aclnnArgsortGetWorkspaceSizeFn, aclnnArgsort => aclnnArgsortFn,
    aclnnArangeGetWorkspaceSize => aclnnArangeGetWorkspaceSizeFn, aclnnArange => aclnnArangeFn,
    aclnnSearchSortedGetWorkspaceSize => aclnnSearchSortedGetWorkspaceSizeFn,
    aclnnSearchSorted => aclnnSearchSortedFn,
    aclnnScatterGetWorkspaceSize => aclnnScatterGetWorkspaceSizeFn, aclnnScatter => aclnnScatterFn,
    aclnnInplaceScatterGetWorkspaceSize => aclnnInplaceScatterGetWorkspaceSizeFn,
    aclnnInplaceScatter => aclnnInplaceScatterFn,
    aclnnFloorDividesGetWorkspaceSize => aclnnFloorDividesGetWorkspaceSizeFn,
    aclnnFloorDivides => aclnnFloorDividesFn,
    aclnnInplaceFloorDividesGetWorkspaceSize => aclnnInplaceFloorDividesGetWorkspaceSizeFn,
    aclnnInplaceFloorDivides => aclnnInplaceFloorDividesFn,
    aclnnAddsGetWorkspaceSize => aclnnAddsGetWorkspaceSizeFn, aclnnAdds => aclnnAddsFn,
    aclnnInplaceAddsGetWorkspaceSize => aclnnInplaceAddsGetWorkspaceSizeFn,
    aclnnInplaceAdds => aclnnInplaceAddsFn,
    aclnnAmaxGetWorkspaceSize => aclnnAmaxGetWorkspaceSizeFn, aclnnAmax => aclnnAmaxFn,
    aclnnAminGetWorkspaceSize => aclnnAminGetWorkspaceSizeFn, aclnnAmin => aclnnAminFn,
}
