"""Every op of OPS.md through the Python package, on each backend of conftest.BACKENDS, against
reference code written here in numpy (float64, from the same rounded inputs) and, where torch is
installed, torch-native code (torch.topk routers, per-expert torch.mm, index_select).

Tolerances are OPS.md §Conformance: f32 1e-5, bf16 1e-2 relative (norm); router ids equal and
weights within 1e-5; permute / hash / gather / quantize exact.
"""

import threading

import numpy as np
import pytest

import moehal

try:
    import ml_dtypes

    BF16 = ml_dtypes.bfloat16
except ImportError:  # pragma: no cover
    ml_dtypes = None
    BF16 = None

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (numpy references cover the ops)")
needs_bf16 = pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes is not installed (bfloat16 numpy arrays)")


def rng(seed):
    return np.random.default_rng(seed)


def rel_err(out, ref):
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert not np.isnan(out).any() or np.isnan(ref).any(), "NaN where the reference has none"
    n = np.linalg.norm(ref)
    return np.linalg.norm(out - ref) / (n if n > 0 else 1.0)


# ---------------------------------------------------------------------------------------------
# numpy references (OPS.md)
# ---------------------------------------------------------------------------------------------


def ref_scores(logits, scoring):
    x = np.asarray(logits, dtype=np.float64)
    if scoring == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        s = e / e.sum(axis=1, keepdims=True)
    elif scoring == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-x))
    else:
        s = np.sqrt(np.log1p(np.exp(x)))
    return s.astype(np.float32)


def ref_router(logits, k, scoring, bias=None, renormalize=False, scale=1.0, n_group=0, topk_group=0, group_score="top2_sum"):
    s = ref_scores(logits, scoring)
    sel = (s + bias).astype(np.float32) if bias is not None else s.copy()
    t, e = sel.shape
    if n_group and n_group > 1:
        g = sel.reshape(t, n_group, e // n_group).astype(np.float64)
        gs = np.sort(g, axis=2)[:, :, -2:].sum(axis=2) if group_score == "top2_sum" else g.max(axis=2)
        keep = np.argsort(-gs, axis=1, kind="stable")[:, :topk_group]
        mask = np.ones((t, n_group), dtype=bool)
        np.put_along_axis(mask, keep, False, axis=1)
        sel = np.where(np.repeat(mask, e // n_group, axis=1), -np.inf, sel).astype(np.float32)
    ids = np.argsort(-sel, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(s, ids, axis=1).astype(np.float64)
    if renormalize:
        w = w / (w.sum(axis=1, keepdims=True) + 1e-20)
    return ids.astype(np.int32), (w * scale).astype(np.float32)


def ref_grouped_gemm(x, w, group_end, layout="nk", row_scale=None, bias=None):
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n = w.shape[1] if layout == "nk" else w.shape[2]
    y = np.full((x.shape[0], n), np.nan)
    start = 0
    for g, end in enumerate(group_end):
        wg = w[g].T if layout == "nk" else w[g]
        acc = x[start:end] @ wg
        if bias is not None:
            acc = acc + np.asarray(bias, dtype=np.float64)[g]
        if row_scale is not None:
            acc = acc * np.asarray(row_scale, dtype=np.float64)[start:end, None]
        y[start:end] = acc
        start = end
    return y


def ref_permute(ids, num_experts):
    t, k = ids.shape
    order = [(tt, j) for e in range(num_experts) for tt in range(t) for j in range(k) if ids[tt, j] == e]
    counts = np.bincount(ids[ids >= 0].ravel(), minlength=num_experts)
    group_end = np.cumsum(counts).astype(np.int64)
    src = np.array([tt for tt, _ in order], dtype=np.int64)
    slot_row = np.full((t, k), -1, dtype=np.int64)
    for r, (tt, j) in enumerate(order):
        slot_row[tt, j] = r
    return group_end, src, slot_row


def ref_swiglu(h, limit=None):
    h = np.asarray(h, dtype=np.float64)
    i = h.shape[1] // 2
    gate, up = h[:, :i], h[:, i:]
    if limit is not None:
        gate = np.minimum(gate, limit)
        up = np.clip(up, -limit, limit)
    return gate / (1.0 + np.exp(-gate)) * up


def ref_combine(y_perm, slot_row, weights):
    y = np.asarray(y_perm, dtype=np.float64)
    out = np.zeros((slot_row.shape[0], y.shape[1]))
    for t in range(slot_row.shape[0]):
        for j in range(slot_row.shape[1]):
            if slot_row[t, j] >= 0:
                out[t] += float(weights[t, j]) * y[slot_row[t, j]]
    return out


# ---------------------------------------------------------------------------------------------
# backends() / open()
# ---------------------------------------------------------------------------------------------


def test_backends_lists_reference_and_cpu():
    got = moehal.backends()
    names = [b.name for b in got]
    assert "reference" in names and "cpu" in names
    for b in got:
        assert isinstance(b.available, bool)
        assert b.available == (b.reason == ""), b
    assert dict((b.name, b.available) for b in got)["reference"] is True


def test_open_default_and_by_name():
    be = moehal.open()
    assert be.name == next(b.name for b in moehal.backends() if b.available)
    cpu = moehal.open("cpu")
    assert cpu.name == "cpu" and cpu.device == (1, 0)


def test_open_unknown_is_runtime_error_with_reason():
    with pytest.raises(RuntimeError, match="not compiled into this build"):
        moehal.open("tpu")


def test_unavailable_backend_raises_its_reason():
    missing = [b for b in moehal.backends() if not b.available]
    if not missing:
        pytest.skip("every compiled backend is available here")
    with pytest.raises(RuntimeError) as e:
        moehal.open(missing[0].name)
    assert missing[0].reason in str(e.value)


# ---------------------------------------------------------------------------------------------
# §2 router
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scoring", ["softmax", "sigmoid", "sqrt_softplus"])
def test_router_topk(be, scoring):
    r = rng(1)
    logits = r.standard_normal((37, 16)).astype(np.float32)
    ids, w = be.router_topk(logits, 4, scoring=scoring, renormalize=True, routed_scaling_factor=2.5)
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int32 and ids.shape == (37, 4)
    assert w.dtype == np.float32 and w.shape == (37, 4)
    rid, rw = ref_router(logits, 4, scoring, renormalize=True, scale=2.5)
    np.testing.assert_array_equal(ids, rid)
    np.testing.assert_allclose(w, rw, atol=1e-5, rtol=0)


def test_router_topk_groups_bias_counts(be):
    r = rng(2)
    logits = r.standard_normal((20, 32)).astype(np.float32)
    bias = (r.standard_normal(32) * 0.5).astype(np.float32)
    ids, w, counts = be.router_topk(
        logits, 8, scoring="sigmoid", bias=bias, renormalize=True, routed_scaling_factor=2.5,
        n_group=8, topk_group=4, group_score="top2_sum", return_counts=True,
    )
    rid, rw = ref_router(logits, 8, "sigmoid", bias, True, 2.5, 8, 4, "top2_sum")
    np.testing.assert_array_equal(ids, rid)
    np.testing.assert_allclose(w, rw, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(counts, np.bincount(rid.ravel(), minlength=32))


@needs_bf16
def test_router_topk_bf16_logits(be):
    logits = rng(3).standard_normal((9, 8)).astype(BF16)
    ids, w = be.router_topk(logits, 2, renormalize=True)
    rid, rw = ref_router(logits.astype(np.float32), 2, "softmax", renormalize=True)
    np.testing.assert_array_equal(ids, rid)
    np.testing.assert_allclose(w, rw, atol=1e-5, rtol=0)


def test_router_hash(be):
    r = rng(4)
    logits = r.standard_normal((6, 8)).astype(np.float32)
    tid2eid = r.integers(0, 8, size=(10, 3)).astype(np.int32)
    token_ids = np.array([0, 9, 3, 3, 5, 1], dtype=np.int64)
    try:
        ids, w = be.router_topk(logits, 3, scoring="sqrt_softplus", renormalize=True,
                                routed_scaling_factor=1.5, tid2eid=tid2eid, token_ids=token_ids)
    except NotImplementedError as e:
        pytest.skip(f"hash routing unsupported on {be.name}: {e}")
    np.testing.assert_array_equal(ids, tid2eid[token_ids])
    s = ref_scores(logits, "sqrt_softplus").astype(np.float64)
    sw = np.take_along_axis(s, tid2eid[token_ids].astype(np.int64), axis=1)
    rw = sw / (sw.sum(axis=1, keepdims=True) + 1e-20) * 1.5
    np.testing.assert_allclose(w, rw, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="token_ids"):
        be.router_hash(logits, tid2eid, np.array([0, 1, 2, 3, 4, 10], dtype=np.int64), 3)


# ---------------------------------------------------------------------------------------------
# §1 grouped_gemm
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["nk", "kn"])
def test_grouped_gemm_f32(be, layout):
    r = rng(5)
    m, n, k, g = 40, 24, 32, 5
    x = r.standard_normal((m, k)).astype(np.float32)
    w = r.standard_normal((g, n, k) if layout == "nk" else (g, k, n)).astype(np.float32)
    group_end = np.array([3, 3, 17, 30, 36], dtype=np.int64)  # an empty group, 4 guard rows
    row_scale = r.random(m).astype(np.float32)
    bias = r.standard_normal((g, n)).astype(np.float32)
    y = np.full((m, n), np.nan, dtype=np.float32)
    try:
        got = be.grouped_gemm(x, w, group_end, layout=layout, row_scale=row_scale, bias=bias, out=y)
    except NotImplementedError as e:
        pytest.skip(f"unsupported on {be.name}: {e}")
    assert got is y
    ref = ref_grouped_gemm(x, w, group_end, layout, row_scale, bias)
    assert rel_err(y[:36], ref[:36]) <= 1e-5
    assert np.isnan(y[36:]).all(), "rows past group_end[-1] must not be written"


@needs_bf16
def test_grouped_gemm_bf16(be):
    r = rng(6)
    x = r.standard_normal((16, 64)).astype(BF16)
    w = r.standard_normal((3, 32, 64)).astype(BF16)
    group_end = np.array([4, 10, 16], dtype=np.int64)
    try:
        y = be.grouped_gemm(x, w, group_end)
    except NotImplementedError as e:
        pytest.skip(f"unsupported on {be.name}: {e}")
    assert y.dtype == BF16 and y.shape == (16, 32)
    ref = ref_grouped_gemm(x.astype(np.float32), w.astype(np.float32), group_end)
    assert rel_err(y.astype(np.float32), ref) <= 1e-2


# ---------------------------------------------------------------------------------------------
# §3 glue
# ---------------------------------------------------------------------------------------------


def test_moe_permute(be):
    r = rng(7)
    t, k, e, h = 11, 3, 6, 8
    ids = r.integers(0, e, size=(t, k)).astype(np.int32)
    ids[2, 1] = -1  # a dropped slot
    ids[5, 0] = ids[5, 1]  # the same expert twice: two slots
    x = r.standard_normal((t, h)).astype(np.float32)
    p = be.moe_permute(ids, e, x)
    ge, src, slot = ref_permute(ids, e)
    routed = int(ge[-1])
    np.testing.assert_array_equal(p.group_end, ge)
    np.testing.assert_array_equal(p.slot_row, slot)
    np.testing.assert_array_equal(p.src_token[:routed], src)
    np.testing.assert_array_equal(p.x_perm[:routed], x[src])
    q = be.moe_permute(ids, e)
    assert q.x_perm is None
    np.testing.assert_array_equal(q.slot_row, slot)


@pytest.mark.parametrize("limit", [None, 1.5])
def test_swiglu(be, limit):
    h = (rng(8).standard_normal((13, 2 * 24)) * 3).astype(np.float32)
    y = be.swiglu(h, limit=limit)
    assert y.shape == (13, 24) and y.dtype == np.float32
    assert rel_err(y, ref_swiglu(h, limit)) <= 1e-5


def test_moe_combine(be):
    r = rng(9)
    t, k, hdim = 7, 2, 16
    slot_row = r.permutation(t * k).reshape(t, k).astype(np.int64)
    slot_row[3, 1] = -1
    weights = r.random((t, k)).astype(np.float32)
    y_perm = r.standard_normal((t * k, hdim)).astype(np.float32)
    out = be.moe_combine(y_perm, slot_row, weights)
    assert rel_err(out, ref_combine(y_perm, slot_row, weights)) <= 1e-5


# ---------------------------------------------------------------------------------------------
# §4 / §5 Engram
# ---------------------------------------------------------------------------------------------

TOY_IDS = np.array([7, 3, 7, 3, 49], dtype=np.int64)
TOY_ROWS = np.array([[9, 21, 28, 42], [8, 11, 39, 59], [0, 18, 25, 50], [8, 11, 24, 46], [5, 22, 37, 46]])


def test_engram_hash_toy(be):
    layer = moehal.EngramLayer.toy()
    assert layer.offsets == [0, 11, 24, 41] and layer.rows == 60 and layer.columns == 4
    rows = be.engram_hash(layer, TOY_IDS)
    assert rows.dtype == np.int64
    np.testing.assert_array_equal(rows, TOY_ROWS)
    with pytest.raises(ValueError, match=r"engram_hash.*ids"):
        be.engram_hash(layer, np.array([7, 50], dtype=np.int64))


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_gather_rows(be, dtype):
    if dtype == "bf16" and ml_dtypes is None:
        pytest.skip("ml_dtypes is not installed")
    npdt = {"f32": np.float32, "f16": np.float16, "bf16": BF16}[dtype]
    r = rng(10)
    table = r.standard_normal((50, 8)).astype(npdt)
    rows = r.integers(0, 50, size=(6, 3)).astype(np.int64)
    out = be.gather_rows(table, rows)
    assert out.dtype == table.dtype and out.shape == (6, 24)
    # index_select, then flatten the C rows of each token: a copy, bitwise equal.
    np.testing.assert_array_equal(out.view(np.uint8), table[rows.ravel()].reshape(6, 24).view(np.uint8))
    with pytest.raises(ValueError, match="rows"):
        be.gather_rows(table, np.array([[0, 50]], dtype=np.int64))


def test_gather_rows_fp8(be):
    if ml_dtypes is None:
        pytest.skip("ml_dtypes is not installed")
    r = rng(11)
    d = 64
    vals = r.standard_normal((10, d)).astype(ml_dtypes.float8_e4m3fn)
    scales = r.integers(120, 134, size=(10, d // 32)).astype(np.uint8)
    table = np.concatenate([vals.view(np.uint8), scales], axis=1)
    rows = np.array([[1, 9], [0, 0]], dtype=np.int64)
    out = be.gather_rows(table, rows, format="fp8_e4m3_ue8m0")
    deq = vals.astype(np.float32) * np.repeat(np.ldexp(1.0, scales.astype(np.int32) - 127), 32, axis=1).astype(np.float32)
    np.testing.assert_array_equal(out, deq[rows.ravel()].reshape(2, 2 * d))


def test_engram_lookup(be):
    layer = moehal.EngramLayer.toy()
    table = rng(12).standard_normal((layer.rows, 4)).astype(np.float32)
    out = be.engram_lookup(layer, TOY_IDS, table)
    np.testing.assert_array_equal(out, table[TOY_ROWS.ravel()].reshape(5, 16))


# ---------------------------------------------------------------------------------------------
# §6 quantized
# ---------------------------------------------------------------------------------------------


def test_quantize_int8(be):
    x = rng(13).standard_normal((5, 96)).astype(np.float32)
    x[2] = 0.0
    try:
        xq, s = be.quantize_int8(x)
    except NotImplementedError as e:
        pytest.skip(f"unsupported on {be.name}: {e}")
    amax = np.abs(x).max(axis=1)
    rs = np.where(amax < 2.0**-64, np.float32(1), (amax / np.float32(127)).astype(np.float32)).astype(np.float32)
    rq = np.clip(np.rint((x / rs[:, None]).astype(np.float32)), -127, 127).astype(np.int8)
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_array_equal(xq, rq)


def test_quantize_fp8(be):
    if ml_dtypes is None:
        pytest.skip("ml_dtypes is not installed")
    x = (rng(14).standard_normal((3, 200)) * 10).astype(np.float32)
    try:
        xq, s = be.quantize_fp8(x)
    except NotImplementedError as e:
        pytest.skip(f"unsupported on {be.name}: {e}")
    assert xq.shape == (3, 200) and xq.dtype == np.uint8 and s.shape == (3, 2) and s.dtype == np.float32
    for b in range(2):
        blk = x[:, b * 128:(b + 1) * 128]
        rs = (np.maximum(np.abs(blk).max(axis=1), np.float32(1e-4)) / np.float32(448)).astype(np.float32)
        np.testing.assert_array_equal(s[:, b], rs)
        q = (blk / rs[:, None]).astype(np.float32).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
        np.testing.assert_array_equal(xq[:, b * 128:(b + 1) * 128], q)


def test_grouped_gemm_int8_weights(be):
    r = rng(15)
    m, n, k, g = 12, 16, 64, 2
    x = r.standard_normal((m, k)).astype(np.float32)
    w = r.integers(-127, 128, size=(g, n, k)).astype(np.int8)
    w_scale = (r.random((g, n)) * 0.01).astype(np.float32)
    group_end = np.array([5, 12], dtype=np.int64)
    try:
        y = be.grouped_gemm(x, w, group_end, w_format="int8", w_scale=w_scale)
    except NotImplementedError as e:
        pytest.skip(f"unsupported on {be.name}: {e}")
    deq = (w.astype(np.float32) * w_scale[:, :, None]).astype(np.float32)
    assert y.dtype == np.float32
    assert rel_err(y, ref_grouped_gemm(x, deq, group_end)) <= 1e-5


# ---------------------------------------------------------------------------------------------
# MoELayer
# ---------------------------------------------------------------------------------------------


def test_moe_layer_matches_reference(be):
    layer = moehal.MoELayer("qwen3-30b-a3b", experts=8, width_div=32, backend=be, seed=3)
    hdim = layer.gate.shape[1]
    x = rng(16).standard_normal((10, hdim)).astype(np.float32)
    y = layer(x)
    assert y.shape == (10, hdim) and y.dtype == np.float32
    logits = (x.astype(np.float64) @ layer.gate.T.astype(np.float64)).astype(np.float32)
    ids, w = ref_router(logits, layer.k, "softmax", renormalize=True)
    ref = np.zeros((10, hdim))
    for t in range(10):
        for j in range(layer.k):
            e = ids[t, j]
            h = x[t].astype(np.float64) @ layer.gate_up[e].T.astype(np.float64)
            a = ref_swiglu(h[None, :])[0]
            ref[t] += float(w[t, j]) * (a @ layer.down[e].T.astype(np.float64))
    assert rel_err(y, ref) <= 1e-4  # three chained f32 ops, each within 1e-5


def test_moe_layer_unknown_preset():
    with pytest.raises(ValueError, match="preset"):
        moehal.MoELayer("gpt-5", backend="reference")


# ---------------------------------------------------------------------------------------------
# zero copy, errors, threads
# ---------------------------------------------------------------------------------------------


def test_out_is_written_in_place(be):
    logits = rng(17).standard_normal((5, 8)).astype(np.float32)
    ids = np.full((5, 2), -7, dtype=np.int32)
    w = np.full((5, 2), np.nan, dtype=np.float32)
    p_ids, p_w = ids.__array_interface__["data"][0], w.__array_interface__["data"][0]
    got = be.router_topk(logits, 2, out=(ids, w))
    assert got[0] is ids and got[1] is w
    assert got[0].__array_interface__["data"][0] == p_ids and got[1].__array_interface__["data"][0] == p_w
    rid, rw = ref_router(logits, 2, "softmax")
    np.testing.assert_array_equal(ids, rid)
    np.testing.assert_allclose(w, rw, atol=1e-5, rtol=0)


def test_invalid_argument_names_op_and_field(be):
    logits = np.zeros((3, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"router_topk: invalid argument `k`"):
        be.router_topk(logits, 9)
    with pytest.raises(ValueError, match=r"moe_permute: invalid argument `ids`"):
        be.moe_permute(np.array([[0, 8]], dtype=np.int32), 8)
    with pytest.raises(ValueError, match=r"router_topk: invalid argument `scoring`"):
        be.router_topk(logits, 2, scoring="relu")
    with pytest.raises(ValueError, match=r"grouped_gemm: invalid argument `group_end`"):
        be.grouped_gemm(np.zeros((4, 8), np.float32), np.zeros((2, 3, 8), np.float32), np.array([3, 2], np.int64))


def test_layout_errors(be):
    x = np.zeros((4, 16), dtype=np.float32)
    with pytest.raises(ValueError, match=r"swiglu: invalid argument `h`.*contiguous"):
        be.swiglu(x[:, ::2])
    with pytest.raises(ValueError, match=r"invalid argument `h`.*not a tensor"):
        be.swiglu([[1.0, 2.0]])
    ro = np.zeros((4, 8), dtype=np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"`out`.*read-only"):
        be.swiglu(x, out=ro)
    with pytest.raises(ValueError, match=r"`out` overlaps `h`"):
        be.swiglu(x, out=x.reshape(-1)[:32].reshape(4, 8))
    with pytest.raises(ValueError, match=r"`x`.*dtype"):
        be.quantize_int8(np.zeros((2, 4), dtype=np.float64))


def test_unsupported_pairing_is_not_implemented(be):
    x = np.zeros((2, 64), dtype=np.int8)
    w = np.zeros((1, 4, 32), dtype=np.uint8)
    ws = np.full((1, 4, 2), 127, dtype=np.uint8)
    with pytest.raises(NotImplementedError, match="grouped_gemm"):
        be.grouped_gemm(x, w, np.array([2], np.int64), w_format="mxfp4", w_scale=ws,
                        x_scale=np.ones(2, np.float32))


def test_threads_share_a_backend(be):
    r = rng(18)
    xs = [r.standard_normal((64, 32)).astype(np.float32) for _ in range(8)]
    w = r.standard_normal((4, 48, 32)).astype(np.float32)
    ge = np.array([16, 32, 48, 64], dtype=np.int64)
    want = [be.grouped_gemm(x, w, ge) for x in xs]
    errors = []

    def work(i):
        try:
            for _ in range(10):
                got = be.grouped_gemm(xs[i], w, ge)
                if not np.array_equal(got.view(np.uint32), want[i].view(np.uint32)):
                    errors.append(f"thread {i}: result differs from the single-threaded run")
                ids, _ = be.router_topk(np.ascontiguousarray(xs[i][:, :8]), 2)
                if not np.array_equal(ids, ref_router(xs[i][:, :8], 2, "softmax")[0]):
                    errors.append(f"thread {i}: router ids differ")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"thread {i}: {e!r}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# ---------------------------------------------------------------------------------------------
# torch (skipped without torch)
# ---------------------------------------------------------------------------------------------


@needs_torch
def test_torch_router_against_torch_topk(be):
    logits = torch.randn(33, 16, generator=torch.Generator().manual_seed(0))
    ids, w = be.router_topk(logits, 4, renormalize=True)
    assert isinstance(ids, torch.Tensor) and ids.dtype == torch.int32
    s = torch.softmax(logits.double(), dim=-1).float()
    tw, ti = torch.topk(s, 4, dim=-1)
    assert torch.equal(ids.long(), ti)
    torch.testing.assert_close(w, tw / tw.sum(-1, keepdim=True), atol=1e-5, rtol=0)


@needs_torch
def test_torch_grouped_gemm_against_mm_and_out_data_ptr(be):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 32, generator=g)
    w = torch.randn(3, 16, 32, generator=g)
    ge = torch.tensor([5, 12, 20], dtype=torch.int64)
    y = torch.empty(20, 16)
    ptr = y.data_ptr()
    got = be.grouped_gemm(x, w, ge, out=y)
    assert got is y and got.data_ptr() == ptr
    ref = torch.cat([x[s:e].double() @ w[i].double().T for i, (s, e) in enumerate(zip([0, 5, 12], [5, 12, 20]))])
    assert ((y.double() - ref).norm() / ref.norm()).item() <= 1e-5


@needs_torch
def test_torch_gather_rows_against_index_select(be):
    table = torch.randn(40, 8, dtype=torch.bfloat16)
    rows = torch.randint(0, 40, (5, 3), dtype=torch.int64)
    out = be.gather_rows(table, rows)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, torch.index_select(table, 0, rows.flatten()).reshape(5, 24))


# ---------------------------------------------------------------------------------------------
# Found by a fresh user: outputs never show stale memory; dtype / format choices are checked
# ---------------------------------------------------------------------------------------------


def test_grouped_gemm_rows_past_group_end_read_zero(be):
    # The op leaves rows past group_end[-1] alone; an output allocated for the caller must not
    # carry whatever the allocator held (a fresh user saw 7.0 from an earlier array there).
    for _ in range(3):
        junk = np.full((16, 8), 7.0, dtype=np.float32)
        del junk
        x = rng(5).standard_normal((16, 4)).astype(np.float32)
        w = rng(6).standard_normal((2, 8, 4)).astype(np.float32)
        ge = np.array([0, 8], dtype=np.int64)
        y = be.grouped_gemm(x, w, ge)
        assert np.all(y[8:] == 0.0)
        np.testing.assert_allclose(y[:8], x[:8] @ w[1].T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", ["bogus", 123, "int8", "f64"])
def test_grouped_gemm_out_dtype_is_checked(be, bad):
    x = np.ones((4, 4), dtype=np.float32)
    w = np.ones((1, 2, 4), dtype=np.float32)
    ge = np.array([4], dtype=np.int64)
    with pytest.raises(ValueError, match="out_dtype"):
        be.grouped_gemm(x, w, ge, out_dtype=bad)
    # A float x gives y its own dtype: asking for another one is an error, not ignored.
    with pytest.raises(ValueError, match="out_dtype"):
        be.grouped_gemm(x, w, ge, out_dtype="bf16")
    assert be.grouped_gemm(x, w, ge, out_dtype="float32").dtype == np.float32


def test_gather_rows_format_and_out_dtype_are_checked(be):
    table = np.ones((4, 8), dtype=np.float32)
    rows = np.array([[0, 1]], dtype=np.int64)
    with pytest.raises(ValueError, match="format"):
        be.gather_rows(table, rows, format="int4")
    with pytest.raises(ValueError, match="out_dtype"):
        be.gather_rows(table, rows, out_dtype="int8")


def test_open_default_refuses_an_invalid_environment(monkeypatch):
    # open(None) must not fall back to the slow reference because MOEHAL_CPU_THREADS is wrong.
    import subprocess
    import sys

    code = "import moehal\ntry:\n    moehal.open(None)\nexcept RuntimeError as e:\n    print('RuntimeError', e)\n"
    env = dict(__import__("os").environ, MOEHAL_CPU_THREADS="abc")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "RuntimeError" in out and "MOEHAL_CPU_THREADS" in out, out


def test_moe_permute_accepts_int64_ids_range_checked(be):
    ids32 = np.array([[2, 0], [1, -1], [2, 2]], dtype=np.int32)
    a = be.moe_permute(ids32, 3)
    b = be.moe_permute(ids32.astype(np.int64), 3)
    for u, v in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(u, v)
    for bad in (2**32, 3, -2):
        ids = ids32.astype(np.int64)
        ids[1, 0] = bad
        with pytest.raises(ValueError, match="ids"):
            be.moe_permute(ids, 3)


def test_moe_layer_checks_its_arguments():
    with pytest.raises(ValueError, match="experts"):
        moehal.MoELayer("qwen3-30b-a3b", experts=0, width_div=16, backend="reference")
    with pytest.raises(ValueError, match="width_div"):
        moehal.MoELayer("qwen3-30b-a3b", experts=16, width_div=0, backend="reference")
    with pytest.raises(ValueError, match="dtype"):
        moehal.MoELayer("qwen3-30b-a3b", experts=16, width_div=16, dtype="float64", backend="reference")
    with pytest.raises(ValueError, match="`k`"):
        moehal.MoELayer("qwen3-30b-a3b", experts=3, width_div=16, backend="reference")
    with pytest.raises(ValueError, match="n_group"):
        moehal.MoELayer("deepseek-v3", experts=12, width_div=64, backend="reference")
    with pytest.raises(TypeError, match="kk"):
        moehal.MoELayer("qwen3-30b-a3b", experts=16, width_div=16, kk=3, backend="reference")


def test_negative_unsigned_parameters_are_value_errors_naming_the_field(be):
    # The class of fault: a negative Python int given for a parameter the native layer takes
    # unsigned once surfaced as numpy's "negative dimensions" message or PyO3's OverflowError.
    logits = np.zeros((3, 8), dtype=np.float32)
    for kw, field in (({}, "k"), ({"n_group": -2}, "n_group"), ({"n_group": 2, "topk_group": -1}, "topk_group")):
        k = -1 if field == "k" else 2
        with pytest.raises(ValueError, match=rf"router_topk: invalid argument `{field}`: -\d+ is negative"):
            be.router_topk(logits, k, **kw)
    tid2eid = np.zeros((4, 2), dtype=np.int32)
    with pytest.raises(ValueError, match=r"router_topk: invalid argument `k`: -1 is negative"):
        be.router_hash(logits, tid2eid, np.zeros(3, np.int64), -1)
    ids = np.zeros((2, 2), dtype=np.int32)
    for dt in (np.int32, np.int64):
        with pytest.raises(ValueError, match=r"moe_permute: invalid argument `num_experts`: -3 is negative"):
            be.moe_permute(ids.astype(dt), -3)
    # The native layer names the field too when called directly (no Python-side check before it).
    raw = be._b
    i32, f32, i64 = np.zeros((3, 2), np.int32), np.zeros((3, 2), np.float32), np.zeros(8, np.int64)
    with pytest.raises(ValueError, match=r"router_topk: invalid argument `k`: -1 is negative"):
        raw.router_topk(logits, i32, f32, -1, "softmax", False, 1.0)
    with pytest.raises(ValueError, match=r"router_topk: invalid argument `n_group`: -1 is negative"):
        raw.router_topk(logits, i32, f32, 2, "softmax", False, 1.0, n_group=-1)
    with pytest.raises(ValueError, match=r"moe_permute: invalid argument `num_experts`: -1 is negative"):
        raw.moe_permute(ids, -1, i64, np.zeros(4, np.int64), np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match=r"invalid argument `k`: .* too large"):
        raw.router_topk(logits, i32, f32, 2**64, "softmax", False, 1.0)
    # Not an int at all stays a TypeError.
    with pytest.raises(TypeError, match="k"):
        be.router_topk(logits, 2.5)


def test_engram_layer_negative_fields_are_value_errors_naming_the_field():
    good = dict(
        max_order=3,
        heads=2,
        multipliers=[151872553228292665, 9591860036772465, 71266316989379275],
        primes=[11, 13, 17, 19],
        vocab_size=50,
        pad_id=2,
    )
    assert moehal.EngramLayer(**good).rows == 60
    cases = [
        ("max_order", -3, "max_order"),
        ("heads", -2, "heads"),
        ("vocab_size", -50, "vocab_size"),
        ("pad_id", -1, "pad_id"),
        ("primes", [11, -13, 17, 19], r"primes\[1\]"),
        ("multipliers", [1, 3, -5], r"multipliers\[2\]"),
        ("primes", [11, 13, 17, 2**64], r"primes\[3\]"),
        ("primes", [11, 13, 17, -(2**200)], r"primes\[3\]"),
    ]
    for name, value, field in cases:
        with pytest.raises(ValueError, match=rf"engram_layer: invalid argument `{field}`"):
            moehal.EngramLayer(**dict(good, **{name: value}))
    with pytest.raises(ValueError, match=r"invalid argument `index`: -1 is negative"):
        moehal.EngramLayer.v41_flash(-1)


def test_moe_layer_negative_unsigned_arguments():
    for kw, field in (({"seed": -1}, "seed"), ({"n_group": -1}, "n_group"), ({"k": -2}, "`k`")):
        with pytest.raises(ValueError, match=field):
            moehal.MoELayer("qwen3-30b-a3b", experts=16, width_div=16, backend="reference", **kw)


def test_capability_is_not_implemented_contract_rule_is_value_error(be):
    # Issue 16 item 5: a float32 array moehal cannot read (big-endian bytes) is a missing
    # capability, NotImplementedError naming the field; a dtype OPS.md does not list (float64)
    # breaks the contract, ValueError.
    x = np.ones((2, 4), dtype=">f4")
    with pytest.raises(NotImplementedError, match=r"quantize_int8.*`x`.*big-endian"):
        be.quantize_int8(x)
    with pytest.raises(ValueError, match=r"quantize_int8: invalid argument `x`.*dtype"):
        be.quantize_int8(np.ones((2, 4), dtype=np.float64))
    # The same data in native byte order runs, on every backend with quantize_int8 (Ascend and CUDA
    # report the quantized formats unsupported until their kernels land: then the reason is that,
    # never the byte order).
    try:
        q, s = be.quantize_int8(x.astype("=f4"))
    except NotImplementedError as e:
        assert "big-endian" not in str(e) and "no kernels on this backend" in str(e), str(e)
        return
    np.testing.assert_array_equal(q, np.full((2, 4), 127, np.int8))
