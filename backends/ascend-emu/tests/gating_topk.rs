//! aclnnMoeGatingTopK rules, one test each, from the documents (sources in RULES.md). The op exists
//! from CANN 8.2; several rules depend on the release (see `ascendcl::profile::Release`).

mod common;
use common::*;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::ops::ACLNN_ERR_INNER_TILING_ERROR as TILING;
use ascendcl::profile::{Release, HAS_GATING_TOPK};
use ascendcl::sys;

/// Attributes of one call.
#[derive(Clone, Copy)]
struct A {
    k: i64,
    k_group: i64,
    gc: i64,
    mode: i64,
    renorm: i64,
    norm: i64,
    out_flag: bool,
    scale: f64,
}

/// The 8.2 envelope (valid on every release with the op): E = 256, 8 groups, kGroup 4, sigmoid,
/// top-2 sum, with a bias.
const DSV3: A = A {
    k: 2,
    k_group: 4,
    gc: 8,
    mode: 1,
    renorm: 0,
    norm: 1,
    out_flag: true,
    scale: 2.5,
};

struct Io {
    x: Dev,
    bias: Option<Dev>,
    y: Dev,
    idx: Dev,
    out: Option<Dev>,
}

fn io(xv: &[f32], e: i64, xdt: sys::aclDataType, bias: Option<(&[f32], sys::aclDataType)>, k: i64) -> Io {
    let t = xv.len() as i64 / e;
    let enc = |v: &[f32], dt| match dt {
        sys::ACL_FLOAT => f32b(v),
        sys::ACL_FLOAT16 => f16b(v),
        _ => bf16b(v),
    };
    Io {
        x: tensor(&enc(xv, xdt), &[t, e], xdt),
        bias: bias.map(|(b, dt)| tensor(&enc(b, dt), &[e], dt)),
        y: zeros(&[t, k], xdt),
        idx: filled(&[t, k], sys::ACL_INT32, 0xff),
        out: Some(filled(&[t, e], sys::ACL_FLOAT, 0xff)),
    }
}

fn gws(io: &Io, a: A, exec: &mut *mut sys::aclOpExecutor, ws: &mut u64) -> i32 {
    // SAFETY: live tensors from this library or NULL; out-pointers to locals.
    unsafe {
        aclnnMoeGatingTopKGetWorkspaceSize(
            io.x.t,
            io.bias.as_ref().map_or(ptr::null(), |b| b.t),
            a.k,
            a.k_group,
            a.gc,
            a.mode,
            a.renorm,
            a.norm,
            a.out_flag,
            a.scale,
            1e-20,
            io.y.t,
            io.idx.t,
            io.out.as_ref().map_or(ptr::null(), |o| o.t),
            ws,
            exec,
        )
    }
}

fn status(io: &Io, a: A) -> i32 {
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    gws(io, a, &mut ex, &mut ws)
}

fn zeros_e(e: usize) -> Vec<f32> {
    vec![0.0; e]
}

/// Fault (4): `out` (f32 [T,E]) is a required output whatever outFlag says -> 161001.
#[test]
fn out_is_required_whatever_out_flag() {
    if !HAS_GATING_TOPK {
        return;
    }
    let _s = setup();
    let b = zeros_e(256);
    let mut o = io(&zeros_e(256), 256, sys::ACL_FLOAT, Some((&b[..], sys::ACL_FLOAT)), 2);
    o.out = None;
    for flag in [false, true] {
        assert_eq!(status(&o, A { out_flag: flag, ..DSV3 }), sys::ACLNN_ERR_PARAM_NULLPTR);
        assert!(msg().contains("outOut"), "{}", msg());
    }
}

/// `out` must be FLOAT [T, E] (tiling) -> 561002.
#[test]
fn out_is_float_t_by_e() {
    if !HAS_GATING_TOPK {
        return;
    }
    let _s = setup();
    let b = zeros_e(256);
    let mut o = io(&zeros_e(256), 256, sys::ACL_FLOAT, Some((&b[..], sys::ACL_FLOAT)), 2);
    assert_eq!(status(&o, DSV3), 0, "{}", msg());
    o.out = Some(zeros(&[1, 256], sys::ACL_FLOAT16));
    assert_eq!(status(&o, DSV3), TILING);
    o.out = Some(zeros(&[1, 2], sys::ACL_FLOAT));
    assert_eq!(status(&o, DSV3), TILING);
}

/// Fault (5): bias dtype must equal x dtype: bf16 x with f32 bias -> 561002; bf16 bias passes.
#[test]
fn bias_dtype_must_equal_x_dtype() {
    if !HAS_GATING_TOPK {
        return;
    }
    let _s = setup();
    let b = zeros_e(256);
    let o = io(&zeros_e(256), 256, sys::ACL_BF16, Some((&b[..], sys::ACL_FLOAT)), 2);
    assert_eq!(status(&o, DSV3), TILING);
    assert!(msg().contains("bias"), "{}", msg());
    let o = io(&zeros_e(256), 256, sys::ACL_BF16, Some((&b[..], sys::ACL_BF16)), 2);
    assert_eq!(status(&o, DSV3), 0, "{}", msg());
    let o = io(
        &zeros_e(256),
        256,
        sys::ACL_FLOAT16,
        Some((&b[..], sys::ACL_FLOAT16)),
        2,
    );
    assert_eq!(status(&o, DSV3), 0, "{}", msg());
}

/// Grouped case: groupCount * align32(E / groupCount) <= 2048. E=1024, gc=128 (8 per group,
/// aligned 32) -> 4096 -> 561002; gc=32 (32 per group) -> 1024 passes (from 8.3; 8.2 needs E=256).
#[test]
fn grouped_shape_limit() {
    if !HAS_GATING_TOPK {
        return;
    }
    let _s = setup();
    let b = zeros_e(1024);
    let o = io(&zeros_e(1024), 1024, sys::ACL_FLOAT, Some((&b[..], sys::ACL_FLOAT)), 8);
    let a = A {
        k: 8,
        k_group: 4,
        gc: 128,
        ..DSV3
    };
    assert_eq!(status(&o, a), TILING);
    if rel() >= Release::V8_3 {
        assert!(msg().contains("align32"), "{}", msg());
    }
    let want = if rel() == Release::V8_2 { TILING } else { 0 };
    assert_eq!(status(&o, A { gc: 32, ..a }), want, "{}", msg());
    // Not grouped (kGroup == groupCount): the limit does not apply.
    assert_eq!(status(&o, A { k_group: 128, ..a }), want, "{}", msg());
}

/// Release limits: softmax (normType 0) and max group scores (groupSelectMode 0) only from 8.5;
/// 8.2/8.3 pages document sigmoid with top-2-sum groups only.
#[test]
fn softmax_and_max_mode_need_8_5() {
    if !HAS_GATING_TOPK {
        return;
    }
    let _s = setup();
    let b = zeros_e(256);
    let o = io(&zeros_e(256), 256, sys::ACL_FLOAT, Some((&b[..], sys::ACL_FLOAT)), 2);
    let want = if rel() == Release::V8_5 { 0 } else { TILING };
    assert_eq!(status(&o, A { norm: 0, ..DSV3 }), want, "{}", msg());
    assert_eq!(status(&o, A { mode: 0, ..DSV3 }), want, "{}", msg());
    assert_eq!(status(&o, DSV3), 0, "{}", msg());
}

/// CANN 8.2 (torch_npu 7.0.0 on A2/A3): E = 256, k <= 32, kGroup = 4, bias mandatory.
#[test]
fn cann_8_2_envelope() {
    if !HAS_GATING_TOPK {
        return;
    }
    let _s = setup();
    let want = if rel() == Release::V8_2 { TILING } else { 0 };
    let b = zeros_e(64);
    let o = io(&zeros_e(64), 64, sys::ACL_FLOAT, Some((&b[..], sys::ACL_FLOAT)), 2);
    assert_eq!(status(&o, DSV3), want, "E = 64: {}", msg());
    let o = io(&zeros_e(256), 256, sys::ACL_FLOAT, None, 2);
    assert_eq!(status(&o, DSV3), want, "no bias: {}", msg());
    let b = zeros_e(256);
    let o = io(&zeros_e(256), 256, sys::ACL_FLOAT, Some((&b[..], sys::ACL_FLOAT)), 2);
    assert_eq!(status(&o, A { k_group: 2, ..DSV3 }), want, "kGroup 2: {}", msg());
    let o = io(&zeros_e(256), 256, sys::ACL_FLOAT, Some((&b[..], sys::ACL_FLOAT)), 40);
    assert_eq!(
        status(
            &o,
            A {
                k: 40,
                k_group: 8,
                ..DSV3
            }
        ),
        want,
        "k 40: {}",
        msg()
    );
}

/// Attribute ranges (tiling CheckAttr): renorm only 0; k <= kGroup * E/groupCount; E divisible by
/// groupCount; kGroup <= groupCount; E <= 2048; top-2-sum needs >= 2 experts per group.
#[test]
fn attribute_ranges() {
    if !HAS_GATING_TOPK {
        return;
    }
    let _s = setup();
    let b = zeros_e(256);
    let o = io(&zeros_e(256), 256, sys::ACL_FLOAT, Some((&b[..], sys::ACL_FLOAT)), 2);
    assert_eq!(status(&o, A { renorm: 1, ..DSV3 }), TILING);
    assert_eq!(status(&o, A { gc: 7, ..DSV3 }), TILING);
    assert_eq!(status(&o, A { k_group: 9, ..DSV3 }), TILING);
    assert_eq!(
        status(
            &o,
            A {
                gc: 256,
                k_group: 1,
                ..DSV3
            }
        ),
        TILING,
        "1 expert per group, top-2 sum"
    );
    let o = io(&zeros_e(256), 256, sys::ACL_FLOAT, Some((&b[..], sys::ACL_FLOAT)), 200);
    assert_eq!(status(&o, A { k: 200, ..DSV3 }), TILING, "k > kGroup * 32");
    let b = zeros_e(4096);
    let o = io(&zeros_e(4096), 4096, sys::ACL_FLOAT, Some((&b[..], sys::ACL_FLOAT)), 2);
    assert_eq!(status(&o, DSV3), TILING, "E > 2048");
}

/// Values (sigmoid): selection by sigmoid(x) + bias inside the kept groups; y = the UNBIASED
/// sigmoid at the chosen ids / (their sum + eps) * routedScalingFactor; out = sigmoid(x).
#[test]
fn sigmoid_y_is_unbiased_and_renormalised() {
    if !HAS_GATING_TOPK {
        return;
    }
    let s = setup();
    let mut x = zeros_e(256);
    x[5] = 2.0;
    x[40] = 1.0;
    let mut b = zeros_e(256);
    b[40] = 0.5;
    let o = io(&x, 256, sys::ACL_FLOAT, Some((&b[..], sys::ACL_FLOAT)), 2);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(gws(&o, DSV3, &mut ex, &mut ws), 0, "{}", msg());
    assert_eq!(launch(s, ws, ex, aclnnMoeGatingTopK), 0, "{}", msg());
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    let (s40, s5) = (sig(1.0), sig(2.0));
    // Biased scores: 40 -> s40 + 0.5 = 1.23 beats 5 -> 0.88.
    assert_eq!(as_i32(&read(&o.idx)), vec![40, 5]);
    let y = as_f32(&read(&o.y));
    let want = [s40 / (s40 + s5) * 2.5, s5 / (s40 + s5) * 2.5];
    for (g, w) in y.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "y {y:?} want {want:?}");
    }
    let out = as_f32(&read(o.out.as_ref().unwrap()));
    assert!(
        (out[40] - s40).abs() < 1e-6 && (out[0] - 0.5).abs() < 1e-6,
        "out = sigmoid(x)"
    );
}

/// Values (softmax, 8.5): y = softmax(x) at the chosen ids * routedScalingFactor, NOT renormalised.
#[test]
fn softmax_y_is_not_renormalised() {
    if !HAS_GATING_TOPK {
        return;
    }
    let s = setup();
    let x = [1.0f32, 3.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let o = io(&x, 8, sys::ACL_FLOAT, None, 2);
    let a = A {
        k: 2,
        k_group: 1,
        gc: 1,
        mode: 0,
        norm: 0,
        scale: 1.5,
        ..DSV3
    };
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    let rc = gws(&o, a, &mut ex, &mut ws);
    if rel() != Release::V8_5 {
        assert_eq!(rc, TILING);
        return;
    }
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(s, ws, ex, aclnnMoeGatingTopK), 0);
    let den: f32 = x.iter().map(|v| v.exp()).sum();
    assert_eq!(as_i32(&read(&o.idx)), vec![1, 2]);
    let y = as_f32(&read(&o.y));
    let want = [3f32.exp() / den * 1.5, 2f32.exp() / den * 1.5];
    for (g, w) in y.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "y {y:?} want {want:?}");
    }
}

/// Group selection (top-2 sum): experts outside the kGroup best groups are never chosen, even with
/// higher scores than the chosen ones.
#[test]
fn groups_outside_k_group_are_masked() {
    if !HAS_GATING_TOPK {
        return;
    }
    let s = setup();
    // 8 groups of 32. Group 7 has one very high expert (sum of top two = s(4) + s(0));
    // groups 0..=3 have two moderately high experts each (sum 2 s(3) > s(4) + s(0)).
    let mut x = vec![0.0f32; 256];
    for g in 0..4 {
        x[g * 32] = 3.0;
        x[g * 32 + 1] = 3.0;
    }
    x[7 * 32] = 4.0;
    let b = zeros_e(256);
    let o = io(&x, 256, sys::ACL_FLOAT, Some((&b[..], sys::ACL_FLOAT)), 2);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    assert_eq!(gws(&o, DSV3, &mut ex, &mut ws), 0, "{}", msg());
    assert_eq!(launch(s, ws, ex, aclnnMoeGatingTopK), 0);
    let ids = as_i32(&read(&o.idx));
    assert!(!ids.contains(&224), "expert 224 lies in a dropped group: {ids:?}");
    assert_eq!(ids, vec![0, 1], "ties go to the lower index");
}
