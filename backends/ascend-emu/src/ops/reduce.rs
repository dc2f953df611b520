//! Reductions and scans: aclnnSoftmax, aclnnReduceSum, aclnnCumsum, aclnnAmax / aclnnAmin. Sources
//! in RULES.md §Primitives (SM*, RS*, CS*, AM*).

use crate::sys;
use crate::tensor::{dt_name, Desc, HostTensor};

use super::prim::{axis, for_each, same_dtype, want_float, Prim, NUMERIC};
use super::{bad, inner, req, want_dims, Fail, FLOATS};

impl Prim {
    /// aclnnSoftmax phase one ([HA canncommercial/800 aclnnSoftmax.md]; return codes [HA
    /// 80RC3alpha003 aclnnSoftmax.md]): self, out required (161001); self FLOAT / FLOAT16 / BFLOAT16
    /// (NOT EMULATED: DOUBLE); dim "不在self维度范围内" → 161002 (range `[-rank, rank-1]`, torch);
    /// out "输出shape与self一致" and, strictly, self's dtype (the page lists out types separately;
    /// a different out dtype is UNDOCUMENTED) (161002).
    pub fn softmax(x: Option<Desc>, dim: i64, out: Option<Desc>) -> Result<Prim, Fail> {
        let (x, out) = (req(x, "self")?, req(out, "out")?);
        want_float(&x, "self")?;
        same_dtype(&x, &out, "out")?;
        let dim = axis(dim, x.dims.len(), "dim")?;
        want_dims(&out, &x.dims, "out (shape of self)")?;
        Ok(Prim::Softmax { x, dim, out })
    }

    /// aclnnReduceSum phase one ([HA canncommercial/800 aclnnReduceSum.md]; gitcode cann/ops-math
    /// math/reduce_sum/docs/aclnnReduceSum.md):
    /// - self, dims, out required (161001);
    /// - self FLOAT / FLOAT16 / BFLOAT16 (NOT EMULATED: integer, BOOL, DOUBLE, COMPLEX); dtype and
    ///   out's dtype FLOAT / FLOAT16 / BFLOAT16, out's dtype == dtype (the argument "指定输出张量的数据
    ///   类型") (161002);
    /// - each dim in `[-self.dim(), self.dim()-1]`; a repeated dim and an empty list are UNDOCUMENTED
    ///   (torch: error / reduce all) — refused (161002);
    /// - out "shape需要是self经过计算后的shape": reduced axes removed, or kept as 1 with keepDims (161002).
    pub fn reduce_sum(
        x: Option<Desc>,
        dims: Option<Vec<i64>>,
        keep: bool,
        dtype: sys::aclDataType,
        out: Option<Desc>,
    ) -> Result<Prim, Fail> {
        let x = req(x, "self")?;
        let dims = dims.ok_or_else(|| super::null("dims"))?;
        let out = req(out, "out")?;
        want_float(&x, "self")?;
        if !FLOATS.contains(&dtype) {
            return Err(bad(format!("dtype {} (NOT EMULATED or unsupported)", dt_name(dtype))));
        }
        if out.dtype != dtype {
            return Err(bad(format!(
                "out dtype {} != dtype argument {}",
                dt_name(out.dtype),
                dt_name(dtype)
            )));
        }
        let (reduce, want) = reduced(&x, &dims, keep, false)?;
        want_dims(&out, &want, "out (reduced shape)")?;
        Ok(Prim::ReduceSum { x, reduce, out })
    }

    /// aclnnCumsum phase one ([HA canncommercial/800 aclnnCumsum.md]; gitcode cann/ops-math
    /// math/cumsum/docs/aclnnCumsum.md):
    /// - self, out required (161001);
    /// - self FLOAT / FLOAT16 / BFLOAT16 / INT32 / INT64; dtype "需与输出张量out的数据类型一致", out
    ///   of the same set (NOT EMULATED: DOUBLE, the 8/16-bit integers, COMPLEX); self "数据类型需要能
    ///   转换成out的数据类型": a floating self into an integer out is refused (161002);
    /// - dim in `[-self.dim(), self.dim()-1]`; out's shape = self's (161002).
    pub fn cumsum(x: Option<Desc>, dim: i64, dtype: sys::aclDataType, out: Option<Desc>) -> Result<Prim, Fail> {
        let (x, out) = (req(x, "self")?, req(out, "out")?);
        let set = [
            sys::ACL_FLOAT,
            sys::ACL_FLOAT16,
            sys::ACL_BF16,
            sys::ACL_INT32,
            sys::ACL_INT64,
        ];
        super::want_dt(&x, &set, "self")?;
        super::want_dt(&out, &set, "out")?;
        if out.dtype != dtype {
            return Err(bad(format!(
                "out dtype {} != dtype argument {}",
                dt_name(out.dtype),
                dt_name(dtype)
            )));
        }
        if FLOATS.contains(&x.dtype) && !FLOATS.contains(&out.dtype) {
            return Err(bad(format!(
                "self {} does not convert to out {}",
                dt_name(x.dtype),
                dt_name(out.dtype)
            )));
        }
        let dim = axis(dim, x.dims.len(), "dim")?;
        want_dims(&out, &x.dims, "out (shape of self)")?;
        Ok(Prim::Cumsum { x, dim, out })
    }
}

/// The axes a reduction names (flags per axis of `x`) and the out shape it implies: each entry in
/// `[-rank, rank-1]`, none repeated, the list not empty (reduce-all is UNDOCUMENTED for the pages
/// that take a list: refused), and with `no_empty_axis` no axis of size 0 (Amax/Amin's "dim指定的轴
/// 为空轴"); reduced axes dropped, or kept as 1 with `keep` (161002 for each).
fn reduced(x: &Desc, dims: &[i64], keep: bool, no_empty_axis: bool) -> Result<(Vec<bool>, Vec<i64>), Fail> {
    if dims.is_empty() {
        return Err(bad("the dim list is empty (reduce-all is UNDOCUMENTED, refused)"));
    }
    let mut reduce = vec![false; x.dims.len()];
    for &d in dims {
        let a = axis(d, x.dims.len(), "dim entry")?;
        if reduce[a] {
            return Err(bad(format!("dims {dims:?} repeat axis {a}")));
        }
        if no_empty_axis && x.dims[a] == 0 {
            return Err(bad(format!("dim {d} names an empty axis")));
        }
        reduce[a] = true;
    }
    let want = x
        .dims
        .iter()
        .zip(&reduce)
        .filter_map(|(&n, &r)| match (r, keep) {
            (false, _) => Some(n),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    Ok((reduce, want))
}

/// The multi-indices of the lines along `dim`: every index of `dims` with `idx[dim] = 0`.
fn lines(dims: &[i64], dim: usize, mut f: impl FnMut(&mut Vec<i64>)) {
    let mut outer = dims.to_vec();
    outer[dim] = 1;
    for_each(&outer, |idx| f(&mut idx.to_vec()));
}

/// `out = e^(x - max) / Σ e^(x - max)` along `dim` ([HA aclnnSoftmax.md] formula `e^x_i / Σ e^x_j`;
/// the max shift is exact algebra and keeps f32 finite), in f32, rounded once.
pub(super) fn run_softmax(x: &HostTensor, out: &mut HostTensor, dim: usize) {
    let n = x.d.dims[dim];
    lines(&x.d.dims.clone(), dim, |idx| {
        let mut vals = Vec::with_capacity(n as usize);
        for j in 0..n {
            idx[dim] = j;
            vals.push(x.get(idx));
        }
        let m = vals.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = vals.iter().map(|v| (v - m).exp()).collect();
        let s: f32 = e.iter().sum();
        for (j, v) in e.iter().enumerate() {
            idx[dim] = j as i64;
            out.set(idx, v / s);
        }
    });
}

/// `out[kept] = Σ x[...]` over the reduced axes, accumulated in f32 in row-major order and
/// rounded once to out's dtype.
pub(super) fn run_reduce_sum(x: &HostTensor, out: &mut HostTensor, reduce: &[bool]) {
    let kept: Vec<i64> =
        x.d.dims
            .iter()
            .zip(reduce)
            .map(|(&n, &r)| if r { 1 } else { n })
            .collect();
    let out_rank = out.d.dims.len();
    for_each(&kept, |k| {
        let inner: Vec<i64> =
            x.d.dims
                .iter()
                .zip(reduce)
                .map(|(&n, &r)| if r { n } else { 1 })
                .collect();
        let mut s = 0f32;
        for_each(&inner, |r| {
            let full: Vec<i64> = k.iter().zip(r).map(|(a, b)| a + b).collect();
            s += x.get(&full);
        });
        // out's index: the kept axes (with 0 at reduced ones when keepDims).
        let oidx: Vec<i64> = if out_rank == k.len() {
            k.to_vec()
        } else {
            k.iter().zip(reduce).filter(|(_, &r)| !r).map(|(v, _)| *v).collect()
        };
        out.set(&oidx, s);
    });
}

/// `y_i = x_1 + ... + x_i` along `dim` ([HA aclnnCumsum.md] formula): floating accumulation in f32
/// rounded once per output element; integer accumulation exact in i64. An integer sum that does not
/// fit out's type is UNDOCUMENTED (hardware wraps or saturates): 561000 at launch.
pub(super) fn run_cumsum(x: &HostTensor, out: &mut HostTensor, dim: usize) -> Result<(), Fail> {
    let n = x.d.dims[dim];
    let int_out = !FLOATS.contains(&out.d.dtype);
    let int_in = !FLOATS.contains(&x.d.dtype);
    let mut err = None;
    lines(&x.d.dims.clone(), dim, |idx| {
        let (mut sf, mut si) = (0f32, 0i64);
        for j in 0..n {
            idx[dim] = j;
            if int_out {
                si = match si.checked_add(x.get_int(idx)) {
                    Some(v) => v,
                    None => {
                        err = Some(inner("aclnnCumsum: INT64 overflow (UNDOCUMENTED)"));
                        return;
                    }
                };
                if out.d.dtype == sys::ACL_INT32 && i32::try_from(si).is_err() {
                    err = Some(inner(format!(
                        "aclnnCumsum: running sum {si} overflows INT32 (UNDOCUMENTED)"
                    )));
                    return;
                }
                out.set_int(idx, si);
            } else {
                sf += if int_in { x.get_int(idx) as f32 } else { x.get(idx) };
                out.set(idx, sf);
            }
        }
    });
    err.map_or(Ok(()), Err)
}

impl Prim {
    /// aclnnAmax / aclnnAmin phase one ([HA canncommercial/800 aclnnAmax.md], [HA canncommercial/800
    /// aclnnAmin.md]; return codes [HA Atlas200IDKA2 23.0.RC2 aclcppdevg_03_0206] (Amin) and
    /// aclcppdevg_03_0205 (Amax); [HA 850alpha002 aclnnAmax.md] "dim中的元素不能重复"):
    /// - self, dim, out required (161001: "self、dim或out是空指针");
    /// - self FLOAT / FLOAT16 / BFLOAT16 / INT32 / INT64 of rank 1..8 (NOT EMULATED: DOUBLE, INT8,
    ///   INT16, UINT8, BOOL); out "需要与self数据类型相同" (161002);
    /// - each dim in `[-self.dim(), self.dim()-1]`, no repeats, no empty axis ("dim指定的轴为空轴");
    ///   an empty dim list is UNDOCUMENTED (torch: reduce all) — refused (161002);
    /// - out = self's shape with the reduced axes removed, or kept as 1 with keepDim (161002).
    pub fn amax(
        max: bool,
        x: Option<Desc>,
        dims: Option<Vec<i64>>,
        keep: bool,
        out: Option<Desc>,
    ) -> Result<Prim, Fail> {
        let x = req(x, "self")?;
        let dims = dims.ok_or_else(|| super::null("dim"))?;
        let out = req(out, "out")?;
        super::want_dt(&x, &NUMERIC, "self")?;
        same_dtype(&x, &out, "out")?;
        if x.dims.is_empty() || x.dims.len() > 8 {
            return Err(bad(format!("self {} must have rank 1..8", x.show())));
        }
        let (reduce, want) = reduced(&x, &dims, keep, true)?;
        want_dims(&out, &want, "out (reduced shape)")?;
        Ok(Prim::Amax { max, x, reduce, out })
    }
}

/// aclnnAmax / aclnnAmin launch: the largest (smallest) element over the reduced axes, copied
/// exactly (no arithmetic). A NaN: whether it propagates (torch) is UNDOCUMENTED → 561000.
pub(super) fn run_amax(x: &HostTensor, out: &mut HostTensor, reduce: &[bool], max: bool) -> Result<(), Fail> {
    let float = FLOATS.contains(&x.d.dtype);
    let kept: Vec<i64> =
        x.d.dims
            .iter()
            .zip(reduce)
            .map(|(&n, &r)| if r { 1 } else { n })
            .collect();
    let inner_dims: Vec<i64> =
        x.d.dims
            .iter()
            .zip(reduce)
            .map(|(&n, &r)| if r { n } else { 1 })
            .collect();
    let out_rank = out.d.dims.len();
    let mut err = None;
    for_each(&kept, |k| {
        if err.is_some() {
            return;
        }
        let mut best: Option<(f64, i64, Vec<i64>)> = None;
        for_each(&inner_dims, |r| {
            let full: Vec<i64> = k.iter().zip(r).map(|(a, b)| a + b).collect();
            let (f, i) = if float {
                (x.get_pos(x.d.pos(&full)), 0)
            } else {
                (0.0, x.get_int(&full))
            };
            if f.is_nan() {
                err = Some(inner(format!("NaN at {full:?} (propagation UNDOCUMENTED, refused)")));
                return;
            }
            let better = match &best {
                None => true,
                Some((bf, bi, _)) => {
                    if float {
                        if max {
                            f > *bf
                        } else {
                            f < *bf
                        }
                    } else if max {
                        i > *bi
                    } else {
                        i < *bi
                    }
                }
            };
            if better {
                best = Some((f, i, full));
            }
        });
        if let Some((_, _, at)) = best {
            let v = x.raw(x.d.pos(&at)).to_vec();
            let oidx: Vec<i64> = if out_rank == k.len() {
                k.to_vec()
            } else {
                k.iter().zip(reduce).filter(|(_, &r)| !r).map(|(v, _)| *v).collect()
            };
            let p = out.d.pos(&oidx);
            out.set_raw(p, &v);
        }
    });
    err.map_or(Ok(()), Err)
}
