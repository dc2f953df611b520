#!/usr/bin/env bash
# Hardware probe of the ACL emulator's rules (backends/ascend-emu/RULES.md, each with its public
# source: the CANN API reference and the CANN operator sources it cites). Run it once on a real Atlas 800 A2 / 910B with CANN installed
# (about two minutes: phase-one calls and tiny launches). It prints one line per probe: the rule id
# from RULES.md, what the emulator models, and what this install did. Where they differ, correct the
# emulator rule (and its comment) and tell the backend.
#
# Implementation: python3 + ctypes against the installed libascendcl.so / libnnopbase.so / op
# libraries (no compiler, no numpy, no torch_npu). Calls that may crash the host process (a NULL
# activeExpertRange on 2025 packages dereferences it) run in a forked child.
#
# Usage: scripts/ascend/probe.sh [device-id]      (CANN root from ASCEND_HOME_PATH /
#        ASCEND_TOOLKIT_HOME, else /usr/local/Ascend/cann, else /usr/local/Ascend/ascend-toolkit/latest)
set -euo pipefail

DEVICE="${1:-0}"
ROOT=""
for c in "${ASCEND_HOME_PATH:-}" "${ASCEND_TOOLKIT_HOME:-}" /usr/local/Ascend/cann /usr/local/Ascend/ascend-toolkit/latest; do
    [ -n "$c" ] || continue
    if [ -e "$c/lib64/libascendcl.so" ] || [ -e "$c/$(uname -m)-linux/lib64/libascendcl.so" ]; then
        ROOT="$c"
        break
    fi
done
if [ -z "$ROOT" ]; then
    echo "skipped: no CANN install found (set ASCEND_HOME_PATH or source set_env.sh; looked for lib64/libascendcl.so)"
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "skipped: python3 is needed for the ctypes probe"
    exit 0
fi
ARCH_LIB="$ROOT/$(uname -m)-linux/lib64"
export LD_LIBRARY_PATH="$ROOT/lib64:$ARCH_LIB:/usr/local/Ascend/driver/lib64/driver:/usr/local/Ascend/driver/lib64/common${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "== CANN root: $ROOT, device $DEVICE"
exec python3 - "$ROOT" "$DEVICE" <<'PY'
import ctypes as C
import os
import struct
import sys

ROOT, DEV = sys.argv[1], int(sys.argv[2])
ARCH = os.uname().machine
DIRS = [os.path.join(ROOT, "lib64"), os.path.join(ROOT, ARCH + "-linux", "lib64"),
        os.path.join(ROOT, "opp", "built-in", "op_impl", "ai_core", "tbe", "op_api", "lib", "linux", ARCH)]


def load(names):
    for d in DIRS:
        for n in names:
            p = os.path.join(d, n)
            if os.path.exists(p):
                try:
                    return C.CDLL(p, mode=C.RTLD_GLOBAL)
                except OSError as e:
                    print(f"   (could not load {p}: {e})")
    return None


LIBS = [l for l in [load(["libascendcl.so", "libacl_rt.so"]), load(["libnnopbase.so"]), load(["libopapi_transformer.so"]),
                    load(["libopapi.so"]), load(["libaclnn_ops_infer.so"]), load(["libaclnn_ops_train.so"])] if l]


def sym(name):
    for l in LIBS:
        try:
            return getattr(l, name)
        except AttributeError:
            pass
    return None


def need(name, restype=C.c_int):
    f = sym(name)
    if f is None:
        print(f"skipped: {name} not found in {ROOT}")
        sys.exit(0)
    f.restype = restype
    return f


VP, I64, U64 = C.c_void_p, C.c_int64, C.c_uint64
aclInit = need("aclInit"); aclrtSetDevice = need("aclrtSetDevice"); aclrtCreateStream = need("aclrtCreateStream")
aclrtMalloc = need("aclrtMalloc"); aclrtMemcpy = need("aclrtMemcpy"); aclrtSynchronizeStream = need("aclrtSynchronizeStream")
aclrtFree = need("aclrtFree")
aclGetRecentErrMsg = need("aclGetRecentErrMsg", C.c_char_p)
aclrtGetSocName = need("aclrtGetSocName", C.c_char_p)
aclCreateTensor = need("aclCreateTensor", VP)
aclCreateTensor.argtypes = [C.POINTER(I64), U64, C.c_int, C.POINTER(I64), I64, C.c_int, C.POINTER(I64), U64, VP]
aclCreateIntArray = need("aclCreateIntArray", VP); aclCreateIntArray.argtypes = [C.POINTER(I64), U64]
aclCreateTensorList = need("aclCreateTensorList", VP); aclCreateTensorList.argtypes = [C.POINTER(VP), U64]
aclDestroyAclOpExecutor = need("aclDestroyAclOpExecutor"); aclDestroyAclOpExecutor.argtypes = [VP]
aclrtMalloc.argtypes = [C.POINTER(VP), C.c_size_t, C.c_int]
aclrtMemcpy.argtypes = [VP, C.c_size_t, VP, C.c_size_t, C.c_int]

F32, F16, I32, I64T, BF16, BOOL = 0, 1, 3, 9, 27, 12
ESZ = {F32: 4, F16: 2, I32: 4, I64T: 8, BF16: 2, BOOL: 1}
ND = 2

assert aclInit(None) in (0, 100002)
if aclrtSetDevice(DEV) != 0:
    print(f"skipped: aclrtSetDevice({DEV}) failed: {aclGetRecentErrMsg()}")
    sys.exit(0)
STREAM = VP()
assert aclrtCreateStream(C.byref(STREAM)) == 0
print("== SoC:", aclrtGetSocName())


class Ver(C.Structure):
    _fields_ = [("version", C.c_char * 128), ("major", C.c_char * 64), ("minor", C.c_char * 64),
                ("release", C.c_char * 64), ("patch", C.c_char * 64), ("reserved", C.c_char * 128)]


gv = sym("aclsysGetCANNVersion")
if gv:
    v = Ver()
    rc = gv(0, C.byref(v))
    print("P4  aclsysGetCANNVersion(CANN):", rc, v.version.decode(errors="replace"))
else:
    print("P4  aclsysGetCANNVersion: not exported")
for op in ["aclnnGroupedMatmulV4", "aclnnGroupedMatmulV5", "aclnnMoeGatingTopK", "aclnnMoeGatingTopKSoftmax",
           "aclnnMoeInitRoutingV2", "aclnnMoeInitRoutingV3", "aclnnMoeFinalizeRoutingV2"]:
    both = sym(op) is not None and sym(op + "GetWorkspaceSize") is not None
    print(f"P1-3 {op}: {'present' if both else 'ABSENT'}")


def f32b(v): return struct.pack(f"<{len(v)}f", *v)
def f16b(v): return struct.pack(f"<{len(v)}e", *v)
def bf16b(v): return b"".join(struct.pack("<f", x)[2:] for x in v)
def i32b(v): return struct.pack(f"<{len(v)}i", *v)
def i64b(v): return struct.pack(f"<{len(v)}q", *v)
def enc(v, dt): return {F32: f32b, F16: f16b, BF16: bf16b, I32: i32b, I64T: i64b}[dt](v)


def dec(b, dt):
    if dt == F32: return list(struct.unpack(f"<{len(b)//4}f", b))
    if dt == F16: return list(struct.unpack(f"<{len(b)//2}e", b))
    if dt == BF16: return [struct.unpack("<f", b"\0\0" + b[i:i+2])[0] for i in range(0, len(b), 2)]
    if dt == I32: return list(struct.unpack(f"<{len(b)//4}i", b))
    if dt == I64T: return list(struct.unpack(f"<{len(b)//8}q", b))


class T:
    """A device tensor: contiguous view `dims` at element offset `pad` of a 1-D storage."""

    def __init__(self, vals, dims, dt, pad=0, fill=0):
        n = 1
        for d in dims: n *= d
        self.dims, self.dt, self.pad, self.n = dims, dt, pad, n
        e = ESZ[dt]
        body = enc(vals, dt) if vals is not None else bytes([fill]) * (n * e)
        raw = bytes(pad * e) + body
        self.p = VP()
        assert aclrtMalloc(C.byref(self.p), max(len(raw), 1), 0) == 0
        buf = C.create_string_buffer(raw, len(raw))
        assert aclrtMemcpy(self.p, len(raw), buf, len(raw), 1) == 0
        strides, s = [], 1
        for d in reversed(dims):
            strides.insert(0, s); s *= d
        arr = lambda v: (I64 * max(len(v), 1))(*v)
        self.t = aclCreateTensor(arr(dims), len(dims), dt, arr(strides), pad, ND, arr([pad + n]), 1, self.p)

    def read(self):
        e = ESZ[self.dt]
        nb = (self.pad + self.n) * e
        buf = C.create_string_buffer(nb)
        assert aclrtSynchronizeStream(STREAM) == 0
        assert aclrtMemcpy(buf, nb, self.p, nb, 2) == 0
        return dec(buf.raw[self.pad * e:], self.dt)


def tl(t):
    return aclCreateTensorList((VP * 1)(t.t), 1)


def ptr(x):
    return None if x is None else (x.t if isinstance(x, T) else x)


def gws(op, args):
    f = sym(op + "GetWorkspaceSize")
    if f is None:
        return None, None, None
    ws, ex = U64(0), VP()
    rc = f(*args, C.byref(ws), C.byref(ex))
    return rc, ws.value, ex


def run(op, args):
    """Phase one then launch; returns (phase-1 status, launch status or None)."""
    rc, ws, ex = gws(op, args)
    if rc is None:
        return "ABSENT", None
    if rc != 0:
        return rc, None
    w = VP()
    if ws:
        assert aclrtMalloc(C.byref(w), ws, 0) == 0
    rc2 = sym(op)(w, U64(ws), ex, STREAM)
    s = aclrtSynchronizeStream(STREAM)
    return 0, (rc2, s)


def err():
    m = aclGetRecentErrMsg()
    return (m or b"").decode(errors="replace").strip().replace("\n", " | ")[:200]


def in_child(fn):
    """Run fn() in a forked child; report its exit status or the signal that killed it."""
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            r = fn()
            os._exit(0 if r == 0 else (r % 250) + 1 if isinstance(r, int) else 255)
        except BaseException:
            os._exit(254)
    _, st = os.waitpid(pid, 0)
    if os.WIFSIGNALED(st):
        return f"CRASHED (signal {os.WTERMSIG(st)})"
    return f"exit {os.WEXITSTATUS(st)} (0 = status 0; n = (status % 250) + 1)"


L, D = I64, C.c_double
B = C.c_bool

# ---------------------------------------------------------------- aclnnMoeInitRoutingV3 (W*)
def v3(ids, t, k, e, *, active=None, ntype=1, rng="full", rtype=1, scale_out=True, h=2):
    x = T([float(i) for i in range(t * h)], [t, h], F32)
    ie = T(ids, [t, k], I32)
    exo, row, cnt = T(None, [t * k, h], F32), T(None, [t * k], I32, fill=0xff), T(None, [e], I64T)
    so = T(None, [t * k], F32) if scale_out else None
    r = aclCreateIntArray((I64 * 2)(0, e), 2) if rng == "full" else None
    args = [VP(x.t), VP(ie.t), None, None, L(t * k if active is None else active), L(0), L(e), L(0), L(ntype), B(True),
            L(-1), VP(r) if r else None, L(rtype), VP(exo.t), VP(row.t), VP(cnt.t), VP(ptr(so)) if so else None]
    return args, exo, row, cnt


if sym("aclnnMoeInitRoutingV3"):
    a, *_ = v3([0], 1, 1, 1, scale_out=False)
    rc, _, _ = gws("aclnnMoeInitRoutingV3", a)
    print(f"W1  V3 NULL expandedScaleOut: emulator 161001; here {rc} {err()}")
    def null_range():
        a, *_ = v3([0], 1, 1, 1, rng=None)
        return gws("aclnnMoeInitRoutingV3", a)[0]
    print(f"W2  V3 NULL activeExpertRange: emulator 161001 (2025 code: segfault); here {in_child(null_range)}")
    for active in (0, -1):
        a, *_ = v3([0], 1, 1, 1, active=active)
        print(f"W6  V3 activeNum {active}: emulator {'561002' if active == 0 else '0'}; here {gws('aclnnMoeInitRoutingV3', a)[0]} {err()}")
    a, *_ = v3([0], 1, 1, 1, ntype=0)
    print(f"W7  V3 expertTokensNumType 0 (cumsum): emulator 561002; here {gws('aclnnMoeInitRoutingV3', a)[0]} {err()}")
    for rtype, want in ((1, [1, 2, 0]), (0, [2, 0, 1])):
        a, exo, row, cnt = v3([2, 0, 1], 3, 1, 3, rtype=rtype)
        st = run("aclnnMoeInitRoutingV3", a)
        print(f"W11 V3 rowIdxType {rtype}, ids [[2],[0],[1]]: emulator {want}; here {st} row {row.read()} "
              f"x {exo.read()} counts {cnt.read()}")
else:
    print("W*  aclnnMoeInitRoutingV3 absent: V3 probes skipped")

# ---------------------------------------------------------------- aclnnMoeGatingTopK (T*)
def gating(e, *, xdt=F32, bdt=F32, bias=True, out=True, k=2, kg=4, gc=8, mode=1, norm=1, flag=True, xv=None, bv=None, scale=2.5):
    x = T(xv or [0.0] * e, [1, e], xdt)
    b = T(bv or [0.0] * e, [e], bdt) if bias else None
    y, idx = T(None, [1, k], xdt), T(None, [1, k], I32, fill=0xff)
    o = T(None, [1, e], F32, fill=0xff) if out else None
    args = [VP(x.t), VP(b.t) if b else None, L(k), L(kg), L(gc), L(mode), L(0), L(norm), B(flag), D(scale), D(1e-20),
            VP(y.t), VP(idx.t), VP(o.t) if o else None]
    return args, y, idx, o


if sym("aclnnMoeGatingTopK"):
    a, *_ = gating(256, out=False, flag=False)
    print(f"T2  GatingTopK outOut NULL, outFlag false: emulator 161001; here {gws('aclnnMoeGatingTopK', a)[0]} {err()}")
    a, *_ = gating(256, xdt=BF16, bdt=F32)
    print(f"T6  GatingTopK bf16 x + f32 bias: emulator 561002; here {gws('aclnnMoeGatingTopK', a)[0]} {err()}")
    a, *_ = gating(256, xdt=BF16, bdt=BF16)
    print(f"T6  GatingTopK bf16 x + bf16 bias: emulator 0; here {gws('aclnnMoeGatingTopK', a)[0]} {err()}")
    for what, kw in (("softmax gc=1 E=64 no bias", dict(e=64, bias=False, kg=1, gc=1, mode=0, norm=0, k=4)),
                     ("sigmoid gc=1 E=64 with bias", dict(e=64, kg=1, gc=1, mode=1, k=4)),
                     ("sigmoid E=256 no bias", dict(e=256, bias=False)),
                     ("max-mode E=256", dict(e=256, mode=0))):
        e = kw.pop("e")
        a, y, idx, o = gating(e, **kw)
        print(f"T13/T14 GatingTopK {what}: emulator 8.2 561002, 8.3 {'561002' if kw.get('norm', 1) == 0 or kw.get('mode', 1) == 0 else '0'}, "
              f"8.5 0; here {run('aclnnMoeGatingTopK', a)} ids {idx.read()} {err()}")
    a, *_ = gating(1024, k=8, kg=4, gc=128)
    print(f"T12 GatingTopK E=1024 gc=128 kGroup=4: emulator 561002; here {gws('aclnnMoeGatingTopK', a)[0]} {err()}")
    xv = [0.0] * 256; xv[5] = 2.0; xv[40] = 1.0
    bv = [0.0] * 256; bv[40] = 0.5
    a, y, idx, o = gating(256, xv=xv, bv=bv)
    st = run("aclnnMoeGatingTopK", a)
    print(f"T16 GatingTopK y (sigmoid+bias): emulator ids [40, 5] y [1.1339, 1.3661] (unbiased, renormalised, x2.5); "
          f"doc formula would give [1.4573, 1.0427]; here {st} ids {idx.read()} y {[round(v, 4) for v in y.read()]}")
    a, y, idx, o = gating(256, xv=xv, bv=bv, flag=False)
    st = run("aclnnMoeGatingTopK", a)
    print(f"T17 GatingTopK outFlag false: emulator leaves out unwritten; here {st} out[40] {o.read()[40]}")
else:
    print("T*  aclnnMoeGatingTopK absent: probes skipped")

# ---------------------------------------------------------------- GatingTopKSoftmax ties (S7)
xv = [0.0] * 64; xv[5] = 3.0; xv[40] = 3.0
x = T(xv, [1, 64], F32)
y, idx, ri = T(None, [1, 2], F32), T(None, [1, 2], I32), T(None, [1, 2], I32)
st = run("aclnnMoeGatingTopKSoftmax", [VP(x.t), None, L(2), VP(y.t), VP(idx.t), VP(ri.t)])
print(f"S7  GatingTopKSoftmax ties at 5 and 40 (E=64): emulator [5, 40]; here {st} {idx.read()}")

# ---------------------------------------------------------------- InitRoutingV2 (V8, V9)
def v2(ids, t, k, e, h=1):
    x = T([float(i) for i in range(t * h)], [t, h], F32)
    ie = T(ids, [t, k], I32)
    exo, row, cnt = T(None, [t * k, h], F32), T(None, [t * k], I32), T(None, [e], I32)
    st = run("aclnnMoeInitRoutingV2", [VP(x.t), VP(ie.t), L(0), L(0), L(e), L(0), L(1), B(False), VP(exo.t), VP(row.t), VP(cnt.t), None])
    return st, exo, row, cnt


st, exo, row, cnt = v2([1, 0, 0, 1], 2, 2, 2)
print(f"V8  V2 T=2 k=2 ids [[1,0],[0,1]]: emulator row [2,0,1,3] x [0,1,0,1] (x[sorted/k]); "
      f"'% numRows' would give x [1,0,0,1]; here {st} row {row.read()} x {exo.read()}")
import random
random.seed(7)
ids = [random.randrange(4) for _ in range(512 * 8)]
st, exo, row, cnt = v2(ids, 512, 8, 4)
order = sorted(range(len(ids)), key=lambda s: (ids[s], s))
want = [0] * len(ids)
for pos, s in enumerate(order):
    want[s] = pos
print(f"V9  V2 T=512 k=8 E=4 stable order: emulator stable; here {st} {'stable' if row.read() == want else 'NOT stable'}")

# ---------------------------------------------------------------- GMM (R10, G15)
def gmm(dt, pad, m=16, k=64, n=64, g=2, vals=None):
    random.seed(11)
    xv = vals[0] if vals else [random.choice([-1.0, 0.5, 1.0, 2.0]) for _ in range(m * k)]
    wv = vals[1] if vals else [random.choice([-1.0, 0.5, 1.0]) for _ in range(g * k * n)]
    x, w = T(xv, [m, k], dt, pad=pad), T(wv, [g, k, n], dt, pad=pad)
    gl = T([m // 2, m], [g], I64T)
    y = T(None, [m, n], dt, pad=pad)
    n0 = None
    args = [VP(tl(x)), VP(tl(w)), n0, n0, n0, n0, n0, n0, VP(gl.t), n0, n0, n0, L(3), L(0), L(0), L(0), VP(tl(y)), n0, n0]
    return run("aclnnGroupedMatmulV4", args), y.read(), xv, wv


st0, y0, _, _ = gmm(BF16, 0)
st8, y8, _, _ = gmm(BF16, 8)
print(f"R10 GMM bf16 with 8-element (16-byte) view offsets: emulator accepts; here {st8}, "
      f"{'same as offset 0' if y0 == y8 else 'DIFFERENT from offset 0'} (offset 0: {st0})")
random.seed(5)
xv = [random.uniform(-1, 1) for _ in range(16 * 64)]
wv = [random.uniform(-1, 1) for _ in range(2 * 64 * 64)]
st, y, xv, wv = gmm(F32, 0, vals=(xv, wv))
worst = 0.0
for r in range(16):
    gi = 0 if r < 8 else 1
    for c in range(64):
        ref = sum(xv[r * 64 + kk] * wv[gi * 4096 + kk * 64 + c] for kk in range(64))
        worst = max(worst, abs(y[r * 64 + c] - ref))
print(f"G15 GMM f32 vs f64 host: emulator exact f32 (err ~1e-6); here {st} max abs err {worst:.3g} (HF32 would be ~1e-3)")

# ---------------------------------------------------------------- Finalize (F10) and executor (R18)
exp = T([1.0, 2.0], [2, 1], F32)
row = T([0, -1], [2], I32)
sc = T([1.0, 1.0], [1, 2], F32)
out = T(None, [1, 1], F32)
st = run("aclnnMoeFinalizeRoutingV2", [VP(exp.t), VP(row.t), None, None, None, VP(sc.t), None, L(2), VP(out.t)])
print(f"F10 FinalizeV2 row index -1: emulator 561000 at launch; here {st} out {out.read()} (1.0 = -1 skipped)")
x = T([1, 2], [2], I32)
o = T(None, [2], I64T)
rc, ws, ex = gws("aclnnCast", [VP(x.t), C.c_int(I64T), VP(o.t)])
print(f"R18 aclDestroyAclOpExecutor on a plain executor: emulator 161002; here {aclDestroyAclOpExecutor(ex) if rc == 0 else ('phase one', rc)}")
print("== done")
PY
