//! Generates Rust bindings (types, constants, function-pointer typedefs) from
//! `include/moehal_acl.h` with bindgen, and, when a real CANN header tree is present
//! (`ASCEND_HOME_PATH` with `include/acl/acl.h`), checks the hand-written subset against it:
//! a C translation unit includes the vendor headers first and then ours in prototype-only mode,
//! so any prototype that disagrees is a compile error, and every constant we define is compared
//! with the vendor's value by a compile-time array-size assertion.
//! Set `MOEHAL_ASCEND_SKIP_HEADER_CHECK=1` to skip that check.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let header = manifest.join("include").join("moehal_acl.h");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-env-changed=ASCEND_HOME_PATH");
    println!("cargo:rerun-if-env-changed=MOEHAL_ASCEND_SKIP_HEADER_CHECK");

    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .allowlist_file(".*moehal_acl\\.h")
        .with_codegen_config(bindgen::CodegenConfig::TYPES | bindgen::CodegenConfig::VARS)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .default_macro_constant_type(bindgen::MacroTypeVariation::Signed)
        .layout_tests(false)
        .generate_comments(false)
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed on {}: {e}", header.display()));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");

    check_against_vendor(&header, &out);
}

/// Names and values of every enumerator and `#define` constant in our header.
fn our_constants(text: &str) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for line in text.lines() {
        let l = line.trim().trim_end_matches(',');
        let (name, value) = if let Some(rest) = l.strip_prefix("#define ") {
            let mut it = rest.split_whitespace();
            match (it.next(), it.next(), it.next()) {
                (Some(n), Some(val), None) => (n, val),
                _ => continue,
            }
        } else if let Some((n, val)) = l.split_once(" = ") {
            (n.trim(), val.trim())
        } else {
            continue;
        };
        let is_name = name.starts_with("ACL") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let is_num = value
            .trim_start_matches('-')
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == 'x');
        if is_name && is_num && !value.is_empty() {
            v.push((name.to_string(), value.to_string()));
        }
    }
    v
}

fn check_against_vendor(header: &Path, out: &Path) {
    if env::var_os("MOEHAL_ASCEND_SKIP_HEADER_CHECK").is_some() {
        return;
    }
    let Some(root) = env::var_os("ASCEND_HOME_PATH").map(PathBuf::from) else {
        return;
    };
    if !root.join("include/acl/acl.h").is_file() {
        return;
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let mut inc_dirs = vec![root.join("include"), root.join(format!("{arch}-linux/include"))];
    inc_dirs.push(root.join("opp/built-in/op_impl/ai_core/tbe/op_api/include"));
    inc_dirs.retain(|d| d.is_dir());

    println!("cargo:rerun-if-changed={}", root.join("include/acl/acl.h").display());
    let mut src = String::from("#include \"acl/acl.h\"\n");
    let find = |rel: &str| inc_dirs.iter().map(|d| d.join(rel)).find(|p| p.is_file());
    for rel in ["aclnn/acl_meta.h", "aclnn/aclnn_base.h"] {
        if let Some(p) = find(rel) {
            println!("cargo:rerun-if-changed={}", p.display());
            let _ = writeln!(src, "#include \"{}\"", p.display());
        }
    }
    for op in [
        "grouped_matmul_v4",
        "grouped_matmul_v3",
        "moe_gating_top_k_softmax",
        "moe_gating_top_k",
        "moe_init_routing_v2",
        "moe_init_routing_v3",
        "moe_finalize_routing_v2",
        "embedding",
        "gather_v2",
        "index_select",
        "cast",
    ] {
        if let Some(p) = find(&format!("aclnnop/aclnn_{op}.h")) {
            println!("cargo:rerun-if-changed={}", p.display());
            let _ = writeln!(src, "#include \"{}\"", p.display());
        }
    }
    src.push_str("#define MOEHAL_ACL_VENDOR_TYPES 1\n");
    let _ = writeln!(src, "#include \"{}\"", header.display());
    let text = fs::read_to_string(header).expect("read header");
    for (i, (name, value)) in our_constants(&text).iter().enumerate() {
        let _ = writeln!(
            src,
            "typedef char moehal_check_{i}_{name}[((long long)({name}) == (long long)({value})) ? 1 : -1];"
        );
    }
    let check = out.join("vendor_check.h");
    fs::write(&check, &src).expect("write vendor_check.h");
    let mut b = bindgen::Builder::default()
        .header(check.to_string_lossy())
        .with_codegen_config(bindgen::CodegenConfig::TYPES)
        .allowlist_type("moehal_check_.*");
    for d in &inc_dirs {
        b = b.clang_arg(format!("-I{}", d.display()));
    }
    if let Err(e) = b.generate() {
        panic!(
            "moehal_acl.h disagrees with the CANN headers under {} ({e}); see {} \
             (set MOEHAL_ASCEND_SKIP_HEADER_CHECK=1 to build anyway)",
            root.display(),
            check.display()
        );
    }
}
