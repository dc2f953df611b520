//! Compiles the AMX tile microkernels (csrc/amx.c) with the system C compiler, only when the target is
//! x86-64: other targets (aarch64 in CI) build without a C compiler and have no AMX path.

fn main() {
    println!("cargo:rerun-if-changed=csrc/amx.c");
    println!("cargo:rerun-if-changed=build.rs");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch != "x86_64" {
        return;
    }
    cc::Build::new()
        .file("csrc/amx.c")
        .flag("-mamx-tile")
        .flag("-mamx-bf16")
        .flag("-mamx-int8")
        .opt_level(2)
        .warnings(true)
        .compile("moehal_amx");
}
