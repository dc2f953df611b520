//! Openers of the backend crates compiled into this build (features `cpu`, `cuda`, `ascend`).

#[allow(unused_imports)]
use std::sync::Arc;

#[allow(unused_imports)]
use moehal_core::{Backend, Result};

/// Open the CPU SIMD backend: the best instruction set of this machine, threads from the
/// process-wide pool (`MOEHAL_CPU_THREADS`, default all cores).
#[cfg(feature = "cpu")]
pub fn open_cpu() -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(moehal_cpu::CpuBackend::new()))
}

/// Open CUDA device 0.
#[cfg(feature = "cuda")]
pub fn open_cuda() -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(moehal_cuda::open(0)?))
}

/// Open the Ascend backend: libraries from `MOEHAL_ASCEND_LIB_DIR`, `ASCEND_HOME_PATH`,
/// `ASCEND_TOOLKIT_HOME`, `LD_LIBRARY_PATH`, then the standard install roots.
#[cfg(feature = "ascend")]
pub fn open_ascend() -> Result<Arc<dyn Backend>> {
    moehal_ascend::open()
}
