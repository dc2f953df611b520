//! Issue 13, group 5: aclnnInplaceMaskedFillScalar, aclnnCumsum, aclnnEqScalar, aclnnInplaceZero —
//! through the exported C ABI; expected values computed here from the pages' formulas (RULES.md
//! MF*, CS*, EQ*, Z*).

mod common;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;
use half::f16;

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
