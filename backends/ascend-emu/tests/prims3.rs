//! The third group of issue-13 primitives through the exported C ABI (IsFinite, LogicalNot,
//! SWhere, Add / Sub, ScatterAdd, Topk): each op's documented result, computed here from the
//! page's formula or its worked example (not from moehal code), and each documented refusal (NULL,
//! dtype, shape, dim, executor reuse) plus the emulator's refusals of undocumented behaviour (top-k
//! ties across the k-th place, NaN keys, integer overflow). One test binary for the group; the
//! copy-counter check is in `prims_sort_copies.rs` (own process). RULES.md IF*, LN*, SW*, PM*, AB*, SA*,
//! TK*.

mod common;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;

const INVALID: i32 = sys::ACLNN_ERR_PARAM_INVALID;
const NULLPTR: i32 = sys::ACLNN_ERR_PARAM_NULLPTR;
const INNER: i32 = sys::ACLNN_ERR_INNER;

fn bools(d: &Dev) -> Vec<u8> {
    read(d)
}

// ---- aclnnIsFinite ------------------------------------------------------------------------------

fn is_finite_p1(x: &Dev, out: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects of this library or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnIsFiniteGetWorkspaceSize(x.t, out.t, ws, ex) })
}

#[test]
fn is_finite_marks_inf_and_nan_and_refuses_bad_calls() {
    let stream = setup();
    let v = [1.5f32, f32::INFINITY, -0.0, f32::NEG_INFINITY, f32::NAN, -3e38];
    let want: Vec<u8> = v.iter().map(|x| x.is_finite() as u8).collect();
    for (bytes, dt) in [
        (f32b(&v), sys::ACL_FLOAT),
        (f16b(&v), sys::ACL_FLOAT16),
        (bf16b(&v), sys::ACL_BF16),
    ] {
        let x = tensor(&bytes, &[2, 3], dt);
        let out = filled(&[2, 3], sys::ACL_BOOL, 0xAB);
        let (rc, ws, ex) = is_finite_p1(&x, &out);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnIsFinite), 0, "{}", msg());
        // -3e38 overflows FLOAT16 to -inf when the test rounds it: compare with the stored value.
        let stored: Vec<f32> = match dt {
            sys::ACL_FLOAT16 => as_f16(&bytes),
            sys::ACL_BF16 => as_bf16(&bytes),
            _ => v.to_vec(),
        };
        let w: Vec<u8> = stored.iter().map(|x| x.is_finite() as u8).collect();
        assert_eq!(bools(&out), w, "dtype {dt}");
        assert_eq!(launch(stream, ws, ex, aclnnIsFinite), INVALID, "executor reused");
    }
    assert_eq!(want, [1, 0, 1, 0, 0, 1]);
    // The 8.0.RC3 page's example: [[-3.14, inf], [2.7183, nan]] → [[True, False], [True, False]].
    #[allow(clippy::approx_constant)] // the page's literal values, not pi and e
    let page = [-3.14f32, f32::INFINITY, 2.7183, f32::NAN];
    let x = tensor(&f32b(&page), &[2, 2], sys::ACL_FLOAT);
    let out = zeros(&[2, 2], sys::ACL_BOOL);
    let (rc, ws, ex) = is_finite_p1(&x, &out);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnIsFinite), 0, "{}", msg());
    assert_eq!(bools(&out), [1, 0, 1, 0]);
    // Integers are always finite.
    let xi = tensor(&i32b(&[i32::MIN, 0, i32::MAX]), &[3], sys::ACL_INT32);
    let out = zeros(&[3], sys::ACL_BOOL);
    let (rc, ws, ex) = is_finite_p1(&xi, &out);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnIsFinite), 0, "{}", msg());
    assert_eq!(bools(&out), [1, 1, 1]);
    // Refusals.
    let x = tensor(&f32b(&[1.0, 2.0]), &[2], sys::ACL_FLOAT);
    assert_eq!(is_finite_p1(&none(), &out).0, NULLPTR);
    assert_eq!(is_finite_p1(&x, &none()).0, NULLPTR);
    assert_eq!(
        is_finite_p1(&x, &zeros(&[2], sys::ACL_FLOAT)).0,
        INVALID,
        "out must be BOOL"
    );
    assert_eq!(is_finite_p1(&x, &zeros(&[3], sys::ACL_BOOL)).0, INVALID, "shape");
    let xd = tensor(&[0u8; 16], &[2], sys::ACL_DOUBLE);
    assert_eq!(
        is_finite_p1(&xd, &zeros(&[2], sys::ACL_BOOL)).0,
        INVALID,
        "DOUBLE NOT EMULATED"
    );
    let e = zeros(&[0], sys::ACL_FLOAT);
    assert_eq!(
        is_finite_p1(&e, &zeros(&[0], sys::ACL_BOOL)).0,
        INVALID,
        "empty: page silent"
    );
}

// ---- aclnnLogicalNot ----------------------------------------------------------------------------

#[test]
fn logical_not_negates_truthiness_in_outs_dtype() {
    let stream = setup();
    // "零视为False,非零视为True": -0.0 is zero, NaN is not.
    let x = tensor(&f32b(&[0.0, -0.0, 2.5, f32::NAN]), &[4], sys::ACL_FLOAT);
    let out = filled(&[4], sys::ACL_BOOL, 0xAB);
    // SAFETY: live objects; out-pointers to locals.
    let (rc, ws, ex) = p1(|ws, ex| unsafe { aclnnLogicalNotGetWorkspaceSize(x.t, out.t, ws, ex) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnLogicalNot), 0, "{}", msg());
    assert_eq!(bools(&out), [1, 1, 0, 0]);
    assert_eq!(launch(stream, ws, ex, aclnnLogicalNot), INVALID, "executor reused");
    // An INT32 self into an INT32 out (the page lets out's dtype differ from BOOL).
    let xi = tensor(&i32b(&[0, 7, -1]), &[3], sys::ACL_INT32);
    let oi = filled(&[3], sys::ACL_INT32, 0xAB);
    // SAFETY: as above.
    let (rc, ws, ex) = p1(|ws, ex| unsafe { aclnnLogicalNotGetWorkspaceSize(xi.t, oi.t, ws, ex) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnLogicalNot), 0, "{}", msg());
    assert_eq!(as_i32(&read(&oi)), [1, 0, 0]);
    // In place on a BOOL tensor.
    let b = tensor(&[1u8, 0, 0, 1], &[2, 2], sys::ACL_BOOL);
    // SAFETY: as above.
    let (rc, ws, ex) = p1(|ws, ex| unsafe { aclnnInplaceLogicalNotGetWorkspaceSize(b.t, ws, ex) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(
        launch(stream, ws, ex, aclnnLogicalNot),
        INVALID,
        "in-place executor to the out-of-place launch"
    );
    // SAFETY: as above.
    let (rc, ws, ex) = p1(|ws, ex| unsafe { aclnnInplaceLogicalNotGetWorkspaceSize(b.t, ws, ex) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnInplaceLogicalNot), 0, "{}", msg());
    assert_eq!(bools(&b), [0, 1, 1, 0]);
    // Refusals.
    // SAFETY: as above (NULL arguments on purpose).
    unsafe {
        assert_eq!(
            p1(|ws, ex| aclnnLogicalNotGetWorkspaceSize(ptr::null(), out.t, ws, ex)).0,
            NULLPTR
        );
        assert_eq!(
            p1(|ws, ex| aclnnLogicalNotGetWorkspaceSize(x.t, ptr::null_mut(), ws, ex)).0,
            NULLPTR
        );
        assert_eq!(
            p1(|ws, ex| aclnnInplaceLogicalNotGetWorkspaceSize(ptr::null_mut(), ws, ex)).0,
            NULLPTR
        );
        let o3 = zeros(&[3], sys::ACL_BOOL);
        assert_eq!(
            p1(|ws, ex| aclnnLogicalNotGetWorkspaceSize(x.t, o3.t, ws, ex)).0,
            INVALID,
            "shape"
        );
        let od = zeros(&[4], sys::ACL_DOUBLE);
        assert_eq!(
            p1(|ws, ex| aclnnLogicalNotGetWorkspaceSize(x.t, od.t, ws, ex)).0,
            INVALID,
            "DOUBLE"
        );
    }
}

// ---- aclnnSWhere --------------------------------------------------------------------------------

fn where_p1(c: &Dev, a: &Dev, b: &Dev, out: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects of this library or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnSWhereGetWorkspaceSize(c.t, a.t, b.t, out.t, ws, ex) })
}

#[test]
fn s_where_selects_with_broadcast_and_promotion() {
    let stream = setup();
    // condition [2,1], self [2,3], other [3]: out[i][j] = cond[i] ? self[i][j] : other[j].
    let cond = [1u8, 0];
    let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [-1.0f32, -2.0, -3.0];
    let c = tensor(&cond, &[2, 1], sys::ACL_BOOL);
    let x = tensor(&f32b(&a), &[2, 3], sys::ACL_FLOAT);
    let y = tensor(&f32b(&b), &[3], sys::ACL_FLOAT);
    let out = zeros(&[2, 3], sys::ACL_FLOAT);
    let (rc, ws, ex) = where_p1(&c, &x, &y, &out);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnSWhere), 0, "{}", msg());
    let mut want = vec![0f32; 6];
    for i in 0..2 {
        for j in 0..3 {
            want[i * 3 + j] = if cond[i] != 0 { a[i * 3 + j] } else { b[j] };
        }
    }
    assert_eq!(as_f32(&read(&out)), want);
    assert_eq!(launch(stream, ws, ex, aclnnSWhere), INVALID, "executor reused");
    // UINT8 condition; INT32 self with INT64 other promotes to INT64 (exact).
    let cu = tensor(&[0u8, 3, 1], &[3], sys::ACL_UINT8);
    let xi = tensor(&i32b(&[10, 20, 30]), &[3], sys::ACL_INT32);
    let yi = tensor(&i64b(&[1 << 40, -5, 7]), &[3], sys::ACL_INT64);
    let oi = zeros(&[3], sys::ACL_INT64);
    let (rc, ws, ex) = where_p1(&cu, &xi, &yi, &oi);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnSWhere), 0, "{}", msg());
    assert_eq!(as_i64(&read(&oi)), [1 << 40, 20, 30]);
    // FLOAT16 with BFLOAT16 promotes to FLOAT (each value exact in FLOAT).
    let xh = tensor(&f16b(&[0.5, 1.5]), &[2], sys::ACL_FLOAT16);
    let yb = tensor(&bf16b(&[-2.0, 3.0]), &[2], sys::ACL_BF16);
    let c2 = tensor(&[0u8, 1], &[2], sys::ACL_BOOL);
    let of = zeros(&[2], sys::ACL_FLOAT);
    let (rc, ws, ex) = where_p1(&c2, &xh, &yb, &of);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnSWhere), 0, "{}", msg());
    assert_eq!(as_f32(&read(&of)), [-2.0, 1.5]);
    // Refusals.
    assert_eq!(where_p1(&none(), &x, &y, &out).0, NULLPTR);
    assert_eq!(where_p1(&c, &x, &none(), &out).0, NULLPTR);
    assert_eq!(where_p1(&c, &x, &y, &none()).0, NULLPTR);
    let ci = tensor(&i32b(&[1, 0]), &[2, 1], sys::ACL_INT32);
    assert_eq!(where_p1(&ci, &x, &y, &out).0, INVALID, "condition INT32");
    assert_eq!(
        where_p1(&c, &x, &y, &zeros(&[2, 3], sys::ACL_FLOAT16)).0,
        INVALID,
        "out not the promoted type"
    );
    assert_eq!(
        where_p1(&c, &xi, &yi, &zeros(&[3], sys::ACL_INT32)).0,
        INVALID,
        "INT64 promoted"
    );
    let y4 = zeros(&[4], sys::ACL_FLOAT);
    assert_eq!(where_p1(&c, &x, &y4, &out).0, INVALID, "no broadcast");
    assert_eq!(
        where_p1(&c, &x, &y, &zeros(&[3, 3], sys::ACL_FLOAT)).0,
        INVALID,
        "out shape"
    );
}

// ---- aclnnAdd / aclnnSub ------------------------------------------------------------------------

fn add_p1(sub: bool, a: &Dev, b: &Dev, alpha: *mut aclScalar, out: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects of this library or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe {
        if sub {
            aclnnSubGetWorkspaceSize(a.t, b.t, alpha, out.t, ws, ex)
        } else {
            aclnnAddGetWorkspaceSize(a.t, b.t, alpha, out.t, ws, ex)
        }
    })
}

#[test]
fn add_and_sub_follow_the_formula_with_broadcast_and_promotion() {
    let stream = setup();
    let a = [1.0f32, -2.0, 3.5, 0.25, 8.0, -6.0];
    let b = [0.5f32, 4.0, -1.0];
    let x = tensor(&f32b(&a), &[2, 3], sys::ACL_FLOAT);
    let y = tensor(&f32b(&b), &[3], sys::ACL_FLOAT);
    for sub in [false, true] {
        let out = zeros(&[2, 3], sys::ACL_FLOAT);
        let (rc, ws, ex) = add_p1(sub, &x, &y, scalar_f32(2.0), &out);
        assert_eq!(rc, 0, "{}", msg());
        let f = if sub { aclnnSub } else { aclnnAdd };
        assert_eq!(launch(stream, ws, ex, f), 0, "{}", msg());
        let want: Vec<f32> = (0..6)
            .map(|i| {
                if sub {
                    a[i] - 2.0 * b[i % 3]
                } else {
                    a[i] + 2.0 * b[i % 3]
                }
            })
            .collect();
        assert_eq!(as_f32(&read(&out)), want, "sub {sub}");
        assert_eq!(launch(stream, ws, ex, f), INVALID, "executor reused");
    }
    // BF16 self, BF16 other, FLOAT alpha 0.5: formed in f32, rounded once to BF16.
    let ab = [1.0f32, 3.0, 100.0];
    let bb = [0.0078125f32, 1.0, 1.0];
    let xb = tensor(&bf16b(&ab), &[3], sys::ACL_BF16);
    let yb = tensor(&bf16b(&bb), &[3], sys::ACL_BF16);
    let ob = zeros(&[3], sys::ACL_BF16);
    let (rc, ws, ex) = add_p1(true, &xb, &yb, scalar_f32(0.5), &ob);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnSub), 0, "{}", msg());
    let want: Vec<f32> = (0..3)
        .map(|i| half::bf16::from_f32(ab[i] - 0.5 * bb[i]).to_f32())
        .collect();
    assert_eq!(as_bf16(&read(&ob)), want);
    // INT32 self with INT64 other, INT64 alpha: exact INT64.
    let xi = tensor(&i32b(&[5, -7, i32::MAX]), &[3], sys::ACL_INT32);
    let yi = tensor(&i64b(&[3, 3, 1 << 33]), &[3], sys::ACL_INT64);
    let oi = zeros(&[3], sys::ACL_INT64);
    let (rc, ws, ex) = add_p1(false, &xi, &yi, scalar(-3i64, sys::ACL_INT64), &oi);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnAdd), 0, "{}", msg());
    assert_eq!(as_i64(&read(&oi)), [5 - 9, -7 - 9, i32::MAX as i64 - 3 * (1 << 33)]);
    // INT32 with FLOAT16 promotes to FLOAT16.
    let xh = tensor(&f16b(&[0.5, 2.0, -1.0]), &[3], sys::ACL_FLOAT16);
    let xi3 = tensor(&i32b(&[1, 2, 3]), &[3], sys::ACL_INT32);
    let oh = zeros(&[3], sys::ACL_FLOAT16);
    let (rc, ws, ex) = add_p1(false, &xi3, &xh, scalar(1i32, sys::ACL_INT32), &oh);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnAdd), 0, "{}", msg());
    assert_eq!(as_f16(&read(&oh)), [1.5, 4.0, 2.0]);
    // INT32 overflow: UNDOCUMENTED, 561000 at launch.
    let big = tensor(&i32b(&[i32::MAX]), &[1], sys::ACL_INT32);
    let one = tensor(&i32b(&[1]), &[1], sys::ACL_INT32);
    let o1 = zeros(&[1], sys::ACL_INT32);
    let (rc, ws, ex) = add_p1(false, &big, &one, scalar(1i32, sys::ACL_INT32), &o1);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnAdd), INNER, "overflow");
    // Refusals.
    let out = zeros(&[2, 3], sys::ACL_FLOAT);
    assert_eq!(add_p1(false, &none(), &y, scalar_f32(1.0), &out).0, NULLPTR);
    assert_eq!(add_p1(true, &x, &none(), scalar_f32(1.0), &out).0, NULLPTR);
    assert_eq!(
        add_p1(false, &x, &y, ptr::null_mut(), &out).0,
        NULLPTR,
        "alpha required"
    );
    assert_eq!(add_p1(false, &x, &y, scalar_f32(1.0), &none()).0, NULLPTR);
    assert_eq!(
        add_p1(false, &xi, &yi, scalar_f32(1.0), &oi).0,
        INVALID,
        "floating alpha, integer promoted type"
    );
    assert_eq!(
        add_p1(false, &x, &y, scalar_f32(1.0), &zeros(&[2, 3], sys::ACL_FLOAT16)).0,
        INVALID,
        "out dtype"
    );
    assert_eq!(
        add_p1(false, &x, &zeros(&[2], sys::ACL_FLOAT), scalar_f32(1.0), &out).0,
        INVALID,
        "broadcast"
    );
    assert_eq!(
        add_p1(true, &x, &y, scalar_f32(1.0), &zeros(&[3], sys::ACL_FLOAT)).0,
        INVALID,
        "out shape"
    );
    let xd = tensor(&[0u8; 24], &[3], sys::ACL_DOUBLE);
    assert_eq!(
        add_p1(false, &xd, &xd, scalar_f32(1.0), &zeros(&[3], sys::ACL_DOUBLE)).0,
        INVALID,
        "DOUBLE"
    );
}

#[test]
fn inplace_add_and_sub_write_self_ref_and_keep_its_shape_and_type() {
    let stream = setup();
    let a = [1.0f32, 2.0, 3.0, 4.0];
    let x = tensor(&f32b(&a), &[2, 2], sys::ACL_FLOAT);
    let y = tensor(&f32b(&[10.0, 20.0]), &[1, 2], sys::ACL_FLOAT);
    // SAFETY: live objects; out-pointers to locals.
    let (rc, ws, ex) = p1(|ws, ex| unsafe { aclnnInplaceAddGetWorkspaceSize(x.t, y.t, scalar_f32(1.0), ws, ex) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(
        launch(stream, ws, ex, aclnnAdd),
        INVALID,
        "in-place executor to aclnnAdd"
    );
    // SAFETY: as above.
    let (rc, ws, ex) = p1(|ws, ex| unsafe { aclnnInplaceAddGetWorkspaceSize(x.t, y.t, scalar_f32(1.0), ws, ex) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnInplaceAdd), 0, "{}", msg());
    assert_eq!(as_f32(&read(&x)), [11.0, 22.0, 13.0, 24.0]);
    // SAFETY: as above.
    let (rc, ws, ex) = p1(|ws, ex| unsafe { aclnnInplaceSubGetWorkspaceSize(x.t, y.t, scalar_f32(0.5), ws, ex) });
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnInplaceSub), 0, "{}", msg());
    assert_eq!(as_f32(&read(&x)), [6.0, 12.0, 8.0, 14.0]);
    // selfRef does not grow, and must hold the promoted type.
    let small = tensor(&f32b(&[1.0, 2.0]), &[1, 2], sys::ACL_FLOAT);
    let tall = tensor(&f32b(&[1.0, 2.0]), &[2, 1], sys::ACL_FLOAT);
    let xi = tensor(&i32b(&[1, 2]), &[2], sys::ACL_INT32);
    let yf = tensor(&f32b(&[1.0, 2.0]), &[2], sys::ACL_FLOAT);
    // SAFETY: as above (NULL arguments on purpose).
    unsafe {
        let r = p1(|ws, ex| aclnnInplaceAddGetWorkspaceSize(small.t, tall.t, scalar_f32(1.0), ws, ex)).0;
        assert_eq!(r, INVALID, "broadcast grows selfRef");
        let r = p1(|ws, ex| aclnnInplaceSubGetWorkspaceSize(xi.t, yf.t, scalar(1i32, sys::ACL_INT32), ws, ex)).0;
        assert_eq!(r, INVALID, "promoted FLOAT does not fit INT32 selfRef");
        let r = p1(|ws, ex| aclnnInplaceSubGetWorkspaceSize(ptr::null_mut(), yf.t, scalar_f32(1.0), ws, ex)).0;
        assert_eq!(r, NULLPTR);
    }
}

// ---- aclnnScatterAdd ----------------------------------------------------------------------------

fn scatter_add_p1(x: &Dev, dim: i64, idx: &Dev, src: &Dev, out: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects of this library or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnScatterAddGetWorkspaceSize(x.t, dim, idx.t, src.t, out.t, ws, ex) })
}

/// (index, index shape, src, src shape, expected out) of one worked example.
type Case<'a> = (&'a [i64], &'a [i64], &'a [i64], &'a [i64], [i64; 9]);

#[test]
fn scatter_add_gives_the_pages_examples_and_accumulates_duplicates() {
    let stream = setup();
    // The 8.0 page's example: dim 1, self 3x3, index [[0,2,1],[0,0,1]], src [[10,11,12],[13,14,15]]
    // → [[11,14,14],[31,20,6],[7,8,9]]; the 8.0.RC3 page's: index [[0,1,2,0],[0,0,1,2]], src
    // [[1..5],[6..10]] → [[6,4,6],[17,13,15],[7,8,9]].
    let selfv = [1i64, 2, 3, 4, 5, 6, 7, 8, 9];
    let cases: [Case; 2] = [
        (
            &[0, 2, 1, 0, 0, 1],
            &[2, 3],
            &[10, 11, 12, 13, 14, 15],
            &[2, 3],
            [11, 14, 14, 31, 20, 6, 7, 8, 9],
        ),
        (
            &[0, 1, 2, 0, 0, 0, 1, 2],
            &[2, 4],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            &[2, 5],
            [6, 4, 6, 17, 13, 15, 7, 8, 9],
        ),
    ];
    for (iv, ishape, sv, sshape, want) in cases {
        for dt in [sys::ACL_INT32, sys::ACL_INT64, sys::ACL_FLOAT] {
            let enc = |v: &[i64]| match dt {
                sys::ACL_INT32 => i32b(&v.iter().map(|&x| x as i32).collect::<Vec<_>>()),
                sys::ACL_INT64 => i64b(v),
                _ => f32b(&v.iter().map(|&x| x as f32).collect::<Vec<_>>()),
            };
            let x = tensor(&enc(&selfv), &[3, 3], dt);
            let src = tensor(&enc(sv), sshape, dt);
            let idx = tensor(&i64b(iv), ishape, sys::ACL_INT64);
            let out = zeros(&[3, 3], dt);
            for dim in [1, -1] {
                let (rc, ws, ex) = scatter_add_p1(&x, dim, &idx, &src, &out);
                assert_eq!(rc, 0, "{}", msg());
                assert_eq!(launch(stream, ws, ex, aclnnScatterAdd), 0, "{}", msg());
                assert_eq!(read(&out), enc(&want), "dtype {dt} dim {dim}");
                assert_eq!(launch(stream, ws, ex, aclnnScatterAdd), INVALID, "executor reused");
            }
        }
    }
    // FLOAT accumulation is in index order in f32 (RULES.md SA2): 0 + 1e8 + 1 - 1e8 = 0 (1e8 + 1
    // rounds to 1e8), where the other order would give 1.
    let x = zeros(&[1], sys::ACL_FLOAT);
    let src = tensor(&f32b(&[1e8, 1.0, -1e8]), &[3], sys::ACL_FLOAT);
    let idx = tensor(&i32b(&[0, 0, 0]), &[3], sys::ACL_INT32);
    let out = filled(&[1], sys::ACL_FLOAT, 0xAB);
    let (rc, ws, ex) = scatter_add_p1(&x, 0, &idx, &src, &out);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnScatterAdd), 0, "{}", msg());
    assert_eq!(as_f32(&read(&out)), [((0f32 + 1e8) + 1.0) - 1e8]);
}

#[test]
fn scatter_add_refusals() {
    let stream = setup();
    let x = tensor(&i32b(&[0; 6]), &[2, 3], sys::ACL_INT32);
    let src = tensor(&i32b(&[1; 6]), &[2, 3], sys::ACL_INT32);
    let out = zeros(&[2, 3], sys::ACL_INT32);
    let idx = tensor(&i64b(&[0, 1, 2, 2, 1, 0]), &[2, 3], sys::ACL_INT64);
    assert_eq!(scatter_add_p1(&none(), 1, &idx, &src, &out).0, NULLPTR);
    assert_eq!(scatter_add_p1(&x, 1, &none(), &src, &out).0, NULLPTR);
    assert_eq!(scatter_add_p1(&x, 1, &idx, &none(), &out).0, NULLPTR);
    assert_eq!(scatter_add_p1(&x, 1, &idx, &src, &none()).0, NULLPTR);
    assert_eq!(
        scatter_add_p1(&x, 2, &idx, &src, &out).0,
        INVALID,
        "dim 2 of a 2-D self"
    );
    assert_eq!(scatter_add_p1(&x, -3, &idx, &src, &out).0, INVALID, "dim -3");
    let fidx = tensor(&f32b(&[0.0; 6]), &[2, 3], sys::ACL_FLOAT);
    assert_eq!(scatter_add_p1(&x, 1, &fidx, &src, &out).0, INVALID, "FLOAT index");
    let fsrc = tensor(&f32b(&[1.0; 6]), &[2, 3], sys::ACL_FLOAT);
    assert_eq!(scatter_add_p1(&x, 1, &idx, &fsrc, &out).0, INVALID, "src dtype != self");
    assert_eq!(
        scatter_add_p1(&x, 1, &idx, &src, &zeros(&[2, 3], sys::ACL_INT64)).0,
        INVALID,
        "out dtype"
    );
    assert_eq!(
        scatter_add_p1(&x, 1, &idx, &src, &zeros(&[3, 2], sys::ACL_INT32)).0,
        INVALID,
        "out shape"
    );
    let idx1 = tensor(&i64b(&[0, 1, 2]), &[3], sys::ACL_INT64);
    assert_eq!(scatter_add_p1(&x, 1, &idx1, &src, &out).0, INVALID, "index rank");
    let idx_wide = tensor(&i64b(&[0; 8]), &[2, 4], sys::ACL_INT64);
    assert_eq!(
        scatter_add_p1(&x, 1, &idx_wide, &src, &out).0,
        INVALID,
        "index.size(1) > src.size(1)"
    );
    let idx_tall = tensor(&i64b(&[0; 3]), &[3, 1], sys::ACL_INT64);
    let src_tall = tensor(&i32b(&[1; 3]), &[3, 1], sys::ACL_INT32);
    assert_eq!(
        scatter_add_p1(&x, 1, &idx_tall, &src_tall, &out).0,
        INVALID,
        "index.size(0) > self.size(0)"
    );
    // An index value outside [0, self.size(dim)): a value, refused at launch (561000).
    for bad in [3i64, -1] {
        let idx = tensor(&i64b(&[0, 1, bad, 0, 0, 0]), &[2, 3], sys::ACL_INT64);
        let (rc, ws, ex) = scatter_add_p1(&x, 1, &idx, &src, &out);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnScatterAdd), INNER, "index {bad}");
    }
}

// ---- aclnnTopk ----------------------------------------------------------------------------------

fn topk_p1(x: &Dev, k: i64, dim: i64, largest: bool, sorted: bool, v: &Dev, i: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects of this library or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnTopkGetWorkspaceSize(x.t, k, dim, largest, sorted, v.t, i.t, ws, ex) })
}

/// The reference: positions of the line by value (best first), distinct values only.
fn ref_topk(line: &[f32], k: usize, largest: bool) -> Vec<i64> {
    let mut p: Vec<usize> = (0..line.len()).collect();
    p.sort_by(|&i, &j| {
        if largest {
            line[j].partial_cmp(&line[i]).unwrap()
        } else {
            line[i].partial_cmp(&line[j]).unwrap()
        }
    });
    p.into_iter().take(k).map(|i| i as i64).collect()
}

#[test]
fn topk_picks_the_k_extremes_in_order() {
    let stream = setup();
    // Distinct values per line (ties are TK4's subject, below).
    let v = [0.5f32, -1.0, 7.0, 3.0, 2.0, 9.0, -4.0, 1.0, 6.0, 0.0];
    let x = tensor(&f32b(&v), &[2, 5], sys::ACL_FLOAT);
    for (largest, dim) in [(true, 1), (false, -1)] {
        let vals = filled(&[2, 3], sys::ACL_FLOAT, 0xAB);
        let idx = filled(&[2, 3], sys::ACL_INT64, 0xAB);
        let (rc, ws, ex) = topk_p1(&x, 3, dim, largest, true, &vals, &idx);
        assert_eq!(rc, 0, "{}", msg());
        assert!(ws > 0, "Topk asks for a workspace");
        assert_eq!(launch(stream, ws, ex, aclnnTopk), 0, "{}", msg());
        let (gv, gi) = (as_f32(&read(&vals)), as_i64(&read(&idx)));
        for r in 0..2 {
            let want = ref_topk(&v[r * 5..r * 5 + 5], 3, largest);
            assert_eq!(&gi[r * 3..r * 3 + 3], &want[..], "largest {largest}");
            let wv: Vec<f32> = want.iter().map(|&j| v[r * 5 + j as usize]).collect();
            assert_eq!(&gv[r * 3..r * 3 + 3], &wv[..]);
        }
        assert_eq!(launch(stream, ws, ex, aclnnTopk), INVALID, "executor reused");
    }
    // Along dim 0 of an INT64 3 x 2, k = 3 (= the whole axis).
    let xi = tensor(&i64b(&[5, -1, 9, 4, -3, 8]), &[3, 2], sys::ACL_INT64);
    let vals = zeros(&[3, 2], sys::ACL_INT64);
    let idx = zeros(&[3, 2], sys::ACL_INT64);
    let (rc, ws, ex) = topk_p1(&xi, 3, 0, true, true, &vals, &idx);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnTopk), 0, "{}", msg());
    assert_eq!(as_i64(&read(&vals)), [9, 8, 5, 4, -3, -1]);
    assert_eq!(as_i64(&read(&idx)), [1, 2, 0, 1, 2, 0]);
    // BFLOAT16, smallest first, k = 1 along dim 1 of a 2 x 3 (values copied bit-exactly).
    let bv = [0.375f32, -2.5, 8.0, 1.0, 0.5, -0.25];
    let xb = tensor(&bf16b(&bv), &[2, 3], sys::ACL_BF16);
    let vb = zeros(&[2, 1], sys::ACL_BF16);
    let ib = zeros(&[2, 1], sys::ACL_INT64);
    let (rc, ws, ex) = topk_p1(&xb, 1, 1, false, true, &vb, &ib);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnTopk), 0, "{}", msg());
    assert_eq!(
        (as_bf16(&read(&vb)), as_i64(&read(&ib))),
        (vec![-2.5, -0.25], vec![1, 2])
    );
}

#[test]
fn topk_refusals() {
    let stream = setup();
    let x = tensor(&f32b(&[1.0, 2.0, 3.0, 4.0]), &[4], sys::ACL_FLOAT);
    let v2 = zeros(&[2], sys::ACL_FLOAT);
    let i2 = zeros(&[2], sys::ACL_INT64);
    assert_eq!(topk_p1(&none(), 2, 0, true, true, &v2, &i2).0, NULLPTR);
    assert_eq!(topk_p1(&x, 2, 0, true, true, &none(), &i2).0, NULLPTR);
    assert_eq!(topk_p1(&x, 2, 0, true, true, &v2, &none()).0, NULLPTR);
    assert_eq!(
        topk_p1(&x, 0, 0, true, true, &zeros(&[1], sys::ACL_FLOAT), &i2).0,
        INVALID,
        "k 0"
    );
    assert_eq!(topk_p1(&x, 5, 0, true, true, &v2, &i2).0, INVALID, "k > size");
    assert_eq!(topk_p1(&x, 2, 1, true, true, &v2, &i2).0, INVALID, "dim 1 of 1-D");
    assert_eq!(topk_p1(&x, 2, -2, true, true, &v2, &i2).0, INVALID, "dim -2 of 1-D");
    assert_eq!(topk_p1(&x, 2, 0, true, false, &v2, &i2).0, INVALID, "sorted false");
    assert_eq!(
        topk_p1(&x, 2, 0, true, true, &zeros(&[2], sys::ACL_FLOAT16), &i2).0,
        INVALID,
        "values dtype"
    );
    assert_eq!(
        topk_p1(&x, 2, 0, true, true, &v2, &zeros(&[2], sys::ACL_INT32)).0,
        INVALID,
        "indices INT32"
    );
    assert_eq!(
        topk_p1(&x, 2, 0, true, true, &zeros(&[3], sys::ACL_FLOAT), &i2).0,
        INVALID,
        "values shape"
    );
    // NaN: where it ranks is UNDOCUMENTED, refused at launch.
    let xn = tensor(&f32b(&[1.0, f32::NAN, 3.0, 4.0]), &[4], sys::ACL_FLOAT);
    let (rc, ws, ex) = topk_p1(&xn, 2, 0, true, true, &v2, &i2);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnTopk), INNER, "NaN");
}

/// Ties (TK4): the pages are silent. A tie across the k-th place is refused by default; with
/// `MOEHAL_ACL_EMU_TOPK_TIES=high` it resolves toward the higher index; equal values inside the
/// selection come out in reverse index order. The only test of this binary that sets the variable
/// (the others use tie-free inputs, so the policy cannot change their results).
#[test]
fn topk_ties_are_refused_or_resolved_against_the_lower_index() {
    let stream = setup();
    // Line [5, 7, 5, 7, 1]: k = 3 takes both 7s and one of the two 5s (a boundary tie).
    let x = tensor(&i32b(&[5, 7, 5, 7, 1]), &[5], sys::ACL_INT32);
    let vals = zeros(&[3], sys::ACL_INT32);
    let idx = zeros(&[3], sys::ACL_INT64);
    let (rc, ws, ex) = topk_p1(&x, 3, 0, true, true, &vals, &idx);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(
        launch(stream, ws, ex, aclnnTopk),
        INNER,
        "boundary tie refused by default"
    );
    // k = 2 takes both 7s: no boundary tie; the two equal values come out in reverse index order.
    let v2 = zeros(&[2], sys::ACL_INT32);
    let i2 = zeros(&[2], sys::ACL_INT64);
    let (rc, ws, ex) = topk_p1(&x, 2, 0, true, true, &v2, &i2);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnTopk), 0, "{}", msg());
    assert_eq!((as_i32(&read(&v2)), as_i64(&read(&i2))), (vec![7, 7], vec![3, 1]));
    // This test is the only one of the binary whose result the variable can change (the other
    // Topk tests have no boundary ties).
    std::env::set_var(ascendcl::ops::topk::TIES_ENV, "high");
    let (rc, ws, ex) = topk_p1(&x, 3, 0, true, true, &vals, &idx);
    assert_eq!(rc, 0, "{}", msg());
    let r = launch(stream, ws, ex, aclnnTopk);
    std::env::set_var(ascendcl::ops::topk::TIES_ENV, "bogus");
    let (rc2, ws2, ex2) = topk_p1(&x, 3, 0, true, true, &vals, &idx);
    let r2 = launch(stream, ws2, ex2, aclnnTopk);
    std::env::remove_var(ascendcl::ops::topk::TIES_ENV);
    assert_eq!(r, 0, "{}", msg());
    assert_eq!(
        (as_i32(&read(&vals)), as_i64(&read(&idx))),
        (vec![7, 7, 5], vec![3, 1, 2])
    );
    assert_eq!((rc2, r2), (0, INNER), "an unknown policy is refused");
}
