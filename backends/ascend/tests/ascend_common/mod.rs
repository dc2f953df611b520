//! Shared by the Ascend integration tests: build (or find) the emulator and open the backend on it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use moehal_ascend::emulator::{CANN_PROFILES, DEFAULT_PROFILE};
use moehal_core::Backend;

/// Directory holding the emulator's `libascendcl.so` for the default CANN profile (`omit`: a
/// variant lacking one symbol).
pub fn emulator_dir(omit: Option<&str>) -> PathBuf {
    profile_dir(DEFAULT_PROFILE, omit)
}

/// Directory holding the emulator built for CANN `profile` (built at most once per test process).
pub fn profile_dir(profile: &str, omit: Option<&str>) -> PathBuf {
    static BUILT: Mutex<BTreeMap<(String, Option<String>), PathBuf>> = Mutex::new(BTreeMap::new());
    let key = (profile.to_string(), omit.map(str::to_string));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = built.get(&key) {
        return d.clone();
    }
    let target = moehal_ascend::emulator::target_dir_of_current_exe().expect("test binary lives in a target dir");
    let d = moehal_ascend::emulator::build_profile(&target, profile, omit)
        .unwrap_or_else(|e| panic!("emulator build (CANN {profile}): {e}"));
    built.insert(key, d.clone());
    d
}

/// The Ascend backend on the full emulator of the default profile.
pub fn open_emulated() -> Arc<dyn Backend> {
    open_profile(DEFAULT_PROFILE)
}

/// The Ascend backend on the emulator built for CANN `profile`.
pub fn open_profile(profile: &str) -> Arc<dyn Backend> {
    let dir = profile_dir(profile, None);
    moehal_ascend::open_at(&dir, 0)
        .unwrap_or_else(|e| panic!("open ascend on emulator (CANN {profile}) at {}: {e}", dir.display()))
}

/// The backend on every CANN profile, oldest first.
pub fn open_profiles() -> Vec<(&'static str, Arc<dyn Backend>)> {
    CANN_PROFILES.iter().map(|&p| (p, open_profile(p))).collect()
}

/// Whether the emulator build honours the CANN profile: its 8.1 build must not export the ops
/// that first appear after 8.1.RC1 (`aclnnMoeInitRoutingV3`, `aclnnMoeGatingTopK`: absent from the
/// 8.1.RC1 aclnn headers, `ascend_acl.md` §4.1). An emulator that predates profiles exports them
/// in every build; route expectations that depend on the release are then not checked.
pub fn profiles_honoured() -> bool {
    let ops = moehal_ascend::ops_at(profile_dir("8.1", None)).unwrap_or_else(|e| panic!("8.1 emulator: {e}"));
    let old = !ops
        .iter()
        .any(|o| *o == "aclnnMoeInitRoutingV3" || *o == "aclnnMoeGatingTopK");
    if !old {
        eprintln!("note: this emulator ignores MOEHAL_ACL_EMU_CANN (8.1 exports V3/GatingTopK); per-release routes not checked");
    }
    old
}
