//! moehal-cpu on the shapes of the repository's `benches/peers.py`, one JSON line per case (median seconds).
//! Run: `cargo run --release -p moehal-cpu --example peers_shapes -- [gemm|router|gather]...`

use half::bf16;
use moehal_core::ops::grouped_gemm::counts_from_group_end;
use moehal_cpu::engram::{gather_rows, GatherOut, Table};
use moehal_cpu::grouped_gemm::{calibrate, grouped_gemm_with, Bf16Kernel, GemmArgs, Layout, PackedWeights, Weights};
use moehal_cpu::router_topk::router_topk;
use moehal_cpu::{Elem, ElemKind, Kernels, Pool};
use moehal_testkit::presets::preset;
use moehal_testkit::rng::routed_group_end;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn med(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut ts: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    ts[reps / 2]
}

fn gemm<T: Elem>(name: &str, kern: &Kernels, pool: &Pool, tokens: &[usize]) {
    let (e, k, n, topk) = (128usize, 2048usize, 1536usize, 8usize);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let w: Vec<T> = (0..e * k * n)
        .map(|_| T::from_f32(rng.gen_range(-0.02..0.02)))
        .collect();
    let packed = PackedWeights::new(pool, &w, Layout::KN, e, n, k).unwrap();
    for &t in tokens {
        // T tokens routed to topk distinct experts each: the test kit's routing (moehal bench's).
        let ge = routed_group_end(&mut rng, e, t, topk);
        let m = ge.last().map_or(0, |&g| g as usize);
        let active = counts_from_group_end(&ge).unwrap().iter().filter(|&&c| c > 0).count();
        let wbytes = (active * k * n * std::mem::size_of::<T>()) as f64;
        let flops = 2.0 * (m * k * n) as f64;
        let x: Vec<T> = (0..m * k).map(|_| T::from_f32(rng.gen_range(-1.0..1.0))).collect();
        let mut y = vec![T::default(); m * n];
        let reps = if t >= 1024 { 3 } else { 7 };
        let variants: Vec<(&str, Weights<'_, T>)> = vec![
            ("packed", Weights::Packed(&packed)),
            ("KN raw", Weights::Raw(&w, Layout::KN)),
            ("NK raw", Weights::Raw(&w, Layout::NK)),
        ];
        // bf16: both kernels where vdpbf16ps exists (interleaved per variant).
        let kinds: Vec<Bf16Kernel> = if T::KIND == ElemKind::Bf16 {
            [Bf16Kernel::Fma, Bf16Kernel::Dot]
                .into_iter()
                .filter(|b| b.available(kern))
                .collect()
        } else {
            vec![Bf16Kernel::Fma]
        };
        for (vn, wv) in variants {
            for &bk in &kinds {
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
                let sec = med(reps, || grouped_gemm_with(kern, pool, &args, &mut y, bk).unwrap());
                println!(
                "{{\"op\":\"grouped_gemm\",\"T\":{t},\"M\":{m},\"dtype\":\"{name}\",\"impl\":\"moehal-cpu {vn} {}\",\"s\":{sec:.6},\"gflops\":{:.1},\"weight_gbs\":{:.2}}}",
                bk.name(),
                flops / sec / 1e9,
                wbytes / sec / 1e9
            );
            }
        }
    }
}

fn router(kern: &Kernels, pool: &Pool) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &(t, e, k, grouped) in &[
        (4096usize, 256usize, 8usize, true),
        (4096, 128, 8, false),
        (1, 256, 8, true),
    ] {
        let logits: Vec<f32> = (0..t * e).map(|_| rng.gen_range(-3.0..3.0)).collect();
        let bias: Vec<f32> = (0..e).map(|_| rng.gen_range(-0.1..0.1)).collect();
        // The models' routers as the test kit's presets define them.
        let cfg = preset(if grouped { "deepseek-v3" } else { "qwen3-30b-a3b" })
            .unwrap()
            .router();
        assert_eq!(cfg.topk, k);
        let b = grouped.then_some(&bias[..]);
        let mut ids = vec![0i32; t * k];
        let mut w = vec![0f32; t * k];
        let mut counts = vec![0i64; e];
        let reps = if t == 1 { 2001 } else { 51 };
        let sec = med(reps, || {
            router_topk(kern, pool, &cfg, &logits, t, e, b, &mut ids, &mut w, Some(&mut counts)).unwrap()
        });
        println!("{{\"op\":\"router_topk\",\"T\":{t},\"E\":{e},\"k\":{k},\"grouped\":{grouped},\"impl\":\"moehal-cpu\",\"s\":{sec:.9}}}");
    }
}

fn gather(pool: &Pool) {
    let (r, d, t, h) = (1usize << 22, 256usize, 4096usize, 8usize);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut table = moehal_cpu::simd::mem::HugeBuf::<bf16>::zeroed(r * d).unwrap();
    for v in table.as_mut_slice().iter_mut() {
        *v = bf16::from_bits(rng.gen());
    }
    let rows: Vec<i64> = (0..t * h).map(|_| rng.gen_range(0..r as i64)).collect();
    let mut out = vec![0u8; t * h * d * 2];
    let tb: &[u8] = bytemuck::cast_slice(table.as_slice());
    let sec = med(9, || {
        gather_rows(
            pool,
            Table::Plain {
                data: tb,
                row_bytes: d * 2,
                rows: tb.len() / (d * 2),
            },
            &rows,
            h,
            GatherOut::Bytes(&mut out),
        )
        .unwrap()
    });
    let nbytes = (t * h * d * 2) as f64;
    let primes = moehal_core::engram::derive_primes((1 << 19) - 300, 2, 8, 1)
        .unwrap()
        .remove(0);
    let mults = moehal_core::engram::v41_flash::MULTIPLIERS[0][..2].to_vec();
    let layer = moehal_core::engram::EngramLayer::new(2, 8, mults, primes, 99_092, 2).unwrap();
    let lt: &[u8] = &tb[..layer.rows() as usize * d * 2];
    let ids: Vec<i64> = (0..t).map(|_| rng.gen_range(0..99_092)).collect();
    let sec2 = med(9, || {
        moehal_cpu::engram::engram_lookup(
            moehal_cpu::Kernels::best(),
            pool,
            &layer,
            &ids,
            None,
            None,
            &[],
            Table::Plain {
                data: lt,
                row_bytes: d * 2,
                rows: lt.len() / (d * 2),
            },
            GatherOut::Bytes(&mut out),
        )
        .unwrap()
    });
    println!("{{\"op\":\"hash_gather\",\"dtype\":\"bf16\",\"impl\":\"moehal-cpu engram_lookup (hash+gather, R={})\",\"s\":{sec2:.6},\"gathered_gbs\":{:.2}}}", layer.rows(), nbytes / sec2 / 1e9);
    println!("{{\"op\":\"hash_gather\",\"dtype\":\"bf16\",\"impl\":\"moehal-cpu gather_rows\",\"s\":{sec:.6},\"gathered_gbs\":{:.2}}}", nbytes / sec / 1e9);
}

fn main() {
    let kern = Kernels::best();
    let pool = Pool::global();
    eprintln!("isa {:?}, threads {}", kern.isa(), pool.threads());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    // MOEHAL_BENCH_TOKENS="1,16,1024" narrows the token counts.
    let tokens: Vec<usize> = std::env::var("MOEHAL_BENCH_TOKENS")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 128, 1024]);
    if want("gemm") || want("gemm-bf16") {
        gemm::<bf16>("bf16", kern, pool, &tokens);
    }
    if want("gemm") || want("gemm-f32") {
        gemm::<f32>("f32", kern, pool, &tokens);
    }
    if want("calib") {
        let (f, d) = calibrate(kern);
        println!("{{\"op\":\"bf16_calibration\",\"fma_s\":{f:.7},\"dot_s\":{d:.7},\"gflops_fma\":{:.1},\"gflops_dot\":{:.1}}}", 2.0 * 48.0 * 512.0 * 128.0 / f / 1e9, 2.0 * 48.0 * 512.0 * 128.0 / d / 1e9);
    }
    if want("router") {
        router(kern, pool);
    }
    if want("gather") {
        gather(pool);
    }
}
