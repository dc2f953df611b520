//! Reference `grouped_gemm`: a triple loop per group, f64 accumulation, one rounding.

use crate::host::{slice, slice_mut};
use crate::ops::grouped_gemm::{check_group_end, GroupedGemm, WeightLayout};
use crate::{dispatch_float, Error, Float, Result};

const OP: &str = "grouped_gemm";

pub(super) fn run(mut a: GroupedGemm<'_>) -> Result<()> {
    let group_end = slice::<i64>(&a.group_end, OP, "group_end")?;
    check_group_end(group_end, a.dims().m)?;
    dispatch_float!(a.x.dtype(), T => typed::<T>(&mut a, group_end),
        else => Err(Error::unsupported(OP, "reference", format!("dtype {}", a.x.dtype()))))
}

fn typed<T: Float>(a: &mut GroupedGemm<'_>, group_end: &[i64]) -> Result<()> {
    let d = a.dims();
    let (n, k) = (d.n, d.k);
    let x = slice::<T>(&a.x, OP, "x")?;
    let w = slice::<T>(&a.w, OP, "w")?;
    let row_scale = a
        .row_scale
        .as_ref()
        .map(|t| slice::<f32>(t, OP, "row_scale"))
        .transpose()?;
    let bias = a.bias.as_ref().map(|t| slice::<T>(t, OP, "bias")).transpose()?;
    let layout = a.layout;
    let y = slice_mut::<T>(&mut a.y, OP, "y")?;
    let weight = |g: usize, ni: usize, ki: usize| -> f64 {
        let idx = match layout {
            WeightLayout::NK => (g * n + ni) * k + ki,
            WeightLayout::KN => (g * k + ki) * n + ni,
        };
        w[idx].to_f64()
    };
    let mut start = 0usize;
    for (g, &end) in group_end.iter().enumerate() {
        let end = end as usize;
        for r in start..end {
            for ni in 0..n {
                let mut acc = 0f64;
                for ki in 0..k {
                    acc += x[r * k + ki].to_f64() * weight(g, ni, ki);
                }
                if let Some(b) = bias {
                    acc += b[g * n + ni].to_f64();
                }
                if let Some(s) = row_scale {
                    acc *= s[r] as f64;
                }
                y[r * n + ni] = T::from_f64(acc);
            }
        }
        start = end;
    }
    Ok(())
}
