//! OPS.md §4 `engram_hash`: N-gram hash of canonical token ids into table rows (DeepSeek Engram).

use super::{check_writable, expect_dim, Checked, OpDesc};
use crate::engram::EngramLayer;
use crate::{DType, Error, Result, TensorMut, TensorRef};

const OP: &str = "engram_hash";

/// Arguments of `engram_hash`.
#[derive(Debug)]
pub struct EngramHash<'a> {
    /// The layer's hash configuration (order N, heads K, multipliers, primes, V', pad id).
    pub layer: &'a EngramLayer,
    /// `[T]` i64 canonical ids, each in `[0, V')`.
    pub ids: TensorRef<'a>,
    /// Optional `[T]` i64 positions: a new segment starts at `t = 0` and wherever
    /// `positions[t] <= positions[t-1]`.
    pub positions: Option<TensorRef<'a>>,
    /// Optional `[T]` u8 mask: 0 = dead token (its window is all pad, and it blocks look-back).
    pub alive: Option<TensorRef<'a>>,
    /// Up to N-1 canonical ids before `ids[0]`, oldest first, all alive; extends only the first
    /// segment (chunked decode). Host memory.
    pub history: &'a [i64],
    /// `[T, C]` i64 output rows, `C = (N-1)*K`, column order n-major then head.
    pub rows: TensorMut<'a>,
}

/// Validate the shared inputs of `engram_hash` and `engram_lookup`; returns T.
pub(crate) fn check_hash_inputs(
    op: &'static str,
    layer: &EngramLayer,
    ids: &TensorRef<'_>,
    positions: Option<&TensorRef<'_>>,
    alive: Option<&TensorRef<'_>>,
    history: &[i64],
) -> Result<usize> {
    ids.check(op, "ids", &[DType::I64], 1)?;
    let t = ids.shape()[0];
    if let Some(p) = positions {
        p.check(op, "positions", &[DType::I64], 1)?;
        expect_dim(op, "positions", p.shape(), 0, t, "T, from ids")?;
    }
    if let Some(a) = alive {
        a.check(op, "alive", &[DType::U8], 1)?;
        expect_dim(op, "alive", a.shape(), 0, t, "T, from ids")?;
    }
    if history.len() > layer.max_order() - 1 {
        return Err(Error::invalid(
            op,
            "history",
            format!("{} ids, at most N-1 = {}", history.len(), layer.max_order() - 1),
        ));
    }
    check_canonical_ids(op, "history", history, layer.vocab_size())?;
    Ok(t)
}

impl<'a> EngramHash<'a> {
    /// The support-matrix key of this call.
    pub fn desc(&self) -> OpDesc {
        OpDesc::EngramHash
    }

    /// Check every rule of OPS.md §4 that does not depend on the ids' values (the history, being
    /// host data, is checked in full).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field at fault.
    pub fn validate(self) -> Result<Checked<Self>> {
        let t = check_hash_inputs(
            OP,
            self.layer,
            &self.ids,
            self.positions.as_ref(),
            self.alive.as_ref(),
            self.history,
        )?;
        self.rows.check(OP, "rows", &[DType::I64], 2)?;
        expect_dim(OP, "rows", self.rows.shape(), 0, t, "T, from ids")?;
        expect_dim(OP, "rows", self.rows.shape(), 1, self.layer.columns(), "C = (N-1)*K")?;
        check_writable(OP, "rows", &self.rows)?;
        Ok(Checked::new(self))
    }
}

/// Check canonical ids: each in `[0, V')` (an out-of-range id is never silently a row).
///
/// # Errors
/// [`Error::InvalidArgument`] on `field`.
pub fn check_canonical_ids(op: &'static str, field: &'static str, ids: &[i64], vocab_size: u64) -> Result<()> {
    match ids.iter().position(|&i| i < 0 || i as u64 >= vocab_size) {
        None => Ok(()),
        Some(p) => Err(Error::invalid(
            op,
            field,
            format!("{field}[{p}] = {} outside [0, V' = {vocab_size})", ids[p]),
        )),
    }
}
