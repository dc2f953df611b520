//! Scratch timing of the AMX grouped GEMM at Qwen3-30B-A3B gate_up (E128 K2048 N1536, 64 rows per
//! expert): the whole bf16 call, the same call with few experts (weights cache-resident), the read
//! bandwidth, and the int8 tile path split into weight packing and tile work (issue 11).
use moehal_cpu::amx_int8::{grouped_gemm_s8, S8TileWeights};
use moehal_cpu::grouped_gemm::{grouped_gemm, GemmArgs, Layout, Weights};
use moehal_cpu::simd::amx::TileEngine;
use moehal_cpu::{Kernels, Pool};
use std::time::Instant;

fn med(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn bf16_case(kern: &Kernels, pool: &Pool, e: usize, rows: usize, k: usize, n: usize, reps: usize) -> f64 {
    let m = e * rows;
    let x: Vec<half::bf16> = (0..m * k)
        .map(|i| half::bf16::from_f32(((i * 7 % 13) as f32 - 6.0) / 8.0))
        .collect();
    let w: Vec<half::bf16> = (0..e * n * k)
        .map(|i| half::bf16::from_f32(((i * 5 % 11) as f32 - 5.0) / 16.0))
        .collect();
    let ge: Vec<i64> = (1..=e).map(|g| (g * rows) as i64).collect();
    let mut y = vec![half::bf16::ZERO; m * n];
    let a = GemmArgs {
        x: &x,
        m,
        k,
        n,
        group_end: &ge,
        w: Weights::Raw(&w, Layout::NK),
        row_scale: None,
        bias: None,
    };
    let mut ts = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        grouped_gemm(kern, pool, &a, &mut y).unwrap();
        ts.push(t.elapsed().as_secs_f64());
    }
    let s = med(ts);
    println!(
        "bf16 E{e} rows/expert {rows} K{k} N{n}: {:.2} ms, {:.0} GFLOP/s, weights {:.1} GB/s",
        s * 1e3,
        2.0 * (m * n * k) as f64 / s / 1e9,
        (e * n * k * 2) as f64 / s / 1e9
    );
    s
}

fn main() {
    let kern = Kernels::best();
    println!("isa {:?}", kern.isa());
    let pool = Pool::new(moehal_cpu::pool::num_cores()).unwrap();
    let one = Pool::new(1).unwrap();
    let (k, n) = (2048usize, 1536usize);
    // Read bandwidth (2 threads, 1 GiB).
    {
        use rayon::prelude::*;
        let buf: Vec<u64> = (0..1u64 << 27).collect();
        let mut ts = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let s: u64 = pool.install(|| {
                buf.par_chunks(1 << 20)
                    .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
                    .sum()
            });
            std::hint::black_box(s);
            ts.push(t.elapsed().as_secs_f64());
        }
        println!(
            "read bandwidth 2 threads: {:.1} GB/s",
            (8u64 << 27) as f64 / med(ts) / 1e9
        );
    }
    bf16_case(kern, &pool, 128, 64, k, n, 7);
    bf16_case(kern, &pool, 4, 64, k, n, 15);
    bf16_case(kern, &one, 4, 64, k, n, 15);
    bf16_case(kern, &pool, 4, 256, k, n, 15);
    // K rows 4160 bytes apart instead of 4096 (no 4 KiB aliasing of the A tile rows).
    bf16_case(kern, &pool, 4, 64, k + 32, n, 15);
    // int8: packing one 64-column task vs the tile work of it.
    let (rows, nc) = (64usize, 64usize);
    let w8: Vec<i8> = (0..nc * k).map(|i| (i * 7 % 251) as i8).collect();
    let x8: Vec<i8> = (0..rows * k).map(|i| (i * 3 % 241) as i8).collect();
    let mut y = vec![0i32; rows * nc];
    let reps = 300;
    let t = Instant::now();
    let mut pw = None;
    for _ in 0..reps {
        pw = Some(S8TileWeights::pack(&w8, Layout::NK, 1, nc, k).unwrap());
    }
    let tp = t.elapsed().as_secs_f64() / reps as f64;
    let pw = pw.unwrap();
    let t = Instant::now();
    for _ in 0..reps {
        grouped_gemm_s8(TileEngine::best(), None, &x8, rows, &[rows as i64], &pw, &mut y).unwrap();
    }
    let tg = t.elapsed().as_secs_f64() / reps as f64;
    let mut out = vec![0i32; rows * moehal_cpu::simd::NR];
    let t = Instant::now();
    for _ in 0..reps {
        moehal_cpu::quant::int8_dot_amx(TileEngine::best(), &x8, rows, &w8, nc, k, &mut out).unwrap();
    }
    let th = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "int8 task through quant::int8_dot_amx (pack + tiles + copy-out): {:.1} us",
        th * 1e6
    );
    println!(
        "int8 task 64x64xK{k}: pack {:.1} us, tiles {:.1} us ({:.0} GOP/s); x 3072 tasks / 2 threads = {:.0} + {:.0} ms",
        tp * 1e6,
        tg * 1e6,
        2.0 * (rows * nc * k) as f64 / tg / 1e9,
        tp * 3072.0 / 2.0 * 1e3,
        tg * 3072.0 / 2.0 * 1e3
    );
}
