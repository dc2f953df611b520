//! router_topk on the shapes of the repository's benches/peers.py: DeepSeek-V3 (4096 x 256, sigmoid + bias,
//! 8 groups keep 4, top-8), Qwen3 (4096 x 128 softmax top-8), and one DeepSeek-V3 token.

use criterion::{criterion_group, criterion_main, Criterion};
use moehal_cpu::router_topk::router_topk;
use moehal_cpu::{Kernels, Pool};
use moehal_testkit::presets::preset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn benches(c: &mut Criterion) {
    let kern = Kernels::best();
    let pool = Pool::global();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // The models' routers as the test kit's presets define them.
    let ds = preset("deepseek-v3").unwrap().router();
    let qw = preset("qwen3-30b-a3b").unwrap().router();
    let mut g = c.benchmark_group("router_topk");
    for (name, cfg, t, e, bias) in [
        ("deepseek_v3_T4096", ds, 4096usize, 256usize, true),
        ("qwen3_T4096", qw, 4096, 128, false),
        ("deepseek_v3_T1", ds, 1, 256, true),
    ] {
        let logits: Vec<f32> = (0..t * e).map(|_| rng.gen_range(-3.0..3.0)).collect();
        let b: Vec<f32> = (0..e).map(|_| rng.gen_range(-0.1..0.1)).collect();
        let mut ids = vec![0i32; t * cfg.topk];
        let mut w = vec![0f32; t * cfg.topk];
        let mut counts = vec![0i64; e];
        g.bench_function(name, |bn| {
            bn.iter(|| {
                router_topk(
                    kern,
                    pool,
                    &cfg,
                    &logits,
                    t,
                    e,
                    bias.then_some(&b[..]),
                    &mut ids,
                    &mut w,
                    Some(&mut counts),
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(router, benches);
criterion_main!(router);
