#!/usr/bin/env python3
"""Bytes per token per MoE layer moved by EP dispatch/combine (docs/EP.md section 3).

For each model and EP size R (experts in contiguous slices, E/R per rank) it estimates D, the
expected number of distinct ranks a token's k experts live on (routing taken as uniform over the
experts the router may pick; DeepSeek-V3's group limit: 4 of 8 groups, then k of those experts),
and from it the bytes a token sends over links (rows to its own rank excluded):
  dispatch: D_remote rows of H (bf16: 2H bytes; fp8: H + 4*H/128 with f32 per-128 scales)
  combine, moehal (slot order, exact): k_remote rows of bf16 (one per routed slot)
  combine, reduce-at-destination (DeepEP): D_remote rows of bf16
and the link-time floor for a batch of tokens per rank on a given per-rank bandwidth.
Run: python3 scripts/ep_bytes.py  (numpy; seeded Monte Carlo for the group-limited model)
"""
import math
import numpy as np

MODELS = {
    # name: (hidden, experts, k, group limit (n_group, topk_group) or None)
    "deepseek-v3": (7168, 256, 8, (8, 4)),
    "deepseek-v4-flash": (4096, 256, 6, None),
}
EPS = [8, 16, 32, 64, 128, 256]


def distinct_ranks(e, k, r, group, rng, samples=200_000):
    """E[D] and E[D_remote] for a token on rank 0's side (by symmetry, remote = D * (R-1)/R)."""
    per = e // r
    if group is None:
        # Exact: P(rank holds none of the k) = C(E - E/R, k) / C(E, k).
        p_none = math.comb(e - per, k) / math.comb(e, k)
        d = r * (1 - p_none)
    else:
        n_group, topk_group = group
        gsize = e // n_group
        groups = np.argsort(rng.random((samples, n_group)), axis=1)[:, :topk_group]
        pick = np.argsort(rng.random((samples, topk_group * gsize)), axis=1)[:, :k]
        experts = groups[np.arange(samples)[:, None], pick // gsize] * gsize + pick % gsize
        ranks = experts // per
        d = np.mean([len(set(row)) for row in ranks[:20000]])
    return d, d * (r - 1) / r


def main():
    rng = np.random.default_rng(15)
    for name, (h, e, k, group) in MODELS.items():
        bf16, fp8 = 2 * h, h + 4 * (h // 128)
        print(f"\n{name}: H={h}, E={e}, k={k}, bf16 row {bf16} B, fp8 row {fp8} B")
        print("| EP | D (ranks/token) | dispatch bf16 | dispatch fp8 | combine moehal (k rows) | combine DeepEP-style (D rows) | total fp8+moehal | total fp8+DeepEP |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in EPS:
            d, dr = distinct_ranks(e, k, r, group, rng)
            kr = k * (r - 1) / r
            row = [d, dr * bf16, dr * fp8, kr * bf16, dr * bf16]
            print(f"| {r} | {d:.2f} | {row[1]/1e3:.1f} kB | {row[2]/1e3:.1f} kB | {row[3]/1e3:.1f} kB | {row[4]/1e3:.1f} kB"
                  f" | {(row[2]+row[3])/1e3:.1f} kB | {(row[2]+row[4])/1e3:.1f} kB |")
    # Link-time floors: bytes per rank / bandwidth (+ nothing for latency: a floor).
    print("\nfloors (us) per layer, dispatch + combine, fp8 dispatch; tokens per rank: decode 128, prefill 4096")
    links = {"RDMA 400 Gb/s (50 GB/s)": 50e9, "HCCS 910B intra-node (7 x 56 GB/s)": 392e9, "A3 UB (392 GB/s/NPU)": 392e9}
    for name, (h, e, k, group) in MODELS.items():
        bf16, fp8 = 2 * h, h + 4 * (h // 128)
        print(f"\n{name}")
        print("| EP | link | decode moehal | decode DeepEP-style | prefill moehal | prefill DeepEP-style |")
        print("|---:|---|---:|---:|---:|---:|")
        for r in EPS:
            d, dr = distinct_ranks(e, k, r, group, rng)
            kr = k * (r - 1) / r
            ours = dr * fp8 + kr * bf16
            deepep = dr * fp8 + dr * bf16
            for ln, bw in links.items():
                if "intra-node" in ln and r > 8:
                    continue
                f = lambda t, b: f"{t * b / bw * 1e6:.0f}"
                print(f"| {r} | {ln} | {f(128, ours)} | {f(128, deepep)} | {f(4096, ours)} | {f(4096, deepep)} |")


if __name__ == "__main__":
    main()
