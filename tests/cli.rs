//! Integration tests of the `moehal` binary (no timing assertions).

use std::process::Command;

mod common;

use common::cli::{moehal, moehal_env, temp_dir, text};

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
fn kernels_can_show_only_some_backends() {
    let o = moehal(&["kernels", "--backend", "reference"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stderr: {err}");
    let header = out.lines().find(|l| l.starts_with("op ")).expect("a header row");
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(columns, ["op", "variant", "reference"], "{header}");
    // An unknown name is an error listing the compiled-in backends.
    let o = moehal(&["kernels", "--backend", "tpu"]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        err.contains("--backend tpu") && err.contains("compiled into this build") && err.contains("reference"),
        "{err}"
    );
}

/// Issue 16: `--tokens 0` is a usage error (an empty run measures and checks nothing), and time
/// limits that are not finite, non-negative seconds are rejected, each naming its flag.
#[test]
fn zero_tokens_and_meaningless_limits_are_usage_errors_naming_the_flag() {
    for (args, flag, why) in [
        (&["bench", "--tokens", "0"][..], "--tokens", "at least 1"),
        (&["bench", "--tokens", "16", "0"][..], "--tokens", "at least 1"),
        (
            &["moe", "--preset", "qwen3-30b-a3b", "--tokens", "0"][..],
            "--tokens",
            "at least 1",
        ),
        (&["bench", "--ref-limit", "nan"][..], "--ref-limit", "finite"),
        (&["bench", "--budget", "0"][..], "--budget", "more than 0"),
        (
            &[
                "moe",
                "--preset",
                "qwen3-30b-a3b",
                "--tokens",
                "4",
                "--ref-limit",
                "nan",
            ][..],
            "--ref-limit",
            "finite",
        ),
        (
            &["moe", "--preset", "qwen3-30b-a3b", "--tokens", "4", "--ref-limit", "-1"][..],
            "--ref-limit",
            "0 or more",
        ),
        (
            &[
                "moe",
                "--preset",
                "qwen3-30b-a3b",
                "--tokens",
                "4",
                "--ref-limit",
                "inf",
            ][..],
            "--ref-limit",
            "finite",
        ),
    ] {
        let o = moehal(args);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{args:?} ran: {out}");
        assert!(out.is_empty(), "{args:?} did work before failing: {out}");
        assert!(err.contains(flag) && err.contains(why), "{args:?}: {err}");
    }
}

/// Issue 16: a token count whose inputs cannot fit is an error naming the largest that fits.
#[test]
fn bench_over_the_memory_budget_names_the_largest_token_count_that_fits() {
    let o = moehal(&["bench", "--op", "router_topk", "--tokens", "1000000000000"]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(err.contains("exceed the memory budget"), "{err}");
    let n: u64 = err
        .split("the largest token count that fits is ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no largest token count in: {err}"));
    assert!(n > 0 && n < 1_000_000_000_000, "{err}");
    assert!(err.contains(&format!("(--tokens {n})")), "{err}");
}

/// The largest token count an over-budget error names (`the largest token count that fits is N`).
fn largest_fitting(err: &str) -> u64 {
    err.split("the largest token count that fits is ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no largest token count in: {err}"))
}

/// Issue 16 / bench5: a token count whose sizes overflow usize (`u64::MAX` tokens × top-8 rows)
/// is the same clear error as any impossible size, for every op at once and for a preset, never an
/// arithmetic-overflow panic.
#[test]
fn bench_with_a_token_count_that_overflows_is_an_error_not_a_panic() {
    for args in [
        &["bench", "--tokens", "18446744073709551615"][..],
        &["bench", "--preset", "deepseek-v3", "--tokens", "18446744073709551615"][..],
        &["bench", "--op", "quantize_fp8", "--tokens", "18446744073709551615"][..],
        &["bench", "--op", "engram_hash", "--tokens", "2305843009213693952"][..],
    ] {
        let o = moehal(args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {out}\n{err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains("exceed the memory budget"), "{args:?}: {err}");
        let n = largest_fitting(&err);
        assert!(n > 0 && n < 1 << 40, "{args:?}: {err}");
    }
}

/// Issue 16 / bench5: the memory estimate counts every buffer, not only the table: gathering
/// 10^8 tokens × 8 rows of 256 bf16 needs T·C·8 bytes of ids and T·C·D·2 of output (≈ 381 GiB),
/// far beyond the 2 GiB table, and is refused before anything is allocated.
#[test]
fn bench_gather_counts_ids_and_output_in_its_memory_estimate() {
    let o = moehal(&["bench", "--op", "gather_rows", "--tokens", "100000000"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(!err.contains("memory allocation"), "{err}");
    let gib: f64 = err
        .split("T100000000 C8 bf16 (")
        .nth(1)
        .and_then(|r| r.split(" GiB").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bf16 gather size in: {err}"));
    let (t, c, d) = (1e8, 8.0, 256.0);
    let need = (t * c * 8.0 + t * c * d * 2.0) / (1u64 << 30) as f64;
    assert!(gib >= need, "estimate {gib} GiB < ids + output {need} GiB: {err}");
    let n = largest_fitting(&err);
    assert!(n > 0 && n < 100_000_000, "{err}");
}

/// bench5: a token count given twice runs once (`--tokens 2,2` and `--tokens 2 2`), and `--json`
/// writes what its help says: one JSON array with one object per printed row.
#[test]
fn bench_dedupes_token_counts_and_writes_a_json_array() {
    let dir = std::env::temp_dir().join(format!("moehal-bench-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = ["bench", "--op", "swiglu", "--budget", "0.01", "--backend", "reference"];
    for (i, tokens) in [&["2,2"][..], &["2", "2"][..]].into_iter().enumerate() {
        let json = dir.join(format!("rows{i}.json"));
        let path = json.to_str().unwrap().to_string();
        let mut args = base.to_vec();
        args.push("--json");
        args.push(&path);
        args.push("--tokens");
        args.extend(tokens);
        let o = moehal(&args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("swiglu ")).collect();
        // f32 and bf16, on the reference only: 2 rows, not 4.
        assert_eq!(rows.len(), 2, "{tokens:?}: {out}");
        assert!(out.contains("bench: 2 shape(s)"), "{out}");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let arr = v.as_array().expect("--json writes one array");
        assert_eq!(arr.len(), rows.len());
        assert!(
            arr.iter().all(|r| r["op"] == "swiglu" && r["shape"] == "M16 I768"),
            "{v}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    // --filter keeps the shapes whose origin, shape or dtype contains the text; none is an error.
    let args = [&base[..], &["--tokens", "2"]].concat();
    let o = moehal(&[&args[..], &["--filter", "bf16"]].concat());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("swiglu ")).collect();
    assert!(rows.len() == 1 && rows[0].contains("bf16"), "{out}");
    let o = moehal(&[&args[..], &["--filter", "no such shape"]].concat());
    let (_, err) = text(&o);
    assert!(!o.status.success() && err.contains("matching --filter"), "{err}");
    let o = moehal(&["bench", "--help"]);
    let (help, _) = text(&o);
    assert!(help.contains("one JSON array with one object per row"), "{help}");
}

/// `--help` lists every op the library has (from `OpKind::ALL`, so it cannot drift again).
#[test]
fn help_lists_every_op() {
    for cmd in ["bench", "check"] {
        let o = moehal(&[cmd, "--help"]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        for op in moehal::OpKind::ALL {
            assert!(out.contains(op.name()), "moehal {cmd} --help lacks {op}:\n{out}");
        }
    }
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
    // The base seed once (a decimal string), then the rows.
    let base = v["base_seed"]
        .as_str()
        .unwrap_or_else(|| panic!("no base_seed string in {v}"));
    assert!(base.parse::<u64>().is_ok(), "{base}");
    let rows = v["results"].as_array().unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        for key in ["op", "backend", "case", "dtype", "metric", "verdict", "seconds", "seed"] {
            assert!(r.get(key).is_some(), "missing {key} in {r}");
        }
        assert_eq!(r["verdict"], "PASS");
        assert!(r["seed"].as_str().is_some_and(|s| s.parse::<u64>().is_ok()), "{r}");
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
    // Issue 16: only the float dtypes are listed and accepted (a usage error, exit status 2).
    let o = moehal(&["moe", "--preset", "qwen3-30b-a3b", "--tokens", "4", "--dtype", "i32"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("[possible values: f32, bf16, f16]"),
        "{}",
        text(&o).1
    );
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
    assert!(out.contains("rows as given by --rows: row mod R (R = 4096)"), "{out}");
    assert!(out.contains("vs reference: exact"), "{out}");
    assert!(out.contains("bitwise equal"), "{out}");
    // One batch is not "1 batches" (bench5).
    assert!(out.contains("in 1 batch(es)") && !out.contains(" batches"), "{out}");
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

// ------------------------------------------------------------------------------------------------
// Issue 16: reliability and first contact
// ------------------------------------------------------------------------------------------------

#[test]
fn invalid_environment_values_are_errors_naming_the_variable_and_accepted_values() {
    for (var, value, accepted) in [
        ("MOEHAL_CPU_THREADS", "abc", "an integer from 0 to"),
        ("MOEHAL_CPU_THREADS", "-3", "an integer from 0 to"),
        ("MOEHAL_CPU_ISA", "bogus", "amx, avx512, avx2, neon, scalar"),
        ("MOEHAL_CPU_BF16", "fast", "dot, fma"),
        ("MOEHAL_ACL_EMU_MEM_CAP", "lots", "a byte count"),
        // Names ignore case, but a stray space or a number is not a name (issue 16).
        (
            "MOEHAL_CPU_ISA",
            " avx2",
            "(surrounding spaces are not stripped); accepted values: amx",
        ),
        ("MOEHAL_CPU_ISA", "2", "amx, avx512, avx2, neon, scalar"),
        ("MOEHAL_CPU_THREADS", " 2", "surrounding spaces are not stripped"),
        (
            "MOEHAL_CPU_THREADS",
            "",
            "MOEHAL_CPU_THREADS is set but empty (unset it for the default)",
        ),
    ] {
        let o = moehal_env(&["devices"], &[(var, value)]);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{var}={value} accepted:\n{out}");
        assert!(
            err.contains(var) && err.contains(value) && err.contains(accepted),
            "{var}={value}: {err}"
        );
    }
}

#[test]
fn isa_names_ignore_case() {
    let o = moehal_env(&["devices"], &[("MOEHAL_CPU_ISA", "SCALAR")]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
}

#[test]
fn more_threads_than_cores_warns_and_runs() {
    let over = std::thread::available_parallelism().map_or(1, |n| n.get()) + 1;
    let o = moehal_env(&["devices"], &[("MOEHAL_CPU_THREADS", &over.to_string())]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains(&format!("warning: MOEHAL_CPU_THREADS={over} is more than the")),
        "{err}"
    );
    let o = moehal_env(&["devices"], &[("MOEHAL_CPU_THREADS", "1")]);
    assert!(o.status.success());
    assert!(!text(&o).1.contains("warning"), "{}", text(&o).1);
}

#[test]
fn check_filters_by_op_case_and_dtype_and_shows_the_tolerance() {
    let o = moehal(&[
        "check",
        "--backend",
        "cpu",
        "--op",
        "grouped_gemm",
        "--case",
        "gemm NK plain",
        "--seed",
        "9",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    let header = out.lines().find(|l| l.starts_with("op ")).expect("a header");
    assert!(header.contains(" tol "), "{header}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("grouped_gemm")).collect();
    assert!(rows.len() > 1, "one row per dtype:\n{out}");
    assert!(
        rows.iter()
            .all(|r| r.contains("gemm NK plain") && r.contains("rel <= ")),
        "{out}"
    );
    // --dtype narrows to one case.
    let dtype = rows[0].split("gemm NK plain").nth(1).unwrap().trim();
    let dtype: Vec<&str> = dtype.split_whitespace().take(2).collect();
    let o = moehal(&[
        "check",
        "--backend",
        "cpu",
        "--op",
        "grouped_gemm",
        "--case",
        "gemm NK plain",
        "--dtype",
        &dtype.join(" "),
        "--seed",
        "9",
    ]);
    let (out, _) = text(&o);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("grouped_gemm")).count(),
        1,
        "{out}"
    );
    let o = moehal(&["check", "--case", "no such case"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("no case matches"), "{}", text(&o).1);
}

/// A safetensors file: `header` JSON after its 8-byte length, then `data`.
fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn bad_tables_are_described_in_words_before_tokenizing() {
    let dir = temp_dir("tables");
    let good_header = r#"{"table":{"dtype":"BF16","shape":[4,32],"data_offsets":[0,256]}}"#;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("short", vec![1, 2, 3], "3 bytes, shorter than the 8-byte header length"),
        (
            "huge",
            u64::MAX.to_le_bytes().to_vec(),
            "more than the 100000000-byte limit",
        ),
        (
            "past",
            {
                let mut v = 1000u64.to_le_bytes().to_vec();
                v.extend_from_slice(b"{}");
                v
            },
            "says 1000 bytes of JSON at offsets [8, 1008), but the file has 10 bytes",
        ),
        (
            "notjson",
            {
                let mut v = 4u64.to_le_bytes().to_vec();
                v.extend_from_slice(b"abcd");
                v
            },
            "does not start with '{'",
        ),
        (
            "truncated",
            safetensors_bytes(good_header, &[0u8; 100]),
            "truncated: the tensors' data_offsets end at byte 256",
        ),
        (
            "trailing",
            safetensors_bytes(good_header, &[0u8; 300]),
            "44 bytes past the end of the last tensor",
        ),
    ];
    for (name, bytes, want) in &cases {
        let path = dir.join(format!("{name}.safetensors"));
        std::fs::write(&path, bytes).unwrap();
        let o = moehal(&["engram", "--table", path.to_str().unwrap()]);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{name}: accepted");
        assert!(err.contains(want), "{name}: {err}");
        for code in [
            "InvalidHeaderLength",
            "HeaderTooLarge",
            "MetadataIncompleteBuffer",
            "InvalidHeader",
        ] {
            assert!(!err.contains(code), "{name}: raw code in {err}");
        }
        // The table is opened before the tokenizer loads: nothing about the text was printed.
        assert!(
            !out.contains("cl100k"),
            "{name}: tokenized before opening the table:\n{out}"
        );
    }
    let o = moehal(&["engram", "--table", dir.to_str().unwrap()]);
    let err = text(&o).1;
    assert!(!o.status.success());
    assert!(
        err.contains("is a directory, not a safetensors file") && !err.contains("mmap"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_saved_table_is_read_back() {
    let dir = temp_dir("save-table");
    let text_path = dir.join("t.txt");
    std::fs::write(&text_path, "one two three four five six seven\n").unwrap();
    let table = dir.join("t.safetensors");
    let o = moehal(&[
        "engram",
        "--text",
        text_path.to_str().unwrap(),
        "--rows",
        "128",
        "--save-table",
        table.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("saved the table to"), "{out}");
    assert!(std::fs::metadata(&table).unwrap().len() > 128 * 256 * 2);
    let o = moehal(&[
        "engram",
        "--text",
        text_path.to_str().unwrap(),
        "--table",
        table.to_str().unwrap(),
    ]);
    let (out2, err) = text(&o);
    assert!(o.status.success(), "stdout: {out2}\nstderr: {err}");
    assert!(
        out2.contains("memory-mapped in place") && out2.contains("bitwise equal"),
        "{out2}"
    );
    // The same seeded table: the same distinct rows and the same gathered bytes were checked.
    let line = |s: &str, p: &str| s.lines().find(|l| l.starts_with(p)).map(str::to_string);
    assert_eq!(line(&out, "distinct hashed rows"), line(&out2, "distinct hashed rows"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `--save-table`: an existing file is kept unless `--force`; I/O errors are words with the
/// path; the table is written before the text is tokenized, so a failure there keeps it.
#[test]
fn save_table_refuses_to_overwrite_reports_io_errors_in_words_and_survives_a_failed_run() {
    let dir = temp_dir("save-table-errors");
    let text_path = dir.join("t.txt");
    std::fs::write(&text_path, "one two three\n").unwrap();
    let t = text_path.to_str().unwrap();
    // A directory that does not exist: an error in words, naming the path, before generating.
    let missing = dir.join("no/such/dir/t.safetensors");
    let o = moehal(&[
        "engram",
        "--text",
        t,
        "--rows",
        "64",
        "--save-table",
        missing.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        err.contains(missing.to_str().unwrap()) && err.contains("No such file or directory"),
        "{err}"
    );
    assert!(!err.contains("IoError") && !err.contains("Os {"), "{err}");
    // An existing file is not replaced without --force, and is left as it was.
    let existing = dir.join("keep.safetensors");
    std::fs::write(&existing, b"precious").unwrap();
    let o = moehal(&[
        "engram",
        "--text",
        t,
        "--rows",
        "64",
        "--save-table",
        existing.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        err.contains("--force") && err.contains(existing.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"precious");
    let o = moehal(&[
        "engram",
        "--text",
        t,
        "--rows",
        "64",
        "--save-table",
        existing.to_str().unwrap(),
        "--force",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    assert!(std::fs::metadata(&existing).unwrap().len() > 64 * 256 * 2);
    // A text with no tokens fails the run after the table was generated: the table is kept whole.
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let kept = dir.join("kept.safetensors");
    let o = moehal(&[
        "engram",
        "--text",
        empty.to_str().unwrap(),
        "--rows",
        "64",
        "--save-table",
        kept.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(err.contains("no tokens"), "{err}");
    assert_eq!(
        std::fs::metadata(&kept).unwrap().len(),
        std::fs::metadata(&existing).unwrap().len(),
        "the same [64, 256] bf16 table, whole"
    );
    // No partial files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn engram_processes_a_long_text_in_bounded_chunks() {
    let dir = temp_dir("engram-chunks");
    let path = dir.join("long.txt");
    let para = "The quick brown fox jumps over the lazy dog.\nPack my box with five dozen liquor jugs!\n";
    std::fs::write(&path, para.repeat(400)).unwrap();
    let o = moehal(&[
        "engram",
        "--text",
        path.to_str().unwrap(),
        "--rows",
        "4096",
        "--chunk-bytes",
        "4096",
        "--batch-tokens",
        "100",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    let mem = out
        .lines()
        .find(|l| l.starts_with("bounded memory:"))
        .expect("bounded memory line");
    let chunks: usize = mem["bounded memory: ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(chunks >= 8, "{mem}");
    assert!(!mem.contains("cut inside a line"), "{mem}");
    assert!(
        out.contains("vs reference: exact") && out.contains("bitwise equal"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn moe_impossible_token_counts_are_errors_and_the_reference_is_bounded() {
    let o = moehal(&[
        "moe",
        "--preset",
        "qwen3-30b-a3b",
        "--tokens",
        "1000000000000",
        "--scale-widths",
        "8",
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        err.contains("--tokens 1000000000000") && err.contains("tokens fit"),
        "{err}"
    );
    let args = [
        "moe",
        "--preset",
        "qwen3-30b-a3b",
        "--tokens",
        "4",
        "--scale-widths",
        "8",
    ];
    let o = moehal(&[&args[..], &["--no-reference"]].concat());
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("reference not run (--no-reference)") && out.contains("not checked"),
        "{out}"
    );
    assert!(!out.contains("vs reference"), "{out}");
    let o = moehal(&[&args[..], &["--ref-limit", "0"]].concat());
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("> --ref-limit 0 s"), "{out}");
    // Issue 16: the header says the reference was skipped and why, never "vs reference".
    assert!(!out.contains("vs reference"), "{out}");
    let header = out.lines().find(|l| l.starts_with("tokens 4,")).expect("a header line");
    assert!(header.contains("reference skipped (estimated"), "{header}");
    assert!(out.contains("not checked: reference skipped"), "{out}");
}

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
        // The CPU backend by name: `cargo test` puts target/debug on the library path, where the
        // ACL emulator (no hash routing, no §6 kernels yet) may have been built.
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
            "--backend",
            "cpu",
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
        "--backend",
        "cpu",
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(err.contains("layers.9.ffn.experts.0.w1.weight"), "{err}");
}

// ------------------------------------------------------------------------------------------------
// Issue 16, second pass: sizes, dtypes, messages and stdout errors
// ------------------------------------------------------------------------------------------------

/// `--chunk-bytes` larger than the text reads the whole text at once (never allocates the value
/// asked for); a `--batch-tokens` that cannot fit memory is an error naming the maximum.
#[test]
fn engram_huge_chunk_reads_the_text_and_an_impossible_batch_names_the_maximum() {
    let dir = temp_dir("engram-sizes");
    let path = dir.join("t.txt");
    let body = "alpha beta gamma delta\n".repeat(20);
    std::fs::write(&path, &body).unwrap();
    let p = path.to_str().unwrap();
    let o = moehal(&[
        "engram",
        "--text",
        p,
        "--rows",
        "256",
        "--chunk-bytes",
        "18446744073709551615",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains(&format!("1 chunk(s) of at most {} B of text", body.len())),
        "the chunk is the text, not 2^64 bytes: {out}"
    );
    assert!(out.contains("bitwise equal"), "{out}");
    let o = moehal(&[
        "engram",
        "--text",
        p,
        "--rows",
        "256",
        "--batch-tokens",
        "1000000000000",
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "accepted: {out}");
    assert!(
        err.contains("--batch-tokens 1000000000000") && err.contains("the maximum allowed here is "),
        "{err}"
    );
    let max: u64 = err
        .rsplit("the maximum allowed here is ")
        .next()
        .and_then(|s| s.trim().parse().ok())
        .expect("a number");
    assert!(max >= 2048, "the default batch must fit: {err}");
    assert!(!out.contains("cl100k"), "failed after loading the tokenizer: {out}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A table file may hold tensors of any safetensors dtype (an F8_E8M0 scale tensor, as DeepSeek
/// checkpoints have); only the table's own dtype must be one the gather reads.
#[test]
fn a_table_file_with_an_f8_e8m0_tensor_opens_and_an_unsupported_table_dtype_is_named() {
    let dir = temp_dir("e8m0");
    let text_path = dir.join("t.txt");
    std::fs::write(&text_path, "one two three four\n").unwrap();
    let table_bytes = 64 * 32 * 2;
    let header = format!(
        r#"{{"__metadata__":{{"format":"pt"}},"scale":{{"dtype":"F8_E8M0","shape":[64],"data_offsets":[{table_bytes},{}]}},"table":{{"dtype":"BF16","shape":[64,32],"data_offsets":[0,{table_bytes}]}}}}"#,
        table_bytes + 64
    );
    // bf16 0x3f80 = 1.0 everywhere, scales 127 (2^0).
    let mut data: Vec<u8> = [0x80u8, 0x3f].repeat(64 * 32);
    data.extend(std::iter::repeat_n(127u8, 64));
    let path = dir.join("with-e8m0.safetensors");
    std::fs::write(&path, safetensors_bytes(&header, &data)).unwrap();
    let o = moehal(&[
        "engram",
        "--text",
        text_path.to_str().unwrap(),
        "--table",
        path.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("tensor `table` bf16 [64, 32]") && out.contains("bitwise equal"),
        "{out}"
    );

    let header = r#"{"table":{"dtype":"F8_E8M0","shape":[4,33],"data_offsets":[0,132]}}"#;
    let path = dir.join("e8m0-table.safetensors");
    std::fs::write(&path, safetensors_bytes(header, &[127u8; 132])).unwrap();
    let o = moehal(&["engram", "--table", path.to_str().unwrap()]);
    let err = text(&o).1;
    assert!(!o.status.success());
    assert!(
        err.contains("tensor `table` has dtype F8_E8M0") && !err.contains("not a safetensors header"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The README's list of ops names only ops of the library (it once named a `router_hash` op; hash
/// routing is a kind of `router_topk`), and every op.
#[test]
fn the_readme_names_the_ops_the_library_has() {
    let readme = include_str!("../README.md");
    let start = readme.find("(ops: ").expect("the README lists the ops");
    let list = &readme[start..start + readme[start..].find("). ").expect("end of the list")];
    let names: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
    // Weight formats and DeepSeek's table name are quoted in the list too; nothing else.
    let not_ops = ["fp8_block", "mxfp4", "int8", "tid2eid"];
    for n in &names {
        assert!(
            moehal::OpKind::ALL.iter().any(|o| o.name() == *n) || not_ops.contains(n),
            "README names `{n}`, which is not an op: {list}"
        );
    }
    for o in moehal::OpKind::ALL {
        assert!(names.contains(&o.name()), "README's list lacks {o}: {list}");
    }
}

/// Every `"MOEHAL_..."` name written as a string in the workspace's Rust sources (the way each
/// environment variable is read: `env::var("MOEHAL_X")`, `const X: &str = "MOEHAL_X"`, `env!`)
/// has a row in the README's tables (issue 16 item 4: `MOEHAL_CPU_INT8`, the CUDA kernel cache
/// and the emulator's tie policy were read but documented only beside their code, or nowhere).
/// Names of the C header (status codes, enums: `ffi/include/moehal.h`) are not variables.
#[test]
fn every_environment_variable_read_is_in_the_readme() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let header = std::fs::read_to_string(root.join("ffi/include/moehal.h")).unwrap();
    // Made-up values of the rerun line's quoting test (src/bin/moehal/check.rs), and the name
    // `moehal_status_name` gives a code outside the header's enum (ffi/src/abi.rs).
    let not_variables = ["MOEHAL_X", "MOEHAL_THREADS", "MOEHAL_UNKNOWN_STATUS"];
    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name();
            if p.is_dir() {
                if name != "target" && name != ".git" {
                    rust_files(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    for d in ["src", "backends", "ffi", "tests", "examples", "benches"] {
        rust_files(&root.join(d), &mut files);
    }
    let mut names = std::collections::BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("\"MOEHAL_") {
            let tail = &rest[i + 1..];
            let end = tail
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            if tail[end..].starts_with('"') && end > "MOEHAL_".len() {
                names.insert((tail[..end].to_string(), f.clone()));
            }
            rest = &tail[end..];
        }
    }
    assert!(
        names.iter().any(|(n, _)| n == "MOEHAL_CPU_THREADS"),
        "the scan found no variable: {names:?}"
    );
    let undocumented: Vec<String> = names
        .iter()
        .filter(|(n, _)| {
            let in_header = header
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .any(|w| w == n);
            !in_header && !not_variables.contains(&n.as_str()) && !readme.contains(&format!("`{n}`"))
        })
        .map(|(n, f)| format!("{n} ({})", f.strip_prefix(root).unwrap_or(f).display()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "read but not in the README's environment tables: {undocumented:?}"
    );
}

/// `--budget`: one rule and one message for every value outside it; seeds outside 0..2^64-1 and
/// empty filters are usage errors in words.
#[test]
fn budget_seed_and_filter_values_get_one_message_each() {
    let budget = |v: &str| {
        let o = moehal(&["bench", "--budget", v]);
        assert!(!o.status.success(), "--budget {v} accepted");
        text(&o).1
    };
    let zero = budget("0");
    let neg = budget("-1");
    assert!(
        zero.contains("must be a finite number of seconds, more than 0"),
        "{zero}"
    );
    // The same sentence after clap's "invalid value 'V' for '--budget <BUDGET>': ".
    let rule = |e: &str| {
        e.split("': ")
            .nth(1)
            .map(|r| r.replace("got 0", "got X").replace("got -1", "got X"))
    };
    assert_eq!(rule(&zero), rule(&neg), "{zero}\n{neg}");
    assert!(rule(&zero).is_some(), "{zero}");
    for args in [
        &["check", "--seed", "-1"][..],
        &["engram", "--seed", "-1"][..],
        &["check", "--seed", "18446744073709551616"][..],
    ] {
        let o = moehal(args);
        let err = text(&o).1;
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(
            err.contains("seeds are whole numbers from 0 to 2^64-1"),
            "{args:?}: {err}"
        );
    }
    for args in [&["check", "--case", ""][..], &["check", "--dtype", " "][..]] {
        let o = moehal(args);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{args:?} ran: {out}");
        assert!(err.contains("must not be empty"), "{args:?}: {err}");
    }
}

/// Results that cannot be written to stdout are a failure with a message, not a silent success.
#[test]
fn a_full_stdout_is_an_error() {
    let full = std::path::Path::new("/dev/full");
    if !full.exists() {
        println!("skipped: no /dev/full on this system");
        return;
    }
    for args in [
        &["devices"][..],
        &["kernels", "--backend", "reference"][..],
        &["check", "--backend", "reference", "--op", "swiglu", "--seed", "1"][..],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_moehal"))
            .args(args)
            .stdout(std::fs::OpenOptions::new().write(true).open(full).unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} exited 0 with its output lost");
        assert!(
            err.contains("error: writing the results to stdout") && err.contains("No space left on device"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Issue 16 (items 1 and 3): `moe --weights` follows the seeded layer's rules: the one memory rule
/// (an impossible token count is an error naming the most that fit, before any output), the
/// reference bounds (`--no-reference`, `--ref-limit`), the same stage table; flags that cannot apply
/// to a checkpoint are errors naming them; no stray space before a comma.
#[test]
fn moe_weights_honours_the_flags_of_the_seeded_layer() {
    let d = std::env::temp_dir().join(format!("moehal-cli-ckpt-flags-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join("model.safetensors");
    common::v4_layer_file(&path);
    let p = path.to_str().unwrap();
    let base = [
        "moe",
        "--preset",
        "deepseek-v4-flash",
        "--weights",
        p,
        "--layer",
        "3",
        "--backend",
        "cpu",
    ];
    let run = |extra: &[&str]| moehal(&[&base[..], extra].concat());
    // Memory: 10^8 tokens of this layer need hundreds of GB.
    let o = run(&["--tokens", "100000000"]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.is_empty(), "work before the error: {out}");
    assert!(
        err.contains("--tokens 100000000") && err.contains("tokens fit") && err.contains("per token"),
        "{err}"
    );
    // The stage table of the seeded layer, checked against the reference.
    let o = run(&["--tokens", "5"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for stage in [
        "router_topk",
        "moe_permute",
        "gate_up",
        "swiglu",
        "down",
        "shared_expert",
        "moe_combine",
        "total",
    ] {
        assert!(out.lines().any(|l| l.starts_with(stage)), "no {stage} stage:\n{out}");
    }
    assert!(out.contains("vs reference") && !out.contains(" ,"), "{out}");
    let last = out.lines().last().unwrap_or("");
    assert!(
        last.contains("relative error vs reference") && last.ends_with("PASS"),
        "{last}"
    );
    // --no-reference and --ref-limit 0: not checked, said so, the stage table still printed.
    for (flag, says) in [
        (&["--no-reference"][..], "reference not run (--no-reference)"),
        (&["--ref-limit", "0"][..], "> --ref-limit 0 s"),
    ] {
        let o = run(&[&["--tokens", "5"][..], flag].concat());
        let (out, err) = text(&o);
        assert!(o.status.success(), "{flag:?}: {out}\n{err}");
        assert!(out.contains(says) && out.contains("not checked"), "{flag:?}: {out}");
        assert!(!out.contains("vs reference"), "{flag:?}: {out}");
        assert!(out.lines().any(|l| l.starts_with("gate_up")), "{flag:?}: {out}");
    }
    // Flags that cannot apply to a checkpoint's layer.
    for (flag, name) in [
        (&["--float-weights"][..], "--float-weights"),
        (&["--scale-widths", "2"][..], "--scale-widths"),
        (&["--budget-mib", "64"][..], "--budget-mib"),
    ] {
        let o = run(&[&["--tokens", "5"][..], flag].concat());
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{flag:?} ran: {out}");
        assert!(
            err.contains("--weights cannot be combined with") && err.contains(name),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

/// `moe --help` names the tensors without a stray space (`w{1,2,3}.{weight,scale}`).
#[test]
fn moe_help_names_the_checkpoint_tensors_in_one_piece() {
    let o = moehal(&["moe", "--help"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.contains("w{1,2,3}.{weight,scale}"), "{out}");
    // Error messages name --scale-widths and --budget-mib as remedies: help must show them.
    assert!(out.contains("--scale-widths") && out.contains("--budget-mib"), "{out}");
}

/// `moe` and `bench` number flags: `--seed -1`, `--scale-widths 0`, `--budget-mib -1`,
/// `--ep-threads 0` are usage errors that say what is accepted (not clap's "unexpected argument" or
/// "invalid digit", not "scaled by 1/0"), and `--ep` with `--ep-threads` is refused instead of one
/// being silently ignored.
#[test]
fn moe_and_bench_number_flags_say_what_is_accepted() {
    let cases: [(&[&str], &str); 6] = [
        (&["moe", "--seed", "-1"], "seeds are whole numbers from 0 to 2^64-1"),
        (&["bench", "--seed", "-1"], "seeds are whole numbers from 0 to 2^64-1"),
        (&["moe", "--scale-widths", "0"], "must be a whole number from 1 to"),
        (&["moe", "--budget-mib", "-1"], "must be a whole number from 1 to"),
        (&["moe", "--ep-threads", "0"], "must be a whole number from 1 to"),
        (&["moe", "--ep", "--ep-threads", "2"], "cannot be used with"),
    ];
    for (args, want) in cases {
        let o = moehal(args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!out.contains("scaled by 1/0"), "{args:?}: {out}");
    }
}

/// A fresh user's third pass (issue 16): a text read from a pipe (size unknown, metadata says 0)
/// is chunked as asked, not in 4-byte pieces (which re-tokenized it and changed the hashes); the
/// token count equals the same text read from a file.
#[test]
fn engram_text_from_a_pipe_tokenizes_like_the_file() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("moehal-cli-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.txt");
    let body = "hello world, this is a small text for the pipe test.\n".repeat(40);
    std::fs::write(&path, &body).unwrap();
    let tokens = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("text: "))
            .and_then(|l| l.rsplit(", ").next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no text line in {out}"))
    };
    let file = moehal(&["engram", "--rows", "10", "--text", path.to_str().unwrap()]);
    let (fout, ferr) = text(&file);
    assert!(file.status.success(), "{fout}{ferr}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_moehal"))
        .args(["engram", "--rows", "10", "--text", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let piped = child.wait_with_output().unwrap();
    let (pout, perr) = text(&piped);
    assert!(piped.status.success(), "{pout}{perr}");
    assert_eq!(tokens(&pout), tokens(&fout), "pipe:\n{pout}\nfile:\n{fout}");
    assert!(pout.contains("1 chunk(s)"), "{pout}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `--save-table --force` replaces only a regular file: a symlink (or FIFO, device) at the path
/// is refused and left as it was, and so is its target.
#[test]
fn engram_save_table_refuses_what_is_not_a_regular_file() {
    let dir = std::env::temp_dir().join(format!("moehal-cli-savelink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("target.st");
    std::fs::write(&target, b"keep").unwrap();
    let link = dir.join("link.st");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = moehal(&[
        "engram",
        "--rows",
        "10",
        "--save-table",
        link.to_str().unwrap(),
        "--force",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    std::fs::remove_dir_all(&dir).ok();
}

/// A rank count is checked before anything is sized from it: `--ep-threads` far above the expert
/// count (or 2^64-1) is an error naming the rule, never an allocation abort or overflow panic;
/// `--ep-threads` with `--no-reference` / `--ref-limit` (which it does not use: it compares with
/// the single-process layer) is a usage error; negative counts say what is accepted.
#[test]
fn moe_rank_counts_and_flags_ep_does_not_use() {
    for r in ["1000000", "18446744073709551615"] {
        let o = moehal(&["moe", "--preset", "qwen3-30b-a3b", "--tokens", "2", "--ep-threads", r]);
        let (out, err) = text(&o);
        // A flag value bad for the preset: a usage error naming the flag (issue 16 item 2).
        assert_eq!(o.status.code(), Some(2), "{r}: {out}{err}");
        assert!(err.contains(&format!("--ep-threads {r}")), "{r}: {err}");
        assert!(
            err.contains("do not split evenly") && err.contains("at most 128"),
            "{r}: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("memory allocation"),
            "{r}: {err}"
        );
    }
    for extra in [&["--no-reference"][..], &["--ref-limit", "1"][..]] {
        let mut args = vec!["moe", "--preset", "qwen3-30b-a3b", "--tokens", "2", "--ep-threads", "2"];
        args.extend_from_slice(extra);
        let o = moehal(&args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {out}{err}");
        assert!(err.contains("cannot be used with"), "{extra:?}: {err}");
    }
    let cases: [(&[&str], &str); 4] = [
        (&["moe", "--tokens", "-1"], "expected a whole number, at least 1"),
        (&["bench", "--tokens", "-1"], "expected a whole number, at least 1"),
        (&["engram", "--rows", "-5"], "must be a whole number from 1"),
        (&["engram", "--chunk-bytes", "2"], "must be a whole number from 4"),
    ];
    for (args, want) in cases {
        let o = moehal(args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// `--help` written to a full disk is an error (exit 1), like every command's output.
#[test]
fn help_to_a_full_disk_is_an_error() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        println!("skipped: no /dev/full here");
        return;
    };
    for args in [&["--help"][..], &["bench", "--help"][..]] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_moehal"))
            .args(args)
            .stdout(full.try_clone().unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("No space left on device"), "{args:?}: {err}");
    }
}
