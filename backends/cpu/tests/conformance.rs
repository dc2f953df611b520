//! Conformance of the CPU backend against the core reference backend: every op, dtype, layout and
//! table format, on seeded random inputs and the edge cases of OPS.md, for every instruction set this
//! machine runs. Outputs are NaN/sentinel-poisoned and surrounded by guard elements; the seed is in
//! every failure message.

use half::{bf16, f16};
use moehal_core::conformance::check_router;
use moehal_core::engram::{derive_primes, toy, EngramLayer};
use moehal_core::ops::{
    EngramHash, EngramLookup, GatherRows, GroupLimit, GroupScore, GroupedGemm, MoeCombine, MoePermute, RouterConfig,
    RouterHash, RouterTopk, Scoring, Swiglu, TableFormat, WeightLayout,
};
use moehal_core::{Backend, BackendExt, Buffer, DType, Element, Error, Float, Reference};
use moehal_cpu::grouped_gemm::Bf16Kernel;
use moehal_cpu::{CpuBackend, Isa};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const GUARD: usize = 16;

fn cpus() -> Vec<CpuBackend> {
    let mut v: Vec<CpuBackend> = Isa::all_available()
        .into_iter()
        .map(|i| CpuBackend::with_isa(i).unwrap())
        .collect();
    v.push(CpuBackend::with_threads(1).unwrap());
    // Every bf16 grouped_gemm kernel, forced (the default is picked per machine).
    for k in [Bf16Kernel::Fma, Bf16Kernel::Dot, Bf16Kernel::Amx] {
        match CpuBackend::new().with_bf16_kernel(k) {
            Ok(be) => v.push(be),
            Err(e) => println!("bf16 kernel {k:?} not tested: {e}"),
        }
    }
    v
}

/// An output buffer of `n` elements poisoned with `fill`, with GUARD poisoned elements on each side.
fn out_buf<T: Element>(be: &dyn Backend, n: usize, fill: T) -> Buffer {
    be.filled(n + 2 * GUARD, fill).unwrap()
}

/// Read the `n` elements of an output buffer, asserting that the guards are intact.
fn read<T: Element + PartialEq>(be: &dyn Backend, b: &Buffer, n: usize, fill: T, what: &str) -> Vec<T> {
    let all: Vec<T> = be.download_vec(b, n + 2 * GUARD).unwrap();
    let eq = |a: &T, b: &T| bytemuck::bytes_of(a) == bytemuck::bytes_of(b);
    assert!(
        all[..GUARD].iter().all(|v| eq(v, &fill)),
        "{what}: guard before output overwritten"
    );
    assert!(
        all[GUARD + n..].iter().all(|v| eq(v, &fill)),
        "{what}: guard after output overwritten"
    );
    all[GUARD..GUARD + n].to_vec()
}

fn rel_err<T: Float>(got: &[T], want: &[T], ctx: &str) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.to_f64(), w.to_f64());
        if w.is_nan() {
            assert!(
                g.is_nan(),
                "{ctx}: element {i} should be NaN (unwritten in reference), got {g}"
            );
            continue;
        }
        assert!(!g.is_nan(), "{ctx}: NaN at element {i} where the reference has {w}");
        num += (g - w) * (g - w);
        den += w * w;
    }
    if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    }
}

fn tol(dt: DType) -> f64 {
    match dt {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        _ => 1e-2,
    }
}

// ------------------------------------------------------------------------------------------------
// grouped_gemm
// ------------------------------------------------------------------------------------------------

fn run_gemm<T: Float>(
    be: &dyn Backend,
    x: &[T],
    m: usize,
    k: usize,
    n: usize,
    ge: &[i64],
    w: &[T],
    layout: WeightLayout,
    rs: Option<&[f32]>,
    bias: Option<&[T]>,
) -> moehal_core::Result<Vec<T>> {
    let g = ge.len();
    let xb = be.upload_slice(x)?;
    let wb = be.upload_slice(w)?;
    let gb = be.upload_slice(ge)?;
    let rb = rs.map(|r| be.upload_slice(r)).transpose()?;
    let bb = bias.map(|b| be.upload_slice(b)).transpose()?;
    let poison = T::from_f32(f32::NAN);
    let mut yb = out_buf(be, m * n, poison);
    let wshape = match layout {
        WeightLayout::NK => [g, n, k],
        WeightLayout::KN => [g, k, n],
    };
    let args = GroupedGemm {
        x: xb.view(T::DTYPE, &[m, k]),
        w: wb.view(T::DTYPE, &wshape),
        layout,
        group_end: gb.view(DType::I64, &[g]),
        row_scale: rb.as_ref().map(|b| b.view(DType::F32, &[m])),
        bias: bb.as_ref().map(|b| b.view(T::DTYPE, &[g, n])),
        y: yb.view_mut(T::DTYPE, &[m, n]).with_offset(GUARD),
    };
    be.grouped_gemm(args.validate()?)?;
    Ok(read(be, &yb, m * n, poison, "grouped_gemm y"))
}

fn gemm_cases<T: Float>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = Reference::new();
    // (M, K, N, G): empty problem dims, K not a multiple of the blocks, tails in N, decode shapes.
    let shapes = [
        (0, 8, 8, 2),
        (6, 0, 5, 2),
        (5, 7, 0, 2),
        (13, 37, 70, 4),
        (40, 130, 64, 3),
        (3, 300, 129, 8),
        (150, 20, 33, 2),
    ];
    for &(m, k, n, g) in &shapes {
        let used = m - m / 5; // guard rows past group_end[G-1]
        let mut ge: Vec<i64> = (0..g).map(|_| rng.gen_range(0..=used as i64)).collect();
        ge.sort();
        ge[g - 1] = used as i64;
        if g > 2 {
            ge[1] = ge[0]; // an empty group
        }
        let x: Vec<T> = (0..m * k).map(|_| T::from_f32(rng.gen_range(-1.0..1.0))).collect();
        let w: Vec<T> = (0..g * n * k).map(|_| T::from_f32(rng.gen_range(-1.0..1.0))).collect();
        let rs: Vec<f32> = (0..m).map(|_| rng.gen_range(0.0..1.5)).collect();
        let bias: Vec<T> = (0..g * n).map(|_| T::from_f32(rng.gen_range(-1.0..1.0))).collect();
        for layout in [WeightLayout::NK, WeightLayout::KN] {
            for opt in 0..3 {
                let rs_o = (opt >= 1).then_some(&rs[..]);
                let b_o = (opt == 2).then_some(&bias[..]);
                let want = run_gemm(&r, &x, m, k, n, &ge, &w, layout, rs_o, b_o).unwrap();
                for cpu in cpus() {
                    let ctx = format!(
                        "seed {seed} {} {layout:?} ({m},{k},{n},{g}) opt {opt} {:?} bf16 {:?}",
                        T::DTYPE,
                        cpu.kernels().isa(),
                        cpu.bf16_kernel()
                    );
                    let got = run_gemm(&cpu, &x, m, k, n, &ge, &w, layout, rs_o, b_o).unwrap();
                    let e = rel_err(&got, &want, &ctx);
                    assert!(e <= tol(T::DTYPE), "{ctx}: rel err {e}");
                    let again = run_gemm(&cpu, &x, m, k, n, &ge, &w, layout, rs_o, b_o).unwrap();
                    assert!(
                        bytemuck::cast_slice::<T, u8>(&got) == bytemuck::cast_slice::<T, u8>(&again),
                        "{ctx}: not deterministic"
                    );
                }
            }
        }
    }
}

#[test]
fn grouped_gemm_all_dtypes_layouts() {
    gemm_cases::<f32>(11);
    gemm_cases::<bf16>(12);
    gemm_cases::<f16>(13);
}

#[test]
fn grouped_gemm_rejects_bad_group_end_before_writing() {
    for cpu in cpus() {
        let x = vec![1f32; 4 * 3];
        let w = vec![1f32; 2 * 5 * 3];
        for ge in [vec![3i64, 2], vec![1, 5], vec![-1, 2]] {
            let err = run_gemm::<f32>(&cpu, &x, 4, 3, 5, &ge, &w, WeightLayout::NK, None, None).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { field: "group_end", .. }),
                "{err:?}"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------
// router_topk
// ------------------------------------------------------------------------------------------------

fn run_router<T: Float>(
    be: &dyn Backend,
    cfg: RouterConfig,
    logits: &[T],
    t: usize,
    e: usize,
    bias: Option<&[f32]>,
) -> (Vec<i32>, Vec<f32>, Vec<i64>) {
    let lb = be.upload_slice(logits).unwrap();
    let bb = bias.map(|b| be.upload_slice(b).unwrap());
    let mut ib = out_buf(be, t * cfg.k, -7i32);
    let mut wb = out_buf(be, t * cfg.k, f32::NAN);
    let mut cb = out_buf(be, e, -7i64);
    let args = RouterTopk {
        config: cfg,
        logits: lb.view(T::DTYPE, &[t, e]),
        bias: bb.as_ref().map(|b| b.view(DType::F32, &[e])),
        ids: ib.view_mut(DType::I32, &[t, cfg.k]).with_offset(GUARD),
        weights: wb.view_mut(DType::F32, &[t, cfg.k]).with_offset(GUARD),
        expert_counts: Some(cb.view_mut(DType::I64, &[e]).with_offset(GUARD)),
    };
    be.router_topk(args.validate().unwrap()).unwrap();
    (
        read(be, &ib, t * cfg.k, -7i32, "ids"),
        read(be, &wb, t * cfg.k, f32::NAN, "weights"),
        read(be, &cb, e, -7i64, "expert_counts"),
    )
}

fn router_case<T: Float>(seed: u64, cfg: RouterConfig, t: usize, e: usize, with_bias: bool, edge: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut logits: Vec<T> = (0..t * e).map(|_| T::from_f32(rng.gen_range(-4.0..4.0))).collect();
    if edge {
        for ti in 0..t {
            let row = &mut logits[ti * e..(ti + 1) * e];
            match ti % 5 {
                0 => row.iter_mut().for_each(|v| *v = T::from_f32(0.5)), // all tied
                1 => {
                    row[0] = T::from_f32(f32::NAN);
                    row[e - 1] = T::from_f32(f32::INFINITY);
                    row[e / 2] = T::from_f32(f32::NEG_INFINITY);
                }
                2 => row.iter_mut().for_each(|v| *v = T::from_f32(f32::NAN)), // nothing selectable
                3 => {
                    for j in (0..e).step_by(3) {
                        row[j] = T::from_f32(1.25); // many exact ties
                    }
                }
                _ => row.iter_mut().skip(1).for_each(|v| *v = T::from_f32(f32::NAN)), // one selectable
            }
        }
    }
    let bias: Vec<f32> = (0..e)
        .map(|i| {
            if edge && i % 2 == 0 {
                0.0
            } else {
                rng.gen_range(-0.3..0.3)
            }
        })
        .collect();
    let b = with_bias.then_some(&bias[..]);
    let r = Reference::new();
    let (rid, rw, rc) = run_router(&r, cfg, &logits, t, e, b);
    for cpu in cpus() {
        let ctx = format!(
            "seed {seed} {} {cfg:?} T={t} E={e} bias={with_bias} edge={edge} {:?}",
            T::DTYPE,
            cpu.kernels().isa()
        );
        let (id, w, c) = run_router(&cpu, cfg, &logits, t, e, b);
        let again = run_router(&cpu, cfg, &logits, t, e, b);
        assert!(
            again.0 == id && again.1.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{ctx}: not deterministic"
        );
        // OPS.md §Conformance, the one shared implementation: ids equal or near-ties only,
        // weights within 1e-5, counts the histogram of the ids.
        let row: Vec<f64> = logits.iter().map(|v| v.to_f64()).collect();
        let sum = check_router(&cfg, e, &row, b, &id, &w, Some(&c)).unwrap_or_else(|m| panic!("{ctx}: {m}"));
        if sum.near_ties == 0 {
            assert_eq!((&id, &c), (&rid, &rc), "{ctx}: ids / expert_counts");
            for (a, bb) in w.iter().zip(&rw) {
                assert!((a - bb).abs() <= 1e-5, "{ctx}: weight {a} vs {bb}");
            }
        }
    }
}

fn router_all<T: Float>(seed: u64) {
    for scoring in Scoring::ALL {
        for (k, renorm) in [(1, true), (4, false), (8, true)] {
            let cfg = RouterConfig {
                k,
                scoring,
                group: None,
                renormalize: renorm,
                routed_scaling_factor: 2.5,
            };
            router_case::<T>(seed, cfg, 37, 64, true, false);
            router_case::<T>(seed + 1, cfg, 25, 64, false, true);
            router_case::<T>(seed + 2, cfg, 10, 16, true, true);
        }
        // k = E.
        let cfg = RouterConfig {
            k: 16,
            scoring,
            group: None,
            renormalize: true,
            routed_scaling_factor: 1.0,
        };
        router_case::<T>(seed + 3, cfg, 10, 16, true, true);
    }
    for gs in [GroupScore::Top2Sum, GroupScore::Max] {
        for scoring in [Scoring::Sigmoid, Scoring::Softmax] {
            let group = Some(GroupLimit {
                n_group: 8,
                topk_group: 4,
                score: gs,
            });
            let cfg = RouterConfig {
                k: 8,
                scoring,
                group,
                renormalize: true,
                routed_scaling_factor: 2.5,
            };
            router_case::<T>(seed + 4, cfg, 70, 256, true, false);
            router_case::<T>(seed + 5, cfg, 20, 256, true, true);
            // k = topk_group * E / n_group (every expert of the kept groups).
            let cfg = RouterConfig {
                k: 8,
                scoring,
                group: Some(GroupLimit {
                    n_group: 4,
                    topk_group: 2,
                    score: gs,
                }),
                renormalize: false,
                routed_scaling_factor: 1.0,
            };
            router_case::<T>(seed + 6, cfg, 20, 16, true, true);
        }
    }
}

#[test]
fn router_topk_all() {
    router_all::<f32>(100);
    router_all::<bf16>(200);
    router_all::<f16>(300);
}

// ------------------------------------------------------------------------------------------------
// moe_permute, swiglu, moe_combine
// ------------------------------------------------------------------------------------------------

type PermOut<T> = (Vec<i64>, Vec<i64>, Vec<i64>, Option<Vec<T>>);

fn run_permute<T: Float>(
    be: &dyn Backend,
    ids: &[i32],
    t: usize,
    k: usize,
    e: usize,
    x: Option<&[T]>,
    h: usize,
) -> moehal_core::Result<PermOut<T>> {
    let ib = be.upload_slice(ids)?;
    let xb = x.map(|x| be.upload_slice(x).unwrap());
    let mut gb = out_buf(be, e, -7i64);
    let mut sb = out_buf(be, t * k, -7i64);
    let mut rb = out_buf(be, t * k, -7i64);
    let poison = T::from_f32(f32::NAN);
    let mut xpb = x.map(|_| out_buf(be, t * k * h, poison));
    let args = MoePermute {
        num_experts: e,
        ids: ib.view(DType::I32, &[t, k]),
        x: xb.as_ref().map(|b| b.view(T::DTYPE, &[t, h])),
        group_end: gb.view_mut(DType::I64, &[e]).with_offset(GUARD),
        src_token: sb.view_mut(DType::I64, &[t * k]).with_offset(GUARD),
        slot_row: rb.view_mut(DType::I64, &[t, k]).with_offset(GUARD),
        x_perm: xpb
            .as_mut()
            .map(|b| b.view_mut(T::DTYPE, &[t * k, h]).with_offset(GUARD)),
    };
    be.moe_permute(args.validate()?)?;
    let ge = read(be, &gb, e, -7i64, "group_end");
    let routed = ge.last().copied().unwrap_or(0) as usize;
    let mut st = read(be, &sb, t * k, -7i64, "src_token");
    st.truncate(routed);
    let xp = xpb.as_ref().map(|b| {
        let mut v = read(be, b, t * k * h, poison, "x_perm");
        v.truncate(routed * h);
        v
    });
    Ok((ge, st, read(be, &rb, t * k, -7i64, "slot_row"), xp))
}

fn permute_case<T: Float>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = Reference::new();
    for &(t, k, e, h) in &[
        (0usize, 2usize, 4usize, 3usize),
        (1, 1, 1, 5),
        (50, 4, 8, 7),
        (700, 8, 16, 4),
        (300, 6, 128, 1),
        // x_perm over 4 MiB: the parallel row copy (smaller ones copy serially).
        (1200, 8, 64, 256),
    ] {
        // ids in [-1, E), repeated experts in a token allowed (two independent slots)
        let ids: Vec<i32> = (0..t * k).map(|_| rng.gen_range(-1..e as i32)).collect();
        let x: Vec<T> = (0..t * h).map(|_| T::from_f32(rng.gen_range(-2.0..2.0))).collect();
        for with_x in [false, true] {
            let xo = with_x.then_some(&x[..]);
            let want = run_permute(&r, &ids, t, k, e, xo, h).unwrap();
            for cpu in cpus() {
                let got = run_permute(&cpu, &ids, t, k, e, xo, h).unwrap();
                let ctx = format!(
                    "seed {seed} permute T={t} k={k} E={e} x={with_x} {:?}",
                    cpu.kernels().isa()
                );
                assert_eq!(got.0, want.0, "{ctx}: group_end");
                assert_eq!(got.1, want.1, "{ctx}: src_token");
                assert_eq!(got.2, want.2, "{ctx}: slot_row");
                let (gx, wx) = (got.3.unwrap_or_default(), want.3.clone().unwrap_or_default());
                assert!(
                    bytemuck::cast_slice::<T, u8>(&gx) == bytemuck::cast_slice::<T, u8>(&wx),
                    "{ctx}: x_perm"
                );
            }
        }
    }
    for cpu in cpus() {
        let err = run_permute::<T>(&cpu, &[0, 4, 1, 2], 2, 2, 4, None, 1).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { field: "ids", .. }), "{err:?}");
        let err = run_permute::<T>(&cpu, &[0, -2], 1, 2, 4, None, 1).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { field: "ids", .. }), "{err:?}");
    }
}

#[test]
fn moe_permute_all() {
    permute_case::<f32>(400);
    permute_case::<bf16>(401);
    permute_case::<f16>(402);
}

fn run_swiglu<T: Float>(be: &dyn Backend, h: &[T], m: usize, i: usize, limit: Option<f32>) -> Vec<T> {
    let hb = be.upload_slice(h).unwrap();
    let poison = T::from_f32(f32::NAN);
    let mut ob = out_buf(be, m * i, poison);
    let args = Swiglu {
        h: hb.view(T::DTYPE, &[m, 2 * i]),
        out: ob.view_mut(T::DTYPE, &[m, i]).with_offset(GUARD),
        limit,
    };
    be.swiglu(args.validate().unwrap()).unwrap();
    read(be, &ob, m * i, poison, "swiglu out")
}

fn swiglu_case<T: Float>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = Reference::new();
    for &(m, i) in &[(0usize, 4usize), (3, 1), (17, 45), (64, 768), (5, 3000)] {
        let h: Vec<T> = (0..m * 2 * i)
            .map(|_| T::from_f32(rng.gen_range(-14.0..14.0)))
            .collect();
        for limit in [None, Some(10.0f32), Some(0.5)] {
            let want = run_swiglu(&r, &h, m, i, limit);
            for cpu in cpus() {
                let ctx = format!(
                    "seed {seed} swiglu {} ({m},{i}) {limit:?} {:?}",
                    T::DTYPE,
                    cpu.kernels().isa()
                );
                let got = run_swiglu(&cpu, &h, m, i, limit);
                let e = rel_err(&got, &want, &ctx);
                assert!(e <= tol(T::DTYPE), "{ctx}: rel err {e}");
            }
        }
    }
}

#[test]
fn swiglu_all() {
    swiglu_case::<f32>(500);
    swiglu_case::<bf16>(501);
    swiglu_case::<f16>(502);
}

#[allow(clippy::type_complexity)]
fn run_combine<T: Float>(
    be: &dyn Backend,
    y: &[T],
    rows: usize,
    h: usize,
    sr: &[i64],
    w: &[f32],
    t: usize,
    k: usize,
) -> moehal_core::Result<Vec<T>> {
    let yb = be.upload_slice(y)?;
    let sb = be.upload_slice(sr)?;
    let wb = be.upload_slice(w)?;
    let poison = T::from_f32(f32::NAN);
    let mut ob = out_buf(be, t * h, poison);
    let args = MoeCombine {
        y_perm: yb.view(T::DTYPE, &[rows, h]),
        slot_row: sb.view(DType::I64, &[t, k]),
        weights: wb.view(DType::F32, &[t, k]),
        out: ob.view_mut(T::DTYPE, &[t, h]).with_offset(GUARD),
    };
    be.moe_combine(args.validate()?)?;
    Ok(read(be, &ob, t * h, poison, "combine out"))
}

fn combine_case<T: Float>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = Reference::new();
    for &(t, k, h) in &[(0usize, 2usize, 8usize), (1, 1, 1), (40, 8, 100), (300, 6, 64)] {
        let rows = t * k;
        let y: Vec<T> = (0..rows * h).map(|_| T::from_f32(rng.gen_range(-3.0..3.0))).collect();
        let sr: Vec<i64> = (0..t * k)
            .map(|_| {
                if rng.gen_bool(0.15) {
                    -1
                } else {
                    rng.gen_range(0..rows as i64)
                }
            })
            .collect();
        let w: Vec<f32> = (0..t * k).map(|_| rng.gen_range(0.0..1.0)).collect();
        let want = run_combine(&r, &y, rows, h, &sr, &w, t, k).unwrap();
        for cpu in cpus() {
            let ctx = format!(
                "seed {seed} combine {} ({t},{k},{h}) {:?}",
                T::DTYPE,
                cpu.kernels().isa()
            );
            let got = run_combine(&cpu, &y, rows, h, &sr, &w, t, k).unwrap();
            let e = rel_err(&got, &want, &ctx);
            assert!(e <= tol(T::DTYPE), "{ctx}: rel err {e}");
            let again = run_combine(&cpu, &y, rows, h, &sr, &w, t, k).unwrap();
            assert!(
                bytemuck::cast_slice::<T, u8>(&got) == bytemuck::cast_slice::<T, u8>(&again),
                "{ctx}: not deterministic"
            );
        }
    }
    for cpu in cpus() {
        let err = run_combine::<T>(&cpu, &[T::from_f32(1.0); 4], 2, 2, &[0, 2], &[1.0, 1.0], 1, 2).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { field: "slot_row", .. }),
            "{err:?}"
        );
    }
}

#[test]
fn moe_combine_all() {
    combine_case::<f32>(600);
    combine_case::<bf16>(601);
    combine_case::<f16>(602);
}

// ------------------------------------------------------------------------------------------------
// engram_hash, gather_rows, engram_lookup
// ------------------------------------------------------------------------------------------------

fn small_layer() -> EngramLayer {
    let primes = derive_primes(1000, 4, 3, 1).unwrap().remove(0);
    // odd multipliers with m * (V' - 1) < 2^63
    EngramLayer::new(
        4,
        3,
        vec![
            0x1234_5677,
            0x0009_e377_9b97_f4a7,
            0x5bd1_e995_5bd1,
            0x0002_545f_4914_f6cd,
        ],
        primes,
        3001,
        2,
    )
    .unwrap()
}

struct Seq {
    ids: Vec<i64>,
    pos: Option<Vec<i64>>,
    alive: Option<Vec<u8>>,
    hist: Vec<i64>,
}

fn seqs(layer: &EngramLayer, seed: u64) -> Vec<Seq> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v = layer.vocab_size() as i64;
    let mut out = Vec::new();
    // 20,000 tokens crosses engram_hash's parallel threshold (16 Ki tokens).
    for &t in &[0usize, 1, 5, 200, 1000, 20_000] {
        let ids: Vec<i64> = (0..t).map(|_| rng.gen_range(0..v)).collect();
        out.push(Seq {
            ids: ids.clone(),
            pos: None,
            alive: None,
            hist: vec![],
        });
        let mut p = 0i64;
        let pos: Vec<i64> = (0..t)
            .map(|_| {
                p = if rng.gen_bool(0.1) { rng.gen_range(0..3) } else { p + 1 };
                p
            })
            .collect();
        let alive: Vec<u8> = (0..t).map(|_| u8::from(!rng.gen_bool(0.1))).collect();
        let hist: Vec<i64> = (0..layer.max_order() - 1).map(|_| rng.gen_range(0..v)).collect();
        out.push(Seq {
            ids,
            pos: Some(pos),
            alive: Some(alive),
            hist,
        });
    }
    out
}

fn run_hash(be: &dyn Backend, layer: &EngramLayer, s: &Seq) -> moehal_core::Result<Vec<i64>> {
    let t = s.ids.len();
    let c = layer.columns();
    let ib = be.upload_slice(&s.ids)?;
    let pb = s.pos.as_ref().map(|p| be.upload_slice(p).unwrap());
    let ab = s.alive.as_ref().map(|a| be.upload_slice(a).unwrap());
    let mut rb = out_buf(be, t * c, -7i64);
    let args = EngramHash {
        layer,
        ids: ib.view(DType::I64, &[t]),
        positions: pb.as_ref().map(|b| b.view(DType::I64, &[t])),
        alive: ab.as_ref().map(|b| b.view(DType::U8, &[t])),
        history: &s.hist,
        rows: rb.view_mut(DType::I64, &[t, c]).with_offset(GUARD),
    };
    be.engram_hash(args.validate()?)?;
    Ok(read(be, &rb, t * c, -7i64, "rows"))
}

#[test]
fn engram_hash_all() {
    let r = Reference::new();
    for layer in [toy::layer().unwrap(), small_layer()] {
        for s in seqs(&layer, 700) {
            let want = run_hash(&r, &layer, &s).unwrap();
            for cpu in cpus() {
                assert_eq!(
                    run_hash(&cpu, &layer, &s).unwrap(),
                    want,
                    "hash T={} pos={}",
                    s.ids.len(),
                    s.pos.is_some()
                );
            }
        }
    }
    // OPS.md toy vector, exact.
    let cpu = CpuBackend::new();
    let s = Seq {
        ids: vec![7, 3, 7, 3, 49],
        pos: None,
        alive: None,
        hist: vec![],
    };
    let rows = run_hash(&cpu, &toy::layer().unwrap(), &s).unwrap();
    assert_eq!(
        rows,
        [9, 21, 28, 42, 8, 11, 39, 59, 0, 18, 25, 50, 8, 11, 24, 46, 5, 22, 37, 46]
    );
    let bad = Seq {
        ids: vec![7, 50],
        pos: None,
        alive: None,
        hist: vec![],
    };
    let err = run_hash(&cpu, &toy::layer().unwrap(), &bad).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { field: "ids", .. }), "{err:?}");
}

/// A table of `r` rows of width `d` in `format`, as raw bytes; fp8 tables hold every byte value.
fn table_bytes(format: TableFormat, r: usize, d: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    match format {
        TableFormat::F32 => {
            bytemuck::cast_slice(&(0..r * d).map(|_| rng.gen_range(-1.0f32..1.0)).collect::<Vec<_>>()).to_vec()
        }
        TableFormat::BF16 => bytemuck::cast_slice(
            &(0..r * d)
                .map(|_| bf16::from_f32(rng.gen_range(-1.0..1.0)))
                .collect::<Vec<_>>(),
        )
        .to_vec(),
        TableFormat::F16 => bytemuck::cast_slice(
            &(0..r * d)
                .map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)))
                .collect::<Vec<_>>(),
        )
        .to_vec(),
        TableFormat::Fp8E4m3Ue8m0 => {
            let w = d + d / 32;
            let mut v = vec![0u8; r * w];
            for row in 0..r {
                for e in 0..d {
                    v[row * w + e] = ((row * d + e) % 256) as u8; // all encodings: zeros, subnormals, NaN
                }
                for s in 0..d / 32 {
                    v[row * w + d + s] = match (row + s) % 6 {
                        0 => 0,
                        1 => 255,
                        2 => 127,
                        3 => 1,
                        4 => 254,
                        _ => rng.gen(),
                    };
                }
            }
            v
        }
    }
}

fn upload_table(be: &dyn Backend, format: TableFormat, bytes: &[u8]) -> Buffer {
    match format {
        TableFormat::F32 => be.upload_slice::<f32>(bytemuck::cast_slice(bytes)).unwrap(),
        TableFormat::BF16 => be.upload_slice::<bf16>(bytemuck::cast_slice(bytes)).unwrap(),
        TableFormat::F16 => be.upload_slice::<f16>(bytemuck::cast_slice(bytes)).unwrap(),
        TableFormat::Fp8E4m3Ue8m0 => be.upload_slice::<u8>(bytes).unwrap(),
    }
}

fn read_out_bytes(be: &dyn Backend, b: &Buffer, out: DType, n: usize) -> Vec<u8> {
    match out {
        DType::F32 => bytemuck::cast_slice(&read(be, b, n, f32::from_bits(0x7fc0_dead), "out")).to_vec(),
        _ => bytemuck::cast_slice(&read(be, b, n, bf16::from_bits(0x7fd1), "out")).to_vec(),
    }
}

fn poisoned(be: &dyn Backend, out: DType, n: usize) -> Buffer {
    match out {
        DType::F32 => out_buf(be, n, f32::from_bits(0x7fc0_dead)),
        _ => out_buf(be, n, bf16::from_bits(0x7fd1)),
    }
}

fn run_gather(
    be: &dyn Backend,
    format: TableFormat,
    out: DType,
    tb: &[u8],
    r: usize,
    d: usize,
    rows: &[i64],
    t: usize,
    c: usize,
) -> moehal_core::Result<Vec<u8>> {
    let table = upload_table(be, format, tb);
    let rb = be.upload_slice(rows)?;
    let mut ob = poisoned(be, out, t * c * d);
    let args = GatherRows {
        table: table.view(format.storage_dtype(), &[r, format.stored_width(d)]),
        format,
        rows: rb.view(DType::I64, &[t, c]),
        out: ob.view_mut(out, &[t, c * d]).with_offset(GUARD),
    };
    be.gather_rows(args.validate()?)?;
    Ok(read_out_bytes(be, &ob, out, t * c * d))
}

#[test]
fn gather_rows_all_formats() {
    let mut rng = ChaCha8Rng::seed_from_u64(800);
    let r = Reference::new();
    for (format, out) in TableFormat::PAIRS {
        for &(rows_n, d, t, c) in &[(10usize, 32usize, 0usize, 3usize), (50, 64, 7, 3), (300, 256, 150, 8)] {
            let tb = table_bytes(format, rows_n, d, &mut rng);
            let rows: Vec<i64> = (0..t * c).map(|_| rng.gen_range(0..rows_n as i64)).collect();
            let want = run_gather(&r, format, out, &tb, rows_n, d, &rows, t, c).unwrap();
            for cpu in cpus() {
                let got = run_gather(&cpu, format, out, &tb, rows_n, d, &rows, t, c).unwrap();
                assert!(
                    got == want,
                    "gather {format:?} -> {out} ({rows_n},{d},{t},{c}) {:?}: not bitwise equal",
                    cpu.kernels().isa()
                );
            }
            if t > 0 {
                let mut bad = rows.clone();
                bad[t * c / 2] = rows_n as i64;
                let err = run_gather(&CpuBackend::new(), format, out, &tb, rows_n, d, &bad, t, c).unwrap_err();
                assert!(matches!(err, Error::InvalidArgument { field: "rows", .. }), "{err:?}");
            }
        }
    }
}

fn run_lookup(
    be: &dyn Backend,
    layer: &EngramLayer,
    s: &Seq,
    format: TableFormat,
    out: DType,
    tb: &[u8],
    d: usize,
) -> moehal_core::Result<Vec<u8>> {
    let t = s.ids.len();
    let c = layer.columns();
    let r = layer.rows() as usize;
    let table = upload_table(be, format, tb);
    let ib = be.upload_slice(&s.ids)?;
    let pb = s.pos.as_ref().map(|p| be.upload_slice(p).unwrap());
    let ab = s.alive.as_ref().map(|a| be.upload_slice(a).unwrap());
    let mut ob = poisoned(be, out, t * c * d);
    let args = EngramLookup {
        layer,
        ids: ib.view(DType::I64, &[t]),
        positions: pb.as_ref().map(|b| b.view(DType::I64, &[t])),
        alive: ab.as_ref().map(|b| b.view(DType::U8, &[t])),
        history: &s.hist,
        table: table.view(format.storage_dtype(), &[r, format.stored_width(d)]),
        format,
        out: ob.view_mut(out, &[t, c * d]).with_offset(GUARD),
    };
    be.engram_lookup(args.validate()?)?;
    Ok(read_out_bytes(be, &ob, out, t * c * d))
}

#[test]
fn engram_lookup_all_formats() {
    let mut rng = ChaCha8Rng::seed_from_u64(900);
    let r = Reference::new();
    let layer = small_layer();
    let d = 32;
    for (format, out) in TableFormat::PAIRS {
        let tb = table_bytes(format, layer.rows() as usize, d, &mut rng);
        for s in seqs(&layer, 901) {
            let want = run_lookup(&r, &layer, &s, format, out, &tb, d).unwrap();
            for cpu in cpus() {
                let got = run_lookup(&cpu, &layer, &s, format, out, &tb, d).unwrap();
                assert!(
                    got == want,
                    "lookup {format:?} -> {out} T={} {:?}",
                    s.ids.len(),
                    cpu.kernels().isa()
                );
            }
        }
    }
}

#[test]
fn backend_identity() {
    let cpu = CpuBackend::new();
    assert_eq!(cpu.name(), "cpu");
    for op in moehal_core::OpDesc::all(false) {
        assert!(cpu.supports(&op).is_yes(), "{op:?} should be supported");
    }
}

// ------------------------------------------------------------------------------------------------
// router_topk tie classes (OPS.md §2 steps 1–3) and hash routing
// ------------------------------------------------------------------------------------------------

/// Exact f32 ties: every CPU kernel set gives exactly the reference's ids (no near-tie latitude is
/// needed: scores, `fl32(s + bias)` and f32 group sums are the values the reference ranks).
/// Each row is one tie class; the comments give the f32 values that tie.
#[test]
fn router_tie_classes_equal_reference_exactly() {
    let g = |n_group, topk_group, score| {
        Some(GroupLimit {
            n_group,
            topk_group,
            score,
        })
    };
    let cfg = |k, scoring, group| RouterConfig {
        k,
        scoring,
        group,
        renormalize: true,
        routed_scaling_factor: 1.0,
    };
    let sat = [20.5f32, 100.0, 30.0, 25.0, -1.5, 0.25, 40.0, 22.0];
    // (name, config, logits of one token, bias, expected ids)
    type TieCase = (&'static str, RouterConfig, Vec<f32>, Option<Vec<f32>>, Option<Vec<i32>>);
    let cases: Vec<TieCase> = vec![
        // sigmoid(x >= 20) rounds to 1.0: the brief's example, and 8 experts with 6 saturated.
        (
            "saturation",
            cfg(1, Scoring::Sigmoid, None),
            vec![20.5, 100.0],
            None,
            Some(vec![0]),
        ),
        (
            "saturation 8",
            cfg(4, Scoring::Sigmoid, None),
            sat.to_vec(),
            None,
            Some(vec![0, 1, 2, 3]),
        ),
        // e^-200, e^-300 underflow to 0 in f32.
        (
            "softmax underflow",
            cfg(2, Scoring::Softmax, None),
            vec![0.0, -300.0, -200.0],
            None,
            Some(vec![0, 1]),
        ),
        (
            "sigmoid underflow",
            cfg(3, Scoring::Sigmoid, None),
            vec![5.0, -300.0, -200.0, -250.0],
            None,
            Some(vec![0, 1, 2]),
        ),
        // sqrt_softplus(-200) = e^-100 = 3.7e-44 is a subnormal, sqrt_softplus(-300) = 0: [0, 2].
        (
            "sqrt_softplus underflow",
            cfg(2, Scoring::SqrtSoftplus, None),
            vec![5.0, -300.0, -200.0],
            None,
            Some(vec![0, 2]),
        ),
        (
            "sqrt_softplus subnormals",
            cfg(4, Scoring::SqrtSoftplus, None),
            vec![-180.0, -300.0, -200.0, -190.0, -200.0, -400.0],
            None,
            Some(vec![0, 3, 2, 4]),
        ),
        // Equal logits.
        (
            "equal",
            cfg(3, Scoring::Softmax, None),
            vec![0.75; 6],
            None,
            Some(vec![0, 1, 2]),
        ),
        // fl32(s + 1024) equal for s = .5 and .5000025: experts and groups tie.
        (
            "bias rounding",
            cfg(1, Scoring::Sigmoid, None),
            vec![0.0, 1e-5],
            Some(vec![1024.0; 2]),
            Some(vec![0]),
        ),
        (
            "bias rounding across groups",
            cfg(2, Scoring::Sigmoid, g(2, 1, GroupScore::Top2Sum)),
            vec![0.0, 0.0, 1e-5, 1e-5],
            Some(vec![1024.0; 4]),
            Some(vec![0, 1]),
        ),
        (
            "bias rounding across groups, max",
            cfg(2, Scoring::SqrtSoftplus, g(2, 1, GroupScore::Max)),
            vec![0.0, 0.0, 1e-5, 1e-5],
            Some(vec![1024.0; 4]),
            Some(vec![0, 1]),
        ),
        // top2_sum in f32: 1 + 2^-24 rounds to 1, a group tie.
        (
            "f32 group sum",
            cfg(1, Scoring::Sigmoid, g(2, 1, GroupScore::Top2Sum)),
            vec![-300.0; 4],
            Some(vec![1.0, 0.0, 1.0, 2f32.powi(-24)]),
            Some(vec![0]),
        ),
        // The same on 16-expert groups (the AVX-512 group kernel): 4 groups, keep 2.
        (
            "f32 group sum, 16 per group",
            cfg(3, Scoring::SqrtSoftplus, g(4, 2, GroupScore::Top2Sum)),
            vec![-300.0; 64],
            Some(
                (0..64)
                    .map(|i| match i % 16 {
                        0 => 1.0,
                        1 if (i / 16) % 2 == 1 => 2f32.powi(-24),
                        _ => 0.0,
                    })
                    .collect(),
            ),
            Some(vec![0, 16, 17]),
        ),
        (
            "saturation, 16 per group",
            cfg(6, Scoring::Sigmoid, g(4, 1, GroupScore::Top2Sum)),
            (0..64).map(|i| sat[i % 8] - (i / 16) as f32 * 0.125).collect(),
            None,
            Some(vec![0, 1, 2, 3, 6, 7]),
        ),
    ];
    let r = Reference::new();
    for (name, cfg, logits, bias, want) in cases {
        let e = logits.len();
        let (rid, rw, rc) = run_router(&r, cfg, &logits, 1, e, bias.as_deref());
        if let Some(want) = want {
            assert_eq!(rid, want, "{name}: reference");
        }
        for cpu in cpus() {
            let (id, w, c) = run_router(&cpu, cfg, &logits, 1, e, bias.as_deref());
            let isa = cpu.kernels().isa();
            assert_eq!((&id, &c), (&rid, &rc), "{name} {isa:?}");
            for (a, b) in w.iter().zip(&rw) {
                assert!((a - b).abs() <= 1e-6, "{name} {isa:?}: weight {a} vs {b}");
            }
        }
    }
}

/// ids, weights, expert_counts.
type RouterOut = (Vec<i32>, Vec<f32>, Vec<i64>);

fn run_router_hash(
    be: &dyn Backend,
    cfg: RouterConfig,
    logits: &[f32],
    e: usize,
    table: &[i32],
    tokens: &[i64],
) -> Result<RouterOut, Error> {
    let (t, k) = (tokens.len(), cfg.k);
    let lb = be.upload_slice(logits).unwrap();
    let tb = be.upload_slice(table).unwrap();
    let xb = be.upload_slice(tokens).unwrap();
    let mut ib = out_buf(be, t * k, -7i32);
    let mut wb = out_buf(be, t * k, f32::NAN);
    let mut cb = out_buf(be, e, -7i64);
    let args = RouterHash {
        config: cfg,
        logits: lb.view(DType::F32, &[t, e]),
        tid2eid: tb.view(DType::I32, &[table.len() / k, k]),
        token_ids: xb.view(DType::I64, &[t]),
        ids: ib.view_mut(DType::I32, &[t, k]).with_offset(GUARD),
        weights: wb.view_mut(DType::F32, &[t, k]).with_offset(GUARD),
        expert_counts: Some(cb.view_mut(DType::I64, &[e]).with_offset(GUARD)),
    };
    let res = be.router_hash(args.validate().unwrap());
    let out = (
        read(be, &ib, t * k, -7i32, "ids"),
        read(be, &wb, t * k, f32::NAN, "weights"),
        read(be, &cb, e, -7i64, "expert_counts"),
    );
    res.map(|_| out.clone()).inspect_err(|_| {
        assert!(out.0.iter().all(|&v| v == -7), "ids written on error");
        assert!(out.1.iter().all(|v| v.is_nan()), "weights written on error");
        assert!(out.2.iter().all(|&v| v == -7), "counts written on error");
    })
}

/// Hash routing on every CPU kernel set against the reference: random tables with repeats,
/// non-finite logits, every score function; and the value errors write nothing.
#[test]
fn router_hash_matches_reference() {
    let r = Reference::new();
    let mut rng = ChaCha8Rng::seed_from_u64(2020);
    for (t, e, v, k) in [
        (37usize, 256usize, 1000usize, 6usize),
        (20, 16, 7, 16),
        (5, 8, 3, 2),
        (0, 8, 3, 2),
    ] {
        for scoring in Scoring::ALL {
            let cfg = RouterConfig {
                k,
                scoring,
                group: None,
                renormalize: k != 2,
                routed_scaling_factor: 1.5,
            };
            let mut logits: Vec<f32> = (0..t * e).map(|_| rng.gen_range(-6.0..6.0)).collect();
            for i in (0..t * e).step_by(11) {
                logits[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][i % 3];
            }
            let table: Vec<i32> = (0..v * k).map(|_| rng.gen_range(0..e as i32)).collect();
            let tokens: Vec<i64> = (0..t).map(|_| rng.gen_range(0..v as i64)).collect();
            let (rid, rw, rc) = run_router_hash(&r, cfg, &logits, e, &table, &tokens).unwrap();
            for (ti, &tok) in tokens.iter().enumerate() {
                assert_eq!(
                    rid[ti * k..(ti + 1) * k],
                    table[tok as usize * k..(tok as usize + 1) * k]
                );
            }
            for cpu in cpus() {
                let isa = cpu.kernels().isa();
                let (id, w, c) = run_router_hash(&cpu, cfg, &logits, e, &table, &tokens).unwrap();
                assert_eq!((&id, &c), (&rid, &rc), "{isa:?} {cfg:?} T={t}");
                for (j, (a, b)) in w.iter().zip(&rw).enumerate() {
                    assert!((a - b).abs() <= 1e-5, "{isa:?} {cfg:?}: weight {j}: {a} vs {b}");
                }
            }
        }
    }
    let cfg = RouterConfig {
        k: 2,
        scoring: Scoring::Sigmoid,
        group: None,
        renormalize: true,
        routed_scaling_factor: 1.0,
    };
    for cpu in cpus() {
        for (tokens, field) in [([0i64, 3], "token_ids"), ([-1, 0], "token_ids"), ([2, 0], "tid2eid")] {
            let err = run_router_hash(&cpu, cfg, &[0.0; 8], 4, &[0, 1, 2, 3, 4, 0], &tokens).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { field: f, .. } if f == field),
                "{err}"
            );
        }
    }
}
