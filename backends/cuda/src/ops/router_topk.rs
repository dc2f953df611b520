//! `router_topk` (kernels/cuda/router_topk.cu): the fused warp-per-token router, and hash routing
//! (`router_hash`: a check kernel, then a warp per token).

use moehal_core::ops::{hash_rows, GroupScore, RouterHash, RouterTopk, Scoring};
use moehal_core::{Checked, Error, Result};

use super::{cdiv, grid1};
use crate::device::{dev_err, CudaBackend};
use crate::kernels::Unit;
use crate::raw::{self, Arg};
use crate::NAME;

impl CudaBackend {
    /// `Backend::router_topk` on this device.
    pub(crate) fn run_router_topk(&self, args: Checked<RouterTopk<'_>>) -> Result<()> {
        const OP: &str = "router_topk";
        let a = args.into_inner();
        let (t, e) = a.dims();
        if e > 512 {
            return Err(Error::unsupported(
                OP,
                NAME,
                format!("E = {e} experts (the fused kernel holds at most 512)"),
            ));
        }
        let logits = self.dptr(&a.logits, OP, "logits")?;
        let bias = self.opt_ptr(a.bias.as_ref(), OP, "bias")?;
        let ids = self.dptr_mut(&a.ids, OP, "ids")?;
        let weights = self.dptr_mut(&a.weights, OP, "weights")?;
        let counts = a
            .expert_counts
            .as_ref()
            .map(|c| self.dptr_mut(c, OP, "expert_counts"))
            .transpose()?
            .unwrap_or(0);
        let s = self.begin()?;
        if counts != 0 {
            raw::memset8(counts, 0, e * 8, s).map_err(dev_err)?;
        }
        if t == 0 {
            return Ok(());
        }
        let cfg = a.config;
        let epl = if e <= 128 {
            4
        } else if e <= 256 {
            8
        } else {
            16
        };
        let name = format!("router_topk_{}_{epl}", a.logits.dtype().name());
        let score = score_code(cfg.scoring);
        let (ng, tg, gk) = match cfg.effective_group() {
            Some(g) => (
                g.n_group as i32,
                g.topk_group as i32,
                if g.score == GroupScore::Top2Sum { 0 } else { 1 },
            ),
            None => (1, 1, 0),
        };
        let args = [
            Arg::P(logits),
            Arg::I64(t as i64),
            Arg::I32(e as i32),
            Arg::I32(cfg.topk as i32),
            Arg::I32(score),
            Arg::P(bias),
            Arg::I32(ng),
            Arg::I32(tg),
            Arg::I32(gk),
            Arg::I32(cfg.renormalize as i32),
            Arg::F32(cfg.routed_scaling_factor),
            Arg::P(ids),
            Arg::P(weights),
            Arg::P(counts),
        ];
        self.launch(s, Unit::Router, &name, (cdiv(t, 8) as u32, 1), 256, 0, &args)
    }

    /// `Backend::router_hash` on this device: `router_hash_check` over every token's row, the
    /// flag read back (a sync), then, only for valid input, the counts zeroed and
    /// `router_hash_<dtype>` (warp per token). Invalid input writes nothing and is worded by core's
    /// [`hash_rows`], as on every backend.
    pub(crate) fn run_router_hash(&self, args: Checked<RouterHash<'_>>) -> Result<()> {
        const OP: &str = "router_topk";
        let a = args.into_inner();
        let (t, e) = a.dims();
        let (v, k) = (a.vocab(), a.config.topk);
        let logits = self.dptr(&a.logits, OP, "logits")?;
        let table = self.dptr(&a.tid2eid, OP, "tid2eid")?;
        let tokens = self.dptr(&a.token_ids, OP, "token_ids")?;
        let ids = self.dptr_mut(&a.ids, OP, "ids")?;
        let weights = self.dptr_mut(&a.weights, OP, "weights")?;
        let counts = a
            .expert_counts
            .as_ref()
            .map(|c| self.dptr_mut(c, OP, "expert_counts"))
            .transpose()?
            .unwrap_or(0);
        let s = self.begin()?;
        if t > 0 {
            let mut sc = self.lock(&self.scratch)?;
            let base = self.ensure_scratch(&mut sc, 256, s)?;
            self.flag_reset(base, s)?;
            let cargs = [
                Arg::P(table),
                Arg::P(tokens),
                Arg::I64(t as i64),
                Arg::I64(v as i64),
                Arg::I32(k as i32),
                Arg::I32(e as i32),
                Arg::P(base),
            ];
            self.launch(
                s,
                Unit::Router,
                "router_hash_check",
                (grid1(t, 256, 4096), 1),
                256,
                0,
                &cargs,
            )?;
            let (code, _) = self.flag_read(base, s)?;
            drop(sc);
            if code != 0 {
                let tok: Vec<i64> = self.download_typed(&a.token_ids, s)?;
                let tab: Vec<i32> = self.download_typed(&a.tid2eid, s)?;
                hash_rows(&tok, &tab, v, k, e)?;
                return Err(Error::device(
                    NAME,
                    -1,
                    "router_hash_check flagged input that hash_rows accepts",
                ));
            }
        }
        if counts != 0 {
            raw::memset8(counts, 0, e * 8, s).map_err(dev_err)?;
        }
        if t == 0 {
            return Ok(());
        }
        let cfg = a.config;
        let name = format!("router_hash_{}", a.logits.dtype().name());
        let args = [
            Arg::P(logits),
            Arg::I64(t as i64),
            Arg::I32(e as i32),
            Arg::I32(k as i32),
            Arg::I32(score_code(cfg.scoring)),
            Arg::P(table),
            Arg::P(tokens),
            Arg::I32(cfg.renormalize as i32),
            Arg::F32(cfg.routed_scaling_factor),
            Arg::P(ids),
            Arg::P(weights),
            Arg::P(counts),
        ];
        self.launch(s, Unit::Router, &name, (hash_grid(t), 1), 256, 0, &args)
    }
}

/// The kernels' `score` argument: 0 softmax, 1 sigmoid, 2 sqrt_softplus.
fn score_code(s: Scoring) -> i32 {
    match s {
        Scoring::Softmax => 0,
        Scoring::Sigmoid => 1,
        Scoring::SqrtSoftplus => 2,
    }
}

/// Blocks of `router_hash_<dtype>`: 8 tokens (warps) per 256-thread block.
fn hash_grid(t: usize) -> u32 {
    cdiv(t, 8) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use moehal_core::ops::{GroupLimit, RouterConfig};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// router_topk.cu steps 2-5 (selection score, group limit, iterated arg-max, fill slots,
    /// weights) on the reference's unbiased scores (f32 values): `ŝ` and the group scores in f32 as
    /// the kernel forms them, the weights in f64.
    fn router_mirror(cfg: &RouterConfig, logits: &[f64], s: &[f64], bias: Option<&[f32]>) -> (Vec<i32>, Vec<f64>) {
        let e = logits.len();
        let ninf = f32::NEG_INFINITY;
        let better = |av: f32, ai: usize, bv: f32, bi: usize| av > bv || (av == bv && ai < bi);
        let mut sh: Vec<f32> = (0..e)
            .map(|i| {
                if !logits[i].is_finite() {
                    return ninf;
                }
                let v = s[i] as f32 + bias.map_or(0.0, |b| b[i]);
                if v.is_finite() {
                    v
                } else {
                    ninf
                }
            })
            .collect();
        if let Some(g) = cfg.effective_group() {
            let gs = e / g.n_group;
            let gsc: Vec<f32> = (0..g.n_group)
                .map(|q| {
                    let (mut b1, mut b2) = (ninf, ninf);
                    for &v in &sh[q * gs..(q + 1) * gs] {
                        if v > b1 {
                            b2 = b1;
                            b1 = v;
                        } else if v > b2 {
                            b2 = v;
                        }
                    }
                    if g.score == GroupScore::Top2Sum {
                        b1 + b2
                    } else {
                        b1
                    }
                })
                .collect();
            let mut keep = vec![false; g.n_group];
            for _ in 0..g.topk_group {
                let (mut cv, mut ci) = (ninf, usize::MAX);
                for q in 0..g.n_group {
                    if !keep[q] && better(gsc[q], q, cv, ci) {
                        (cv, ci) = (gsc[q], q);
                    }
                }
                keep[ci] = true;
            }
            for (i, v) in sh.iter_mut().enumerate() {
                if !keep[i / gs] {
                    *v = ninf;
                }
            }
        }
        let mut chosen = vec![false; e];
        let (mut ids, mut w) = (Vec::new(), Vec::new());
        for _ in 0..cfg.topk {
            let (mut cv, mut ci) = (ninf, usize::MAX);
            for i in 0..e {
                if !chosen[i] && better(sh[i], i, cv, ci) {
                    (cv, ci) = (sh[i], i);
                }
            }
            chosen[ci] = true;
            ids.push(ci as i32);
            w.push(if cv == ninf { 0.0 } else { s[ci] });
        }
        let den = w.iter().sum::<f64>() + 1e-20;
        for x in w.iter_mut() {
            if cfg.renormalize {
                *x /= den;
            }
            *x *= cfg.routed_scaling_factor as f64;
        }
        (ids, w)
    }

    #[test]
    fn router_selection_rule_matches_the_reference_with_ties_and_non_finite_logits() {
        use moehal_core::reference::route_token;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for case in 0..3000 {
            let e = [4usize, 8, 16, 64, 256][rng.gen_range(0..5)];
            let logits: Vec<f64> = (0..e)
                .map(|_| match rng.gen_range(0..12) {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    2 => f64::NEG_INFINITY,
                    _ => rng.gen_range(-2..3) as f64, // small set: many exact ties
                })
                .collect();
            let bias: Option<Vec<f32>> = rng
                .gen_bool(0.5)
                .then(|| (0..e).map(|_| [0.0, 0.5, -0.5][rng.gen_range(0..3)]).collect());
            let scoring = [Scoring::Softmax, Scoring::Sigmoid, Scoring::SqrtSoftplus][rng.gen_range(0..3)];
            let group = if rng.gen_bool(0.5) {
                let n_group = [2usize, 4][rng.gen_range(0..2)];
                // top2_sum needs two experts a group (validation rejects it otherwise)
                let score = if e / n_group >= 2 && rng.gen_bool(0.5) {
                    GroupScore::Top2Sum
                } else {
                    GroupScore::Max
                };
                Some(GroupLimit {
                    n_group,
                    topk_group: rng.gen_range(1..=n_group),
                    score,
                })
            } else {
                None
            };
            let per_group = group.map_or(e, |g| g.topk_group * e / g.n_group);
            let cfg = RouterConfig {
                topk: rng.gen_range(1..=per_group.min(e)),
                scoring,
                group,
                renormalize: rng.gen_bool(0.5),
                routed_scaling_factor: 2.5,
            };
            let r = route_token(&cfg, &logits, bias.as_deref());
            let (ids, w) = router_mirror(&cfg, &logits, &r.scores, bias.as_deref());
            assert_eq!(ids, r.ids, "case {case}: {cfg:?} {logits:?} {bias:?}");
            for (a, b) in w.iter().zip(&r.weights) {
                assert!((a - b).abs() <= 1e-12, "case {case}: weight {a} vs {b}");
            }
        }
    }

    /// router_hash_<dtype> in f32 as the kernel computes it (softmax max and sum over the finite
    /// logits, `rt_score` for sigmoid / sqrt_softplus, renormalize over the k slots with 1e-20,
    /// then the scaling factor), lane 0's loop over the table row.
    fn hash_mirror(cfg: &RouterConfig, logits: &[f32], row: &[i32]) -> Vec<f32> {
        let fin = |x: f32| x.is_finite();
        let (mut mx, mut sum) = (f32::NEG_INFINITY, 0f32);
        if cfg.scoring == Scoring::Softmax {
            mx = logits
                .iter()
                .copied()
                .filter(|&l| fin(l))
                .fold(f32::NEG_INFINITY, f32::max);
            sum = logits.iter().filter(|&&l| fin(l)).map(|&l| (l - mx).exp()).sum();
        }
        let score = |x: f32| match cfg.scoring {
            Scoring::Softmax => (x - mx).exp() / sum,
            Scoring::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Scoring::SqrtSoftplus => {
                let sp = if x > 0.0 {
                    x + (-x).exp().ln_1p()
                } else {
                    x.exp().ln_1p()
                };
                if x < -20.0 {
                    (0.5 * x).exp()
                } else {
                    sp.sqrt()
                }
            }
        };
        let w: Vec<f32> = row
            .iter()
            .map(|&id| {
                let l = logits[id as usize];
                if fin(l) {
                    score(l)
                } else {
                    0.0
                }
            })
            .collect();
        let den = w.iter().sum::<f32>() + 1e-20;
        w.iter()
            .map(|&x| if cfg.renormalize { x / den } else { x } * cfg.routed_scaling_factor)
            .collect()
    }

    /// Hash routing: the kernel's f32 weights are the reference's (f64) within OPS.md's 1e-5
    /// (repeats, non-finite logits, every scoring), and the launch covers every token once
    /// (token t: block t/8, warp t%8).
    #[test]
    fn router_hash_weights_and_grid_match_the_reference() {
        use moehal_core::reference::hash_route_token;
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        for case in 0..2000 {
            let e = [2usize, 8, 37, 256, 600][rng.gen_range(0..5)];
            let logits: Vec<f32> = (0..e)
                .map(|_| match rng.gen_range(0..15) {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    _ => rng.gen_range(-30.0f32..12.0),
                })
                .collect();
            let k = rng.gen_range(1..=e.min(8));
            let row: Vec<i32> = (0..k).map(|_| rng.gen_range(0..e as i32)).collect();
            let cfg = RouterConfig {
                topk: k,
                scoring: [Scoring::Softmax, Scoring::Sigmoid, Scoring::SqrtSoftplus][rng.gen_range(0..3)],
                group: None,
                renormalize: rng.gen_bool(0.5),
                routed_scaling_factor: [1.0, 2.5][rng.gen_range(0..2)],
            };
            let l64: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
            let want = hash_route_token(&cfg, &l64, &row);
            let got = hash_mirror(&cfg, &logits, &row);
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() <= 1e-5,
                    "case {case} slot {j}: {g} vs {w} ({cfg:?})"
                );
            }
        }
        for t in [1usize, 7, 8, 9, 4096, 100_003] {
            let g = hash_grid(t) as usize;
            assert!(g * 8 >= t && (g - 1) * 8 < t, "T {t}: {g} blocks");
        }
    }
}
