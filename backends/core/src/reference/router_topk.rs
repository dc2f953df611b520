//! Reference `router_topk`, written step by step as OPS.md §2 states it.
//!
//! Step 1 computes every score in f64 and rounds it once to f32 (so each `s` is the f32 nearest the
//! exact score of the rounded logits, up to the f64 evaluation error, far below f32's half-ulp;
//! underflow below f32's smallest subnormal gives 0). Step 2 forms `ŝ = fl32(s + bias)` in f32.
//! Steps 3–4 (group scores, selection, ties) work on those f32 values; the `top2_sum` group score
//! is formed in f32 too (`fl32(ŝ1 + ŝ2)`): OPS.md says group scores "work on these f32 values", and
//! the DeepSeek-V3 gate (`scores.topk(2).sum()` on f32 tensors) and every device kernel add the two
//! f32 scores in f32, so two groups whose sums round to the same f32 tie and the lower group wins.
//! Step 5 (weights) is computed in f64 from the f32 scores `s`.

use crate::host::{slice, slice_mut};
use crate::ops::{GroupScore, RouterConfig, RouterHash, RouterTopk, Scoring};
use crate::{dispatch_float, Error, Float, Result};

const OP: &str = "router_topk";

/// The routing of one token, with the intermediate selection scores (for near-tie analysis).
///
/// `selection` and `scores` hold f32 values widened to f64 (OPS.md §2 steps 1–2 are f32 values).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRoute {
    /// Selected experts, `k` of them, distinct.
    pub ids: Vec<i32>,
    /// Their weights (after renormalization and scaling).
    pub weights: Vec<f64>,
    /// Selection score `ŝ = fl32(s + bias)` of every expert after group masking (`-inf` = not
    /// selectable).
    pub selection: Vec<f64>,
    /// Unbiased score `s` of every expert, an f32 value (0 for non-finite logits).
    pub scores: Vec<f64>,
}

fn score(scoring: Scoring, x: f64) -> f64 {
    match scoring {
        Scoring::Softmax => unreachable!("softmax is computed over the row"),
        Scoring::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Scoring::SqrtSoftplus => {
            let softplus = if x > 0.0 {
                x + (-x).exp().ln_1p()
            } else {
                x.exp().ln_1p()
            };
            softplus.sqrt()
        }
    }
}

/// OPS.md §2 step 1 (with step 6's rule for non-finite logits) for one token: the score `s` of
/// every expert, computed in f64 and rounded once to f32 (returned widened to f64). A non-finite
/// logit scores 0 and adds nothing to a softmax denominator; a score below f32's smallest
/// subnormal rounds to 0.
pub fn token_scores(scoring: Scoring, logits: &[f64]) -> Vec<f64> {
    let e = logits.len();
    let finite: Vec<bool> = logits.iter().map(|l| l.is_finite()).collect();
    let mut s = vec![0f64; e];
    match scoring {
        Scoring::Softmax => {
            let max = logits
                .iter()
                .zip(&finite)
                .filter(|(_, &f)| f)
                .map(|(&l, _)| l)
                .fold(f64::NEG_INFINITY, f64::max);
            let mut denom = 0f64;
            for i in 0..e {
                if finite[i] {
                    s[i] = (logits[i] - max).exp();
                    denom += s[i];
                }
            }
            for v in s.iter_mut() {
                if denom > 0.0 {
                    *v /= denom;
                }
            }
        }
        sc => {
            for i in 0..e {
                if finite[i] {
                    s[i] = score(sc, logits[i]);
                }
            }
        }
    }
    // The one rounding of step 1.
    s.iter().map(|&v| v as f32 as f64).collect()
}

/// Route one token. `logits` are the token's E logits (already widened), `bias` the optional
/// selection bias.
pub fn route_token(cfg: &RouterConfig, logits: &[f64], bias: Option<&[f32]>) -> TokenRoute {
    let e = logits.len();
    // 1. Scores (f32 values); non-finite logits score 0 and are excluded (step 6).
    let s = token_scores(cfg.scoring, logits);
    // 2. Selection scores fl32(s + bias); any non-finite selection score is excluded too.
    let mut sel: Vec<f32> = (0..e)
        .map(|i| {
            let v = s[i] as f32 + bias.map_or(0.0, |b| b[i]);
            if logits[i].is_finite() && v.is_finite() {
                v
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    // 3. Group limit: drop the experts of all but the best `topk_group` groups (ties: lower group).
    //    Group scores are f32: the largest ŝ, or fl32(ŝ1 + ŝ2) (see the module docs).
    if let Some(g) = cfg.effective_group() {
        let per = e / g.n_group;
        let group_score: Vec<f32> = (0..g.n_group)
            .map(|gi| {
                let mut v: Vec<f32> = sel[gi * per..(gi + 1) * per].to_vec();
                v.sort_by(|a, b| b.total_cmp(a));
                match g.score {
                    GroupScore::Max => v[0],
                    GroupScore::Top2Sum => v[0] + v[1],
                }
            })
            .collect();
        let mut order: Vec<usize> = (0..g.n_group).collect();
        order.sort_by(|&a, &b| group_score[b].total_cmp(&group_score[a]).then(a.cmp(&b)));
        for &gi in &order[g.topk_group..] {
            sel[gi * per..(gi + 1) * per].fill(f32::NEG_INFINITY);
        }
    }
    // 4. The k largest selectable scores, ties to the lower index; then fill slots.
    let mut order: Vec<usize> = (0..e).filter(|&i| sel[i] > f32::NEG_INFINITY).collect();
    order.sort_by(|&a, &b| sel[b].total_cmp(&sel[a]).then(a.cmp(&b)));
    order.truncate(cfg.topk);
    let chosen = order.len();
    let mut taken = vec![false; e];
    for &i in &order {
        taken[i] = true;
    }
    let mut fill = (0..e).filter(|&i| !taken[i]);
    while order.len() < cfg.topk {
        order.push(fill.next().expect("k <= E"));
    }
    // 5. Weights: unbiased scores of the selected experts (fill slots weigh 0).
    let raw: Vec<f64> = order
        .iter()
        .enumerate()
        .map(|(j, &i)| if j < chosen { s[i] } else { 0.0 })
        .collect();
    TokenRoute {
        ids: order.iter().map(|&i| i as i32).collect(),
        weights: finish_weights(cfg, raw),
        selection: sel.iter().map(|&v| v as f64).collect(),
        scores: s,
    }
}

/// OPS.md §2 step 5 after the raw scores are picked: renormalize (sum plus 1e-20) if asked, then
/// scale by `routed_scaling_factor` exactly once.
fn finish_weights(cfg: &RouterConfig, mut weights: Vec<f64>) -> Vec<f64> {
    if cfg.renormalize {
        let sum: f64 = weights.iter().sum::<f64>() + 1e-20;
        weights.iter_mut().for_each(|w| *w /= sum);
    }
    weights.iter_mut().for_each(|w| *w *= cfg.routed_scaling_factor as f64);
    weights
}

/// Hash routing of one token (OPS.md §2 "Hash routing"): `ids` is the token's `tid2eid` row (in
/// table order, repeats kept); the weights are step 5 on the scores of those ids (a non-finite
/// logit scores 0, so its slot weighs 0). The caller has checked every id is in `[0, E)`.
pub fn hash_route_token(cfg: &RouterConfig, logits: &[f64], ids: &[i32]) -> Vec<f64> {
    let s = token_scores(cfg.scoring, logits);
    finish_weights(cfg, ids.iter().map(|&i| s[i as usize]).collect())
}

pub(super) fn run(mut a: RouterTopk<'_>) -> Result<()> {
    dispatch_float!(a.logits.dtype(), T => typed::<T>(&mut a),
        else => Err(Error::unsupported(OP, "reference", format!("dtype {}", a.logits.dtype()))))
}

fn typed<T: Float>(a: &mut RouterTopk<'_>) -> Result<()> {
    let (t, e) = a.dims();
    let k = a.config.topk;
    let logits = slice::<T>(&a.logits, OP, "logits")?;
    let bias = a.bias.as_ref().map(|b| slice::<f32>(b, OP, "bias")).transpose()?;
    let mut counts = vec![0i64; e];
    let mut row = vec![0f64; e];
    let mut ids_all = Vec::with_capacity(t * k);
    let mut w_all = Vec::with_capacity(t * k);
    for ti in 0..t {
        for (dst, src) in row.iter_mut().zip(&logits[ti * e..(ti + 1) * e]) {
            *dst = src.to_f64();
        }
        let r = route_token(&a.config, &row, bias);
        for &i in &r.ids {
            counts[i as usize] += 1;
        }
        ids_all.extend_from_slice(&r.ids);
        w_all.extend(r.weights.iter().map(|&w| w as f32));
    }
    slice_mut::<i32>(&mut a.ids, OP, "ids")?.copy_from_slice(&ids_all);
    slice_mut::<f32>(&mut a.weights, OP, "weights")?.copy_from_slice(&w_all);
    if let Some(ec) = &mut a.expert_counts {
        slice_mut::<i64>(ec, OP, "expert_counts")?.copy_from_slice(&counts);
    }
    Ok(())
}

pub(super) fn run_hash(mut a: RouterHash<'_>) -> Result<()> {
    dispatch_float!(a.logits.dtype(), T => typed_hash::<T>(&mut a),
        else => Err(Error::unsupported(OP, "reference", format!("dtype {}", a.logits.dtype()))))
}

fn typed_hash<T: Float>(a: &mut RouterHash<'_>) -> Result<()> {
    let (t, e) = a.dims();
    let k = a.config.topk;
    let logits = slice::<T>(&a.logits, OP, "logits")?;
    let table = slice::<i32>(&a.tid2eid, OP, "tid2eid")?;
    let tokens = slice::<i64>(&a.token_ids, OP, "token_ids")?;
    // Every row read is checked before anything is written.
    let rows = crate::ops::hash_rows(tokens, table, a.vocab(), k, e)?;
    let mut counts = vec![0i64; e];
    let mut row = vec![0f64; e];
    let mut ids_all = Vec::with_capacity(t * k);
    let mut w_all = Vec::with_capacity(t * k);
    for (ti, &r) in rows.iter().enumerate() {
        for (dst, src) in row.iter_mut().zip(&logits[ti * e..(ti + 1) * e]) {
            *dst = src.to_f64();
        }
        let ids = &table[r * k..(r + 1) * k];
        for &i in ids {
            counts[i as usize] += 1;
        }
        ids_all.extend_from_slice(ids);
        w_all.extend(hash_route_token(&a.config, &row, ids).iter().map(|&w| w as f32));
    }
    slice_mut::<i32>(&mut a.ids, OP, "ids")?.copy_from_slice(&ids_all);
    slice_mut::<f32>(&mut a.weights, OP, "weights")?.copy_from_slice(&w_all);
    if let Some(ec) = &mut a.expert_counts {
        slice_mut::<i64>(ec, OP, "expert_counts")?.copy_from_slice(&counts);
    }
    Ok(())
}
