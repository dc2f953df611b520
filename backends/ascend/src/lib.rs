//! moehal's Ascend backend: the ACL runtime, the aclnn meta API and the aclnn MoE ops, loaded at
//! run time with `libloading` (nothing from CANN is needed to build).
//!
//! - Library search (first hit wins): `MOEHAL_ASCEND_LIB_DIR`, then `ASCEND_HOME_PATH` and
//!   `ASCEND_TOOLKIT_HOME` (`lib64`, `<arch>-linux/lib64`, `runtime/lib64`), `LD_LIBRARY_PATH`,
//!   then `/usr/local/Ascend/ascend-toolkit/latest` and `/usr/local/Ascend/cann`. Runtime from
//!   `libascendcl.so` (else `libacl_rt.so`), meta from `libnnopbase.so`, ops from `libopapi.so` or
//!   its per-domain splits.
//! - Every runtime and meta symbol is resolved up front; if any is missing the backend is
//!   unavailable and the reason lists the missing names. Op versions are probed (both `aclnnX` and
//!   `aclnnXGetWorkspaceSize`): GroupedMatmul V4 else V3, MoeGatingTopK / MoeGatingTopKSoftmax,
//!   MoeInitRouting V3 else V2, MoeFinalizeRoutingV2, Embedding / GatherV2 / IndexSelect, Cast.
//! - At open, tiny complete launches probe which call patterns the installed MoeInitRouting,
//!   MoeGatingTopK and MoeFinalizeRouting ops accept **and** compute as documented (see
//!   `routes.rs` and `backends/ascend-emu/RULES.md`); each op is routed by what they found.
//! - `Backend::supports` names, per op, the aclnn op and call
//!   pattern used, which parts run on the host, and what the probe found (see the crate README).
//!
//! Verified against the strict emulator `moehal-ascend-emu`, not silicon.

mod backend;
pub mod emulator;
mod ffi;
mod ops;
mod routes;

use std::path::PathBuf;
use std::sync::Arc;

use moehal_core::{Backend, Error, Result};

pub use backend::Ascend;

/// Environment variable naming a directory searched first for the CANN (or emulator) libraries.
pub const LIB_DIR_ENV: &str = "MOEHAL_ASCEND_LIB_DIR";

fn unavailable(reason: String) -> Error {
    Error::Unavailable {
        backend: ffi::NAME.into(),
        reason,
    }
}

/// Open device 0 with the libraries found by the standard search (see the crate docs).
///
/// # Errors
/// [`Error::Unavailable`] with the reason (libraries absent, symbols missing, no device);
/// [`Error::Device`] when the runtime fails to initialise.
pub fn open() -> Result<Arc<dyn Backend>> {
    open_in(&ffi::search_dirs(), 0)
}

/// Open `device` using only the libraries in `dir` (e.g. the emulator's build directory).
///
/// # Errors
/// As [`open`].
pub fn open_at(dir: impl Into<PathBuf>, device: i32) -> Result<Arc<dyn Backend>> {
    open_in(&[dir.into()], device)
}

fn open_in(dirs: &[PathBuf], device: i32) -> Result<Arc<dyn Backend>> {
    let lib = ffi::load(dirs).map_err(unavailable)?;
    let rt = ffi::Runtime::open(lib, device)?;
    Ok(Arc::new(Ascend::new(rt)))
}

/// Whether the Ascend libraries can be found and resolved (does not open a device).
///
/// # Errors
/// The reason they cannot: libraries absent (with the directories searched) or missing symbols.
pub fn probe() -> std::result::Result<(), String> {
    ffi::load(&ffi::search_dirs()).map(|_| ())
}

/// The directories [`open`] searches, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    ffi::search_dirs()
}

/// Why `dir`, a value of [`LIB_DIR_ENV`], is not searched (`"MOEHAL_ASCEND_LIB_DIR=<dir> names a
/// file, not a directory"`, `"... does not exist"`), or `None` when it names a directory. The one
/// wording of that fault, for the loader's reason and the CLI's warning alike (issue 16).
pub fn lib_dir_problem(dir: &std::path::Path) -> Option<String> {
    ffi::lib_dir_problem(dir)
}

/// What a "`lib` not found (searched: ...)" message adds about [`LIB_DIR_ENV`]: to set it (or
/// `ASCEND_HOME_PATH`) when unset; that it was searched first and has `missing` (e.g. `"no
/// libhccl.so"`) when it names a directory; [`lib_dir_problem`]'s words and that it was not
/// searched otherwise. The loader of this crate and `moehal-ep`'s HCCL engine say the same.
pub fn not_found_hint(lib: &str, missing: &str) -> String {
    ffi::not_found_hint(lib, missing)
}

/// The aclnn ops (both `aclnnX` and `aclnnXGetWorkspaceSize` present) in the libraries of `dir`,
/// by name, e.g. `aclnnMoeInitRoutingV3`. Loads the libraries, opens no device.
///
/// # Errors
/// As [`probe`], for `dir` only.
pub fn ops_at(dir: impl Into<PathBuf>) -> std::result::Result<Vec<&'static str>, String> {
    Ok(ffi::load(&[dir.into()])?.api.ops())
}

/// Whether the libraries of `dir` hold every aclnn primitive of the device composition of
/// `moe_permute` (issue 13; the same predicate the backend applies when it opens, so `moehal
/// kernels` says "device composition" exactly when this is `true`). Loads the libraries, opens no
/// device.
///
/// # Errors
/// As [`probe`], for `dir` only.
pub fn permute_composable_at(dir: impl Into<PathBuf>) -> std::result::Result<bool, String> {
    Ok(ops::permute_composable_with(&ffi::load(&[dir.into()])?.versions))
}
