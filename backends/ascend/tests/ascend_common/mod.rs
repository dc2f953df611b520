//! Shared by the Ascend integration tests: build (or find) the emulator and open the backend on it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use moehal_core::Backend;

/// Directory holding the emulator's `libascendcl.so` (`omit`: a variant lacking one symbol).
pub fn emulator_dir(omit: Option<&str>) -> PathBuf {
    let target = moehal_ascend::emulator::target_dir_of_current_exe().expect("test binary lives in a target dir");
    moehal_ascend::emulator::build(&target, omit).unwrap_or_else(|e| panic!("emulator build: {e}"))
}

/// The Ascend backend on the full emulator.
pub fn open_emulated() -> Arc<dyn Backend> {
    let dir = emulator_dir(None);
    moehal_ascend::open_at(&dir, 0).unwrap_or_else(|e| panic!("open ascend on emulator at {}: {e}", dir.display()))
}
