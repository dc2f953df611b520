//! The second group of issue-13 primitives through the exported C ABI (sorting, ranges, scatters,
//! integer arithmetic): each op's documented result, computed here from the page's formula (not
//! from moehal code), and each documented refusal (NULL, dtype, shape, dim, executor reuse).
//! RULES.md SO*, AS*, AR*.

mod common;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;

const INVALID: i32 = sys::ACLNN_ERR_PARAM_INVALID;
const NULLPTR: i32 = sys::ACLNN_ERR_PARAM_NULLPTR;

/// The reference order of a line: positions sorted by value, ties by index (stable) or by reverse
/// index (the emulator's unstable order, SO3).
fn ref_order(v: &[f64], descending: bool, stable: bool) -> Vec<i64> {
    let mut p: Vec<usize> = (0..v.len()).collect();
    p.sort_by(|&i, &j| {
        let o = if descending {
            v[j].partial_cmp(&v[i]).unwrap()
        } else {
            v[i].partial_cmp(&v[j]).unwrap()
        };
        o.then(if stable { i.cmp(&j) } else { j.cmp(&i) })
    });
    p.into_iter().map(|i| i as i64).collect()
}

fn sort_p1(x: &Dev, stable: bool, dim: i64, desc: bool, v: &Dev, i: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects of this library or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnSortGetWorkspaceSize(x.t, stable, dim, desc, v.t, i.t, ws, ex) })
}

#[test]
fn sort_orders_each_line_and_keeps_ties_only_when_stable() {
    let stream = setup();
    // 2 x 6 INT32 with ties, sorted along dim 1 (and dim -1).
    let xv: [i32; 12] = [3, 1, 3, -2, 1, 7, 0, 0, 5, -1, 5, 0];
    let x = tensor(&i32b(&xv), &[2, 6], sys::ACL_INT32);
    for (stable, desc, dim) in [(true, false, 1), (true, true, -1), (false, false, 1), (false, true, 1)] {
        let vals = filled(&[2, 6], sys::ACL_INT32, 0xAB);
        let idx = filled(&[2, 6], sys::ACL_INT64, 0xAB);
        let (rc, ws, ex) = sort_p1(&x, stable, dim, desc, &vals, &idx);
        assert_eq!(rc, 0, "{}", msg());
        assert!(ws > 0, "Sort asks for a workspace");
        assert_eq!(launch(stream, ws, ex, aclnnSort), 0, "{}", msg());
        let (gv, gi) = (as_i32(&read(&vals)), as_i64(&read(&idx)));
        for r in 0..2 {
            let line: Vec<f64> = xv[r * 6..r * 6 + 6].iter().map(|&v| v as f64).collect();
            let want = ref_order(&line, desc, stable);
            assert_eq!(&gi[r * 6..r * 6 + 6], &want[..], "stable {stable} desc {desc}");
            let wv: Vec<i32> = want.iter().map(|&j| xv[r * 6 + j as usize]).collect();
            assert_eq!(&gv[r * 6..r * 6 + 6], &wv[..]);
        }
        // Executor reuse is refused.
        assert_eq!(launch(stream, ws, ex, aclnnSort), INVALID, "executor reused");
    }
    // FLOAT along dim 0 of a 3 x 2, through a transposed view; -0.0 and 0.0 tie.
    let fv = [2.5f32, -0.0, -1.0, 4.0, 0.0, 4.0];
    let xf = tensor(&f32b(&fv), &[2, 3], sys::ACL_FLOAT);
    let xt = view(
        xf.ptr,
        sys::ACL_FLOAT,
        &[3, 2],
        Some(&[1, 3]),
        0,
        &[6],
        sys::ACL_FORMAT_ND,
    );
    let xt = Dev { t: xt, ..none() };
    let vals = zeros(&[3, 2], sys::ACL_FLOAT);
    let idx = zeros(&[3, 2], sys::ACL_INT64);
    let (rc, ws, ex) = sort_p1(&xt, true, 0, false, &vals, &idx);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnSort), 0, "{}", msg());
    // Column c of the view is row c of fv: [2.5, -0.0, -1.0] and [4.0, 0.0, 4.0].
    let (gv, gi) = (as_f32(&read(&vals)), as_i64(&read(&idx)));
    for c in 0..2 {
        let line: Vec<f64> = fv[c * 3..c * 3 + 3].iter().map(|&v| v as f64).collect();
        let want = ref_order(&line, false, true);
        let got_i: Vec<i64> = (0..3).map(|r| gi[r * 2 + c]).collect();
        assert_eq!(got_i, want);
        let got_v: Vec<f32> = (0..3).map(|r| gv[r * 2 + c]).collect();
        let want_v: Vec<f32> = want.iter().map(|&j| fv[c * 3 + j as usize]).collect();
        assert_eq!(
            got_v.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want_v.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "values are copied bit-exactly (the sign of zero too)"
        );
    }
}

#[test]
fn sort_refusals() {
    let stream = setup();
    let x = tensor(&f32b(&[1.0, 2.0, 3.0, 4.0]), &[2, 2], sys::ACL_FLOAT);
    let v = zeros(&[2, 2], sys::ACL_FLOAT);
    let i = zeros(&[2, 2], sys::ACL_INT64);
    assert_eq!(sort_p1(&none(), true, 0, false, &v, &i).0, NULLPTR);
    assert_eq!(sort_p1(&x, true, 0, false, &none(), &i).0, NULLPTR);
    assert_eq!(sort_p1(&x, true, 0, false, &v, &none()).0, NULLPTR);
    // dim outside [-2, 1].
    assert_eq!(sort_p1(&x, true, 2, false, &v, &i).0, INVALID);
    assert_eq!(sort_p1(&x, true, -3, false, &v, &i).0, INVALID);
    // indicesOut must be INT64; valuesOut self's dtype and shape.
    let i32i = zeros(&[2, 2], sys::ACL_INT32);
    assert_eq!(sort_p1(&x, true, 0, false, &v, &i32i).0, INVALID);
    let vh = zeros(&[2, 2], sys::ACL_FLOAT16);
    assert_eq!(sort_p1(&x, true, 0, false, &vh, &i).0, INVALID);
    let v3 = zeros(&[4], sys::ACL_FLOAT);
    assert_eq!(sort_p1(&x, true, 0, false, &v3, &i).0, INVALID);
    let i3 = zeros(&[2, 3], sys::ACL_INT64);
    assert_eq!(sort_p1(&x, true, 0, false, &v, &i3).0, INVALID);
    // BOOL / DOUBLE self: not emulated.
    let xb = tensor(&[1, 0, 1, 0], &[2, 2], sys::ACL_BOOL);
    let vb = zeros(&[2, 2], sys::ACL_BOOL);
    assert_eq!(sort_p1(&xb, true, 0, false, &vb, &i).0, INVALID);
    // BFLOAT16 and "the axis specified by dim cannot be 1".
    let xbf = tensor(&bf16b(&[1.0, 2.0, 3.0, 4.0]), &[2, 2], sys::ACL_BF16);
    let vbf = zeros(&[2, 2], sys::ACL_BF16);
    assert_eq!(sort_p1(&xbf, true, 1, false, &vbf, &i).0, INVALID);
    assert_eq!(sort_p1(&xbf, true, 0, false, &vbf, &i).0, 0);
    // A NaN is refused at launch (where NaN sorts is undocumented).
    let xn = tensor(&f32b(&[1.0, f32::NAN, 3.0, 4.0]), &[2, 2], sys::ACL_FLOAT);
    let (rc, ws, ex) = sort_p1(&xn, true, 1, false, &v, &i);
    assert_eq!(rc, 0);
    assert_eq!(launch(stream, ws, ex, aclnnSort), sys::ACLNN_ERR_INNER);
    assert!(msg().contains("NaN"), "{}", msg());
    // A Sort executor is not an Argsort one.
    let (rc, ws, ex) = sort_p1(&x, true, 0, false, &v, &i);
    assert_eq!(rc, 0);
    assert_eq!(launch(stream, ws, ex, aclnnArgsort), INVALID);
}

#[test]
fn argsort_gives_sort_indices_and_refuses_what_the_page_rules_out() {
    let stream = setup();
    let xv: [i64; 8] = [5, -3, 5, 9, 0, 0, -7, 2];
    let x = tensor(&i64b(&xv), &[2, 4], sys::ACL_INT64);
    for desc in [false, true] {
        let out = filled(&[2, 4], sys::ACL_INT64, 0xCD);
        // SAFETY: live objects; out-pointers to locals.
        let (rc, ws, ex) = p1(|ws, ex| unsafe { aclnnArgsortGetWorkspaceSize(x.t, 1, desc, out.t, ws, ex) });
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnArgsort), 0, "{}", msg());
        let got = as_i64(&read(&out));
        for r in 0..2 {
            let line: Vec<f64> = xv[r * 4..r * 4 + 4].iter().map(|&v| v as f64).collect();
            // No stable flag: ties in the emulator's unstable (reversed) order.
            assert_eq!(&got[r * 4..r * 4 + 4], &ref_order(&line, desc, false)[..]);
        }
    }
    let out = zeros(&[2, 4], sys::ACL_INT64);
    let o32 = zeros(&[2, 4], sys::ACL_INT32);
    let xbf = tensor(&bf16b(&[0.0; 8]), &[2, 4], sys::ACL_BF16);
    // SAFETY (each): live objects or NULL; out-pointers to locals.
    let call = |x: &Dev, dim: i64, o: &Dev| {
        p1(|ws, ex| unsafe { aclnnArgsortGetWorkspaceSize(x.t, dim, false, o.t, ws, ex) }).0
    };
    assert_eq!(call(&none(), 0, &out), NULLPTR);
    assert_eq!(call(&x, 0, &none()), NULLPTR);
    assert_eq!(call(&x, 2, &out), INVALID, "dim out of range");
    assert_eq!(call(&x, 0, &o32), INVALID, "out INT64 only");
    assert_eq!(call(&xbf, 0, &out), INVALID, "BFLOAT16 is not on the page");
}

fn arange(start: *const aclScalar, end: *const aclScalar, step: *const aclScalar, out: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnArangeGetWorkspaceSize(start, end, step, out.t, ws, ex) })
}

#[test]
fn arange_has_ceil_size_and_closed_form_values() {
    let stream = setup();
    // Integers: [3, 17) step 4 -> ceil(14/4) = 4 values 3, 7, 11, 15; negative step 10 -> -3 by -5.
    let i64s = |v: i64| scalar(v, sys::ACL_INT64);
    for (a, b, s, dt) in [(3i64, 17i64, 4i64, sys::ACL_INT64), (10, -3, -5, sys::ACL_INT32)] {
        let n = ((b - a) as f64 / s as f64).ceil() as i64;
        let out = filled(&[n], dt, 0xEE);
        let (rc, ws, ex) = arange(i64s(a), i64s(b), i64s(s), &out);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnArange), 0, "{}", msg());
        let want: Vec<i64> = (0..n).map(|i| a + i * s).collect();
        let got: Vec<i64> = if dt == sys::ACL_INT64 {
            as_i64(&read(&out))
        } else {
            as_i32(&read(&out)).into_iter().map(i64::from).collect()
        };
        assert_eq!(got, want);
        // The size rule is exact: one element more or less is refused.
        for m in [n - 1, n + 1] {
            let o = zeros(&[m], dt);
            assert_eq!(arange(i64s(a), i64s(b), i64s(s), &o).0, INVALID, "size {m} for {n}");
        }
    }
    // FLOAT: [0, 1) step 0.1 -> ceil in f32 of 1/0.1 = 10 values i*0.1 (closed form, rounded once).
    let out = zeros(&[10], sys::ACL_FLOAT);
    let (rc, ws, ex) = arange(scalar_f32(0.0), scalar_f32(1.0), scalar_f32(0.1), &out);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnArange), 0, "{}", msg());
    let want: Vec<f32> = (0..10).map(|i| (i as f64 * 0.1f32 as f64) as f32).collect();
    assert_eq!(as_f32(&read(&out)), want);
}

#[test]
fn arange_refusals() {
    setup();
    let out = zeros(&[4], sys::ACL_INT64);
    let (a, b, s) = (
        scalar(0i64, sys::ACL_INT64),
        scalar(4i64, sys::ACL_INT64),
        scalar(1i64, sys::ACL_INT64),
    );
    assert_eq!(arange(ptr::null(), b, s, &out).0, NULLPTR);
    assert_eq!(arange(a, ptr::null(), s, &out).0, NULLPTR);
    assert_eq!(arange(a, b, ptr::null(), &out).0, NULLPTR);
    assert_eq!(arange(a, b, s, &none()).0, NULLPTR);
    // step 0, wrong direction, empty range.
    let zero = scalar(0i64, sys::ACL_INT64);
    let minus = scalar(-1i64, sys::ACL_INT64);
    assert_eq!(arange(a, b, zero, &out).0, INVALID);
    assert_eq!(arange(a, b, minus, &out).0, INVALID);
    assert_eq!(arange(b, a, s, &out).0, INVALID);
    assert_eq!(arange(a, a, s, &out).0, INVALID);
    // out dtypes: BOOL / INT8 not on the list; BOOL scalars not emulated.
    assert_eq!(arange(a, b, s, &zeros(&[4], sys::ACL_INT8)).0, INVALID);
    let t = scalar(1u8, sys::ACL_BOOL);
    assert_eq!(arange(a, b, t, &out).0, INVALID);
    // Integer out with a fractional step.
    let half = scalar_f32(0.5);
    assert_eq!(arange(a, b, half, &zeros(&[8], sys::ACL_INT64)).0, INVALID);
    // 2-D out.
    assert_eq!(arange(a, b, s, &zeros(&[2, 2], sys::ACL_INT64)).0, INVALID);
}
