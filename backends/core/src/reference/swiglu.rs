//! Reference `swiglu`.

use crate::host::{slice, slice_mut};
use crate::ops::Swiglu;
use crate::{dispatch_float, Error, Float, Result};

const OP: &str = "swiglu";

pub(super) fn run(mut a: Swiglu<'_>) -> Result<()> {
    dispatch_float!(a.h.dtype(), T => typed::<T>(&mut a),
        else => Err(Error::unsupported(OP, "reference", format!("dtype {}", a.h.dtype()))))
}

/// `silu(min(gate, limit)) * clamp(up, -limit, limit)`; a NaN stays NaN (no `f64::min`, which
/// would drop it).
pub(crate) fn swiglu_f64(gate: f64, up: f64, limit: Option<f32>) -> f64 {
    let (gate, up) = match limit {
        Some(l) => {
            let l = l as f64;
            (if gate > l { l } else { gate }, up.clamp(-l, l))
        }
        None => (gate, up),
    };
    gate / (1.0 + (-gate).exp()) * up
}

fn typed<T: Float>(a: &mut Swiglu<'_>) -> Result<()> {
    let (m, i) = a.dims();
    let h = slice::<T>(&a.h, OP, "h")?;
    let limit = a.limit;
    let out = slice_mut::<T>(&mut a.out, OP, "out")?;
    for r in 0..m {
        for c in 0..i {
            let gate = h[r * 2 * i + c].to_f64();
            let up = h[r * 2 * i + i + c].to_f64();
            out[r * i + c] = T::from_f64(swiglu_f64(gate, up, limit));
        }
    }
    Ok(())
}
