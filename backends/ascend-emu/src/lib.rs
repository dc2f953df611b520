//! A strict host emulator of the Ascend ACL / aclnn C ABI (`libascendcl.so`), for tests and CI.
//!
//! It exports the runtime, meta (nnopbase) and aclnn op symbols that `moehal-ascend` resolves, all
//! from one library, and runs everything on the host, as strictly as the hardware and the vendor
//! documentation demand:
//!
//! - device memory is tracked: a host pointer or an out-of-bounds range where device memory is
//!   required is an error; `aclrtMalloc` rounds up to 32 bytes; a tensor's storage base address must
//!   be 32-byte aligned (a view may start at any element offset from it);
//! - `aclrtMemcpy` checks its kind against where each pointer lives, and `count <= destMax`;
//! - a runtime call on a thread with no current device fails with 107002 (`ACL_ERROR_RT_CONTEXT_NULL`);
//! - a second `aclInit` returns 100002 (`ACL_ERROR_REPEAT_INITIALIZE`);
//! - executors are single-use unless made repeatable (`aclSetAclOpExecutorRepeatable`), and only
//!   repeatable ones may be destroyed; `aclDestroyTensorList` destroys its tensors (destroying one
//!   of them separately is an error);
//! - phase one rejects missing arguments with 161001, bad dtypes / shapes with 161002 and, where the
//!   documented check lives in the tiling, bad attributes with 561002;
//! - `aclnnGroupedMatmul*` leaves rows past the group-list total unwritten;
//! - `MOEHAL_ACL_EMU_MEM_CAP=<bytes>` caps device memory in use, so `aclrtMalloc` can fail (207001).
//!
//! The op semantics follow the aclnn documentation (see `ops`), written independently of moehal-core
//! and of the backend. Every rule cites its source; `RULES.md` lists them one per line.
//!
//! The modelled CANN release is chosen at build time (`MOEHAL_ACL_EMU_CANN` = 8.1 | 8.2 | 8.3 | 8.5,
//! default 8.5; see [`profile`]): a profile exports only the aclnn symbols of that release and
//! enforces its restrictions. `aclsysGetCANNVersion` reports the profile as a real install would.
//!
//! Cargo features `omit-symbol-aclrtMemset` / `omit-symbol-aclnnGroupedMatmulV4` build variants
//! that lack one export, for the backend's negative tests.

pub mod abi;
pub mod ops;
pub mod profile;
pub mod tensor;

pub use moehal_ascend_sys as sys;
