//! Shared by the integration tests: find the staticlib / cdylib cargo built for this test run,
//! and compile + link C programs against `include/moehal.h` with the `cc` crate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `ffi/` (the crate root).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding the library artifacts of this build: the test executable lives in
/// `<target>/<profile>/deps`, and cargo puts `libmoehal_ffi.{a,so}` there (and in the parent).
fn find_artifact(file: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable has a parent directory");
    for dir in [
        deps.to_path_buf(),
        deps.parent().map(Path::to_path_buf).unwrap_or_default(),
    ] {
        let p = dir.join(file);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{file} not found next to {} (cargo builds it with the crate's lib target: crate-type includes it)",
        exe.display()
    );
}

/// The static library (`libmoehal_ffi.a`).
pub fn staticlib() -> PathBuf {
    find_artifact(if cfg!(windows) {
        "moehal_ffi.lib"
    } else {
        "libmoehal_ffi.a"
    })
}

/// The shared library (`libmoehal_ffi.so` / `.dylib`).
pub fn cdylib() -> PathBuf {
    find_artifact(if cfg!(target_os = "macos") {
        "libmoehal_ffi.dylib"
    } else if cfg!(windows) {
        "moehal_ffi.dll"
    } else {
        "libmoehal_ffi.so"
    })
}

/// System libraries a Rust staticlib needs (`rustc --print native-static-libs`).
fn native_libs() -> &'static [&'static str] {
    if cfg!(target_os = "macos") {
        &["-lSystem", "-lc", "-lm", "-liconv"]
    } else {
        &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"]
    }
}

/// Compile `sources` (plus `include/` and `extra_include` on the include path) and link them with
/// the staticlib into an executable named `name` under cargo's per-test temp dir.
pub fn build_c(name: &str, sources: &[PathBuf], extra_include: &[PathBuf]) -> PathBuf {
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moehal-ffi-c");
    std::fs::create_dir_all(&out_dir).expect("create temp dir");
    let exe = out_dir.join(name);
    let mut b = cc::Build::new();
    b.target(env!("MOEHAL_FFI_TARGET"))
        .host(env!("MOEHAL_FFI_HOST"))
        .opt_level(0)
        .debug(true)
        .cargo_metadata(false)
        .emit_rerun_if_env_changed(false)
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .include(crate_dir().join("include"));
    for i in extra_include {
        b.include(i);
    }
    let compiler = b
        .try_get_compiler()
        .expect("a C compiler (cc) is needed for the C ABI tests");
    let mut cmd = compiler.to_command();
    cmd.args(sources)
        .arg(staticlib())
        .args(native_libs())
        .arg("-o")
        .arg(&exe);
    let out = cmd.output().expect("run the C compiler");
    assert!(
        out.status.success(),
        "C compile/link failed: {cmd:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Run an executable; returns stdout, panics with both streams on a non-zero exit.
pub fn run(exe: &Path) -> String {
    let out = Command::new(exe).output().expect("run test program");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(out.status.success(), "{} failed ({})", exe.display(), out.status);
    stdout
}
