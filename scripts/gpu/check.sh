#!/usr/bin/env bash
# GPU check for moehal-cuda (run on the H200 machine from the repo root, after
# scripts/gpu/prepare.sh on the dev machine; carry `.device`). Total well under 5 minutes.
# Logs go to $OUT (or ./gpu-out); a short table is printed last.
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
D=.device
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
summary=()
run() { # name timeout cmd...
  local name=$1 t=$2; shift 2
  local t0=$(date +%s)
  timeout "$t" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  summary+=("$(printf '%-28s rc=%-4s %4ss' "$name" "$rc" "$(( $(date +%s) - t0 ))")")
  return 0
}
{ nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; cat $D/commit; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
for exe in $D/test-*; do
  run "$(basename "$exe")" 150 "$exe" --test-threads=1 --nocapture
done
run moehal_check 150 $D/moehal check --backend cuda --seed 1 --json "$OUT/check.json"
run moehal_bench 150 $D/moehal bench --backend cuda --json "$OUT/bench.json"
run cuda_bench 120 $D/cuda_bench
run torch_peers 90 python3 scripts/gpu/peers.py
echo "== results (full logs in $OUT) =="
printf '%s\n' "${summary[@]}"
grep -h -E "^test result|FAILED|panicked|skipped" "$OUT"/test-*.log | sort | uniq -c
tail -n 3 "$OUT/moehal_check.log"; grep -E '^(FAIL|unsupported):' "$OUT/moehal_check.log" | head -n 20
tail -n 15 "$OUT/moehal_bench.log"
grep -v '^JSON' "$OUT/cuda_bench.log" | tail -n 20
grep -v '^JSON' "$OUT/torch_peers.log" | tail -n 12
