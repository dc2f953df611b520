//! Every `kernels/cuda/*.cu` compiles through NVRTC for sm_90 on the CPU (no GPU needed).
//! CI: `scripts/setup.sh` finds a CUDA 13 libnvrtc already installed (e.g. by torch) or installs the
//! `nvidia-cuda-nvrtc` wheel (any 13.x) and prints its folder for `LD_LIBRARY_PATH`. Without
//! libnvrtc the test prints "skipped: NVRTC unavailable (...)" and passes, unless
//! `MOEHAL_REQUIRE_CUDA=1` (then it fails). No NVRTC release is assumed.

use moehal_cuda::kernels;

/// NVRTC's version, or `None` after printing why the test skips (a panic under
/// `MOEHAL_REQUIRE_CUDA=1`).
fn nvrtc() -> Option<(i32, i32)> {
    match kernels::nvrtc_available() {
        Ok(v) => Some(v),
        Err(why) => match moehal_cuda::skip_or_fail("NVRTC", &why) {
            Ok(line) => {
                println!("{line}");
                None
            }
            Err(msg) => panic!("{msg}"),
        },
    }
}

#[test]
fn every_kernel_file_compiles_for_sm90() {
    let Some(ver) = nvrtc() else { return };
    println!("NVRTC {}.{}", ver.0, ver.1);
    let mut failures = Vec::new();
    for (file, _) in kernels::SOURCES {
        match kernels::compile(file, "sm_90") {
            Ok(cubin) => {
                assert!(cubin.len() > 1000, "{file}: cubin of {} bytes", cubin.len());
                // ELF magic: a real cubin, not an empty image.
                assert_eq!(&cubin[..4], b"\x7fELF", "{file}: not an ELF cubin");
                println!("{file}: {} bytes of sm_90 cubin", cubin.len());
            }
            Err(log) => failures.push(log),
        }
    }
    assert!(
        failures.is_empty(),
        "kernels failed to compile:\n{}",
        failures.join("\n")
    );
}

/// The file whose code differs by architecture (grouped_gemm_q.cu: the e4m3 `mma.sync` exists
/// from sm_89, guarded by `__CUDA_ARCH__ >= 890`) also compiles for sm_89 (Ada, the first e4m3
/// tensor cores) and sm_80 (the oldest the backend opens, without them). The other files use
/// nothing newer than sm_80.
#[test]
fn arch_dependent_kernel_file_compiles_for_sm89_and_sm80() {
    if nvrtc().is_none() {
        return;
    }
    for arch in ["sm_89", "sm_80"] {
        let cubin = kernels::compile("grouped_gemm_q.cu", arch).unwrap_or_else(|log| panic!("{arch}: {log}"));
        assert_eq!(
            &cubin[..4],
            b"\x7fELF",
            "grouped_gemm_q.cu for {arch}: not an ELF cubin"
        );
    }
}

#[test]
fn every_kernel_file_compiles_to_ptx_and_names_its_kernels() {
    if nvrtc().is_none() {
        return;
    }
    // The kernels the backend launches by name must exist as entry points.
    let expect: &[(&str, &[&str])] = &[
        (
            "grouped_gemm.cu",
            &[
                "gg_check",
                "gg_tc_bf16_nk",
                "gg_tc_f16_kn",
                "gg_simt_f32_nk",
                "gg_simt_bf16_kn",
                "gg_dec_bf16_nk",
                "gg_dec_f32_kn",
            ],
        ),
        (
            "router_topk.cu",
            &[
                "router_topk_f32_4",
                "router_topk_bf16_8",
                "router_topk_f16_16",
                "router_hash_check",
                "router_hash_f32",
                "router_hash_bf16",
                "router_hash_f16",
            ],
        ),
        (
            "moe_permute.cu",
            &[
                "perm_check",
                "perm_count",
                "perm_colscan",
                "perm_scan",
                "perm_scatter",
                "perm_rows",
            ],
        ),
        ("swiglu.cu", &["swiglu_f32", "swiglu_bf16", "swiglu_f16"]),
        (
            "moe_combine.cu",
            &["combine_check", "combine_f32", "combine_bf16", "combine_f16"],
        ),
        ("engram_hash.cu", &["engram_check", "engram_hash"]),
        (
            "gather_rows.cu",
            &["gather_check", "gather_copy", "gather_fp8_f32", "gather_fp8_bf16"],
        ),
        (
            "grouped_gemm_q.cu",
            &[
                "gq_fp8_block_bf16_bf16",
                "gq_mxfp4_bf16_bf16",
                "gq_int8_f16_f16",
                "gq_fp8_block_fp8_bf16",
                "gq_int8_int8_f32",
                "gq_int8_int8_bf16_mma",
                "gq_int8_int8_f16_mma",
                "gq_fp8_block_fp8_bf16_mma",
            ],
        ),
        (
            "quantize.cu",
            &[
                "quantize_fp8_f32_f32",
                "quantize_fp8_bf16_ue8m0",
                "quantize_fp8_f16_f32",
                "quantize_int8_f32",
                "quantize_int8_bf16",
                "quantize_int8_f16",
            ],
        ),
    ];
    for (file, names) in expect {
        let ptx = kernels::compile(file, "compute_90").unwrap_or_else(|log| panic!("{log}"));
        let text = String::from_utf8_lossy(&ptx);
        for n in *names {
            assert!(text.contains(&format!(".entry {n}(")), "{file}: no entry point {n}");
        }
    }
}
