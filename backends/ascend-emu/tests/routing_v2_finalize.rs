//! aclnnMoeInitRoutingV2 and aclnnMoeFinalizeRoutingV2 rules (sources in RULES.md).

mod common;
use common::*;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;

fn v2(
    x: &Dev,
    ids: &Dev,
    active: i64,
    e: i64,
    flag: i64,
    ex_out: &Dev,
    row: &Dev,
    cnt: Option<&Dev>,
    exec: &mut *mut sys::aclOpExecutor,
    ws: &mut u64,
) -> i32 {
    // SAFETY: live tensors or NULL; out-pointers to locals.
    unsafe {
        aclnnMoeInitRoutingV2GetWorkspaceSize(
            x.t,
            ids.t,
            active,
            0,
            e,
            0,
            flag,
            false,
            ex_out.t,
            row.t,
            cnt.map_or(ptr::null(), |c| c.t),
            ptr::null(),
            ws,
            exec,
        )
    }
}

/// V2: expandedRowIdx[original slot] = position (gather layout); expandedX[i] = x[sorted[i] / k];
/// flag 1 = cumulative INT32 counts. T=3, k=1, ids [[2],[0],[1]] -> [2,0,1].
#[test]
fn v2_row_idx_is_gather_layout_with_cumsum() {
    let s = setup();
    let x = tensor(&f32b(&[0.0, 1.0, 2.0]), &[3, 1], sys::ACL_FLOAT);
    let ids = tensor(&i32b(&[2, 0, 1]), &[3, 1], sys::ACL_INT32);
    let (exo, row, cnt) = (
        zeros(&[3, 1], sys::ACL_FLOAT),
        zeros(&[3], sys::ACL_INT32),
        zeros(&[3], sys::ACL_INT32),
    );
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(
        v2(&x, &ids, 0, 3, 1, &exo, &row, Some(&cnt), &mut ex, &mut ws),
        0,
        "{}",
        msg()
    );
    assert_eq!(launch(s, ws, ex, aclnnMoeInitRoutingV2), 0);
    assert_eq!(as_i32(&read(&row)), vec![2, 0, 1]);
    assert_eq!(as_f32(&read(&exo)), vec![1.0, 2.0, 0.0]);
    assert_eq!(as_i32(&read(&cnt)), vec![1, 2, 3]);
}

/// V2 flag 2 = per-expert counts; counts are INT32 [E] (INT64 -> 161002); flag 3 -> 561002.
#[test]
fn v2_counts_are_int32_and_flag_range() {
    let s = setup();
    let x = tensor(&f32b(&[0.0, 1.0]), &[2, 1], sys::ACL_FLOAT);
    let ids = tensor(&i32b(&[1, 1]), &[2, 1], sys::ACL_INT32);
    let (exo, row) = (zeros(&[2, 1], sys::ACL_FLOAT), zeros(&[2], sys::ACL_INT32));
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    let c64 = zeros(&[2], sys::ACL_INT64);
    assert_eq!(
        v2(&x, &ids, 0, 2, 2, &exo, &row, Some(&c64), &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
    let c32 = zeros(&[2], sys::ACL_INT32);
    assert_eq!(
        v2(&x, &ids, 0, 2, 3, &exo, &row, Some(&c32), &mut ex, &mut ws),
        ascendcl::ops::ACLNN_ERR_INNER_TILING_ERROR
    );
    assert_eq!(
        v2(&x, &ids, 0, 2, 2, &exo, &row, Some(&c32), &mut ex, &mut ws),
        0,
        "{}",
        msg()
    );
    assert_eq!(launch(s, ws, ex, aclnnMoeInitRoutingV2), 0);
    assert_eq!(as_i32(&read(&c32)), vec![0, 2]);
    // Flag 1 or 2 with no counts tensor -> 161001.
    assert_eq!(
        v2(&x, &ids, 0, 2, 2, &exo, &row, None, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_NULLPTR
    );
}

/// V2 activeNum > 0 limits expandedXOut to min(activeNum, T*k) rows; negative -> 561002.
#[test]
fn v2_active_num_limits_expanded_rows() {
    let _s = setup();
    let x = tensor(&f32b(&[0.0, 1.0, 2.0]), &[3, 1], sys::ACL_FLOAT);
    let ids = tensor(&i32b(&[0, 0, 0]), &[3, 1], sys::ACL_INT32);
    let row = zeros(&[3], sys::ACL_INT32);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    let ex2 = zeros(&[2, 1], sys::ACL_FLOAT);
    assert_eq!(
        v2(&x, &ids, 2, 1, 0, &ex2, &row, None, &mut ex, &mut ws),
        0,
        "{}",
        msg()
    );
    let ex3 = zeros(&[3, 1], sys::ACL_FLOAT);
    assert_eq!(
        v2(&x, &ids, 2, 1, 0, &ex3, &row, None, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
    assert_eq!(
        v2(&x, &ids, -1, 1, 0, &ex3, &row, None, &mut ex, &mut ws),
        ascendcl::ops::ACLNN_ERR_INNER_TILING_ERROR
    );
}

fn fin(
    exp: &Dev,
    row: &Dev,
    scales: Option<&Dev>,
    bias: Option<&Dev>,
    eidx: Option<&Dev>,
    mode: i64,
    out: &Dev,
    exec: &mut *mut sys::aclOpExecutor,
    ws: &mut u64,
) -> i32 {
    let p = |d: Option<&Dev>| d.map_or(ptr::null(), |d| d.t as *const _);
    // SAFETY: live tensors or NULL; out-pointers to locals.
    unsafe {
        aclnnMoeFinalizeRoutingV2GetWorkspaceSize(
            exp.t,
            row.t,
            ptr::null(),
            ptr::null(),
            p(bias),
            p(scales),
            p(eidx),
            mode,
            out.t,
            ws,
            exec,
        )
    }
}

/// dropPadMode 2: row index row-major (`row[t*K + j]`); 0: column-major (`row[j*N + t]`);
/// out[t] = sum_j scales[t,j] * expandedX[row[..]].
#[test]
fn finalize_row_and_column_major() {
    let s = setup();
    // N=2 tokens, K=2, H=1. expandedX rows 0..4 = 1, 10, 100, 1000.
    let exp = tensor(&f32b(&[1.0, 10.0, 100.0, 1000.0]), &[4, 1], sys::ACL_FLOAT);
    let scales = tensor(&f32b(&[1.0, 2.0, 3.0, 4.0]), &[2, 2], sys::ACL_FLOAT);
    let row = tensor(&i32b(&[0, 1, 2, 3]), &[4], sys::ACL_INT32);
    for (mode, want) in [(2i64, vec![21.0f32, 4300.0]), (0, vec![201.0, 4030.0])] {
        let out = zeros(&[2, 1], sys::ACL_FLOAT);
        let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
        assert_eq!(
            fin(&exp, &row, Some(&scales), None, None, mode, &out, &mut ex, &mut ws),
            0,
            "{}",
            msg()
        );
        assert_eq!(launch(s, ws, ex, aclnnMoeFinalizeRoutingV2), 0);
        assert_eq!(as_f32(&read(&out)), want, "dropPadMode {mode}");
    }
}

/// Scales: expandedX's dtype, or FLOAT with BF16 expandedX (mixed precision); FLOAT with FP16 -> 161002.
#[test]
fn finalize_scales_dtype() {
    let s = setup();
    let row = tensor(&i32b(&[0, 1]), &[2], sys::ACL_INT32);
    let sc = tensor(&f32b(&[0.5, 0.25]), &[1, 2], sys::ACL_FLOAT);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    let exp = tensor(&bf16b(&[2.0, 4.0]), &[2, 1], sys::ACL_BF16);
    let out = zeros(&[1, 1], sys::ACL_BF16);
    assert_eq!(
        fin(&exp, &row, Some(&sc), None, None, 2, &out, &mut ex, &mut ws),
        0,
        "{}",
        msg()
    );
    assert_eq!(launch(s, ws, ex, aclnnMoeFinalizeRoutingV2), 0);
    assert_eq!(as_bf16(&read(&out)), vec![2.0]);
    let exp = tensor(&f16b(&[2.0, 4.0]), &[2, 1], sys::ACL_FLOAT16);
    let out = zeros(&[1, 1], sys::ACL_FLOAT16);
    assert_eq!(
        fin(&exp, &row, Some(&sc), None, None, 2, &out, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
}

/// K comes from scales (K = 1 without scales): expandedRowIdx must hold N*K entries and expandedX
/// N*K rows.
#[test]
fn finalize_k_from_scales() {
    let _s = setup();
    let exp = zeros(&[2, 1], sys::ACL_FLOAT);
    let row2 = tensor(&i32b(&[0, 1]), &[2], sys::ACL_INT32);
    let out = zeros(&[1, 1], sys::ACL_FLOAT);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(
        fin(&exp, &row2, None, None, None, 2, &out, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID,
        "K = 1"
    );
    let out2 = zeros(&[2, 1], sys::ACL_FLOAT);
    assert_eq!(
        fin(&exp, &row2, None, None, None, 2, &out2, &mut ex, &mut ws),
        0,
        "{}",
        msg()
    );
}

/// bias [E, H] needs expertIdx [N, K] INT32 -> 161001 without it.
#[test]
fn finalize_bias_needs_expert_idx() {
    let s = setup();
    let exp = tensor(&f32b(&[1.0, 2.0]), &[2, 1], sys::ACL_FLOAT);
    let row = tensor(&i32b(&[0, 1]), &[2], sys::ACL_INT32);
    let sc = tensor(&f32b(&[1.0, 1.0]), &[1, 2], sys::ACL_FLOAT);
    let bias = tensor(&f32b(&[10.0, 20.0]), &[2, 1], sys::ACL_FLOAT);
    let out = zeros(&[1, 1], sys::ACL_FLOAT);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(
        fin(&exp, &row, Some(&sc), Some(&bias), None, 2, &out, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_NULLPTR
    );
    let eidx = tensor(&i32b(&[1, 0]), &[1, 2], sys::ACL_INT32);
    assert_eq!(
        fin(
            &exp,
            &row,
            Some(&sc),
            Some(&bias),
            Some(&eidx),
            2,
            &out,
            &mut ex,
            &mut ws
        ),
        0,
        "{}",
        msg()
    );
    assert_eq!(launch(s, ws, ex, aclnnMoeFinalizeRoutingV2), 0);
    assert_eq!(as_f32(&read(&out)), vec![(1.0 + 20.0) + (2.0 + 10.0)]);
}

/// Row indices outside [0, N*K) are a value error at launch (documented range; -1 skipping is
/// undocumented).
#[test]
fn finalize_row_index_range() {
    let s = setup();
    let exp = zeros(&[2, 1], sys::ACL_FLOAT);
    let row = tensor(&i32b(&[0, -1]), &[2], sys::ACL_INT32);
    let sc = tensor(&f32b(&[1.0, 1.0]), &[1, 2], sys::ACL_FLOAT);
    let out = zeros(&[1, 1], sys::ACL_FLOAT);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(fin(&exp, &row, Some(&sc), None, None, 2, &out, &mut ex, &mut ws), 0);
    assert_eq!(launch(s, ws, ex, aclnnMoeFinalizeRoutingV2), sys::ACLNN_ERR_INNER);
}

/// V2 drop/pad mode and the before-capacity output are NOT EMULATED -> 161002.
#[test]
fn v2_drop_pad_not_emulated() {
    let _s = setup();
    let x = zeros(&[1, 1], sys::ACL_FLOAT);
    let ids = zeros(&[1, 1], sys::ACL_INT32);
    let (exo, row) = (zeros(&[1, 1], sys::ACL_FLOAT), zeros(&[1], sys::ACL_INT32));
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    for (mode, before) in [(1i64, false), (0, true)] {
        // SAFETY: live tensors; out-pointers to locals.
        let rc = unsafe {
            aclnnMoeInitRoutingV2GetWorkspaceSize(
                x.t,
                ids.t,
                0,
                1,
                1,
                mode,
                0,
                before,
                exo.t,
                row.t,
                ptr::null(),
                ptr::null(),
                &mut ws,
                &mut ex,
            )
        };
        assert_eq!(
            rc,
            sys::ACLNN_ERR_PARAM_INVALID,
            "dropPadMode {mode}, before-capacity {before}"
        );
    }
}

/// FinalizeV2 dropPadMode 1 / 3 (drop/pad layouts) are NOT EMULATED; 4 is out of range -> 161002.
#[test]
fn finalize_drop_pad_modes_not_emulated() {
    let _s = setup();
    let exp = zeros(&[2, 1], sys::ACL_FLOAT);
    let row = tensor(&i32b(&[0, 1]), &[2], sys::ACL_INT32);
    let sc = tensor(&f32b(&[1.0, 1.0]), &[1, 2], sys::ACL_FLOAT);
    let out = zeros(&[1, 1], sys::ACL_FLOAT);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    for mode in [1i64, 3, 4] {
        assert_eq!(
            fin(&exp, &row, Some(&sc), None, None, mode, &out, &mut ex, &mut ws),
            sys::ACLNN_ERR_PARAM_INVALID,
            "dropPadMode {mode}"
        );
    }
}
