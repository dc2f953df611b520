//! The Ascend backend through the strict emulator, against the reference backend, for every op.
//! Outputs are poisoned with NaN and surrounded by guard elements that must stay untouched.

mod ascend_common;

use half::{bf16, f16};
use moehal_core::conformance::check_router;
use moehal_core::engram::toy;
use moehal_core::ops::{
    EngramHash, EngramLookup, GatherRows, GroupLimit, GroupScore, GroupedGemm, MoeCombine, MoePermute, OpDesc,
    RouterConfig, RouterTopk, Scoring, Swiglu, TableFormat, WeightLayout,
};
use std::sync::Arc;

use moehal_core::{Backend, BackendExt, Buffer, DType, Reference};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const GUARD: usize = 8;

/// Upload `v` with `GUARD` copies of `pad` before and after; the view starts at element `GUARD`.
fn padded<T: moehal_core::Element>(be: &dyn Backend, v: &[T], pad: T) -> Buffer {
    let mut all = vec![pad; GUARD];
    all.extend_from_slice(v);
    all.extend(std::iter::repeat_n(pad, GUARD));
    be.upload_slice(&all).unwrap()
}

fn down<T: moehal_core::Element>(be: &dyn Backend, b: &Buffer, n: usize) -> Vec<T> {
    be.download_vec::<T>(b, n + 2 * GUARD).unwrap()
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

/// Random floats rounded to `dt`, returned as f32 values and as a buffer (with guards).
fn rand_floats(be: &dyn Backend, rng: &mut ChaCha8Rng, dt: DType, n: usize, scale: f32) -> (Vec<f32>, Buffer) {
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0) * scale).collect();
    upload_as(be, dt, &v)
}

fn upload_as(be: &dyn Backend, dt: DType, v: &[f32]) -> (Vec<f32>, Buffer) {
    match dt {
        DType::F32 => (v.to_vec(), padded(be, v, f32::NAN)),
        DType::F16 => {
            let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            (h.iter().map(|x| x.to_f32()).collect(), padded(be, &h, f16::NAN))
        }
        _ => {
            let h: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
            (h.iter().map(|x| x.to_f32()).collect(), padded(be, &h, bf16::NAN))
        }
    }
}

/// Download a float buffer of `dt` (with guards) as f32.
fn down_floats(be: &dyn Backend, dt: DType, b: &Buffer, n: usize) -> Vec<f32> {
    match dt {
        DType::F32 => down::<f32>(be, b, n),
        DType::F16 => down::<f16>(be, b, n).iter().map(|x| x.to_f32()).collect(),
        _ => down::<bf16>(be, b, n).iter().map(|x| x.to_f32()).collect(),
    }
}

fn nan_buf(be: &dyn Backend, dt: DType, n: usize) -> Buffer {
    upload_as(be, dt, &vec![f32::NAN; n]).1
}

/// Compare float outputs (with guards) of the Ascend backend and the reference.
fn check_floats(what: &str, dt: DType, a: &[f32], r: &[f32], n_valid: usize) {
    assert_eq!(a.len(), r.len());
    for i in (0..GUARD).chain(GUARD + n_valid..a.len()) {
        assert!(
            a[i].is_nan() && r[i].is_nan(),
            "{what}: guard {i} touched: ascend {} reference {}",
            a[i],
            r[i]
        );
    }
    let (av, rv) = (&a[GUARD..GUARD + n_valid], &r[GUARD..GUARD + n_valid]);
    for (i, (x, y)) in av.iter().zip(rv).enumerate() {
        assert_eq!(x.is_nan(), y.is_nan(), "{what}: element {i}: ascend {x} reference {y}");
    }
    let fa: Vec<f64> = av.iter().filter(|x| !x.is_nan()).map(|&x| x as f64).collect();
    let fr: Vec<f64> = rv.iter().filter(|x| !x.is_nan()).map(|&x| x as f64).collect();
    let e = rel_err(&fa, &fr);
    assert!(e <= tol(dt), "{what}: relative error {e:e} > {:e}", tol(dt));
}

#[test]
fn grouped_gemm_matches_reference() {
    for (profile, asc) in ascend_common::open_profiles() {
        eprintln!("CANN profile {profile}");
        grouped_gemm_matches_reference_on(profile, asc);
    }
}

fn grouped_gemm_matches_reference_on(_profile: &str, asc: Arc<dyn Backend>) {
    let refb = Reference::new();
    let seed = 0x5eed_0001u64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for dt in DType::FLOATS {
        for layout in [WeightLayout::NK, WeightLayout::KN] {
            for (bias_on, scale_on) in [(false, false), (true, true), (true, false), (false, true)] {
                let (m, k, n, g) = (13usize, 24usize, 10usize, 4usize);
                // empty group 1; total 11 < M: rows 11, 12 must stay NaN.
                let ge = vec![3i64, 3, 7, 11];
                let (_, xa) = rand_floats(&*asc, &mut rng, dt, m * k, 1.0);
                let xv = down_floats(&*asc, dt, &xa, m * k);
                let xr = upload_as(&refb, dt, &xv[GUARD..GUARD + m * k]).1;
                let (wv, wa) = rand_floats(&*asc, &mut rng, dt, g * n * k, 0.5);
                let wr = upload_as(&refb, dt, &wv).1;
                let (bv, ba) = rand_floats(&*asc, &mut rng, dt, g * n, 1.0);
                let br = upload_as(&refb, dt, &bv).1;
                let sv: Vec<f32> = (0..m).map(|_| rng.gen_range(0.1f32..1.0)).collect();
                let (sa, sr) = (padded(&*asc, &sv, f32::NAN), padded(&refb, &sv, f32::NAN));
                let (gea, ger) = (padded(&*asc, &ge, -7i64), padded(&refb, &ge, -7i64));
                let wshape = match layout {
                    WeightLayout::NK => [g, n, k],
                    WeightLayout::KN => [g, k, n],
                };
                let mut outs = Vec::new();
                for (be, x, w, b, s, gb) in [
                    (&*asc, &xa, &wa, &ba, &sa, &gea),
                    (&refb as &dyn Backend, &xr, &wr, &br, &sr, &ger),
                ] {
                    let mut y = nan_buf(be, dt, m * n);
                    let args = GroupedGemm {
                        x: x.view(dt, &[m, k]).with_offset(GUARD),
                        w: w.view(dt, &wshape).with_offset(GUARD),
                        layout,
                        group_end: gb.view(DType::I64, &[g]).with_offset(GUARD),
                        row_scale: scale_on.then(|| s.view(DType::F32, &[m]).with_offset(GUARD)),
                        bias: bias_on.then(|| b.view(dt, &[g, n]).with_offset(GUARD)),
                        y: y.view_mut(dt, &[m, n]).with_offset(GUARD),
                    };
                    be.grouped_gemm(args.validate().unwrap())
                        .unwrap_or_else(|e| panic!("{}: {e}", be.name()));
                    outs.push(down_floats(be, dt, &y, m * n));
                }
                let what = format!("grouped_gemm {dt} {layout:?} bias={bias_on} scale={scale_on} seed={seed:#x}");
                // rows >= 11 are neither read nor written: NaN on both.
                for (i, v) in outs[0].iter().enumerate().take(GUARD + m * n).skip(GUARD + 11 * n) {
                    assert!(v.is_nan(), "{what}: row past group total written at {i}");
                }
                check_floats(&what, dt, &outs[0], &outs[1], m * n);
            }
        }
        let s = asc.supports(&OpDesc::GroupedGemm {
            dtype: dt,
            layout: WeightLayout::NK,
        });
        assert!(format!("{s:?}").contains("aclnnGroupedMatmulV4"), "{s:?}");
    }
}

#[test]
fn grouped_gemm_rejects_bad_group_end_and_writes_nothing() {
    for (profile, asc) in ascend_common::open_profiles() {
        eprintln!("CANN profile {profile}");
        grouped_gemm_rejects_bad_group_end_and_writes_nothing_on(profile, asc);
    }
}

fn grouped_gemm_rejects_bad_group_end_and_writes_nothing_on(_profile: &str, asc: Arc<dyn Backend>) {
    let (m, k, n, g) = (4usize, 8usize, 8usize, 2usize);
    let x = asc.upload_slice(&vec![1.0f32; m * k]).unwrap();
    let w = asc.upload_slice(&vec![1.0f32; g * k * n]).unwrap();
    let ge = asc.upload_slice(&[3i64, 2]).unwrap();
    let mut y = asc.upload_slice(&vec![f32::NAN; m * n]).unwrap();
    let args = GroupedGemm {
        x: x.view(DType::F32, &[m, k]),
        w: w.view(DType::F32, &[g, k, n]),
        layout: WeightLayout::KN,
        group_end: ge.view(DType::I64, &[g]),
        row_scale: None,
        bias: None,
        y: y.view_mut(DType::F32, &[m, n]),
    };
    let err = asc.grouped_gemm(args.validate().unwrap()).unwrap_err();
    assert!(
        matches!(err, moehal_core::Error::InvalidArgument { field: "group_end", .. }),
        "{err}"
    );
    assert!(asc.download_vec::<f32>(&y, m * n).unwrap().iter().all(|v| v.is_nan()));
}

fn router_case(
    asc: &dyn Backend,
    cfg: RouterConfig,
    dt: DType,
    t: usize,
    e: usize,
    bias_on: bool,
    nonfinite: bool,
    seed: u64,
) {
    let refb = Reference::new();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut lv: Vec<f32> = (0..t * e).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
    if nonfinite {
        lv[1] = f32::NAN;
        lv[e + 2] = f32::INFINITY;
    }
    let bv: Vec<f32> = (0..e).map(|_| rng.gen_range(-0.5f32..0.5)).collect();
    let k = cfg.k;
    let mut res = Vec::new();
    for be in [asc, &refb as &dyn Backend] {
        let (_, lb) = upload_as(be, dt, &lv);
        let bb = padded(be, &bv, f32::NAN);
        let mut ids = padded(be, &vec![-5i32; t * k], -9i32);
        let mut w = padded(be, &vec![f32::NAN; t * k], f32::NAN);
        let mut c = padded(be, &vec![-1i64; e], -3i64);
        let args = RouterTopk {
            config: cfg,
            logits: lb.view(dt, &[t, e]).with_offset(GUARD),
            bias: bias_on.then(|| bb.view(DType::F32, &[e]).with_offset(GUARD)),
            ids: ids.view_mut(DType::I32, &[t, k]).with_offset(GUARD),
            weights: w.view_mut(DType::F32, &[t, k]).with_offset(GUARD),
            expert_counts: Some(c.view_mut(DType::I64, &[e]).with_offset(GUARD)),
        };
        be.router_topk(args.validate().unwrap())
            .unwrap_or_else(|er| panic!("{}: {er}", be.name()));
        res.push((
            down::<i32>(be, &ids, t * k),
            down::<f32>(be, &w, t * k),
            down::<i64>(be, &c, e),
        ));
    }
    let what = format!("router_topk {cfg:?} {dt} bias={bias_on} nonfinite={nonfinite} seed={seed:#x}");
    for (i, (a, r)) in res[0].1.iter().zip(&res[1].1).enumerate() {
        if !(GUARD..GUARD + t * k).contains(&i) {
            assert!(a.is_nan() && r.is_nan(), "{what}: guard {i}");
        }
    }
    let guards = |v: &[i64], pad: i64| v[..GUARD].iter().chain(&v[v.len() - GUARD..]).all(|&x| x == pad);
    let ids64: Vec<i64> = res[0].0.iter().map(|&x| x as i64).collect();
    assert!(
        guards(&ids64, -9) && guards(&res[0].2, -3),
        "{what}: guards of ids / counts"
    );
    // OPS.md §Conformance, the one shared implementation (moehal_core::conformance): ids equal or
    // different only at near-ties, weights within 1e-5, counts the histogram of the ids. The
    // logits are compared as the backend read them (rounded to `dt`).
    let logits: Vec<f64> = upload_as(&refb, dt, &lv).0.iter().map(|&x| x as f64).collect();
    let (ids, w, c) = (&res[0].0, &res[0].1, &res[0].2);
    let sum = check_router(
        &cfg,
        e,
        &logits,
        bias_on.then_some(&bv[..]),
        &ids[GUARD..GUARD + t * k],
        &w[GUARD..GUARD + t * k],
        Some(&c[GUARD..GUARD + e]),
    )
    .unwrap_or_else(|m| panic!("{what}: {m}"));
    if sum.near_ties == 0 {
        assert_eq!(res[0].0, res[1].0, "{what}: ids");
        assert_eq!(res[0].2, res[1].2, "{what}: counts");
    }
}

#[test]
fn router_topk_matches_reference() {
    for (profile, asc) in ascend_common::open_profiles() {
        eprintln!("CANN profile {profile}");
        router_topk_matches_reference_on(profile, asc);
    }
}

fn router_topk_matches_reference_on(_profile: &str, asc: Arc<dyn Backend>) {
    let plain = |scoring, k, renormalize, s| RouterConfig {
        k,
        scoring,
        group: None,
        renormalize,
        routed_scaling_factor: s,
    };
    for dt in DType::FLOATS {
        // aclnnMoeGatingTopKSoftmax
        router_case(
            &*asc,
            plain(Scoring::Softmax, 4, false, 1.0),
            dt,
            9,
            16,
            false,
            false,
            11,
        );
        router_case(&*asc, plain(Scoring::Softmax, 2, true, 1.0), dt, 9, 8, false, false, 12);
        // aclnnMoeGatingTopK
        router_case(&*asc, plain(Scoring::Sigmoid, 6, true, 2.5), dt, 7, 32, true, false, 13);
        router_case(
            &*asc,
            plain(Scoring::Softmax, 3, false, 1.5),
            dt,
            7,
            32,
            true,
            false,
            14,
        );
        // host
        router_case(
            &*asc,
            plain(Scoring::SqrtSoftplus, 6, true, 1.5),
            dt,
            5,
            24,
            true,
            false,
            15,
        );
    }
    for score in [GroupScore::Top2Sum, GroupScore::Max] {
        let cfg = RouterConfig {
            k: 8,
            scoring: Scoring::Sigmoid,
            group: Some(GroupLimit {
                n_group: 8,
                topk_group: 4,
                score,
            }),
            renormalize: true,
            routed_scaling_factor: 2.5,
        };
        router_case(&*asc, cfg, DType::F32, 6, 64, true, false, 16);
    }
    // Non-finite logits: the row semantics of OPS.md are kept (host).
    router_case(
        &*asc,
        plain(Scoring::Softmax, 4, true, 1.0),
        DType::F32,
        4,
        16,
        false,
        true,
        17,
    );
    let s = asc.supports(&OpDesc::RouterTopk {
        dtype: DType::F32,
        scoring: Scoring::Softmax,
        group: None,
    });
    assert!(format!("{s:?}").contains("aclnnMoeGatingTopKSoftmax"), "{s:?}");
}

fn permute_case(asc: &dyn Backend, ids: &[i32], t: usize, k: usize, e: usize, h: usize, with_x: bool) {
    let refb = Reference::new();
    let xv: Vec<f32> = (0..t * h).map(|i| i as f32 * 0.25 - 3.0).collect();
    let mut res = Vec::new();
    for be in [asc, &refb as &dyn Backend] {
        let ib = padded(be, ids, 77i32);
        let xb = padded(be, &xv, f32::NAN);
        let mut ge = padded(be, &vec![-1i64; e], -2i64);
        let mut st = padded(be, &vec![-1i64; t * k], -2i64);
        let mut sr = padded(be, &vec![-9i64; t * k], -2i64);
        let mut xp = padded(be, &vec![f32::NAN; t * k * h], f32::NAN);
        let args = MoePermute {
            num_experts: e,
            ids: ib.view(DType::I32, &[t, k]).with_offset(GUARD),
            x: with_x.then(|| xb.view(DType::F32, &[t, h]).with_offset(GUARD)),
            group_end: ge.view_mut(DType::I64, &[e]).with_offset(GUARD),
            src_token: st.view_mut(DType::I64, &[t * k]).with_offset(GUARD),
            slot_row: sr.view_mut(DType::I64, &[t, k]).with_offset(GUARD),
            x_perm: with_x.then(|| xp.view_mut(DType::F32, &[t * k, h]).with_offset(GUARD)),
        };
        be.moe_permute(args.validate().unwrap())
            .unwrap_or_else(|er| panic!("{}: {er}", be.name()));
        res.push((
            down::<i64>(be, &ge, e),
            down::<i64>(be, &st, t * k),
            down::<i64>(be, &sr, t * k),
            down::<f32>(be, &xp, t * k * h),
        ));
    }
    let routed = ids.iter().filter(|&&i| i >= 0).count();
    assert_eq!(res[0].0, res[1].0, "moe_permute group_end");
    assert_eq!(res[0].2, res[1].2, "moe_permute slot_row");
    assert_eq!(
        res[0].1[..GUARD + routed],
        res[1].1[..GUARD + routed],
        "moe_permute src_token"
    );
    if with_x {
        let n = GUARD + routed * h;
        let (a, r) = (&res[0].3[..n], &res[1].3[..n]);
        assert!(
            a.iter().zip(r).all(|(x, y)| x.to_bits() == y.to_bits()),
            "moe_permute x_perm"
        );
        assert!(res[0].3[GUARD + t * k * h..].iter().all(|v| v.is_nan()), "x_perm guard");
    }
}

#[test]
fn moe_permute_and_combine_match_reference() {
    for (profile, asc) in ascend_common::open_profiles() {
        eprintln!("CANN profile {profile}");
        moe_permute_and_combine_match_reference_on(profile, asc);
    }
}

fn moe_permute_and_combine_match_reference_on(profile: &str, asc: Arc<dyn Backend>) {
    let (t, k, e, h) = (6usize, 2usize, 5usize, 3usize);
    let ids = vec![1, 3, 0, 1, 4, 4, 1, 0, 2, 3, 1, 4];
    permute_case(&*asc, &ids, t, k, e, h, true); // aclnnMoeInitRouting
    permute_case(&*asc, &ids, t, k, e, h, false); // host (no x)
    let mut dropped = ids.clone();
    dropped[3] = -1;
    permute_case(&*asc, &dropped, t, k, e, h, true); // host (dropped slot)

    let refb = Reference::new();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for dt in DType::FLOATS {
        for drop in [false, true] {
            let rows = t * k;
            let mut slot: Vec<i64> = (0..rows as i64).rev().collect();
            if drop {
                slot[5] = -1;
            }
            let (yv, _) = rand_floats(&*asc, &mut rng, dt, rows * h, 2.0);
            let wv: Vec<f32> = (0..t * k).map(|_| rng.gen_range(0.0f32..1.0)).collect();
            let mut outs = Vec::new();
            for be in [&*asc, &refb as &dyn Backend] {
                let yb = upload_as(be, dt, &yv).1;
                let sb = padded(be, &slot, 0i64);
                let wb = padded(be, &wv, f32::NAN);
                let mut ob = nan_buf(be, dt, t * h);
                let args = MoeCombine {
                    y_perm: yb.view(dt, &[rows, h]).with_offset(GUARD),
                    slot_row: sb.view(DType::I64, &[t, k]).with_offset(GUARD),
                    weights: wb.view(DType::F32, &[t, k]).with_offset(GUARD),
                    out: ob.view_mut(dt, &[t, h]).with_offset(GUARD),
                };
                be.moe_combine(args.validate().unwrap())
                    .unwrap_or_else(|er| panic!("{}: {er}", be.name()));
                outs.push(down_floats(be, dt, &ob, t * h));
            }
            check_floats(&format!("moe_combine {dt} drop={drop}"), dt, &outs[0], &outs[1], t * h);
        }
    }
    let s = asc.supports(&OpDesc::MoeCombine { dtype: DType::BF16 });
    assert!(format!("{s:?}").contains("aclnnMoeFinalizeRoutingV2"), "{s:?}");
    let s = asc.supports(&OpDesc::MoePermute { x: Some(DType::F32) });
    if ascend_common::profiles_honoured() {
        // 8.1.RC1 has no aclnnMoeInitRoutingV3 header (ascend_acl.md §4.1); from 8.2 the documented
        // V3 call (audit P1-P3, rowIdxType 0 gather) must pass the open-time probe.
        let want = if profile == "8.1" {
            "aclnnMoeInitRoutingV2"
        } else {
            "aclnnMoeInitRoutingV3"
        };
        assert!(format!("{s:?}").contains(want), "CANN {profile}: {s:?}");
    }
}

#[test]
fn swiglu_matches_reference() {
    for (profile, asc) in ascend_common::open_profiles() {
        eprintln!("CANN profile {profile}");
        swiglu_matches_reference_on(profile, asc);
    }
}

fn swiglu_matches_reference_on(_profile: &str, asc: Arc<dyn Backend>) {
    let refb = Reference::new();
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    for dt in DType::FLOATS {
        for limit in [None, Some(0.5f32)] {
            let (m, i) = (5usize, 6usize);
            let (hv, _) = rand_floats(&*asc, &mut rng, dt, m * 2 * i, 3.0);
            let mut outs = Vec::new();
            for be in [&*asc, &refb as &dyn Backend] {
                let hb = upload_as(be, dt, &hv).1;
                let mut ob = nan_buf(be, dt, m * i);
                let args = Swiglu {
                    h: hb.view(dt, &[m, 2 * i]).with_offset(GUARD),
                    out: ob.view_mut(dt, &[m, i]).with_offset(GUARD),
                    limit,
                };
                be.swiglu(args.validate().unwrap()).unwrap();
                outs.push(down_floats(be, dt, &ob, m * i));
            }
            check_floats(&format!("swiglu {dt} {limit:?}"), dt, &outs[0], &outs[1], m * i);
        }
    }
}

#[test]
fn engram_hash_toy_vector_and_lookup() {
    for (profile, asc) in ascend_common::open_profiles() {
        eprintln!("CANN profile {profile}");
        engram_hash_toy_vector_and_lookup_on(profile, asc);
    }
}

fn engram_hash_toy_vector_and_lookup_on(_profile: &str, asc: Arc<dyn Backend>) {
    let layer = toy::layer().unwrap();
    let ids = asc.upload_slice(&[7i64, 3, 7, 3, 49]).unwrap();
    let mut rows = asc.upload_slice(&[-1i64; 20]).unwrap();
    let args = EngramHash {
        layer: &layer,
        ids: ids.view(DType::I64, &[5]),
        positions: None,
        alive: None,
        history: &[],
        rows: rows.view_mut(DType::I64, &[5, 4]),
    };
    asc.engram_hash(args.validate().unwrap()).unwrap();
    // OPS.md §4 toy check (hand-computed upstream).
    let want = [
        9i64, 21, 28, 42, 8, 11, 39, 59, 0, 18, 25, 50, 8, 11, 24, 46, 5, 22, 37, 46,
    ];
    assert_eq!(asc.download_vec::<i64>(&rows, 20).unwrap(), want);

    // engram_lookup = hash + gather; table of R = 60 rows x D = 4.
    let refb = Reference::new();
    let r = layer.rows() as usize;
    let d = 4usize;
    let tv: Vec<f32> = (0..r * d).map(|i| i as f32 * 0.5).collect();
    let mut outs = Vec::new();
    for be in [&*asc, &refb as &dyn Backend] {
        let tb = be.upload_slice(&tv).unwrap();
        let ib = be.upload_slice(&[7i64, 3, 7, 3, 49]).unwrap();
        let mut ob = padded(be, &vec![f32::NAN; 5 * 4 * d], f32::NAN);
        let args = EngramLookup {
            layer: &layer,
            ids: ib.view(DType::I64, &[5]),
            positions: None,
            alive: None,
            history: &[],
            table: tb.view(DType::F32, &[r, d]),
            format: TableFormat::F32,
            out: ob.view_mut(DType::F32, &[5, 4 * d]).with_offset(GUARD),
        };
        be.engram_lookup(args.validate().unwrap()).unwrap();
        outs.push(down::<f32>(be, &ob, 5 * 4 * d));
    }
    assert!(
        outs[0].iter().zip(&outs[1]).all(|(a, b)| a.to_bits() == b.to_bits()),
        "engram_lookup"
    );
}

#[test]
fn gather_rows_matches_reference() {
    for (profile, asc) in ascend_common::open_profiles() {
        eprintln!("CANN profile {profile}");
        gather_rows_matches_reference_on(profile, asc);
    }
}

fn gather_rows_matches_reference_on(_profile: &str, asc: Arc<dyn Backend>) {
    let refb = Reference::new();
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let (r, t, c) = (50usize, 7usize, 3usize);
    let rows: Vec<i64> = (0..t * c).map(|_| rng.gen_range(0..r as i64)).collect();
    for (fmt, out_dt) in TableFormat::PAIRS {
        let d = 64usize;
        let stored = fmt.stored_width(d);
        let bytes: Vec<u8> = (0..r * stored * fmt.storage_dtype().size())
            .map(|i| {
                if fmt == TableFormat::Fp8E4m3Ue8m0 {
                    (i * 37 % 120) as u8
                } else {
                    (i * 7 % 61) as u8
                }
            })
            .collect();
        for host_table in [false, true] {
            let mut outs = Vec::new();
            for be in [&*asc, &refb as &dyn Backend] {
                let tb = if host_table {
                    moehal_core::host::buffer_from_slice(&bytes).unwrap()
                } else {
                    be.upload_slice(&bytes).unwrap()
                };
                let rb = be.upload_slice(&rows).unwrap();
                let mut ob = nan_buf(be, out_dt, t * c * d);
                let args = GatherRows {
                    table: tb.view(fmt.storage_dtype(), &[r, stored]),
                    format: fmt,
                    rows: rb.view(DType::I64, &[t, c]),
                    out: ob.view_mut(out_dt, &[t, c * d]).with_offset(GUARD),
                };
                be.gather_rows(args.validate().unwrap())
                    .unwrap_or_else(|e| panic!("{} {fmt:?}: {e}", be.name()));
                outs.push(down_floats(be, out_dt, &ob, t * c * d));
            }
            assert!(
                outs[0].iter().zip(&outs[1]).all(|(a, b)| a.to_bits() == b.to_bits()),
                "gather_rows {fmt:?} -> {out_dt} host_table={host_table}"
            );
        }
    }
    let s = asc.supports(&OpDesc::GatherRows {
        table: TableFormat::BF16,
        out: DType::BF16,
        host_table: false,
    });
    assert!(format!("{s:?}").contains("aclnnEmbedding"), "{s:?}");
    // An out-of-range row is an error, and nothing is written.
    let tb = asc.upload_slice(&vec![1.0f32; r * 4]).unwrap();
    let rb = asc.upload_slice(&[0i64, r as i64]).unwrap();
    let mut ob = asc.upload_slice(&[f32::NAN; 8]).unwrap();
    let args = GatherRows {
        table: tb.view(DType::F32, &[r, 4]),
        format: TableFormat::F32,
        rows: rb.view(DType::I64, &[1, 2]),
        out: ob.view_mut(DType::F32, &[1, 8]),
    };
    assert!(asc.gather_rows(args.validate().unwrap()).is_err());
    assert!(asc.download_vec::<f32>(&ob, 8).unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn device_info_reports_emulator_soc() {
    for (profile, asc) in ascend_common::open_profiles() {
        eprintln!("CANN profile {profile}");
        device_info_reports_emulator_soc_on(profile, asc);
    }
}

fn device_info_reports_emulator_soc_on(_profile: &str, asc: Arc<dyn Backend>) {
    let info = asc.device_info();
    assert_eq!(info.name, "Ascend910B2-emu");
    assert!(info.memory_bytes.is_some_and(|m| m > 0));
    assert_eq!(asc.name(), "ascend");
}
