//! Microkernel throughput (single thread, L1-resident operands), GFLOP/s.
use moehal_cpu::simd::{Kernels, MR, NR};
use std::time::Instant;
fn main() {
    bandwidth();
    let kern = Kernels::best();
    let kc = 128;
    let a = vec![0.5f32; MR * kc];
    let b = vec![0.25f32; kc * NR];
    let mut c = vec![0f32; MR * NR];
    let iters = 200_000;
    for _ in 0..2 {
        let t = Instant::now();
        for i in 0..iters {
            kern.micro(&a, kc, MR, kc, &b, &mut c, i > 0);
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{:?} micro {}x{} kc={kc}: {:.1} GFLOP/s",
            kern.isa(),
            MR,
            NR,
            2.0 * (MR * NR * kc * iters) as f64 / s / 1e9
        );
    }
}

/// Read bandwidth of this machine: sum a 1 GiB buffer (not in any cache), 1 and all threads.
#[allow(dead_code)]
pub fn bandwidth() {
    use rayon::prelude::*;
    let n = 1usize << 27; // 1 GiB of u64
    let buf: Vec<u64> = (0..n as u64).collect();
    for threads in [1usize, moehal_cpu::pool::num_cores()] {
        let pool = moehal_cpu::Pool::new(threads).unwrap();
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let s: u64 = pool.install(|| {
                buf.par_chunks(1 << 20)
                    .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
                    .sum()
            });
            best = best.min(t.elapsed().as_secs_f64());
            std::hint::black_box(s);
        }
        println!(
            "read bandwidth, {threads} threads: {:.1} GB/s",
            (n * 8) as f64 / best / 1e9
        );
    }
}
