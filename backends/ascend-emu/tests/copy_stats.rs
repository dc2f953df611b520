//! The copy accounting (RULES.md I1-I3): totals by direction and the per-launch log, read through
//! the exported C ABI as the backend's tests read it (one test: the counters are per process).

mod common;

use std::ffi::{c_void, CStr};
use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;

fn stats() -> MoehalEmuCopyStats {
    let mut s = MoehalEmuCopyStats::default();
    // SAFETY: out-pointer to a local.
    assert_eq!(unsafe { moehalEmuCopyStats(&mut s) }, 0);
    s
}

fn log() -> Vec<(String, u64, u64)> {
    // SAFETY: NULL with cap 0 only asks for the count.
    let n = unsafe { moehalEmuLaunchCopies(ptr::null_mut(), 0) };
    let mut v = vec![
        MoehalEmuLaunchCopies {
            name: [0; 64],
            h2d_bytes: 0,
            d2h_bytes: 0
        };
        n
    ];
    // SAFETY: `v` holds `n` writable entries.
    assert_eq!(unsafe { moehalEmuLaunchCopies(v.as_mut_ptr(), n) }, n);
    v.iter()
        .map(|e| {
            // SAFETY: the emulator NUL-terminates the name within the array.
            let name = unsafe { CStr::from_ptr(e.name.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            (name, e.h2d_bytes, e.d2h_bytes)
        })
        .collect()
}

#[test]
fn copies_are_counted_by_direction_and_per_launch() {
    let stream = setup();
    moehalEmuCopyStatsReset();
    assert_eq!(stats(), MoehalEmuCopyStats::default());
    // SAFETY: NULL out is refused, not written.
    assert_eq!(
        unsafe { moehalEmuCopyStats(ptr::null_mut()) },
        sys::ACL_ERROR_INVALID_PARAM
    );

    // Two uploads (24 + 16 bytes), a device-to-device copy, one download of 16 bytes.
    let a = tensor(&i64b(&[1, 2, 3]), &[3], sys::ACL_INT64);
    let b = zeros(&[2], sys::ACL_INT64);
    // SAFETY: both device allocations of at least 16 bytes.
    assert_eq!(
        unsafe { aclrtMemcpy(b.ptr, 16, a.ptr, 16, sys::ACL_MEMCPY_DEVICE_TO_DEVICE) },
        0
    );
    assert_eq!(as_i64(&read(&b)), vec![1, 2]);
    let s = stats();
    assert_eq!((s.h2d_bytes, s.h2d_calls), (40, 2));
    assert_eq!((s.d2h_bytes, s.d2h_calls), (16, 1));
    assert_eq!((s.d2d_bytes, s.h2h_bytes, s.launches), (16, 0, 0));

    // A refused copy counts nothing.
    let host = [0u8; 64];
    // SAFETY: host buffer valid for 64 bytes; the emulator refuses the device overrun.
    assert_ne!(
        unsafe { aclrtMemcpy(b.ptr, 64, host.as_ptr().cast(), 64, sys::ACL_MEMCPY_HOST_TO_DEVICE) },
        0
    );
    assert_eq!(stats().h2d_bytes, 40);

    // A launch closes the copies before it; copies after the last launch are in the totals only.
    let out = zeros(&[3], sys::ACL_FLOAT);
    let (mut ws, mut ex) = (0u64, ptr::null_mut());
    // SAFETY: live tensors of this library; out-pointers to locals.
    assert_eq!(
        unsafe { aclnnCastGetWorkspaceSize(a.t, sys::ACL_FLOAT, out.t, &mut ws, &mut ex) },
        0
    );
    assert_eq!(launch(stream, ws, ex, aclnnCast), 0);
    assert_eq!(as_f32(&read(&out)), vec![1.0, 2.0, 3.0]);
    let s = stats();
    assert_eq!(s.launches, 1);
    assert_eq!((s.h2d_bytes, s.d2h_bytes), (40 + 12, 16 + 12));
    assert_eq!(log(), vec![("aclnnCast".to_string(), 52, 16)]);

    // A launch with no copies before it logs zeros; a refused launch (consumed executor) is not
    // logged.
    let (mut ws, mut ex) = (0u64, ptr::null_mut());
    // SAFETY: as above.
    assert_eq!(
        unsafe { aclnnCastGetWorkspaceSize(a.t, sys::ACL_FLOAT, out.t, &mut ws, &mut ex) },
        0
    );
    assert_eq!(launch(stream, ws, ex, aclnnCast), 0);
    assert_ne!(aclnnCast(ptr::null_mut::<c_void>(), 0, ex, stream), 0);
    assert_eq!(
        log(),
        vec![("aclnnCast".to_string(), 52, 16), ("aclnnCast".to_string(), 0, 12)]
    );

    moehalEmuCopyStatsReset();
    assert_eq!(stats(), MoehalEmuCopyStats::default());
    assert!(log().is_empty());
}
