//! OPS.md §3 `moe_permute`: group the `(token, slot)` pairs by expert.

use super::{check_writable, expect_dim, Checked, OpDesc};
use crate::{DType, Error, Result, TensorMut, TensorRef};

const OP: &str = "moe_permute";

/// Arguments of `moe_permute`.
///
/// Row `r` of the permuted order belongs to expert `g` when `group_end[g-1] <= r < group_end[g]`;
/// within an expert, rows are ordered by `(t, j)` ascending. Entries of `src_token` and `x_perm`
/// past `group_end[E-1]` are unspecified (backends may leave them untouched).
#[derive(Debug)]
pub struct MoePermute<'a> {
    /// Number of experts E (>= 1).
    pub num_experts: usize,
    /// `[T, k]` i32 expert ids; `-1` marks a dropped slot; others in `[0, E)`.
    pub ids: TensorRef<'a>,
    /// Optional `[T, H]` activations (f32/bf16/f16) to permute; needs `x_perm`.
    pub x: Option<TensorRef<'a>>,
    /// `[E]` i64 output: cumulative end offsets (feeds `grouped_gemm`).
    pub group_end: TensorMut<'a>,
    /// `[T*k]` i64 output: the token of each permuted row.
    pub src_token: TensorMut<'a>,
    /// `[T, k]` i64 output: the permuted row of slot `(t, j)`, `-1` for a dropped slot.
    pub slot_row: TensorMut<'a>,
    /// Optional `[T*k, H]` output, same dtype as `x`: `x_perm[r] = x[src_token[r]]`.
    pub x_perm: Option<TensorMut<'a>>,
}

impl<'a> MoePermute<'a> {
    /// `(T, k)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.ids.shape()[0], self.ids.shape()[1])
    }

    /// The support-matrix key of this call.
    pub fn desc(&self) -> OpDesc {
        OpDesc::MoePermute {
            x: self.x.as_ref().map(|x| x.dtype()),
        }
    }

    /// Check every rule of OPS.md §3 that does not depend on element values.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field at fault.
    pub fn validate(self) -> Result<Checked<Self>> {
        self.ids.check(OP, "ids", &[DType::I32], 2)?;
        let (t, k) = self.dims();
        let e = self.num_experts;
        if e == 0 {
            return Err(Error::invalid(OP, "num_experts", "E = 0"));
        }
        if e > i32::MAX as usize {
            return Err(Error::invalid(
                OP,
                "num_experts",
                format!("E = {e} does not fit the i32 ids"),
            ));
        }
        self.group_end.check(OP, "group_end", &[DType::I64], 1)?;
        expect_dim(OP, "group_end", self.group_end.shape(), 0, e, "E")?;
        check_writable(OP, "group_end", &self.group_end)?;
        self.src_token.check(OP, "src_token", &[DType::I64], 1)?;
        expect_dim(OP, "src_token", self.src_token.shape(), 0, t * k, "T*k")?;
        check_writable(OP, "src_token", &self.src_token)?;
        self.slot_row.check(OP, "slot_row", &[DType::I64], 2)?;
        expect_dim(OP, "slot_row", self.slot_row.shape(), 0, t, "T, from ids")?;
        expect_dim(OP, "slot_row", self.slot_row.shape(), 1, k, "k, from ids")?;
        check_writable(OP, "slot_row", &self.slot_row)?;
        match (&self.x, &self.x_perm) {
            (None, None) => {}
            (Some(x), Some(xp)) => {
                x.check(OP, "x", &DType::FLOATS, 2)?;
                expect_dim(OP, "x", x.shape(), 0, t, "T, from ids")?;
                let h = x.shape()[1];
                xp.check(OP, "x_perm", &[x.dtype()], 2)?;
                expect_dim(OP, "x_perm", xp.shape(), 0, t * k, "T*k")?;
                expect_dim(OP, "x_perm", xp.shape(), 1, h, "H, from x")?;
                check_writable(OP, "x_perm", xp)?;
            }
            (Some(_), None) => return Err(Error::invalid(OP, "x_perm", "x is given but x_perm is not")),
            (None, Some(_)) => return Err(Error::invalid(OP, "x", "x_perm is given but x is not")),
        }
        Ok(Checked::new(self))
    }
}

/// Check expert ids: each in `[-1, E)` (OPS.md §3). Every backend calls this (or an equivalent
/// device check) before writing.
///
/// # Errors
/// [`Error::InvalidArgument`] on field `ids`.
pub fn check_ids(ids: &[i32], num_experts: usize) -> Result<()> {
    match ids.iter().position(|&i| i < -1 || i as i64 >= num_experts as i64) {
        None => Ok(()),
        Some(p) => Err(Error::invalid(
            OP,
            "ids",
            format!("ids[{p}] = {} outside [-1, E = {num_experts})", ids[p]),
        )),
    }
}
