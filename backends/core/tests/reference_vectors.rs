//! Reference backend against hand-computed vectors (docs/OPS.md §1–§5 and the models' published
//! reference code it cites). Every expected number is derived in the
//! comments from the formulas; none comes from running the code under test.

use half::{bf16, f16};
use moehal_core::ops::{
    GatherRows, GroupLimit, GroupScore, MoeCombine, MoePermute, RouterConfig, Scoring, Swiglu, TableFormat,
    WeightLayout,
};
use moehal_core::{Backend, BackendExt, DType};

mod common;

use common::{gemm, to_kn, BE};

// ------------------------------------------------------------------------------------------------
// router_topk
// ------------------------------------------------------------------------------------------------

struct Routed {
    ids: Vec<i32>,
    weights: Vec<f32>,
    counts: Vec<i64>,
}

fn route(cfg: RouterConfig, e: usize, logits: &[f32], bias: Option<&[f32]>) -> Routed {
    let (ids, weights, counts) = common::route(cfg, e, logits, bias);
    Routed { ids, weights, counts }
}

fn cfg(k: usize, scoring: Scoring, renormalize: bool, scale: f32) -> RouterConfig {
    RouterConfig {
        topk: k,
        scoring,
        group: None,
        renormalize,
        routed_scaling_factor: scale,
    }
}

/// An f64-computed, once-rounded weight against a 7-decimal literal: the literal is within 5e-8 and
/// f32 rounding of a value below 1 within 3e-8, so 1e-7 absolute.
fn close(got: f32, want: f64) {
    assert!(
        ((got as f64) - want).abs() <= 1e-7,
        "got {got}, expected {want} (difference {})",
        (got as f64) - want
    );
}

/// Qwen-style softmax, fact sheet §2.4: logits [2, 1, .5, 0, -1, 3, .1, .2], k = 2.
///
/// Softmax is max-subtracted: with max 3, the two largest are e^0 (expert 5) and e^-1 (expert 0).
/// Denominator D = e^-1 + e^-2 + e^-2.5 + e^-3 + e^-4 + e^0 + e^-2.9 + e^-2.8
///   = .3678794 + .1353353 + .0820850 + .0497871 + .0183156 + 1 + .0550232 + .0608101 = 1.7692357,
/// raw probs 1/D = .5652158, e^-1/D = .2079313 (fact sheet). Renormalized over the two:
/// 1/(1 + e^-1) = sigmoid(1) = .7310586 and e^-1/(1 + e^-1) = .2689414.
#[test]
fn router_softmax_qwen_vector() {
    let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0, 3.0, 0.1, 0.2];
    let r = route(cfg(2, Scoring::Softmax, true, 1.0), 8, &logits, None);
    assert_eq!(r.ids, [5, 0]);
    close(r.weights[0], 0.7310586);
    close(r.weights[1], 0.2689414);
    assert_eq!(r.counts, [1, 0, 0, 0, 0, 1, 0, 0]);
    // Without renormalization: the raw probabilities; the scale multiplies exactly once.
    let r = route(cfg(2, Scoring::Softmax, false, 1.0), 8, &logits, None);
    assert_eq!(r.ids, [5, 0]);
    close(r.weights[0], 0.5652158);
    close(r.weights[1], 0.2079313);
    // Scale 2 (a power of two, so the once-rounded result is exactly twice the unscaled one),
    // applied exactly once with and without renormalization.
    for renormalize in [false, true] {
        let one = route(cfg(2, Scoring::Softmax, renormalize, 1.0), 8, &logits, None);
        let two = route(cfg(2, Scoring::Softmax, renormalize, 2.0), 8, &logits, None);
        assert_eq!(two.weights, [2.0 * one.weights[0], 2.0 * one.weights[1]]);
    }
}

/// Fact sheet §2.2: 8 experts, 2 groups of 4, keep 1, top-2, logits all 0, bias
/// [-.9, -.8, -.95, -.99, -.6, -.7, -.65, -.9].
///
/// s = sigmoid(0) = .5 for all; ŝ = .5 + bias = [-.4, -.3, -.45, -.49 | -.1, -.2, -.15, -.4]: every
/// selection score is negative. top2_sum: group 0 = -.3 + -.4 = -.7, group 1 = -.1 + -.15 = -.25;
/// max: group 0 = -.3, group 1 = -.1. Either way group 1 is kept; its best two are 4 (-.1) and 6
/// (-.15), in that order. (Filling dropped groups with 0 instead of -inf would pick group 0's
/// experts, 0 > every kept ŝ.) Weights: unbiased s = .5 each, renormalized: .5 / 1 = .5, scale 2.5
/// -> 1.25 each; without renormalization .5 * 2.5 = 1.25 as well.
#[test]
fn router_sigmoid_bias_groups_all_negative_selection() {
    let bias = [-0.9f32, -0.8, -0.95, -0.99, -0.6, -0.7, -0.65, -0.9];
    for score in [GroupScore::Top2Sum, GroupScore::Max] {
        for renormalize in [true, false] {
            let mut c = cfg(2, Scoring::Sigmoid, renormalize, 2.5);
            c.group = Some(GroupLimit {
                n_group: 2,
                topk_group: 1,
                score,
            });
            let r = route(c, 8, &[0.0; 8], Some(&bias));
            assert_eq!(r.ids, [4, 6], "{score:?}");
            assert_eq!(r.weights, [1.25, 1.25], "{score:?}");
            assert_eq!(r.counts, [0, 0, 0, 0, 1, 0, 1, 0]);
        }
    }
}

/// DeepSeek-style vector, fact sheet §2.4: 16 experts, 4 groups of 4, keep 2, top-4, scale 2.5,
/// sigmoid + bias, top2_sum, renormalize.
///
/// s = sigmoid(logits):
///   g0: σ(1) = .7310586, σ(-2) = .1192029, σ(.5) = .6224593, σ(0) = .5
///   g1: σ(2) = .8807971, σ(1.5) = .8175745, σ(-1) = .2689414, σ(-3) = .0474259
///   g2: σ(-.5) = .3775407, σ(.3) = .5744425, σ(.2) = .5498340, σ(.1) = .5249792
///   g3: σ(3) = .9525741, σ(-4) = .0179862 (x3)
/// ŝ = s + bias: g1 expert 4 -> .5807971; g2 all +.2 -> .5775407, .7744425, .7498340, .7249792;
///   g3 expert 12 -> .4525741.
/// Group scores (top-2 sums): g0 .7310586 + .6224593 = 1.3535179; g1 .8175745 + .5807971 = 1.3983716;
///   g2 .7744425 + .7498340 = 1.5242765; g3 .4525741 + .0179862 = .4705603 -> keep {2, 1}.
/// Top-4 ŝ among experts 4..12: 5 (.8175745), 9 (.7744425), 10 (.7498340), 11 (.7249792).
/// Weights: unbiased s / sum * 2.5, sum = .8175745 + .5744425 + .5498340 + .5249792 = 2.4668302:
///   [.8285679, .5821667, .5572273, .5320383].
/// Without bias and groups: the four largest s are 12 (.9526), 4 (.8808), 5 (.8176), 0 (.7311).
#[test]
fn router_deepseek_16_expert_vector() {
    let logits = [
        1.0f32, -2.0, 0.5, 0.0, 2.0, 1.5, -1.0, -3.0, -0.5, 0.3, 0.2, 0.1, 3.0, -4.0, -4.0, -4.0,
    ];
    let bias = [
        0.0f32, 0.0, 0.0, 0.0, -0.3, 0.0, 0.0, 0.0, 0.2, 0.2, 0.2, 0.2, -0.5, 0.0, 0.0, 0.0,
    ];
    let mut c = cfg(4, Scoring::Sigmoid, true, 2.5);
    c.group = Some(GroupLimit {
        n_group: 4,
        topk_group: 2,
        score: GroupScore::Top2Sum,
    });
    let r = route(c, 16, &logits, Some(&bias));
    assert_eq!(r.ids, [5, 9, 10, 11]);
    for (w, want) in r.weights.iter().zip([0.8285679, 0.5821667, 0.5572273, 0.5320383]) {
        close(*w, want);
    }
    let r = route(cfg(4, Scoring::Sigmoid, true, 2.5), 16, &logits, None);
    assert_eq!(r.ids, [12, 4, 5, 0]);
}

/// DeepSeek-V4 sqrt_softplus, fact sheet §2.4: logits [2, -1, .5, 0, 1, -3], bias[2] = +.5, k = 2,
/// scale 1.5, renormalize.
///
/// s = sqrt(ln(1 + e^x)): [1.4583992, .5596979, .9869534, .8325546, 1.1459763, .2204254].
/// ŝ = s + bias: expert 2 -> 1.4869534 > expert 0 (1.4583992) > expert 4 (1.1459763), so the bias
/// pushes 2 past 4 and the order is [2, 0]. Weights (unbiased): sum = .9869534 + 1.4583992 =
/// 2.4453526; 1.5 * .9869534 / 2.4453526 = .6054056 and 1.5 * 1.4583992 / 2.4453526 = .8945944
/// (the fact sheet lists them in id order 0, 2: [.8945944, .6054056]).
#[test]
fn router_sqrt_softplus_v4_vector() {
    let logits = [2.0f32, -1.0, 0.5, 0.0, 1.0, -3.0];
    let bias = [0.0f32, 0.0, 0.5, 0.0, 0.0, 0.0];
    let r = route(cfg(2, Scoring::SqrtSoftplus, true, 1.5), 6, &logits, Some(&bias));
    assert_eq!(r.ids, [2, 0]);
    close(r.weights[0], 0.6054056);
    close(r.weights[1], 0.8945944);
    // Without the bias expert 4 (1.1459763) beats expert 2 (.9869534): ids [0, 4].
    let r = route(cfg(2, Scoring::SqrtSoftplus, true, 1.5), 6, &logits, None);
    assert_eq!(r.ids, [0, 4]);
}

/// Exact ties: lower index wins, output ordered by score descending then index.
///
/// logits [1, 2, 1, 2, 0], sigmoid, k = 3, no renormalization, scale 1: the scores σ(2) tie at
/// experts 1 and 3, σ(1) at 0 and 2. Order: 1, 3 (σ(2), index ascending), then 0 (σ(1), lower of
/// 0 and 2). Weights σ(2) = .8807971, σ(2), σ(1) = .7310586.
#[test]
fn router_exact_ties_lower_index_wins() {
    let r = route(
        cfg(3, Scoring::Sigmoid, false, 1.0),
        5,
        &[1.0, 2.0, 1.0, 2.0, 0.0],
        None,
    );
    assert_eq!(r.ids, [1, 3, 0]);
    close(r.weights[0], 0.8807971);
    close(r.weights[1], 0.8807971);
    close(r.weights[2], 0.7310586);
    // All equal: ids 0..k-1; softmax of 4 equal logits = 1/4 each.
    let r = route(cfg(2, Scoring::Softmax, false, 1.0), 4, &[0.5; 4], None);
    assert_eq!(r.ids, [0, 1]);
    assert_eq!(r.weights, [0.25, 0.25]);
    // A tie in the selection scores: logits [0, 0, 0], bias [0, .5, .5] -> ŝ = [.5, 1, 1] -> [1, 2].
    let r = route(
        cfg(2, Scoring::Sigmoid, false, 1.0),
        3,
        &[0.0; 3],
        Some(&[0.0, 0.5, 0.5]),
    );
    assert_eq!(r.ids, [1, 2]);
}

/// Non-finite logits are excluded; fill slots take the lowest free indices with weight 0.
#[test]
fn router_nan_rows() {
    // All NaN: nothing selectable; ids 0..k-1, weights 0 (renormalized: 0 / (0 + 1e-20) = 0).
    for scoring in [Scoring::Softmax, Scoring::Sigmoid, Scoring::SqrtSoftplus] {
        let r = route(cfg(3, scoring, true, 2.5), 5, &[f32::NAN; 5], None);
        assert_eq!(r.ids, [0, 1, 2], "{scoring:?}");
        assert_eq!(r.weights, [0.0, 0.0, 0.0], "{scoring:?}");
        assert_eq!(r.counts, [1, 1, 1, 0, 0]);
    }
    // [NaN, 1, +inf, 0], softmax over the finite ones: s1 = e/(e+1) = σ(1) = .7310586,
    // s3 = 1/(e+1) = σ(-1) = .2689414; k = 3 -> ids [1, 3] then fill 0 (lowest free) with weight 0.
    let r = route(
        cfg(3, Scoring::Softmax, false, 1.0),
        4,
        &[f32::NAN, 1.0, f32::INFINITY, 0.0],
        None,
    );
    assert_eq!(r.ids, [1, 3, 0]);
    close(r.weights[0], 0.7310586);
    close(r.weights[1], 0.2689414);
    assert_eq!(r.weights[2], 0.0);
}

/// k = E: every expert, in score order. logits [0, 2, 1] softmax: D = 1 + e^2 + e = 11.1073379;
/// s = [.0900306, .6652410, .2447285]; order [1, 2, 0]. Renormalized: the sum is already 1.
#[test]
fn router_k_equals_e() {
    let r = route(cfg(3, Scoring::Softmax, true, 1.0), 3, &[0.0, 2.0, 1.0], None);
    assert_eq!(r.ids, [1, 2, 0]);
    close(r.weights[0], 0.6652410);
    close(r.weights[1], 0.2447285);
    close(r.weights[2], 0.0900306);
    assert_eq!(r.counts, [1, 1, 1]);
}

// ------------------------------------------------------------------------------------------------
// grouped_gemm
// ------------------------------------------------------------------------------------------------

/// G = 3, K = 2, N = 2, M = 5, group_end [2, 2, 4]: group 0 owns rows 0, 1; group 1 is empty;
/// group 2 owns rows 2, 3; row 4 is a guard row (past group_end[G-1]) and must stay poison.
///
/// x = [[1, 2], [3, -1], [.5, 4], [-2, 1], [9, 9]]
/// W (NK, out x in): W0 = [[1, 0], [2, 1]], W1 = [[5, 5], [5, 5]] (unused), W2 = [[-1, 1], [.5, .25]]
/// x @ W_g^T:
///   r0 (g0): [1*1 + 2*0, 1*2 + 2*1] = [1, 4]       r1 (g0): [3, 6 - 1] = [3, 5]
///   r2 (g2): [-.5 + 4, .25 + 1] = [3.5, 1.25]      r3 (g2): [2 + 1, -1 + .25] = [3, -.75]
/// bias b0 = [10, 20], b1 = [7, 7], b2 = [-1, 1]; row_scale [2, .5, -1, 4, 7]:
///   y = row_scale * (xW + b): r0 2*[11, 24] = [22, 48]; r1 .5*[13, 25] = [6.5, 12.5];
///   r2 -1*[2.5, 2.25] = [-2.5, -2.25]; r3 4*[2, .25] = [8, 1].
/// (The other order, row_scale * xW + b, would give r0 = [12, 28].) All values are exact in f32,
/// bf16 and f16.
const GX: [f32; 10] = [1.0, 2.0, 3.0, -1.0, 0.5, 4.0, -2.0, 1.0, 9.0, 9.0];
const GW_NK: [f32; 12] = [1.0, 0.0, 2.0, 1.0, 5.0, 5.0, 5.0, 5.0, -1.0, 1.0, 0.5, 0.25];
const GBIAS: [f32; 6] = [10.0, 20.0, 7.0, 7.0, -1.0, 1.0];
const GSCALE: [f32; 5] = [2.0, 0.5, -1.0, 4.0, 7.0];
const GEND: [i64; 3] = [2, 2, 4];

fn assert_rows(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (w.is_nan() && g.is_nan()) || g.to_bits() == w.to_bits(),
            "element {i}: got {g}, expected {w}\n got {got:?}"
        );
    }
}

#[test]
fn gemm_hand_vector_bias_then_row_scale_guard_row() {
    let dims = (5, 2, 2, 3);
    let want = [22.0, 48.0, 6.5, 12.5, -2.5, -2.25, 8.0, 1.0, f32::NAN, f32::NAN];
    let w_kn = to_kn(&GW_NK, 3, 2, 2);
    for (layout, w) in [(WeightLayout::NK, &GW_NK[..]), (WeightLayout::KN, &w_kn[..])] {
        let b = Some(&GBIAS[..]);
        let s = Some(&GSCALE[..]);
        assert_rows(&gemm::<f32>(&GX, w, layout, dims, &GEND, b, s), &want);
        assert_rows(&gemm::<bf16>(&GX, w, layout, dims, &GEND, b, s), &want);
        assert_rows(&gemm::<f16>(&GX, w, layout, dims, &GEND, b, s), &want);
        // Neither term: plain x @ W_g^T.
        let plain = [1.0, 4.0, 3.0, 5.0, 3.5, 1.25, 3.0, -0.75, f32::NAN, f32::NAN];
        assert_rows(&gemm::<f32>(&GX, w, layout, dims, &GEND, None, None), &plain);
        // Bias only: r0 [11, 24], r1 [13, 25], r2 [2.5, 2.25], r3 [2, .25].
        let biased = [11.0, 24.0, 13.0, 25.0, 2.5, 2.25, 2.0, 0.25, f32::NAN, f32::NAN];
        assert_rows(&gemm::<f32>(&GX, w, layout, dims, &GEND, b, None), &biased);
        // Row scale only: r0 2*[1, 4], r1 .5*[3, 5], r2 -1*[3.5, 1.25], r3 4*[3, -.75].
        let scaled = [2.0, 8.0, 1.5, 2.5, -3.5, -1.25, 12.0, -3.0, f32::NAN, f32::NAN];
        assert_rows(&gemm::<f32>(&GX, w, layout, dims, &GEND, None, s), &scaled);
    }
}

/// Empty groups everywhere and rows past the last group: group_end [0, 0, 0] writes nothing.
#[test]
fn gemm_all_groups_empty_writes_nothing() {
    let y = gemm::<f32>(
        &GX,
        &GW_NK,
        WeightLayout::NK,
        (5, 2, 2, 3),
        &[0, 0, 0],
        Some(&GBIAS),
        None,
    );
    assert!(y.iter().all(|v| v.is_nan()), "{y:?}");
    // Only the last group non-empty, owning rows 0..2: r0 = [-1 + 2 - 1, .5 + .5 + 1] = [0, 2],
    // r1 = [-3 - 1 - 1, 1.5 - .25 + 1] = [-5, 2.25] (bias b2 = [-1, 1]).
    let y = gemm::<f32>(
        &GX,
        &GW_NK,
        WeightLayout::NK,
        (5, 2, 2, 3),
        &[0, 0, 2],
        Some(&GBIAS),
        None,
    );
    assert_rows(
        &y,
        &[
            0.0,
            2.0,
            -5.0,
            2.25,
            f32::NAN,
            f32::NAN,
            f32::NAN,
            f32::NAN,
            f32::NAN,
            f32::NAN,
        ],
    );
}

/// K = 0: y = row_scale * bias (or zeros). Rows 0, 1 (g0, b0 = [10, 20]) and 2, 3 (g2, b2 = [-1, 1]):
/// 2*[10, 20] = [20, 40]; .5*[10, 20] = [5, 10]; -1*[-1, 1] = [1, -1]; 4*[-1, 1] = [-4, 4].
#[test]
fn gemm_k_zero() {
    let dims = (5, 2, 0, 3);
    for layout in [WeightLayout::NK, WeightLayout::KN] {
        let y = gemm::<f32>(&[], &[], layout, dims, &GEND, Some(&GBIAS), Some(&GSCALE));
        assert_rows(&y, &[20.0, 40.0, 5.0, 10.0, 1.0, -1.0, -4.0, 4.0, f32::NAN, f32::NAN]);
        let y = gemm::<f32>(&[], &[], layout, dims, &GEND, None, None);
        assert_rows(&y, &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, f32::NAN, f32::NAN]);
    }
}

/// M = 0 and N = 0 are no-ops that succeed.
#[test]
fn gemm_m_or_n_zero() {
    assert!(gemm::<f32>(&[], &GW_NK, WeightLayout::NK, (0, 2, 2, 3), &[0, 0, 0], None, None).is_empty());
    assert!(gemm::<f32>(&GX, &[], WeightLayout::NK, (5, 0, 2, 3), &GEND, None, None).is_empty());
}

// ------------------------------------------------------------------------------------------------
// moe_permute + moe_combine
// ------------------------------------------------------------------------------------------------

/// T = 4, k = 2, E = 3, H = 2; ids [[2, 0], [-1, 2], [2, 2], [-1, -1]]: a dropped slot, a token
/// routed twice to expert 2, and a token with every slot dropped.
///
/// counts: e0 = 1 (slot (0,1)), e1 = 0, e2 = 4 (slots (0,0), (1,1), (2,0), (2,1)) -> group_end
/// [1, 1, 5]. Rows in (t, j) order within each expert: e0: (0,1) -> 0; e2: (0,0) -> 1, (1,1) -> 2,
/// (2,0) -> 3, (2,1) -> 4. slot_row [[1, 0], [-1, 2], [3, 4], [-1, -1]]; src_token[0..5] =
/// [0, 0, 1, 2, 2]; x_perm[0..5] = [x0, x0, x1, x2, x2]; rows 5..8 are unspecified.
///
/// combine with y_perm = x_perm, weights [[.5, .25], [9, 2], [1, 3], [4, 4]]:
///   t0 = .5*y[1] + .25*y[0] = .75*x0 = [.75, 1.5]
///   t1 = 2*y[2] (the dropped slot's weight 9 adds nothing) = 2*x1 = [6, 8]
///   t2 = 1*y[3] + 3*y[4] = 4*x2 = [20, 24]
///   t3 = nothing routed = [0, 0]
#[test]
fn permute_and_combine_hand_vector() {
    let (t, k, e, h) = (4usize, 2usize, 3usize, 2usize);
    let ids = BE.upload_slice(&[2i32, 0, -1, 2, 2, 2, -1, -1]).unwrap();
    let x = BE.upload_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]).unwrap();
    let mut ge = BE.filled(e, -7i64).unwrap();
    let mut st = BE.filled(t * k, -7i64).unwrap();
    let mut sr = BE.filled(t * k, -7i64).unwrap();
    let mut xp = BE.filled(t * k * h, f32::NAN).unwrap();
    let args = MoePermute {
        num_experts: e,
        ids: ids.view(DType::I32, &[t, k]),
        x: Some(x.view(DType::F32, &[t, h])),
        group_end: ge.view_mut(DType::I64, &[e]),
        src_token: st.view_mut(DType::I64, &[t * k]),
        slot_row: sr.view_mut(DType::I64, &[t, k]),
        x_perm: Some(xp.view_mut(DType::F32, &[t * k, h])),
    };
    BE.moe_permute(args.validate().unwrap()).unwrap();
    assert_eq!(BE.download_vec::<i64>(&ge, e).unwrap(), [1, 1, 5]);
    assert_eq!(BE.download_vec::<i64>(&sr, t * k).unwrap(), [1, 0, -1, 2, 3, 4, -1, -1]);
    assert_eq!(BE.download_vec::<i64>(&st, t * k).unwrap()[..5], [0, 0, 1, 2, 2]);
    let xpv = BE.download_vec::<f32>(&xp, t * k * h).unwrap();
    assert_eq!(xpv[..10], [1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 5.0, 6.0]);

    let w = BE.upload_slice(&[0.5f32, 0.25, 9.0, 2.0, 1.0, 3.0, 4.0, 4.0]).unwrap();
    // Rows 5..8 of x_perm are unspecified (here NaN poison): combine must not read them.
    let mut out = BE.filled(t * h, f32::NAN).unwrap();
    let args = MoeCombine {
        y_perm: xp.view(DType::F32, &[t * k, h]),
        slot_row: sr.view(DType::I64, &[t, k]),
        weights: w.view(DType::F32, &[t, k]),
        out: out.view_mut(DType::F32, &[t, h]),
    };
    BE.moe_combine(args.validate().unwrap()).unwrap();
    let got = BE.download_vec::<f32>(&out, t * h).unwrap();
    assert_eq!(got, [0.75, 1.5, 6.0, 8.0, 20.0, 24.0, 0.0, 0.0]);
    assert!(got[6].is_sign_positive() && got[7].is_sign_positive());
}

// ------------------------------------------------------------------------------------------------
// swiglu
// ------------------------------------------------------------------------------------------------

fn silu(g: f64) -> f64 {
    g / (1.0 + (-g).exp())
}

/// One row, I = 5, limit 10: gate [0, 20, NaN, -20, +inf], up [5, -20, 1, 1, NaN].
/// Clamped: gate <= 10 only from above -> [0, 10, NaN, -20, 10]; up into [-10, 10] -> [5, -10, 1,
/// 1, NaN]. out = silu(gate) * up:
///   silu(0) * 5 = 0;  silu(10) * -10 = 10 / (1 + e^-10) * -10 = -99.99546;  NaN (stays NaN);
///   silu(-20) * 1 = -20 / (1 + e^20) = -4.1223072e-8 (not clamped to -10, which would give
///   silu(-10) = -4.5397868e-4);  silu(10) * NaN = NaN.
#[test]
fn swiglu_limit_vector() {
    let nan = f32::NAN;
    let h = BE
        .upload_slice(&[0.0f32, 20.0, nan, -20.0, f32::INFINITY, 5.0, -20.0, 1.0, 1.0, nan])
        .unwrap();
    let mut out = BE.filled(5, 123.0f32).unwrap();
    let args = Swiglu {
        h: h.view(DType::F32, &[1, 10]),
        out: out.view_mut(DType::F32, &[1, 5]),
        limit: Some(10.0),
    };
    BE.swiglu(args.validate().unwrap()).unwrap();
    let y = BE.download_vec::<f32>(&out, 5).unwrap();
    assert_eq!(y[0], 0.0);
    assert_eq!(y[1], (silu(10.0) * -10.0) as f32);
    assert!((y[1] as f64 + 99.99546).abs() < 1e-5, "{}", y[1]);
    assert!(y[2].is_nan());
    assert_eq!(y[3], silu(-20.0) as f32);
    assert!((y[3] as f64 + 4.1223072e-8).abs() < 1e-14, "{}", y[3]);
    assert!(y[4].is_nan());
    // Without the limit: silu(20) * -20 = -20 * 20 / (1 + e^-20) = -399.99999999 -> -400 in f32.
    let mut out = BE.filled(5, 123.0f32).unwrap();
    let args = Swiglu {
        h: h.view(DType::F32, &[1, 10]),
        out: out.view_mut(DType::F32, &[1, 5]),
        limit: None,
    };
    BE.swiglu(args.validate().unwrap()).unwrap();
    let y = BE.download_vec::<f32>(&out, 5).unwrap();
    assert_eq!(y[1], -400.0);
    assert!(y[2].is_nan());
}

// ------------------------------------------------------------------------------------------------
// gather_rows
// ------------------------------------------------------------------------------------------------

/// fp8 e4m3fn bytes (bias 7), decoded by hand:
///   0x38 = 0.0111.000 -> 2^(7-7) * 1.0 = 1.0
///   0x7E = 0.1111.110 -> 2^8 * 1.75 = 448 (the largest finite)
///   0x01 = 0.0000.001 -> subnormal 1/8 * 2^-6 = 2^-9
///   0x7F = 0.1111.111 -> NaN (canonical f32 NaN bits 0x7fc00000 on output)
///   0x80 = 1.0000.000 -> -0.0
///   0x3C = 0.0111.100 -> 1.5;   0xC0 = 1.1000.000 -> -2^1 = -2
///   0x07 = 0.0000.111 -> 7/8 * 2^-6 = 7 * 2^-9;   0xFF = 1.1111.111 -> NaN
/// UE8M0 scale: byte b -> 2^(b - 127): 127 -> 1, 128 -> 2, 0 -> 2^-127.
const FP8: [u8; 9] = [0x38, 0x7E, 0x01, 0x7F, 0x80, 0x3C, 0xC0, 0x07, 0xFF];

fn fp8_table() -> Vec<u8> {
    // R = 3 rows of D = 32 (+1 scale byte); bytes 9..32 are 0x00 (+0.0).
    let mut t = vec![0u8; 3 * 33];
    for (r, scale) in [127u8, 128, 0].into_iter().enumerate() {
        t[r * 33..r * 33 + 9].copy_from_slice(&FP8);
        t[r * 33 + 32] = scale;
    }
    t
}

/// Expected f32 of row `r` (scale 2^(0 | 1 | -127)), as f32 bit patterns.
fn fp8_expected_row(r: usize) -> Vec<u32> {
    let p = |e: i32| 2f64.powi(e);
    let s = [1.0, 2.0, p(-127)][r];
    let vals = [1.0, 448.0, p(-9), f64::NAN, -0.0, 1.5, -2.0, 7.0 * p(-9), f64::NAN];
    let mut out: Vec<u32> = vals
        .iter()
        .map(|&v| {
            if v.is_nan() {
                0x7fc0_0000
            } else {
                ((v * s) as f32).to_bits()
            }
        })
        .collect();
    out.resize(32, 0);
    out
}

#[test]
fn gather_fp8_to_f32_hand_decoded() {
    let table = BE.upload_slice(&fp8_table()).unwrap();
    // rows [[2, 0], [1, 1]] -> out [2, 64]; a guard region of 8 floats follows the output view.
    let rows = BE.upload_slice(&[2i64, 0, 1, 1]).unwrap();
    let mut out = BE.filled(2 * 64 + 8, f32::from_bits(0x7f80_0001)).unwrap();
    let args = GatherRows {
        table: table.view(DType::U8, &[3, 33]),
        format: TableFormat::Fp8E4m3Ue8m0,
        rows: rows.view(DType::I64, &[2, 2]),
        out: out.view_mut(DType::F32, &[2, 64]),
    };
    BE.gather_rows(args.validate().unwrap()).unwrap();
    let got: Vec<u32> = BE
        .download_vec::<f32>(&out, 2 * 64 + 8)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let mut want = Vec::new();
    for r in [2, 0, 1, 1] {
        want.extend(fp8_expected_row(r));
    }
    want.extend([0x7f80_0001u32; 8]);
    assert_eq!(got, want);
    // Spot checks of the hand decoding: row 2 (scale 2^-127): 1.0 -> 2^-127 (f32 subnormal
    // 0x00400000), 448 * 2^-127 = 1.75 * 2^-119, 2^-9 * 2^-127 = 2^-136 (subnormal 0x00002000).
    assert_eq!(got[0], 0x0040_0000);
    assert_eq!(f32::from_bits(got[1]), 1.75 * 2f32.powi(-119));
    assert_eq!(got[2], 0x0000_2000);
    assert_eq!(got[3], 0x7fc0_0000);
    assert_eq!(got[4], 0x8000_0000);
    // Row 0 (scale 1): 1.0, 448, 2^-9.
    assert_eq!(
        &got[32..35],
        &[1.0f32.to_bits(), 448.0f32.to_bits(), 2f32.powi(-9).to_bits()]
    );
    // Row 1 (scale 2): 2, 896, 2^-8, NaN, -0.0, 3, -4, 7 * 2^-8, NaN.
    let r1: Vec<f32> = got[64..73].iter().map(|&b| f32::from_bits(b)).collect();
    assert_eq!(&r1[..3], &[2.0, 896.0, 2f32.powi(-8)]);
    assert_eq!(r1[4].to_bits(), 0x8000_0000);
    assert_eq!(&r1[5..8], &[3.0, -4.0, 7.0 * 2f32.powi(-8)]);
}

/// bf16 output of rows 0 (scale 1) and 1 (scale 2), bit patterns by hand:
/// 1.0 = 0x3F80; 448 = 1.75 * 2^8 -> exponent 135 = 0x87, mantissa .11 -> 0x43E0; 2^-9 -> exponent
/// 118 = 0x76 -> 0x3B00; NaN -> 0x7FC0; -0.0 -> 0x8000; 1.5 -> 0x3FC0; -2 -> 0xC000;
/// 7 * 2^-9 = 1.75 * 2^-7 -> exponent 120 = 0x78, mantissa .11 -> 0x3C60.
/// Scale 2 adds one to each exponent: 0x4000, 0x4460, 0x3B80, NaN, 0x8000, 0x4040, 0xC080, 0x3CE0.
#[test]
fn gather_fp8_to_bf16_hand_decoded() {
    let table = BE.upload_slice(&fp8_table()).unwrap();
    let rows = BE.upload_slice(&[0i64, 1]).unwrap();
    let mut out = BE.filled(64, bf16::from_bits(0x1234)).unwrap();
    let args = GatherRows {
        table: table.view(DType::U8, &[3, 33]),
        format: TableFormat::Fp8E4m3Ue8m0,
        rows: rows.view(DType::I64, &[1, 2]),
        out: out.view_mut(DType::BF16, &[1, 64]),
    };
    BE.gather_rows(args.validate().unwrap()).unwrap();
    let got: Vec<u16> = BE
        .download_vec::<bf16>(&out, 64)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let mut row0 = vec![
        0x3F80u16, 0x43E0, 0x3B00, 0x7FC0, 0x8000, 0x3FC0, 0xC000, 0x3C60, 0x7FC0,
    ];
    row0.resize(32, 0);
    let mut row1 = vec![
        0x4000u16, 0x4460, 0x3B80, 0x7FC0, 0x8000, 0x4040, 0xC080, 0x3CE0, 0x7FC0,
    ];
    row1.resize(32, 0);
    assert_eq!(&got[..32], &row0[..]);
    assert_eq!(&got[32..], &row1[..]);
}

/// Dense tables are copied bit for bit: NaN payloads (a signalling NaN 0x7f800001), -0.0 and
/// subnormals survive.
#[test]
fn gather_dense_is_a_bitwise_copy() {
    let bits = [
        0x7f80_0001u32,
        0x8000_0000,
        0x0000_0001,
        0x3f80_0000,
        0xffff_ffff,
        0x4049_0fdb,
    ];
    let table: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect(); // R = 3, D = 2
    let tb = BE.upload_slice(&table).unwrap();
    let rows = BE.upload_slice(&[2i64, 2, 0, 1]).unwrap(); // T = 2, C = 2
    let mut out = BE.filled(8 + 2, 7.0f32).unwrap();
    let args = GatherRows {
        table: tb.view(DType::F32, &[3, 2]),
        format: TableFormat::F32,
        rows: rows.view(DType::I64, &[2, 2]),
        out: out.view_mut(DType::F32, &[2, 4]),
    };
    BE.gather_rows(args.validate().unwrap()).unwrap();
    let got: Vec<u32> = BE
        .download_vec::<f32>(&out, 10)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let want = [
        bits[4],
        bits[5],
        bits[4],
        bits[5], // row 2, row 2
        bits[0],
        bits[1],
        bits[2],
        bits[3], // row 0, row 1
        7.0f32.to_bits(),
        7.0f32.to_bits(), // guard
    ];
    assert_eq!(got, want);
    // f16 table: same rule.
    let h: Vec<f16> = [0x7c01u16, 0x8000, 0x0001, 0x3c00]
        .iter()
        .map(|&b| f16::from_bits(b))
        .collect();
    let tb = BE.upload_slice(&h).unwrap();
    let rows = BE.upload_slice(&[1i64, 0]).unwrap();
    let mut out = BE.filled(4, f16::from_bits(0x1111)).unwrap();
    let args = GatherRows {
        table: tb.view(DType::F16, &[2, 2]),
        format: TableFormat::F16,
        rows: rows.view(DType::I64, &[2, 1]),
        out: out.view_mut(DType::F16, &[2, 2]),
    };
    BE.gather_rows(args.validate().unwrap()).unwrap();
    let got: Vec<u16> = BE
        .download_vec::<f16>(&out, 4)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(got, [0x0001, 0x3c00, 0x7c01, 0x8000]);
}
