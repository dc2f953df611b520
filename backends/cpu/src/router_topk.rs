//! `router_topk` (OPS.md §2) on raw slices: one fused pass per token (score, bias, group limit,
//! selection, weights), tokens in parallel.
//!
//! Scores are computed in f32 with the SIMD `exp` of the kernel table (softmax, sigmoid) or libm
//! (`sqrt_softplus`, as `exp(x / 2)` below x = -20 so it underflows where the exact score does);
//! selection scores are `fl32(s + bias)` and group scores f32 (`top2_sum` = `fl32(ŝ1 + ŝ2)`), as
//! OPS.md §2 steps 1–3 pin them, so exact f32 ties (saturation, underflow, equal logits, equal
//! biased scores) go to the lower index exactly as in the reference; selection keeps a sorted list of the `k` best `(ŝ, index)` pairs, inserting
//! only strictly better values while scanning experts in ascending order, which is exactly the
//! lower-index-wins tie rule. With a vector table (AVX-512, AVX2, NEON; `k <= 16`) only a short
//! list of candidates is scanned: every `ŝ` at least the k-th largest of the 16 lane-wise maxima (a
//! bound below the k-th largest `ŝ`, so the top `k` and all their ties are in it), gathered in index
//! order (AVX-512 compress stores, AVX2 a `vpermps` left-pack), ranked in registers; the group
//! top-two scores are lane-wise max/min (on AVX2 then one transposed reduction of 8 groups at once).
//! Softmax without bias selects on the unnormalized `exp` values and divides only the `k + 1` picks
//! (`softmax_select`: the same ids and weights bit for bit, declining to the full path where the
//! division merges the boundary). Non-finite logits (and non-finite `ŝ`) are excluded; missing slots
//! are filled with the lowest unchosen indices at weight 0.

use crate::elem::{Elem, ElemKind};
use crate::pool::Pool;
use crate::simd::Kernels;
use moehal_core::ops::{GroupScore, RouterConfig, Scoring};
use moehal_core::{Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;

const OP: &str = "router_topk";
/// Tokens per parallel task.
const CHUNK: usize = 32;
/// Tokens below which `router_topk` runs on the calling thread (issue 16 item 9: two chunks, the
/// least a split can use; measured with `moehal bench`, the pool pays off from 64 tokens).
pub const SERIAL_BELOW: usize = 2 * CHUNK;

#[derive(Default)]
struct Scratch {
    l: Vec<f32>,
    s: Vec<f32>,
    sel: Vec<f32>,
    taken: Vec<bool>,
    gs: Vec<f32>,
    keep: Vec<bool>,
    cv: Vec<f32>,
    ci: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Route `t` tokens of `e` logits each: `ids`/`weights` are `[T, k]`, `counts` (optional) `[E]`.
///
/// `cfg` must have passed core validation (`1 <= k <= E`, group rules). Errors: `InvalidArgument`
/// on slice lengths that do not match `t`, `e`, `k`; nothing is written then.
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
    let k = cfg.topk;
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
    if !pool.worth_parallel(t, SERIAL_BELOW) {
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

/// The `k` largest finite `sel` values (no NaN in `sel`; `-inf` = not selectable) into `ids[..cnt]`,
/// by value descending, ties by lower index; returns `cnt` (`< k` when fewer are selectable).
/// `kern = None` forces the portable scan (tests compare the two). `skip`: see
/// [`Kernels::topk_select`] (ignored by the portable scan).
fn select_topk(
    kern: Option<&Kernels>,
    sel: &[f32],
    k: usize,
    skip: u64,
    ids: &mut [i32],
    cv: &mut Vec<f32>,
    ci: &mut Vec<u32>,
) -> usize {
    let e = sel.len();
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
    } else if let Some(nc) = {
        cv.resize(e + 16, 0.0);
        ci.resize(e + 16, 0);
        kern.and_then(|kn| kn.topk_select(sel, k, skip, cv, ci, ids))
    } {
        if nc <= 16 {
            // Ranked in registers: ids[..min(nc, k)] are final.
            cnt = nc.min(k);
        } else {
            // Many candidates (ties): they arrive in ascending index order and hold every element
            // that can be selected; insertion with strict comparisons keeps the lower index first.
            for (&v, &i) in cv[..nc].iter().zip(&ci[..nc]) {
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
                ids[pos] = i as i32;
                if cnt < k {
                    cnt += 1;
                }
            }
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
    cnt
}

/// Largest value of `v` (no NaN in `v`; `-inf` when empty), by 16 lane-wise maxima so it vectorizes.
fn max_of(v: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 16];
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        for (a, &b) in m.iter_mut().zip(c) {
            *a = if b > *a { b } else { *a };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    m.iter().fold(tail, |a, &b| if b > a { b } else { a })
}

/// Softmax routing of one token without bias (OPS.md §2 steps 1, 4, 5 up to renormalization),
/// dividing only the picked scores: `ids[..k]` and `w[..k]` (the scores `s` of the picks) exactly as
/// [`score_portable`] + [`select_topk`] give them, or `false` (`s` clobbered, `ids` / `w` not
/// written) where this shortcut does not apply and the caller must take the full path.
///
/// `s_i = fl(e_i / d)` with `e_i = exp(l_i - max)` and `d = sum e` is non-decreasing in `e_i`, so the
/// `k + 1` largest `e` (ties: lower index) are the `k + 1` largest `s` except where the division
/// rounds two different `e` to one `s`. Such a tie inside the top `k` only reorders it (the picks are
/// re-sorted by `(s desc, index asc)`); one across the boundary (`s` of the `(k+1)`-th equal to the
/// `k`-th's) could change the set, and then this returns `false`. So the selection is the one on
/// the divided scores, bit for bit, with `k + 1` divisions instead of `E`. Applies without a group limit, where every
/// logit is finite, `k < 16` and the table has a vector top-k kernel.
fn softmax_select(
    kern: &Kernels,
    src: &[f32],
    k: usize,
    s: &mut [f32],
    ids: &mut [i32],
    w: &mut [f32],
    cv: &mut Vec<f32>,
    ci: &mut Vec<u32>,
) -> bool {
    let e = src.len();
    if k >= 16 || src.iter().fold(false, |a, v| a | !v.is_finite()) {
        return false;
    }
    let denom = kern.exp_shift(src, s, max_of(src));
    let kk = (k + 1).min(e);
    let mut pick = [0i32; 16];
    cv.resize(e + 16, 0.0);
    ci.resize(e + 16, 0);
    // Every e is finite and >= 0, so at least kk candidates exist; more than 16 (many ties) or no
    // kernel: the full path.
    match kern.topk_select(s, kk, 0, cv, ci, &mut pick) {
        Some(n) if n <= 16 => {}
        _ => return false,
    }
    let mut q = [0f32; 16];
    for (qj, &id) in q.iter_mut().zip(&pick[..kk]) {
        *qj = s[id as usize] / denom;
    }
    if kk > k && q[k] == q[k - 1] {
        return false;
    }
    // Insertion by (q desc, id asc): e-order already is q-order up to equal q, so this only moves
    // an id past equal scores.
    for j in 1..k {
        let (v, id) = (q[j], pick[j]);
        let mut p = j;
        while p > 0 && (q[p - 1] < v || (q[p - 1] == v && pick[p - 1] > id)) {
            q[p] = q[p - 1];
            pick[p] = pick[p - 1];
            p -= 1;
        }
        q[p] = v;
        pick[p] = id;
    }
    ids[..k].copy_from_slice(&pick[..k]);
    w[..k].copy_from_slice(&q[..k]);
    true
}

/// Scores and selection scores of one token without the fused kernel (OPS.md §2 steps 1, 2, 6):
/// `l` holds the widened logits (rewritten: non-finite become `-inf`).
fn score_portable(
    kern: &Kernels,
    cfg: &RouterConfig,
    bias: Option<&[f32]>,
    l: &mut [f32],
    s: &mut [f32],
    sel: &mut [f32],
) {
    // Branch-free passes (they vectorize): detect first, rewrite only when needed.
    let any_nonfinite = l.iter().fold(false, |a, v| a | !v.is_finite());
    if any_nonfinite {
        for v in l.iter_mut() {
            *v = if v.is_finite() { *v } else { f32::NEG_INFINITY };
        }
    }
    match cfg.scoring {
        Scoring::Softmax => {
            let max = max_of(l);
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
                *o = sqrt_softplus(x);
            }
        }
    }
    match bias {
        Some(b) => {
            for ((o, &sv), &bv) in sel.iter_mut().zip(s.iter()).zip(b) {
                let v = sv + bv;
                *o = if v.is_finite() { v } else { f32::NEG_INFINITY };
            }
        }
        None => sel.copy_from_slice(s),
    }
    if any_nonfinite {
        for ((o, sv), &lv) in sel.iter_mut().zip(s.iter_mut()).zip(l.iter()) {
            let dead = lv == f32::NEG_INFINITY;
            *o = if dead { f32::NEG_INFINITY } else { *o };
            *sv = if dead { 0.0 } else { *sv };
        }
    }
}

/// Below this logit `sqrt_softplus` is computed as `exp(x / 2)`.
const SQRT_SOFTPLUS_TAIL: f32 = -20.0;

/// `sqrt(softplus(x))` in f32 (OPS.md §2 step 1, DeepSeek-V4).
///
/// For `x < -20` it is `exp(x / 2)`: there `softplus(x) = ln(1 + e^x) = e^x (1 - e^x / 2 + ...)`, so
/// `sqrt(softplus(x)) = e^(x/2) (1 - e^x / 4 + ...)`, a relative error below 1e-9 (f32's half-ulp is
/// 6e-8). The direct formula `sqrt(ln_1p(exp(x)))` loses the score where `exp(x)` leaves f32's
/// normal range (x < -87: subnormal, then 0 below -104) although its square root is still a normal
/// f32 down to x ≈ -175 and a subnormal down to x ≈ -207. OPS.md step 1 asks for the f32 nearest
/// the exact score, with underflow only below f32's smallest subnormal; `exp(x / 2)` gives that
/// (e.g. logits [5, -300, -200], k = 2 select [0, 2] as the reference does: 3.7e-44 is a subnormal,
/// not 0), where the direct formula would give two zeros and pick [0, 1] (a difference the near-tie
/// rule would absorb, but one we need not make).
fn sqrt_softplus(x: f32) -> f32 {
    if x < SQRT_SOFTPLUS_TAIL {
        (0.5 * x).exp()
    } else if x > 0.0 {
        (x + (-x).exp().ln_1p()).sqrt()
    } else {
        x.exp().ln_1p().sqrt()
    }
}

/// Group limit (OPS.md §2 step 3) on `sel` (no NaN) without SIMD: group scores (top value, or the
/// sum of the two largest), keep the `topk_group` best (ties: lower group index), `-inf` elsewhere.
fn group_limit_portable(
    sel: &mut [f32],
    n_group: usize,
    top2sum: bool,
    topk_group: usize,
    gs: &mut Vec<f32>,
    keep: &mut Vec<bool>,
) {
    let per = sel.len() / n_group;
    gs.clear();
    for gi in 0..n_group {
        let part = &sel[gi * per..(gi + 1) * per];
        let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for &v in part {
            // Branch-free running top two (sel holds no NaN).
            let lo = if v < a { v } else { a };
            b = if lo > b { lo } else { b };
            a = if v > a { v } else { a };
        }
        gs.push(if top2sum { a + b } else { a });
    }
    // Group gi is kept iff fewer than topk_group groups precede it in the order (score descending,
    // index ascending); gs holds no NaN.
    keep.clear();
    keep.extend(gs.iter().enumerate().map(|(gi, &v)| {
        let rank: usize = gs
            .iter()
            .enumerate()
            .map(|(h, &u)| usize::from(u > v) | usize::from(u == v && h < gi))
            .sum();
        rank < topk_group
    }));
    for gi in 0..n_group {
        if !keep[gi] {
            sel[gi * per..(gi + 1) * per].fill(f32::NEG_INFINITY);
        }
    }
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
    let k = cfg.topk;
    let Scratch {
        l,
        s,
        sel,
        taken,
        gs,
        keep,
        cv,
        ci,
    } = sc;
    l.resize(e, 0.0);
    s.resize(e, 0.0);
    sel.resize(e, 0.0);
    // Sigmoid scoring with a fused kernel: one pass from the logits (read in place when f32).
    let fused = cfg.scoring == Scoring::Sigmoid && {
        let src: &[f32] = if T::KIND == ElemKind::F32 {
            bytemuck::cast_slice(logits)
        } else {
            kern.widen(logits, l);
            l
        };
        kern.sigmoid_select(src, bias, s, sel)
    };
    // The shortcut selects the global top-k: only without a group limit (OPS.md §2 step 3 applies
    // the group limit to every scoring; a fresh user found softmax + groups returning the global
    // top-k here).
    if !fused && cfg.scoring == Scoring::Softmax && bias.is_none() && cfg.effective_group().is_none() {
        let src: &[f32] = if T::KIND == ElemKind::F32 {
            bytemuck::cast_slice(logits)
        } else {
            kern.widen(logits, l);
            l
        };
        if softmax_select(kern, src, k, s, ids, w, cv, ci) {
            finish_weights(cfg, w);
            return;
        }
    }
    if !fused {
        kern.widen(logits, l);
        score_portable(kern, cfg, bias, l, s, sel);
    }
    // 16-element blocks known to hold only -inf (dropped groups), skipped by the selection.
    let mut skip = 0u64;
    if let Some(g) = cfg.effective_group() {
        let top2 = g.score == GroupScore::Top2Sum;
        let per = e / g.n_group;
        match kern.group_limit(sel, g.n_group, per, top2, g.topk_group) {
            Some(kept) => {
                let bpg = per / 16;
                for gi in (0..g.n_group).filter(|&gi| kept & (1 << gi) == 0) {
                    for b in gi * bpg..(gi + 1) * bpg {
                        if b < 64 {
                            skip |= 1 << b;
                        }
                    }
                }
            }
            None => group_limit_portable(sel, g.n_group, top2, g.topk_group, gs, keep),
        }
    }
    let cnt = select_topk(Some(kern), sel, k, skip, ids, cv, ci);
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
    finish_weights(cfg, w);
}

/// Hash routing (OPS.md §2 "Hash routing"): `ids[t] = tid2eid[token_ids[t]]` in table order,
/// weights = step 5 on the token's scores (step 1, as [`router_topk`] computes them) of those ids.
/// `tid2eid` is `[V, k]` row-major, `token_ids` `[T]`, `ids`/`weights` `[T, k]`, `counts` (optional)
/// `[E]`, the histogram of `ids` (a repeated id counts twice). `cfg.group` is ignored.
///
/// Errors: `InvalidArgument` on slice lengths that do not match, a token id outside `[0, V)` or a
/// looked-up entry outside `[0, E)` ([`moehal_core::ops::hash_rows`]); nothing is written then.
pub fn router_hash<T: Elem>(
    kern: &Kernels,
    cfg: &RouterConfig,
    logits: &[T],
    t: usize,
    e: usize,
    tid2eid: &[i32],
    token_ids: &[i64],
    ids: &mut [i32],
    weights: &mut [f32],
    counts: Option<&mut [i64]>,
) -> Result<()> {
    let k = cfg.topk;
    if logits.len() != t * e
        || token_ids.len() != t
        || ids.len() != t * k
        || weights.len() != t * k
        || k == 0
        || !tid2eid.len().is_multiple_of(k)
        || counts.as_ref().is_some_and(|c| c.len() != e)
    {
        return Err(Error::invalid(
            OP,
            "logits",
            "slice lengths do not match [T, E] / [V, k] / [T] / [T, k] / [E]",
        ));
    }
    let rows = moehal_core::ops::hash_rows(token_ids, tid2eid, tid2eid.len() / k, k, e)?;
    let (mut l, mut s, mut sel) = (vec![0f32; e], vec![0f32; e], vec![0f32; e]);
    for (ti, &r) in rows.iter().enumerate() {
        let row = &tid2eid[r * k..(r + 1) * k];
        kern.widen(&logits[ti * e..(ti + 1) * e], &mut l);
        // Step 1 only (no bias: `sel` is not used).
        score_portable(kern, cfg, None, &mut l, &mut s, &mut sel);
        let w = &mut weights[ti * k..(ti + 1) * k];
        for (wj, &id) in w.iter_mut().zip(row) {
            *wj = s[id as usize];
        }
        finish_weights(cfg, w);
        ids[ti * k..(ti + 1) * k].copy_from_slice(row);
    }
    if let Some(c) = counts {
        c.fill(0);
        for &id in ids.iter() {
            c[id as usize] += 1;
        }
    }
    Ok(())
}

/// OPS.md §2 step 5 on the picked scores `w`: renormalize (sum plus 1e-20) if asked, then scale
/// exactly once.
fn finish_weights(cfg: &RouterConfig, w: &mut [f32]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Isa;

    fn lcg(s: &mut u64) -> u64 {
        *s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *s >> 33
    }

    /// Every table with vector router kernels (AVX-512 and AVX2 on x86-64, NEON on aarch64) this
    /// machine runs; prints a skip note when there is none.
    fn vector_tables() -> Vec<&'static Kernels> {
        let tables: Vec<&Kernels> = Isa::all_available()
            .into_iter()
            .filter_map(Kernels::for_isa)
            .filter(|k| {
                k.topk_select(&[0.0], 1, 0, &mut [0.0; 17], &mut [0; 17], &mut [0])
                    .is_some()
            })
            .collect();
        if tables.is_empty() {
            println!("skipped: no table with vector router kernels on this CPU");
        }
        tables
    }

    /// The vectorized selection and group scores give exactly the portable results, on inputs full
    /// of exact ties and -inf.
    #[test]
    fn simd_selection_equals_scalar() {
        let tables = vector_tables();
        for kern in tables {
            selection_equals_scalar(kern);
        }
    }

    /// The softmax shortcut (select on `exp`, divide only the picks) gives exactly the ids and
    /// weights of the full path (divide all, portable selection), on every table with a vector
    /// top-k kernel, including inputs built so that the division rounds neighbouring `exp` values to
    /// one score (there the shortcut must decline or still agree).
    #[test]
    fn softmax_shortcut_equals_full_path() {
        let tables = vector_tables();
        let cfg = RouterConfig {
            topk: 8,
            scoring: Scoring::Softmax,
            group: None,
            renormalize: false,
            routed_scaling_factor: 1.0,
        };
        for kern in tables {
            let mut seed = 11u64;
            let (mut taken, mut declined) = (0usize, 0usize);
            let (mut cv, mut ci) = (Vec::new(), Vec::new());
            for case in 0..4000 {
                let e = [8usize, 9, 16, 60, 128, 256, 384, 100][case % 8];
                let class = case % 5;
                let mut l: Vec<f32> = (0..e)
                    .map(|_| {
                        let r = lcg(&mut seed);
                        match class {
                            // Plain random logits.
                            0 => (r % 100_000) as f32 * 1e-4 - 5.0,
                            // Few levels: exact ties everywhere.
                            1 => (r % 4) as f32 * 0.5,
                            // Neighbouring logits a few ulp apart: exp values one or two ulp apart,
                            // which the division may merge.
                            2 => 1.0 + (r % 6) as f32 * f32::EPSILON,
                            // Wide range: scores that underflow (and tie at 0) after the division.
                            3 => (r % 300) as f32 - 250.0,
                            // Values near a power of two where the ulp changes.
                            _ => 2.0 - (r % 8) as f32 * f32::EPSILON,
                        }
                    })
                    .collect();
                if class == 3 && case % 3 == 0 {
                    l[(case * 7) % e] = 40.0;
                }
                for k in [1usize, 2, 6, 8, 15].into_iter().filter(|&k| k <= e) {
                    let mut s = vec![0f32; e];
                    let (mut ia, mut wa) = (vec![-1i32; k], vec![f32::NAN; k]);
                    let fast = softmax_select(kern, &l, k, &mut s, &mut ia, &mut wa, &mut cv, &mut ci);
                    // The full path: scores for all, portable selection.
                    let mut lw = l.clone();
                    let (mut s2, mut sel) = (vec![0f32; e], vec![0f32; e]);
                    score_portable(kern, &RouterConfig { topk: k, ..cfg }, None, &mut lw, &mut s2, &mut sel);
                    let mut ib = vec![-1i32; k];
                    let nb = select_topk(None, &sel, k, 0, &mut ib, &mut cv, &mut ci);
                    assert_eq!(nb, k);
                    if fast {
                        taken += 1;
                        assert_eq!(ia, ib, "case {case} e={e} k={k}");
                        let wb: Vec<u32> = ib.iter().map(|&i| s2[i as usize].to_bits()).collect();
                        let wa: Vec<u32> = wa.iter().map(|v| v.to_bits()).collect();
                        assert_eq!(wa, wb, "case {case} e={e} k={k}");
                    } else {
                        declined += 1;
                    }
                }
            }
            // Both branches ran: the shortcut on most inputs, the decline on merged boundaries.
            println!("{:?}: shortcut {taken}, declined {declined}", kern.isa());
            assert!(
                taken > (taken + declined) / 3 && declined > 0,
                "taken {taken}, declined {declined}"
            );
        }
    }

    fn selection_equals_scalar(kern: &Kernels) {
        let mut seed = 5u64;
        let (mut cv, mut ci) = (Vec::new(), Vec::new());
        for case in 0..3000 {
            let e = [16usize, 32, 64, 100, 128, 256, 384, 7][case % 8];
            let levels = [3u64, 20, 1 << 20][case % 3];
            let sel: Vec<f32> = (0..e)
                .map(|_| {
                    let r = lcg(&mut seed);
                    if r.is_multiple_of(11) || (case % 17 == 0 && !r.is_multiple_of(3)) {
                        f32::NEG_INFINITY
                    } else {
                        (r % levels) as f32 * 0.125 - 1.0
                    }
                })
                .collect();
            for k in [1usize, 2, 6, 8, 16].into_iter().filter(|&k| k <= e) {
                let (mut a, mut b) = (vec![-1i32; k], vec![-1i32; k]);
                let na = select_topk(Some(kern), &sel, k, 0, &mut a, &mut cv, &mut ci);
                let nb = select_topk(None, &sel, k, 0, &mut b, &mut cv, &mut ci);
                assert_eq!((na, &a[..na]), (nb, &b[..nb]), "case {case} e={e} k={k}");
                // The portable scan itself against a full sort.
                let mut order: Vec<usize> = (0..e).filter(|&i| sel[i] > f32::NEG_INFINITY).collect();
                order.sort_by(|&x, &y| sel[y].total_cmp(&sel[x]).then(x.cmp(&y)));
                order.truncate(k);
                let want: Vec<i32> = order.iter().map(|&i| i as i32).collect();
                assert_eq!(&b[..nb], &want[..], "case {case} e={e} k={k}");
            }
            for per in [16usize, 32, 64] {
                if !e.is_multiple_of(per) || e / per > 16 {
                    continue;
                }
                let ng = e / per;
                for top2 in [false, true] {
                    for tg in 1..=ng {
                        let mut a = sel.clone();
                        let mut b = sel.clone();
                        let mask = kern.group_limit(&mut a, ng, per, top2, tg).unwrap();
                        let (mut gs, mut keep) = (Vec::new(), Vec::new());
                        group_limit_portable(&mut b, ng, top2, tg, &mut gs, &mut keep);
                        let want: u32 = keep.iter().enumerate().map(|(i, &kp)| u32::from(kp) << i).sum();
                        assert_eq!(mask, want, "case {case} per={per} top2={top2} tg={tg}");
                        assert_eq!(mask.count_ones() as usize, tg);
                        let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "case {case} per={per} top2={top2} tg={tg}");
                        // Selection skipping the dropped groups' blocks = full portable scan.
                        let bpg = per / 16;
                        let mut skip = 0u64;
                        for gi in (0..ng).filter(|&gi| mask & (1 << gi) == 0) {
                            for blk in (gi * bpg..(gi + 1) * bpg).filter(|&blk| blk < 64) {
                                skip |= 1 << blk;
                            }
                        }
                        for k in [1usize, 8, 16].into_iter().filter(|&k| k <= e) {
                            let (mut x, mut y) = (vec![-1i32; k], vec![-1i32; k]);
                            let nx = select_topk(Some(kern), &a, k, skip, &mut x, &mut cv, &mut ci);
                            let ny = select_topk(None, &a, k, 0, &mut y, &mut cv, &mut ci);
                            assert_eq!((nx, &x[..nx]), (ny, &y[..ny]), "case {case} per={per} tg={tg} k={k}");
                        }
                    }
                }
            }
        }
    }
}
