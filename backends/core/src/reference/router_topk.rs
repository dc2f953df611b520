//! Reference `router_topk`, written step by step as OPS.md §2 states it, in f64.

use crate::host::{slice, slice_mut};
use crate::ops::{GroupScore, RouterConfig, RouterTopk, Scoring};
use crate::{dispatch_float, Error, Float, Result};

const OP: &str = "router_topk";

/// The routing of one token, with the intermediate selection scores (for near-tie analysis).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRoute {
    /// Selected experts, `k` of them, distinct.
    pub ids: Vec<i32>,
    /// Their weights (after renormalization and scaling).
    pub weights: Vec<f64>,
    /// Selection score `ŝ` of every expert after bias and group masking (`-inf` = not selectable).
    pub selection: Vec<f64>,
    /// Unbiased score `s` of every expert (0 for non-finite logits).
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

/// Route one token. `logits` are the token's E logits (already widened), `bias` the optional
/// selection bias.
pub fn route_token(cfg: &RouterConfig, logits: &[f64], bias: Option<&[f32]>) -> TokenRoute {
    let e = logits.len();
    // 1. Scores; non-finite logits score 0 and are excluded (step 6).
    let finite: Vec<bool> = logits.iter().map(|l| l.is_finite()).collect();
    let mut s = vec![0f64; e];
    match cfg.scoring {
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
    // 2. Selection scores; any non-finite selection score is excluded too.
    let mut sel: Vec<f64> = (0..e)
        .map(|i| {
            let v = s[i] + bias.map_or(0.0, |b| b[i] as f64);
            if finite[i] && v.is_finite() {
                v
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    // 3. Group limit: drop the experts of all but the best `topk_group` groups (ties: lower group).
    if let Some(g) = cfg.effective_group() {
        let per = e / g.n_group;
        let group_score: Vec<f64> = (0..g.n_group)
            .map(|gi| {
                let mut v: Vec<f64> = sel[gi * per..(gi + 1) * per].to_vec();
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
            sel[gi * per..(gi + 1) * per].fill(f64::NEG_INFINITY);
        }
    }
    // 4. The k largest selectable scores, ties to the lower index; then fill slots.
    let mut order: Vec<usize> = (0..e).filter(|&i| sel[i] > f64::NEG_INFINITY).collect();
    order.sort_by(|&a, &b| sel[b].total_cmp(&sel[a]).then(a.cmp(&b)));
    order.truncate(cfg.k);
    let chosen = order.len();
    let mut taken = vec![false; e];
    for &i in &order {
        taken[i] = true;
    }
    let mut fill = (0..e).filter(|&i| !taken[i]);
    while order.len() < cfg.k {
        order.push(fill.next().expect("k <= E"));
    }
    // 5. Weights: unbiased scores of the selected experts (fill slots weigh 0).
    let mut weights: Vec<f64> = order
        .iter()
        .enumerate()
        .map(|(j, &i)| if j < chosen { s[i] } else { 0.0 })
        .collect();
    if cfg.renormalize {
        let sum: f64 = weights.iter().sum::<f64>() + 1e-20;
        weights.iter_mut().for_each(|w| *w /= sum);
    }
    weights.iter_mut().for_each(|w| *w *= cfg.routed_scaling_factor as f64);
    TokenRoute {
        ids: order.iter().map(|&i| i as i32).collect(),
        weights,
        selection: sel,
        scores: s,
    }
}

pub(super) fn run(mut a: RouterTopk<'_>) -> Result<()> {
    dispatch_float!(a.logits.dtype(), T => typed::<T>(&mut a),
        else => Err(Error::unsupported(OP, "reference", format!("dtype {}", a.logits.dtype()))))
}

fn typed<T: Float>(a: &mut RouterTopk<'_>) -> Result<()> {
    let (t, e) = a.dims();
    let k = a.config.k;
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
