/*
 * moehal.h — C ABI of moehal, the MoE / Engram kernel toolkit.
 *
 * Link libmoehal_ffi.so (cdylib) or libmoehal_ffi.a (staticlib; on Linux also link
 * -lpthread -ldl -lm -lrt -lgcc_s). Written by hand; ffi/tests/header.rs fails when this file
 * and the Rust side disagree (prototypes, constants, struct sizes and offsets).
 *
 * Conventions
 * - Every fallible function returns a moehal_status. On failure nothing was written to any
 *   output tensor and moehal_last_error() holds a message naming the function and the argument.
 * - Tensors are DLPack DLTensors (DLPack v0.8 / v1.x: the struct is the same). moehal never
 *   copies or keeps them: each is viewed in place for the duration of the call (on device
 *   backends, until the enqueued work completes: call moehal_synchronize or sync your stream).
 *   Accepted: ndim <= 4; strides NULL or row-major contiguous (size-1 dimensions may have any
 *   stride); data + byte_offset aligned to the element size; lanes = 1; dtypes float32, float16,
 *   bfloat16, int32, int64, uint8 (8-bit kDLBool is taken as uint8). Device: kDLCPU (or pinned
 *   kDLCUDAHost) memory for host backends ("reference", "cpu"); the backend's own device
 *   (moehal_device_info.device) for device backends, except Engram tables, which may also be
 *   host memory. Outputs must not overlap any input or other output.
 * - Optional tensor arguments are NULL when absent.
 * - Thread safety: unless a function says otherwise it may be called from any thread, and
 *   concurrently on the same backend handle. The caller must not let two threads use the same
 *   moehal_buffer for writing (upload, op output) at once, nor free a handle while another thread
 *   uses it. moehal_last_error() is per thread.
 * - A Rust panic never unwinds into C: it is reported as MOEHAL_PANIC (a bug: please report it).
 */
#ifndef MOEHAL_H
#define MOEHAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this header's ABI; compare with moehal_abi_version() at run time. */
#define MOEHAL_ABI_VERSION 1

#ifndef MOEHAL_API
#define MOEHAL_API
#endif

/* ---------------------------------------------------------------------------------------------
 * DLPack (https://github.com/dmlc/dlpack, v0.8 / v1.x). If dlpack/dlpack.h is included before
 * this header, its definitions are used (they are layout-identical).
 * ------------------------------------------------------------------------------------------- */
#ifndef DLPACK_DLPACK_H_
#ifndef MOEHAL_DLPACK_DEFINED
#define MOEHAL_DLPACK_DEFINED
typedef enum {
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,
  kDLOpenCL = 4,
  kDLVulkan = 7,
  kDLMetal = 8,
  kDLVPI = 9,
  kDLROCM = 10,
  kDLROCMHost = 11,
  kDLExtDev = 12,
  kDLCUDAManaged = 13,
  kDLOneAPI = 14,
  kDLWebGPU = 15,
  kDLHexagon = 16
} DLDeviceType;

typedef struct {
  DLDeviceType device_type;
  int32_t device_id;
} DLDevice;

typedef enum {
  kDLInt = 0,
  kDLUInt = 1,
  kDLFloat = 2,
  kDLOpaqueHandle = 3,
  kDLBfloat = 4,
  kDLComplex = 5,
  kDLBool = 6
} DLDataTypeCode;

typedef struct {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
} DLDataType;

typedef struct {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
} DLTensor;
#endif /* MOEHAL_DLPACK_DEFINED */
#endif /* DLPACK_DLPACK_H_ */

/* ---------------------------------------------------------------------------------------------
 * Status codes and option values
 * ------------------------------------------------------------------------------------------- */
typedef int32_t moehal_status;

enum moehal_status_code {
  MOEHAL_OK = 0,
  MOEHAL_INVALID_ARGUMENT = 1, /* bad argument, NULL pointer, bad descriptor, wrong device, overlap */
  MOEHAL_UNSUPPORTED = 2,      /* the backend lacks the capability (dtype, layout, streams) */
  MOEHAL_UNAVAILABLE = 3,      /* the backend cannot run on this machine / is not compiled in */
  MOEHAL_OUT_OF_MEMORY = 4,
  MOEHAL_DEVICE_ERROR = 5, /* a driver or runtime call failed */
  MOEHAL_PANIC = 6         /* a bug inside moehal was caught at the boundary */
};

enum moehal_scoring {
  MOEHAL_SCORING_SOFTMAX = 0,      /* softmax over all experts (max-subtracted) */
  MOEHAL_SCORING_SIGMOID = 1,      /* logistic sigmoid (DeepSeek-V3) */
  MOEHAL_SCORING_SQRT_SOFTPLUS = 2 /* sqrt(softplus(x)) (DeepSeek-V4) */
};

enum moehal_group_score {
  MOEHAL_GROUP_SCORE_TOP2_SUM = 0, /* sum of the two largest selection scores of the group */
  MOEHAL_GROUP_SCORE_MAX = 1       /* the largest selection score of the group */
};

enum moehal_weight_layout {
  MOEHAL_LAYOUT_NK = 0, /* w: [G, N, K] (checkpoint Linear weight, out x in) */
  MOEHAL_LAYOUT_KN = 1  /* w: [G, K, N] (torch._grouped_mm, Ascend GroupedMatmul) */
};

enum moehal_table_format {
  MOEHAL_TABLE_F32 = 0,           /* [R, D] float32 -> float32 out */
  MOEHAL_TABLE_BF16 = 1,          /* [R, D] bfloat16 -> bfloat16 out */
  MOEHAL_TABLE_F16 = 2,           /* [R, D] float16 -> float16 out */
  MOEHAL_TABLE_FP8_E4M3_UE8M0 = 3 /* [R, D + D/32] uint8: D e4m3fn bytes then D/32 UE8M0 scales
                                     per row -> float32 or bfloat16 out */
};

enum moehal_weight_format { /* OPS.md §6; weights in layout NK */
  MOEHAL_WEIGHT_FP8_BLOCK = 0, /* w [G,N,K] uint8 e4m3fn; w_scale [G,ceil(N/128),ceil(K/128)] f32 or uint8 E8M0 */
  MOEHAL_WEIGHT_MXFP4 = 1,     /* w [G,N,K/2] uint8 packed E2M1 (low nibble = even k); w_scale [G,N,K/32] E8M0 */
  MOEHAL_WEIGHT_INT8 = 2       /* w [G,N,K] int8; w_scale [G,N] f32 per output channel */
};

/* ---------------------------------------------------------------------------------------------
 * Structs
 * ------------------------------------------------------------------------------------------- */

/* Options of moehal_router_topk (OPS.md §2). */
typedef struct moehal_router_config {
  int64_t k;                   /* experts per token, 1 <= k <= E */
  int32_t scoring;             /* enum moehal_scoring */
  int32_t group_score;         /* enum moehal_group_score; used only when n_group > 1 */
  int64_t n_group;             /* expert groups; 0 or 1 = no group limit; must divide E */
  int64_t topk_group;          /* groups kept per token, 1 <= topk_group <= n_group */
  int32_t renormalize;         /* nonzero: weights /= (sum of selected + 1e-20) */
  float routed_scaling_factor; /* multiplies the weights exactly once; finite (1.0 = none) */
} moehal_router_config;

/* What moehal_backend_device_info reports. Strings belong to the backend handle. */
typedef struct moehal_device_info {
  const char* name;       /* device name */
  const char* capability; /* "sm_90", "avx512f avx512bf16", "Ascend910B1", ... */
  uint64_t memory_bytes;  /* device memory; 0 = unknown */
  int64_t compute_units;  /* threads / SMs / AI cores; -1 = unknown */
  DLDevice device;        /* the DLPack device of this backend's tensors (kDLCPU for host backends) */
} moehal_device_info;

/* Opaque handles. */
typedef struct moehal_backend moehal_backend;
typedef struct moehal_buffer moehal_buffer;
typedef struct moehal_engram_layer moehal_engram_layer;

/* ---------------------------------------------------------------------------------------------
 * Versions and errors
 * ------------------------------------------------------------------------------------------- */

/* ABI version of the library (MOEHAL_ABI_VERSION it was built with). Thread-safe. */
MOEHAL_API uint32_t moehal_abi_version(void);

/* Library version, e.g. "0.1.0"; static storage. Thread-safe. */
MOEHAL_API const char* moehal_version(void);

/* The message of the last failing call on this thread ("" if none). The pointer stays valid
 * until the next failing call on this thread. Thread-safe (per-thread state). */
MOEHAL_API const char* moehal_last_error(void);

/* "MOEHAL_OK", "MOEHAL_INVALID_ARGUMENT", ...; static storage. Thread-safe. */
MOEHAL_API const char* moehal_status_name(moehal_status status);

/* ---------------------------------------------------------------------------------------------
 * Backends
 * ------------------------------------------------------------------------------------------- */

/* Number of backends compiled into this library (available or not). The first call probes the
 * machine (opens every backend once); the list is then fixed. Thread-safe. */
MOEHAL_API moehal_status moehal_backend_count(size_t* count);

/* Entry `index` (0-based, fastest first, "reference" last): its name, whether this machine can
 * run it (1/0), and if not, why ("libcuda.so.1 not found"); "" when available. Strings have static
 * storage. Any out pointer may be NULL. Thread-safe. */
MOEHAL_API moehal_status moehal_backend_entry(size_t index, const char** name, int32_t* available,
                                              const char** reason);

/* Open a backend by name ("cpu", "cuda", "ascend", "reference"); NULL or "" opens the first
 * available one. An absent backend is MOEHAL_UNAVAILABLE with the reason. *out is NULL on
 * failure. Thread-safe; handles to the same backend share it. */
MOEHAL_API moehal_status moehal_backend_open(const char* name, moehal_backend** out);

/* Close a handle (NULL: no-op). Buffers allocated through it stay valid. Not thread-safe with
 * respect to other calls on the same handle. */
MOEHAL_API void moehal_backend_close(moehal_backend* backend);

/* The backend's name, owned by the handle; NULL for a NULL handle. Thread-safe. */
MOEHAL_API const char* moehal_backend_name(const moehal_backend* backend);

/* Describe the backend's device. Thread-safe. */
MOEHAL_API moehal_status moehal_backend_device_info(const moehal_backend* backend, moehal_device_info* out);

/* Enqueue this backend's subsequent work on an engine's stream (cudaStream_t, aclrtStream);
 * MOEHAL_UNSUPPORTED on backends without streams (reference, cpu). The stream must stay alive
 * while used. Affects every thread using the backend: do not race it with op calls. */
MOEHAL_API moehal_status moehal_set_stream(const moehal_backend* backend, void* stream);

/* Wait for all work enqueued on the backend. Thread-safe. */
MOEHAL_API moehal_status moehal_synchronize(const moehal_backend* backend);

/* ---------------------------------------------------------------------------------------------
 * Memory. A buffer's memory is the backend's (device memory on device backends); describe it to
 * the ops with a DLTensor whose data is moehal_buffer_data() and whose device is
 * moehal_device_info.device.
 * ------------------------------------------------------------------------------------------- */

/* Allocate `bytes` bytes (contents unspecified; zeroed on host backends). Thread-safe. */
MOEHAL_API moehal_status moehal_alloc(const moehal_backend* backend, size_t bytes, moehal_buffer** out);

/* Wrap `bytes` bytes at `ptr` that the caller owns (device memory on device backends, host
 * memory on host backends) as a buffer, without copying. moehal_buffer_free releases the handle
 * only; the memory must outlive it. Thread-safe. */
MOEHAL_API moehal_status moehal_wrap_external(const moehal_backend* backend, void* ptr, size_t bytes,
                                              moehal_buffer** out);

/* Free a buffer (NULL: no-op). Not thread-safe with respect to other uses of the buffer. */
MOEHAL_API void moehal_buffer_free(moehal_buffer* buffer);

/* Address (in the backend's address space) and size of a buffer; either out pointer may be
 * NULL. Thread-safe. */
MOEHAL_API moehal_status moehal_buffer_data(const moehal_buffer* buffer, void** data, size_t* bytes);

/* Copy `bytes` bytes from host `src` into `buffer` at byte `offset`. Not thread-safe per
 * buffer (no concurrent use of the same buffer). */
MOEHAL_API moehal_status moehal_upload(const moehal_backend* backend, moehal_buffer* buffer, size_t offset,
                                       const void* src, size_t bytes);

/* Copy `bytes` bytes of `buffer` from byte `offset` into host `dst`, after all enqueued work.
 * Thread-safe (concurrent downloads of one buffer are fine; not concurrent with writes). */
MOEHAL_API moehal_status moehal_download(const moehal_backend* backend, const moehal_buffer* buffer,
                                         size_t offset, void* dst, size_t bytes);

/* ---------------------------------------------------------------------------------------------
 * Engram layers (OPS.md §4): the hash configuration of one layer. Immutable once made; a layer
 * may be used by any number of threads at once.
 * ------------------------------------------------------------------------------------------- */

/* Build a layer: order N = max_order >= 2, heads K >= 1, `multipliers` = N odd 64-bit values with
 * m * (vocab_size - 1) < 2^63, `primes` = (N-1)*K distinct primes in column order (n-major, then
 * head), compressed vocabulary size V' = vocab_size, pad id < V'. More than 2^20 columns is
 * MOEHAL_UNSUPPORTED (moehal's limit, not the contract's). Thread-safe. */
MOEHAL_API moehal_status moehal_engram_layer_create(int64_t max_order, int64_t heads, const uint64_t* multipliers,
                                                    const uint64_t* primes, uint64_t vocab_size, uint64_t pad_id,
                                                    moehal_engram_layer** out);

/* DeepSeek-V4.1-Flash Engram layer `index` (0: decoder layer 1, 1: decoder layer 14): N = 4,
 * K = 8, V' = 99,092, pad 2, primes derived from vocab_n 16,000,000. Thread-safe. */
MOEHAL_API moehal_status moehal_engram_layer_v41_flash(int64_t index, moehal_engram_layer** out);

/* Destroy a layer (NULL: no-op). Not thread-safe with respect to other uses of the layer. */
MOEHAL_API void moehal_engram_layer_destroy(moehal_engram_layer* layer);

/* Sizes: N, K, columns C = (N-1)*K, table rows R = sum of primes. Out pointers may be NULL.
 * Thread-safe. */
MOEHAL_API moehal_status moehal_engram_layer_info(const moehal_engram_layer* layer, int64_t* max_order,
                                                  int64_t* heads, int64_t* columns, uint64_t* rows);

/* The C primes and their row offsets (exclusive prefix sums) in column order; `capacity` >= C.
 * Either array may be NULL. Thread-safe. */
MOEHAL_API moehal_status moehal_engram_layer_primes(const moehal_engram_layer* layer, uint64_t* primes,
                                                    uint64_t* offsets, size_t capacity);

/* The published prime rule: layers * (max_order-1) * heads primes, layer-major, each layer in
 * column order; `capacity` must hold them all. More than 2^20 primes in all is
 * MOEHAL_UNSUPPORTED (moehal's limit, not the contract's). Thread-safe. */
MOEHAL_API moehal_status moehal_engram_derive_primes(uint64_t vocab_n, int64_t max_order, int64_t heads,
                                                     int64_t layers, uint64_t* out, size_t capacity);

/* ---------------------------------------------------------------------------------------------
 * Ops (OPS.md). Shapes are written outermost first. Thread-safe: concurrent calls on one backend
 * are allowed (on device backends they are enqueued in call order on the backend's stream); the
 * caller must not let other work write the tensors of a call while it runs.
 * ------------------------------------------------------------------------------------------- */

/* §1 y[r,:] = row_scale[r] * (x[r,:] @ W_g + bias[g,:]) for the rows r of group g.
 * x [M,K] f32/bf16/f16; w [G,N,K] (MOEHAL_LAYOUT_NK) or [G,K,N] (MOEHAL_LAYOUT_KN), dtype of x;
 * group_end [G] i64 cumulative ends (non-decreasing, last <= M); row_scale [M] f32 or NULL;
 * bias [G,N] dtype of x or NULL; y [M,N] dtype of x (rows >= group_end[G-1] untouched). */
MOEHAL_API moehal_status moehal_grouped_gemm(const moehal_backend* backend, const DLTensor* x, const DLTensor* w,
                                             int32_t layout, const DLTensor* group_end, const DLTensor* row_scale,
                                             const DLTensor* bias, DLTensor* y);

/* §2 MoE gate. logits [T,E] f32/bf16/f16; bias [E] f32 (selection only) or NULL;
 * ids [T,k] i32 or i64 (i64: written through an i32 scratch, then widened; a copy);
 * weights [T,k] f32; expert_counts [E] i64 histogram of ids or NULL. */
MOEHAL_API moehal_status moehal_router_topk(const moehal_backend* backend, const DLTensor* logits,
                                            const DLTensor* bias, const moehal_router_config* config, DLTensor* ids,
                                            DLTensor* weights, DLTensor* expert_counts);

/* §2 hash routing (DeepSeek-V4's first layers): ids[t,:] = tid2eid[token_ids[t],:], in table order
 * (a repeated id is two slots). logits [T,E] f32/bf16/f16; tid2eid [V,k] i32, every entry read in
 * [0,E); token_ids [T] i64 in [0,V) (else MOEHAL_INVALID_ARGUMENT, nothing written); config: k,
 * scoring, renormalize, routed_scaling_factor are used, the group fields are ignored; ids [T,k]
 * i32 or i64 (as moehal_router_topk); weights [T,k] f32 = scores of those ids (0 for a non-finite logit), renormalized over the k
 * slots if asked, scaled once; expert_counts [E] i64 histogram of ids or NULL. */
MOEHAL_API moehal_status moehal_router_hash(const moehal_backend* backend, const DLTensor* logits,
                                            const DLTensor* tid2eid, const DLTensor* token_ids,
                                            const moehal_router_config* config, DLTensor* ids, DLTensor* weights,
                                            DLTensor* expert_counts);

/* §3 ids [T,k] i32 or i64 in [-1, E) (-1 = dropped; i64 is what torch.topk returns: each id is
 * range-checked, so 2^32 is MOEHAL_INVALID_ARGUMENT, never expert 0, then copied to i32 scratch;
 * on a device backend that copy goes through the host and waits for enqueued work)
 * -> group_end [E] i64, src_token [T*k] i64,
 * slot_row [T,k] i64 (-1 for dropped slots), and x_perm [T*k,H] = x[src_token] when x [T,H]
 * (f32/bf16/f16) is given (x and x_perm both NULL or both given). */
MOEHAL_API moehal_status moehal_moe_permute(const moehal_backend* backend, const DLTensor* ids, int64_t num_experts,
                                            const DLTensor* x, DLTensor* group_end, DLTensor* src_token,
                                            DLTensor* slot_row, DLTensor* x_perm);

/* §3 out [M,I] = silu(gate) * up with gate = h[:, :I], up = h[:, I:] of h [M,2I] (f32/bf16/f16);
 * `limit` NULL or -> a finite value > 0: gate <= limit and up in [-limit, limit] first. */
MOEHAL_API moehal_status moehal_swiglu(const moehal_backend* backend, const DLTensor* h, const float* limit,
                                       DLTensor* out);

/* §3 out [T,H] = sum_j weights[t,j] * y_perm[slot_row[t,j]] (j ascending, f32 sums; -1 adds
 * nothing). y_perm [R,H] f32/bf16/f16; slot_row [T,k] i64; weights [T,k] f32; out dtype of y_perm. */
MOEHAL_API moehal_status moehal_moe_combine(const moehal_backend* backend, const DLTensor* y_perm,
                                            const DLTensor* slot_row, const DLTensor* weights, DLTensor* out);

/* §4 ids [T] i64 canonical ids in [0, V'); positions [T] i64 or NULL (a new segment starts where
 * positions[t] <= positions[t-1]); alive [T] u8/bool or NULL; history: history_len <= N-1 host
 * ids before ids[0], oldest first (NULL when 0) -> rows [T, (N-1)*K] i64. */
MOEHAL_API moehal_status moehal_engram_hash(const moehal_backend* backend, const moehal_engram_layer* layer,
                                            const DLTensor* ids, const DLTensor* positions, const DLTensor* alive,
                                            const int64_t* history, size_t history_len, DLTensor* rows);

/* §5 out [T, C*D] = the C table rows of each token (rows [T,C] i64 in [0,R)), concatenated;
 * table [R,D] (f32/bf16/f16) or [R, D + D/32] u8 (fp8), format enum moehal_table_format. */
MOEHAL_API moehal_status moehal_gather_rows(const moehal_backend* backend, const DLTensor* table, int32_t format,
                                            const DLTensor* rows, DLTensor* out);

/* §5 engram_hash then gather_rows, fused where the backend can; table has R = the layer's rows. */
MOEHAL_API moehal_status moehal_engram_lookup(const moehal_backend* backend, const moehal_engram_layer* layer,
                                              const DLTensor* ids, const DLTensor* positions, const DLTensor* alive,
                                              const int64_t* history, size_t history_len, const DLTensor* table,
                                              int32_t format, DLTensor* out);

/* §6 grouped_gemm with quantized weights (format enum moehal_weight_format). x [M,K]: f32/bf16/f16
 * (weight-only; x_scale NULL; y and bias dtype of x), uint8 e4m3fn with fp8_block (x_scale
 * [M,ceil(K/128)] f32 or uint8 E8M0), or int8 with int8 (x_scale [M] f32, K <= 131071); y [M,N]
 * f32/bf16/f16 (rows >= group_end[G-1] untouched); group_end, row_scale, bias as moehal_grouped_gemm. */
MOEHAL_API moehal_status moehal_grouped_gemm_quant(const moehal_backend* backend, const DLTensor* x,
                                                   const DLTensor* x_scale, int32_t w_format, const DLTensor* w,
                                                   const DLTensor* w_scale, const DLTensor* group_end,
                                                   const DLTensor* row_scale, const DLTensor* bias, DLTensor* y);

/* §6 x [M,K] f32/bf16/f16 -> xq [M,K] uint8 e4m3fn, x_scale [M,ceil(K/128)] f32 or uint8 E8M0 (the
 * scale tensor's dtype picks the format); per 1x128 group, amax/448 (E8M0: next power of two). */
MOEHAL_API moehal_status moehal_quantize_fp8(const moehal_backend* backend, const DLTensor* x, DLTensor* xq,
                                             DLTensor* x_scale);

/* §6 x [M,K] f32/bf16/f16 -> xq [M,K] int8, x_scale [M] f32 (amax/127 per row, ties to even). */
MOEHAL_API moehal_status moehal_quantize_int8(const moehal_backend* backend, const DLTensor* x, DLTensor* xq,
                                              DLTensor* x_scale);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOEHAL_H */
