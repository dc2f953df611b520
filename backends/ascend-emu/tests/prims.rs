//! The aclnn primitives of issue 13 through the exported C ABI: each op's documented result,
//! computed here from the page's formula (not from moehal code), and each documented refusal
//! (NULL, dtype, shape, executor reuse). The copy-counter check is `prims_copies.rs` (own process).

mod common;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;
use half::{bf16, f16};

// ======================================== Groups 1-3: aclCreateScalar / aclDestroyScalar, Clamp / ClampMin / ClampMax, Muls / InplaceMuls, Mul (RULES.md SC*, CL*, MS*, MU*)

fn clamp_p1(x: &Dev, lo: *const aclScalar, hi: *const aclScalar, out: &Dev) -> (i32, u64, Exec) {
    let (mut ws, mut ex) = (0u64, ptr::null_mut());
    // SAFETY: live objects of this library or NULL; out-pointers to locals.
    let rc = unsafe { aclnnClampGetWorkspaceSize(x.t, lo, hi, out.t, &mut ws, &mut ex) };
    (rc, ws, ex)
}

#[test]
fn scalar_copies_its_value_and_is_destroyed_once() {
    setup();
    // Each documented numeric type round-trips through a Muls by that scalar.
    let stream = setup();
    let x = tensor(&f32b(&[1.5, -2.0]), &[2], sys::ACL_FLOAT);
    let cases: Vec<(sys::aclDataType, Vec<u8>, f32)> = vec![
        (sys::ACL_FLOAT, 2.5f32.to_le_bytes().to_vec(), 2.5),
        (sys::ACL_FLOAT16, f16::from_f32(-3.0).to_le_bytes().to_vec(), -3.0),
        (sys::ACL_BF16, bf16::from_f32(0.5).to_le_bytes().to_vec(), 0.5),
        (sys::ACL_DOUBLE, 4.0f64.to_le_bytes().to_vec(), 4.0),
        (sys::ACL_INT32, 7i32.to_le_bytes().to_vec(), 7.0),
        (sys::ACL_INT64, (-2i64).to_le_bytes().to_vec(), -2.0),
        (sys::ACL_INT8, vec![(-5i8) as u8], -5.0),
    ];
    for (dt, mut bytes, k) in cases {
        // SAFETY: `bytes` holds one value of `dt`.
        let s = unsafe { aclCreateScalar(bytes.as_mut_ptr().cast(), dt) };
        assert!(!s.is_null(), "{dt}: {}", msg());
        // The scalar owns a copy: overwriting the host value changes nothing.
        bytes.iter_mut().for_each(|b| *b = 0xFF);
        let out = zeros(&[2], sys::ACL_FLOAT);
        let (mut ws, mut ex) = (0u64, ptr::null_mut());
        // SAFETY: live objects; out-pointers to locals.
        assert_eq!(
            unsafe { aclnnMulsGetWorkspaceSize(x.t, s, out.t, &mut ws, &mut ex) },
            0,
            "{}",
            msg()
        );
        // Destroying the scalar after phase one is fine: the executor holds the value.
        assert_eq!(aclDestroyScalar(s), 0);
        assert_eq!(aclDestroyScalar(s), sys::ACLNN_ERR_PARAM_INVALID, "second destroy");
        assert_eq!(launch(stream, ws, ex, aclnnMuls), 0, "{}", msg());
        assert_eq!(as_f32(&read(&out)), [1.5 * k, -2.0 * k], "dtype {dt}");
    }
    // NULL value, unsupported type: NULL.
    // SAFETY: NULL is checked before any read.
    assert!(unsafe { aclCreateScalar(ptr::null_mut(), sys::ACL_FLOAT) }.is_null());
    let mut v = 0u64;
    // SAFETY: 8 readable bytes; type 16 (COMPLEX64) is refused before reading.
    assert!(unsafe { aclCreateScalar((&mut v as *mut u64).cast(), 16) }.is_null());
    // A stale handle is not a scalar.
    assert_eq!(aclDestroyScalar(0x10 as *const aclScalar), sys::ACLNN_ERR_PARAM_INVALID);
}

#[test]
fn clamp_follows_the_formula_and_propagates_nan() {
    let stream = setup();
    let xv = [-3.0f32, -0.5, 0.25, 2.0, 9.0, f32::NAN];
    let lo = scalar_f32(-1.0);
    let hi = scalar_f32(1.5);
    let want = |lo: Option<f32>, hi: Option<f32>| -> Vec<f32> {
        xv.iter()
            .map(|&v| {
                if v.is_nan() {
                    return v;
                }
                // y = max(min(x, max), min) with lo <= hi.
                let a = hi.map_or(v, |h| v.min(h));
                lo.map_or(a, |l| a.max(l))
            })
            .collect()
    };
    let x = tensor(&f32b(&xv), &[2, 3], sys::ACL_FLOAT);
    for (l, h, wl, wh) in [
        (lo as *const aclScalar, hi as *const aclScalar, Some(-1.0), Some(1.5)),
        (lo, ptr::null(), Some(-1.0), None),
        (ptr::null(), hi, None, Some(1.5)),
    ] {
        let out = filled(&[2, 3], sys::ACL_FLOAT, 0xAB);
        let (rc, ws, ex) = clamp_p1(&x, l, h, &out);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnClamp), 0, "{}", msg());
        let got = as_f32(&read(&out));
        let w = want(wl, wh);
        for (g, e) in got.iter().zip(&w) {
            assert!(g == e || (g.is_nan() && e.is_nan()), "{got:?} vs {w:?}");
        }
    }
    // ClampMin / ClampMax, bf16 with a non-contiguous (transposed) view of self.
    let xb = tensor(&bf16b(&[-2.0, 0.5, 3.0, 1.0]), &[2, 2], sys::ACL_BF16);
    let xt = view(
        xb.ptr,
        sys::ACL_BF16,
        &[2, 2],
        Some(&[1, 2]),
        0,
        &[4],
        sys::ACL_FORMAT_ND,
    );
    assert!(!xt.is_null());
    let xt = Dev { t: xt, ..none() };
    let out = zeros(&[2, 2], sys::ACL_BF16);
    let (mut ws, mut ex) = (0u64, ptr::null_mut());
    // SAFETY: live objects; out-pointers to locals.
    assert_eq!(
        unsafe { aclnnClampMinGetWorkspaceSize(xt.t, lo, out.t, &mut ws, &mut ex) },
        0,
        "{}",
        msg()
    );
    assert_eq!(launch(stream, ws, ex, aclnnClampMin), 0);
    // Transposed: [[-2, 3], [0.5, 1]] clamped below at -1.
    assert_eq!(as_bf16(&read(&out)), [-1.0, 3.0, 0.5, 1.0]);
    let out = zeros(&[2, 2], sys::ACL_BF16);
    // SAFETY: as above.
    assert_eq!(
        unsafe { aclnnClampMaxGetWorkspaceSize(xt.t, hi, out.t, &mut ws, &mut ex) },
        0,
        "{}",
        msg()
    );
    assert_eq!(launch(stream, ws, ex, aclnnClampMax), 0);
    assert_eq!(as_bf16(&read(&out)), [-2.0, 1.5, 0.5, 1.0]);
    // An executor of ClampMax is not a Clamp executor, and a used one is gone.
    let out = zeros(&[2, 2], sys::ACL_BF16);
    // SAFETY: as above.
    assert_eq!(
        unsafe { aclnnClampMaxGetWorkspaceSize(xt.t, hi, out.t, &mut ws, &mut ex) },
        0
    );
    assert_eq!(launch(stream, ws, ex, aclnnClamp), sys::ACLNN_ERR_PARAM_INVALID);
    assert_eq!(launch(stream, ws, ex, aclnnClampMax), 0);
    assert_eq!(
        launch(stream, ws, ex, aclnnClampMax),
        sys::ACLNN_ERR_PARAM_INVALID,
        "single use"
    );
    aclDestroyScalar(lo);
    aclDestroyScalar(hi);
}

#[test]
fn clamp_phase_one_rules() {
    setup();
    let x = zeros(&[2, 3], sys::ACL_FLOAT);
    let out = zeros(&[2, 3], sys::ACL_FLOAT);
    let lo = scalar_f32(-1.0);
    let hi = scalar_f32(1.0);
    let n = ptr::null();
    assert_eq!(clamp_p1(&none(), lo, hi, &out).0, sys::ACLNN_ERR_PARAM_NULLPTR);
    assert_eq!(clamp_p1(&x, lo, hi, &none()).0, sys::ACLNN_ERR_PARAM_NULLPTR);
    assert_eq!(
        clamp_p1(&x, n, n, &out).0,
        sys::ACLNN_ERR_PARAM_NULLPTR,
        "both bounds NULL"
    );
    let (mut ws, mut ex) = (0u64, ptr::null_mut());
    // SAFETY: NULL bound checked.
    let rc = unsafe { aclnnClampMinGetWorkspaceSize(x.t, ptr::null(), out.t, &mut ws, &mut ex) };
    assert_eq!(rc, sys::ACLNN_ERR_PARAM_NULLPTR);
    // SAFETY: as above.
    let rc = unsafe { aclnnClampMaxGetWorkspaceSize(x.t, ptr::null(), out.t, &mut ws, &mut ex) };
    assert_eq!(rc, sys::ACLNN_ERR_PARAM_NULLPTR);
    // out dtype / shape must be self's.
    assert_eq!(
        clamp_p1(&x, lo, hi, &zeros(&[2, 3], sys::ACL_FLOAT16)).0,
        sys::ACLNN_ERR_PARAM_INVALID
    );
    assert_eq!(
        clamp_p1(&x, lo, hi, &zeros(&[3, 2], sys::ACL_FLOAT)).0,
        sys::ACLNN_ERR_PARAM_INVALID
    );
    // Integer self: NOT EMULATED.
    let xi = zeros(&[2, 3], sys::ACL_INT32);
    assert_eq!(
        clamp_p1(&xi, lo, hi, &zeros(&[2, 3], sys::ACL_INT32)).0,
        sys::ACLNN_ERR_PARAM_INVALID
    );
    // min > max and NaN bounds: UNDOCUMENTED, refused.
    assert_eq!(clamp_p1(&x, hi, lo, &out).0, sys::ACLNN_ERR_PARAM_INVALID);
    let nan = scalar_f32(f32::NAN);
    assert_eq!(clamp_p1(&x, nan, hi, &out).0, sys::ACLNN_ERR_PARAM_INVALID);
    // A BOOL bound does not convert (strict).
    let mut t = 1u8;
    // SAFETY: one readable byte.
    let b = unsafe { aclCreateScalar((&mut t as *mut u8).cast(), sys::ACL_BOOL) };
    assert_eq!(clamp_p1(&x, b, n, &out).0, sys::ACLNN_ERR_PARAM_INVALID);
    // A destroyed scalar is not live.
    assert_eq!(aclDestroyScalar(nan), 0);
    assert_eq!(clamp_p1(&x, nan, n, &out).0, sys::ACLNN_ERR_PARAM_INVALID);
    // Null workspace / executor out-pointers.
    // SAFETY: NULL out-pointers are checked.
    let rc = unsafe { aclnnClampGetWorkspaceSize(x.t, lo, hi, out.t, ptr::null_mut(), ptr::null_mut()) };
    assert_eq!(rc, sys::ACLNN_ERR_PARAM_NULLPTR);
}

#[test]
fn muls_and_inplace_muls_round_once() {
    let stream = setup();
    // f16 self * f32 scalar into f16 out: product in f32, rounded once.
    let xv = [1.0f32, 0.3, -7.5, 1000.0];
    let x = tensor(&f16b(&xv), &[4], sys::ACL_FLOAT16);
    let k = scalar_f32(0.1);
    let out = zeros(&[4], sys::ACL_FLOAT16);
    let (mut ws, mut ex) = (0u64, ptr::null_mut());
    // SAFETY: live objects; out-pointers to locals.
    assert_eq!(
        unsafe { aclnnMulsGetWorkspaceSize(x.t, k, out.t, &mut ws, &mut ex) },
        0,
        "{}",
        msg()
    );
    assert_eq!(launch(stream, ws, ex, aclnnMuls), 0);
    let want: Vec<f32> = xv
        .iter()
        .map(|v| f16::from_f32(f16::from_f32(*v).to_f32() * 0.1f32).to_f32())
        .collect();
    assert_eq!(as_f16(&read(&out)), want);
    // In place on a row slice: only the viewed row changes.
    let m = tensor(&f32b(&[1.0, 2.0, 3.0, 4.0]), &[2, 2], sys::ACL_FLOAT);
    let row = Dev {
        t: view(m.ptr, sys::ACL_FLOAT, &[2], None, 2, &[4], sys::ACL_FORMAT_ND),
        ..none()
    };
    let k2 = scalar_f32(-2.0);
    // SAFETY: as above.
    assert_eq!(
        unsafe { aclnnInplaceMulsGetWorkspaceSize(row.t, k2, &mut ws, &mut ex) },
        0,
        "{}",
        msg()
    );
    assert_eq!(launch(stream, ws, ex, aclnnInplaceMuls), 0);
    assert_eq!(as_f32(&read(&m)), [1.0, 2.0, -6.0, -8.0]);
    // Refusals: NULLs, integer self, shape mismatch, executor reuse.
    // SAFETY: NULL arguments are checked.
    unsafe {
        assert_eq!(
            aclnnMulsGetWorkspaceSize(x.t, ptr::null(), out.t, &mut ws, &mut ex),
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            aclnnMulsGetWorkspaceSize(ptr::null(), k, out.t, &mut ws, &mut ex),
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            aclnnInplaceMulsGetWorkspaceSize(ptr::null_mut(), k, &mut ws, &mut ex),
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        let xi = zeros(&[4], sys::ACL_INT32);
        assert_eq!(
            aclnnMulsGetWorkspaceSize(xi.t, k, xi.t, &mut ws, &mut ex),
            sys::ACLNN_ERR_PARAM_INVALID
        );
        let o3 = zeros(&[3], sys::ACL_FLOAT16);
        assert_eq!(
            aclnnMulsGetWorkspaceSize(x.t, k, o3.t, &mut ws, &mut ex),
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(aclnnMulsGetWorkspaceSize(x.t, k, out.t, &mut ws, &mut ex), 0);
    }
    assert_eq!(launch(stream, ws, ex, aclnnMuls), 0);
    assert_eq!(
        launch(stream, ws, ex, aclnnMuls),
        sys::ACLNN_ERR_PARAM_INVALID,
        "executor reused"
    );
}

fn mul_p1(a: &Dev, b: &Dev, out: &Dev) -> (i32, u64, Exec) {
    let (mut ws, mut ex) = (0u64, ptr::null_mut());
    // SAFETY: live tensors or NULL; out-pointers to locals.
    let rc = unsafe { aclnnMulGetWorkspaceSize(a.t, b.t, out.t, &mut ws, &mut ex) };
    (rc, ws, ex)
}

#[test]
fn mul_broadcasts_both_ways() {
    let stream = setup();
    // [2, 1] * [3] -> [2, 3].
    let a = tensor(&f32b(&[2.0, -1.0]), &[2, 1], sys::ACL_FLOAT);
    let b = tensor(&bf16b(&[1.0, 0.5, 3.0]), &[3], sys::ACL_BF16);
    let out = filled(&[2, 3], sys::ACL_FLOAT, 0xCD);
    let (rc, ws, ex) = mul_p1(&a, &b, &out);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnMul), 0, "{}", msg());
    assert_eq!(as_f32(&read(&out)), [2.0, 1.0, 6.0, -1.0, -0.5, -3.0]);
    // Refusals.
    assert_eq!(mul_p1(&none(), &b, &out).0, sys::ACLNN_ERR_PARAM_NULLPTR);
    assert_eq!(mul_p1(&a, &none(), &out).0, sys::ACLNN_ERR_PARAM_NULLPTR);
    assert_eq!(mul_p1(&a, &b, &none()).0, sys::ACLNN_ERR_PARAM_NULLPTR);
    let bad = zeros(&[4], sys::ACL_FLOAT);
    assert_eq!(
        mul_p1(&a, &bad, &zeros(&[2, 4], sys::ACL_FLOAT)).0,
        0,
        "[2,1]*[4] is fine"
    );
    let c = zeros(&[3, 1], sys::ACL_FLOAT);
    assert_eq!(mul_p1(&a, &c, &out).0, sys::ACLNN_ERR_PARAM_INVALID, "[2,1]*[3,1]");
    assert_eq!(
        mul_p1(&a, &b, &zeros(&[3, 2], sys::ACL_FLOAT)).0,
        sys::ACLNN_ERR_PARAM_INVALID
    );
    let i = zeros(&[2, 1], sys::ACL_INT64);
    assert_eq!(mul_p1(&i, &b, &out).0, sys::ACLNN_ERR_PARAM_INVALID);
    // A non-ND format is refused at phase one.
    let nz = Dev {
        t: view(a.ptr, sys::ACL_FLOAT, &[2, 1], None, 0, &[2, 1], 29),
        ..none()
    };
    assert_eq!(mul_p1(&nz, &b, &out).0, sys::ACLNN_ERR_PARAM_INVALID);
}

// ======================================== Group 4: Sigmoid, Sqrt, Div, Softplus, Softmax, ReduceSum, Gather, Divs and the in-place forms, empty tensors (SG*, DV*, SP*, SM*, RS*, GA*, PR7)

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

// ======================================== Group 5: InplaceMaskedFillScalar, Cumsum, EqScalar, InplaceZero (MF*, CS*, EQ*, Z*)

#[test]
fn masked_fill_broadcasts_the_mask() {
    let stream = setup();
    // f16 [2, 3] filled with -inf where a [3] mask is true.
    let s = tensor(&f16b(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), &[2, 3], sys::ACL_FLOAT16);
    let mask = tensor(&[1u8, 0, 1], &[3], sys::ACL_BOOL);
    let v = scalar(f32::NEG_INFINITY, sys::ACL_FLOAT);
    // SAFETY: live objects; out-pointers to locals (here and below).
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnInplaceMaskedFillScalarGetWorkspaceSize(s.t, mask.t, v, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnInplaceMaskedFillScalar), 0);
    let ninf = f32::NEG_INFINITY;
    assert_eq!(as_f16(&read(&s)), [ninf, 2.0, ninf, ninf, 5.0, ninf]);
    // INT32 selfRef with an INT64 value and a full-shape mask.
    let si = tensor(&i32b(&[1, 2, 3, 4]), &[2, 2], sys::ACL_INT32);
    let mi = tensor(&[0u8, 1, 1, 0], &[2, 2], sys::ACL_BOOL);
    let vi = scalar(-7i64, sys::ACL_INT64);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnInplaceMaskedFillScalarGetWorkspaceSize(si.t, mi.t, vi, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnInplaceMaskedFillScalar), 0);
    assert_eq!(as_i32(&read(&si)), [1, -7, -7, 4]);
    // Refusals: NULLs, a non-BOOL mask, a mask that does not broadcast, a float value into INT32.
    let mu8 = tensor(&[1u8, 0, 1], &[3], sys::ACL_UINT8);
    let m2 = tensor(&[1u8, 0], &[2], sys::ACL_BOOL);
    let big = tensor(&[1u8; 12], &[2, 2, 3], sys::ACL_BOOL);
    let vf = scalar(1.5f32, sys::ACL_FLOAT);
    unsafe {
        assert_eq!(
            p1(|w, e| aclnnInplaceMaskedFillScalarGetWorkspaceSize(s.t, ptr::null(), v, w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnInplaceMaskedFillScalarGetWorkspaceSize(s.t, mask.t, ptr::null(), w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnInplaceMaskedFillScalarGetWorkspaceSize(ptr::null_mut(), mask.t, v, w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnInplaceMaskedFillScalarGetWorkspaceSize(s.t, mu8.t, v, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnInplaceMaskedFillScalarGetWorkspaceSize(s.t, m2.t, v, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnInplaceMaskedFillScalarGetWorkspaceSize(s.t, big.t, v, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID,
            "in place: selfRef keeps its shape"
        );
        assert_eq!(
            p1(|w, e| aclnnInplaceMaskedFillScalarGetWorkspaceSize(si.t, mi.t, vf, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
    }
}

#[test]
fn cumsum_along_dim_with_dtype() {
    let stream = setup();
    let xv = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let x = tensor(&f32b(&xv), &[2, 3], sys::ACL_FLOAT);
    let out = zeros(&[2, 3], sys::ACL_FLOAT);
    // SAFETY: live tensors; out-pointers to locals (here and below).
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnCumsumGetWorkspaceSize(x.t, 1, sys::ACL_FLOAT, out.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnCumsum), 0);
    assert_eq!(as_f32(&read(&out)), [1.0, 3.0, 6.0, 4.0, 9.0, 15.0]);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnCumsumGetWorkspaceSize(x.t, -2, sys::ACL_FLOAT, out.t, w, e) });
    assert_eq!(rc, 0);
    assert_eq!(launch(stream, ws, ex, aclnnCumsum), 0);
    assert_eq!(as_f32(&read(&out)), [1.0, 2.0, 3.0, 5.0, 7.0, 9.0]);
    // INT32 counts into INT64 offsets (the routing use).
    let c = tensor(&i32b(&[3, 0, 2, 5]), &[4], sys::ACL_INT32);
    let o64 = zeros(&[4], sys::ACL_INT64);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnCumsumGetWorkspaceSize(c.t, 0, sys::ACL_INT64, o64.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnCumsum), 0);
    assert_eq!(as_i64(&read(&o64)), [3, 3, 5, 10]);
    // f16 out: each prefix computed in f32 and rounded once.
    let xh = tensor(&f32b(&[0.1, 0.2, 0.3]), &[3], sys::ACL_FLOAT);
    let oh = zeros(&[3], sys::ACL_FLOAT16);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnCumsumGetWorkspaceSize(xh.t, 0, sys::ACL_FLOAT16, oh.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnCumsum), 0);
    let pre = [0.1f32, 0.1 + 0.2, 0.1 + 0.2 + 0.3];
    let want: Vec<f32> = pre.iter().map(|v| f16::from_f32(*v).to_f32()).collect();
    assert_eq!(as_f16(&read(&oh)), want);
    // An INT32 running sum that overflows: 561000 at launch (UNDOCUMENTED wrap).
    let of = tensor(&i32b(&[i32::MAX, 1]), &[2], sys::ACL_INT32);
    let oo = zeros(&[2], sys::ACL_INT32);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnCumsumGetWorkspaceSize(of.t, 0, sys::ACL_INT32, oo.t, w, e) });
    assert_eq!(rc, 0);
    assert_eq!(launch(stream, ws, ex, aclnnCumsum), sys::ACLNN_ERR_INNER);
    // Refusals: NULLs, dtype argument != out dtype, float self into integer out, dim, shape.
    let oi = zeros(&[2, 3], sys::ACL_INT32);
    unsafe {
        assert_eq!(
            p1(|w, e| aclnnCumsumGetWorkspaceSize(ptr::null(), 0, sys::ACL_FLOAT, out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnCumsumGetWorkspaceSize(x.t, 0, sys::ACL_FLOAT, ptr::null_mut(), w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnCumsumGetWorkspaceSize(x.t, 0, sys::ACL_FLOAT16, out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnCumsumGetWorkspaceSize(x.t, 0, sys::ACL_INT32, oi.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnCumsumGetWorkspaceSize(x.t, 2, sys::ACL_FLOAT, out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(
            p1(|w, e| aclnnCumsumGetWorkspaceSize(x.t, 0, sys::ACL_FLOAT, zeros(&[3, 2], sys::ACL_FLOAT).t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
    }
}

#[test]
fn eq_scalar_gives_a_bool_mask() {
    let stream = setup();
    // f16 self compares in f16: 0.1 rounds to the same f16 as the stored 0.1.
    let x = tensor(&f16b(&[0.1, 1.0, 0.1, -0.0]), &[4], sys::ACL_FLOAT16);
    let out = filled(&[4], sys::ACL_BOOL, 0x7F);
    let k = scalar(0.1f32, sys::ACL_FLOAT);
    // SAFETY: live objects; out-pointers to locals (here and below).
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnEqScalarGetWorkspaceSize(x.t, k, out.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnEqScalar), 0);
    assert_eq!(read(&out), [1, 0, 1, 0]);
    // INT32 self against an INT64 scalar; -0.0 == 0.
    let xi = tensor(&i32b(&[5, -1, 5]), &[3], sys::ACL_INT32);
    let oi = zeros(&[3], sys::ACL_BOOL);
    let k5 = scalar(5i64, sys::ACL_INT64);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnEqScalarGetWorkspaceSize(xi.t, k5, oi.t, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnEqScalar), 0);
    assert_eq!(read(&oi), [1, 0, 1]);
    let z = scalar(0.0f32, sys::ACL_FLOAT);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnEqScalarGetWorkspaceSize(x.t, z, out.t, w, e) });
    assert_eq!(rc, 0);
    assert_eq!(launch(stream, ws, ex, aclnnEqScalar), 0);
    assert_eq!(read(&out), [0, 0, 0, 1]);
    let of = zeros(&[4], sys::ACL_FLOAT);
    let o3 = zeros(&[3], sys::ACL_BOOL);
    unsafe {
        assert_eq!(
            p1(|w, e| aclnnEqScalarGetWorkspaceSize(x.t, ptr::null(), out.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            p1(|w, e| aclnnEqScalarGetWorkspaceSize(x.t, k, of.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID,
            "out BOOL only"
        );
        assert_eq!(
            p1(|w, e| aclnnEqScalarGetWorkspaceSize(x.t, k, o3.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
    }
}

#[test]
fn inplace_zero_clears_only_the_view() {
    let stream = setup();
    let m = tensor(&f32b(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), &[2, 3], sys::ACL_FLOAT);
    // Column 1 of the [2, 3] storage: a strided view.
    let col = view(m.ptr, sys::ACL_FLOAT, &[2], Some(&[3]), 1, &[6], sys::ACL_FORMAT_ND);
    assert!(!col.is_null());
    // SAFETY: live tensor; out-pointers to locals (here and below).
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnInplaceZeroGetWorkspaceSize(col, w, e) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnInplaceZero), 0);
    assert_eq!(as_f32(&read(&m)), [1.0, 0.0, 3.0, 4.0, 0.0, 6.0]);
    let i = tensor(&i64b(&[9, -9]), &[2], sys::ACL_INT64);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnInplaceZeroGetWorkspaceSize(i.t, w, e) });
    assert_eq!(rc, 0);
    assert_eq!(launch(stream, ws, ex, aclnnInplaceZero), 0);
    assert_eq!(as_i64(&read(&i)), [0, 0]);
    assert_eq!(
        launch(stream, ws, ex, aclnnInplaceZero),
        sys::ACLNN_ERR_PARAM_INVALID,
        "single use"
    );
    unsafe {
        assert_eq!(
            p1(|w, e| aclnnInplaceZeroGetWorkspaceSize(ptr::null_mut(), w, e)).0,
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        let u32t = zeros(&[2], sys::ACL_UINT32);
        assert_eq!(
            p1(|w, e| aclnnInplaceZeroGetWorkspaceSize(u32t.t, w, e)).0,
            sys::ACLNN_ERR_PARAM_INVALID
        );
    }
}
