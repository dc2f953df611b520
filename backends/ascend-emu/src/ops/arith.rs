//! Scalar-driven arithmetic primitives: aclnnArange, aclnnFloorDivides / aclnnInplaceFloorDivides,
//! aclnnAdds / aclnnInplaceAdds. Sources in RULES.md §Primitives (AR*, FD*, AD*).

use crate::sys;
use crate::tensor::{dt_name, Desc, HostTensor};

use super::prim::{for_each, req_scalar, Prim, Scalar, NUMERIC, NUM_SCALARS};
use super::{bad, inner, req, want_dims, Fail, FLOATS};

fn range_scalar(s: Option<Scalar>, what: &str) -> Result<Scalar, Fail> {
    let s = req_scalar(s, what)?;
    if !NUM_SCALARS.contains(&s.dtype) {
        return Err(bad(format!(
            "{what}: scalar dtype {} (BOOL ranges are NOT EMULATED)",
            dt_name(s.dtype)
        )));
    }
    if s.is_float() && !s.f.is_finite() {
        return Err(bad(format!("{what}: {} is not finite", s.f)));
    }
    Ok(s)
}

impl Prim {
    /// aclnnArange phase one ([HA canncommercial/800 aclnnArange.md]; [OM
    /// math/range/docs/aclnnArange.md] and `aclnnArange_en.md`, return codes and example):
    /// - start, end, step, out required (161001);
    /// - scalars FLOAT16 / FLOAT / DOUBLE / UINT8 / INT8 / INT16 / INT32 / INT64 / BFLOAT16 (NOT
    ///   EMULATED: BOOL); out FLOAT16 / FLOAT / INT32 / INT64 / BFLOAT16 (NOT EMULATED: DOUBLE) (161002);
    /// - step != 0; step > 0 needs start < end and step < 0 needs start > end (161002: "do not
    ///   satisfy the range operation logic"; an empty range is therefore refused);
    /// - out 1-D of `ceil((end - start) / step)` elements, the size the page's example computes;
    ///   "when the input data type is float, use float to calculate the output size": f32 when a
    ///   scalar is a 16/32-bit float, f64 with a DOUBLE one, exact with integer scalars (161002);
    /// - an integer out with a fractional start or step: UNDOCUMENTED (truncation?), refused (161002).
    pub fn arange(
        start: Option<Scalar>,
        end: Option<Scalar>,
        step: Option<Scalar>,
        out: Option<Desc>,
    ) -> Result<Prim, Fail> {
        let start = range_scalar(start, "start")?;
        let end = range_scalar(end, "end")?;
        let step = range_scalar(step, "step")?;
        let out = req(out, "out")?;
        super::want_dt(
            &out,
            &[
                sys::ACL_FLOAT,
                sys::ACL_FLOAT16,
                sys::ACL_BF16,
                sys::ACL_INT32,
                sys::ACL_INT64,
            ],
            "out",
        )?;
        let (a, b, s) = (start.f, end.f, step.f);
        if s == 0.0 {
            return Err(bad("step is 0"));
        }
        if (s > 0.0 && a >= b) || (s < 0.0 && a <= b) {
            return Err(bad(format!(
                "start {a}, end {b}, step {s} do not satisfy the range logic (step > 0 needs start < end, step < 0 start > end)"
            )));
        }
        let ints = [start, end, step].iter().all(|v| !v.is_float());
        let n: i64 = if ints {
            let (a, b, s) = (start.i as i128, end.i as i128, step.i as i128);
            // ceil((b - a) / s) with (b - a) and s of the same sign.
            let (num, den) = if s > 0 { (b - a, s) } else { (a - b, -s) };
            ((num + den - 1) / den) as i64
        } else if [start, end, step].iter().any(|v| v.dtype == sys::ACL_DOUBLE) {
            ((b - a) / s).ceil() as i64
        } else {
            ((b as f32 - a as f32) / s as f32).ceil() as i64
        };
        if !FLOATS.contains(&out.dtype) && (start.f.fract() != 0.0 || step.f.fract() != 0.0) {
            return Err(bad(format!(
                "integer out {} with a fractional start {a} or step {s} (UNDOCUMENTED, refused)",
                out.show()
            )));
        }
        want_dims(&out, &[n], "out (1-D, ceil((end - start) / step) elements)")?;
        let last = a + (n - 1) as f64 * s;
        if out.dtype == sys::ACL_INT32 && [a, last].iter().any(|v| *v < i32::MIN as f64 || *v > i32::MAX as f64) {
            return Err(bad(format!(
                "values {a}..{last} do not fit INT32 out (UNDOCUMENTED, refused)"
            )));
        }
        Ok(Prim::Arange {
            start: start.f,
            step: s,
            istart: start.i,
            istep: step.i,
            ints,
            out,
        })
    }
}

/// aclnnArange launch: `out_i = start + i·step` (the page's recurrence `out_{i+1} = out_i + step`
/// in closed form: no accumulated rounding), exact for integers, otherwise evaluated in f64 and
/// rounded once to out's dtype.
pub(super) fn run_arange(out: &mut HostTensor, start: f64, step: f64, istart: i64, istep: i64, ints: bool) {
    let n = out.d.dims[0];
    let int_out = !FLOATS.contains(&out.d.dtype);
    for i in 0..n {
        if ints {
            let v = istart + i * istep;
            if int_out {
                out.set_int(&[i], v);
            } else {
                let p = out.d.pos(&[i]);
                out.set_pos(p, v as f64);
            }
        } else {
            let p = out.d.pos(&[i]);
            out.set_pos(p, start + i as f64 * step);
        }
    }
}

/// Which tensor-scalar function a [`Prim::ScalarArith`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarOp {
    /// `out = floor(self / other)` (aclnnFloorDivides).
    FloorDiv,
    /// `out = self + alpha × other` (aclnnAdds).
    Add,
}

/// A numeric scalar (161002 for BOOL and the unmodelled types): the pages' "互推导关系" with the
/// tensor's type.
fn numeric(s: Option<Scalar>, what: &str) -> Result<Scalar, Fail> {
    let s = req_scalar(s, what)?;
    if !NUM_SCALARS.contains(&s.dtype) {
        return Err(bad(format!(
            "{what}: scalar dtype {} (NOT EMULATED or not numeric)",
            dt_name(s.dtype)
        )));
    }
    Ok(s)
}

impl Prim {
    /// aclnnFloorDivides / aclnnInplaceFloorDivides and aclnnAdds / aclnnInplaceAdds phase one
    /// ([HA canncommercial/800 aclnnFloorDivides&aclnnInplaceFloorDivides.md]; [HA canncommercial/800
    /// aclnnAdds.md], [HA canncommercial/800 aclnnInplaceAdds.md]):
    /// - self (selfRef), other, out, and for Adds alpha required (161001: "selfRef、other或alpha是空指针");
    /// - self FLOAT / FLOAT16 / BFLOAT16 / INT32 / INT64; other (alpha) a numeric scalar;
    /// - the promoted type (互推导关系): a scalar does not promote a tensor of its own category, so a
    ///   floating self keeps its type and an integer self with an integer scalar keeps its type; an
    ///   integer self with a floating scalar promotes to a floating type the pages do not name:
    ///   NOT EMULATED, refused; alpha "需要可转换成推导后的数据类型": a floating alpha with an integer
    ///   self is refused; out has the promoted type (the pages allow "可转换" out types without listing
    ///   the conversions: strict) and self's shape (161002);
    /// - FloorDivides by an integer 0: the page is silent (torch raises) — refused (161002).
    pub fn scalar_arith(
        op: ScalarOp,
        inplace: bool,
        x: Option<Desc>,
        other: Option<Scalar>,
        alpha: Option<Scalar>,
        out: Option<Desc>,
    ) -> Result<Prim, Fail> {
        let x = req(x, if inplace { "selfRef" } else { "self" })?;
        let other = numeric(other, "other")?;
        let alpha = match op {
            ScalarOp::Add => numeric(alpha, "alpha")?,
            ScalarOp::FloorDiv => Scalar {
                dtype: sys::ACL_INT64,
                f: 1.0,
                i: 1,
            },
        };
        let out = req(out, "out")?;
        super::want_dt(&x, &NUMERIC, "self")?;
        let float = FLOATS.contains(&x.dtype);
        if !float && (other.is_float() || alpha.is_float()) {
            return Err(bad(format!(
                "integer self {} with a floating other / alpha: the promoted floating type is not named (NOT EMULATED)",
                x.show()
            )));
        }
        if out.dtype != x.dtype {
            return Err(bad(format!(
                "out dtype {} is not the promoted type {}",
                dt_name(out.dtype),
                dt_name(x.dtype)
            )));
        }
        want_dims(&out, &x.dims, "out (shape of self)")?;
        if op == ScalarOp::FloorDiv && !float && other.i == 0 {
            return Err(bad("integer division by 0 (UNDOCUMENTED, refused)"));
        }
        Ok(Prim::ScalarArith {
            op,
            inplace,
            x,
            other,
            alpha,
            out,
        })
    }
}

/// `floor(a / b)` for integers (b != 0), `None` on overflow (`MIN / -1`).
fn floor_div(a: i64, b: i64) -> Option<i64> {
    let q = a.checked_div(b)?;
    Some(if a % b != 0 && ((a < 0) != (b < 0)) { q - 1 } else { q })
}

/// aclnnFloorDivides / aclnnAdds launch. Floating: `floor(x / k)` or `x + alpha·k` in f32 (alpha·k
/// formed in f32 first), rounded once to out's dtype; x / 0 as IEEE. Integer: exact; a result
/// outside out's type (overflow: wrap or saturate is UNDOCUMENTED) → 561000.
pub(super) fn run_scalar_arith(
    x: &HostTensor,
    out: &mut HostTensor,
    op: ScalarOp,
    other: &Scalar,
    alpha: &Scalar,
) -> Result<(), Fail> {
    let float = FLOATS.contains(&x.d.dtype);
    let name = match op {
        ScalarOp::FloorDiv => "aclnnFloorDivides",
        ScalarOp::Add => "aclnnAdds",
    };
    let mut err = None;
    for_each(&x.d.dims.clone(), |idx| {
        if err.is_some() {
            return;
        }
        if float {
            let v = x.get(idx);
            let k = other.f as f32;
            let r = match op {
                ScalarOp::FloorDiv => (v / k).floor(),
                ScalarOp::Add => v + alpha.f as f32 * k,
            };
            out.set(idx, r);
        } else {
            let v = x.get_int(idx);
            let r = match op {
                ScalarOp::FloorDiv => floor_div(v, other.i),
                ScalarOp::Add => alpha.i.checked_mul(other.i).and_then(|k| v.checked_add(k)),
            };
            match r {
                Some(r) if x.d.dtype == sys::ACL_INT64 || i32::try_from(r).is_ok() => out.set_int(idx, r),
                _ => err = Some(inner(format!("{name}: integer overflow at {idx:?} (UNDOCUMENTED)"))),
            }
        }
    });
    err.map_or(Ok(()), Err)
}
