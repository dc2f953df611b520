//! Negative tests: libraries absent, host memory passed as device memory, emulator strictness
//! seen through the backend.

mod ascend_common;

use moehal_core::ops::{GroupedGemm, WeightLayout};
use moehal_core::{BackendExt, DType, Error};

#[test]
fn libraries_absent_is_unavailable_with_reason() {
    let empty = std::env::temp_dir().join(format!("moehal-ascend-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let err = moehal_ascend::open_at(&empty, 0)
        .err()
        .expect("no libraries, no backend");
    match err {
        Error::Unavailable { backend, reason } => {
            assert_eq!(backend, "ascend");
            assert!(reason.contains("libascendcl.so"), "{reason}");
            assert!(reason.contains(&empty.display().to_string()), "{reason}");
        }
        other => panic!("expected Unavailable, got {other}"),
    }
    let _ = std::fs::remove_dir(&empty);
}

#[test]
fn absent_device_is_unavailable() {
    let dir = ascend_common::emulator_dir(None);
    let err = moehal_ascend::open_at(&dir, 3)
        .err()
        .expect("the emulator has one device");
    assert!(
        matches!(err, Error::Unavailable { ref reason, .. } if reason.contains("device 3")),
        "{err}"
    );
}

#[test]
fn host_pointer_as_device_memory_is_an_error() {
    let asc = ascend_common::open_emulated();
    #[repr(C, align(64))]
    struct Aligned([f32; 64]);
    let mut host = Box::new(Aligned([0f32; 64]));
    // SAFETY (test): the pointer is valid host memory for the buffer's life; the point is that it
    // is not device memory, which the runtime must refuse.
    let mut fake = unsafe { asc.wrap_external(host.0.as_mut_ptr() as u64, 256) }.unwrap();
    let err = asc.upload(&mut fake, 0, &[1u8; 16]).unwrap_err();
    assert!(matches!(err, Error::Device { code: 100000, .. }), "{err}");
    assert!(err.to_string().contains("host memory"), "{err}");

    // As an op input: phase one refuses the tensor (161002), and the output is not written.
    let w = asc.upload_slice(&vec![1.0f32; 2 * 8 * 8]).unwrap();
    let ge = asc.upload_slice(&[2i64, 4]).unwrap();
    let mut y = asc.upload_slice(&[f32::NAN; 4 * 8]).unwrap();
    let args = GroupedGemm {
        x: fake.view(DType::F32, &[4, 8]),
        w: w.view(DType::F32, &[2, 8, 8]),
        layout: WeightLayout::KN,
        group_end: ge.view(DType::I64, &[2]),
        row_scale: None,
        bias: None,
        y: y.view_mut(DType::F32, &[4, 8]),
    };
    let err = asc.grouped_gemm(args.validate().unwrap()).unwrap_err();
    assert!(matches!(err, Error::Device { code: 161002, .. }), "{err}");
    assert!(err.to_string().contains("not (all) device memory"), "{err}");
    assert!(asc.download_vec::<f32>(&y, 32).unwrap().iter().all(|v| v.is_nan()));
    drop(fake);
    assert_eq!(host.0[0], 0.0);
}

#[test]
fn out_of_range_download_is_rejected_before_the_runtime() {
    let asc = ascend_common::open_emulated();
    let b = asc.upload_slice(&[1i32; 4]).unwrap();
    let mut out = [0u8; 32];
    assert!(matches!(
        asc.download(&b, 0, &mut out),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn engine_stream_is_unsupported_and_says_why() {
    let asc = ascend_common::open_emulated();
    // SAFETY: the backend refuses before it would use the (dangling) stream handle.
    let r = unsafe { asc.set_external_stream(0x1000) };
    match r {
        Err(Error::Unsupported { msg, .. }) => {
            assert!(msg.contains("aclrtStream"), "{msg}");
            assert!(!msg.contains("no streams"), "{msg}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}
