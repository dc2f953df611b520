//! grouped_gemm on the shapes of the repository's benches/peers.py (Qwen3-30B-A3B gate_up: K 2048, N 1536,
//! 128 experts, top-8), bf16 and f32, 1/16/128/1024 tokens; packed weights and raw KN / NK.
//! `MOEHAL_BENCH_QUICK=1` keeps only the decode shapes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;
use moehal_cpu::grouped_gemm::{grouped_gemm, GemmArgs, Layout, PackedWeights, Weights};
use moehal_cpu::{Elem, Kernels, Pool};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn group_end(t: usize, e: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<i64> {
    let mut c = vec![0i64; e];
    for _ in 0..t {
        let mut chosen: Vec<usize> = Vec::with_capacity(k);
        while chosen.len() < k {
            let x = rng.gen_range(0..e);
            if !chosen.contains(&x) {
                chosen.push(x);
            }
        }
        chosen.into_iter().for_each(|x| c[x] += 1);
    }
    let mut acc = 0;
    c.iter()
        .map(|v| {
            acc += v;
            acc
        })
        .collect()
}

fn bench_dtype<T: Elem>(c: &mut Criterion, name: &str) {
    let (e, k, n, topk) = (128usize, 2048usize, 1536usize, 8usize);
    let kern = Kernels::best();
    let pool = Pool::global();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let w: Vec<T> = (0..e * k * n)
        .map(|_| T::from_f32(rng.gen_range(-0.02..0.02)))
        .collect();
    let packed = PackedWeights::new(pool, &w, Layout::KN, e, n, k).unwrap();
    let quick = std::env::var("MOEHAL_BENCH_QUICK").is_ok();
    let tokens: &[usize] = if quick { &[1, 16] } else { &[1, 16, 128, 1024] };
    let mut g = c.benchmark_group(format!("grouped_gemm/{name}"));
    g.sample_size(10);
    for &t in tokens {
        let ge = group_end(t, e, topk, &mut rng);
        let m = *ge.last().unwrap() as usize;
        let x: Vec<T> = (0..m * k).map(|_| T::from_f32(rng.gen_range(-1.0..1.0))).collect();
        let mut y = vec![T::default(); m * n];
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        for (vn, wv) in [
            ("packed", Weights::Packed(&packed)),
            ("kn_raw", Weights::Raw(&w, Layout::KN)),
            ("nk_raw", Weights::Raw(&w, Layout::NK)),
        ] {
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
            g.bench_function(BenchmarkId::new(vn, format!("T{t}")), |b| {
                b.iter(|| grouped_gemm(kern, pool, &args, &mut y).unwrap())
            });
        }
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_dtype::<bf16>(c, "bf16");
    bench_dtype::<f32>(c, "f32");
}

criterion_group!(gemm, benches);
criterion_main!(gemm);
