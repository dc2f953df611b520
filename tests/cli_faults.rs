//! Issue 16, a fresh user's third pass: each fault kind of the CLI with its example as a test
//! (exit statuses and message text of the `moehal` binary; no timing assertions).

use std::process::Command;

use moehal_core::OpKind;

mod common;

use common::cli::{moehal, moehal_env, temp_dir, text};

/// A safetensors file of one header and no data.
fn header_only(header: &str) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut v = (h.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(&h);
    v
}

/// Item 1: a table of 0 columns (or 0 rows) is an error naming the table and its shape, not
/// `--batch-tokens`.
#[test]
fn an_empty_table_is_named_with_its_shape() {
    let dir = temp_dir("empty-table");
    for (name, shape) in [("cols", "[4,0]"), ("rows", "[0,32]")] {
        let path = dir.join(format!("{name}.safetensors"));
        let header = format!(r#"{{"table":{{"dtype":"BF16","shape":{shape},"data_offsets":[0,0]}}}}"#);
        std::fs::write(&path, header_only(&header)).unwrap();
        let o = moehal(&["engram", "--table", path.to_str().unwrap()]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {out}{err}");
        let shown = shape.replace(',', ", ");
        assert!(
            err.contains(&format!("{name}.safetensors")) && err.contains(&shown) && err.contains("empty table"),
            "{name}: {err}"
        );
        assert!(!err.contains("batch"), "{name}: blames the batch: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Item 2: a bad flag value found after parsing (alone or with other flags) is a usage error,
/// exit status 2, naming the flag, like clap's own; and `--help` says what the statuses mean.
#[test]
fn bad_flag_values_found_after_parsing_exit_2_naming_the_flag() {
    let cases: [(&[&str], &str); 8] = [
        (&["moe", "--preset", "nope", "--tokens", "1"], "--preset nope"),
        (&["bench", "--preset", "nope"], "--preset nope"),
        (&["check", "--preset", "nope"], "--preset nope"),
        (
            &["moe", "--preset", "qwen3-30b-a3b", "--tokens", "1", "--backend", "tpu"],
            "--backend tpu",
        ),
        (&["bench", "--backend", "tpu"], "--backend tpu"),
        (
            &[
                "moe",
                "--preset",
                "qwen3-30b-a3b",
                "--tokens",
                "1",
                "--weights",
                "x",
                "--float-weights",
            ],
            "--weights cannot be combined with --float-weights",
        ),
        (
            &["check", "--op", "swiglu", "--case", "no such case"],
            "--case no such case",
        ),
        (
            &[
                "moe",
                "--preset",
                "qwen3-30b-a3b",
                "--tokens",
                "1",
                "--ep-threads",
                "5",
                "--scale-widths",
                "16",
            ],
            "--ep-threads 5",
        ),
    ];
    for (args, want) in cases {
        let o = moehal(args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let o = moehal(&["--help"]);
    let (help, _) = text(&o);
    assert!(o.status.success());
    assert!(
        help.contains("Exit status") && help.contains("2 on a usage error"),
        "{help}"
    );
}

/// Item 3: `moe --dtype` lists and accepts the float dtypes only.
#[test]
fn moe_dtype_lists_only_what_it_accepts() {
    let o = moehal(&["moe", "--preset", "qwen3-30b-a3b", "--tokens", "1", "--dtype", "i32"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("f32") && err.contains("bf16") && err.contains("f16"),
        "{err}"
    );
    assert!(
        !err.contains("i64") && !err.contains("u8"),
        "lists what it rejects: {err}"
    );
    let (help, _) = text(&moehal(&["moe", "--help"]));
    let line = help
        .lines()
        .skip_while(|l| !l.contains("--dtype"))
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(line.contains("f32, bf16, f16") && !line.contains("i32"), "{line}");
}

/// Item 4: `bench --help` says how each cold row is sized and that a cut row says so; a preset has
/// a cold row (`--filter cold` finds it); a filter for cold rows with token counts that exclude 1
/// says why there is none.
#[test]
fn cold_rows_are_described_as_they_are_sized() {
    let (help, _) = text(&moehal(&["bench", "--help"]));
    assert!(
        help.contains("memory budget holds") && help.contains("cut to fit") && help.contains("not fully cold"),
        "{help}"
    );
    let o = moehal(&[
        "bench",
        "--preset",
        "qwen3-30b-a3b",
        "--filter",
        "cold",
        "--tokens",
        "16",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("cold-decode rows are one-token rows"), "{err}");
    let p = moehal::presets::preset("deepseek-v4-flash").unwrap();
    for budget in [4.5 * (1u64 << 30) as f64, 64e6] {
        let shapes = moehal::bench::preset_shapes(p, Some(&[1]), budget).unwrap();
        let cold: Vec<_> = shapes.iter().filter(|s| s.shape().contains("cold")).collect();
        assert_eq!(cold.len(), 1, "{budget}");
        assert!(cold[0].shape().contains("top6"), "{}", cold[0].shape());
    }
    // The quantized cold rows of V4-Flash (256 experts) cut by a small budget say so.
    let shapes = moehal::bench::default_shapes(Some(&[1]), 300e6).unwrap();
    let cut: Vec<_> = shapes
        .iter()
        .filter(|s| s.shape().starts_with("E") && s.shape().contains("cold") && s.origin.contains("v4"))
        .collect();
    assert!(!cut.is_empty());
    for s in cut {
        assert!(
            s.notes.iter().any(|n| n.starts_with("cut to fit memory: 256 -> ")),
            "{}: {:?}",
            s.shape(),
            s.notes
        );
    }
}

/// A bench run that takes well under a second: swiglu at 2 tokens on the reference.
const SMALL_SWIGLU_BENCH: [&str; 9] = [
    "bench",
    "--op",
    "swiglu",
    "--tokens",
    "2",
    "--budget",
    "0.01",
    "--backend",
    "reference",
];

/// Item 5: `--filter` matches the printed op, shape and dtype columns, ignoring case, not the
/// unprinted origin; an empty filter is a usage error.
#[test]
fn bench_filter_matches_what_is_printed_ignoring_case() {
    let base = SMALL_SWIGLU_BENCH;
    let o = moehal(&[&base[..], &["--filter", "BF16"]].concat());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("swiglu ")).collect();
    assert!(rows.len() == 1 && rows[0].contains("bf16"), "{out}");
    // Item 10: the user asked for the reference only: no skip lines for other backends.
    assert!(!out.contains("skipped:"), "{out}");
    // The origin (qwen3-30b-a3b) is not printed, so it does not match.
    let o = moehal(&[&base[..], &["--filter", "qwen3"]].concat());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("--filter \"qwen3\""), "{err}");
    let o = moehal(&[&base[..], &["--filter", ""]].concat());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("--filter") && err.contains("must not be empty"), "{err}");
}

/// Item 6: a size error names the op and the flag, for every op, at the largest token count.
#[test]
fn every_op_near_overflow_names_itself_and_the_flag() {
    let max = u64::MAX.to_string();
    for op in OpKind::ALL {
        let o = moehal(&["bench", "--op", op.name(), "--tokens", &max]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{op}: {out}{err}");
        assert!(!err.contains("panicked"), "{op}: {err}");
        assert!(err.contains(&format!("--tokens {max}")), "{op}: {err}");
        let after = err.split("): ").skip(1).collect::<Vec<_>>().join("): ");
        assert!(after.contains(op.name()), "{op}: the error names another op: {err}");
        if op != OpKind::Swiglu {
            assert!(!err.contains("swiglu"), "{op}: blames swiglu: {err}");
        }
    }
}

/// Item 7: `--ref-limit -0` is zero, printed without a sign.
#[test]
fn negative_zero_limits_print_as_zero() {
    let o = moehal(&[&SMALL_SWIGLU_BENCH[..], &["--ref-limit", "-0"]].concat());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(!out.contains("-0 s") && !out.contains("-0s"), "{out}");
}

/// Item 11: `--backend reference --no-reference` runs the layer once, unchecked, and says so once.
/// Fourth pass, item 5: `--ref-limit 0` (no reference time allowed) is the same rule.
#[test]
fn the_reference_as_backend_with_no_reference_runs_once() {
    for flags in [&["--no-reference"][..], &["--ref-limit", "0"]] {
        let mut args = vec![
            "moe",
            "--preset",
            "qwen3-30b-a3b",
            "--tokens",
            "2",
            "--scale-widths",
            "16",
            "--budget-mib",
            "64",
            "--backend",
            "reference",
        ];
        args.extend_from_slice(flags);
        let o = moehal(&args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{flags:?}: {out}{err}");
        assert_eq!(out.matches("runs once").count(), 1, "{out}");
        assert!(out.contains(&flags.join(" ")), "{out}");
        assert!(!out.contains("determinism"), "{out}");
        assert!(out.contains("not checked"), "{out}");
        // One column of stage times: the reference did not run a second time.
        let header = out.lines().find(|l| l.starts_with("stage")).expect("a stage table");
        assert_eq!(header.split_whitespace().count(), 2, "{header}");
    }
}

// ---- Issue 16, a fresh user's fourth pass ----

/// The directory of the Ascend emulator's `libascendcl.so` (`cargo build -p moehal-ascend-emu`
/// puts it next to the binary), or `None` when it is not built.
fn emulator_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_BIN_EXE_moehal"))
        .parent()?
        .to_path_buf();
    dir.join("libascendcl.so").is_file().then_some(dir)
}

/// Item 1: a device backend's memory (DeviceInfo) is in `moe`'s sizing rule: on a 1000-byte
/// Ascend emulator the run fails up front naming the device memory and what the weights need, not
/// "out of memory allocating ..." mid-upload. Item 9: the unavailable hint says what
/// MOEHAL_ASCEND_LIB_DIR searched when it is set, not to set it.
#[test]
fn moe_sizes_weights_against_device_memory() {
    let empty = temp_dir("no-acl");
    let e = empty.to_str().unwrap();
    // Every other place the loader searches is emptied too (cargo's LD_LIBRARY_PATH holds the
    // emulator); a machine with a real CANN under /usr/local/Ascend finds that instead.
    let o = moehal_env(
        &["devices"],
        &[
            ("MOEHAL_ASCEND_LIB_DIR", e),
            ("LD_LIBRARY_PATH", e),
            ("ASCEND_HOME_PATH", e),
            ("ASCEND_TOOLKIT_HOME", e),
        ],
    );
    let (out, err) = text(&o);
    if !std::path::Path::new("/usr/local/Ascend").exists() {
        assert!(
            out.contains(&format!("MOEHAL_ASCEND_LIB_DIR={e} was searched first"))
                && !out.contains("set MOEHAL_ASCEND_LIB_DIR"),
            "{out}{err}"
        );
    }
    std::fs::remove_dir_all(&empty).ok();
    let Some(dir) = emulator_dir() else {
        println!("the Ascend emulator is not built (cargo build -p moehal-ascend-emu): skipped");
        return;
    };
    let env = [
        ("MOEHAL_ACL_EMU_MEM_CAP", "1000"),
        ("MOEHAL_ASCEND_LIB_DIR", dir.to_str().unwrap()),
    ];
    let args = [
        "moe",
        "--preset",
        "qwen3-30b-a3b",
        "--tokens",
        "2",
        "--backend",
        "ascend",
    ];
    let o = moehal_env(&args, &env);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("ascend's device memory is 1000 B") && err.contains("nothing of this layer fits"),
        "{err}"
    );
    assert!(!err.contains("out of memory allocating"), "{err}");
    assert!(!out.contains("tokens 2,"), "started before failing: {out}");
    // An explicit --budget-mib over the device's memory is an error naming the flag, with exit
    // status 1: the device's (free) memory is live state of this machine, not a fault of the
    // command line (the help's exit-status rule).
    let mut explicit = args.to_vec();
    explicit.extend(["--budget-mib", "64"]);
    let o = moehal_env(&explicit, &env);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("--budget-mib 64") && err.contains("device memory"),
        "{err}"
    );
    // The same rule on the expert-parallel path (every rank's slice and rank 0's layer on one
    // device): an error before any upload, and an explicit budget over it one too (status 1).
    let mut ep = args.to_vec();
    ep.extend(["--ep-threads", "2"]);
    let o = moehal_env(&ep, &env);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("ascend's device memory is 1000 B") && err.contains("nothing of this layer fits"),
        "{err}"
    );
    assert!(!err.contains("out of memory allocating"), "{err}");
    ep.extend(["--budget-mib", "64"]);
    let o = moehal_env(&ep, &env);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("--budget-mib 64") && err.contains("device memory"),
        "{err}"
    );
}

/// Item 2: a preset whose group limit cannot route the checkpoint's experts (deepseek-v3: n_group
/// 8, topk_group 4, top-8 over 8 experts) fails before any work, naming both.
#[test]
fn a_preset_that_cannot_route_the_checkpoint_fails_before_work() {
    let dir = temp_dir("route");
    let path = dir.join("ok.safetensors");
    common::v4_layer_file(&path);
    let o = moehal(&[
        "moe",
        "--preset",
        "deepseek-v3",
        "--tokens",
        "8",
        "--weights",
        path.to_str().unwrap(),
        "--layer",
        "3",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    for want in ["n_group 8", "topk_group 4", "top-8", "8 routed experts"] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(!err.contains("router_topk"), "failed in the router: {err}");
    assert!(!out.contains("tokens 8,"), "started before failing: {out}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Rewrite every F8_E8M0 tensor of the safetensors file at `path` to `byte`.
fn set_e8m0(path: &std::path::Path, byte: u8) {
    let mut b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let mut hit = 0;
    for (_, t) in header.as_object().unwrap() {
        if t.get("dtype").and_then(|d| d.as_str()) == Some("F8_E8M0") {
            let off = t["data_offsets"].as_array().unwrap();
            let (s, e) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
            b[8 + n + s..8 + n + e].fill(byte);
            hit += 1;
        }
    }
    assert!(hit > 0, "no F8_E8M0 tensor");
    std::fs::write(path, b).unwrap();
}

/// Item 3: an all-NaN output (every E8M0 scale 255 = NaN) compares no value: the verdict is NOT
/// CHECKED with exit status 1, never "relative error 0: PASS".
#[test]
fn an_all_nan_output_is_not_a_pass() {
    let dir = temp_dir("nan");
    let path = dir.join("nan.safetensors");
    common::v4_layer_file(&path);
    set_e8m0(&path, 255);
    let o = moehal(&[
        "moe",
        "--preset",
        "deepseek-v4-flash",
        "--tokens",
        "8",
        "--weights",
        path.to_str().unwrap(),
        "--layer",
        "3",
        "--backend",
        "reference",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("NOT CHECKED: every output is NaN"), "{out}");
    assert!(!out.contains("PASS"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Item 4: usage errors found after parsing exit 2 naming the flag, before any backend is probed;
/// an empty --backend is said to be empty.
#[test]
fn more_bad_flag_values_exit_2_before_work() {
    let cases: [(&[&str], &str); 4] = [
        (&["check", "--backend", "foo"], "--backend foo"),
        (&["kernels", "--backend", "foo"], "--backend foo"),
        (&["kernels", "--backend", ""], "--backend: the value is empty"),
        (&["check", "--backend", ""], "--backend: the value is empty"),
    ];
    for (args, want) in cases {
        let o = moehal(args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let o = moehal(&["bench", "--preset", "foo"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(!out.contains("skipped:"), "probed before the flag was checked: {out}");
}

/// Item 6: bench's cap on timed runs is in --help.
#[test]
fn bench_help_says_the_run_cap() {
    let o = moehal(&["bench", "--help"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.contains("at most 50 runs"), "{out}");
}

/// Items 7 and 8: engram says a size the user chose is the user's (--rows), and on the reference
/// that the check is a determinism check, not "vs reference".
#[test]
fn engram_words_sizes_and_self_checks_as_they_are() {
    let o = moehal(&["engram", "--rows", "1000", "--backend", "reference"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("rows as given by --rows: row mod R (R = 1000)"), "{out}");
    assert!(!out.contains("scaled to fit memory"), "{out}");
    assert!(
        out.contains("determinism check") && !out.contains("vs reference:"),
        "{out}"
    );
}

// Issue 16, the fourth pass (the last fresh-user faults): each fault kind as a test.

/// Item 1: an expert count scaled to fit memory that `--ep-threads` does not divide is named with
/// where it came from (the preset's count, the scaling, the flags that control it), not as a bare
/// number the user never asked for. Still a usage error: the rank count is a flag value.
#[test]
fn a_scaled_expert_count_the_ep_threads_do_not_divide_says_where_it_came_from() {
    let o = moehal(&[
        "moe",
        "--preset",
        "deepseek-v4-flash",
        "--tokens",
        "2",
        "--ep-threads",
        "3",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    for want in [
        "--ep-threads 3",
        "preset deepseek-v4-flash has 256",
        "scaled by expert count to fit memory: 256 ->",
        "--budget-mib",
        "--scale-widths",
        "do not split evenly over 3 ranks",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// Item 2: a checkpoint whose expert count the ranks do not divide is a data error (exit status
/// 1, like every other fault of a file's contents), naming the file's layer and its experts.
#[test]
fn a_checkpoint_expert_count_the_ranks_do_not_divide_is_a_data_error() {
    let dir = temp_dir("ep-ckpt");
    let path = dir.join("v4.safetensors");
    common::v4_layer_file(&path);
    let o = moehal(&[
        "moe",
        "--preset",
        "deepseek-v4-flash",
        "--tokens",
        "4",
        "--weights",
        path.to_str().unwrap(),
        "--layer",
        "3",
        "--backend",
        "cpu",
        "--ep-threads",
        "3",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("layer 3 of --weights has 8 routed experts") && err.contains("do not split evenly over 3 ranks"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Item 3: a safetensors header that names a tensor twice is refused, naming the key, by both
/// readers of the header (`moe --weights` and `engram --table`); serde_json kept the last one.
#[test]
fn a_tensor_named_twice_in_the_header_is_refused() {
    let dir = temp_dir("dup-key");
    let path = dir.join("dup.safetensors");
    let header = r#"{"table":{"dtype":"BF16","shape":[1,32],"data_offsets":[0,64]},"table":{"dtype":"BF16","shape":[1,32],"data_offsets":[64,128]}}"#;
    let mut bytes = header_only(header);
    bytes.resize(bytes.len() + 128, 0);
    std::fs::write(&path, bytes).unwrap();
    let p = path.to_str().unwrap();
    for args in [
        vec!["engram", "--table", p],
        vec!["moe", "--preset", "deepseek-v4-flash", "--tokens", "2", "--weights", p],
    ] {
        let o = moehal(&args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {out}{err}");
        assert!(
            err.contains("dup.safetensors") && err.contains("names key `table` twice"),
            "{args:?}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Item 4: a `--json` output that cannot be written fails before the run (exit status 1, naming
/// the path), not after every case ran: `/dev/full` opens, so it is probed with a write.
#[test]
fn an_unwritable_json_output_fails_before_the_run() {
    if !std::path::Path::new("/dev/full").exists() {
        println!("skipped: no /dev/full on this system");
        return;
    }
    for args in [
        &[
            "check",
            "--backend",
            "reference",
            "--op",
            "swiglu",
            "--seed",
            "1",
            "--json",
            "/dev/full",
        ][..],
        &[
            "bench",
            "--backend",
            "reference",
            "--op",
            "swiglu",
            "--tokens",
            "1",
            "--json",
            "/dev/full",
        ][..],
    ] {
        let o = moehal(args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {out}{err}");
        assert!(
            err.contains("cannot write the --json output /dev/full") && err.contains("No space left on device"),
            "{args:?}: {err}"
        );
        // Nothing ran: no table, no summary.
        assert!(
            !out.contains("passed") && !out.contains("swiglu"),
            "{args:?} ran first: {out}"
        );
    }
    // A stream that can be written still gets valid JSON (the probe's newline is whitespace).
    let dir = temp_dir("json-fifo");
    let fifo = dir.join("out.json");
    let made = Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
    if made {
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
        };
        let o = moehal(&[
            "check",
            "--backend",
            "reference",
            "--op",
            "swiglu",
            "--seed",
            "1",
            "--json",
            fifo.to_str().unwrap(),
        ]);
        let got = reader.join().unwrap();
        assert!(o.status.success(), "{}", text(&o).1);
        let v: serde_json::Value = serde_json::from_str(&got).unwrap_or_else(|e| panic!("{e}: {got:?}"));
        assert!(v["results"].as_array().is_some_and(|a| !a.is_empty()), "{got}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 16 review: `--json /dev/stdout` with stdout redirected to a regular file names the file
/// stdout writes: the JSON must follow the table in it, not truncate or overwrite it from the start.
#[test]
fn json_to_dev_stdout_redirected_to_a_file_keeps_the_table() {
    if !std::path::Path::new("/dev/stdout").exists() {
        println!("skipped: no /dev/stdout on this system");
        return;
    }
    let dir = temp_dir("json-stdout");
    for (cmd, table_word) in [("check", "passed"), ("bench", "swiglu")] {
        let path = dir.join(format!("{cmd}.out"));
        let file = std::fs::File::create(&path).unwrap();
        let mut args = vec![cmd, "--backend", "reference", "--op", "swiglu", "--json", "/dev/stdout"];
        if cmd == "bench" {
            args.extend(["--tokens", "1", "--budget", "0.01"]);
        } else {
            args.extend(["--seed", "1"]);
        }
        let o = Command::new(env!("CARGO_BIN_EXE_moehal"))
            .args(&args)
            .stdout(file)
            .output()
            .expect("the moehal binary runs");
        let got = std::fs::read_to_string(&path).unwrap();
        assert!(o.status.success(), "{cmd}: {}{got}", text(&o).1);
        // The table first, then the JSON on its own lines: bench's array of rows, check's object
        // with its rows under `results`.
        let open = if cmd == "bench" { "\n[\n" } else { "\n{\n" };
        let at = got
            .find(open)
            .unwrap_or_else(|| panic!("{cmd}: no JSON after the table: {got:?}"));
        let (table, json) = got.split_at(at + 1);
        assert!(table.contains(table_word), "{cmd}: the table was lost: {got:?}");
        let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{cmd}: {e}: {json:?}"));
        let rows = if cmd == "bench" { &v } else { &v["results"] };
        assert!(rows.as_array().is_some_and(|a| !a.is_empty()), "{cmd}: {json}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Item 5: `--ep` in a build without the `mpi` feature is a flag this build cannot honour: a usage
/// error (exit status 2) that says how to build with MPI, before any file is opened.
#[cfg(not(feature = "mpi"))]
#[test]
fn ep_without_mpi_is_a_usage_error_that_says_how_to_build() {
    let o = moehal(&[
        "moe",
        "--preset",
        "qwen3-30b-a3b",
        "--tokens",
        "2",
        "--ep",
        "--weights",
        "/nonexistent/x.safetensors",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("--ep:") && err.contains("--features mpi") && err.contains("docs/EP.md"),
        "{err}"
    );
    assert!(!err.contains("nonexistent"), "opened the file first: {err}");
}

/// Whether `moehal devices` lists the CUDA backend as available on this machine.
fn cuda_available() -> bool {
    let o = moehal_env(&["devices"], &[("MOEHAL_REQUIRE_CUDA", "0")]);
    text(&o)
        .0
        .lines()
        .any(|l| l.starts_with("cuda ") && l.contains("available") && !l.contains("unavailable"))
}

/// Item 6: `MOEHAL_REQUIRE_CUDA=1` makes an unavailable CUDA backend a failure (exit status 1 with
/// the reason) whether or not `--backend` names it; `devices` still prints its table first.
#[test]
fn require_cuda_fails_every_command_when_cuda_is_unavailable() {
    let env = [("MOEHAL_REQUIRE_CUDA", "1")];
    let cases: [&[&str]; 4] = [
        &["check", "--op", "swiglu", "--seed", "1"],
        &["check", "--backend", "reference", "--op", "swiglu", "--seed", "1"],
        &["kernels"],
        &["devices"],
    ];
    let available = cuda_available();
    for args in cases {
        let o = moehal_env(args, &env);
        let (out, err) = text(&o);
        if available {
            assert!(!err.contains("MOEHAL_REQUIRE_CUDA=1 but"), "{args:?}: {err}");
            continue;
        }
        assert_eq!(o.status.code(), Some(1), "{args:?}: {out}{err}");
        assert!(
            err.contains("MOEHAL_REQUIRE_CUDA=1 but the CUDA backend is unavailable:"),
            "{args:?}: {err}"
        );
        if args[0] == "devices" {
            assert!(out.contains("compiled-in backends available"), "{out}");
        } else {
            assert!(!out.contains("skipped: cuda"), "{args:?} skipped silently: {out}");
        }
    }
    // Off (`0`): the skip line, exit status 0.
    if !available {
        let o = moehal_env(
            &["check", "--op", "swiglu", "--seed", "1"],
            &[("MOEHAL_REQUIRE_CUDA", "0")],
        );
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}{err}");
        assert!(out.contains("skipped: cuda unavailable"), "{out}");
    }
}

/// Item 7: a device's memory in `moe`'s sizing rule is what is free where the backend reports it
/// (the Ascend emulator answers `aclrtGetMemInfo`), and the message says free of what total.
#[test]
fn moe_sizes_against_free_device_memory() {
    let Some(dir) = emulator_dir() else {
        println!("the Ascend emulator is not built (cargo build -p moehal-ascend-emu): skipped");
        return;
    };
    let env = [
        ("MOEHAL_ACL_EMU_MEM_CAP", "1000"),
        ("MOEHAL_ASCEND_LIB_DIR", dir.to_str().unwrap()),
    ];
    let o = moehal_env(
        &[
            "moe",
            "--preset",
            "qwen3-30b-a3b",
            "--tokens",
            "2",
            "--backend",
            "ascend",
        ],
        &env,
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("free of 1000 B"), "{err}");
}

/// Fresh-user finding (session 9): an error or warning written to a stderr that cannot take it
/// (`2>/dev/full`, or `2>&1 | head` after the reader left) panicked in `eprintln!` and exited with
/// status 101. The documented status stands whatever stderr is: 2 for a usage error, 1 for a
/// runtime error, 0 for a run with a warning.
#[test]
fn an_unwritable_stderr_keeps_the_documented_exit_status() {
    if !std::path::Path::new("/dev/full").exists() {
        println!("skipped: no /dev/full on this system");
        return;
    }
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32);
    let cases: [Case; 3] = [
        (&["check", "--backend", "nosuch"], &[], 2),
        (&["engram", "--table", "/nonexistent/moehal-table.safetensors"], &[], 1),
        (&["devices"], &[("MOEHAL_CPU_ISA", "neon")], 0),
    ];
    for (args, env, want) in cases {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_moehal"));
        c.args(args).stderr(full).stdout(std::process::Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().expect("the moehal binary runs");
        assert_eq!(o.status.code(), Some(want), "{args:?} {env:?}");
    }
}

/// Issue 16 (first contact): `MOEHAL_ASCEND_LIB_DIR` naming a file warned that it "is not a
/// directory" and then reported it "searched first" with neither library. Now the warning and the
/// `ascend` reason say the one thing, that it names a file, and the file is not in the search list.
#[test]
fn an_ascend_lib_dir_that_is_a_file_is_said_to_be_a_file() {
    let dir = temp_dir("lib-dir-file");
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let f = file.to_str().unwrap();
    let empty = dir.to_str().unwrap();
    let o = moehal_env(
        &["devices"],
        &[
            ("MOEHAL_ASCEND_LIB_DIR", f),
            ("LD_LIBRARY_PATH", empty),
            ("ASCEND_HOME_PATH", empty),
            ("ASCEND_TOOLKIT_HOME", empty),
        ],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let said = format!("MOEHAL_ASCEND_LIB_DIR={f} names a file, not a directory");
    assert!(err.contains(&format!("warning: {said}")), "{err}");
    if !std::path::Path::new("/usr/local/Ascend").exists() {
        let reason = out
            .lines()
            .find(|l| l.starts_with("ascend: "))
            .unwrap_or_else(|| panic!("no ascend reason: {out}"));
        assert!(reason.contains(&format!("{said}, so it was not searched")), "{reason}");
        assert!(!reason.contains(&format!("searched: {f}")), "{reason}");
    }
    for both in [&out, &err] {
        assert!(
            !both.contains("was searched first") && !both.contains("is not a directory"),
            "{out}{err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 16 (first contact): `--json` naming a FIFO that no process reads blocked in `open`,
/// silently and before the run, forever. Now it is an error within seconds (status 1, naming the path and
/// saying there is no reader), for `check` and `bench` alike. The child is killed after 60 s, so a
/// regression fails instead of hanging the suite.
#[test]
fn a_json_fifo_without_a_reader_is_an_error_not_a_hang() {
    let dir = temp_dir("json-fifo-noreader");
    let fifo = dir.join("out.json");
    if !Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success()) {
        println!("skipped: mkfifo is not available");
        return;
    }
    let f = fifo.to_str().unwrap();
    for args in [
        &[
            "check",
            "--backend",
            "reference",
            "--op",
            "swiglu",
            "--seed",
            "1",
            "--json",
            f,
        ][..],
        &[
            "bench",
            "--backend",
            "reference",
            "--op",
            "swiglu",
            "--tokens",
            "1",
            "--json",
            f,
        ][..],
    ] {
        let o = moehal_within(args, std::time::Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{args:?}: still blocked after 60 s on a FIFO with no reader"));
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {out}{err}");
        assert!(
            err.contains(&format!(
                "cannot write the --json output {f}: it is a FIFO with no reader"
            )),
            "{args:?}: {err}"
        );
        // Refused before the run: no table, no summary.
        assert!(
            !out.contains("passed") && !out.contains("swiglu"),
            "{args:?} ran first: {out}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 16 (first contact): `check --json` wrote 64-bit case seeds as JSON numbers (rounded by
/// readers that parse numbers as doubles, e.g. JavaScript's) and never the base seed. Now the base
/// seed is recorded once and every seed is a decimal string, digit for digit; and `--seed` with the
/// base seed, `--op`, `--case` and `--dtype` of a row gives that row the same seed and result.
#[test]
fn check_json_keeps_64_bit_seeds_and_the_base_seed() {
    let dir = temp_dir("json-seeds");
    let read = |name: &str, args: &[&str]| -> serde_json::Value {
        let path = dir.join(name);
        let mut all = vec!["check", "--backend", "reference", "--json", path.to_str().unwrap()];
        all.extend_from_slice(args);
        let o = moehal(&all);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{all:?}: {out}{err}");
        let got = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str(&got).unwrap_or_else(|e| panic!("{e}: {got}"))
    };
    let base = u64::MAX.to_string();
    let full = read("full.json", &["--op", "swiglu", "--seed", &base]);
    assert_eq!(full["base_seed"], base.as_str(), "{full}");
    let rows = full["results"].as_array().expect("a results array");
    assert!(rows.len() > 1, "{full}");
    let seeds: Vec<u64> = rows
        .iter()
        .map(|r| {
            let s = r["seed"]
                .as_str()
                .unwrap_or_else(|| panic!("seed is not a string: {r}"));
            s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
        })
        .collect();
    // Seeds this large are past 2^53, where a double cannot hold every integer.
    assert!(seeds.iter().any(|&s| s > 1 << 53), "{seeds:?}");
    // The last row alone, from the recorded base seed: the same seed and the same error.
    let last = rows.last().unwrap();
    let one = read(
        "one.json",
        &[
            "--op",
            "swiglu",
            "--case",
            last["case"].as_str().unwrap(),
            "--dtype",
            last["dtype"].as_str().unwrap(),
            "--seed",
            full["base_seed"].as_str().unwrap(),
        ],
    );
    let again = &one["results"][0];
    assert_eq!(one["results"].as_array().map(Vec::len), Some(1), "{one}");
    for key in ["case", "dtype", "seed", "metric"] {
        assert_eq!(again[key], last[key], "{key}: {again} vs {last}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 16 (first contact): with `MOEHAL_ASCEND_LIB_DIR` at the emulator's libraries, `devices`
/// and `kernels` printed `ascend` `available` and its kernels with no word that the emulator had
/// answered. Now `devices` lists it as `ascend (emulator)` and both say in a note that it is the
/// emulator (the device name its library reports), not Ascend hardware.
#[test]
fn devices_and_kernels_say_when_ascend_is_the_emulator() {
    let Some(dir) = emulator_dir() else {
        println!("the Ascend emulator is not built (cargo build -p moehal-ascend-emu): skipped");
        return;
    };
    let env = [("MOEHAL_ASCEND_LIB_DIR", dir.to_str().unwrap())];
    let note = "note: ascend is the ACL emulator moehal-ascend-emu (its library reports the device Ascend910B2-emu), not Ascend hardware";
    let o = moehal_env(&["devices"], &env);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("ascend"))
        .unwrap_or_else(|| panic!("no ascend row: {out}"));
    assert!(
        row.starts_with("ascend (emulator)") && row.contains("available"),
        "{row}"
    );
    assert!(out.contains(note), "{out}");
    let o = moehal_env(&["kernels", "--backend", "ascend"], &env);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.lines().next().is_some_and(|l| l.starts_with(note)), "{out}");
    // The reference is not the emulator: no note for it.
    let o = moehal_env(&["kernels", "--backend", "reference"], &env);
    let (out, _) = text(&o);
    assert!(!out.contains("emulator"), "{out}");
}

/// `moehal ARGS` killed after `limit`, so that a command that blocks fails its test instead of
/// hanging the suite. `None` when it had to be killed.
fn moehal_within(args: &[&str], limit: std::time::Duration) -> Option<std::process::Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_moehal"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the moehal binary runs");
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Some(child.wait_with_output().unwrap())
}

/// Issue 16 (leftover b): a safetensors input that is not a regular file — a FIFO, a character
/// device, a directory — is an error naming the path and what it is, before it is opened. `moe
/// --weights FIFO` blocked forever in `open` (a FIFO's open waits for a writer), silently; `/dev/zero`
/// was "0 bytes, shorter than the 8-byte header". The child is killed after 60 s, so a regression
/// fails instead of hanging.
#[test]
fn a_fifo_device_or_directory_as_table_or_weights_is_named_never_waited_on() {
    let dir = temp_dir("special-inputs");
    let fifo = dir.join("weights.fifo");
    let have_fifo = Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
    let mut inputs = vec![(dir.to_str().unwrap().to_string(), "is a directory")];
    if have_fifo {
        inputs.push((fifo.to_str().unwrap().to_string(), "is a FIFO (named pipe)"));
    } else {
        println!("skipped the FIFO: mkfifo is not available");
    }
    if std::path::Path::new("/dev/zero").exists() {
        inputs.push(("/dev/zero".to_string(), "is a character device"));
    }
    for (path, what) in &inputs {
        for args in [
            vec!["engram", "--table", path.as_str()],
            vec![
                "moe",
                "--preset",
                "mixtral-8x7b",
                "--tokens",
                "1",
                "--backend",
                "reference",
                "--weights",
                path.as_str(),
            ],
        ] {
            let o = moehal_within(&args, std::time::Duration::from_secs(60))
                .unwrap_or_else(|| panic!("{args:?}: still running after 60 s (blocked on {what}?)"));
            let (out, err) = text(&o);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {out}{err}");
            assert!(
                err.contains(&format!("{path}: {what}, not a safetensors file")),
                "{args:?}: {err}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
