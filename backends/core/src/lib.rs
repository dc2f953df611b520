//! moehal-core: the op contract of moehal (`OPS.md`) in code.
//!
//! - [`DType`], [`Element`], [`Float`]: element types (f32, f16, bf16 via `half`, i32, i64, u8, i8).
//! - [`Buffer`], [`TensorRef`], [`TensorMut`]: memory owned by a backend and typed views over it
//!   (shape, strides, offset; all 64-bit).
//! - [`ops`]: one argument struct per op with its validation; [`ops::OpDesc`] keys the support matrix.
//! - [`Backend`]: the trait every device implements; [`Reference`] is the oracle.
//! - [`quant`]: the quantized formats of OPS.md §6 (E2M1, E8M0, E4M3FN codecs, quantize rules);
//!   [`ops::GroupedGemmQ`], [`ops::QuantizeFp8`], [`ops::QuantizeInt8`] are their ops.
//! - [`engram`]: Engram layer configs, prime derivation and the DeepSeek-V4.1-Flash data.
//!
//! ```
//! use moehal_core::{Backend, BackendExt, DType, Reference};
//! use moehal_core::ops::Swiglu;
//!
//! let be = Reference::new();
//! let h = be.upload_slice(&[1.0f32, -2.0, 3.0, 0.5]).unwrap(); // [M=2, 2I=2]
//! let mut out = be.alloc(2 * 4).unwrap();
//! let args = Swiglu { h: h.view(DType::F32, &[2, 2]), out: out.view_mut(DType::F32, &[2, 1]), limit: None };
//! be.swiglu(args.validate().unwrap()).unwrap();
//! let y: Vec<f32> = be.download_vec(&out, 2).unwrap();
//! assert!((y[0] - 1.0 / (1.0 + (-1.0f32).exp()) * -2.0).abs() < 1e-6);
//! ```
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("moehal needs a 64-bit target: every index product is 64-bit (OPS.md, Conventions)");

pub mod backend;
pub mod conformance;
pub mod dtype;
pub mod engram;
pub mod error;
pub mod fence;
pub mod host;
pub mod ops;
pub mod quant;
pub mod reference;
pub mod tensor;

pub use backend::{Backend, BackendExt, DeviceInfo, Support};
pub use dtype::{DType, Element, Float};
pub use error::{Error, Result};
pub use half;
pub use ops::{Checked, OpDesc, OpKind};
pub use reference::Reference;
pub use tensor::{Buffer, DeviceMemory, Layout, Location, TensorMut, TensorRef};
