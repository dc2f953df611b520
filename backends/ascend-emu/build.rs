//! Chooses the CANN release the emulator models, at build time.
//!
//! `MOEHAL_ACL_EMU_CANN` = `8.1` | `8.2` | `8.3` | `8.5` (default `8.5` when unset). The choice
//! becomes the constant `ascendcl::profile::CANN` (via `MOEHAL_ACL_EMU_CANN_PROFILE`) and the cfgs
//! `cann_has_v3` (aclnnMoeInitRoutingV3 exported) and `cann_has_gating_topk` (aclnnMoeGatingTopK
//! exported). Build one variant per target dir, e.g.
//! `MOEHAL_ACL_EMU_CANN=8.1 cargo build -p moehal-ascend-emu --target-dir target/emu-8.1`.

use std::env;

const VAR: &str = "MOEHAL_ACL_EMU_CANN";
const KNOWN: [&str; 4] = ["8.1", "8.2", "8.3", "8.5"];

fn main() {
    println!("cargo:rerun-if-env-changed={VAR}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-check-cfg=cfg(cann_has_v3)");
    println!("cargo:rustc-check-cfg=cfg(cann_has_gating_topk)");
    let v = match env::var(VAR) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => "8.5".to_string(),
    };
    if !KNOWN.contains(&v.as_str()) {
        // A build script has no caller to return an error to: fail the build with the reason.
        eprintln!("{VAR}={v:?} is not one of {KNOWN:?}");
        std::process::exit(1);
    }
    println!("cargo:rustc-env=MOEHAL_ACL_EMU_CANN_PROFILE={v}");
    // aclnnMoeInitRoutingV3 and aclnnMoeGatingTopK: no aclnn header in 8.1.RC1 ([C81] aclnnop/
    // listing, fact sheet §4.1); first pages seen for 8.2.RC1 ([HA] 82RC1alpha003
    // aclnnMoeInitRoutingV3.md, canncommercial/82RC1 aclnnMoeGatingTopK.md).
    if v != "8.1" {
        println!("cargo:rustc-cfg=cann_has_v3");
        println!("cargo:rustc-cfg=cann_has_gating_topk");
    }
}
