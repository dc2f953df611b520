//! Reference `moe_combine`.

use crate::host::{slice, slice_mut};
use crate::ops::moe_combine::{check_slot_rows, MoeCombine};
use crate::{dispatch_float, Error, Float, Result};

const OP: &str = "moe_combine";

pub(super) fn run(mut a: MoeCombine<'_>) -> Result<()> {
    let slot_row = slice::<i64>(&a.slot_row, OP, "slot_row")?;
    check_slot_rows(slot_row, a.dims().3)?;
    dispatch_float!(a.y_perm.dtype(), T => typed::<T>(&mut a, slot_row),
        else => Err(Error::unsupported(OP, "reference", format!("dtype {}", a.y_perm.dtype()))))
}

fn typed<T: Float>(a: &mut MoeCombine<'_>, slot_row: &[i64]) -> Result<()> {
    let (t, k, h, _) = a.dims();
    let y = slice::<T>(&a.y_perm, OP, "y_perm")?;
    let w = slice::<f32>(&a.weights, OP, "weights")?;
    let out = slice_mut::<T>(&mut a.out, OP, "out")?;
    for ti in 0..t {
        for c in 0..h {
            let mut acc = 0f64;
            for j in 0..k {
                let r = slot_row[ti * k + j];
                if r >= 0 {
                    acc += w[ti * k + j] as f64 * y[r as usize * h + c].to_f64();
                }
            }
            out[ti * h + c] = T::from_f64(acc);
        }
    }
    Ok(())
}
