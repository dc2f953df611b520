//! Issue 13, group 4: aclnnSigmoid, aclnnSqrt, aclnnDiv, aclnnSoftplus, aclnnSoftmax,
//! aclnnReduceSum, aclnnGather — through the exported C ABI; expected values computed here from the
//! pages' formulas (RULES.md SG*, SQ*, DV*, SP*, SM*, RS*, GA*).

mod common;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;
use half::f16;

#[test]
fn sigmoid_and_sqrt() {
    let stream = setup();
    let xv = [-2.0f32, 0.0, 0.5, 4.0];
    let x = tensor(&f32b(&xv), &[2, 2], sys::ACL_FLOAT);
    let out = zeros(&[2, 2], sys::ACL_FLOAT);
    // SAFETY: live tensors; out-pointers to locals (here and below).
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnSigmoidGetWorkspaceSize(x.t, out.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnSigmoid), 0);
    let want: Vec<f32> = xv.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
    assert_eq!(as_f32(&read(&out)), want);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnSqrtGetWorkspaceSize(x.t, out.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnSqrt), 0);
    let got = as_f32(&read(&out));
    assert!(got[0].is_nan(), "sqrt(-2) is NaN");
    assert_eq!(&got[1..], &[0.0, 0.5f32.sqrt(), 2.0]);
    assert_eq!(
        launch(stream, ws, ex, aclnnSqrt),
        sys::ACLNN_ERR_PARAM_INVALID,
        "single use"
    );
    // Refusals: NULL, out dtype / shape, integer self.
    let h = zeros(&[2, 2], sys::ACL_FLOAT16);
    let wide = zeros(&[4], sys::ACL_FLOAT);
    let xi = zeros(&[2, 2], sys::ACL_INT32);
    unsafe {
        assert_eq!(
            p1(|w, e| aclnnSigmoidGetWorkspaceSize(ptr::null(), out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnSqrtGetWorkspaceSize(x.t, ptr::null_mut(), w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnSigmoidGetWorkspaceSize(x.t, h.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnSqrtGetWorkspaceSize(x.t, wide.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnSigmoidGetWorkspaceSize(xi.t, xi.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
    }
}

#[test]
fn div_broadcasts_and_follows_ieee() {
    let stream = setup();
    let a = tensor(&f32b(&[1.0, -4.0, 0.0, 9.0]), &[2, 2], sys::ACL_FLOAT);
    let b = tensor(&f32b(&[2.0, 0.0]), &[2], sys::ACL_FLOAT);
    let out = zeros(&[2, 2], sys::ACL_FLOAT);
    // SAFETY: live tensors; out-pointers to locals.
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnDivGetWorkspaceSize(a.t, b.t, out.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnDiv), 0);
    let got = as_f32(&read(&out));
    assert_eq!(got[0], 0.5);
    assert_eq!(got[1], f32::NEG_INFINITY);
    assert_eq!(got[2], 0.0);
    assert_eq!(got[3], f32::INFINITY);
    let c = zeros(&[3], sys::ACL_FLOAT);
    unsafe {
        assert_eq!(
            p1(|w, e| aclnnDivGetWorkspaceSize(a.t, ptr::null(), out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnDivGetWorkspaceSize(a.t, c.t, out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
    }
}

#[test]
fn softplus_formula_and_threshold() {
    let stream = setup();
    let xv = [-3.0f32, 0.0, 1.0, 12.0];
    let x = tensor(&f16b(&xv), &[4], sys::ACL_FLOAT16);
    let out = zeros(&[4], sys::ACL_FLOAT16);
    let (beta, thr) = (scalar_f32(2.0), scalar_f32(10.0));
    // SAFETY: live objects; out-pointers to locals.
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnSoftplusGetWorkspaceSize(x.t, beta, thr, out.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnSoftplus), 0);
    // out = ln(1 + e^(beta x)) / beta for beta x <= threshold, else x.
    let want: Vec<f32> = xv
        .iter()
        .map(|&v| {
            let y = if 2.0 * v > 10.0 {
                v
            } else {
                (2.0 * v).exp().ln_1p() / 2.0
            };
            f16::from_f32(y).to_f32()
        })
        .collect();
    assert_eq!(as_f16(&read(&out)), want);
    assert_eq!(want[3], 12.0, "linear above the threshold");
    let zero = scalar_f32(0.0);
    let o32 = zeros(&[4], sys::ACL_FLOAT);
    unsafe {
        assert_eq!(
            p1(|w, e| aclnnSoftplusGetWorkspaceSize(x.t, ptr::null(), thr, out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnSoftplusGetWorkspaceSize(x.t, beta, ptr::null(), out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnSoftplusGetWorkspaceSize(x.t, zero, thr, out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnSoftplusGetWorkspaceSize(x.t, beta, thr, o32.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
    }
}

#[test]
fn softmax_along_dim() {
    let stream = setup();
    let xv = [1.0f32, 2.0, 3.0, -1.0, 0.0, 1000.0];
    let x = tensor(&f32b(&xv), &[2, 3], sys::ACL_FLOAT);
    let softmax = |v: &[f32]| -> Vec<f32> {
        let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
        let s: f32 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    };
    for dim in [1i64, -1] {
        let out = zeros(&[2, 3], sys::ACL_FLOAT);
        // SAFETY: live tensors; out-pointers to locals.
        let (rc, ws, ex) = p1(|w, e| unsafe { aclnnSoftmaxGetWorkspaceSize(x.t, dim, out.t, w, e) });
        assert_eq!(rc, 0, "{}", msg());
        assert!(ws > 0, "reductions ask for a workspace");
        assert_eq!(launch(stream, ws, ex, aclnnSoftmax), 0);
        let mut want = softmax(&xv[..3]);
        want.extend(softmax(&xv[3..]));
        assert_eq!(as_f32(&read(&out)), want);
    }
    // dim 0: columns.
    let out = zeros(&[2, 3], sys::ACL_FLOAT);
    // SAFETY: as above.
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnSoftmaxGetWorkspaceSize(x.t, 0, out.t, w, e) });
    assert_eq!(rc, 0);
    // A launch without the workspace it asked for is refused.
    assert_eq!(
        aclnnSoftmax(ptr::null_mut(), 0, ex, stream),
        sys::ACLNN_ERR_PARAM_INVALID
    );
    let (rc, ws2, ex) = p1(|w, e| unsafe { aclnnSoftmaxGetWorkspaceSize(x.t, 0, out.t, w, e) });
    assert_eq!((rc, ws2), (0, ws));
    assert_eq!(launch(stream, ws, ex, aclnnSoftmax), 0);
    let got = as_f32(&read(&out));
    for c in 0..3 {
        let col = softmax(&[xv[c], xv[3 + c]]);
        assert_eq!([got[c], got[3 + c]], [col[0], col[1]]);
    }
    let h = zeros(&[2, 3], sys::ACL_FLOAT16);
    unsafe {
        assert_eq!(
            p1(|w, e| aclnnSoftmaxGetWorkspaceSize(x.t, 2, out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnSoftmaxGetWorkspaceSize(x.t, -3, out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnSoftmaxGetWorkspaceSize(x.t, 1, h.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnSoftmaxGetWorkspaceSize(ptr::null(), 1, out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
    }
}

#[test]
fn reduce_sum_dims_keepdims_dtype() {
    let stream = setup();
    // [2, 3, 2] with values 0..12.
    let xv: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let x = tensor(&f32b(&xv), &[2, 3, 2], sys::ACL_FLOAT);
    let at = |i: usize, j: usize, k: usize| xv[i * 6 + j * 2 + k];
    // Sum over dims [1] (and [-2]), no keepDims: [2, 2].
    for d in [1i64, -2] {
        let dims = ints(&[d]);
        let out = zeros(&[2, 2], sys::ACL_FLOAT);
        // SAFETY: live objects; out-pointers to locals.
        let (rc, ws, ex) =
            p1(|w, e| unsafe { aclnnReduceSumGetWorkspaceSize(x.t, dims, false, sys::ACL_FLOAT, out.t, w, e) });
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnReduceSum), 0);
        let mut want = vec![];
        for i in 0..2 {
            for k in 0..2 {
                want.push((0..3).map(|j| at(i, j, k)).sum::<f32>());
            }
        }
        assert_eq!(as_f32(&read(&out)), want);
    }
    // dims [0, 2] with keepDims, into BF16: [1, 3, 1].
    let dims = ints(&[0, 2]);
    let out = zeros(&[1, 3, 1], sys::ACL_BF16);
    // SAFETY: as above.
    let (rc, ws, ex) =
        p1(|w, e| unsafe { aclnnReduceSumGetWorkspaceSize(x.t, dims, true, sys::ACL_BF16, out.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnReduceSum), 0);
    let want: Vec<f32> = (0..3)
        .map(|j| half::bf16::from_f32(at(0, j, 0) + at(0, j, 1) + at(1, j, 0) + at(1, j, 1)).to_f32())
        .collect();
    assert_eq!(as_bf16(&read(&out)), want);
    // Refusals.
    let o22 = zeros(&[2, 2], sys::ACL_FLOAT);
    let d1 = ints(&[1]);
    let dup = ints(&[1, -2]);
    let empty = ints(&[]);
    let far = ints(&[3]);
    unsafe {
        assert_eq!(
            p1(|w, e| aclnnReduceSumGetWorkspaceSize(x.t, ptr::null(), false, sys::ACL_FLOAT, o22.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnReduceSumGetWorkspaceSize(x.t, d1, false, sys::ACL_FLOAT16, o22.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID,
            "dtype != out dtype"
        );
        assert_eq!(
            p1(|w, e| aclnnReduceSumGetWorkspaceSize(x.t, d1, true, sys::ACL_FLOAT, o22.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID,
            "keepDims shape"
        );
        assert_eq!(
            p1(|w, e| aclnnReduceSumGetWorkspaceSize(x.t, dup, false, sys::ACL_FLOAT, o22.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnReduceSumGetWorkspaceSize(x.t, empty, false, sys::ACL_FLOAT, o22.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnReduceSumGetWorkspaceSize(x.t, far, false, sys::ACL_FLOAT, o22.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
    }
}

#[test]
fn gather_is_torch_gather() {
    let stream = setup();
    // The page's examples: self [[1,2,3],[4,5,6],[7,8,9]], index [[0,2],[1,0]].
    let x = tensor(
        &f32b(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]),
        &[3, 3],
        sys::ACL_FLOAT,
    );
    let idx = tensor(&i64b(&[0, 2, 1, 0]), &[2, 2], sys::ACL_INT64);
    for (dim, want) in [
        (0i64, [1.0f32, 8.0, 4.0, 2.0]),
        (1, [1.0, 3.0, 5.0, 4.0]),
        (-1, [1.0, 3.0, 5.0, 4.0]),
    ] {
        let out = zeros(&[2, 2], sys::ACL_FLOAT);
        // SAFETY: live tensors; out-pointers to locals.
        let (rc, ws, ex) = p1(|w, e| unsafe { aclnnGatherGetWorkspaceSize(x.t, dim, idx.t, out.t, w, e) });
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnGather), 0, "{}", msg());
        assert_eq!(as_f32(&read(&out)), want, "dim {dim}");
    }
    // INT32 self and index.
    let xi = tensor(&i32b(&[10, 20, 30]), &[1, 3], sys::ACL_INT32);
    let ii = tensor(&i32b(&[2, 2, 0, 1]), &[1, 4], sys::ACL_INT32);
    let oi = zeros(&[1, 4], sys::ACL_INT32);
    // SAFETY: as above.
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnGatherGetWorkspaceSize(xi.t, 1, ii.t, oi.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnGather), 0);
    assert_eq!(as_i32(&read(&oi)), [30, 30, 10, 20]);
    // An index out of range fails at launch (561000), as does a negative one.
    for bad in [3i64, -1] {
        let ib = tensor(&i64b(&[0, bad, 1, 0]), &[2, 2], sys::ACL_INT64);
        let out = zeros(&[2, 2], sys::ACL_FLOAT);
        // SAFETY: as above.
        let (rc, ws, ex) = p1(|w, e| unsafe { aclnnGatherGetWorkspaceSize(x.t, 1, ib.t, out.t, w, e) });
        assert_eq!(rc, 0);
        assert_eq!(launch(stream, ws, ex, aclnnGather), sys::ACLNN_ERR_INNER);
    }
    // Phase-one refusals.
    let out = zeros(&[2, 2], sys::ACL_FLOAT);
    let if32 = zeros(&[2, 2], sys::ACL_FLOAT);
    let i1 = zeros(&[4], sys::ACL_INT64);
    let big = zeros(&[2, 4], sys::ACL_INT64);
    let oh = zeros(&[2, 2], sys::ACL_FLOAT16);
    unsafe {
        assert_eq!(
            p1(|w, e| aclnnGatherGetWorkspaceSize(x.t, 0, ptr::null(), out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnGatherGetWorkspaceSize(x.t, 0, if32.t, out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID,
            "float index"
        );
        assert_eq!(
            p1(|w, e| aclnnGatherGetWorkspaceSize(x.t, 0, i1.t, zeros(&[4], sys::ACL_FLOAT).t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID,
            "rank"
        );
        assert_eq!(
            p1(|w, e| aclnnGatherGetWorkspaceSize(x.t, 0, big.t, zeros(&[2, 4], sys::ACL_FLOAT).t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID,
            "index wider than self off the gather dim"
        );
        assert_eq!(
            p1(|w, e| aclnnGatherGetWorkspaceSize(x.t, 0, idx.t, oh.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID,
            "out dtype"
        );
        assert_eq!(
            p1(|w, e| aclnnGatherGetWorkspaceSize(x.t, 2, idx.t, out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID,
            "dim"
        );
    }
}

#[test]
fn divs_and_the_inplace_forms() {
    let stream = setup();
    // Divs: f16 self / 3 rounded once (not self * (1/3)).
    let xv = [1.0f32, 2.0, -7.0, 100.0];
    let x = tensor(&f16b(&xv), &[4], sys::ACL_FLOAT16);
    let out = zeros(&[4], sys::ACL_FLOAT16);
    let three = scalar_f32(3.0);
    // SAFETY: live objects; out-pointers to locals (here and below).
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnDivsGetWorkspaceSize(x.t, three, out.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnDivs), 0);
    let want: Vec<f32> = xv.iter().map(|v| f16::from_f32(v / 3.0).to_f32()).collect();
    assert_eq!(as_f16(&read(&out)), want);
    // InplaceDivs on f32.
    let y = tensor(&f32b(&[3.0, -6.0]), &[2], sys::ACL_FLOAT);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnInplaceDivsGetWorkspaceSize(y.t, three, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnInplaceDivs), 0);
    assert_eq!(as_f32(&read(&y)), [1.0, -2.0]);
    // InplaceDiv: [2, 2] /= [2, 1] (row sums: the renormalisation pattern).
    let m = tensor(&f32b(&[1.0, 3.0, 2.0, 6.0]), &[2, 2], sys::ACL_FLOAT);
    let sums = tensor(&f32b(&[4.0, 8.0]), &[2, 1], sys::ACL_FLOAT);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnInplaceDivGetWorkspaceSize(m.t, sums.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnInplaceDiv), 0);
    assert_eq!(as_f32(&read(&m)), [0.25, 0.75, 0.25, 0.75]);
    assert_eq!(
        launch(stream, ws, ex, aclnnInplaceDiv),
        sys::ACLNN_ERR_PARAM_INVALID,
        "single use"
    );
    // In place, other may not grow selfRef.
    let wide = zeros(&[2, 2, 2], sys::ACL_FLOAT);
    // InplaceSigmoid / InplaceSqrt.
    let s = tensor(&f32b(&[0.0, 2.0]), &[2], sys::ACL_FLOAT);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnInplaceSigmoidGetWorkspaceSize(s.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnInplaceSigmoid), 0);
    assert_eq!(as_f32(&read(&s)), [0.5, 1.0 / (1.0 + (-2.0f32).exp())]);
    let q = tensor(&bf16b(&[4.0, 2.0]), &[2], sys::ACL_BF16);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnInplaceSqrtGetWorkspaceSize(q.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    // The executor belongs to aclnnInplaceSqrt, not aclnnSqrt.
    assert_eq!(launch(stream, ws, ex, aclnnSqrt), sys::ACLNN_ERR_PARAM_INVALID);
    assert_eq!(launch(stream, ws, ex, aclnnInplaceSqrt), 0);
    assert_eq!(as_bf16(&read(&q)), [2.0, half::bf16::from_f32(2.0f32.sqrt()).to_f32()]);
    unsafe {
        assert_eq!(
            p1(|w, e| aclnnInplaceDivGetWorkspaceSize(m.t, wide.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnDivsGetWorkspaceSize(x.t, ptr::null(), out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnInplaceSigmoidGetWorkspaceSize(ptr::null_mut(), w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        let i = zeros(&[2], sys::ACL_INT32);
        assert_eq!(
            p1(|w, e| aclnnInplaceSqrtGetWorkspaceSize(i.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
    }
}

#[test]
fn empty_tensors_only_where_the_page_allows_them() {
    let stream = setup();
    // ReduceSum "支持空Tensor": summing an empty axis gives zeros.
    let x = zeros(&[2, 0], sys::ACL_FLOAT);
    let out = filled(&[2], sys::ACL_FLOAT, 0x7F);
    let dims = ints(&[1]);
    // SAFETY: live objects; out-pointers to locals (here and below).
    let (rc, ws, ex) =
        p1(|w, e| unsafe { aclnnReduceSumGetWorkspaceSize(x.t, dims, false, sys::ACL_FLOAT, out.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnReduceSum), 0);
    assert_eq!(as_f32(&read(&out)), [0.0, 0.0]);
    // Sigmoid allows them too (nothing to do).
    let e = zeros(&[0, 3], sys::ACL_FLOAT);
    let (rc, ws, ex) = p1(|w, x| unsafe { aclnnSigmoidGetWorkspaceSize(e.t, e.t, w, x) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnSigmoid), 0);
    // The silent pages: refused.
    let eo = zeros(&[0, 3], sys::ACL_FLOAT);
    let k = scalar_f32(2.0);
    unsafe {
        assert_eq!(
            p1(|w, x| aclnnSqrtGetWorkspaceSize(e.t, eo.t, w, x)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, x| aclnnMulsGetWorkspaceSize(e.t, k, eo.t, w, x)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, x| aclnnSoftmaxGetWorkspaceSize(e.t, 1, eo.t, w, x)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
    }
}
