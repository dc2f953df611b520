//! moehal: a hardware-abstraction kernel toolkit for sparse (MoE / Engram) inference.
//!
//! One [`Backend`](moehal_core::Backend) trait, backends for CPU SIMD, CUDA and Ascend, every one
//! checked against the reference. This facade adds the [`registry::Registry`] (which backends this
//! machine has), model presets, the validation harness, and the pipelines behind the `moehal` CLI.
#![warn(missing_docs)]

pub mod backends;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod harness;
pub mod pipeline;
pub mod presets;
pub mod registry;

pub use moehal_core as core;
pub use moehal_core::{ops, Backend, BackendExt, Buffer, DType, Error, OpDesc, OpKind, Reference, Result, Support};
pub use registry::Registry;
