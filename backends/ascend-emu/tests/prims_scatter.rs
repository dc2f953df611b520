//! aclnnSearchSorted and aclnnScatter / aclnnInplaceScatter through the exported C ABI: the
//! documented results, computed here from the pages' formulas, and the documented refusals (plus
//! the emulator's refusals of undefined behaviour: unsorted sequences, duplicate replace targets).
//! RULES.md SS*, ST*.

mod common;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;

const INVALID: i32 = sys::ACLNN_ERR_PARAM_INVALID;
const NULLPTR: i32 = sys::ACLNN_ERR_PARAM_NULLPTR;
const INNER: i32 = sys::ACLNN_ERR_INNER;

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
