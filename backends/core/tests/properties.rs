//! Property tests of the reference backend and the core helpers (OPS.md §1–§5). Case counts are kept
//! at 64 per property so the suite stays fast in debug builds; proptest prints the failing input.

use half::{bf16, f16};
use moehal_core::engram::{derive_primes, EngramLayer};
use moehal_core::ops::gather_rows::fp8_dequant;
use moehal_core::ops::grouped_gemm::{counts_from_group_end, group_end_from_counts};
use moehal_core::ops::{
    EngramHash, GatherRows, GroupLimit, GroupScore, MoeCombine, MoePermute, RouterConfig, Scoring, TableFormat,
    WeightLayout,
};
use moehal_core::{Backend, BackendExt, DType, Element, Float};
use proptest::prelude::*;

mod common;

use common::{gemm, route, to_kn, BE};

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(64)
}

// ------------------------------------------------------------------------------------------------
// moe_permute -> moe_combine
// ------------------------------------------------------------------------------------------------

/// `(T, k, E, ids, x)` with ids in `[-1, E)` and x small f32 values.
fn arb_routing() -> impl Strategy<Value = (usize, usize, usize, usize, Vec<i32>, Vec<f32>)> {
    (0usize..7, 1usize..5, 1usize..6, 1usize..4).prop_flat_map(|(t, k, e, h)| {
        (
            Just(t),
            Just(k),
            Just(e),
            Just(h),
            proptest::collection::vec(-1i32..e as i32, t * k),
            proptest::collection::vec(-100.0f32..100.0, t * h),
        )
    })
}

proptest! {
    #![proptest_config(config())]

    /// Permute, then combine with unit weights and `y_perm = x_perm`. From OPS.md §3:
    /// `x_perm[slot_row[t, j]] = x[src_token[slot_row[t, j]]] = x[t]` for every routed slot, so
    /// `out[t] = sum over routed j of 1 * x[t] = n_t * x[t]`, `n_t` = number of slots of `t` whose
    /// id is not -1 (a repeated expert counts twice). The reference sums in f64 (exact for these
    /// small integers times an f32) and rounds once, so `out[t] == f32(n_t * x[t])` bitwise:
    /// the identity for a token with exactly one routed slot, `k * x[t]` when all k are routed,
    /// and +0.0 when every slot is dropped. Also checks the permutation itself.
    #[test]
    fn permute_then_combine_unit_weights((t, k, e, h, ids, x) in arb_routing()) {
        let idb = BE.upload_slice(&ids).unwrap();
        let xb = BE.upload_slice(&x).unwrap();
        let mut ge = BE.filled(e, -9i64).unwrap();
        let mut st = BE.filled(t * k, -9i64).unwrap();
        let mut sr = BE.filled(t * k, -9i64).unwrap();
        let mut xp = BE.filled(t * k * h, f32::NAN).unwrap();
        let args = MoePermute {
            num_experts: e,
            ids: idb.view(DType::I32, &[t, k]),
            x: Some(xb.view(DType::F32, &[t, h])),
            group_end: ge.view_mut(DType::I64, &[e]),
            src_token: st.view_mut(DType::I64, &[t * k]),
            slot_row: sr.view_mut(DType::I64, &[t, k]),
            x_perm: Some(xp.view_mut(DType::F32, &[t * k, h])),
        };
        BE.moe_permute(args.validate().unwrap()).unwrap();
        let group_end: Vec<i64> = BE.download_vec(&ge, e).unwrap();
        let src: Vec<i64> = BE.download_vec(&st, t * k).unwrap();
        let slot: Vec<i64> = BE.download_vec(&sr, t * k).unwrap();
        // group_end = prefix sums of the per-expert counts.
        let mut counts = vec![0i64; e];
        for &i in ids.iter().filter(|&&i| i >= 0) {
            counts[i as usize] += 1;
        }
        prop_assert_eq!(&group_end, &group_end_from_counts(&counts).unwrap());
        let routed = *group_end.last().unwrap();
        // Every routed slot owns a distinct row inside its expert's range, with src_token = t;
        // rows of one expert are in (t, j) order; dropped slots are -1.
        let mut seen = vec![false; routed as usize];
        let mut last_in_expert = vec![-1i64; e];
        for s in 0..t * k {
            let (ti, id, r) = (s / k, ids[s], slot[s]);
            if id < 0 {
                prop_assert_eq!(r, -1);
                continue;
            }
            let lo = if id == 0 { 0 } else { group_end[id as usize - 1] };
            prop_assert!(r >= lo && r < group_end[id as usize], "slot {} row {}", s, r);
            prop_assert!(!seen[r as usize]);
            seen[r as usize] = true;
            prop_assert_eq!(src[r as usize], ti as i64);
            prop_assert!(r > last_in_expert[id as usize]);
            last_in_expert[id as usize] = r;
        }

        let ones = BE.upload_slice(&vec![1.0f32; t * k]).unwrap();
        let mut out = BE.filled(t * h, f32::NAN).unwrap();
        let args = MoeCombine {
            y_perm: xp.view(DType::F32, &[t * k, h]),
            slot_row: sr.view(DType::I64, &[t, k]),
            weights: ones.view(DType::F32, &[t, k]),
            out: out.view_mut(DType::F32, &[t, h]),
        };
        BE.moe_combine(args.validate().unwrap()).unwrap();
        let out: Vec<f32> = BE.download_vec(&out, t * h).unwrap();
        for ti in 0..t {
            let n_t = ids[ti * k..(ti + 1) * k].iter().filter(|&&i| i >= 0).count();
            for c in 0..h {
                // The sum starts from +0.0 (the empty sum), so a token with no routed slot gives
                // +0.0 whatever the sign of x.
                let want = (0.0 + n_t as f64 * x[ti * h + c] as f64) as f32;
                let got = out[ti * h + c];
                prop_assert_eq!(got.to_bits(), want.to_bits(), "t {} c {} n_t {}", ti, c, n_t);
                if n_t == 1 {
                    prop_assert_eq!(got.to_bits(), x[ti * h + c].to_bits());
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// router_topk
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct RouterCase {
    t: usize,
    e: usize,
    cfg: RouterConfig,
    logits: Vec<f32>,
    bias: Option<Vec<f32>>,
}

fn arb_scoring() -> impl Strategy<Value = Scoring> {
    prop_oneof![
        Just(Scoring::Softmax),
        Just(Scoring::Sigmoid),
        Just(Scoring::SqrtSoftplus)
    ]
}

/// A logit: mostly finite in [-8, 8], sometimes NaN or ±inf.
fn arb_logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -8.0f32..8.0,
        1 => Just(f32::NAN),
        1 => prop_oneof![Just(f32::INFINITY), Just(f32::NEG_INFINITY)],
    ]
}

fn arb_router() -> impl Strategy<Value = RouterCase> {
    // E = n_group * per; groups optional.
    (
        1usize..5,
        1usize..5,
        0usize..5,
        arb_scoring(),
        any::<bool>(),
        0.5f32..3.0,
        any::<bool>(),
    )
        .prop_flat_map(|(n_group, per, t, scoring, use_groups, scale, top2)| {
            let e = n_group * per;
            let top2 = top2 && per >= 2;
            (1usize..=n_group)
                .prop_flat_map(move |topk_group| {
                    let max_k = if use_groups && n_group > 1 { topk_group * per } else { e };
                    (Just(topk_group), 1usize..=max_k)
                })
                .prop_flat_map(move |(topk_group, k)| {
                    (
                        Just(RouterConfig {
                            topk: k,
                            scoring,
                            group: use_groups.then_some(GroupLimit {
                                n_group,
                                topk_group,
                                score: if top2 { GroupScore::Top2Sum } else { GroupScore::Max },
                            }),
                            renormalize: true,
                            routed_scaling_factor: scale,
                        }),
                        proptest::collection::vec(arb_logit(), t * e),
                        proptest::option::of(proptest::collection::vec(-1.0f32..1.0, e)),
                    )
                })
                .prop_map(move |(cfg, logits, bias)| RouterCase {
                    t,
                    e,
                    cfg,
                    logits,
                    bias,
                })
        })
}

fn run_router(c: &RouterCase) -> (Vec<i32>, Vec<f32>, Vec<i64>) {
    route(c.cfg, c.e, &c.logits, c.bias.as_deref())
}

proptest! {
    #![proptest_config(config())]

    /// Ids are distinct and in `[0, E)`; `expert_counts` is their histogram and sums to `T*k`;
    /// weights are finite and >= 0 (scale > 0 here).
    #[test]
    fn router_ids_distinct_in_range_and_counts(c in arb_router()) {
        let (ids, w, counts) = run_router(&c);
        let (e, k) = (c.e, c.cfg.topk);
        let mut hist = vec![0i64; e];
        for row in ids.chunks(k) {
            let mut seen = vec![false; e];
            for &i in row {
                prop_assert!(i >= 0 && (i as usize) < e, "id {} outside [0, {})", i, e);
                prop_assert!(!seen[i as usize], "id {} twice in {:?}", i, row);
                seen[i as usize] = true;
                hist[i as usize] += 1;
            }
        }
        prop_assert_eq!(&counts, &hist);
        prop_assert_eq!(counts.iter().sum::<i64>(), (c.t * k) as i64);
        prop_assert!(w.iter().all(|&v| v.is_finite() && v >= 0.0), "{:?}", w);
    }

    /// With `renormalize`, the weights of a token sum to `routed_scaling_factor` (within 1e-6
    /// relative: k f32 roundings of 2^-24 each plus the 1e-20 epsilon) whenever the selection keeps
    /// at least one expert. From the inputs alone (bias finite here): some logit of the token is
    /// finite, and with a `top2_sum` group limit some group holds at least two finite logits (a
    /// group with fewer scores -inf = -inf + finite, and the kept groups could then be empty).
    /// Otherwise the sum is exactly 0 (all fill slots) or the scale.
    #[test]
    fn router_renormalized_weights_sum_to_scale(c in arb_router()) {
        let (_, w, _) = run_router(&c);
        let (e, k) = (c.e, c.cfg.topk);
        let scale = c.cfg.routed_scaling_factor as f64;
        for ti in 0..c.t {
            let row = &c.logits[ti * e..(ti + 1) * e];
            let sum: f64 = w[ti * k..(ti + 1) * k].iter().map(|&v| v as f64).sum();
            let near_scale = (sum - scale).abs() <= 1e-6 * scale;
            let any_finite = row.iter().any(|l| l.is_finite());
            let guaranteed = match c.cfg.group.filter(|g| g.n_group > 1) {
                Some(g) if g.score == GroupScore::Top2Sum => {
                    let per = e / g.n_group;
                    row.chunks(per).any(|grp| grp.iter().filter(|l| l.is_finite()).count() >= 2)
                }
                _ => any_finite,
            };
            if guaranteed {
                prop_assert!(near_scale, "token {}: sum {} scale {} weights {:?}", ti, sum, scale, &w[ti * k..(ti + 1) * k]);
            } else if !any_finite {
                prop_assert_eq!(sum, 0.0);
            } else {
                prop_assert!(near_scale || sum == 0.0, "token {}: sum {}", ti, sum);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// grouped_gemm: NK and KN agree bitwise
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct GemmCase {
    m: usize,
    n: usize,
    k: usize,
    g: usize,
    dtype: DType,
    x: Vec<f32>,
    w_nk: Vec<f32>,
    counts: Vec<i64>,
    bias: Option<Vec<f32>>,
    scale: Option<Vec<f32>>,
}

fn arb_gemm() -> impl Strategy<Value = GemmCase> {
    (0usize..7, 0usize..5, 0usize..5, 1usize..4, 0usize..3).prop_flat_map(|(m, n, k, g, d)| {
        let dtype = DType::FLOATS[d];
        (
            proptest::collection::vec(-4.0f32..4.0, m * k),
            proptest::collection::vec(-4.0f32..4.0, g * n * k),
            // Counts summing to at most M: split [0, M] at g sorted cut points.
            proptest::collection::vec(0..=m, g),
            proptest::option::of(proptest::collection::vec(-4.0f32..4.0, g * n)),
            proptest::option::of(proptest::collection::vec(-2.0f32..2.0, m)),
        )
            .prop_map(move |(x, w_nk, mut cuts, bias, scale)| {
                cuts.sort_unstable();
                let mut prev = 0;
                let counts = cuts
                    .iter()
                    .map(|&c| {
                        let v = (c - prev) as i64;
                        prev = c;
                        v
                    })
                    .collect();
                GemmCase {
                    m,
                    n,
                    k,
                    g,
                    dtype,
                    x,
                    w_nk,
                    counts,
                    bias,
                    scale,
                }
            })
    })
}

fn gemm_bits<T: Float>(c: &GemmCase, layout: WeightLayout) -> Vec<u32> {
    let (m, n, k, g) = (c.m, c.n, c.k, c.g);
    let w = match layout {
        WeightLayout::NK => c.w_nk.clone(),
        WeightLayout::KN => to_kn(&c.w_nk, g, n, k),
    };
    let ends = group_end_from_counts(&c.counts).unwrap();
    gemm::<T>(
        &c.x,
        &w,
        layout,
        (m, n, k, g),
        &ends,
        c.bias.as_deref(),
        c.scale.as_deref(),
    )
    .into_iter()
    .map(f32::to_bits)
    .collect()
}

proptest! {
    #![proptest_config(config())]

    /// The two weight layouts describe the same matrices, so the reference gives bitwise equal
    /// results (same f64 accumulation order over K); rows past the last group stay poison in both.
    #[test]
    fn gemm_nk_and_kn_agree_bitwise(c in arb_gemm()) {
        let (nk, kn) = match c.dtype {
            DType::F32 => (gemm_bits::<f32>(&c, WeightLayout::NK), gemm_bits::<f32>(&c, WeightLayout::KN)),
            DType::BF16 => (gemm_bits::<bf16>(&c, WeightLayout::NK), gemm_bits::<bf16>(&c, WeightLayout::KN)),
            _ => (gemm_bits::<f16>(&c, WeightLayout::NK), gemm_bits::<f16>(&c, WeightLayout::KN)),
        };
        prop_assert_eq!(&nk, &kn);
        let routed = c.counts.iter().sum::<i64>() as usize;
        prop_assert!(nk[routed * c.n..].iter().all(|&b| f32::from_bits(b).is_nan()));
        prop_assert!(nk[..routed * c.n].iter().all(|&b| !f32::from_bits(b).is_nan()));
    }

    /// counts -> group_end -> counts and group_end -> counts -> group_end are identities.
    #[test]
    fn group_end_converters_roundtrip(counts in proptest::collection::vec(0i64..1000, 0..10)) {
        let ends = group_end_from_counts(&counts).unwrap();
        prop_assert!(ends.windows(2).all(|w| w[0] <= w[1]));
        prop_assert_eq!(ends.last().copied().unwrap_or(0), counts.iter().sum::<i64>());
        prop_assert_eq!(&counts_from_group_end(&ends).unwrap(), &counts);
        prop_assert_eq!(&group_end_from_counts(&counts_from_group_end(&ends).unwrap()).unwrap(), &ends);
    }
}

// ------------------------------------------------------------------------------------------------
// engram_hash: rows in their column's range
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct HashCase {
    layer: EngramLayer,
    ids: Vec<i64>,
    positions: Option<Vec<i64>>,
    alive: Option<Vec<u8>>,
    history: Vec<i64>,
}

fn arb_hash() -> impl Strategy<Value = HashCase> {
    // N in 2..5, K in 1..4, V' in 1..5000, vocab_n for the primes in 2..10^6, pad < V'.
    (2usize..5, 1usize..4, 1u64..5000, 2u64..1_000_000, 0usize..20).prop_flat_map(|(n, kh, v, vocab_n, t)| {
        // Odd multipliers with m * (V' - 1) < 2^63.
        let bound = if v > 1 { (i64::MAX as u64) / (v - 1) } else { u64::MAX };
        let m = proptest::collection::vec((0..bound / 2).prop_map(|r| 2 * r + 1), n);
        (
            m,
            0..v,
            proptest::collection::vec(0..v as i64, t),
            proptest::option::of(proptest::collection::vec(0i64..4, t)),
            proptest::option::of(proptest::collection::vec(0u8..3, t)),
            proptest::collection::vec(0..v as i64, 0..n),
        )
            .prop_map(move |(m, pad, ids, positions, alive, history)| {
                let primes = derive_primes(vocab_n, n, kh, 1).unwrap().remove(0);
                HashCase {
                    layer: EngramLayer::new(n, kh, m, primes, v, pad).unwrap(),
                    ids,
                    positions,
                    alive,
                    history,
                }
            })
    })
}

proptest! {
    #![proptest_config(config())]

    /// Every row of column `c` lies in `[off[c], off[c] + p[c])` (so the columns never overlap and
    /// every row is below `R`), for any ids, segments, alive masks and history.
    #[test]
    fn engram_rows_lie_in_their_column_range(c in arb_hash()) {
        let (t, cols) = (c.ids.len(), c.layer.columns());
        let ib = BE.upload_slice(&c.ids).unwrap();
        let pb = c.positions.as_ref().map(|p| BE.upload_slice(p).unwrap());
        let ab = c.alive.as_ref().map(|a| BE.upload_slice(a).unwrap());
        let mut rows = BE.filled(t * cols, -1i64).unwrap();
        let args = EngramHash {
            layer: &c.layer,
            ids: ib.view(DType::I64, &[t]),
            positions: pb.as_ref().map(|b| b.view(DType::I64, &[t])),
            alive: ab.as_ref().map(|b| b.view(DType::U8, &[t])),
            history: &c.history,
            rows: rows.view_mut(DType::I64, &[t, cols]),
        };
        BE.engram_hash(args.validate().unwrap()).unwrap();
        let rows: Vec<i64> = BE.download_vec(&rows, t * cols).unwrap();
        for (i, &r) in rows.iter().enumerate() {
            let col = i % cols;
            let (off, p) = (c.layer.offset(col).unwrap(), c.layer.prime(col).unwrap());
            prop_assert!(r >= 0 && (r as u64) >= off && (r as u64) < off + p, "token {} col {}: row {} not in [{}, {})", i / cols, col, r, off, off + p);
            prop_assert!((r as u64) < c.layer.rows());
        }
    }
}

// ------------------------------------------------------------------------------------------------
// gather_rows: output rows are the table rows, bit for bit
// ------------------------------------------------------------------------------------------------

/// `(R, D, T, C, table bits, rows)` with arbitrary bit patterns (NaNs with payloads included).
fn arb_gather<T: Element>(
    bits: impl Strategy<Value = T> + Clone,
) -> impl Strategy<Value = (usize, usize, usize, usize, Vec<T>, Vec<i64>)> {
    (1usize..6, 0usize..5, 0usize..5, 0usize..4).prop_flat_map(move |(r, d, t, c)| {
        (
            Just(r),
            Just(d),
            Just(t),
            Just(c),
            proptest::collection::vec(bits.clone(), r * d),
            proptest::collection::vec(0..r as i64, t * c),
        )
    })
}

fn gather_dense<T: Element>(
    format: TableFormat,
    r: usize,
    d: usize,
    t: usize,
    c: usize,
    table: &[T],
    rows: &[i64],
) -> Vec<T> {
    let tb = BE.upload_slice(table).unwrap();
    let rb = BE.upload_slice(rows).unwrap();
    let mut out = BE.alloc(t * c * d * std::mem::size_of::<T>()).unwrap();
    let args = GatherRows {
        table: tb.view(T::DTYPE, &[r, d]),
        format,
        rows: rb.view(DType::I64, &[t, c]),
        out: out.view_mut(T::DTYPE, &[t, c * d]),
    };
    BE.gather_rows(args.validate().unwrap()).unwrap();
    BE.download_vec(&out, t * c * d).unwrap()
}

fn expect_rows<T: Element + bytemuck::NoUninit>(
    got: &[T],
    table: &[T],
    rows: &[i64],
    d: usize,
) -> Result<(), TestCaseError> {
    for (i, &row) in rows.iter().enumerate() {
        let g: &[u8] = bytemuck::cast_slice(&got[i * d..(i + 1) * d]);
        let w: &[u8] = bytemuck::cast_slice(&table[row as usize * d..(row as usize + 1) * d]);
        prop_assert_eq!(g, w, "slot {} row {}", i, row);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gather_f32_rows_bitwise((r, d, t, c, table, rows) in arb_gather(any::<u32>().prop_map(f32::from_bits))) {
        let got = gather_dense(TableFormat::F32, r, d, t, c, &table, &rows);
        expect_rows(&got, &table, &rows, d)?;
    }

    #[test]
    fn gather_bf16_rows_bitwise((r, d, t, c, table, rows) in arb_gather(any::<u16>().prop_map(bf16::from_bits))) {
        let got = gather_dense(TableFormat::BF16, r, d, t, c, &table, &rows);
        expect_rows(&got, &table, &rows, d)?;
    }

    #[test]
    fn gather_f16_rows_bitwise((r, d, t, c, table, rows) in arb_gather(any::<u16>().prop_map(f16::from_bits))) {
        let got = gather_dense(TableFormat::F16, r, d, t, c, &table, &rows);
        expect_rows(&got, &table, &rows, d)?;
    }

    /// fp8 rows: element `i` of a gathered row is `fp8_dequant(byte i, scale byte D + i/32)` of the
    /// table row, bit for bit (f32 output).
    #[test]
    fn gather_fp8_rows_decode_elementwise(
        (r, blocks, t, c) in (1usize..4, 1usize..3, 0usize..4, 1usize..4),
        seed in proptest::collection::vec(any::<u8>(), 4 * 3 * 33),
        row_seed in proptest::collection::vec(any::<u16>(), 16),
    ) {
        let d = 32 * blocks;
        let w = d + blocks;
        let table = &seed[..r * w];
        let rows: Vec<i64> = row_seed[..t * c].iter().map(|&x| (x as usize % r) as i64).collect();
        let tb = BE.upload_slice(table).unwrap();
        let rb = BE.upload_slice(&rows).unwrap();
        let mut out = BE.filled(t * c * d, 0.0f32).unwrap();
        let args = GatherRows {
            table: tb.view(DType::U8, &[r, w]),
            format: TableFormat::Fp8E4m3Ue8m0,
            rows: rb.view(DType::I64, &[t, c]),
            out: out.view_mut(DType::F32, &[t, c * d]),
        };
        BE.gather_rows(args.validate().unwrap()).unwrap();
        let got: Vec<f32> = BE.download_vec(&out, t * c * d).unwrap();
        for (s, &row) in rows.iter().enumerate() {
            let tr = &table[row as usize * w..(row as usize + 1) * w];
            for i in 0..d {
                let want = fp8_dequant(tr[i], tr[d + i / 32]);
                prop_assert_eq!(got[s * d + i].to_bits(), want.to_bits(), "slot {} elem {}", s, i);
            }
        }
    }
}
