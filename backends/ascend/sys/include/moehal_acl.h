/*
 * moehal_acl.h -- the subset of the Huawei CANN C API that moehal uses, written by hand
 * from the public headers (acl/acl_base_rt.h, acl/acl_rt.h, aclnn/acl_meta.h,
 * aclnn/aclnn_base.h, aclnnop/aclnn_*.h; sources: the CANN API reference,
 * https://www.hiascend.com/document/detail/zh/canncommercial/800/apiref/appdevgapi/aclcppdevg_03_0095.html,
 * and the pages listed in backends/ascend-emu/RULES.md).
 *
 * Every function is declared through MOEHAL_ACL_FN(ret, name, params), which yields both
 *   - the prototype `ret name params;` (checked against a real CANN header tree when one exists)
 *   - the function-pointer typedef `typedef ret (*nameFn) params;`
 * bindgen turns the typedefs into Rust; the backend resolves symbols with these types and the
 * emulator asserts that its exports have exactly these types, so the two cannot drift apart.
 *
 * When MOEHAL_ACL_VENDOR_TYPES is defined (vendor headers already included), the type and
 * constant definitions are skipped and only the prototypes are re-declared, so the C compiler
 * rejects any prototype that disagrees with the vendor's.
 */
#ifndef MOEHAL_ACL_H
#define MOEHAL_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOEHAL_ACL_FN(ret, name, params) \
    typedef ret(*name##Fn) params;        \
    ret name params;

#ifndef MOEHAL_ACL_VENDOR_TYPES

/* ---- acl/acl_base_rt.h ------------------------------------------------------------------ */
typedef int aclError;
typedef void *aclrtStream;
typedef void *aclrtContext;
typedef uint16_t aclFloat16;

typedef enum {
    ACL_DT_UNDEFINED = -1,
    ACL_FLOAT = 0,
    ACL_FLOAT16 = 1,
    ACL_INT8 = 2,
    ACL_INT32 = 3,
    ACL_UINT8 = 4,
    ACL_INT16 = 6,
    ACL_UINT16 = 7,
    ACL_UINT32 = 8,
    ACL_INT64 = 9,
    ACL_UINT64 = 10,
    ACL_DOUBLE = 11,
    ACL_BOOL = 12,
    ACL_BF16 = 27
} aclDataType;

typedef enum {
    ACL_FORMAT_UNDEFINED = -1,
    ACL_FORMAT_NCHW = 0,
    ACL_FORMAT_NHWC = 1,
    ACL_FORMAT_ND = 2,
    ACL_FORMAT_FRACTAL_NZ = 29
} aclFormat;

/* ---- acl/acl_rt.h ------------------------------------------------------------------------ */
typedef enum aclrtMemMallocPolicy {
    ACL_MEM_MALLOC_HUGE_FIRST = 0,
    ACL_MEM_MALLOC_HUGE_ONLY = 1,
    ACL_MEM_MALLOC_NORMAL_ONLY = 2
} aclrtMemMallocPolicy;

typedef enum aclrtMemcpyKind {
    ACL_MEMCPY_HOST_TO_HOST = 0,
    ACL_MEMCPY_HOST_TO_DEVICE = 1,
    ACL_MEMCPY_DEVICE_TO_HOST = 2,
    ACL_MEMCPY_DEVICE_TO_DEVICE = 3,
    ACL_MEMCPY_DEFAULT = 4
} aclrtMemcpyKind;

typedef enum aclrtMemAttr {
    ACL_DDR_MEM = 0,
    ACL_HBM_MEM = 1
} aclrtMemAttr;

/* ---- aclError codes (acl_base_rt.h, error_codes/rt_error_codes.h) ------------------------ */
#define ACL_SUCCESS 0
#define ACL_ERROR_INVALID_PARAM 100000
#define ACL_ERROR_UNINITIALIZE 100001
#define ACL_ERROR_REPEAT_INITIALIZE 100002
#define ACL_ERROR_BAD_ALLOC 200000
#define ACL_ERROR_INVALID_DEVICE 200002
#define ACL_ERROR_RT_PARAM_INVALID 107000
#define ACL_ERROR_RT_INVALID_DEVICEID 107001
#define ACL_ERROR_RT_CONTEXT_NULL 107002
#define ACL_ERROR_RT_ADDR_UNALIGNED 107008
#define ACL_ERROR_RT_MEMORY_ALLOCATION 207001
#define ACL_ERROR_RT_MEMORY_FREE 207002

/* ---- aclnn/acl_meta.h, aclnn_base.h --------------------------------------------------------- */
typedef int32_t aclnnStatus;
typedef struct aclOpExecutor aclOpExecutor;
typedef struct aclTensor aclTensor;
typedef struct aclIntArray aclIntArray;
typedef struct aclTensorList aclTensorList;
typedef struct aclScalar aclScalar;

/* aclnnStatus codes (opdev/op_errno.h) */
#define ACLNN_SUCCESS 0
#define ACLNN_ERR_PARAM_NULLPTR 161001
#define ACLNN_ERR_PARAM_INVALID 161002
#define ACLNN_ERR_RUNTIME_ERROR 361001
#define ACLNN_ERR_INNER 561000

#endif /* MOEHAL_ACL_VENDOR_TYPES */

/* ---- runtime (libascendcl.so / libacl_rt.so) ------------------------------------------------- */
MOEHAL_ACL_FN(aclError, aclInit, (const char *configPath))
MOEHAL_ACL_FN(aclError, aclFinalize, (void))
MOEHAL_ACL_FN(const char *, aclGetRecentErrMsg, (void))
MOEHAL_ACL_FN(const char *, aclrtGetSocName, (void))
MOEHAL_ACL_FN(aclError, aclrtSetDevice, (int32_t deviceId))
MOEHAL_ACL_FN(aclError, aclrtResetDevice, (int32_t deviceId))
MOEHAL_ACL_FN(aclError, aclrtGetDevice, (int32_t *deviceId))
MOEHAL_ACL_FN(aclError, aclrtGetDeviceCount, (uint32_t *count))
MOEHAL_ACL_FN(aclError, aclrtSynchronizeDevice, (void))
MOEHAL_ACL_FN(aclError, aclrtCreateContext, (aclrtContext *context, int32_t deviceId))
MOEHAL_ACL_FN(aclError, aclrtDestroyContext, (aclrtContext context))
MOEHAL_ACL_FN(aclError, aclrtSetCurrentContext, (aclrtContext context))
MOEHAL_ACL_FN(aclError, aclrtGetCurrentContext, (aclrtContext *context))
MOEHAL_ACL_FN(aclError, aclrtCreateStream, (aclrtStream *stream))
MOEHAL_ACL_FN(aclError, aclrtDestroyStream, (aclrtStream stream))
MOEHAL_ACL_FN(aclError, aclrtSynchronizeStream, (aclrtStream stream))
MOEHAL_ACL_FN(aclError, aclrtMalloc, (void **devPtr, size_t size, aclrtMemMallocPolicy policy))
MOEHAL_ACL_FN(aclError, aclrtFree, (void *devPtr))
MOEHAL_ACL_FN(aclError, aclrtMemcpy,
              (void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind))
MOEHAL_ACL_FN(aclError, aclrtMemset, (void *devPtr, size_t maxCount, int32_t value, size_t count))
MOEHAL_ACL_FN(aclError, aclrtGetMemInfo, (aclrtMemAttr attr, size_t *free, size_t *total))

/* ---- meta (libnnopbase.so) --------------------------------------------------------------------- */
MOEHAL_ACL_FN(aclTensor *, aclCreateTensor,
              (const int64_t *viewDims, uint64_t viewDimsNum, aclDataType dataType,
               const int64_t *stride, int64_t offset, aclFormat format, const int64_t *storageDims,
               uint64_t storageDimsNum, void *tensorData))
MOEHAL_ACL_FN(aclnnStatus, aclDestroyTensor, (const aclTensor *tensor))
MOEHAL_ACL_FN(aclIntArray *, aclCreateIntArray, (const int64_t *value, uint64_t size))
MOEHAL_ACL_FN(aclnnStatus, aclDestroyIntArray, (const aclIntArray *array))
MOEHAL_ACL_FN(aclTensorList *, aclCreateTensorList, (const aclTensor *const *value, uint64_t size))
MOEHAL_ACL_FN(aclnnStatus, aclDestroyTensorList, (const aclTensorList *array))
MOEHAL_ACL_FN(aclnnStatus, aclDestroyAclOpExecutor, (aclOpExecutor * executor))
/* aclCreateScalar: a host scalar the runtime copies (value read as dataType), for the aclScalar
 * arguments of aclnnClamp / aclnnMuls ([HA canncommercial/800 aclCreateScalar, acl_meta.h]). */
MOEHAL_ACL_FN(aclScalar *, aclCreateScalar, (void *value, aclDataType dataType))
MOEHAL_ACL_FN(aclnnStatus, aclDestroyScalar, (const aclScalar *scalar))

/* ---- ops (libopapi.so or its per-domain splits) ------------------------------------------------- */
/* Every launch has the same shape. */
#define MOEHAL_ACLNN_LAUNCH(name)                                                            \
    MOEHAL_ACL_FN(aclnnStatus, name,                                                         \
                  (void *workspace, uint64_t workspaceSize, aclOpExecutor *executor,        \
                   aclrtStream stream))

MOEHAL_ACL_FN(aclnnStatus, aclnnGroupedMatmulV4GetWorkspaceSize,
              (const aclTensorList *x, const aclTensorList *weight, const aclTensorList *biasOptional,
               const aclTensorList *scaleOptional, const aclTensorList *offsetOptional,
               const aclTensorList *antiquantScaleOptional,
               const aclTensorList *antiquantOffsetOptional,
               const aclTensorList *perTokenScaleOptional, const aclTensor *groupListOptional,
               const aclTensorList *activationInputOptional,
               const aclTensorList *activationQuantScaleOptional,
               const aclTensorList *activationQuantOffsetOptional, int64_t splitItem,
               int64_t groupType, int64_t groupListType, int64_t actType, aclTensorList *out,
               aclTensorList *activationFeatureOutOptional,
               aclTensorList *dynQuantScaleOutOptional, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnGroupedMatmulV4)

MOEHAL_ACL_FN(aclnnStatus, aclnnGroupedMatmulV3GetWorkspaceSize,
              (const aclTensorList *x, const aclTensorList *weight, const aclTensorList *biasOptional,
               const aclTensorList *scaleOptional, const aclTensorList *offsetOptional,
               const aclTensorList *antiquantScaleOptional,
               const aclTensorList *antiquantOffsetOptional, const aclTensor *groupListOptional,
               int64_t splitItem, int64_t groupType, const aclTensorList *y,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnGroupedMatmulV3)

MOEHAL_ACL_FN(aclnnStatus, aclnnMoeGatingTopKSoftmaxGetWorkspaceSize,
              (const aclTensor *x, const aclTensor *finishedOptional, int64_t k,
               const aclTensor *yOut, const aclTensor *expertIdxOut, const aclTensor *rowIdxOut,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnMoeGatingTopKSoftmax)

MOEHAL_ACL_FN(aclnnStatus, aclnnMoeGatingTopKGetWorkspaceSize,
              (const aclTensor *x, const aclTensor *biasOptional, int64_t k, int64_t kGroup,
               int64_t groupCount, int64_t groupSelectMode, int64_t renorm, int64_t normType,
               bool outFlag, double routedScalingFactor, double eps, const aclTensor *yOut,
               const aclTensor *expertIdxOut, const aclTensor *outOut, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnMoeGatingTopK)

MOEHAL_ACL_FN(aclnnStatus, aclnnMoeInitRoutingV2GetWorkspaceSize,
              (const aclTensor *x, const aclTensor *expertIdx, int64_t activeNum,
               int64_t expertCapacity, int64_t expertNum, int64_t dropPadMode,
               int64_t expertTokensCountOrCumsumFlag, bool expertTokensBeforeCapacityFlag,
               const aclTensor *expandedXOut, const aclTensor *expandedRowIdxOut,
               const aclTensor *expertTokensCountOrCumsumOutOptional,
               const aclTensor *expertTokensBeforeCapacityOutOptional, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnMoeInitRoutingV2)

MOEHAL_ACL_FN(aclnnStatus, aclnnMoeInitRoutingV3GetWorkspaceSize,
              (const aclTensor *x, const aclTensor *expertIdx, const aclTensor *scaleOptional,
               const aclTensor *offsetOptional, int64_t activeNum, int64_t expertCapacity,
               int64_t expertNum, int64_t dropPadMode, int64_t expertTokensNumType,
               bool expertTokensNumFlag, int64_t quantMode,
               const aclIntArray *activeExpertRangeOptional, int64_t rowIdxType,
               const aclTensor *expandedXOut, const aclTensor *expandedRowIdxOut,
               const aclTensor *expertTokensCountOrCumsumOut, const aclTensor *expandedScaleOut,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnMoeInitRoutingV3)

MOEHAL_ACL_FN(aclnnStatus, aclnnMoeFinalizeRoutingV2GetWorkspaceSize,
              (const aclTensor *expandedX, const aclTensor *expandedRowIdx,
               const aclTensor *x1Optional, const aclTensor *x2Optional,
               const aclTensor *biasOptional, const aclTensor *scalesOptional,
               const aclTensor *expertIdxOptional, int64_t dropPadMode, const aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnMoeFinalizeRoutingV2)

MOEHAL_ACL_FN(aclnnStatus, aclnnEmbeddingGetWorkspaceSize,
              (const aclTensor *weight, const aclTensor *indices, const aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnEmbedding)

MOEHAL_ACL_FN(aclnnStatus, aclnnGatherV2GetWorkspaceSize,
              (const aclTensor *self, int64_t dim, const aclTensor *index, aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnGatherV2)

MOEHAL_ACL_FN(aclnnStatus, aclnnIndexSelectGetWorkspaceSize,
              (const aclTensor *self, int64_t dim, const aclTensor *index, aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnIndexSelect)

MOEHAL_ACL_FN(aclnnStatus, aclnnCastGetWorkspaceSize,
              (const aclTensor *self, const aclDataType dtype, aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnCast)

/* aclnnSwiGlu: out = Swish(A) * B, A / B the first / second half of x along dim
 * ([HA canncommercial/800 aclnnSwiGlu.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnSwiGluGetWorkspaceSize,
              (const aclTensor *x, int64_t dim, const aclTensor *out, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnSwiGlu)

/* aclnnInplaceMul: selfRef = selfRef * other, other broadcast to selfRef
 * ([HA canncommercial/800 aclnnMul&aclnnInplaceMul.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnInplaceMulGetWorkspaceSize,
              (aclTensor *selfRef, const aclTensor *other, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnInplaceMul)

/* aclnnClamp: out = max(min(self, clipValueMax), clipValueMin), a NULL bound is no bound
 * ([HA canncommercial/800 aclnnClamp.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnClampGetWorkspaceSize,
              (const aclTensor *self, const aclScalar *clipValueMin, const aclScalar *clipValueMax,
               aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnClamp)

/* aclnnClampMax: out = min(self, clipValueMax)
 * ([HA canncommercial/800 aclnnClampMax&aclnnInplaceClampMax.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnClampMaxGetWorkspaceSize,
              (const aclTensor *self, const aclScalar *clipValueMax, aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnClampMax)

/* aclnnEqScalar: out = (self == other) elementwise, out BOOL
 * ([HA canncommercial/800 aclnnEqScalar&aclnnInplaceEqScalar.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnEqScalarGetWorkspaceSize,
              (const aclTensor *self, const aclScalar *other, aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnEqScalar)

/* aclnnInplaceMaskedFillScalar: selfRef[i] = value where mask[i] (BOOL, broadcast to selfRef)
 * ([HA canncommercial/800 aclnnInplaceMaskedFillScalar.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnInplaceMaskedFillScalarGetWorkspaceSize,
              (aclTensor *selfRef, const aclTensor *mask, const aclScalar *value,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnInplaceMaskedFillScalar)

/* aclnnSoftmax: out = softmax(self) along dim ([HA canncommercial/800 aclnnSoftmax.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnSoftmaxGetWorkspaceSize,
              (const aclTensor *self, int64_t dim, aclTensor *out, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnSoftmax)

/* aclnnSigmoid: out = 1 / (1 + exp(-self)) ([HA canncommercial/800 aclnnSigmoid.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnSigmoidGetWorkspaceSize,
              (const aclTensor *self, aclTensor *out, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnSigmoid)

/* aclnnSqrt: out = sqrt(self), NaN for a negative element ([HA canncommercial/800
 * aclnnSqrt&aclnnInplaceSqrt.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnSqrtGetWorkspaceSize,
              (const aclTensor *self, aclTensor *out, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnSqrt)

/* aclnnSoftplus: out = ln(1 + exp(beta * self)) / beta where beta * self <= threshold, else self
 * ([HA canncommercial/800 aclnnSoftplus.md]; [HA 850alpha002 aclnnSoftplus.md] formula). */
MOEHAL_ACL_FN(aclnnStatus, aclnnSoftplusGetWorkspaceSize,
              (const aclTensor *self, const aclScalar *beta, const aclScalar *threshold,
               aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnSoftplus)

/* aclnnGather: out[i][j] = self[i][index[i][j]] for dim 1 (torch.gather)
 * ([HA canncommercial/800 aclnnGather.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnGatherGetWorkspaceSize,
              (const aclTensor *self, const int64_t dim, const aclTensor *index, aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnGather)

/* aclnnReduceSum: out = sum of self over dim (an aclIntArray), in dtype
 * ([HA canncommercial/800 aclnnReduceSum.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnReduceSumGetWorkspaceSize,
              (const aclTensor *self, const aclIntArray *dim, bool keepDim, aclDataType dtype,
               aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnReduceSum)

/* aclnnDiv: out = self / other, broadcast ([HA canncommercial/800 aclnnDiv.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnDivGetWorkspaceSize,
              (const aclTensor *self, const aclTensor *other, aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnDiv)

/* aclnnMuls: out = self * other (a scalar) ([HA canncommercial/800 aclnnMuls&aclnnInplaceMuls.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnMulsGetWorkspaceSize,
              (const aclTensor *self, const aclScalar *other, aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnMuls)

/* Issue 13, second group (emulator branch emu13b): sorting and ranges for a device-side
 * moe_permute. */

/* aclnnSort: valuesOut / indicesOut (INT64) = self sorted along dim
 * ([OM math/sort/docs/aclnnSort.md]; [HA 82RC1alpha002 aclnnSort.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnSortGetWorkspaceSize,
              (const aclTensor *self, bool stable, int64_t dim, bool descending,
               aclTensor *valuesOut, aclTensor *indicesOut, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnSort)

/* aclnnArgsort: out (INT64) = the sorting indices of self along dim
 * ([HA Atlas200IDKA2 23.0.RC2 aclcppdevg_03_0214]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnArgsortGetWorkspaceSize,
              (const aclTensor *self, int64_t dim, bool descending, aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnArgsort)

/* aclnnArange: out[i] = start + i * step over [start, end), 1-D of ceil((end - start) / step)
 * ([HA canncommercial/800 aclnnArange.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnArangeGetWorkspaceSize,
              (const aclScalar *start, const aclScalar *end, const aclScalar *step, aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnArange)

/* aclnnSearchSorted: out[i] = left (right) insertion point of self[i] in the sorted last axis of
 * sortedSequence, through sorter (INT64, may be NULL); out INT32 when outInt32 else INT64
 * ([OM math/search_sorted/docs/aclnnSearchSorted.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnSearchSortedGetWorkspaceSize,
              (const aclTensor *sortedSequence, const aclTensor *self, bool outInt32, bool right,
               const aclTensor *sorter, aclTensor *out, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnSearchSorted)

/* aclnnScatter / aclnnInplaceScatter: torch.scatter along dim, reduce 0 replace / 1 add /
 * 2 multiply ([HA canncommercial/800 aclnnScatter&aclnnInplaceScatter.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnScatterGetWorkspaceSize,
              (const aclTensor *self, int64_t dim, const aclTensor *index, const aclTensor *src,
               int64_t reduce, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnScatter)
MOEHAL_ACL_FN(aclnnStatus, aclnnInplaceScatterGetWorkspaceSize,
              (aclTensor *selfRef, int64_t dim, const aclTensor *index, const aclTensor *src,
               int64_t reduce, uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnInplaceScatter)

/* aclnnFloorDivides / aclnnInplaceFloorDivides: out = floor(self / other), other a host scalar
 * ([HA canncommercial/800 aclnnFloorDivides&aclnnInplaceFloorDivides.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnFloorDividesGetWorkspaceSize,
              (const aclTensor *self, const aclScalar *other, aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnFloorDivides)
MOEHAL_ACL_FN(aclnnStatus, aclnnInplaceFloorDividesGetWorkspaceSize,
              (aclTensor *selfRef, const aclScalar *other, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnInplaceFloorDivides)

/* aclnnAdds: out = self + alpha * other ([HA canncommercial/800 aclnnAdds.md]); aclnnInplaceAdds:
 * selfRef += alpha * other ([HA canncommercial/800 aclnnInplaceAdds.md], selfRef const as printed). */
MOEHAL_ACL_FN(aclnnStatus, aclnnAddsGetWorkspaceSize,
              (const aclTensor *self, const aclScalar *other, const aclScalar *alpha,
               aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnAdds)
MOEHAL_ACL_FN(aclnnStatus, aclnnInplaceAddsGetWorkspaceSize,
              (const aclTensor *selfRef, const aclScalar *other, const aclScalar *alpha,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnInplaceAdds)

/* aclnnAmax / aclnnAmin: the largest / smallest element over the dims (an aclIntArray), keepDim
 * keeps them as 1 ([HA 82RC1alpha002 aclnnAmax.md], [HA 82RC1alpha001 aclnnAmin.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnAmaxGetWorkspaceSize,
              (const aclTensor *self, const aclIntArray *dim, bool keepDim, aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnAmax)
MOEHAL_ACL_FN(aclnnStatus, aclnnAminGetWorkspaceSize,
              (const aclTensor *self, const aclIntArray *dim, bool keepDim, aclTensor *out,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnAmin)

/* Issue 13, third group (emulator branch emu13c): masks, selection, tensor add/sub, scatter-add,
 * top-k. */

/* aclnnIsFinite: out (BOOL) = self is neither +-inf nor NaN ([HA 850alpha002 aclnnIsFinite.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnIsFiniteGetWorkspaceSize,
              (const aclTensor *self, aclTensor *out, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnIsFinite)

/* aclnnLogicalNot / aclnnInplaceLogicalNot: out = !(self != 0)
 * ([HA canncommercial/800 aclnnLogicalNot&aclnnInplaceLogicalNot.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnLogicalNotGetWorkspaceSize,
              (const aclTensor *self, aclTensor *out, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnLogicalNot)
MOEHAL_ACL_FN(aclnnStatus, aclnnInplaceLogicalNotGetWorkspaceSize,
              (aclTensor *selfRef, uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnInplaceLogicalNot)

/* aclnnSWhere: out = condition ? self : other, broadcast, promoted type
 * ([HA 83RC1 aclnnSWhere.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnSWhereGetWorkspaceSize,
              (const aclTensor *condition, const aclTensor *self, const aclTensor *other,
               aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnSWhere)

/* aclnnAdd / aclnnInplaceAdd: out = self + alpha * other, broadcast, promoted type
 * ([HA canncommercial/800 aclnnAdd&aclnnInplaceAdd.md], selfRef const as printed). */
MOEHAL_ACL_FN(aclnnStatus, aclnnAddGetWorkspaceSize,
              (const aclTensor *self, const aclTensor *other, const aclScalar *alpha,
               aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnAdd)
MOEHAL_ACL_FN(aclnnStatus, aclnnInplaceAddGetWorkspaceSize,
              (const aclTensor *selfRef, const aclTensor *other, const aclScalar *alpha,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnInplaceAdd)

/* aclnnSub / aclnnInplaceSub: out = self - alpha * other
 * ([HA canncommercial/800 aclnnSub&aclnnInplaceSub.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnSubGetWorkspaceSize,
              (const aclTensor *self, const aclTensor *other, const aclScalar *alpha,
               aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnSub)
MOEHAL_ACL_FN(aclnnStatus, aclnnInplaceSubGetWorkspaceSize,
              (aclTensor *selfRef, const aclTensor *other, const aclScalar *alpha,
               uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnInplaceSub)

/* aclnnScatterAdd: torch.scatter_add along dim (duplicates accumulate)
 * ([HA canncommercial/800 aclnnScatterAdd.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnScatterAddGetWorkspaceSize,
              (const aclTensor *self, int64_t dim, const aclTensor *index, const aclTensor *src,
               aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnScatterAdd)

/* aclnnTopk: the k largest (smallest) of self along dim, sorted; indicesOut INT64
 * ([HA canncommercial/800 aclnnTopk.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnTopkGetWorkspaceSize,
              (const aclTensor *self, int64_t k, int64_t dim, bool largest, bool sorted,
               aclTensor *valuesOut, aclTensor *indicesOut, uint64_t *workspaceSize,
               aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnTopk)

/* Issue 13, W8A8 path (emulator branch emu13d). */

/* aclnnDynamicQuant: per-row symmetric INT8 quantisation, scaleOut = row_max(|x*smooth|)/127,
 * yOut = round(x*smooth/scaleOut) ([HA canncommercial/800 aclnnDynamicQuant.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnDynamicQuantGetWorkspaceSize,
              (const aclTensor *x, const aclTensor *smoothScalesOptional, const aclTensor *yOut,
               const aclTensor *scaleOut, uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnDynamicQuant)

/* aclnnCalculateMatmulWeightSizeV2: elements of the NZ form of a (batch.., n, k) weight,
 * INT8 Align(n,16)*Align(k,32) ([HA 81RC1alpha002 aclnnCalculateMatmulWeightSizeV2.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnCalculateMatmulWeightSizeV2,
              (const aclIntArray *tensorShape, aclDataType dataType, uint64_t *weightTensorSize))

/* aclnnTransMatmulWeight: rewrite a Matmul weight in place into its affine (FRACTAL_NZ) format
 * ([HA 81RC1alpha001 aclnnTransMatmulWeight.md]). */
MOEHAL_ACL_FN(aclnnStatus, aclnnTransMatmulWeightGetWorkspaceSize,
              (aclTensor *mmWeightRef, uint64_t *workspaceSize, aclOpExecutor **executor))
MOEHAL_ACLNN_LAUNCH(aclnnTransMatmulWeight)

#ifdef __cplusplus
}
#endif

#endif /* MOEHAL_ACL_H */
