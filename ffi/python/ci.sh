#!/usr/bin/env bash
# CI for the Python package: lint the extension crate, `pip install ./ffi/python` (maturin from
# PyPI, PyO3 from crates.io) into a virtual environment, then run the pytest suite on the
# reference and CPU backends and on Ascend through the ACL emulator. torch is not installed (its
# PyPI wheel brings gigabytes of nvidia-* packages): the torch tests print their skip reason and
# the numpy references cover every op.
#
# Usage (from anywhere): bash ffi/python/ci.sh
# Environment: PYTHON (default python3); CARGO_TARGET_DIR (default: the workspace's target/, so
# the wheel build reuses the dependencies `cargo test` compiled); MOEHAL_PY_PROFILE (cargo profile
# of the wheel, default dev: CI needs correctness, not speed; `release` for a real wheel).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
py=${PYTHON:-python3}
venv="$CARGO_TARGET_DIR/pyvenv"
t0=$SECONDS
say() { echo "python-ci: $* (t=$((SECONDS - t0)) s)"; }

say "virtual environment $venv"
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv" || {
        echo "python-ci: error: '$py -m venv' failed (Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi
vpy="$venv/bin/python"
"$vpy" -m pip install -q --disable-pip-version-check maturin pytest numpy ml_dtypes
# One interpreter for every build: pyo3's build script reruns (and pyo3 and this crate rebuild)
# whenever the interpreter it is configured for changes between cargo and maturin.
export PYO3_PYTHON="$vpy"
# Without build isolation maturin's PEP 517 hook runs `maturin` from PATH: the venv's.
export PATH="$venv/bin:$PATH"

say "rustfmt and clippy of ffi/python (its own Cargo workspace)"
cargo fmt --manifest-path "$here/Cargo.toml" -- --check
cargo clippy -q --manifest-path "$here/Cargo.toml" --all-targets -- -D warnings

say "pip install ./ffi/python (profile ${MOEHAL_PY_PROFILE:-dev})"
MATURIN_PEP517_ARGS="--profile ${MOEHAL_PY_PROFILE:-dev}" \
    "$vpy" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps --no-build-isolation "$here"

say "the README's Python example"
"$vpy" "$here/tests/readme_example.py" "$root/README.md"

say "pytest (Ascend through the ACL emulator: cargo build -p moehal-ascend-emu)"
if [ -z "${MOEHAL_ASCEND_LIB_DIR:-}" ]; then
    (cd "$root" && cargo build -q -p moehal-ascend-emu)
    export MOEHAL_ASCEND_LIB_DIR="$CARGO_TARGET_DIR/debug"
fi
cd "$here"
"$vpy" -m pytest -q -rs tests
say "done"
