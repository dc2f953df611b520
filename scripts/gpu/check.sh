#!/usr/bin/env bash
# GPU check for moehal-cuda: run on the H200 machine from the repo root, after
# scripts/gpu/prepare.sh on the dev machine (carry `.device`).
#
# Contract:
# - Exit 0 only when every required step passed: each test binary in .device/test-* (except
#   test-nvrtc_compile: CI compiles every kernel already, and each process here compiles them again
#   on first use), `moehal check --backend cuda`, `moehal bench --backend cuda` and `cuda_bench`. Exit 1 when any of them failed,
#   timed out (rc 124/137) or skipped (MOEHAL_REQUIRE_CUDA=1 makes an unavailable backend a
#   failure; a "skipped:" line in a log counts as a failure too). Exit 2 when .device is missing.
# - The torch peers step (scripts/gpu/peers.py) is optional: its failure is reported in the table
#   and the verdict line but does not change the exit status (set PEERS_REQUIRED=1 to make it count).
# - Per-step timeouts: test-gpu 150 s, any other test binary 60 s (none today), moehal check 90 s,
#   moehal bench 110 s, cuda_bench 90 s, peers 60 s: 500 s (8.3 min) at most. Expected on an H200:
#   ~4 min (NVRTC compiles the kernels once, ~25 s in test-gpu; the later processes load the images
#   from MOEHAL_CUDA_KERNEL_CACHE, a folder of this run; test-gpu ~60 s, check ~30 s,
#   bench ~60 s (not measured: the default shapes at --budget 0.3 s; weight-only quantized rows run the SIMT §6 kernel,
#   ~0.05-0.2 s a call by arithmetic at the 1024-token prefill shapes); cuda_bench ~40 s; peers ~30 s).
# - Files in $OUT (the device tool brings back at most 8): <step>.log, written as the step runs
#   (test-gpu, moehal_check, moehal_bench, cuda_bench, torch_peers: a run cut short keeps them),
#   summary.txt (device, details, the table and the VERDICT line, also printed last) and extra.tgz
#   (device.txt, check.json, bench.json): 7 files. A new test binary adds one. $OUT defaults to
#   ./gpu-out.
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
L=$(mktemp -d) # device.txt and the JSON files, packed into $OUT/extra.tgz at the end
D=.device
if [ ! -x "$D/moehal" ] && [ ! -f "$D/moehal" ]; then
    echo "check.sh: $D/moehal missing: run scripts/gpu/prepare.sh on the dev machine and carry .device" >&2
    exit 2
fi
chmod +x "$D"/test-* "$D"/moehal "$D"/cuda_bench 2>/dev/null
export MOEHAL_REQUIRE_CUDA=1
# Compiled kernels shared by this run's processes (moehal_cuda::kernels::CACHE_ENV).
MOEHAL_CUDA_KERNEL_CACHE=$(mktemp -d)
export MOEHAL_CUDA_KERNEL_CACHE

# NVRTC: the toolkit's folders, and where pip's wheels put libnvrtc.so.13 (nvidia/cu13/lib in the
# CUDA 13 wheels, nvidia/cuda_nvrtc/lib in older ones) in this python's site-packages. cudarc
# dlopens libnvrtc by name, and libnvrtc dlopens libnvrtc-builtins by name, so the folder must be
# on LD_LIBRARY_PATH before the process starts.
pip_nvrtc=$(python3 - <<'PY' 2>/dev/null
import glob, os, site
roots = set(site.getsitepackages() + [site.getusersitepackages()])
dirs = []
for r in sorted(roots):
    for lib in sorted(glob.glob(os.path.join(r, "nvidia", "**", "libnvrtc.so.13*"), recursive=True)):
        d = os.path.dirname(lib)
        if d not in dirs:
            dirs.append(d)
print(":".join(dirs))
PY
)
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${pip_nvrtc:+:$pip_nvrtc}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

{
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    echo "commit: $(cat $D/commit 2>/dev/null)"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "libnvrtc found:"; for d in ${LD_LIBRARY_PATH//:/ }; do ls "$d"/libnvrtc.so* 2>/dev/null; done
} > "$L/device.txt" 2>&1
cat "$L/device.txt"

summary=()
failed=()
peers_failed=0
run() { # name timeout required(1/0) cmd...
    local name=$1 t=$2 req=$3; shift 3
    local t0 rc verdict
    t0=$(date +%s)
    echo "== $name (timeout ${t}s)"
    timeout "$t" "$@" > "$OUT/$name.log" 2>&1; rc=$?
    verdict=ok
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        verdict=TIMEOUT
    elif [ "$rc" != 0 ]; then
        verdict=FAIL
    elif grep -q 'skipped:' "$OUT/$name.log"; then
        # Anywhere on a line: with --nocapture a test's "skipped: ..." follows libtest's
        # "test name ... " on the same line.
        verdict=SKIPPED
    fi
    summary+=("$(printf '%-24s %-8s rc=%-4s %4ss' "$name" "$verdict" "$rc" "$(( $(date +%s) - t0 ))")")
    if [ "$verdict" != ok ]; then
        if [ "$req" = 1 ]; then failed+=("$name:$verdict"); else peers_failed=1; fi
    fi
    return 0
}

# test-gpu first, so that a later timeout cannot hide it.
if [ -e "$D/test-gpu" ]; then
    run test-gpu 150 1 "$D/test-gpu" --test-threads=1 --nocapture
else
    summary+=("$(printf '%-24s %-8s' test-gpu MISSING)")
    failed+=("test-gpu:MISSING")
fi
for exe in "$D"/test-*; do
    case "$exe" in "$D/test-gpu" | "$D/test-nvrtc_compile") continue ;; esac
    run "$(basename "$exe")" 60 1 "$exe" --test-threads=1 --nocapture
done
run moehal_check 90 1 "$D/moehal" check --backend cuda --seed 1 --json "$L/check.json"
run moehal_bench 110 1 "$D/moehal" bench --backend cuda --budget 0.3 --ref-limit 0.5 --json "$L/bench.json"
run cuda_bench 90 1 "$D/cuda_bench"
run torch_peers 60 "${PEERS_REQUIRED:-0}" python3 scripts/gpu/peers.py

{
    echo "== device"; cat "$L/device.txt"
    echo "== details (full logs in $OUT)"
    grep -h -E "^test result|FAILED|panicked|skipped:" "$OUT"/test-*.log | sort | uniq -c
    tail -n 3 "$OUT/moehal_check.log"; grep -E '^(FAIL|unsupported):' "$OUT/moehal_check.log" | head -n 20
    tail -n 15 "$OUT/moehal_bench.log"
    grep -v '^JSON' "$OUT/cuda_bench.log" | tail -n 20
    grep -v '^JSON' "$OUT/torch_peers.log" | tail -n 12
    echo "== results"
    printf '%s\n' "${summary[@]}"
    if [ ${#failed[@]} -eq 0 ]; then
        echo "VERDICT: PASS (every required step ok$([ $peers_failed = 1 ] && echo '; optional torch peers failed'))"
    else
        echo "VERDICT: FAIL (${failed[*]})"
    fi
} | tee "$OUT/summary.txt"
tar czf "$OUT/extra.tgz" -C "$L" device.txt $(cd "$L" && ls check.json bench.json 2>/dev/null)
rm -rf "$L" "$MOEHAL_CUDA_KERNEL_CACHE"
[ ${#failed[@]} -eq 0 ]
