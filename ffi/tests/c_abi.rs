//! Compiles `tests/c/ops.c` against `include/moehal.h`, links it with the staticlib, and runs it:
//! every op of OPS.md on the CPU backend ("reference" when "cpu" is not in this build), checked
//! against values the C program computes itself, plus the error paths of the ABI.

mod common;

#[test]
fn c_program_runs_every_op() {
    let src = common::crate_dir().join("tests/c/ops.c");
    let exe = common::build_c("moehal_ops", &[src], &[]);
    let out = common::run(&exe);
    assert!(out.contains("checks passed on backend"), "unexpected output:\n{out}");
}
