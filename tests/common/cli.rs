//! Running the `moehal` binary: the one harness of the CLI tests (`cli.rs`, `cli_faults.rs`,
//! `cli_ep.rs`), which need the `cli` feature.

use std::process::{Command, Output};

/// `moehal args`, its output captured.
pub fn moehal(args: &[&str]) -> Output {
    moehal_env(args, &[])
}

/// `moehal args` with the environment variables `env` set, its output captured.
pub fn moehal_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_moehal"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the moehal binary runs")
}

/// (stdout, stderr) as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A fresh directory under the system's temporary directory, named by `tag` and this test
/// process (tags are unique within a test file; each file runs in its own process).
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("moehal-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
