//! OPS.md §3 `moe_combine`: `out[t] = sum_j weights[t, j] * y_perm[slot_row[t, j]]`, in f32, in
//! order `j = 0..k-1`; dropped slots (`-1`) add nothing.

use super::{check_writable, expect_dim, Checked, OpDesc};
use crate::{DType, Error, Result, TensorMut, TensorRef};

const OP: &str = "moe_combine";

/// Arguments of `moe_combine`.
#[derive(Debug)]
pub struct MoeCombine<'a> {
    /// `[R, H]` f32/bf16/f16 expert outputs in permuted order (R is usually `T*k`).
    pub y_perm: TensorRef<'a>,
    /// `[T, k]` i64 from `moe_permute`: each in `[-1, R)`.
    pub slot_row: TensorRef<'a>,
    /// `[T, k]` f32 router weights.
    pub weights: TensorRef<'a>,
    /// `[T, H]` output, same dtype as `y_perm`.
    pub out: TensorMut<'a>,
}

impl<'a> MoeCombine<'a> {
    /// `(T, k, H, R)`.
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        let (t, k) = (self.slot_row.shape()[0], self.slot_row.shape()[1]);
        (t, k, self.y_perm.shape()[1], self.y_perm.shape()[0])
    }

    /// The support-matrix key of this call.
    pub fn desc(&self) -> OpDesc {
        OpDesc::MoeCombine {
            dtype: self.y_perm.dtype(),
        }
    }

    /// Check every rule of OPS.md §3 for `moe_combine` that does not depend on element values.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field at fault.
    pub fn validate(self) -> Result<Checked<Self>> {
        self.y_perm.check(OP, "y_perm", &DType::FLOATS, 2)?;
        self.slot_row.check(OP, "slot_row", &[DType::I64], 2)?;
        let (t, k, h, _) = self.dims();
        self.weights.check(OP, "weights", &[DType::F32], 2)?;
        expect_dim(OP, "weights", self.weights.shape(), 0, t, "T, from slot_row")?;
        expect_dim(OP, "weights", self.weights.shape(), 1, k, "k, from slot_row")?;
        self.out.check(OP, "out", &[self.y_perm.dtype()], 2)?;
        expect_dim(OP, "out", self.out.shape(), 0, t, "T, from slot_row")?;
        expect_dim(OP, "out", self.out.shape(), 1, h, "H, from y_perm")?;
        check_writable(OP, "out", &self.out)?;
        Ok(Checked::new(self))
    }
}

/// Check `slot_row` values: each in `[-1, R)`. Every backend calls this (or an equivalent device
/// check) before writing.
///
/// # Errors
/// [`Error::InvalidArgument`] on field `slot_row`.
pub fn check_slot_rows(slot_row: &[i64], rows: usize) -> Result<()> {
    match slot_row.iter().position(|&r| r < -1 || r >= rows as i64) {
        None => Ok(()),
        Some(p) => Err(Error::invalid(
            OP,
            "slot_row",
            format!("slot_row[{p}] = {} outside [-1, R = {rows})", slot_row[p]),
        )),
    }
}
