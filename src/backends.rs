//! Openers of the backend crates compiled into this build (features `cpu`, `cuda`, `ascend`).

#[allow(unused_imports)]
use std::sync::Arc;

#[allow(unused_imports)]
use moehal_core::{Backend, Result};

/// Open the CPU SIMD backend: the best instruction set of this machine, threads from the
/// process-wide pool (`MOEHAL_CPU_THREADS`, default all cores).
#[cfg(feature = "cpu")]
pub fn open_cpu() -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(moehal_cpu::CpuBackend::open()?))
}

/// Validate every `MOEHAL_*` variable this build reads at run time (the table in README.md,
/// "Environment variables"): the CPU backend's (`MOEHAL_CPU_THREADS`, `MOEHAL_CPU_ISA`,
/// `MOEHAL_CPU_BF16`, see `moehal_cpu::env`), the Ascend emulator's `MOEHAL_ACL_EMU_MEM_CAP`
/// (bytes, an integer) and `MOEHAL_ASCEND_LIB_DIR` (a directory). Returns the warnings (valid
/// but probably unintended values, such as more CPU threads than cores) for the caller to print.
///
/// # Errors
/// `InvalidArgument` (op `env`, field = the variable) naming the value and the accepted values.
pub fn check_env() -> Result<Vec<String>> {
    #[allow(unused_mut)]
    let mut warnings = Vec::new();
    #[cfg(feature = "cpu")]
    warnings.extend(moehal_cpu::env::check()?.warnings);
    const MEM_CAP: &str = "MOEHAL_ACL_EMU_MEM_CAP";
    if let Some(v) = std::env::var_os(MEM_CAP) {
        let v = v.to_string_lossy();
        if v.trim().parse::<u64>().is_err() {
            return Err(moehal_core::Error::invalid(
                "env",
                MEM_CAP,
                format!("{MEM_CAP}={v:?} is not valid; accepted values: a byte count (a non-negative integer)"),
            ));
        }
    }
    if let Some(v) = std::env::var_os("MOEHAL_ASCEND_LIB_DIR") {
        // One wording with the Ascend loader's reason (issue 16: a file was "not a directory" here
        // and "searched first" there); the loader skips such a value.
        if let Some(problem) = lib_dir_problem(std::path::Path::new(&v)) {
            warnings.push(format!(
                "{problem}: set it to the directory that holds libascendcl.so; the Ascend libraries are searched for in the other places"
            ));
        }
    }
    Ok(warnings)
}

/// The Ascend loader's [`moehal_ascend::lib_dir_problem`].
#[cfg(feature = "ascend")]
fn lib_dir_problem(dir: &std::path::Path) -> Option<String> {
    moehal_ascend::lib_dir_problem(dir)
}

/// Without the `ascend` feature (the variable still names the CANN directory of the HCCL engine):
/// the same wording, for a value that is not a directory.
#[cfg(not(feature = "ascend"))]
fn lib_dir_problem(dir: &std::path::Path) -> Option<String> {
    (!dir.is_dir()).then(|| format!("MOEHAL_ASCEND_LIB_DIR={} is not a directory", dir.display()))
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
