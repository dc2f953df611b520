"""Type stubs of the moehal package (see ``__init__.py`` for the full documentation).

Tensors are typed ``Tensor``: any object implementing ``__dlpack__`` (torch, numpy >= 1.22, jax,
cupy) or the numpy array interface, row-major contiguous. Outputs are in the framework and on the
device of the op's first tensor argument, or the ``out=`` tensors themselves.
"""

from typing import Any, Literal, NamedTuple, Optional, Sequence, Tuple, Union, overload

__version__: str

Tensor = Any
Scoring = Literal["softmax", "sigmoid", "sqrt_softplus"]
GroupScore = Literal["top2_sum", "max"]
Layout = Literal["nk", "kn"]
WeightFormat = Literal["fp8_block", "mxfp4", "int8"]
TableFormat = Literal["f32", "bf16", "f16", "fp8_e4m3_ue8m0"]
OutDType = Literal["f32", "bf16", "f16"]

class BackendInfo(NamedTuple):
    """A compiled-in backend: name, whether this machine runs it, and why not ("" if it does)."""

    name: str
    available: bool
    reason: str

class Permuted(NamedTuple):
    """``moe_permute`` result: group_end [E] int64, src_token [T*k] int64, slot_row [T, k]
    int64, x_perm [T*k, H] (or None without x)."""

    group_end: Tensor
    src_token: Tensor
    slot_row: Tensor
    x_perm: Optional[Tensor]

def backends() -> list[BackendInfo]:
    """Every compiled-in backend in preference order; never raises."""

def open(name: Optional[str] = None) -> Backend:
    """Open a backend by name, or the best available. RuntimeError with the reason if unavailable."""

def presets() -> list[dict[str, Any]]:
    """The model presets of OPS.md."""

class EngramLayer:
    """One Engram layer's hash configuration (OPS.md §4). ValueError naming the bad field."""

    def __init__(
        self,
        max_order: int,
        heads: int,
        multipliers: Sequence[int],
        primes: Sequence[int],
        vocab_size: int,
        pad_id: int,
    ) -> None: ...
    @staticmethod
    def toy() -> EngramLayer:
        """OPS.md §4's toy layer (V' = 50, N = 3, K = 2, primes [11, 13, 17, 19], pad 2)."""
    @staticmethod
    def v41_flash(index: int) -> EngramLayer:
        """DeepSeek-V4.1-Flash Engram layer 0 (decoder layer 1) or 1 (decoder layer 14)."""
    @property
    def max_order(self) -> int: ...
    @property
    def heads(self) -> int: ...
    @property
    def columns(self) -> int:
        """C = (N-1)*K."""
    @property
    def rows(self) -> int:
        """R = sum of the primes."""
    @property
    def primes(self) -> list[int]: ...
    @property
    def offsets(self) -> list[int]: ...
    @property
    def multipliers(self) -> list[int]: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def pad_id(self) -> int: ...

class Backend:
    """An open backend; every op of OPS.md. ValueError (bad argument, names op and field),
    NotImplementedError (capability missing), RuntimeError (device), MemoryError (allocation)."""

    @property
    def name(self) -> str: ...
    @property
    def device(self) -> Tuple[int, int]:
        """DLPack (device_type, device_id) of the backend's memory; (1, 0) is host."""
    def device_info(self) -> Tuple[str, str, Optional[int], Optional[int]]: ...
    def grouped_gemm(
        self,
        x: Tensor,
        w: Tensor,
        group_end: Tensor,
        *,
        layout: Layout = "nk",
        row_scale: Optional[Tensor] = None,
        bias: Optional[Tensor] = None,
        w_format: Optional[WeightFormat] = None,
        w_scale: Optional[Tensor] = None,
        x_scale: Optional[Tensor] = None,
        out_dtype: Optional[OutDType] = None,
        out: Optional[Tensor] = None,
    ) -> Tensor:
        """x [M, K], w [G, N, K] (nk) / [G, K, N] (kn) or quantized, group_end [G] int64 -> y [M, N]."""
    @overload
    def router_topk(
        self,
        logits: Tensor,
        k: int,
        *,
        scoring: Scoring = "softmax",
        bias: Optional[Tensor] = None,
        renormalize: bool = False,
        routed_scaling_factor: float = 1.0,
        n_group: Optional[int] = None,
        topk_group: Optional[int] = None,
        group_score: GroupScore = "top2_sum",
        tid2eid: Optional[Tensor] = None,
        token_ids: Optional[Tensor] = None,
        return_counts: Literal[False] = False,
        out: Optional[Tuple[Tensor, Tensor]] = None,
    ) -> Tuple[Tensor, Tensor]:
        """logits [T, E] float -> (ids [T, k] int32, weights [T, k] float32)."""
    @overload
    def router_topk(
        self,
        logits: Tensor,
        k: int,
        *,
        scoring: Scoring = "softmax",
        bias: Optional[Tensor] = None,
        renormalize: bool = False,
        routed_scaling_factor: float = 1.0,
        n_group: Optional[int] = None,
        topk_group: Optional[int] = None,
        group_score: GroupScore = "top2_sum",
        tid2eid: Optional[Tensor] = None,
        token_ids: Optional[Tensor] = None,
        return_counts: Literal[True],
        out: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """... and expert_counts [E] int64."""
    def router_hash(self, logits: Tensor, tid2eid: Tensor, token_ids: Tensor, k: int, **kw: Any) -> Tuple[Tensor, ...]:
        """Hash routing: ids[t] = tid2eid[token_ids[t]] (tid2eid [V, k] int32, token_ids [T] int64)."""
    def moe_permute(
        self,
        ids: Tensor,
        num_experts: int,
        x: Optional[Tensor] = None,
        *,
        out: Optional[Sequence[Tensor]] = None,
    ) -> Permuted:
        """ids [T, k] int32 (-1 = dropped) -> Permuted."""
    def swiglu(self, h: Tensor, *, limit: Optional[float] = None, out: Optional[Tensor] = None) -> Tensor:
        """h [M, 2I] -> [M, I] = silu(h[:, :I]) * h[:, I:]."""
    def moe_combine(self, y_perm: Tensor, slot_row: Tensor, weights: Tensor, *, out: Optional[Tensor] = None) -> Tensor:
        """y_perm [R, H], slot_row [T, k] int64, weights [T, k] float32 -> [T, H]."""
    def engram_hash(
        self,
        layer: EngramLayer,
        ids: Tensor,
        *,
        positions: Optional[Tensor] = None,
        alive: Optional[Tensor] = None,
        history: Sequence[int] = (),
        out: Optional[Tensor] = None,
    ) -> Tensor:
        """ids [T] int64 -> rows [T, C] int64."""
    def gather_rows(
        self,
        table: Tensor,
        rows: Tensor,
        *,
        format: Optional[TableFormat] = None,
        out_dtype: Optional[OutDType] = None,
        out: Optional[Tensor] = None,
    ) -> Tensor:
        """table [R, D] (or [R, D + D/32] uint8 fp8), rows [T, C] int64 -> [T, C*D]."""
    def engram_lookup(
        self,
        layer: EngramLayer,
        ids: Tensor,
        table: Tensor,
        *,
        format: Optional[TableFormat] = None,
        out_dtype: Optional[OutDType] = None,
        positions: Optional[Tensor] = None,
        alive: Optional[Tensor] = None,
        history: Sequence[int] = (),
        out: Optional[Tensor] = None,
    ) -> Tensor:
        """engram_hash then gather_rows -> [T, C*D]."""
    def quantize_fp8(
        self, x: Tensor, *, scale_fmt: Literal["f32", "ue8m0"] = "f32", out: Optional[Tuple[Tensor, Tensor]] = None
    ) -> Tuple[Tensor, Tensor]:
        """x [M, K] float -> (xq [M, K] uint8 e4m3fn, x_scale [M, ceil(K/128)] float32 or uint8 E8M0)."""
    def quantize_int8(self, x: Tensor, *, out: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        """x [M, K] float -> (xq [M, K] int8, x_scale [M] float32)."""

class MoELayer:
    """router -> permute -> gate_up -> swiglu -> down -> combine, from a preset or weights."""

    backend: Backend
    k: int
    num_experts: int
    gate: Tensor
    gate_up: Tensor
    down: Tensor
    bias: Optional[Tensor]
    swiglu_limit: Optional[float]
    def __init__(
        self,
        preset: Optional[str] = None,
        *,
        weights: Optional[dict[str, Tensor]] = None,
        backend: Union[None, str, Backend] = None,
        experts: Optional[int] = None,
        width_div: int = 1,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        seed: int = 0,
        **router: Any,
    ) -> None: ...
    def __call__(self, x: Tensor) -> Tensor:
        """x [T, H] -> [T, H]."""
