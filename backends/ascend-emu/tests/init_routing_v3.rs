//! aclnnMoeInitRoutingV3 rules, one test each, from the documents (sources in RULES.md). The op
//! exists from CANN 8.2: under the 8.1 profile each test only checks that the symbol is absent
//! (see profile.rs) and returns.

mod common;
use common::*;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::ops::ACLNN_ERR_INNER_TILING_ERROR as TILING;
use ascendcl::profile::HAS_INIT_ROUTING_V3;
use ascendcl::sys;

/// Tensors of one V3 call: x f32 [T,H], ids [T,k], outputs for rowIdxType / counts as documented.
struct Call {
    x: Dev,
    ids: Dev,
    ex: Dev,
    row: Dev,
    cnt: Dev,
    scale_out: Dev,
    t: i64,
    k: i64,
    e: i64,
}

fn call(ids: &[i32], t: i64, k: i64, e: i64, h: i64) -> Call {
    let xs: Vec<f32> = (0..t * h).map(|i| i as f32).collect();
    Call {
        x: tensor(&f32b(&xs), &[t, h], sys::ACL_FLOAT),
        ids: tensor(&i32b(ids), &[t, k], sys::ACL_INT32),
        ex: zeros(&[t * k, h], sys::ACL_FLOAT),
        row: filled(&[t * k], sys::ACL_INT32, 0xff),
        cnt: zeros(&[e], sys::ACL_INT64),
        scale_out: zeros(&[t * k], sys::ACL_FLOAT),
        t,
        k,
        e,
    }
}

/// Phase one with the portable argument set (activeNum T*k, count mode, range [0,E]); the
/// closure-like parameters override one thing at a time.
fn gws(
    c: &Call,
    scale: *const sys::aclTensor,
    active: i64,
    num_type: i64,
    range: *const sys::aclIntArray,
    row_idx_type: i64,
    scale_out: *const sys::aclTensor,
    exec: &mut *mut sys::aclOpExecutor,
    ws: &mut u64,
) -> i32 {
    // SAFETY: live tensors from this library; out-pointers to locals.
    unsafe {
        aclnnMoeInitRoutingV3GetWorkspaceSize(
            c.x.t,
            c.ids.t,
            scale,
            ptr::null(),
            active,
            0,
            c.e,
            0,
            num_type,
            true,
            -1,
            range,
            row_idx_type,
            c.ex.t,
            c.row.t,
            c.cnt.t,
            scale_out,
            ws,
            exec,
        )
    }
}

fn ok_call(c: &Call, row_idx_type: i64, s: sys::aclrtStream) {
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    let r = ints(&[0, c.e]);
    let rc = gws(
        c,
        ptr::null(),
        c.t * c.k,
        1,
        r,
        row_idx_type,
        c.scale_out.t,
        &mut ex,
        &mut ws,
    );
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(s, ws, ex, aclnnMoeInitRoutingV3), 0, "{}", msg());
}

/// Fault (1): expandedScaleOut NULL -> 161001, even unquantised (aclnn CheckNotNull).
#[test]
fn null_expanded_scale_out_is_161001() {
    if !HAS_INIT_ROUTING_V3 {
        return;
    }
    let _s = setup();
    let c = call(&[0], 1, 1, 1, 32);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    let r = ints(&[0, 1]);
    let rc = gws(&c, ptr::null(), 1, 1, r, 0, ptr::null(), &mut ex, &mut ws);
    assert_eq!(rc, sys::ACLNN_ERR_PARAM_NULLPTR);
    assert!(msg().contains("expandedScaleOut"), "{}", msg());
}

/// Also required: expertTokensCountOrCumsumOut, whatever expertTokensNumFlag says.
#[test]
fn null_counts_out_is_161001() {
    if !HAS_INIT_ROUTING_V3 {
        return;
    }
    let _s = setup();
    let c = call(&[0], 1, 1, 1, 4);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    let r = ints(&[0, 1]);
    // SAFETY: live tensors; out-pointers to locals.
    let rc = unsafe {
        aclnnMoeInitRoutingV3GetWorkspaceSize(
            c.x.t,
            c.ids.t,
            ptr::null(),
            ptr::null(),
            1,
            0,
            1,
            0,
            1,
            false,
            -1,
            r,
            0,
            c.ex.t,
            c.row.t,
            ptr::null(),
            c.scale_out.t,
            &mut ws,
            &mut ex,
        )
    };
    assert_eq!(rc, sys::ACLNN_ERR_PARAM_NULLPTR);
}

/// Fault (2): rowIdxType 1 = scatter, expandedRowIdx[position] = original slot. T=3,k=1,E=3, ids
/// [[2],[0],[1]] -> sorted slots (1,2,0) -> [1,2,0]. expandedX[i] = x[sorted[i] / k].
#[test]
fn row_idx_type_1_is_scatter() {
    if !HAS_INIT_ROUTING_V3 {
        return;
    }
    let s = setup();
    let c = call(&[2, 0, 1], 3, 1, 3, 2);
    ok_call(&c, 1, s);
    assert_eq!(as_i32(&read(&c.row)), vec![1, 2, 0]);
    // x rows: [0,1], [2,3], [4,5]; positions hold tokens 1, 2, 0.
    assert_eq!(as_f32(&read(&c.ex)), vec![2.0, 3.0, 4.0, 5.0, 0.0, 1.0]);
    assert_eq!(as_i64(&read(&c.cnt)), vec![1, 1, 1], "count mode");
}

/// rowIdxType 0 = gather, expandedRowIdx[original slot] = position: same call -> [2,0,1].
#[test]
fn row_idx_type_0_is_gather() {
    if !HAS_INIT_ROUTING_V3 {
        return;
    }
    let s = setup();
    let c = call(&[2, 0, 1], 3, 1, 3, 2);
    ok_call(&c, 0, s);
    assert_eq!(as_i32(&read(&c.row)), vec![2, 0, 1]);
    assert_eq!(as_f32(&read(&c.ex)), vec![2.0, 3.0, 4.0, 5.0, 0.0, 1.0]);
}

/// k > 1: slots are flattened row-major (slot = t*k + j); ties keep slot order (stable sort).
#[test]
fn slots_are_row_major_and_stable() {
    if !HAS_INIT_ROUTING_V3 {
        return;
    }
    let s = setup();
    // T=2, k=2: ids [[1,0],[0,1]] -> expert 0: slots 1, 2; expert 1: slots 0, 3.
    let c = call(&[1, 0, 0, 1], 2, 2, 2, 1);
    ok_call(&c, 1, s);
    assert_eq!(as_i32(&read(&c.row)), vec![1, 2, 0, 3]);
    assert_eq!(as_f32(&read(&c.ex)), vec![0.0, 1.0, 0.0, 1.0], "x[slot / k]");
    assert_eq!(as_i64(&read(&c.cnt)), vec![2, 2]);
}

/// Fault (3a): activeNum must be -1 or T*k on the 2025 tiling (0 -> 561002).
#[test]
fn active_num_must_be_minus_one_or_t_times_k() {
    if !HAS_INIT_ROUTING_V3 {
        return;
    }
    let s = setup();
    for (active, want) in [(0, TILING), (1, TILING), (-1, 0), (3, 0)] {
        let c = call(&[2, 0, 1], 3, 1, 3, 2);
        let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
        let r = ints(&[0, 3]);
        let rc = gws(&c, ptr::null(), active, 1, r, 1, c.scale_out.t, &mut ex, &mut ws);
        assert_eq!(rc, want, "activeNum {active}: {}", msg());
        if rc == 0 {
            assert_eq!(launch(s, ws, ex, aclnnMoeInitRoutingV3), 0);
            assert_eq!(as_i32(&read(&c.row)), vec![1, 2, 0], "all rows routed");
        }
    }
}

/// Fault (3b): expertTokensNumType 0 (cumsum) is refused by the 2025 tiling; 1 (count) works.
#[test]
fn expert_tokens_num_type_cumsum_is_refused() {
    if !HAS_INIT_ROUTING_V3 {
        return;
    }
    let _s = setup();
    let c = call(&[0], 1, 1, 1, 2);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    let r = ints(&[0, 1]);
    assert_eq!(
        gws(&c, ptr::null(), 1, 0, r, 0, c.scale_out.t, &mut ex, &mut ws),
        TILING
    );
    assert!(msg().contains("expertTokensNumType"), "{}", msg());
}

/// Fault (3c): activeExpertRange NULL -> refused (161001; the 2025 host code would segfault);
/// a range that is not 2 values -> 561002.
#[test]
fn active_expert_range_is_required() {
    if !HAS_INIT_ROUTING_V3 {
        return;
    }
    let _s = setup();
    let c = call(&[0], 1, 1, 1, 2);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(
        gws(&c, ptr::null(), 1, 1, ptr::null(), 0, c.scale_out.t, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_NULLPTR
    );
    assert!(msg().contains("activeExpertRange"), "{}", msg());
    let r3 = ints(&[0, 1, 1]);
    assert_eq!(
        gws(&c, ptr::null(), 1, 1, r3, 0, c.scale_out.t, &mut ex, &mut ws),
        TILING
    );
    let r_bad = ints(&[0, 2]);
    assert_eq!(
        gws(&c, ptr::null(), 1, 1, r_bad, 0, c.scale_out.t, &mut ex, &mut ws),
        TILING,
        "end > expertNum"
    );
}

/// Counts: INT64, shape [end - start] in count mode (aclnn CheckDtypeValid / CheckShape -> 161002).
#[test]
fn counts_are_int64_of_range_length() {
    if !HAS_INIT_ROUTING_V3 {
        return;
    }
    let _s = setup();
    let mut c = call(&[0, 1], 2, 1, 2, 2);
    let r = ints(&[0, 2]);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    c.cnt = zeros(&[2], sys::ACL_INT32);
    assert_eq!(
        gws(&c, ptr::null(), 2, 1, r, 0, c.scale_out.t, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
    c.cnt = zeros(&[3], sys::ACL_INT64);
    assert_eq!(
        gws(&c, ptr::null(), 2, 1, r, 0, c.scale_out.t, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
}

/// expandedXOut must be [T*k, H] (aclnn CheckShape), and expandedScaleOut FLOAT.
#[test]
fn expanded_x_is_t_times_k_rows_and_scale_out_is_float() {
    if !HAS_INIT_ROUTING_V3 {
        return;
    }
    let _s = setup();
    let mut c = call(&[0, 0], 2, 1, 1, 2);
    let r = ints(&[0, 1]);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    c.ex = zeros(&[1, 2], sys::ACL_FLOAT);
    assert_eq!(
        gws(&c, ptr::null(), 2, 1, r, 0, c.scale_out.t, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
    let c = call(&[0, 0], 2, 1, 1, 2);
    let so = zeros(&[2], sys::ACL_FLOAT16);
    assert_eq!(
        gws(&c, ptr::null(), 2, 1, r, 0, so.t, &mut ex, &mut ws),
        sys::ACLNN_ERR_PARAM_INVALID
    );
}

/// Unquantised with scaleOptional f32 [T]: expandedScaleOut[i] = scale[sorted[i] / k].
#[test]
fn scale_is_gathered_into_expanded_scale_out() {
    if !HAS_INIT_ROUTING_V3 {
        return;
    }
    let s = setup();
    let c = call(&[2, 0, 1], 3, 1, 3, 2);
    let scale = tensor(&f32b(&[0.5, 1.5, 2.5]), &[3], sys::ACL_FLOAT);
    let r = ints(&[0, 3]);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(
        gws(&c, scale.t, 3, 1, r, 1, c.scale_out.t, &mut ex, &mut ws),
        0,
        "{}",
        msg()
    );
    assert_eq!(launch(s, ws, ex, aclnnMoeInitRoutingV3), 0);
    assert_eq!(as_f32(&read(&c.scale_out)), vec![1.5, 2.5, 0.5]);
}

/// Expert ids outside [0, expertNum) are a value error at launch (hardware: garbage).
#[test]
fn out_of_range_expert_id_fails_at_launch() {
    if !HAS_INIT_ROUTING_V3 {
        return;
    }
    let s = setup();
    let c = call(&[3], 1, 1, 3, 2);
    let r = ints(&[0, 3]);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(gws(&c, ptr::null(), 1, 1, r, 0, c.scale_out.t, &mut ex, &mut ws), 0);
    assert_eq!(launch(s, ws, ex, aclnnMoeInitRoutingV3), sys::ACLNN_ERR_INNER);
}

/// rowIdxType outside {0, 1} -> 561002; quantMode != -1 and an offset with quantMode -1 -> 161002
/// (NOT EMULATED / "非量化场景下不输入").
#[test]
fn row_idx_type_and_quant_mode_ranges() {
    if !HAS_INIT_ROUTING_V3 {
        return;
    }
    let _s = setup();
    let c = call(&[0], 1, 1, 1, 2);
    let r = ints(&[0, 1]);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(
        gws(&c, ptr::null(), 1, 1, r, 2, c.scale_out.t, &mut ex, &mut ws),
        TILING
    );
    let off = tensor(&f32b(&[0.0]), &[1], sys::ACL_FLOAT);
    for (quant, offset) in [(1i64, ptr::null()), (-1, off.t as *const sys::aclTensor)] {
        // SAFETY: live tensors or NULL; out-pointers to locals.
        let rc = unsafe {
            aclnnMoeInitRoutingV3GetWorkspaceSize(
                c.x.t,
                c.ids.t,
                ptr::null(),
                offset,
                1,
                0,
                1,
                0,
                1,
                true,
                quant,
                r,
                0,
                c.ex.t,
                c.row.t,
                c.cnt.t,
                c.scale_out.t,
                &mut ws,
                &mut ex,
            )
        };
        assert_eq!(rc, sys::ACLNN_ERR_PARAM_INVALID, "quantMode {quant}");
    }
}
