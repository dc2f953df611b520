//! Status codes, the thread-local last-error message, and the panic fence of every entry point.

use std::cell::RefCell;
use std::ffi::{c_char, CString};

use moehal_core::Error;

use crate::types::*;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Record `msg` as this thread's last error (interior NUL bytes become spaces).
pub(crate) fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// This thread's last error message (`""` if none); valid until the next failing call on this
/// thread.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The status code of an error category.
pub(crate) fn status_of(e: &Error) -> moehal_status {
    match e {
        Error::InvalidArgument { .. } => MOEHAL_INVALID_ARGUMENT,
        Error::Unsupported { .. } => MOEHAL_UNSUPPORTED,
        Error::Unavailable { .. } => MOEHAL_UNAVAILABLE,
        Error::OutOfMemory { .. } => MOEHAL_OUT_OF_MEMORY,
        Error::Device { .. } => MOEHAL_DEVICE_ERROR,
    }
}

/// Run the body of an entry point: errors become a status plus the last-error message, and a
/// panic never crosses the boundary (it becomes [`MOEHAL_PANIC`]).
pub(crate) fn guard(f: impl FnOnce() -> moehal_core::Result<()>) -> moehal_status {
    // The fence keeps a caught panic's message off the host program's stderr.
    match moehal_core::fence::catch_quietly(f) {
        Ok(Ok(())) => MOEHAL_OK,
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            status_of(&e)
        }
        Err(msg) => {
            set_last_error(&format!("panic inside moehal (a bug: please report): {msg}"));
            MOEHAL_PANIC
        }
    }
}

/// As [`guard`] for entry points that return a value instead of a status: `fallback` on panic.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match moehal_core::fence::catch_quietly(f) {
        Ok(v) => v,
        Err(msg) => {
            set_last_error(&format!("panic inside moehal (a bug: please report): {msg}"));
            fallback
        }
    }
}
