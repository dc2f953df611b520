//! Reference `gather_rows`: copy rows; fp8 rows are dequantized element by element.

use crate::host::{bytes, slice, slice_mut};
use crate::ops::gather_rows::{check_rows, fp8_dequant};
use crate::ops::{GatherRows, TableFormat};
use crate::{DType, Error, Float, Result, TensorMut, TensorRef};
use half::bf16;

pub(super) fn run(mut a: GatherRows<'_>) -> Result<()> {
    const OP: &str = "gather_rows";
    let rows = slice::<i64>(&a.rows, OP, "rows")?;
    let c = a.rows.shape()[1];
    gather(OP, &a.table, a.format, rows, c, &mut a.out)
}

/// Gather `rows` (`[T, C]`, flattened) from `table` into `out` (`[T, C*D]`), checking every index
/// first.
pub(super) fn gather(
    op: &'static str,
    table: &TensorRef<'_>,
    format: TableFormat,
    rows: &[i64],
    c: usize,
    out: &mut TensorMut<'_>,
) -> Result<()> {
    let (r, w) = (table.shape()[0], table.shape()[1]);
    check_rows(op, rows, r)?;
    let d = format.row_dim(w).unwrap_or(0);
    debug_assert_eq!(rows.len() % c.max(1), 0);
    match format {
        TableFormat::Fp8E4m3Ue8m0 => {
            let tb = &bytes(table.buffer(), op, "table")?[table.offset()..];
            let deq = |row: usize, i: usize| fp8_dequant(tb[row * w + i], tb[row * w + d + i / 32]);
            match out.dtype() {
                DType::F32 => fill(slice_mut::<f32>(out, op, "out")?, rows, d, deq),
                DType::BF16 => fill(slice_mut::<bf16>(out, op, "out")?, rows, d, |row, i| {
                    bf16::from_f64(deq(row, i) as f64)
                }),
                other => return Err(Error::unsupported(op, "reference", format!("fp8 table to {other}"))),
            }
        }
        _ => {
            // A copy: move the bytes of each row.
            let es = table.dtype().size();
            let tb = &bytes(table.buffer(), op, "table")?[table.offset() * es..];
            let (dt, off) = (out.dtype(), out.offset());
            let dst = crate::host::bytes_mut(out.buffer_mut(), op, "out")?;
            let dst = &mut dst[off * dt.size()..];
            let row_bytes = d * es;
            for (i, &row) in rows.iter().enumerate() {
                dst[i * row_bytes..][..row_bytes].copy_from_slice(&tb[row as usize * row_bytes..][..row_bytes]);
            }
        }
    }
    Ok(())
}

fn fill<T: Float>(out: &mut [T], rows: &[i64], d: usize, mut f: impl FnMut(usize, usize) -> T) {
    for (i, &row) in rows.iter().enumerate() {
        for e in 0..d {
            out[i * d + e] = f(row as usize, e);
        }
    }
}
