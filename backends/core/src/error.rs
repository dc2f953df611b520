//! The one error type of moehal.
//!
//! Categories are kept apart so that callers can react to them differently: an
//! [`Error::InvalidArgument`] is the caller's bug, [`Error::Unsupported`] means "pick another backend
//! or dtype", [`Error::Unavailable`] means the backend cannot run on this machine at all,
//! [`Error::OutOfMemory`] may succeed after freeing memory, and [`Error::Device`] carries the
//! driver's own code and message.

/// Result alias used across moehal.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure moehal reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An argument breaks a rule of the op contract (`OPS.md`). Nothing was written.
    #[error("{op}: invalid argument `{field}`: {msg}")]
    InvalidArgument {
        /// The op (or API function) that rejected the call, e.g. `"grouped_gemm"`.
        op: &'static str,
        /// The argument or descriptor field at fault, e.g. `"group_end"`.
        field: &'static str,
        /// What is wrong, with the offending values.
        msg: String,
    },
    /// The backend lacks a capability (dtype, layout, device feature), or the call exceeds a limit
    /// of moehal's own that OPS.md does not set (a kernel's largest size, a helper's bound): the
    /// call is legal and another backend, dtype or split may serve it. Rules OPS.md itself sets
    /// stay [`Error::InvalidArgument`] (issue 16 item 5). Nothing was written.
    #[error("{op}: unsupported on backend `{backend}`: {msg}")]
    Unsupported {
        /// The op or API function.
        op: &'static str,
        /// The backend's name.
        backend: String,
        /// Which capability is missing.
        msg: String,
    },
    /// The backend cannot be used on this machine (library or device missing).
    #[error("backend `{backend}` unavailable: {reason}")]
    Unavailable {
        /// The backend's name.
        backend: String,
        /// Why, e.g. `libcuda.so.1 not found`.
        reason: String,
    },
    /// An allocation failed; freeing memory and retrying may succeed.
    #[error("backend `{backend}`: out of memory allocating {bytes} bytes")]
    OutOfMemory {
        /// The backend's name.
        backend: String,
        /// The size of the failed request in bytes.
        bytes: u64,
    },
    /// A driver or runtime call failed.
    #[error("backend `{backend}`: device error {code}: {msg}")]
    Device {
        /// The backend's name.
        backend: String,
        /// The driver's status code (`CUresult`, `aclError`, `aclnnStatus`, ...).
        code: i64,
        /// The driver's message (e.g. `aclGetRecentErrMsg`), or what was being done.
        msg: String,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, field: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            field,
            msg: msg.into(),
        }
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(op: &'static str, backend: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Unsupported {
            op,
            backend: backend.into(),
            msg: msg.into(),
        }
    }

    /// Shorthand for [`Error::Device`].
    pub fn device(backend: impl Into<String>, code: i64, msg: impl Into<String>) -> Self {
        Error::Device {
            backend: backend.into(),
            code,
            msg: msg.into(),
        }
    }
}
