// router_topk (OPS.md §2): fused MoE gate, one warp per token, up to 32*EPL experts (EPL = 4, 8, 16).
//
// Kernel router_topk_<dtype>_<EPL>(logits [T,E], T, E, k, score, bias|null, n_group, topk_group,
// group_kind, renormalize, scale, ids [T,k] i32, weights [T,k] f32, counts [E] i64 | null).
// Block: 256 threads = 8 tokens. Lane `l` holds experts e = i*32 + l, i < EPL (coalesced loads).
// score: 0 softmax, 1 sigmoid, 2 sqrt_softplus. group_kind: 0 top2_sum, 1 max.
// Selection is an iterated arg-max under the total order (ŝ descending, index ascending), so ties go
// to the lower index and slots left when no selectable expert remains take the lowest unchosen
// indices (their ŝ is -inf), with weight 0. Warp reductions are xor butterflies: every lane ends
// with the same bits, run after run. `counts` (zeroed by the host) is built from a per-block shared
// histogram with integer atomics only.
// Exact f32 ties (OPS.md §2 steps 1-3): scores, ŝ = s + bias and the top2_sum group score are f32
// values (IEEE f32 add, no fast-math: NVRTC is called without --use_fast_math), so scores that round
// to the same f32 (sigmoid saturation, underflow to 0, fl32(s + bias), fl32(ŝ1 + ŝ2)) compare
// equal and the lower index / lower group wins, exactly as in the reference.

#define RT_WARPS 8
#define RT_MAXE 512

struct Cand {
    float v;  // selection score ŝ
    int i;    // expert index (INT_MAX = none)
    float s;  // unbiased score
};

__device__ __forceinline__ bool cand_better(float av, int ai, float bv, int bi) {
    return av > bv || (av == bv && ai < bi);
}

__device__ __forceinline__ Cand warp_argmax(Cand c) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        Cand o;
        o.v = __shfl_xor_sync(0xffffffffu, c.v, off);
        o.i = __shfl_xor_sync(0xffffffffu, c.i, off);
        o.s = __shfl_xor_sync(0xffffffffu, c.s, off);
        if (cand_better(o.v, o.i, c.v, c.i)) c = o;
    }
    return c;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

__device__ __forceinline__ bool is_finite_f(float x) { return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u; }

// Elementwise scores (OPS.md §2 step 1) of a finite logit x: 1 sigmoid, 2 sqrt_softplus.
__device__ __forceinline__ float rt_score(int score, float x) {
    if (score == 1) return 1.f / (1.f + expf(-x));
    // Below x = -20, sqrt(softplus(x)) = e^(x/2) to 1e-9 relative; computed so it stays nonzero
    // down to f32's smallest subnormal as OPS.md §2 step 1 asks (the direct form is 0 once expf(x)
    // underflows, x < -104). Same formula as the CPU backend.
    const float sp = x > 0.f ? x + log1pf(expf(-x)) : log1pf(expf(x));
    return x < -20.f ? expf(0.5f * x) : sqrtf(sp);
}

template <class T, int EPL>
__device__ __forceinline__ void router_body(const typename T::S* __restrict__ logits, i64 T_, int E, int k, int score,
                                            const float* __restrict__ bias, int n_group, int topk_group,
                                            int group_kind, int renorm, float scale, i32* __restrict__ ids,
                                            float* __restrict__ weights, i64* __restrict__ counts) {
    __shared__ float sh_s[RT_WARPS][RT_MAXE];  // ŝ, for group scores
    __shared__ float sh_w[RT_WARPS][RT_MAXE];  // selected weights before normalisation
    __shared__ unsigned char sh_keep[RT_WARPS][RT_MAXE];
    __shared__ int hist[RT_MAXE];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (counts)
        for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
    __syncthreads();
    const i64 t = (i64)blockIdx.x * RT_WARPS + warp;
    if (t < T_) {
        const typename T::S* row = logits + t * (i64)E;
        float l[EPL], s[EPL], sh[EPL];
        bool fin[EPL];
#pragma unroll
        for (int i = 0; i < EPL; i++) {
            const int e = i * 32 + lane;
            const bool valid = e < E;
            l[i] = valid ? T::ld(row[e]) : 0.f;
            fin[i] = valid && is_finite_f(l[i]);
        }
        if (score == 0) {
            float mx = MOEHAL_NINF;
#pragma unroll
            for (int i = 0; i < EPL; i++)
                if (fin[i]) mx = fmaxf(mx, l[i]);
            mx = warp_max(mx);
            float sum = 0.f;
#pragma unroll
            for (int i = 0; i < EPL; i++) {
                s[i] = fin[i] ? expf(l[i] - mx) : 0.f;
                sum += s[i];
            }
            sum = warp_sum(sum);
#pragma unroll
            for (int i = 0; i < EPL; i++) s[i] = fin[i] ? s[i] / sum : 0.f;
        } else {
#pragma unroll
            for (int i = 0; i < EPL; i++) s[i] = fin[i] ? rt_score(score, l[i]) : 0.f;
        }
#pragma unroll
        for (int i = 0; i < EPL; i++) {
            const int e = i * 32 + lane;
            float v = MOEHAL_NINF;
            if (fin[i]) {
                v = s[i] + (bias ? bias[e] : 0.f);
                if (!is_finite_f(v)) v = MOEHAL_NINF;  // a non-finite selection score is excluded
            }
            sh[i] = v;
        }
        if (n_group > 1) {
            const int gs = E / n_group;
#pragma unroll
            for (int i = 0; i < EPL; i++) {
                const int e = i * 32 + lane;
                if (e < E) sh_s[warp][e] = sh[i];
            }
            __syncwarp();
            // Group scores: lane l owns groups q = l + 32*i (n_group <= E <= 32*EPL).
            float gsc[EPL];
#pragma unroll
            for (int i = 0; i < EPL; i++) {
                const int q = i * 32 + lane;
                float b1 = MOEHAL_NINF, b2 = MOEHAL_NINF;
                if (q < n_group) {
                    for (int e = q * gs; e < (q + 1) * gs; e++) {
                        const float v = sh_s[warp][e];
                        if (v > b1) { b2 = b1; b1 = v; }
                        else if (v > b2) b2 = v;
                    }
                }
                gsc[i] = group_kind == 0 ? b1 + b2 : b1;
            }
            unsigned keep = 0;  // bit i: group i*32+lane kept
            for (int j = 0; j < topk_group; j++) {
                Cand c;
                c.v = MOEHAL_NINF; c.i = 0x7fffffff; c.s = 0.f;
#pragma unroll
                for (int i = 0; i < EPL; i++) {
                    const int q = i * 32 + lane;
                    if (q < n_group && !((keep >> i) & 1u) && cand_better(gsc[i], q, c.v, c.i)) {
                        c.v = gsc[i]; c.i = q;
                    }
                }
                c = warp_argmax(c);
#pragma unroll
                for (int i = 0; i < EPL; i++)
                    if (i * 32 + lane == c.i) keep |= 1u << i;
            }
#pragma unroll
            for (int i = 0; i < EPL; i++) {
                const int q = i * 32 + lane;
                if (q < n_group) sh_keep[warp][q] = (keep >> i) & 1u;
            }
            __syncwarp();
#pragma unroll
            for (int i = 0; i < EPL; i++) {
                const int e = i * 32 + lane;
                if (e < E && !sh_keep[warp][e / gs]) sh[i] = MOEHAL_NINF;
            }
            __syncwarp();
        }
        // top-k by iterated arg-max
        unsigned chosen = 0;
        float wsum = 0.f;
        for (int j = 0; j < k; j++) {
            Cand c;
            c.v = MOEHAL_NINF; c.i = 0x7fffffff; c.s = 0.f;
#pragma unroll
            for (int i = 0; i < EPL; i++) {
                const int e = i * 32 + lane;
                if (e < E && !((chosen >> i) & 1u) && cand_better(sh[i], e, c.v, c.i)) {
                    c.v = sh[i]; c.i = e; c.s = s[i];
                }
            }
            c = warp_argmax(c);
#pragma unroll
            for (int i = 0; i < EPL; i++)
                if (i * 32 + lane == c.i) chosen |= 1u << i;
            const float wj = c.v == MOEHAL_NINF ? 0.f : c.s;  // fill slot: weight 0
            if (lane == 0) {
                ids[t * k + j] = c.i;
                sh_w[warp][j] = wj;
                wsum += wj;
                if (counts) atomicAdd(&hist[c.i], 1);
            }
        }
        if (lane == 0) {
            const float den = wsum + 1e-20f;
            for (int j = 0; j < k; j++) {
                float wj = sh_w[warp][j];
                if (renorm) wj = wj / den;
                weights[t * k + j] = wj * scale;
            }
        }
    }
    if (counts) {
        __syncthreads();
        for (int e = threadIdx.x; e < E; e += blockDim.x)
            if (hist[e]) atomicAdd((u64*)(counts + e), (u64)hist[e]);
    }
}

#define RT(name, T, EPL)                                                                                         \
    extern "C" __global__ void __launch_bounds__(256) name(                                                     \
        const T::S* logits, i64 T_, int E, int k, int score, const float* bias, int n_group, int topk_group,     \
        int group_kind, int renorm, float scale, i32* ids, float* weights, i64* counts) {                       \
        router_body<T, EPL>(logits, T_, E, k, score, bias, n_group, topk_group, group_kind, renorm, scale, ids, \
                            weights, counts);                                                                    \
    }
RT(router_topk_f32_4, TF32, 4)
RT(router_topk_f32_8, TF32, 8)
RT(router_topk_f32_16, TF32, 16)
RT(router_topk_bf16_4, TBF16, 4)
RT(router_topk_bf16_8, TBF16, 8)
RT(router_topk_bf16_16, TBF16, 16)
RT(router_topk_f16_4, TF16, 4)
RT(router_topk_f16_8, TF16, 8)
RT(router_topk_f16_16, TF16, 16)

// Hash routing (OPS.md §2 "Hash routing", DeepSeek-V4's first layers): ids[t] = tid2eid[token_ids[t]]
// in table order (repeats kept); weights = step 5 on the unbiased scores of those ids (softmax over
// all E finite logits; a non-finite logit scores 0). Launched only after router_hash_check passed
// (the host reads its flag first), so every row and entry read here is in range.
// router_hash_check: thread per token; code 1 = token id outside [0, V), 2 = an entry of its row
// outside [0, E); err_idx = the smallest offending token (the host words the message with core's
// hash_rows, which reports the first token in order).
extern "C" __global__ void __launch_bounds__(256) router_hash_check(const i32* tid2eid, const i64* token_ids, i64 T_,
                                                                   i64 V, int k, int E, i32* err) {
    for (i64 t = gtid(); t < T_; t += gstride()) {
        const i64 tok = token_ids[t];
        if (tok < 0 || tok >= V) {
            moehal_flag(err, 1, t);
            continue;
        }
        for (int j = 0; j < k; j++) {
            const i32 id = tid2eid[tok * k + j];
            if (id < 0 || id >= E) {
                moehal_flag(err, 2, t);
                break;
            }
        }
    }
}

// Warp per token, 8 tokens per 256-thread block; `counts` zeroed by the host.
template <class T>
__device__ __forceinline__ void router_hash_body(const typename T::S* __restrict__ logits, i64 T_, int E, int k,
                                                 int score, const i32* __restrict__ tid2eid,
                                                 const i64* __restrict__ token_ids, int renorm, float scale,
                                                 i32* __restrict__ ids, float* __restrict__ weights,
                                                 i64* __restrict__ counts) {
    const int lane = threadIdx.x & 31;
    const i64 t = (i64)blockIdx.x * RT_WARPS + (threadIdx.x >> 5);
    if (t >= T_) return;  // warp-uniform; no block barrier below
    const typename T::S* row = logits + t * (i64)E;
    float mx = MOEHAL_NINF, sum = 0.f;
    if (score == 0) {
        for (int e = lane; e < E; e += 32) {
            const float l = T::ld(row[e]);
            if (is_finite_f(l)) mx = fmaxf(mx, l);
        }
        mx = warp_max(mx);
        for (int e = lane; e < E; e += 32) {
            const float l = T::ld(row[e]);
            if (is_finite_f(l)) sum += expf(l - mx);
        }
        sum = warp_sum(sum);
    }
    if (lane != 0) return;
    const i32* r = tid2eid + token_ids[t] * k;
    float wsum = 0.f;
    for (int j = 0; j < k; j++) {
        const i32 id = r[j];
        const float l = T::ld(row[id]);
        const float sj = !is_finite_f(l) ? 0.f : score == 0 ? expf(l - mx) / sum : rt_score(score, l);
        ids[t * k + j] = id;
        weights[t * k + j] = sj;
        wsum += sj;
        if (counts) atomicAdd((u64*)(counts + id), (u64)1);
    }
    const float den = wsum + 1e-20f;
    for (int j = 0; j < k; j++) {
        float wj = weights[t * k + j];
        if (renorm) wj = wj / den;
        weights[t * k + j] = wj * scale;
    }
}

#define RH(name, T)                                                                                             \
    extern "C" __global__ void __launch_bounds__(256) name(const T::S* logits, i64 T_, int E, int k, int score,   \
                                                         const i32* tid2eid, const i64* token_ids, int renorm,  \
                                                         float scale, i32* ids, float* weights, i64* counts) {  \
        router_hash_body<T>(logits, T_, E, k, score, tid2eid, token_ids, renorm, scale, ids, weights, counts);  \
    }
RH(router_hash_f32, TF32)
RH(router_hash_bf16, TBF16)
RH(router_hash_f16, TF16)
