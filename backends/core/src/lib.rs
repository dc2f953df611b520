//! moehal-core: the op contract of moehal in code.
#![warn(missing_docs)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("moehal needs a 64-bit target: every index product is 64-bit (OPS.md, Conventions)");

pub mod engram;
pub mod error;

pub use error::{Error, Result};
