"""moehal: sparse (MoE / Engram) inference kernels on CPU, CUDA and Ascend, from Python.

Every op of the moehal contract (OPS.md) on any tensor that implements ``__dlpack__`` (torch,
numpy >= 1.22, jax, cupy) or the numpy array interface (numpy, ``ml_dtypes.bfloat16`` arrays),
without copying it::

    import numpy as np, moehal
    be = moehal.open("cpu")                      # or None: the best available backend
    logits = np.random.default_rng(0).standard_normal((4, 8), dtype=np.float32)
    ids, weights = be.router_topk(logits, k=2, renormalize=True)

Outputs come back in the caller's framework and on its device (torch in, torch out), or are
written into ``out=`` tensors, which are returned as given (no copy). Tensors must be row-major
contiguous. A tensor on the backend's own memory is used in place; a host tensor given to a
device backend (cuda, ascend) is staged through device memory; a device tensor given to a backend
that does not own that device is a ``ValueError``.

Errors: a bad argument raises ``ValueError`` naming the op and the field
(``"router_topk: invalid argument `k`: k = 9 outside [1, E = 8]"``); a capability the backend
lacks raises ``NotImplementedError`` with the reason; an unavailable backend raises
``RuntimeError`` with the reason; an allocation failure raises ``MemoryError``. The GIL is
released while an op runs, and a backend may be used from several threads at once.
"""

from __future__ import annotations

import math
import operator
from collections import namedtuple

from . import _moehal
from ._moehal import EngramLayer, __version__

__all__ = [
    "Backend",
    "BackendInfo",
    "EngramLayer",
    "MoELayer",
    "Permuted",
    "backends",
    "open",
    "presets",
    "__version__",
]

BackendInfo = namedtuple("BackendInfo", ["name", "available", "reason"])
BackendInfo.__doc__ = """A backend compiled into moehal: its name, whether this machine can run it,
and why not (``""`` when available)."""

Permuted = namedtuple("Permuted", ["group_end", "src_token", "slot_row", "x_perm"])
Permuted.__doc__ = """Result of :meth:`Backend.moe_permute`.

- ``group_end``: ``[E]`` int64 cumulative row ends per expert (feeds ``grouped_gemm``).
- ``src_token``: ``[T*k]`` int64, the token of each permuted row (entries past
  ``group_end[-1]`` are unspecified).
- ``slot_row``: ``[T, k]`` int64, the permuted row of slot ``(t, j)``; ``-1`` for a dropped slot.
- ``x_perm``: ``[T*k, H]`` ``x[src_token]`` (dtype of ``x``), or None when no ``x`` was given."""


def backends():
    """Every backend compiled in, in preference order (fastest first, reference last).

    Returns a list of :class:`BackendInfo` ``(name, available, reason)``. Never raises: a
    missing device or library is listed with its reason
    (``BackendInfo("cuda", False, "libcuda.so.1 not found")``).
    """
    return [BackendInfo(*e) for e in _moehal.backends()]


def open(name=None):  # noqa: A001 - the package's entry point, as in the issue and the README
    """Open backend ``name`` (``"reference"``, ``"cpu"``, ``"cuda"``, ``"ascend"``).

    With ``name=None``, the first available backend of :func:`backends` (but an invalid
    ``MOEHAL_CPU_*`` variable, which makes the CPU backend unavailable, raises instead of falling
    back to the reference). Returns a :class:`Backend`; opening the same name twice gives the
    same device.

    Raises ``RuntimeError`` with the reason when the backend is unavailable on this machine or
    not compiled in.
    """
    if name is None:
        # The CPU backend is unavailable only when a MOEHAL_CPU_* variable is invalid: that is an
        # error, never a silent fall back to the slow reference.
        for b in backends():
            if b.name == "cpu" and not b.available:
                raise RuntimeError(f"backend {b.name} unavailable: {b.reason}")
    return Backend(_moehal.open(name))


def presets():
    """The model presets of OPS.md as a list of dicts: ``name, hidden, expert_width, experts,
    k, scoring, bias, n_group, topk_group, group_score, renormalize, scale, shared_experts,
    swiglu_limit``."""
    return _moehal.presets()


# ---------------------------------------------------------------------------------------------
# Tensors of the caller's framework
# ---------------------------------------------------------------------------------------------

_DTYPE_NAMES = {
    "float32": "f32",
    "float16": "f16",
    "bfloat16": "bf16",
    "int32": "i32",
    "int64": "i64",
    "uint8": "u8",
    "int8": "i8",
    "bool": "u8",
}


_OUT_ALIASES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def _choice(op, field, value, allowed):
    """``value`` (a moehal name, or the numpy/torch spelling of a float dtype) checked against
    ``allowed``; a ``ValueError`` naming ``op`` and ``field`` otherwise."""
    v = _OUT_ALIASES.get(value, value) if isinstance(value, str) else value
    if v not in allowed:
        raise ValueError(f"{op}: invalid argument `{field}`: {value!r} is not one of {', '.join(allowed)}")
    return v


def _uint(op, field, value):
    """``value`` as a non-negative Python int, for a parameter the native layer takes unsigned
    (``k``, ``num_experts``, ``n_group``, ``topk_group``, a seed): a negative value is a
    ``ValueError`` naming ``op`` and ``field``, as the native layer's (never numpy's "negative
    dimensions" or an ``OverflowError``); a non-integer (a float, a str) is a ``TypeError``."""
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{op}: argument `{field}` must be an int, not {type(value).__name__}") from None
    if v < 0:
        raise ValueError(f"{op}: invalid argument `{field}`: {v} is negative (an unsigned parameter)")
    return v


def _narrow_ids(op, ids, num_experts):
    """int64 expert ids (``torch.topk``'s dtype) as an int32 copy after checking every id is in
    ``[-1, E)`` (an id of 2**32 is an error, never expert 0, as in the C ABI); other dtypes pass
    through for the op to check."""
    if _dtype(ids) != "i64" or _dim(ids, 0) * _dim(ids, 1) == 0:
        return ids
    lo, hi = int(ids.min()), int(ids.max())
    if lo < -1 or hi >= int(num_experts):
        bad = lo if lo < -1 else hi
        raise ValueError(f"{op}: invalid argument `ids`: id {bad} (int64) outside [-1, E = {int(num_experts)})")
    if _framework(ids) == "torch":
        import torch

        return ids.to(torch.int32)
    return ids.astype("int32")


def _framework(t):
    return type(t).__module__.split(".")[0]


def _dtype(t):
    """moehal's name (``"f32"``, ``"bf16"``, ...) of a tensor's dtype, or None if unknown."""
    d = getattr(t, "dtype", None)
    if d is None:
        return None
    name = str(d).replace("torch.", "").replace("dtype(", "").strip("')\"")
    return _DTYPE_NAMES.get(getattr(d, "name", None) or name, _DTYPE_NAMES.get(name))


def _shape(t):
    s = getattr(t, "shape", None)
    return tuple(int(v) for v in s) if s is not None else ()


def _dim(t, i, default=0):
    s = _shape(t)
    return s[i] if -len(s) <= i < len(s) else default


def _numpy_dtype(name):
    import numpy as np

    if name == "bf16":
        try:
            import ml_dtypes
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "a bfloat16 numpy output needs the ml_dtypes package (pip install ml_dtypes), "
                "or pass out= tensors, or use torch tensors"
            ) from e
        return ml_dtypes.bfloat16
    return {
        "f32": np.float32,
        "f16": np.float16,
        "i32": np.int32,
        "i64": np.int64,
        "u8": np.uint8,
        "i8": np.int8,
    }[name]


def _empty(like, shape, dtype):
    """A zero-filled tensor of ``shape`` and moehal dtype ``dtype`` in ``like``'s framework and
    on its device (numpy for anything that is not torch or cupy). Zero, not uninitialized: some
    ops leave part of their output alone (``grouped_gemm`` rows past ``group_end[-1]``), and a
    returned tensor must not show whatever the allocator left there."""
    fw = _framework(like)
    shape = tuple(int(s) for s in shape)
    if fw == "torch":
        import torch

        td = {
            "f32": torch.float32,
            "f16": torch.float16,
            "bf16": torch.bfloat16,
            "i32": torch.int32,
            "i64": torch.int64,
            "u8": torch.uint8,
            "i8": torch.int8,
        }[dtype]
        return torch.zeros(shape, dtype=td, device=like.device)
    if fw == "cupy":
        import cupy

        with like.device:
            return cupy.zeros(shape, dtype=_numpy_dtype(dtype))
    import numpy as np

    return np.zeros(shape, dtype=_numpy_dtype(dtype))


def _deliver(like, t):
    """An output allocated by :func:`_empty`, converted to ``like``'s framework where that is
    neither torch, cupy nor numpy (jax arrays are immutable: they get a converted copy)."""
    fw = _framework(like)
    if fw in ("jax", "jaxlib"):
        import jax.numpy as jnp

        return jnp.asarray(t)
    return t


def _arg(t):
    """A tensor as the extension takes it (torch tensors that require grad are detached)."""
    if t is not None and getattr(t, "requires_grad", False):
        return t.detach()
    return t


def _outs(op, out, n):
    if out is None:
        return None
    if n == 1:
        return out
    if not isinstance(out, (tuple, list)) or len(out) != n:
        raise ValueError(f"{op}: invalid argument `out`: expected a tuple of {n} tensors")
    return tuple(out)


class Backend:
    """An open moehal backend. Obtain one with :func:`moehal.open`.

    Every op takes tensors implementing ``__dlpack__`` or the numpy array interface, row-major
    contiguous, and returns its outputs in the framework (and on the device) of its first tensor
    argument, unless ``out=`` tensors are given (those are written in place and returned).
    """

    __slots__ = ("_b",)

    def __init__(self, raw):
        self._b = raw

    @property
    def name(self):
        """Backend name (``"reference"``, ``"cpu"``, ``"cuda"``, ``"ascend"``)."""
        return self._b.name

    @property
    def device(self):
        """DLPack device ``(device_type, device_id)`` of the backend's memory; ``(1, 0)`` is host."""
        return self._b.device

    def device_info(self):
        """``(name, capability, memory_bytes or None, compute_units or None)`` of the device."""
        return self._b.device_info()

    def __repr__(self):
        return repr(self._b)

    # -- OPS.md §1 / §6 ---------------------------------------------------------------------

    def grouped_gemm(
        self,
        x,
        w,
        group_end,
        *,
        layout="nk",
        row_scale=None,
        bias=None,
        w_format=None,
        w_scale=None,
        x_scale=None,
        out_dtype=None,
        out=None,
    ):
        """Expert matmul over rows sorted by expert (OPS.md §1; quantized operands §6).

        ``y[r, :] = row_scale[r] * (x[r, :] @ W_g + bias[g, :])`` for every row ``r`` of group ``g``.

        Args:
            x: ``[M, K]`` float32 / bfloat16 / float16 activations, rows sorted by group; or
                quantized activations (uint8 e4m3 with ``x_scale [M, ceil(K/128)]``, or int8
                with ``x_scale [M]`` float32) for W8A8.
            w: float weights ``[G, N, K]`` (``layout="nk"``, as checkpoints store a Linear) or
                ``[G, K, N]`` (``"kn"``), dtype of ``x``; or, with ``w_format``, quantized weights
                in layout nk: ``"fp8_block"`` uint8 ``[G, N, K]``, ``"mxfp4"`` uint8
                ``[G, N, K/2]``, ``"int8"`` int8 ``[G, N, K]``.
            group_end: ``[G]`` int64 cumulative row ends (``torch._grouped_mm`` ``offs``):
                non-decreasing, last ``<= M``. Rows past ``group_end[-1]`` are neither read
                nor written.
            row_scale: optional ``[M]`` float32 router weights in permuted order.
            bias: optional ``[G, N]`` bias, dtype of ``y``.
            w_format: None for float weights, else ``"fp8_block"``, ``"mxfp4"`` or ``"int8"``.
            w_scale: the quantized weights' scales (float32 or uint8 E8M0, shapes in OPS.md §6).
            x_scale: the quantized activations' scales (W8A8 only).
            out_dtype: ``y``'s dtype for quantized ``x`` (``"f32"``, ``"bf16"``, ``"f16"``;
                default ``"f32"``); float ``x`` gives ``y`` its dtype.
            out: optional ``[M, N]`` output tensor, written in place and returned.

        Returns:
            ``y``: ``[M, N]``.

        Raises:
            ValueError: a shape, dtype or value breaks OPS.md (names the field, e.g.
                ``group_end``); nothing is written.
            NotImplementedError: the backend lacks this dtype / layout / quantized pairing.
        """
        quant = w_format is not None
        if not quant and (w_scale is not None or x_scale is not None):
            raise ValueError("grouped_gemm: invalid argument `w_format`: w_scale / x_scale need a w_format")
        if out is None:
            m = _dim(x, 0)
            if quant:
                n = _dim(w, 1)
                if out_dtype is None:
                    dt = _dtype(x) if _dtype(x) in ("f32", "bf16", "f16") else "f32"
                else:
                    dt = _choice("grouped_gemm", "out_dtype", out_dtype, ("f32", "bf16", "f16"))
            else:
                n = _dim(w, 1 if layout == "nk" else 2)
                dt = _dtype(x) or "f32"
                if out_dtype is not None and _choice("grouped_gemm", "out_dtype", out_dtype, ("f32", "bf16", "f16")) != dt:
                    raise ValueError(
                        f"grouped_gemm: invalid argument `out_dtype`: {out_dtype!r}, but float x ({dt}) gives y its own dtype"
                    )
            y = _empty(x, (m, n), dt)
        else:
            y = out
        if quant:
            self._b.grouped_gemm_quant(
                _arg(x),
                _arg(w),
                _arg(w_scale),
                _arg(group_end),
                y,
                w_format,
                x_scale=_arg(x_scale),
                row_scale=_arg(row_scale),
                bias=_arg(bias),
            )
        else:
            self._b.grouped_gemm(
                _arg(x), _arg(w), _arg(group_end), y, layout, row_scale=_arg(row_scale), bias=_arg(bias)
            )
        return y if out is not None else _deliver(x, y)

    # -- OPS.md §2 ----------------------------------------------------------------------------

    def router_topk(
        self,
        logits,
        k,
        *,
        scoring="softmax",
        bias=None,
        renormalize=False,
        routed_scaling_factor=1.0,
        n_group=None,
        topk_group=None,
        group_score="top2_sum",
        tid2eid=None,
        token_ids=None,
        return_counts=False,
        out=None,
    ):
        """MoE gate (OPS.md §2): pick ``k`` experts per token and their weights.

        Scores ``s = score(logits)`` in float32 (``scoring``: ``"softmax"`` over all E,
        ``"sigmoid"``, or ``"sqrt_softplus"``); selection uses ``s + bias`` (bias for selection
        only), optionally limited to the ``topk_group`` best of ``n_group`` expert groups
        (``group_score`` ``"top2_sum"`` or ``"max"``). Ties go to the lower expert index; output
        order is selection score descending. Weights are the unbiased ``s`` of the chosen
        experts, divided by their sum (+1e-20) if ``renormalize``, then multiplied by
        ``routed_scaling_factor`` once. Non-finite logits are never selected while others remain.

        Hash routing (DeepSeek-V4's first layers): give ``tid2eid`` ``[V, k]`` int32 and
        ``token_ids`` ``[T]`` int64; then ``ids[t] = tid2eid[token_ids[t]]`` and the weights
        follow the same rule (``bias`` and the group arguments are ignored).

        Args:
            logits: ``[T, E]`` float32 / bfloat16 / float16 gate logits.
            k: experts per token, ``1 <= k <= E``.
            scoring: ``"softmax"``, ``"sigmoid"`` or ``"sqrt_softplus"``.
            bias: optional ``[E]`` float32 selection bias (``e_score_correction_bias``).
            renormalize: divide the selected weights by their sum.
            routed_scaling_factor: finite multiplier applied once.
            n_group, topk_group, group_score: group-limited routing (DeepSeek-V3: 8, 4,
                ``"top2_sum"``); None / 0 / 1 means no group limit.
            tid2eid, token_ids: hash routing tables (see above).
            return_counts: also return ``expert_counts`` ``[E]`` int64 (histogram of ``ids``).
            out: optional ``(ids, weights)`` or ``(ids, weights, expert_counts)`` tensors.

        Returns:
            ``(ids, weights)``: ``[T, k]`` int32 expert ids and ``[T, k]`` float32 weights; with
            ``return_counts`` (or a 3-tuple ``out``), also ``expert_counts``.

        Raises:
            ValueError: ``k`` outside ``[1, E]``, bad group arguments, wrong dtypes or shapes,
                a token id or table entry out of range (hash routing); names the field.
            NotImplementedError: the backend lacks this dtype / scoring (or hash routing).
        """
        k = _uint("router_topk", "k", k)
        n_group = _uint("router_topk", "n_group", n_group or 0)
        topk_group = _uint("router_topk", "topk_group", topk_group or 0)
        hashed = tid2eid is not None or token_ids is not None
        counts = return_counts or (isinstance(out, (tuple, list)) and len(out) == 3)
        outs = _outs("router_topk", out, 3 if counts else 2)
        if outs is None:
            t, e = _dim(logits, 0), _dim(logits, 1)
            outs = (_empty(logits, (t, k), "i32"), _empty(logits, (t, k), "f32"))
            if counts:
                outs += (_empty(logits, (e,), "i64"),)
        ec = outs[2] if counts else None
        if hashed:
            if tid2eid is None or token_ids is None:
                raise ValueError("router_topk: invalid argument `tid2eid`: hash routing needs both tid2eid and token_ids")
            self._b.router_hash(
                _arg(logits),
                _arg(tid2eid),
                _arg(token_ids),
                outs[0],
                outs[1],
                k,
                scoring,
                bool(renormalize),
                float(routed_scaling_factor),
                expert_counts=ec,
            )
        else:
            self._b.router_topk(
                _arg(logits),
                outs[0],
                outs[1],
                k,
                scoring,
                bool(renormalize),
                float(routed_scaling_factor),
                bias=_arg(bias),
                expert_counts=ec,
                n_group=n_group,
                topk_group=topk_group,
                group_score=group_score,
            )
        if out is not None:
            return tuple(out)
        return tuple(_deliver(logits, o) for o in outs)

    def router_hash(self, logits, tid2eid, token_ids, k, **kw):
        """Hash routing (OPS.md §2): :meth:`router_topk` with ``tid2eid`` ``[V, k]`` int32 and
        ``token_ids`` ``[T]`` int64; ``ids[t] = tid2eid[token_ids[t]]`` in table order, weights
        from ``scoring`` / ``renormalize`` / ``routed_scaling_factor``. Raises ``ValueError``
        for a token id outside ``[0, V)`` or an entry outside ``[0, E)``."""
        return self.router_topk(logits, k, tid2eid=tid2eid, token_ids=token_ids, **kw)

    # -- OPS.md §3 ----------------------------------------------------------------------------

    def moe_permute(self, ids, num_experts, x=None, *, out=None):
        """Group the ``(token, slot)`` pairs by expert (OPS.md §3).

        Args:
            ids: ``[T, k]`` int32 expert ids (int64, as ``torch.topk`` returns, is range-checked
                and narrowed to an int32 copy); ``-1`` marks a dropped slot, others in ``[0, E)``.
            num_experts: E >= 1.
            x: optional ``[T, H]`` float32 / bfloat16 / float16 activations to permute.
            out: optional ``(group_end, src_token, slot_row)`` or, with ``x``,
                ``(group_end, src_token, slot_row, x_perm)`` tensors.

        Returns:
            :class:`Permuted` ``(group_end [E] int64, src_token [T*k] int64, slot_row [T, k]
            int64, x_perm [T*k, H] or None)``. Within an expert, rows are ordered by ``(t, j)``.

        Raises:
            ValueError: an id outside ``[-1, E)``, wrong dtypes or shapes (names the field).
        """
        num_experts = _uint("moe_permute", "num_experts", num_experts)
        ids = _narrow_ids("moe_permute", ids, num_experts)
        n = 4 if x is not None else 3
        outs = _outs("moe_permute", out, n)
        if outs is None:
            t, k = _dim(ids, 0), _dim(ids, 1)
            outs = (
                _empty(ids, (num_experts,), "i64"),
                _empty(ids, (t * k,), "i64"),
                _empty(ids, (t, k), "i64"),
            )
            if x is not None:
                outs += (_empty(x, (t * k, _dim(x, 1)), _dtype(x) or "f32"),)
            deliver = True
        else:
            deliver = False
        self._b.moe_permute(
            _arg(ids),
            num_experts,
            outs[0],
            outs[1],
            outs[2],
            x=_arg(x),
            x_perm=outs[3] if x is not None else None,
        )
        if deliver:
            outs = tuple(_deliver(ids, o) for o in outs)
        return Permuted(outs[0], outs[1], outs[2], outs[3] if x is not None else None)

    def swiglu(self, h, *, limit=None, out=None):
        """Gated activation (OPS.md §3): ``silu(gate) * up`` with ``gate = h[:, :I]``,
        ``up = h[:, I:]``.

        Args:
            h: ``[M, 2I]`` float32 / bfloat16 / float16.
            limit: optional clamp (DeepSeek-V4: 10): ``gate <= limit``, ``up`` in
                ``[-limit, limit]``; must be finite and > 0 (None means no clamp).
            out: optional ``[M, I]`` output of ``h``'s dtype.

        Returns:
            ``[M, I]``, dtype of ``h``.

        Raises:
            ValueError: odd width, a limit of 0 / negative / NaN, wrong dtypes or shapes.
        """
        y = out if out is not None else _empty(h, (_dim(h, 0), _dim(h, 1) // 2), _dtype(h) or "f32")
        self._b.swiglu(_arg(h), y, limit=None if limit is None else float(limit))
        return y if out is not None else _deliver(h, y)

    def moe_combine(self, y_perm, slot_row, weights, *, out=None):
        """Weighted gather back to token order (OPS.md §3):
        ``out[t] = sum_j weights[t, j] * y_perm[slot_row[t, j]]``, summed in float32 in order
        ``j = 0..k-1``; dropped slots (``slot_row = -1``) add nothing.

        Args:
            y_perm: ``[R, H]`` float32 / bfloat16 / float16 expert outputs in permuted order.
            slot_row: ``[T, k]`` int64 from :meth:`moe_permute`.
            weights: ``[T, k]`` float32 router weights.
            out: optional ``[T, H]`` output of ``y_perm``'s dtype.

        Returns:
            ``[T, H]``, dtype of ``y_perm``.

        Raises:
            ValueError: a slot row outside ``[-1, R)``, wrong dtypes or shapes.
        """
        y = out if out is not None else _empty(
            y_perm, (_dim(slot_row, 0), _dim(y_perm, 1)), _dtype(y_perm) or "f32"
        )
        self._b.moe_combine(_arg(y_perm), _arg(slot_row), _arg(weights), y)
        return y if out is not None else _deliver(y_perm, y)

    # -- OPS.md §4 / §5 -----------------------------------------------------------------------

    def engram_hash(self, layer, ids, *, positions=None, alive=None, history=(), out=None):
        """N-gram hash of canonical token ids into table rows (OPS.md §4, DeepSeek Engram).

        Args:
            layer: an :class:`EngramLayer` (order N, heads K, multipliers, primes, V', pad id).
            ids: ``[T]`` int64 canonical ids, each in ``[0, V')``.
            positions: optional ``[T]`` int64; a new segment starts where
                ``positions[t] <= positions[t-1]``.
            alive: optional ``[T]`` uint8 mask (0 = dead token).
            history: up to N-1 ids before ``ids[0]``, oldest first (chunked decode).
            out: optional ``[T, C]`` int64 output, ``C = (N-1)*K``.

        Returns:
            ``rows``: ``[T, C]`` int64 table rows, column order n-major then head.

        Raises:
            ValueError: an id outside ``[0, V')``, history longer than N-1, wrong shapes.
        """
        y = out if out is not None else _empty(ids, (_dim(ids, 0), layer.columns), "i64")
        self._b.engram_hash(
            layer, _arg(ids), y, positions=_arg(positions), alive=_arg(alive), history=[int(v) for v in history]
        )
        return y if out is not None else _deliver(ids, y)

    @staticmethod
    def _table(table, format, out_dtype, op="gather_rows"):
        if format is None:
            fmt = {"f32": "f32", "bf16": "bf16", "f16": "f16", "u8": "fp8_e4m3_ue8m0"}.get(_dtype(table), "f32")
        else:
            fmt = _choice(op, "format", format, ("f32", "bf16", "f16", "fp8_e4m3_ue8m0"))
        w = _dim(table, 1)
        d = (w // 33) * 32 if fmt == "fp8_e4m3_ue8m0" else w
        if out_dtype is None:
            dt = "f32" if fmt == "fp8_e4m3_ue8m0" else fmt
        else:
            dt = _choice(op, "out_dtype", out_dtype, ("f32", "bf16") if fmt == "fp8_e4m3_ue8m0" else (fmt,))
        return fmt, d, dt

    def gather_rows(self, table, rows, *, format=None, out_dtype=None, out=None):
        """Concatenate the ``C`` table rows of each token (OPS.md §5); a copy, bitwise exact.

        Args:
            table: ``[R, D]`` float32 / bfloat16 / float16, or ``[R, D + D/32]`` uint8 for
                ``"fp8_e4m3_ue8m0"`` (per row: D e4m3 bytes then D/32 E8M0 scale bytes).
            rows: ``[T, C]`` int64 row indices, each in ``[0, R)``.
            format: ``"f32"``, ``"bf16"``, ``"f16"`` or ``"fp8_e4m3_ue8m0"``; default from
                ``table``'s dtype (uint8 means fp8).
            out_dtype: for fp8 tables, ``"f32"`` (default) or ``"bf16"``.
            out: optional ``[T, C*D]`` output.

        Returns:
            ``[T, C*D]`` gathered (dequantized for fp8) rows.

        Raises:
            ValueError: a row outside ``[0, R)``, a bad fp8 row width, wrong dtypes or shapes.
        """
        fmt, d, dt = self._table(table, format, out_dtype)
        y = out if out is not None else _empty(table, (_dim(rows, 0), _dim(rows, 1) * d), dt)
        self._b.gather_rows(_arg(table), _arg(rows), y, fmt)
        return y if out is not None else _deliver(table, y)

    def engram_lookup(
        self, layer, ids, table, *, format=None, out_dtype=None, positions=None, alive=None, history=(), out=None
    ):
        """:meth:`engram_hash` then :meth:`gather_rows` (OPS.md §5), fused where the backend can.

        Args:
            layer, ids, positions, alive, history: as in :meth:`engram_hash`.
            table, format, out_dtype: as in :meth:`gather_rows`; ``table`` has
                ``layer.rows`` rows.
            out: optional ``[T, C*D]`` output.

        Returns:
            ``[T, C*D]`` embeddings, in ``ids``' framework.

        Raises:
            ValueError: as :meth:`engram_hash` and :meth:`gather_rows`.
        """
        fmt, d, dt = self._table(table, format, out_dtype, "engram_lookup")
        y = out if out is not None else _empty(ids, (_dim(ids, 0), layer.columns * d), dt)
        self._b.engram_lookup(
            layer,
            _arg(ids),
            _arg(table),
            y,
            fmt,
            positions=_arg(positions),
            alive=_arg(alive),
            history=[int(v) for v in history],
        )
        return y if out is not None else _deliver(ids, y)

    # -- OPS.md §6 quantize ops -----------------------------------------------------------------

    def quantize_fp8(self, x, *, scale_fmt="f32", out=None):
        """Dynamic per-1x128 fp8 quantization of activations (OPS.md §6, DeepGEMM's recipe).

        Args:
            x: ``[M, K]`` float32 / bfloat16 / float16.
            scale_fmt: ``"f32"`` (float32 scales) or ``"ue8m0"`` (uint8 E8M0 power-of-two scales).
            out: optional ``(xq, x_scale)``.

        Returns:
            ``(xq, x_scale)``: ``[M, K]`` uint8 e4m3fn codes and ``[M, ceil(K/128)]`` scales.

        Raises:
            ValueError: wrong dtypes or shapes. NotImplementedError: backend lacks it.
        """
        outs = _outs("quantize_fp8", out, 2)
        if outs is None:
            if scale_fmt not in ("f32", "ue8m0"):
                raise ValueError(f"quantize_fp8: invalid argument `scale_fmt`: `{scale_fmt}` is not f32 or ue8m0")
            m, k = _dim(x, 0), _dim(x, 1)
            sd = "f32" if scale_fmt == "f32" else "u8"
            outs = (_empty(x, (m, k), "u8"), _empty(x, (m, math.ceil(k / 128)), sd))
        self._b.quantize_fp8(_arg(x), outs[0], outs[1])
        return tuple(out) if out is not None else tuple(_deliver(x, o) for o in outs)

    def quantize_int8(self, x, *, out=None):
        """Dynamic per-row int8 quantization of activations (OPS.md §6, Ascend W8A8).

        Args:
            x: ``[M, K]`` float32 / bfloat16 / float16.
            out: optional ``(xq, x_scale)``.

        Returns:
            ``(xq, x_scale)``: ``[M, K]`` int8 and ``[M]`` float32 (``amax / 127``; 1 for a row
            below 2^-64, NaN for a row holding NaN or inf).

        Raises:
            ValueError: wrong dtypes or shapes. NotImplementedError: backend lacks it.
        """
        outs = _outs("quantize_int8", out, 2)
        if outs is None:
            m, k = _dim(x, 0), _dim(x, 1)
            outs = (_empty(x, (m, k), "i8"), _empty(x, (m,), "f32"))
        self._b.quantize_int8(_arg(x), outs[0], outs[1])
        return tuple(out) if out is not None else tuple(_deliver(x, o) for o in outs)


from ._layer import MoELayer  # noqa: E402  (needs Backend and open above)
