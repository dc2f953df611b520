//! OPS.md §2 `router_topk`: the MoE gate (score, bias for selection, group limit, top-k, weights).

use super::{check_writable, expect_dim, Checked, OpDesc};
use crate::{DType, Error, Result, TensorMut, TensorRef};

const OP: &str = "router_topk";

/// Score function applied to the logits (in f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scoring {
    /// Softmax over all E experts, max-subtracted (Qwen3-MoE, Mixtral).
    Softmax,
    /// Logistic sigmoid (DeepSeek-V3).
    Sigmoid,
    /// `sqrt(softplus(x))` (DeepSeek-V4 "sqrtsoftplus").
    SqrtSoftplus,
}

impl Scoring {
    /// Every score function.
    pub const ALL: [Scoring; 3] = [Scoring::Softmax, Scoring::Sigmoid, Scoring::SqrtSoftplus];
    /// Name as configs write it.
    pub const fn name(self) -> &'static str {
        match self {
            Scoring::Softmax => "softmax",
            Scoring::Sigmoid => "sigmoid",
            Scoring::SqrtSoftplus => "sqrt_softplus",
        }
    }
}

/// How a group of experts is scored for group-limited routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupScore {
    /// Sum of the two largest selection scores in the group (DeepSeek-V3 with bias).
    Top2Sum,
    /// The largest selection score in the group.
    Max,
}

impl GroupScore {
    /// Name as written in OPS.md.
    pub const fn name(self) -> &'static str {
        match self {
            GroupScore::Top2Sum => "top2_sum",
            GroupScore::Max => "max",
        }
    }
}

/// Group-limited routing (DeepSeek-V3 `n_group` / `topk_group`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupLimit {
    /// Number of groups; 0 or 1 means no group limit. Must divide E.
    pub n_group: usize,
    /// Groups kept per token, `1 <= topk_group <= n_group`.
    pub topk_group: usize,
    /// Group score rule.
    pub score: GroupScore,
}

/// Options of `router_topk`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouterConfig {
    /// Experts per token (OPS.md §2's `k`), `1 <= topk <= E`. Errors about it name the field `k`,
    /// as OPS.md and the C ABI (`moehal_router_config.k`) do.
    pub topk: usize,
    /// Score function.
    pub scoring: Scoring,
    /// Optional group limit (`None`, or `n_group <= 1`, means none).
    pub group: Option<GroupLimit>,
    /// Divide the selected weights by their sum (plus 1e-20).
    pub renormalize: bool,
    /// Multiplies the weights exactly once, renormalized or not. Finite.
    pub routed_scaling_factor: f32,
}

impl RouterConfig {
    /// The group limit in force (`None` when absent or `n_group <= 1`).
    pub fn effective_group(&self) -> Option<GroupLimit> {
        self.group.filter(|g| g.n_group > 1)
    }
}

/// Arguments of `router_topk`.
#[derive(Debug)]
pub struct RouterTopk<'a> {
    /// Options.
    pub config: RouterConfig,
    /// `[T, E]` f32/bf16/f16 gate logits.
    pub logits: TensorRef<'a>,
    /// Optional `[E]` f32 selection bias (`e_score_correction_bias`), used for selection only.
    pub bias: Option<TensorRef<'a>>,
    /// `[T, k]` i32 output: selected experts, selection score descending, ties by lower index.
    pub ids: TensorMut<'a>,
    /// `[T, k]` f32 output: weights of the selected experts.
    pub weights: TensorMut<'a>,
    /// Optional `[E]` i64 output: histogram of `ids` (fill slots included).
    pub expert_counts: Option<TensorMut<'a>>,
}

impl<'a> RouterTopk<'a> {
    /// Tokens and experts `(T, E)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.logits.shape()[0], self.logits.shape()[1])
    }

    /// The support-matrix key of this call.
    pub fn desc(&self) -> OpDesc {
        OpDesc::RouterTopk {
            dtype: self.logits.dtype(),
            scoring: self.config.scoring,
            group: self.config.effective_group().map(|g| g.score),
        }
    }

    /// Check every rule of OPS.md §2 (all are independent of element values).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field at fault.
    pub fn validate(self) -> Result<Checked<Self>> {
        self.logits.check(OP, "logits", &DType::FLOATS, 2)?;
        let (t, e) = self.dims();
        let c = &self.config;
        if e == 0 {
            return Err(Error::invalid(OP, "logits", "E = 0 experts"));
        }
        if c.topk == 0 || c.topk > e {
            return Err(Error::invalid(OP, "k", format!("k = {} outside [1, E = {e}]", c.topk)));
        }
        if !c.routed_scaling_factor.is_finite() {
            return Err(Error::invalid(
                OP,
                "routed_scaling_factor",
                format!("{} is not finite", c.routed_scaling_factor),
            ));
        }
        if let Some(g) = c.effective_group() {
            if e % g.n_group != 0 {
                return Err(Error::invalid(
                    OP,
                    "n_group",
                    format!("E = {e} is not divisible by n_group = {}", g.n_group),
                ));
            }
            if g.topk_group == 0 || g.topk_group > g.n_group {
                return Err(Error::invalid(
                    OP,
                    "topk_group",
                    format!("topk_group = {} outside [1, n_group = {}]", g.topk_group, g.n_group),
                ));
            }
            let per = e / g.n_group;
            if c.topk > g.topk_group * per {
                return Err(Error::invalid(
                    OP,
                    "k",
                    format!(
                        "k = {} exceeds topk_group * E / n_group = {}",
                        c.topk,
                        g.topk_group * per
                    ),
                ));
            }
            if g.score == GroupScore::Top2Sum && per < 2 {
                return Err(Error::invalid(
                    OP,
                    "group_score",
                    format!("top2_sum needs at least 2 experts per group, have {per}"),
                ));
            }
        }
        if let Some(b) = &self.bias {
            b.check(OP, "bias", &[DType::F32], 1)?;
            expect_dim(OP, "bias", b.shape(), 0, e, "E, from logits")?;
        }
        self.ids.check(OP, "ids", &[DType::I32], 2)?;
        expect_dim(OP, "ids", self.ids.shape(), 0, t, "T, from logits")?;
        expect_dim(OP, "ids", self.ids.shape(), 1, c.topk, "k")?;
        check_writable(OP, "ids", &self.ids)?;
        self.weights.check(OP, "weights", &[DType::F32], 2)?;
        expect_dim(OP, "weights", self.weights.shape(), 0, t, "T, from logits")?;
        expect_dim(OP, "weights", self.weights.shape(), 1, c.topk, "k")?;
        check_writable(OP, "weights", &self.weights)?;
        if let Some(ec) = &self.expert_counts {
            ec.check(OP, "expert_counts", &[DType::I64], 1)?;
            expect_dim(OP, "expert_counts", ec.shape(), 0, e, "E, from logits")?;
            check_writable(OP, "expert_counts", ec)?;
        }
        Ok(Checked::new(self))
    }
}

/// Arguments of hash routing (OPS.md §2 "Hash routing", DeepSeek-V4's first `num_hash_layers`
/// layers): `router_topk` with steps 2–4 replaced by a table lookup, `ids[t] = tid2eid[token_ids[t]]`
/// in table order (a repeated id in a row is two independent slots).
///
/// Step 5 applies unchanged: the weights are the unbiased scores `s` (step 1, `config.scoring`) of
/// the looked-up experts, renormalized over the `k` slots if `config.renormalize`, then multiplied
/// by `config.routed_scaling_factor`; a non-finite logit scores 0, so its slot weighs 0 and its id
/// stays. There is no bias, and `config.group` is ignored, not validated (one gate config may serve
/// both kinds of layers).
#[derive(Debug)]
pub struct RouterHash<'a> {
    /// Options: `k`, `scoring`, `renormalize`, `routed_scaling_factor` are used; `group` is ignored.
    pub config: RouterConfig,
    /// `[T, E]` f32/bf16/f16 gate logits.
    pub logits: TensorRef<'a>,
    /// `[V, k]` i32 table of expert ids per token id; every entry read must be in `[0, E)`.
    pub tid2eid: TensorRef<'a>,
    /// `[T]` i64 token ids, each in `[0, V)`.
    pub token_ids: TensorRef<'a>,
    /// `[T, k]` i32 output: `tid2eid[token_ids[t]]`.
    pub ids: TensorMut<'a>,
    /// `[T, k]` f32 output: weights of those slots.
    pub weights: TensorMut<'a>,
    /// Optional `[E]` i64 output: histogram of `ids` (repeats counted twice).
    pub expert_counts: Option<TensorMut<'a>>,
}

impl<'a> RouterHash<'a> {
    /// Tokens and experts `(T, E)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.logits.shape()[0], self.logits.shape()[1])
    }

    /// Rows `V` of `tid2eid`.
    pub fn vocab(&self) -> usize {
        self.tid2eid.shape()[0]
    }

    /// The support-matrix key of this call.
    pub fn desc(&self) -> OpDesc {
        OpDesc::RouterHash {
            dtype: self.logits.dtype(),
            scoring: self.config.scoring,
        }
    }

    /// Check every shape and option rule of OPS.md §2 for hash routing (`1 <= k <= E`, `tid2eid`
    /// width `k`, finite `routed_scaling_factor`; the group arguments are not looked at). The
    /// value rules (token ids in `[0, V)`, entries in `[0, E)`) are checked by the backend with
    /// [`hash_rows`] before it writes anything.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field at fault.
    pub fn validate(self) -> Result<Checked<Self>> {
        self.logits.check(OP, "logits", &DType::FLOATS, 2)?;
        let (t, e) = self.dims();
        let c = &self.config;
        if e == 0 {
            return Err(Error::invalid(OP, "logits", "E = 0 experts"));
        }
        if c.topk == 0 || c.topk > e {
            return Err(Error::invalid(OP, "k", format!("k = {} outside [1, E = {e}]", c.topk)));
        }
        if !c.routed_scaling_factor.is_finite() {
            return Err(Error::invalid(
                OP,
                "routed_scaling_factor",
                format!("{} is not finite", c.routed_scaling_factor),
            ));
        }
        self.tid2eid.check(OP, "tid2eid", &[DType::I32], 2)?;
        expect_dim(OP, "tid2eid", self.tid2eid.shape(), 1, c.topk, "k")?;
        self.token_ids.check(OP, "token_ids", &[DType::I64], 1)?;
        expect_dim(OP, "token_ids", self.token_ids.shape(), 0, t, "T, from logits")?;
        self.ids.check(OP, "ids", &[DType::I32], 2)?;
        expect_dim(OP, "ids", self.ids.shape(), 0, t, "T, from logits")?;
        expect_dim(OP, "ids", self.ids.shape(), 1, c.topk, "k")?;
        check_writable(OP, "ids", &self.ids)?;
        self.weights.check(OP, "weights", &[DType::F32], 2)?;
        expect_dim(OP, "weights", self.weights.shape(), 0, t, "T, from logits")?;
        expect_dim(OP, "weights", self.weights.shape(), 1, c.topk, "k")?;
        check_writable(OP, "weights", &self.weights)?;
        if let Some(ec) = &self.expert_counts {
            ec.check(OP, "expert_counts", &[DType::I64], 1)?;
            expect_dim(OP, "expert_counts", ec.shape(), 0, e, "E, from logits")?;
            check_writable(OP, "expert_counts", ec)?;
        }
        Ok(Checked::new(self))
    }
}

/// The value check of hash routing, shared by every backend so the messages agree: for each token
/// the `tid2eid` row it reads (`token_ids[t]`, which must be in `[0, V)`), after checking that each
/// of the `k` entries of that row is in `[0, E)`. `table` is `[V, k]` row-major (`V = vocab`).
///
/// # Errors
/// [`Error::InvalidArgument`] on `token_ids` (an id outside `[0, V)`) or `tid2eid` (an entry
/// outside `[0, E)`), naming the token and the value.
pub fn hash_rows(token_ids: &[i64], table: &[i32], vocab: usize, k: usize, e: usize) -> Result<Vec<usize>> {
    token_ids
        .iter()
        .enumerate()
        .map(|(t, &tok)| {
            let r = usize::try_from(tok).ok().filter(|&r| r < vocab).ok_or_else(|| {
                Error::invalid(
                    OP,
                    "token_ids",
                    format!("token {t}: token id {tok} outside [0, V = {vocab})"),
                )
            })?;
            if let Some((j, &id)) = table[r * k..(r + 1) * k]
                .iter()
                .enumerate()
                .find(|(_, &id)| id < 0 || id as usize >= e)
            {
                return Err(Error::invalid(
                    OP,
                    "tid2eid",
                    format!("token {t}: tid2eid[{tok}][{j}] = {id} outside [0, E = {e})"),
                ));
            }
            Ok(r)
        })
        .collect()
}
