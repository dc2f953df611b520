//! Rewrites `src/bindings.rs` from `include/moehal_acl.h` (needs libclang):
//! `cargo run -p moehal-ascend-sys --example regenerate`. With `ASCEND_HOME_PATH` pointing at a
//! CANN install it also checks the header against the vendor's.

#[path = "../generate.rs"]
mod generate;

fn main() {
    if let Err(e) = generate::libclang_available() {
        eprintln!("error: libclang not found ({e}); install libclang-dev (Debian) or set LIBCLANG_PATH");
        std::process::exit(2);
    }
    let text = generate::generate().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1);
    });
    let path = generate::bindings_path();
    std::fs::write(&path, text).unwrap_or_else(|e| {
        eprintln!("error: write {}: {e}", path.display());
        std::process::exit(1);
    });
    println!("wrote {}", path.display());
    if let Some(root) = std::env::var_os("ASCEND_HOME_PATH") {
        let scratch = std::env::temp_dir();
        match generate::check_against_vendor(std::path::Path::new(&root), &scratch) {
            Ok(true) => println!("header agrees with the CANN headers under {}", root.to_string_lossy()),
            Ok(false) => println!("no CANN headers under {}: vendor check not run", root.to_string_lossy()),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    }
}
