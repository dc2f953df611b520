//! Runs `examples/python/moehal_example.py --numpy-only` against the cdylib of this build when
//! python3 and numpy are installed; otherwise prints why it is skipped (CI installs numpy).

mod common;

use std::process::Command;

#[test]
fn python_ctypes_example_numpy() {
    let probe = Command::new("python3").args(["-c", "import numpy"]).output();
    match probe {
        Err(_) => {
            println!("skipped: python3 not installed");
            return;
        }
        Ok(o) if !o.status.success() => {
            println!("skipped: numpy not installed");
            return;
        }
        Ok(_) => {}
    }
    let script = common::crate_dir().join("../examples/python/moehal_example.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--numpy-only")
        .env("MOEHAL_LIB", common::cdylib())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{} failed ({})", script.display(), out.status);
    assert!(stdout.contains("numpy: OK"), "{stdout}");
}
