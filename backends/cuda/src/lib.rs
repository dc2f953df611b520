//! moehal-cuda: the CUDA backend of moehal (OPS.md on NVIDIA GPUs).
//!
//! - Built on `cudarc` 0.19 with **dynamic loading**: the crate builds without a CUDA toolkit and
//!   its binaries start on machines without a GPU. cudarc panics when a library is missing, so
//!   every entry point probes first ([`probe`], [`open`]) and reports [`Error::Unavailable`] with
//!   the reason instead.
//! - Kernels live in `kernels/cuda/*.cu` (one file per op), embedded in the binary, compiled by
//!   NVRTC on first use for the device's compute capability (a cubin for `sm_XY`) and cached per
//!   process ([`kernels`]).
//! - Ops enqueue on the backend's stream (its own non-blocking stream, or an engine's stream via
//!   `Backend::set_external_stream`); engines can wrap their device pointers with
//!   `Backend::wrap_external`. Ops whose arguments need a value check (group_end, ids, rows,
//!   slot rows) run a device check kernel first, gate every writing kernel on its flag, and wait
//!   for the stream to report the flag, so nothing is written for invalid input.
//!
//! ```no_run
//! match moehal_cuda::open(0) {
//!     Ok(be) => println!("{:?}", moehal_core::Backend::device_info(&be)),
//!     Err(e) => println!("skipped: {e}"),
//! }
//! ```
#![warn(missing_docs)]

mod backend;
mod device;
pub mod kernels;
mod memory;
mod ops;
mod raw;

pub use device::{CudaBackend, GemmPath};
use moehal_core::{Error, Result};

/// Backend name used in errors and tables.
pub const NAME: &str = "cuda";

/// Environment variable that turns "CUDA unavailable" from a skip into a failure: set it to `1`
/// on a machine that must have a GPU (scripts/gpu/check.sh does), so that a missing libcuda or
/// libnvrtc fails the GPU tests and `cuda_bench` instead of letting them pass having tested
/// nothing. Unset (CI, machines without a GPU), they print `skipped: <reason>` and pass.
pub const REQUIRE_ENV: &str = "MOEHAL_REQUIRE_CUDA";

/// Whether [`REQUIRE_ENV`] asks for a GPU: set to anything but empty or `0`.
pub fn cuda_required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// What a test or benchmark does when CUDA is unavailable for `reason`: `Err` with the message to
/// fail with when [`cuda_required`], else `Ok` with the `skipped: ...` line to print.
///
/// # Errors
/// The failure message (it names [`REQUIRE_ENV`] and the reason) when a GPU is required.
pub fn skip_or_fail(what: &str, reason: &str) -> std::result::Result<String, String> {
    if cuda_required() {
        Err(format!(
            "{REQUIRE_ENV}=1 but {what} is unavailable: {reason} (on a GPU machine: is libcuda.so.1 \
             on the loader path, and is NVRTC's folder on LD_LIBRARY_PATH? scripts/gpu/check.sh \
             adds pip's nvidia/cu13/lib or nvidia/cuda_nvrtc/lib)"
        ))
    } else {
        Ok(format!("skipped: {what} unavailable ({reason})"))
    }
}

/// What [`probe`] finds on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    /// Number of CUDA devices.
    pub devices: usize,
    /// Name of device 0.
    pub name: String,
    /// Compute capability of device 0.
    pub compute_capability: (i32, i32),
    /// Memory of device 0 in bytes.
    pub memory_bytes: u64,
    /// NVRTC version, if NVRTC loads.
    pub nvrtc: Option<(i32, i32)>,
    /// Whether cuBLAS loads.
    pub cublas: bool,
}

fn catch<T>(what: &str, f: impl FnOnce() -> std::result::Result<T, String>) -> std::result::Result<T, String> {
    // cudarc panics for a missing library or symbol; we probe first, and catch as a second fence.
    match moehal_core::fence::catch_quietly(f) {
        Ok(r) => r,
        Err(msg) => Err(format!("{what}: {msg}")),
    }
}

/// Look for CUDA without using it: libcuda, a device, NVRTC, cuBLAS. Never panics.
///
/// # Errors
/// Why the backend cannot run here (e.g. `libcuda.so.1 not found`, `no CUDA device`).
pub fn probe() -> std::result::Result<DeviceSummary, String> {
    if !raw::driver_present() {
        return Err("libcuda.so not found (no NVIDIA driver on this machine)".into());
    }
    catch("probe", || {
        let n = raw::device_count().map_err(|e| e.msg)?;
        if n <= 0 {
            return Err("no CUDA device".into());
        }
        let ctx = raw::context(0).map_err(|e| e.msg)?;
        let name = ctx.name().unwrap_or_else(|_| "unknown".into());
        let cc = ctx
            .compute_capability()
            .map_err(|e| format!("compute capability: {e:?}"))?;
        let mem = ctx.total_mem().unwrap_or(0) as u64;
        Ok(DeviceSummary {
            devices: n as usize,
            name,
            compute_capability: cc,
            memory_bytes: mem,
            nvrtc: kernels::nvrtc_available().ok(),
            cublas: raw::cublas_present(),
        })
    })
}

/// Open device `ordinal` as a [`CudaBackend`]. Never panics.
///
/// # Errors
/// [`Error::Unavailable`] with the reason when libcuda, a device or NVRTC is missing;
/// [`Error::Device`] when the driver fails.
pub fn open(ordinal: usize) -> Result<CudaBackend> {
    let unavailable = |reason: String| Error::Unavailable {
        backend: NAME.into(),
        reason,
    };
    if !raw::driver_present() {
        return Err(unavailable(
            "libcuda.so not found (no NVIDIA driver on this machine)".into(),
        ));
    }
    kernels::nvrtc_available().map_err(unavailable)?;
    match moehal_core::fence::catch_quietly(|| CudaBackend::new(ordinal)) {
        Ok(r) => r,
        Err(_) => Err(unavailable(
            "the CUDA driver library is incomplete (cudarc panicked while loading it)".into(),
        )),
    }
}
