//! The runtime kernel selection on aarch64 is real (issue 14): under qemu, scripts/aarch64-test.sh
//! sets `MOEHAL_EXPECT_AARCH64` to the features the emulated CPU has (`neon,dotprod,bf16,...`) and
//! lacks (`!bf16`, ...), and this test checks that `std::arch` detection reports exactly that and
//! that the kernel tables then pick the matching kernels: BFDOT / SMMLA / SDOT where the CPU has them,
//! the plain NEON kernels and the portable int8 path where it does not. Elsewhere (no expectation
//! given, or not aarch64) it checks only what holds on every machine.

use moehal_core::Backend;
use moehal_cpu::{simd, CpuBackend, Isa, Kernels};

fn choice(k: &Kernels, family: &str) -> String {
    k.kernel_choices()
        .into_iter()
        .find(|(f, _)| *f == family)
        .unwrap_or_else(|| panic!("no kernel family {family}"))
        .1
}

#[test]
fn every_table_names_its_kernels() {
    for isa in Isa::all_available() {
        let k = Kernels::for_isa(isa).unwrap();
        let names: Vec<&str> = k.kernel_choices().iter().map(|(f, _)| *f).collect();
        assert_eq!(
            names,
            [
                "gemm",
                "bf16-decode",
                "bf16-dot",
                "int8-dot",
                "mxfp4-decode",
                "fp8-dequant",
                "widen",
                "router",
                "activation"
            ],
            "{isa:?}"
        );
        assert_eq!(choice(k, "gemm"), format!("{} 6x64", isa.name()));
    }
    let scalar = Kernels::for_isa(Isa::Scalar).unwrap();
    assert_eq!(choice(scalar, "bf16-dot"), "none");
    assert_eq!(choice(scalar, "int8-dot"), "portable");
    assert_eq!(choice(scalar, "bf16-decode"), "portable");
    assert_eq!(choice(scalar, "mxfp4-decode"), "portable");
    assert_eq!(choice(scalar, "fp8-dequant"), "portable");
}

#[test]
fn aarch64_features_match_emulated_cpu() {
    let feats = simd::aarch64_features();
    if !cfg!(target_arch = "aarch64") {
        assert!(feats.is_empty());
        println!("skipped: not aarch64");
        return;
    }
    let has = |n: &str| {
        feats
            .iter()
            .find(|(f, _)| *f == n)
            .unwrap_or_else(|| panic!("feature {n} not listed"))
            .1
    };
    assert!(has("neon"), "aarch64 without NEON");
    let neon = Kernels::for_isa(Isa::Neon).expect("the NEON table on aarch64");
    assert_eq!(Kernels::best().isa(), Isa::Neon, "the best table on aarch64 is NEON");

    // The selection follows detection, whatever the CPU.
    assert_eq!(choice(neon, "bf16-decode"), "neon");
    assert_eq!(choice(neon, "widen"), "neon");
    assert_eq!(choice(neon, "activation"), "neon");
    assert_eq!(choice(neon, "router"), "neon");
    assert_eq!(choice(neon, "mxfp4-decode"), "neon");
    assert_eq!(choice(neon, "fp8-dequant"), "neon");
    assert_eq!(neon.has_dot(), has("bf16"));
    assert_eq!(
        choice(neon, "bf16-dot"),
        if has("bf16") { "neon-bfmmla" } else { "none" }
    );
    let sdot_forced = moehal_cpu::env::int8_sdot_forced();
    let int8 = if has("i8mm") && !sdot_forced {
        "neon-smmla"
    } else if has("dotprod") {
        "neon-sdot"
    } else {
        "portable"
    };
    assert_eq!(choice(neon, "int8-dot"), int8);

    // `moehal devices` shows the features and kernels through the capability string.
    let cap = CpuBackend::with_isa(Isa::Neon).unwrap().device_info().capability;
    assert!(
        cap.contains("features: neon") && cap.contains("kernels: gemm=neon 6x64"),
        "{cap}"
    );
    assert!(cap.contains(&format!("int8-dot={int8}")), "{cap}");

    // And detection is what the emulated CPU has (set by scripts/aarch64-test.sh per qemu -cpu).
    let Ok(expect) = std::env::var("MOEHAL_EXPECT_AARCH64") else {
        println!("no MOEHAL_EXPECT_AARCH64: detected {feats:?}, not checked against an expectation");
        return;
    };
    for want in expect.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, present) = match want.strip_prefix('!') {
            Some(n) => (n, false),
            None => (want, true),
        };
        assert_eq!(
            has(name),
            present,
            "feature {name}: expected {present} ({expect}); detected {feats:?}"
        );
    }
    println!("detected {feats:?}; kernels {:?}", neon.kernel_choices());
}
