//! The aclnn compositions of issue 13 through the strict emulator, on inputs the kit's drawn cases
//! do not reach: `swiglu` with a `limit` that is not exact in bf16/f16 (the f32 route through
//! aclnnCast), NaN / ±inf around the clamps, and `moe_combine` with dropped slots whose weights and
//! unrouted `y_perm` rows hold NaN (each dropped slot must add nothing); `moe_permute` composed on
//! the device (every slot dropped, one expert, repeats, no x, T = 0, out-of-range ids); the composed
//! router selection (non-finite logits, fill slots under a group limit, sqrt_softplus subnormals).

mod ascend_common;

use moehal_core::ops::{GatherRows, MoeCombine, OpDesc, Swiglu, TableFormat};
use moehal_core::{Backend, BackendExt, DType, Reference};
use moehal_testkit::{check_backend, Case, Spec};

#[test]
fn swiglu_limit_not_exact_in_the_dtype_matches_the_reference() {
    let asc = ascend_common::open_emulated();
    let s = format!("{:?}", asc.supports(&OpDesc::Swiglu { dtype: DType::BF16 }));
    assert!(s.contains("aclnnClampMax") && s.contains("aclnnClamp("), "{s}");
    let mut cases = Vec::new();
    for dtype in DType::FLOATS {
        for limit in [7.3f32, 0.1, 10.0] {
            cases.push(Case::new(
                format!("swiglu {dtype} limit {limit}"),
                Spec::Swiglu {
                    dtype,
                    rows: 9,
                    intermediate: 37,
                    limit: Some(limit),
                },
            ));
        }
    }
    check_backend(&*asc, "ascend (emulator)", &cases, 0x13, true).assert_pass();
}

#[test]
fn swiglu_limit_keeps_nan_and_clamps_infinities() {
    let asc = ascend_common::open_emulated();
    let (m, i) = (2usize, 4usize);
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    // gate | up, per row.
    #[rustfmt::skip]
    let h: Vec<f32> = vec![
        nan, 12.0, -12.0, inf,    1.0, nan, -inf, 20.0,
        -inf, 3.0, 0.5, -30.0,    inf, -inf, 2.0, -0.25,
    ];
    let limit = Some(10.0f32);
    let hb = asc.upload_slice(&h).unwrap();
    let mut ob = asc.upload_slice(&vec![0f32; m * i]).unwrap();
    let args = Swiglu {
        h: hb.view(DType::F32, &[m, 2 * i]),
        out: ob.view_mut(DType::F32, &[m, i]),
        limit,
    };
    asc.swiglu(args.validate().unwrap()).unwrap();
    let got: Vec<f32> = asc.download_vec(&ob, m * i).unwrap();

    let r = Reference;
    let hr = r.upload_slice(&h).unwrap();
    let mut or = r.upload_slice(&vec![0f32; m * i]).unwrap();
    let args = Swiglu {
        h: hr.view(DType::F32, &[m, 2 * i]),
        out: or.view_mut(DType::F32, &[m, i]),
        limit,
    };
    r.swiglu(args.validate().unwrap()).unwrap();
    let want: Vec<f32> = r.download_vec(&or, m * i).unwrap();
    for (j, (g, w)) in got.iter().zip(&want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "out[{j}]: {g}, reference NaN");
        } else {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "out[{j}]: {g}, reference {w}");
        }
    }
    // The clamps did act: gate +inf and up 20 under limit 10 give silu(10)·10, finite; a NaN gate
    // (out[0]) and a NaN up (out[1]) stay NaN.
    assert!(want[3].is_finite() && got[3].is_finite(), "{got:?}");
    assert!(got[0].is_nan() && got[1].is_nan(), "{got:?}");
}

#[test]
fn router_weights_are_composed_on_the_device() {
    use moehal_core::ops::Scoring;
    let asc = ascend_common::open_emulated();
    for scoring in [Scoring::Softmax, Scoring::Sigmoid] {
        let s = format!(
            "{:?}",
            asc.supports(&OpDesc::RouterTopk {
                dtype: DType::BF16,
                scoring,
                group: None,
            })
        );
        assert!(
            s.contains("aclnnGather(ids)") && s.contains("aclnnMuls") && s.contains("aclnnCast->f32"),
            "{scoring:?}: {s}"
        );
    }
}

#[test]
fn combine_dropped_slots_add_nothing_whatever_the_unrouted_rows_hold() {
    let asc = ascend_common::open_emulated();
    let s = format!("{:?}", asc.supports(&OpDesc::MoeCombine { dtype: DType::F32 }));
    assert!(s.contains("aclnnEqScalar"), "{s}");
    let (t, k, h) = (3usize, 2usize, 4usize);
    let rows = t * k;
    let slot: Vec<i64> = vec![0, -1, 2, 1, -1, 3];
    let nan = f32::NAN;
    // Rows 4 and 5 are read by no valid slot: NaN, as an engine's unrouted rows may be.
    let mut y: Vec<f32> = (0..rows * h).map(|v| v as f32 * 0.5 - 3.0).collect();
    y[4 * h..].iter_mut().for_each(|v| *v = nan);
    let w: Vec<f32> = vec![0.75, nan, 0.5, -1.25, nan, 2.0];
    let yb = asc.upload_slice(&y).unwrap();
    let sb = asc.upload_slice(&slot).unwrap();
    let wb = asc.upload_slice(&w).unwrap();
    let mut ob = asc.upload_slice(&vec![nan; t * h]).unwrap();
    let args = MoeCombine {
        y_perm: yb.view(DType::F32, &[rows, h]),
        slot_row: sb.view(DType::I64, &[t, k]),
        weights: wb.view(DType::F32, &[t, k]),
        out: ob.view_mut(DType::F32, &[t, h]),
    };
    asc.moe_combine(args.validate().unwrap()).unwrap();
    let got: Vec<f32> = asc.download_vec(&ob, t * h).unwrap();
    // OPS.md §3: sum_j w[t,j]·y[slot_row[t,j]] in f32, j ascending, dropped slots skipped.
    for tt in 0..t {
        for c in 0..h {
            let mut acc = 0f32;
            for j in 0..k {
                let r = slot[tt * k + j];
                if r >= 0 {
                    acc += w[tt * k + j] * y[r as usize * h + c];
                }
            }
            assert_eq!(got[tt * h + c], acc, "out[{tt}, {c}]");
        }
    }
    // The inputs are untouched (the masks work on scratch copies).
    assert_eq!(asc.download_vec::<f32>(&wb, rows).unwrap()[0], 0.75);
    assert!(asc.download_vec::<f32>(&yb, rows * h).unwrap()[4 * h].is_nan());
}

#[test]
fn permute_is_composed_on_the_device_and_matches_the_reference() {
    let asc = ascend_common::open_emulated();
    for x in [None, Some(DType::BF16)] {
        let s = format!("{:?}", asc.supports(&OpDesc::MoePermute { x }));
        assert!(
            s.contains("aclnnSort(stable") && s.contains("aclnnSearchSorted") && s.contains("aclnnScatter"),
            "{s}"
        );
        assert_eq!(s.contains("aclnnIndexSelect"), x.is_some(), "{s}");
    }
    // Shapes the kit's edge cases do not all reach: every slot dropped, one expert, repeated
    // experts in a token, no x, T = 0, and an id out of range (an error, nothing written).
    let mut cases = Vec::new();
    for (t, k, e, drop, repeat) in [
        (7, 3, 5, 0.0, false),
        (7, 3, 5, 0.4, true),
        (5, 2, 1, 0.3, true),
        (4, 4, 9, 1.0, false),
        (0, 2, 3, 0.0, false),
        (33, 8, 16, 0.1, true),
    ] {
        for x in [None, Some((DType::F32, 5)), Some((DType::BF16, 16))] {
            for bad_id in [false, true].into_iter().filter(|&b| !b || t > 0) {
                cases.push(Case::new(
                    format!("moe_permute t{t} k{k} e{e} drop{drop} repeat{repeat} x{x:?} bad{bad_id}"),
                    Spec::MoePermute {
                        tokens: t,
                        topk: k,
                        num_experts: e,
                        x,
                        drop,
                        repeat,
                        bad_id,
                    },
                ));
            }
        }
    }
    check_backend(&*asc, "ascend (emulator)", &cases, 0x13_03, true).assert_pass();
}

/// fp8 e4m3 + ue8m0 tables dequantised on the device (issue 13 item 5): every one of the 256 code
/// bytes (both NaN codes, ±0, subnormals, ±448) under the extreme scale bytes (0 = 2^-127, the
/// subnormal scale; 127 = 1; 254 = 2^127, which overflows large codes to ±inf; 255 = NaN), to f32
/// and bf16 `out`, bitwise equal to the reference (NaN as the canonical quiet NaN).
#[test]
fn fp8_gather_dequantises_on_the_device_bitwise() {
    let asc = ascend_common::open_emulated();
    let s = format!(
        "{:?}",
        asc.supports(&OpDesc::GatherRows {
            table: TableFormat::Fp8E4m3Ue8m0,
            out: DType::BF16,
            host_table: false,
        })
    );
    assert!(s.contains("aclnnInplaceMul") && !s.contains("host gather"), "{s}");
    // 4 rows of D = 256 codes (all bytes) + 8 scale bytes; rows gathered out of order, repeated.
    let (d, nb) = (256usize, 8usize);
    let scales = [
        [0u8, 127, 254, 255, 1, 126, 128, 200],
        [255, 254, 0, 127, 3, 130, 250, 100],
    ];
    let mut table = Vec::new();
    for r in 0..4 {
        table.extend((0..d).map(|i| (i as u8).wrapping_add(r as u8 * 37)));
        table.extend_from_slice(&scales[r % 2]);
    }
    let rows = [3i64, 0, 2, 2, 1, 0];
    let run = |be: &dyn Backend, out_dt: DType| -> Vec<u8> {
        let tb = be.upload_slice(&table).unwrap();
        let rb = be.upload_slice(&rows).unwrap();
        let n = rows.len() * d * out_dt.size();
        let mut ob = be.alloc(n).unwrap();
        let args = GatherRows {
            table: tb.view(DType::U8, &[4, d + nb]),
            format: TableFormat::Fp8E4m3Ue8m0,
            rows: rb.view(DType::I64, &[2, 3]),
            out: ob.view_mut(out_dt, &[2, 3 * d]),
        };
        be.gather_rows(args.validate().unwrap()).unwrap();
        let mut got = vec![0u8; n];
        be.download(&ob, 0, &mut got).unwrap();
        got
    };
    for out_dt in [DType::F32, DType::BF16] {
        let (got, want) = (run(&*asc, out_dt), run(&Reference, out_dt));
        assert!(
            got == want,
            "{out_dt}: the device dequantisation differs from the reference"
        );
    }
}

/// The composed router selection (non-finite logits, `sqrt_softplus`, with and without a group
/// limit) against the reference on rows the kit's drawn cases rarely reach: rows with fewer
/// selectable experts than `k` (OPS.md §2 step 6: fill slots are the lowest-index experts not yet
/// chosen, weight 0 — under a group limit they come from dropped groups, whose finite scores must
/// not leak into the weights), a row with no finite logit, ±inf, and very negative sqrt_softplus
/// logits (subnormal scores). ids exactly, weights within 1e-6 relative.
#[test]
fn router_composed_selection_matches_the_reference() {
    use moehal_core::ops::{GroupLimit, GroupScore, RouterConfig, RouterTopk, Scoring};
    let asc = ascend_common::open_emulated();
    let s = format!(
        "{:?}",
        asc.supports(&OpDesc::RouterTopk {
            dtype: DType::F32,
            scoring: Scoring::SqrtSoftplus,
            group: Some(GroupScore::Top2Sum),
        })
    );
    assert!(
        s.contains("composed on the device") && s.contains("aclnnSoftplus"),
        "{s}"
    );
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let (t, e, k) = (4usize, 8usize, 4usize);
    #[rustfmt::skip]
    let logits: Vec<f32> = vec![
        // Two selectable experts, both in group 3 (of 4): two fill slots.
        nan, inf, -inf, nan, nan, nan, 0.5, -0.25,
        // No finite logit: ids 0..k, weights 0.
        nan, nan, inf, -inf, nan, inf, nan, nan,
        // Very negative logits (sqrt_softplus: subnormal scores) and one infinity.
        -180.0, -300.0, -200.0, -190.0, inf, -150.0, -170.0, -400.0,
        // Ordinary.
        0.5, -0.25, 1.5, 0.0, 2.0, -1.0, 0.75, 0.1,
    ];
    let bias: Vec<f32> = vec![0.25, -0.5, 0.0, 1.0, 0.125, -0.125, 0.5, 0.0];
    let groups = [
        None,
        Some(GroupLimit {
            n_group: 4,
            topk_group: 2,
            score: GroupScore::Top2Sum,
        }),
        Some(GroupLimit {
            n_group: 2,
            topk_group: 1,
            score: GroupScore::Max,
        }),
    ];
    for scoring in [Scoring::Softmax, Scoring::Sigmoid, Scoring::SqrtSoftplus] {
        for group in groups {
            for with_bias in [false, true] {
                let cfg = RouterConfig {
                    topk: k,
                    scoring,
                    group,
                    renormalize: true,
                    routed_scaling_factor: 1.5,
                };
                let run = |b: &dyn Backend| -> (Vec<i32>, Vec<f32>, Vec<i64>) {
                    let lb = b.upload_slice(&logits).unwrap();
                    let bb = b.upload_slice(&bias).unwrap();
                    let mut ib = b.upload_slice(&vec![0i32; t * k]).unwrap();
                    let mut wb = b.upload_slice(&vec![0f32; t * k]).unwrap();
                    let mut cb = b.upload_slice(&vec![0i64; e]).unwrap();
                    let args = RouterTopk {
                        config: cfg,
                        logits: lb.view(DType::F32, &[t, e]),
                        bias: with_bias.then(|| bb.view(DType::F32, &[e])),
                        ids: ib.view_mut(DType::I32, &[t, k]),
                        weights: wb.view_mut(DType::F32, &[t, k]),
                        expert_counts: Some(cb.view_mut(DType::I64, &[e])),
                    };
                    b.router_topk(args.validate().unwrap()).unwrap();
                    (
                        b.download_vec(&ib, t * k).unwrap(),
                        b.download_vec(&wb, t * k).unwrap(),
                        b.download_vec(&cb, e).unwrap(),
                    )
                };
                let what = format!("{scoring:?} {group:?} bias {with_bias}");
                let (gi, gw, gc) = run(&*asc);
                let (ri, rw, rc) = run(&Reference);
                assert_eq!(gi, ri, "{what}: ids");
                assert_eq!(gc, rc, "{what}: expert_counts");
                for (j, (g, r)) in gw.iter().zip(&rw).enumerate() {
                    assert!(
                        (g - r).abs() <= 1e-6 * r.abs().max(1e-30),
                        "{what}: weight {j}: device {g:e}, reference {r:e}"
                    );
                }
            }
        }
    }
}
