//! moehal: a hardware-abstraction kernel toolkit for sparse (MoE / Engram) inference.
//!
//! One [`Backend`] trait, backends for CPU SIMD, CUDA and Ascend, every one
//! checked against the reference. This facade adds the [`registry::Registry`] (which backends this
//! machine has), model presets, the validation harness, and the pipelines behind the `moehal` CLI (whose own code is the
//! binary, src/bin/moehal, built with the `cli` feature).
#![warn(missing_docs)]

pub mod backends;
pub mod bench;
pub mod bench_quant;
pub mod checkpoint;
pub mod pipeline;
pub mod registry;

pub use moehal_core as core;
pub use moehal_core::{ops, Backend, BackendExt, Buffer, DType, Error, OpDesc, OpKind, Reference, Result, Support};
pub use registry::Registry;

/// The conformance harness: the test kit (`tests/kit`, crate `moehal-testkit`), which `moehal
/// check`, `moehal bench` and every backend crate's tests share.
pub use moehal_testkit as harness;
/// Model presets of OPS.md (kept in the test kit, whose preset cases derive from them).
pub use moehal_testkit::presets;

/// The README's Rust example, compiled and run as a doctest so it cannot drift from the code.
#[cfg(all(doctest, feature = "cpu"))]
#[doc = include_str!("../README.md")]
mod readme_doctest {}
