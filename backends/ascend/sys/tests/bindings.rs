//! The committed `src/bindings.rs` must be exactly what bindgen makes of `include/moehal_acl.h`
//! (edit the header, then `cargo run -p moehal-ascend-sys --example regenerate`). Needs libclang
//! at run time; without it the test prints `skipped: libclang not found` and passes. Where
//! `ASCEND_HOME_PATH` holds a CANN header tree, the header is also checked against the vendor's.

#[path = "../generate.rs"]
mod generate;

#[test]
fn committed_bindings_match_the_header() {
    if let Err(e) = generate::libclang_available() {
        println!("skipped: libclang not found ({e})");
        return;
    }
    let fresh = generate::generate().expect("bindgen");
    let committed = std::fs::read_to_string(generate::bindings_path()).expect("read src/bindings.rs");
    if fresh != committed {
        let line = fresh
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "length".to_string(), |i| format!("line {}", i + 1));
        panic!(
            "src/bindings.rs is stale (first difference at {line}); run \
             `cargo run -p moehal-ascend-sys --example regenerate` and commit the result"
        );
    }
}

#[test]
fn header_agrees_with_cann_headers_where_installed() {
    let Some(root) = std::env::var_os("ASCEND_HOME_PATH") else {
        println!("skipped: ASCEND_HOME_PATH not set (no CANN headers to compare with)");
        return;
    };
    if let Err(e) = generate::libclang_available() {
        println!("skipped: libclang not found ({e})");
        return;
    }
    let scratch = std::env::temp_dir();
    match generate::check_against_vendor(std::path::Path::new(&root), &scratch) {
        Ok(true) => {}
        Ok(false) => println!("skipped: no include/acl/acl.h under ASCEND_HOME_PATH"),
        Err(e) => panic!("{e}"),
    }
}
