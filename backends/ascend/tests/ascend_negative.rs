//! Negative tests: libraries absent, host memory passed as device memory, emulator strictness
//! seen through the backend.

mod ascend_common;

use moehal_core::ops::{GatherRows, GroupedGemm, MoeCombine, TableFormat, WeightLayout};
use moehal_core::{BackendExt, Buffer, DType, Error};

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

/// Whether `r` is the `InvalidArgument` naming `field` that a value check must return.
fn invalid_on(r: moehal_core::Result<()>, field: &str) -> bool {
    matches!(r, Err(Error::InvalidArgument { field: f, .. }) if f == field)
}

/// The value checks that run on the device (issue 13: aclnnAmin / aclnnAmax and a control read)
/// reject what the host checks rejected, before anything is written: a `group_end` that decreases
/// inside `[0, M]` (the kit plants only a negative first end and a last end past M), also for
/// `K = 0` with a bias; a `slot_row` entry below -1; row indices below 0 and at R.
#[test]
fn device_value_checks_reject_and_write_nothing() {
    let asc = ascend_common::open_emulated();
    let nan_y = |n: usize| asc.upload_slice(&vec![f32::NAN; n]).unwrap();
    let untouched = |b: &Buffer, n: usize| asc.download_vec::<f32>(b, n).unwrap().iter().all(|v| v.is_nan());

    // grouped_gemm with M = 4, N = 8, G = 2, f32, KN, into `y`.
    let gemm = |x: &Buffer, w: &Buffer, k: usize, ge: &Buffer, bias: Option<&Buffer>, y: &mut Buffer| {
        let args = GroupedGemm {
            x: x.view(DType::F32, &[4, k]),
            w: w.view(DType::F32, &[2, k, 8]),
            layout: WeightLayout::KN,
            group_end: ge.view(DType::I64, &[2]),
            row_scale: None,
            bias: bias.map(|b| b.view(DType::F32, &[2, 8])),
            y: y.view_mut(DType::F32, &[4, 8]),
        };
        asc.grouped_gemm(args.validate().unwrap())
    };
    // group_end [3, 2]: every entry in [0, M = 4], so only the step check sees it.
    let x = asc.upload_slice(&[1.0f32; 4 * 8]).unwrap();
    let w = asc.upload_slice(&vec![1.0f32; 2 * 8 * 8]).unwrap();
    let ge = asc.upload_slice(&[3i64, 2]).unwrap();
    let mut y = nan_y(4 * 8);
    assert!(invalid_on(gemm(&x, &w, 8, &ge, None, &mut y), "group_end"));
    assert!(untouched(&y, 32));
    // The same with K = 0 and a bias (the device bias gather would index by an unsorted list).
    let x0 = asc.upload_slice(&[0.0f32; 8]).unwrap();
    let w0 = asc.upload_slice(&[0.0f32; 8]).unwrap();
    let bias = asc.upload_slice(&[1.0f32; 2 * 8]).unwrap();
    assert!(invalid_on(gemm(&x0, &w0, 0, &ge, Some(&bias), &mut y), "group_end"));
    assert!(untouched(&y, 32));
    // A sorted group_end with K = 0 and a bias is served (y = bias[g] on the routed rows).
    let ge_ok = asc.upload_slice(&[1i64, 3]).unwrap();
    let bias2 = asc.upload_slice(&[[1.0f32; 8], [2.0f32; 8]].concat()).unwrap();
    gemm(&x0, &w0, 0, &ge_ok, Some(&bias2), &mut y).unwrap();
    let got = asc.download_vec::<f32>(&y, 32).unwrap();
    assert!(got[..8].iter().all(|&v| v == 1.0), "{got:?}");
    assert!(got[8..24].iter().all(|&v| v == 2.0), "{got:?}");
    assert!(
        got[24..].iter().all(|v| v.is_nan()),
        "row 3 is past group_end[G-1]: {got:?}"
    );

    // moe_combine: slot_row entry -2 (only -1 marks a dropped slot).
    let yp = asc.upload_slice(&[1.0f32; 4 * 8]).unwrap();
    let sr = asc.upload_slice(&[0i64, -2, 2, 3]).unwrap();
    let wts = asc.upload_slice(&[0.5f32; 4]).unwrap();
    let mut out = nan_y(2 * 8);
    let args = MoeCombine {
        y_perm: yp.view(DType::F32, &[4, 8]),
        slot_row: sr.view(DType::I64, &[2, 2]),
        weights: wts.view(DType::F32, &[2, 2]),
        out: out.view_mut(DType::F32, &[2, 8]),
    };
    assert!(invalid_on(asc.moe_combine(args.validate().unwrap()), "slot_row"));
    assert!(untouched(&out, 16));

    // gather_rows: an index below 0, and one at R.
    let table = asc.upload_slice(&[1.0f32; 3 * 8]).unwrap();
    for bad in [-1i64, 3] {
        let rows = asc.upload_slice(&[0i64, bad]).unwrap();
        let mut o = nan_y(2 * 8);
        let args = GatherRows {
            table: table.view(DType::F32, &[3, 8]),
            format: TableFormat::F32,
            rows: rows.view(DType::I64, &[1, 2]),
            out: o.view_mut(DType::F32, &[1, 16]),
        };
        assert!(
            invalid_on(asc.gather_rows(args.validate().unwrap()), "rows"),
            "row {bad}"
        );
        assert!(untouched(&o, 16), "row {bad}");
    }
}

/// OPS.md §6 W8A8 with an operand in host memory (a `Reference` buffer): aclnn would read it as a
/// device address, so the call takes the host path (the reference on host copies) and its f16
/// output equals the reference's bit for bit; a weight in another Ascend backend's memory is an
/// error naming `w`, a host-resident `y` one naming `y`.
#[test]
fn w8a8_with_host_operands_takes_the_host_path() {
    use moehal_core::ops::{GroupedGemmQ, WeightFormat};
    use moehal_core::{half::f16, Backend, Reference};
    let asc = ascend_common::open_emulated();
    let (g, m, n, k) = (2usize, 6usize, 24usize, 40usize);
    let x: Vec<i8> = (0..m * k).map(|i| ((i * 37 % 251) as i32 - 125) as i8).collect();
    let w: Vec<i8> = (0..g * n * k).map(|i| ((i * 53 % 241) as i32 - 120) as i8).collect();
    let xs: Vec<f32> = (0..m).map(|i| 0.01 + i as f32 * 1e-3).collect();
    let ws: Vec<f32> = (0..g * n).map(|i| 0.002 + i as f32 * 1e-4).collect();
    let ends: Vec<i64> = vec![2, 5];
    let poison = f16::from_bits(0x7E00);
    // `w` from `w_be` (host or device), the rest from `be`; y on `y_be`.
    let run = |be: &dyn Backend, w_be: &dyn Backend, y_be: &dyn Backend| -> moehal_core::Result<Vec<f16>> {
        let xb = be.upload_slice(&x)?;
        let wb = w_be.upload_slice(&w)?;
        let xsb = be.upload_slice(&xs)?;
        let wsb = be.upload_slice(&ws)?;
        let gb = be.upload_slice(&ends)?;
        let mut yb = y_be.upload_slice(&vec![poison; m * n])?;
        let args = GroupedGemmQ {
            x: xb.view(DType::I8, &[m, k]),
            x_scale: Some(xsb.view(DType::F32, &[m])),
            w_format: WeightFormat::Int8,
            w: wb.view(DType::I8, &[g, n, k]),
            w_scale: wsb.view(DType::F32, &[g, n]),
            group_end: gb.view(DType::I64, &[g]),
            row_scale: None,
            bias: None,
            y: yb.view_mut(DType::F16, &[m, n]),
        };
        be.grouped_gemm_quant(args.validate()?)?;
        y_be.download_vec(&yb, m * n)
    };
    let want = run(&Reference, &Reference, &Reference).unwrap();
    let got = run(&*asc, &Reference, &*asc).expect("host weight: host path");
    let bits = |v: &[f16]| v.iter().map(|h| h.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want));
    // Rows past group_end[G-1] = 5 untouched.
    assert!(got[5 * n..].iter().all(|h| h.to_bits() == poison.to_bits()));
    // A weight in another Ascend backend's memory (device memory, not this one's): the host path
    // cannot stage it, and the error names the operand `w`.
    let other = ascend_common::open_emulated();
    let e = run(&*asc, &*other, &*asc).expect_err("another backend's w").to_string();
    assert!(
        e.contains("not memory of this Ascend backend") && e.contains("`w`"),
        "{e}"
    );
    let e = run(&*asc, &*asc, &Reference).expect_err("host y").to_string();
    assert!(
        e.contains("not memory of this Ascend backend") && e.contains("`y`"),
        "{e}"
    );
}
