//! aclnnMoeGatingTopKSoftmax, the gathers (Embedding / GatherV2 / IndexSelect) and executor rules
//! (sources in RULES.md).

mod common;
use common::*;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::ops::ACLNN_ERR_INNER_TILING_ERROR as TILING;
use ascendcl::sys;

fn topk(x: &Dev, fin: Option<&Dev>, k: i64, y: &Dev, idx: &Dev, row: &Dev) -> (i32, *mut sys::aclOpExecutor, u64) {
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    // SAFETY: live tensors or NULL; out-pointers to locals.
    let rc = unsafe {
        aclnnMoeGatingTopKSoftmaxGetWorkspaceSize(
            x.t,
            fin.map_or(ptr::null(), |f| f.t),
            k,
            y.t,
            idx.t,
            row.t,
            &mut ws,
            &mut ex,
        )
    };
    (rc, ex, ws)
}

/// k in [1, min(E, 1024)] (tiling) -> 561002 otherwise.
#[test]
fn topk_softmax_k_range() {
    let _s = setup();
    let x = zeros(&[1, 4], sys::ACL_FLOAT);
    for k in [0i64, 5] {
        let (y, i, r) = (
            zeros(&[1, k], sys::ACL_FLOAT),
            zeros(&[1, k], sys::ACL_INT32),
            zeros(&[1, k], sys::ACL_INT32),
        );
        assert_eq!(topk(&x, None, k, &y, &i, &r).0, TILING, "k = {k}");
    }
}

/// Values: softmax then top-k (descending, lower index on ties); rowIdx[t][j] = j*T + t; a finished
/// row gets expert id E.
#[test]
fn topk_softmax_values_row_idx_and_finished() {
    let s = setup();
    let x = tensor(
        &f32b(&[0.0, 2.0, 1.0, 2.0, 5.0, 0.0, 0.0, 0.0]),
        &[2, 4],
        sys::ACL_FLOAT,
    );
    let fin = tensor(&[0u8, 1], &[2], sys::ACL_BOOL);
    let (y, i, r) = (
        zeros(&[2, 2], sys::ACL_FLOAT),
        zeros(&[2, 2], sys::ACL_INT32),
        zeros(&[2, 2], sys::ACL_INT32),
    );
    let (rc, ex, ws) = topk(&x, Some(&fin), 2, &y, &i, &r);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(s, ws, ex, aclnnMoeGatingTopKSoftmax), 0);
    assert_eq!(
        as_i32(&read(&i)),
        vec![1, 3, 4, 4],
        "ties -> lower index; finished row -> E"
    );
    assert_eq!(as_i32(&read(&r)), vec![0, 2, 1, 3]);
    let d0 = 1.0 + 2.0 * 2f32.exp() + 1f32.exp();
    let yv = as_f32(&read(&y));
    assert!(
        (yv[0] - 2f32.exp() / d0).abs() < 1e-6 && (yv[1] - 2f32.exp() / d0).abs() < 1e-6,
        "{yv:?}"
    );
}

/// yOut has x's dtype; expertIdx / rowIdx are INT32 -> 161002 otherwise.
#[test]
fn topk_softmax_output_dtypes() {
    let _s = setup();
    let x = zeros(&[1, 4], sys::ACL_FLOAT16);
    let (y, i, r) = (
        zeros(&[1, 2], sys::ACL_FLOAT),
        zeros(&[1, 2], sys::ACL_INT32),
        zeros(&[1, 2], sys::ACL_INT32),
    );
    assert_eq!(topk(&x, None, 2, &y, &i, &r).0, sys::ACLNN_ERR_PARAM_INVALID);
    let (y, i) = (zeros(&[1, 2], sys::ACL_FLOAT16), zeros(&[1, 2], sys::ACL_INT64));
    assert_eq!(topk(&x, None, 2, &y, &i, &r).0, sys::ACLNN_ERR_PARAM_INVALID);
}

type Gws = unsafe extern "C" fn(
    *const sys::aclTensor,
    i64,
    *const sys::aclTensor,
    *mut sys::aclTensor,
    *mut u64,
    *mut *mut sys::aclOpExecutor,
) -> i32;

/// Embedding: weight 2-D, out = indices.shape + [D]; values; an index >= rows fails at launch.
#[test]
fn embedding_rules() {
    let s = setup();
    let w = tensor(&f32b(&[0.0, 1.0, 10.0, 11.0, 20.0, 21.0]), &[3, 2], sys::ACL_FLOAT);
    let idx = tensor(&i64b(&[2, 0]), &[2], sys::ACL_INT64);
    let out = zeros(&[2, 2], sys::ACL_FLOAT);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    // SAFETY: live tensors; out-pointers to locals.
    assert_eq!(
        unsafe { aclnnEmbeddingGetWorkspaceSize(w.t, idx.t, out.t, &mut ws, &mut ex) },
        0
    );
    assert_eq!(launch(s, ws, ex, aclnnEmbedding), 0);
    assert_eq!(as_f32(&read(&out)), vec![20.0, 21.0, 0.0, 1.0]);
    let w3 = zeros(&[3, 1, 2], sys::ACL_FLOAT);
    // SAFETY: as above.
    assert_eq!(
        unsafe { aclnnEmbeddingGetWorkspaceSize(w3.t, idx.t, out.t, &mut ws, &mut ex) },
        sys::ACLNN_ERR_PARAM_INVALID
    );
    let oob = tensor(&i32b(&[3, 0]), &[2], sys::ACL_INT32);
    // SAFETY: as above.
    assert_eq!(
        unsafe { aclnnEmbeddingGetWorkspaceSize(w.t, oob.t, out.t, &mut ws, &mut ex) },
        0
    );
    assert_eq!(launch(s, ws, ex, aclnnEmbedding), sys::ACLNN_ERR_INNER);
}

/// GatherV2 / IndexSelect along dim 0: index INT32/INT64; IndexSelect index 1-D; dim != 0 refused.
#[test]
fn gather_v2_and_index_select_rules() {
    let s = setup();
    let cases: [(Gws, &str); 2] = [
        (aclnnGatherV2GetWorkspaceSize, "GatherV2"),
        (aclnnIndexSelectGetWorkspaceSize, "IndexSelect"),
    ];
    for (f, name) in cases {
        let t = tensor(&f32b(&[1.0, 2.0, 3.0]), &[3], sys::ACL_FLOAT);
        let idx = tensor(&i32b(&[2, 2, 0]), &[3], sys::ACL_INT32);
        let out = zeros(&[3], sys::ACL_FLOAT);
        let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
        // SAFETY: live tensors; out-pointers to locals.
        assert_eq!(
            unsafe { f(t.t, 0, idx.t, out.t, &mut ws, &mut ex) },
            0,
            "{name}: {}",
            msg()
        );
        let l = if name == "GatherV2" {
            aclnnGatherV2
        } else {
            aclnnIndexSelect
        };
        assert_eq!(launch(s, ws, ex, l), 0);
        assert_eq!(as_f32(&read(&out)), vec![3.0, 3.0, 1.0], "{name}");
        let f32i = tensor(&f32b(&[0.0]), &[1], sys::ACL_FLOAT);
        let o1 = zeros(&[1], sys::ACL_FLOAT);
        // SAFETY: as above.
        assert_eq!(
            unsafe { f(t.t, 0, f32i.t, o1.t, &mut ws, &mut ex) },
            sys::ACLNN_ERR_PARAM_INVALID,
            "{name}"
        );
        // SAFETY: as above.
        assert_eq!(
            unsafe { f(t.t, 1, idx.t, out.t, &mut ws, &mut ex) },
            sys::ACLNN_ERR_PARAM_INVALID,
            "{name}"
        );
    }
    let t = zeros(&[3, 2], sys::ACL_FLOAT);
    let idx2 = tensor(&i32b(&[0, 1]), &[1, 2], sys::ACL_INT32);
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    let o = zeros(&[1, 2, 2], sys::ACL_FLOAT);
    // SAFETY: as above.
    assert_eq!(
        unsafe { aclnnGatherV2GetWorkspaceSize(t.t, 0, idx2.t, o.t, &mut ws, &mut ex) },
        0,
        "2-D index"
    );
    // SAFETY: as above.
    assert_eq!(
        unsafe { aclnnIndexSelectGetWorkspaceSize(t.t, 0, idx2.t, o.t, &mut ws, &mut ex) },
        sys::ACLNN_ERR_PARAM_INVALID
    );
}

fn cast_exec(src: &Dev, out: &Dev) -> (*mut sys::aclOpExecutor, u64) {
    let (mut ex, mut ws) = (ptr::null_mut(), 0u64);
    // SAFETY: live tensors; out-pointers to locals.
    assert_eq!(
        unsafe { aclnnCastGetWorkspaceSize(src.t, sys::ACL_INT64, out.t, &mut ws, &mut ex) },
        0
    );
    (ex, ws)
}

/// A plain executor is consumed by its launch; aclDestroyAclOpExecutor is for repeatable ones only.
#[test]
fn plain_executor_is_single_use_and_not_destroyable() {
    let s = setup();
    let src = tensor(&i32b(&[1, 2]), &[2], sys::ACL_INT32);
    let out = zeros(&[2], sys::ACL_INT64);
    let (ex, ws) = cast_exec(&src, &out);
    assert_eq!(aclDestroyAclOpExecutor(ex), sys::ACLNN_ERR_PARAM_INVALID);
    assert!(msg().contains("repeatable"), "{}", msg());
    assert_eq!(
        launch(s, ws, ex, aclnnCast),
        0,
        "still launchable after the refused destroy"
    );
    assert_eq!(launch(s, ws, ex, aclnnCast), sys::ACLNN_ERR_PARAM_INVALID, "single use");
}

/// A repeatable executor launches any number of times and is then destroyed.
#[test]
fn repeatable_executor() {
    let s = setup();
    let src = tensor(&i32b(&[1, 2]), &[2], sys::ACL_INT32);
    let out = zeros(&[2], sys::ACL_INT64);
    let (ex, ws) = cast_exec(&src, &out);
    assert_eq!(aclSetAclOpExecutorRepeatable(ex), 0);
    assert_eq!(launch(s, ws, ex, aclnnCast), 0);
    assert_eq!(launch(s, ws, ex, aclnnCast), 0);
    assert_eq!(as_i64(&read(&out)), vec![1, 2]);
    assert_eq!(aclDestroyAclOpExecutor(ex), 0);
    assert_eq!(launch(s, ws, ex, aclnnCast), sys::ACLNN_ERR_PARAM_INVALID, "destroyed");
}

/// finished must be BOOL [T]; x must be 2-D (3-D NOT EMULATED) -> 161002.
#[test]
fn topk_softmax_finished_and_rank() {
    let _s = setup();
    let x = zeros(&[2, 4], sys::ACL_FLOAT);
    let (y, i, r) = (
        zeros(&[2, 2], sys::ACL_FLOAT),
        zeros(&[2, 2], sys::ACL_INT32),
        zeros(&[2, 2], sys::ACL_INT32),
    );
    let fin32 = zeros(&[2], sys::ACL_INT32);
    assert_eq!(topk(&x, Some(&fin32), 2, &y, &i, &r).0, sys::ACLNN_ERR_PARAM_INVALID);
    let fin3 = zeros(&[3], sys::ACL_BOOL);
    assert_eq!(topk(&x, Some(&fin3), 2, &y, &i, &r).0, sys::ACLNN_ERR_PARAM_INVALID);
    let x3 = zeros(&[1, 2, 4], sys::ACL_FLOAT);
    assert_eq!(topk(&x3, None, 2, &y, &i, &r).0, sys::ACLNN_ERR_PARAM_INVALID);
}
