//! Elementwise primitives: Clamp / ClampMin / ClampMax, Muls / InplaceMuls, Mul, Div, Sigmoid,
//! Sqrt, Softplus, InplaceMaskedFillScalar, EqScalar, InplaceZero. Phase-one rules and formulas as
//! the CANN pages state them; sources in RULES.md §Primitives (CL*, MS*, MU*, DV*, SG*, SQ*, SP*,
//! MF*, EQ*, Z*).

use crate::sys;
use crate::tensor::{dt_name, Desc, HostTensor};

use super::prim::{
    bidx, broadcast, float_scalar, for_each, req_scalar, same_dtype, want_float, Binary, Prim, Scalar, Unary,
};
use super::{bad, req, want_dims, Fail, FLOATS};

/// `min(max(v, lo), hi)` with NaN propagated from `v` (torch.clamp; the page's formula
/// `max(min(x, max), min)` is silent on NaN, RULES.md CL4). `lo > hi` never reaches here (refused
/// in phase one, CL3).
pub(super) fn clamp(v: f32, lo: Option<f32>, hi: Option<f32>) -> f32 {
    if v.is_nan() {
        return v;
    }
    let mut r = v;
    if let Some(l) = lo {
        if r < l {
            r = l;
        }
    }
    if let Some(h) = hi {
        if r > h {
            r = h;
        }
    }
    r
}

/// Softplus: `ln(1 + e^(beta·x)) / beta` when `beta·x <= threshold`, else `x` ([HA 850alpha002
/// aclnnSoftplus.md] formula), in f32.
pub(super) fn softplus(v: f32, beta: f32, threshold: f32) -> f32 {
    let bx = beta * v;
    if bx > threshold {
        v
    } else {
        bx.exp().ln_1p() / beta
    }
}

pub(super) fn run_binary(f: Binary, a: &HostTensor, b: &HostTensor, out: &mut HostTensor) {
    let dims = out.d.dims.clone();
    for_each(&dims, |idx| {
        let x = a.get(&bidx(idx, &a.d.dims));
        let y = b.get(&bidx(idx, &b.d.dims));
        out.set(
            idx,
            match f {
                Binary::Mul => x * y,
                Binary::Div => x / y,
            },
        );
    });
}

pub(super) fn run_masked_fill(s: &HostTensor, mask: &HostTensor, value: &Scalar, out: &mut HostTensor) {
    let dims = s.d.dims.clone();
    let float = FLOATS.contains(&s.d.dtype);
    for_each(&dims, |idx| {
        if mask.get_int(&bidx(idx, &mask.d.dims)) != 0 {
            if float {
                out.set_pos(out.d.pos(idx), value.f);
            } else {
                out.set_int(idx, value.i);
            }
        }
    });
}

pub(super) fn run_eq_scalar(x: &HostTensor, other: &Scalar, out: &mut HostTensor) {
    let dims = x.d.dims.clone();
    let float = FLOATS.contains(&x.d.dtype);
    // A floating self compares in its own dtype: the scalar is rounded to it first (a scalar does
    // not promote a tensor of the same category: the page's "互推导关系"; torch.eq).
    let k = rounded(other.f, x.d.dtype);
    for_each(&dims, |idx| {
        let eq = if float {
            x.get(idx) as f64 == k
        } else if other.is_float() {
            x.get_int(idx) as f64 == other.f
        } else {
            x.get_int(idx) == other.i
        };
        out.set_pos(out.d.pos(idx), eq as u8 as f64);
    });
}

/// `v` rounded to a floating dtype (identity for other types).
fn rounded(v: f64, dt: sys::aclDataType) -> f64 {
    match dt {
        sys::ACL_FLOAT => v as f32 as f64,
        sys::ACL_FLOAT16 => half::f16::from_f64(v).to_f64(),
        sys::ACL_BF16 => half::bf16::from_f64(v).to_f64(),
        _ => v,
    }
}

/// A same-shape floating input/output pair: both FLOAT / FLOAT16 / BFLOAT16 (161002), out of
/// self's shape (161002); `same` also asks for equal dtypes.
fn unary_pair(x: &Desc, out: &Desc, same: bool) -> Result<(), Fail> {
    want_float(x, "self")?;
    want_float(out, "out")?;
    if same {
        same_dtype(x, out, "out")?;
    }
    want_dims(out, &x.dims, "out (shape of self)")
}

impl Prim {
    /// aclnnClamp / ClampMin / ClampMax phase one ([HA canncommercial/800 aclnnClamp.md]; ClampMin,
    /// ClampMax pages of the same release):
    /// - self, out required; for Clamp at least one bound ("传入的self、out其中一个为空指针,或者
    ///   maxValue、minValue全为空指针" → 161001, [HA Atlas200IDKA2 23.0.RC2 aclcppdevg_03_0248]);
    ///   ClampMin / ClampMax need their bound (161001);
    /// - self FLOAT / FLOAT16 / BFLOAT16 (NOT EMULATED: FLOAT64, integer, BOOL); out "数据类型和self
    ///   保持一致, shape和self保持一致" (161002);
    /// - a bound must convert to self's type (161002 for a non-numeric scalar);
    /// - lo > hi or a NaN bound: the page's formula (`max(min(x, max), min)`: lo wins) and torch
    ///   (hi wins) disagree — UNDOCUMENTED, refused (161002).
    pub fn clamp(
        launch: &'static str,
        x: Option<Desc>,
        lo: Option<Scalar>,
        hi: Option<Scalar>,
        out: Option<Desc>,
    ) -> Result<Prim, Fail> {
        let (x, out) = (req(x, "self")?, req(out, "out")?);
        match launch {
            "aclnnClampMin" => {
                req_scalar(lo, "clipValueMin")?;
            }
            "aclnnClampMax" => {
                req_scalar(hi, "clipValueMax")?;
            }
            _ if lo.is_none() && hi.is_none() => {
                return Err(super::null("clipValueMin and clipValueMax (both)"));
            }
            _ => {}
        }
        unary_pair(&x, &out, true)?;
        let lo = lo.map(|s| float_scalar(&s, "clipValueMin")).transpose()?;
        let hi = hi.map(|s| float_scalar(&s, "clipValueMax")).transpose()?;
        if lo.is_some_and(f32::is_nan) || hi.is_some_and(f32::is_nan) {
            return Err(bad("a NaN clamp bound is UNDOCUMENTED (refused)"));
        }
        if let (Some(l), Some(h)) = (lo, hi) {
            if l > h {
                return Err(bad(format!(
                    "clipValueMin {l} > clipValueMax {h}: the page's formula and torch disagree (UNDOCUMENTED, refused)"
                )));
            }
        }
        Ok(Prim::Clamp { launch, x, lo, hi, out })
    }

    /// aclnnMuls / aclnnInplaceMuls phase one ([HA canncommercial/800 aclnnMuls&aclnnInplaceMuls.md]):
    /// - self (selfRef), other, out required (161001);
    /// - self FLOAT / FLOAT16 / BFLOAT16 (NOT EMULATED: DOUBLE, integer, BOOL, COMPLEX); other a
    ///   numeric scalar; out a floating type (the promoted type of a floating tensor and a scalar is
    ///   the tensor's, which converts to every floating out), self's shape (161002).
    ///
    /// aclnnDivs / aclnnInplaceDivs ([HA canncommercial/800 aclnnDivs&aclnnInplaceDivs.md]) take the
    /// same arguments with `out_i = self_i / other` (`launch` names the form; x/0 as IEEE).
    pub fn muls(launch: &'static str, x: Option<Desc>, other: Option<Scalar>, out: Option<Desc>) -> Result<Prim, Fail> {
        let x = req(x, "self")?;
        let out = req(out, "out")?;
        let k = float_scalar(&req_scalar(other, "other")?, "other")?;
        unary_pair(&x, &out, false)?;
        let div = launch.contains("Divs");
        Ok(Prim::Muls { launch, x, k, div, out })
    }

    /// aclnnMul / aclnnDiv phase one ([HA canncommercial/800 aclnnMul&aclnnInplaceMul.md],
    /// [HA canncommercial/800 aclnnDiv&aclnnInplaceDiv.md]):
    /// - self, other, out required (161001);
    /// - FLOAT / FLOAT16 / BFLOAT16 operands (NOT EMULATED: the integer, DOUBLE, BOOL, COMPLEX types);
    ///   out floating (161002);
    /// - self and other broadcast (right-aligned, each pair equal or 1); out has the broadcast shape
    ///   (161002).
    ///
    /// aclnnInplaceDiv (same page; `inplace`): out is selfRef, so other must broadcast to selfRef's
    /// shape, which does not grow (161002).
    pub fn binary(f: Binary, inplace: bool, a: Option<Desc>, b: Option<Desc>, out: Option<Desc>) -> Result<Prim, Fail> {
        let (a, b, out) = (req(a, "self")?, req(b, "other")?, req(out, "out")?);
        want_float(&a, "self")?;
        want_float(&b, "other")?;
        want_float(&out, "out")?;
        let Some(shape) = broadcast(&a.dims, &b.dims) else {
            return Err(bad(format!(
                "self {} and other {} do not broadcast",
                a.show(),
                b.show()
            )));
        };
        want_dims(&out, &shape, "out (broadcast shape)")?;
        Ok(Prim::Binary { f, inplace, a, b, out })
    }

    /// aclnnSigmoid / aclnnSqrt phase one ([HA canncommercial/800 aclnnSigmoid&aclnnInplaceSigmoid.md], [HA
    /// canncommercial/800 aclnnSqrt&aclnnInplaceSqrt.md]): self, out required (161001); FLOAT / FLOAT16 / BFLOAT16
    /// (NOT EMULATED: DOUBLE, COMPLEX, integer inputs); out of self's dtype and shape (161002; the
    /// pages let out differ where the result converts — strict, UNDOCUMENTED which conversions).
    /// The in-place forms (aclnnInplaceSigmoid(selfRef), aclnnInplaceSqrt(self), same pages) pass
    /// `inplace` and the same tensor as `out`.
    pub fn unary(f: Unary, inplace: bool, x: Option<Desc>, out: Option<Desc>) -> Result<Prim, Fail> {
        let (x, out) = (req(x, "self")?, req(out, "out")?);
        unary_pair(&x, &out, true)?;
        Ok(Prim::Unary { f, inplace, x, out })
    }

    /// aclnnSoftplus phase one ([HA 850alpha002 aclnnSoftplus.md]; return codes [HA Atlas200IDKA2
    /// 23.0.RC2 aclcppdevg_03_0544]): self, beta, threshold, out required (161001); self FLOAT /
    /// FLOAT16 / BFLOAT16; out same dtype ("self和指定输出out的数据类型不一致" → 161002) and shape;
    /// beta 0 or NaN, threshold NaN: UNDOCUMENTED (division by beta), refused (161002).
    pub fn softplus(
        x: Option<Desc>,
        beta: Option<Scalar>,
        threshold: Option<Scalar>,
        out: Option<Desc>,
    ) -> Result<Prim, Fail> {
        let x = req(x, "self")?;
        let beta = float_scalar(&req_scalar(beta, "beta")?, "beta")?;
        let threshold = float_scalar(&req_scalar(threshold, "threshold")?, "threshold")?;
        let out = req(out, "out")?;
        unary_pair(&x, &out, true)?;
        if beta == 0.0 || beta.is_nan() || threshold.is_nan() {
            return Err(bad(format!(
                "beta {beta} / threshold {threshold}: zero or NaN is UNDOCUMENTED (refused)"
            )));
        }
        Ok(Prim::Softplus {
            x,
            beta,
            threshold,
            out,
        })
    }

    /// aclnnInplaceMaskedFillScalar phase one ([HA canncommercial/800 aclnnInplaceMaskedFillScalar.md];
    /// gitcode cann/ops-math conversion/masked_fill/docs/aclnnInplaceMaskedFillScalar.md):
    /// - selfRef, mask, value required (161001);
    /// - selfRef BOOL / INT8 / INT32 / INT64 / FLOAT / FLOAT16 / BFLOAT16; mask BOOL, broadcast to
    ///   selfRef's shape (selfRef keeps its shape, in place) (161002);
    /// - value must "推导到selfRef的数据类型": numeric for a floating selfRef; a floating value into an
    ///   integer / BOOL selfRef is UNDOCUMENTED (torch truncates) — refused (161002).
    pub fn masked_fill(self_ref: Option<Desc>, mask: Option<Desc>, value: Option<Scalar>) -> Result<Prim, Fail> {
        let (self_ref, mask) = (req(self_ref, "selfRef")?, req(mask, "mask")?);
        let value = req_scalar(value, "value")?;
        super::want_dt(
            &self_ref,
            &[
                sys::ACL_BOOL,
                sys::ACL_INT8,
                sys::ACL_INT32,
                sys::ACL_INT64,
                sys::ACL_FLOAT,
                sys::ACL_FLOAT16,
                sys::ACL_BF16,
            ],
            "selfRef",
        )?;
        super::want_dt(&mask, &[sys::ACL_BOOL], "mask")?;
        if FLOATS.contains(&self_ref.dtype) {
            float_scalar(&value, "value")?;
        } else if value.is_float() || !super::prim::NUM_SCALARS.contains(&value.dtype) && value.dtype != sys::ACL_BOOL {
            return Err(bad(format!(
                "value: a {} scalar into a {} selfRef is UNDOCUMENTED (refused)",
                dt_name(value.dtype),
                dt_name(self_ref.dtype)
            )));
        }
        if broadcast(&self_ref.dims, &mask.dims).as_deref() != Some(&self_ref.dims[..]) {
            return Err(bad(format!(
                "mask {} does not broadcast to selfRef {}",
                mask.show(),
                self_ref.show()
            )));
        }
        Ok(Prim::MaskedFill { self_ref, mask, value })
    }

    /// aclnnEqScalar phase one ([HA canncommercial/800 aclnnEqScalar&aclnnInplaceEqScalar.md]):
    /// self, other, out required (161001); self FLOAT / FLOAT16 / BFLOAT16 / INT32 / INT64 (NOT
    /// EMULATED: the other listed types); other numeric; out BOOL (NOT EMULATED: the other out types
    /// the page lists), self's shape (161002).
    pub fn eq_scalar(x: Option<Desc>, other: Option<Scalar>, out: Option<Desc>) -> Result<Prim, Fail> {
        let x = req(x, "self")?;
        let other = req_scalar(other, "other")?;
        let out = req(out, "out")?;
        super::want_dt(
            &x,
            &[
                sys::ACL_FLOAT,
                sys::ACL_FLOAT16,
                sys::ACL_BF16,
                sys::ACL_INT32,
                sys::ACL_INT64,
            ],
            "self",
        )?;
        if !super::prim::NUM_SCALARS.contains(&other.dtype) {
            return Err(bad(format!(
                "other: scalar dtype {} not supported",
                dt_name(other.dtype)
            )));
        }
        super::want_dt(&out, &[sys::ACL_BOOL], "out")?;
        want_dims(&out, &x.dims, "out (shape of self)")?;
        Ok(Prim::EqScalar { x, other, out })
    }

    /// aclnnInplaceZero phase one ([HA canncommercial/800 aclnnInplaceZero.md]): selfRef required
    /// (161001); FLOAT / FLOAT16 / BFLOAT16 / INT8 / INT32 / INT64 / UINT8 / BOOL / INT16 / DOUBLE
    /// (161002); every element of the view becomes 0.
    pub fn zero(self_ref: Option<Desc>) -> Result<Prim, Fail> {
        let self_ref = req(self_ref, "selfRef")?;
        super::want_dt(
            &self_ref,
            &[
                sys::ACL_FLOAT,
                sys::ACL_FLOAT16,
                sys::ACL_BF16,
                sys::ACL_INT8,
                sys::ACL_INT32,
                sys::ACL_INT64,
                sys::ACL_UINT8,
                sys::ACL_BOOL,
                sys::ACL_INT16,
                sys::ACL_DOUBLE,
            ],
            "selfRef",
        )?;
        Ok(Prim::Zero { self_ref })
    }
}
