//! The comparison rules of OPS.md §Conformance that are more than a tolerance, in one place: the
//! facade harness (`moehal check`), the CPU, CUDA and Ascend test suites all call these.
//!
//! `router_topk`: ids equal to the reference's. Exact ties follow the lower-index rule strictly;
//! only where the reference's competing selection scores differ, but by at most 1e-6 relative or
//! both lie below 1e-30 in magnitude (rounding-level near-ties, underflow), may either choice pass.
//! Weights within 1e-5 absolute (of the reference's weights, or for a near-tie alternative, of the
//! weights the contract gives that alternative).

use crate::ops::RouterConfig;
use crate::reference::{route_token, TokenRoute};

/// Relative difference of two competing reference selection scores below which either choice
/// passes (OPS.md §Conformance).
pub const NEAR_TIE_REL: f64 = 1e-6;
/// Magnitude below which two (different) competing selection scores always count as a near-tie:
/// underflow (OPS.md §Conformance).
pub const NEAR_TIE_TINY: f64 = 1e-30;
/// Absolute tolerance of router weights (OPS.md §Conformance).
pub const ROUTER_WEIGHT_ABS: f64 = 1e-5;

/// Whether two competing reference selection scores `a`, `b` (`ŝ`, after group masking) form a
/// near-tie under which a backend may pick either expert: both finite, different (an exact tie
/// must go to the lower index), and within [`NEAR_TIE_REL`] relative or both below
/// [`NEAR_TIE_TINY`] in magnitude.
pub fn is_near_tie(a: f64, b: f64) -> bool {
    a.is_finite()
        && b.is_finite()
        && a != b
        && ((a - b).abs() <= NEAR_TIE_REL * a.abs().max(b.abs())
            || (a.abs() < NEAR_TIE_TINY && b.abs() < NEAR_TIE_TINY))
}

/// How a backend's routing of one token matched the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterMatch {
    /// The same ids as the reference.
    Exact,
    /// Different ids, each difference a near-tie of the reference's selection scores.
    NearTie,
}

/// Judge one token of a backend's `router_topk` output against the reference (OPS.md
/// §Conformance). `logits` are the token's `E` logits as the backend read them (widened from their
/// dtype), `bias` the `[E]` selection bias, `ids` and `weights` the backend's `k` outputs.
///
/// Passes when `ids` equals the reference's ids, or when they are `k` distinct experts in `[0, E)`
/// that differ from the reference's only slot by slot at near-ties ([`is_near_tie`]) of the
/// reference's selection scores; the weights must then be within [`ROUTER_WEIGHT_ABS`] of the
/// reference's weights (or of the weights step 5 gives the backend's ids).
///
/// Returns the match and the largest weight difference.
///
/// # Errors
/// A message naming the slot, the experts and their reference selection scores, or the weight.
pub fn check_router_token(
    cfg: &RouterConfig,
    logits: &[f64],
    bias: Option<&[f32]>,
    ids: &[i32],
    weights: &[f32],
) -> Result<(RouterMatch, f64), String> {
    let e = logits.len();
    let k = cfg.topk;
    if ids.len() != k || weights.len() != k {
        return Err(format!(
            "{} ids / {} weights, expected k = {k}",
            ids.len(),
            weights.len()
        ));
    }
    let route = route_token(cfg, logits, bias);
    let (kind, expected) = if ids == route.ids.as_slice() {
        (RouterMatch::Exact, route.weights.clone())
    } else {
        let mut distinct = ids.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != k || ids.iter().any(|&i| i < 0 || i as usize >= e) {
            return Err(format!("ids {ids:?} are not k = {k} distinct experts in [0, {e})"));
        }
        let sel = &route.selection;
        for (j, (&r, &b)) in route.ids.iter().zip(ids).enumerate() {
            if r == b {
                continue;
            }
            let (sr, sb) = (sel[r as usize], sel[b as usize]);
            if !is_near_tie(sr, sb) {
                return Err(format!(
                    "slot {j}: expert {b} (reference selection score {sb:e}), reference expert {r} \
                     (score {sr:e}); ids {ids:?} vs reference {:?}{}",
                    route.ids,
                    if sr == sb {
                        " (an exact tie: the lower index wins)"
                    } else {
                        ""
                    }
                ));
            }
        }
        (RouterMatch::NearTie, weights_for(cfg, &route, ids))
    };
    let mut max_dw = 0f64;
    for (j, (&w, &want)) in weights.iter().zip(&expected).enumerate() {
        let dw = (w as f64 - want).abs();
        if dw.is_nan() || dw > ROUTER_WEIGHT_ABS {
            return Err(format!("slot {j} (expert {}): weight {w} vs reference {want}", ids[j]));
        }
        max_dw = max_dw.max(dw);
    }
    Ok((kind, max_dw))
}

/// Summary of [`check_router`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RouterSummary {
    /// Tokens whose ids differ from the reference's at near-ties only.
    pub near_ties: usize,
    /// Largest weight difference.
    pub max_weight_diff: f64,
}

/// Judge a whole `router_topk` output, `t = ids.len() / k` tokens of `e` experts:
/// [`check_router_token`] on every token, and `counts` (if given) must be the histogram of the
/// backend's own `ids`, fill slots included.
///
/// # Errors
/// The first failing token's message, prefixed with `token {t}: `, or the counts mismatch.
pub fn check_router(
    cfg: &RouterConfig,
    e: usize,
    logits: &[f64],
    bias: Option<&[f32]>,
    ids: &[i32],
    weights: &[f32],
    counts: Option<&[i64]>,
) -> Result<RouterSummary, String> {
    let k = cfg.topk;
    let t = ids.len().checked_div(k).unwrap_or(0);
    if logits.len() != t * e || ids.len() != t * k || weights.len() != t * k {
        return Err(format!(
            "lengths: {} logits, {} ids, {} weights for T = {t}, E = {e}, k = {k}",
            logits.len(),
            ids.len(),
            weights.len()
        ));
    }
    let mut sum = RouterSummary::default();
    for ti in 0..t {
        let (m, dw) = check_router_token(
            cfg,
            &logits[ti * e..(ti + 1) * e],
            bias,
            &ids[ti * k..(ti + 1) * k],
            &weights[ti * k..(ti + 1) * k],
        )
        .map_err(|msg| format!("token {ti}: {msg}"))?;
        sum.near_ties += usize::from(m == RouterMatch::NearTie);
        sum.max_weight_diff = sum.max_weight_diff.max(dw);
    }
    if let Some(c) = counts {
        let mut want = vec![0i64; e];
        for &i in ids {
            want[i as usize] += 1;
        }
        if c != want.as_slice() {
            return Err(format!("expert_counts {c:?} are not the histogram of the ids {want:?}"));
        }
    }
    Ok(sum)
}

/// The weights the contract gives for an alternative (near-tie) selection `ids` of the token
/// `route` describes: step 5 on the reference's scores of those ids (0 for an expert that is not
/// selectable, a fill slot).
pub fn weights_for(cfg: &RouterConfig, route: &TokenRoute, ids: &[i32]) -> Vec<f64> {
    let mut w: Vec<f64> = ids
        .iter()
        .map(|&i| {
            if route.selection[i as usize].is_finite() {
                route.scores[i as usize]
            } else {
                0.0
            }
        })
        .collect();
    if cfg.renormalize {
        let s: f64 = w.iter().sum::<f64>() + 1e-20;
        w.iter_mut().for_each(|v| *v /= s);
    }
    w.iter_mut().for_each(|v| *v *= cfg.routed_scaling_factor as f64);
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Scoring;

    #[test]
    fn near_tie_rule() {
        // Exact ties are never near-ties: the lower index must win.
        assert!(!is_near_tie(0.5, 0.5));
        assert!(!is_near_tie(0.0, 0.0));
        // Rounding-level differences.
        assert!(is_near_tie(1.0, 1.0 + 1e-7));
        assert!(!is_near_tie(1.0, 1.0 + 1e-5));
        // Underflow: both below 1e-30.
        assert!(is_near_tie(0.0, 3.7e-44));
        assert!(is_near_tie(-1e-31, 2e-31));
        assert!(!is_near_tie(0.0, 2e-30));
        // Masked experts are never near anything.
        assert!(!is_near_tie(f64::NEG_INFINITY, 1.0));
        assert!(!is_near_tie(f64::NEG_INFINITY, f64::NEG_INFINITY));
    }

    fn cfg(k: usize, scoring: Scoring) -> RouterConfig {
        RouterConfig {
            topk: k,
            scoring,
            group: None,
            renormalize: true,
            routed_scaling_factor: 1.0,
        }
    }

    #[test]
    fn sqrt_softplus_underflow_accepts_either_order() {
        // OPS.md §2 example: exact scores ≈ 7e-66 (0 in f32) and ≈ 3.7e-44 (a subnormal).
        let c = cfg(2, Scoring::SqrtSoftplus);
        let l = [5.0, -300.0, -200.0];
        let r = route_token(&c, &l, None);
        assert_eq!(r.ids, [0, 2]);
        let w: Vec<f32> = r.weights.iter().map(|&w| w as f32).collect();
        assert_eq!(
            check_router_token(&c, &l, None, &[0, 2], &w).unwrap().0,
            RouterMatch::Exact
        );
        assert_eq!(
            check_router_token(&c, &l, None, &[0, 1], &w).unwrap().0,
            RouterMatch::NearTie
        );
        // Not a near-tie: a score of 1e-20 against 0.
        assert!(check_router_token(&c, &[5.0, -300.0, -91.0], None, &[0, 1], &w).is_err());
    }

    #[test]
    fn exact_ties_are_strict_and_weights_checked() {
        // sigmoid(20.5) and sigmoid(100) are both 1.0 in f32: an exact tie, id 0 only.
        let c = cfg(1, Scoring::Sigmoid);
        let l = [20.5, 100.0];
        assert!(check_router_token(&c, &l, None, &[0], &[1.0]).is_ok());
        let err = check_router_token(&c, &l, None, &[1], &[1.0]).unwrap_err();
        assert!(err.contains("exact tie"), "{err}");
        assert!(check_router_token(&c, &l, None, &[0], &[0.99]).is_err());
        assert!(check_router_token(&c, &l, None, &[0], &[f32::NAN]).is_err());
        // Duplicates and out-of-range ids never pass.
        let c2 = cfg(2, Scoring::Sigmoid);
        assert!(check_router_token(&c2, &[0.0, 0.0, 0.0], None, &[0, 0], &[0.5, 0.5]).is_err());
        assert!(check_router_token(&c2, &[0.0, 0.0, 0.0], None, &[0, 3], &[0.5, 0.5]).is_err());
    }

    #[test]
    fn counts_must_be_the_histogram_of_the_ids() {
        let c = cfg(1, Scoring::Softmax);
        let l = [1.0, 0.0, 0.0, 2.0];
        let r = route_token(&c, &l[..2], None);
        let w = [r.weights[0] as f32, 1.0];
        assert!(check_router(&c, 2, &l, None, &[0, 1], &w, Some(&[1, 1])).is_ok());
        assert!(check_router(&c, 2, &l, None, &[0, 1], &w, Some(&[2, 0])).is_err());
    }
}
