// moe_combine (OPS.md §3): out[t, h] = sum_j weights[t, j] * y_perm[slot_row[t, j], h], in f32, in order
// j = 0..k-1; a dropped slot (-1) adds nothing.
//   combine_check: slot_row in [-1, R), else err (code 1, flat index).
//   combine_*:     grid (ceil(H / 256 / CB_VEC)... ) -> one block per token and 256*4 columns.

extern "C" __global__ void combine_check(const i64* __restrict__ slot_row, i64 n, i64 R, i32* err) {
    for (i64 f = gtid(); f < n; f += gstride()) {
        const i64 v = slot_row[f];
        if (v < -1 || v >= R) moehal_flag(err, 1, f);
    }
}

// grid: x = column blocks of 256 threads (each thread 1 column per step, grid-stride over columns),
// y = tokens (grid-stride when T > 65535).
template <class T>
__device__ __forceinline__ void combine_body(const typename T::S* __restrict__ y, const i64* __restrict__ slot_row,
                                             const float* __restrict__ wts, typename T::S* __restrict__ out, i64 Tn,
                                             i64 k, i64 H, const i32* err) {
    if (*(volatile const i32*)err) return;
    for (i64 t = blockIdx.y; t < Tn; t += gridDim.y) {
        for (i64 h = (i64)blockIdx.x * blockDim.x + threadIdx.x; h < H; h += (i64)gridDim.x * blockDim.x) {
            float acc = 0.f;
            for (i64 j = 0; j < k; j++) {
                const i64 r = slot_row[t * k + j];
                if (r < 0) continue;
                acc = fmaf(wts[t * k + j], T::ld(y[r * H + h]), acc);
            }
            out[t * H + h] = T::st(acc);
        }
    }
}

#define COMBINE(name, T)                                                                                     \
    extern "C" __global__ void __launch_bounds__(256) name(const T::S* y, const i64* slot_row, const float* wts, \
                                                           T::S* out, i64 Tn, i64 k, i64 H, const i32* err) {    \
        combine_body<T>(y, slot_row, wts, out, Tn, k, H, err);                                               \
    }
COMBINE(combine_f32, TF32)
COMBINE(combine_bf16, TBF16)
COMBINE(combine_f16, TF16)
