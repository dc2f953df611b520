//! The CANN profile of this build: the documented version query reports it, and the cdylib exports
//! exactly that release's aclnn symbols. Run per profile with
//! `MOEHAL_ACL_EMU_CANN=<v> cargo test -p moehal-ascend-emu --target-dir target/emu-<v>`.

mod common;
use common::*;

use std::ffi::CStr;
use std::path::PathBuf;

use ascendcl::abi::*;
use ascendcl::profile::{self, Release};
use ascendcl::sys;

fn text(v: &[std::ffi::c_char]) -> String {
    // SAFETY: the emulator NUL-terminates every field.
    unsafe { CStr::from_ptr(v.as_ptr()) }.to_string_lossy().into_owned()
}

fn blank() -> AclCannPackageVersion {
    AclCannPackageVersion {
        version: [1; ACL_PKG_VERSION_MAX_SIZE],
        major_version: [1; ACL_PKG_VERSION_PARTS_MAX_SIZE],
        minor_version: [1; ACL_PKG_VERSION_PARTS_MAX_SIZE],
        release_version: [1; ACL_PKG_VERSION_PARTS_MAX_SIZE],
        patch_version: [1; ACL_PKG_VERSION_PARTS_MAX_SIZE],
        reserved: [1; ACL_PKG_VERSION_MAX_SIZE],
    }
}

/// aclsysGetCANNVersion(ACL_PKG_NAME_CANN) names the profile; a package not installed is an error.
#[test]
fn version_query_names_the_profile() {
    let want = match profile::CANN {
        "8.1" => ("8.1.RC1", "8", "1", "RC1"),
        "8.2" => ("8.2.RC1", "8", "2", "RC1"),
        "8.3" => ("8.3.RC1", "8", "3", "RC1"),
        "8.5" => ("8.5.0", "8", "5", "0"),
        other => panic!("unknown profile {other}"),
    };
    let mut v = blank();
    // SAFETY: out-pointer to a local of the documented layout.
    assert_eq!(unsafe { aclsysGetCANNVersion(ACL_PKG_NAME_CANN, &mut v) }, 0);
    assert_eq!(
        (
            text(&v.version),
            text(&v.major_version),
            text(&v.minor_version),
            text(&v.release_version)
        ),
        (
            want.0.to_string(),
            want.1.to_string(),
            want.2.to_string(),
            want.3.to_string()
        )
    );
    assert_eq!(text(&v.patch_version), "0");
    // SAFETY: as above. 7 = ACL_PKG_NAME_DRIVER, not part of the emulator.
    assert_eq!(unsafe { aclsysGetCANNVersion(7, &mut v) }, sys::ACL_ERROR_INVALID_PARAM);
    // SAFETY: NULL is checked.
    assert_eq!(
        unsafe { aclsysGetCANNVersion(0, std::ptr::null_mut()) },
        sys::ACL_ERROR_INVALID_PARAM
    );
}

/// The release ordering used by the version-dependent rules.
#[test]
fn release_matches_profile() {
    let r = rel();
    assert_eq!(profile::HAS_INIT_ROUTING_V3, r >= Release::V8_2);
    assert_eq!(profile::HAS_GATING_TOPK, r >= Release::V8_2);
}

/// The cdylib built next to this test exports the profile's aclnn symbols and no others of the
/// emulated set: no MoeInitRoutingV3 / MoeGatingTopK on 8.1; GroupedMatmulV4 everywhere.
#[test]
fn cdylib_exports_the_profile_symbols() {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    let candidates: Vec<PathBuf> = vec![
        deps.join("libascendcl.so"),
        deps.parent().unwrap().join("libascendcl.so"),
    ];
    let Some(path) = candidates.iter().find(|p| p.exists()) else {
        panic!("libascendcl.so not found next to the test binary: {candidates:?}");
    };
    // SAFETY: loading the emulator's own cdylib; its initialisers have no side effects.
    let lib = unsafe { libloading::Library::new(path) }.unwrap();
    let has = |name: &str| {
        let sym = format!("{name}\0");
        // SAFETY: only the symbol's presence is checked; it is never called.
        unsafe { lib.get::<*const ()>(sym.as_bytes()) }.is_ok()
    };
    let exported = profile::exported_aclnn_ops();
    for op in [
        "aclnnGroupedMatmulV4",
        "aclnnGroupedMatmulV3",
        "aclnnMoeGatingTopKSoftmax",
        "aclnnMoeGatingTopK",
        "aclnnMoeInitRoutingV2",
        "aclnnMoeInitRoutingV3",
        "aclnnMoeFinalizeRoutingV2",
        "aclnnEmbedding",
        "aclnnGatherV2",
        "aclnnIndexSelect",
        "aclnnCast",
        "aclnnSwiGlu",
        "aclnnInplaceMul",
    ] {
        let want = exported.contains(&op);
        assert_eq!(has(op), want, "{op}");
        assert_eq!(has(&format!("{op}GetWorkspaceSize")), want, "{op}GetWorkspaceSize");
    }
    let r = rel();
    assert_eq!(has("aclnnMoeInitRoutingV3"), r >= Release::V8_2);
    assert_eq!(has("aclnnMoeGatingTopK"), r >= Release::V8_2);
    assert!(has("aclsysGetCANNVersion"));
    assert!(has("aclSetAclOpExecutorRepeatable"));
}

/// `MOEHAL_ACL_EMU_CANN` is read at build time; set at run time to another release, `aclInit`
/// prints this note once instead of ignoring it silently (issue 16).
#[test]
fn a_run_time_profile_variable_is_named_as_ignored() {
    assert_eq!(profile::runtime_profile_note(None), None);
    assert_eq!(profile::runtime_profile_note(Some(profile::CANN)), None);
    let other = if profile::CANN == "8.1" { "8.5" } else { "8.1" };
    let note = profile::runtime_profile_note(Some(other)).expect("another release must be noted");
    assert!(
        note.contains(&format!("MOEHAL_ACL_EMU_CANN=\"{other}\" at run time is ignored")),
        "{note}"
    );
    assert!(note.contains(&format!("models CANN {}", profile::CANN)), "{note}");
    assert!(profile::runtime_profile_note(Some("9.9")).is_some());
}
