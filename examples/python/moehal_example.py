"""moehal from Python through the C ABI: router_topk and grouped_gemm on numpy arrays (and on
torch tensors through DLPack when torch is importable), compared with the framework's own result.

    cargo build -p moehal-ffi --release
    python3 examples/python/moehal_example.py            # numpy, then torch if installed
    python3 examples/python/moehal_example.py --numpy-only

Environment: MOEHAL_LIB (path of libmoehal_ffi.so), MOEHAL_BACKEND (host backend to use: "cpu"
or "reference"; default "cpu", else "reference"; a device backend exits with a message, since the
arrays here are host memory).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moehal  # noqa: E402


# Backends whose buffers are host memory: this example hands them numpy / CPU torch arrays as is
# (DLPack kDLCPU). A device backend (cuda, ascend) would need its arrays uploaded first, which this
# example does not do.
HOST_BACKENDS = ("cpu", "reference")


def host_backend(lib):
    want = os.environ.get("MOEHAL_BACKEND")
    avail = {name: (ok, reason) for name, ok, reason in lib.backends()}
    name = want or ("cpu" if avail.get("cpu", (False, ""))[0] else "reference")
    if name not in HOST_BACKENDS:
        sys.exit(f"MOEHAL_BACKEND={name}: this example passes host (numpy / CPU torch) arrays, so it runs "
                 f"on a host backend only: {', '.join(HOST_BACKENDS)}")
    ok, reason = avail.get(name, (False, "not compiled into this library"))
    if not ok:
        sys.exit(f"MOEHAL_BACKEND={name}: backend unavailable ({reason})")
    return lib.open(name)


def numpy_case(be, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    T, E, k, K, N = 16, 8, 2, 32, 24
    logits = rng.standard_normal((T, E), dtype=np.float32)
    ids, weights, counts = be.router_topk(logits, k, scoring="softmax", renormalize=True)

    # numpy's own router: softmax, k largest (ties: lower index), renormalized.
    s = np.exp(logits - logits.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    want_ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    want_w = np.take_along_axis(s, want_ids, axis=1)
    want_w /= want_w.sum(axis=1, keepdims=True)
    assert (ids == want_ids).all(), (ids, want_ids)
    assert np.allclose(weights, want_w, atol=1e-5), np.abs(weights - want_w).max()
    assert (counts == np.bincount(want_ids.ravel(), minlength=E)).all()

    # Rows sorted by expert (what moe_permute produces), then the expert matmul with router weights.
    order = np.argsort(ids.ravel(), kind="stable")
    x = np.ascontiguousarray(rng.standard_normal((T, K), dtype=np.float32)[order // k])
    row_scale = np.ascontiguousarray(weights.ravel()[order])
    group_end = np.cumsum(counts).astype(np.int64)
    w = rng.standard_normal((E, N, K), dtype=np.float32)
    bias = rng.standard_normal((E, N), dtype=np.float32)
    y = be.grouped_gemm(x, w, group_end, layout="NK", row_scale=row_scale, bias=bias)
    y_kn = be.grouped_gemm(x, np.ascontiguousarray(w.transpose(0, 2, 1)), group_end, layout="KN",
                           row_scale=row_scale, bias=bias)
    want = np.empty_like(y)
    start = 0
    for g, end in enumerate(group_end):
        want[start:end] = row_scale[start:end, None] * (x[start:end] @ w[g].T + bias[g])
        start = end
    for got in (y, y_kn):
        err = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert err <= 1e-5, err
    print(f"numpy: OK (router_topk T={T} E={E} k={k}; grouped_gemm M={T * k} K={K} N={N} G={E}, NK and KN; "
          f"rel err {np.linalg.norm(y - want) / np.linalg.norm(want):.2e})")


def torch_case(be, seed=0):
    import torch

    torch.manual_seed(seed)
    T, E, k, K, N = 16, 8, 2, 32, 24
    logits = torch.randn(T, E)
    ids, weights, counts = be.router_topk(logits, k, scoring="sigmoid", renormalize=True,
                                          routed_scaling_factor=2.5)
    s = torch.sigmoid(logits)
    want_w, want_ids = torch.topk(s, k, dim=1)
    want_w = want_w / want_w.sum(dim=1, keepdim=True) * 2.5
    assert torch.equal(ids.long(), want_ids), (ids, want_ids)
    assert torch.allclose(weights, want_w, atol=1e-5)
    order = torch.argsort(ids.flatten(), stable=True)
    x = torch.randn(T, K)[order // k].contiguous()
    group_end = torch.cumsum(counts, 0)
    w = torch.randn(E, N, K)
    y = be.grouped_gemm(x, w, group_end, layout="NK")
    want = torch.empty_like(y)
    start = 0
    for g, end in enumerate(group_end.tolist()):
        want[start:end] = x[start:end] @ w[g].T
        start = end
    err = (torch.linalg.norm(y - want) / torch.linalg.norm(want)).item()
    assert err <= 1e-5, err
    print(f"torch {torch.__version__}: OK (DLPack, no copies; router_topk sigmoid + grouped_gemm, rel err {err:.2e})")


def main():
    lib = moehal.Library()
    print(f"moehal {lib.version()}")
    for name, ok, reason in lib.backends():
        print(f"  {name:10s} {'available' if ok else 'unavailable: ' + reason}")
    be = host_backend(lib)
    print(f"using backend {be.name}")
    numpy_case(be)
    if "--numpy-only" in sys.argv:
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch: skipped (not installed)")
        return
    torch_case(be)


if __name__ == "__main__":
    main()
