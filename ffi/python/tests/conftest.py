"""Shared fixtures: the backends under test, each skipped with its reason when unavailable.

The Ascend backend runs against the ACL emulator when ``MOEHAL_ASCEND_LIB_DIR`` points at the
folder holding ``libascendcl.so`` from ``cargo build -p moehal-ascend-emu`` (as ``.ci/run`` does).
"""

import pytest

import moehal

BACKENDS = ["reference", "cpu", "ascend"]


def _status():
    return {b.name: b for b in moehal.backends()}


@pytest.fixture(params=BACKENDS)
def be(request):
    info = _status().get(request.param)
    if info is None:
        pytest.skip(f"backend {request.param} is not compiled into this build")
    if not info.available:
        pytest.skip(f"backend {request.param} unavailable: {info.reason}")
    return moehal.open(request.param)


def pytest_report_header(config):
    lines = []
    for b in moehal.backends():
        lines.append(f"moehal backend {b.name}: " + ("available" if b.available else f"unavailable ({b.reason})"))
    try:
        import torch

        lines.append(f"torch {torch.__version__}: torch-native reference tests run")
    except ImportError:
        lines.append("torch not installed: torch-native tests skipped (numpy references run)")
    return lines
