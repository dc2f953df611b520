//! Issue 13, W8A8 path: the quantisation launches run on the device — they move no bytes between
//! host and device (RULES.md I1-I2, PR5). One test: the copy counters are per process.

mod common;

use std::ffi::CStr;
use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;

fn names(n: usize) -> Vec<(String, u64, u64)> {
    let mut log = vec![
        MoehalEmuLaunchCopies {
            name: [0; 64],
            h2d_bytes: 0,
            d2h_bytes: 0
        };
        n
    ];
    // SAFETY: n writable entries.
    assert_eq!(unsafe { moehalEmuLaunchCopies(log.as_mut_ptr(), n) }, n);
    log.iter()
        // SAFETY: NUL-terminated by the emulator.
        .map(|e| {
            let s = unsafe { CStr::from_ptr(e.name.as_ptr()) };
            (s.to_string_lossy().into_owned(), e.h2d_bytes, e.d2h_bytes)
        })
        .collect()
}

#[test]
fn quant_launches_copy_nothing() {
    let stream = setup();
    let x = tensor(&bf16b(&[1.0, -2.0, 3.0, 0.5, 4.0, -1.0]), &[2, 3], sys::ACL_BF16);
    let y = zeros(&[2, 3], sys::ACL_INT8);
    let s = zeros(&[2], sys::ACL_FLOAT);
    moehalEmuCopyStatsReset();
    let (mut ws, mut ex) = (0u64, ptr::null_mut());
    // SAFETY: live objects; out-pointers to locals.
    unsafe {
        assert_eq!(
            aclnnDynamicQuantGetWorkspaceSize(x.t, ptr::null(), y.t, s.t, &mut ws, &mut ex),
            0
        );
        assert_eq!(launch(stream, ws, ex, aclnnDynamicQuant), 0);
    }
    let mut st = MoehalEmuCopyStats::default();
    // SAFETY: out-pointer to a local.
    assert_eq!(unsafe { moehalEmuCopyStats(&mut st) }, 0);
    assert_eq!((st.h2d_bytes, st.d2h_bytes, st.launches), (0, 0, 1), "{st:?}");
    assert_eq!(names(1), [("aclnnDynamicQuant".to_string(), 0, 0)]);
    // The quantised values really were written on the device: row max 3 and 4.
    assert_eq!(as_f32(&read(&s)), [3.0 / 127.0, 4.0 / 127.0]);
}
