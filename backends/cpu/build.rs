//! Compiles the AMX tile microkernels (csrc/amx.c) with the system C compiler, only when the target is
//! x86-64: other targets (aarch64 in CI) build without a C compiler and have no AMX path. Where the C
//! compiler cannot build the file (no `-mamx-*` support), the crate still builds, without the AMX
//! kernels (`simd::amx::Amx::status` then says so), instead of failing.

fn main() {
    println!("cargo::rerun-if-changed=csrc/amx.c");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(moehal_amx_kernels)");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch != "x86_64" {
        return;
    }
    let built = cc::Build::new()
        .file("csrc/amx.c")
        .flag("-mamx-tile")
        .flag("-mamx-bf16")
        .flag("-mamx-int8")
        .opt_level(2)
        .warnings(true)
        .try_compile("moehal_amx");
    match built {
        Ok(()) => println!("cargo::rustc-cfg=moehal_amx_kernels"),
        Err(e) => println!("cargo::warning=AMX kernels not built (C compiler lacks -mamx-*?): {e}"),
    }
}
