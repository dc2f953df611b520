//! Reference for OPS.md §6: quantized `grouped_gemm` from decoded values with f64 accumulation,
//! and the quantize ops through the shared scalar rules of [`crate::quant`].

use crate::host::{slice, slice_mut};
use crate::ops::grouped_gemm::check_group_end;
use crate::ops::quant::{ActFormat, GroupedGemmQ, QuantizeFp8, QuantizeInt8, WeightFormat};
use crate::quant::{
    e2m1_to_f32, e4m3_to_f32, e8m0_to_f32, nibble, quantize_fp8_group, quantize_int8_row, ScaleFormat, FP8_BLOCK,
    MXFP4_BLOCK,
};
use crate::{dispatch_float, DType, Error, Float, Result, TensorRef};

const OP: &str = "grouped_gemm";

/// Scale values of a scale tensor (f32, or E8M0 bytes decoded), in f32.
pub(crate) fn scales(t: &TensorRef<'_>, op: &'static str, field: &'static str) -> Result<Vec<f32>> {
    Ok(match t.dtype() {
        DType::U8 => slice::<u8>(t, op, field)?.iter().map(|&b| e8m0_to_f32(b)).collect(),
        _ => slice::<f32>(t, op, field)?.to_vec(),
    })
}

/// Dequantized weight `W[g, n, k]` in f32 (OPS.md §6 table: the product rounded once in f32).
pub struct Dequant<'a> {
    format: WeightFormat,
    w: &'a [u8],
    scale: Vec<f32>,
    n: usize,
    k: usize,
}

impl<'a> Dequant<'a> {
    /// Read `w` and `w_scale` of a validated call.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the views are not host memory.
    pub fn new(a: &GroupedGemmQ<'a>) -> Result<Self> {
        let d = a.dims();
        let w: &'a [u8] = match a.w.dtype() {
            DType::I8 => bytemuck::cast_slice(slice::<i8>(&a.w, OP, "w")?),
            _ => slice::<u8>(&a.w, OP, "w")?,
        };
        Ok(Dequant {
            format: a.w_format,
            w,
            scale: scales(&a.w_scale, OP, "w_scale")?,
            n: d.n,
            k: d.k,
        })
    }

    /// The quantized element's decoded value (before its scale).
    pub fn code(&self, g: usize, n: usize, k: usize) -> f32 {
        match self.format {
            WeightFormat::Fp8Block => e4m3_to_f32(self.w[(g * self.n + n) * self.k + k]),
            WeightFormat::Mxfp4 => {
                let row = (g * self.n + n) * (self.k / 2);
                e2m1_to_f32(nibble(&self.w[row..row + self.k / 2], k))
            }
            WeightFormat::Int8 => self.w[(g * self.n + n) * self.k + k] as i8 as f32,
        }
    }

    /// The scale of element `(g, n, k)`.
    pub fn scale(&self, g: usize, n: usize, k: usize) -> f32 {
        match self.format {
            WeightFormat::Fp8Block => {
                let (nb, kb) = (self.n.div_ceil(FP8_BLOCK), self.k.div_ceil(FP8_BLOCK));
                self.scale[(g * nb + n / FP8_BLOCK) * kb + k / FP8_BLOCK]
            }
            WeightFormat::Mxfp4 => {
                let kb = self.k / MXFP4_BLOCK;
                self.scale[(g * self.n + n) * kb + k / MXFP4_BLOCK]
            }
            WeightFormat::Int8 => self.scale[g * self.n + n],
        }
    }

    /// `W[g, n, k]`: code × scale, rounded once in f32.
    pub fn get(&self, g: usize, n: usize, k: usize) -> f32 {
        self.code(g, n, k) * self.scale(g, n, k)
    }
}

pub(super) fn grouped_gemm(a: GroupedGemmQ<'_>) -> Result<()> {
    let group_end = slice::<i64>(&a.group_end, OP, "group_end")?;
    check_group_end(group_end, a.dims().m)?;
    let ydt = a.y.dtype();
    dispatch_float!(ydt, Y => typed::<Y>(a, group_end),
        else => Err(Error::unsupported(OP, "reference", format!("y dtype {ydt}"))))
}

/// `acc[r, n]` for every (r, n) of a group, by pairing. Sums start at +0 (as §1's reference does):
/// `Iterator::sum` of f64 starts at -0, which made `K = 0` write -0 instead of zeros.
fn typed<Y: Float>(mut a: GroupedGemmQ<'_>, group_end: &[i64]) -> Result<()> {
    let d = a.dims();
    let (n, k) = (d.n, d.k);
    let wq = Dequant::new(&a)?;
    let row_scale = a
        .row_scale
        .as_ref()
        .map(|t| slice::<f32>(t, OP, "row_scale"))
        .transpose()?;
    let bias = a.bias.as_ref().map(|t| slice::<Y>(t, OP, "bias")).transpose()?;
    let xs = a.x_scale.as_ref().map(|t| scales(t, OP, "x_scale")).transpose()?;
    // Activations as f64 values (weight-only: the float x; fp8: decoded e4m3; int8: the integer).
    let xv: Vec<f64> = match a.act() {
        ActFormat::Float(dt) => {
            dispatch_float!(dt, T => slice::<T>(&a.x, OP, "x")?.iter().map(|v| v.to_f64()).collect(),
            else => return Err(Error::unsupported(OP, "reference", format!("x dtype {dt}"))))
        }
        ActFormat::Fp8 => slice::<u8>(&a.x, OP, "x")?
            .iter()
            .map(|&b| e4m3_to_f32(b) as f64)
            .collect(),
        ActFormat::Int8 => slice::<i8>(&a.x, OP, "x")?.iter().map(|&v| v as f64).collect(),
    };
    let act = a.act();
    let y = slice_mut::<Y>(&mut a.y, OP, "y")?;
    let kb = k.div_ceil(FP8_BLOCK);
    let mut start = 0usize;
    for (g, &end) in group_end.iter().enumerate() {
        let end = end as usize;
        for r in start..end {
            let xr = &xv[r * k..(r + 1) * k];
            for ni in 0..n {
                let mut acc = match act {
                    ActFormat::Float(_) => (0..k)
                        .map(|ki| xr[ki] * wq.get(g, ni, ki) as f64)
                        .fold(0f64, |s, v| s + v),
                    ActFormat::Fp8 => {
                        let xs = xs.as_deref().unwrap_or(&[]);
                        let mut acc = 0f64;
                        for b in 0..kb {
                            let k1 = ((b + 1) * FP8_BLOCK).min(k);
                            let inner: f64 = (b * FP8_BLOCK..k1)
                                .map(|ki| xr[ki] * wq.code(g, ni, ki) as f64)
                                .fold(0f64, |s, v| s + v);
                            acc += xs[r * kb + b] as f64 * wq.scale(g, ni, b * FP8_BLOCK) as f64 * inner;
                        }
                        acc
                    }
                    ActFormat::Int8 => {
                        let xs = xs.as_deref().unwrap_or(&[]);
                        let inner: f64 = (0..k)
                            .map(|ki| xr[ki] * wq.code(g, ni, ki) as f64)
                            .fold(0f64, |s, v| s + v);
                        xs[r] as f64 * wq.scale(g, ni, 0) as f64 * inner
                    }
                };
                if let Some(b) = bias {
                    acc += b[g * n + ni].to_f64();
                }
                if let Some(s) = row_scale {
                    acc *= s[r] as f64;
                }
                y[r * n + ni] = Y::from_f64(acc);
            }
        }
        start = end;
    }
    Ok(())
}

/// Rows of a float tensor widened to f32.
fn rows_f32(t: &TensorRef<'_>, op: &'static str) -> Result<Vec<f32>> {
    let dt = t.dtype();
    dispatch_float!(dt, T => Ok(slice::<T>(t, op, "x")?.iter().map(|v| v.to_f32()).collect()),
        else => Err(Error::unsupported(op, "reference", format!("x dtype {dt}"))))
}

pub(super) fn quantize_fp8(mut a: QuantizeFp8<'_>) -> Result<()> {
    const OP: &str = "quantize_fp8";
    let (m, k) = (a.x.shape()[0], a.x.shape()[1]);
    let x = rows_f32(&a.x, OP)?;
    let fmt = a.scale_format();
    let kb = k.div_ceil(FP8_BLOCK);
    let mut q = vec![0u8; m * k];
    let mut s = vec![0f32; m * kb];
    let mut sb = vec![0u8; m * kb];
    for r in 0..m {
        for b in 0..kb {
            let (k0, k1) = (r * k + b * FP8_BLOCK, r * k + ((b + 1) * FP8_BLOCK).min(k));
            let (sv, byte) = quantize_fp8_group(&x[k0..k1], fmt, &mut q[k0..k1]);
            s[r * kb + b] = sv;
            sb[r * kb + b] = byte;
        }
    }
    slice_mut::<u8>(&mut a.xq, OP, "xq")?.copy_from_slice(&q);
    match fmt {
        ScaleFormat::F32 => slice_mut::<f32>(&mut a.x_scale, OP, "x_scale")?.copy_from_slice(&s),
        ScaleFormat::Ue8m0 => slice_mut::<u8>(&mut a.x_scale, OP, "x_scale")?.copy_from_slice(&sb),
    }
    Ok(())
}

pub(super) fn quantize_int8(mut a: QuantizeInt8<'_>) -> Result<()> {
    const OP: &str = "quantize_int8";
    let (m, k) = (a.x.shape()[0], a.x.shape()[1]);
    let x = rows_f32(&a.x, OP)?;
    let mut q = vec![0i8; m * k];
    let mut s = vec![0f32; m];
    for r in 0..m {
        s[r] = quantize_int8_row(&x[r * k..(r + 1) * k], &mut q[r * k..(r + 1) * k]);
    }
    slice_mut::<i8>(&mut a.xq, OP, "xq")?.copy_from_slice(&q);
    slice_mut::<f32>(&mut a.x_scale, OP, "x_scale")?.copy_from_slice(&s);
    Ok(())
}
