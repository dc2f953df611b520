//! Index primitives: aclnnGather (torch.gather semantics), aclnnIndexSelect (any dim),
//! aclnnScatter / aclnnInplaceScatter. Sources in RULES.md §Primitives (GA*, IS*, ST*).

use crate::sys;
use crate::tensor::{Desc, HostTensor};

use super::prim::{axis, for_each, same_dtype, Prim, NUMERIC};
use super::{bad, inner, req, Fail};

impl Prim {
    /// aclnnGather phase one ([HA canncommercial/800 aclnnGather.md], formula and examples; parameter
    /// rules [HA Atlas200IDKA2 23.0.RC2 aclcppdevg_03_0298]):
    /// - self, index, out required (161001);
    /// - self FLOAT / FLOAT16 / BFLOAT16 / INT32 / INT64 / INT16 / INT8 / UINT8 / BOOL; index INT32 /
    ///   INT64; out "数据类型需要和self的数据类型一致" (161002);
    /// - dim in `[-self.dim, self.dim-1]`; index has self's rank and `index.size(d) <= self.size(d)`
    ///   for `d != dim`; out has index's shape (torch.gather, which the formula describes; 161002).
    pub fn gather(x: Option<Desc>, dim: i64, index: Option<Desc>, out: Option<Desc>) -> Result<Prim, Fail> {
        let (x, index, out) = (req(x, "self")?, req(index, "index")?, req(out, "out")?);
        super::want_dt(
            &x,
            &[
                sys::ACL_FLOAT,
                sys::ACL_FLOAT16,
                sys::ACL_BF16,
                sys::ACL_INT32,
                sys::ACL_INT64,
                sys::ACL_INT16,
                sys::ACL_INT8,
                sys::ACL_UINT8,
                sys::ACL_BOOL,
            ],
            "self",
        )?;
        super::want_dt(&index, &[sys::ACL_INT32, sys::ACL_INT64], "index")?;
        same_dtype(&x, &out, "out")?;
        let dim = axis(dim, x.dims.len(), "dim")?;
        if index.dims.len() != x.dims.len() {
            return Err(bad(format!(
                "index {} must have self's rank {}",
                index.show(),
                x.dims.len()
            )));
        }
        for (d, (&i, &s)) in index.dims.iter().zip(&x.dims).enumerate() {
            if d != dim && i > s {
                return Err(bad(format!(
                    "index size {i} > self size {s} at dim {d} (only the gather dim may exceed)"
                )));
            }
        }
        super::want_dims(&out, &index.dims, "out (shape of index)")?;
        Ok(Prim::Gather { x, dim, index, out })
    }
}

/// `out[i] = self[i with i[dim] = index[i]]`, copied bytewise. An index outside
/// `[0, self.size(dim))` (negative included: the page documents no wrap-around) → 561000 at launch.
pub(super) fn run_gather(x: &HostTensor, index: &HostTensor, out: &mut HostTensor, dim: usize) -> Result<(), Fail> {
    let n = x.d.dims[dim];
    let mut err = None;
    for_each(&index.d.dims.clone(), |idx| {
        if err.is_some() {
            return;
        }
        let k = index.get_int(idx);
        if k < 0 || k >= n {
            err = Some(inner(format!("aclnnGather: index {k} at {idx:?} outside [0, {n})")));
            return;
        }
        let mut src = idx.to_vec();
        src[dim] = k;
        let v = x.raw(x.d.pos(&src)).to_vec();
        let p = out.d.pos(idx);
        out.set_raw(p, &v);
    });
    err.map_or(Ok(()), Err)
}

impl Prim {
    /// aclnnScatter / aclnnInplaceScatter phase one ([HA canncommercial/800
    /// aclnnScatter&aclnnInplaceScatter.md]; [HA 81RC1alpha001] and [HA 850alpha002] pages of the same
    /// name):
    /// - self (selfRef), index, src, out required (161001);
    /// - self FLOAT / FLOAT16 / BFLOAT16 / INT32 / INT64, "self的数据类型需要与src一致"; index INT32 /
    ///   INT64; out of self's dtype and shape (161002);
    /// - "self、index和src的维度数量必须相同", rank 1..8 (0-D NOT EMULATED); `index.size(d) <=
    ///   src.size(d)` for every d, `index.size(d) <= self.size(d)` for `d != dim`; dim in
    ///   `[-self.dim(), self.dim()-1]` (161002);
    /// - reduce 0 (replace), 1 (add), 2 (multiply) — the page's example; any other value 161002.
    pub fn scatter(
        inplace: bool,
        x: Option<Desc>,
        dim: i64,
        index: Option<Desc>,
        src: Option<Desc>,
        reduce: i64,
        out: Option<Desc>,
    ) -> Result<Prim, Fail> {
        let (x, index, src, out) = (
            req(x, "self")?,
            req(index, "index")?,
            req(src, "src")?,
            req(out, "out")?,
        );
        super::want_dt(&x, &NUMERIC, "self")?;
        same_dtype(&x, &src, "src")?;
        same_dtype(&x, &out, "out")?;
        super::want_dt(&index, &[sys::ACL_INT32, sys::ACL_INT64], "index")?;
        let r = x.dims.len();
        if r == 0 || r > 8 || index.dims.len() != r || src.dims.len() != r {
            return Err(bad(format!(
                "self {}, index {} and src {} must have one rank in 1..8",
                x.show(),
                index.show(),
                src.show()
            )));
        }
        let dim = axis(dim, r, "dim")?;
        for d in 0..r {
            if index.dims[d] > src.dims[d] || (d != dim && index.dims[d] > x.dims[d]) {
                return Err(bad(format!(
                    "index {} exceeds src {} or self {} at dim {d}",
                    index.show(),
                    src.show(),
                    x.show()
                )));
            }
        }
        super::want_dims(&out, &x.dims, "out (shape of self)")?;
        if !(0..=2).contains(&reduce) {
            return Err(bad(format!("reduce {reduce} (0 replace, 1 add, 2 multiply)")));
        }
        Ok(Prim::Scatter {
            inplace,
            x,
            dim,
            index,
            src,
            reduce,
            out,
        })
    }
}

impl Prim {
    /// aclnnScatterAdd phase one ([HA canncommercial/800 aclnnScatterAdd.md]; [HA 82RC1alpha002
    /// aclnnScatterAdd.md] update rule `self[i][index[i][j][k]][k] += src[i][j][k]`): the checks of
    /// [`Prim::scatter`] (ST1-ST2: the page lists the same three requirements — equal ranks,
    /// `index.size(d) <= src.size(d)`, `index.size(d) <= self.size(d)` for `d != dim` — and dim in
    /// `[-self.dim(), self.dim() - 1]`), with reduce fixed to add.
    pub fn scatter_add(
        x: Option<Desc>,
        dim: i64,
        index: Option<Desc>,
        src: Option<Desc>,
        out: Option<Desc>,
    ) -> Result<Prim, Fail> {
        match Prim::scatter(false, x, dim, index, src, 1, out)? {
            Prim::Scatter {
                x,
                dim,
                index,
                src,
                out,
                ..
            } => Ok(Prim::ScatterAdd {
                x,
                dim,
                index,
                src,
                out,
            }),
            _ => Err(bad("internal: scatter built another primitive")),
        }
    }
}

/// aclnnScatter launch: out = self, then for every index element i: `out[i with i[dim] =
/// index[i]] (=, +=, *=) src[i]`, in row-major order of index. An index outside `[0,
/// self.size(dim))` → 561000 (the page's requirement, a value the device does not check). With
/// reduce 0, two index elements naming one target leave the result to the device's write order,
/// which the page does not give: UNDOCUMENTED, refused (561000). Add / multiply: f32 (exact i64
/// for integers), accumulated in index order and rounded once per target.
pub(super) fn run_scatter(
    ins: &[HostTensor],
    out: &mut HostTensor,
    dim: usize,
    reduce: i64,
    name: &str,
) -> Result<(), Fail> {
    let (x, index, src) = (&ins[0], &ins[1], &ins[2]);
    let float = super::FLOATS.contains(&x.d.dtype);
    let n = x.d.dims[dim];
    // out starts as self (in place this is the same storage; copying is then a no-op).
    for_each(&x.d.dims.clone(), |idx| {
        let v = x.raw(x.d.pos(idx)).to_vec();
        let p = out.d.pos(idx);
        out.set_raw(p, &v);
    });
    let mut acc_f: std::collections::HashMap<Vec<i64>, f32> = std::collections::HashMap::new();
    let mut acc_i: std::collections::HashMap<Vec<i64>, i64> = std::collections::HashMap::new();
    let mut err = None;
    for_each(&index.d.dims.clone(), |idx| {
        if err.is_some() {
            return;
        }
        let k = index.get_int(idx);
        if k < 0 || k >= n {
            err = Some(inner(format!("{name}: index {k} at {idx:?} outside [0, {n})")));
            return;
        }
        let mut t = idx.to_vec();
        t[dim] = k;
        let first = !acc_f.contains_key(&t) && !acc_i.contains_key(&t);
        if reduce == 0 && !first {
            err = Some(inner(format!(
                "{name}: two index elements write {t:?} with reduce 0 (which one wins is UNDOCUMENTED, refused)"
            )));
            return;
        }
        if float {
            let base = if first { x.get(&t) } else { acc_f[&t] };
            let s = src.get(idx);
            acc_f.insert(
                t,
                match reduce {
                    0 => s,
                    1 => base + s,
                    _ => base * s,
                },
            );
        } else {
            let base = if first { x.get_int(&t) } else { acc_i[&t] };
            let s = src.get_int(idx);
            let v = match reduce {
                0 => Some(s),
                1 => base.checked_add(s),
                _ => base.checked_mul(s),
            };
            match v {
                Some(v) if x.d.dtype == sys::ACL_INT64 || i32::try_from(v).is_ok() => {
                    acc_i.insert(t, v);
                }
                _ => err = Some(inner(format!("{name}: integer overflow at {t:?} (UNDOCUMENTED)"))),
            }
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    for (t, v) in acc_f {
        out.set(&t, v);
    }
    for (t, v) in acc_i {
        out.set_int(&t, v);
    }
    Ok(())
}

impl Prim {
    /// aclnnIndexSelect phase one ([HA canncommercial/800 aclnnIndexSelect.md] formula; parameters
    /// [HA Atlas200IDKA2 23.0.RC2 aclcppdevg_03_0326]):
    /// - self, index, out required (161001);
    /// - self of rank 1..8 ("维度不大于8"), any element type the emulator stores (NOT EMULATED:
    ///   COMPLEX); index INT32 / INT64, 1-D (the page also takes 0-D "当成是size为1的一维": NOT
    ///   EMULATED, E5); out of self's dtype (161002);
    /// - dim in `[-self.dim(), self.dim())`; out = self's shape with `out.size(dim) = index.size(0)`
    ///   (the formula `out[l][j][n] = self[l][index[j]][n]`) (161002).
    pub fn index_select(x: Option<Desc>, dim: i64, index: Option<Desc>, out: Option<Desc>) -> Result<Prim, Fail> {
        let (x, index, out) = (req(x, "self")?, req(index, "index")?, req(out, "out")?);
        if crate::tensor::elem_size(x.dtype).is_none() {
            return Err(bad(format!("self {}: dtype NOT EMULATED", x.show())));
        }
        if x.dims.is_empty() || x.dims.len() > 8 {
            return Err(bad(format!("self {} must have rank 1..8", x.show())));
        }
        super::want_dt(&index, &[sys::ACL_INT32, sys::ACL_INT64], "index")?;
        if index.dims.len() != 1 {
            return Err(bad(format!("index {} must be 1-D (0-D NOT EMULATED)", index.show())));
        }
        same_dtype(&x, &out, "out")?;
        let dim = axis(dim, x.dims.len(), "dim")?;
        let mut want = x.dims.clone();
        want[dim] = index.dims[0];
        super::want_dims(&out, &want, "out (self's shape, index's length at dim)")?;
        Ok(Prim::IndexSelect { x, dim, index, out })
    }
}

/// aclnnIndexSelect launch: `out[i] = self[i with i[dim] = index[i[dim]]]`, copied bytewise. An
/// index outside `[0, self.size(dim))` → 561000 ("不支持负索引"; out of range: E7).
pub(super) fn run_index_select(
    x: &HostTensor,
    index: &HostTensor,
    out: &mut HostTensor,
    dim: usize,
) -> Result<(), Fail> {
    let n = x.d.dims[dim];
    let mut err = None;
    for_each(&out.d.dims.clone(), |idx| {
        if err.is_some() {
            return;
        }
        let k = index.get_int(&[idx[dim]]);
        if k < 0 || k >= n {
            err = Some(inner(format!(
                "aclnnIndexSelect: index {k} at {} outside [0, {n})",
                idx[dim]
            )));
            return;
        }
        let mut src = idx.to_vec();
        src[dim] = k;
        let v = x.raw(x.d.pos(&src)).to_vec();
        let p = out.d.pos(idx);
        out.set_raw(p, &v);
    });
    err.map_or(Ok(()), Err)
}
