//! Reference `router_topk` on the tie classes OPS.md §2 steps 1–3 pin (scores are f32 values,
//! `ŝ = fl32(s + bias)`, group scores f32), and hash routing (OPS.md §2 "Hash routing"), against
//! vectors computed by hand in the comments.

use moehal_core::ops::{GroupLimit, GroupScore, RouterConfig, RouterHash, Scoring};
use moehal_core::{Backend, BackendExt, DType, Error};

mod common;

use common::{route, BE};

fn cfg(k: usize, scoring: Scoring, group: Option<GroupLimit>) -> RouterConfig {
    RouterConfig {
        topk: k,
        scoring,
        group,
        renormalize: true,
        routed_scaling_factor: 1.0,
    }
}

/// Saturation: sigmoid(20.5) = 1 - 1.25e-9 and sigmoid(100) = 1 - 3.7e-44 both round to 1.0 in f32
/// (the f32 below 1 is 1 - 5.96e-8), an exact tie: the lower index wins. (In f64 expert 1 is
/// larger.) Weight 1 / (1 + 1e-20) = 1.
#[test]
fn sigmoid_saturation_is_an_exact_tie() {
    let (ids, w, counts) = route(cfg(1, Scoring::Sigmoid, None), 2, &[20.5, 100.0], None);
    assert_eq!(ids, [0]);
    assert_eq!(w, [1.0]);
    assert_eq!(counts, [1, 0]);
    // Reversed, the lower index is still the winner.
    let (ids, ..) = route(cfg(1, Scoring::Sigmoid, None), 2, &[100.0, 20.5], None);
    assert_eq!(ids, [0]);
}

/// Softmax underflow: with max 0, e^-300 ≈ 5e-131 and e^-200 ≈ 1.4e-87 are both below f32's
/// smallest subnormal (1.4e-45), so both scores are 0: a tie, experts [0, 1]. s0 = 1 / (1 + ...)
/// = 1.0; renormalized weights [1, 0].
#[test]
fn softmax_underflow_ties_at_zero() {
    let (ids, w, _) = route(cfg(2, Scoring::Softmax, None), 3, &[0.0, -300.0, -200.0], None);
    assert_eq!(ids, [0, 1]);
    assert_eq!(w, [1.0, 0.0]);
}

/// sqrt_softplus underflow: softplus(-300) ≈ e^-300, whose root e^-150 ≈ 7.2e-66 rounds to 0;
/// softplus(-200) ≈ e^-200, root e^-100 = 3.7200760e-44 = 26.547 × 2^-149, an f32 subnormal that
/// rounds to 27 × 2^-149 = 3.7835e-44. So expert 2 beats expert 1: ids [0, 2]. Weights: s0 =
/// sqrt(5 + ln(1 + e^-5)) = sqrt(5.0067153) = 2.2375691, renormalized 1.0; the second 3.7835e-44 /
/// 2.2375691 = 1.6909e-44 = 12.07 × 2^-149, which rounds to the subnormal 12 × 2^-149.
#[test]
fn sqrt_softplus_keeps_subnormal_scores() {
    let (ids, w, _) = route(cfg(2, Scoring::SqrtSoftplus, None), 3, &[5.0, -300.0, -200.0], None);
    assert_eq!(ids, [0, 2]);
    assert_eq!(w[0], 1.0);
    assert_eq!(w[1].to_bits(), 12, "{:e}", w[1]);
    let s = moehal_core::reference::token_scores(Scoring::SqrtSoftplus, &[5.0, -300.0, -200.0]);
    assert_eq!(s[1], 0.0);
    assert_eq!((s[2] as f32).to_bits(), 27);
}

/// Equal logits: every score ties, ids 0..k in order, weights 1/k.
#[test]
fn equal_logits_take_the_lowest_indices() {
    for scoring in Scoring::ALL {
        let (ids, w, _) = route(cfg(3, scoring, None), 5, &[0.75; 5], None);
        assert_eq!(ids, [0, 1, 2], "{scoring:?}");
        for v in w {
            assert!((v - 1.0 / 3.0).abs() <= 1e-7, "{scoring:?} {v}");
        }
    }
}

/// Equal biased scores across groups: logits [0, 0, 1e-5, 1e-5], bias 1024 each. s = [.5, .5,
/// .5000025, .5000025]; ŝ = 1024.5 + {0, 2.5e-6} and the f32 spacing at 1024 is 2^-13 = 1.22e-4,
/// so every ŝ is 1024.5. Groups of 2, top2_sum: 2049 both, a tie: group 0 is kept, ids [0, 1] (in
/// f64 group 1 would win: [2, 3]). max: 1024.5 both, same. Weights .5 / 1 = .5 each. Without
/// groups, k = 1: expert 0 (not 2).
#[test]
fn biased_scores_that_round_equal_tie_across_groups() {
    let logits = [0.0f32, 0.0, 1e-5, 1e-5];
    let bias = [1024.0f32; 4];
    for score in [GroupScore::Top2Sum, GroupScore::Max] {
        for scoring in [Scoring::Sigmoid, Scoring::SqrtSoftplus, Scoring::Softmax] {
            let g = GroupLimit {
                n_group: 2,
                topk_group: 1,
                score,
            };
            let (ids, w, counts) = route(cfg(2, scoring, Some(g)), 4, &logits, Some(&bias));
            assert_eq!(ids, [0, 1], "{score:?} {scoring:?}");
            assert!((w[0] - 0.5).abs() <= 1e-6 && (w[1] - 0.5).abs() <= 1e-6, "{w:?}");
            assert_eq!(counts, [1, 1, 0, 0]);
        }
    }
    let (ids, ..) = route(cfg(1, Scoring::Sigmoid, None), 4, &logits, Some(&bias));
    assert_eq!(ids, [0]);
}

/// The top2_sum group score is an f32 sum: logits -300 (sigmoid score 5e-131 -> 0, so ŝ = bias
/// exactly), bias [1, 0 | 1, 2^-24]. Group 0: 1 + 0 = 1; group 1: 1 + 2^-24 lies halfway between 1
/// and 1 + 2^-23 and rounds to even, 1. A tie: group 0 is kept, id 0 (an f64 sum would keep group
/// 1 and pick expert 2). Weights: s = 0, renormalized 0 / 1e-20 = 0.
#[test]
fn top2_sum_is_formed_in_f32() {
    let g = GroupLimit {
        n_group: 2,
        topk_group: 1,
        score: GroupScore::Top2Sum,
    };
    let bias = [1.0f32, 0.0, 1.0, 2f32.powi(-24)];
    for scoring in [Scoring::Sigmoid, Scoring::SqrtSoftplus] {
        let (ids, w, _) = route(cfg(1, scoring, Some(g)), 4, &[-300.0; 4], Some(&bias));
        assert_eq!(ids, [0], "{scoring:?}");
        assert_eq!(w, [0.0]);
    }
}

// ------------------------------------------------------------------------------------------------
// Hash routing
// ------------------------------------------------------------------------------------------------

type HashOut = (Vec<i32>, Vec<f32>, Vec<i64>);

/// Run hash routing on the reference; `Err` carries the error and whether the outputs were left
/// untouched.
fn hash(cfg: RouterConfig, e: usize, logits: &[f32], table: &[i32], tokens: &[i64]) -> Result<HashOut, (Error, bool)> {
    let t = tokens.len();
    let k = cfg.topk;
    let lb = BE.upload_slice(logits).unwrap();
    let tb = BE.upload_slice(table).unwrap();
    let xb = BE.upload_slice(tokens).unwrap();
    let mut ids = BE.filled(t * k, i32::MIN).unwrap();
    let mut w = BE.filled(t * k, f32::NAN).unwrap();
    let mut counts = BE.filled(e, i64::MIN).unwrap();
    let args = RouterHash {
        config: cfg,
        logits: lb.view(DType::F32, &[t, e]),
        tid2eid: tb.view(DType::I32, &[table.len() / k, k]),
        token_ids: xb.view(DType::I64, &[t]),
        ids: ids.view_mut(DType::I32, &[t, k]),
        weights: w.view_mut(DType::F32, &[t, k]),
        expert_counts: Some(counts.view_mut(DType::I64, &[e])),
    };
    let res = BE.router_hash(args.validate().unwrap());
    let out = (
        BE.download_vec::<i32>(&ids, t * k).unwrap(),
        BE.download_vec::<f32>(&w, t * k).unwrap(),
        BE.download_vec::<i64>(&counts, e).unwrap(),
    );
    match res {
        Ok(()) => Ok(out),
        Err(err) => {
            let untouched = out.0.iter().all(|&v| v == i32::MIN)
                && out.1.iter().all(|v| v.is_nan())
                && out.2.iter().all(|&v| v == i64::MIN);
            Err((err, untouched))
        }
    }
}

/// E = 4, k = 2, tid2eid = [[3, 1], [0, 0], [2, 3]], token ids [2, 0, 1], sigmoid, renormalize,
/// scale 2:
/// - token 0 reads row 2 -> ids [2, 3]; logits all 0, s = .5 each -> .5 / 1 = .5 -> x2 = 1, 1.
/// - token 1 reads row 0 -> ids [3, 1]; logit 3 is NaN so s3 = 0 (the id stays), s1 = .5 ->
///   [0, .5] / .5 = [0, 1] -> x2 = [0, 2].
/// - token 2 reads row 1 -> ids [0, 0], two slots; s0 = sigmoid(ln 3) = 3/4 -> [.5, .5] -> x2 = 1, 1;
///   without renormalization .75 x 2 = 1.5 each.
///
/// Counts: ids [2, 3, 3, 1, 0, 0] -> [2, 1, 1, 2]. The group arguments are ignored even when they
/// would be invalid for top-k routing (3 groups do not divide E = 4, topk_group 0).
#[test]
fn hash_routing_vector() {
    let table = [3, 1, 0, 0, 2, 3];
    let tokens = [2i64, 0, 1];
    let ln3 = 3f32.ln();
    let logits = [0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 5.0, f32::NAN, ln3, -1.0, 1.0, 2.0];
    let bad_group = Some(GroupLimit {
        n_group: 3,
        topk_group: 0,
        score: GroupScore::Top2Sum,
    });
    let c = RouterConfig {
        routed_scaling_factor: 2.0,
        ..cfg(2, Scoring::Sigmoid, bad_group)
    };
    let (ids, w, counts) = hash(c, 4, &logits, &table, &tokens).unwrap();
    assert_eq!(ids, [2, 3, 3, 1, 0, 0]);
    assert_eq!(counts, [2, 1, 1, 2]);
    let want = [1.0, 1.0, 0.0, 2.0, 1.0, 1.0];
    for (g, x) in w.iter().zip(want) {
        assert!((g - x).abs() <= 1e-6, "{w:?}");
    }
    let (_, w, _) = hash(
        RouterConfig {
            renormalize: false,
            ..c
        },
        4,
        &logits,
        &table,
        &tokens,
    )
    .unwrap();
    let want = [1.0, 1.0, 0.0, 1.0, 1.5, 1.5];
    for (g, x) in w.iter().zip(want) {
        assert!((g - x).abs() <= 1e-6, "{w:?}");
    }
}

/// Value errors: a token id outside [0, V) or a looked-up entry outside [0, E) is an
/// InvalidArgument and nothing is written; an out-of-range entry in a row no token reads is fine.
#[test]
fn hash_routing_value_errors_write_nothing() {
    let c = cfg(2, Scoring::Softmax, None);
    let logits = [0.0f32; 8];
    let table = [0, 1, 2, 3, 9, -1];
    for tokens in [[0i64, 3], [-1, 0]] {
        let (err, untouched) = hash(c, 4, &logits, &table, &tokens).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { field: "token_ids", .. }),
            "{err}"
        );
        assert!(untouched);
    }
    let (err, untouched) = hash(c, 4, &logits, &table, &[1, 2]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { field: "tid2eid", .. }), "{err}");
    assert!(untouched);
    // Row 2 holds bad entries but is not read.
    let (ids, _, _) = hash(c, 4, &logits, &table, &[1, 0]).unwrap();
    assert_eq!(ids, [2, 3, 0, 1]);
}

/// Shape rules: tid2eid must be [V, k] i32, token_ids [T] i64, 1 <= k <= E, the scale finite.
#[test]
fn hash_routing_validation() {
    let lb = BE.upload_slice(&[0.0f32; 8]).unwrap();
    let tb = BE.upload_slice(&[0i32; 6]).unwrap();
    let xb = BE.upload_slice(&[0i64; 2]).unwrap();
    let mut ib = BE.alloc(64).unwrap();
    let mut wb = BE.alloc(64).unwrap();
    // (k, tid2eid shape, tid2eid dtype, token_ids shape, scale) -> the field validation names.
    let mut field = |k: usize, tshape: &[usize], tdt: DType, xshape: &[usize], scale: f32| -> Option<&'static str> {
        let args = RouterHash {
            config: RouterConfig {
                routed_scaling_factor: scale,
                ..cfg(k, Scoring::Softmax, None)
            },
            logits: lb.view(DType::F32, &[2, 4]),
            tid2eid: tb.view(tdt, tshape),
            token_ids: xb.view(DType::I64, xshape),
            ids: ib.view_mut(DType::I32, &[2, k]),
            weights: wb.view_mut(DType::F32, &[2, k]),
            expert_counts: None,
        };
        match args.validate() {
            Ok(_) => None,
            Err(Error::InvalidArgument { field, .. }) => Some(field),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(field(2, &[3, 2], DType::I32, &[2], 1.0), None);
    assert_eq!(field(2, &[2, 3], DType::I32, &[2], 1.0), Some("tid2eid"));
    assert_eq!(field(3, &[2, 3], DType::I32, &[2], 1.0), None);
    assert_eq!(field(2, &[3, 2], DType::F32, &[2], 1.0), Some("tid2eid"));
    assert_eq!(field(2, &[3, 2], DType::I32, &[1], 1.0), Some("token_ids"));
    assert_eq!(field(0, &[3, 0], DType::I32, &[2], 1.0), Some("k"));
    assert_eq!(field(5, &[1, 5], DType::I32, &[2], 1.0), Some("k"));
    assert_eq!(
        field(2, &[3, 2], DType::I32, &[2], f32::NAN),
        Some("routed_scaling_factor")
    );
}
