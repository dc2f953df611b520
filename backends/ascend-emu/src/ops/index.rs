//! Index primitives: aclnnGather (torch.gather semantics). Sources in RULES.md §Primitives (GA*).

use crate::sys;
use crate::tensor::{Desc, HostTensor};

use super::prim::{axis, for_each, same_dtype, Prim};
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
