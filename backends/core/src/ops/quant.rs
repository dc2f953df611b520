//! OPS.md §6: `grouped_gemm` with quantized operands ([`GroupedGemmQ`]) and the activation quantize
//! ops ([`QuantizeFp8`], [`QuantizeInt8`]).
//!
//! Quantized weights are always in layout `NK` (`[G, N, K]`, as checkpoints store them). The
//! element formats, the pairing rules and the formulas are those of OPS.md §6; the scalar codecs
//! are in [`crate::quant`]. A scale tensor's format is read from its dtype: f32 is an f32 scale,
//! u8 is E8M0 bytes.
//!
//! Support is keyed by [`QuantDesc`] and asked through
//! [`Backend::supports_quant`](crate::Backend::supports_quant); backends without kernels answer `No` with the reason.

use super::{check_writable, expect_dim, Checked, GemmDims};
use crate::quant::{ScaleFormat, FP8_BLOCK, INT8_MAX_K, MXFP4_BLOCK};
use crate::{DType, Error, Result, TensorMut, TensorRef};

const OP: &str = "grouped_gemm";

/// A quantized weight format of OPS.md §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightFormat {
    /// u8 `[G, N, K]` E4M3FN, scale f32 or E8M0 `[G, ⌈N/128⌉, ⌈K/128⌉]` (DeepSeek V3/V4 fp8).
    Fp8Block,
    /// u8 `[G, N, K/2]` packed E2M1 pairs (low nibble = even k), scale E8M0 `[G, N, K/32]`.
    Mxfp4,
    /// i8 `[G, N, K]`, scale f32 `[G, N]` per output channel (Ascend W8A8).
    Int8,
}

impl WeightFormat {
    /// Every format.
    pub const ALL: [WeightFormat; 3] = [WeightFormat::Fp8Block, WeightFormat::Mxfp4, WeightFormat::Int8];
    /// Name as OPS.md writes it (`"fp8_block"`, `"mxfp4"`, `"int8"`).
    pub const fn name(self) -> &'static str {
        match self {
            WeightFormat::Fp8Block => "fp8_block",
            WeightFormat::Mxfp4 => "mxfp4",
            WeightFormat::Int8 => "int8",
        }
    }
    /// The dtype of the weight tensor (u8, or i8 for `Int8`).
    pub const fn dtype(self) -> DType {
        match self {
            WeightFormat::Int8 => DType::I8,
            _ => DType::U8,
        }
    }
    /// Shape of `w` for `groups` experts of `n` × `k` (`k` in elements; MXFP4 holds `k / 2` bytes).
    pub fn w_shape(self, groups: usize, n: usize, k: usize) -> [usize; 3] {
        match self {
            WeightFormat::Mxfp4 => [groups, n, k / 2],
            _ => [groups, n, k],
        }
    }
    /// Shape of `w_scale` for `groups` experts of `n` × `k`.
    pub fn scale_shape(self, groups: usize, n: usize, k: usize) -> Vec<usize> {
        match self {
            WeightFormat::Fp8Block => vec![groups, n.div_ceil(FP8_BLOCK), k.div_ceil(FP8_BLOCK)],
            WeightFormat::Mxfp4 => vec![groups, n, k / MXFP4_BLOCK],
            WeightFormat::Int8 => vec![groups, n],
        }
    }

    /// Bytes of `[groups, n, k]` weights in this format, codes and scales (f32 scales for
    /// `fp8_block` and `int8`, E8M0 bytes for `mxfp4`): what a kernel streams and a host holds.
    /// `mxfp4` with `k % 32 != 0` is not a valid shape; the count is then of `k / 32` scales.
    pub fn bytes(self, groups: usize, n: usize, k: usize) -> usize {
        let codes: usize = self.w_shape(groups, n, k).iter().product();
        let scales: usize = self.scale_shape(groups, n, k).iter().product();
        codes
            + scales
                * match self {
                    WeightFormat::Mxfp4 => 1,
                    _ => 4,
                }
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        WeightFormat::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| format!("unknown weight format `{s}` (expected fp8_block, mxfp4 or int8)"))
    }
}

/// The activation side of a quantized `grouped_gemm` (OPS.md §6 pairings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActFormat {
    /// Float `x` (f32/bf16/f16), weight-only (`w8a16`, `w4a16`); `y` has `x`'s dtype.
    Float(DType),
    /// u8 E4M3FN `x [M, K]` with `x_scale [M, ⌈K/128⌉]` (f32 or E8M0); pairs with `fp8_block`.
    Fp8,
    /// i8 `x [M, K]` with f32 `x_scale [M]`; pairs with `int8`.
    Int8,
}

impl ActFormat {
    /// Short name (`"bf16"`, `"fp8"`, `"int8"`).
    pub fn name(self) -> String {
        match self {
            ActFormat::Float(d) => d.name().to_string(),
            ActFormat::Fp8 => "fp8".into(),
            ActFormat::Int8 => "int8".into(),
        }
    }
    /// The activation format of an `x` of `dtype`: u8 is E4M3, i8 is int8, floats are floats.
    pub fn of_dtype(dtype: DType) -> Option<ActFormat> {
        match dtype {
            DType::U8 => Some(ActFormat::Fp8),
            DType::I8 => Some(ActFormat::Int8),
            d if d.is_float() => Some(ActFormat::Float(d)),
            _ => None,
        }
    }
    /// Whether OPS.md §6 pairs these activations with weights of `w`.
    pub fn pairs_with(self, w: WeightFormat) -> bool {
        match self {
            ActFormat::Float(_) => true,
            ActFormat::Fp8 => w == WeightFormat::Fp8Block,
            ActFormat::Int8 => w == WeightFormat::Int8,
        }
    }
}

/// What a quantized call needs from a backend, without its data: the key of the §6 support matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantDesc {
    /// `grouped_gemm` with quantized weights (layout NK).
    GroupedGemm {
        /// Weight format.
        w: WeightFormat,
        /// Activation format.
        x: ActFormat,
        /// Output dtype.
        y: DType,
    },
    /// `quantize_fp8` of `x` of `dtype` with scales in `scale`.
    QuantizeFp8 {
        /// Input dtype.
        dtype: DType,
        /// Scale format.
        scale: ScaleFormat,
    },
    /// `quantize_int8` of `x` of `dtype`.
    QuantizeInt8 {
        /// Input dtype.
        dtype: DType,
    },
}

impl QuantDesc {
    /// The op.
    pub const fn kind(&self) -> super::OpKind {
        match self {
            QuantDesc::GroupedGemm { .. } => super::OpKind::GroupedGemm,
            QuantDesc::QuantizeFp8 { .. } => super::OpKind::QuantizeFp8,
            QuantDesc::QuantizeInt8 { .. } => super::OpKind::QuantizeInt8,
        }
    }

    /// A short description of the variant (`"mxfp4 x bf16 -> bf16"`, `"bf16 -> e4m3 + ue8m0"`).
    pub fn variant(&self) -> String {
        match *self {
            QuantDesc::GroupedGemm { w, x, y } => format!("{w} x {} -> {y}", x.name()),
            QuantDesc::QuantizeFp8 { dtype, scale } => format!("{dtype} -> e4m3 + {}", scale.name()),
            QuantDesc::QuantizeInt8 { dtype } => format!("{dtype} -> i8 + f32"),
        }
    }

    /// Every variant OPS.md §6 names, for the support matrix (`moehal kernels`): each weight format
    /// with each float activation (weight-only), fp8 × fp8 and int8 × int8 into each float output,
    /// and the quantize ops on each float input.
    pub fn all() -> Vec<QuantDesc> {
        let mut v = Vec::new();
        for w in WeightFormat::ALL {
            for d in DType::FLOATS {
                v.push(QuantDesc::GroupedGemm {
                    w,
                    x: ActFormat::Float(d),
                    y: d,
                });
            }
        }
        for (w, x) in [
            (WeightFormat::Fp8Block, ActFormat::Fp8),
            (WeightFormat::Int8, ActFormat::Int8),
        ] {
            for y in DType::FLOATS {
                v.push(QuantDesc::GroupedGemm { w, x, y });
            }
        }
        for dtype in DType::FLOATS {
            for scale in [ScaleFormat::F32, ScaleFormat::Ue8m0] {
                v.push(QuantDesc::QuantizeFp8 { dtype, scale });
            }
        }
        for dtype in DType::FLOATS {
            v.push(QuantDesc::QuantizeInt8 { dtype });
        }
        v
    }
}

/// Arguments of `grouped_gemm` with quantized weights (OPS.md §6; everything of §1 holds).
///
/// `y[r, :] = row_scale[r] · (acc[r, :] + bias[g, :])` with `acc` formed per the pairing:
/// weight-only `x @ dequant(W_g)ᵀ` (dequantized weight formed in f32, one rounding); fp8 × fp8
/// `Σ_b x_scale[r, b] · w_scale[g, n/128, b] · Σ_{k∈b} e4m3(x)·e4m3(w)`; int8 × int8
/// `x_scale[r] · w_scale[g, n] · Σ_k x·w` (exact i32 inner sum).
#[derive(Debug)]
pub struct GroupedGemmQ<'a> {
    /// `[M, K]`: f32/bf16/f16 (weight-only), u8 E4M3FN (with `fp8_block`) or i8 (with `int8`).
    pub x: TensorRef<'a>,
    /// Activation scale: `[M, ⌈K/128⌉]` f32 or u8 E8M0 for u8 `x`; `[M]` f32 for i8 `x`; absent
    /// for float `x`.
    pub x_scale: Option<TensorRef<'a>>,
    /// Weight format.
    pub w_format: WeightFormat,
    /// Weights, layout NK: u8 `[G, N, K]` (fp8_block), u8 `[G, N, K/2]` (mxfp4), i8 `[G, N, K]` (int8).
    pub w: TensorRef<'a>,
    /// Weight scale: f32 or u8 E8M0 `[G, ⌈N/128⌉, ⌈K/128⌉]` (fp8_block), u8 E8M0 `[G, N, K/32]`
    /// (mxfp4), f32 `[G, N]` (int8).
    pub w_scale: TensorRef<'a>,
    /// `[G]` i64 cumulative group ends (OPS.md §1).
    pub group_end: TensorRef<'a>,
    /// Optional `[M]` f32 router weights, applied after the bias.
    pub row_scale: Option<TensorRef<'a>>,
    /// Optional `[G, N]` bias, in `y`'s dtype.
    pub bias: Option<TensorRef<'a>>,
    /// `[M, N]` output: `x`'s dtype for float `x`, else any of f32/bf16/f16.
    pub y: TensorMut<'a>,
}

impl<'a> GroupedGemmQ<'a> {
    /// Problem sizes (valid after [`validate`](Self::validate)).
    pub fn dims(&self) -> GemmDims {
        let ws = self.w.shape();
        GemmDims {
            m: self.x.shape()[0],
            n: ws[1],
            k: self.x.shape()[1],
            groups: ws[0],
        }
    }

    /// The activation format (from `x`'s dtype).
    pub fn act(&self) -> ActFormat {
        ActFormat::of_dtype(self.x.dtype()).unwrap_or(ActFormat::Float(self.x.dtype()))
    }

    /// The format of `w_scale` (f32 or E8M0, from its dtype).
    pub fn w_scale_format(&self) -> ScaleFormat {
        ScaleFormat::of_dtype(self.w_scale.dtype()).unwrap_or(ScaleFormat::F32)
    }

    /// The format of `x_scale` (f32 or E8M0, from its dtype), if present.
    pub fn x_scale_format(&self) -> Option<ScaleFormat> {
        self.x_scale.as_ref().and_then(|t| ScaleFormat::of_dtype(t.dtype()))
    }

    /// The support-matrix key of this call.
    pub fn desc(&self) -> QuantDesc {
        QuantDesc::GroupedGemm {
            w: self.w_format,
            x: self.act(),
            y: self.y.dtype(),
        }
    }

    /// Check every rule of OPS.md §6 (and §1) that does not depend on element values.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field at fault; an unpaired activation and weight
    /// format is [`Error::Unsupported`] (OPS.md: "other pairings are Unsupported").
    pub fn validate(self) -> Result<Checked<Self>> {
        self.x
            .check(OP, "x", &[DType::F32, DType::BF16, DType::F16, DType::U8, DType::I8], 2)?;
        let act = self.act();
        if !act.pairs_with(self.w_format) {
            return Err(Error::unsupported(
                OP,
                "any backend",
                format!(
                    "activations {} with {} weights: OPS.md §6 pairs fp8 x only with fp8_block and i8 x only with int8",
                    act.name(),
                    self.w_format
                ),
            ));
        }
        self.w.check(OP, "w", &[self.w_format.dtype()], 3)?;
        let (m, k) = (self.x.shape()[0], self.x.shape()[1]);
        let (groups, n) = (self.w.shape()[0], self.w.shape()[1]);
        let y_types: &[DType] = match act {
            ActFormat::Float(d) => &[d][..],
            _ => &DType::FLOATS[..],
        };
        self.y.check(OP, "y", y_types, 2)?;
        check_writable(OP, "y", &self.y)?;
        let ydt = self.y.dtype();
        match self.w_format {
            WeightFormat::Mxfp4 => {
                if k % MXFP4_BLOCK != 0 {
                    return Err(Error::invalid(
                        OP,
                        "x",
                        format!("K = {k}: mxfp4 needs K % 32 == 0 (one E8M0 scale per 32 elements)"),
                    ));
                }
                expect_dim(OP, "w", self.w.shape(), 2, k / 2, "K/2 packed bytes, from x")?;
            }
            _ => expect_dim(OP, "w", self.w.shape(), 2, k, "K, from x")?,
        }
        let scale_types: &[DType] = match self.w_format {
            WeightFormat::Fp8Block => &[DType::F32, DType::U8],
            WeightFormat::Mxfp4 => &[DType::U8],
            WeightFormat::Int8 => &[DType::F32],
        };
        let want = self.w_format.scale_shape(groups, n, k);
        self.w_scale.check(OP, "w_scale", scale_types, want.len())?;
        for (i, &d) in want.iter().enumerate() {
            expect_dim(OP, "w_scale", self.w_scale.shape(), i, d, "from w and K")?;
        }
        match (act, &self.x_scale) {
            (ActFormat::Float(_), Some(_)) => {
                return Err(Error::invalid(
                    OP,
                    "x_scale",
                    "float activations take no x_scale (weight-only pairing)",
                ))
            }
            (ActFormat::Float(_), None) => {}
            (_, None) => return Err(Error::invalid(OP, "x_scale", "quantized activations need x_scale")),
            (ActFormat::Fp8, Some(xs)) => {
                xs.check(OP, "x_scale", &[DType::F32, DType::U8], 2)?;
                expect_dim(OP, "x_scale", xs.shape(), 0, m, "M, from x")?;
                expect_dim(OP, "x_scale", xs.shape(), 1, k.div_ceil(FP8_BLOCK), "⌈K/128⌉, from x")?;
            }
            (ActFormat::Int8, Some(xs)) => {
                xs.check(OP, "x_scale", &[DType::F32], 1)?;
                expect_dim(OP, "x_scale", xs.shape(), 0, m, "M, from x")?;
            }
        }
        if act == ActFormat::Int8 && k > INT8_MAX_K {
            return Err(Error::invalid(
                OP,
                "x",
                format!("K = {k} exceeds {INT8_MAX_K}: the i32 sum of int8 products would overflow"),
            ));
        }
        self.group_end.check(OP, "group_end", &[DType::I64], 1)?;
        expect_dim(OP, "group_end", self.group_end.shape(), 0, groups, "G, from w")?;
        expect_dim(OP, "y", self.y.shape(), 0, m, "M, from x")?;
        expect_dim(OP, "y", self.y.shape(), 1, n, "N, from w")?;
        if let Some(rs) = &self.row_scale {
            rs.check(OP, "row_scale", &[DType::F32], 1)?;
            expect_dim(OP, "row_scale", rs.shape(), 0, m, "M, from x")?;
        }
        if let Some(b) = &self.bias {
            b.check(OP, "bias", &[ydt], 2)?;
            expect_dim(OP, "bias", b.shape(), 0, groups, "G, from w")?;
            expect_dim(OP, "bias", b.shape(), 1, n, "N, from w")?;
        }
        Ok(Checked::new(self))
    }
}

/// Arguments of `quantize_fp8` (OPS.md §6): per 1×128 group of each row, E4M3FN codes and a scale.
#[derive(Debug)]
pub struct QuantizeFp8<'a> {
    /// `[M, K]` f32/bf16/f16.
    pub x: TensorRef<'a>,
    /// `[M, K]` u8 E4M3FN output.
    pub xq: TensorMut<'a>,
    /// `[M, ⌈K/128⌉]` output scales: f32, or u8 E8M0 bytes (`ue8m0`: powers of two).
    pub x_scale: TensorMut<'a>,
}

impl QuantizeFp8<'_> {
    /// The scale format (from `x_scale`'s dtype).
    pub fn scale_format(&self) -> ScaleFormat {
        ScaleFormat::of_dtype(self.x_scale.dtype()).unwrap_or(ScaleFormat::F32)
    }
    /// The support-matrix key of this call.
    pub fn desc(&self) -> QuantDesc {
        QuantDesc::QuantizeFp8 {
            dtype: self.x.dtype(),
            scale: self.scale_format(),
        }
    }
    /// Check dtypes and shapes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field.
    pub fn validate(self) -> Result<Checked<Self>> {
        const OP: &str = "quantize_fp8";
        self.x.check(OP, "x", &DType::FLOATS, 2)?;
        let (m, k) = (self.x.shape()[0], self.x.shape()[1]);
        self.xq.check(OP, "xq", &[DType::U8], 2)?;
        check_writable(OP, "xq", &self.xq)?;
        expect_dim(OP, "xq", self.xq.shape(), 0, m, "M, from x")?;
        expect_dim(OP, "xq", self.xq.shape(), 1, k, "K, from x")?;
        self.x_scale.check(OP, "x_scale", &[DType::F32, DType::U8], 2)?;
        check_writable(OP, "x_scale", &self.x_scale)?;
        expect_dim(OP, "x_scale", self.x_scale.shape(), 0, m, "M, from x")?;
        expect_dim(
            OP,
            "x_scale",
            self.x_scale.shape(),
            1,
            k.div_ceil(FP8_BLOCK),
            "⌈K/128⌉, from x",
        )?;
        Ok(Checked::new(self))
    }
}

/// Arguments of `quantize_int8` (OPS.md §6): per row, i8 codes and one f32 scale.
#[derive(Debug)]
pub struct QuantizeInt8<'a> {
    /// `[M, K]` f32/bf16/f16.
    pub x: TensorRef<'a>,
    /// `[M, K]` i8 output.
    pub xq: TensorMut<'a>,
    /// `[M]` f32 output scales.
    pub x_scale: TensorMut<'a>,
}

impl QuantizeInt8<'_> {
    /// The support-matrix key of this call.
    pub fn desc(&self) -> QuantDesc {
        QuantDesc::QuantizeInt8 { dtype: self.x.dtype() }
    }
    /// Check dtypes and shapes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field.
    pub fn validate(self) -> Result<Checked<Self>> {
        const OP: &str = "quantize_int8";
        self.x.check(OP, "x", &DType::FLOATS, 2)?;
        let (m, k) = (self.x.shape()[0], self.x.shape()[1]);
        self.xq.check(OP, "xq", &[DType::I8], 2)?;
        check_writable(OP, "xq", &self.xq)?;
        expect_dim(OP, "xq", self.xq.shape(), 0, m, "M, from x")?;
        expect_dim(OP, "xq", self.xq.shape(), 1, k, "K, from x")?;
        self.x_scale.check(OP, "x_scale", &[DType::F32], 1)?;
        check_writable(OP, "x_scale", &self.x_scale)?;
        expect_dim(OP, "x_scale", self.x_scale.shape(), 0, m, "M, from x")?;
        Ok(Checked::new(self))
    }
}
