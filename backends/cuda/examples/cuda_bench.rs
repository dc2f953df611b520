//! `cuda_bench`: the issue-4 target shapes on device 0, one line per case (and a JSON line).
//! Prints "skipped: ..." and exits 0 without a device; with `MOEHAL_REQUIRE_CUDA=1` it exits 1
//! instead. Run by scripts/gpu/check.sh.
//!
//! Time budget (scripts/gpu/check.sh gives it 90 s): every case times at most [`CASE_BUDGET_S`]
//! after one untimed call (the iteration count adapts to the first call's time), so the whole
//! bench is bounded by ~11 cases x (upload + first call + 3 s). Each case states its work and the
//! time of one call at a conservative H200 rate, so a slow kernel shows as a slow line, not a
//! timeout.

use std::time::Instant;

use moehal_core::ops::*;
use moehal_core::{Backend, BackendExt, DType};
use moehal_cuda::{CudaBackend, GemmPath};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const HBM: f64 = 4.8e12; // H200 HBM3e, bytes/s

/// Seconds of timed calls per case at most (after one untimed call).
const CASE_BUDGET_S: f64 = 3.0;

/// Mean seconds per call of `f`: one untimed call (warm-up, NVRTC already done by `warm_up`),
/// then `iters` timed calls where `iters` is `max_iters` or fewer, so that the timed part takes
/// about [`CASE_BUDGET_S`] at the first call's speed.
fn time<F: FnMut()>(be: &CudaBackend, max_iters: usize, mut f: F) -> f64 {
    let t0 = Instant::now();
    f();
    be.synchronize().unwrap();
    let first = t0.elapsed().as_secs_f64();
    let iters = ((CASE_BUDGET_S / first.max(1e-9)) as usize).clamp(1, max_iters);
    let t0 = Instant::now();
    for _ in 0..iters {
        f();
    }
    be.synchronize().unwrap();
    t0.elapsed().as_secs_f64() / iters as f64
}

fn report(case: &str, secs: f64, extra: &str) {
    println!("{case:<48} {:>10.1} us  {extra}", secs * 1e6);
    println!("JSON {{\"case\":\"{case}\",\"seconds\":{secs:e},\"extra\":\"{extra}\"}}");
}

/// `group_end` of `tokens` tokens routed to `k` distinct experts of `e` each (the test kit's
/// routing, `moehal bench`'s), and how many experts it touches.
fn routing(rng: &mut ChaCha8Rng, tokens: usize, e: usize, k: usize) -> (Vec<i64>, usize) {
    let ge = moehal_testkit::rng::routed_group_end(rng, e, tokens, k);
    let counts = grouped_gemm::counts_from_group_end(&ge).unwrap();
    (ge, counts.iter().filter(|&&c| c > 0).count())
}

/// DeepSeek-V3 gate_up, bf16 NK: 256 experts, N 4096, K 7168, top-8. Work per call:
/// 2 * (8 T) * 4096 * 7168 FLOP = 0.47 GFLOP * T (T = 4096: 1.92 TFLOP), and the touched
/// experts' weights (<= 256 * 58.7 MB = 15 GB) read once.
fn gemm(be: &CudaBackend, rng: &mut ChaCha8Rng, tokens: usize, path: GemmPath) {
    let (g, n, kk, topk) = (256usize, 4096usize, 7168usize, 8usize);
    let (ge, touched) = routing(rng, tokens, g, topk);
    let m = tokens * topk;
    let x = be.alloc(m * kk * 2).unwrap();
    let w = be.alloc(g * n * kk * 2).unwrap();
    let geb = be.upload_slice(&ge).unwrap();
    let mut y = be.alloc(m * n * 2).unwrap();
    be.set_gemm_path(path);
    let secs = time(be, 20, || {
        let a = GroupedGemm {
            x: x.view(DType::BF16, &[m, kk]),
            w: w.view(DType::BF16, &[g, n, kk]),
            layout: WeightLayout::NK,
            group_end: geb.view(DType::I64, &[g]),
            row_scale: None,
            bias: None,
            y: y.view_mut(DType::BF16, &[m, n]),
        };
        be.grouped_gemm(a.validate().unwrap()).unwrap();
    });
    be.set_gemm_path(GemmPath::Auto);
    let flops = 2.0 * m as f64 * n as f64 * kk as f64;
    let wbytes = touched as f64 * (n * kk * 2) as f64;
    report(
        &format!("grouped_gemm bf16 NK dsv3 gate_up T={tokens} {path:?}"),
        secs,
        &format!(
            "{:.1} TFLOP/s, touched weights {:.0} GB/s = {:.0}% of HBM",
            flops / secs / 1e12,
            wbytes / secs / 1e9,
            100.0 * wbytes / secs / HBM
        ),
    );
}

fn router(be: &CudaBackend, rng: &mut ChaCha8Rng) {
    let (t, e) = (4096usize, 256usize);
    let logits: Vec<f32> = (0..t * e).map(|_| rng.gen_range(-4.0f32..4.0)).collect();
    let bias: Vec<f32> = (0..e).map(|_| rng.gen_range(-0.5f32..0.5)).collect();
    let lb = be.upload_slice(&logits).unwrap();
    let bb = be.upload_slice(&bias).unwrap();
    let mut ids = be.alloc(t * 8 * 4).unwrap();
    let mut w = be.alloc(t * 8 * 4).unwrap();
    let cfg = moehal_testkit::presets::preset("deepseek-v3").unwrap().router();
    let secs = time(be, 200, || {
        let a = RouterTopk {
            config: cfg,
            logits: lb.view(DType::F32, &[t, e]),
            bias: Some(bb.view(DType::F32, &[e])),
            ids: ids.view_mut(DType::I32, &[t, 8]),
            weights: w.view_mut(DType::F32, &[t, 8]),
            expert_counts: None,
        };
        be.router_topk(a.validate().unwrap()).unwrap();
    });
    report(
        "router_topk f32 dsv3 4096x256 (sigmoid+bias, 8/4 groups, k=8)",
        secs,
        "target <= 20 us",
    );
}

/// Returns `false` (after printing why) when the host table cannot be registered, so that the
/// other cases still run and the bench still fails at the end.
fn gather(be: &CudaBackend, rng: &mut ChaCha8Rng, host: bool) -> bool {
    let (r, d, t, c) = if host {
        (1usize << 20, 256usize, 4096usize, 24usize)
    } else {
        (1usize << 21, 256, 16384, 24)
    };
    let rows: Vec<i64> = (0..t * c).map(|_| rng.gen_range(0..r as i64)).collect();
    let table = if host {
        // Registered once (as an engine would): the timed calls read the mapped table without
        // the per-call registration of a plain host buffer.
        let plain = moehal_core::host::zeroed_buffer(r * d * 2).unwrap();
        match be.pin_host_table(plain) {
            Ok(t) => t,
            Err((e, _)) => {
                println!("FAILED gather_rows host table: pin_host_table: {e}");
                return false;
            }
        }
    } else {
        be.alloc(r * d * 2).unwrap()
    };
    let rb = be.upload_slice(&rows).unwrap();
    let mut out = be.alloc(t * c * d * 2).unwrap();
    let secs = time(be, 10, || {
        let a = GatherRows {
            table: table.view(DType::BF16, &[r, d]),
            format: TableFormat::BF16,
            rows: rb.view(DType::I64, &[t, c]),
            out: out.view_mut(DType::BF16, &[t, c * d]),
        };
        be.gather_rows(a.validate().unwrap()).unwrap();
    });
    let bytes = (t * c * d * 2) as f64;
    report(
        &format!(
            "gather_rows bf16 {} table T={t} C={c} D={d}",
            if host { "host(pinned-mapped)" } else { "device" }
        ),
        secs,
        &format!(
            "read {:.0} GB/s; read+write {:.0} GB/s = {:.0}% of HBM",
            bytes / secs / 1e9,
            2.0 * bytes / secs / 1e9,
            200.0 * bytes / secs / HBM
        ),
    );
    true
}

fn main() -> std::process::ExitCode {
    let be = match moehal_cuda::open(0) {
        Ok(b) => b,
        Err(e) => {
            return match moehal_cuda::skip_or_fail("the CUDA backend", &e.to_string()) {
                Ok(line) => {
                    println!("{line}");
                    std::process::ExitCode::SUCCESS
                }
                Err(msg) => {
                    eprintln!("error: {msg}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
    };
    println!("device: {:?}", be.device_info());
    let t0 = Instant::now();
    be.warm_up().unwrap();
    println!(
        "NVRTC compile + load of all kernels: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    // Expected time of one call at a conservative H200 rate (the targets are far higher), and
    // the case's bound: 1 untimed call + at most CASE_BUDGET_S of timed calls.
    // router 4096x256: 4 MB of logits; <= 50 us at 100 GB/s. 200 calls: 10 ms.
    router(&be, &mut rng);
    // gather device, 393,216 rows of 512 B: 201 MB read + written; 0.2 s at 1 TB/s.
    let mut ok = gather(&be, &mut rng, false);
    // gather host, 98,304 rows of 512 B over PCIe / C2C: 50 MB; 0.05 s at 1 GB/s.
    ok &= gather(&be, &mut rng, true);
    for tokens in [1usize, 16] {
        // T 1 / 16: 8 / <= 128 experts touched, 0.47 / 7.5 GFLOP; weights 0.47 / <= 7.5 GB,
        // 0.5 / 7.5 ms at 1 TB/s. Decode path (Auto) and tensor cores.
        gemm(&be, &mut rng, tokens, GemmPath::Auto);
        gemm(&be, &mut rng, tokens, GemmPath::TensorCore);
    }
    // T 4096 (prefill): 1.92 TFLOP. Tensor cores (Auto) at a conservative 100 TFLOP/s: 19 ms.
    gemm(&be, &mut rng, 4096, GemmPath::Auto);
    // SIMT fallback at T 256: 0.12 TFLOP, 0.12 s at a conservative 1 TFLOP/s (SIMT f32 FMA peak
    // is ~67 TFLOP/s; at T 4096 one call is 1.92 TFLOP, ~2 s at that rate: not needed to see the
    // fallback's rate, and it would crowd the budget).
    gemm(&be, &mut rng, 256, GemmPath::Simt);
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
