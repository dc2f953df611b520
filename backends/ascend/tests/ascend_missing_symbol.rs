//! An emulator build that omits one required symbol: the backend is unavailable and names it.
//! One that omits an optional op version: the backend falls back (GroupedMatmul V4 -> V3).

mod ascend_common;

use moehal_core::ops::{GroupedGemm, OpDesc, WeightLayout};
use moehal_core::{BackendExt, DType, Error, Reference};

#[test]
fn missing_required_symbol_is_named() {
    let dir = ascend_common::emulator_dir(Some("aclrtMemset"));
    let err = moehal_ascend::open_at(&dir, 0).err().expect("aclrtMemset is required");
    match err {
        Error::Unavailable { reason, .. } => {
            assert!(reason.contains("missing symbols: aclrtMemset"), "{reason}");
            assert!(!reason.contains("aclrtMalloc"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other}"),
    }
}

#[test]
fn missing_op_version_falls_back_to_v3() {
    let dir = ascend_common::emulator_dir(Some("aclnnGroupedMatmulV4"));
    let asc = moehal_ascend::open_at(&dir, 0).unwrap();
    let s = asc.supports(&OpDesc::GroupedGemm {
        dtype: DType::F32,
        layout: WeightLayout::NK,
    });
    assert!(format!("{s:?}").contains("aclnnGroupedMatmulV3"), "{s:?}");
    let (m, k, n, g) = (5usize, 4usize, 3usize, 2usize);
    let xv: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect();
    let wv: Vec<f32> = (0..g * n * k).map(|i| (i % 7) as f32 - 3.0).collect();
    let refb = Reference::new();
    let mut outs = Vec::new();
    for be in [&*asc, &refb as &dyn moehal_core::Backend] {
        let x = be.upload_slice(&xv).unwrap();
        let w = be.upload_slice(&wv).unwrap();
        let ge = be.upload_slice(&[2i64, 5]).unwrap();
        let mut y = be.upload_slice(&vec![f32::NAN; m * n]).unwrap();
        let args = GroupedGemm {
            x: x.view(DType::F32, &[m, k]),
            w: w.view(DType::F32, &[g, n, k]),
            layout: WeightLayout::NK,
            group_end: ge.view(DType::I64, &[g]),
            row_scale: None,
            bias: None,
            y: y.view_mut(DType::F32, &[m, n]),
        };
        be.grouped_gemm(args.validate().unwrap()).unwrap();
        outs.push(be.download_vec::<f32>(&y, m * n).unwrap());
    }
    // Small integers: exact in f32 whatever the summation order.
    assert_eq!(outs[0], outs[1]);
}
