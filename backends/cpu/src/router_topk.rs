//! `router_topk` (OPS.md §2) on raw slices: one fused pass per token (score, bias, group limit,
//! selection, weights), tokens in parallel.
//!
//! Scores are computed in f32 with the SIMD `exp` of the kernel table (softmax, sigmoid) or libm
//! (`sqrt_softplus`); selection keeps a sorted list of the `k` best `(ŝ, index)` pairs, inserting
//! only strictly better values while scanning experts in ascending order, which is exactly the
//! lower-index-wins tie rule. Non-finite logits (and non-finite `ŝ`) are excluded; missing slots are
//! filled with the lowest unchosen indices at weight 0.

use crate::elem::Elem;
use crate::pool::Pool;
use crate::simd::Kernels;
use moehal_core::ops::{GroupScore, RouterConfig, Scoring};
use moehal_core::{Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;

const OP: &str = "router_topk";
/// Tokens per parallel task.
const CHUNK: usize = 32;

#[derive(Default)]
struct Scratch {
    l: Vec<f32>,
    s: Vec<f32>,
    sel: Vec<f32>,
    taken: Vec<bool>,
    gs: Vec<f32>,
    keep: Vec<bool>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Route `t` tokens of `e` logits each: `ids`/`weights` are `[T, k]`, `counts` (optional) `[E]`.
///
/// `cfg` must have passed core validation (`1 <= k <= E`, group rules). Errors: `InvalidArgument`
/// on slice lengths that do not match `t`, `e`, `k`; nothing is written then.
#[allow(clippy::too_many_arguments)]
pub fn router_topk<T: Elem>(
    kern: &Kernels,
    pool: &Pool,
    cfg: &RouterConfig,
    logits: &[T],
    t: usize,
    e: usize,
    bias: Option<&[f32]>,
    ids: &mut [i32],
    weights: &mut [f32],
    counts: Option<&mut [i64]>,
) -> Result<()> {
    let k = cfg.k;
    if logits.len() != t * e || ids.len() != t * k || weights.len() != t * k || k == 0 || k > e {
        return Err(Error::invalid(
            OP,
            "logits",
            "slice lengths do not match [T, E] / [T, k]",
        ));
    }
    if bias.is_some_and(|b| b.len() != e) || counts.as_ref().is_some_and(|c| c.len() != e) {
        return Err(Error::invalid(OP, "bias", "bias / expert_counts must have E elements"));
    }
    let run_chunk = |(ci, (ids_c, w_c)): (usize, (&mut [i32], &mut [f32]))| {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let n = ids_c.len() / k;
            for i in 0..n {
                let tok = ci * CHUNK + i;
                route(
                    kern,
                    cfg,
                    &logits[tok * e..(tok + 1) * e],
                    bias,
                    &mut ids_c[i * k..(i + 1) * k],
                    &mut w_c[i * k..(i + 1) * k],
                    &mut s,
                );
            }
        })
    };
    let chunks = ids.chunks_mut(CHUNK * k).zip(weights.chunks_mut(CHUNK * k)).enumerate();
    if t <= CHUNK || pool.threads() == 1 {
        chunks.for_each(run_chunk);
    } else {
        pool.install(|| {
            ids.par_chunks_mut(CHUNK * k)
                .zip(weights.par_chunks_mut(CHUNK * k))
                .enumerate()
                .for_each(run_chunk)
        });
    }
    if let Some(c) = counts {
        c.fill(0);
        for &id in ids.iter() {
            c[id as usize] += 1;
        }
    }
    Ok(())
}

fn route<T: Elem>(
    kern: &Kernels,
    cfg: &RouterConfig,
    logits: &[T],
    bias: Option<&[f32]>,
    ids: &mut [i32],
    w: &mut [f32],
    sc: &mut Scratch,
) {
    let e = logits.len();
    let k = cfg.k;
    let Scratch {
        l,
        s,
        sel,
        taken,
        gs,
        keep,
    } = sc;
    l.resize(e, 0.0);
    s.resize(e, 0.0);
    sel.resize(e, 0.0);
    kern.widen(logits, l);
    // Non-finite logits become -inf: they score 0 under every scoring function and add nothing to
    // the softmax denominator; `sel` below excludes them by the original value.
    let mut any_nonfinite = false;
    for v in l.iter_mut() {
        if !v.is_finite() {
            *v = f32::NEG_INFINITY;
            any_nonfinite = true;
        }
    }
    match cfg.scoring {
        Scoring::Softmax => {
            let max = l.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
            if max == f32::NEG_INFINITY {
                s.fill(0.0);
            } else {
                let denom = kern.exp_shift(l, s, max);
                for v in s.iter_mut() {
                    *v /= denom;
                }
            }
        }
        Scoring::Sigmoid => kern.sigmoid(l, s),
        Scoring::SqrtSoftplus => {
            for (o, &x) in s.iter_mut().zip(l.iter()) {
                let sp = if x > 0.0 {
                    x + (-x).exp().ln_1p()
                } else {
                    x.exp().ln_1p()
                };
                *o = sp.sqrt();
            }
        }
    }
    match bias {
        Some(b) => {
            for i in 0..e {
                let v = s[i] + b[i];
                sel[i] = if v.is_finite() { v } else { f32::NEG_INFINITY };
            }
        }
        None => sel.copy_from_slice(s),
    }
    if any_nonfinite {
        for i in 0..e {
            if l[i] == f32::NEG_INFINITY {
                sel[i] = f32::NEG_INFINITY;
                s[i] = 0.0;
            }
        }
    }
    if let Some(g) = cfg.effective_group() {
        let per = e / g.n_group;
        gs.clear();
        for gi in 0..g.n_group {
            let part = &sel[gi * per..(gi + 1) * per];
            let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
            for &v in part {
                // Branch-free running top two (sel holds no NaN).
                let lo = if v < a { v } else { a };
                b = if lo > b { lo } else { b };
                a = if v > a { v } else { a };
            }
            gs.push(match g.score {
                GroupScore::Max => a,
                GroupScore::Top2Sum => a + b,
            });
        }
        // Keep the topk_group best groups (ties: lower group index): drop the others.
        keep.clear();
        keep.resize(g.n_group, false);
        for _ in 0..g.topk_group {
            let mut best = usize::MAX;
            for (gi, &v) in gs.iter().enumerate() {
                if !keep[gi] && (best == usize::MAX || v > gs[best]) {
                    best = gi;
                }
            }
            keep[best] = true;
        }
        for gi in 0..g.n_group {
            if !keep[gi] {
                sel[gi * per..(gi + 1) * per].fill(f32::NEG_INFINITY);
            }
        }
    }
    // Top-k by insertion, scanning in index order; only strictly larger values displace.
    let mut vals = [f32::NEG_INFINITY; 64];
    let mut cnt = 0usize;
    let big = k > vals.len();
    if big {
        let mut order: Vec<usize> = (0..e).filter(|&i| sel[i] > f32::NEG_INFINITY).collect();
        order.sort_by(|&a, &b| sel[b].total_cmp(&sel[a]).then(a.cmp(&b)));
        order.truncate(k);
        cnt = order.len();
        for (j, &i) in order.iter().enumerate() {
            ids[j] = i as i32;
        }
    } else {
        for (ci, chunk) in sel.chunks(16).enumerate() {
            // Lanes that can enter the list (a vectorizable compare into a bit mask); most chunks
            // of a full list have none.
            let thr = if cnt == k { vals[k - 1] } else { f32::NEG_INFINITY };
            let mut mask = 0u32;
            for (l, &v) in chunk.iter().enumerate() {
                mask |= u32::from(v > thr) << l;
            }
            while mask != 0 {
                let ii = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let v = chunk[ii];
                // NaN and -inf are never selectable; a full list only takes strictly larger values.
                if cnt == k && v <= vals[k - 1] {
                    continue;
                }
                let mut pos = if cnt < k { cnt } else { k - 1 };
                while pos > 0 && vals[pos - 1] < v {
                    vals[pos] = vals[pos - 1];
                    ids[pos] = ids[pos - 1];
                    pos -= 1;
                }
                vals[pos] = v;
                ids[pos] = (ci * 16 + ii) as i32;
                if cnt < k {
                    cnt += 1;
                }
            }
        }
    }
    if cnt < k {
        taken.clear();
        taken.resize(e, false);
        for &id in &ids[..cnt] {
            taken[id as usize] = true;
        }
        let mut next = 0usize;
        for slot in ids[cnt..].iter_mut() {
            while taken[next] {
                next += 1;
            }
            *slot = next as i32;
            next += 1;
        }
    }
    for j in 0..k {
        w[j] = if j < cnt { s[ids[j] as usize] } else { 0.0 };
    }
    if cfg.renormalize {
        let sum = w.iter().sum::<f32>() + 1e-20;
        for v in w.iter_mut() {
            *v /= sum;
        }
    }
    for v in w.iter_mut() {
        *v *= cfg.routed_scaling_factor;
    }
}
