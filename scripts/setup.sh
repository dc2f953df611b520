#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test moehal:
# - libclang (bindgen turns the hand-written ACL header into Rust for the Ascend backend),
# - the NVRTC wheel (compiles kernels/cuda/*.cu for sm_90 on a CPU-only machine) and numpy
#   (the C-ABI Python example).
# Prints the LD_LIBRARY_PATH entry that makes NVRTC loadable (export it to run the kernel-compile test).
set -euo pipefail
if ! ldconfig -p | grep -q 'libclang.*\.so'; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev clang >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check nvidia-cuda-nvrtc==13.0.88 numpy >&2 || \
    echo "note: pip install failed; the NVRTC kernel-compile test and the Python example will be skipped" >&2
python3 -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13", "lib"))' 2>/dev/null || true
