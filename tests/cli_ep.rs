//! `moehal moe --ep` / `--ep-threads`: the expert-parallel MoE layer of a preset equals the
//! single-process layer (docs/EP.md). The loopback cases run in every build; the `mpirun` cases
//! need the `mpi` feature and Open MPI (`cargo test --features mpi --test cli_ep`).

use std::process::Output;

mod common;

use common::cli::moehal;

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Small layers: widths / 16, f32 float weights (a CPU GEMM row then depends only on its own
/// expert's group: tiles of at most 6 rows take the decode dot order, larger ones the packed
/// micro-kernel's; EP gives every expert the same rows as one process, so the comparison is
/// bitwise), or the preset's shipped formats in bf16.
fn args<'a>(preset: &'a str, tokens: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "moe",
        "--preset",
        preset,
        "--tokens",
        tokens,
        "--scale-widths",
        "16",
        "--budget-mib",
        "64",
        "--backend",
        "cpu",
    ];
    v.extend_from_slice(extra);
    v
}

fn check_pass(o: &Output, bitwise: bool) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", text(o));
    for stage in ["router_topk", "dispatch", "gate_up", "down", "combine"] {
        assert!(out.lines().any(|l| l.starts_with(stage)), "no {stage} stage:\n{out}");
    }
    assert!(out.contains("dispatch sent") && out.contains("combine recv"), "{out}");
    let last = out.lines().last().unwrap_or("");
    assert!(last.ends_with("PASS"), "{last}");
    if bitwise {
        assert!(last.contains("bitwise equal"), "{last}");
    }
    out
}

#[test]
fn threads_as_ranks_equal_the_single_process_layer() {
    for (preset, ranks) in [("qwen3-30b-a3b", "2"), ("deepseek-v3", "4")] {
        let o = moehal(&args(
            preset,
            "5",
            &[
                "--ep-threads",
                ranks,
                "--dtype",
                "f32",
                "--float-weights",
                "--ep-bitwise",
            ],
        ));
        let out = check_pass(&o, true);
        assert!(out.contains(&format!("{ranks} ranks over loopback")), "{out}");
    }
}

#[test]
fn shipped_quantized_formats_in_bf16_within_tolerance() {
    // deepseek-v3 ships fp8_block weights: weight-only with bf16 activations.
    let o = moehal(&args("deepseek-v3", "3", &["--ep-threads", "2"]));
    let out = check_pass(&o, false);
    assert!(out.contains("fp8_block"), "{out}");
}

#[test]
fn skewed_routing_leaves_ranks_without_rows() {
    let o = moehal(&args(
        "qwen3-30b-a3b",
        "3",
        &[
            "--ep-threads",
            "4",
            "--ep-skew",
            "--dtype",
            "f32",
            "--float-weights",
            "--ep-bitwise",
        ],
    ));
    let out = check_pass(&o, true);
    assert!(out.contains("3 of 4 ranks received no rows"), "{out}");
}

#[test]
fn a_rank_count_that_does_not_divide_the_experts_is_an_error() {
    let o = moehal(&args("qwen3-30b-a3b", "3", &["--ep-threads", "3"]));
    assert!(!o.status.success());
    assert!(text(&o).contains("do not split evenly over 3 ranks"), "{}", text(&o));
}

#[cfg(not(feature = "mpi"))]
#[test]
fn ep_without_the_mpi_feature_says_how_to_get_it() {
    let o = moehal(&args("qwen3-30b-a3b", "3", &["--ep"]));
    // A flag this build cannot honour: a usage error (issue 16).
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("`mpi` feature"), "{}", text(&o));
}

/// `mpirun -n R moehal moe --ep`, as root on CI (`--allow-run-as-root --oversubscribe`).
#[cfg(feature = "mpi")]
fn mpirun(ranks: &str, a: &[&str]) -> Output {
    Command::new("mpirun")
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-n",
            ranks,
            env!("CARGO_BIN_EXE_moehal"),
        ])
        .args(a)
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .output()
        .expect("mpirun runs (Debian: apt-get install openmpi-bin)")
}

#[cfg(feature = "mpi")]
#[test]
fn mpirun_2_and_4_ranks_equal_the_single_process_layer() {
    for ranks in ["2", "4"] {
        for preset in ["deepseek-v3", "qwen3-30b-a3b"] {
            let o = mpirun(
                ranks,
                &args(
                    preset,
                    "6",
                    &["--ep", "--dtype", "f32", "--float-weights", "--ep-bitwise"],
                ),
            );
            let out = check_pass(&o, true);
            assert!(out.contains(&format!("{ranks} ranks over mpi")), "{out}");
        }
    }
    // Every token's experts on rank 0, the other ranks receive nothing; and the shipped formats.
    let o = mpirun(
        "4",
        &args(
            "deepseek-v3",
            "4",
            &["--ep", "--ep-skew", "--dtype", "f32", "--float-weights", "--ep-bitwise"],
        ),
    );
    assert!(check_pass(&o, true).contains("3 of 4 ranks received no rows"));
    let o = mpirun("2", &args("deepseek-v3", "3", &["--ep"]));
    check_pass(&o, false);
}

/// `mpirun -n 2 moehal moe --weights F --ep`: each process loads its experts of the checkpoint
/// (the hash-routed layer 0 and the gated layer 3), checked against the single-process layer.
#[cfg(feature = "mpi")]
#[test]
fn mpirun_runs_the_checkpoint_experts() {
    let d = std::env::temp_dir().join(format!("moehal-cli-mpi-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join("model.safetensors");
    common::v4_layer_file(&path);
    let p = path.to_str().unwrap();
    for layer in ["0", "3"] {
        let o = mpirun(
            "2",
            &[
                "moe",
                "--preset",
                "deepseek-v4-flash",
                "--tokens",
                "6",
                "--weights",
                p,
                "--layer",
                layer,
                "--backend",
                "cpu",
                "--ep",
            ],
        );
        let out = check_pass(&o, false);
        assert!(
            out.contains(&format!("checkpoint {p} layer {layer}")) && out.contains("2 ranks over mpi"),
            "{out}"
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

/// Issue 16 item 1: `--ep-threads` has `moe`'s memory rule: an impossible token count is an error
/// naming the most that fit, before any rank starts (it aborted on allocation failure).
#[test]
fn ep_threads_over_the_memory_budget_name_the_largest_token_count_that_fits() {
    let o = moehal(&args("qwen3-30b-a3b", "100000000", &["--ep-threads", "2"]));
    assert!(!o.status.success());
    assert!(o.stdout.is_empty(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--tokens 100000000") && err.contains("tokens fit"),
        "{}",
        text(&o)
    );
}

/// Issue 16 item 2: `--weights` with `--ep-threads` runs the checkpoint's experts (it ran seeded
/// ones, ignoring the file): each rank loads its slice, rank 0 the whole layer for the check, the
/// hash-routed layer routes by `gate.tid2eid` on every rank.
#[test]
fn ep_threads_run_the_checkpoint_experts() {
    let d = std::env::temp_dir().join(format!("moehal-cli-ep-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join("model.safetensors");
    common::v4_layer_file(&path);
    let p = path.to_str().unwrap();
    // `moe --weights F --layer L --ep-threads R` on the CPU, 7 tokens.
    let run = |layer: &str, ranks: &str, extra: &[&str]| {
        let mut v = vec![
            "moe",
            "--preset",
            "deepseek-v4-flash",
            "--tokens",
            "7",
            "--weights",
            p,
            "--layer",
            layer,
            "--backend",
            "cpu",
            "--ep-threads",
            ranks,
        ];
        v.extend_from_slice(extra);
        moehal(&v)
    };
    for (layer, kind) in [("0", "hash-routed"), ("3", "gated")] {
        for ranks in ["2", "4"] {
            let out = check_pass(&run(layer, ranks, &[]), false);
            assert!(
                out.contains(&format!("checkpoint {p} layer {layer}"))
                    && out.contains("8 routed experts (mxfp4)")
                    && out.contains(kind)
                    && out.contains(&format!("{ranks} ranks over loopback"))
                    && out.contains("2 experts per rank") == (ranks == "4"),
                "{out}"
            );
        }
    }
    // Skewing the logits cannot move a hash-routed layer's tokens: an error, not a silent no-op.
    let o = run("0", "2", &["--ep-skew"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--ep-skew cannot apply") && text(&o).contains("hash-routed"),
        "{}",
        text(&o)
    );
    std::fs::remove_dir_all(&d).ok();
}
