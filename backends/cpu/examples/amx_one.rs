//! scratch
use moehal_cpu::grouped_gemm::{grouped_gemm, GemmArgs, Layout, Weights};
use moehal_cpu::{Kernels, Pool};
use std::time::Instant;
fn main() {
    let kern = Kernels::best();
    let one = Pool::new(1).unwrap();
    let (e, rows, k, n) = (4usize, 64usize, 2048usize, 1536usize);
    let m = e * rows;
    let x: Vec<half::bf16> = (0..m * k)
        .map(|i| half::bf16::from_f32(((i * 7 % 13) as f32 - 6.0) / 8.0))
        .collect();
    let wbuf: Vec<half::bf16> = (0..e * n * k + 64)
        .map(|i| half::bf16::from_f32(((i * 5 % 11) as f32 - 5.0) / 16.0))
        .collect();
    let sh: usize = std::env::args().nth(2).map_or(0, |s| s.parse().unwrap());
    let off = (64 - (wbuf.as_ptr() as usize % 64)) / 2 % 32 + sh;
    let w = &wbuf[off..off + e * n * k];
    println!("w addr mod 64 = {}", w.as_ptr() as usize % 64);
    let ge: Vec<i64> = (1..=e).map(|g| (g * rows) as i64).collect();
    let mut y = vec![half::bf16::ZERO; m * n];
    let a = GemmArgs {
        x: &x,
        m,
        k,
        n,
        group_end: &ge,
        w: Weights::Raw(w, Layout::NK),
        row_scale: None,
        bias: None,
    };
    let reps: usize = std::env::args().nth(1).map_or(200, |s| s.parse().unwrap());
    let fl = 2.0 * (m * n * k) as f64;
    let xtb: Vec<u32> = vec![0x3f803f80; m * k / 2 + 16];
    let xo = (64 - (xtb.as_ptr() as usize % 64)) / 4 % 16;
    let xt = &xtb[xo..];
    let wb: &[u16] = bytemuck::cast_slice(w);
    let eng = moehal_cpu::simd::amx::TileEngine::best();
    let mut c = vec![0f32; 1024];
    let (mut b1, mut b2) = (1e9f64, 1e9f64);
    for _ in 0..reps {
        let t = Instant::now();
        grouped_gemm(kern, &one, &a, &mut y).unwrap();
        b1 = b1.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for g in 0..e {
            for n0 in (0..n).step_by(32) {
                for t0 in (0..rows).step_by(32) {
                    eng.bf16_block(
                        &wb[(g * n + n0) * k..(g * n + n0 + 32) * k],
                        k,
                        2,
                        &xt[(g * rows * k / 2) + t0..],
                        rows,
                        16 * rows,
                        2,
                        k / 32,
                        &mut c,
                    );
                }
            }
        }
        b2 = b2.min(t.elapsed().as_secs_f64());
    }
    println!(
        "call {:.2} ms {:.0} GFLOP/s; blocks only {:.2} ms {:.0}",
        b1 * 1e3,
        fl / b1 / 1e9,
        b2 * 1e3,
        fl / b2 / 1e9
    );
}
