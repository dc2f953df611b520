//! moehal-ffi: the C ABI of moehal (`include/moehal.h`), built as a cdylib (`libmoehal_ffi.so`),
//! a staticlib (`libmoehal_ffi.a`) and an rlib.
//!
//! - Backends are listed and opened by name (`moehal_backend_count`, `moehal_backend_entry`,
//!   `moehal_backend_open`); memory is allocated, uploaded, downloaded and synchronized through
//!   the backend, or wrapped from an engine (`moehal_wrap_external`, `moehal_set_stream`).
//! - Every op of OPS.md takes its tensors as DLPack `DLTensor`s (no copy): each becomes a
//!   non-owning core buffer through the backend's `wrap_external` after its dtype, rank,
//!   contiguity, offset, alignment and device are checked, and outputs are checked not to
//!   overlap anything else.
//! - Every call returns a status code ([`types::MOEHAL_OK`], ...) and leaves a message for
//!   `moehal_last_error()` on failure; a Rust panic never crosses the boundary.
//!
//! All `unsafe` code lives in [`abi`]; [`tensor`] holds the (safe) descriptor checks.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
mod error;
pub mod tensor;
pub mod types;

pub use abi::{moehal_backend, moehal_buffer, moehal_engram_layer};
pub use types::*;
