#!/usr/bin/env bash
# Ascend check for moehal-ascend, for people who own an Atlas 800 A2 / 910B with CANN installed.
# It has only been run against the emulator (backends/ascend-emu, with MOEHAL_ASCEND_LIB_DIR
# pointing at its library directory), never on an NPU: tell the maintainers what it prints.
# Against the emulator (a debug moehal) `devices`, `kernels` and `check` take a few minutes and
# `bench` more than 15; on an NPU with a release build they should take far less.
#
# What to set first (the toolkit script sets the first three):
#   source /usr/local/Ascend/ascend-toolkit/set_env.sh    (or .../cann/set_env.sh)
#     -> ASCEND_HOME_PATH / ASCEND_TOOLKIT_HOME  the CANN root (libascendcl.so under lib64/)
#     -> ASCEND_OPP_PATH                         the op packages (aclnn returns 561107 without it)
#     -> LD_LIBRARY_PATH                         the toolkit libraries
#   the driver libraries, which set_env.sh does not add (this script adds them when present):
#     /usr/local/Ascend/driver/lib64/driver and /usr/local/Ascend/driver/lib64/common
#   optional: MOEHAL_ASCEND_LIB_DIR (a directory holding the libraries directly; it wins over the
#   rest), MOEHAL_ASCEND_DEVICE (device id, default 0), MOEHAL (the moehal binary; default: build
#   it with `cargo build --release --bin moehal`).
#
# It prints the CANN version and the SoC, then runs `moehal devices`, `moehal check --backend
# ascend` and `moehal bench --backend ascend`. Logs go to $OUT (default ./ascend-out); a short
# table is printed last. Exit status: 0 when every step passed, 1 when one failed, 2 when no
# CANN install was found (nothing run).
#
# Usage: scripts/ascend/check.sh
set -u
cd "$(dirname "$0")/../.." || exit 2

# ------------------------------------------------------------------------------ find CANN
ROOT=""
LIBDIR=""
if [ -n "${MOEHAL_ASCEND_LIB_DIR:-}" ]; then
    if [ -e "$MOEHAL_ASCEND_LIB_DIR/libascendcl.so" ] || [ -e "$MOEHAL_ASCEND_LIB_DIR/libacl_rt.so" ]; then
        LIBDIR="$MOEHAL_ASCEND_LIB_DIR"
    else
        echo "error: MOEHAL_ASCEND_LIB_DIR=$MOEHAL_ASCEND_LIB_DIR holds no libascendcl.so / libacl_rt.so" >&2
        exit 2
    fi
fi
for c in "${ASCEND_HOME_PATH:-}" "${ASCEND_TOOLKIT_HOME:-}" /usr/local/Ascend/ascend-toolkit/latest /usr/local/Ascend/cann; do
    [ -n "$c" ] || continue
    for sub in lib64 "$(uname -m)-linux/lib64" runtime/lib64; do
        if [ -e "$c/$sub/libascendcl.so" ] || [ -e "$c/$sub/libacl_rt.so" ]; then
            ROOT="$c"
            [ -n "$LIBDIR" ] || LIBDIR="$c/$sub"
            break 2
        fi
    done
done
if [ -z "$LIBDIR" ]; then
    cat >&2 <<'EOF'
error: no CANN install found, nothing was run.
  Looked for lib64/libascendcl.so (or libacl_rt.so) under $ASCEND_HOME_PATH, $ASCEND_TOOLKIT_HOME,
  /usr/local/Ascend/ascend-toolkit/latest and /usr/local/Ascend/cann, and in $MOEHAL_ASCEND_LIB_DIR.
  Install the CANN toolkit and run `source /usr/local/Ascend/ascend-toolkit/set_env.sh` first.
EOF
    exit 2
fi
for d in /usr/local/Ascend/driver/lib64/driver /usr/local/Ascend/driver/lib64/common; do
    if [ -d "$d" ]; then
        case ":${LD_LIBRARY_PATH:-}:" in
            *":$d:"*) ;;
            *) export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d" ;;
        esac
    fi
done
if [ -n "$ROOT" ] && [ -z "${ASCEND_OPP_PATH:-}" ]; then
    echo "warning: ASCEND_OPP_PATH is not set (source set_env.sh): aclnn ops will fail with 561107" >&2
fi

OUT="${OUT:-$PWD/ascend-out}"
mkdir -p "$OUT" || exit 2

# ------------------------------------------------------------------------------ CANN version, SoC
cann_version() {
    local f
    for f in "$ROOT/version.cfg" "$ROOT/ascend_toolkit_install.info" "$ROOT/$(uname -m)-linux/ascend_toolkit_install.info" \
        "$ROOT/../ascend_toolkit_install.info" "$ROOT/compiler/version.info" "$ROOT/runtime/version.info"; do
        if [ -n "$ROOT" ] && [ -r "$f" ]; then
            echo "$f:"
            grep -i -E 'version' "$f" | head -n 3 | sed 's/^/    /'
            return
        fi
    done
    echo "unknown (no version.cfg / version.info under ${ROOT:-$LIBDIR})"
}
{
    echo "CANN root:  ${ROOT:-"(none; MOEHAL_ASCEND_LIB_DIR only)"}"
    echo "libraries:  $LIBDIR"
    echo "CANN version: $(cann_version)"
    if command -v npu-smi >/dev/null 2>&1; then
        echo "npu-smi info:"
        npu-smi info 2>&1 | head -n 20
    else
        echo "npu-smi: not found (the SoC name below comes from aclrtGetSocName via moehal devices)"
    fi
    git rev-parse HEAD 2>/dev/null | sed 's/^/moehal commit: /'
} | tee "$OUT/device.txt"

# ------------------------------------------------------------------------------ moehal
MOEHAL="${MOEHAL:-}"
if [ -z "$MOEHAL" ]; then
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found; build moehal elsewhere and set MOEHAL=/path/to/moehal" >&2
        exit 2
    fi
    echo "== cargo build --release --bin moehal"
    cargo build --release --bin moehal >"$OUT/build.log" 2>&1 || {
        tail -n 20 "$OUT/build.log" >&2
        echo "error: build failed (log: $OUT/build.log)" >&2
        exit 1
    }
    MOEHAL="$PWD/target/release/moehal"
fi

summary=()
failed=0
step() { # name cmd...
    local name=$1
    shift
    local t0 rc
    t0=$(date +%s)
    echo "== $*"
    "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    [ "$rc" -eq 0 ] || failed=1
    summary+=("$(printf '%-10s rc=%-4s %5ss  %s' "$name" "$rc" "$(($(date +%s) - t0))" "$OUT/$name.log")")
}
step devices "$MOEHAL" devices
grep -i -E 'ascend' "$OUT/devices.log" | head -n 10
step kernels "$MOEHAL" kernels --backend ascend
step check "$MOEHAL" check --backend ascend --seed 1 --json "$OUT/check.json"
step bench "$MOEHAL" bench --backend ascend --json "$OUT/bench.json"

echo "== results (full logs in $OUT) =="
printf '%s\n' "${summary[@]}"
tail -n 3 "$OUT/check.log"
grep -E '^(FAIL|unsupported):' "$OUT/check.log" | head -n 20
tail -n 15 "$OUT/bench.log"
exit "$failed"
