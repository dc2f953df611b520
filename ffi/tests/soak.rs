//! Soak (issue 16, item 8): 10^4 C ABI calls leave the resident set where a warm-up left it.
//! A test binary of its own, so no other test allocates while it measures.

mod mixed;

use std::ptr;

use mixed::run_c;
use moehal_ffi::abi::*;
use moehal_ffi::*;

/// Resident set size in bytes (`/proc/self/statm`, field 2, in pages).
fn rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Soak: 10^4 calls through the C ABI (mixed ops, plus open/close of a backend handle, failing
/// calls that set the last error, alloc/free of buffers) leave the resident set where a warm-up
/// left it. Own test binary, so no other test allocates meanwhile; the bound (8 MiB) is far below
/// what a leak of even 1 KiB per call would add (10 MB).
#[test]
fn soak_ten_thousand_calls_without_rss_growth() {
    if rss().is_none() {
        eprintln!("skipped: /proc/self/statm is not readable on this system");
        return;
    }
    let mut b: *mut moehal_backend = ptr::null_mut();
    // SAFETY: valid string and out pointer.
    assert_eq!(unsafe { moehal_backend_open(c"cpu".as_ptr(), &mut b) }, MOEHAL_OK);
    let one = |i: u64| {
        let out = run_c(b, i);
        assert!(!out.is_empty());
        // SAFETY: live handle; out pointers valid.
        unsafe {
            let mut buf: *mut moehal_buffer = ptr::null_mut();
            assert_eq!(moehal_alloc(b, 4096, &mut buf), MOEHAL_OK);
            moehal_buffer_free(buf);
            // A failing call (NULL tensors): allocates the last-error message.
            assert_ne!(moehal_swiglu(b, ptr::null(), ptr::null(), ptr::null_mut()), MOEHAL_OK);
            if i % 100 == 0 {
                let mut h: *mut moehal_backend = ptr::null_mut();
                assert_eq!(moehal_backend_open(c"reference".as_ptr(), &mut h), MOEHAL_OK);
                moehal_backend_close(h);
            }
        }
    };
    for i in 0..2_000 {
        one(i);
    }
    let before = rss().unwrap();
    for i in 0..10_000 {
        one(i);
    }
    let after = rss().unwrap();
    // SAFETY: live handle, closed once.
    unsafe { moehal_backend_close(b) };
    let growth = after.saturating_sub(before);
    eprintln!("resident set: {before} -> {after} bytes over 10^4 calls");
    assert!(
        growth < 8 << 20,
        "resident memory grew by {growth} bytes over 10^4 calls ({before} -> {after})"
    );
}
