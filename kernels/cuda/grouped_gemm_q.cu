// grouped_gemm with quantized operands (OPS.md §6), a SIMT kernel for every pairing: correctness
// first (the tensor-core paths — e4m3 / s8 mma.sync, wgmma — are owed; see backends/cuda/README.md).
//
// gq_<wfmt>_<act>_<y>(x, x_scale, xs_e8m0, w, w_scale, ws_e8m0, group_end, row_scale, bias, y, M, N, K,
// G, err): thread per output column n (256 per block, grid.x = ceil(N/256)), block-stride over rows m
// (grid.y <= 65535). Row m belongs to the first group g with group_end[g] > m; rows at or past
// group_end[G-1] are neither read nor written. group_end was validated by gg_check (grouped_gemm.cu)
// on the same stream: every thread reads err[0] first and returns without writing when it is set.
// Weight formats (WF): 0 fp8_block (u8 e4m3 [G,N,K], scale [G,⌈N/128⌉,⌈K/128⌉] f32 or E8M0),
// 1 mxfp4 (u8 [G,N,K/2], low nibble = even k; scale E8M0 [G,N,K/32]), 2 int8 (i8 [G,N,K], f32 [G,N]).
// Activations (ACT): 0 float x (weight-only: W dequantized in f32, product rounded once, f32 fmaf
// accumulation); 1 e4m3 x with x_scale [M,⌈K/128⌉] (per 128-block f32 partial sums — e4m3 products
// are exact in f32 — scaled by x_scale[m,b]·w_scale[g,n/128,b]); 2 i8 x with f32 x_scale [M] (exact
// i32 sum, K <= 131,071 validated, then x_scale[m]·w_scale[g,n]). Epilogue as §1:
// y = row_scale · (acc + bias), rounded once to y's dtype.

#define GQ_THREADS 256

__device__ __forceinline__ float gq_scale(const void* s, int e8m0, i64 i) {
    return e8m0 ? ue8m0_to_f32(((const u8*)s)[i]) : ((const float*)s)[i];
}

// E2M1 (OCP MX): sign bit 3, magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6.
__device__ __forceinline__ float gq_e2m1(u32 c) {
    const u32 m = c & 7u;
    const float mag = m < 4u ? 0.5f * (float)m : (m == 4u ? 2.f : m == 5u ? 3.f : m == 6u ? 4.f : 6.f);
    return (c & 8u) ? -mag : mag;
}

// Smallest g with group_end[g] > m (m < group_end[G-1]).
__device__ __forceinline__ i64 gq_group(const i64* group_end, i64 G, i64 m) {
    i64 lo = 0, hi = G - 1;
    while (lo < hi) {
        const i64 mid = (lo + hi) >> 1;
        if (group_end[mid] > m) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

// Dequantized weight W[g, n, k] in f32 (weight-only path).
template <int WF>
__device__ __forceinline__ float gq_w(const u8* w, const void* ws, int ws_e8, i64 g, i64 n, i64 k, i64 N, i64 K) {
    if (WF == 0) {
        const i64 KB = (K + 127) / 128, NB = (N + 127) / 128;
        const float v = fp8_e4m3_to_f32(w[(g * N + n) * K + k]);
        return __fmul_rn(v, gq_scale(ws, ws_e8, (g * NB + n / 128) * KB + k / 128));
    } else if (WF == 1) {
        const u32 byte = w[(g * N + n) * (K / 2) + k / 2];
        const float v = gq_e2m1((k & 1) ? (byte >> 4) : (byte & 15u));
        return __fmul_rn(v, ue8m0_to_f32(((const u8*)ws)[(g * N + n) * (K / 32) + k / 32]));
    } else {
        return __fmul_rn((float)(signed char)w[(g * N + n) * K + k], ((const float*)ws)[g * N + n]);
    }
}

template <class TX, class TY, int WF, int ACT>
__device__ __forceinline__ void gq_body(const void* __restrict__ x, const void* __restrict__ xs, int xs_e8,
                                        const u8* __restrict__ w, const void* __restrict__ ws, int ws_e8,
                                        const i64* __restrict__ group_end, const float* __restrict__ rs,
                                        const typename TY::S* __restrict__ bias, typename TY::S* __restrict__ y,
                                        i64 M, i64 N, i64 K, i64 G, const i32* err) {
    if (*(volatile const i32*)err) return;
    const i64 n = (i64)blockIdx.x * GQ_THREADS + threadIdx.x;
    if (n >= N || G <= 0) return;
    i64 rows = group_end[G - 1];
    if (rows > M) rows = M;
    for (i64 m = blockIdx.y; m < rows; m += gridDim.y) {
        const i64 g = gq_group(group_end, G, m);
        float acc = 0.f;
        if (ACT == 0) {
            const typename TX::S* xr = (const typename TX::S*)x + m * K;
            for (i64 k = 0; k < K; k++) acc = fmaf(TX::ld(xr[k]), gq_w<WF>(w, ws, ws_e8, g, n, k, N, K), acc);
        } else if (ACT == 1) {
            const u8* xr = (const u8*)x + m * K;
            const u8* wr = w + (g * N + n) * K;
            const i64 KB = (K + 127) / 128, NB = (N + 127) / 128;
            for (i64 b = 0; b < KB; b++) {
                const i64 k1 = (b + 1) * 128 < K ? (b + 1) * 128 : K;
                float part = 0.f;
                for (i64 k = b * 128; k < k1; k++) part = fmaf(fp8_e4m3_to_f32(xr[k]), fp8_e4m3_to_f32(wr[k]), part);
                const float sc = gq_scale(xs, xs_e8, m * KB + b) * gq_scale(ws, ws_e8, (g * NB + n / 128) * KB + b);
                acc = fmaf(sc, part, acc);
            }
        } else {
            const signed char* xr = (const signed char*)x + m * K;
            const signed char* wr = (const signed char*)w + (g * N + n) * K;
            int s = 0;
            for (i64 k = 0; k < K; k++) s += (int)xr[k] * (int)wr[k];
            acc = (float)s * (((const float*)xs)[m] * ((const float*)ws)[g * N + n]);
        }
        if (bias) acc += TY::ld(bias[g * N + n]);
        if (rs) acc *= rs[m];
        y[m * N + n] = TY::st(acc);
    }
}

#define GQ(name, TX, TY, WF, ACT)                                                                       \
    extern "C" __global__ void __launch_bounds__(GQ_THREADS)                                            \
        name(const void* x, const void* xs, int xs_e8, const u8* w, const void* ws, int ws_e8,          \
             const i64* group_end, const float* rs, const TY::S* bias, TY::S* y, i64 M, i64 N, i64 K,   \
             i64 G, const i32* err) {                                                                   \
        gq_body<TX, TY, WF, ACT>(x, xs, xs_e8, w, ws, ws_e8, group_end, rs, bias, y, M, N, K, G, err); \
    }
// Weight-only: y has x's dtype.
GQ(gq_fp8_block_f32_f32, TF32, TF32, 0, 0)
GQ(gq_fp8_block_bf16_bf16, TBF16, TBF16, 0, 0)
GQ(gq_fp8_block_f16_f16, TF16, TF16, 0, 0)
GQ(gq_mxfp4_f32_f32, TF32, TF32, 1, 0)
GQ(gq_mxfp4_bf16_bf16, TBF16, TBF16, 1, 0)
GQ(gq_mxfp4_f16_f16, TF16, TF16, 1, 0)
GQ(gq_int8_f32_f32, TF32, TF32, 2, 0)
GQ(gq_int8_bf16_bf16, TBF16, TBF16, 2, 0)
GQ(gq_int8_f16_f16, TF16, TF16, 2, 0)
// W8A8: y f32 / bf16 / f16 (TX unused).
GQ(gq_fp8_block_fp8_f32, TF32, TF32, 0, 1)
GQ(gq_fp8_block_fp8_bf16, TF32, TBF16, 0, 1)
GQ(gq_fp8_block_fp8_f16, TF32, TF16, 0, 1)
GQ(gq_int8_int8_f32, TF32, TF32, 2, 2)
GQ(gq_int8_int8_bf16, TF32, TBF16, 2, 2)
GQ(gq_int8_int8_f16, TF32, TF16, 2, 2)
