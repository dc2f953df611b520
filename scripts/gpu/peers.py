# What a user would pick instead, on the same shapes as cuda_bench (issue 4 targets), on the GPU.
import time, torch
dev = "cuda"; HBM = 4.8e12
def bench(f, warm=3, iters=10):
    for _ in range(warm): f()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(iters): f()
    torch.cuda.synchronize(); return (time.perf_counter() - t) / iters
def us(s):
    """Microseconds with at least 3 significant digits and no exponent (0.0123, 1.23, 1234.5)."""
    v = s * 1e6
    digits = 1 if v >= 100 else 2 if v >= 10 else 3 if v >= 1 else 4 if v >= 0.1 else 6
    return f"{v:.{digits}f}"
def line(case, s, extra=""): print(f"{case:<48} {us(s):>10} us  {extra}", flush=True)
print("torch", torch.__version__, torch.cuda.get_device_name())
g, n, k, topk = 256, 4096, 7168, 8
w = torch.randn(g, k, n, device=dev, dtype=torch.bfloat16)  # KN, as _grouped_mm takes it
gen = torch.Generator(device="cpu").manual_seed(42)
for tokens in (1, 16, 4096):
    ids = torch.stack([torch.randperm(g, generator=gen)[:topk] for _ in range(tokens)]).flatten()
    counts = torch.bincount(ids, minlength=g)
    offs = torch.cumsum(counts, 0).to(torch.int32).to(dev)
    m = tokens * topk
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    try:
        s = bench(lambda: torch._grouped_mm(x, w, offs=offs), iters=5 if tokens > 256 else 20)
        touched = int((counts > 0).sum()); wb = touched * n * k * 2
        line(f"torch._grouped_mm bf16 dsv3 gate_up T={tokens}", s, f"{2*m*n*k/s/1e12:.1f} TFLOP/s, touched {wb/s/1e9:.0f} GB/s = {100*wb/s/HBM:.0f}% HBM")
    except Exception as e:
        print("torch._grouped_mm failed:", e)
del w
t, e = 4096, 256
logits = torch.randn(t, e, device=dev) * 4; bias = torch.randn(e, device=dev) * 0.5
def route():
    s = logits.sigmoid(); sel = s + bias
    gs = sel.view(t, 8, 32).topk(2, dim=-1).values.sum(-1)
    keep = torch.zeros_like(gs).scatter_(1, gs.topk(4, dim=-1).indices, 1.0)
    sel = sel.masked_fill(keep.repeat_interleave(32, 1) == 0, float("-inf"))
    idx = sel.topk(8, dim=-1).indices; wt = s.gather(1, idx)
    return idx, wt / (wt.sum(-1, keepdim=True) + 1e-20) * 2.5
line("torch router dsv3 4096x256 (eager ops)", bench(route, iters=50))
r, d, tt, c = 1 << 21, 256, 16384, 24
table = torch.randn(r, d, device=dev, dtype=torch.bfloat16)
rows = torch.randint(0, r, (tt * c,), device=dev)
s = bench(lambda: torch.index_select(table, 0, rows))
b = tt * c * d * 2
line(f"torch.index_select bf16 device T={tt} C={c} D={d}", s, f"read+write {2*b/s/1e9:.0f} GB/s = {200*b/s/HBM:.0f}% HBM")
