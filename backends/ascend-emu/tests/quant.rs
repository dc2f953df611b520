//! The W8A8 path of issue 13 through the exported C ABI: aclnnDynamicQuant (and the quantised
//! aclnnGroupedMatmulV4). Each result is computed here from the page's formula (not from moehal
//! code); each documented refusal is refused. RULES.md DQ*, QG*. The copy-counter check is in
//! `quant_copies.rs` (own process).

mod common;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;

const INVALID: i32 = sys::ACLNN_ERR_PARAM_INVALID;
const NULLPTR: i32 = sys::ACLNN_ERR_PARAM_NULLPTR;
const INNER: i32 = sys::ACLNN_ERR_INNER;

// ---- aclnnDynamicQuant --------------------------------------------------------------------------

fn dq_p1(x: &Dev, smooth: &Dev, y: &Dev, scale: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects of this library or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnDynamicQuantGetWorkspaceSize(x.t, smooth.t, y.t, scale.t, ws, ex) })
}

/// The page's formula for one row of already-rounded inputs: `scale = row_max(|x|) / 127`,
/// `y = round(x / scale)`; `round` taken as half-to-even (RULES.md DQ3).
fn dq_row(row: &[f32]) -> (f32, Vec<i8>) {
    let m = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let s = m / 127.0;
    (s, row.iter().map(|v| (v / s).round_ties_even() as i8).collect())
}

fn i8s(d: &Dev) -> Vec<i8> {
    read(d).into_iter().map(|b| b as i8).collect()
}

#[test]
fn dynamic_quant_follows_the_page_formula() {
    let stream = setup();
    // Row 1: max 127 → scale 1, so 0.5, 1.5, -2.5 are exact ties (half-to-even: 0, 2, -2).
    let v = [
        127.0f32, 0.5, 1.5, -2.5, //
        -3.0, 0.1, 2.9, 1.0, //
        0.25, -0.75, 0.3, -0.01,
    ];
    for (bytes, dt) in [(bf16b(&v), sys::ACL_BF16), (f16b(&v), sys::ACL_FLOAT16)] {
        let stored = if dt == sys::ACL_BF16 {
            as_bf16(&bytes)
        } else {
            as_f16(&bytes)
        };
        // A 3-D x: rows are all dims but the last ([3,1,4] → scaleOut [3,1]).
        let x = tensor(&bytes, &[3, 1, 4], dt);
        let y = filled(&[3, 1, 4], sys::ACL_INT8, 0x55);
        let s = filled(&[3, 1], sys::ACL_FLOAT, 0x55);
        let (rc, ws, ex) = dq_p1(&x, &none(), &y, &s);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnDynamicQuant), 0, "{}", msg());
        let (mut ws_, mut ys_) = (vec![], vec![]);
        for r in stored.chunks(4) {
            let (sc, q) = dq_row(r);
            ws_.push(sc);
            ys_.extend(q);
        }
        assert_eq!(as_f32(&read(&s)), ws_, "dtype {dt}");
        assert_eq!(i8s(&y), ys_, "dtype {dt}");
        assert_eq!(&i8s(&y)[..4], &[127, 0, 2, -2], "ties to even");
        assert_eq!(launch(stream, ws, ex, aclnnDynamicQuant), INVALID, "executor reused");
    }
}

#[test]
fn dynamic_quant_smooth_scales_and_strided_x() {
    let stream = setup();
    // smoothScales multiply x first: input = x · smooth.
    let xv = [1.0f32, -4.0, 2.0, 8.0, 0.5, -1.0];
    let sv = [2.0f32, 0.5, -1.0];
    let x = tensor(&bf16b(&xv), &[2, 3], sys::ACL_BF16);
    let sm = tensor(&bf16b(&sv), &[3], sys::ACL_BF16);
    let y = zeros(&[2, 3], sys::ACL_INT8);
    let s = zeros(&[2], sys::ACL_FLOAT);
    let (rc, ws, ex) = dq_p1(&x, &sm, &y, &s);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnDynamicQuant), 0, "{}", msg());
    let input: Vec<f32> = xv.iter().enumerate().map(|(i, v)| v * sv[i % 3]).collect();
    let (s0, q0) = dq_row(&input[..3]);
    let (s1, q1) = dq_row(&input[3..]);
    assert_eq!(as_f32(&read(&s)), [s0, s1]);
    assert_eq!(i8s(&y), [q0, q1].concat());
    // A transposed view of x ("支持非连续的Tensor"): x^T of a [3,2] storage.
    let t = tensor(&f16b(&[1.0, 8.0, -4.0, 0.5, 2.0, -1.0]), &[3, 2], sys::ACL_FLOAT16);
    let xt = Dev {
        t: view(
            t.ptr,
            sys::ACL_FLOAT16,
            &[2, 3],
            Some(&[1, 2]),
            0,
            &[6],
            sys::ACL_FORMAT_ND,
        ),
        ..t
    };
    let y = zeros(&[2, 3], sys::ACL_INT8);
    let s = zeros(&[2], sys::ACL_FLOAT);
    let (rc, ws, ex) = dq_p1(&xt, &none(), &y, &s);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnDynamicQuant), 0, "{}", msg());
    let (s0, q0) = dq_row(&[1.0, -4.0, 2.0]);
    let (s1, q1) = dq_row(&[8.0, 0.5, -1.0]);
    assert_eq!(as_f32(&read(&s)), [s0, s1]);
    assert_eq!(i8s(&y), [q0, q1].concat());
}

#[test]
fn dynamic_quant_refusals() {
    let stream = setup();
    let x = tensor(&bf16b(&[1.0, 2.0, 3.0, 4.0]), &[2, 2], sys::ACL_BF16);
    let y = zeros(&[2, 2], sys::ACL_INT8);
    let s = zeros(&[2], sys::ACL_FLOAT);
    let n = none();
    assert_eq!(dq_p1(&n, &n, &y, &s).0, NULLPTR);
    assert_eq!(dq_p1(&x, &n, &n, &s).0, NULLPTR);
    assert_eq!(dq_p1(&x, &n, &y, &n).0, NULLPTR);
    let xf = tensor(&f32b(&[1.0, 2.0, 3.0, 4.0]), &[2, 2], sys::ACL_FLOAT);
    assert_eq!(dq_p1(&xf, &n, &y, &s).0, INVALID, "FLOAT x: FLOAT16 / BFLOAT16 only");
    let x1 = tensor(&bf16b(&[1.0, 2.0]), &[2], sys::ACL_BF16);
    assert_eq!(
        dq_p1(&x1, &n, &zeros(&[2], sys::ACL_INT8), &zeros(&[], sys::ACL_FLOAT)).0,
        INVALID,
        "1-D x: rank 2-8"
    );
    assert_eq!(
        dq_p1(&x, &n, &zeros(&[2, 2], sys::ACL_INT32), &s).0,
        INVALID,
        "INT32 packing"
    );
    assert_eq!(
        dq_p1(&x, &n, &zeros(&[2, 3], sys::ACL_INT8), &s).0,
        INVALID,
        "yOut shape"
    );
    assert_eq!(
        dq_p1(&x, &n, &y, &zeros(&[2, 1], sys::ACL_FLOAT)).0,
        INVALID,
        "scaleOut shape"
    );
    assert_eq!(
        dq_p1(&x, &n, &y, &zeros(&[2], sys::ACL_FLOAT16)).0,
        INVALID,
        "scaleOut FLOAT"
    );
    let sm16 = tensor(&f16b(&[1.0, 1.0]), &[2], sys::ACL_FLOAT16);
    assert_eq!(dq_p1(&x, &sm16, &y, &s).0, INVALID, "smooth dtype = x dtype");
    let sm3 = tensor(&bf16b(&[1.0, 1.0, 1.0]), &[3], sys::ACL_BF16);
    assert_eq!(dq_p1(&x, &sm3, &y, &s).0, INVALID, "smooth [H]");
    let yt = Dev {
        t: view(
            y.ptr,
            sys::ACL_INT8,
            &[2, 2],
            Some(&[1, 2]),
            0,
            &[4],
            sys::ACL_FORMAT_ND,
        ),
        ..zeros(&[1], sys::ACL_INT8)
    };
    assert_eq!(dq_p1(&x, &n, &yt, &s).0, INVALID, "yOut contiguous");
    let e = zeros(&[0, 2], sys::ACL_BF16);
    assert_eq!(
        dq_p1(&e, &n, &zeros(&[0, 2], sys::ACL_INT8), &zeros(&[0], sys::ACL_FLOAT)).0,
        INVALID,
        "empty: the 8.0 page is silent"
    );
    // An all-zero row (scale 0, 0/0) and a non-finite value: UNDOCUMENTED → 561000 at launch.
    for v in [[0.0f32, 0.0, 1.0, 2.0], [f32::INFINITY, 1.0, 1.0, 2.0]] {
        let xz = tensor(&bf16b(&v), &[2, 2], sys::ACL_BF16);
        let (rc, ws, ex) = dq_p1(&xz, &n, &y, &s);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnDynamicQuant), INNER, "{v:?}");
    }
}
