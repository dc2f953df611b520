// moe_permute (OPS.md §3): group the (token, slot) pairs by expert, deterministically.
//
// Flat slot f = t*k + j. The slots are cut into `nchunks` chunks of `chunk` slots (a multiple of 32), one warp per chunk.
//   perm_check:  ids in [-1, E), else err (code 1, index f).
//   perm_count:  cnt[c][e] = slots of chunk c routed to e (warp-private rows: no atomics; cnt zeroed
//                by the host).
//   perm_colscan: per expert e (one thread): total[e] = sum_c cnt[c][e]; cnt[c][e] becomes the
//                exclusive prefix over chunks c' < c.
//   perm_scan:   one block: group_end[e] = inclusive prefix of total; start[e] = exclusive.
//   perm_scatter: slot f of chunk c with expert e goes to row start[e] + cnt[c][e] + (rank of f among
//                the earlier slots of chunk c with expert e), so rows within an expert follow (t, j).
//                Writes slot_row[f] (-1 for a dropped slot) and src_token[row] = t.
//   perm_rows:   x_perm[r] = x[src_token[r]] for r < group_end[E-1] (warp per row, 16-byte copies
//                where aligned).
// Every kernel after perm_check returns when err[0] is set: nothing is written for invalid ids.


extern "C" __global__ void perm_check(const i32* __restrict__ ids, i64 n, i64 E, i32* err) {
    for (i64 f = gtid(); f < n; f += gstride()) {
        const i64 v = ids[f];
        if (v < -1 || v >= E) moehal_flag(err, 1, f);
    }
}

extern "C" __global__ void perm_count(const i32* __restrict__ ids, i64 n, i64 E, i64* __restrict__ cnt,
                                      i64 nchunks, i64 chunk, const i32* err) {
    if (*(volatile const i32*)err) return;
    const int lane = threadIdx.x & 31;
    const i64 c = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (c >= nchunks) return;
    i64* row = cnt + c * E;
    for (i64 s = 0; s < chunk; s += 32) {
        const i64 f = c * chunk + s + lane;
        const int e = f < n ? ids[f] : -1;
        const unsigned peers = __match_any_sync(0xffffffffu, e);
        const int leader = __ffs(peers) - 1;
        if (e >= 0 && lane == leader) row[e] += (i64)__popc(peers);
        __syncwarp();
    }
}

extern "C" __global__ void perm_colscan(i64* __restrict__ cnt, i64 nchunks, i64 E, i64* __restrict__ total,
                                        const i32* err) {
    if (*(volatile const i32*)err) return;
    for (i64 e = gtid(); e < E; e += gstride()) {
        i64 acc = 0;
        for (i64 c = 0; c < nchunks; c++) {
            const i64 v = cnt[c * E + e];
            cnt[c * E + e] = acc;
            acc += v;
        }
        total[e] = acc;
    }
}

#define PERM_SCAN_THREADS 1024
extern "C" __global__ void __launch_bounds__(PERM_SCAN_THREADS)
    perm_scan(const i64* __restrict__ total, i64 E, i64* __restrict__ group_end, i64* __restrict__ start, const i32* err) {
    if (*(volatile const i32*)err) return;
    __shared__ i64 s[PERM_SCAN_THREADS];
    __shared__ i64 carry;
    if (threadIdx.x == 0) carry = 0;
    __syncthreads();
    for (i64 base = 0; base < E; base += blockDim.x) {
        const i64 e = base + threadIdx.x;
        const i64 v = e < E ? total[e] : 0;
        s[threadIdx.x] = v;
        __syncthreads();
        for (int off = 1; off < (int)blockDim.x; off <<= 1) {
            const i64 t = threadIdx.x >= (unsigned)off ? s[threadIdx.x - off] : 0;
            __syncthreads();
            s[threadIdx.x] += t;
            __syncthreads();
        }
        if (e < E) {
            group_end[e] = carry + s[threadIdx.x];
            start[e] = carry + s[threadIdx.x] - v;
        }
        __syncthreads();
        if (threadIdx.x == blockDim.x - 1) carry += s[threadIdx.x];
        __syncthreads();
    }
}

extern "C" __global__ void perm_scatter(const i32* __restrict__ ids, i64 n, i64 k, i64 E, i64* __restrict__ cnt,
                                        const i64* __restrict__ start, i64* __restrict__ slot_row,
                                        i64* __restrict__ src_token, i64 nchunks, i64 chunk, const i32* err) {
    if (*(volatile const i32*)err) return;
    const int lane = threadIdx.x & 31;
    const i64 c = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (c >= nchunks) return;
    i64* row = cnt + c * E;
    const unsigned lt = (1u << lane) - 1u;
    for (i64 s = 0; s < chunk; s += 32) {
        const i64 f = c * chunk + s + lane;
        const int e = f < n ? ids[f] : -1;
        const unsigned peers = __match_any_sync(0xffffffffu, e);
        const int leader = __ffs(peers) - 1;
        i64 pos = -1;
        if (e >= 0) pos = start[e] + (i64)row[e] + __popc(peers & lt);
        __syncwarp();
        if (e >= 0 && lane == leader) row[e] += (i64)__popc(peers);
        __syncwarp();
        if (f < n) {
            slot_row[f] = pos;
            if (pos >= 0) src_token[pos] = f / k;
        }
    }
}

extern "C" __global__ void perm_rows(const u8* __restrict__ x, i64 row_bytes, const i64* __restrict__ src_token,
                                     const i64* __restrict__ group_end, i64 E, i64 nrows, u8* __restrict__ x_perm,
                                     const i32* err) {
    if (*(volatile const i32*)err) return;
    const i64 routed = group_end[E - 1];
    const int lane = threadIdx.x & 31;
    const i64 w0 = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const i64 nw = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 r = w0; r < routed && r < nrows; r += nw)
        copy_bytes(x_perm + r * row_bytes, x + src_token[r] * row_bytes, row_bytes, lane, 32);
}
