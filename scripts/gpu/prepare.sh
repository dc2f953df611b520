#!/usr/bin/env bash
# Build the CUDA backend's GPU checks here (release, symbols stripped) and copy them into the
# git-ignored .device/ folder that travels to the GPU machine (no Rust there). Kernels are
# embedded in the binaries. Fails when .device/ exceeds 48 MiB (the device tool carries at most
# 64 MiB with the tracked tree; unstripped, the binaries alone were 56 MiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-cuda}"
# No debug info and stripped symbols: ~3 MB instead of ~20 MB per binary. Backtraces keep
# function names only through the panic message, which names the case.
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
LIMIT_MIB=48
rm -rf .device && mkdir -p .device
cargo build --release -p moehal-cuda --example cuda_bench
# The CLI with the CUDA backend: `moehal check --backend cuda` runs the test kit's cases (the same
# as on every backend), `moehal bench --backend cuda` the kit's shapes.
cargo build --release -p moehal --no-default-features --features cli,cuda
cargo test --release -p moehal-cuda --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import sys,json
for l in sys.stdin:
    try: m=json.loads(l)
    except Exception: continue
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["test"]:
        print(m["target"]["name"], m["executable"])' > .device/tests.txt
[ -s .device/tests.txt ] || { echo "prepare: no test executables were built" >&2; exit 1; }
# nvrtc_compile is CI's test (check.sh does not run it); it stays here, not in the carry.
while read -r name exe; do
    [ "$name" = nvrtc_compile ] || cp "$exe" ".device/test-$name"
done < .device/tests.txt
cp "$CARGO_TARGET_DIR/release/examples/cuda_bench" .device/
cp "$CARGO_TARGET_DIR/release/moehal" .device/
# Belt and braces: strip again where binutils exist (a profile override in the environment could
# have re-enabled debug info).
if command -v strip >/dev/null 2>&1; then
    strip .device/test-* .device/cuda_bench .device/moehal
fi
chmod +x .device/test-* .device/cuda_bench .device/moehal
git rev-parse HEAD > .device/commit 2>/dev/null || echo unknown > .device/commit
ls -la .device
bytes=$(du -sb .device | cut -f1)
mib=$(( (bytes + (1 << 20) - 1) >> 20 ))
echo "prepare: .device/ is $bytes bytes ($mib MiB; limit $LIMIT_MIB MiB, carry limit 64 MiB with the tracked tree)"
if [ "$mib" -gt "$LIMIT_MIB" ]; then
    echo "prepare: error: .device/ is $mib MiB > $LIMIT_MIB MiB: it would leave no margin under the 64 MiB carry limit" >&2
    exit 1
fi
