//! Open-time probes: which call patterns the installed aclnn ops accept **and** compute as
//! documented, and therefore which path each op takes. `supports()` (and so `moehal kernels`)
//! reports the decision and the reason.
//!
//! Each probe is a complete tiny launch (phase one, workspace, launch) with fixed inputs whose
//! documented result is known, compared with that result. A full launch rather than phase one
//! alone, because (a) the executor of a successful phase one may only be released by launching it
//! (`aclDestroyAclOpExecutor` is documented for repeatable executors only, audit L1), and (b) some
//! faults are wrong values, not rejections (rowIdxType, audit P2; an old MoeGatingTopK that ignored
//! `normType`, audit P6). A probe that fails only takes the device path away; it never makes
//! `open` fail.
//!
//! Sources (tags as in `backends/ascend-emu/RULES.md`; P1-P7 are the audit faults the route table of
//! backends/ascend/README.md cites):
//! - `aclnnMoeInitRoutingV3`: P1 expandedScaleOut required, P2 rowIdxType 0 = gather
//!   (`expandedRowIdx[slot] = position`), P3 activeNum = N·K, expertTokensNumType 1 (count),
//!   activeExpertRange `[0, E]` (2025 code; the 2026 code also accepts NULL).
//! - `aclnnMoeInitRoutingV2`: `expandedRowIdx[sortedRowIdx[i]] = i`, `expandedX[i] =
//!   x[sortedRowIdx[i] / k]`, flag 1 = cumulative INT32 counts ([OT] moe_v2_gather_out.h); the
//!   8.3 alpha page's `% numRows` variant (L5) is what the k = 2 probe tells apart.
//! - `aclnnMoeGatingTopK`: P4 `out` FLOAT `[T,E]` required, P5 bias dtype = x dtype, P6 8.2/8.3
//!   pages: sigmoid with top-2-sum groups only, softmax / max from 8.5; torch_npu 7.0.0: E = 256,
//!   kGroup 4, bias mandatory, so the probe shape is E = 256, 8 groups, kGroup 4, k = 8.
//! - `aclnnMoeFinalizeRoutingV2`: FLOAT scales beside BFLOAT16 expandedX on A2/A3 ([OTF] doc,
//!   "混合精度模式", audit L2); used only where the probe shows it.

use moehal_ascend_sys as sys;
use moehal_core::ops::{GroupLimit, GroupScore, RouterConfig, RouterTopk, Scoring};
use moehal_core::{Backend, BackendExt, DType, Reference, Result};

use crate::backend::scratch_desc;
use crate::ffi::{DevMem, IntArray, Outcome, Runtime, Tensor};

/// How `moe_permute` (with `x`, no dropped slot) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PermutePath {
    /// `aclnnMoeInitRoutingV3` with the portable pattern; `range`: `activeExpertRange = [0, E]`
    /// is passed (else NULL, which only the 2026 code accepts).
    V3 { range: bool },
    /// `aclnnMoeInitRoutingV2` (flag 1, cumulative INT32 counts).
    V2,
    /// The reference on the host.
    Host,
}

/// A router pattern the backend may send to `aclnnMoeGatingTopK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GatingPattern {
    /// `normType` 1 (sigmoid) or 0 (softmax).
    pub sigmoid: bool,
    /// `None`: no group limit (groupCount 1, kGroup 1); `Some(true)`: top-2-sum groups
    /// (groupSelectMode 1); `Some(false)`: max groups (mode 0).
    pub top2: Option<bool>,
    /// A selection bias is passed.
    pub bias: bool,
}

impl GatingPattern {
    fn index(self) -> usize {
        let g = match self.top2 {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        };
        (self.sigmoid as usize) * 6 + g * 2 + self.bias as usize
    }

    fn all() -> impl Iterator<Item = GatingPattern> {
        (0..12).map(|i| GatingPattern {
            sigmoid: i / 6 == 1,
            top2: match (i % 6) / 2 {
                0 => None,
                1 => Some(true),
                _ => Some(false),
            },
            bias: i % 2 == 1,
        })
    }

    /// Short name, e.g. `sigmoid/top2-groups/bias`.
    pub fn name(self) -> String {
        format!(
            "{}/{}/{}",
            if self.sigmoid { "sigmoid" } else { "softmax" },
            match self.top2 {
                None => "no-groups",
                Some(true) => "top2-groups",
                Some(false) => "max-groups",
            },
            if self.bias { "bias" } else { "no-bias" }
        )
    }
}

/// The per-op decisions made at open time, with the reasons shown by `supports()`.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    /// Path of `moe_permute`.
    pub permute: PermutePath,
    /// Why (each candidate tried and what happened).
    pub permute_why: String,
    /// Per [`GatingPattern::index`]: `Ok` when `aclnnMoeGatingTopK` accepted the pattern and
    /// selected the documented experts, else what the probe found (empty vector when the op is
    /// absent).
    pub gating: Vec<std::result::Result<(), String>>,
    /// `aclnnMoeFinalizeRoutingV2` takes FLOAT scales beside BFLOAT16 expandedX.
    pub finalize_bf16_f32_scales: bool,
}

impl Routes {
    /// Whether the probe accepted `p` for `aclnnMoeGatingTopK`.
    pub fn gating_ok(&self, p: GatingPattern) -> bool {
        matches!(self.gating.get(p.index()), Some(Ok(())))
    }

    /// What the probe found for `p`, when it refused it.
    pub fn gating_refusal(&self, p: GatingPattern) -> Option<&str> {
        match self.gating.get(p.index()) {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }

    /// Run every probe the loaded op set calls for.
    pub fn probe(rt: &Runtime) -> Routes {
        let v = rt.lib.versions;
        let (permute, permute_why) = probe_permute(rt, v.init_routing);
        let gating = if v.gating {
            GatingPattern::all().map(|p| probe_gating(rt, p)).collect()
        } else {
            Vec::new()
        };
        let finalize_bf16_f32_scales = v.finalize && probe_finalize_mixed(rt).is_ok();
        Routes {
            permute,
            permute_why,
            gating,
            finalize_bf16_f32_scales,
        }
    }
}

// ============================================================================== helpers

fn upload<'r, T: bytemuck::Pod>(rt: &'r Runtime, v: &[T]) -> Result<DevMem<'r>> {
    let bytes: &[u8] = bytemuck::cast_slice(v);
    let m = DevMem::new(rt, bytes.len().max(1))?;
    rt.h2d(m.ptr, m.len, bytes)?;
    Ok(m)
}

fn download<T: bytemuck::Pod>(rt: &Runtime, m: &DevMem<'_>, n: usize) -> Result<Vec<T>> {
    let mut v = vec![T::zeroed(); n];
    rt.d2h(bytemuck::cast_slice_mut(&mut v), m.ptr)?;
    Ok(v)
}

fn tensor<'r>(rt: &'r Runtime, m: &DevMem<'_>, dt: sys::aclDataType, dims: &[usize]) -> Result<Tensor<'r>> {
    Tensor::new(rt, &scratch_desc(m, dt, dims))
}

/// What a probe found wrong, as text for `supports()`.
type Found = std::result::Result<(), String>;

fn ran(o: Result<Outcome>) -> Found {
    match o {
        Ok(Outcome::Ran) => Ok(()),
        Ok(Outcome::Rejected(e)) => Err(format!("phase one rejected it ({e})")),
        Err(e) => Err(format!("failed ({e})")),
    }
}

// ============================================================================== moe_permute

/// Probe routing: T = 3 tokens, k = 2, E = 3, H = 8. Not an involution (so a map read the wrong way
/// round is caught, audit P2) and k > 1 (so `/ k` and `% numRows` differ, audit L5).
pub(crate) const PROBE_IDS: [i32; 6] = [2, 1, 0, 2, 1, 0];
const PT: usize = 3;
const PK: usize = 2;
const PE: usize = 3;
const PH: usize = 8;

/// The documented results for `ids` (`[T,k]` flat): the gather map `row[slot] = position` (stable
/// by slot within an expert), per-expert counts, and the source token of each position.
pub(crate) fn expected_permute(ids: &[i32], k: usize, e: usize) -> (Vec<i32>, Vec<i64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&s| ids[s]); // stable: slot order within an expert
    let mut row = vec![0i32; ids.len()];
    for (pos, &slot) in order.iter().enumerate() {
        row[slot] = pos as i32;
    }
    let mut counts = vec![0i64; e];
    for &i in ids {
        counts[i as usize] += 1;
    }
    (row, counts, order.iter().map(|&s| s / k).collect())
}

fn probe_x() -> Vec<f32> {
    (0..PT * PH).map(|i| ((i / PH) * 10 + i % PH) as f32).collect()
}

fn check_permute(row: &[i32], counts: &[i64], ex: &[f32], cumulative: bool) -> Found {
    let (want_row, want_counts, src) = expected_permute(&PROBE_IDS, PK, PE);
    let want_counts: Vec<i64> = if cumulative {
        want_counts
            .iter()
            .scan(0i64, |a, &c| {
                *a += c;
                Some(*a)
            })
            .collect()
    } else {
        want_counts
    };
    if row != want_row.as_slice() {
        return Err(format!(
            "expandedRowIdx {row:?} is not the documented gather map {want_row:?}"
        ));
    }
    if counts != want_counts.as_slice() {
        return Err(format!("expert token numbers {counts:?}, documented {want_counts:?}"));
    }
    let x = probe_x();
    for (pos, &t) in src.iter().enumerate() {
        if ex[pos * PH..(pos + 1) * PH] != x[t * PH..(t + 1) * PH] {
            return Err(format!("expandedX row {pos} is not x[{t}]"));
        }
    }
    Ok(())
}

fn probe_v3(rt: &Runtime, range: bool) -> Found {
    let go = || -> std::result::Result<Found, moehal_core::Error> {
        let n = PT * PK;
        let xm = upload(rt, &probe_x())?;
        let im = upload(rt, &PROBE_IDS)?;
        let exm = DevMem::new(rt, n * PH * 4)?;
        let rm = DevMem::new(rt, n * 4)?;
        let cm = DevMem::new(rt, PE * 8)?;
        let sm = DevMem::new(rt, n * 4)?;
        let x = tensor(rt, &xm, sys::ACL_FLOAT, &[PT, PH])?;
        let ids = tensor(rt, &im, sys::ACL_INT32, &[PT, PK])?;
        let ex = tensor(rt, &exm, sys::ACL_FLOAT, &[n, PH])?;
        let ri = tensor(rt, &rm, sys::ACL_INT32, &[n])?;
        let ct = tensor(rt, &cm, sys::ACL_INT64, &[PE])?;
        let sc = tensor(rt, &sm, sys::ACL_FLOAT, &[n])?;
        let r = if range {
            Some(IntArray::new(rt, &[0, PE as i64])?)
        } else {
            None
        };
        let o = rt.init_routing_v3(&x, &ids, n as i64, PE as i64, r.as_ref(), &ex, &ri, &ct, &sc);
        if let Err(e) = ran(o) {
            return Ok(Err(e));
        }
        Ok(check_permute(
            &download::<i32>(rt, &rm, n)?,
            &download::<i64>(rt, &cm, PE)?,
            &download::<f32>(rt, &exm, n * PH)?,
            false,
        ))
    };
    go().unwrap_or_else(|e| Err(format!("failed ({e})")))
}

fn probe_v2(rt: &Runtime) -> Found {
    let go = || -> std::result::Result<Found, moehal_core::Error> {
        let n = PT * PK;
        let xm = upload(rt, &probe_x())?;
        let im = upload(rt, &PROBE_IDS)?;
        let exm = DevMem::new(rt, n * PH * 4)?;
        let rm = DevMem::new(rt, n * 4)?;
        let cm = DevMem::new(rt, PE * 4)?;
        let x = tensor(rt, &xm, sys::ACL_FLOAT, &[PT, PH])?;
        let ids = tensor(rt, &im, sys::ACL_INT32, &[PT, PK])?;
        let ex = tensor(rt, &exm, sys::ACL_FLOAT, &[n, PH])?;
        let ri = tensor(rt, &rm, sys::ACL_INT32, &[n])?;
        let ct = tensor(rt, &cm, sys::ACL_INT32, &[PE])?;
        if let Err(e) = ran(rt.init_routing_v2(&x, &ids, PE as i64, &ex, &ri, &ct)) {
            return Ok(Err(e));
        }
        let counts: Vec<i64> = download::<i32>(rt, &cm, PE)?.iter().map(|&c| c as i64).collect();
        Ok(check_permute(
            &download::<i32>(rt, &rm, n)?,
            &counts,
            &download::<f32>(rt, &exm, n * PH)?,
            true,
        ))
    };
    go().unwrap_or_else(|e| Err(format!("failed ({e})")))
}

fn probe_permute(rt: &Runtime, version: u8) -> (PermutePath, String) {
    let mut notes = Vec::new();
    if version == 3 {
        for range in [true, false] {
            let what = if range {
                "V3 (activeExpertRange [0,E])"
            } else {
                "V3 (activeExpertRange NULL)"
            };
            match probe_v3(rt, range) {
                Ok(()) => {
                    notes.push(format!("{what}: documented result"));
                    return (PermutePath::V3 { range }, notes.join("; "));
                }
                Err(e) => notes.push(format!("{what}: {e}")),
            }
        }
    }
    let has_v2 =
        rt.lib.api.aclnnMoeInitRoutingV2.is_some() && rt.lib.api.aclnnMoeInitRoutingV2GetWorkspaceSize.is_some();
    if has_v2 {
        match probe_v2(rt) {
            Ok(()) => {
                notes.push("V2: documented result".into());
                return (PermutePath::V2, notes.join("; "));
            }
            Err(e) => notes.push(format!("V2: {e}")),
        }
    } else {
        notes.push("no aclnnMoeInitRoutingV2 in the op libraries".into());
    }
    if version == 0 {
        notes = vec!["no aclnnMoeInitRoutingV2/V3 in the op libraries".into()];
    }
    (PermutePath::Host, notes.join("; "))
}

// ============================================================================== router_topk

/// Probe router shape: T = 2, E = 256 (the only E torch_npu 7.0.0 documents for A2/A3), 8 groups,
/// kGroup 4, k = 8.
const GT: usize = 2;
const GE: usize = 256;
const GK: usize = 8;
const G_GROUPS: usize = 8;
const G_KGROUP: usize = 4;

/// Probe logits `[2, 256]`: a permutation of a 1/64 grid in [-2, 2) per row.
pub(crate) fn gating_logits() -> Vec<f32> {
    (0..GT * GE)
        .map(|i| {
            let (r, e) = (i / GE, i % GE);
            (((e * 37 + r * 101) % GE) as f32 - 128.0) / 64.0
        })
        .collect()
}

/// Probe bias `[256]`: `0.0035 · ((13·e) mod 11)`, up to 0.035: large against softmax scores
/// (about 0.004 at the top) so softmax and sigmoid select differently (a kernel that ignores
/// `normType` fails), and chosen (by search) so that no two selection or group scores of the
/// probe come closer than 4e-6 (see the tests), far above f32 rounding.
pub(crate) fn gating_bias() -> Vec<f32> {
    (0..GE).map(|e| 0.0035 * ((e * 13) % 11) as f32).collect()
}

/// The contract's config for a pattern at the probe shape.
pub(crate) fn gating_config(p: GatingPattern) -> RouterConfig {
    RouterConfig {
        topk: GK,
        scoring: if p.sigmoid { Scoring::Sigmoid } else { Scoring::Softmax },
        group: p.top2.map(|top2| GroupLimit {
            n_group: G_GROUPS,
            topk_group: G_KGROUP,
            score: if top2 { GroupScore::Top2Sum } else { GroupScore::Max },
        }),
        renormalize: true,
        routed_scaling_factor: 1.0,
    }
}

/// The expert ids the contract (the reference) selects for the probe input.
pub(crate) fn gating_expected(p: GatingPattern) -> Result<Vec<i32>> {
    let r = Reference::new();
    let lb = r.upload_slice(&gating_logits())?;
    let bb = r.upload_slice(&gating_bias())?;
    let mut ib = r.upload_slice(&[0i32; GT * GK])?;
    let mut wb = r.upload_slice(&[0f32; GT * GK])?;
    let args = RouterTopk {
        config: gating_config(p),
        logits: lb.view(DType::F32, &[GT, GE]),
        bias: p.bias.then(|| bb.view(DType::F32, &[GE])),
        ids: ib.view_mut(DType::I32, &[GT, GK]),
        weights: wb.view_mut(DType::F32, &[GT, GK]),
        expert_counts: None,
    };
    r.router_topk(args.validate()?)?;
    r.download_vec::<i32>(&ib, GT * GK)
}

fn probe_gating(rt: &Runtime, p: GatingPattern) -> Found {
    let go = || -> std::result::Result<Found, moehal_core::Error> {
        let want = gating_expected(p)?;
        let xm = upload(rt, &gating_logits())?;
        let bm = upload(rt, &gating_bias())?;
        let ym = DevMem::new(rt, GT * GK * 4)?;
        let im = DevMem::new(rt, GT * GK * 4)?;
        let om = DevMem::new(rt, GT * GE * 4)?;
        let x = tensor(rt, &xm, sys::ACL_FLOAT, &[GT, GE])?;
        let b = tensor(rt, &bm, sys::ACL_FLOAT, &[GE])?;
        let y = tensor(rt, &ym, sys::ACL_FLOAT, &[GT, GK])?;
        let idx = tensor(rt, &im, sys::ACL_INT32, &[GT, GK])?;
        let out = tensor(rt, &om, sys::ACL_FLOAT, &[GT, GE])?;
        let (gc, kg, mode) = match p.top2 {
            None => (1, 1, 0),
            Some(top2) => (G_GROUPS as i64, G_KGROUP as i64, top2 as i64),
        };
        let o = rt.gating_topk(
            &x,
            p.bias.then_some(&b),
            GK as i64,
            kg,
            gc,
            mode,
            p.sigmoid as i64,
            &y,
            &idx,
            &out,
        );
        if let Err(e) = ran(o) {
            return Ok(Err(e));
        }
        let got = download::<i32>(rt, &im, GT * GK)?;
        Ok(if got == want {
            Ok(())
        } else {
            Err(format!("selected {got:?}, documented {want:?}"))
        })
    };
    go().unwrap_or_else(|e| Err(format!("failed ({e})")))
}

// ============================================================================== moe_combine

fn probe_finalize_mixed(rt: &Runtime) -> Found {
    let go = || -> std::result::Result<Found, moehal_core::Error> {
        let (t, k, h) = (2usize, 2usize, 16usize);
        // Small integers and power-of-two scales: every result is exact in bf16.
        let ex: Vec<f32> = (0..t * k * h).map(|i| (i % 13) as f32 - 6.0).collect();
        let exb: Vec<half::bf16> = ex.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let rows = [3i32, 0, 2, 1];
        let scales = [0.5f32, 0.25, 1.0, 2.0];
        let em = upload(rt, &exb)?;
        let rm = upload(rt, &rows)?;
        let sm = upload(rt, &scales)?;
        let om = DevMem::new(rt, t * h * 2)?;
        let e = tensor(rt, &em, sys::ACL_BF16, &[t * k, h])?;
        let r = tensor(rt, &rm, sys::ACL_INT32, &[t * k])?;
        let s = tensor(rt, &sm, sys::ACL_FLOAT, &[t, k])?;
        let o = tensor(rt, &om, sys::ACL_BF16, &[t, h])?;
        if let Err(e) = ran(rt.finalize_routing(&e, &r, &s, &o)) {
            return Ok(Err(e));
        }
        let got: Vec<f32> = download::<half::bf16>(rt, &om, t * h)?
            .iter()
            .map(|v| v.to_f32())
            .collect();
        for i in 0..t {
            for c in 0..h {
                let want: f32 = (0..k)
                    .map(|j| scales[i * k + j] * ex[rows[i * k + j] as usize * h + c])
                    .sum();
                if got[i * h + c] != want {
                    return Ok(Err(format!("out[{i},{c}] = {}, documented {want}", got[i * h + c])));
                }
            }
        }
        Ok(Ok(()))
    };
    go().unwrap_or_else(|e| Err(format!("failed ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_permute_is_the_documented_gather_map() {
        // Sorted slots by expert (stable): e0: 2,5; e1: 1,4; e2: 0,3 -> positions 0..6.
        let (row, counts, src) = expected_permute(&PROBE_IDS, PK, PE);
        assert_eq!(row, vec![4, 2, 0, 5, 3, 1]);
        assert_eq!(counts, vec![2, 2, 2]);
        assert_eq!(src, vec![1, 2, 0, 2, 0, 1]);
        // The audit's 3-cycle (T=3, k=1, ids [[2],[0],[1]]): the correct slot_row is [2,0,1];
        // the scatter map (rowIdxType 1) would be [1,2,0].
        assert_eq!(expected_permute(&[2, 0, 1], 1, 3).0, vec![2, 0, 1]);
    }

    /// The probe data must not depend on tie rules or on f32-versus-f64 rounding: every pair of
    /// selection scores in a row (softmax and sigmoid, with and without bias) differs by > 1e-6
    /// (f32 rounding of scores <= 2 is below 2.4e-7), and so do the group scores (max, top-2 sum).
    #[test]
    fn gating_probe_data_has_no_near_ties() {
        let x = gating_logits();
        let b = gating_bias();
        for r in 0..GT {
            let row: Vec<f64> = x[r * GE..(r + 1) * GE].iter().map(|&v| v as f64).collect();
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|v| (v - mx).exp()).sum();
            let soft: Vec<f64> = row.iter().map(|v| (v - mx).exp() / z).collect();
            let sig: Vec<f64> = row.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
            for s in [&soft, &sig] {
                for with_bias in [false, true] {
                    let sc: Vec<f64> = (0..GE)
                        .map(|e| s[e] + if with_bias { b[e] as f64 } else { 0.0 })
                        .collect();
                    let mut sorted = sc.clone();
                    sorted.sort_by(|a, c| c.total_cmp(a));
                    for w in sorted.windows(2) {
                        assert!(w[0] - w[1] > 1e-6, "near tie {} {}", w[0], w[1]);
                    }
                    let per = GE / G_GROUPS;
                    let mut gmax = Vec::new();
                    let mut gtop2 = Vec::new();
                    for g in 0..G_GROUPS {
                        let mut v = sc[g * per..(g + 1) * per].to_vec();
                        v.sort_by(|a, c| c.total_cmp(a));
                        gmax.push(v[0]);
                        gtop2.push(v[0] + v[1]);
                    }
                    for gs in [&mut gmax, &mut gtop2] {
                        gs.sort_by(|a, c| c.total_cmp(a));
                        for w in gs.windows(2) {
                            assert!(w[0] - w[1] > 1e-6, "near group tie {} {}", w[0], w[1]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gating_bias_changes_the_selection_between_softmax_and_sigmoid() {
        // Otherwise a kernel that ignored normType would pass the probe (audit P6).
        let soft = gating_expected(GatingPattern {
            sigmoid: false,
            top2: None,
            bias: true,
        })
        .unwrap();
        let sig = gating_expected(GatingPattern {
            sigmoid: true,
            top2: None,
            bias: true,
        })
        .unwrap();
        let mut a = soft.clone();
        let mut c = sig.clone();
        a.sort_unstable();
        c.sort_unstable();
        assert_ne!(a, c, "softmax {soft:?} sigmoid {sig:?}");
    }

    #[test]
    fn pattern_indices_are_a_bijection() {
        let mut seen = [false; 12];
        for p in GatingPattern::all() {
            assert!(!seen[p.index()]);
            seen[p.index()] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
