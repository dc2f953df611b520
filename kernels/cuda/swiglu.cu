// swiglu (OPS.md §3): out[m, i] = silu(gate) * up, gate = h[m, i], up = h[m, I + i]; with a limit,
// gate = min(gate, limit) and up = clamp(up, -limit, limit) first (the reference's order, NaN passes
// through). silu(g) = g / (1 + exp(-g)), in f32, rounded once.

template <class T>
__device__ __forceinline__ void swiglu_body(const typename T::S* __restrict__ h, typename T::S* __restrict__ out,
                                            i64 M, i64 I, int has_limit, float limit) {
    const i64 n = M * I;
    for (i64 idx = gtid(); idx < n; idx += gstride()) {
        const i64 m = idx / I, i = idx - m * I;
        float g = T::ld(h[m * 2 * I + i]);
        float u = T::ld(h[m * 2 * I + I + i]);
        if (has_limit) {
            if (g > limit) g = limit;
            if (u < -limit) u = -limit;
            else if (u > limit) u = limit;
        }
        out[idx] = T::st(g / (1.f + expf(-g)) * u);
    }
}

#define SWIGLU(name, T)                                                                            \
    extern "C" __global__ void name(const T::S* h, T::S* out, i64 M, i64 I, int has_limit, float limit) { \
        swiglu_body<T>(h, out, M, I, has_limit, limit);                                            \
    }
SWIGLU(swiglu_f32, TF32)
SWIGLU(swiglu_bf16, TBF16)
SWIGLU(swiglu_f16, TF16)
