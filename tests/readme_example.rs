//! The README's ten-line Rust example, kept compiling and correct (on the reference backend, which
//! every build has; the README opens "cpu").

use moehal::{
    ops::{GroupedGemm, WeightLayout},
    BackendExt, DType, Registry,
};

#[test]
fn readme_example_runs() -> Result<(), moehal::Error> {
    let be = Registry::discover().open("reference")?;
    let (m, k, n) = (4, 8, 3);
    let x = be.upload_slice(&vec![1.0f32; m * k])?;
    let w = be.upload_slice(&vec![0.5f32; 2 * n * k])?;
    let ends = be.upload_slice(&[3i64, 4])?;
    let mut y = be.alloc(m * n * 4)?;
    let args = GroupedGemm {
        x: x.view(DType::F32, &[m, k]),
        w: w.view(DType::F32, &[2, n, k]),
        layout: WeightLayout::NK,
        group_end: ends.view(DType::I64, &[2]),
        row_scale: None,
        bias: None,
        y: y.view_mut(DType::F32, &[m, n]),
    };
    be.grouped_gemm(args.validate()?)?;
    assert_eq!(be.download_vec::<f32>(&y, m * n)?[0], 4.0);
    Ok(())
}
