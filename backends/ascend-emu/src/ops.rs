//! The aclnn ops, as their public documentation describes them (see
//! `shared/reference/ascend_acl.md` §4 and the README). Written from the vendor documents, not from
//! moehal-core: where our backend's mapping disagrees with the vendor op, the conformance tests see it.
//!
//! Phase one ([`Op`] constructors) checks shapes, dtypes and attributes and returns
//! `ACLNN_ERR_PARAM_NULLPTR` (161001) for a missing required argument and `ACLNN_ERR_PARAM_INVALID`
//! (161002) for a bad one. Phase two ([`Op::run`]) reads device data; a bad *value* (an index out of
//! range, a decreasing group list), which real hardware would turn into garbage or an AI-core
//! exception, is reported as `ACLNN_ERR_INNER` (561000) here.
//!
//! Assumptions where the documents are silent (real hardware behaviour UNCONFIRMED): top-k ties go
//! to the lower expert index; group ranking ties go to the lower group index.

#![allow(clippy::large_enum_variant, clippy::too_many_arguments)]

use crate::sys;
use crate::tensor::{dt_name, Desc, HostTensor};

/// A status code and the message `aclGetRecentErrMsg` returns for it.
pub type Fail = (i32, String);

fn bad(msg: impl Into<String>) -> Fail {
    (sys::ACLNN_ERR_PARAM_INVALID, msg.into())
}
fn inner(msg: impl Into<String>) -> Fail {
    (sys::ACLNN_ERR_INNER, msg.into())
}
fn null(what: &str) -> Fail {
    (sys::ACLNN_ERR_PARAM_NULLPTR, format!("{what} is a null pointer"))
}

/// Requires `t`, else 161001.
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
const FLOATS: [sys::aclDataType; 3] = [sys::ACL_FLOAT, sys::ACL_FLOAT16, sys::ACL_BF16];

/// One validated op, waiting for its launch.
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
        out: Option<Desc>,
    },
    /// aclnnMoeInitRoutingV2 / V3 (dropless).
    InitRouting {
        launch: &'static str,
        x: Desc,
        ids: Desc,
        p: InitParams,
        ex: Desc,
        row_idx: Desc,
        counts: Option<Desc>,
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
        out: Desc,
    },
    /// aclnnEmbedding / aclnnGatherV2 / aclnnIndexSelect along dim 0.
    Gather {
        launch: &'static str,
        table: Desc,
        index: Desc,
        out: Desc,
    },
    /// aclnnCast.
    Cast { src: Desc, out: Desc },
}

/// Attributes of aclnnMoeGatingTopK.
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

/// Attributes of aclnnMoeInitRouting V2/V3.
pub struct InitParams {
    /// Number of experts.
    pub e: i64,
    /// activeNum (0 = all rows).
    pub active: i64,
    /// 0: none, 1: cumulative sum, 2: count.
    pub count_mode: i64,
    /// true: `expandedRowIdx[original] = position` (scatter); false: `expandedRowIdx[position] = original`.
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
            Op::TopKSoftmax { .. } => "aclnnMoeGatingTopKSoftmax",
            Op::GatingTopK { .. } => "aclnnMoeGatingTopK",
            Op::Finalize { .. } => "aclnnMoeFinalizeRoutingV2",
            Op::Cast { .. } => "aclnnCast",
        }
    }

    /// Workspace bytes the op asks for (non-zero for some ops, so the caller's workspace path runs).
    pub fn workspace(&self) -> u64 {
        match self {
            Op::Gmm { .. } => 16 * 1024,
            Op::TopKSoftmax { .. } | Op::GatingTopK { .. } => 4096,
            Op::InitRouting { ids, .. } => 64 + 8 * elems(ids) as u64,
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
                let mut o = vec![y, idx];
                o.extend(out.iter());
                (i, o)
            }
            Op::InitRouting {
                x,
                ids,
                ex,
                row_idx,
                counts,
                ..
            } => {
                let mut o = vec![ex, row_idx];
                o.extend(counts.iter());
                (vec![x, ids], o)
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
        }
    }

    // ---------------------------------------------------------------- phase one

    /// aclnnGroupedMatmulV3/V4 phase one (non-quantised, single tensors, groupType 0).
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<Op, Fail> {
        if x.len() != 1 || w.len() != 1 || y.len() != 1 {
            return Err(bad(format!(
                "{launch}: only single-tensor x/weight/y are emulated (got list lengths {}/{}/{})",
                x.len(),
                w.len(),
                y.len()
            )));
        }
        if !(split_item == 2 || split_item == 3) {
            return Err(bad(format!(
                "{launch}: splitItem {split_item} with single-tensor y; use 2 or 3"
            )));
        }
        if group_type != 0 {
            return Err(bad(format!(
                "{launch}: groupType {group_type} not emulated (M-axis = 0 only)"
            )));
        }
        if !(list_type == 0 || list_type == 1) {
            return Err(bad(format!(
                "{launch}: groupListType {list_type} not emulated (0 or 1)"
            )));
        }
        if act_type != 0 {
            return Err(bad(format!(
                "{launch}: actType {act_type}: fused activation not emulated"
            )));
        }
        let (x, w, y) = (x[0].clone(), w[0].clone(), y[0].clone());
        let group = req(group, "groupListOptional (required when groupType = 0)")?;
        want_rank(&x, 2, "x")?;
        want_rank(&w, 3, "weight")?;
        want_rank(&y, 2, "y")?;
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
        if k <= 0 || n <= 0 || e <= 0 || k >= 65536 || n >= 65536 {
            return Err(bad(format!("K={k}, N={n}, E={e}: each must be in [1, 65536)")));
        }
        if e > 1024 {
            return Err(bad(format!("{e} groups: at most 1024 in single-weight mode")));
        }
        if !x.contiguous() {
            return Err(bad("x must be contiguous (x cannot be transposed for M-axis grouping)"));
        }
        if !y.contiguous() {
            return Err(bad("y must be contiguous"));
        }
        let kn = w.strides[2] == 1 && w.strides[1] == n;
        let nk = w.strides[1] == 1 && w.strides[2] == k;
        if !(kn || nk) || w.strides[0] != k * n {
            return Err(bad(format!(
                "weight strides {:?} are neither [K*N, N, 1] nor transposed [K*N, 1, K]",
                w.strides
            )));
        }
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
        want_rank(&x, 2, "x")?;
        want_dt(&x, &FLOATS, "x")?;
        let (t, e) = (x.dims[0], x.dims[1]);
        if k < 1 || k > e.min(1024) {
            return Err((561002, format!("k = {k} must be in [1, min(E = {e}, 1024)]")));
        }
        want_dims(&y, &[t, k], "yOut")?;
        want_dims(&idx, &[t, k], "expertIdxOut")?;
        want_dims(&row_idx, &[t, k], "rowIdxOut")?;
        if y.dtype != x.dtype {
            return Err(bad("yOut dtype must equal x dtype"));
        }
        want_dt(&idx, &[sys::ACL_INT32], "expertIdxOut")?;
        want_dt(&row_idx, &[sys::ACL_INT32], "rowIdxOut")?;
        if let Some(f) = &finished {
            want_dims(f, &[t], "finishedOptional")?;
            want_dt(f, &[sys::ACL_BOOL], "finishedOptional")?;
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

    /// aclnnMoeGatingTopK phase one.
    #[allow(clippy::too_many_arguments)]
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
        want_rank(&x, 2, "x")?;
        want_dt(&x, &FLOATS, "x")?;
        let (t, e) = (x.dims[0], x.dims[1]);
        if e > 2048 {
            return Err(bad(format!("E = {e} > 2048")));
        }
        if p.group_count < 1 || e % p.group_count != 0 {
            return Err(bad(format!("groupCount {} must divide E = {e}", p.group_count)));
        }
        if p.k_group < 1 || p.k_group > p.group_count {
            return Err(bad(format!(
                "kGroup {} must be in [1, groupCount = {}]",
                p.k_group, p.group_count
            )));
        }
        if p.k < 1 || p.k > e / p.group_count * p.k_group {
            return Err(bad(format!("k = {} must be in [1, E / groupCount * kGroup]", p.k)));
        }
        if !(p.group_mode == 0 || p.group_mode == 1) || !(p.norm == 0 || p.norm == 1) {
            return Err(bad(format!(
                "groupSelectMode {} / normType {}: each must be 0 or 1",
                p.group_mode, p.norm
            )));
        }
        if p.group_mode == 1 && e / p.group_count < 2 {
            return Err(bad("groupSelectMode 1 (top-2 sum) needs at least 2 experts per group"));
        }
        if renorm != 0 {
            return Err(bad(format!("renorm {renorm}: only 0 is supported")));
        }
        if let Some(b) = &bias {
            want_dims(b, &[e], "biasOptional")?;
            want_dt(b, &[x.dtype, sys::ACL_FLOAT], "biasOptional")?;
        }
        want_dims(&y, &[t, p.k], "yOut")?;
        if y.dtype != x.dtype {
            return Err(bad("yOut dtype must equal x dtype"));
        }
        want_dims(&idx, &[t, p.k], "expertIdxOut")?;
        want_dt(&idx, &[sys::ACL_INT32], "expertIdxOut")?;
        let out = if out_flag {
            let o = req(out, "outOut (outFlag = true)")?;
            want_dims(&o, &[t, e], "outOut")?;
            want_dt(&o, &[sys::ACL_FLOAT], "outOut")?;
            Some(o)
        } else {
            None
        };
        Ok(Op::GatingTopK {
            x,
            bias,
            p,
            y,
            idx,
            out,
        })
    }

    /// aclnnMoeInitRoutingV2/V3 phase one (dropless, no quantisation).
    pub fn init_routing(
        launch: &'static str,
        x: Option<Desc>,
        ids: Option<Desc>,
        p: InitParams,
        ex: Option<Desc>,
        row_idx: Option<Desc>,
        counts: Option<Desc>,
        count_dtype: sys::aclDataType,
    ) -> Result<Op, Fail> {
        let (x, ids) = (req(x, "x")?, req(ids, "expertIdx")?);
        let (ex, row_idx) = (req(ex, "expandedXOut")?, req(row_idx, "expandedRowIdxOut")?);
        want_rank(&x, 2, "x")?;
        want_rank(&ids, 2, "expertIdx")?;
        want_dt(&x, &FLOATS, "x")?;
        want_dt(&ids, &[sys::ACL_INT32], "expertIdx")?;
        let (t, h, k) = (x.dims[0], x.dims[1], ids.dims[1]);
        if ids.dims[0] != t {
            return Err(bad(format!("expertIdx {} rows != x {} rows", ids.show(), x.show())));
        }
        if p.e < 1 {
            return Err(bad(format!("expertNum {} must be positive", p.e)));
        }
        if p.active < 0 {
            return Err(bad("activeNum must be >= 0"));
        }
        let n = if p.active > 0 { p.active.min(t * k) } else { t * k };
        want_dims(&ex, &[n, h], "expandedXOut")?;
        if ex.dtype != x.dtype {
            return Err(bad("expandedXOut dtype must equal x dtype"));
        }
        want_dims(&row_idx, &[t * k], "expandedRowIdxOut")?;
        want_dt(&row_idx, &[sys::ACL_INT32], "expandedRowIdxOut")?;
        for t in [&x, &ids, &ex, &row_idx] {
            if !t.contiguous() {
                return Err(bad(format!("{}: must be contiguous", t.show())));
            }
        }
        let counts = if p.count_mode != 0 {
            let c = req(counts, "expertTokensCountOrCumsumOut")?;
            want_dims(&c, &[p.e], "expertTokensCountOrCumsumOut")?;
            want_dt(&c, &[count_dtype], "expertTokensCountOrCumsumOut")?;
            Some(c)
        } else {
            None
        };
        Ok(Op::InitRouting {
            launch,
            x,
            ids,
            p,
            ex,
            row_idx,
            counts,
        })
    }

    /// aclnnMoeFinalizeRoutingV2 phase one (dropPadMode 0 = column-major row index, 2 = row-major).
    #[allow(clippy::too_many_arguments)]
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
        if !(mode == 0 || mode == 2) {
            return Err(bad(format!(
                "dropPadMode {mode}: only the dropless modes 0 and 2 are emulated"
            )));
        }
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
        want_rank(&row_idx, 1, "expandedRowIdx")?;
        want_dt(&row_idx, &[sys::ACL_INT32], "expandedRowIdx")?;
        let rk = row_idx.dims[0];
        if t == 0 || rk % t != 0 {
            return Err(bad(format!(
                "expandedRowIdx length {rk} is not a multiple of out rows {t}"
            )));
        }
        let k = rk / t;
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
            if s.dtype != ex.dtype {
                return Err(bad(format!(
                    "scalesOptional dtype {} must equal expandedX dtype {}",
                    dt_name(s.dtype),
                    dt_name(ex.dtype)
                )));
            }
        }
        if let Some(b) = &bias {
            want_rank(b, 2, "biasOptional")?;
            if b.dims[1] != h || b.dtype != ex.dtype {
                return Err(bad("biasOptional must be [E, H] of expandedX dtype"));
            }
            let e = req(eidx.clone(), "expertIdxOptional (needed with bias)")?;
            want_dims(&e, &[t, k], "expertIdxOptional")?;
            want_dt(&e, &[sys::ACL_INT32], "expertIdxOptional")?;
        }
        for t in [&ex, &out] {
            if !t.contiguous() {
                return Err(bad(format!("{}: must be contiguous", t.show())));
            }
        }
        Ok(Op::Finalize {
            ex,
            row_idx,
            x1,
            x2,
            bias,
            scales,
            eidx,
            row_major: mode == 2,
            out,
        })
    }

    /// aclnnEmbedding (dim 0), aclnnGatherV2 / aclnnIndexSelect (dim must be 0 here) phase one.
    pub fn gather(
        launch: &'static str,
        table: Option<Desc>,
        dim: i64,
        index: Option<Desc>,
        out: Option<Desc>,
    ) -> Result<Op, Fail> {
        let (table, index, out) = (req(table, "self/weight")?, req(index, "index")?, req(out, "out")?);
        if dim != 0 {
            return Err(bad(format!("{launch}: dim {dim} not emulated (0 only)")));
        }
        if table.dims.is_empty() || table.dims.len() > 8 {
            return Err(bad("table must have rank 1..8"));
        }
        want_dt(&index, &[sys::ACL_INT32, sys::ACL_INT64], "index")?;
        if launch == "aclnnIndexSelect" && index.dims.len() > 1 {
            return Err(bad("aclnnIndexSelect: index must be 0-D or 1-D"));
        }
        let mut shape = index.dims.clone();
        shape.extend_from_slice(&table.dims[1..]);
        want_dims(&out, &shape, "out")?;
        if out.dtype != table.dtype {
            return Err(bad("out dtype must equal the table dtype"));
        }
        if !table.contiguous() || !out.contiguous() || !index.contiguous() {
            return Err(bad("table, index and out must be contiguous"));
        }
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

    // ---------------------------------------------------------------- phase two

    /// Run on host copies of the tensors (in the order of [`Op::tensors`]).
    pub fn run(&self, ins: &[HostTensor], outs: &mut [HostTensor]) -> Result<(), Fail> {
        match self {
            Op::Gmm { bias, list_type, .. } => run_gmm(ins, outs, bias.is_some(), *list_type),
            Op::TopKSoftmax { k, finished, .. } => run_topk_softmax(ins, outs, *k, finished.is_some()),
            Op::GatingTopK { bias, p, .. } => run_gating(ins, outs, bias.is_some(), p),
            Op::InitRouting { p, .. } => run_init(ins, outs, p),
            Op::Finalize {
                x1,
                x2,
                bias,
                scales,
                row_major,
                ..
            } => run_finalize(
                ins,
                outs,
                [x1.is_some(), x2.is_some(), bias.is_some(), scales.is_some()],
                *row_major,
            ),
            Op::Gather { .. } => run_gather(ins, outs),
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

fn run_gmm(ins: &[HostTensor], outs: &mut [HostTensor], has_bias: bool, list_type: i64) -> Result<(), Fail> {
    let (x, w, g) = (&ins[0], &ins[1], &ins[2]);
    let bias = if has_bias { Some(&ins[3]) } else { None };
    let y = &mut outs[0];
    let (m, k) = (x.d.dims[0], x.d.dims[1]);
    let (e, n) = (w.d.dims[0], w.d.dims[2]);
    // Resolve the group list to [start, end) row ranges.
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

fn run_gating(ins: &[HostTensor], outs: &mut [HostTensor], has_bias: bool, p: &GatingParams) -> Result<(), Fail> {
    let x = &ins[0];
    let (t, e) = (x.d.dims[0], x.d.dims[1]);
    let per = e / p.group_count;
    for r in 0..t {
        let v: Vec<f32> = (0..e).map(|c| x.get(&[r, c])).collect();
        let s: Vec<f32> = if p.norm == 1 {
            v.iter().map(|a| 1.0 / (1.0 + (-a).exp())).collect()
        } else {
            let mx = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let ex: Vec<f32> = v.iter().map(|a| (a - mx).exp()).collect();
            let sum: f32 = ex.iter().sum();
            ex.iter().map(|a| a / sum).collect()
        };
        if let Some(o) = outs.get_mut(2) {
            for c in 0..e {
                o.set(&[r, c], s[c as usize]);
            }
        }
        let sb: Vec<f32> = (0..e as usize)
            .map(|c| s[c] + if has_bias { ins[1].get(&[c as i64]) } else { 0.0 })
            .collect();
        let mut allowed = vec![true; e as usize];
        if p.group_count > 1 {
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
        // Documented formula: y = topk of the bias-added scores, then y / (sum(y) + eps) * scale.
        let sum: f32 = sel.iter().map(|&c| sb[c]).sum();
        for (j, &c) in sel.iter().enumerate() {
            let yv = sb[c] / (sum + p.eps as f32) * p.scale as f32;
            outs[0].set(&[r, j as i64], yv);
            outs[1].set_int(&[r, j as i64], c as i64);
        }
    }
    Ok(())
}

fn run_init(ins: &[HostTensor], outs: &mut [HostTensor], p: &InitParams) -> Result<(), Fail> {
    let (x, ids) = (&ins[0], &ins[1]);
    let (t, h, k) = (x.d.dims[0], x.d.dims[1], ids.d.dims[1]);
    let mut flat = Vec::with_capacity((t * k) as usize);
    for r in 0..t {
        for j in 0..k {
            let v = ids.get_int(&[r, j]);
            if v < 0 || v >= p.e {
                return Err(inner(format!("expertIdx[{r}][{j}] = {v} outside [0, {})", p.e)));
            }
            flat.push((v, r * k + j));
        }
    }
    flat.sort(); // stable key-value sort: by expert, then by flat row index
    let n = outs[0].d.dims[0];
    for (i, &(_, src)) in flat.iter().enumerate() {
        let i = i as i64;
        if p.scatter {
            outs[1].set_int(&[src], i);
        } else {
            outs[1].set_int(&[i], src);
        }
        if i < n {
            for c in 0..h {
                let pos = x.d.pos(&[src / k, c]);
                let v = x.raw(pos).to_vec();
                let po = outs[0].d.pos(&[i, c]);
                outs[0].set_raw(po, &v);
            }
        }
    }
    if p.count_mode != 0 {
        let mut acc = 0i64;
        for ex in 0..p.e {
            let cnt = flat.iter().filter(|f| f.0 == ex).count() as i64;
            acc += cnt;
            outs[2].set_int(&[ex], if p.count_mode == 1 { acc } else { cnt });
        }
    }
    Ok(())
}

fn run_finalize(ins: &[HostTensor], outs: &mut [HostTensor], has: [bool; 4], row_major: bool) -> Result<(), Fail> {
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
    let k = ri.d.dims[0] / t;
    for i in 0..t {
        let mut src = Vec::with_capacity(k as usize);
        for j in 0..k {
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
