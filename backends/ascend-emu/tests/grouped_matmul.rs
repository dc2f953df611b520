//! aclnnGroupedMatmulV4 / V3 rules, one test each (sources in RULES.md).

mod common;
use common::*;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;

/// V4 phase one with single-tensor lists, splitItem 3, groupType 0, actType 0.
fn v4(
    x: *mut sys::aclTensor,
    w: *mut sys::aclTensor,
    bias: Option<*mut sys::aclTensor>,
    g: *mut sys::aclTensor,
    list_type: i64,
    y: *mut sys::aclTensor,
    exec: &mut *mut sys::aclOpExecutor,
    ws: &mut u64,
) -> i32 {
    let (xl, wl, yl) = (list1(x), list1(w), list1(y));
    let bl = bias.map_or(ptr::null_mut(), list1);
    let n = ptr::null();
    // SAFETY: live lists/tensors from this library or NULL; out-pointers to locals.
    unsafe {
        aclnnGroupedMatmulV4GetWorkspaceSize(
            xl,
            wl,
            bl,
            n,
            n,
            n,
            n,
            n,
            g,
            n,
            n,
            n,
            3,
            0,
            list_type,
            0,
            yl,
            ptr::null_mut(),
            ptr::null_mut(),
            ws,
            exec,
        )
    }
}

/// M=3 rows, K=2, N=2, E=2 groups. x rows [1,2], [3,4], [5,6]; w0 = I, w1 = [[0,1],[1,0]].
fn data() -> (Vec<f32>, Vec<f32>) {
    (
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        vec![1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0],
    )
}

/// groupListType 0 (cumulative ends) and 1 (counts) select the same rows; rows past the total are
/// not written ("groupListOptional中未指定的部分将不会参与更新").
#[test]
fn group_list_types_and_unwritten_tail() {
    let s = setup();
    let (xv, wv) = data();
    for (lt, gl) in [(0i64, [1i64, 2]), (1, [1, 1])] {
        let x = tensor(&f32b(&xv), &[3, 2], sys::ACL_FLOAT);
        let w = tensor(&f32b(&wv), &[2, 2, 2], sys::ACL_FLOAT);
        let g = tensor(&i64b(&gl), &[2], sys::ACL_INT64);
        let y = tensor(&f32b(&[-7.0; 6]), &[3, 2], sys::ACL_FLOAT);
        let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
        assert_eq!(v4(x.t, w.t, None, g.t, lt, y.t, &mut ex, &mut ws), 0, "{}", msg());
        assert_eq!(launch(s, ws, ex, aclnnGroupedMatmulV4), 0, "{}", msg());
        // Row 0 x I, row 1 x swap, row 2 untouched.
        assert_eq!(
            as_f32(&read(&y)),
            vec![1.0, 2.0, 4.0, 3.0, -7.0, -7.0],
            "groupListType {lt}"
        );
    }
}

/// V3: the group list is cumulative (no groupListType).
#[test]
fn v3_group_list_is_cumulative() {
    let s = setup();
    let (xv, wv) = data();
    let x = tensor(&f32b(&xv), &[3, 2], sys::ACL_FLOAT);
    let w = tensor(&f32b(&wv), &[2, 2, 2], sys::ACL_FLOAT);
    let g = tensor(&i64b(&[2, 3]), &[2], sys::ACL_INT64);
    let y = zeros(&[3, 2], sys::ACL_FLOAT);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    let n = ptr::null();
    // SAFETY: live lists/tensors; out-pointers to locals.
    let rc = unsafe {
        aclnnGroupedMatmulV3GetWorkspaceSize(
            list1(x.t),
            list1(w.t),
            n,
            n,
            n,
            n,
            n,
            g.t,
            3,
            0,
            list1(y.t),
            &mut ws,
            &mut ex,
        )
    };
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(s, ws, ex, aclnnGroupedMatmulV3), 0);
    assert_eq!(as_f32(&read(&y)), vec![1.0, 2.0, 3.0, 4.0, 6.0, 5.0]);
}

/// Bias: FP32 for BF16 x (FP16 for FP16, FP32 for FP32); BF16 bias with BF16 x -> 161002.
#[test]
fn bias_dtype_per_x_dtype() {
    let _s = setup();
    let x = zeros(&[2, 2], sys::ACL_BF16);
    let w = zeros(&[1, 2, 2], sys::ACL_BF16);
    let g = tensor(&i64b(&[2]), &[1], sys::ACL_INT64);
    let y = zeros(&[2, 2], sys::ACL_BF16);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    let b16 = zeros(&[1, 2], sys::ACL_BF16);
    assert_eq!(
        v4(x.t, w.t, Some(b16.t), g.t, 0, y.t, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
    let (x, w, y) = (
        zeros(&[2, 2], sys::ACL_BF16),
        zeros(&[1, 2, 2], sys::ACL_BF16),
        zeros(&[2, 2], sys::ACL_BF16),
    );
    let b32 = zeros(&[1, 2], sys::ACL_FLOAT);
    assert_eq!(v4(x.t, w.t, Some(b32.t), g.t, 0, y.t, &mut ex, &mut ws), 0, "{}", msg());
    let (x, w, y) = (
        zeros(&[2, 2], sys::ACL_FLOAT16),
        zeros(&[1, 2, 2], sys::ACL_FLOAT16),
        zeros(&[2, 2], sys::ACL_FLOAT16),
    );
    let b32 = zeros(&[1, 2], sys::ACL_FLOAT);
    assert_eq!(
        v4(x.t, w.t, Some(b32.t), g.t, 0, y.t, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
}

/// Transposed weight = strides [K*N, 1, K] over [E, N, K] storage: same result as [E, K, N].
#[test]
fn transposed_weight_by_strides() {
    let s = setup();
    let x = tensor(&f32b(&[1.0, 2.0]), &[1, 2], sys::ACL_FLOAT);
    // Logical w0 (K=2, N=3) = [[1,2,3],[4,5,6]]; stored transposed as [N, K] = [[1,4],[2,5],[3,6]].
    let p = upload(&f32b(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
    let w = view(
        p,
        sys::ACL_FLOAT,
        &[1, 2, 3],
        Some(&[6, 1, 2][..]),
        0,
        &[1, 3, 2],
        sys::ACL_FORMAT_ND,
    );
    let g = tensor(&i64b(&[1]), &[1], sys::ACL_INT64);
    let y = zeros(&[1, 3], sys::ACL_FLOAT);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(v4(x.t, w, None, g.t, 0, y.t, &mut ex, &mut ws), 0, "{}", msg());
    assert_eq!(launch(s, ws, ex, aclnnGroupedMatmulV4), 0);
    assert_eq!(as_f32(&read(&y)), vec![9.0, 12.0, 15.0]);
}

/// Inner dims < 65536: x [1, 65536] -> 161002.
#[test]
fn inner_dim_limit() {
    let _s = setup();
    let x = zeros(&[1, 65536], sys::ACL_FLOAT16);
    let w = zeros(&[1, 65536, 1], sys::ACL_FLOAT16);
    let g = tensor(&i64b(&[1]), &[1], sys::ACL_INT64);
    let y = zeros(&[1, 1], sys::ACL_FLOAT16);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(
        v4(x.t, w.t, None, g.t, 0, y.t, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
}

/// groupList: INT64, one entry per weight group; required for M-axis grouping.
#[test]
fn group_list_is_int64_one_per_group() {
    let _s = setup();
    let mk = || {
        (
            zeros(&[2, 2], sys::ACL_FLOAT),
            zeros(&[2, 2, 2], sys::ACL_FLOAT),
            zeros(&[2, 2], sys::ACL_FLOAT),
        )
    };
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    let (x, w, y) = mk();
    let g32 = tensor(&i32b(&[1, 2]), &[2], sys::ACL_INT32);
    assert_eq!(
        v4(x.t, w.t, None, g32.t, 0, y.t, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
    let (x, w, y) = mk();
    let g1 = tensor(&i64b(&[2]), &[1], sys::ACL_INT64);
    assert_eq!(
        v4(x.t, w.t, None, g1.t, 0, y.t, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
    let (x, w, y) = mk();
    assert_eq!(
        v4(x.t, w.t, None, ptr::null_mut(), 0, y.t, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_NULLPTR
    );
}

/// A decreasing cumulative group list is a value error at launch (hardware: garbage).
#[test]
fn decreasing_group_list_fails_at_launch() {
    let s = setup();
    let x = zeros(&[2, 2], sys::ACL_FLOAT);
    let w = zeros(&[2, 2, 2], sys::ACL_FLOAT);
    let g = tensor(&i64b(&[2, 1]), &[2], sys::ACL_INT64);
    let y = zeros(&[2, 2], sys::ACL_FLOAT);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(v4(x.t, w.t, None, g.t, 0, y.t, &mut ex, &mut ws), 0);
    assert_eq!(launch(s, ws, ex, aclnnGroupedMatmulV4), sys::ACLNN_ERR_INNER);
}

/// At most 1024 groups in single-weight mode -> 161002.
#[test]
fn at_most_1024_groups() {
    let _s = setup();
    let x = zeros(&[1, 1], sys::ACL_FLOAT);
    let w = zeros(&[1025, 1, 1], sys::ACL_FLOAT);
    let g = zeros(&[1025], sys::ACL_INT64);
    let y = zeros(&[1, 1], sys::ACL_FLOAT);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(
        v4(x.t, w.t, None, g.t, 0, y.t, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
    assert!(msg().contains("1024"), "{}", msg());
}

/// splitItem 0/1 (multi-tensor output) with a single y -> 161002; groupListType 2 is NOT EMULATED.
#[test]
fn split_item_and_group_list_type_ranges() {
    let _s = setup();
    let (x, w, y) = (
        zeros(&[2, 2], sys::ACL_FLOAT),
        zeros(&[1, 2, 2], sys::ACL_FLOAT),
        zeros(&[2, 2], sys::ACL_FLOAT),
    );
    let g = tensor(&i64b(&[2]), &[1], sys::ACL_INT64);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(
        v4(x.t, w.t, None, g.t, 2, y.t, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
    let (x, w, y) = (
        zeros(&[2, 2], sys::ACL_FLOAT),
        zeros(&[1, 2, 2], sys::ACL_FLOAT),
        zeros(&[2, 2], sys::ACL_FLOAT),
    );
    let n = ptr::null();
    // SAFETY: live lists/tensors; out-pointers to locals.
    let rc = unsafe {
        aclnnGroupedMatmulV3GetWorkspaceSize(
            list1(x.t),
            list1(w.t),
            n,
            n,
            n,
            n,
            n,
            g.t,
            0,
            0,
            list1(y.t),
            &mut ws,
            &mut ex,
        )
    };
    assert_eq!(rc, sys::ACLNN_ERR_PARAM_INVALID, "splitItem 0");
}
