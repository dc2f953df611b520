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
    // The quantised rows into an A8W8 GroupedMatmul with an identity-like INT8 weight [1, 3, 3]
    // (a fresh view of yOut / scaleOut for the lists, which own their tensors), scaleOut as
    // perTokenScale.
    let wd = tensor(&[1u8, 0, 0, 0, 1, 0, 0, 0, 1], &[1, 3, 3], sys::ACL_INT8);
    let sc = tensor(&bf16b(&[1.0, 1.0, 1.0]), &[1, 3], sys::ACL_BF16);
    let g = tensor(&i64b(&[2]), &[1], sys::ACL_INT64);
    let out = zeros(&[2, 3], sys::ACL_BF16);
    let fresh = |d: &Dev, dims: &[i64]| list1(view(d.ptr, d.dt, dims, None, 0, dims, sys::ACL_FORMAT_ND));
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
    let (xl, wl, sl, pl, yl) = (
        fresh(&y, &[2, 3]),
        fresh(&wd, &[1, 3, 3]),
        fresh(&sc, &[1, 3]),
        fresh(&s, &[2]),
        fresh(&out, &[2, 3]),
    );
    let n = ptr::null();
    // SAFETY: live objects; out-pointers to locals.
    unsafe {
        assert_eq!(
            aclnnGroupedMatmulV4GetWorkspaceSize(
                xl,
                wl,
                n,
                sl,
                n,
                n,
                n,
                pl,
                g.t,
                n,
                n,
                n,
                3,
                0,
                0,
                0,
                yl,
                ptr::null_mut(),
                ptr::null_mut(),
                &mut ws,
                &mut ex
            ),
            0,
            "{}",
            msg()
        );
        assert_eq!(launch(stream, ws, ex, aclnnGroupedMatmulV4), 0, "{}", msg());
    }
    let mut st = MoehalEmuCopyStats::default();
    // SAFETY: out-pointer to a local.
    assert_eq!(unsafe { moehalEmuCopyStats(&mut st) }, 0);
    assert_eq!((st.h2d_bytes, st.d2h_bytes, st.launches), (0, 0, 2), "{st:?}");
    assert_eq!(
        names(2),
        [
            ("aclnnDynamicQuant".to_string(), 0, 0),
            ("aclnnGroupedMatmulV4".to_string(), 0, 0)
        ]
    );
    // The quantised values really were written on the device: row max 3 and 4.
    assert_eq!(as_f32(&read(&s)), [3.0 / 127.0, 4.0 / 127.0]);
    // Dequantised: round(x / s) * s, rounded to BFLOAT16 (x's own values where they are exact).
    let sv = [3.0f32 / 127.0, 4.0 / 127.0];
    let q: Vec<f32> = [1.0f32, -2.0, 3.0, 0.5, 4.0, -1.0]
        .iter()
        .enumerate()
        .map(|(i, v)| (v / sv[i / 3]).round_ties_even() * sv[i / 3])
        .collect();
    assert_eq!(as_bf16(&read(&out)), as_bf16(&bf16b(&q)));
}
