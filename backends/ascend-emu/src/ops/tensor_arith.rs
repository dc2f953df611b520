//! Tensor-tensor arithmetic with a scalar alpha: aclnnAdd / aclnnInplaceAdd and aclnnSub /
//! aclnnInplaceSub (third group of issue-13 primitives). Sources in RULES.md §Primitives, third
//! group (AB*).

use crate::sys;
use crate::tensor::{dt_name, Desc, HostTensor};

use super::prim::{bidx, broadcast, for_each, req_scalar, Prim, Scalar, NUMERIC, NUM_SCALARS};
use super::select::promote;
use super::{bad, inner, req, want_dims, want_dt, Fail, FLOATS};

impl Prim {
    /// aclnnAdd / aclnnInplaceAdd ([HA canncommercial/800 aclnnAdd&aclnnInplaceAdd.md]; [OM
    /// math/add/docs/aclnnAdd&aclnnInplaceAdd.md]) and aclnnSub / aclnnInplaceSub ([HA
    /// canncommercial/800 aclnnSub&aclnnInplaceSub.md]; [OM math/sub/docs/aclnnSub&aclnnInplaceSub.md])
    /// phase one:
    /// - self (selfRef), other, alpha, out required (161001);
    /// - self, other FLOAT / FLOAT16 / BFLOAT16 / INT32 / INT64 (PR3: DOUBLE, INT16, INT8, UINT8,
    ///   BOOL, COMPLEX NOT EMULATED) with the promoted type of PM1 ("数据类型推导规则");
    /// - alpha a numeric scalar that "需要可转换成self与other推导后的数据类型": a floating alpha with
    ///   an integer promoted type is refused (161002);
    /// - self and other broadcast, out has the broadcast shape and exactly the promoted type (the
    ///   page's "推导之后可转换的数据类型" names no conversion list: strict) (161002); ranks ≤ 8;
    /// - in place, selfRef is the output: the broadcast shape must be selfRef's and the promoted type
    ///   selfRef's dtype (161002).
    pub fn tensor_arith(
        sub: bool,
        inplace: bool,
        a: Option<Desc>,
        b: Option<Desc>,
        alpha: Option<Scalar>,
        out: Option<Desc>,
    ) -> Result<Prim, Fail> {
        let a = req(a, if inplace { "selfRef" } else { "self" })?;
        let b = req(b, "other")?;
        let alpha = req_scalar(alpha, "alpha")?;
        let out = req(out, "out")?;
        want_dt(&a, &NUMERIC, "self")?;
        want_dt(&b, &NUMERIC, "other")?;
        if !NUM_SCALARS.contains(&alpha.dtype) {
            return Err(bad(format!(
                "alpha: scalar dtype {} (NOT EMULATED or not numeric)",
                dt_name(alpha.dtype)
            )));
        }
        let t = promote(a.dtype, b.dtype).ok_or_else(|| bad("promotion NOT EMULATED"))?;
        if !FLOATS.contains(&t) && alpha.is_float() {
            return Err(bad(format!(
                "floating alpha does not convert to the promoted integer type {}",
                dt_name(t)
            )));
        }
        for (d, w) in [(&a, "self"), (&b, "other"), (&out, "out")] {
            if d.dims.len() > 8 {
                return Err(bad(format!("{w} {} has more than 8 dims", d.show())));
            }
        }
        if out.dtype != t {
            return Err(bad(format!(
                "out dtype {} is not the promoted type {}{}",
                dt_name(out.dtype),
                dt_name(t),
                if inplace {
                    " (in place: selfRef must hold the promoted type)"
                } else {
                    ""
                }
            )));
        }
        let Some(shape) = broadcast(&a.dims, &b.dims) else {
            return Err(bad(format!(
                "self {} and other {} do not broadcast",
                a.show(),
                b.show()
            )));
        };
        want_dims(&out, &shape, "out (broadcast shape of self and other)")?;
        Ok(Prim::TensorArith {
            sub,
            inplace,
            a,
            b,
            alpha,
            out,
        })
    }
}

/// aclnnAdd / aclnnSub launch: `out_i = self_i ± alpha × other_i` over the broadcast shape.
/// Floating promoted type: both operands read as f32, `alpha × other` formed in f32, added in f32,
/// rounded once to out's dtype (PR2). Integer: exact in i64; a result outside out's type
/// (overflow: wrap or saturate is UNDOCUMENTED) → 561000.
pub(super) fn run_tensor_arith(
    a: &HostTensor,
    b: &HostTensor,
    out: &mut HostTensor,
    sub: bool,
    alpha: &Scalar,
) -> Result<(), Fail> {
    let float = FLOATS.contains(&out.d.dtype);
    let name = if sub { "aclnnSub" } else { "aclnnAdd" };
    let mut err = None;
    for_each(&out.d.dims.clone(), |idx| {
        if err.is_some() {
            return;
        }
        let (ia, ib) = (bidx(idx, &a.d.dims), bidx(idx, &b.d.dims));
        if float {
            let k = alpha.f as f32 * b.get(&ib);
            let v = a.get(&ia);
            out.set(idx, if sub { v - k } else { v + k });
        } else {
            let r = alpha.i.checked_mul(b.get_int(&ib)).and_then(|k| {
                let v = a.get_int(&ia);
                if sub {
                    v.checked_sub(k)
                } else {
                    v.checked_add(k)
                }
            });
            match r {
                Some(r) if out.d.dtype == sys::ACL_INT64 || i32::try_from(r).is_ok() => out.set_int(idx, r),
                _ => err = Some(inner(format!("{name}: integer overflow at {idx:?} (UNDOCUMENTED)"))),
            }
        }
    });
    err.map_or(Ok(()), Err)
}
