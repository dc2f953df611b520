//! The `#[repr(C)]` types and constants of the C ABI, mirrored one to one by `include/moehal.h`
//! (the tests `tests/header.rs` compare names, values, sizes and offsets with the header).

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

/// ABI version of this library; `MOEHAL_ABI_VERSION` in the header. Bumped on any incompatible
/// change of a prototype, struct or constant.
pub const MOEHAL_ABI_VERSION: u32 = 1;

/// Status code returned by every fallible function (`moehal_status` in the header).
pub type moehal_status = i32;

/// Success.
pub const MOEHAL_OK: moehal_status = 0;
/// An argument breaks the op contract or the ABI rules (NULL pointer, bad descriptor, wrong
/// device, overlapping output). Nothing was written.
pub const MOEHAL_INVALID_ARGUMENT: moehal_status = 1;
/// The backend lacks the capability (dtype, layout, streams). Nothing was written.
pub const MOEHAL_UNSUPPORTED: moehal_status = 2;
/// The backend cannot be used on this machine (library or device missing, not compiled in).
pub const MOEHAL_UNAVAILABLE: moehal_status = 3;
/// An allocation failed.
pub const MOEHAL_OUT_OF_MEMORY: moehal_status = 4;
/// A driver or runtime call failed.
pub const MOEHAL_DEVICE_ERROR: moehal_status = 5;
/// A bug inside moehal was caught at the boundary (a Rust panic); the message says where.
pub const MOEHAL_PANIC: moehal_status = 6;

/// Router score function: softmax over all experts.
pub const MOEHAL_SCORING_SOFTMAX: i32 = 0;
/// Router score function: logistic sigmoid.
pub const MOEHAL_SCORING_SIGMOID: i32 = 1;
/// Router score function: `sqrt(softplus(x))`.
pub const MOEHAL_SCORING_SQRT_SOFTPLUS: i32 = 2;

/// Group score: sum of the two largest selection scores of the group.
pub const MOEHAL_GROUP_SCORE_TOP2_SUM: i32 = 0;
/// Group score: the largest selection score of the group.
pub const MOEHAL_GROUP_SCORE_MAX: i32 = 1;

/// Weight layout `[G, N, K]`.
pub const MOEHAL_LAYOUT_NK: i32 = 0;
/// Weight layout `[G, K, N]`.
pub const MOEHAL_LAYOUT_KN: i32 = 1;

/// Table format: `[R, D]` f32.
pub const MOEHAL_TABLE_F32: i32 = 0;
/// Table format: `[R, D]` bf16.
pub const MOEHAL_TABLE_BF16: i32 = 1;
/// Table format: `[R, D]` f16.
pub const MOEHAL_TABLE_F16: i32 = 2;
/// Table format: `[R, D + D/32]` u8, e4m3fn bytes then UE8M0 scale bytes per row.
pub const MOEHAL_TABLE_FP8_E4M3_UE8M0: i32 = 3;

/// Quantized weight format (OPS.md §6): u8 `[G, N, K]` e4m3fn, scale f32 or u8 E8M0
/// `[G, ⌈N/128⌉, ⌈K/128⌉]`.
pub const MOEHAL_WEIGHT_FP8_BLOCK: i32 = 0;
/// Quantized weight format: u8 `[G, N, K/2]` packed E2M1 (low nibble = even k), u8 E8M0 `[G, N, K/32]`.
pub const MOEHAL_WEIGHT_MXFP4: i32 = 1;
/// Quantized weight format: i8 `[G, N, K]`, f32 `[G, N]` per-channel scale.
pub const MOEHAL_WEIGHT_INT8: i32 = 2;

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

/// Options of `moehal_router_topk` (OPS.md §2).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct moehal_router_config {
    /// Experts per token, `1 <= k <= E`.
    pub k: i64,
    /// `MOEHAL_SCORING_*`.
    pub scoring: i32,
    /// `MOEHAL_GROUP_SCORE_*` (used only when `n_group > 1`).
    pub group_score: i32,
    /// Number of expert groups; 0 or 1 = no group limit.
    pub n_group: i64,
    /// Groups kept per token when `n_group > 1`.
    pub topk_group: i64,
    /// Nonzero: divide the selected weights by their sum (plus 1e-20).
    pub renormalize: i32,
    /// Multiplies the weights exactly once; finite.
    pub routed_scaling_factor: f32,
}

/// What `moehal_backend_device_info` reports. Strings are owned by the backend handle and live
/// until `moehal_backend_close`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct moehal_device_info {
    /// Device name (CPU model, GPU name, Ascend SoC).
    pub name: *const c_char,
    /// Capability / instruction sets (`"sm_90"`, `"avx512f avx512bf16"`).
    pub capability: *const c_char,
    /// Device memory in bytes; 0 when unknown.
    pub memory_bytes: u64,
    /// Threads or compute units; -1 when unknown.
    pub compute_units: i64,
    /// The DLPack device whose tensors this backend takes (`kDLCPU` for host backends).
    pub device: DLDevice,
}
