// quantize_fp8 / quantize_int8 (OPS.md §6): dynamic activation quantization, bitwise the
// reference's bytes and scales (backends/core/src/quant.rs `quantize_fp8_group`,
// `quantize_int8_row`):
// - amax is a max of |x| (exact, order-free), non-finite values detected from the bits;
// - scales and quotients are IEEE f32 divisions (NVRTC's default -prec-div=true; never a multiply
//   by a reciprocal);
// - e4m3 rounding scales |q| by a power of two (exact in f32) and rounds with rintf (nearest even),
//   which is the reference's f64 rounding of the same exact value;
// - int8 rounds with rintf (nearest even), then clamps to [-127, 127].
// Launch (backends/cuda/src/ops/quantize.rs): fp8 one warp per (row, 128-wide group), 8 warps per
// block, warp-stride over groups; int8 one 256-thread block per row, block-stride over rows.

#define Q_E4M3_MAX 448.f
#define Q_NAN_BITS 0x7fc00000u

__device__ __forceinline__ bool q_finite(float v) { return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u; }

// f32 -> E4M3FN, nearest even, saturating to +-448; -0 and negatives rounding to zero give 0x80.
__device__ __forceinline__ u8 q_f32_to_e4m3(float v) {
    const u32 bits = __float_as_uint(v);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7F;
    const u32 sign = (bits >> 31) ? 0x80u : 0u;
    const float a = fabsf(v);
    if (a >= Q_E4M3_MAX) return (u8)(sign | 0x7Eu);
    u32 code;
    if (a < 0.015625f) {
        // Subnormal e4m3 range (below 2^-6): step 2^-9; a * 512 is exact.
        code = (u32)rintf(a * 512.f);
    } else {
        const int e = (int)((__float_as_uint(a) >> 23) & 0xFFu) - 127;  // in [-6, 8]
        const float p = __uint_as_float((u32)(127 + 3 - e) << 23);       // 2^(3 - e), exact
        const int q = (int)rintf(a * p);                                // in [8, 16]
        code = (u32)(((e + 7) << 3) + (q - 8));
    }
    if (code > 0x7Eu) code = 0x7Eu;
    return (u8)(sign | code);
}

// E8M0 byte of the smallest power of two >= s (s positive, normal or subnormal), from the bits.
__device__ __forceinline__ u8 q_ue8m0_ceil(float s) {
    if (!(q_finite(s) && s > 0.f)) return 255;
    const u32 bits = __float_as_uint(s);
    const u32 exp = (bits >> 23) & 0xFFu, man = bits & 0x7FFFFFu;
    if (exp == 0) {
        const int top = 31 - __clz(man);
        int p = top - 149 + ((man & (man - 1)) != 0 ? 1 : 0) + 127;
        return (u8)(p < 0 ? 0 : p);
    }
    const u32 e = exp + (man != 0 ? 1u : 0u);
    return e >= 255 ? (u8)255 : (u8)e;
}

// One warp per (row m, group b): x[m, 128b .. min(128b + 128, K)).
template <class T, int UE8M0>
__device__ __forceinline__ void qfp8_body(const typename T::S* __restrict__ x, u8* __restrict__ xq,
                                          void* __restrict__ scale, i64 M, i64 K) {
    const i64 KB = (K + 127) / 128;
    const int lane = threadIdx.x & 31;
    const i64 nw = gstride() >> 5;
    for (i64 w = gtid() >> 5; w < M * KB; w += nw) {  // warp-uniform
        const i64 m = w / KB, b = w - m * KB;
        const i64 k0 = b * 128, k1 = (k0 + 128 < K) ? k0 + 128 : K;
        const typename T::S* xr = x + m * K;
        float amax = 0.f;
        int fin = 1;
        for (i64 k = k0 + lane; k < k1; k += 32) {
            const float v = T::ld(xr[k]);
            if (!q_finite(v)) fin = 0;
            else amax = fmaxf(amax, fabsf(v));
        }
        for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        fin = __all_sync(0xffffffffu, fin);
        u8* qr = xq + m * K;
        if (!fin) {
            for (i64 k = k0 + lane; k < k1; k += 32) qr[k] = 0x7F;
            if (lane == 0) {
                if (UE8M0) ((u8*)scale)[w] = 255;
                else ((float*)scale)[w] = __uint_as_float(Q_NAN_BITS);
            }
            continue;
        }
        amax = fmaxf(amax, 1e-4f);
        const float s = amax / Q_E4M3_MAX;
        u8 byte = 0;
        float sc = s;
        if (UE8M0) {
            byte = q_ue8m0_ceil(s);
            sc = ue8m0_to_f32(byte);  // common.cuh
        }
        for (i64 k = k0 + lane; k < k1; k += 32) qr[k] = q_f32_to_e4m3(T::ld(xr[k]) / sc);
        if (lane == 0) {
            if (UE8M0) ((u8*)scale)[w] = byte;
            else ((float*)scale)[w] = sc;
        }
    }
}

// One block per row: amax over the row, then the codes.
template <class T>
__device__ __forceinline__ void qint8_body(const typename T::S* __restrict__ x, signed char* __restrict__ xq,
                                           float* __restrict__ scale, i64 M, i64 K) {
    __shared__ float s_amax[32];
    __shared__ int s_fin[32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
    for (i64 m = blockIdx.x; m < M; m += gridDim.x) {  // block-uniform
        const typename T::S* xr = x + m * K;
        float amax = 0.f;
        int fin = 1;
        for (i64 k = tid; k < K; k += blockDim.x) {
            const float v = T::ld(xr[k]);
            if (!q_finite(v)) fin = 0;
            else amax = fmaxf(amax, fabsf(v));
        }
        for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        fin = __all_sync(0xffffffffu, fin);
        if (lane == 0) {
            s_amax[warp] = amax;
            s_fin[warp] = fin;
        }
        __syncthreads();
        amax = 0.f;
        fin = 1;
        for (int i = 0; i < nwarps; ++i) {
            amax = fmaxf(amax, s_amax[i]);
            fin &= s_fin[i];
        }
        __syncthreads();  // s_amax is rewritten by the next row
        signed char* qr = xq + m * K;
        float sc;
        if (!fin) {
            sc = __uint_as_float(Q_NAN_BITS);
        } else if (amax < __uint_as_float(0x1f800000u)) {  // 2^-64
            sc = 1.f;
            fin = 0;  // zeros
        } else {
            sc = amax / 127.f;
        }
        for (i64 k = tid; k < K; k += blockDim.x) {
            float q = 0.f;
            if (fin) q = fminf(fmaxf(rintf(T::ld(xr[k]) / sc), -127.f), 127.f);
            qr[k] = (signed char)(int)q;
        }
        if (tid == 0) scale[m] = sc;
    }
}

#define QFP8(name, T, U)                                                                           \
    extern "C" __global__ void __launch_bounds__(256) name(const T::S* x, u8* xq, void* scale, i64 M, i64 K) { \
        qfp8_body<T, U>(x, xq, scale, M, K);                                                       \
    }
QFP8(quantize_fp8_f32_f32, TF32, 0)
QFP8(quantize_fp8_bf16_f32, TBF16, 0)
QFP8(quantize_fp8_f16_f32, TF16, 0)
QFP8(quantize_fp8_f32_ue8m0, TF32, 1)
QFP8(quantize_fp8_bf16_ue8m0, TBF16, 1)
QFP8(quantize_fp8_f16_ue8m0, TF16, 1)

#define QINT8(name, T)                                                                             \
    extern "C" __global__ void __launch_bounds__(256) name(const T::S* x, signed char* xq, float* scale, i64 M, i64 K) { \
        qint8_body<T>(x, xq, scale, M, K);                                                         \
    }
QINT8(quantize_int8_f32, TF32)
QINT8(quantize_int8_bf16, TBF16)
QINT8(quantize_int8_f16, TF16)
