//! aclCreateTensor's view mechanism (viewDims, strides, offset in elements, storageDims, storage
//! base address) and its alignment rule (sources in RULES.md).

mod common;
use common::*;

use std::ffi::c_void;
use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;

fn cast(src: *mut sys::aclTensor, out: *mut sys::aclTensor) -> (i32, *mut sys::aclOpExecutor, u64) {
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    // SAFETY: live tensors; out-pointers to locals.
    let rc = unsafe { aclnnCastGetWorkspaceSize(src, sys::ACL_INT64, out, &mut ws, &mut ex) };
    (rc, ex, ws)
}

/// A row slice = aligned storage base + element offset: the view's data starts at
/// base + offset * elem_size, and base + offset need not be 32-byte aligned.
#[test]
fn row_slice_as_base_plus_element_offset() {
    let s = setup();
    // Storage [4, 3] INT32 (48 bytes); view row 1 = elements 3..6 (12-byte effective offset).
    let p = upload(&i32b(&[0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32]));
    let row = view(p, sys::ACL_INT32, &[3], None, 3, &[4, 3], sys::ACL_FORMAT_ND);
    assert!(!row.is_null());
    let out = zeros(&[3], sys::ACL_INT64);
    let (rc, ex, ws) = cast(row, out.t);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(s, ws, ex, aclnnCast), 0);
    assert_eq!(as_i64(&read(&out)), vec![10, 11, 12]);
    // A column through strides: [3] stride 3 from offset 2 -> 2, 12, 22.
    let col = view(p, sys::ACL_INT32, &[3], Some(&[3][..]), 2, &[12], sys::ACL_FORMAT_ND);
    let (rc, ex, ws) = cast(col, out.t);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(s, ws, ex, aclnnCast), 0);
    assert_eq!(as_i64(&read(&out)), vec![2, 12, 22]);
}

/// tensorData (the storage base) must be 32-byte aligned -> 161002 otherwise.
#[test]
fn storage_base_must_be_32_byte_aligned() {
    let _s = setup();
    let p = upload(&[0u8; 64]);
    let t = view(
        (p as usize + 16) as *mut c_void,
        sys::ACL_INT32,
        &[4],
        None,
        0,
        &[4],
        sys::ACL_FORMAT_ND,
    );
    let out = zeros(&[4], sys::ACL_INT64);
    assert_eq!(cast(t, out.t).0, sys::ACLNN_ERR_PARAM_INVALID);
    assert!(msg().contains("32-byte aligned"), "{}", msg());
}

/// Negative dims, strides, offset or storage dims: aclCreateTensor returns NULL.
#[test]
fn negative_values_make_create_fail() {
    let _s = setup();
    let p = upload(&[0u8; 64]);
    assert!(view(p, sys::ACL_INT32, &[4], None, -1, &[4], sys::ACL_FORMAT_ND).is_null());
    assert!(view(p, sys::ACL_INT32, &[-4], None, 0, &[4], sys::ACL_FORMAT_ND).is_null());
    assert!(view(p, sys::ACL_INT32, &[4], Some(&[-1][..]), 0, &[4], sys::ACL_FORMAT_ND).is_null());
    assert!(view(p, sys::ACL_INT32, &[4], None, 0, &[-4], sys::ACL_FORMAT_ND).is_null());
    assert!(!view(p, sys::ACL_INT32, &[4], None, 0, &[4], sys::ACL_FORMAT_ND).is_null());
}

/// A view reaching past its storage is refused at phase one.
#[test]
fn view_must_fit_its_storage() {
    let _s = setup();
    let p = upload(&[0u8; 64]);
    let t = view(p, sys::ACL_INT32, &[4], None, 1, &[4], sys::ACL_FORMAT_ND);
    let out = zeros(&[4], sys::ACL_INT64);
    assert_eq!(cast(t, out.t).0, sys::ACLNN_ERR_PARAM_INVALID);
    assert!(msg().contains("exceeds storage"), "{}", msg());
}

/// Every emulated op takes ND tensors ("要求为ND"): FRACTAL_NZ -> 161002.
#[test]
fn format_must_be_nd() {
    let _s = setup();
    let p = upload(&[0u8; 64]);
    let t = view(p, sys::ACL_INT32, &[4], None, 0, &[4], sys::ACL_FORMAT_FRACTAL_NZ);
    let out = zeros(&[4], sys::ACL_INT64);
    assert_eq!(cast(t, out.t).0, sys::ACLNN_ERR_PARAM_INVALID);
}

/// Storage must be device memory (a host pointer is refused).
#[test]
fn storage_must_be_device_memory() {
    let _s = setup();
    #[repr(align(64))]
    struct Host([u8; 64]);
    let h = Host([0; 64]);
    let t = view(
        h.0.as_ptr() as *mut c_void,
        sys::ACL_INT32,
        &[4],
        None,
        0,
        &[4],
        sys::ACL_FORMAT_ND,
    );
    let out = zeros(&[4], sys::ACL_INT64);
    assert_eq!(cast(t, out.t).0, sys::ACLNN_ERR_PARAM_INVALID);
    assert!(msg().contains("device memory"), "{}", msg());
}
