//! OPS.md §5 `gather_rows`: concatenate the `C` table rows of each token; fp8 tables are
//! dequantized on the way. A copy, not arithmetic: output is bitwise equal to the reference.

use super::{check_writable, expect_dim, Checked, OpDesc};
use crate::{DType, Error, Location, Result, TensorMut, TensorRef};

const OP: &str = "gather_rows";

/// Storage format of an embedding table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableFormat {
    /// `[R, D]` f32.
    F32,
    /// `[R, D]` bf16.
    BF16,
    /// `[R, D]` f16.
    F16,
    /// `[R, D + D/32]` u8: per row `D` OCP e4m3fn bytes, then `D/32` UE8M0 scale bytes;
    /// `value = fp8 * 2^(scale - 127)` (DeepSeek-V4.1 Engram tables; a 256-wide row is 264 bytes).
    Fp8E4m3Ue8m0,
}

impl TableFormat {
    /// Name as OPS.md writes it.
    pub const fn name(self) -> &'static str {
        match self {
            TableFormat::F32 => "f32",
            TableFormat::BF16 => "bf16",
            TableFormat::F16 => "f16",
            TableFormat::Fp8E4m3Ue8m0 => "fp8_e4m3_ue8m0",
        }
    }
    /// dtype of the table tensor.
    pub const fn storage_dtype(self) -> DType {
        match self {
            TableFormat::F32 => DType::F32,
            TableFormat::BF16 => DType::BF16,
            TableFormat::F16 => DType::F16,
            TableFormat::Fp8E4m3Ue8m0 => DType::U8,
        }
    }
    /// Output dtypes allowed for this format.
    pub fn out_dtypes(self) -> &'static [DType] {
        match self {
            TableFormat::F32 => &[DType::F32],
            TableFormat::BF16 => &[DType::BF16],
            TableFormat::F16 => &[DType::F16],
            TableFormat::Fp8E4m3Ue8m0 => &[DType::F32, DType::BF16],
        }
    }
    /// Every (format, output dtype) pair of the contract.
    pub const PAIRS: [(TableFormat, DType); 5] = [
        (TableFormat::F32, DType::F32),
        (TableFormat::BF16, DType::BF16),
        (TableFormat::F16, DType::F16),
        (TableFormat::Fp8E4m3Ue8m0, DType::F32),
        (TableFormat::Fp8E4m3Ue8m0, DType::BF16),
    ];
    /// Row width `D` in elements from the stored row width (bytes for fp8), if valid.
    pub fn row_dim(self, stored: usize) -> Option<usize> {
        match self {
            TableFormat::Fp8E4m3Ue8m0 => (stored % 33 == 0).then_some(stored / 33 * 32),
            _ => Some(stored),
        }
    }
    /// Stored row width (elements; bytes for fp8) for row dim `d`.
    pub fn stored_width(self, d: usize) -> usize {
        match self {
            TableFormat::Fp8E4m3Ue8m0 => d + d / 32,
            _ => d,
        }
    }
}

impl std::str::FromStr for TableFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            TableFormat::F32,
            TableFormat::BF16,
            TableFormat::F16,
            TableFormat::Fp8E4m3Ue8m0,
        ]
        .into_iter()
        .find(|f| f.name() == s)
        .ok_or_else(|| format!("unknown table format `{s}` (expected f32, bf16, f16, fp8_e4m3_ue8m0)"))
    }
}

/// Decode one OCP e4m3fn byte (bias 7, no infinities, `S.1111.111` is NaN) exactly to f32.
pub fn fp8_e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exp = (b >> 3) & 0x0f;
    let man = (b & 0x07) as f32;
    if exp == 0x0f && b & 0x07 == 0x07 {
        return f32::NAN;
    }
    if exp == 0 {
        sign * man / 8.0 * 2f32.powi(-6)
    } else {
        sign * (1.0 + man / 8.0) * 2f32.powi(exp as i32 - 7)
    }
}

/// Decode one UE8M0 scale byte: `2^(b - 127)` (byte 255 is NaN as in OCP E8M0; 0 is 2^-127).
pub fn ue8m0_to_f32(b: u8) -> f32 {
    if b == 0xff {
        f32::NAN
    } else {
        // 2^(b-127) spans 2^-127..2^127: build it exactly from the exponent bits (b = 0 is subnormal).
        if b == 0 {
            f32::from_bits(0x0040_0000)
        } else {
            f32::from_bits((b as u32) << 23)
        }
    }
}

/// Dequantize one fp8 element with its row-block scale, exactly: the product of an e4m3 value
/// (at most 4 significant bits) and a power of two is exact in f32, or overflows to infinity.
/// NaN in either yields the canonical quiet NaN (`0x7fc0_0000`), so outputs are bitwise
/// reproducible on every backend.
pub fn fp8_dequant(fp8: u8, scale: u8) -> f32 {
    let (v, s) = (fp8_e4m3_to_f32(fp8), ue8m0_to_f32(scale));
    if v.is_nan() || s.is_nan() {
        f32::NAN
    } else {
        v * s
    }
}

/// Arguments of `gather_rows`.
#[derive(Debug)]
pub struct GatherRows<'a> {
    /// `[R, W]` table; `W = D` for dense formats, `W = D + D/32` bytes for fp8.
    pub table: TensorRef<'a>,
    /// Storage format of `table`.
    pub format: TableFormat,
    /// `[T, C]` i64 row indices, each in `[0, R)`.
    pub rows: TensorRef<'a>,
    /// `[T, C*D]` output: the table's dtype for dense formats, f32 or bf16 for fp8.
    pub out: TensorMut<'a>,
}

/// Validate a table + output pair for `op`; returns `(R, D)`.
pub(crate) fn check_table(
    op: &'static str,
    table: &TensorRef<'_>,
    format: TableFormat,
    out: &TensorMut<'_>,
    t: usize,
    c: usize,
) -> Result<(usize, usize)> {
    table.check(op, "table", &[format.storage_dtype()], 2)?;
    let (r, w) = (table.shape()[0], table.shape()[1]);
    let d = format.row_dim(w).ok_or_else(|| {
        Error::invalid(
            op,
            "table",
            format!("fp8_e4m3_ue8m0 row of {w} bytes is not D + D/32 for a D divisible by 32"),
        )
    })?;
    out.check(op, "out", format.out_dtypes(), 2)?;
    expect_dim(op, "out", out.shape(), 0, t, "T, from rows")?;
    let width = c
        .checked_mul(d)
        .ok_or_else(|| Error::invalid(op, "out", format!("C*D = {c}*{d} overflows")))?;
    expect_dim(op, "out", out.shape(), 1, width, "C*D")?;
    check_writable(op, "out", out)?;
    Ok((r, d))
}

impl<'a> GatherRows<'a> {
    /// `(T, C, R, D)`.
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        let (t, c) = (self.rows.shape()[0], self.rows.shape()[1]);
        let r = self.table.shape()[0];
        let d = self.format.row_dim(self.table.shape()[1]).unwrap_or(0);
        (t, c, r, d)
    }

    /// The support-matrix key of this call.
    pub fn desc(&self) -> OpDesc {
        OpDesc::GatherRows {
            table: self.format,
            out: self.out.dtype(),
            host_table: host_table(&self.table, &self.out),
        }
    }

    /// Check every rule of OPS.md §5 that does not depend on element values.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field at fault.
    pub fn validate(self) -> Result<Checked<Self>> {
        self.rows.check(OP, "rows", &[DType::I64], 2)?;
        let (t, c) = (self.rows.shape()[0], self.rows.shape()[1]);
        check_table(OP, &self.table, self.format, &self.out, t, c)?;
        Ok(Checked::new(self))
    }
}

/// Whether `table` is host memory while `out` is on a device (the Engram offload case).
pub(crate) fn host_table(table: &TensorRef<'_>, out: &TensorMut<'_>) -> bool {
    table.buffer().location() == Location::Host && out.buffer().location() != Location::Host
}

/// Check row indices: each in `[0, R)`.
///
/// # Errors
/// [`Error::InvalidArgument`] on field `rows`.
pub fn check_rows(op: &'static str, rows: &[i64], table_rows: usize) -> Result<()> {
    match rows.iter().position(|&r| r < 0 || r >= table_rows as i64) {
        None => Ok(()),
        Some(p) => Err(Error::invalid(
            op,
            "rows",
            format!("rows[{p}] = {} outside [0, R = {table_rows})", rows[p]),
        )),
    }
}
