//! Model presets from published configs (docs/OPS.md, "Model presets"; sources: the models'
//! `config.json` files and reference code, e.g. deepseek-ai/DeepSeek-V3 `inference/configs/`,
//! huggingface/transformers `models/{deepseek_v3,deepseek_v4,qwen3_moe,mixtral}`).

use moehal_core::ops::{GroupLimit, GroupScore, RouterConfig, Scoring};

/// The Engram part of a preset (DeepSeek-V4.1-Flash).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngramPreset {
    /// 0-based decoder layers that carry Engram.
    pub layers: [usize; 2],
    /// Max n-gram order N.
    pub max_order: usize,
    /// Heads K per order.
    pub heads: usize,
    /// Row width D of the tables.
    pub row_dim: usize,
}

/// One model's MoE (and Engram) shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    /// CLI name, e.g. `"deepseek-v3"`.
    pub name: &'static str,
    /// Hidden size H (input and output of the experts).
    pub hidden: usize,
    /// Expert intermediate width I (gate_up is `[H -> 2I]`, down is `[I -> H]`).
    pub expert_width: usize,
    /// Routed experts E.
    pub num_experts: usize,
    /// Experts per token k.
    pub topk: usize,
    /// Router scoring.
    pub scoring: Scoring,
    /// Whether the router uses a selection bias (`e_score_correction_bias`).
    pub bias: bool,
    /// Group limit, if any.
    pub group: Option<GroupLimit>,
    /// Renormalize the selected weights.
    pub renormalize: bool,
    /// Routed scaling factor (`routed_scaling_factor` of the model's config).
    pub routed_scaling_factor: f32,
    /// Shared experts (each of width `expert_width`).
    pub shared_experts: usize,
    /// SwiGLU clamp.
    pub swiglu_limit: Option<f32>,
    /// Engram configuration.
    pub engram: Option<EngramPreset>,
}

impl Preset {
    /// The router options of this model.
    pub fn router(&self) -> RouterConfig {
        RouterConfig {
            topk: self.topk,
            scoring: self.scoring,
            group: self.group,
            renormalize: self.renormalize,
            routed_scaling_factor: self.routed_scaling_factor,
        }
    }

    /// A copy with hidden and expert widths divided by `div` (rounded up to a multiple of 32), for
    /// machines or time budgets the full shape does not fit. Expert count, k and routing are kept.
    pub fn scaled_widths(&self, div: usize) -> Preset {
        let s = |v: usize| (v / div.max(1)).div_ceil(32).max(1) * 32;
        Preset {
            hidden: s(self.hidden),
            expert_width: s(self.expert_width),
            ..*self
        }
    }
}

/// Every preset of OPS.md.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "deepseek-v3",
        hidden: 7168,
        expert_width: 2048,
        num_experts: 256,
        topk: 8,
        scoring: Scoring::Sigmoid,
        bias: true,
        group: Some(GroupLimit {
            n_group: 8,
            topk_group: 4,
            score: GroupScore::Top2Sum,
        }),
        renormalize: true,
        routed_scaling_factor: 2.5,
        shared_experts: 1,
        swiglu_limit: None,
        engram: None,
    },
    Preset {
        name: "deepseek-v4-flash",
        hidden: 4096,
        expert_width: 2048,
        num_experts: 256,
        topk: 6,
        scoring: Scoring::SqrtSoftplus,
        bias: true,
        group: None,
        renormalize: true,
        routed_scaling_factor: 1.5,
        shared_experts: 1,
        swiglu_limit: Some(10.0),
        engram: None,
    },
    Preset {
        name: "deepseek-v4.1-flash",
        hidden: 5120,
        expert_width: 2304,
        num_experts: 384,
        topk: 6,
        scoring: Scoring::SqrtSoftplus,
        bias: true,
        group: None,
        renormalize: true,
        routed_scaling_factor: 1.5,
        shared_experts: 1,
        swiglu_limit: Some(10.0),
        engram: Some(EngramPreset {
            layers: [1, 14],
            max_order: 4,
            heads: 8,
            row_dim: 256,
        }),
    },
    Preset {
        name: "qwen3-30b-a3b",
        hidden: 2048,
        expert_width: 768,
        num_experts: 128,
        topk: 8,
        scoring: Scoring::Softmax,
        bias: false,
        group: None,
        renormalize: true,
        routed_scaling_factor: 1.0,
        shared_experts: 0,
        swiglu_limit: None,
        engram: None,
    },
    Preset {
        name: "qwen3-235b-a22b",
        hidden: 4096,
        expert_width: 1536,
        num_experts: 128,
        topk: 8,
        scoring: Scoring::Softmax,
        bias: false,
        group: None,
        renormalize: true,
        routed_scaling_factor: 1.0,
        shared_experts: 0,
        swiglu_limit: None,
        engram: None,
    },
    Preset {
        name: "mixtral-8x7b",
        hidden: 4096,
        expert_width: 14336,
        num_experts: 8,
        topk: 2,
        scoring: Scoring::Softmax,
        bias: false,
        group: None,
        renormalize: true,
        routed_scaling_factor: 1.0,
        shared_experts: 0,
        swiglu_limit: None,
        engram: None,
    },
];

/// Find a preset by name.
///
/// # Errors
/// A message listing the known names.
pub fn preset(name: &str) -> Result<&'static Preset, String> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
        format!("unknown preset `{name}` (known: {})", names.join(", "))
    })
}
