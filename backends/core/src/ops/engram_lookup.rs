//! OPS.md §5 `engram_lookup` = `engram_hash` then `gather_rows`, fused where the backend can.

use super::engram_hash::check_hash_inputs;
use super::gather_rows::{check_table, host_table};
use super::{Checked, OpDesc, TableFormat};
use crate::engram::EngramLayer;
use crate::{Error, Result, TensorMut, TensorRef};

const OP: &str = "engram_lookup";

/// Arguments of `engram_lookup`.
#[derive(Debug)]
pub struct EngramLookup<'a> {
    /// The layer's hash configuration.
    pub layer: &'a EngramLayer,
    /// `[T]` i64 canonical ids in `[0, V')`.
    pub ids: TensorRef<'a>,
    /// Optional `[T]` i64 positions (segment starts), as in `engram_hash`.
    pub positions: Option<TensorRef<'a>>,
    /// Optional `[T]` u8 alive mask, as in `engram_hash`.
    pub alive: Option<TensorRef<'a>>,
    /// Up to N-1 ids before `ids[0]`, as in `engram_hash`.
    pub history: &'a [i64],
    /// The layer's table: `R = layer.rows()` rows, format as in `gather_rows`.
    pub table: TensorRef<'a>,
    /// Storage format of `table`.
    pub format: TableFormat,
    /// `[T, C*D]` output.
    pub out: TensorMut<'a>,
}

impl<'a> EngramLookup<'a> {
    /// The support-matrix key of this call.
    pub fn desc(&self) -> OpDesc {
        OpDesc::EngramLookup {
            table: self.format,
            out: self.out.dtype(),
            host_table: host_table(&self.table, &self.out),
        }
    }

    /// Check every rule of OPS.md §4/§5 that does not depend on the ids' values.
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
        let (r, _) = check_table(OP, &self.table, self.format, &self.out, t, self.layer.columns())?;
        if r as u64 != self.layer.rows() {
            return Err(Error::invalid(
                OP,
                "table",
                format!(
                    "{r} rows, the layer's table has R = sum of primes = {}",
                    self.layer.rows()
                ),
            ));
        }
        Ok(Checked::new(self))
    }
}
