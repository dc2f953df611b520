//! Exposes the target triple to the integration tests, which compile C programs against
//! `include/moehal.h` with the `cc` crate (it needs to know the target outside a build script).
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    println!("cargo:rustc-env=MOEHAL_FFI_TARGET={target}");
    println!("cargo:rustc-env=MOEHAL_FFI_HOST={host}");
    println!("cargo:rerun-if-changed=build.rs");
}
