//! The C ABI of the W8A8 quantisation primitives of issue 13 (fourth group): aclnnDynamicQuant.
//! Signatures exactly as the CANN pages print them (cited per function); the rules live in
//! `crate::ops::quant` and RULES.md §W8A8. The prototypes are in `moehal_acl.h` too, so `check_sig!`
//! pins each one to the header's typedef.

use super::prims::prim_one;
use super::{fail_t, launch, lock, phase_one, State};
use crate::ops::Op;
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

/// `aclnnStatus aclnnCalculateMatmulWeightSizeV2(const aclIntArray *tensorShape, aclDataType
/// dataType, uint64_t *weightTensorSize)` ([HA 81RC1alpha002 aclnnCalculateMatmulWeightSizeV2.md];
/// rules in `ops::calculate_weight_size_v2`, RULES.md NZ4). A host computation: needs no device.
///
/// # Safety
/// `tensor_shape` NULL or a live aclIntArray of this library; `weight_tensor_size` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnCalculateMatmulWeightSizeV2(
    tensor_shape: *const sys::aclIntArray,
    data_type: sys::aclDataType,
    weight_tensor_size: *mut u64,
) -> sys::aclnnStatus {
    let s = lock();
    let r = (|| {
        let shape = s.int_array(tensor_shape, "tensorShape")?.ok_or_else(|| {
            (
                sys::ACLNN_ERR_PARAM_NULLPTR,
                "tensorShape is a null pointer".to_string(),
            )
        })?;
        if weight_tensor_size.is_null() {
            return Err((
                sys::ACLNN_ERR_PARAM_NULLPTR,
                "weightTensorSize is a null pointer".to_string(),
            ));
        }
        crate::ops::calculate_weight_size_v2(&shape, data_type)
    })();
    drop(s);
    match r {
        Ok(n) => {
            // SAFETY: checked non-null above; the caller promises it is writable.
            unsafe { *weight_tensor_size = n };
            sys::ACLNN_SUCCESS
        }
        Err(f) => fail_t(f),
    }
}

/// `aclnnStatus aclnnTransMatmulWeightGetWorkspaceSize(aclTensor *mmWeightRef, uint64_t
/// *workspaceSize, aclOpExecutor **executor)` ([HA 81RC1alpha001 aclnnTransMatmulWeight.md]; rules
/// in `Op::trans_matmul_weight`, RULES.md NZ5).
///
/// # Safety
/// Pointers must be NULL or valid objects from this library; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn aclnnTransMatmulWeightGetWorkspaceSize(
    mm_weight_ref: *mut sys::aclTensor,
    workspace_size: *mut u64,
    executor: *mut *mut sys::aclOpExecutor,
) -> sys::aclnnStatus {
    let mut s = lock();
    let op = s.desc(mm_weight_ref, "mmWeightRef").and_then(|d| {
        let d = d.ok_or_else(|| {
            (
                sys::ACLNN_ERR_PARAM_NULLPTR,
                "mmWeightRef is a null pointer".to_string(),
            )
        })?;
        Op::trans_matmul_weight(mm_weight_ref as usize, d)
    });
    // SAFETY: forwarded caller promise.
    unsafe { phase_one(&mut s, op, workspace_size, executor) }
}

launcher!(aclnnTransMatmulWeight);

check_sig! {
    aclnnCalculateMatmulWeightSizeV2 => aclnnCalculateMatmulWeightSizeV2Fn,
    aclnnTransMatmulWeightGetWorkspaceSize => aclnnTransMatmulWeightGetWorkspaceSizeFn,
    aclnnTransMatmulWeight => aclnnTransMatmulWeightFn,
}
