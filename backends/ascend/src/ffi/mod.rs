//! Everything unsafe of the backend, fenced in this module: loading the CANN libraries and the
//! resolved function table (`loader`), RAII wrappers (`runtime`: device/context/stream and memory;
//! `objects`: aclTensor / aclTensorList / aclIntArray / aclScalar, device memory), the two-phase call
//! (`aclnn`), and one file per aclnn op family with one safe method per op.

mod aclnn;
mod cast;
mod clamp;
mod elementwise;
mod finalize_routing;
mod gather;
mod gating_topk;
mod grouped_matmul;
mod init_routing;
mod loader;
mod mask;
mod math;
mod objects;
mod runtime;
mod scatter;
mod sort;

pub use aclnn::Outcome;
pub use loader::{lib_dir_problem, load, not_found_hint, search_dirs, Api, Loaded, OpVersions};
pub use objects::{DevMem, IntArray, Scalar, TDesc, Tensor, TensorList};
pub use runtime::Runtime;

/// Backend name used in errors.
pub const NAME: &str = "ascend";
