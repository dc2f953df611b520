"""``moehal.MoELayer``: router -> permute -> gate_up -> swiglu -> down -> combine (OPS.md §3)."""

from __future__ import annotations

from . import Backend, _dim, _uint, open as _open, presets as _presets


_ROUTER_KEYS = {"k", "scoring", "renormalize", "routed_scaling_factor", "n_group", "topk_group", "group_score", "swiglu_limit"}


class MoELayer:
    """A routed-experts MoE layer built from moehal ops (OPS.md §3, "A full MoE layer"):
    ``router_topk -> moe_permute -> grouped_gemm (gate_up, nk) -> swiglu -> grouped_gemm (down)
    -> moe_combine``. The shared expert, where a model has one, is not included.

    Build it from a preset name (OPS.md "Model presets"; random weights from ``seed``, shapes
    scaled with ``experts`` / ``width_div`` to fit the machine) or from weights::

        layer = moehal.MoELayer("qwen3-30b-a3b", experts=16, width_div=16, backend="cpu")
        y = layer(x)                       # x: [T, hidden] -> y: [T, hidden]

        layer = moehal.MoELayer(weights={"gate": g, "gate_up": gu, "down": d}, k=2,
                                scoring="softmax", renormalize=True)

    Weights (any ``__dlpack__`` tensors, one float dtype; torch weights give torch outputs):

    - ``gate``: ``[E, H]`` router weight (logits = ``x @ gate.T``, computed with ``grouped_gemm``).
    - ``gate_up``: ``[E, 2I, H]``: rows of w1 (gate) then rows of w3 (up), layout nk.
    - ``down``: ``[E, H, I]`` (w2), layout nk.
    - ``bias``: optional ``[E]`` float32 router selection bias.

    Router options (``k``, ``scoring``, ``renormalize``, ``routed_scaling_factor``, ``n_group``,
    ``topk_group``, ``group_score``) and ``swiglu_limit`` come from the preset or the keywords.
    Errors are those of the ops (``ValueError`` naming op and field, ...); an unknown preset is a
    ``ValueError`` listing the known ones.
    """

    def __init__(
        self,
        preset=None,
        *,
        weights=None,
        backend=None,
        experts=None,
        width_div=1,
        dtype="float32",
        seed=0,
        **router,
    ):
        unknown = set(router) - _ROUTER_KEYS
        if unknown:
            raise TypeError(f"MoELayer: unexpected keyword argument(s) {', '.join(sorted(unknown))} (router options: {', '.join(sorted(_ROUTER_KEYS))})")
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"MoELayer: invalid argument `dtype`: {dtype!r} is not one of float32, bfloat16, float16")
        if experts is not None and (not isinstance(experts, int) or experts < 1):
            raise ValueError(f"MoELayer: invalid argument `experts`: {experts!r} (a positive integer, or None for the preset's)")
        if not isinstance(width_div, int) or width_div < 1:
            raise ValueError(f"MoELayer: invalid argument `width_div`: {width_div!r} (a positive integer)")
        seed = _uint("MoELayer", "seed", seed)
        for name in ("n_group", "topk_group"):
            if router.get(name) is not None:
                router[name] = _uint("MoELayer", name, router[name])
        self.backend = backend if isinstance(backend, Backend) else _open(backend)
        cfg = {}
        if preset is not None:
            known = {p["name"]: p for p in _presets()}
            if preset not in known:
                raise ValueError(f"MoELayer: invalid argument `preset`: `{preset}` is not one of {', '.join(known)}")
            p = known[preset]
            cfg = {
                "k": p["k"],
                "scoring": p["scoring"],
                "renormalize": p["renormalize"],
                "routed_scaling_factor": p["scale"],
                "n_group": p["n_group"],
                "topk_group": p["topk_group"],
                "group_score": p["group_score"],
                "swiglu_limit": p["swiglu_limit"],
            }
            if weights is None:
                weights = self._random(p, experts, width_div, dtype, seed)
        elif weights is None:
            raise ValueError("MoELayer: invalid argument `preset`: give a preset name or weights=")
        cfg.update(router)
        if "k" not in cfg:
            raise ValueError("MoELayer: invalid argument `k`: weights= needs k=")
        self.k = _uint("MoELayer", "k", cfg["k"])
        self.swiglu_limit = cfg.pop("swiglu_limit", None)
        self.router = {n: v for n, v in cfg.items() if n != "k"}
        self.gate = weights["gate"]
        self.gate_up = weights["gate_up"]
        self.down = weights["down"]
        self.bias = weights.get("bias")
        self.num_experts = _dim(self.gate_up, 0)
        e = self.num_experts
        if not 1 <= self.k <= e:
            raise ValueError(f"MoELayer: invalid argument `k`: k = {self.k} outside [1, E = {e}] experts")
        g = int(self.router.get("n_group") or 0)
        if g > 1 and e % g:
            raise ValueError(f"MoELayer: invalid argument `experts`: E = {e} is not a multiple of n_group = {g}")

    @staticmethod
    def _random(p, experts, width_div, dtype, seed):
        import numpy as np

        e = int(experts or p["experts"])
        div = max(1, int(width_div))
        # As the Rust presets' scaled_widths: divide, round up to a multiple of 32.
        h = max(1, -(-(p["hidden"] // div) // 32)) * 32
        i = max(1, -(-(p["expert_width"] // div) // 32)) * 32
        rng = np.random.default_rng(seed)
        dt = np.float32
        w = {
            "gate": (rng.standard_normal((e, h)) / np.sqrt(h)).astype(dt),
            "gate_up": (rng.standard_normal((e, 2 * i, h)) / np.sqrt(h)).astype(dt),
            "down": (rng.standard_normal((e, h, i)) / np.sqrt(i)).astype(dt),
        }
        if p["bias"]:
            w["bias"] = (rng.standard_normal(e) * 0.1).astype(np.float32)
        if dtype != "float32":
            import ml_dtypes  # bfloat16 / float16 numpy weights

            target = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}[dtype]
            for n in ("gate", "gate_up", "down"):
                w[n] = w[n].astype(target)
        return w

    def __call__(self, x):
        """``x``: ``[T, H]`` of the weights' dtype -> ``[T, H]``, in ``x``'s framework."""
        be = self.backend
        t = _dim(x, 0)
        everything = _new_group_end(x, t)
        gate = self.gate.reshape((1,) + tuple(self.gate.shape))
        logits = be.grouped_gemm(x, gate, everything)
        ids, weights = be.router_topk(logits, self.k, bias=self.bias, **self.router)
        p = be.moe_permute(ids, self.num_experts, x)
        h = be.grouped_gemm(p.x_perm, self.gate_up, p.group_end)
        a = be.swiglu(h, limit=self.swiglu_limit)
        y = be.grouped_gemm(a, self.down, p.group_end)
        return be.moe_combine(y, p.slot_row, weights)


def _new_group_end(like, t):
    """``[1]`` int64 ``[t]`` in ``like``'s framework and device (one group holding every row)."""
    if type(like).__module__.split(".")[0] == "torch":
        import torch

        return torch.tensor([t], dtype=torch.int64, device=like.device)
    import numpy as np

    return np.array([t], dtype=np.int64)
