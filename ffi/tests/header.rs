//! `include/moehal.h` is written by hand; these tests fail when it and the Rust side disagree:
//! the set of functions and their prototypes, the constants, and the sizes / field offsets of
//! every struct (checked by a generated C file of `_Static_assert`s, compiled and linked against
//! the staticlib, which also proves every prototype resolves to an exported symbol).

mod common;

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};

use moehal_ffi::types::{dl_code, dl_device};
use moehal_ffi::*;

fn header() -> String {
    std::fs::read_to_string(common::crate_dir().join("include/moehal.h")).expect("read include/moehal.h")
}

fn strip_c_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        match rest[i..].find("*/") {
            Some(j) => rest = &rest[i + j + 2..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// `"const char *  *"` → `"const char**"`.
fn norm_type(t: &str) -> String {
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    t.replace(" *", "*").replace("* ", "*")
}

/// A C parameter without its name.
fn c_param_type(p: &str) -> String {
    let p = p.trim();
    let cut = p.trim_end_matches(|c: char| c.is_alphanumeric() || c == '_');
    norm_type(cut)
}

/// `name -> (return type, parameter types)` of every `MOEHAL_API` prototype in the header.
fn header_prototypes() -> BTreeMap<String, (String, Vec<String>)> {
    let h = strip_c_comments(&header());
    let mut map = BTreeMap::new();
    for chunk in h.split("MOEHAL_API ").skip(1) {
        let decl = &chunk[..chunk.find(';').expect("prototype ends with ;")];
        if decl.trim().is_empty() || !decl.contains('(') {
            continue;
        }
        let open = decl.find('(').unwrap();
        let head = &decl[..open];
        let name = head
            .trim_end()
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap()
            .to_string();
        let ret = norm_type(&head.trim_end()[..head.trim_end().len() - name.len()]);
        let params = &decl[open + 1..decl.rfind(')').unwrap()];
        let params: Vec<String> = if params.trim() == "void" {
            vec![]
        } else {
            params.split(',').map(c_param_type).collect()
        };
        assert!(
            map.insert(name.clone(), (ret, params)).is_none(),
            "{name} declared twice"
        );
    }
    map
}

fn rust_type_to_c(t: &str) -> String {
    let t = t.trim();
    if let Some(r) = t.strip_prefix("*const ") {
        let inner = rust_type_to_c(r);
        assert!(
            !inner.ends_with('*'),
            "pointer-to-const-pointer `{t}` has no simple C spelling"
        );
        return format!("const {inner}*");
    }
    if let Some(r) = t.strip_prefix("*mut ") {
        return format!("{}*", rust_type_to_c(r));
    }
    match t {
        "i32" => "int32_t",
        "u32" => "uint32_t",
        "i64" => "int64_t",
        "u64" => "uint64_t",
        "u8" => "uint8_t",
        "u16" => "uint16_t",
        "usize" => "size_t",
        "f32" => "float",
        "c_char" => "char",
        "c_void" => "void",
        other => other,
    }
    .to_string()
}

/// `name -> (return type, parameter types)` of every `#[no_mangle]` function in `src/`, mapped to C.
fn rust_prototypes() -> BTreeMap<String, (String, Vec<String>)> {
    let mut map = BTreeMap::new();
    let dir = common::crate_dir().join("src");
    for entry in std::fs::read_dir(&dir).expect("read src") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        for chunk in src.split("#[no_mangle]").skip(1) {
            let f = chunk.find("fn ").expect("#[no_mangle] item is a fn");
            let rest = &chunk[f + 3..];
            let open = rest.find('(').unwrap();
            let name = rest[..open].trim().to_string();
            let close = rest.find(')').unwrap();
            let params: Vec<String> = rest[open + 1..close]
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| rust_type_to_c(&p[p.find(':').expect("name: type") + 1..]))
                .collect();
            let after = &rest[close + 1..rest.find('{').unwrap()];
            let ret = match after.trim().strip_prefix("->") {
                Some(r) => rust_type_to_c(r),
                None => "void".to_string(),
            };
            assert!(
                chunk[..f].contains("extern \"C\""),
                "{name}: #[no_mangle] without extern \"C\""
            );
            assert!(
                map.insert(name.clone(), (ret, params)).is_none(),
                "{name} defined twice"
            );
        }
    }
    map
}

#[test]
fn prototypes_match() {
    let h = header_prototypes();
    let r = rust_prototypes();
    assert!(h.len() >= 30, "parsed only {} header prototypes", h.len());
    let only_h: Vec<_> = h.keys().filter(|k| !r.contains_key(*k)).collect();
    let only_r: Vec<_> = r.keys().filter(|k| !h.contains_key(*k)).collect();
    assert!(
        only_h.is_empty(),
        "declared in moehal.h but not exported by Rust: {only_h:?}"
    );
    assert!(
        only_r.is_empty(),
        "exported by Rust but missing from moehal.h: {only_r:?}"
    );
    for (name, sig) in &h {
        assert_eq!(sig, &r[name], "prototype of {name}: header (left) vs Rust (right)");
    }
}

/// `NAME -> value` of the `MOEHAL_*` constants of the Rust side.
fn rust_constants() -> BTreeMap<&'static str, i64> {
    [
        ("MOEHAL_OK", MOEHAL_OK as i64),
        ("MOEHAL_INVALID_ARGUMENT", MOEHAL_INVALID_ARGUMENT as i64),
        ("MOEHAL_UNSUPPORTED", MOEHAL_UNSUPPORTED as i64),
        ("MOEHAL_UNAVAILABLE", MOEHAL_UNAVAILABLE as i64),
        ("MOEHAL_OUT_OF_MEMORY", MOEHAL_OUT_OF_MEMORY as i64),
        ("MOEHAL_DEVICE_ERROR", MOEHAL_DEVICE_ERROR as i64),
        ("MOEHAL_PANIC", MOEHAL_PANIC as i64),
        ("MOEHAL_SCORING_SOFTMAX", MOEHAL_SCORING_SOFTMAX as i64),
        ("MOEHAL_SCORING_SIGMOID", MOEHAL_SCORING_SIGMOID as i64),
        ("MOEHAL_SCORING_SQRT_SOFTPLUS", MOEHAL_SCORING_SQRT_SOFTPLUS as i64),
        ("MOEHAL_GROUP_SCORE_TOP2_SUM", MOEHAL_GROUP_SCORE_TOP2_SUM as i64),
        ("MOEHAL_GROUP_SCORE_MAX", MOEHAL_GROUP_SCORE_MAX as i64),
        ("MOEHAL_LAYOUT_NK", MOEHAL_LAYOUT_NK as i64),
        ("MOEHAL_LAYOUT_KN", MOEHAL_LAYOUT_KN as i64),
        ("MOEHAL_TABLE_F32", MOEHAL_TABLE_F32 as i64),
        ("MOEHAL_TABLE_BF16", MOEHAL_TABLE_BF16 as i64),
        ("MOEHAL_TABLE_F16", MOEHAL_TABLE_F16 as i64),
        ("MOEHAL_TABLE_FP8_E4M3_UE8M0", MOEHAL_TABLE_FP8_E4M3_UE8M0 as i64),
        ("MOEHAL_WEIGHT_FP8_BLOCK", MOEHAL_WEIGHT_FP8_BLOCK as i64),
        ("MOEHAL_WEIGHT_MXFP4", MOEHAL_WEIGHT_MXFP4 as i64),
        ("MOEHAL_WEIGHT_INT8", MOEHAL_WEIGHT_INT8 as i64),
        ("MOEHAL_ABI_VERSION", MOEHAL_ABI_VERSION as i64),
    ]
    .into_iter()
    .collect()
}

#[test]
fn constants_match() {
    // Every `MOEHAL_X = n` enumerator and `#define MOEHAL_X n` of the header.
    let h = strip_c_comments(&header());
    let mut found = BTreeMap::new();
    for line in h.lines() {
        let l = line.trim().trim_end_matches(',');
        let (name, value) = if let Some(d) = l.strip_prefix("#define ") {
            let mut it = d.split_whitespace();
            (it.next().unwrap_or(""), it.next().unwrap_or(""))
        } else if let Some((n, v)) = l.split_once(" = ") {
            (n.trim(), v.trim())
        } else {
            continue;
        };
        if let (true, Ok(v)) = (name.starts_with("MOEHAL_"), value.parse::<i64>()) {
            found.insert(name.to_string(), v);
        }
    }
    let rust = rust_constants();
    let rust: BTreeMap<String, i64> = rust.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert_eq!(found, rust, "MOEHAL_* constants: header (left) vs Rust (right)");
}

macro_rules! layout {
    ($out:ident, $ty:ident { $($field:ident),* }) => {{
        $out.push_str(&format!(
            "_Static_assert(sizeof({0}) == {1}, \"sizeof({0}) differs from Rust ({1})\");\n",
            stringify!($ty), size_of::<$ty>()
        ));
        $(
            $out.push_str(&format!(
                "_Static_assert(offsetof({0}, {1}) == {2}, \"offsetof({0}, {1}) differs from Rust ({2})\");\n",
                stringify!($ty), stringify!($field), offset_of!($ty, $field)
            ));
        )*
    }};
}

/// Struct layouts and constant values from Rust, as a C file of static asserts, plus a table of
/// every header function's address; compiled against the header and linked with the staticlib.
#[test]
fn layouts_and_symbols_compile_and_link() {
    let mut c = String::from(
        "/* generated by ffi/tests/header.rs */\n#include <stddef.h>\n#include <stdio.h>\n#include \"moehal.h\"\n\n",
    );
    layout!(c, DLDevice { device_type, device_id });
    layout!(c, DLDataType { code, bits, lanes });
    layout!(
        c,
        DLTensor {
            data,
            device,
            ndim,
            dtype,
            shape,
            strides,
            byte_offset
        }
    );
    layout!(
        c,
        moehal_router_config {
            k,
            scoring,
            group_score,
            n_group,
            topk_group,
            renormalize,
            routed_scaling_factor
        }
    );
    layout!(
        c,
        moehal_device_info {
            name,
            capability,
            memory_bytes,
            compute_units,
            device
        }
    );
    c.push_str(&format!(
        "_Static_assert(sizeof(moehal_status) == {}, \"moehal_status size\");\n",
        size_of::<moehal_status>()
    ));
    for (name, v) in rust_constants() {
        c.push_str(&format!(
            "_Static_assert({name} == {v}, \"{name} differs from Rust ({v})\");\n"
        ));
    }
    for (name, v) in [
        ("kDLCPU", dl_device::CPU),
        ("kDLCUDA", dl_device::CUDA),
        ("kDLCUDAHost", dl_device::CUDA_HOST),
        ("kDLROCM", dl_device::ROCM),
        ("kDLROCMHost", dl_device::ROCM_HOST),
        ("kDLExtDev", dl_device::EXT_DEV),
        ("kDLCUDAManaged", dl_device::CUDA_MANAGED),
        ("kDLInt", dl_code::INT as i32),
        ("kDLUInt", dl_code::UINT as i32),
        ("kDLFloat", dl_code::FLOAT as i32),
        ("kDLBfloat", dl_code::BFLOAT as i32),
        ("kDLBool", dl_code::BOOL as i32),
    ] {
        c.push_str(&format!(
            "_Static_assert({name} == {v}, \"{name} differs from Rust ({v})\");\n"
        ));
    }
    let protos = header_prototypes();
    c.push_str("\ntypedef void (*any_fn)(void);\nstatic const any_fn every_function[] = {\n");
    for name in protos.keys() {
        c.push_str(&format!("  (any_fn){name},\n"));
    }
    c.push_str("};\n\nint main(void) {\n  size_t n = sizeof(every_function) / sizeof(every_function[0]);\n");
    c.push_str("  for (size_t i = 0; i < n; i++) if (!every_function[i]) return 1;\n");
    c.push_str("  if (moehal_abi_version() != MOEHAL_ABI_VERSION) return 2;\n");
    c.push_str("  printf(\"layout OK: %zu functions linked, moehal %s\\n\", n, moehal_version());\n  return 0;\n}\n");
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moehal-ffi-c");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout_check.c");
    std::fs::write(&src, c).unwrap();
    let exe = common::build_c("layout_check", &[src], &[]);
    let out = common::run(&exe);
    assert!(out.contains(&format!("{} functions linked", protos.len())), "{out}");
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
}

/// The cdylib exports exactly the header's functions (where `nm` is installed).
#[test]
fn cdylib_exports_match_header() {
    if !cfg!(target_os = "linux") {
        println!("skipped: export check uses GNU nm -D (Linux only)");
        return;
    }
    let lib = common::cdylib();
    let out = match std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
    {
        Ok(o) if o.status.success() => o,
        _ => {
            println!("skipped: nm not available");
            return;
        }
    };
    let exported: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with("moehal_"))
        .map(str::to_string)
        .collect();
    let declared: std::collections::BTreeSet<String> = header_prototypes().into_keys().collect();
    assert_eq!(exported, declared, "cdylib exports (left) vs header prototypes (right)");
}
