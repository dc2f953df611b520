//! aclnnFloorDivides / aclnnInplaceFloorDivides and aclnnAdds / aclnnInplaceAdds through the
//! exported C ABI: the pages' formulas (floor for negatives, alpha × other), computed here, and the
//! documented refusals (NULL, dtype promotion, shape, integer division by 0, executor reuse).
//! aclnnAmax / aclnnAmin too. RULES.md FD*, AD*, AM*.

mod common;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;

const INVALID: i32 = sys::ACLNN_ERR_PARAM_INVALID;
const NULLPTR: i32 = sys::ACLNN_ERR_PARAM_NULLPTR;

fn fd(x: &Dev, k: *const aclScalar, out: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnFloorDividesGetWorkspaceSize(x.t, k, out.t, ws, ex) })
}

/// floor(a / b) for integers, from the definition (the largest q with q·b <= a for b > 0).
fn floor_ref(a: i64, b: i64) -> i64 {
    ((a as f64) / (b as f64)).floor() as i64
}

#[test]
fn floor_divides_rounds_toward_minus_infinity() {
    let stream = setup();
    let xv: [i32; 8] = [7, -7, 6, -6, 0, 1, -1, 13];
    let x = tensor(&i32b(&xv), &[2, 4], sys::ACL_INT32);
    for k in [2i64, -2, 3, -5] {
        let out = filled(&[2, 4], sys::ACL_INT32, 0x11);
        let (rc, ws, ex) = fd(&x, scalar(k, sys::ACL_INT64), &out);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnFloorDivides), 0, "{}", msg());
        let want: Vec<i32> = xv.iter().map(|&a| floor_ref(a as i64, k) as i32).collect();
        assert_eq!(as_i32(&read(&out)), want, "k {k}");
        assert_eq!(launch(stream, ws, ex, aclnnFloorDivides), INVALID, "executor reused");
    }
    // FLOAT: floor(x / k) in f32; x / 0 as IEEE.
    let fv = [7.5f32, -7.5, 0.25, -0.25];
    let xf = tensor(&f32b(&fv), &[4], sys::ACL_FLOAT);
    for k in [2.0f32, -0.5, 0.0] {
        let out = zeros(&[4], sys::ACL_FLOAT);
        let (rc, ws, ex) = fd(&xf, scalar_f32(k), &out);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnFloorDivides), 0, "{}", msg());
        let want: Vec<f32> = fv.iter().map(|&a| (a / k).floor()).collect();
        assert_eq!(as_f32(&read(&out)), want, "k {k}");
    }
    // In place, INT64.
    let xi = tensor(&i64b(&[-9, 9, 10]), &[3], sys::ACL_INT64);
    // SAFETY: live objects; out-pointers to locals.
    let (rc, ws, ex) =
        p1(|ws, ex| unsafe { aclnnInplaceFloorDividesGetWorkspaceSize(xi.t, scalar(4i32, sys::ACL_INT32), ws, ex) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnFloorDivides), INVALID, "in-place executor");
    let (rc, ws, ex) =
        p1(|ws, ex| unsafe { aclnnInplaceFloorDividesGetWorkspaceSize(xi.t, scalar(4i32, sys::ACL_INT32), ws, ex) });
    assert_eq!(rc, 0);
    assert_eq!(launch(stream, ws, ex, aclnnInplaceFloorDivides), 0, "{}", msg());
    assert_eq!(as_i64(&read(&xi)), [-3, 2, 2]);
}

#[test]
fn floor_divides_refusals() {
    let stream = setup();
    let x = tensor(&i32b(&[1, 2]), &[2], sys::ACL_INT32);
    let out = zeros(&[2], sys::ACL_INT32);
    let two = scalar(2i64, sys::ACL_INT64);
    assert_eq!(fd(&none(), two, &out).0, NULLPTR);
    assert_eq!(fd(&x, ptr::null(), &out).0, NULLPTR);
    assert_eq!(fd(&x, two, &none()).0, NULLPTR);
    // Integer division by 0; a floating scalar with an integer self; out of another type / shape.
    assert_eq!(fd(&x, scalar(0i64, sys::ACL_INT64), &out).0, INVALID);
    assert_eq!(fd(&x, scalar_f32(2.0), &out).0, INVALID);
    assert_eq!(fd(&x, two, &zeros(&[2], sys::ACL_INT64)).0, INVALID);
    assert_eq!(fd(&x, two, &zeros(&[3], sys::ACL_INT32)).0, INVALID);
    // BOOL scalar, BOOL self.
    assert_eq!(fd(&x, scalar(1u8, sys::ACL_BOOL), &out).0, INVALID);
    let xb = tensor(&[1, 0], &[2], sys::ACL_BOOL);
    assert_eq!(fd(&xb, two, &zeros(&[2], sys::ACL_BOOL)).0, INVALID);
    // INT32 MIN / -1 does not fit: refused at launch.
    let xm = tensor(&i32b(&[i32::MIN]), &[1], sys::ACL_INT32);
    let om = zeros(&[1], sys::ACL_INT32);
    let (rc, ws, ex) = fd(&xm, scalar(-1i64, sys::ACL_INT64), &om);
    assert_eq!(rc, 0);
    assert_eq!(launch(stream, ws, ex, aclnnFloorDivides), sys::ACLNN_ERR_INNER);
}

fn adds(x: &Dev, k: *const aclScalar, a: *const aclScalar, out: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnAddsGetWorkspaceSize(x.t, k, a, out.t, ws, ex) })
}

#[test]
fn adds_computes_self_plus_alpha_times_other() {
    let stream = setup();
    // INT64: exact.
    let xv = [5i64, -3, 0, 1 << 40];
    let x = tensor(&i64b(&xv), &[4], sys::ACL_INT64);
    let out = zeros(&[4], sys::ACL_INT64);
    let (rc, ws, ex) = adds(&x, scalar(7i64, sys::ACL_INT64), scalar(-2i32, sys::ACL_INT32), &out);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnAdds), 0, "{}", msg());
    assert_eq!(as_i64(&read(&out)), xv.map(|v| v + (-2) * 7));
    // FLOAT16: x + alpha·k in f32, rounded once to FLOAT16.
    let hv = [1.0f32, -2.5, 1000.0, 0.1];
    let xh = tensor(&f16b(&hv), &[2, 2], sys::ACL_FLOAT16);
    let oh = zeros(&[2, 2], sys::ACL_FLOAT16);
    let (rc, ws, ex) = adds(&xh, scalar_f32(0.3), scalar(2i64, sys::ACL_INT64), &oh);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnAdds), 0, "{}", msg());
    let inh = as_f16(&f16b(&hv));
    let want: Vec<f32> = inh
        .iter()
        .map(|&v| half::f16::from_f32(v + 2.0 * 0.3f32).to_f32())
        .collect();
    assert_eq!(as_f16(&read(&oh)), want);
    // In place (INT32).
    let xi = tensor(&i32b(&[1, 2, 3]), &[3], sys::ACL_INT32);
    let one = scalar(1i32, sys::ACL_INT32);
    // SAFETY: live objects; out-pointers to locals.
    let (rc, ws, ex) =
        p1(|ws, ex| unsafe { aclnnInplaceAddsGetWorkspaceSize(xi.t, scalar(10i32, sys::ACL_INT32), one, ws, ex) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnInplaceAdds), 0, "{}", msg());
    assert_eq!(as_i32(&read(&xi)), [11, 12, 13]);
    assert_eq!(launch(stream, ws, ex, aclnnInplaceAdds), INVALID, "executor reused");
}

#[test]
fn adds_refusals() {
    let stream = setup();
    let x = tensor(&i32b(&[1, 2]), &[2], sys::ACL_INT32);
    let out = zeros(&[2], sys::ACL_INT32);
    let k = scalar(1i64, sys::ACL_INT64);
    assert_eq!(adds(&none(), k, k, &out).0, NULLPTR);
    assert_eq!(adds(&x, ptr::null(), k, &out).0, NULLPTR);
    assert_eq!(adds(&x, k, ptr::null(), &out).0, NULLPTR, "alpha is required");
    assert_eq!(adds(&x, k, k, &none()).0, NULLPTR);
    // Floating alpha or other with an integer self; out dtype / shape.
    assert_eq!(adds(&x, k, scalar_f32(0.5), &out).0, INVALID);
    assert_eq!(adds(&x, scalar_f32(1.0), k, &out).0, INVALID);
    assert_eq!(adds(&x, k, k, &zeros(&[2], sys::ACL_FLOAT)).0, INVALID);
    assert_eq!(adds(&x, k, k, &zeros(&[1, 2], sys::ACL_INT32)).0, INVALID);
    // INT32 overflow at launch.
    let xm = tensor(&i32b(&[i32::MAX]), &[1], sys::ACL_INT32);
    let om = zeros(&[1], sys::ACL_INT32);
    let (rc, ws, ex) = adds(&xm, k, k, &om);
    assert_eq!(rc, 0);
    assert_eq!(launch(stream, ws, ex, aclnnAdds), sys::ACLNN_ERR_INNER);
}

type Reduce = unsafe extern "C" fn(
    *const sys::aclTensor,
    *const sys::aclIntArray,
    bool,
    *mut sys::aclTensor,
    *mut u64,
    *mut Exec,
) -> i32;

#[test]
fn amax_and_amin_reduce_the_named_axes() {
    let stream = setup();
    // 2 x 3 x 2 INT64 (with negatives and ties).
    let xv: Vec<i64> = vec![3, -1, 7, 7, 0, -8, -2, 5, 9, 4, 9, -8];
    let x = tensor(&i64b(&xv), &[2, 3, 2], sys::ACL_INT64);
    let at = |a: usize, b: usize, c: usize| xv[a * 6 + b * 2 + c];
    let cases: [(Reduce, Launch, bool); 2] = [
        (aclnnAmaxGetWorkspaceSize, aclnnAmax, true),
        (aclnnAminGetWorkspaceSize, aclnnAmin, false),
    ];
    for (p, l, max) in cases {
        let pick = |it: &mut dyn Iterator<Item = i64>| if max { it.max().unwrap() } else { it.min().unwrap() };
        // dims [1] (keepDim false) -> [2, 2]; dims [0, -1] (keepDim true) -> [1, 3, 1].
        let out = zeros(&[2, 2], sys::ACL_INT64);
        // SAFETY: live objects; out-pointers to locals.
        let (rc, ws, ex) = p1(|ws, ex| unsafe { p(x.t, ints(&[1]), false, out.t, ws, ex) });
        assert_eq!(rc, 0, "{}", msg());
        assert!(ws > 0);
        assert_eq!(launch(stream, ws, ex, l), 0, "{}", msg());
        let want: Vec<i64> = (0..2)
            .flat_map(|a| (0..2).map(move |c| (a, c)))
            .map(|(a, c)| pick(&mut (0..3).map(|b| at(a, b, c))))
            .collect();
        assert_eq!(as_i64(&read(&out)), want, "max {max}");
        let out = zeros(&[1, 3, 1], sys::ACL_INT64);
        // SAFETY: as above.
        let (rc, ws, ex) = p1(|ws, ex| unsafe { p(x.t, ints(&[0, -1]), true, out.t, ws, ex) });
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, l), 0, "{}", msg());
        let want: Vec<i64> = (0..3)
            .map(|b| {
                pick(
                    &mut (0..2)
                        .flat_map(|a| (0..2).map(move |c| (a, c)))
                        .map(|(a, c)| at(a, b, c)),
                )
            })
            .collect();
        assert_eq!(as_i64(&read(&out)), want, "max {max}");
        assert_eq!(launch(stream, ws, ex, l), INVALID, "executor reused");
    }
    // Refusals: NULL dim, repeated / out-of-range / empty dims, out dtype or shape, NaN at launch.
    let out = zeros(&[2, 2], sys::ACL_INT64);
    // SAFETY (each): live objects or NULL; out-pointers to locals.
    let call = |d: *const sys::aclIntArray, keep: bool, o: &Dev| {
        p1(|ws, ex| unsafe { aclnnAmaxGetWorkspaceSize(x.t, d, keep, o.t, ws, ex) }).0
    };
    assert_eq!(call(ptr::null(), false, &out), NULLPTR);
    assert_eq!(call(ints(&[1, 1]), false, &out), INVALID);
    assert_eq!(call(ints(&[3]), false, &out), INVALID);
    assert_eq!(call(ints(&[]), false, &out), INVALID);
    assert_eq!(call(ints(&[1]), false, &zeros(&[2, 2], sys::ACL_INT32)), INVALID);
    assert_eq!(call(ints(&[1]), true, &out), INVALID, "keepDim keeps a 1");
    let xf = tensor(&f32b(&[1.0, f32::NAN]), &[2], sys::ACL_FLOAT);
    let of = zeros(&[], sys::ACL_FLOAT);
    // SAFETY: as above.
    let (rc, ws, ex) = p1(|ws, ex| unsafe { aclnnAminGetWorkspaceSize(xf.t, ints(&[0]), false, of.t, ws, ex) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnAmin), sys::ACLNN_ERR_INNER);
}
