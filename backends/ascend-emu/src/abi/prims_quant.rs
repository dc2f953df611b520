//! The C ABI of the W8A8 quantisation primitives of issue 13 (fourth group): aclnnDynamicQuant.
//! Signatures exactly as the CANN pages print them (cited per function); the rules live in
//! `crate::ops::quant` and RULES.md §W8A8. The prototypes are in `moehal_acl.h` too, so `check_sig!`
//! pins each one to the header's typedef.

use super::prims::prim_one;
use super::{launch, State};
use crate::ops::Prim;
use crate::sys;
use std::ffi::c_void;

/// `aclnnStatus aclnnDynamicQuantGetWorkspaceSize(const aclTensor* x, const aclTensor*
/// smoothScalesOptional, const aclTensor* yOut, const aclTensor* scaleOut, uint64_t* workspaceSize,
/// aclOpExecutor** executor)` ([HA canncommercial/800 aclnnDynamicQuant.md]; same prototype on
/// [HA 82RC1alpha002 aclnnDynamicQuant.md]; rules in `Prim::dynamic_quant`).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnDynamicQuantGetWorkspaceSize(
    x: *const sys::aclTensor,
    smooth_scales_optional: *const sys::aclTensor,
    y_out: *const sys::aclTensor,
    scale_out: *const sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let build = |s: &State| {
        Prim::dynamic_quant(
            s.desc(x, "x")?,
            s.desc(smooth_scales_optional, "smoothScalesOptional")?,
            s.desc(y_out, "yOut")?,
            s.desc(scale_out, "scaleOut")?,
        )
    };
    // SAFETY: forwarded caller promise.
    unsafe { prim_one(build, workspace_size, executor) }
}

launcher!(aclnnDynamicQuant);

check_sig! {
    aclnnDynamicQuantGetWorkspaceSize => aclnnDynamicQuantGetWorkspaceSizeFn,
    aclnnDynamicQuant => aclnnDynamicQuantFn,
}
