//! Decode-shaped grouped GEMM (one row per expert) in a loop, for profiling.
use half::bf16;
use moehal_cpu::grouped_gemm::{grouped_gemm, GemmArgs, Layout, PackedWeights, Weights};
use moehal_cpu::{Kernels, Pool};
use std::time::Instant;
fn main() {
    let (e, k, n) = (8usize, 2048usize, 1536usize);
    let which = std::env::args().nth(1).unwrap_or_else(|| "packed".into());
    let kern = Kernels::best();
    let pool = Pool::global();
    let w: Vec<bf16> = (0..e * k * n)
        .map(|i| bf16::from_f32(((i % 97) as f32 - 48.0) * 1e-3))
        .collect();
    let packed = PackedWeights::new(pool, &w, Layout::KN, e, n, k).unwrap();
    let per: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let m = e * per;
    let x: Vec<bf16> = (0..m * k).map(|i| bf16::from_f32((i % 13) as f32 * 0.1)).collect();
    let ge: Vec<i64> = (1..=e as i64).map(|g| g * per as i64).collect();
    let mut y = vec![bf16::default(); m * n];
    let wv = match which.as_str() {
        "packed" => Weights::Packed(&packed),
        "kn" => Weights::Raw(&w, Layout::KN),
        _ => Weights::Raw(&w, Layout::NK),
    };
    let args = GemmArgs {
        x: &x,
        m,
        k,
        n,
        group_end: &ge,
        w: wv,
        row_scale: None,
        bias: None,
    };
    let reps = if per > 8 { 10 } else { 300 };
    let t = Instant::now();
    for _ in 0..reps {
        grouped_gemm(kern, pool, &args, &mut y).unwrap();
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{which}: {:.3} ms, {:.2} GB/s of weights",
        s * 1e3,
        (e * k * n * 2) as f64 / s / 1e9
    );
    let _ = y[0].to_f32();
}
