//! The general aclnn primitives (issue 13): elementwise math, reductions, scans and gathers that a
//! backend composes where a fused vendor op differs from moehal's contract. Written from the CANN
//! op pages only (`RULES.md` §Primitives cites each one), not from moehal-core or the backend.
//!
//! Common rules of the family (RULES.md PR1-PR6):
//! - every tensor is `ACL_FORMAT_ND` (checked in `abi::State::check_tensor`); views (strides,
//!   offsets) are accepted wherever the page says "支持非连续的Tensor";
//! - arithmetic is done in f32 and rounded once to the output dtype (the pages give formulas, not
//!   internal precision: UNDOCUMENTED, f32 is the conservative model); sums accumulate in f32 in
//!   index order;
//! - integer, DOUBLE and COMPLEX operands the pages also list are NOT EMULATED unless stated;
//! - host scalars (`aclScalar`) are copied at `aclCreateScalar`; an executor keeps the value it
//!   was built with, so destroying the scalar after phase one is harmless.

use crate::sys;
use crate::tensor::{dt_name, elem_size, Desc, HostTensor};

use super::{bad, incr, null, Fail, FLOATS};

/// A host scalar as `aclCreateScalar` copied it (`[HA canncommercial/800 operatorlist_00017]`:
/// "Host侧的scalar类型的指针，其指向的值会作为scalar").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scalar {
    /// The `aclDataType` it was created with.
    pub dtype: sys::aclDataType,
    /// Its value as f64 (exact for every supported type but INT64/UINT64 beyond 2^53).
    pub f: f64,
    /// Its value as i64 for integer / BOOL scalars (0 for floating ones).
    pub i: i64,
}

impl Scalar {
    /// Decode `bytes` (little-endian, `elem_size(dtype)` of them) as a scalar of `dtype`. `None` for
    /// a type the emulator does not model (COMPLEX, STRING, ...).
    pub fn decode(dtype: sys::aclDataType, b: &[u8]) -> Option<Scalar> {
        use half::{bf16, f16};
        let n = elem_size(dtype)?;
        if b.len() < n {
            return None;
        }
        let int = |i: i64| Scalar { dtype, f: i as f64, i };
        Some(match dtype {
            sys::ACL_FLOAT => Scalar {
                dtype,
                f: f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
                i: 0,
            },
            sys::ACL_FLOAT16 => Scalar {
                dtype,
                f: f16::from_le_bytes([b[0], b[1]]).to_f64(),
                i: 0,
            },
            sys::ACL_BF16 => Scalar {
                dtype,
                f: bf16::from_le_bytes([b[0], b[1]]).to_f64(),
                i: 0,
            },
            sys::ACL_DOUBLE => Scalar {
                dtype,
                f: f64::from_le_bytes(b[..8].try_into().ok()?),
                i: 0,
            },
            sys::ACL_INT8 => int(b[0] as i8 as i64),
            sys::ACL_UINT8 => int(b[0] as i64),
            sys::ACL_BOOL => int((b[0] != 0) as i64),
            sys::ACL_INT16 => int(i16::from_le_bytes([b[0], b[1]]) as i64),
            sys::ACL_UINT16 => int(u16::from_le_bytes([b[0], b[1]]) as i64),
            sys::ACL_INT32 => int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64),
            sys::ACL_UINT32 => int(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64),
            sys::ACL_INT64 => int(i64::from_le_bytes(b[..8].try_into().ok()?)),
            sys::ACL_UINT64 => int(u64::from_le_bytes(b[..8].try_into().ok()?) as i64),
            _ => return None,
        })
    }
    /// Whether the scalar is of a floating type.
    pub fn is_float(&self) -> bool {
        matches!(
            self.dtype,
            sys::ACL_FLOAT | sys::ACL_FLOAT16 | sys::ACL_BF16 | sys::ACL_DOUBLE
        )
    }
}

/// Numeric scalar types a floating tensor accepts ("数据类型需要可转换成self的数据类型": every
/// integer and floating type converts to a floating one; BOOL is left out, the Clamp/Muls pages'
/// scalar type lists do not name it for A2 in every release — strict).
pub(super) const NUM_SCALARS: [sys::aclDataType; 9] = [
    sys::ACL_FLOAT,
    sys::ACL_FLOAT16,
    sys::ACL_BF16,
    sys::ACL_DOUBLE,
    sys::ACL_INT8,
    sys::ACL_UINT8,
    sys::ACL_INT16,
    sys::ACL_INT32,
    sys::ACL_INT64,
];

/// The tensor types the second group of primitives emulates (FLOAT / FLOAT16 / BFLOAT16 / INT32 /
/// INT64; the pages' other types are NOT EMULATED, RULES.md PR3).
pub(super) const NUMERIC: [sys::aclDataType; 5] = [
    sys::ACL_FLOAT,
    sys::ACL_FLOAT16,
    sys::ACL_BF16,
    sys::ACL_INT32,
    sys::ACL_INT64,
];

pub(super) fn req_scalar(s: Option<Scalar>, what: &str) -> Result<Scalar, Fail> {
    s.ok_or_else(|| null(what))
}

/// A scalar that must convert to a floating tensor's type (161002 otherwise).
pub(super) fn float_scalar(s: &Scalar, what: &str) -> Result<f32, Fail> {
    if !NUM_SCALARS.contains(&s.dtype) {
        return Err(bad(format!(
            "{what}: scalar dtype {} does not convert to a floating tensor type",
            dt_name(s.dtype)
        )));
    }
    Ok(s.f as f32)
}

/// Elementwise unary functions of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    /// `out = 1 / (1 + e^-x)` (aclnnSigmoid).
    Sigmoid,
    /// `out = sqrt(x)` (aclnnSqrt; NaN for x < 0, as IEEE).
    Sqrt,
}

/// Elementwise binary functions with broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `out = self * other` (aclnnMul).
    Mul,
    /// `out = self / other` (aclnnDiv, true division; x/0 is ±inf or NaN as IEEE).
    Div,
}

/// One validated primitive, waiting for its launch.
#[derive(Clone)]
pub enum Prim {
    /// aclnnClamp / aclnnClampMin / aclnnClampMax: `out = min(max(x, lo), hi)` with the absent
    /// bound left out.
    Clamp {
        /// The launch function that may consume the executor.
        launch: &'static str,
        /// Input.
        x: Desc,
        /// Lower bound, if any.
        lo: Option<f32>,
        /// Upper bound, if any.
        hi: Option<f32>,
        /// Output (self's dtype and shape).
        out: Desc,
    },
    /// aclnnMuls / aclnnInplaceMuls (`out = x * k`) and aclnnDivs / aclnnInplaceDivs
    /// (`out = x / k`); in place, `out` is `x`.
    Muls {
        /// The launch function.
        launch: &'static str,
        /// Input (selfRef for the in-place form).
        x: Desc,
        /// The scalar as f32.
        k: f32,
        /// Divide by `k` instead of multiplying.
        div: bool,
        /// Output (the same descriptor as `x` in place).
        out: Desc,
    },
    /// aclnnMul / aclnnDiv with broadcasting (aclnnInplaceDiv: `out` is `a`).
    Binary {
        /// Which function.
        f: Binary,
        /// The in-place form (aclnnInplaceDiv).
        inplace: bool,
        /// self.
        a: Desc,
        /// other.
        b: Desc,
        /// out, of the broadcast shape.
        out: Desc,
    },
    /// aclnnSigmoid / aclnnSqrt (and their in-place forms: `out` is `x`).
    Unary {
        /// Which function.
        f: Unary,
        /// The in-place form.
        inplace: bool,
        /// Input.
        x: Desc,
        /// Output, same dtype and shape.
        out: Desc,
    },
    /// aclnnSoftplus.
    Softplus {
        /// Input.
        x: Desc,
        /// beta.
        beta: f32,
        /// threshold.
        threshold: f32,
        /// Output.
        out: Desc,
    },
    /// aclnnSoftmax along `dim` (non-negative).
    Softmax {
        /// Input.
        x: Desc,
        /// Axis.
        dim: usize,
        /// Output.
        out: Desc,
    },
    /// aclnnReduceSum over `dims` (non-negative, distinct).
    ReduceSum {
        /// Input.
        x: Desc,
        /// Reduced axes (flags per input axis).
        reduce: Vec<bool>,
        /// Output.
        out: Desc,
    },
    /// aclnnCumsum along `dim`.
    Cumsum {
        /// Input.
        x: Desc,
        /// Axis.
        dim: usize,
        /// Output (dtype = the dtype argument).
        out: Desc,
    },
    /// aclnnGather (torch.gather semantics) along `dim`.
    Gather {
        /// Input.
        x: Desc,
        /// Axis.
        dim: usize,
        /// INT32 / INT64 indices, out's shape.
        index: Desc,
        /// Output.
        out: Desc,
    },
    /// aclnnInplaceMaskedFillScalar: `selfRef[i] = value where mask[i]`.
    MaskedFill {
        /// selfRef.
        self_ref: Desc,
        /// BOOL mask, broadcast to selfRef.
        mask: Desc,
        /// The fill value.
        value: Scalar,
    },
    /// aclnnEqScalar: `out[i] = (self[i] == other)`, BOOL out.
    EqScalar {
        /// Input.
        x: Desc,
        /// The scalar.
        other: Scalar,
        /// BOOL output.
        out: Desc,
    },
    /// aclnnInplaceZero: `selfRef[i] = 0`.
    Zero {
        /// selfRef.
        self_ref: Desc,
    },
    /// aclnnSort (values and indices) / aclnnArgsort (indices only) along `dim`.
    Sort {
        /// "aclnnSort" or "aclnnArgsort".
        launch: &'static str,
        /// Input.
        x: Desc,
        /// Axis (non-negative).
        dim: usize,
        /// Descending order.
        descending: bool,
        /// Equal keys keep their order.
        stable: bool,
        /// valuesOut (aclnnSort only).
        values: Option<Desc>,
        /// INT64 positions along `dim`.
        indices: Desc,
    },
    /// aclnnIndexSelect along `dim` (1-D index).
    IndexSelect {
        /// Input.
        x: Desc,
        /// Axis.
        dim: usize,
        /// INT32 / INT64 1-D indices.
        index: Desc,
        /// Output.
        out: Desc,
    },
    /// aclnnAmax / aclnnAmin over the flagged axes.
    Amax {
        /// Maximum (aclnnAmax) or minimum (aclnnAmin).
        max: bool,
        /// Input.
        x: Desc,
        /// Reduced axes (flags per input axis).
        reduce: Vec<bool>,
        /// Output (self's dtype).
        out: Desc,
    },
    /// aclnnSearchSorted: insertion points of self in the sorted last axis of `seq`.
    SearchSorted {
        /// sortedSequence.
        seq: Desc,
        /// Values to place.
        x: Desc,
        /// Right insertion points (`seq_j > x`) instead of left (`seq_j >= x`).
        right: bool,
        /// Optional INT64 order of `seq`'s last axis.
        sorter: Option<Desc>,
        /// INT32 / INT64 out, self's shape.
        out: Desc,
    },
    /// aclnnScatter / aclnnInplaceScatter (torch.scatter, reduce 0 / 1 / 2).
    Scatter {
        /// The in-place form (out is self).
        inplace: bool,
        /// self / selfRef.
        x: Desc,
        /// Axis.
        dim: usize,
        /// INT32 / INT64 targets along `dim`.
        index: Desc,
        /// Values.
        src: Desc,
        /// 0 replace, 1 add, 2 multiply.
        reduce: i64,
        /// Output (self's dtype and shape).
        out: Desc,
    },
    /// aclnnFloorDivides / aclnnAdds and their in-place forms (`out` is `x` in place).
    ScalarArith {
        /// Which function.
        op: super::arith::ScalarOp,
        /// The in-place form.
        inplace: bool,
        /// self / selfRef.
        x: Desc,
        /// The scalar operand.
        other: Scalar,
        /// Adds' alpha (1 for FloorDivides).
        alpha: Scalar,
        /// Output (the promoted type = self's; self's shape).
        out: Desc,
    },
    /// aclnnIsFinite: `out[i] = self[i]` is neither ±inf nor NaN (BOOL out).
    IsFinite {
        /// Input.
        x: Desc,
        /// BOOL output, self's shape.
        out: Desc,
    },
    /// aclnnLogicalNot / aclnnInplaceLogicalNot: `out[i] = !(self[i] != 0)` in out's dtype.
    LogicalNot {
        /// The in-place form (out is self).
        inplace: bool,
        /// self / selfRef.
        x: Desc,
        /// Output, self's shape.
        out: Desc,
    },
    /// aclnnSWhere: `out[i] = condition[i] ? self[i] : other[i]` (broadcast, promoted type).
    SWhere {
        /// BOOL / UINT8 condition.
        cond: Desc,
        /// self.
        a: Desc,
        /// other.
        b: Desc,
        /// Output of the promoted type and broadcast shape.
        out: Desc,
    },
    /// aclnnAdd / aclnnSub and their in-place forms: `out = self ± alpha × other`.
    TensorArith {
        /// Subtract instead of add.
        sub: bool,
        /// The in-place form (out is self).
        inplace: bool,
        /// self / selfRef.
        a: Desc,
        /// other.
        b: Desc,
        /// alpha.
        alpha: Scalar,
        /// Output of the promoted type and broadcast shape.
        out: Desc,
    },
    /// aclnnScatterAdd (torch.scatter_add).
    ScatterAdd {
        /// self.
        x: Desc,
        /// Axis.
        dim: usize,
        /// INT32 / INT64 targets along `dim`.
        index: Desc,
        /// Values.
        src: Desc,
        /// Output (self's dtype and shape).
        out: Desc,
    },
    /// aclnnTopk along `dim` (sorted output only).
    Topk {
        /// Input.
        x: Desc,
        /// Number of elements kept (1..=size along dim).
        k: i64,
        /// Axis.
        dim: usize,
        /// Largest first (else smallest first).
        largest: bool,
        /// valuesOut (self's dtype).
        values: Desc,
        /// INT64 positions along `dim`.
        indices: Desc,
    },
    /// aclnnArange: `out[i] = start + i * step`.
    Arange {
        /// start (as f64).
        start: f64,
        /// step (as f64).
        step: f64,
        /// start, for integer scalars.
        istart: i64,
        /// step, for integer scalars.
        istep: i64,
        /// All three scalars are integers (exact arithmetic).
        ints: bool,
        /// 1-D output.
        out: Desc,
    },
    /// aclnnDynamicQuant: per-row symmetric INT8 quantisation (RULES.md DQ1-DQ4).
    DynamicQuant {
        /// FLOAT16 / BFLOAT16 input, rank 2-8.
        x: Desc,
        /// Optional `[H]` factors multiplied into x first.
        smooth: Option<Desc>,
        /// INT8 output of x's shape.
        y: Desc,
        /// FLOAT per-row scale (x's shape without the last dim).
        scale: Desc,
    },
}

impl Prim {
    /// The launch function that may consume this executor.
    pub fn launch_name(&self) -> &'static str {
        match self {
            Prim::Clamp { launch, .. } | Prim::Muls { launch, .. } | Prim::Sort { launch, .. } => launch,
            Prim::Arange { .. } => "aclnnArange",
            Prim::DynamicQuant { .. } => "aclnnDynamicQuant",
            Prim::IsFinite { .. } => "aclnnIsFinite",
            Prim::LogicalNot { inplace: false, .. } => "aclnnLogicalNot",
            Prim::LogicalNot { inplace: true, .. } => "aclnnInplaceLogicalNot",
            Prim::SWhere { .. } => "aclnnSWhere",
            Prim::TensorArith { sub, inplace, .. } => match (sub, inplace) {
                (false, false) => "aclnnAdd",
                (false, true) => "aclnnInplaceAdd",
                (true, false) => "aclnnSub",
                (true, true) => "aclnnInplaceSub",
            },
            Prim::ScatterAdd { .. } => "aclnnScatterAdd",
            Prim::Topk { .. } => "aclnnTopk",
            Prim::SearchSorted { .. } => "aclnnSearchSorted",
            Prim::Amax { max: true, .. } => "aclnnAmax",
            Prim::Amax { max: false, .. } => "aclnnAmin",
            Prim::IndexSelect { .. } => "aclnnIndexSelect",
            Prim::ScalarArith { op, inplace, .. } => match (op, inplace) {
                (super::arith::ScalarOp::FloorDiv, false) => "aclnnFloorDivides",
                (super::arith::ScalarOp::FloorDiv, true) => "aclnnInplaceFloorDivides",
                (super::arith::ScalarOp::Add, false) => "aclnnAdds",
                (super::arith::ScalarOp::Add, true) => "aclnnInplaceAdds",
            },
            Prim::Scatter { inplace: false, .. } => "aclnnScatter",
            Prim::Scatter { inplace: true, .. } => "aclnnInplaceScatter",
            Prim::Binary { f: Binary::Mul, .. } => "aclnnMul",
            Prim::Binary {
                f: Binary::Div,
                inplace,
                ..
            } => {
                if *inplace {
                    "aclnnInplaceDiv"
                } else {
                    "aclnnDiv"
                }
            }
            Prim::Unary { f, inplace, .. } => match (f, inplace) {
                (Unary::Sigmoid, false) => "aclnnSigmoid",
                (Unary::Sigmoid, true) => "aclnnInplaceSigmoid",
                (Unary::Sqrt, false) => "aclnnSqrt",
                (Unary::Sqrt, true) => "aclnnInplaceSqrt",
            },
            Prim::Softplus { .. } => "aclnnSoftplus",
            Prim::Softmax { .. } => "aclnnSoftmax",
            Prim::ReduceSum { .. } => "aclnnReduceSum",
            Prim::Cumsum { .. } => "aclnnCumsum",
            Prim::Gather { .. } => "aclnnGather",
            Prim::MaskedFill { .. } => "aclnnInplaceMaskedFillScalar",
            Prim::EqScalar { .. } => "aclnnEqScalar",
            Prim::Zero { .. } => "aclnnInplaceZero",
        }
    }

    /// Empty tensors (a zero in some shape) are accepted only where the page says "支持空Tensor":
    /// Sigmoid ([HA 850alpha002 aclnnSigmoid&aclnnInplaceSigmoid.md]), Softplus ([HA 83RC1alpha001
    /// aclnnSoftplus.md]), ReduceSum ([OM math/reduce_sum/docs/aclnnReduceSum.md]). The other pages
    /// are silent: UNDOCUMENTED, refused (161002; RULES.md PR7).
    pub fn check_empty(self) -> Result<Prim, Fail> {
        if matches!(
            self,
            Prim::Unary { f: Unary::Sigmoid, .. }
                | Prim::Softplus { .. }
                | Prim::ReduceSum { .. }
                | Prim::Sort { values: Some(_), .. }
        ) {
            return Ok(self);
        }
        let (ins, outs) = self.tensors();
        if let Some(t) = ins.iter().chain(outs.iter()).find(|t| t.numel() == 0) {
            return Err(bad(format!(
                "{}: empty tensor {} (the page does not say it supports empty tensors: UNDOCUMENTED, refused)",
                self.launch_name(),
                t.show()
            )));
        }
        Ok(self)
    }

    /// Workspace bytes: UNDOCUMENTED sizes (RULES.md R20). Reductions and scans ask for some, so a
    /// caller that ignores the returned size fails.
    pub fn workspace(&self) -> u64 {
        match self {
            Prim::Softmax { .. }
            | Prim::ReduceSum { .. }
            | Prim::Cumsum { .. }
            | Prim::Sort { .. }
            | Prim::Amax { .. }
            | Prim::Topk { .. }
            | Prim::DynamicQuant { .. } => 1024,
            _ => 0,
        }
    }

    /// (inputs, outputs) in the order [`Prim::run`] receives them.
    pub fn tensors(&self) -> (Vec<&Desc>, Vec<&Desc>) {
        match self {
            Prim::Clamp { x, out, .. }
            | Prim::Muls { x, out, .. }
            | Prim::Unary { x, out, .. }
            | Prim::Softplus { x, out, .. }
            | Prim::Softmax { x, out, .. }
            | Prim::ReduceSum { x, out, .. }
            | Prim::Cumsum { x, out, .. }
            | Prim::EqScalar { x, out, .. }
            | Prim::ScalarArith { x, out, .. }
            | Prim::Amax { x, out, .. }
            | Prim::IsFinite { x, out }
            | Prim::LogicalNot { x, out, .. } => (vec![x], vec![out]),
            Prim::SWhere { cond, a, b, out } => (vec![cond, a, b], vec![out]),
            Prim::TensorArith { a, b, out, .. } => (vec![a, b], vec![out]),
            Prim::ScatterAdd { x, index, src, out, .. } => (vec![x, index, src], vec![out]),
            Prim::Topk { x, values, indices, .. } => (vec![x], vec![values, indices]),
            Prim::Binary { a, b, out, .. } => (vec![a, b], vec![out]),
            Prim::Gather { x, index, out, .. } | Prim::IndexSelect { x, index, out, .. } => (vec![x, index], vec![out]),
            Prim::MaskedFill { self_ref, mask, .. } => (vec![self_ref, mask], vec![self_ref]),
            Prim::Zero { self_ref } => (vec![], vec![self_ref]),
            Prim::Sort { x, values, indices, .. } => (vec![x], values.iter().chain(std::iter::once(indices)).collect()),
            Prim::Arange { out, .. } => (vec![], vec![out]),
            Prim::DynamicQuant { x, smooth, y, scale } => {
                (std::iter::once(x).chain(smooth.iter()).collect(), vec![y, scale])
            }
            Prim::SearchSorted {
                seq, x, sorter, out, ..
            } => ([seq, x].into_iter().chain(sorter.iter()).collect(), vec![out]),
            Prim::Scatter { x, index, src, out, .. } => (vec![x, index, src], vec![out]),
        }
    }

    /// Run on host copies of the tensors (in the order of [`Prim::tensors`]).
    pub fn run(&self, ins: &[HostTensor], outs: &mut [HostTensor]) -> Result<(), Fail> {
        match self {
            Prim::Clamp { lo, hi, .. } => {
                let (lo, hi) = (*lo, *hi);
                map1(&ins[0], &mut outs[0], |v| super::elementwise::clamp(v, lo, hi));
                Ok(())
            }
            Prim::Muls { k, div, .. } => {
                let (k, div) = (*k, *div);
                map1(&ins[0], &mut outs[0], |v| if div { v / k } else { v * k });
                Ok(())
            }
            Prim::Unary { f, .. } => {
                let f = *f;
                map1(&ins[0], &mut outs[0], |v| match f {
                    Unary::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                    Unary::Sqrt => v.sqrt(),
                });
                Ok(())
            }
            Prim::Softplus { beta, threshold, .. } => {
                let (b, t) = (*beta, *threshold);
                map1(&ins[0], &mut outs[0], |v| super::elementwise::softplus(v, b, t));
                Ok(())
            }
            Prim::Binary { f, .. } => {
                super::elementwise::run_binary(*f, &ins[0], &ins[1], &mut outs[0]);
                Ok(())
            }
            Prim::MaskedFill { value, .. } => {
                super::elementwise::run_masked_fill(&ins[0], &ins[1], value, &mut outs[0]);
                Ok(())
            }
            Prim::EqScalar { other, .. } => {
                super::elementwise::run_eq_scalar(&ins[0], other, &mut outs[0]);
                Ok(())
            }
            Prim::Zero { .. } => {
                let o = &mut outs[0];
                let zero = vec![0u8; elem_size(o.d.dtype).unwrap_or(1)];
                for_each(&o.d.dims.clone(), |idx| {
                    let p = o.d.pos(idx);
                    o.set_raw(p, &zero);
                });
                Ok(())
            }
            Prim::Softmax { dim, .. } => {
                super::reduce::run_softmax(&ins[0], &mut outs[0], *dim);
                Ok(())
            }
            Prim::ReduceSum { reduce, .. } => {
                super::reduce::run_reduce_sum(&ins[0], &mut outs[0], reduce);
                Ok(())
            }
            Prim::Cumsum { dim, .. } => super::reduce::run_cumsum(&ins[0], &mut outs[0], *dim),
            Prim::Gather { dim, .. } => super::index::run_gather(&ins[0], &ins[1], &mut outs[0], *dim),
            Prim::Sort {
                launch,
                dim,
                descending,
                stable,
                ..
            } => super::sort::run_sort(&ins[0], outs, *dim, *descending, *stable, launch),
            Prim::ScalarArith { op, other, alpha, .. } => {
                super::arith::run_scalar_arith(&ins[0], &mut outs[0], *op, other, alpha)
            }
            Prim::IndexSelect { dim, .. } => super::index::run_index_select(&ins[0], &ins[1], &mut outs[0], *dim),
            Prim::Amax { max, reduce, .. } => super::reduce::run_amax(&ins[0], &mut outs[0], reduce, *max),
            Prim::SearchSorted { right, .. } => super::sort::run_search_sorted(ins, &mut outs[0], *right),
            Prim::Scatter { dim, reduce, .. } => {
                super::index::run_scatter(ins, &mut outs[0], *dim, *reduce, self.launch_name())
            }
            Prim::IsFinite { .. } => {
                super::select::run_is_finite(&ins[0], &mut outs[0]);
                Ok(())
            }
            Prim::LogicalNot { .. } => {
                super::select::run_logical_not(&ins[0], &mut outs[0]);
                Ok(())
            }
            Prim::SWhere { .. } => {
                super::select::run_s_where(&ins[0], &ins[1], &ins[2], &mut outs[0]);
                Ok(())
            }
            Prim::TensorArith { sub, alpha, .. } => {
                super::tensor_arith::run_tensor_arith(&ins[0], &ins[1], &mut outs[0], *sub, alpha)
            }
            Prim::ScatterAdd { dim, .. } => super::index::run_scatter(ins, &mut outs[0], *dim, 1, "aclnnScatterAdd"),
            Prim::Topk { k, dim, largest, .. } => super::topk::run_topk(&ins[0], outs, *k, *dim, *largest),
            Prim::DynamicQuant { .. } => super::quant::run_dynamic_quant(ins, outs),
            Prim::Arange {
                start,
                step,
                istart,
                istep,
                ints,
                ..
            } => {
                super::arith::run_arange(&mut outs[0], *start, *step, *istart, *istep, *ints);
                Ok(())
            }
        }
    }
}

/// Call `f` with every multi-index of `dims` in row-major order (nothing for an empty shape).
pub(super) fn for_each(dims: &[i64], mut f: impl FnMut(&[i64])) {
    let n: i64 = dims.iter().product();
    let mut idx = vec![0i64; dims.len()];
    for _ in 0..n {
        f(&idx);
        incr(&mut idx, dims);
    }
}

/// `out[i] = f(x[i])` over the view, computed in f32 and rounded once to out's dtype.
pub(super) fn map1(x: &HostTensor, out: &mut HostTensor, f: impl Fn(f32) -> f32) {
    for_each(&x.d.dims.clone(), |idx| {
        let v = f(x.get(idx));
        out.set(idx, v);
    });
}

/// The broadcast of two shapes (right-aligned; each pair equal or one of them 1), or `None`.
pub(super) fn broadcast(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let r = a.len().max(b.len());
    let mut out = vec![0i64; r];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        *o = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

/// The index into a tensor of shape `dims` that broadcasts to the full index `idx`.
pub(super) fn bidx(idx: &[i64], dims: &[i64]) -> Vec<i64> {
    let lead = idx.len() - dims.len();
    dims.iter()
        .enumerate()
        .map(|(j, &n)| if n == 1 { 0 } else { idx[lead + j] })
        .collect()
}

/// A floating tensor of the emulated set (FLOAT / FLOAT16 / BFLOAT16), else 161002.
pub(super) fn want_float(t: &Desc, what: &str) -> Result<(), Fail> {
    super::want_dt(t, &FLOATS, what)
}

/// `out` has `x`'s dtype (161002).
pub(super) fn same_dtype(x: &Desc, out: &Desc, what: &str) -> Result<(), Fail> {
    if x.dtype != out.dtype {
        return Err(bad(format!(
            "{what}: dtype {} != self dtype {}",
            dt_name(out.dtype),
            dt_name(x.dtype)
        )));
    }
    Ok(())
}

/// A dim argument in `[-rank, rank-1]` (161002), as a non-negative axis.
pub(super) fn axis(dim: i64, rank: usize, what: &str) -> Result<usize, Fail> {
    let r = rank as i64;
    if r == 0 || dim < -r || dim >= r {
        return Err(bad(format!("{what} {dim} outside [-{r}, {}]", r - 1)));
    }
    Ok(dim.rem_euclid(r) as usize)
}
