// grouped_gemm (OPS.md §1): y[r,:] = row_scale[r] * (x[r,:] @ W_g + bias[g,:]) for rows r of group g.
//
// Kernels (suffix _<dtype>_<layout>, dtype f32|bf16|f16, layout nk|kn):
// - gg_check:   validates group_end (non-decreasing, 0 <= group_end <= M) and writes the per-group
//               m-tile prefix `tile_prefix[G+1]` for tile height `bm`. One block.
// - gg_tc_*:    bf16/f16 tensor-core kernel (mma.sync m16n8k16, ldmatrix, cp.async 3-stage pipeline),
//               128x128x32 tiles, 256 threads, f32 accumulation. Needs K % 8 == 0 (and N % 8 == 0
//               for kn) and 16-byte aligned x and w (the host checks and falls back otherwise).
// - gg_simt_*:  any dtype, any shape/alignment: 64x64x16 tiles, 256 threads, 4x4 outputs a thread.
// - gg_dec_*:   small-M "decode" kernels: each touched expert's weights are read once, with 16-byte
//               loads, by as many blocks as it takes to fill the GPU; rows of a group are handled
//               DEC_R at a time. Needs K % VEC == 0 (nk) or N % VEC == 0 (kn) and 16-byte aligned w.
// Rows at or past group_end[G-1] are neither read nor written. Every kernel but gg_check returns at
// once when err[0] is set, so nothing is written for invalid input.

#define GG_CHECK_THREADS 1024

extern "C" __global__ void __launch_bounds__(GG_CHECK_THREADS)
    gg_check(const i64* __restrict__ group_end, i64 G, i64 M, i64 bm, i64* __restrict__ tile_prefix, i32* err) {
    // 1. validation (any thread may flag)
    for (i64 g = threadIdx.x; g < G; g += blockDim.x) {
        i64 e = group_end[g];
        i64 p = g == 0 ? 0 : group_end[g - 1];
        if (e < 0 || e > M) moehal_flag(err, 2, g);
        else if (e < p) moehal_flag(err, 1, g);
    }
    // 2. tile prefix: exclusive scan of ceil(rows_g / bm), chunk by chunk (deterministic).
    __shared__ i64 s[GG_CHECK_THREADS];
    __shared__ i64 carry;
    if (threadIdx.x == 0) carry = 0;
    __syncthreads();
    for (i64 base = 0; base < G; base += blockDim.x) {
        i64 g = base + threadIdx.x;
        i64 v = 0;
        if (g < G) {
            i64 e = group_end[g];
            i64 p = g == 0 ? 0 : group_end[g - 1];
            i64 rows = e - p;
            if (rows < 0) rows = 0;
            if (rows > M) rows = M;
            v = (rows + bm - 1) / bm;
        }
        s[threadIdx.x] = v;
        __syncthreads();
        for (int off = 1; off < (int)blockDim.x; off <<= 1) {
            i64 t = threadIdx.x >= (unsigned)off ? s[threadIdx.x - off] : 0;
            __syncthreads();
            s[threadIdx.x] += t;
            __syncthreads();
        }
        if (g < G) tile_prefix[g + 1] = carry + s[threadIdx.x];
        __syncthreads();
        if (threadIdx.x == blockDim.x - 1) carry += s[threadIdx.x];
        __syncthreads();
    }
    if (threadIdx.x == 0) tile_prefix[0] = 0;
}

// ------------------------------------------------------------------------------------------------
// SIMT kernel (all dtypes, any alignment).
#define SB_M 64
#define SB_N 64
#define SB_K 16

template <class T, bool KN>
__device__ __forceinline__ void gg_simt(const typename T::S* __restrict__ x, const i64* __restrict__ group_end,
                                        const typename T::S* __restrict__ w, const float* __restrict__ rs,
                                        const typename T::S* __restrict__ bias, typename T::S* __restrict__ y,
                                        i64 M, i64 N, i64 K, i64 G, const i64* __restrict__ tile_prefix,
                                        const i32* err) {
    if (*(volatile const i32*)err) return;
    __shared__ float As[SB_K][SB_M + 4];
    __shared__ float Bs[SB_K][SB_N + 4];
    const i64 total = tile_prefix[G];
    const i64 n0 = (i64)blockIdx.x * SB_N;
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;  // 16 x 16 threads, 4 x 4 outputs each
    for (i64 slot = blockIdx.y; slot < total; slot += gridDim.y) {
        const i64 g = gg_find_group(tile_prefix, G, slot);
        const i64 gstart = g == 0 ? 0 : group_end[g - 1];
        const i64 gstop = group_end[g];
        const i64 row0 = gstart + (slot - tile_prefix[g]) * SB_M;
        const i64 rows = min((i64)SB_M, gstop - row0);
        const typename T::S* wg = w + g * N * K;
        float acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
        for (i64 k0 = 0; k0 < K; k0 += SB_K) {
            // A: 64 rows x 16 k = 1024 elements, 4 per thread.
            for (int e = tid; e < SB_M * SB_K; e += 256) {
                int r = e / SB_K, kk = e % SB_K;
                float v = 0.f;
                if (r < rows && k0 + kk < K) v = T::ld(x[(row0 + r) * K + k0 + kk]);
                As[kk][r] = v;
            }
            for (int e = tid; e < SB_N * SB_K; e += 256) {
                int n, kk;
                if (KN) { kk = e / SB_N; n = e % SB_N; }
                else { n = e / SB_K; kk = e % SB_K; }
                float v = 0.f;
                if (n0 + n < N && k0 + kk < K)
                    v = KN ? T::ld(wg[(k0 + kk) * N + n0 + n]) : T::ld(wg[(n0 + n) * K + k0 + kk]);
                Bs[kk][n] = v;
            }
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < SB_K; kk++) {
                float a[4], b[4];
#pragma unroll
                for (int i = 0; i < 4; i++) a[i] = As[kk][ty * 4 + i];
#pragma unroll
                for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx * 4 + j];
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
            }
            __syncthreads();
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = ty * 4 + i;
            if (r >= rows) continue;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const i64 n = n0 + tx * 4 + j;
                if (n >= N) continue;
                float v = acc[i][j];
                if (bias) v += T::ld(bias[g * N + n]);
                if (rs) v *= rs[row0 + r];
                y[(row0 + r) * N + n] = T::st(v);
            }
        }
    }
}

#define GG_SIMT(name, T, KN)                                                                          \
    extern "C" __global__ void __launch_bounds__(256) name(                                          \
        const T::S* x, const i64* group_end, const T::S* w, const float* rs, const T::S* bias, T::S* y, \
        i64 M, i64 N, i64 K, i64 G, const i64* tile_prefix, const i32* err) {                         \
        gg_simt<T, KN>(x, group_end, w, rs, bias, y, M, N, K, G, tile_prefix, err);                   \
    }
GG_SIMT(gg_simt_f32_nk, TF32, false)
GG_SIMT(gg_simt_f32_kn, TF32, true)
GG_SIMT(gg_simt_bf16_nk, TBF16, false)
GG_SIMT(gg_simt_bf16_kn, TBF16, true)
GG_SIMT(gg_simt_f16_nk, TF16, false)
GG_SIMT(gg_simt_f16_kn, TF16, true)

// ------------------------------------------------------------------------------------------------
// Tensor-core kernel (bf16 / f16).
#define TC_M 128
#define TC_N 128
#define TC_K 32
#define TC_STAGES 3
#define TC_LDA (TC_K + 8)      // A tile row stride in halves (80 bytes: 16-byte aligned, conflict-free)
#define TC_LDB_NK (TC_K + 8)   // B tile [n][k]
#define TC_LDB_KN (TC_N + 8)   // B tile [k][n] (272 bytes)
#define TC_A_STAGE (TC_M * TC_LDA)
#define TC_B_STAGE (TC_N * TC_LDB_NK > TC_K * TC_LDB_KN ? TC_N * TC_LDB_NK : TC_K * TC_LDB_KN)
// dynamic shared memory in bytes: TC_STAGES * (TC_A_STAGE + TC_B_STAGE) * 2 = 61440

__device__ __forceinline__ void cp_async16(u32 dst, const void* src, bool valid) {
    int n = valid ? 16 : 0;  // src-size 0 fills the 16 bytes with zeros
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

template <bool BF>
__device__ __forceinline__ void mma16816(float* d, const u32* a, const u32* b) {
    if (BF) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
}

template <class T, bool KN, bool BF>
__device__ __forceinline__ void gg_tc(const u16* __restrict__ x, const i64* __restrict__ group_end,
                                      const u16* __restrict__ w, const float* __restrict__ rs,
                                      const u16* __restrict__ bias, u16* __restrict__ y, i64 M, i64 N, i64 K,
                                      i64 G, const i64* __restrict__ tile_prefix, const i32* err) {
    if (*(volatile const i32*)err) return;
    extern __shared__ __align__(16) u16 smem[];
    u16* As = smem;                              // [STAGES][TC_M][TC_LDA]
    u16* Bs = smem + TC_STAGES * TC_A_STAGE;     // [STAGES][TC_N][TC_LDB_NK] or [STAGES][TC_K][TC_LDB_KN]
    const int tid = threadIdx.x;
    const int lane = tid & 31, warp = tid >> 5;
    const int warp_m = warp >> 2;  // 0..1: 64 rows each
    const int warp_n = warp & 3;   // 0..3: 32 cols each
    const i64 n0 = (i64)blockIdx.x * TC_N;
    const i64 total = tile_prefix[G];
    const i64 ktiles = (K + TC_K - 1) / TC_K;

    for (i64 slot = blockIdx.y; slot < total; slot += gridDim.y) {
        const i64 g = gg_find_group(tile_prefix, G, slot);
        const i64 gstart = g == 0 ? 0 : group_end[g - 1];
        const i64 gstop = group_end[g];
        const i64 row0 = gstart + (slot - tile_prefix[g]) * TC_M;
        const i64 rows = min((i64)TC_M, gstop - row0);
        const u16* wg = w + g * N * K;

        // Each thread loads 2 A chunks and 2 B chunks (16 bytes = 8 halves) per stage.
        auto load_stage = [&](i64 kt, int st) {
            const i64 k0 = kt * TC_K;
            u16* as = As + st * TC_A_STAGE;
            u16* bs = Bs + st * TC_B_STAGE;
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int c = tid + i * 256;      // 0..511
                const int r = c >> 2;             // 0..127
                const int kc = (c & 3) * 8;       // 0,8,16,24
                const bool ok = r < rows && k0 + kc < K;
                const u16* src = ok ? x + (row0 + r) * K + k0 + kc : x;
                cp_async16(smem_addr(as + r * TC_LDA + kc), src, ok);
            }
            if (!KN) {
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    const int c = tid + i * 256;
                    const int n = c >> 2;
                    const int kc = (c & 3) * 8;
                    const bool ok = n0 + n < N && k0 + kc < K;
                    const u16* src = ok ? wg + (n0 + n) * K + k0 + kc : w;
                    cp_async16(smem_addr(bs + n * TC_LDB_NK + kc), src, ok);
                }
            } else {
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    const int c = tid + i * 256;
                    const int kk = c >> 4;           // 0..31
                    const int nc = (c & 15) * 8;     // 0..120
                    const bool ok = k0 + kk < K && n0 + nc < N;
                    const u16* src = ok ? wg + (k0 + kk) * N + n0 + nc : w;
                    cp_async16(smem_addr(bs + kk * TC_LDB_KN + nc), src, ok);
                }
            }
        };

        float acc[4][4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int q = 0; q < 4; q++) acc[i][j][q] = 0.f;

#pragma unroll
        for (int s = 0; s < TC_STAGES - 1; s++) {
            if (s < ktiles) load_stage(s, s);
            cp_async_commit();
        }
        for (i64 kt = 0; kt < ktiles; kt++) {
            cp_async_wait<TC_STAGES - 2>();
            __syncthreads();
            {
                const i64 nk = kt + TC_STAGES - 1;
                if (nk < ktiles) load_stage(nk, (int)(nk % TC_STAGES));
                cp_async_commit();
            }
            const int st = (int)(kt % TC_STAGES);
            const u16* as = As + st * TC_A_STAGE;
            const u16* bs = Bs + st * TC_B_STAGE;
#pragma unroll
            for (int ks = 0; ks < TC_K; ks += 16) {
                u32 af[4][4], bfr[4][2];
#pragma unroll
                for (int mi = 0; mi < 4; mi++) {
                    const int r = warp_m * 64 + mi * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                    const int kc = ks + (lane >> 4) * 8;
                    ldmatrix_x4(smem_addr(as + r * TC_LDA + kc), af[mi][0], af[mi][1], af[mi][2], af[mi][3]);
                }
#pragma unroll
                for (int nj = 0; nj < 2; nj++) {  // two n8 tiles per ldmatrix.x4
                    const int nb = warp_n * 32 + nj * 16;
                    if (!KN) {
                        const int n = nb + (lane & 7) + (lane >> 4) * 8;
                        const int kc = ks + ((lane >> 3) & 1) * 8;
                        ldmatrix_x4(smem_addr(bs + n * TC_LDB_NK + kc), bfr[2 * nj][0], bfr[2 * nj][1],
                                    bfr[2 * nj + 1][0], bfr[2 * nj + 1][1]);
                    } else {
                        const int kr = ks + (lane & 7) + ((lane >> 3) & 1) * 8;
                        const int n = nb + (lane >> 4) * 8;
                        ldmatrix_x4_trans(smem_addr(bs + kr * TC_LDB_KN + n), bfr[2 * nj][0], bfr[2 * nj][1],
                                          bfr[2 * nj + 1][0], bfr[2 * nj + 1][1]);
                    }
                }
#pragma unroll
                for (int mi = 0; mi < 4; mi++)
#pragma unroll
                    for (int ni = 0; ni < 4; ni++) mma16816<BF>(acc[mi][ni], af[mi], bfr[ni]);
            }
        }
        cp_async_wait<0>();
        __syncthreads();  // the next slot reuses the shared buffers

        // Epilogue: acc[mi][ni] = rows (g8, g8+8) x cols (2*tig, 2*tig+1) of its 16x8 tile.
        const int gid = lane >> 2, tig = lane & 3;
#pragma unroll
        for (int mi = 0; mi < 4; mi++) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int r = warp_m * 64 + mi * 16 + gid + h * 8;
                if (r >= rows) continue;
                const i64 row = row0 + r;
                const float sc = rs ? rs[row] : 1.f;
#pragma unroll
                for (int ni = 0; ni < 4; ni++) {
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const i64 n = n0 + warp_n * 32 + ni * 8 + tig * 2 + e;
                        if (n >= N) continue;
                        float v = acc[mi][ni][h * 2 + e];
                        if (bias) v += T::ld(bias[g * N + n]);
                        if (rs) v *= sc;
                        y[row * N + n] = T::st(v);
                    }
                }
            }
        }
    }
}

#define GG_TC(name, T, KN, BF)                                                                          \
    extern "C" __global__ void __launch_bounds__(256) name(const u16* x, const i64* group_end, const u16* w, \
                                                           const float* rs, const u16* bias, u16* y, i64 M,     \
                                                           i64 N, i64 K, i64 G, const i64* tile_prefix,         \
                                                           const i32* err) {                                    \
        gg_tc<T, KN, BF>(x, group_end, w, rs, bias, y, M, N, K, G, tile_prefix, err);                          \
    }
GG_TC(gg_tc_bf16_nk, TBF16, false, true)
GG_TC(gg_tc_bf16_kn, TBF16, true, true)
GG_TC(gg_tc_f16_nk, TF16, false, false)
GG_TC(gg_tc_f16_kn, TF16, true, false)

// ------------------------------------------------------------------------------------------------
// Decode kernels (small M): weight streaming.
#define DEC_R 4       // rows of a group per pass (a group with more rows takes several passes)
#define DEC_NPW 8     // nk: output columns per warp (8 independent 16-byte weight loads in flight)

// Load 16 bytes and widen to VEC floats.
template <class T>
struct Vec16;
template <>
struct Vec16<TF32> {
    enum { N = 4 };
    static __device__ __forceinline__ void ld(const void* p, float* o) {
        float4 v = __ldg((const float4*)p);
        o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
    }
};
template <class T>
struct Vec16 {
    enum { N = 8 };
    static __device__ __forceinline__ void ld(const void* p, float* o) {
        uint4 v = __ldg((const uint4*)p);
        u32 u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            o[2 * i] = T::ld((u16)(u[i] & 0xffffu));
            o[2 * i + 1] = T::ld((u16)(u[i] >> 16));
        }
    }
};
// Streaming (evict-first) variant for weights, read exactly once.
template <class T>
__device__ __forceinline__ void ld_stream(const void* p, float* o) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    if (Vec16<T>::N == 4) {
        o[0] = __uint_as_float(v.x); o[1] = __uint_as_float(v.y);
        o[2] = __uint_as_float(v.z); o[3] = __uint_as_float(v.w);
    } else {
        u32 u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            o[2 * i] = T::ld((u16)(u[i] & 0xffffu));
            o[2 * i + 1] = T::ld((u16)(u[i] >> 16));
        }
    }
}

// nk: grid (ceil(N / (8 warps * DEC_NPW)), G). Warp w of block b handles columns
// n = b*64 + w*8 + i, i < 8; lanes split K in 16-byte chunks; x rows are read through L1/L2.
// The lane partial sums are reduced with a fixed butterfly (deterministic).
template <class T>
__device__ __forceinline__ void gg_dec_nk(const typename T::S* __restrict__ x, const i64* __restrict__ group_end,
                                          const typename T::S* __restrict__ w, const float* __restrict__ rs,
                                          const typename T::S* __restrict__ bias, typename T::S* __restrict__ y,
                                          i64 M, i64 N, i64 K, i64 G, const i32* err) {
    if (*(volatile const i32*)err) return;
    const i64 g = blockIdx.y;
    const i64 gstart = g == 0 ? 0 : group_end[g - 1];
    const i64 gstop = group_end[g];
    if (gstop <= gstart) return;
    const int VEC = Vec16<T>::N;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const i64 nbase = (i64)blockIdx.x * (8 * DEC_NPW) + warp * DEC_NPW;
    if (nbase >= N) return;
    const typename T::S* wg = w + g * N * K;
    for (i64 r0 = gstart; r0 < gstop; r0 += DEC_R) {
        const int nr = (int)min((i64)DEC_R, gstop - r0);
        float acc[DEC_NPW][DEC_R];
#pragma unroll
        for (int i = 0; i < DEC_NPW; i++)
#pragma unroll
            for (int r = 0; r < DEC_R; r++) acc[i][r] = 0.f;
        for (i64 k = (i64)lane * VEC; k < K; k += 32 * VEC) {
            float wv[DEC_NPW][8];
#pragma unroll
            for (int i = 0; i < DEC_NPW; i++) {
                i64 n = nbase + i;
                if (n < N) ld_stream<T>(wg + n * K + k, wv[i]);
                else {
#pragma unroll
                    for (int q = 0; q < 8; q++) wv[i][q] = 0.f;
                }
            }
#pragma unroll
            for (int r = 0; r < DEC_R; r++) {
                if (r < nr) {
                    float xv[8];
                    Vec16<T>::ld(x + (r0 + r) * K + k, xv);
#pragma unroll
                    for (int i = 0; i < DEC_NPW; i++)
#pragma unroll
                        for (int q = 0; q < VEC; q++) acc[i][r] = fmaf(wv[i][q], xv[q], acc[i][r]);
                }
            }
        }
#pragma unroll
        for (int i = 0; i < DEC_NPW; i++)
#pragma unroll
            for (int r = 0; r < DEC_R; r++)
#pragma unroll
                for (int off = 16; off > 0; off >>= 1) acc[i][r] += __shfl_xor_sync(0xffffffffu, acc[i][r], off);
        if (lane == 0) {
#pragma unroll
            for (int r = 0; r < DEC_R; r++) {
                if (r >= nr) continue;
                const i64 row = r0 + r;
#pragma unroll
                for (int i = 0; i < DEC_NPW; i++) {
                    const i64 n = nbase + i;
                    if (n >= N) continue;
                    float v = acc[i][r];
                    if (bias) v += T::ld(bias[g * N + n]);
                    if (rs) v *= rs[row];
                    y[row * N + n] = T::st(v);
                }
            }
        }
    }
}

// kn: grid (ceil(N / (32 * VEC)), G). A block owns 32*VEC consecutive columns; its 8 warps split K
// into 8 contiguous ranges, each lane owns VEC columns; the 8 warp partials are summed in shared
// memory in warp order (deterministic).
template <class T>
__device__ __forceinline__ void gg_dec_kn(const typename T::S* __restrict__ x, const i64* __restrict__ group_end,
                                          const typename T::S* __restrict__ w, const float* __restrict__ rs,
                                          const typename T::S* __restrict__ bias, typename T::S* __restrict__ y,
                                          i64 M, i64 N, i64 K, i64 G, const i32* err) {
    if (*(volatile const i32*)err) return;
    const i64 g = blockIdx.y;
    const i64 gstart = g == 0 ? 0 : group_end[g - 1];
    const i64 gstop = group_end[g];
    if (gstop <= gstart) return;
    const int VEC = Vec16<T>::N;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int TILE = 32 * VEC;  // 256 columns for 16-bit types, 128 for f32
    const i64 n0 = (i64)blockIdx.x * TILE;
    const i64 nl = n0 + (i64)lane * VEC;  // first column of this lane
    const bool lane_ok = nl < N;          // N % VEC == 0, so the whole vector is in range
    const i64 kper = (K + 7) / 8;
    const i64 kb = warp * kper, ke = min(K, kb + kper);
    const typename T::S* wg = w + g * N * K;
    __shared__ float red[8][DEC_R][256];
    for (i64 r0 = gstart; r0 < gstop; r0 += DEC_R) {
        const int nr = (int)min((i64)DEC_R, gstop - r0);
        float acc[DEC_R][8];
#pragma unroll
        for (int r = 0; r < DEC_R; r++)
#pragma unroll
            for (int q = 0; q < 8; q++) acc[r][q] = 0.f;
        if (lane_ok) {
            i64 k = kb;
            for (; k + 4 <= ke; k += 4) {
                float wv[4][8];
#pragma unroll
                for (int u = 0; u < 4; u++) ld_stream<T>(wg + (k + u) * N + nl, wv[u]);
#pragma unroll
                for (int r = 0; r < DEC_R; r++) {
                    if (r < nr) {
#pragma unroll
                        for (int u = 0; u < 4; u++) {
                            const float xv = T::ld(x[(r0 + r) * K + k + u]);
#pragma unroll
                            for (int q = 0; q < VEC; q++) acc[r][q] = fmaf(wv[u][q], xv, acc[r][q]);
                        }
                    }
                }
            }
            for (; k < ke; k++) {
                float wv[8];
                ld_stream<T>(wg + k * N + nl, wv);
#pragma unroll
                for (int r = 0; r < DEC_R; r++) {
                    if (r < nr) {
                        const float xv = T::ld(x[(r0 + r) * K + k]);
#pragma unroll
                        for (int q = 0; q < VEC; q++) acc[r][q] = fmaf(wv[q], xv, acc[r][q]);
                    }
                }
            }
        }
#pragma unroll
        for (int r = 0; r < DEC_R; r++)
#pragma unroll
            for (int q = 0; q < VEC; q++) red[warp][r][lane * VEC + q] = acc[r][q];
        __syncthreads();
        for (int c = threadIdx.x; c < TILE; c += blockDim.x) {
            const i64 n = n0 + c;
            if (n >= N) continue;
            for (int r = 0; r < nr; r++) {
                float v = 0.f;
#pragma unroll
                for (int q = 0; q < 8; q++) v += red[q][r][c];
                if (bias) v += T::ld(bias[g * N + n]);
                if (rs) v *= rs[r0 + r];
                y[(r0 + r) * N + n] = T::st(v);
            }
        }
        __syncthreads();
    }
}

#define GG_DEC(name, T, KIND)                                                                         \
    extern "C" __global__ void __launch_bounds__(256) name(                                          \
        const T::S* x, const i64* group_end, const T::S* w, const float* rs, const T::S* bias, T::S* y, \
        i64 M, i64 N, i64 K, i64 G, const i32* err) {                                                 \
        gg_dec_##KIND<T>(x, group_end, w, rs, bias, y, M, N, K, G, err);                              \
    }
GG_DEC(gg_dec_f32_nk, TF32, nk)
GG_DEC(gg_dec_f32_kn, TF32, kn)
GG_DEC(gg_dec_bf16_nk, TBF16, nk)
GG_DEC(gg_dec_bf16_kn, TBF16, kn)
GG_DEC(gg_dec_f16_nk, TF16, nk)
GG_DEC(gg_dec_f16_kn, TF16, kn)
