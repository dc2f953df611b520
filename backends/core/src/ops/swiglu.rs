//! OPS.md §3 `swiglu`: `out = silu(gate) * up`, `gate = h[:, :I]`, `up = h[:, I:]`.

use super::{check_writable, expect_dim, Checked, OpDesc};
use crate::{DType, Error, Result, TensorMut, TensorRef};

const OP: &str = "swiglu";

/// Arguments of `swiglu`.
#[derive(Debug)]
pub struct Swiglu<'a> {
    /// `[M, 2I]` f32/bf16/f16: gate half then up half of each row.
    pub h: TensorRef<'a>,
    /// `[M, I]` output, same dtype.
    pub out: TensorMut<'a>,
    /// Optional clamp (DeepSeek-V4 uses 10): `gate <= limit`, `up` into `[-limit, limit]`, before
    /// the activation. Finite and > 0.
    pub limit: Option<f32>,
}

impl<'a> Swiglu<'a> {
    /// `(M, I)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.h.shape()[0], self.h.shape()[1] / 2)
    }

    /// The support-matrix key of this call.
    pub fn desc(&self) -> OpDesc {
        OpDesc::Swiglu { dtype: self.h.dtype() }
    }

    /// Check every rule of OPS.md §3 for `swiglu`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field at fault.
    pub fn validate(self) -> Result<Checked<Self>> {
        self.h.check(OP, "h", &DType::FLOATS, 2)?;
        let (m, i) = self.dims();
        if self.h.shape()[1] % 2 != 0 {
            return Err(Error::invalid(
                OP,
                "h",
                format!("last dimension {} is odd (must be 2I)", self.h.shape()[1]),
            ));
        }
        self.out.check(OP, "out", &[self.h.dtype()], 2)?;
        expect_dim(OP, "out", self.out.shape(), 0, m, "M, from h")?;
        expect_dim(OP, "out", self.out.shape(), 1, i, "I, from h")?;
        check_writable(OP, "out", &self.out)?;
        if let Some(l) = self.limit {
            if !(l.is_finite() && l > 0.0) {
                return Err(Error::invalid(OP, "limit", format!("{l} must be finite and > 0")));
            }
        }
        Ok(Checked::new(self))
    }
}
