//! The ops of OPS.md as typed argument structs.
//!
//! Each op has an argument struct holding its tensors and options. `validate()` checks every rule
//! of OPS.md that does not depend on element values (dtypes, ranks, shapes, option ranges, views
//! inside their buffers, outputs writable) and returns a [`Checked`] wrapper; only a `Checked`
//! value can be handed to a [`Backend`](crate::Backend), so validation cannot be skipped.
//! Rules that depend on element values (`group_end` monotone, ids and rows in range) are checked
//! by every backend before it writes anything, with the shared checkers in each op module
//! (`check_group_end`, `check_ids`, ...), so the messages are the same everywhere.

use std::ops::Deref;

use crate::DType;

pub mod engram_hash;
pub mod engram_lookup;
pub mod gather_rows;
pub mod grouped_gemm;
pub mod moe_combine;
pub mod moe_permute;
pub mod quant;
pub mod router_topk;
pub mod swiglu;

pub use engram_hash::EngramHash;
pub use engram_lookup::EngramLookup;
pub use gather_rows::{GatherRows, TableFormat};
pub use grouped_gemm::{GemmDims, GroupedGemm, WeightLayout};
pub use moe_combine::MoeCombine;
pub use moe_permute::MoePermute;
pub use quant::{ActFormat, GroupedGemmQ, QuantDesc, QuantizeFp8, QuantizeInt8, WeightFormat};
pub use router_topk::{hash_rows, GroupLimit, GroupScore, RouterConfig, RouterHash, RouterTopk, Scoring};
pub use swiglu::Swiglu;

/// Arguments that passed core validation. Only moehal-core constructs it, and it cannot be changed
/// afterwards (read through `Deref`; a backend takes the arguments by [`Checked::into_inner`]).
#[derive(Debug)]
pub struct Checked<A>(A);

impl<A> Checked<A> {
    pub(crate) fn new(a: A) -> Self {
        Checked(a)
    }
    /// The validated arguments.
    pub fn into_inner(self) -> A {
        self.0
    }
}

impl<A> Deref for Checked<A> {
    type Target = A;
    fn deref(&self) -> &A {
        &self.0
    }
}

/// The ops of OPS.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// §1 expert matmul over rows sorted by expert.
    GroupedGemm,
    /// §2 MoE gate.
    RouterTopk,
    /// §3 scatter rows to expert order.
    MoePermute,
    /// §3 gated activation.
    Swiglu,
    /// §3 weighted gather back to token order.
    MoeCombine,
    /// §4 N-gram hash of canonical ids.
    EngramHash,
    /// §5 row gather (with fp8 dequantization).
    GatherRows,
    /// §5 hash then gather.
    EngramLookup,
    /// §6 per-1×128 fp8 activation quantization.
    QuantizeFp8,
    /// §6 per-row int8 activation quantization.
    QuantizeInt8,
}

impl OpKind {
    /// Every op, in OPS.md order.
    pub const ALL: [OpKind; 10] = [
        OpKind::GroupedGemm,
        OpKind::RouterTopk,
        OpKind::MoePermute,
        OpKind::Swiglu,
        OpKind::MoeCombine,
        OpKind::EngramHash,
        OpKind::GatherRows,
        OpKind::EngramLookup,
        OpKind::QuantizeFp8,
        OpKind::QuantizeInt8,
    ];
    /// The op's name as OPS.md writes it.
    pub const fn name(self) -> &'static str {
        match self {
            OpKind::GroupedGemm => "grouped_gemm",
            OpKind::RouterTopk => "router_topk",
            OpKind::MoePermute => "moe_permute",
            OpKind::Swiglu => "swiglu",
            OpKind::MoeCombine => "moe_combine",
            OpKind::EngramHash => "engram_hash",
            OpKind::GatherRows => "gather_rows",
            OpKind::EngramLookup => "engram_lookup",
            OpKind::QuantizeFp8 => "quantize_fp8",
            OpKind::QuantizeInt8 => "quantize_int8",
        }
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for OpKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        OpKind::ALL.into_iter().find(|o| o.name() == s).ok_or_else(|| {
            let names: Vec<_> = OpKind::ALL.iter().map(|o| o.name()).collect();
            format!("unknown op `{s}` (expected one of {})", names.join(", "))
        })
    }
}

/// What a call needs from a backend, without its data: the key of the support matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpDesc {
    /// `grouped_gemm` in `dtype` with weights in `layout`.
    GroupedGemm {
        /// Shared dtype of x, w, y.
        dtype: DType,
        /// Weight layout.
        layout: WeightLayout,
    },
    /// `router_topk` on logits of `dtype`.
    RouterTopk {
        /// Logits dtype.
        dtype: DType,
        /// Score function.
        scoring: Scoring,
        /// Group-limit rule, if groups are used.
        group: Option<GroupScore>,
    },
    /// `router_topk` with hash routing (OPS.md §2 "Hash routing", [`RouterHash`]) on logits of
    /// `dtype`; its op is [`OpKind::RouterTopk`].
    RouterHash {
        /// Logits dtype.
        dtype: DType,
        /// Score function (step 1, for the weights).
        scoring: Scoring,
    },
    /// `moe_permute`, optionally also permuting activations of the given dtype.
    MoePermute {
        /// dtype of `x`/`x_perm` if they are given.
        x: Option<DType>,
    },
    /// `swiglu` in `dtype`.
    Swiglu {
        /// dtype of `h` and `out`.
        dtype: DType,
    },
    /// `moe_combine` in `dtype`.
    MoeCombine {
        /// dtype of `y_perm` and `out`.
        dtype: DType,
    },
    /// `engram_hash`.
    EngramHash,
    /// `gather_rows` from a table of `table` format into `out`.
    GatherRows {
        /// Table format.
        table: TableFormat,
        /// Output dtype.
        out: DType,
        /// The table is host memory while the output is on a device (the Engram offload case).
        host_table: bool,
    },
    /// `engram_lookup` (hash + gather).
    EngramLookup {
        /// Table format.
        table: TableFormat,
        /// Output dtype.
        out: DType,
        /// The table is host memory while the output is on a device.
        host_table: bool,
    },
}

impl OpDesc {
    /// The op.
    pub fn kind(&self) -> OpKind {
        match self {
            OpDesc::GroupedGemm { .. } => OpKind::GroupedGemm,
            OpDesc::RouterTopk { .. } | OpDesc::RouterHash { .. } => OpKind::RouterTopk,
            OpDesc::MoePermute { .. } => OpKind::MoePermute,
            OpDesc::Swiglu { .. } => OpKind::Swiglu,
            OpDesc::MoeCombine { .. } => OpKind::MoeCombine,
            OpDesc::EngramHash => OpKind::EngramHash,
            OpDesc::GatherRows { .. } => OpKind::GatherRows,
            OpDesc::EngramLookup { .. } => OpKind::EngramLookup,
        }
    }

    /// A short description of the variant (`"bf16 NK"`, `"fp8_e4m3_ue8m0 -> bf16, host table"`).
    pub fn variant(&self) -> String {
        match *self {
            OpDesc::GroupedGemm { dtype, layout } => format!("{dtype} {layout:?}"),
            OpDesc::RouterTopk { dtype, scoring, group } => match group {
                Some(g) => format!("{dtype} {} groups:{}", scoring.name(), g.name()),
                None => format!("{dtype} {}", scoring.name()),
            },
            OpDesc::RouterHash { dtype, scoring } => format!("{dtype} {} hash (tid2eid)", scoring.name()),
            OpDesc::MoePermute { x: Some(d) } => format!("ids + x {d}"),
            OpDesc::MoePermute { x: None } => "ids only".into(),
            OpDesc::Swiglu { dtype } | OpDesc::MoeCombine { dtype } => dtype.to_string(),
            OpDesc::EngramHash => "i64".into(),
            OpDesc::GatherRows { table, out, host_table } | OpDesc::EngramLookup { table, out, host_table } => {
                format!(
                    "{} -> {out}{}",
                    table.name(),
                    if host_table { ", host table" } else { "" }
                )
            }
        }
    }

    /// Every variant the contract names, for the support matrix (`moehal kernels`).
    /// `host_table` variants are listed only when `device_backend` is true.
    pub fn all(device_backend: bool) -> Vec<OpDesc> {
        let mut v = Vec::new();
        for dtype in DType::FLOATS {
            for layout in [WeightLayout::NK, WeightLayout::KN] {
                v.push(OpDesc::GroupedGemm { dtype, layout });
            }
        }
        for dtype in DType::FLOATS {
            for scoring in Scoring::ALL {
                v.push(OpDesc::RouterTopk {
                    dtype,
                    scoring,
                    group: None,
                });
            }
        }
        for g in [GroupScore::Top2Sum, GroupScore::Max] {
            v.push(OpDesc::RouterTopk {
                dtype: DType::F32,
                scoring: Scoring::Sigmoid,
                group: Some(g),
            });
        }
        for dtype in DType::FLOATS {
            v.push(OpDesc::RouterHash {
                dtype,
                scoring: Scoring::SqrtSoftplus,
            });
        }
        v.push(OpDesc::MoePermute { x: None });
        for d in DType::FLOATS {
            v.push(OpDesc::MoePermute { x: Some(d) });
        }
        for dtype in DType::FLOATS {
            v.push(OpDesc::Swiglu { dtype });
        }
        for dtype in DType::FLOATS {
            v.push(OpDesc::MoeCombine { dtype });
        }
        v.push(OpDesc::EngramHash);
        let hosts: &[bool] = if device_backend { &[false, true] } else { &[false] };
        for &host_table in hosts {
            for (table, out) in TableFormat::PAIRS {
                v.push(OpDesc::GatherRows { table, out, host_table });
            }
        }
        for &host_table in hosts {
            for (table, out) in TableFormat::PAIRS {
                v.push(OpDesc::EngramLookup { table, out, host_table });
            }
        }
        v
    }
}

/// Output must be writable (shared by every op's validation).
pub(crate) fn check_writable(op: &'static str, field: &'static str, t: &crate::TensorMut<'_>) -> crate::Result<()> {
    if t.buffer().writable() {
        Ok(())
    } else {
        Err(crate::Error::invalid(op, field, "output buffer is read-only"))
    }
}

/// `dim` of `field` must equal `want`.
pub(crate) fn expect_dim(
    op: &'static str,
    field: &'static str,
    shape: &[usize],
    dim: usize,
    want: usize,
    what: &str,
) -> crate::Result<()> {
    if shape[dim] == want {
        Ok(())
    } else {
        Err(crate::Error::invalid(
            op,
            field,
            format!(
                "shape {shape:?}: dimension {dim} is {}, expected {want} ({what})",
                shape[dim]
            ),
        ))
    }
}
