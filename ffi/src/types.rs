//! The `#[repr(C)]` types and constants of the C ABI. `include/moehal.h` is generated from them
//! and from the functions of [`crate::abi`] by cbindgen (`cbindgen.toml`; `tests/header.rs` fails
//! when the committed header is not current, and checks sizes, offsets and values in C).

#![allow(non_camel_case_types)]
// The `///` comments of the exported items are the C header's documentation (cbindgen copies
// them into include/moehal.h), written for C readers: `w [G,N,K]` is a shape, not a rustdoc link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::ffi::{c_char, c_void};

/// Version of this header's ABI; compare with moehal_abi_version() at run time.
///
/// Bumped on any incompatible change of a prototype, struct or constant.
pub const MOEHAL_ABI_VERSION: u32 = 1;

/// Status code returned by every fallible function: a value of `enum moehal_status_code`.
pub type moehal_status = i32;

/// The values of `moehal_status` (the functions return them as `int32_t`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum moehal_status_code {
    /// Success.
    MOEHAL_OK = 0,
    /// Bad argument, NULL pointer, bad descriptor, wrong device, overlap: an argument breaks the
    /// op contract or the ABI rules. Nothing was written.
    MOEHAL_INVALID_ARGUMENT = 1,
    /// The backend lacks the capability (dtype, layout, streams). Nothing was written.
    MOEHAL_UNSUPPORTED = 2,
    /// The backend cannot run on this machine / is not compiled in (library or device missing).
    MOEHAL_UNAVAILABLE = 3,
    /// An allocation failed.
    MOEHAL_OUT_OF_MEMORY = 4,
    /// A driver or runtime call failed.
    MOEHAL_DEVICE_ERROR = 5,
    /// A bug inside moehal was caught at the boundary (a Rust panic); the message says where.
    MOEHAL_PANIC = 6,
}

/// Router score function (`moehal_router_config.scoring`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum moehal_scoring {
    /// Softmax over all experts (max-subtracted).
    MOEHAL_SCORING_SOFTMAX = 0,
    /// Logistic sigmoid (DeepSeek-V3).
    MOEHAL_SCORING_SIGMOID = 1,
    /// sqrt(softplus(x)) (DeepSeek-V4).
    MOEHAL_SCORING_SQRT_SOFTPLUS = 2,
}

/// Group score (`moehal_router_config.group_score`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum moehal_group_score {
    /// Sum of the two largest selection scores of the group.
    MOEHAL_GROUP_SCORE_TOP2_SUM = 0,
    /// The largest selection score of the group.
    MOEHAL_GROUP_SCORE_MAX = 1,
}

/// Weight layout of `moehal_grouped_gemm`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum moehal_weight_layout {
    /// w: [G, N, K] (checkpoint Linear weight, out x in).
    MOEHAL_LAYOUT_NK = 0,
    /// w: [G, K, N] (torch._grouped_mm, Ascend GroupedMatmul).
    MOEHAL_LAYOUT_KN = 1,
}

/// Engram table format of `moehal_gather_rows` / `moehal_engram_lookup`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum moehal_table_format {
    /// [R, D] float32 -> float32 out.
    MOEHAL_TABLE_F32 = 0,
    /// [R, D] bfloat16 -> bfloat16 out.
    MOEHAL_TABLE_BF16 = 1,
    /// [R, D] float16 -> float16 out.
    MOEHAL_TABLE_F16 = 2,
    /// [R, D + D/32] uint8: D e4m3fn bytes then D/32 UE8M0 scales per row -> float32 or
    /// bfloat16 out.
    MOEHAL_TABLE_FP8_E4M3_UE8M0 = 3,
}

/// Quantized weight format of `moehal_grouped_gemm_quant` (OPS.md §6); weights in layout NK.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum moehal_weight_format {
    /// w [G,N,K] uint8 e4m3fn; w_scale [G,ceil(N/128),ceil(K/128)] f32 or uint8 E8M0.
    MOEHAL_WEIGHT_FP8_BLOCK = 0,
    /// w [G,N,K/2] uint8 packed E2M1 (low nibble = even k); w_scale [G,N,K/32] E8M0.
    MOEHAL_WEIGHT_MXFP4 = 1,
    /// w [G,N,K] int8; w_scale [G,N] f32 per output channel.
    MOEHAL_WEIGHT_INT8 = 2,
}

// The constants Rust callers use, one per enumerator above (values taken from the enums, so the
// two cannot drift; cbindgen.toml excludes them from the header, which has the enumerators).

/// [`moehal_status_code::MOEHAL_OK`].
pub const MOEHAL_OK: moehal_status = moehal_status_code::MOEHAL_OK as moehal_status;
/// [`moehal_status_code::MOEHAL_INVALID_ARGUMENT`].
pub const MOEHAL_INVALID_ARGUMENT: moehal_status = moehal_status_code::MOEHAL_INVALID_ARGUMENT as moehal_status;
/// [`moehal_status_code::MOEHAL_UNSUPPORTED`].
pub const MOEHAL_UNSUPPORTED: moehal_status = moehal_status_code::MOEHAL_UNSUPPORTED as moehal_status;
/// [`moehal_status_code::MOEHAL_UNAVAILABLE`].
pub const MOEHAL_UNAVAILABLE: moehal_status = moehal_status_code::MOEHAL_UNAVAILABLE as moehal_status;
/// [`moehal_status_code::MOEHAL_OUT_OF_MEMORY`].
pub const MOEHAL_OUT_OF_MEMORY: moehal_status = moehal_status_code::MOEHAL_OUT_OF_MEMORY as moehal_status;
/// [`moehal_status_code::MOEHAL_DEVICE_ERROR`].
pub const MOEHAL_DEVICE_ERROR: moehal_status = moehal_status_code::MOEHAL_DEVICE_ERROR as moehal_status;
/// [`moehal_status_code::MOEHAL_PANIC`].
pub const MOEHAL_PANIC: moehal_status = moehal_status_code::MOEHAL_PANIC as moehal_status;

/// [`moehal_scoring::MOEHAL_SCORING_SOFTMAX`].
pub const MOEHAL_SCORING_SOFTMAX: i32 = moehal_scoring::MOEHAL_SCORING_SOFTMAX as i32;
/// [`moehal_scoring::MOEHAL_SCORING_SIGMOID`].
pub const MOEHAL_SCORING_SIGMOID: i32 = moehal_scoring::MOEHAL_SCORING_SIGMOID as i32;
/// [`moehal_scoring::MOEHAL_SCORING_SQRT_SOFTPLUS`].
pub const MOEHAL_SCORING_SQRT_SOFTPLUS: i32 = moehal_scoring::MOEHAL_SCORING_SQRT_SOFTPLUS as i32;

/// [`moehal_group_score::MOEHAL_GROUP_SCORE_TOP2_SUM`].
pub const MOEHAL_GROUP_SCORE_TOP2_SUM: i32 = moehal_group_score::MOEHAL_GROUP_SCORE_TOP2_SUM as i32;
/// [`moehal_group_score::MOEHAL_GROUP_SCORE_MAX`].
pub const MOEHAL_GROUP_SCORE_MAX: i32 = moehal_group_score::MOEHAL_GROUP_SCORE_MAX as i32;

/// [`moehal_weight_layout::MOEHAL_LAYOUT_NK`].
pub const MOEHAL_LAYOUT_NK: i32 = moehal_weight_layout::MOEHAL_LAYOUT_NK as i32;
/// [`moehal_weight_layout::MOEHAL_LAYOUT_KN`].
pub const MOEHAL_LAYOUT_KN: i32 = moehal_weight_layout::MOEHAL_LAYOUT_KN as i32;

/// [`moehal_table_format::MOEHAL_TABLE_F32`].
pub const MOEHAL_TABLE_F32: i32 = moehal_table_format::MOEHAL_TABLE_F32 as i32;
/// [`moehal_table_format::MOEHAL_TABLE_BF16`].
pub const MOEHAL_TABLE_BF16: i32 = moehal_table_format::MOEHAL_TABLE_BF16 as i32;
/// [`moehal_table_format::MOEHAL_TABLE_F16`].
pub const MOEHAL_TABLE_F16: i32 = moehal_table_format::MOEHAL_TABLE_F16 as i32;
/// [`moehal_table_format::MOEHAL_TABLE_FP8_E4M3_UE8M0`].
pub const MOEHAL_TABLE_FP8_E4M3_UE8M0: i32 = moehal_table_format::MOEHAL_TABLE_FP8_E4M3_UE8M0 as i32;

/// [`moehal_weight_format::MOEHAL_WEIGHT_FP8_BLOCK`].
pub const MOEHAL_WEIGHT_FP8_BLOCK: i32 = moehal_weight_format::MOEHAL_WEIGHT_FP8_BLOCK as i32;
/// [`moehal_weight_format::MOEHAL_WEIGHT_MXFP4`].
pub const MOEHAL_WEIGHT_MXFP4: i32 = moehal_weight_format::MOEHAL_WEIGHT_MXFP4 as i32;
/// [`moehal_weight_format::MOEHAL_WEIGHT_INT8`].
pub const MOEHAL_WEIGHT_INT8: i32 = moehal_weight_format::MOEHAL_WEIGHT_INT8 as i32;

/// DLPack device types (`DLDeviceType`, DLPack v0.8 / v1).
pub mod dl_device {
    /// `kDLCPU`.
    pub const CPU: i32 = 1;
    /// `kDLCUDA`.
    pub const CUDA: i32 = 2;
    /// `kDLCUDAHost` (pinned host memory).
    pub const CUDA_HOST: i32 = 3;
    /// `kDLROCM`.
    pub const ROCM: i32 = 10;
    /// `kDLROCMHost`.
    pub const ROCM_HOST: i32 = 11;
    /// `kDLExtDev` (used here for Ascend NPU memory, as torch_npu does).
    pub const EXT_DEV: i32 = 12;
    /// `kDLCUDAManaged`.
    pub const CUDA_MANAGED: i32 = 13;
}

/// DLPack type codes (`DLDataTypeCode`).
pub mod dl_code {
    /// `kDLInt`.
    pub const INT: u8 = 0;
    /// `kDLUInt`.
    pub const UINT: u8 = 1;
    /// `kDLFloat`.
    pub const FLOAT: u8 = 2;
    /// `kDLBfloat`.
    pub const BFLOAT: u8 = 4;
    /// `kDLBool` (accepted where a u8 mask is expected: 8-bit booleans).
    pub const BOOL: u8 = 6;
}

/// DLPack `DLDevice`: a device type (`DLDeviceType`, an `int`-sized enum) and ordinal.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DLDevice {
    /// `DLDeviceType` value ([`dl_device`]).
    pub device_type: i32,
    /// Device ordinal.
    pub device_id: i32,
}

/// DLPack `DLDataType`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DLDataType {
    /// Type code ([`dl_code`]).
    pub code: u8,
    /// Bits per lane.
    pub bits: u8,
    /// Lanes (1 for every type moehal takes).
    pub lanes: u16,
}

/// DLPack `DLTensor` (identical in DLPack v0.8 and v1.x). Not owning.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DLTensor {
    /// Base address (host or device); element 0 is at `data + byte_offset`.
    pub data: *mut c_void,
    /// Where the memory lives.
    pub device: DLDevice,
    /// Number of dimensions.
    pub ndim: i32,
    /// Element type.
    pub dtype: DLDataType,
    /// `ndim` extents.
    pub shape: *mut i64,
    /// `ndim` strides in elements, or NULL for row-major contiguous.
    pub strides: *mut i64,
    /// Offset of element 0 from `data`, in bytes.
    pub byte_offset: u64,
}

/// Options of moehal_router_topk (OPS.md §2).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct moehal_router_config {
    /// Experts per token, 1 <= k <= E.
    pub k: i64,
    /// enum moehal_scoring.
    pub scoring: i32,
    /// enum moehal_group_score; used only when n_group > 1.
    pub group_score: i32,
    /// Expert groups; 0 or 1 = no group limit; must divide E.
    pub n_group: i64,
    /// Groups kept per token, 1 <= topk_group <= n_group.
    pub topk_group: i64,
    /// Nonzero: weights /= (sum of selected + 1e-20).
    pub renormalize: i32,
    /// Multiplies the weights exactly once; finite (1.0 = none).
    pub routed_scaling_factor: f32,
}

/// What moehal_backend_device_info reports. Strings belong to the backend handle (they live
/// until moehal_backend_close).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct moehal_device_info {
    /// Device name (CPU model, GPU name, Ascend SoC).
    pub name: *const c_char,
    /// Capability / instruction sets: "sm_90", "avx512f avx512bf16", "Ascend910B1", ...
    pub capability: *const c_char,
    /// Device memory in bytes; 0 = unknown.
    pub memory_bytes: u64,
    /// Threads / SMs / AI cores; -1 = unknown.
    pub compute_units: i64,
    /// The DLPack device of this backend's tensors (kDLCPU for host backends).
    pub device: DLDevice,
}
