//! The CANN release this build of the emulator models, chosen at build time by
//! `MOEHAL_ACL_EMU_CANN` = `8.1` | `8.2` | `8.3` | `8.5` (default `8.5`; see `build.rs`).
//!
//! A profile decides which aclnn symbols the cdylib exports and which release-specific
//! restrictions phase one enforces. The backend can ask a real install the same question through
//! the documented version query `aclsysGetCANNVersion` (exported by every profile, see
//! [`crate::abi::aclsysGetCANNVersion`]).

/// The build-time variable that chooses the profile (`build.rs`).
pub const ENV: &str = "MOEHAL_ACL_EMU_CANN";

/// The profile name, exactly as given in `MOEHAL_ACL_EMU_CANN` (`"8.1"`, `"8.2"`, `"8.3"`, `"8.5"`).
pub const CANN: &str = env!("MOEHAL_ACL_EMU_CANN_PROFILE");

/// A modelled CANN release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Release {
    /// CANN 8.1.RC1: no aclnnMoeInitRoutingV3, no aclnnMoeGatingTopK (\[C81\] aclnnop header listing).
    V8_1,
    /// CANN 8.2.RC1: V3 and MoeGatingTopK appear; MoeGatingTopK is sigmoid + top-2-sum groups,
    /// E = 256, kGroup = 4, k <= 32, bias mandatory (\[HA\] 82RC1 aclnnMoeGatingTopK.md; torch_npu 7.0.0
    /// ptaoplist_002365, the PyTorch adapter release for 8.2).
    V8_2,
    /// CANN 8.3.RC1: MoeGatingTopK any E (vllm-ascend #2958/#4340 "depends on 8.3.RC1"), still
    /// sigmoid + top-2-sum only (\[HA\] 83RC1 aclnnMoeGatingTopK.md).
    V8_3,
    /// CANN 8.5.0: MoeGatingTopK with softmax and max-group modes (\[HA\] 850alpha002 aclnnMoeGatingTopK.md).
    V8_5,
}

/// The release of this build.
pub fn release() -> Release {
    match CANN {
        "8.1" => Release::V8_1,
        "8.2" => Release::V8_2,
        "8.3" => Release::V8_3,
        _ => Release::V8_5,
    }
}

/// The full version string `aclsysGetCANNVersion` reports for this profile.
pub fn version_string() -> &'static str {
    match release() {
        Release::V8_1 => "8.1.RC1",
        Release::V8_2 => "8.2.RC1",
        Release::V8_3 => "8.3.RC1",
        Release::V8_5 => "8.5.0",
    }
}

/// Whether this build exports `aclnnMoeInitRoutingV3[GetWorkspaceSize]` (CANN >= 8.2).
pub const HAS_INIT_ROUTING_V3: bool = cfg!(cann_has_v3);
/// Whether this build exports `aclnnMoeGatingTopK[GetWorkspaceSize]` (CANN >= 8.2).
pub const HAS_GATING_TOPK: bool = cfg!(cann_has_gating_topk);

/// Every aclnn op (phase-one name without `GetWorkspaceSize`) this build exports as a C symbol.
/// `aclnnGroupedMatmulV4` is left out by the `omit-symbol-aclnnGroupedMatmulV4` feature.
pub fn exported_aclnn_ops() -> Vec<&'static str> {
    let mut v = vec![];
    if cfg!(not(feature = "omit-symbol-aclnnGroupedMatmulV4")) {
        v.push("aclnnGroupedMatmulV4");
    }
    v.extend([
        "aclnnGroupedMatmulV3",
        "aclnnMoeGatingTopKSoftmax",
        "aclnnMoeInitRoutingV2",
        "aclnnMoeFinalizeRoutingV2",
        "aclnnEmbedding",
        "aclnnGatherV2",
        "aclnnIndexSelect",
        "aclnnCast",
        // Documented from the 8.0 pages on ([HA canncommercial/800 aclnnSwiGlu.md],
        // [HA canncommercial/800 aclnnMul&aclnnInplaceMul.md]): every profile.
        "aclnnSwiGlu",
        "aclnnInplaceMul",
    ]);
    if HAS_GATING_TOPK {
        v.push("aclnnMoeGatingTopK");
    }
    if HAS_INIT_ROUTING_V3 {
        v.push("aclnnMoeInitRoutingV3");
    }
    v
}

/// The note `aclInit` prints (once per process, on stderr) when `MOEHAL_ACL_EMU_CANN` is set at
/// run time to another release than this build's: the variable is read by `build.rs` only, so a
/// run-time value would otherwise be ignored silently (issue 16). `runtime` is the variable's value
/// at run time (None: unset); None when there is nothing to say (unset, or the same release).
pub fn runtime_profile_note(runtime: Option<&str>) -> Option<String> {
    let v = runtime?;
    (v != CANN).then(|| {
        format!(
            "moehal-ascend-emu: MOEHAL_ACL_EMU_CANN={v:?} at run time is ignored: the variable is read when the emulator is built, and this library models CANN {CANN} (rebuild: MOEHAL_ACL_EMU_CANN={v} cargo build -p moehal-ascend-emu --target-dir target/emu-{v})"
        )
    })
}
