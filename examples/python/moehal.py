"""Tiny ctypes wrapper over moehal's C ABI (ffi/include/moehal.h).

Tensors cross as DLPack DLTensors without copies: numpy arrays are described in place, torch
tensors through torch.utils.dlpack.to_dlpack (the capsule's DLManagedTensor starts with its
DLTensor). Only what the example needs is wrapped: backends, router_topk and grouped_gemm; the
other ops follow the same pattern (see moehal.h).

The library is found through $MOEHAL_LIB, else target/{release,debug}/libmoehal_ffi.{so,dylib}
of this repository (build it with `cargo build -p moehal-ffi --release`).
"""

import ctypes
import os
import pathlib
import sys

# --- DLPack and moehal structs (layouts are checked against Rust by ffi/tests/header.rs) ------


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class RouterConfig(ctypes.Structure):
    _fields_ = [
        ("k", ctypes.c_int64),
        ("scoring", ctypes.c_int32),
        ("group_score", ctypes.c_int32),
        ("n_group", ctypes.c_int64),
        ("topk_group", ctypes.c_int64),
        ("renormalize", ctypes.c_int32),
        ("routed_scaling_factor", ctypes.c_float),
    ]


class DeviceInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("capability", ctypes.c_char_p),
        ("memory_bytes", ctypes.c_uint64),
        ("compute_units", ctypes.c_int64),
        ("device", DLDevice),
    ]


KDL_CPU = 1
SCORING = {"softmax": 0, "sigmoid": 1, "sqrt_softplus": 2}
GROUP_SCORE = {"top2_sum": 0, "max": 1}
LAYOUT = {"NK": 0, "KN": 1}
STATUS = ["OK", "INVALID_ARGUMENT", "UNSUPPORTED", "UNAVAILABLE", "OUT_OF_MEMORY", "DEVICE_ERROR", "PANIC"]

_P = ctypes.c_void_p
_T = ctypes.POINTER(DLTensor)


class MoehalError(RuntimeError):
    """A call returned a status other than MOEHAL_OK; `status` is its name."""

    def __init__(self, status, message):
        self.status = STATUS[status] if 0 <= status < len(STATUS) else str(status)
        super().__init__(f"{self.status}: {message}")


def find_library():
    env = os.environ.get("MOEHAL_LIB")
    if env:
        return env
    root = pathlib.Path(__file__).resolve().parents[2]
    name = "libmoehal_ffi.dylib" if sys.platform == "darwin" else "libmoehal_ffi.so"
    for profile in ("release", "debug"):
        p = root / "target" / profile / name
        if p.exists():
            return str(p)
    raise FileNotFoundError(f"{name} not found: build it (cargo build -p moehal-ffi --release) or set MOEHAL_LIB")


class Library:
    def __init__(self, path=None):
        lib = ctypes.CDLL(path or find_library())
        sig = {
            "moehal_abi_version": (ctypes.c_uint32, []),
            "moehal_version": (ctypes.c_char_p, []),
            "moehal_last_error": (ctypes.c_char_p, []),
            "moehal_backend_count": (ctypes.c_int32, [ctypes.POINTER(ctypes.c_size_t)]),
            "moehal_backend_entry": (
                ctypes.c_int32,
                [ctypes.c_size_t, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_int32),
                 ctypes.POINTER(ctypes.c_char_p)],
            ),
            "moehal_backend_open": (ctypes.c_int32, [ctypes.c_char_p, ctypes.POINTER(_P)]),
            "moehal_backend_close": (None, [_P]),
            "moehal_backend_name": (ctypes.c_char_p, [_P]),
            "moehal_backend_device_info": (ctypes.c_int32, [_P, ctypes.POINTER(DeviceInfo)]),
            "moehal_synchronize": (ctypes.c_int32, [_P]),
            "moehal_router_topk": (ctypes.c_int32, [_P, _T, _T, ctypes.POINTER(RouterConfig), _T, _T, _T]),
            "moehal_grouped_gemm": (ctypes.c_int32, [_P, _T, _T, ctypes.c_int32, _T, _T, _T, _T]),
        }
        for name, (res, args) in sig.items():
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
        self.lib = lib
        if lib.moehal_abi_version() != 1:
            raise RuntimeError(f"moehal ABI {lib.moehal_abi_version()}, this wrapper speaks ABI 1")

    def check(self, status):
        if status != 0:
            raise MoehalError(status, self.lib.moehal_last_error().decode())

    def version(self):
        return self.lib.moehal_version().decode()

    def backends(self):
        """[(name, available, reason)] of every backend compiled in."""
        n = ctypes.c_size_t()
        self.check(self.lib.moehal_backend_count(ctypes.byref(n)))
        out = []
        for i in range(n.value):
            name, reason, avail = ctypes.c_char_p(), ctypes.c_char_p(), ctypes.c_int32()
            self.check(self.lib.moehal_backend_entry(i, ctypes.byref(name), ctypes.byref(avail), ctypes.byref(reason)))
            out.append((name.value.decode(), bool(avail.value), reason.value.decode()))
        return out

    def open(self, name=None):
        return Backend(self, name)


# --- tensors ------------------------------------------------------------------------------


class _Held:
    """A DLTensor plus whatever keeps its memory and shape alive."""

    def __init__(self, ptr, keep):
        self.ptr, self.keep = ptr, keep


def _numpy_dl(a):
    import numpy as np

    codes = {
        np.dtype(np.float32): (2, 32), np.dtype(np.float16): (2, 16), np.dtype(np.int32): (0, 32),
        np.dtype(np.int64): (0, 64), np.dtype(np.uint8): (1, 8), np.dtype(np.bool_): (6, 8),
    }
    if a.dtype not in codes:
        raise TypeError(f"dtype {a.dtype} has no moehal equivalent")
    if not a.flags.c_contiguous:
        raise ValueError("array must be C-contiguous (np.ascontiguousarray)")
    shape = (ctypes.c_int64 * max(a.ndim, 1))(*a.shape)
    code, bits = codes[a.dtype]
    t = DLTensor(
        data=a.ctypes.data if a.size else None, device=DLDevice(KDL_CPU, 0), ndim=a.ndim,
        dtype=DLDataType(code, bits, 1), shape=shape, strides=None, byte_offset=0,
    )
    return _Held(ctypes.pointer(t), (a, shape, t))


def _torch_dl(t):
    from torch.utils import dlpack

    cap = dlpack.to_dlpack(t)
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    # A DLManagedTensor begins with its DLTensor: the capsule pointer is a DLTensor*.
    ptr = ctypes.cast(get(cap, b"dltensor"), _T)
    return _Held(ptr, (t, cap))


def as_dl(x):
    """A DLTensor view of a numpy array or a torch tensor (no copy); None stays None."""
    if x is None:
        return _Held(None, None)
    if type(x).__module__.startswith("torch"):
        return _torch_dl(x)
    return _numpy_dl(x)


def _empty_like_framework(ref, shape, kind):
    """An output of `kind` ("f32", "i32", "i64") in ref's framework and device."""
    if type(ref).__module__.startswith("torch"):
        import torch

        dt = {"f32": torch.float32, "i32": torch.int32, "i64": torch.int64}[kind]
        return torch.empty(shape, dtype=dt, device=ref.device)
    import numpy as np

    return np.empty(shape, dtype={"f32": np.float32, "i32": np.int32, "i64": np.int64}[kind])


class Backend:
    def __init__(self, lib, name=None):
        self.lib = lib
        h = _P()
        lib.check(lib.lib.moehal_backend_open(name.encode() if name else None, ctypes.byref(h)))
        self.h = h

    def __del__(self):
        if getattr(self, "h", None):
            self.lib.lib.moehal_backend_close(self.h)
            self.h = None

    @property
    def name(self):
        return self.lib.lib.moehal_backend_name(self.h).decode()

    def device_info(self):
        info = DeviceInfo()
        self.lib.check(self.lib.lib.moehal_backend_device_info(self.h, ctypes.byref(info)))
        return info

    def synchronize(self):
        self.lib.check(self.lib.lib.moehal_synchronize(self.h))

    def router_topk(self, logits, k, scoring="softmax", bias=None, n_group=0, topk_group=0,
                    group_score="top2_sum", renormalize=False, routed_scaling_factor=1.0):
        """OPS.md §2 on logits [T, E]: returns (ids [T,k] i32, weights [T,k] f32, counts [E] i64)."""
        t, e = logits.shape
        ids = _empty_like_framework(logits, (t, k), "i32")
        weights = _empty_like_framework(logits, (t, k), "f32")
        counts = _empty_like_framework(logits, (e,), "i64")
        cfg = RouterConfig(k, SCORING[scoring], GROUP_SCORE[group_score], n_group, topk_group,
                           int(renormalize), routed_scaling_factor)
        h = [as_dl(a) for a in (logits, bias, ids, weights, counts)]
        self.lib.check(self.lib.lib.moehal_router_topk(self.h, h[0].ptr, h[1].ptr, ctypes.byref(cfg), h[2].ptr,
                                                       h[3].ptr, h[4].ptr))
        return ids, weights, counts

    def grouped_gemm(self, x, w, group_end, layout="NK", row_scale=None, bias=None, out=None):
        """OPS.md §1: y [M, N] for x [M, K], w [G,N,K] (NK) or [G,K,N] (KN), group_end [G] i64."""
        n = w.shape[1] if layout == "NK" else w.shape[2]
        y = out if out is not None else _empty_like_framework(x, (x.shape[0], n), "f32")
        h = [as_dl(a) for a in (x, w, group_end, row_scale, bias, y)]
        self.lib.check(self.lib.lib.moehal_grouped_gemm(self.h, h[0].ptr, h[1].ptr, LAYOUT[layout], h[2].ptr,
                                                        h[3].ptr, h[4].ptr, h[5].ptr))
        return y
