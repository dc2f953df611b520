//! aclnnSwiGlu and aclnnInplaceMul through the exported C ABI: the documented formulas and the
//! phase-one rules (RULES.md SG1-SG5, M1-M4).

mod common;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;

fn swiglu_p1(x: &Dev, dim: i64, out: &Dev) -> (i32, u64, *mut sys::aclOpExecutor) {
    let (mut ws, mut ex) = (0u64, ptr::null_mut());
    // SAFETY: live tensors of this library (or NULL); out-pointers to locals.
    let rc = unsafe { aclnnSwiGluGetWorkspaceSize(x.t, dim, out.t, &mut ws, &mut ex) };
    (rc, ws, ex)
}

fn mul_p1(s: &Dev, o: &Dev) -> (i32, u64, *mut sys::aclOpExecutor) {
    let (mut ws, mut ex) = (0u64, ptr::null_mut());
    // SAFETY: as above.
    let rc = unsafe { aclnnInplaceMulGetWorkspaceSize(s.t, o.t, &mut ws, &mut ex) };
    (rc, ws, ex)
}

fn swish(a: f32) -> f32 {
    a / (1.0 + (-a).exp())
}

#[test]
fn swiglu_is_swish_of_the_first_half_times_the_second() {
    let stream = setup();
    // x [2, 4] along dim 1 (and -1): A = x[:, :2], B = x[:, 2:].
    let xv = [1.0f32, -2.0, 3.0, 0.5, 0.25, 4.0, -1.0, 2.0];
    let x = tensor(&f32b(&xv), &[2, 4], sys::ACL_FLOAT);
    for dim in [1, -1] {
        let out = filled(&[2, 2], sys::ACL_FLOAT, 0xAB);
        let (rc, ws, ex) = swiglu_p1(&x, dim, &out);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnSwiGlu), 0, "{}", msg());
        let want = [swish(1.0) * 3.0, swish(-2.0) * 0.5, -swish(0.25), swish(4.0) * 2.0];
        assert_eq!(as_f32(&read(&out)), want);
    }
    // Along dim 0 of [2, 2]: A = row 0, B = row 1.
    let x0 = tensor(&f32b(&[1.0, 2.0, 3.0, 4.0]), &[2, 2], sys::ACL_FLOAT);
    let out0 = zeros(&[1, 2], sys::ACL_FLOAT);
    let (rc, ws, ex) = swiglu_p1(&x0, 0, &out0);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnSwiGlu), 0);
    assert_eq!(as_f32(&read(&out0)), [swish(1.0) * 3.0, swish(2.0) * 4.0]);
    // bf16: evaluated in f32, rounded once.
    let xb = tensor(&bf16b(&[1.5, -0.75, 2.0, 3.0]), &[1, 4], sys::ACL_BF16);
    let ob = zeros(&[1, 2], sys::ACL_BF16);
    let (rc, ws, ex) = swiglu_p1(&xb, 1, &ob);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnSwiGlu), 0);
    let want: Vec<f32> = [swish(1.5) * 2.0, swish(-0.75) * 3.0]
        .iter()
        .map(|v| half::bf16::from_f32(*v).to_f32())
        .collect();
    assert_eq!(as_bf16(&read(&ob)), want);
}

#[test]
fn swiglu_phase_one_rules() {
    setup();
    let x = zeros(&[2, 4], sys::ACL_FLOAT);
    let out = zeros(&[2, 2], sys::ACL_FLOAT);
    let none = Dev {
        ptr: ptr::null_mut(),
        bytes: 0,
        t: ptr::null_mut(),
        dt: sys::ACL_FLOAT,
    };
    assert_eq!(swiglu_p1(&none, 1, &out).0, sys::ACLNN_ERR_PARAM_NULLPTR);
    assert_eq!(swiglu_p1(&x, 1, &none).0, sys::ACLNN_ERR_PARAM_NULLPTR);
    // dim out of range, odd split, wrong out shape, wrong out dtype.
    assert_eq!(swiglu_p1(&x, 2, &out).0, sys::ACLNN_ERR_PARAM_INVALID);
    assert_eq!(swiglu_p1(&x, -3, &out).0, sys::ACLNN_ERR_PARAM_INVALID);
    let x3 = zeros(&[2, 3], sys::ACL_FLOAT);
    assert_eq!(swiglu_p1(&x3, 1, &out).0, sys::ACLNN_ERR_PARAM_INVALID);
    let wide = zeros(&[2, 4], sys::ACL_FLOAT);
    assert_eq!(swiglu_p1(&x, 1, &wide).0, sys::ACLNN_ERR_PARAM_INVALID);
    let half = zeros(&[2, 2], sys::ACL_FLOAT16);
    assert_eq!(swiglu_p1(&x, 1, &half).0, sys::ACLNN_ERR_PARAM_INVALID);
    // Integer x.
    let xi = zeros(&[2, 4], sys::ACL_INT32);
    let oi = zeros(&[2, 2], sys::ACL_INT32);
    assert_eq!(swiglu_p1(&xi, 1, &oi).0, sys::ACLNN_ERR_PARAM_INVALID);
    // Empty x.
    let xe = zeros(&[0, 4], sys::ACL_FLOAT);
    let oe = zeros(&[0, 2], sys::ACL_FLOAT);
    assert_eq!(swiglu_p1(&xe, 1, &oe).0, sys::ACLNN_ERR_PARAM_INVALID);
    // Non-contiguous x: a transposed view of a [4, 2] storage.
    let xt = Dev {
        t: view(
            x.ptr,
            sys::ACL_FLOAT,
            &[2, 4],
            Some(&[1, 2]),
            0,
            &[8],
            sys::ACL_FORMAT_ND,
        ),
        ..zeros(&[1], sys::ACL_FLOAT)
    };
    assert!(!xt.t.is_null());
    assert_eq!(swiglu_p1(&xt, 1, &out).0, sys::ACLNN_ERR_PARAM_INVALID);
    // A row slice (element offset from an aligned base) is contiguous: accepted.
    let xs = Dev {
        t: view(x.ptr, sys::ACL_FLOAT, &[1, 4], None, 4, &[8], sys::ACL_FORMAT_ND),
        ..zeros(&[1], sys::ACL_FLOAT)
    };
    let os = zeros(&[1, 2], sys::ACL_FLOAT);
    assert_eq!(swiglu_p1(&xs, 1, &os).0, 0, "{}", msg());
}

#[test]
fn inplace_mul_broadcasts_other_and_keeps_self_dtype() {
    let stream = setup();
    // bf16 [3, 2] *= f32 [3, 1]: computed in f32 (promoted type), rounded once to bf16.
    let sv = [1.5f32, -2.0, 3.0, 0.5, 7.0, 1.0];
    let s = tensor(&bf16b(&sv), &[3, 2], sys::ACL_BF16);
    let o = tensor(&f32b(&[0.1, 2.0, -0.3]), &[3, 1], sys::ACL_FLOAT);
    let (rc, ws, ex) = mul_p1(&s, &o);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnInplaceMul), 0, "{}", msg());
    let scale = [0.1f32, 0.1, 2.0, 2.0, -0.3, -0.3];
    let want: Vec<f32> = sv
        .iter()
        .zip(scale)
        .map(|(a, b)| half::bf16::from_f32(half::bf16::from_f32(*a).to_f32() * b).to_f32())
        .collect();
    assert_eq!(as_bf16(&read(&s)), want);
    // A view of the first two rows of a [3, 2] f32 storage: the third row is untouched.
    let f = tensor(&f32b(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), &[3, 2], sys::ACL_FLOAT);
    let rows = Dev {
        t: view(f.ptr, sys::ACL_FLOAT, &[2, 2], None, 0, &[6], sys::ACL_FORMAT_ND),
        ..zeros(&[1], sys::ACL_FLOAT)
    };
    let k = tensor(&f32b(&[10.0, -1.0]), &[2, 1], sys::ACL_FLOAT);
    let (rc, ws, ex) = mul_p1(&rows, &k);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnInplaceMul), 0);
    assert_eq!(as_f32(&read(&f)), [10.0, 20.0, -3.0, -4.0, 5.0, 6.0]);
}

#[test]
fn inplace_mul_phase_one_rules() {
    setup();
    let s = zeros(&[3, 2], sys::ACL_FLOAT);
    let none = Dev {
        ptr: ptr::null_mut(),
        bytes: 0,
        t: ptr::null_mut(),
        dt: sys::ACL_FLOAT,
    };
    assert_eq!(mul_p1(&none, &s).0, sys::ACLNN_ERR_PARAM_NULLPTR);
    assert_eq!(mul_p1(&s, &none).0, sys::ACLNN_ERR_PARAM_NULLPTR);
    // other must broadcast to selfRef's shape (in place: the result cannot grow).
    let bigger = zeros(&[3, 4], sys::ACL_FLOAT);
    assert_eq!(mul_p1(&s, &bigger).0, sys::ACLNN_ERR_PARAM_INVALID);
    let rank3 = zeros(&[1, 3, 2], sys::ACL_FLOAT);
    assert_eq!(mul_p1(&s, &rank3).0, sys::ACLNN_ERR_PARAM_INVALID);
    let mismatch = zeros(&[2, 1], sys::ACL_FLOAT);
    assert_eq!(mul_p1(&s, &mismatch).0, sys::ACLNN_ERR_PARAM_INVALID);
    // Row vector and scalar-like broadcasts are fine.
    for dims in [&[2][..], &[1, 2], &[3, 1], &[1]] {
        let o = zeros(dims, sys::ACL_FLOAT);
        assert_eq!(mul_p1(&s, &o).0, 0, "{dims:?}: {}", msg());
    }
    // NOT EMULATED: integer operands.
    let i = zeros(&[3, 2], sys::ACL_INT32);
    assert_eq!(mul_p1(&i, &s).0, sys::ACLNN_ERR_PARAM_INVALID);
}
