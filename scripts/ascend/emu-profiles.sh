#!/usr/bin/env bash
# Runs the ACL emulator's rule tests under every modelled CANN release (build-time profile
# MOEHAL_ACL_EMU_CANN = 8.1 | 8.2 | 8.3 | 8.5). They share one target dir, target/emu-profiles, apart
# from the default build: build.rs declares rerun-if-env-changed, so switching the profile rebuilds
# only moehal-ascend-emu and its tests, not the dependencies. The default profile (8.5) also runs in
# the plain `cargo test --workspace`.
# Usage: scripts/ascend/emu-profiles.sh [profile...]   (default: 8.1 8.2 8.3)
set -euo pipefail
cd "$(dirname "$0")/../.."
profiles=("$@")
[ ${#profiles[@]} -gt 0 ] || profiles=(8.1 8.2 8.3)
for v in "${profiles[@]}"; do
    echo "== moehal-ascend-emu rule tests, CANN profile $v"
    MOEHAL_ACL_EMU_CANN="$v" cargo test -q -p moehal-ascend-emu --target-dir target/emu-profiles
done
