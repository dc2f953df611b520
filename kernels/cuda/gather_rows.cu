// gather_rows (OPS.md §5): out[t, c*D:(c+1)*D] = table[rows[t, c]], a copy (bitwise), or an exact
// fp8_e4m3_ue8m0 dequantization to f32 / bf16. One warp per (t, c) pair.
// The table may be device memory or mapped pinned host memory (read in place over PCIe / C2C): the
// kernels only see a device-visible address.
//   gather_check: rows in [0, R), else err (code 1, flat index).
//   gather_copy:  dense formats: `row_bytes` per row, 16-byte accesses where aligned.
//   gather_fp8_{f32,bf16}: row = D e4m3 bytes then D/32 UE8M0 scale bytes (`stride` = D + D/32);
//                 value = e4m3 * 2^(scale - 127), NaN in either -> 0x7fc00000, exact in f32 (the
//                 product of a 4-bit significand and a power of two), rounded once to bf16.

extern "C" __global__ void gather_check(const i64* __restrict__ rows, i64 n, i64 R, i32* err) {
    for (i64 f = gtid(); f < n; f += gstride()) {
        const i64 v = rows[f];
        if (v < 0 || v >= R) moehal_flag(err, 1, f);
    }
}

extern "C" __global__ void gather_copy(const u8* __restrict__ table, i64 row_bytes, const i64* __restrict__ rows,
                                       i64 npairs, u8* __restrict__ out, const i32* err) {
    if (*(volatile const i32*)err) return;
    const int lane = threadIdx.x & 31;
    const i64 w0 = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const i64 nw = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 p = w0; p < npairs; p += nw) copy_bytes(out + p * row_bytes, table + rows[p] * row_bytes, row_bytes, lane, 32);
}

__device__ __forceinline__ float fp8_dequant(u32 q, u32 s) {
    const float v = fp8_e4m3_to_f32(q), sc = ue8m0_to_f32(s);
    if (v != v || sc != sc) return __uint_as_float(0x7fc00000u);
    return __fmul_rn(v, sc);
}

template <bool BF>
__device__ __forceinline__ void gather_fp8(const u8* __restrict__ table, i64 D, i64 stride, const i64* __restrict__ rows,
                                           i64 npairs, void* __restrict__ out, const i32* err) {
    if (*(volatile const i32*)err) return;
    const int lane = threadIdx.x & 31;
    const i64 w0 = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const i64 nw = ((i64)gridDim.x * blockDim.x) >> 5;
    // 32-bit reads when every row start is 4-byte aligned (stride % 4 == 0), else bytes.
    const bool word = (((u64)table | (u64)stride) & 3u) == 0;
    for (i64 p = w0; p < npairs; p += nw) {
        const u8* src = table + rows[p] * stride;
        const u8* sc = src + D;
        for (i64 i = (i64)lane * 4; i < D; i += 128) {  // D % 32 == 0: 4 elements a lane, same scale block
            u32 q;
            if (word) q = *(const u32*)(src + i);
            else q = (u32)src[i] | ((u32)src[i + 1] << 8) | ((u32)src[i + 2] << 16) | ((u32)src[i + 3] << 24);
            const u32 s = sc[i / 32];
            float v[4];
#pragma unroll
            for (int e = 0; e < 4; e++) v[e] = fp8_dequant((q >> (8 * e)) & 0xffu, s);
            const i64 o = p * D + i;
            if (BF) {
                u16* ob = (u16*)out;
#pragma unroll
                for (int e = 0; e < 4; e++) ob[o + e] = f32_to_bf16(v[e]);
            } else {
                float* of = (float*)out;
#pragma unroll
                for (int e = 0; e < 4; e++) of[o + e] = v[e];
            }
        }
    }
}

extern "C" __global__ void gather_fp8_f32(const u8* table, i64 D, i64 stride, const i64* rows, i64 npairs, float* out,
                                          const i32* err) {
    gather_fp8<false>(table, D, stride, rows, npairs, out, err);
}
extern "C" __global__ void gather_fp8_bf16(const u8* table, i64 D, i64 stride, const i64* rows, i64 npairs, u16* out,
                                           const i32* err) {
    gather_fp8<true>(table, D, stride, rows, npairs, out, err);
}
