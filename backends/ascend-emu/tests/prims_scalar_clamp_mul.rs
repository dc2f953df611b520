//! Issue 13, groups 1-3: aclCreateScalar / aclDestroyScalar, aclnnClamp / ClampMin / ClampMax,
//! aclnnMuls / InplaceMuls, aclnnMul — through the exported C ABI. Expected values are computed here
//! from the pages' formulas (RULES.md SC*, CL*, MS*, MU*).

mod common;

use std::ffi::c_void;
use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;
use half::{bf16, f16};

type Exec = *mut sys::aclOpExecutor;

fn scalar_f32(v: f32) -> *mut aclScalar {
    let mut x = v;
    // SAFETY: points at a live f32.
    let s = unsafe { aclCreateScalar((&mut x as *mut f32).cast::<c_void>(), sys::ACL_FLOAT) };
    assert!(!s.is_null(), "{}", msg());
    s
}

fn none() -> Dev {
    Dev {
        ptr: ptr::null_mut(),
        bytes: 0,
        t: ptr::null_mut(),
        dt: sys::ACL_FLOAT,
    }
}

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
