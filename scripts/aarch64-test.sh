#!/usr/bin/env bash
# Lints (clippy -D warnings, all targets) and runs the CPU backend's tests (moehal-cpu:
# unit, conformance, quant, raw_gemm) and the reference's
# tests (moehal-core) for aarch64-unknown-linux-gnu under qemu user-mode emulation, once per emulated
# CPU, so every runtime-selected aarch64 kernel path runs (issue 14):
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
# Usage: scripts/aarch64-test.sh [cpu ...]     (default: cortex-a72 max)
# Env:   AARCH64_TARGET_DIR (default target-aarch64), AARCH64_OPT (opt-level of the test build,
#        default 1: the tests run ~10x faster under qemu than at opt-level 0 and build about as fast).
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
rustup component list --installed | grep -q '^clippy' || rustup component add clippy

export CARGO_TARGET_DIR="${AARCH64_TARGET_DIR:-$PWD/target-aarch64}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_PROFILE_DEV_OPT_LEVEL="${AARCH64_OPT:-1}"
export CARGO_PROFILE_TEST_OPT_LEVEL="${AARCH64_OPT:-1}"
# Where qemu finds the aarch64 dynamic loader and libc.
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu

cpus=("$@")
((${#cpus[@]})) || cpus=(cortex-a72 max)

t0=$SECONDS
# The aarch64 code paths (simd/neon.rs, the cfg(target_arch = "aarch64") branches) are linted only
# here; x86 CI lints the rest.
cargo clippy -q -p moehal-cpu -p moehal-core --target "$target" --all-targets -- -D warnings
echo "aarch64 clippy: $((SECONDS - t0)) s"
t1=$SECONDS
cargo test -q --no-run -p moehal-cpu -p moehal-core --target "$target"
echo "aarch64 test build: $((SECONDS - t1)) s"
for cpu in "${cpus[@]}"; do
    case $cpu in
        cortex-a72) expect="neon,!dotprod,!bf16,!i8mm,!sve" ;;
        max) expect="neon,dotprod,bf16,i8mm,sve,fp16" ;;
        *) expect="" ;;
    esac
    t1=$SECONDS
    echo "== aarch64 tests under qemu-aarch64 -cpu $cpu (expect: ${expect:-unchecked})"
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu $cpu" \
        MOEHAL_EXPECT_AARCH64="$expect" \
        cargo test -q -p moehal-cpu -p moehal-core --target "$target"
    echo "== -cpu $cpu: passed in $((SECONDS - t1)) s"
done
echo "aarch64 total: $((SECONDS - t0)) s"
