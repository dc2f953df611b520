//! Value checks on the device (issue 13): the extremes of an index tensor computed with
//! `aclnnAmin` / `aclnnAmax` and read back as two scalars — a control read, as a CUDA engine reads
//! a flag — so a value error reaches the caller before anything is written, without the tensor
//! itself crossing to the host.

use moehal_ascend_sys as sys;
use moehal_core::{DType, Error, Result, TensorRef};

use crate::backend::{desc_of, scratch_desc, Ascend};
use crate::ffi::{DevMem, Outcome, Scalar, TDesc, Tensor};

impl Ascend {
    /// Whether the loaded libraries compute tensor extremes (`aclnnAmin` and `aclnnAmax`).
    pub(crate) fn extremes_on_device(&self) -> bool {
        let v = self.rt.lib.versions;
        v.amax && v.amin
    }

    /// One extreme (`max`: `aclnnAmax`, else `aclnnAmin`) of the rank-`rank` tensor `x` of ACL
    /// type `dt` (INT32, INT64 or FLOAT) over every dimension (keepDim), read back: 4 or 8 bytes.
    /// The value is returned as its little-endian bits widened to `i64` (INT32 sign-extended,
    /// FLOAT as `f32::to_bits`). `None` when the reduction refused the call at phase one.
    pub(crate) fn extreme_bits(
        &self,
        x: &Tensor<'_>,
        rank: usize,
        dt: sys::aclDataType,
        max: bool,
    ) -> Result<Option<i64>> {
        let es = if dt == sys::ACL_INT64 { 8 } else { 4 };
        let m = DevMem::new(&self.rt, es)?;
        let mt = self.t(&scratch_desc(&m, dt, &vec![1; rank.max(1)]))?;
        if let Outcome::Rejected(_) = self.rt.extremum(x, rank, max, &mt)? {
            return Ok(None);
        }
        let mut b = [0u8; 8];
        self.rt.d2h(&mut b[..es], m.ptr)?;
        Ok(Some(if dt == sys::ACL_INT64 {
            i64::from_le_bytes(b)
        } else if dt == sys::ACL_INT32 {
            i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64
        } else {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64
        }))
    }

    /// The smallest and largest element of the integer (I32 / I64) device view `t`, computed on
    /// the device (`aclnnAmin`, `aclnnAmax`) and read back: a control read of 8 (I32) or 16 (I64)
    /// bytes. `None` — the caller then reads the tensor for the same check — when the libraries
    /// lack the reductions, the view is empty (the reductions refuse an empty axis) or not in
    /// this device's memory, or a reduction refused the call at phase one.
    pub(crate) fn index_extremes(
        &self,
        t: &TensorRef<'_>,
        op: &'static str,
        field: &'static str,
    ) -> Result<Option<(i64, i64)>> {
        let dt = match t.dtype() {
            DType::I32 => sys::ACL_INT32,
            DType::I64 => sys::ACL_INT64,
            _ => return Ok(None),
        };
        if !self.extremes_on_device() || t.numel() == 0 || self.mine(t.buffer(), field).is_err() {
            return Ok(None);
        }
        let rank = t.shape().len();
        if rank == 0 {
            return Ok(None);
        }
        // A view the descriptor cannot express (e.g. an element offset that is not a whole
        // element of the buffer) is checked on the host, as it was before the device check.
        let Ok(d) = desc_of(t, op, field) else {
            return Ok(None);
        };
        let x = self.t(&d)?;
        self.tensor_extremes(&x, rank, dt)
    }

    /// `(aclnnAmin, aclnnAmax)` of the rank-`rank` integer (INT32 / INT64) tensor `x`, read back
    /// (2 × 4 or 2 × 8 bytes); `None` when either reduction refused the call at phase one.
    pub(crate) fn tensor_extremes(
        &self,
        x: &Tensor<'_>,
        rank: usize,
        dt: sys::aclDataType,
    ) -> Result<Option<(i64, i64)>> {
        let Some(lo) = self.extreme_bits(x, rank, dt, false)? else {
            return Ok(None);
        };
        let Some(hi) = self.extreme_bits(x, rank, dt, true)? else {
            return Ok(None);
        };
        Ok(Some((lo, hi)))
    }

    /// The adjacent differences `x[1:] - x[:-1]` of the 1-D integer view `x` (`n + 1` entries,
    /// INT32 or INT64), as f32 `[n]` in new device memory: `aclnnReduceSum(dim 0)` of the `[2, n]`
    /// stack `[aclnnCast(x[1:]); aclnnMuls(aclnnCast(x[:-1]), -1)]` (the primitives have no integer
    /// subtraction on every release). Exact when every entry is an integer of magnitude below
    /// `2^24` (the caller's precondition). `None` when a primitive refused the call at phase one
    /// (nothing written but scratch).
    pub(crate) fn int_steps_f32(&self, x: &TDesc, n: usize) -> Result<Option<DevMem<'_>>> {
        let stride = x.strides[0];
        let head = TDesc {
            dims: vec![n as i64],
            ..x.clone()
        };
        let tail = TDesc {
            dims: vec![n as i64],
            offset: x.offset + stride,
            ..x.clone()
        };
        let stack = DevMem::new(&self.rt, 2 * n * 4)?;
        let row = |r: usize| TDesc {
            offset: (r * n) as i64,
            dims: vec![n as i64],
            strides: vec![1],
            ..scratch_desc(&stack, sys::ACL_FLOAT, &[2 * n])
        };
        let neg = DevMem::new(&self.rt, n * 4)?;
        let negt = self.t(&scratch_desc(&neg, sys::ACL_FLOAT, &[n]))?;
        let stack_t = self.t(&scratch_desc(&stack, sys::ACL_FLOAT, &[2, n]))?;
        let out = DevMem::new(&self.rt, n * 4)?;
        let out_t = self.t(&scratch_desc(&out, sys::ACL_FLOAT, &[n]))?;
        let minus1 = Scalar::f32(&self.rt, -1.0)?;
        let ran = |o: Outcome| matches!(o, Outcome::Ran);
        if !ran(self
            .rt
            .cast_outcome(&self.t(&tail)?, sys::ACL_FLOAT, &self.t(&row(0))?)?)
            || !ran(self.rt.cast_outcome(&self.t(&head)?, sys::ACL_FLOAT, &negt)?)
            || !ran(self.rt.muls(&negt, &minus1, &self.t(&row(1))?)?)
            || !ran(self.rt.reduce_sum(&stack_t, &[0], false, sys::ACL_FLOAT, &out_t)?)
        {
            return Ok(None);
        }
        Ok(Some(out))
    }
}

/// The range rule of an index tensor checked by its device extremes: `Err(InvalidArgument)` on
/// `field` of `op` unless every entry is in `[min, end)`, i.e. `lo >= min` and `hi < end`, where
/// `(lo, hi)` are the `aclnnAmin` / `aclnnAmax` of the tensor ([`Ascend::index_extremes`]). `rule`
/// names the contract's rule and its source (e.g. "OPS.md §3"), for the message.
pub(crate) fn check_extremes(
    op: &'static str,
    field: &'static str,
    (lo, hi): (i64, i64),
    min: i64,
    end: i64,
    rule: &str,
) -> Result<()> {
    if lo >= min && hi < end {
        return Ok(());
    }
    let bad = if lo < min { lo } else { hi };
    Err(Error::invalid(
        op,
        field,
        format!(
            "an entry {bad} of {field} is outside [{min}, {end}) ({rule}; aclnnAmin/aclnnAmax of {field}: {lo}, {hi})"
        ),
    ))
}
