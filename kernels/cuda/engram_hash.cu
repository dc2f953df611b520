// engram_hash (OPS.md §4): N-gram hash of canonical ids into table rows, one thread per token.
//   engram_check: ids in [0, V'), else err (code 1, index t).
//   engram_hash:  rows[t, (n-2)*K + j] = (h_n(t) mod p[n][j]) + off[n][j],
//                 h_n = XOR_{k<n} w_k(t) * m[k] (64-bit products, wrapping as the reference does).
// Window rule (the reference's `window`): a dead token's window is all pad; else w_0 = ids[t] and,
// going back k = 1, 2, ..., the step from t-k+1 to t-k is blocked by a segment start at t-k+1
// (positions[t-k+1] <= positions[t-k]) or a dead t-k; before ids[0] only the history is reachable
// (k - t <= hl). Once blocked, w_k and every deeper entry are pad.
// history: hl <= N-1 ids before ids[0], oldest first (history[hl - (k - t)] is k steps back).

#define ENGRAM_MAX_N 32

extern "C" __global__ void engram_check(const i64* __restrict__ ids, i64 T, u64 V, i32* err) {
    for (i64 t = gtid(); t < T; t += gstride()) {
        const i64 v = ids[t];
        if (v < 0 || (u64)v >= V) moehal_flag(err, 1, t);
    }
}

extern "C" __global__ void engram_hash(const i64* __restrict__ ids, const i64* __restrict__ positions,
                                       const u8* __restrict__ alive, const i64* __restrict__ history, i64 hl, i64 T,
                                       int N, int K, const u64* __restrict__ mult, const u64* __restrict__ primes,
                                       const u64* __restrict__ offsets, u64 pad, i64* __restrict__ rows,
                                       const i32* err) {
    if (*(volatile const i32*)err) return;
    const i64 C = (i64)(N - 1) * K;
    for (i64 t = gtid(); t < T; t += gstride()) {
        u64 h = 0;
        const bool live = !alive || alive[t] != 0;
        bool blocked = !live;
        for (int k = 0; k < N; k++) {
            u64 wk;
            if (k == 0) {
                wk = live ? (u64)ids[t] : pad;
            } else {
                if (!blocked) {
                    if ((i64)k <= t) {
                        const i64 s = t - k;
                        const bool seg = positions && positions[s + 1] <= positions[s];
                        const bool dead = alive && alive[s] == 0;
                        blocked = seg || dead;
                    } else {
                        blocked = (i64)k - t > hl;
                    }
                }
                if (blocked) wk = pad;
                else if ((i64)k <= t) wk = (u64)ids[t - k];
                else wk = (u64)history[hl - ((i64)k - t)];
            }
            h ^= wk * mult[k];
            if (k >= 1) {
                const i64 base = (i64)(k - 1) * K;
                for (int j = 0; j < K; j++) {
                    const i64 c = base + j;
                    rows[t * C + c] = (i64)(h % primes[c] + offsets[c]);
                }
            }
        }
    }
}
