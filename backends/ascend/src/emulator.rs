//! Locating and building the emulator library (`libascendcl.so` from `moehal-ascend-emu`) for
//! tests, the conformance suite and `moehal check --backend ascend`, without a manual step.
//!
//! [`build_profile`] runs `MOEHAL_ACL_EMU_CANN=<profile> cargo build -p moehal-ascend-emu` in a
//! separate target directory per CANN profile (so it never waits on, or deadlocks with, the cargo
//! that runs the caller, and profiles never rebuild each other) and copies the library into its own
//! folder per profile and variant, so that parallel callers never see a half-written file.
//! [`build`] is the default profile.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// The workspace root (this crate lives at `backends/ascend`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The environment variable the emulator's build reads to choose the CANN release it emulates
/// (the emulator's fixed interface: `MOEHAL_ACL_EMU_CANN=8.1|8.2|8.3|8.5 cargo build -p
/// moehal-ascend-emu`; a profile exports only that release's aclnn symbols and enforces its
/// restrictions).
pub const PROFILE_ENV: &str = "MOEHAL_ACL_EMU_CANN";

/// Every CANN profile the emulator can be built for, oldest first.
pub const CANN_PROFILES: [&str; 4] = ["8.1", "8.2", "8.3", "8.5"];

/// The profile the emulator builds when [`PROFILE_ENV`] is unset (and the one [`build`] uses).
pub const DEFAULT_PROFILE: &str = "8.5";

/// Build the emulator for [`DEFAULT_PROFILE`]: [`build_profile`] with that profile.
///
/// # Errors
/// As [`build_profile`].
pub fn build(target_dir: &Path, omit: Option<&str>) -> Result<PathBuf, String> {
    build_profile(target_dir, DEFAULT_PROFILE, omit)
}

/// Build the emulator for CANN `profile` (one of [`CANN_PROFILES`]; `omit`: the name of one
/// symbol to leave out, for which the emulator has an `omit-symbol-<name>` feature) under
/// `<target_dir>/ascend-emu/cann-<profile>`, and return the directory holding its
/// `libascendcl.so` (one directory per profile and variant). Each profile has its own nested
/// target directory, so switching profiles never rebuilds another one. Cheap when up to date.
///
/// # Errors
/// An unknown profile, or the cargo command's failure, as text.
pub fn build_profile(target_dir: &Path, profile: &str, omit: Option<&str>) -> Result<PathBuf, String> {
    if !CANN_PROFILES.contains(&profile) {
        return Err(format!(
            "unknown CANN profile {profile:?} (known: {})",
            CANN_PROFILES.join(", ")
        ));
    }
    let nested = target_dir.join("ascend-emu").join(format!("cann-{profile}"));
    let out = nested.join(match omit {
        None => "lib-full".to_string(),
        Some(s) => format!("lib-omit-{s}"),
    });
    std::fs::create_dir_all(&nested).map_err(|e| format!("{}: {e}", nested.display()))?;
    let _lock = DirLock::acquire(&nested.join("build.lock"))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if !nested.join("target").exists() {
        seed_from_sibling(&cargo, &nested);
    }
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "-p", "moehal-ascend-emu", "--target-dir"])
        .arg(nested.join("target"))
        .env(PROFILE_ENV, profile);
    if let Some(s) = omit {
        cmd.args(["--features", &format!("moehal-ascend-emu/omit-symbol-{s}")]);
    }
    // The outer cargo's variables describe the outer build; the nested one finds its own.
    for v in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_MANIFEST_DIR",
        "CARGO_PKG_NAME",
        "RUSTC_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        cmd.env_remove(v);
    }
    let o = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "building the emulator (CANN {profile}) failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let built = nested.join("target/debug/libascendcl.so");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let tmp = out.join("libascendcl.so.tmp");
    std::fs::copy(&built, &tmp).map_err(|e| format!("copy {}: {e}", built.display()))?;
    std::fs::rename(&tmp, out.join("libascendcl.so")).map_err(|e| format!("rename: {e}"))?;
    Ok(out)
}

/// Seed a profile's empty nested target directory from another profile's finished build, less
/// the emulator crate itself: the emulator's dependencies (`half` and its derive macros,
/// `moehal-ascend-sys`) do not depend on the profile, and building them again for each profile was
/// most of the time of the Ascend tests on a 2-core CI machine (each from scratch: ~150 s of CPU;
/// the emulator crate alone: ~8 s). Compiled artifacts (1 MiB or more: rlibs, shared objects,
/// build-script executables) are hard-linked — cargo and rustc replace those files when they
/// rebuild them, never write into them; everything smaller (fingerprints, dep-info `.d` files,
/// build-script outputs, which cargo rewrites in place) is copied, so that a rebuild in one
/// profile cannot change another profile's record of what it built. Rustc's incremental caches and
/// cargo's lock file are left out. Best effort: on any failure the partial copy is removed and the
/// build starts from scratch.
fn seed_from_sibling(cargo: &str, nested: &Path) {
    let Some(parent) = nested.parent() else { return };
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    let sibling = entries
        .flatten()
        .map(|e| e.path())
        .find(|p| p != nested && p.join("lib-full/libascendcl.so").is_file() && p.join("target/debug").is_dir());
    let Some(sibling) = sibling else { return };
    let Ok(_sibling_lock) = DirLock::acquire(&sibling.join("build.lock")) else {
        return;
    };
    let tmp = nested.join("target.seed");
    let _ = std::fs::remove_dir_all(&tmp);
    let seeded = link_tree(&sibling.join("target"), &tmp).is_ok()
        && Command::new(cargo)
            .current_dir(workspace_root())
            .args(["clean", "-q", "-p", "moehal-ascend-emu", "--target-dir"])
            .arg(&tmp)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .status()
            .is_ok_and(|s| s.success())
        && std::fs::rename(&tmp, nested.join("target")).is_ok();
    if !seeded {
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

/// Recreate the tree `from` at `to`: files of 1 MiB or more as hard links, smaller files as copies;
/// `incremental/` directories, `.cargo-lock` and anything that is neither file nor directory are
/// left out (cargo rebuilds what it misses).
fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    const LINK_FROM: u64 = 1 << 20;
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        if name == "incremental" || name == ".cargo-lock" {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        let ty = e.file_type()?;
        if ty.is_dir() {
            link_tree(&src, &dst)?;
        } else if ty.is_file() {
            if e.metadata()?.len() >= LINK_FROM {
                std::fs::hard_link(&src, &dst)?;
            } else {
                std::fs::copy(&src, &dst)?;
            }
        }
    }
    Ok(())
}

/// The target directory of the running test or binary (`<target>/debug/deps/x` -> `<target>`).
pub fn target_dir_of_current_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut p = exe.parent()?;
    if p.ends_with("deps") {
        p = p.parent()?;
    }
    Some(p.parent()?.to_path_buf())
}

/// A cross-process lock: a directory that exists while held (stale after 15 minutes).
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(p: &Path) -> Result<DirLock, String> {
        let start = SystemTime::now();
        loop {
            match std::fs::create_dir(p) {
                Ok(()) => return Ok(DirLock(p.to_path_buf())),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(p)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok());
                    if age.is_some_and(|a| a > Duration::from_secs(900)) {
                        let _ = std::fs::remove_dir(p);
                        continue;
                    }
                    if start.elapsed().unwrap_or_default() > Duration::from_secs(1800) {
                        return Err(format!("timed out waiting for {}", p.display()));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(format!("{}: {e}", p.display())),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}
