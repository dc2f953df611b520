//! Third group of issue-13 primitives, masks and selection: aclnnIsFinite, aclnnLogicalNot /
//! aclnnInplaceLogicalNot, aclnnSWhere; and the dtype promotion ("互推导关系") that SWhere and
//! aclnnAdd / aclnnSub share. Written from the CANN pages only; sources in RULES.md §Primitives,
//! third group (IF*, LN*, SW*, PM*).

use crate::sys;
use crate::tensor::{dt_name, Desc, HostTensor};

use super::prim::{bidx, broadcast, for_each, Prim, NUMERIC};
use super::{bad, req, want_dims, want_dt, Fail, FLOATS};

/// Tensor types IsFinite / LogicalNot / SWhere emulate: NUMERIC plus BOOL, INT8, UINT8 (the pages'
/// DOUBLE, INT16, UINT16/32/64 and COMPLEX are NOT EMULATED, PR3).
pub(super) const MASKABLE: [sys::aclDataType; 8] = [
    sys::ACL_FLOAT,
    sys::ACL_FLOAT16,
    sys::ACL_BF16,
    sys::ACL_INT32,
    sys::ACL_INT64,
    sys::ACL_INT8,
    sys::ACL_UINT8,
    sys::ACL_BOOL,
];

/// Rank limit of these pages ("shape的维度不高于8维", "数据维度不支持8维以上").
fn rank8(t: &Desc, what: &str) -> Result<(), Fail> {
    if t.dims.len() > 8 {
        return Err(bad(format!("{what} {} has more than 8 dims", t.show())));
    }
    Ok(())
}

/// The promoted type of two tensor types, for the emulated set FLOAT / FLOAT16 / BFLOAT16 / INT32 /
/// INT64 / BOOL (RULES.md PM1, the "互推导关系" table the Add, Sub and SWhere pages point to): equal
/// types keep their type; BOOL yields to the other; INT32 with INT64 is INT64; an integer with a
/// floating type is the floating type; FLOAT16 with BFLOAT16 is FLOAT; FLOAT with either 16-bit
/// float is FLOAT. `None` for a pair outside that set (NOT EMULATED: INT8 / UINT8 mixes, DOUBLE).
pub(super) fn promote(a: sys::aclDataType, b: sys::aclDataType) -> Option<sys::aclDataType> {
    let known = |t| NUMERIC.contains(&t) || t == sys::ACL_BOOL;
    if a == b {
        return Some(a);
    }
    if !known(a) || !known(b) {
        return None;
    }
    if a == sys::ACL_BOOL {
        return Some(b);
    }
    if b == sys::ACL_BOOL {
        return Some(a);
    }
    let (fa, fb) = (FLOATS.contains(&a), FLOATS.contains(&b));
    Some(match (fa, fb) {
        (false, false) => sys::ACL_INT64, // INT32 with INT64
        (true, false) => a,
        (false, true) => b,
        // two different floating types: FLOAT16 with BFLOAT16, or either with FLOAT
        (true, true) => sys::ACL_FLOAT,
    })
}

impl Prim {
    /// aclnnIsFinite phase one ([HA 850alpha002 aclnnIsFinite.md]):
    /// - self, out required (161001);
    /// - self of the emulated types (MASKABLE; NOT EMULATED: DOUBLE, INT16), rank ≤ 8; out BOOL of
    ///   self's shape ("数据类型支持BOOL", "shape与self一致") (161002).
    pub fn is_finite(x: Option<Desc>, out: Option<Desc>) -> Result<Prim, Fail> {
        let (x, out) = (req(x, "self")?, req(out, "out")?);
        want_dt(&x, &MASKABLE, "self")?;
        want_dt(&out, &[sys::ACL_BOOL], "out")?;
        rank8(&x, "self")?;
        want_dims(&out, &x.dims, "out (shape of self)")?;
        Ok(Prim::IsFinite { x, out })
    }

    /// aclnnLogicalNot / aclnnInplaceLogicalNot phase one ([HA canncommercial/800
    /// aclnnLogicalNot&aclnnInplaceLogicalNot.md]):
    /// - self (selfRef), out required (161001);
    /// - self and out of the emulated types (MASKABLE; the page lists both separately: "如果未指定
    ///   输出类型,输出Tensor是bool类型" — out's own dtype is honoured), out of self's shape (161002);
    ///   in place, selfRef is the output.
    pub fn logical_not(inplace: bool, x: Option<Desc>, out: Option<Desc>) -> Result<Prim, Fail> {
        let (x, out) = (req(x, if inplace { "selfRef" } else { "self" })?, req(out, "out")?);
        want_dt(&x, &MASKABLE, "self")?;
        want_dt(&out, &MASKABLE, "out")?;
        rank8(&x, "self")?;
        want_dims(&out, &x.dims, "out (shape of self)")?;
        Ok(Prim::LogicalNot { inplace, x, out })
    }

    /// aclnnSWhere phase one ([HA 83RC1 aclnnSWhere.md]; [HA 80RC3alpha003 aclnnSWhere.md]):
    /// - condition, self, other, out required (161001);
    /// - condition BOOL / UINT8; self, other of FLOAT / FLOAT16 / BFLOAT16 / INT32 / INT64 / BOOL
    ///   with a promoted type (PM1; other pairs NOT EMULATED); out of exactly the promoted type (the
    ///   page allows a type the result converts to without listing the conversions: strict) (161002);
    /// - every rank ≤ 8; the three shapes broadcast; out has the broadcast shape (161002).
    pub fn s_where(cond: Option<Desc>, a: Option<Desc>, b: Option<Desc>, out: Option<Desc>) -> Result<Prim, Fail> {
        let (cond, a, b, out) = (
            req(cond, "condition")?,
            req(a, "self")?,
            req(b, "other")?,
            req(out, "out")?,
        );
        want_dt(&cond, &[sys::ACL_BOOL, sys::ACL_UINT8], "condition")?;
        let Some(t) = promote(a.dtype, b.dtype) else {
            return Err(bad(format!(
                "self {} and other {}: promotion NOT EMULATED",
                a.show(),
                b.show()
            )));
        };
        if !(NUMERIC.contains(&t) || t == sys::ACL_BOOL) {
            return Err(bad(format!("self / other dtype {} NOT EMULATED", dt_name(t))));
        }
        if out.dtype != t {
            return Err(bad(format!(
                "out dtype {} is not the promoted type {}",
                dt_name(out.dtype),
                dt_name(t)
            )));
        }
        for (d, w) in [(&cond, "condition"), (&a, "self"), (&b, "other"), (&out, "out")] {
            rank8(d, w)?;
        }
        let shape = broadcast(&a.dims, &b.dims)
            .and_then(|s| broadcast(&s, &cond.dims))
            .ok_or_else(|| {
                bad(format!(
                    "condition {}, self {} and other {} do not broadcast",
                    cond.show(),
                    a.show(),
                    b.show()
                ))
            })?;
        want_dims(&out, &shape, "out (broadcast shape)")?;
        Ok(Prim::SWhere { cond, a, b, out })
    }
}

/// Whether an element is "not zero" ("零视为False,非零视为True"; NaN is not zero).
fn truthy(x: &HostTensor, idx: &[i64]) -> bool {
    if FLOATS.contains(&x.d.dtype) {
        x.get_pos(x.d.pos(idx)) != 0.0
    } else {
        x.get_int(idx) != 0
    }
}

/// aclnnIsFinite launch: `out_i = (self_i != ±inf) and (self_i != nan)`; integer and BOOL elements
/// are always finite.
pub(super) fn run_is_finite(x: &HostTensor, out: &mut HostTensor) {
    let float = FLOATS.contains(&x.d.dtype);
    for_each(&x.d.dims.clone(), |idx| {
        let fin = !float || x.get_pos(x.d.pos(idx)).is_finite();
        out.set_pos(out.d.pos(idx), fin as u8 as f64);
    });
}

/// aclnnLogicalNot launch: `out_i = !(self_i != 0)` as 1 / 0 in out's dtype (NaN counts as
/// non-zero, so its negation is 0). In place the input is read before it is overwritten (element
/// by element: each element depends on itself only).
pub(super) fn run_logical_not(x: &HostTensor, out: &mut HostTensor) {
    for_each(&x.d.dims.clone(), |idx| {
        let v = !truthy(x, idx);
        out.set_pos(out.d.pos(idx), v as u8 as f64);
    });
}

/// One element of `src` converted to `out`'s (promoted) type at `idx` of out: bytes copied when the
/// types agree, integers exactly, floats rounded once.
pub(super) fn put_converted(src: &HostTensor, sidx: &[i64], out: &mut HostTensor, idx: &[i64]) {
    if src.d.dtype == out.d.dtype {
        let v = src.raw(src.d.pos(sidx)).to_vec();
        let p = out.d.pos(idx);
        out.set_raw(p, &v);
    } else if FLOATS.contains(&out.d.dtype) {
        let v = src.get_pos(src.d.pos(sidx));
        out.set_pos(out.d.pos(idx), v);
    } else {
        out.set_int(idx, src.get_int(sidx));
    }
}

/// aclnnSWhere launch: `out_i = self_i if condition_i else other_i` over the broadcast shape, the
/// chosen element converted to out's type.
pub(super) fn run_s_where(cond: &HostTensor, a: &HostTensor, b: &HostTensor, out: &mut HostTensor) {
    for_each(&out.d.dims.clone(), |idx| {
        let c = cond.get_int(&bidx(idx, &cond.d.dims)) != 0;
        let src = if c { a } else { b };
        put_converted(src, &bidx(idx, &src.d.dims), out, idx);
    });
}
