//! `router_topk` on `aclnnMoeGatingTopKSoftmax` / `aclnnMoeGatingTopK` (ffi/gating_topk.rs), or the
//! host: the route per call, the documented shape limits, and the host path.

use moehal_ascend_sys as sys;
use moehal_core::ops::{Checked, GroupLimit, GroupScore, RouterConfig, RouterTopk, Scoring};
use moehal_core::{Backend, Buffer, DType, Error, Reference, Result, TensorRef};

use crate::backend::{acl_dt, bytes_of, desc_of, hm, hv, scratch_desc, Ascend};
use crate::ffi::{DevMem, OpVersions, Outcome, Scalar, Tensor, NAME};
use crate::routes::GatingPattern;

const OP_RT: &str = "router_topk";

/// Which path one `router_topk` call takes.
#[derive(Debug, Clone, Copy)]
enum RouterRoute {
    /// The reference on the host (staged).
    Host,
    /// `aclnnMoeGatingTopKSoftmax` selects, the host computes the weights.
    Softmax,
    /// `aclnnMoeGatingTopK` selects (pattern accepted by the open-time probe), the host computes
    /// the weights.
    Gating(GatingPattern),
    /// Selection composed of primitives (`Ascend::router_sorted_device`): `sqrt_softplus` scoring
    /// or non-finite logits, no group limit.
    Sorted,
}

/// The `aclnnMoeGatingTopK` pattern of a router config, if the op has that scoring at all.
fn gating_pattern(cfg: &RouterConfig, bias: bool) -> Option<GatingPattern> {
    let sigmoid = match cfg.scoring {
        Scoring::Softmax => false,
        Scoring::Sigmoid => true,
        _ => return None,
    };
    Some(GatingPattern {
        sigmoid,
        top2: cfg.effective_group().map(|g| g.score == GroupScore::Top2Sum),
        bias,
    })
}

/// The documented shape limits of `aclnnMoeGatingTopK` ([OT] moe_gating_top_k_tiling.cpp:221-227
/// and the doc's 约束说明, `ascend_audit.md` §1.4 and P7): E <= 2048; E divisible by groupCount;
/// 1 <= kGroup <= groupCount; 1 <= k <= E/groupCount·kGroup; top-2-sum needs >= 2 experts per
/// group; and, whenever grouped (groupCount not 1 or E, kGroup != groupCount),
/// groupCount·align32(E/groupCount) <= 2048.
///
/// # Errors
/// The limit broken, as text.
pub(crate) fn gating_shape_ok(e: usize, k: usize, group: Option<GroupLimit>) -> std::result::Result<(), String> {
    if e > 2048 {
        return Err(format!("E = {e} > 2048"));
    }
    let (gc, kg) = group.map_or((1, 1), |g| (g.n_group, g.topk_group));
    if gc == 0 || e % gc != 0 {
        return Err(format!("E = {e} not divisible by groupCount {gc}"));
    }
    if kg == 0 || kg > gc {
        return Err(format!("kGroup {kg} outside [1, {gc}]"));
    }
    let per = e / gc;
    if k == 0 || k > per * kg {
        return Err(format!("k = {k} outside [1, E/groupCount·kGroup = {}]", per * kg));
    }
    if group.is_some_and(|g| g.score == GroupScore::Top2Sum) && per < 2 {
        return Err(format!("top-2-sum groups of {per} expert(s)"));
    }
    if gc != 1 && gc != e && kg != gc && gc * per.div_ceil(32) * 32 > 2048 {
        return Err(format!(
            "groupCount·align32(E/groupCount) = {} > 2048",
            gc * per.div_ceil(32) * 32
        ));
    }
    Ok(())
}

/// Whether the libraries have every primitive of the composed router selection
/// (`Ascend::router_sorted_device`, with the group limit when `group`) and of its weights
/// (`Ascend::router_weights_device`: gather, renormalisation with `aclnnAdds` so the weights never
/// need the logits on the host, scaling).
pub(crate) fn composed_prims(v: &OpVersions, scoring: Scoring, group: bool, bias: bool, renormalize: bool) -> bool {
    let scoring = match scoring {
        Scoring::Softmax => v.softmax,
        Scoring::Sigmoid => v.sigmoid,
        Scoring::SqrtSoftplus => v.softplus && v.sqrt && v.clamp_max && v.eq_scalar && v.s_where,
    };
    scoring
        && (!group || (v.floor_divides && v.eq_scalar && v.add))
        && (!(group || bias) || v.eq_scalar)
        && (!bias || v.add)
        && (!renormalize || (v.adds && v.reduce_sum && v.div))
        && v.scalar
        && v.muls
        && v.cast
        && v.is_finite
        && v.logical_not
        && v.masked_fill
        && v.sort
        && v.gather_dim
}

impl Ascend {
    fn router_route(&self, cfg: &RouterConfig, e: usize, dt: DType, bias: bool) -> RouterRoute {
        let v = self.rt.lib.versions;
        let k = cfg.topk;
        if cfg.scoring == Scoring::Softmax
            && cfg.effective_group().is_none()
            && !bias
            && v.gating_softmax
            && k <= e.min(1024)
        {
            return RouterRoute::Softmax;
        }
        match gating_pattern(cfg, bias) {
            Some(p)
                if v.gating
                    && self.routes.gating_ok(p)
                    && (dt == DType::F32 || v.cast)
                    && gating_shape_ok(e, k, cfg.effective_group()).is_ok() =>
            {
                RouterRoute::Gating(p)
            }
            _ => RouterRoute::Host,
        }
    }

    /// The logits staged on the host (`None` when they are host memory already) and as f64.
    fn router_read_logits(&self, a: &RouterTopk<'_>) -> Result<(Option<Buffer>, Vec<f64>)> {
        let (t, e) = a.dims();
        let lg = self.stage(&a.logits)?;
        let h = hv(&lg, &a.logits);
        let raw: Vec<u8> = {
            let (s, en) = h.byte_range();
            let mut b = vec![0u8; en - s];
            Reference.download(h.buffer(), s, &mut b)?;
            b
        };
        let out = (0..t * e)
            .map(|i| match h.dtype() {
                DType::F32 => f32::from_le_bytes(raw[i * 4..i * 4 + 4].try_into().unwrap_or([0; 4])) as f64,
                DType::F16 => half::f16::from_le_bytes([raw[i * 2], raw[i * 2 + 1]]).to_f64(),
                _ => half::bf16::from_le_bytes([raw[i * 2], raw[i * 2 + 1]]).to_f64(),
            })
            .collect();
        Ok((lg, out))
    }

    /// Whether every logit is finite, decided on the device: `aclnnMuls(logits, 0)` (NaN for a
    /// NaN or infinite logit, `±0` otherwise), `aclnnReduceSum` over both dims into one FLOAT
    /// (keepDim), and a 4-byte control read: finite exactly when the sum is zero (one NaN term
    /// makes it NaN). `None` when the libraries lack the ops, the logits are not this device's
    /// memory or empty, or a primitive refused the call (the caller then reads the logits).
    fn router_logits_finite(&self, a: &RouterTopk<'_>) -> Result<Option<bool>> {
        let (t, e) = a.dims();
        let v = self.rt.lib.versions;
        if !(v.muls && v.reduce_sum && v.scalar) || t * e == 0 || self.mine(a.logits.buffer(), "logits").is_err() {
            return Ok(None);
        }
        let dt = a.logits.dtype();
        let x = self.t(&desc_of(&a.logits, OP_RT, "logits")?)?;
        let zmem = DevMem::new(&self.rt, t * e * dt.size())?;
        let z = self.t(&scratch_desc(&zmem, acl_dt(dt), &[t, e]))?;
        if let Outcome::Rejected(_) = self.rt.muls(&x, &Scalar::f32(&self.rt, 0.0)?, &z)? {
            return Ok(None);
        }
        let smem = DevMem::new(&self.rt, 4)?;
        let st = self.t(&scratch_desc(&smem, sys::ACL_FLOAT, &[1, 1]))?;
        if let Outcome::Rejected(_) = self.rt.reduce_sum(&z, &[0, 1], true, sys::ACL_FLOAT, &st)? {
            return Ok(None);
        }
        let mut b = [0u8; 4];
        self.rt.d2h(&mut b, smem.ptr)?;
        Ok(Some(f32::from_le_bytes(b) == 0.0))
    }

    /// Whether [`Self::router_sorted_device`] can serve this call: non-empty logits in this
    /// device's memory and the primitives present ([`composed_prims`]).
    fn router_sorted_ok(&self, a: &RouterTopk<'_>) -> bool {
        let (t, e) = a.dims();
        let cfg = a.config;
        composed_prims(
            &self.rt.lib.versions,
            cfg.scoring,
            cfg.effective_group().is_some(),
            a.bias.is_some(),
            cfg.renormalize,
        ) && t * e > 0
            && self.mine(a.logits.buffer(), "logits").is_ok()
            && a.bias.as_ref().is_none_or(|b| self.mine(b.buffer(), "bias").is_ok())
    }

    /// `sqrt_softplus` scores (OPS.md §2 step 1, DeepSeek-V4) of the f32 logits `x` `[T, E]` into
    /// `out`: `aclnnSqrt(aclnnSoftplus(x, beta 1, threshold 20))` where `x >= -40`, else
    /// `aclnnSoftplus(x / 2)` (`aclnnMuls(0.5)`), chosen by `aclnnSWhere` on the mask
    /// `aclnnEqScalar(aclnnClampMax(x, -40), -40)`. Why two formulas: in f32, `softplus(x) ≈ e^x`
    /// underflows below `x ≈ -103` although `sqrt(softplus(x)) ≈ e^(x/2)` is still a (subnormal)
    /// f32 down to `x ≈ -206`, and OPS.md scores underflow only where the exact value does (the
    /// test kit's "sqrt_softplus subnormals" case); `softplus(x/2) = e^(x/2)(1 - e^(x/2)/2 + ...)`
    /// is within `e^(x/2)/2 < 1e-9` relative of `sqrt(softplus(x))` for `x < -40`. Threshold 20
    /// (torch's default): `softplus(x) = x + e^-x` above it, below half an ulp of `x`.
    /// Returns `false` when a primitive refused the call.
    fn router_sqrt_softplus(&self, x: &Tensor<'_>, out: &Tensor<'_>, t: usize, e: usize) -> Result<bool> {
        let ran = |o: Outcome| matches!(o, Outcome::Ran);
        let f32s = |m: &DevMem<'_>| scratch_desc(m, sys::ACL_FLOAT, &[t, e]);
        let (one, twenty) = (Scalar::f32(&self.rt, 1.0)?, Scalar::f32(&self.rt, 20.0)?);
        let sp = DevMem::new(&self.rt, t * e * 4)?;
        let spt = self.t(&f32s(&sp))?;
        if !ran(self.rt.softplus(x, &one, &twenty, &spt)?) {
            return Ok(false);
        }
        let rt_ = DevMem::new(&self.rt, t * e * 4)?;
        let rtt = self.t(&f32s(&rt_))?;
        if !ran(self.rt.sqrt(&spt, &rtt)?) {
            return Ok(false);
        }
        let half = DevMem::new(&self.rt, t * e * 4)?;
        let halft = self.t(&f32s(&half))?;
        if !ran(self.rt.muls(x, &Scalar::f32(&self.rt, 0.5)?, &halft)?) {
            return Ok(false);
        }
        let low = DevMem::new(&self.rt, t * e * 4)?;
        let lowt = self.t(&f32s(&low))?;
        if !ran(self.rt.softplus(&halft, &one, &twenty, &lowt)?) {
            return Ok(false);
        }
        // `half` is free again: it takes min(x, -40).
        let edge = Scalar::f32(&self.rt, -40.0)?;
        if !ran(self.rt.clamp_max(x, &edge, &halft)?) {
            return Ok(false);
        }
        let cond = DevMem::new(&self.rt, t * e)?;
        let condt = self.t(&scratch_desc(&cond, sys::ACL_BOOL, &[t, e]))?;
        if !ran(self.rt.eq_scalar(&halft, &edge, &condt)?) {
            return Ok(false);
        }
        Ok(ran(self.rt.s_where(&condt, &rtt, &lowt, out)?))
    }

    /// OPS.md §2 step 3 on the selection scores `ŝ` (FLOAT `[T, E]` in `xmem`, non-finite ones
    /// already `-inf`), in place: viewed `[T·G, E/G]`, a stable descending `aclnnSort` per group
    /// gives the group score as its first value (`max`) or `aclnnAdd` of its first two (`top2_sum`,
    /// f32, rounded once; `-inf` stays `-inf`); a stable descending `aclnnSort` of the `[T, G]`
    /// group scores ranks the groups (ties: lower group index); an ascending `aclnnSort` of that
    /// permutation gives each group's rank (the inverse permutation), `aclnnFloorDivides` by
    /// `topk_group` is 0 exactly for the kept ranks, `aclnnEqScalar(0)` + `aclnnLogicalNot` mark
    /// the dropped groups, and `aclnnInplaceMaskedFillScalar` of `ŝ` viewed `[T, G, E/G]` with the
    /// mask `[T, G, 1]` (broadcast) sets their experts to `-inf`. Returns `false` when a primitive
    /// refused the call.
    fn router_group_mask(&self, xmem: &DevMem<'_>, t: usize, e: usize, g: GroupLimit) -> Result<bool> {
        let ran = |o: Outcome| matches!(o, Outcome::Ran);
        let (gn, kg) = (g.n_group, g.topk_group);
        let per = e / gn;
        let rows = t * gn;
        let x2 = self.t(&scratch_desc(xmem, sys::ACL_FLOAT, &[rows, per]))?;
        let gv = DevMem::new(&self.rt, rows * per * 4)?;
        let gp = DevMem::new(&self.rt, rows * per * 8)?;
        let gvt = self.t(&scratch_desc(&gv, sys::ACL_FLOAT, &[rows, per]))?;
        let gpt = self.t(&scratch_desc(&gp, sys::ACL_INT64, &[rows, per]))?;
        if !ran(self.rt.sort(&x2, true, 1, true, &gvt, &gpt)?) {
            return Ok(false);
        }
        // Column `c` of the sorted groups as a `[T, G]` view.
        let col = |c: i64| {
            let mut d = scratch_desc(&gv, sys::ACL_FLOAT, &[rows, per]);
            d.dims = vec![t as i64, gn as i64];
            d.strides = vec![(gn * per) as i64, per as i64];
            d.offset = c;
            d
        };
        let gs = DevMem::new(&self.rt, rows * 4)?;
        let gst = self.t(&scratch_desc(&gs, sys::ACL_FLOAT, &[t, gn]))?;
        let one = Scalar::f32(&self.rt, 1.0)?;
        let c0 = self.t(&col(0))?;
        let o = match g.score {
            GroupScore::Max => self.rt.muls(&c0, &one, &gst)?,
            GroupScore::Top2Sum => self.rt.add(&c0, &self.t(&col(1))?, &one, &gst)?,
        };
        if !ran(o) {
            return Ok(false);
        }
        let sv = DevMem::new(&self.rt, rows * 4)?;
        let order = DevMem::new(&self.rt, rows * 8)?;
        let svt = self.t(&scratch_desc(&sv, sys::ACL_FLOAT, &[t, gn]))?;
        let ordert = self.t(&scratch_desc(&order, sys::ACL_INT64, &[t, gn]))?;
        if !ran(self.rt.sort(&gst, true, 1, true, &svt, &ordert)?) {
            return Ok(false);
        }
        let ov = DevMem::new(&self.rt, rows * 8)?;
        let rank = DevMem::new(&self.rt, rows * 8)?;
        let ovt = self.t(&scratch_desc(&ov, sys::ACL_INT64, &[t, gn]))?;
        let rankt = self.t(&scratch_desc(&rank, sys::ACL_INT64, &[t, gn]))?;
        if !ran(self.rt.sort(&ordert, true, 1, false, &ovt, &rankt)?) {
            return Ok(false);
        }
        // `ov` is free again: it takes rank / topk_group.
        if !ran(self
            .rt
            .floor_divides(&rankt, &Scalar::i64(&self.rt, kg as i64)?, &ovt)?)
        {
            return Ok(false);
        }
        let kept = DevMem::new(&self.rt, rows)?;
        let dropped = DevMem::new(&self.rt, rows)?;
        let keptt = self.t(&scratch_desc(&kept, sys::ACL_BOOL, &[t, gn]))?;
        let droppedt = self.t(&scratch_desc(&dropped, sys::ACL_BOOL, &[t, gn]))?;
        if !ran(self.rt.eq_scalar(&ovt, &Scalar::i64(&self.rt, 0)?, &keptt)?)
            || !ran(self.rt.logical_not(&keptt, &droppedt)?)
        {
            return Ok(false);
        }
        let x3 = self.t(&scratch_desc(xmem, sys::ACL_FLOAT, &[t, gn, per]))?;
        let m3 = self.t(&scratch_desc(&dropped, sys::ACL_BOOL, &[t, gn, 1]))?;
        Ok(ran(self.rt.masked_fill(
            &x3,
            &m3,
            &Scalar::f32(&self.rt, f32::NEG_INFINITY)?,
        )?))
    }

    /// Selection composed of documented primitives (no vendor gating op), for calls whose logits
    /// hold a non-finite value or whose scoring is `sqrt_softplus` (OPS.md §2 steps 1-4 and 6):
    ///
    /// 1. `x` = f32 copy of the logits (`aclnnCast`, or `aclnnMuls(1)` for f32: exact),
    /// 2. `bad = aclnnLogicalNot(aclnnIsFinite(x))` (BOOL `[T, E]`),
    /// 3. `aclnnInplaceMaskedFillScalar(x, bad, v)` with `v = -inf` for softmax (an excluded logit
    ///    adds nothing to the denominator) and `0` otherwise (any finite value: its score is
    ///    replaced in 5),
    /// 4. `s` = `aclnnSoftmax(dim 1)`, `aclnnSigmoid` or [`Self::router_sqrt_softplus`],
    /// 5. `s = 0` where `bad` (masked fill; also clears the NaN of a softmax row with no finite
    ///    logit),
    /// 6. `ŝ = aclnnAdd(s, bias)` (f32, rounded once, broadcast over rows) or a copy of `s`, and
    ///    `ŝ = -inf` where `bad`,
    /// 7. with a bias, a non-finite `ŝ` is excluded too (`-inf`); with a group limit,
    ///    [`Self::router_group_mask`]; with either, `s = 0` wherever `ŝ` is now `-inf`
    ///    (`aclnnEqScalar`; such an expert is chosen only as a fill slot, which weighs 0),
    /// 8. `aclnnSort(ŝ, stable, dim 1, descending)`: ties keep index order, so the lower id wins
    ///    (step 4) and the excluded experts (all `-inf`) follow every selectable one in index
    ///    order, which is step 6's fill with the lowest-index experts not yet chosen,
    /// 9. ids = `aclnnCast` to INT32 of the first `k` columns of the sort's INT64 indices (a
    ///    strided view `[T, k]`, row stride `E`).
    ///
    /// Returns the ids (INT32 `[T, k]`, in `[0, E)` by construction) and `s` (FLOAT `[T, E]`, the
    /// unbiased scores with 0 for excluded experts, from which the weights are gathered), or
    /// `None` when a primitive refused the call (a NaN `ŝ` from a NaN bias, say: aclnnSort does not
    /// document where NaN sorts); the caller then runs the host path. Nothing crosses to the host.
    fn router_sorted_device(&self, a: &RouterTopk<'_>) -> Result<Option<(DevMem<'_>, DevMem<'_>)>> {
        let (t, e) = a.dims();
        let cfg = a.config;
        let k = cfg.topk;
        let ran = |o: Outcome| matches!(o, Outcome::Ran);
        let f32s = |m: &DevMem<'_>| scratch_desc(m, sys::ACL_FLOAT, &[t, e]);
        let bools = |m: &DevMem<'_>| scratch_desc(m, sys::ACL_BOOL, &[t, e]);
        // 1.
        let xmem = DevMem::new(&self.rt, t * e * 4)?;
        let xt = self.t(&f32s(&xmem))?;
        let src = self.t(&desc_of(&a.logits, OP_RT, "logits")?)?;
        let one = Scalar::f32(&self.rt, 1.0)?;
        let o = if a.logits.dtype() == DType::F32 {
            self.rt.muls(&src, &one, &xt)?
        } else {
            self.rt.cast_outcome(&src, sys::ACL_FLOAT, &xt)?
        };
        if !ran(o) {
            return Ok(None);
        }
        // 2.
        let fin = DevMem::new(&self.rt, t * e)?;
        let fint = self.t(&bools(&fin))?;
        if !ran(self.rt.is_finite(&xt, &fint)?) {
            return Ok(None);
        }
        let bad = DevMem::new(&self.rt, t * e)?;
        let badt = self.t(&bools(&bad))?;
        if !ran(self.rt.logical_not(&fint, &badt)?) {
            return Ok(None);
        }
        // 3.
        let fill = if cfg.scoring == Scoring::Softmax {
            f32::NEG_INFINITY
        } else {
            0.0
        };
        if !ran(self.rt.masked_fill(&xt, &badt, &Scalar::f32(&self.rt, fill)?)?) {
            return Ok(None);
        }
        // 4.
        let smem = DevMem::new(&self.rt, t * e * 4)?;
        let st = self.t(&f32s(&smem))?;
        let scored = match cfg.scoring {
            Scoring::Softmax => ran(self.rt.softmax(&xt, 1, &st)?),
            Scoring::Sigmoid => ran(self.rt.sigmoid(&xt, &st)?),
            Scoring::SqrtSoftplus => self.router_sqrt_softplus(&xt, &st, t, e)?,
        };
        if !scored {
            return Ok(None);
        }
        // 5.
        let zero = Scalar::f32(&self.rt, 0.0)?;
        if !ran(self.rt.masked_fill(&st, &badt, &zero)?) {
            return Ok(None);
        }
        // 6. (x is free again: it takes ŝ.)
        let o = match &a.bias {
            Some(b) => {
                let bt = self.t(&desc_of(b, OP_RT, "bias")?)?;
                self.rt.add(&st, &bt, &one, &xt)?
            }
            None => self.rt.muls(&st, &one, &xt)?,
        };
        if !ran(o) {
            return Ok(None);
        }
        let ninf = Scalar::f32(&self.rt, f32::NEG_INFINITY)?;
        if !ran(self.rt.masked_fill(&xt, &badt, &ninf)?) {
            return Ok(None);
        }
        if a.bias.is_some() {
            // A non-finite ŝ (f32 overflow of s + bias, a NaN bias) is excluded too, as in the
            // reference (and aclnnSort does not document NaN).
            if !ran(self.rt.is_finite(&xt, &fint)?)
                || !ran(self.rt.logical_not(&fint, &badt)?)
                || !ran(self.rt.masked_fill(&xt, &badt, &ninf)?)
            {
                return Ok(None);
            }
        }
        // 7.
        if let Some(g) = cfg.effective_group() {
            if !self.router_group_mask(&xmem, t, e, g)? {
                return Ok(None);
            }
        }
        if cfg.effective_group().is_some() || a.bias.is_some() {
            // Every expert whose ŝ is now -inf is selected only as a fill slot, which weighs 0.
            if !ran(self.rt.eq_scalar(&xt, &ninf, &badt)?) || !ran(self.rt.masked_fill(&st, &badt, &zero)?) {
                return Ok(None);
            }
        }
        // 8.
        let vals = DevMem::new(&self.rt, t * e * 4)?;
        let perm = DevMem::new(&self.rt, t * e * 8)?;
        let valst = self.t(&f32s(&vals))?;
        let permt = self.t(&scratch_desc(&perm, sys::ACL_INT64, &[t, e]))?;
        if !ran(self.rt.sort(&xt, true, 1, true, &valst, &permt)?) {
            return Ok(None);
        }
        // 9.
        let mut head = scratch_desc(&perm, sys::ACL_INT64, &[t, e]);
        head.dims = vec![t as i64, k as i64];
        head.strides = vec![e as i64, 1];
        let imem = DevMem::new(&self.rt, t * k * 4)?;
        let it = self.t(&scratch_desc(&imem, sys::ACL_INT32, &[t, k]))?;
        if !ran(self.rt.cast_outcome(&self.t(&head)?, sys::ACL_INT32, &it)?) {
            return Ok(None);
        }
        Ok(Some((imem, smem)))
    }

    /// `expert_counts` (OPS.md §2: the histogram of `ids`, i64 `[E]`) on the device from the
    /// vendor op's range-checked ids `imem` (INT32, `n = T·k`): `aclnnSort` of the ids,
    /// `c = aclnnSearchSorted(sorted, aclnnArange(0, E + 1))` (the number of ids below each
    /// bound), the adjacent differences `c[1:] - c[:-1]` in f32 (exact: `n < 2^24`), and
    /// `aclnnCast` to INT64 into `expert_counts`. Returns `false` (nothing written) when the
    /// primitives are missing, `n >= 2^24`, `expert_counts` is not this device's memory, or a
    /// primitive refused the call; the caller then counts on the host.
    fn router_counts_device(&self, c: &TensorRef<'_>, imem: &DevMem<'_>, n: usize, e: usize) -> Result<bool> {
        let v = self.rt.lib.versions;
        if !(v.sort && v.arange && v.search_sorted && v.cast && v.muls && v.reduce_sum && v.scalar)
            || n == 0
            || n >= (1 << 24)
            || !self.extremes_on_device() // the ids were range-checked only with Amin/Amax
            || self.mine(c.buffer(), "expert_counts").is_err()
        {
            return Ok(false);
        }
        let ran = |o: Outcome| matches!(o, Outcome::Ran);
        let ids = self.t(&scratch_desc(imem, sys::ACL_INT32, &[n]))?;
        let sorted = DevMem::new(&self.rt, n * 4)?;
        let perm = DevMem::new(&self.rt, n * 8)?;
        let sorted_t = self.t(&scratch_desc(&sorted, sys::ACL_INT32, &[n]))?;
        let perm_t = self.t(&scratch_desc(&perm, sys::ACL_INT64, &[n]))?;
        if !ran(self.rt.sort(&ids, false, 0, false, &sorted_t, &perm_t)?) {
            return Ok(false);
        }
        let bounds = DevMem::new(&self.rt, (e + 1) * 4)?;
        let bounds_t = self.t(&scratch_desc(&bounds, sys::ACL_INT32, &[e + 1]))?;
        let (zero, one, end) = (
            Scalar::i64(&self.rt, 0)?,
            Scalar::i64(&self.rt, 1)?,
            Scalar::i64(&self.rt, e as i64 + 1)?,
        );
        if !ran(self.rt.arange(&zero, &end, &one, &bounds_t)?) {
            return Ok(false);
        }
        let below = DevMem::new(&self.rt, (e + 1) * 8)?;
        let below_d = scratch_desc(&below, sys::ACL_INT64, &[e + 1]);
        if !ran(self.rt.search_sorted(&sorted_t, &bounds_t, false, &self.t(&below_d)?)?) {
            return Ok(false);
        }
        let Some(steps) = self.int_steps_f32(&below_d, e)? else {
            return Ok(false);
        };
        let st = self.t(&scratch_desc(&steps, sys::ACL_FLOAT, &[e]))?;
        let out = self.t(&desc_of(c, OP_RT, "expert_counts")?)?;
        Ok(ran(self.rt.cast_outcome(&st, sys::ACL_INT64, &out)?))
    }

    /// The contract on the host: scoring, exclusion of non-finite logits and tie rules.
    fn router_host(&self, a: &RouterTopk<'_>, lg: &Option<Buffer>) -> Result<()> {
        let sb = a.bias.as_ref().map(|b| self.stage(b)).transpose()?;
        let mut si = self.stage(&a.ids.as_ref())?;
        let mut sw = self.stage(&a.weights.as_ref())?;
        let mut sc = match &a.expert_counts {
            Some(c) => Some(self.stage(&c.as_ref())?),
            None => None,
        };
        let args = RouterTopk {
            config: a.config,
            logits: hv(lg, &a.logits),
            bias: a.bias.as_ref().zip(sb.as_ref()).map(|(r, s)| hv(s, r)),
            ids: hm(&mut si, &a.ids)?,
            weights: hm(&mut sw, &a.weights)?,
            expert_counts: match (&a.expert_counts, sc.as_mut()) {
                (Some(c), Some(s)) => Some(hm(s, c)?),
                _ => None,
            },
        };
        Reference.router_topk(args.validate()?)?;
        self.unstage(si.as_ref().expect("staged"), &a.ids)?;
        self.unstage(sw.as_ref().expect("staged"), &a.weights)?;
        if let (Some(c), Some(Some(s))) = (&a.expert_counts, sc.as_ref()) {
            self.unstage(s, c)?;
        }
        Ok(())
    }

    /// OPS.md §2 step 5 on the device, from the vendor op's ids `imem` (INT32 `[T, k]`):
    ///
    /// 1. f32 logits (`aclnnCast` from bf16/f16, exact), scores `s` = `aclnnSoftmax(dim 1)` or
    ///    `aclnnSigmoid` (the **unbiased** scores: the bias only selected),
    /// 2. `aclnnGather(s, dim 1, ids)` -> `[T, k]`,
    /// 3. with `renormalize`: `aclnnReduceSum(dim 1, keepDim, FLOAT)`, `aclnnAdds(sum, 1e-20,
    ///    alpha 1)` and `aclnnDiv`,
    /// 4. `aclnnMuls(routed_scaling_factor)` into `weights` (once, renormalised or not).
    ///
    /// OPS.md divides by `sum + 1e-20`. `aclnnAdds` computes that denominator in f32: `1e-20` is a
    /// normal f32 (the smallest is about `1.2e-38`), so `fl32(sum + 1e-20)` is `sum` wherever the
    /// term is below half an ulp of the sum and the rounded exact denominator elsewhere (an all-zero
    /// row divides `0` by `1e-20`: weight 0, as on the host). Every row takes the device path.
    /// Without `aclnnAdds` (a release that lacks it) the device path is taken only where the term
    /// cannot change the f32 result: every row's `k` smallest scores (a lower bound of the selected
    /// sum, computed here from the logits already read) sum to at least `1e-6`; a call with any
    /// other row keeps the host weights (the whole call). Returns whether the weights were written.
    ///
    /// `scores`: the unbiased scores `s` (FLOAT `[T, E]`) already on the device (from
    /// [`Self::router_sorted_device`], non-finite logits scored 0); step 1 is then skipped.
    fn router_weights_device(
        &self,
        a: &RouterTopk<'_>,
        logits: Option<&[f64]>,
        imem: &DevMem<'_>,
        scores: Option<&DevMem<'_>>,
    ) -> Result<bool> {
        let (t, e) = a.dims();
        let cfg = a.config;
        let k = cfg.topk;
        let v = self.rt.lib.versions;
        let scoring_op = scores.is_some()
            || match cfg.scoring {
                Scoring::Softmax => v.softmax,
                Scoring::Sigmoid => v.sigmoid,
                _ => false,
            };
        let ops = scoring_op
            && v.scalar
            && v.gather_dim
            && v.muls
            && (!cfg.renormalize || (v.reduce_sum && v.div))
            && (a.logits.dtype() == DType::F32 || v.cast)
            && self.mine(a.weights.buffer(), "weights").is_ok();
        if !ops {
            return Ok(false);
        }
        if cfg.renormalize && !v.adds && scores.is_none() {
            let owned;
            let logits = match logits {
                Some(l) => l,
                None => {
                    owned = self.router_read_logits(a)?.1;
                    &owned
                }
            };
            for r in 0..t {
                let row = &logits[r * e..(r + 1) * e];
                let mut s: Vec<f64> = match cfg.scoring {
                    Scoring::Softmax => {
                        let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let sum: f64 = row.iter().map(|x| (x - mx).exp()).sum();
                        row.iter().map(|x| (x - mx).exp() / sum).collect()
                    }
                    _ => row.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
                };
                s.sort_by(f64::total_cmp);
                if s[..k].iter().sum::<f64>() < 1e-6 {
                    return Ok(false);
                }
            }
        }
        let smem_own;
        let smem = match scores {
            Some(m) => m,
            None => {
                let xmem;
                let x = if a.logits.dtype() == DType::F32 {
                    self.t(&desc_of(&a.logits, OP_RT, "logits")?)?
                } else {
                    xmem = DevMem::new(&self.rt, t * e * 4)?;
                    let src = self.t(&desc_of(&a.logits, OP_RT, "logits")?)?;
                    let dst = self.t(&scratch_desc(&xmem, sys::ACL_FLOAT, &[t, e]))?;
                    self.rt.cast(&src, sys::ACL_FLOAT, &dst)?;
                    dst
                };
                smem_own = DevMem::new(&self.rt, t * e * 4)?;
                let st = self.t(&scratch_desc(&smem_own, sys::ACL_FLOAT, &[t, e]))?;
                let o = match cfg.scoring {
                    Scoring::Softmax => self.rt.softmax(&x, 1, &st)?,
                    _ => self.rt.sigmoid(&x, &st)?,
                };
                if let Outcome::Rejected(_) = o {
                    return Ok(false);
                }
                &smem_own
            }
        };
        let st = self.t(&scratch_desc(smem, sys::ACL_FLOAT, &[t, e]))?;
        let gmem = DevMem::new(&self.rt, t * k * 4)?;
        let gt = self.t(&scratch_desc(&gmem, sys::ACL_FLOAT, &[t, k]))?;
        let it = self.t(&scratch_desc(imem, sys::ACL_INT32, &[t, k]))?;
        if let Outcome::Rejected(_) = self.rt.gather_dim(&st, 1, &it, &gt)? {
            return Ok(false);
        }
        let nmem;
        let w = if cfg.renormalize {
            let sum = DevMem::new(&self.rt, t * 4)?;
            let sumt = self.t(&scratch_desc(&sum, sys::ACL_FLOAT, &[t, 1]))?;
            if let Outcome::Rejected(_) = self.rt.reduce_sum(&gt, &[1], true, sys::ACL_FLOAT, &sumt)? {
                return Ok(false);
            }
            let den_mem;
            let den = if v.adds {
                den_mem = DevMem::new(&self.rt, t * 4)?;
                let dt = self.t(&scratch_desc(&den_mem, sys::ACL_FLOAT, &[t, 1]))?;
                let tiny = Scalar::f32(&self.rt, 1e-20)?;
                let one = Scalar::f32(&self.rt, 1.0)?;
                if let Outcome::Rejected(_) = self.rt.adds(&sumt, &tiny, &one, &dt)? {
                    return Ok(false);
                }
                dt
            } else {
                sumt
            };
            nmem = DevMem::new(&self.rt, t * k * 4)?;
            let nt = self.t(&scratch_desc(&nmem, sys::ACL_FLOAT, &[t, k]))?;
            if let Outcome::Rejected(_) = self.rt.div(&gt, &den, &nt)? {
                return Ok(false);
            }
            nt
        } else {
            gt
        };
        let out = self.t(&desc_of(&a.weights.as_ref(), OP_RT, "weights")?)?;
        let f = Scalar::f32(&self.rt, cfg.routed_scaling_factor)?;
        match self.rt.muls(&w, &f, &out)? {
            Outcome::Ran => Ok(true),
            Outcome::Rejected(_) => Ok(false),
        }
    }

    /// `Backend::router_topk` on this device.
    pub(crate) fn run_router_topk(&self, args: Checked<RouterTopk<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        let (t, e) = a.dims();
        let cfg = a.config;
        let k = cfg.topk;
        if t == 0 {
            // No tokens: ids and weights are empty; the histogram is all zeros (aclrtMemset on a
            // contiguous device `expert_counts`, else the host path).
            match &a.expert_counts {
                None => return Ok(()),
                Some(c) if c.layout().is_contiguous() && self.mine(c.buffer(), "expert_counts").is_ok() => {
                    let (co, _) = c.byte_range();
                    self.rt
                        .memset(c.buffer().addr() + co as u64, c.buffer().len() - co, 0, e * 8)?;
                    return Ok(());
                }
                Some(_) => {}
            }
        }
        // Selection composed on the device (`router_sorted_device`): always for `sqrt_softplus`
        // (no vendor op scores it), and for calls with non-finite logits (OPS.md §2 step 6: the
        // vendor ops do not document non-finite input). Whether the logits are finite is decided
        // on the device (a 4-byte control read) for the other scorings only.
        let sorted_ok = t > 0 && self.router_sorted_ok(&a);
        let finite = if t > 0 && !(sorted_ok && cfg.scoring == Scoring::SqrtSoftplus) {
            self.router_logits_finite(&a)?
        } else {
            None
        };
        let sorted = if sorted_ok && (cfg.scoring == Scoring::SqrtSoftplus || finite == Some(false)) {
            self.router_sorted_device(&a)?
        } else {
            None
        };
        // The logits are read only when the host needs them.
        let host = if finite == Some(true) || sorted.is_some() {
            None
        } else {
            Some(self.router_read_logits(&a)?)
        };
        let nonfinite = host.as_ref().is_some_and(|(_, l)| l.iter().any(|x| !x.is_finite()));
        let route = if sorted.is_some() {
            RouterRoute::Sorted
        } else if nonfinite || t == 0 {
            RouterRoute::Host
        } else {
            self.router_route(&cfg, e, a.logits.dtype(), a.bias.is_some())
        };
        let (sorted_ids, scores) = match sorted {
            Some((i, s)) => (Some(i), Some(s)),
            None => (None, None),
        };
        // Vendor op for the selection; scratch outputs.
        let ids = match route {
            RouterRoute::Host => None,
            RouterRoute::Sorted => sorted_ids,
            RouterRoute::Softmax => {
                let dt = a.logits.dtype();
                let ymem = DevMem::new(&self.rt, t * k * dt.size())?;
                let imem = DevMem::new(&self.rt, t * k * 4)?;
                let rmem = DevMem::new(&self.rt, t * k * 4)?;
                let x = self.t(&desc_of(&a.logits, OP_RT, "logits")?)?;
                let y = self.t(&scratch_desc(&ymem, acl_dt(dt), &[t, k]))?;
                let idx = self.t(&scratch_desc(&imem, sys::ACL_INT32, &[t, k]))?;
                let row = self.t(&scratch_desc(&rmem, sys::ACL_INT32, &[t, k]))?;
                self.rt.gating_topk_softmax(&x, k as i64, &y, &idx, &row)?;
                Some(imem)
            }
            RouterRoute::Gating(p) => {
                // x in FLOAT: the bias is f32 (core) and must have x's dtype (audit P5); the cast
                // from bf16/f16 is exact, so the selection is unchanged.
                let xmem;
                let x = if a.logits.dtype() == DType::F32 {
                    self.t(&desc_of(&a.logits, OP_RT, "logits")?)?
                } else {
                    xmem = DevMem::new(&self.rt, t * e * 4)?;
                    let src = self.t(&desc_of(&a.logits, OP_RT, "logits")?)?;
                    let dst = self.t(&scratch_desc(&xmem, sys::ACL_FLOAT, &[t, e]))?;
                    self.rt.cast(&src, sys::ACL_FLOAT, &dst)?;
                    dst
                };
                let ymem = DevMem::new(&self.rt, t * k * 4)?;
                let imem = DevMem::new(&self.rt, t * k * 4)?;
                let omem = DevMem::new(&self.rt, t * e * 4)?;
                let y = self.t(&scratch_desc(&ymem, sys::ACL_FLOAT, &[t, k]))?;
                let idx = self.t(&scratch_desc(&imem, sys::ACL_INT32, &[t, k]))?;
                let out = self.t(&scratch_desc(&omem, sys::ACL_FLOAT, &[t, e]))?;
                let bias = match &a.bias {
                    Some(b) => Some(self.t(&desc_of(b, OP_RT, "bias")?)?),
                    None => None,
                };
                let (gc, kg) = match cfg.effective_group() {
                    Some(g) => (g.n_group as i64, g.topk_group as i64),
                    None => (1, 1),
                };
                let mode = matches!(p.top2, Some(true)) as i64;
                let o = self.rt.gating_topk(
                    &x,
                    bias.as_ref(),
                    k as i64,
                    kg,
                    gc,
                    mode,
                    p.sigmoid as i64,
                    &y,
                    &idx,
                    &out,
                )?;
                match o {
                    // A shape this release's tiling refuses beyond the documented limits checked
                    // in `router_route`: the host computes the contract instead.
                    Outcome::Rejected(_) => None,
                    Outcome::Ran => Some(imem),
                }
            }
        };
        let Some(imem) = ids else {
            let (lg, _) = match host {
                Some(h) => h,
                None => self.router_read_logits(&a)?,
            };
            return self.router_host(&a, &lg);
        };
        // The vendor op's ids are checked before they index anything (aclnnGather below; the
        // emulator refuses an out-of-range index, hardware would read garbage): on the device
        // with aclnnAmin/aclnnAmax (an 8-byte control read) where the library has them.
        let v = self.rt.lib.versions;
        if v.amax && v.amin && t * k > 0 && scores.is_none() {
            let it = self.t(&scratch_desc(&imem, sys::ACL_INT32, &[t, k]))?;
            let (lo, hi) = match self.id_extremes(&it, 2)? {
                Some(x) => x,
                None => {
                    // A reduction refused: read the ids (4·T·k bytes) for the same check.
                    let mut ids = vec![0i32; t * k];
                    self.rt.d2h(bytemuck::cast_slice_mut(&mut ids), imem.ptr)?;
                    (
                        ids.iter().copied().min().unwrap_or(0),
                        ids.iter().copied().max().unwrap_or(0),
                    )
                }
            };
            if lo < 0 || hi as i64 >= e as i64 {
                return Err(Error::device(
                    NAME,
                    0,
                    format!("vendor gating op returned an expert id outside [0, {e}) (min {lo}, max {hi})"),
                ));
            }
        }
        let logits = host.as_ref().map(|(_, l)| l.as_slice());
        if self.router_weights_device(&a, logits, &imem, scores.as_ref())? {
            // ids: device to device into `ids` when it is one contiguous i32 block.
            let ids_contig = a.ids.as_ref().layout().is_contiguous() && self.mine(a.ids.buffer(), "ids").is_ok();
            let counts_on_device = match &a.expert_counts {
                Some(c) => self.router_counts_device(&c.as_ref(), &imem, t * k, e)?,
                None => true,
            };
            let need_host_ids = !ids_contig || !counts_on_device;
            let mut ids = vec![0i32; t * k];
            if need_host_ids {
                self.rt.d2h(bytemuck::cast_slice_mut(&mut ids), imem.ptr)?;
            }
            if ids_contig {
                let dst = a.ids.buffer().addr() + (a.ids.offset() * 4) as u64;
                self.rt.d2d(dst, t * k * 4, imem.ptr, t * k * 4)?;
            } else {
                let (io, _) = a.ids.byte_range();
                self.put(&a.ids, io, bytes_of(&ids))?;
            }
            if let (Some(c), false) = (&a.expert_counts, counts_on_device) {
                // The histogram on the host (the device primitives are missing or refused).
                let mut counts = vec![0i64; e];
                for &i in &ids {
                    if i < 0 || i as usize >= e {
                        return Err(Error::device(
                            NAME,
                            0,
                            format!("vendor gating op returned an expert id outside [0, {e})"),
                        ));
                    }
                    counts[i as usize] += 1;
                }
                let (co, _) = c.byte_range();
                self.put(c, co, bytes_of(&counts))?;
            }
            return Ok(());
        }
        if scores.is_some() {
            // Composed selection but the weights refused: the contract on the host (the host
            // weights below know neither sqrt_softplus nor excluded logits).
            let (lg, _) = self.router_read_logits(&a)?;
            return self.router_host(&a, &lg);
        }
        let mut ids = vec![0i32; t * k];
        self.rt.d2h(bytemuck::cast_slice_mut(&mut ids), imem.ptr)?;
        let owned;
        let logits = match logits {
            Some(l) => l,
            None => {
                owned = self.router_read_logits(&a)?.1;
                &owned
            }
        };
        // Host: unbiased scores of the chosen experts, renormalize, scale once; counts.
        let mut w = vec![0f32; t * k];
        let mut counts = vec![0i64; e];
        for r in 0..t {
            let row = &logits[r * e..(r + 1) * e];
            let s: Vec<f64> = match cfg.scoring {
                Scoring::Softmax => {
                    let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = row.iter().map(|x| (x - mx).exp()).sum();
                    row.iter().map(|x| (x - mx).exp() / sum).collect()
                }
                _ => row.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
            };
            let sel = &ids[r * k..(r + 1) * k];
            if sel.iter().any(|&i| i < 0 || i as usize >= e) {
                return Err(Error::device(
                    NAME,
                    0,
                    format!("vendor gating op returned an expert id outside [0, {e})"),
                ));
            }
            let mut ws: Vec<f64> = sel.iter().map(|&i| s[i as usize]).collect();
            if cfg.renormalize {
                let sum: f64 = ws.iter().sum::<f64>() + 1e-20;
                ws.iter_mut().for_each(|x| *x /= sum);
            }
            for j in 0..k {
                w[r * k + j] = (ws[j] * cfg.routed_scaling_factor as f64) as f32;
                counts[sel[j] as usize] += 1;
            }
        }
        let (io, _) = a.ids.byte_range();
        self.put(&a.ids, io, bytes_of(&ids))?;
        let (wo, _) = a.weights.byte_range();
        self.put(&a.weights, wo, bytes_of(&w))?;
        if let Some(c) = &a.expert_counts {
            let (co, _) = c.byte_range();
            self.put(c, co, bytes_of(&counts))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(n_group: usize, topk_group: usize, score: GroupScore) -> Option<GroupLimit> {
        Some(GroupLimit {
            n_group,
            topk_group,
            score,
        })
    }

    #[test]
    fn gating_shape_limits_are_the_documented_ones() {
        // DeepSeek-V3: 8·align32(32) = 256.
        assert!(gating_shape_ok(256, 8, g(8, 4, GroupScore::Top2Sum)).is_ok());
        // Audit P7: 128·align32(8) = 4096 > 2048.
        let e = gating_shape_ok(1024, 8, g(128, 4, GroupScore::Top2Sum)).unwrap_err();
        assert!(e.contains("4096"), "{e}");
        // Keeping every group is not grouping: the align32 rule does not apply.
        assert!(gating_shape_ok(1024, 8, g(128, 128, GroupScore::Max)).is_ok());
        assert!(gating_shape_ok(2048, 8, None).is_ok());
        assert!(gating_shape_ok(2049, 8, None).is_err());
        assert!(gating_shape_ok(64, 0, None).is_err());
        // k <= E/groupCount·kGroup.
        assert!(gating_shape_ok(64, 17, g(8, 2, GroupScore::Max)).is_err());
        assert!(gating_shape_ok(64, 16, g(8, 2, GroupScore::Max)).is_ok());
        // top-2 sum needs two experts per group.
        assert!(gating_shape_ok(8, 2, g(8, 2, GroupScore::Top2Sum)).is_err());
    }
}
