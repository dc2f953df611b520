// moehal CUDA kernels: helpers shared by every op file.
//
// The backend (backends/cuda/src/kernels.rs) compiles each `<op>.cu` with this file prepended, so
// no CUDA header is needed: NVRTC compiles it as is, on a machine without a CUDA toolkit.
// Conventions:
// - every index product is 64-bit (`i64`);
// - f16 / bf16 are passed as raw `u16` bits; arithmetic is f32; outputs are rounded once,
//   round-to-nearest-even (the same rule as the `half` crate, NaN kept quiet);
// - data-dependent validation is done by a `*_check` kernel that sets `err[0]` (and the first
//   offending index in `err_idx[0]`); every kernel that writes an output reads `err[0]` first and
//   returns without writing when it is set. The host reads the flag after the op.

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;
typedef int i32;
typedef unsigned char u8;

#define MOEHAL_INF __int_as_float(0x7f800000)
#define MOEHAL_NINF __int_as_float(0xff800000)

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

// Round-to-nearest-even, NaN stays NaN (quiet bit set), as half::bf16::from_f32.
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}

// IEEE round-to-nearest-even (subnormals kept).
__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("{ .reg .b16 t; cvt.rn.f16.f32 t, %1; mov.b16 %0, t; }" : "=h"(h) : "f"(f));
    return h;
}

// Element-type tags: storage type `S`, widening `ld`, rounding `st`.
struct TF32 {
    typedef float S;
    static __device__ __forceinline__ float ld(S v) { return v; }
    static __device__ __forceinline__ S st(float v) { return v; }
};
struct TBF16 {
    typedef u16 S;
    static __device__ __forceinline__ float ld(S v) { return bf16_to_f32(v); }
    static __device__ __forceinline__ S st(float v) { return f32_to_bf16(v); }
};
struct TF16 {
    typedef u16 S;
    static __device__ __forceinline__ float ld(S v) { return f16_to_f32(v); }
    static __device__ __forceinline__ S st(float v) { return f32_to_f16(v); }
};

// Error flag helpers. `err` points at two words: err[0] = bitmask of error codes,
// err[1..2] (as u64) = smallest offending index (atomicMin), initialised by the host to ~0.
__device__ __forceinline__ void moehal_flag(i32* err, i32 code, i64 idx) {
    atomicOr(err, code);
    atomicMin((u64*)(err + 2), (u64)idx);
}

__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

__device__ __forceinline__ i64 gtid() { return (i64)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ i64 gstride() { return (i64)gridDim.x * blockDim.x; }

// Copy `bytes` bytes from `src` to `dst` cooperatively: lanes `lane` of `nl` threads.
// Uses 16-byte accesses when both pointers and the length are 16-byte aligned, else 4, else 1.
__device__ __forceinline__ void copy_bytes(u8* dst, const u8* src, i64 bytes, int lane, int nl) {
    u64 a = (u64)dst | (u64)src | (u64)bytes;
    if ((a & 15) == 0) {
        const uint4* s = (const uint4*)src;
        uint4* d = (uint4*)dst;
        for (i64 i = lane; i < bytes / 16; i += nl) d[i] = s[i];
    } else if ((a & 3) == 0) {
        const u32* s = (const u32*)src;
        u32* d = (u32*)dst;
        for (i64 i = lane; i < bytes / 4; i += nl) d[i] = s[i];
    } else {
        for (i64 i = lane; i < bytes; i += nl) dst[i] = src[i];
    }
}

// OCP 8-bit formats (OPS.md §5, §6), exact in f32: E4M3FN (0x7F/0xFF NaN) and E8M0 (2^(b-127);
// 255 NaN, 0 the subnormal 2^-127).
__device__ __forceinline__ float fp8_e4m3_to_f32(u32 b) {
    const u32 sign = (b & 0x80u) << 24;
    const u32 e = (b >> 3) & 15u, m = b & 7u;
    if (e == 15u && m == 7u) return __uint_as_float(0x7fc00000u);
    float v;
    if (e == 0) v = (float)m * 0.001953125f;  // m * 2^-9, exact
    else v = __uint_as_float(((e + 120u) << 23) | (m << 20));  // (1 + m/8) * 2^(e-7)
    return __uint_as_float(__float_as_uint(v) | sign);
}

__device__ __forceinline__ float ue8m0_to_f32(u32 b) {
    if (b == 255u) return __uint_as_float(0x7fc00000u);
    if (b == 0u) return __uint_as_float(0x00400000u);  // 2^-127 (subnormal)
    return __uint_as_float(b << 23);
}

// grouped_gemm m-slots (gg_check's tile_prefix, grouped_gemm.cu): group of m-slot `slot`, the
// largest g with tile_prefix[g] <= slot (empty groups are skipped because they share their prefix
// with the next group). Caller guarantees slot < tile_prefix[G].
__device__ __forceinline__ i64 gg_find_group(const i64* tile_prefix, i64 G, i64 slot) {
    i64 lo = 0, hi = G - 1;
    while (lo < hi) {
        i64 mid = (lo + hi + 1) >> 1;
        if (tile_prefix[mid] <= slot) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}
