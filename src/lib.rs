//! moehal facade (being written).
pub use moehal_core as core;
