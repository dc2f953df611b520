//! Issue 19 ("Ascend fidelity"), backend half: the smallest call of each documented fault of
//! the project's audit of the CANN documents (P1-P7, as the route table of backends/ascend/README.md cites them), on every emulator CANN profile, checked against
//! the reference; the per-release routes the documents imply; and views whose element 0 is not
//! 32-byte aligned (an engine's row slice, e.g. a DLTensor with byte_offset 16).

mod ascend_common;

use half::bf16;
use moehal_core::ops::{
    GatherRows, GroupLimit, GroupScore, GroupedGemm, MoeCombine, MoePermute, OpDesc, RouterConfig, RouterTopk, Scoring,
    TableFormat, WeightLayout,
};
use moehal_core::{Backend, BackendExt, Buffer, DType, Element, Error, Reference, Support};

fn kernel(s: Support) -> String {
    match s {
        Support::Yes { kernel } => kernel,
        Support::No { reason } => panic!("unsupported: {reason}"),
    }
}

/// `buf` from byte `off` on, as a buffer of its own (what the C ABI builds from a DLTensor's
/// `data + byte_offset`).
fn slice_at(be: &dyn Backend, buf: &Buffer, off: usize) -> Buffer {
    // SAFETY: `buf` is memory of `be` and outlives the returned (non-owning) buffer in every use.
    unsafe { be.wrap_external(buf.addr() + off as u64, buf.len() - off) }.unwrap()
}

/// The 3x4 f32 device buffer of the issue: rows `[0..3]`, `[10..13]`, `[20..23]`.
fn three_rows() -> Vec<f32> {
    (0..12).map(|i| ((i / 4) * 10 + i % 4) as f32).collect()
}

// ================================================================================ views

#[test]
fn gather_rows_on_a_view_at_byte_offset_16() {
    for (profile, asc) in ascend_common::open_profiles() {
        let base = asc.upload_slice(&three_rows()).unwrap();
        let table = slice_at(&*asc, &base, 16); // rows 1..2 of the 3x4 buffer: a [2,4] table
        let rows = asc.upload_slice(&[1i64, 0]).unwrap();
        let mut out = asc.upload_slice(&[f32::NAN; 8]).unwrap();
        let args = GatherRows {
            table: table.view(DType::F32, &[2, 4]),
            format: TableFormat::F32,
            rows: rows.view(DType::I64, &[2, 1]),
            out: out.view_mut(DType::F32, &[2, 4]),
        };
        asc.gather_rows(args.validate().unwrap())
            .unwrap_or_else(|e| panic!("CANN {profile}: {e}"));
        let got = asc.download_vec::<f32>(&out, 8).unwrap();
        assert_eq!(got, [20.0, 21.0, 22.0, 23.0, 10.0, 11.0, 12.0, 13.0], "CANN {profile}");
        let k = kernel(asc.supports(&OpDesc::GatherRows {
            table: TableFormat::F32,
            out: DType::F32,
            host_table: false,
        }));
        assert!(
            k.contains("aclnn"),
            "CANN {profile}: the device gather must serve it: {k}"
        );
    }
}

#[test]
fn element_not_aligned_to_its_size_is_an_invalid_argument_naming_it() {
    let asc = ascend_common::open_emulated();
    let base = asc.upload_slice(&three_rows()).unwrap();
    let table = slice_at(&*asc, &base, 18); // not a multiple of 4 bytes
    let rows = asc.upload_slice(&[0i64]).unwrap();
    let mut out = asc.upload_slice(&[f32::NAN; 4]).unwrap();
    let args = GatherRows {
        table: table.view(DType::F32, &[1, 4]),
        format: TableFormat::F32,
        rows: rows.view(DType::I64, &[1, 1]),
        out: out.view_mut(DType::F32, &[1, 4]),
    };
    // Core validation or the backend's descriptor: either way an InvalidArgument naming `table`,
    // never a device error.
    match args.validate().and_then(|c| asc.gather_rows(c)) {
        Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "table"),
        other => panic!("expected InvalidArgument naming `table`, got {other:?}"),
    }
    assert!(asc.download_vec::<f32>(&out, 4).unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn grouped_gemm_x_view_at_byte_offset_16() {
    let refb = Reference::new();
    let w: Vec<f32> = (0..16).map(|i| (i % 5) as f32 - 2.0).collect(); // [1, K=4, N=4] KN
    let run = |be: &dyn Backend, x: &Buffer| {
        let wb = be.upload_slice(&w).unwrap();
        let ge = be.upload_slice(&[2i64]).unwrap();
        let mut y = be.upload_slice(&[f32::NAN; 8]).unwrap();
        let args = GroupedGemm {
            x: x.view(DType::F32, &[2, 4]),
            w: wb.view(DType::F32, &[1, 4, 4]),
            layout: WeightLayout::KN,
            group_end: ge.view(DType::I64, &[1]),
            row_scale: None,
            bias: None,
            y: y.view_mut(DType::F32, &[2, 4]),
        };
        be.grouped_gemm(args.validate().unwrap()).unwrap();
        be.download_vec::<f32>(&y, 8).unwrap()
    };
    let want = run(&refb, &refb.upload_slice(&three_rows()[4..]).unwrap());
    for (profile, asc) in ascend_common::open_profiles() {
        let base = asc.upload_slice(&three_rows()).unwrap();
        let got = run(&*asc, &slice_at(&*asc, &base, 16));
        assert_eq!(got, want, "CANN {profile}");
    }
}

#[test]
fn router_logits_view_at_byte_offset_16() {
    let refb = Reference::new();
    let cfg = RouterConfig {
        topk: 2,
        scoring: Scoring::Softmax,
        group: None,
        renormalize: true,
        routed_scaling_factor: 1.0,
    };
    let run = |be: &dyn Backend, x: &Buffer| {
        let mut ids = be.upload_slice(&[-1i32; 4]).unwrap();
        let mut w = be.upload_slice(&[f32::NAN; 4]).unwrap();
        let args = RouterTopk {
            config: cfg,
            logits: x.view(DType::F32, &[2, 4]),
            bias: None,
            ids: ids.view_mut(DType::I32, &[2, 2]),
            weights: w.view_mut(DType::F32, &[2, 2]),
            expert_counts: None,
        };
        be.router_topk(args.validate().unwrap()).unwrap();
        (
            be.download_vec::<i32>(&ids, 4).unwrap(),
            be.download_vec::<f32>(&w, 4).unwrap(),
        )
    };
    // Distinct logits per row, so the selection has no ties.
    let logits = [9.0f32, 9.0, 9.0, 9.0, 0.5, -1.0, 2.0, 1.0, 3.0, 0.0, -2.0, 1.5];
    let (wi, ww) = run(&refb, &refb.upload_slice(&logits[4..]).unwrap());
    for (profile, asc) in ascend_common::open_profiles() {
        let base = asc.upload_slice(&logits).unwrap();
        let (gi, gw) = run(&*asc, &slice_at(&*asc, &base, 16));
        assert_eq!(gi, wi, "CANN {profile}: ids");
        for (a, r) in gw.iter().zip(&ww) {
            assert!((a - r).abs() <= 1e-6, "CANN {profile}: weights {gw:?} vs {ww:?}");
        }
    }
}

#[test]
fn moe_combine_y_perm_view_at_byte_offset_16() {
    let refb = Reference::new();
    let run = |be: &dyn Backend, y: &Buffer| {
        let slot = be.upload_slice(&[1i64, 0]).unwrap();
        let wts = be.upload_slice(&[0.5f32, 0.25]).unwrap();
        let mut out = be.upload_slice(&[f32::NAN; 4]).unwrap();
        let args = MoeCombine {
            y_perm: y.view(DType::F32, &[2, 4]),
            slot_row: slot.view(DType::I64, &[1, 2]),
            weights: wts.view(DType::F32, &[1, 2]),
            out: out.view_mut(DType::F32, &[1, 4]),
        };
        be.moe_combine(args.validate().unwrap()).unwrap();
        be.download_vec::<f32>(&out, 4).unwrap()
    };
    let want = run(&refb, &refb.upload_slice(&three_rows()[4..]).unwrap());
    // 0.5·[20..23] + 0.25·[10..13]
    assert_eq!(want, [12.5, 13.25, 14.0, 14.75]);
    for (profile, asc) in ascend_common::open_profiles() {
        let base = asc.upload_slice(&three_rows()).unwrap();
        assert_eq!(run(&*asc, &slice_at(&*asc, &base, 16)), want, "CANN {profile}");
    }
}

// ================================================================================ P1-P3: moe_permute

/// Everything `moe_permute` (with x) writes, then `moe_combine` of x_perm with the slot_row it
/// returned: wrong slot_row (audit P2) shows in both.
fn permute_then_combine(be: &dyn Backend, ids: &[i32], t: usize, k: usize, e: usize) -> Vec<Vec<f64>> {
    let h = 8;
    let x: Vec<f32> = (0..t * h).map(|i| ((i / h) * 10 + i % h) as f32).collect();
    let ib = be.upload_slice(ids).unwrap();
    let xb = be.upload_slice(&x).unwrap();
    let mut ge = be.upload_slice(&vec![-1i64; e]).unwrap();
    let mut st = be.upload_slice(&vec![-1i64; t * k]).unwrap();
    let mut sr = be.upload_slice(&vec![-1i64; t * k]).unwrap();
    let mut xp = be.upload_slice(&vec![f32::NAN; t * k * h]).unwrap();
    let args = MoePermute {
        num_experts: e,
        ids: ib.view(DType::I32, &[t, k]),
        x: Some(xb.view(DType::F32, &[t, h])),
        group_end: ge.view_mut(DType::I64, &[e]),
        src_token: st.view_mut(DType::I64, &[t * k]),
        slot_row: sr.view_mut(DType::I64, &[t, k]),
        x_perm: Some(xp.view_mut(DType::F32, &[t * k, h])),
    };
    be.moe_permute(args.validate().unwrap()).unwrap();
    // Powers of two times small integers: every sum is exact in any order.
    let w: Vec<f32> = (0..t * k).map(|i| 1.0 / (1 << (i % 4)) as f32).collect();
    let wb = be.upload_slice(&w).unwrap();
    let mut out = be.upload_slice(&vec![f32::NAN; t * h]).unwrap();
    let args = MoeCombine {
        y_perm: xp.view(DType::F32, &[t * k, h]),
        slot_row: sr.view(DType::I64, &[t, k]),
        weights: wb.view(DType::F32, &[t, k]),
        out: out.view_mut(DType::F32, &[t, h]),
    };
    be.moe_combine(args.validate().unwrap()).unwrap();
    fn f<T: Element + Into<f64>>(be: &dyn Backend, b: &Buffer, n: usize) -> Vec<f64> {
        be.download_vec::<T>(b, n)
            .unwrap()
            .into_iter()
            .map(Into::into)
            .collect()
    }
    let i64s = |b: &Buffer, n: usize| -> Vec<f64> {
        be.download_vec::<i64>(b, n)
            .unwrap()
            .into_iter()
            .map(|v| v as f64)
            .collect()
    };
    vec![
        i64s(&ge, e),
        i64s(&st, t * k),
        i64s(&sr, t * k),
        f::<f32>(be, &xp, t * k * h),
        f::<f32>(be, &out, t * h),
    ]
}

#[test]
fn moe_permute_smallest_fault_calls_match_the_reference() {
    let refb = Reference::new();
    let cases: [(&[i32], usize, usize, usize); 3] = [
        (&[0], 1, 1, 1),                // P1: the smallest call
        (&[2, 0, 1], 3, 1, 3),          // P2: a 3-cycle (slot_row [2,0,1], not [1,2,0])
        (&[2, 1, 0, 2, 1, 0], 3, 2, 3), // k = 2: `/ k` versus `% numRows` (L5)
    ];
    for (profile, asc) in ascend_common::open_profiles() {
        for (ids, t, k, e) in cases {
            let want = permute_then_combine(&refb, ids, t, k, e);
            let got = permute_then_combine(&*asc, ids, t, k, e);
            let names = ["group_end", "src_token", "slot_row", "x_perm", "combine(x_perm)"];
            for ((g, w), n) in got.iter().zip(&want).zip(names) {
                assert_eq!(g, w, "CANN {profile} ids {ids:?}: {n}");
            }
        }
        // The audit's P2 example, spelled out.
        assert_eq!(permute_then_combine(&*asc, &[2, 0, 1], 3, 1, 3)[2], [2.0, 0.0, 1.0]);
    }
}

// ================================================================================ P4-P7: router_topk

fn router_run(
    be: &dyn Backend,
    cfg: RouterConfig,
    dt: DType,
    logits: &[f32],
    bias: Option<&[f32]>,
    t: usize,
    e: usize,
) -> (Vec<i32>, Vec<f32>, Vec<i64>) {
    let k = cfg.topk;
    let lb = match dt {
        DType::BF16 => be
            .upload_slice(&logits.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>())
            .unwrap(),
        _ => be.upload_slice(logits).unwrap(),
    };
    let bb = bias.map(|b| be.upload_slice(b).unwrap());
    let mut ids = be.upload_slice(&vec![-1i32; t * k]).unwrap();
    let mut w = be.upload_slice(&vec![f32::NAN; t * k]).unwrap();
    let mut c = be.upload_slice(&vec![-1i64; e]).unwrap();
    let args = RouterTopk {
        config: cfg,
        logits: lb.view(dt, &[t, e]),
        bias: bb.as_ref().map(|b| b.view(DType::F32, &[e])),
        ids: ids.view_mut(DType::I32, &[t, k]),
        weights: w.view_mut(DType::F32, &[t, k]),
        expert_counts: Some(c.view_mut(DType::I64, &[e])),
    };
    be.router_topk(args.validate().unwrap())
        .unwrap_or_else(|er| panic!("{}: {er}", be.name()));
    (
        be.download_vec(&ids, t * k).unwrap(),
        be.download_vec(&w, t * k).unwrap(),
        be.download_vec(&c, e).unwrap(),
    )
}

/// Distinct logits (a permutation of a grid per row) and a bias that changes the selection.
fn router_data(t: usize, e: usize) -> (Vec<f32>, Vec<f32>) {
    let x = (0..t * e)
        .map(|i| {
            let (r, c) = (i / e, i % e);
            (((c * 37 + r * 11) % e) as f32 - e as f32 / 2.0) / (e as f32 / 4.0)
        })
        .collect();
    let b = (0..e).map(|c| 0.05 * ((c * 7) % 3) as f32).collect();
    (x, b)
}

fn router_check(asc: &dyn Backend, profile: &str, cfg: RouterConfig, dt: DType, t: usize, e: usize, bias: bool) {
    let refb = Reference::new();
    let (x, b) = router_data(t, e);
    let bias = bias.then_some(b.as_slice());
    let want = router_run(&refb, cfg, dt, &x, bias, t, e);
    let got = router_run(asc, cfg, dt, &x, bias, t, e);
    let what = format!("CANN {profile} {cfg:?} {dt} bias={}", bias.is_some());
    assert_eq!(got.0, want.0, "{what}: ids");
    assert_eq!(got.2, want.2, "{what}: counts");
    for (a, r) in got.1.iter().zip(&want.1) {
        assert!(
            (a - r).abs() <= 1e-6 * r.abs().max(1.0),
            "{what}: weights {:?} vs {:?}",
            got.1,
            want.1
        );
    }
}

fn plain(scoring: Scoring, k: usize) -> RouterConfig {
    RouterConfig {
        topk: k,
        scoring,
        group: None,
        renormalize: true,
        routed_scaling_factor: 2.5,
    }
}

fn grouped(k: usize, n_group: usize, topk_group: usize, score: GroupScore) -> RouterConfig {
    RouterConfig {
        topk: k,
        scoring: Scoring::Sigmoid,
        group: Some(GroupLimit {
            n_group,
            topk_group,
            score,
        }),
        renormalize: true,
        routed_scaling_factor: 2.5,
    }
}

#[test]
fn router_topk_smallest_fault_calls_match_the_reference() {
    for (profile, asc) in ascend_common::open_profiles() {
        let a = &*asc;
        // P4: sigmoid E=8 k=2 (aclnnMoeGatingTopK needs its f32 [T,E] `out`).
        router_check(a, profile, plain(Scoring::Sigmoid, 2), DType::F32, 1, 8, false);
        router_check(a, profile, plain(Scoring::Sigmoid, 2), DType::F32, 3, 8, true);
        // P5: bf16 logits beside the f32 bias (bias dtype must equal x dtype).
        router_check(a, profile, plain(Scoring::Sigmoid, 2), DType::BF16, 3, 8, true);
        // P6: softmax with a bias, E=64 (softmax only from 8.5).
        router_check(a, profile, plain(Scoring::Softmax, 4), DType::F32, 3, 64, true);
        router_check(a, profile, plain(Scoring::Softmax, 4), DType::BF16, 3, 64, true);
        // DeepSeek-V3 shape: E=256, 8 groups, top-2 sum (8.2/8.3) and max (8.5).
        router_check(
            a,
            profile,
            grouped(8, 8, 4, GroupScore::Top2Sum),
            DType::F32,
            2,
            256,
            true,
        );
        router_check(a, profile, grouped(8, 8, 4, GroupScore::Max), DType::BF16, 2, 256, true);
        // P7: groupCount·align32(E/groupCount) = 128·32 = 4096 > 2048.
        router_check(
            a,
            profile,
            grouped(8, 128, 4, GroupScore::Top2Sum),
            DType::F32,
            2,
            1024,
            true,
        );
    }
}

// ================================================================================ routes per release

#[test]
fn routes_follow_the_documented_release_limits() {
    let honoured = ascend_common::profiles_honoured();
    for (profile, asc) in ascend_common::open_profiles() {
        let router = |scoring, group| {
            kernel(asc.supports(&OpDesc::RouterTopk {
                dtype: DType::F32,
                scoring,
                group,
            }))
        };
        let sig_top2 = router(Scoring::Sigmoid, Some(GroupScore::Top2Sum));
        let sig_max = router(Scoring::Sigmoid, Some(GroupScore::Max));
        let soft = router(Scoring::Softmax, None);
        let permute = kernel(asc.supports(&OpDesc::MoePermute { x: Some(DType::F32) }));
        println!("CANN {profile}\n  sigmoid/top2: {sig_top2}\n  sigmoid/max: {sig_max}\n  softmax: {soft}\n  permute: {permute}");
        // Every profile: plain softmax without bias is aclnnMoeGatingTopKSoftmax (in 8.1.RC1).
        assert!(
            soft.contains("without bias: aclnnMoeGatingTopKSoftmax"),
            "CANN {profile}: {soft}"
        );
        if !honoured {
            continue;
        }
        let vendor = "with bias: aclnnMoeGatingTopK";
        match profile {
            // No aclnnMoeGatingTopK / aclnnMoeInitRoutingV3 headers in 8.1.RC1 (ascend_acl.md §4.1).
            "8.1" => {
                assert!(!sig_top2.contains(vendor), "CANN 8.1: {sig_top2}");
                assert!(permute.contains("aclnnMoeInitRoutingV2"), "CANN 8.1: {permute}");
            }
            // 8.2/8.3 pages: sigmoid with top-2-sum groups only (audit P6).
            "8.2" | "8.3" => {
                assert!(sig_top2.contains(vendor), "CANN {profile}: {sig_top2}");
                assert!(!sig_max.contains(vendor), "CANN {profile}: {sig_max}");
                assert!(!soft.contains(vendor), "CANN {profile}: {soft}");
                assert!(permute.contains("aclnnMoeInitRoutingV3"), "CANN {profile}: {permute}");
            }
            _ => {
                for s in [&sig_top2, &sig_max, &soft] {
                    assert!(s.contains(vendor), "CANN {profile}: {s}");
                }
                assert!(permute.contains("aclnnMoeInitRoutingV3"), "CANN {profile}: {permute}");
            }
        }
    }
}

#[test]
fn profile_dirs_are_distinct_and_unknown_profiles_are_refused() {
    let dirs: Vec<_> = moehal_ascend::emulator::CANN_PROFILES
        .iter()
        .map(|p| ascend_common::profile_dir(p, None))
        .collect();
    for (i, a) in dirs.iter().enumerate() {
        assert!(a.join("libascendcl.so").is_file(), "{}", a.display());
        for b in &dirs[i + 1..] {
            assert_ne!(a, b);
        }
    }
    let target = moehal_ascend::emulator::target_dir_of_current_exe().unwrap();
    assert!(moehal_ascend::emulator::build_profile(&target, "7.0", None).is_err());
}
