//! Issue 13: the primitives run on the device — a chain of them moves no bytes between host and
//! device (RULES.md I1-I2, PR6). One test: the copy counters are per process.

mod common;

use std::ffi::{c_void, CStr};
use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;

#[test]
fn primitive_launches_copy_nothing() {
    let stream = setup();
    let x = tensor(&f32b(&[1.0, -2.0, 3.0, 0.5, 4.0, -1.0]), &[2, 3], sys::ACL_FLOAT);
    let a = zeros(&[2, 3], sys::ACL_FLOAT);
    let b = zeros(&[2, 3], sys::ACL_FLOAT);
    let s = zeros(&[2], sys::ACL_FLOAT);
    let dims = ints(&[1]);
    let mut k = 2.0f32;
    // SAFETY: points at a live f32.
    let two = unsafe { aclCreateScalar((&mut k as *mut f32).cast::<c_void>(), sys::ACL_FLOAT) };
    moehalEmuCopyStatsReset();
    let (mut ws, mut ex) = (0u64, ptr::null_mut());
    // SAFETY: live objects; out-pointers to locals.
    unsafe {
        assert_eq!(aclnnSoftmaxGetWorkspaceSize(x.t, 1, a.t, &mut ws, &mut ex), 0);
        assert_eq!(launch(stream, ws, ex, aclnnSoftmax), 0);
        assert_eq!(aclnnMulsGetWorkspaceSize(a.t, two, b.t, &mut ws, &mut ex), 0);
        assert_eq!(launch(stream, ws, ex, aclnnMuls), 0);
        assert_eq!(
            aclnnClampGetWorkspaceSize(b.t, two, ptr::null(), a.t, &mut ws, &mut ex),
            0
        );
        assert_eq!(launch(stream, ws, ex, aclnnClamp), 0);
        assert_eq!(
            aclnnReduceSumGetWorkspaceSize(a.t, dims, false, sys::ACL_FLOAT, s.t, &mut ws, &mut ex),
            0
        );
        assert_eq!(launch(stream, ws, ex, aclnnReduceSum), 0);
    }
    let mut st = MoehalEmuCopyStats::default();
    // SAFETY: out-pointer to a local.
    assert_eq!(unsafe { moehalEmuCopyStats(&mut st) }, 0);
    assert_eq!((st.h2d_bytes, st.d2h_bytes, st.launches), (0, 0, 4), "{st:?}");
    let mut log = vec![
        MoehalEmuLaunchCopies {
            name: [0; 64],
            h2d_bytes: 0,
            d2h_bytes: 0
        };
        4
    ];
    // SAFETY: 4 writable entries.
    assert_eq!(unsafe { moehalEmuLaunchCopies(log.as_mut_ptr(), 4) }, 4);
    let names: Vec<String> = log
        .iter()
        // SAFETY: NUL-terminated by the emulator.
        .map(|e| {
            unsafe { CStr::from_ptr(e.name.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["aclnnSoftmax", "aclnnMuls", "aclnnClamp", "aclnnReduceSum"]);
    // Softmax of each row, doubled, clamped below at 2: every entry is 2, the row sums 6.
    assert_eq!(as_f32(&read(&s)), [6.0, 6.0]);
}
