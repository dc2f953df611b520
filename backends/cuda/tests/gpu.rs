//! CUDA backend vs the reference backend, every op. Prints "skipped: no CUDA device" and passes
//! where the backend is unavailable. Outputs are NaN-poisoned (or sentinel-filled) and surrounded
//! by guard regions that must stay untouched.

use half::{bf16, f16};
use moehal_core::conformance::check_router;
use moehal_core::engram::toy;
use moehal_core::ops::*;
use moehal_core::{Backend, BackendExt, Buffer, DType, Element, Error, Float, Reference};
use moehal_cuda::{CudaBackend, GemmPath};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const GUARD: usize = 64;

fn cuda() -> Option<CudaBackend> {
    match moehal_cuda::open(0) {
        Ok(b) => Some(b),
        Err(Error::Unavailable { reason, .. }) => {
            println!("skipped: no CUDA device ({reason})");
            None
        }
        Err(e) => panic!("CUDA present but open failed: {e}"),
    }
}

/// Output buffer of `n` elements with GUARD elements of `fill` on each side.
fn guarded<T: Element>(be: &dyn Backend, n: usize, fill: T) -> Buffer {
    be.filled(n + 2 * GUARD, fill).unwrap()
}
fn interior<T: Element + PartialEq>(be: &dyn Backend, b: &Buffer, n: usize, fill: T, what: &str) -> Vec<T> {
    let all: Vec<T> = be.download_vec(b, n + 2 * GUARD).unwrap();
    let same = |a: &T, b: &T| bytemuck::bytes_of(a) == bytemuck::bytes_of(b);
    assert!(
        all[..GUARD].iter().all(|v| same(v, &fill)),
        "{what}: front guard written"
    );
    assert!(
        all[GUARD + n..].iter().all(|v| same(v, &fill)),
        "{what}: back guard written"
    );
    all[GUARD..GUARD + n].to_vec()
}

fn rel_err(a: &[f64], r: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(r).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = r.iter().map(|y| y * y).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

fn tol(dt: DType) -> f64 {
    match dt {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        _ => 1e-2,
    }
}

fn rand_vec<T: Float>(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<T> {
    (0..n)
        .map(|_| T::from_f32(rng.gen_range(-1.0f32..1.0) * scale))
        .collect()
}

fn to_f64<T: Float>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

fn gemm_case<T: Float>(
    cu: &CudaBackend,
    seed: u64,
    counts: &[i64],
    tail: usize,
    n: usize,
    k: usize,
    layout: WeightLayout,
    bias: bool,
    rs: bool,
) {
    let re = Reference::new();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g = counts.len();
    let ge = group_end::from_counts(counts);
    let m = *ge.last().unwrap_or(&0) as usize + tail;
    let x: Vec<T> = rand_vec(&mut rng, m * k, 1.0);
    let w: Vec<T> = rand_vec(&mut rng, g * n * k, 0.5);
    let b: Vec<T> = rand_vec(&mut rng, g * n, 1.0);
    let r: Vec<f32> = (0..m).map(|_| rng.gen_range(0.1f32..1.0)).collect();
    let wshape = match layout {
        WeightLayout::NK => [g, n, k],
        WeightLayout::KN => [g, k, n],
    };
    let nan = T::from_f32(f32::NAN);
    let mut outs = Vec::new();
    for be in [&re as &dyn Backend, cu as &dyn Backend] {
        let (xb, wb, geb, bb, rb) = (
            be.upload_slice(&x).unwrap(),
            be.upload_slice(&w).unwrap(),
            be.upload_slice(&ge).unwrap(),
            be.upload_slice(&b).unwrap(),
            be.upload_slice(&r).unwrap(),
        );
        let mut yb = guarded(be, m * n, nan);
        let args = GroupedGemm {
            x: xb.view(T::DTYPE, &[m, k]),
            w: wb.view(T::DTYPE, &wshape),
            layout,
            group_end: geb.view(DType::I64, &[g]),
            row_scale: rs.then(|| rb.view(DType::F32, &[m])),
            bias: bias.then(|| bb.view(T::DTYPE, &[g, n])),
            y: yb.view_mut(T::DTYPE, &[m, n]).with_offset(GUARD),
        };
        be.grouped_gemm(args.validate().unwrap())
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        outs.push(interior(be, &yb, m * n, nan, "grouped_gemm y"));
    }
    let routed = (m - tail) * n;
    let (got, want) = (to_f64(&outs[1][..routed]), to_f64(&outs[0][..routed]));
    assert!(
        got.iter().all(|v| v.is_finite()),
        "seed {seed}: NaN/unwritten in routed rows ({m}x{n}x{k} {layout:?})"
    );
    let e = rel_err(&got, &want);
    assert!(
        e <= tol(T::DTYPE),
        "seed {seed}: rel err {e} for {:?} {m}x{n}x{k} {layout:?}",
        T::DTYPE
    );
    // Tail rows (past group_end[G-1]) are never written: still the poison.
    assert!(
        outs[1][routed..].iter().all(|v| v.to_f32().is_nan()),
        "seed {seed}: tail rows written"
    );
}

mod group_end {
    pub fn from_counts(c: &[i64]) -> Vec<i64> {
        moehal_core::ops::grouped_gemm::group_end_from_counts(c).unwrap()
    }
}

#[test]
fn grouped_gemm_matches_reference() {
    let Some(cu) = cuda() else { return };
    let mut seed = 1;
    for path in [GemmPath::Auto, GemmPath::TensorCore, GemmPath::Decode, GemmPath::Simt] {
        cu.set_gemm_path(path);
        for layout in [WeightLayout::NK, WeightLayout::KN] {
            for (counts, tail, n, k) in [
                (vec![3i64, 0, 130, 1, 7], 5usize, 136usize, 264usize), // empty group, multi-tile group
                (vec![1, 1, 0, 2], 3, 64, 128),
                (vec![200], 0, 256, 520),
                (vec![5, 9], 2, 40, 24), // odd sizes
                (vec![0, 0], 4, 16, 16), // nothing routed
            ] {
                for (bias, rs) in [(true, true), (false, false), (true, false)] {
                    seed += 1;
                    gemm_case::<f32>(&cu, seed, &counts, tail, n, k, layout, bias, rs);
                    gemm_case::<bf16>(&cu, seed, &counts, tail, n, k, layout, bias, rs);
                    gemm_case::<f16>(&cu, seed, &counts, tail, n, k, layout, bias, rs);
                }
            }
            // K not a multiple of 8 (falls back to SIMT from any path).
            gemm_case::<bf16>(&cu, 999, &[4, 3], 1, 20, 13, layout, true, true);
        }
    }
    cu.set_gemm_path(GemmPath::Auto);
}

#[test]
fn grouped_gemm_rejects_bad_group_end_and_writes_nothing() {
    let Some(cu) = cuda() else { return };
    let (m, n, k, g) = (8usize, 16usize, 16usize, 3usize);
    let x = cu.upload_slice(&vec![bf16::ONE; m * k]).unwrap();
    let w = cu.upload_slice(&vec![bf16::ONE; g * n * k]).unwrap();
    for bad in [vec![4i64, 2, 8], vec![2, 4, 9], vec![-1, 4, 8]] {
        let ge = cu.upload_slice(&bad).unwrap();
        let mut y = guarded(&cu as &dyn Backend, m * n, bf16::NAN);
        let args = GroupedGemm {
            x: x.view(DType::BF16, &[m, k]),
            w: w.view(DType::BF16, &[g, n, k]),
            layout: WeightLayout::NK,
            group_end: ge.view(DType::I64, &[g]),
            row_scale: None,
            bias: None,
            y: y.view_mut(DType::BF16, &[m, n]).with_offset(GUARD),
        };
        match cu.grouped_gemm(args.validate().unwrap()) {
            Err(Error::InvalidArgument { op, field, .. }) => assert_eq!((op, field), ("grouped_gemm", "group_end")),
            other => panic!("{bad:?}: expected InvalidArgument, got {other:?}"),
        }
        let v = interior(&cu as &dyn Backend, &y, m * n, bf16::NAN, "y");
        assert!(
            v.iter().all(|x| x.is_nan()),
            "{bad:?}: output written despite the error"
        );
    }
}

fn router_case<T: Float>(
    cu: &CudaBackend,
    seed: u64,
    t: usize,
    e: usize,
    cfg: RouterConfig,
    bias: bool,
    poison_logits: bool,
) {
    let re = Reference::new();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut logits: Vec<T> = rand_vec(&mut rng, t * e, 4.0);
    if poison_logits {
        for i in (0..t * e).step_by(7) {
            logits[i] = T::from_f32([f32::NAN, f32::INFINITY, f32::NEG_INFINITY][i % 3]);
        }
        // One token entirely non-finite: every slot is a fill slot.
        for v in logits[..e].iter_mut() {
            *v = T::from_f32(f32::NAN);
        }
    }
    let b: Vec<f32> = (0..e).map(|_| rng.gen_range(-0.5f32..0.5)).collect();
    let k = cfg.k;
    let mut res = Vec::new();
    for be in [&re as &dyn Backend, cu as &dyn Backend] {
        let lb = be.upload_slice(&logits).unwrap();
        let bb = be.upload_slice(&b).unwrap();
        let mut ids = guarded(be, t * k, -7i32);
        let mut w = guarded(be, t * k, f32::NAN);
        let mut cnt = guarded(be, e, -7i64);
        let args = RouterTopk {
            config: cfg,
            logits: lb.view(T::DTYPE, &[t, e]),
            bias: bias.then(|| bb.view(DType::F32, &[e])),
            ids: ids.view_mut(DType::I32, &[t, k]).with_offset(GUARD),
            weights: w.view_mut(DType::F32, &[t, k]).with_offset(GUARD),
            expert_counts: Some(cnt.view_mut(DType::I64, &[e]).with_offset(GUARD)),
        };
        be.router_topk(args.validate().unwrap()).unwrap();
        res.push((
            interior(be, &ids, t * k, -7i32, "ids"),
            interior(be, &w, t * k, f32::NAN, "weights"),
            interior(be, &cnt, e, -7i64, "counts"),
        ));
    }
    let ((ri, _, rc), (ci, cw, cc)) = (&res[0], &res[1]);
    // OPS.md §Conformance, the one shared implementation (moehal_core::conformance): ids equal or
    // different only at near-ties, weights within 1e-5, counts the histogram of the ids.
    let row: Vec<f64> = logits.iter().map(|v| v.to_f64()).collect();
    let sum = check_router(&cfg, e, &row, bias.then_some(&b[..]), ci, cw, Some(cc))
        .unwrap_or_else(|m| panic!("seed {seed} {cfg:?}: {m}"));
    if sum.near_ties == 0 {
        assert_eq!((ri, rc), (ci, cc), "seed {seed}: ids / expert_counts");
    }
    assert_eq!(cc.iter().sum::<i64>(), (t * k) as i64, "seed {seed}: histogram total");
}

#[test]
fn router_topk_matches_reference() {
    let Some(cu) = cuda() else { return };
    let ds3 = RouterConfig {
        k: 8,
        scoring: Scoring::Sigmoid,
        group: Some(GroupLimit {
            n_group: 8,
            topk_group: 4,
            score: GroupScore::Top2Sum,
        }),
        renormalize: true,
        routed_scaling_factor: 2.5,
    };
    let qwen = RouterConfig {
        k: 8,
        scoring: Scoring::Softmax,
        group: None,
        renormalize: true,
        routed_scaling_factor: 1.0,
    };
    let v4 = RouterConfig {
        k: 6,
        scoring: Scoring::SqrtSoftplus,
        group: None,
        renormalize: true,
        routed_scaling_factor: 1.5,
    };
    let maxg = RouterConfig {
        group: Some(GroupLimit {
            n_group: 4,
            topk_group: 2,
            score: GroupScore::Max,
        }),
        renormalize: false,
        ..ds3
    };
    for (seed, (t, e, cfg, bias)) in [
        (300, 256, ds3, true),
        (300, 128, qwen, false),
        (200, 384, v4, true),
        (100, 512, maxg, true),
        (77, 8, RouterConfig { k: 2, ..qwen }, false),
        (50, 37, RouterConfig { k: 37, ..v4 }, false),
    ]
    .into_iter()
    .enumerate()
    {
        for poison in [false, true] {
            router_case::<f32>(&cu, seed as u64, t, e, cfg, bias, poison);
            router_case::<bf16>(&cu, seed as u64 + 10, t, e, cfg, bias, poison);
            router_case::<f16>(&cu, seed as u64 + 20, t, e, cfg, bias, poison);
        }
    }
}

#[test]
fn router_exact_ties_go_to_lower_index() {
    let Some(cu) = cuda() else { return };
    // All logits equal: every score ties, so ids must be 0..k in order.
    let (t, e, k) = (5usize, 64usize, 6usize);
    let l = cu.upload_slice(&vec![0.25f32; t * e]).unwrap();
    let mut ids = cu.alloc(t * k * 4).unwrap();
    let mut w = cu.alloc(t * k * 4).unwrap();
    let cfg = RouterConfig {
        k,
        scoring: Scoring::Sigmoid,
        group: None,
        renormalize: true,
        routed_scaling_factor: 1.0,
    };
    let args = RouterTopk {
        config: cfg,
        logits: l.view(DType::F32, &[t, e]),
        bias: None,
        ids: ids.view_mut(DType::I32, &[t, k]),
        weights: w.view_mut(DType::F32, &[t, k]),
        expert_counts: None,
    };
    cu.router_topk(args.validate().unwrap()).unwrap();
    let got: Vec<i32> = cu.download_vec(&ids, t * k).unwrap();
    for tok in 0..t {
        assert_eq!(&got[tok * k..(tok + 1) * k], &[0, 1, 2, 3, 4, 5]);
    }
}

/// The tie classes of OPS.md §2 steps 1–3 (exact f32 ties from saturation, underflow, equal
/// logits, `fl32(s + bias)`, f32 group sums) on the kernel, judged by the shared rule; the rows
/// whose reference scores tie exactly must give exactly the reference's ids.
#[test]
fn router_tie_classes_follow_the_reference() {
    let Some(cu) = cuda() else { return };
    let g = |n_group, topk_group| {
        Some(GroupLimit {
            n_group,
            topk_group,
            score: GroupScore::Top2Sum,
        })
    };
    let cfg = |k, scoring, group| RouterConfig {
        k,
        scoring,
        group,
        renormalize: true,
        routed_scaling_factor: 1.0,
    };
    let cases: Vec<(RouterConfig, Vec<f32>, Option<Vec<f32>>)> = vec![
        (cfg(1, Scoring::Sigmoid, None), vec![20.5, 100.0], None),
        (cfg(2, Scoring::Softmax, None), vec![0.0, -300.0, -200.0], None),
        (cfg(2, Scoring::SqrtSoftplus, None), vec![5.0, -300.0, -200.0], None),
        (cfg(3, Scoring::Sigmoid, None), vec![0.75; 6], None),
        (
            cfg(2, Scoring::Sigmoid, g(2, 1)),
            vec![0.0, 0.0, 1e-5, 1e-5],
            Some(vec![1024.0; 4]),
        ),
        (
            cfg(1, Scoring::Sigmoid, g(2, 1)),
            vec![-300.0; 4],
            Some(vec![1.0, 0.0, 1.0, 2f32.powi(-24)]),
        ),
    ];
    let re = Reference::new();
    for (cfg, logits, bias) in cases {
        let e = logits.len();
        let k = cfg.k;
        let mut res = Vec::new();
        for be in [&re as &dyn Backend, &cu as &dyn Backend] {
            let lb = be.upload_slice(&logits).unwrap();
            let bb = bias.as_ref().map(|b| be.upload_slice(b).unwrap());
            let mut ids = be.filled(k, -7i32).unwrap();
            let mut w = be.filled(k, f32::NAN).unwrap();
            let mut c = be.filled(e, 0i64).unwrap();
            let args = RouterTopk {
                config: cfg,
                logits: lb.view(DType::F32, &[1, e]),
                bias: bb.as_ref().map(|b| b.view(DType::F32, &[e])),
                ids: ids.view_mut(DType::I32, &[1, k]),
                weights: w.view_mut(DType::F32, &[1, k]),
                expert_counts: Some(c.view_mut(DType::I64, &[e])),
            };
            be.router_topk(args.validate().unwrap()).unwrap();
            res.push((
                be.download_vec::<i32>(&ids, k).unwrap(),
                be.download_vec::<f32>(&w, k).unwrap(),
                be.download_vec::<i64>(&c, e).unwrap(),
            ));
        }
        let row: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
        let (id, w, c) = &res[1];
        check_router(&cfg, e, &row, bias.as_deref(), id, w, Some(c))
            .unwrap_or_else(|m| panic!("{cfg:?} {logits:?}: {m}"));
    }
}

#[test]
fn permute_swiglu_combine_match_reference() {
    let Some(cu) = cuda() else { return };
    let re = Reference::new();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (t, k, e, h) in [
        (300usize, 8usize, 256usize, 72usize),
        (1, 2, 8, 16),
        (1000, 6, 384, 33),
        (5000, 8, 16, 8),
    ] {
        let ids: Vec<i32> = (0..t * k)
            .map(|i| if i % 13 == 5 { -1 } else { rng.gen_range(0..e as i32) })
            .collect();
        let x: Vec<bf16> = rand_vec(&mut rng, t * h, 1.0);
        let mut outs = Vec::new();
        for be in [&re as &dyn Backend, &cu as &dyn Backend] {
            let (ib, xb) = (be.upload_slice(&ids).unwrap(), be.upload_slice(&x).unwrap());
            let mut ge = guarded(be, e, -9i64);
            let mut src = be.filled(t * k, -9i64).unwrap();
            let mut slot = guarded(be, t * k, -9i64);
            let mut xp = be.filled(t * k * h, bf16::NAN).unwrap();
            let args = MoePermute {
                num_experts: e,
                ids: ib.view(DType::I32, &[t, k]),
                x: Some(xb.view(DType::BF16, &[t, h])),
                group_end: ge.view_mut(DType::I64, &[e]).with_offset(GUARD),
                src_token: src.view_mut(DType::I64, &[t * k]),
                slot_row: slot.view_mut(DType::I64, &[t, k]).with_offset(GUARD),
                x_perm: Some(xp.view_mut(DType::BF16, &[t * k, h])),
            };
            be.moe_permute(args.validate().unwrap()).unwrap();
            let gev = interior(be, &ge, e, -9i64, "group_end");
            let routed = *gev.last().unwrap() as usize;
            let srcv: Vec<i64> = be.download_vec(&src, t * k).unwrap();
            let xpv: Vec<bf16> = be.download_vec(&xp, t * k * h).unwrap();
            outs.push((
                gev,
                srcv[..routed].to_vec(),
                interior(be, &slot, t * k, -9i64, "slot_row"),
                xpv[..routed * h].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            ));
        }
        assert_eq!(outs[0], outs[1], "moe_permute differs (T={t} k={k} E={e})");
    }
    // swiglu
    for dt_seed in 0..3u64 {
        let (m, i) = (37usize, 300usize);
        let hv: Vec<f32> = (0..m * 2 * i).map(|_| rng.gen_range(-15.0f32..15.0)).collect();
        for limit in [None, Some(10.0f32)] {
            let mut outs = Vec::new();
            for be in [&re as &dyn Backend, &cu as &dyn Backend] {
                let hb = be.upload_slice(&hv).unwrap();
                let mut ob = guarded(be, m * i, f32::NAN);
                let args = Swiglu {
                    h: hb.view(DType::F32, &[m, 2 * i]),
                    out: ob.view_mut(DType::F32, &[m, i]).with_offset(GUARD),
                    limit,
                };
                be.swiglu(args.validate().unwrap()).unwrap();
                outs.push(to_f64(&interior(be, &ob, m * i, f32::NAN, "swiglu")));
            }
            assert!(
                rel_err(&outs[1], &outs[0]) <= 1e-5,
                "swiglu seed {dt_seed} limit {limit:?}"
            );
        }
    }
    // combine
    let (t, k, h, r) = (200usize, 8usize, 96usize, 1700usize);
    let y: Vec<f16> = rand_vec(&mut rng, r * h, 1.0);
    let slot: Vec<i64> = (0..t * k)
        .map(|i| if i % 9 == 0 { -1 } else { rng.gen_range(0..r as i64) })
        .collect();
    let wts: Vec<f32> = (0..t * k).map(|_| rng.gen_range(0.0f32..1.0)).collect();
    let mut outs = Vec::new();
    for be in [&re as &dyn Backend, &cu as &dyn Backend] {
        let (yb, sb, wb) = (
            be.upload_slice(&y).unwrap(),
            be.upload_slice(&slot).unwrap(),
            be.upload_slice(&wts).unwrap(),
        );
        let mut ob = guarded(be, t * h, f16::NAN);
        let args = MoeCombine {
            y_perm: yb.view(DType::F16, &[r, h]),
            slot_row: sb.view(DType::I64, &[t, k]),
            weights: wb.view(DType::F32, &[t, k]),
            out: ob.view_mut(DType::F16, &[t, h]).with_offset(GUARD),
        };
        be.moe_combine(args.validate().unwrap()).unwrap();
        outs.push(to_f64(&interior(be, &ob, t * h, f16::NAN, "combine")));
    }
    assert!(rel_err(&outs[1], &outs[0]) <= 2e-3, "moe_combine f16");
}

#[test]
fn permute_rejects_bad_ids() {
    let Some(cu) = cuda() else { return };
    let ids = cu.upload_slice(&[0i32, 3, 8, 1]).unwrap();
    let mut ge = cu.filled(8, -9i64).unwrap();
    let mut src = cu.alloc(4 * 8).unwrap();
    let mut slot = cu.alloc(4 * 8).unwrap();
    let args = MoePermute {
        num_experts: 8,
        ids: ids.view(DType::I32, &[2, 2]),
        x: None,
        group_end: ge.view_mut(DType::I64, &[8]),
        src_token: src.view_mut(DType::I64, &[4]),
        slot_row: slot.view_mut(DType::I64, &[2, 2]),
        x_perm: None,
    };
    assert!(matches!(
        cu.moe_permute(args.validate().unwrap()),
        Err(Error::InvalidArgument { field: "ids", .. })
    ));
    assert!(
        cu.download_vec::<i64>(&ge, 8).unwrap().iter().all(|&v| v == -9),
        "group_end written despite the error"
    );
}

#[test]
fn engram_hash_toy_check_and_gather() {
    let Some(cu) = cuda() else { return };
    let layer = toy::layer().unwrap();
    let ids = cu.upload_slice(&[7i64, 3, 7, 3, 49]).unwrap();
    let mut rows = guarded(&cu as &dyn Backend, 20, -1i64);
    let args = EngramHash {
        layer: &layer,
        ids: ids.view(DType::I64, &[5]),
        positions: None,
        alive: None,
        history: &[],
        rows: rows.view_mut(DType::I64, &[5, 4]).with_offset(GUARD),
    };
    cu.engram_hash(args.validate().unwrap()).unwrap();
    let got = interior(&cu as &dyn Backend, &rows, 20, -1i64, "rows");
    assert_eq!(
        got,
        vec![9, 21, 28, 42, 8, 11, 39, 59, 0, 18, 25, 50, 8, 11, 24, 46, 5, 22, 37, 46]
    );

    // positions, alive, history against the reference
    let re = Reference::new();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let t = 500usize;
    let idv: Vec<i64> = (0..t).map(|_| rng.gen_range(0..50)).collect();
    let pos: Vec<i64> = (0..t as i64).map(|i| if i % 37 == 0 { 0 } else { i }).collect();
    let alive: Vec<u8> = (0..t).map(|i| (i % 11 != 3) as u8).collect();
    let hist = [4i64, 9];
    let mut outs = Vec::new();
    for be in [&re as &dyn Backend, &cu as &dyn Backend] {
        let (ib, pb, ab) = (
            be.upload_slice(&idv).unwrap(),
            be.upload_slice(&pos).unwrap(),
            be.upload_slice(&alive).unwrap(),
        );
        let mut rb = guarded(be, t * 4, -1i64);
        let args = EngramHash {
            layer: &layer,
            ids: ib.view(DType::I64, &[t]),
            positions: Some(pb.view(DType::I64, &[t])),
            alive: Some(ab.view(DType::U8, &[t])),
            history: &hist,
            rows: rb.view_mut(DType::I64, &[t, 4]).with_offset(GUARD),
        };
        be.engram_hash(args.validate().unwrap()).unwrap();
        outs.push(interior(be, &rb, t * 4, -1i64, "rows"));
    }
    assert_eq!(outs[0], outs[1], "engram_hash with positions/alive/history");

    // out-of-range id -> error
    let bad = cu.upload_slice(&[7i64, 50]).unwrap();
    let mut rb = cu.filled(8, -1i64).unwrap();
    let args = EngramHash {
        layer: &layer,
        ids: bad.view(DType::I64, &[2]),
        positions: None,
        alive: None,
        history: &[],
        rows: rb.view_mut(DType::I64, &[2, 4]),
    };
    assert!(matches!(
        cu.engram_hash(args.validate().unwrap()),
        Err(Error::InvalidArgument { field: "ids", .. })
    ));
    assert!(cu.download_vec::<i64>(&rb, 8).unwrap().iter().all(|&v| v == -1));
}

#[test]
fn gather_rows_device_and_host_tables_bitwise() {
    let Some(cu) = cuda() else { return };
    let re = Reference::new();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (r, t, c) = (1000usize, 64usize, 5usize);
    for (format, out_dt, d) in [
        (TableFormat::BF16, DType::BF16, 256usize),
        (TableFormat::F32, DType::F32, 40),
        (TableFormat::F16, DType::F16, 3),
        (TableFormat::Fp8E4m3Ue8m0, DType::BF16, 256),
        (TableFormat::Fp8E4m3Ue8m0, DType::F32, 32),
    ] {
        let wbytes = format.stored_width(d) * format.storage_dtype().size();
        let table: Vec<u8> = (0..r * wbytes).map(|_| rng.gen()).collect();
        let rows: Vec<i64> = (0..t * c).map(|_| rng.gen_range(0..r as i64)).collect();
        let n = t * c * d * out_dt.size();
        let mut outs = Vec::new();
        for (be, host) in [
            (&re as &dyn Backend, true),
            (&cu as &dyn Backend, false),
            (&cu as &dyn Backend, true),
        ] {
            let tb = if host {
                re.upload_slice(&table).unwrap()
            } else {
                be.upload_slice(&table).unwrap()
            };
            let rb = be.upload_slice(&rows).unwrap();
            let mut ob = guarded(be, n, 0xA5u8);
            let args = GatherRows {
                table: tb.view(format.storage_dtype(), &[r, format.stored_width(d)]),
                format,
                rows: rb.view(DType::I64, &[t, c]),
                out: ob.view_mut(out_dt, &[t, c * d]).with_offset(GUARD / out_dt.size()),
            };
            be.gather_rows(args.validate().unwrap())
                .unwrap_or_else(|e| panic!("{format:?} host={host}: {e}"));
            outs.push(interior(be, &ob, n, 0xA5u8, "gather out"));
        }
        assert!(
            outs[0] == outs[1],
            "{format:?} -> {out_dt}: device table differs from the reference"
        );
        assert!(
            outs[0] == outs[2],
            "{format:?} -> {out_dt}: host table differs from the reference"
        );
    }
}

/// Fill `n` bytes of device memory with zeros in 64 MiB uploads (alloc does not promise zeros).
fn device_zeros(be: &dyn Backend, n: usize) -> Buffer {
    let mut b = be.alloc(n).unwrap();
    let chunk = vec![0u8; 64 << 20];
    let mut off = 0;
    while off < n {
        let len = chunk.len().min(n - off);
        be.upload(&mut b, off, &chunk[..len]).unwrap();
        off += len;
    }
    b
}

/// 64-bit offsets (issue 16, item 7), on the device: a gather from a device table of
/// 2^32 + 10 elements (row R-1 starts past 2^32: a u32 index would read row 4), Engram rows
/// past 2^32 gathered from a 24 GiB device table, and a grouped GEMM whose x has 2^31 + 128
/// elements (rows start past element 2^31). About 36 GiB of device memory; values are checked
/// exactly. The same cases run on cpu, reference and the emulator in
/// `ffi/tests/offsets64.rs`.
#[test]
fn offsets_past_2_31() {
    let Some(cu) = cuda() else { return };
    let p31 = 1usize << 31;
    let val = |r: usize, j: usize| ((r % 1_000_003) * 4 + j + 1) as f32;
    // Gather: [R, 2] f32, R = 2^31 + 5.
    {
        let (r, d) = (p31 + 5, 2usize);
        let mut tb = cu.alloc(r * d * 4).unwrap();
        let rows: Vec<i64> = vec![(r - 1) as i64, (p31 / 2) as i64, 3, (r - 2) as i64];
        for &q in &rows {
            let v: Vec<u8> = (0..d).flat_map(|j| val(q as usize, j).to_ne_bytes()).collect();
            cu.upload(&mut tb, q as usize * d * 4, &v).unwrap();
        }
        let rb = cu.upload_slice(&rows).unwrap();
        let mut ob = cu.filled(rows.len() * d, f32::NAN).unwrap();
        let args = GatherRows {
            table: tb.view(DType::F32, &[r, d]),
            format: TableFormat::F32,
            rows: rb.view(DType::I64, &[2, 2]),
            out: ob.view_mut(DType::F32, &[2, 2 * d]),
        };
        cu.gather_rows(args.validate().unwrap()).unwrap();
        let want: Vec<f32> = rows
            .iter()
            .flat_map(|&q| (0..d).map(move |j| val(q as usize, j)))
            .collect();
        assert_eq!(
            cu.download_vec::<f32>(&ob, rows.len() * d).unwrap(),
            want,
            "gather past 2^32 elements"
        );
    }
    // Engram: moduli 2^31 + 11 and 2^32 + 15, R = 6442450970 rows of one f32.
    {
        let layer = moehal_core::engram::EngramLayer::new(
            3,
            1,
            vec![0x9E37_79B9_7F4B, 0x1234_5679, 0xDEAD_BEEF],
            vec![2_147_483_659, 4_294_967_311],
            1000,
            0,
        )
        .unwrap();
        let r = layer.rows() as usize;
        let ids: Vec<i64> = vec![5, 999, 17, 400, 3, 3, 871, 42];
        let (t, c) = (ids.len(), layer.columns());
        let re = Reference::new();
        let ib = re.upload_slice(&ids).unwrap();
        let mut rb = re.filled(t * c, -1i64).unwrap();
        let h = EngramHash {
            layer: &layer,
            ids: ib.view(DType::I64, &[t]),
            positions: None,
            alive: None,
            history: &[],
            rows: rb.view_mut(DType::I64, &[t, c]),
        };
        re.engram_hash(h.validate().unwrap()).unwrap();
        let rows = re.download_vec::<i64>(&rb, t * c).unwrap();
        assert!(rows.iter().filter(|&&q| q as u64 >= 1 << 32).count() >= 2, "{rows:?}");
        let mut tb = cu.alloc(r * 4).unwrap();
        for &q in &rows {
            cu.upload(&mut tb, q as usize * 4, &val(q as usize, 0).to_ne_bytes())
                .unwrap();
        }
        let ib = cu.upload_slice(&ids).unwrap();
        let mut ob = cu.filled(t * c, f32::NAN).unwrap();
        let l = EngramLookup {
            layer: &layer,
            ids: ib.view(DType::I64, &[t]),
            positions: None,
            alive: None,
            history: &[],
            table: tb.view(DType::F32, &[r, 1]),
            format: TableFormat::F32,
            out: ob.view_mut(DType::F32, &[t, c]),
        };
        cu.engram_lookup(l.validate().unwrap()).unwrap();
        let want: Vec<f32> = rows.iter().map(|&q| val(q as usize, 0)).collect();
        assert_eq!(
            cu.download_vec::<f32>(&ob, t * c).unwrap(),
            want,
            "engram rows past 2^32"
        );
    }
    // Grouped GEMM: x [M, 64] bf16 with M = 2^25 + 2 (2^31 + 128 elements), w [1, 1, 64].
    {
        let (k, m) = (64usize, (p31 >> 6) + 2);
        let mut xb = device_zeros(&cu, m * k * 2);
        let w: Vec<bf16> = (0..k).map(|j| bf16::from_f32((j + 1) as f32)).collect();
        for (row, col, v) in [(m - 1, 63usize, 1.0f32), (m - 2, 0, 2.0), (1, 5, 1.0)] {
            cu.upload(&mut xb, (row * k + col) * 2, &bf16::from_f32(v).to_ne_bytes())
                .unwrap();
        }
        let wb = cu.upload_slice(&w).unwrap();
        let ge = cu.upload_slice(&[m as i64]).unwrap();
        let mut yb = cu.filled(m, bf16::from_f32(f32::NAN)).unwrap();
        let a = GroupedGemm {
            x: xb.view(DType::BF16, &[m, k]),
            w: wb.view(DType::BF16, &[1, 1, k]),
            layout: WeightLayout::NK,
            group_end: ge.view(DType::I64, &[1]),
            row_scale: None,
            bias: None,
            y: yb.view_mut(DType::BF16, &[m, 1]),
        };
        cu.grouped_gemm(a.validate().unwrap()).unwrap();
        let y = cu.download_vec::<bf16>(&yb, m).unwrap();
        let want = |i: usize| match i {
            _ if i == m - 1 => 64.0,
            _ if i == m - 2 => 2.0,
            1 => 6.0,
            _ => 0.0,
        };
        let bad: Vec<usize> = (0..m).filter(|&i| y[i].to_f32() != want(i)).take(5).collect();
        assert!(bad.is_empty(), "grouped GEMM rows past 2^31: y differs at rows {bad:?}");
    }
}
