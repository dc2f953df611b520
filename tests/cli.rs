//! Integration tests of the `moehal` binary (no timing assertions).

use std::process::{Command, Output};

fn moehal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moehal"))
        .args(args)
        .output()
        .expect("the moehal binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn devices_lists_the_reference() {
    let o = moehal(&["devices"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stderr: {err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("reference"))
        .expect("a reference row");
    assert!(line.contains("available"), "{line}");
    assert!(out.contains("compiled-in backends available"), "{out}");
}

#[test]
fn kernels_prints_a_matrix() {
    let o = moehal(&["kernels"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stderr: {err}");
    let header = out.lines().find(|l| l.starts_with("op ")).expect("a header row");
    assert!(header.contains("variant") && header.contains("reference"), "{header}");
    for op in [
        "grouped_gemm",
        "router_topk",
        "moe_permute",
        "swiglu",
        "moe_combine",
        "engram_hash",
        "gather_rows",
    ] {
        assert!(out.lines().any(|l| l.starts_with(op)), "no row for {op}:\n{out}");
    }
    // Every row has a cell per backend column: the reference supports every non-host-table variant.
    assert!(out
        .lines()
        .any(|l| l.starts_with("grouped_gemm") && l.contains("bf16 NK") && l.contains("reference")));
}

#[test]
fn check_unknown_backend_fails_with_a_reason() {
    let o = moehal(&["check", "--backend", "nope"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("nope") && err.contains("not compiled"), "{err}");
}

#[test]
fn check_reference_on_a_preset_passes() {
    let o = moehal(&[
        "check",
        "--backend",
        "reference",
        "--preset",
        "qwen3-30b-a3b",
        "--seed",
        "3",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    let summary = out.lines().last().unwrap_or("");
    assert!(summary.ends_with("0 failed, 0 unsupported"), "{summary}");
    assert!(out.contains("seed 3"));
}

#[test]
fn check_json_has_one_object_per_row() {
    let dir = std::env::temp_dir().join(format!("moehal-cli-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("check.json");
    let o = moehal(&[
        "check",
        "--backend",
        "reference",
        "--preset",
        "mixtral-8x7b",
        "--json",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rows = v.as_array().unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        for key in ["op", "backend", "case", "dtype", "metric", "verdict", "seconds", "seed"] {
            assert!(r.get(key).is_some(), "missing {key} in {r}");
        }
        assert_eq!(r["verdict"], "PASS");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn moe_layer_matches_the_reference() {
    // Widths / 8 keep the weights at ~19 MB per backend; routing (128 experts, top-8) is real.
    let o = moehal(&[
        "moe",
        "--preset",
        "qwen3-30b-a3b",
        "--tokens",
        "4",
        "--scale-widths",
        "8",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    for stage in ["router_topk", "moe_permute", "gate_up", "swiglu", "down", "moe_combine"] {
        assert!(out.lines().any(|l| l.starts_with(stage)), "no {stage} stage:\n{out}");
    }
    let last = out.lines().last().unwrap_or("");
    assert!(
        last.contains("relative error vs reference") && last.ends_with("PASS"),
        "{last}"
    );
    assert!(out.contains("widths scaled by 1/8"), "the scaling is reported:\n{out}");
}

#[test]
fn moe_with_shared_expert_and_scaled_experts_reports_scaling() {
    let o = moehal(&[
        "moe",
        "--preset",
        "deepseek-v3",
        "--tokens",
        "3",
        "--scale-widths",
        "16",
        "--budget-mib",
        "40",
        "--dtype",
        "f32",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("scaled by expert count to fit memory"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("shared_expert")), "{out}");
    assert!(out.lines().last().unwrap_or("").ends_with("PASS"), "{out}");
}

#[test]
fn moe_rejects_bad_arguments() {
    let o = moehal(&["moe", "--preset", "nope", "--tokens", "4"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("unknown preset"));
    let o = moehal(&["moe", "--preset", "qwen3-30b-a3b", "--tokens", "4", "--dtype", "i32"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("not a float type"));
}

#[test]
fn engram_on_a_small_text() {
    let dir = std::env::temp_dir().join(format!("moehal-cli-engram-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("small.txt");
    std::fs::write(
        &path,
        "The quick brown fox jumps over the lazy dog. THE quick brown fox!\n",
    )
    .unwrap();
    let o = moehal(&["engram", "--text", path.to_str().unwrap(), "--rows", "4096"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("cl100k_base"), "{out}");
    assert!(out.contains("rows scaled to fit memory: row mod R (R = 4096)"), "{out}");
    assert!(out.contains("vs reference: exact"), "{out}");
    assert!(out.contains("bitwise equal"), "{out}");
    // " quick brown fox" appears twice, so its bigrams hash to the same rows: fewer distinct
    // order-2 rows than tokens * heads.
    let d = out
        .lines()
        .find(|l| l.starts_with("distinct hashed rows"))
        .expect("distinct line");
    let order2 = d.split("order 2: ").nth(1).expect("order 2 count");
    let mut nums = order2.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
    let distinct: usize = nums.next().unwrap().parse().unwrap();
    let total: usize = nums.next().unwrap().parse().unwrap();
    assert!(distinct < total, "repeated bigrams must share rows: {d}");
    assert!(d.contains("order 4:"), "{d}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn engram_rejects_a_missing_text() {
    let o = moehal(&["engram", "--text", "/nonexistent/moehal.txt"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("/nonexistent/moehal.txt"));
}

#[test]
fn no_arguments_runs_the_default_check() {
    let o = moehal(&[]);
    let (out, err) = text(&o);
    let summary = out.lines().last().unwrap_or("");
    assert!(
        summary.contains(" passed, ") && summary.ends_with(" unsupported"),
        "stdout: {out}\nstderr: {err}"
    );
    // The exit status follows the failures.
    assert_eq!(o.status.success(), summary.contains(" 0 failed"), "{summary}");
}

mod common;

/// `moe --weights F --layer L` runs a checkpoint's layer against the reference: hash-routed where
/// the layer has `gate.tid2eid`, gated otherwise; a missing layer is an error naming the tensor.
#[test]
fn moe_runs_a_checkpoint_layer() {
    let d = std::env::temp_dir().join(format!("moehal-cli-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join("model.safetensors");
    common::v4_layer_file(&path);
    let p = path.to_str().unwrap();
    for (layer, kind) in [("0", "hash-routed"), ("3", "gated")] {
        let o = moehal(&[
            "moe",
            "--preset",
            "deepseek-v4-flash",
            "--tokens",
            "5",
            "--weights",
            p,
            "--layer",
            layer,
        ]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "layer {layer}: {out}\n{err}");
        assert!(out.contains(kind) && out.contains("8 routed experts (mxfp4)"), "{out}");
        assert!(out.contains("PASS"), "{out}");
    }
    let o = moehal(&[
        "moe",
        "--preset",
        "deepseek-v4-flash",
        "--tokens",
        "5",
        "--weights",
        p,
        "--layer",
        "9",
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(err.contains("layers.9.ffn.experts.0.w1.weight"), "{err}");
}
