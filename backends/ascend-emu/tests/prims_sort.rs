//! The second group of issue-13 primitives through the exported C ABI (Sort, Argsort, Arange,
//! SearchSorted, Scatter, IndexSelect, FloorDivides, Adds, Amax/Amin): each op's documented result,
//! computed here from the page's formula (not from moehal code), and each documented refusal (NULL,
//! dtype, shape, dim, executor reuse) plus the emulator's refusals of undefined behaviour (unsorted
//! sequences, repeated replace targets, NaN keys). One test binary for the group (CI link time);
//! the copy-counter check is `prims_sort_copies.rs` (own process). RULES.md SO*, AS*, AR*, SS*,
//! ST*, IS*, FD*, AD*, AM*.

mod common;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;

const INVALID: i32 = sys::ACLNN_ERR_PARAM_INVALID;
const NULLPTR: i32 = sys::ACLNN_ERR_PARAM_NULLPTR;
const INNER: i32 = sys::ACLNN_ERR_INNER;

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

// ======================================== SearchSorted, Scatter, IndexSelect

fn ss_p1(seq: &Dev, x: &Dev, i32out: bool, right: bool, sorter: &Dev, out: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnSearchSortedGetWorkspaceSize(seq.t, x.t, i32out, right, sorter.t, out.t, ws, ex) })
}

/// The page's formula: min{j in [0, N] | seq_j >= x} (right: seq_j > x), N if none.
fn insertion(seq: &[f64], x: f64, right: bool) -> i64 {
    (0..seq.len())
        .find(|&j| if right { seq[j] > x } else { seq[j] >= x })
        .unwrap_or(seq.len()) as i64
}

#[test]
fn search_sorted_gives_left_and_right_insertion_points() {
    let stream = setup();
    let seq = [1i64, 3, 3, 5, 9];
    let xs = [0i64, 1, 3, 4, 9, 10, 3, 5];
    let s = tensor(&i64b(&seq), &[5], sys::ACL_INT64);
    let x = tensor(&i64b(&xs), &[2, 4], sys::ACL_INT64);
    let sf: Vec<f64> = seq.iter().map(|&v| v as f64).collect();
    for right in [false, true] {
        for i32out in [false, true] {
            let dt = if i32out { sys::ACL_INT32 } else { sys::ACL_INT64 };
            let out = filled(&[2, 4], dt, 0x77);
            let (rc, ws, ex) = ss_p1(&s, &x, i32out, right, &none(), &out);
            assert_eq!(rc, 0, "{}", msg());
            assert_eq!(launch(stream, ws, ex, aclnnSearchSorted), 0, "{}", msg());
            let got: Vec<i64> = if i32out {
                as_i32(&read(&out)).into_iter().map(i64::from).collect()
            } else {
                as_i64(&read(&out))
            };
            let want: Vec<i64> = xs.iter().map(|&v| insertion(&sf, v as f64, right)).collect();
            assert_eq!(got, want, "right {right}");
        }
    }
    // 2-D sequence with a sorter (each row unsorted in storage, sorted through the sorter), FLOAT
    // self against an INT32 sequence (promoted): row r of self searches row r of the sequence.
    let seq2 = [30i32, 10, 20, 5, 7, 6];
    let sorter = [1i64, 2, 0, 0, 2, 1];
    let xs2 = [15.0f32, 30.0, 6.5, 4.0];
    let s2 = tensor(&i32b(&seq2), &[2, 3], sys::ACL_INT32);
    let so = tensor(&i64b(&sorter), &[2, 3], sys::ACL_INT64);
    let x2 = tensor(&f32b(&xs2), &[2, 2], sys::ACL_FLOAT);
    let out = zeros(&[2, 2], sys::ACL_INT64);
    let (rc, ws, ex) = ss_p1(&s2, &x2, false, true, &so, &out);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnSearchSorted), 0, "{}", msg());
    let mut want = vec![];
    for r in 0..2 {
        let line: Vec<f64> = (0..3)
            .map(|j| seq2[r * 3 + sorter[r * 3 + j] as usize] as f64)
            .collect();
        for c in 0..2 {
            want.push(insertion(&line, xs2[r * 2 + c] as f64, true));
        }
    }
    assert_eq!(as_i64(&read(&out)), want);
}

#[test]
fn search_sorted_refuses_unsorted_input_and_bad_arguments() {
    let stream = setup();
    let s = tensor(&i64b(&[1, 5, 3]), &[3], sys::ACL_INT64);
    let x = tensor(&i64b(&[2, 4]), &[2], sys::ACL_INT64);
    let out = zeros(&[2], sys::ACL_INT64);
    // Unsorted sequence: refused at launch (the device would not check).
    let (rc, ws, ex) = ss_p1(&s, &x, false, false, &none(), &out);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnSearchSorted), INNER);
    assert!(msg().contains("not sorted"), "{}", msg());
    // A sorter that is out of range or repeats an entry: refused at launch.
    let sorted = tensor(&i64b(&[1, 3, 5]), &[3], sys::ACL_INT64);
    for bad in [[0i64, 1, 3], [0, 1, 1]] {
        let so = tensor(&i64b(&bad), &[3], sys::ACL_INT64);
        let (rc, ws, ex) = ss_p1(&sorted, &x, false, false, &so, &out);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnSearchSorted), INNER, "sorter {bad:?}");
    }
    // NULLs (sorter may be NULL: not an error).
    assert_eq!(ss_p1(&none(), &x, false, false, &none(), &out).0, NULLPTR);
    assert_eq!(ss_p1(&sorted, &none(), false, false, &none(), &out).0, NULLPTR);
    assert_eq!(ss_p1(&sorted, &x, false, false, &none(), &none()).0, NULLPTR);
    // out dtype against outInt32; out shape; sorter dtype / shape; BF16 not on the page.
    assert_eq!(ss_p1(&sorted, &x, true, false, &none(), &out).0, INVALID);
    assert_eq!(
        ss_p1(&sorted, &x, false, false, &none(), &zeros(&[3], sys::ACL_INT64)).0,
        INVALID
    );
    let so32 = tensor(&i32b(&[0, 1, 2]), &[3], sys::ACL_INT32);
    assert_eq!(ss_p1(&sorted, &x, false, false, &so32, &out).0, INVALID);
    let so2 = tensor(&i64b(&[0, 1]), &[2], sys::ACL_INT64);
    assert_eq!(ss_p1(&sorted, &x, false, false, &so2, &out).0, INVALID);
    let xb = tensor(&bf16b(&[1.0, 2.0]), &[2], sys::ACL_BF16);
    assert_eq!(ss_p1(&sorted, &xb, false, false, &none(), &out).0, INVALID);
    // 2-D sequence: self must match it on every axis but the last.
    let s2 = tensor(&i64b(&[1, 2, 3, 4]), &[2, 2], sys::ACL_INT64);
    let x3 = tensor(&i64b(&[1, 2, 3]), &[3, 1], sys::ACL_INT64);
    assert_eq!(
        ss_p1(&s2, &x3, false, false, &none(), &zeros(&[3, 1], sys::ACL_INT64)).0,
        INVALID
    );
}

fn scatter_p1(x: &Dev, dim: i64, idx: &Dev, src: &Dev, reduce: i64, out: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnScatterGetWorkspaceSize(x.t, dim, idx.t, src.t, reduce, out.t, ws, ex) })
}

#[test]
fn scatter_follows_the_pages_update_rule() {
    let stream = setup();
    // self 3 x 3, index / src 2 x 3 (index smaller than src on dim 1 is allowed: 2 x 2 here).
    let xv = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    let iv = [2i64, 0, 1, 2];
    let sv = [10.0f32, 20.0, 30.0, 40.0, 50.0, 60.0];
    let x = tensor(&f32b(&xv), &[3, 3], sys::ACL_FLOAT);
    let idx = tensor(&i64b(&iv), &[2, 2], sys::ACL_INT64);
    let src = tensor(&f32b(&sv), &[2, 3], sys::ACL_FLOAT);
    for (dim, reduce) in [(0i64, 0i64), (0, 1), (0, 2), (1, 0)] {
        let out = filled(&[3, 3], sys::ACL_FLOAT, 0x55);
        let (rc, ws, ex) = scatter_p1(&x, dim, &idx, &src, reduce, &out);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnScatter), 0, "{}", msg());
        // The page's rule: self[index[i][j]][j] (op)= src[i][j] for dim 0, self[i][index[i][j]] for dim 1.
        let mut want = xv.to_vec();
        for i in 0..2 {
            for j in 0..2 {
                let k = iv[i * 2 + j] as usize;
                let t = if dim == 0 { k * 3 + j } else { i * 3 + k };
                let s = sv[i * 3 + j];
                want[t] = match reduce {
                    0 => s,
                    1 => want[t] + s,
                    _ => want[t] * s,
                };
            }
        }
        assert_eq!(as_f32(&read(&out)), want, "dim {dim} reduce {reduce}");
    }
    // In place, INT32 self with add and a repeated target (allowed when accumulating).
    let xi = tensor(&i32b(&[0, 0, 0, 0]), &[4], sys::ACL_INT32);
    let ii = tensor(&i32b(&[3, 1, 3]), &[3], sys::ACL_INT32);
    let si = tensor(&i32b(&[5, 7, -2]), &[3], sys::ACL_INT32);
    // SAFETY: live objects; out-pointers to locals.
    let (rc, ws, ex) = p1(|ws, ex| unsafe { aclnnInplaceScatterGetWorkspaceSize(xi.t, 0, ii.t, si.t, 1, ws, ex) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(
        launch(stream, ws, ex, aclnnScatter),
        INVALID,
        "an in-place executor is not aclnnScatter's"
    );
    let (rc, ws, ex) = p1(|ws, ex| unsafe { aclnnInplaceScatterGetWorkspaceSize(xi.t, 0, ii.t, si.t, 1, ws, ex) });
    assert_eq!(rc, 0);
    assert_eq!(launch(stream, ws, ex, aclnnInplaceScatter), 0, "{}", msg());
    assert_eq!(as_i32(&read(&xi)), [0, 7, 0, 3]);
    assert_eq!(launch(stream, ws, ex, aclnnInplaceScatter), INVALID, "executor reused");
}

#[test]
fn scatter_refusals() {
    let stream = setup();
    let x = zeros(&[2, 3], sys::ACL_FLOAT);
    let idx = tensor(&i64b(&[0, 1, 1, 0]), &[2, 2], sys::ACL_INT64);
    let src = zeros(&[2, 2], sys::ACL_FLOAT);
    let out = zeros(&[2, 3], sys::ACL_FLOAT);
    assert_eq!(scatter_p1(&none(), 0, &idx, &src, 0, &out).0, NULLPTR);
    assert_eq!(scatter_p1(&x, 0, &none(), &src, 0, &out).0, NULLPTR);
    assert_eq!(scatter_p1(&x, 0, &idx, &none(), 0, &out).0, NULLPTR);
    assert_eq!(scatter_p1(&x, 0, &idx, &src, 0, &none()).0, NULLPTR);
    // reduce outside 0..2, dim outside [-2, 1].
    assert_eq!(scatter_p1(&x, 0, &idx, &src, 3, &out).0, INVALID);
    assert_eq!(scatter_p1(&x, 2, &idx, &src, 0, &out).0, INVALID);
    // src of another dtype, FLOAT index, out of another shape, index larger than src.
    assert_eq!(
        scatter_p1(&x, 0, &idx, &zeros(&[2, 2], sys::ACL_FLOAT16), 0, &out).0,
        INVALID
    );
    assert_eq!(
        scatter_p1(&x, 0, &zeros(&[2, 2], sys::ACL_FLOAT), &src, 0, &out).0,
        INVALID
    );
    assert_eq!(
        scatter_p1(&x, 0, &idx, &src, 0, &zeros(&[3, 2], sys::ACL_FLOAT)).0,
        INVALID
    );
    assert_eq!(
        scatter_p1(&x, 0, &idx, &zeros(&[2, 1], sys::ACL_FLOAT), 0, &out).0,
        INVALID
    );
    // index rank differs from self's.
    assert_eq!(
        scatter_p1(&x, 0, &tensor(&i64b(&[0]), &[1], sys::ACL_INT64), &src, 0, &out).0,
        INVALID
    );
    // At launch: an index outside [0, self.size(dim)), and (reduce 0) a repeated target.
    let far = tensor(&i64b(&[0, 2, 1, 0]), &[2, 2], sys::ACL_INT64);
    let (rc, ws, ex) = scatter_p1(&x, 0, &far, &src, 0, &out);
    assert_eq!(rc, 0);
    assert_eq!(launch(stream, ws, ex, aclnnScatter), INNER);
    let dup = tensor(&i64b(&[0, 1, 0, 0]), &[2, 2], sys::ACL_INT64);
    let (rc, ws, ex) = scatter_p1(&x, 0, &dup, &src, 0, &out);
    assert_eq!(rc, 0);
    assert_eq!(launch(stream, ws, ex, aclnnScatter), INNER);
    assert!(msg().contains("reduce 0"), "{}", msg());
}

fn is_p1(x: &Dev, dim: i64, idx: &Dev, out: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnIndexSelectGetWorkspaceSize(x.t, dim, idx.t, out.t, ws, ex) })
}

#[test]
fn index_select_takes_any_dim_and_views() {
    let stream = setup();
    // The page's example: x = [[1,2,3],[4,5,6],[7,8,9]], idx = [1, 0]: dim 0 -> [[4,5,6],[1,2,3]],
    // dim 1 -> [[2,1],[5,4],[8,7]].
    let x = tensor(&i64b(&[1, 2, 3, 4, 5, 6, 7, 8, 9]), &[3, 3], sys::ACL_INT64);
    let idx = tensor(&i32b(&[1, 0]), &[2], sys::ACL_INT32);
    for (dim, shape, want) in [
        (0i64, [2i64, 3i64], vec![4i64, 5, 6, 1, 2, 3]),
        (1, [3, 2], vec![2, 1, 5, 4, 8, 7]),
        (-1, [3, 2], vec![2, 1, 5, 4, 8, 7]),
    ] {
        let out = filled(&shape, sys::ACL_INT64, 0x3C);
        let (rc, ws, ex) = is_p1(&x, dim, &idx, &out);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnIndexSelect), 0, "{}", msg());
        assert_eq!(as_i64(&read(&out)), want, "dim {dim}");
    }
    // A transposed BF16 view of a 2 x 3 (so the view is 3 x 2), selecting along dim 1.
    let xb = tensor(&bf16b(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), &[2, 3], sys::ACL_BF16);
    let xt = view(
        xb.ptr,
        sys::ACL_BF16,
        &[3, 2],
        Some(&[1, 3]),
        0,
        &[6],
        sys::ACL_FORMAT_ND,
    );
    let xt = Dev { t: xt, ..none() };
    let i1 = tensor(&i64b(&[1, 1, 0]), &[3], sys::ACL_INT64);
    let out = zeros(&[3, 3], sys::ACL_BF16);
    let (rc, ws, ex) = is_p1(&xt, 1, &i1, &out);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnIndexSelect), 0, "{}", msg());
    // view[r][c] = base[c][r] = 3c + r + 1; out[r][j] = view[r][i1[j]].
    let want: Vec<f32> = (0..3)
        .flat_map(|r| [1i64, 1, 0].map(|c| (3 * c + r + 1) as f32))
        .collect();
    assert_eq!(as_bf16(&read(&out)), want);
}

#[test]
fn index_select_refusals() {
    let stream = setup();
    let x = zeros(&[2, 3], sys::ACL_FLOAT);
    let idx = tensor(&i64b(&[2, 0]), &[2], sys::ACL_INT64);
    let out = zeros(&[2, 2], sys::ACL_FLOAT);
    assert_eq!(is_p1(&none(), 1, &idx, &out).0, NULLPTR);
    assert_eq!(is_p1(&x, 1, &none(), &out).0, NULLPTR);
    assert_eq!(is_p1(&x, 1, &idx, &none()).0, NULLPTR);
    assert_eq!(is_p1(&x, 2, &idx, &out).0, INVALID, "dim out of range");
    assert_eq!(is_p1(&x, -3, &idx, &out).0, INVALID, "dim out of range");
    assert_eq!(is_p1(&x, 0, &idx, &out).0, INVALID, "out is [2, 3] for dim 0");
    let i2 = tensor(&i64b(&[0, 1]), &[1, 2], sys::ACL_INT64);
    assert_eq!(is_p1(&x, 1, &i2, &out).0, INVALID, "2-D index");
    let fi = tensor(&f32b(&[0.0, 1.0]), &[2], sys::ACL_FLOAT);
    assert_eq!(is_p1(&x, 1, &fi, &out).0, INVALID, "FLOAT index");
    assert_eq!(
        is_p1(&x, 1, &idx, &zeros(&[2, 2], sys::ACL_FLOAT16)).0,
        INVALID,
        "out dtype"
    );
    // Negative and too-large indices at launch.
    for bad in [[-1i64, 0], [0, 3]] {
        let ib = tensor(&i64b(&bad), &[2], sys::ACL_INT64);
        let (rc, ws, ex) = is_p1(&x, 1, &ib, &out);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnIndexSelect), INNER, "{bad:?}");
    }
}

// ======================================== FloorDivides, Adds, Amax / Amin

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
