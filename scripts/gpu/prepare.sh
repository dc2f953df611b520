#!/usr/bin/env bash
# Build the CUDA backend's GPU checks here (release) and copy them into the git-ignored .device/
# folder that travels to the GPU machine (no Rust there). Kernels are embedded in the binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-cuda}"
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
while read -r name exe; do cp "$exe" ".device/test-$name"; done < .device/tests.txt
cp "$CARGO_TARGET_DIR/release/examples/cuda_bench" .device/
cp "$CARGO_TARGET_DIR/release/moehal" .device/
cp scripts/gpu/peers.py .device/ # (check.sh runs from scripts/gpu)
git rev-parse HEAD > .device/commit 2>/dev/null || echo unknown > .device/commit
ls -la .device
