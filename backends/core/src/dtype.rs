//! Element types and the one place that maps Rust types to [`DType`].

use half::{bf16, f16};

/// Element type of a tensor (OPS.md, Conventions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16 (`half::f16`).
    F16,
    /// bfloat16 (`half::bf16`).
    BF16,
    /// Signed 32-bit integer (router ids).
    I32,
    /// Signed 64-bit integer (offsets, rows, token ids).
    I64,
    /// Unsigned byte (masks, fp8 tables, packed quantized codes).
    U8,
    /// Signed byte (int8 quantized weights and activations, OPS.md §6).
    I8,
}

impl DType {
    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::U8 | DType::I8 => 1,
        }
    }

    /// The floating types an op may compute in (`f32`, `f16`, `bf16`).
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// Short lowercase name used in tables and JSON (`"bf16"`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::I8 => "i8",
        }
    }

    /// Every dtype, in declaration order.
    pub const ALL: [DType; 7] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::I8,
    ];

    /// The three floating compute types.
    pub const FLOATS: [DType; 3] = [DType::F32, DType::BF16, DType::F16];
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DType::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown dtype `{s}` (expected one of f32, f16, bf16, i32, i64, u8, i8)"))
    }
}

/// A Rust type that is the storage of one [`DType`].
pub trait Element: bytemuck::Pod + Send + Sync + std::fmt::Debug + 'static {
    /// The matching dtype.
    const DTYPE: DType;
}

/// A floating element: widened to f32 for arithmetic, rounded once (round-to-nearest-even) on output.
pub trait Float: Element + PartialEq {
    /// Exact widening to f32.
    fn to_f32(self) -> f32;
    /// Round an f32 to this type (nearest-even).
    fn from_f32(v: f32) -> Self;
    /// Exact widening to f64.
    fn to_f64(self) -> f64 {
        self.to_f32() as f64
    }
    /// Round an f64 to this type in one step (nearest-even), as the reference does.
    fn from_f64(v: f64) -> Self;
}

macro_rules! element {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
        }
    };
}
element!(f32, F32);
element!(f16, F16);
element!(bf16, BF16);
element!(i32, I32);
element!(i64, I64);
element!(u8, U8);
element!(i8, I8);

impl Float for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}
impl Float for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
}
impl Float for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
}

/// Dispatch a generic body over the three floating dtypes, in one place.
///
/// `dispatch_float!(dtype, T => expr)` evaluates `expr` with `T` bound to `f32`, `half::bf16` or
/// `half::f16`; any other dtype evaluates the `else` expression.
#[macro_export]
macro_rules! dispatch_float {
    ($dt:expr, $T:ident => $body:expr, else => $other:expr) => {
        match $dt {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::BF16 => {
                type $T = $crate::half::bf16;
                $body
            }
            $crate::DType::F16 => {
                type $T = $crate::half::f16;
                $body
            }
            _ => $other,
        }
    };
}
