#!/usr/bin/env bash
# Prepares a fresh Debian machine to build and test moehal. Building needs only a Rust toolchain
# and a C compiler (the Ascend bindings are committed; nothing runs bindgen at build time). What
# this script adds is optional, for tests that otherwise print "skipped: <reason>":
#   - numpy (PyPI): the C-ABI Python example (examples/python);
#   - NVRTC (PyPI wheel nvidia-cuda-nvrtc, any CUDA 13 release): compiles kernels/cuda/*.cu for
#     sm_90 on a CPU, so the kernel-compile test runs without a GPU;
#   - with --dev: libclang (Debian libclang-dev), for the test that regenerates the Ascend bindings
#     and compares them with the committed ones (CI runs it; users never need it).
# The last line printed on stdout is the LD_LIBRARY_PATH entry that makes NVRTC loadable (empty
# when none was found); everything else goes to stderr.
#
# Usage: bash scripts/setup.sh [--dev]
set -euo pipefail

dev=0
for arg in "$@"; do
    case "$arg" in
        --dev) dev=1 ;;
        -h|--help) sed -n '2,14p' "$0" >&2; exit 0 ;;
        *) echo "setup.sh: unknown argument '$arg' (accepted: --dev)" >&2; exit 2 ;;
    esac
done

say() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

# 1. What the build itself needs: checked, not installed (rustup is the user's choice).
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) and re-run"
command -v cc >/dev/null 2>&1 || die "no C compiler ('cc') found: apt-get install gcc (the C-ABI tests compile C)"

# 2. Optional Python packages. A failure here is reported, not fatal: the tests that need them skip.
py_ok=0
if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
    py_ok=1
else
    say "python3 with pip not found: the Python example and the NVRTC kernel-compile test will be skipped"
fi

pip_install() {
    # Debian's python refuses system-wide installs without --break-system-packages (PEP 668);
    # inside a virtual environment the flag is unnecessary and harmless to omit.
    local extra=()
    if python3 -c 'import sys; sys.exit(0 if sys.prefix == sys.base_prefix else 1)' 2>/dev/null &&
        python3 -m pip install --help 2>/dev/null | grep -q -- '--break-system-packages'; then
        extra=(--break-system-packages)
    fi
    python3 -m pip install -q --disable-pip-version-check "${extra[@]}" "$@" >&2
}

if [ "$py_ok" = 1 ]; then
    if ! python3 -c 'import numpy' 2>/dev/null; then
        pip_install numpy || say "pip could not install numpy: the Python example will be skipped"
    fi
fi

# NVRTC: reuse any CUDA 13 libnvrtc already on the machine (a torch install brings one), else
# install the wheel. cudarc is built for CUDA 13 (feature cuda-13000), so only libnvrtc.so.13 fits.
find_nvrtc() {
    python3 - <<'PY' 2>/dev/null
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()])
for r in sorted(roots):
    for lib in sorted(glob.glob(os.path.join(r, "nvidia", "**", "libnvrtc.so.13*"), recursive=True)):
        print(os.path.dirname(lib)); sys.exit(0)
sys.exit(1)
PY
}
nvrtc_dir=""
if [ "$py_ok" = 1 ]; then
    nvrtc_dir=$(find_nvrtc || true)
    if [ -z "$nvrtc_dir" ]; then
        pip_install 'nvidia-cuda-nvrtc>=13,<14' ||
            say "pip could not install nvidia-cuda-nvrtc: the kernel-compile test will be skipped"
        nvrtc_dir=$(find_nvrtc || true)
    fi
    [ -n "$nvrtc_dir" ] || say "no libnvrtc.so.13 found after install: the kernel-compile test will be skipped"
fi

# 3. libclang for the bindings comparison (--dev only). Look for the library clang-sys loads
# (libclang.so / libclang-NN.so[.N]), not for neighbours such as libclang-cpp.so.
have_libclang() {
    ldconfig -p 2>/dev/null | awk '{print $1}' | grep -Eq '^libclang(-[0-9][0-9.]*)?\.so(\.[0-9]+)*$' && return 0
    compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null
}
if [ "$dev" = 1 ] && ! have_libclang; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    say "installing libclang-dev (Debian) for the bindings comparison test"
    $SUDO apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >&2 ||
        die "apt-get install libclang-dev failed"
    have_libclang || die "libclang-dev installed but no libclang.so found"
fi

echo "$nvrtc_dir"
