#!/usr/bin/env bash
# Lints (clippy -D warnings) and runs the CPU backend's tests (moehal-cpu: unit, conformance, quant,
# raw_gemm, isa_selection) and the reference's tests (moehal-core) for aarch64-unknown-linux-gnu
# under qemu user-mode emulation, once per emulated CPU, so every runtime-selected aarch64 kernel
# path runs (issue 14):
#
#   cortex-a72  ARMv8.0 + NEON only (no dotprod, no fp16, no bf16, no i8mm, no SVE): the plain NEON table
#   max         every feature qemu emulates (SVE, bf16, i8mm, dotprod, fp16): the bf16 / int8 extensions
#
# MOEHAL_EXPECT_AARCH64 tells the `aarch64_features_match_emulated_cpu` test which features the
# emulated CPU must report, so a run where detection silently failed (and only the fallbacks ran)
# fails instead of passing.
#
# Nothing here changes the x86 build: the linker and runner are set through cargo's environment
# variables for the aarch64 target only, and the build goes to its own target directory.
#
# CI time (issue 14 asks for ~10 minutes on the 2-core CI machine), what this script does for it:
# - criterion (benches only; qemu times nothing meaningful) is not a dev-dependency of this build
#   (`--cfg moehal_qemu`, see backends/cpu/Cargo.toml), so its dependency tree (serde, clap, regex,
#   ciborium, ...) is not built; for the same reason clippy here covers the lib, tests and
#   examples, not the benches (which x86 CI lints);
# - clippy runs inside the test build, not as its own `cargo clippy` (which would type-check every
#   dependency a second time): the workspace crates are compiled by clippy-driver, the wrapper
#   `cargo clippy` itself installs, with `-D warnings`; the dependencies are compiled once, by rustc;
# - the dependencies are built at opt-level 1 (the dev profile's 2 buys nothing measurable under
#   emulation), the crates under test at opt-level 1 (~10x faster under qemu than 0);
# - `-cpu max` runs with `pauth-impdef=on`: the same features, but pointer authentication (used by
#   Debian's arm64 glibc) with an implementation-defined hash instead of QARMA, which qemu emulates
#   very slowly; the tests' arithmetic is unchanged;
# - moehal-core's tests still run under both CPUs: they take ~4 s, and testing one package alone
#   resolves the dependencies' features differently, which rebuilt crates for ~200 s here.
# - `MOEHAL_TEST_TIER=emulated`: the conformance's ~600-case shape sweep and the preset cases run on
#   the default configuration of each emulated CPU (its best ISA, all threads, the default bf16
#   kernel) instead of on every ISA, thread count and bf16 kernel (the scalar reference, re-run for
#   every configuration, was most of the ~30 min this step took); OPS.md's edge cases, the quantized
#   formats' edge cases, the router ties, raw_gemm and isa_selection still run on every configuration. The
#   full sweep on every configuration is `MOEHAL_TEST_TIER=full scripts/aarch64-test.sh` (~30 min on
#   2 cores), and runs natively on x86 in `cargo test`.
# - `-cpu cortex-a72` runs `MOEHAL_TEST_TIER=isa`: the edge cases, the quantized edge cases and the
#   router ties on every configuration the CPU reports (plain NEON, scalar, one thread, each bf16
#   kernel), which proves the run-time ISA choice and that no kernel executes an instruction the CPU
#   lacks. The preset cases (~85% of that run's time, 2026-12-01) and the shape sweep run under
#   `-cpu max` on its default table; under `-cpu max` the edge cases run on every ISA again, the plain
#   NEON table included. Not run in CI: the preset shapes on the plain NEON table
#   (`AARCH64_SWEEP_EVERY_CPU=1 scripts/aarch64-test.sh cortex-a72` runs presets and sweep there).
#
# Usage: scripts/aarch64-test.sh [cpu ...]     (default: cortex-a72 max)
# Env:   AARCH64_TARGET_DIR (default target-aarch64), AARCH64_OPT (opt-level of the crates under
#        test, default 1), AARCH64_DEPS_OPT (opt-level of the dependencies, default 1),
#        AARCH64_CLIPPY=0 builds with plain rustc (no lints).
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu

need=()
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
if ((${#need[@]})); then
    echo "installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null ||
        { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
if [ "${AARCH64_CLIPPY:-1}" != 0 ]; then
    rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi

export CARGO_TARGET_DIR="${AARCH64_TARGET_DIR:-$PWD/target-aarch64}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_PROFILE_DEV_OPT_LEVEL="${AARCH64_OPT:-1}"
export CARGO_PROFILE_TEST_OPT_LEVEL="${AARCH64_OPT:-1}"
# `--cfg moehal_qemu` marks this build as the emulated one: backends/cpu/Cargo.toml leaves criterion
# out under it. With clippy on, the workspace crates (only they: cargo caps the dependencies' lints)
# are compiled by clippy-driver and their warnings are errors. (A global RUSTFLAGS would override
# the target's flags, so it is folded in here.)
lint=""
if [ "${AARCH64_CLIPPY:-1}" != 0 ]; then
    export RUSTC_WORKSPACE_WRAPPER
    RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver"
    lint="-D warnings"
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="${RUSTFLAGS:-} --cfg moehal_qemu $lint"
unset RUSTFLAGS
# Where qemu finds the aarch64 dynamic loader and libc.
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
deps_opt=(--config "profile.dev.package.\"*\".opt-level=${AARCH64_DEPS_OPT:-1}")

cpus=("$@")
((${#cpus[@]})) || cpus=(cortex-a72 max)

t0=$SECONDS
cargo test -q "${deps_opt[@]}" --no-run -p moehal-cpu -p moehal-core --target "$target"
echo "aarch64 test build${lint:+ (with clippy -D warnings)}: $((SECONDS - t0)) s"
for cpu in "${cpus[@]}"; do
    qcpu=$cpu
    case $cpu in
        cortex-a72) expect="neon,!dotprod,!bf16,!i8mm,!sve" ;;
        max)
            expect="neon,dotprod,bf16,i8mm,sve,fp16"
            qcpu="max,pauth-impdef=on"
            ;;
        *) expect="" ;;
    esac
    t1=$SECONDS
    tier=${MOEHAL_TEST_TIER:-emulated}
    if [ "$cpu" = cortex-a72 ] && [ "${AARCH64_SWEEP_EVERY_CPU:-0}" != 1 ] && [ "$tier" = emulated ]; then
        tier=isa
        echo "(MOEHAL_TEST_TIER=isa: edge cases and router ties on every configuration; the presets and the shape sweep run under -cpu max; AARCH64_SWEEP_EVERY_CPU=1 runs them here too)"
    fi
    echo "== aarch64 tests under qemu-aarch64 -cpu $qcpu (expect: ${expect:-unchecked})"
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu $qcpu" \
        MOEHAL_EXPECT_AARCH64="$expect" MOEHAL_TEST_TIER="$tier" \
        cargo test -q "${deps_opt[@]}" -p moehal-cpu -p moehal-core --target "$target"
    echo "== -cpu $cpu: passed in $((SECONDS - t1)) s"
done
echo "aarch64 total: $((SECONDS - t0)) s"
