//! The aclnn ops, as the vendor documents and the open-sourced op host code describe them. Written
//! from those sources only (not from moehal-core, not from the backend): where the backend's use
//! disagrees with the vendor op, the conformance tests see it.
//!
//! Phase one ([`Op`] constructors) checks arguments and returns the documented status:
//! `ACLNN_ERR_PARAM_NULLPTR` (161001) for a missing required argument, `ACLNN_ERR_PARAM_INVALID`
//! (161002) for a dtype / shape the aclnn layer rejects, `ACLNN_ERR_INNER_TILING_ERROR` (561002)
//! where the documented check lives in the tiling. Phase two ([`Op::run`]) reads device data; a bad
//! *value* (an index out of range, a decreasing group list), which hardware turns into garbage or an
//! AI-core exception, is reported as `ACLNN_ERR_INNER` (561000) here.
//!
//! Every rule carries a source tag. Tags (full sources in `RULES.md`,
//! last section):
//! - `\[OT\]` github hicann/ops-transformer @c29bc10 (2025-11), path given;
//! - `\[OTF\]` 2026 master of cann/ops-transformer (github yuanfang-chen/ops-transformer and mirrors);
//! - `\[OP\]` github Ascend/op-plugin (torch_npu) @517f2e7;  `\[VA\]` vllm-ascend token_dispatcher.py;
//! - `\[HA <release> <page>\]` a hiascend.com page; `\[C81\]` the CANN 8.1.RC1 install dump;
//! - `\[FS §x\]` the project's research notes on the ACL API, section x (not in this repository;
//!   every rule citing them also carries a public source above).
//!
//! `UNDOCUMENTED` marks a rule no source settles: it is lenient (the backend must not rely on it)
//! or models the most conservative documented behaviour, as its comment says. `NOT EMULATED` marks
//! an input the real op accepts but this emulator refuses (the backend does not use it).

#![allow(clippy::large_enum_variant)]

use crate::profile::{release, Release};
use crate::sys;
use crate::tensor::{dt_name, Desc, HostTensor};

pub mod arith;
mod elementwise;
mod index;
pub mod prim;
mod qgmm;
mod quant;
mod reduce;
mod select;
mod sort;
mod tensor_arith;
pub mod topk;

pub use arith::ScalarOp;
pub use prim::{Binary, Prim, Scalar, Unary};
pub use qgmm::{calculate_weight_size_v2, nz_elems, nz_pos, nz_storage_dims};

/// A status code and the message `aclGetRecentErrMsg` returns for it.
pub type Fail = (i32, String);

/// `ACLNN_ERR_INNER_TILING_ERROR`: a shape or attribute outside the tiling's range
/// (\[FS §3.3\] op_errno.h; the aclnn pages' return-code tables list it for "shape / attribute not in
/// the supported range").
pub const ACLNN_ERR_INNER_TILING_ERROR: i32 = 561002;

fn bad(msg: impl Into<String>) -> Fail {
    (sys::ACLNN_ERR_PARAM_INVALID, msg.into())
}
fn tiling(msg: impl Into<String>) -> Fail {
    (ACLNN_ERR_INNER_TILING_ERROR, msg.into())
}
fn inner(msg: impl Into<String>) -> Fail {
    (sys::ACLNN_ERR_INNER, msg.into())
}
fn null(what: &str) -> Fail {
    (sys::ACLNN_ERR_PARAM_NULLPTR, format!("{what} is a null pointer"))
}

/// Requires `t`, else 161001 (every aclnn page: "161001: 计算输入和计算输出是空指针").
pub fn req(t: Option<Desc>, what: &str) -> Result<Desc, Fail> {
    t.ok_or_else(|| null(what))
}

fn want_rank(t: &Desc, r: usize, what: &str) -> Result<(), Fail> {
    if t.dims.len() != r {
        return Err(bad(format!("{what}: expected a {r}-D tensor, got {}", t.show())));
    }
    Ok(())
}
fn want_dims(t: &Desc, dims: &[i64], what: &str) -> Result<(), Fail> {
    if t.dims != dims {
        return Err(bad(format!("{what}: expected shape {dims:?}, got {}", t.show())));
    }
    Ok(())
}
fn want_dt(t: &Desc, dts: &[sys::aclDataType], what: &str) -> Result<(), Fail> {
    if !dts.contains(&t.dtype) {
        let names: Vec<_> = dts.iter().map(|d| dt_name(*d)).collect();
        return Err(bad(format!("{what}: dtype {} not in {names:?}", dt_name(t.dtype))));
    }
    Ok(())
}
/// NOT EMULATED: the real ops accept non-contiguous views of many tensors (per-parameter
/// "非连续Tensor" column); the emulator asks for row-major contiguous ones.
fn want_contig(t: &Desc, what: &str) -> Result<(), Fail> {
    if !t.contiguous() {
        return Err(bad(format!(
            "{what}: non-contiguous {} strides {:?} (NOT EMULATED)",
            t.show(),
            t.strides
        )));
    }
    Ok(())
}
const FLOATS: [sys::aclDataType; 3] = [sys::ACL_FLOAT, sys::ACL_FLOAT16, sys::ACL_BF16];

/// aclnnGroupedMatmulV4's (scaleOptional, perTokenScaleOptional) lists, NULL = `None`.
pub type QuantLists = (Option<Vec<Desc>>, Option<Vec<Desc>>);

/// One validated op, waiting for its launch.
#[derive(Clone)]
pub enum Op {
    /// aclnnGroupedMatmulV3/V4, single-tensor x/weight/y, M-axis grouping.
    Gmm {
        launch: &'static str,
        x: Desc,
        w: Desc,
        bias: Option<Desc>,
        group: Desc,
        list_type: i64,
        y: Desc,
    },
    /// aclnnGroupedMatmulV4 A8W8: INT8 x and weight (ND or FRACTAL_NZ), per-channel scale,
    /// optional per-token scale, FLOAT16 / BFLOAT16 out (RULES.md QG*, NZ*).
    QuantGmm {
        x: Desc,
        w: Desc,
        scale: Desc,
        per_token: Option<Desc>,
        group: Desc,
        list_type: i64,
        /// The weight is FRACTAL_NZ (else ND).
        nz: bool,
        y: Desc,
    },
    /// aclnnTransMatmulWeight: INT8 ND weight rewritten in place as FRACTAL_NZ (RULES.md NZ5).
    TransNz {
        /// The caller's aclTensor (its descriptor becomes FRACTAL_NZ after the launch).
        handle: usize,
        /// The ND weight.
        src: Desc,
        /// The same memory as raw bytes of the NZ size.
        dst: Desc,
        /// Storage dims of the NZ form (`[batch.., n1, m1m0, n0]`).
        nz_storage: Vec<i64>,
    },
    /// aclnnMoeGatingTopKSoftmax.
    TopKSoftmax {
        x: Desc,
        finished: Option<Desc>,
        k: i64,
        y: Desc,
        idx: Desc,
        row_idx: Desc,
    },
    /// aclnnMoeGatingTopK.
    GatingTopK {
        x: Desc,
        bias: Option<Desc>,
        p: GatingParams,
        y: Desc,
        idx: Desc,
        out: Desc,
        out_flag: bool,
    },
    /// aclnnMoeInitRoutingV2 / V3 (dropless).
    InitRouting {
        launch: &'static str,
        x: Desc,
        ids: Desc,
        scale: Option<Desc>,
        p: InitParams,
        ex: Desc,
        row_idx: Desc,
        counts: Option<Desc>,
        scale_out: Option<Desc>,
    },
    /// aclnnMoeFinalizeRoutingV2.
    Finalize {
        ex: Desc,
        row_idx: Desc,
        x1: Option<Desc>,
        x2: Option<Desc>,
        bias: Option<Desc>,
        scales: Option<Desc>,
        eidx: Option<Desc>,
        row_major: bool,
        k: i64,
        out: Desc,
    },
    /// aclnnEmbedding / aclnnGatherV2 along dim 0.
    Gather {
        launch: &'static str,
        table: Desc,
        index: Desc,
        out: Desc,
    },
    /// aclnnCast.
    Cast { src: Desc, out: Desc },
    /// aclnnSwiGlu: `out = Swish(A) * B`, A / B the halves of x along `dim` (non-negative here).
    SwiGlu { x: Desc, dim: usize, out: Desc },
    /// aclnnInplaceMul: `selfRef *= other` (other broadcast to selfRef's shape).
    InplaceMul { self_ref: Desc, other: Desc },
    /// A general primitive of issue 13 (elementwise, reduction, scan, gather): see [`prim`].
    Prim(Prim),
}

/// Attributes of aclnnMoeGatingTopK.
#[derive(Clone, Copy)]
pub struct GatingParams {
    /// Experts to select.
    pub k: i64,
    /// Groups kept.
    pub k_group: i64,
    /// Number of groups.
    pub group_count: i64,
    /// 0: group score = max, 1: sum of the top two.
    pub group_mode: i64,
    /// 0: softmax, 1: sigmoid.
    pub norm: i64,
    /// routedScalingFactor.
    pub scale: f64,
    /// eps of the renormalisation.
    pub eps: f64,
}

/// Attributes of aclnnMoeInitRouting V2/V3 (dropless).
#[derive(Clone, Copy)]
pub struct InitParams {
    /// Number of experts.
    pub e: i64,
    /// Rows of expandedXOut actually written (all T*k unless V2's activeNum limits it).
    pub rows: i64,
    /// 0: no count output, 1: cumulative sum, 2: count.
    pub count_mode: i64,
    /// true: `expandedRowIdx[position] = original slot` (V3 rowIdxType 1, "scatter");
    /// false: `expandedRowIdx[original slot] = position` (V2; V3 rowIdxType 0, "gather").
    pub scatter: bool,
}

fn elems(t: &Desc) -> i64 {
    t.numel()
}

impl Op {
    /// The launch function that may consume this executor.
    pub fn launch_name(&self) -> &'static str {
        match self {
            Op::Gmm { launch, .. } | Op::InitRouting { launch, .. } | Op::Gather { launch, .. } => launch,
            Op::QuantGmm { .. } => "aclnnGroupedMatmulV4",
            Op::TransNz { .. } => "aclnnTransMatmulWeight",
            Op::TopKSoftmax { .. } => "aclnnMoeGatingTopKSoftmax",
            Op::GatingTopK { .. } => "aclnnMoeGatingTopK",
            Op::Finalize { .. } => "aclnnMoeFinalizeRoutingV2",
            Op::Cast { .. } => "aclnnCast",
            Op::SwiGlu { .. } => "aclnnSwiGlu",
            Op::InplaceMul { .. } => "aclnnInplaceMul",
            Op::Prim(p) => p.launch_name(),
        }
    }

    /// Whether `d` (one of [`Op::tensors`]) may be `ACL_FORMAT_FRACTAL_NZ`: only the weight of the
    /// A8W8 GroupedMatmul ("weight ... 格式支持ND、FRACTAL_NZ", \[OTF\] V4 doc; RULES.md NZ1, R14).
    pub fn nz_allowed(&self, d: &Desc) -> bool {
        matches!(self, Op::QuantGmm { w, nz: true, .. } if std::ptr::eq(w, d))
    }

    /// Workspace bytes the op asks for (non-zero for some ops, so the caller's workspace path runs).
    /// UNDOCUMENTED sizes (real ones are larger, e.g. MoeGatingTopK reserves 16 MiB: \[OT\]
    /// moe_gating_top_k_tiling.cpp `DEFAULT_WORKSPACE_SIZE`); callers must use the returned value.
    pub fn workspace(&self) -> u64 {
        match self {
            Op::Gmm { .. } | Op::QuantGmm { .. } => 16 * 1024,
            Op::TopKSoftmax { .. } | Op::GatingTopK { .. } => 4096,
            Op::InitRouting { ids, .. } => 64 + 8 * elems(ids) as u64,
            Op::Prim(p) => p.workspace(),
            _ => 0,
        }
    }

    /// (inputs, outputs) in the order [`Op::run`] receives them.
    pub fn tensors(&self) -> (Vec<&Desc>, Vec<&Desc>) {
        match self {
            Op::Gmm {
                x, w, bias, group, y, ..
            } => {
                let mut i = vec![x, w, group];
                i.extend(bias.iter());
                (i, vec![y])
            }
            Op::QuantGmm {
                x,
                w,
                scale,
                per_token,
                group,
                y,
                ..
            } => {
                let mut i = vec![x, w, group, scale];
                i.extend(per_token.iter());
                (i, vec![y])
            }
            Op::TransNz { src, dst, .. } => (vec![src], vec![dst]),
            Op::TopKSoftmax {
                x,
                finished,
                y,
                idx,
                row_idx,
                ..
            } => {
                let mut i = vec![x];
                i.extend(finished.iter());
                (i, vec![y, idx, row_idx])
            }
            Op::GatingTopK {
                x, bias, y, idx, out, ..
            } => {
                let mut i = vec![x];
                i.extend(bias.iter());
                (i, vec![y, idx, out])
            }
            Op::InitRouting {
                x,
                ids,
                scale,
                ex,
                row_idx,
                counts,
                scale_out,
                ..
            } => {
                let mut i = vec![x, ids];
                i.extend(scale.iter());
                let mut o = vec![ex, row_idx];
                o.extend(counts.iter());
                o.extend(scale_out.iter());
                (i, o)
            }
            Op::Finalize {
                ex,
                row_idx,
                x1,
                x2,
                bias,
                scales,
                eidx,
                out,
                ..
            } => {
                let mut i = vec![ex, row_idx];
                for t in [x1, x2, bias, scales, eidx].into_iter().flatten() {
                    i.push(t);
                }
                (i, vec![out])
            }
            Op::Gather { table, index, out, .. } => (vec![table, index], vec![out]),
            Op::Cast { src, out } => (vec![src], vec![out]),
            Op::SwiGlu { x, out, .. } => (vec![x], vec![out]),
            Op::InplaceMul { self_ref, other } => (vec![self_ref, other], vec![self_ref]),
            Op::Prim(p) => p.tensors(),
        }
    }

    // ---------------------------------------------------------------- phase one

    /// aclnnGroupedMatmulV3/V4 phase one (non-quantised, single tensors, groupType 0).
    ///
    /// V3's group list is cumulative (pass `list_type` 0); V4's `groupListType` is 0 = cumulative,
    /// 1 = counts (\[OTF\] gmm/grouped_matmul/docs/aclnnGroupedMatmulV4.md §约束).
    pub fn gmm(
        launch: &'static str,
        x: Vec<Desc>,
        w: Vec<Desc>,
        bias: Option<Vec<Desc>>,
        group: Option<Desc>,
        split_item: i64,
        group_type: i64,
        list_type: i64,
        act_type: i64,
        y: Vec<Desc>,
        quant: Option<QuantLists>,
    ) -> Result<Op, Fail> {
        // NOT EMULATED: multi-tensor lists (the MoE recipe is single x / weight / y: [FS §4.2]).
        if x.len() != 1 || w.len() != 1 || y.len() != 1 {
            return Err(bad(format!(
                "{launch}: only single-tensor x/weight/y are emulated (got list lengths {}/{}/{})",
                x.len(),
                w.len(),
                y.len()
            )));
        }
        // splitItem 2/3 = single-tensor output; 0/1 = multi-tensor output ([FS §4.2]; [OT]
        // op_api/aclnn_grouped_matmul.cpp:1819 corrects 2 to 3 for one x tensor).
        if !(split_item == 2 || split_item == 3) {
            return Err(bad(format!(
                "{launch}: splitItem {split_item} with single-tensor y; use 2 or 3"
            )));
        }
        // groupType: -1 none, 0 M axis, 1 N axis (unsupported), 2 K axis ([FS §4.2]); only 0 is
        // emulated (NOT EMULATED: -1 and 2).
        if group_type != 0 {
            return Err(bad(format!(
                "{launch}: groupType {group_type} not emulated (M-axis = 0 only)"
            )));
        }
        // groupListType 0 cumsum, 1 counts, 2 [E,2] pairs ([OTF] V4 doc); NOT EMULATED: 2.
        if !(list_type == 0 || list_type == 1) {
            return Err(bad(format!(
                "{launch}: groupListType {list_type} not emulated (0 or 1)"
            )));
        }
        // actType: GMMActType NONE = 0 .. SILU = 5 ([FS §4.2]); NOT EMULATED: fused activations.
        if act_type != 0 {
            return Err(bad(format!(
                "{launch}: actType {act_type}: fused activation not emulated"
            )));
        }
        let (x, w, y) = (x[0].clone(), w[0].clone(), y[0].clone());
        // M-axis grouping with one weight tensor needs the group list ([OTF] V4 doc, groupType table).
        let group = req(group, "groupListOptional (required when groupType = 0)")?;
        // V4 with INT8 x: the A8W8 rows (RULES.md QG*); `quant` = (scaleOptional,
        // perTokenScaleOptional). V3 passes None: quantisation not emulated there.
        if let (sys::ACL_INT8, Some((scale, per_token))) = (x.dtype, quant.clone()) {
            return Op::quant_gmm(x, w, bias, scale, per_token, group, list_type, y);
        }
        if let Some((sc, pt)) = &quant {
            if sc.iter().chain(pt.iter()).any(|l| !l.is_empty()) {
                return Err(bad(format!(
                    "{launch}: scaleOptional / perTokenScaleOptional need INT8 x (A8W8); x is {}",
                    dt_name(x.dtype)
                )));
            }
        }
        want_rank(&x, 2, "x")?;
        want_rank(&w, 3, "weight")?;
        want_rank(&y, 2, "y")?;
        // Non-quantised dtypes: FP16 x FP16 -> FP16, BF16 x BF16 -> BF16, FP32 x FP32 -> FP32
        // ([OTF] V4 doc non-quant table; [FS §4.2]).
        want_dt(&x, &FLOATS, "x")?;
        if w.dtype != x.dtype || y.dtype != x.dtype {
            return Err(bad(format!(
                "x {}, weight {}, y {}: dtypes must match",
                x.show(),
                w.show(),
                y.show()
            )));
        }
        let (m, k) = (x.dims[0], x.dims[1]);
        let (e, wk, n) = (w.dims[0], w.dims[1], w.dims[2]);
        if wk != k {
            return Err(bad(format!("weight {} K != x {} K", w.show(), x.show())));
        }
        want_dims(&y, &[m, n], "y")?;
        // Weight [E,K,N] as stored, or transposed [E,N,K] storage expressed by strides [K*N,1,K]
        // ("weight transposition = non-contiguous tensor", [OTF] V4 doc groupType table).
        let kn = w.strides[2] == 1 && w.strides[1] == n;
        let nk = w.strides[1] == 1 && w.strides[2] == k;
        if !(kn || nk) || w.strides[0] != k * n {
            return Err(bad(format!(
                "weight strides {:?} are neither [K*N, N, 1] nor transposed [K*N, 1, K]",
                w.strides
            )));
        }
        // "The last dim of each x / weight tensor < 65536" ([OTF] V4 doc 约束; [OT]
        // aclnn_grouped_matmul.cpp MAX_INNER_AXIS = 65535): x's last dim is K; the weight's stored
        // last dim is N for [E,K,N] and K for the transposed storage.
        let w_inner = if kn { n } else { k };
        if k <= 0 || n <= 0 || e <= 0 || k >= 65536 || w_inner >= 65536 {
            return Err(bad(format!(
                "K={k}, N={n}, E={e}: each >= 1, and the inner dims of x and weight < 65536"
            )));
        }
        // At most 1024 groups in single-weight mode ([OT] aclnn_grouped_matmul.cpp:341-358
        // MAX_GROUP_LIST_SIZE_TENSOR).
        if e > 1024 {
            return Err(bad(format!("{e} groups: at most 1024 in single-weight mode")));
        }
        // "x cannot be transposed for M-axis grouping" ([FS §4.2], [OTF] V4 doc).
        if !x.contiguous() {
            return Err(bad("x must be contiguous (x cannot be transposed for M-axis grouping)"));
        }
        // y: non-contiguous output not supported ("非连续 ×", [OTF] V4 doc parameter table).
        if !y.contiguous() {
            return Err(bad("y must be contiguous"));
        }
        // groupList: INT64 1-D, one entry per weight group ([OT] aclnn_grouped_matmul.cpp:341-358).
        want_rank(&group, 1, "groupList")?;
        want_dt(&group, &[sys::ACL_INT64], "groupList")?;
        want_dims(&group, &[e], "groupList (one entry per weight group)")?;
        let bias = match bias {
            None => None,
            Some(b) if b.is_empty() => None,
            Some(b) if b.len() != 1 => return Err(bad("bias list must hold one tensor")),
            Some(b) => {
                let b = b[0].clone();
                want_dims(&b, &[e, n], "bias")?;
                // Bias FP16 for FP16, FP32 for BF16 and FP32 ([OTF] V4 doc non-quant table).
                let need = if x.dtype == sys::ACL_FLOAT16 {
                    sys::ACL_FLOAT16
                } else {
                    sys::ACL_FLOAT
                };
                want_dt(&b, &[need], "bias (FP16 for FP16 x, FP32 for BF16 and FP32 x)")?;
                Some(b)
            }
        };
        Ok(Op::Gmm {
            launch,
            x,
            w,
            bias,
            group,
            list_type,
            y,
        })
    }

    /// aclnnMoeGatingTopKSoftmax phase one.
    pub fn topk_softmax(
        x: Option<Desc>,
        finished: Option<Desc>,
        k: i64,
        y: Option<Desc>,
        idx: Option<Desc>,
        row_idx: Option<Desc>,
    ) -> Result<Op, Fail> {
        let x = req(x, "x")?;
        let (y, idx, row_idx) = (req(y, "yOut")?, req(idx, "expertIdxOut")?, req(row_idx, "rowIdxOut")?);
        // x 2-D or 3-D FP16/BF16/FP32 ([FS §4.3]; [OT] moe_gating_top_k_softmax_tiling_base.cpp);
        // NOT EMULATED: 3-D.
        want_rank(&x, 2, "x")?;
        want_dt(&x, &FLOATS, "x")?;
        let (t, e) = (x.dims[0], x.dims[1]);
        // 1 <= k <= min(E, 1024), a tiling check ([OT] moe_gating_top_k_softmax_tiling_base.cpp:60-150).
        if k < 1 || k > e.min(1024) {
            return Err(tiling(format!("k = {k} must be in [1, min(E = {e}, 1024)]")));
        }
        // Outputs [T,k]: y of x's dtype, expertIdx and rowIdx INT32 ([FS §4.3]; [C81] header doc).
        want_dims(&y, &[t, k], "yOut")?;
        want_dims(&idx, &[t, k], "expertIdxOut")?;
        want_dims(&row_idx, &[t, k], "rowIdxOut")?;
        if y.dtype != x.dtype {
            return Err(bad("yOut dtype must equal x dtype"));
        }
        want_dt(&idx, &[sys::ACL_INT32], "expertIdxOut")?;
        want_dt(&row_idx, &[sys::ACL_INT32], "rowIdxOut")?;
        // finished: BOOL, shape x[:-1] ([FS §4.3]).
        if let Some(f) = &finished {
            want_dims(f, &[t], "finishedOptional")?;
            want_dt(f, &[sys::ACL_BOOL], "finishedOptional")?;
        }
        for (d, w) in [(&x, "x"), (&y, "yOut"), (&idx, "expertIdxOut"), (&row_idx, "rowIdxOut")] {
            want_contig(d, w)?;
        }
        Ok(Op::TopKSoftmax {
            x,
            finished,
            k,
            y,
            idx,
            row_idx,
        })
    }

    /// aclnnMoeGatingTopK phase one (exported from CANN 8.2; rules per [`release`]).
    pub fn gating_topk(
        x: Option<Desc>,
        bias: Option<Desc>,
        p: GatingParams,
        renorm: i64,
        out_flag: bool,
        y: Option<Desc>,
        idx: Option<Desc>,
        out: Option<Desc>,
    ) -> Result<Op, Fail> {
        let x = req(x, "x")?;
        let (y, idx) = (req(y, "yOut")?, req(idx, "expertIdxOut")?);
        // `out` is a REQUIRED output whatever outFlag says: op def `Output("out").ParamType(REQUIRED)`
        // ([OT] moe/moe_gating_top_k/op_host/moe_gating_top_k_def.cpp), tiling OP_CHECK_NULL on its
        // shape ([OT] moe_gating_top_k_tiling.cpp:253), doc "161001: 计算输入和计算输出是空指针"
        // ([HA 850alpha002 aclnnMoeGatingTopK.md]); torch_npu always allocates it ([OP]
        // MoeGatingTopKKernelNpuOpApi.cpp).
        let out = req(out, "outOut (required whatever outFlag is)")?;
        // x: 2-D FP16/BF16/FP32 ([HA 850alpha002]; [OT] tiling GetShapeAttrsInfo).
        want_rank(&x, 2, "x")?;
        want_dt(&x, &FLOATS, "x")?;
        let (t, e) = (x.dims[0], x.dims[1]);
        // E <= 2048 ([OT] tiling MAX_EXPERT_COUNT; [HA 850alpha002] "专家数要求不大于2048").
        if e > 2048 {
            return Err(tiling(format!("E = {e} > 2048")));
        }
        if let Some(b) = &bias {
            // bias: 1-D [E] ([OT] tiling CheckInputShape) ...
            want_rank(b, 1, "biasOptional").map_err(|f| tiling(f.1))?;
            if b.dims[0] != e {
                return Err(tiling(format!("biasOptional {} must be [E = {e}]", b.show())));
            }
            // ... of x's dtype: "biasDtype != xDtype -> fail" ([OT] tiling:268), "数据类型与x需要保持
            // 一致" ([HA 850alpha002]), TORCH_CHECK in [OP].
            if b.dtype != x.dtype {
                return Err(tiling(format!(
                    "biasOptional dtype {} must equal x dtype {}",
                    dt_name(b.dtype),
                    dt_name(x.dtype)
                )));
            }
        }
        // y: x's dtype, [T,k]; expertIdx INT32 [T,k]; out FLOAT [T,E] ([OT] tiling :280-300,
        // CheckOutShape).
        if y.dtype != x.dtype {
            return Err(tiling("yOut dtype must equal x dtype"));
        }
        want_dt(&idx, &[sys::ACL_INT32], "expertIdxOut").map_err(|f| tiling(f.1))?;
        want_dt(&out, &[sys::ACL_FLOAT], "outOut").map_err(|f| tiling(f.1))?;
        want_dims(&y, &[t, p.k], "yOut").map_err(|f| tiling(f.1))?;
        want_dims(&idx, &[t, p.k], "expertIdxOut").map_err(|f| tiling(f.1))?;
        want_dims(&out, &[t, e], "outOut").map_err(|f| tiling(f.1))?;
        // Attribute ranges ([OT] moe_gating_top_k_tiling.cpp CheckAttr): k >= 1, kGroup >= 1,
        // kGroup <= groupCount, groupCount >= 1, E % groupCount == 0, normType 0/1 (2026 adds 2 =
        // softplus: NOT EMULATED), groupSelectMode 0/1.
        if p.k < 1 || p.k_group < 1 || p.group_count < 1 || p.k_group > p.group_count {
            return Err(tiling(format!(
                "k {} / kGroup {} / groupCount {}: need k >= 1, 1 <= kGroup <= groupCount",
                p.k, p.k_group, p.group_count
            )));
        }
        if e % p.group_count != 0 {
            return Err(tiling(format!("groupCount {} must divide E = {e}", p.group_count)));
        }
        if !(p.norm == 0 || p.norm == 1) || !(p.group_mode == 0 || p.group_mode == 1) {
            return Err(tiling(format!(
                "normType {} / groupSelectMode {}: each must be 0 or 1",
                p.norm, p.group_mode
            )));
        }
        // renorm: only 0 ("norm first, then top-k": [OT] op_graph/moe_gating_top_k_proto.h). The 2026
        // tiling also takes 1; 0 is the conservative documented value.
        if renorm != 0 {
            return Err(tiling(format!("renorm {renorm}: only 0 is supported")));
        }
        let per = e / p.group_count;
        // Top-2-sum group scores need >= 2 experts per group ([OT] tiling CheckAttr). The doc's
        // "E/groupCount > 2" conflicts with the code (>= 1, and the simplified path groupCount = E);
        // the code wins (audit method) and the doc line is listed for the hardware probe.
        if p.group_mode == 1 && per < 2 {
            return Err(tiling(
                "groupSelectMode 1 (top-2 sum) needs at least 2 experts per group",
            ));
        }
        if p.k > p.k_group * per {
            return Err(tiling(format!(
                "k = {} must be <= kGroup * E / groupCount = {}",
                p.k,
                p.k_group * per
            )));
        }
        // Grouped case (groupCount != 1, != E, kGroup != groupCount): groupCount *
        // align32(E / groupCount) <= 2048 ([OT] moe_gating_top_k_tiling.cpp:221-227; doc 约束说明).
        if p.group_count != 1 && p.group_count != e && p.k_group != p.group_count {
            let aligned = p.group_count * ((per + 31) / 32 * 32);
            if aligned > 2048 {
                return Err(tiling(format!(
                    "groupCount {} * align32(E / groupCount = {per}) = {aligned} > 2048",
                    p.group_count
                )));
            }
        }
        // Release restrictions.
        match release() {
            Release::V8_1 => {
                // The symbol is not exported on 8.1 ([C81]); reached only through the Rust rlib.
                return Err(tiling("aclnnMoeGatingTopK does not exist in CANN 8.1"));
            }
            Release::V8_2 | Release::V8_3 => {
                // 8.2/8.3 pages describe a sigmoid-only op ranking groups by top-2 sum
                // ([HA 82RC1 / 83RC1 aclnnMoeGatingTopK.md]); softmax and max appear in 8.5
                // ([HA 850alpha002]). What an old kernel does with other values is UNDOCUMENTED:
                // rejected (conservative).
                if p.norm != 1 || p.group_mode != 1 {
                    return Err(tiling(format!(
                        "CANN {}: normType {} / groupSelectMode {}: this release documents only \
                         sigmoid (1) with top-2-sum groups (1)",
                        crate::profile::CANN,
                        p.norm,
                        p.group_mode
                    )));
                }
            }
            Release::V8_5 => {}
        }
        if release() == Release::V8_2 {
            // A2/A3 on the 8.2 generation: E = 256, k in [1, 32], kGroup = 4, bias not None
            // (torch_npu 7.0.0 npu_moe_gating_top_k, [HA Pytorch/700 ptaoplist_002365]); vllm-ascend
            // #2958/#4340: "only the 256 pattern ... all sizes depend on CANN 8.3.RC1".
            if e != 256 || p.k > 32 || p.k_group != 4 || bias.is_none() {
                return Err(tiling(format!(
                    "CANN 8.2: E = {e}, k = {}, kGroup = {}, bias {}: this release supports only \
                     E = 256, k <= 32, kGroup = 4 with a bias",
                    p.k,
                    p.k_group,
                    if bias.is_some() { "given" } else { "NULL" }
                )));
            }
        }
        for (d, w) in [(&x, "x"), (&y, "yOut"), (&idx, "expertIdxOut"), (&out, "outOut")] {
            want_contig(d, w)?;
        }
        Ok(Op::GatingTopK {
            x,
            bias,
            p,
            y,
            idx,
            out,
            out_flag,
        })
    }

    /// aclnnMoeInitRoutingV2 phase one (dropless, dropPadMode 0).
    pub fn init_routing_v2(
        x: Option<Desc>,
        ids: Option<Desc>,
        active_num: i64,
        expert_num: i64,
        drop_pad_mode: i64,
        count_flag: i64,
        before_capacity_flag: bool,
        ex: Option<Desc>,
        row_idx: Option<Desc>,
        counts: Option<Desc>,
    ) -> Result<Op, Fail> {
        let launch = "aclnnMoeInitRoutingV2";
        let (x, ids) = (req(x, "x")?, req(ids, "expertIdx")?);
        let (ex, row_idx) = (req(ex, "expandedXOut")?, req(row_idx, "expandedRowIdxOut")?);
        // dropPadMode 0 dropless, 1 drop/pad ([FS §4.3]); NOT EMULATED: 1 and the before-capacity
        // output (documented for the drop mode only).
        if drop_pad_mode != 0 || before_capacity_flag {
            return Err(bad(format!(
                "{launch}: dropPadMode {drop_pad_mode} / expertTokensBeforeCapacityFlag \
                 {before_capacity_flag}: only dropless mode 0 is emulated"
            )));
        }
        // expertTokensCountOrCumsumFlag 0 none, 1 cumsum, 2 count ([OT] op_kernel/moe_v2_common.h:49-50).
        if !(0..=2).contains(&count_flag) {
            return Err(tiling(format!(
                "expertTokensCountOrCumsumFlag {count_flag} not in 0..=2"
            )));
        }
        // x [rows, H] FP16/BF16/FP32; expertIdx INT32 [rows, k] ([HA 82RC1alpha003 aclnnMoeInitRoutingV2.md]).
        want_rank(&x, 2, "x")?;
        want_rank(&ids, 2, "expertIdx")?;
        want_dt(&x, &FLOATS, "x")?;
        want_dt(&ids, &[sys::ACL_INT32], "expertIdx")?;
        let (t, h, k) = (x.dims[0], x.dims[1], ids.dims[1]);
        if ids.dims[0] != t {
            return Err(bad(format!("expertIdx {} rows != x {} rows", ids.show(), x.show())));
        }
        // expertNum >= 1: UNDOCUMENTED for flag 0 (conservative).
        if expert_num < 1 {
            return Err(tiling(format!("expertNum {expert_num} must be positive")));
        }
        // activeNum >= 0; 0 = all rows ([OT] moe_init_routing_v2_tiling.cpp:150-156); dropless
        // expandedXOut is [min(activeNum, rows*k), H] when activeNum > 0, else [rows*k, H] ([FS §4.3]).
        if active_num < 0 {
            return Err(tiling("activeNum must be >= 0"));
        }
        let n = if active_num > 0 { active_num.min(t * k) } else { t * k };
        want_dims(&ex, &[n, h], "expandedXOut")?;
        if ex.dtype != x.dtype {
            return Err(bad("expandedXOut dtype must equal x dtype"));
        }
        // expandedRowIdxOut INT32 [rows*k] ([HA V2 doc]).
        want_dims(&row_idx, &[t * k], "expandedRowIdxOut")?;
        want_dt(&row_idx, &[sys::ACL_INT32], "expandedRowIdxOut")?;
        // Counts: INT32 [E] when the flag asks for them ([OT] moe_init_routing_v2_tiling.cpp
        // CheckTokenCount); optional otherwise ("...OutOptional").
        let counts = if count_flag != 0 {
            let c = req(counts, "expertTokensCountOrCumsumOut (flag 1 or 2)")?;
            want_dims(&c, &[expert_num], "expertTokensCountOrCumsumOut")?;
            want_dt(&c, &[sys::ACL_INT32], "expertTokensCountOrCumsumOut")?;
            Some(c)
        } else {
            None
        };
        // Outputs: "非连续 ×" ([HA V2 doc]); inputs: NOT EMULATED non-contiguous.
        for (d, w) in [
            (&x, "x"),
            (&ids, "expertIdx"),
            (&ex, "expandedXOut"),
            (&row_idx, "expandedRowIdxOut"),
        ] {
            want_contig(d, w)?;
        }
        Ok(Op::InitRouting {
            launch,
            x,
            ids,
            scale: None,
            p: InitParams {
                e: expert_num,
                rows: n,
                count_mode: count_flag,
                // expandedRowIdxOut[sortedRowIdx[i]] = i ([HA V2 doc] formula; [OT]
                // op_kernel/moe_v2_gather_out.h:98-118).
                scatter: false,
            },
            ex,
            row_idx,
            counts,
            scale_out: None,
        })
    }

    /// aclnnMoeInitRoutingV3 phase one (exported from CANN 8.2). Every V3 profile enforces the
    /// 2025 host code (\[OT\] @c29bc10): the conservative, documented envelope; the 2026 master
    /// (\[OTF\]) accepts more (activeNum 0, cumsum counts, an empty range) — the backend must not
    /// rely on that.
    pub fn init_routing_v3(
        x: Option<Desc>,
        ids: Option<Desc>,
        scale: Option<Desc>,
        offset: Option<Desc>,
        active_num: i64,
        expert_num: i64,
        drop_pad_mode: i64,
        num_type: i64,
        num_flag: bool,
        quant_mode: i64,
        range: Option<Vec<i64>>,
        row_idx_type: i64,
        ex: Option<Desc>,
        row_idx: Option<Desc>,
        counts: Option<Desc>,
        scale_out: Option<Desc>,
    ) -> Result<Op, Fail> {
        let launch = "aclnnMoeInitRoutingV3";
        if release() == Release::V8_1 {
            // Not exported on 8.1 ([C81]); reached only through the Rust rlib.
            return Err(tiling("aclnnMoeInitRoutingV3 does not exist in CANN 8.1"));
        }
        // CheckNotNull: x, expertIdx, expandedXOut, expandedRowIdxOut, expertTokensCountOrCumsumOut,
        // expandedScaleOut -> 161001 ([OT] op_host/op_api/aclnn_moe_init_routing_v3.cpp:55; same in
        // [OTF]); torch_npu always allocates expandedScaleOut, f32 [T*k] ([OP]
        // MoeInitRoutingV2KernelNpuOpApi.cpp).
        let (x, ids) = (req(x, "x")?, req(ids, "expertIdx")?);
        let (ex, row_idx) = (req(ex, "expandedXOut")?, req(row_idx, "expandedRowIdxOut")?);
        let counts = req(counts, "expertTokensCountOrCumsumOut")?;
        let scale_out = req(scale_out, "expandedScaleOut (required even unquantised)")?;
        // The 2025 CheckShape dereferences activeExpertRangeOptional unconditionally
        // (`(*activeExpertRangeOptional)[1]`, [OT] aclnn_moe_init_routing_v3.cpp:101): a host segfault
        // on hardware. The emulator reports 161001 instead; every production caller passes [0, E]
        // ([VA]; [OP] docs).
        let range = range.ok_or_else(|| {
            null("activeExpertRangeOptional (the 2025 host code dereferences it: segfault on hardware)")
        })?;
        // CheckDtypeValid -> 161002 ([OT] aclnn_moe_init_routing_v3.cpp): x FP16/BF16/FP32/INT8
        // (NOT EMULATED: INT8), expertIdx INT32, scale/offset FLOAT, expandedRowIdx INT32, counts
        // INT64, expandedScaleOut FLOAT.
        want_dt(&x, &FLOATS, "x")?;
        want_dt(&ids, &[sys::ACL_INT32], "expertIdx")?;
        want_dt(&row_idx, &[sys::ACL_INT32], "expandedRowIdxOut")?;
        want_dt(&counts, &[sys::ACL_INT64], "expertTokensCountOrCumsumOut")?;
        want_dt(&scale_out, &[sys::ACL_FLOAT], "expandedScaleOut")?;
        if let Some(s) = &scale {
            want_dt(s, &[sys::ACL_FLOAT], "scaleOptional")?;
        }
        if let Some(o) = &offset {
            want_dt(o, &[sys::ACL_FLOAT], "offsetOptional")?;
        }
        // Unquantised (quantMode -1): expandedXOut has x's dtype ([OTF] V3 doc expandedXOut row).
        if ex.dtype != x.dtype {
            return Err(bad("expandedXOut dtype must equal x dtype when quantMode = -1"));
        }
        // activeExpertRange: 2 values [start, end), 0 <= start < end <= expertNum ([OT]
        // moe_init_routing_v3_tiling.cpp:235; [OTF] V3 doc).
        if range.len() != 2 || range[0] < 0 || range[0] >= range[1] || range[1] > expert_num {
            return Err(tiling(format!(
                "activeExpertRange {range:?}: need [start, end) with 0 <= start < end <= expertNum = {expert_num}"
            )));
        }
        // CheckShape -> 161002 ([OT] aclnn_moe_init_routing_v3.cpp): x and expertIdx 2-D with equal
        // rows; expandedXOut [N*K, H]; expandedRowIdxOut [N*K]; counts [end - start] for type 1,
        // [expertNum, 2] for type 2; with a scale (quantMode -1): scale [N], expandedScaleOut [N*K].
        want_rank(&x, 2, "x")?;
        want_rank(&ids, 2, "expertIdx")?;
        let (t, h, k) = (x.dims[0], x.dims[1], ids.dims[1]);
        if ids.dims[0] != t {
            return Err(bad(format!("expertIdx {} rows != x {} rows", ids.show(), x.show())));
        }
        want_dims(&ex, &[t * k, h], "expandedXOut")?;
        want_dims(&row_idx, &[t * k], "expandedRowIdxOut")?;
        if num_type == 1 {
            want_dims(
                &counts,
                &[range[1] - range[0]],
                "expertTokensCountOrCumsumOut (count mode)",
            )?;
        }
        if let Some(s) = &scale {
            want_dims(s, &[t], "scaleOptional (quantMode -1)")?;
            want_dims(&scale_out, &[t * k], "expandedScaleOut")?;
        }
        // Tiling, 2025 ([OT] moe_init_routing_v3_tiling.cpp): activeNum must be -1 or N*K
        // (:324-327, doc "activeNum 当前未使用，校验需等于NUM_ROWS*K"); expertTokensNumType 1 or 2 only
        // (:267-271, doc "当前只支持 1 和 2"). NOT EMULATED: type 2 (key_value).
        if !(active_num == -1 || active_num == t * k) {
            return Err(tiling(format!(
                "activeNum {active_num}: must be -1 or NUM_ROWS*K = {} (2025 tiling; 0 is accepted \
                 only from the 2026 code)",
                t * k
            )));
        }
        if !(num_type == 1 || num_type == 2) {
            return Err(tiling(format!(
                "expertTokensNumType {num_type}: only 1 (count) and 2 (key_value) are supported \
                 (cumsum 0 only from the 2026 code)"
            )));
        }
        if num_type == 2 {
            return Err(bad("expertTokensNumType 2 (key_value) is NOT EMULATED"));
        }
        // rowIdxType 0 gather, 1 scatter ([OTF] V3 doc).
        if !(row_idx_type == 0 || row_idx_type == 1) {
            return Err(tiling(format!("rowIdxType {row_idx_type}: must be 0 or 1")));
        }
        // expertNum in [1, 10240] outside key_value mode ([OTF] V3 doc).
        if !(1..=10240).contains(&expert_num) {
            return Err(tiling(format!("expertNum {expert_num} not in [1, 10240]")));
        }
        // NOT EMULATED: drop/pad mode 1, quantised modes 0/1 (A2/A3 accept -1, 0, 1: [OTF] V3 doc),
        // an expert range other than [0, expertNum].
        if drop_pad_mode != 0 {
            return Err(bad(format!("dropPadMode {drop_pad_mode}: only dropless 0 is emulated")));
        }
        if quant_mode != -1 {
            return Err(bad(format!(
                "quantMode {quant_mode}: only -1 (unquantised) is emulated"
            )));
        }
        // offsetOptional: "非量化场景下不输入" ([OTF] V3 doc).
        if offset.is_some() {
            return Err(bad("offsetOptional must be NULL when quantMode = -1"));
        }
        if range != [0, expert_num] {
            return Err(bad(format!(
                "activeExpertRange {range:?} != [0, {expert_num}] is NOT EMULATED"
            )));
        }
        for (d, w) in [
            (&x, "x"),
            (&ids, "expertIdx"),
            (&ex, "expandedXOut"),
            (&row_idx, "expandedRowIdxOut"),
        ] {
            want_contig(d, w)?;
        }
        want_contig(&counts, "expertTokensCountOrCumsumOut")?;
        want_contig(&scale_out, "expandedScaleOut")?;
        Ok(Op::InitRouting {
            launch,
            x,
            ids,
            scale,
            p: InitParams {
                e: expert_num,
                rows: t * k,
                // expertTokensNumFlag false: no count output ([OTF] V3 doc table).
                count_mode: if num_flag { 2 } else { 0 },
                // rowIdxType 1 = scatter: expandedRowIdxOut[i] = sortedRowIdx[i]; 0 = gather:
                // expandedRowIdxOut[sortedRowIdx[i]] = i ([OTF] V3 doc formula; [OT]
                // op_kernel/moe_v3_sort_one_core.h:129-134, moe_v3_row_idx_gather.h:153).
                scatter: row_idx_type == 1,
            },
            ex,
            row_idx,
            counts: if num_flag { Some(counts) } else { None },
            scale_out: Some(scale_out),
        })
    }

    /// aclnnMoeFinalizeRoutingV2 phase one (dropPadMode 0 = column-major row index, 2 = row-major).
    pub fn finalize(
        ex: Option<Desc>,
        row_idx: Option<Desc>,
        x1: Option<Desc>,
        x2: Option<Desc>,
        bias: Option<Desc>,
        scales: Option<Desc>,
        eidx: Option<Desc>,
        mode: i64,
        out: Option<Desc>,
    ) -> Result<Op, Fail> {
        let (ex, row_idx, out) = (req(ex, "expandedX")?, req(row_idx, "expandedRowIdx")?, req(out, "out")?);
        // dropPadMode: 0/1 row index column-major (V1 routing), 2/3 row-major (V2 routing)
        // ([OTF] moe_finalize_routing_v2/docs/aclnnMoeFinalizeRoutingV2.md §约束 7); 1 and 3 are the
        // drop/pad layouts: NOT EMULATED.
        if !(mode == 0 || mode == 2) {
            return Err(bad(format!(
                "dropPadMode {mode}: only the dropless modes 0 and 2 are emulated"
            )));
        }
        // expandedX 2-D FP16/BF16/FP32; out [NUM_ROWS, H] of expandedX's dtype ([OTF] doc).
        want_rank(&ex, 2, "expandedX")?;
        want_dt(&ex, &FLOATS, "expandedX")?;
        want_rank(&out, 2, "out")?;
        let (t, h) = (out.dims[0], out.dims[1]);
        if out.dtype != ex.dtype || ex.dims[1] != h {
            return Err(bad(format!(
                "out {} must match expandedX {} in dtype and width",
                out.show(),
                ex.show()
            )));
        }
        // K = scales.dim(1); K = 1 when scales is NULL ([OT] moe_finalize_routing_v2_tiling_membase.cpp:200-213).
        let k = match &scales {
            Some(s) => {
                want_rank(s, 2, "scalesOptional")?;
                s.dims[1]
            }
            None => 1,
        };
        // expandedRowIdx INT32 [NUM_ROWS*K]; expandedX [NUM_ROWS*K, H] in the dropless modes ([OTF] doc).
        want_dt(&row_idx, &[sys::ACL_INT32], "expandedRowIdx")?;
        want_dims(&row_idx, &[t * k], "expandedRowIdx")?;
        want_dims(&ex, &[t * k, h], "expandedX")?;
        for (o, what) in [(&x1, "x1Optional"), (&x2, "x2Optional")] {
            if let Some(o) = o {
                want_dims(o, &[t, h], what)?;
                if o.dtype != ex.dtype {
                    return Err(bad(format!("{what} dtype must equal expandedX dtype")));
                }
            }
        }
        if let Some(s) = &scales {
            want_dims(s, &[t, k], "scalesOptional")?;
            // scales: expandedX's dtype, or FLOAT32 with BFLOAT16 expandedX ("混合精度模式", [OTF] doc;
            // [OT] moe_finalize_routing_v2_def.cpp DataType lists).
            let mixed = ex.dtype == sys::ACL_BF16 && s.dtype == sys::ACL_FLOAT;
            if s.dtype != ex.dtype && !mixed {
                return Err(bad(format!(
                    "scalesOptional dtype {} must equal expandedX dtype {} (or FLOAT with BF16 expandedX)",
                    dt_name(s.dtype),
                    dt_name(ex.dtype)
                )));
            }
        }
        // bias [E, H] of expandedX's dtype, with expertIdx INT32 [NUM_ROWS, K] ([OTF] doc).
        if let Some(b) = &bias {
            want_rank(b, 2, "biasOptional")?;
            if b.dims[1] != h || b.dtype != ex.dtype {
                return Err(bad("biasOptional must be [E, H] of expandedX dtype"));
            }
            let e = req(eidx.clone(), "expertIdxOptional (needed with bias)")?;
            want_dims(&e, &[t, k], "expertIdxOptional")?;
            want_dt(&e, &[sys::ACL_INT32], "expertIdxOptional")?;
        }
        // out: "非连续 ×" (audit §1.2/§1.7 citing [OTF] doc); expandedX: NOT EMULATED non-contiguous.
        want_contig(&ex, "expandedX")?;
        want_contig(&out, "out")?;
        Ok(Op::Finalize {
            ex,
            row_idx,
            x1,
            x2,
            bias,
            scales,
            eidx,
            row_major: mode == 2,
            k,
            out,
        })
    }

    /// aclnnEmbedding (dim 0), aclnnGatherV2 (dim must be 0 here) phase one. (aclnnIndexSelect is a
    /// primitive of any dim: [`Prim::index_select`].)
    pub fn gather(
        launch: &'static str,
        table: Option<Desc>,
        dim: i64,
        index: Option<Desc>,
        out: Option<Desc>,
    ) -> Result<Op, Fail> {
        let (table, index, out) = (req(table, "self/weight")?, req(index, "index")?, req(out, "out")?);
        // NOT EMULATED: gathers along dim != 0.
        if dim != 0 {
            return Err(bad(format!("{launch}: dim {dim} not emulated (0 only)")));
        }
        // aclnnEmbedding: weight 2-D ([HA 80RC3alpha003 aclnnEmbedding.md]); GatherV2: rank <= 8
        // ([FS §4.4]).
        if launch == "aclnnEmbedding" {
            want_rank(&table, 2, "weight")?;
        } else if table.dims.is_empty() || table.dims.len() > 8 {
            return Err(bad("self must have rank 1..8"));
        }
        // Index INT32 / INT64 ([FS §4.4]).
        want_dt(&index, &[sys::ACL_INT32, sys::ACL_INT64], "index")?;
        // out = index.shape + self.shape[1:], self's dtype ([FS §4.4]).
        let mut shape = index.dims.clone();
        shape.extend_from_slice(&table.dims[1..]);
        want_dims(&out, &shape, "out")?;
        if out.dtype != table.dtype {
            return Err(bad("out dtype must equal the table dtype"));
        }
        want_contig(&table, "self/weight")?;
        want_contig(&index, "index")?;
        want_contig(&out, "out")?;
        Ok(Op::Gather {
            launch,
            table,
            index,
            out,
        })
    }

    /// aclnnCast phase one.
    pub fn cast(src: Option<Desc>, dtype: sys::aclDataType, out: Option<Desc>) -> Result<Op, Fail> {
        let (src, out) = (req(src, "self")?, req(out, "out")?);
        // Supported pairs: all of these ([FS §4] / audit §1.8: "all supported pairs").
        let ok = [
            sys::ACL_FLOAT,
            sys::ACL_FLOAT16,
            sys::ACL_BF16,
            sys::ACL_INT32,
            sys::ACL_INT64,
            sys::ACL_INT8,
            sys::ACL_UINT8,
            sys::ACL_BOOL,
            sys::ACL_DOUBLE,
        ];
        want_dt(&src, &ok, "self")?;
        want_dt(&out, &ok, "out")?;
        // out has the requested dtype and self's shape.
        if out.dtype != dtype {
            return Err(bad(format!(
                "out dtype {} != requested dtype {}",
                dt_name(out.dtype),
                dt_name(dtype)
            )));
        }
        if out.dims != src.dims {
            return Err(bad(format!(
                "out {} must have the shape of self {}",
                out.show(),
                src.show()
            )));
        }
        Ok(Op::Cast { src, out })
    }

    /// aclnnSwiGlu phase one, as the A2 (910B) rows of \[HA canncommercial/800 aclnnSwiGlu.md\]
    /// (same text on 81RC1alpha002, 82RC1alpha002, 850alpha002) state them:
    /// - x, out required (161001);
    /// - x BFLOAT16 / FLOAT16 / FLOAT32, out "数据类型与计算输入x的类型一致" (161002);
    /// - x "维度必须大于0", dim in `[-x.dim(), x.dim()-1]`, x's size along dim "可以整除2" (161002);
    /// - out has x's shape with the dim halved (the formula's A·B shape; 161002);
    /// - x and out "不支持非连续的Tensor", x "不支持空Tensor" (161002).
    pub fn swiglu(x: Option<Desc>, dim: i64, out: Option<Desc>) -> Result<Op, Fail> {
        let (x, out) = (req(x, "x")?, req(out, "out")?);
        want_dt(&x, &FLOATS, "x")?;
        if out.dtype != x.dtype {
            return Err(bad(format!(
                "out dtype {} != x dtype {}",
                dt_name(out.dtype),
                dt_name(x.dtype)
            )));
        }
        let rank = x.dims.len() as i64;
        if rank == 0 {
            return Err(bad("x: rank 0 (the dimension count must be greater than 0)"));
        }
        if dim < -rank || dim >= rank {
            return Err(bad(format!("dim {dim} outside [-{rank}, {}]", rank - 1)));
        }
        let d = dim.rem_euclid(rank) as usize;
        if x.dims[d] % 2 != 0 {
            return Err(bad(format!("x: size {} along dim {dim} is odd", x.dims[d])));
        }
        if x.numel() == 0 {
            return Err(bad(format!("x: empty tensor {} is not supported", x.show())));
        }
        let mut want = x.dims.clone();
        want[d] /= 2;
        want_dims(&out, &want, "out")?;
        want_contig(&x, "x")?;
        want_contig(&out, "out")?;
        Ok(Op::SwiGlu { x, dim: d, out })
    }

    /// aclnnInplaceMul phase one (\[HA canncommercial/800 aclnnMul&aclnnInplaceMul.md\], A2 rows;
    /// same on 81RC1beta1 and 82RC1):
    /// - selfRef, other required (161001);
    /// - floating dtypes FLOAT / FLOAT16 / BFLOAT16 (NOT EMULATED: DOUBLE, the integer, BOOL and
    ///   COMPLEX types the page also lists); selfRef must be a type the promoted type of (selfRef,
    ///   other) converts to ("推导之后可转换的数据类型": every floating type here) (161002);
    /// - other's shape broadcasts to selfRef's shape, which it keeps (in-place) (161002);
    /// - non-contiguous tensors are supported ("支持非连续的Tensor").
    pub fn inplace_mul(self_ref: Option<Desc>, other: Option<Desc>) -> Result<Op, Fail> {
        let (self_ref, other) = (req(self_ref, "selfRef")?, req(other, "other")?);
        want_dt(&self_ref, &FLOATS, "selfRef")?;
        want_dt(&other, &FLOATS, "other")?;
        let (sr, or) = (self_ref.dims.len(), other.dims.len());
        let fits = or <= sr
            && other
                .dims
                .iter()
                .rev()
                .zip(self_ref.dims.iter().rev())
                .all(|(o, s)| o == s || *o == 1);
        if !fits {
            return Err(bad(format!(
                "other {} does not broadcast to selfRef {} (an in-place result keeps selfRef's shape)",
                other.show(),
                self_ref.show()
            )));
        }
        Ok(Op::InplaceMul { self_ref, other })
    }

    // ---------------------------------------------------------------- phase two

    /// Run on host copies of the tensors (in the order of [`Op::tensors`]).
    pub fn run(&self, ins: &[HostTensor], outs: &mut [HostTensor]) -> Result<(), Fail> {
        match self {
            Op::Gmm { bias, list_type, .. } => run_gmm(ins, outs, bias.is_some(), *list_type),
            Op::QuantGmm {
                list_type,
                nz,
                per_token,
                ..
            } => qgmm::run_quant_gmm(ins, outs, *list_type, *nz, per_token.is_some()),
            Op::TransNz { .. } => qgmm::run_trans_nz(ins, outs),
            Op::TopKSoftmax { k, finished, .. } => run_topk_softmax(ins, outs, *k, finished.is_some()),
            Op::GatingTopK { bias, p, out_flag, .. } => run_gating(ins, outs, bias.is_some(), p, *out_flag),
            Op::InitRouting { p, scale, counts, .. } => run_init(ins, outs, p, scale.is_some(), counts.is_some()),
            Op::Finalize {
                x1,
                x2,
                bias,
                scales,
                row_major,
                k,
                ..
            } => run_finalize(
                ins,
                outs,
                [x1.is_some(), x2.is_some(), bias.is_some(), scales.is_some()],
                *row_major,
                *k,
            ),
            Op::Gather { .. } => run_gather(ins, outs),
            Op::SwiGlu { dim, .. } => {
                run_swiglu(&ins[0], &mut outs[0], *dim);
                Ok(())
            }
            Op::InplaceMul { .. } => {
                run_inplace_mul(&ins[0], &ins[1], &mut outs[0]);
                Ok(())
            }
            Op::Prim(p) => p.run(ins, outs),
            Op::Cast { .. } => {
                let (s, o) = (&ins[0], &mut outs[0]);
                let n = s.d.numel();
                let mut idx = vec![0i64; s.d.dims.len()];
                for _ in 0..n {
                    let (ps, po) = (s.d.pos(&idx), o.d.pos(&idx));
                    if matches!(s.d.dtype, sys::ACL_INT64 | sys::ACL_INT32) {
                        let v = s.get_int_pos(ps);
                        if matches!(o.d.dtype, sys::ACL_INT64 | sys::ACL_INT32) {
                            o.set_int(&idx, v);
                        } else {
                            o.set_pos(po, v as f64);
                        }
                    } else {
                        o.set_pos(po, s.get_pos(ps));
                    }
                    incr(&mut idx, &s.d.dims);
                }
                Ok(())
            }
        }
    }
}

fn incr(idx: &mut [i64], dims: &[i64]) {
    for i in (0..idx.len()).rev() {
        idx[i] += 1;
        if idx[i] < dims[i] {
            return;
        }
        idx[i] = 0;
    }
}

/// `out = Swish(A) * B` with `Swish(a) = a / (1 + e^-a)` (\[HA canncommercial/800 aclnnSwiGlu.md\]
/// formula), A = the first half of x along `dim`, B = the second. Evaluated in f32 and rounded once
/// to out's dtype: the internal precision for FLOAT16 / BFLOAT16 is UNDOCUMENTED (the page gives
/// only the formula); f32 is the conservative model.
fn run_swiglu(x: &HostTensor, out: &mut HostTensor, dim: usize) {
    let outer: i64 = x.d.dims[..dim].iter().product();
    let half = x.d.dims[dim] / 2;
    let inner: i64 = x.d.dims[dim + 1..].iter().product();
    // Both tensors are contiguous (phase one), so positions are offset + linear index.
    for o in 0..outer {
        for h in 0..half {
            for i in 0..inner {
                let a = x.get_pos(x.d.offset + (o * 2 * half + h) * inner + i) as f32;
                let b = x.get_pos(x.d.offset + (o * 2 * half + half + h) * inner + i) as f32;
                let swish = a / (1.0 + (-a).exp());
                out.set_pos(out.d.offset + (o * half + h) * inner + i, (swish * b) as f64);
            }
        }
    }
}

/// `selfRef[i] = selfRef[i] × other[broadcast(i)]` (\[HA canncommercial/800
/// aclnnMul&aclnnInplaceMul.md\] formula). The product of two FLOAT / FLOAT16 / BFLOAT16 values is
/// exact in f32 for the 16-bit types, so computing in f32 and rounding once to selfRef's dtype is
/// the correctly rounded result in the promoted type (f32 when either side is FLOAT or the two
/// 16-bit types differ) converted to selfRef's type.
fn run_inplace_mul(s: &HostTensor, other: &HostTensor, out: &mut HostTensor) {
    let rank = s.d.dims.len();
    let lead = rank - other.d.dims.len();
    let mut idx = vec![0i64; rank];
    for _ in 0..s.d.numel() {
        let oidx: Vec<i64> = other
            .d
            .dims
            .iter()
            .enumerate()
            .map(|(j, &n)| if n == 1 { 0 } else { idx[lead + j] })
            .collect();
        let v = s.get(&idx) * other.get(&oidx);
        out.set_pos(out.d.pos(&idx), v as f64);
        incr(&mut idx, &s.d.dims);
    }
}

/// The group list of GroupedMatmul resolved to `[start, end)` row ranges, one per group:
/// groupListType 0 = cumulative ends, 1 = counts (G4). A decreasing cumulative list, a negative
/// count or a total past the `m` rows of x → 561000 (G14).
fn group_ranges(g: &HostTensor, e: i64, m: i64, list_type: i64) -> Result<Vec<(i64, i64)>, Fail> {
    let mut ranges = Vec::with_capacity(e as usize);
    let mut prev = 0i64;
    for gi in 0..e {
        let v = g.get_int(&[gi]);
        let end = if list_type == 0 {
            if v < prev {
                return Err(inner(format!("groupList (cumulative) decreases at {gi}: {v} < {prev}")));
            }
            v
        } else {
            if v < 0 {
                return Err(inner(format!("groupList (counts) entry {gi} is negative: {v}")));
            }
            prev + v
        };
        if end > m {
            return Err(inner(format!("groupList total {end} exceeds x rows {m}")));
        }
        ranges.push((prev, end));
        prev = end;
    }
    Ok(ranges)
}

fn run_gmm(ins: &[HostTensor], outs: &mut [HostTensor], has_bias: bool, list_type: i64) -> Result<(), Fail> {
    let (x, w, g) = (&ins[0], &ins[1], &ins[2]);
    let bias = if has_bias { Some(&ins[3]) } else { None };
    let y = &mut outs[0];
    let (m, k) = (x.d.dims[0], x.d.dims[1]);
    let (e, n) = (w.d.dims[0], w.d.dims[2]);
    let ranges = group_ranges(g, e, m, list_type)?;
    // Rows at or past the total are not updated (documented: "unspecified part is not updated").
    for (gi, (s, t)) in ranges.into_iter().enumerate() {
        let gi = gi as i64;
        for r in s..t {
            for c in 0..n {
                let mut acc = 0f32;
                for kk in 0..k {
                    acc += x.get(&[r, kk]) * w.get(&[gi, kk, c]);
                }
                if let Some(b) = bias {
                    acc += b.get(&[gi, c]);
                }
                y.set(&[r, c], acc);
            }
        }
    }
    Ok(())
}

/// Indices of the `k` largest values, descending, ties to the lower index; NaN ranks lowest.
fn topk_desc(vals: &[f32], allowed: &[bool], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..vals.len()).filter(|&i| allowed[i]).collect();
    order.sort_by(|&a, &b| {
        let (va, vb) = (vals[a], vals[b]);
        let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
        key(vb)
            .partial_cmp(&key(va))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    order.truncate(k);
    order
}

fn run_topk_softmax(ins: &[HostTensor], outs: &mut [HostTensor], k: i64, has_finished: bool) -> Result<(), Fail> {
    let x = &ins[0];
    let (t, e) = (x.d.dims[0], x.d.dims[1]);
    for r in 0..t {
        let finished = has_finished && ins[1].get_int(&[r]) != 0;
        let logits: Vec<f32> = (0..e).map(|c| x.get(&[r, c])).collect();
        let mx = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let ex: Vec<f32> = logits.iter().map(|v| (v - mx).exp()).collect();
        let sum: f32 = ex.iter().sum();
        let sm: Vec<f32> = ex.iter().map(|v| v / sum).collect();
        let sel = topk_desc(&sm, &vec![true; e as usize], k as usize);
        for (j, &c) in sel.iter().enumerate() {
            let j = j as i64;
            outs[0].set(&[r, j], sm[c]);
            outs[1].set_int(&[r, j], if finished { e } else { c as i64 });
            outs[2].set_int(&[r, j], j * t + r);
        }
    }
    Ok(())
}

fn run_gating(
    ins: &[HostTensor],
    outs: &mut [HostTensor],
    has_bias: bool,
    p: &GatingParams,
    out_flag: bool,
) -> Result<(), Fail> {
    let x = &ins[0];
    let (t, e) = (x.d.dims[0], x.d.dims[1]);
    let per = e / p.group_count;
    for r in 0..t {
        let v: Vec<f32> = (0..e).map(|c| x.get(&[r, c])).collect();
        // normOut = softmax(x) (normType 0) or sigmoid(x) (1), in f32 ([OT] tiling NORM_TYPE_*).
        let s: Vec<f32> = if p.norm == 1 {
            v.iter().map(|a| 1.0 / (1.0 + (-a).exp())).collect()
        } else {
            let mx = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let ex: Vec<f32> = v.iter().map(|a| (a - mx).exp()).collect();
            let sum: f32 = ex.iter().sum();
            ex.iter().map(|a| a / sum).collect()
        };
        // out = normOut (FLOAT, unbiased) when outFlag; with outFlag false its contents are
        // UNDOCUMENTED: left unwritten.
        if out_flag {
            for c in 0..e {
                outs[2].set(&[r, c], s[c as usize]);
            }
        }
        // Selection uses normOut + bias ([HA 850alpha002] formula).
        let sb: Vec<f32> = (0..e as usize)
            .map(|c| s[c] + if has_bias { ins[1].get(&[c as i64]) } else { 0.0 })
            .collect();
        let mut allowed = vec![true; e as usize];
        if p.group_count > 1 {
            // Group score: max (groupSelectMode 0) or sum of the top two (1); keep kGroup groups.
            let gs: Vec<f32> = (0..p.group_count as usize)
                .map(|g| {
                    let grp = &sb[g * per as usize..(g + 1) * per as usize];
                    let top = topk_desc(grp, &vec![true; grp.len()], if p.group_mode == 1 { 2 } else { 1 });
                    top.iter().map(|&i| grp[i]).sum()
                })
                .collect();
            let keep = topk_desc(&gs, &vec![true; gs.len()], p.k_group as usize);
            for (c, a) in allowed.iter_mut().enumerate() {
                *a = keep.contains(&(c / per as usize));
            }
        }
        let sel = topk_desc(&sb, &allowed, p.k as usize);
        // y: the kernel gathers the UNBIASED normOut at the chosen ids, divides by (sum + eps) only
        // for sigmoid, then multiplies by routedScalingFactor ([OT]
        // op_kernel/moe_gating_top_k_without_group.h:219-250; the kernel wins over the doc formula).
        let sum: f32 = sel.iter().map(|&c| s[c]).sum();
        for (j, &c) in sel.iter().enumerate() {
            let base = if p.norm == 1 { s[c] / (sum + p.eps as f32) } else { s[c] };
            outs[0].set(&[r, j as i64], base * p.scale as f32);
            outs[1].set_int(&[r, j as i64], c as i64);
        }
    }
    Ok(())
}

fn run_init(
    ins: &[HostTensor],
    outs: &mut [HostTensor],
    p: &InitParams,
    has_scale: bool,
    has_counts: bool,
) -> Result<(), Fail> {
    let (x, ids) = (&ins[0], &ins[1]);
    let (t, h, k) = (x.d.dims[0], x.d.dims[1], ids.d.dims[1]);
    let mut flat = Vec::with_capacity((t * k) as usize);
    for r in 0..t {
        for j in 0..k {
            let v = ids.get_int(&[r, j]);
            // Ids in [0, expertNum) ([HA V2 doc]); out of range (including the 2026 "-1 = invalid
            // expert") is UNDOCUMENTED on the 2025 kernels: reported, never relied on.
            if v < 0 || v >= p.e {
                return Err(inner(format!("expertIdx[{r}][{j}] = {v} outside [0, {})", p.e)));
            }
            flat.push((v, r * k + j));
        }
    }
    // Stable key-value sort by expert, then by flat slot index (torch_npu reference model uses
    // np.argsort(kind="stable"): [OP] torch_npu-npu_moe_init_routing_v2.md; multi-core tie order
    // at scale is UNDOCUMENTED, audit P8).
    flat.sort();
    let n = p.rows;
    let mut ci = 2usize;
    for (i, &(_, src)) in flat.iter().enumerate() {
        let i = i as i64;
        if p.scatter {
            outs[1].set_int(&[i], src);
        } else {
            outs[1].set_int(&[src], i);
        }
        if i < n {
            // expandedXOut[i] = x[sortedRowIdx[i] // K] ([OTF] V2/V3 docs; [OT] moe_v2_gather_out.h).
            for c in 0..h {
                let pos = x.d.pos(&[src / k, c]);
                let v = x.raw(pos).to_vec();
                let po = outs[0].d.pos(&[i, c]);
                outs[0].set_raw(po, &v);
            }
        }
    }
    if has_counts {
        let mut acc = 0i64;
        for ex in 0..p.e {
            let cnt = flat.iter().filter(|f| f.0 == ex).count() as i64;
            acc += cnt;
            outs[2].set_int(&[ex], if p.count_mode == 1 { acc } else { cnt });
        }
        ci = 3;
    }
    // V3 unquantised with scaleOptional: expandedScaleOut[i] = scale[sortedRowIdx[i] // K]
    // ([OTF] V3 doc, expandedScaleOut row); without a scale it is not written (UNDOCUMENTED contents).
    if has_scale {
        let sc = &ins[2];
        for (i, &(_, src)) in flat.iter().enumerate() {
            let v = sc.get(&[src / k]);
            outs[ci].set(&[i as i64], v);
        }
    }
    Ok(())
}

fn run_finalize(
    ins: &[HostTensor],
    outs: &mut [HostTensor],
    has: [bool; 4],
    row_major: bool,
    k: i64,
) -> Result<(), Fail> {
    let (ex, ri) = (&ins[0], &ins[1]);
    let mut it = 2usize;
    let mut take = |p: bool| {
        if p {
            it += 1;
            Some(&ins[it - 1])
        } else {
            None
        }
    };
    let (x1, x2, bias, scales) = (take(has[0]), take(has[1]), take(has[2]), take(has[3]));
    let eidx = take(has[2]);
    let out = &mut outs[0];
    let (t, h) = (out.d.dims[0], out.d.dims[1]);
    let rows = ex.d.dims[0];
    for i in 0..t {
        let mut src = Vec::with_capacity(k as usize);
        for j in 0..k {
            // Modes 0/1 index `row + j*N`, modes 2/3 `row*K + j`; the value is the expandedX row
            // ([OT] op_kernel/moe_finalize_routing_v2_fp_cuth.h:311-323). Documented range
            // [0, N*K-1] ([OTF] doc); the kernel's skipping of -1 is UNDOCUMENTED: reported.
            let r = ri.get_int(&[if row_major { i * k + j } else { j * t + i }]);
            if r < 0 || r >= rows {
                return Err(inner(format!(
                    "expandedRowIdx for ({i}, {j}) = {r} outside [0, {rows})"
                )));
            }
            let e = eidx.map(|e| e.get_int(&[i, j]));
            if let (Some(e), Some(b)) = (e, bias) {
                if e < 0 || e >= b.d.dims[0] {
                    return Err(inner(format!("expertIdx ({i}, {j}) = {e} outside the bias rows")));
                }
            }
            src.push((r, e));
        }
        for c in 0..h {
            let mut acc = 0f32;
            if let Some(a) = x1 {
                acc += a.get(&[i, c]);
            }
            if let Some(a) = x2 {
                acc += a.get(&[i, c]);
            }
            for (j, &(r, e)) in src.iter().enumerate() {
                let mut v = ex.get(&[r, c]);
                if let (Some(b), Some(e)) = (bias, e) {
                    v += b.get(&[e, c]);
                }
                let s = scales.map(|s| s.get(&[i, j as i64])).unwrap_or(1.0);
                acc += s * v;
            }
            out.set(&[i, c], acc);
        }
    }
    Ok(())
}

fn run_gather(ins: &[HostTensor], outs: &mut [HostTensor]) -> Result<(), Fail> {
    let (table, index) = (&ins[0], &ins[1]);
    let out = &mut outs[0];
    let rows = table.d.dims[0];
    let row_elems: i64 = table.d.dims[1..].iter().product();
    let n = index.d.numel();
    for i in 0..n {
        let r = index.get_int_pos(index.d.offset + i);
        if r < 0 {
            return Err(inner(format!("index[{i}] = {r} is negative")));
        }
        if r >= rows {
            return Err(inner(format!(
                "index[{i}] = {r} >= {rows} rows (hardware reads garbage or traps)"
            )));
        }
        for c in 0..row_elems {
            let v = table.raw(table.d.offset + r * row_elems + c).to_vec();
            out.set_raw(out.d.offset + i * row_elems + c, &v);
        }
    }
    Ok(())
}
