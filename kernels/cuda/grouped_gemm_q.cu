// grouped_gemm with quantized operands (OPS.md §6): a SIMT kernel for every pairing (correctness
// first), and tensor-core kernels for W8A8 (mma.sync m16n8k32, at the end): int8 (s8 -> s32,
// `gq_int8_int8_<y>_mma`, sm_80+) and fp8_block (e4m3 -> f32, `gq_fp8_block_fp8_<y>_mma`, sm_89+).
// The wgmma (sm_90) paths and the weight-only tensor-core paths are owed; see backends/cuda/README.md.
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

// ------------------------------------------------------------------------------------------------
// W8A8 int8 on tensor cores: mma.sync.m16n8k32.row.col.s32.s8.s8.s32 (sm_80+). Needs K % 32 == 0 and
// 16-byte aligned x and w (the host checks; else the SIMT kernel). One block = 4 warps over one
// 16-row m-slot (gg_check's tile_prefix for bm = 16: a slot never straddles two groups) and 128
// columns, each warp 32 columns (4 n8 sub-tiles sharing the A fragment). Fragments (PTX ISA, "Matrix
// Fragments for mma.m16n8k32", .s8), lane = 4·gid + tig:
//   A (row-major [16, 32] slice of x): a[0] = row gid, k 4·tig..+3; a[1] = row gid+8, same k;
//     a[2], a[3] = the same rows, k + 16 (4 consecutive s8 per 32-bit register, lowest k lowest byte).
//   B (col-major [32, 8] = rows n of w[g] in layout NK): b[0] = column n = gid, k 4·tig..+3;
//     b[1] = k + 16.
//   C/D (s32): c[0], c[1] = row gid, columns 2·tig, 2·tig+1; c[2], c[3] = row gid+8.
// Rows past the slot's group end and columns past N load zeros and are not stored. The s32 sum is
// exact (K <= 131,071 validated), as in the SIMT kernel, and the epilogue is the same formula:
// (float)s · (x_scale[m] · w_scale[g, n]), + bias, · row_scale.
// FP8 (fp8_block x e4m3, sm_89+; the host launches it only there): the same tiles and fragments
// (8-bit types share the m16n8k32 layout) with f32 accumulators restarted every 128-wide K block
// b, then acc += (x_scale[m, b] · w_scale[g, n/128, b]) · partial, as the SIMT kernel does.
#define GQM_WARPS 4
#define GQM_N (GQM_WARPS * 32)

__device__ __forceinline__ void gqm_mma(int* d, const u32* a, const u32* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void gqm_mma_e4m3(float* d, const u32* a, const u32* b) {
#if __CUDA_ARCH__ >= 890
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // never launched below sm_89 (host check)
#endif
}

// One 16 x 32 warp tile of W8A8 fp8_block: per 128-wide K block, 4 n8 sub-tiles of f32 partials.
__device__ __forceinline__ void gqm_fp8_tile(float (&acc)[4][4], const u8* xa, const u8* xb, bool va, bool vb,
                                             const u8* wg, i64 nw0, int gid, int tig, i64 N, i64 K,
                                             const void* xs, int xs_e8, const void* ws, int ws_e8, i64 g,
                                             i64 ra, i64 rb) {
    const i64 KB = (K + 127) / 128, NB = (N + 127) / 128;
    for (i64 b = 0; b < KB; b++) {
        float part[4][4];
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) part[j][c] = 0.f;
        const i64 kend = (b + 1) * 128 < K ? (b + 1) * 128 : K;
        for (i64 k0 = b * 128; k0 < kend; k0 += 32) {
            const i64 ka = k0 + 4 * tig;
            u32 a[4];
            a[0] = va ? *(const u32*)(xa + ka) : 0u;
            a[1] = vb ? *(const u32*)(xb + ka) : 0u;
            a[2] = va ? *(const u32*)(xa + ka + 16) : 0u;
            a[3] = vb ? *(const u32*)(xb + ka + 16) : 0u;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const i64 n = nw0 + j * 8 + gid;
                u32 bb[2];
                bb[0] = n < N ? *(const u32*)(wg + n * K + ka) : 0u;
                bb[1] = n < N ? *(const u32*)(wg + n * K + ka + 16) : 0u;
                gqm_mma_e4m3(part[j], a, bb);
            }
        }
        const float sa = va ? gq_scale(xs, xs_e8, ra * KB + b) : 0.f;
        const float sb = vb ? gq_scale(xs, xs_e8, rb * KB + b) : 0.f;
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const i64 n = nw0 + j * 8 + 2 * tig + (c & 1);
                if (n >= N) continue;
                const float sc = (c < 2 ? sa : sb) * gq_scale(ws, ws_e8, (g * NB + n / 128) * KB + b);
                acc[j][c] = fmaf(sc, part[j][c], acc[j][c]);
            }
    }
}

template <class TY, int FP8>
__device__ __forceinline__ void gqm_body(const void* __restrict__ xv, const void* __restrict__ xsv, int xs_e8,
                                         const void* __restrict__ wv, const void* __restrict__ wsv, int ws_e8,
                                         const i64* __restrict__ group_end, const float* __restrict__ rs,
                                         const typename TY::S* __restrict__ bias, typename TY::S* __restrict__ y,
                                         i64 M, i64 N, i64 K, i64 G, const i64* __restrict__ tile_prefix,
                                         const i32* err) {
    if (*(volatile const i32*)err) return;  // uniform: every thread reads the same flag
    const signed char* x = (const signed char*)xv;
    const signed char* w = (const signed char*)wv;
    const float* xs = (const float*)xsv;
    const float* ws = (const float*)wsv;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int gid = lane >> 2, tig = lane & 3;
    const i64 nw0 = (i64)blockIdx.x * GQM_N + warp * 32;  // this warp's first column
    if (nw0 >= N) return;                                 // warp-uniform; no block barrier below
    const i64 total = tile_prefix[G];
    for (i64 slot = blockIdx.y; slot < total; slot += gridDim.y) {
        const i64 g = gg_find_group(tile_prefix, G, slot);
        const i64 gstart = g == 0 ? 0 : group_end[g - 1];
        const i64 row0 = gstart + (slot - tile_prefix[g]) * 16;
        const i64 rend = group_end[g];
        const i64 ra = row0 + gid, rb = row0 + gid + 8;
        const bool va = ra < rend, vb = rb < rend;
        const signed char* xa = x + (va ? ra : 0) * K;
        const signed char* xb = x + (vb ? rb : 0) * K;
        const signed char* wg = w + g * N * K;
        int acc[4][4];
        float facc[4][4];
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                acc[j][c] = 0;
                facc[j][c] = 0.f;
            }
        if (FP8)
            gqm_fp8_tile(facc, (const u8*)xa, (const u8*)xb, va, vb, (const u8*)wg, nw0, gid, tig, N, K, xsv, xs_e8,
                         wsv, ws_e8, g, ra, rb);
        for (i64 k0 = 0; !FP8 && k0 < K; k0 += 32) {
            const i64 ka = k0 + 4 * tig;
            u32 a[4];
            a[0] = va ? *(const u32*)(xa + ka) : 0u;
            a[1] = vb ? *(const u32*)(xb + ka) : 0u;
            a[2] = va ? *(const u32*)(xa + ka + 16) : 0u;
            a[3] = vb ? *(const u32*)(xb + ka + 16) : 0u;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const i64 n = nw0 + j * 8 + gid;
                u32 b[2];
                b[0] = n < N ? *(const u32*)(wg + n * K + ka) : 0u;
                b[1] = n < N ? *(const u32*)(wg + n * K + ka + 16) : 0u;
                gqm_mma(acc[j], a, b);
            }
        }
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const i64 m = (c < 2) ? ra : rb;
                const i64 n = nw0 + j * 8 + 2 * tig + (c & 1);
                if (m >= rend || n >= N) continue;
                float v = FP8 ? facc[j][c] : (float)acc[j][c] * (xs[m] * ws[g * N + n]);
                if (bias) v += TY::ld(bias[g * N + n]);
                if (rs) v *= rs[m];
                y[m * N + n] = TY::st(v);
            }
    }
}

#define GQM(name, TY, FP8)                                                                             \
    extern "C" __global__ void __launch_bounds__(GQM_WARPS * 32)                                       \
        name(const void* x, const void* xs, int xs_e8, const void* w, const void* ws, int ws_e8,       \
             const i64* group_end, const float* rs, const TY::S* bias, TY::S* y, i64 M, i64 N, i64 K,  \
             i64 G, const i64* tile_prefix, const i32* err) {                                          \
        gqm_body<TY, FP8>(x, xs, xs_e8, w, ws, ws_e8, group_end, rs, bias, y, M, N, K, G, tile_prefix, err); \
    }
GQM(gq_int8_int8_f32_mma, TF32, 0)
GQM(gq_int8_int8_bf16_mma, TBF16, 0)
GQM(gq_int8_int8_f16_mma, TF16, 0)
GQM(gq_fp8_block_fp8_f32_mma, TF32, 1)
GQM(gq_fp8_block_fp8_bf16_mma, TBF16, 1)
GQM(gq_fp8_block_fp8_f16_mma, TF16, 1)
