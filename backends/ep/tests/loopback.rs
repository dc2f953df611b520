//! ep_dispatch / ep_combine over the in-process loopback communicator (threads as ranks), against
//! the single-process path of OPS.md §3 (`moe_permute → experts → moe_combine`) on the reference
//! backend: equal bytes, for every rank count, with dropped slots, a repeated expert in a token,
//! tokens whose experts all live on one rank, ranks with no tokens and ranks that receive nothing.

use moehal_core::ops::{GroupedGemm, MoeCombine, MoePermute, WeightLayout};
use moehal_core::{Backend, BackendExt, DType, Reference};
use moehal_ep::selftest::{self, Tokens};
use moehal_ep::{ep_combine, ep_dispatch, Comm, DispatchArgs, ExpertMap, LoopbackComm};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One rank's tokens.
#[derive(Clone)]
struct RankInput {
    x: Vec<f32>,
    ids: Vec<i32>,
    weights: Vec<f32>,
}

impl RankInput {
    fn tokens(&self, k: usize) -> usize {
        self.ids.len() / k
    }
}

fn bytes(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

fn tokens(r: &RankInput) -> Tokens {
    Tokens {
        x: r.x.clone(),
        ids: r.ids.clone(),
        weights: r.weights.clone(),
    }
}

/// What one rank saw: its dispatched rows, group_end, and the combined output.
struct RankResult {
    x_local: Vec<f32>,
    group_end: Vec<i64>,
    out: Vec<f32>,
    rows_sent: usize,
}

/// EP: each thread a rank, through `selftest::run_rank` (dispatch, the stand-in expert, combine).
fn expert_parallel(inputs: &[RankInput], map: &ExpertMap, k: usize, h: usize) -> Vec<RankResult> {
    let comms = LoopbackComm::group(inputs.len());
    std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .iter()
            .zip(inputs)
            .map(|(c, inp)| {
                s.spawn(move || {
                    let (out, group_end, x_local) = selftest::run_rank(c, map, k, h, &tokens(inp)).unwrap();
                    // Rows sent, from a second dispatch of the same tokens.
                    let xb = bytes(&inp.x);
                    let d = ep_dispatch(
                        c,
                        &DispatchArgs {
                            x: &xb,
                            dtype: DType::F32,
                            tokens: inp.tokens(k),
                            hidden: h,
                            ids: &inp.ids,
                            weights: &inp.weights,
                            topk: k,
                            map,
                        },
                    )
                    .unwrap();
                    let b = d.handle.bytes();
                    assert_eq!(b.dispatch_sent, (b.rows_sent * (h * 4 + k * 4)) as u64);
                    RankResult {
                        x_local,
                        group_end,
                        out,
                        rows_sent: b.rows_sent,
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn check_equal(inputs: &[RankInput], map: &ExpertMap, k: usize, h: usize) -> Vec<RankResult> {
    let all: Vec<Tokens> = inputs.iter().map(tokens).collect();
    let want = selftest::single_process(&all, map.experts(), k, h).unwrap();
    let got = expert_parallel(inputs, map, k, h);
    let all: Vec<f32> = got.iter().flat_map(|r| r.out.clone()).collect();
    assert_eq!(all.len(), want.len());
    for (i, (a, b)) in all.iter().zip(&want).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "element {i}: EP {a} vs single process {b}");
    }
    got
}

/// Token `t` of rank `r`, column `c`: a value that names them.
fn row(r: usize, t: usize, h: usize) -> Vec<f32> {
    (0..h).map(|c| (100 * r + 10 * t) as f32 + c as f32 * 0.25).collect()
}

#[test]
fn hand_case_order_dedup_and_drops() {
    // E = 4 on 2 ranks: rank 0 holds experts 0, 1; rank 1 holds 2, 3. k = 3, H = 2.
    let (k, h) = (3, 2);
    let map = ExpertMap::contiguous(4, 2).unwrap();
    let r0 = RankInput {
        x: [row(0, 0, h), row(0, 1, h), row(0, 2, h)].concat(),
        // t0: experts on both ranks; t1: one dropped slot, expert 2 twice; t2: all on rank 0.
        ids: vec![1, 0, 3, -1, 2, 2, 0, 1, -1],
        weights: vec![0.5, 0.25, 0.125, 9.0, 0.75, 0.0625, 1.0, 2.0, 7.0],
    };
    let r1 = RankInput {
        x: [row(1, 0, h), row(1, 1, h)].concat(),
        // t0: one routed slot; t1: every slot dropped.
        ids: vec![3, -1, -1, -1, -1, -1],
        weights: vec![1.5, 3.0, 3.0, 3.0, 3.0, 3.0],
    };
    let got = check_equal(&[r0.clone(), r1.clone()], &map, k, h);
    // Rank 0: local 0 (expert 0) gets (r0 t0 j1), (r0 t2 j0); local 1 (expert 1): (r0 t0 j0), (r0 t2 j1).
    assert_eq!(got[0].group_end, vec![2, 4]);
    assert_eq!(
        got[0].x_local,
        [row(0, 0, h), row(0, 2, h), row(0, 0, h), row(0, 2, h)].concat()
    );
    // Rank 1: local 0 (expert 2): (r0 t1 j1), (r0 t1 j2); local 1 (expert 3): (r0 t0 j2), (r1 t0 j0).
    assert_eq!(got[1].group_end, vec![2, 4]);
    assert_eq!(
        got[1].x_local,
        [row(0, 1, h), row(0, 1, h), row(0, 0, h), row(1, 0, h)].concat()
    );
    // Rank 0 sends t0 to both ranks, t1 once to rank 1 (two slots there), t2 once to itself;
    // rank 1 sends its t0 to itself and nothing for t1.
    assert_eq!(got[0].rows_sent, 4);
    assert_eq!(got[1].rows_sent, 1);
    // Rank 1's all-dropped token is zero.
    assert_eq!(&got[1].out[h..], &[0.0, 0.0]);
}

#[test]
fn ranks_that_receive_nothing_and_ranks_without_tokens() {
    let (k, h) = (2, 3);
    let map = ExpertMap::contiguous(8, 4).unwrap();
    // Every token routes into rank 0's slice {0, 1}; rank 2 has no tokens at all.
    let mk = |r: usize, t_n: usize| RankInput {
        x: (0..t_n).flat_map(|t| row(r, t, h)).collect(),
        ids: (0..t_n).flat_map(|t| [(t % 2) as i32, 1 - (t % 2) as i32]).collect(),
        weights: (0..t_n * k).map(|i| 0.5 + i as f32).collect(),
    };
    let inputs = [mk(0, 2), mk(1, 3), mk(2, 0), mk(3, 1)];
    let got = check_equal(&inputs, &map, k, h);
    assert_eq!(got[0].group_end, vec![6, 12]);
    for r in &got[1..] {
        assert!(r.x_local.is_empty());
        assert_eq!(r.group_end, vec![0, 0]);
    }
    assert!(got[2].out.is_empty());
}

#[test]
fn random_routing_on_1_to_5_ranks() {
    for r_n in 1..=5 {
        let comms = LoopbackComm::group(r_n);
        std::thread::scope(|s| {
            let hs: Vec<_> = comms
                .iter()
                .map(|c| s.spawn(move || selftest::check_seeds(c, 0..16).unwrap()))
                .collect();
            let compared: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
            assert!(compared > 0, "{r_n} ranks compared nothing");
        });
    }
}

/// The seeded problems cover what they claim: dropped slots, repeated experts in a token, ranks
/// without tokens, and (skewed seeds) ranks that receive nothing.
#[test]
fn seeded_problems_cover_the_edge_cases() {
    let (mut dropped, mut repeated, mut no_tokens, mut skewed) = (false, false, false, false);
    for seed in 0..16 {
        let (map, k, _, all) = selftest::problem(seed, 4).unwrap();
        for r in &all {
            no_tokens |= r.ids.is_empty();
            dropped |= r.ids.contains(&-1);
            for t in r.ids.chunks(k) {
                let mut v: Vec<i32> = t.iter().copied().filter(|&i| i >= 0).collect();
                let n = v.len();
                v.sort();
                v.dedup();
                repeated |= v.len() < n;
            }
        }
        let routed: Vec<i32> = all
            .iter()
            .flat_map(|r| r.ids.iter().copied())
            .filter(|&i| i >= 0)
            .collect();
        skewed |= !routed.is_empty() && routed.iter().all(|&i| map.place(i as usize).unwrap().0 == 0);
    }
    assert!(dropped && repeated && no_tokens && skewed);
}

/// The real expert matmul: `grouped_gemm` on each rank's local rows and local `group_end`
/// (weights of its experts only) gives the single-process layer's bytes on the reference
/// backend, whose rows do not depend on their neighbours.
#[test]
fn grouped_gemm_on_local_experts_matches_single_process() {
    let (e_n, r_n, k, h) = (6, 3, 2, 8);
    let map = ExpertMap::contiguous(e_n, r_n).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // Expert e: [N = H, K = H] NK weights (a layer maps H to H).
    let w: Vec<f32> = (0..e_n * h * h).map(|_| rng.gen_range(-0.5f32..0.5)).collect();
    let inputs: Vec<RankInput> = (0..r_n)
        .map(|r| {
            let t = [3, 0, 4][r];
            RankInput {
                x: (0..t * h).map(|_| rng.gen_range(-1.0f32..1.0)).collect(),
                ids: (0..t * k).map(|_| rng.gen_range(-1..e_n as i32)).collect(),
                weights: (0..t * k).map(|_| rng.gen_range(0.0f32..1.0)).collect(),
            }
        })
        .collect();
    let be = Reference::new();
    let gemm = |x: &[f32], ge: &[i64], wsl: &[f32]| -> Vec<f32> {
        let m = x.len() / h;
        let g = ge.len();
        if m == 0 {
            return Vec::new();
        }
        let xb = be.upload_slice(x).unwrap();
        let gb = be.upload_slice(ge).unwrap();
        let wb = be.upload_slice(wsl).unwrap();
        let mut yb = be.alloc(m * h * 4).unwrap();
        let args = GroupedGemm {
            x: xb.view(DType::F32, &[m, h]),
            w: wb.view(DType::F32, &[g, h, h]),
            layout: WeightLayout::NK,
            group_end: gb.view(DType::I64, &[g]),
            row_scale: None,
            bias: None,
            y: yb.view_mut(DType::F32, &[m, h]),
        };
        be.grouped_gemm(args.validate().unwrap()).unwrap();
        be.download_vec(&yb, m * h).unwrap()
    };
    // Single process.
    let x: Vec<f32> = inputs.iter().flat_map(|r| r.x.clone()).collect();
    let ids: Vec<i32> = inputs.iter().flat_map(|r| r.ids.clone()).collect();
    let wt: Vec<f32> = inputs.iter().flat_map(|r| r.weights.clone()).collect();
    let t = ids.len() / k;
    let (xb, idb) = (be.upload_slice(&x).unwrap(), be.upload_slice(&ids).unwrap());
    let (mut ge, mut st, mut sr, mut xp) = (
        be.alloc(e_n * 8).unwrap(),
        be.alloc(t * k * 8).unwrap(),
        be.alloc(t * k * 8).unwrap(),
        be.alloc(t * k * h * 4).unwrap(),
    );
    let args = MoePermute {
        num_experts: e_n,
        ids: idb.view(DType::I32, &[t, k]),
        x: Some(xb.view(DType::F32, &[t, h])),
        group_end: ge.view_mut(DType::I64, &[e_n]),
        src_token: st.view_mut(DType::I64, &[t * k]),
        slot_row: sr.view_mut(DType::I64, &[t, k]),
        x_perm: Some(xp.view_mut(DType::F32, &[t * k, h])),
    };
    be.moe_permute(args.validate().unwrap()).unwrap();
    let y = gemm(
        &be.download_vec::<f32>(&xp, t * k * h).unwrap(),
        &be.download_vec::<i64>(&ge, e_n).unwrap(),
        &w,
    );
    let yb = be.upload_slice(&y).unwrap();
    let wtb = be.upload_slice(&wt).unwrap();
    let mut ob = be.alloc(t * h * 4).unwrap();
    let args = MoeCombine {
        y_perm: yb.view(DType::F32, &[t * k, h]),
        slot_row: sr.view(DType::I64, &[t, k]),
        weights: wtb.view(DType::F32, &[t, k]),
        out: ob.view_mut(DType::F32, &[t, h]),
    };
    be.moe_combine(args.validate().unwrap()).unwrap();
    let want: Vec<f32> = be.download_vec(&ob, t * h).unwrap();
    // EP.
    let comms = LoopbackComm::group(r_n);
    let got: Vec<f32> = std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .iter()
            .zip(&inputs)
            .map(|(c, inp)| {
                let (w, map, gemm) = (&w, &map, &gemm);
                s.spawn(move || {
                    let xb = bytes(&inp.x);
                    let d = ep_dispatch(
                        c,
                        &DispatchArgs {
                            x: &xb,
                            dtype: DType::F32,
                            tokens: inp.tokens(k),
                            hidden: h,
                            ids: &inp.ids,
                            weights: &inp.weights,
                            topk: k,
                            map,
                        },
                    )
                    .unwrap();
                    let local_w: Vec<f32> = map
                        .local_experts(c.rank())
                        .iter()
                        .flat_map(|&e| w[e * h * h..(e + 1) * h * h].to_vec())
                        .collect();
                    let y = gemm(&bytemuck::pod_collect_to_vec::<u8, f32>(&d.x), &d.group_end, &local_w);
                    let (out, _) = ep_combine(c, &Reference::new(), &d.handle, &bytes(&y), None).unwrap();
                    bytemuck::pod_collect_to_vec::<u8, f32>(&out)
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(got.len(), want.len());
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(want.iter().any(|&v| v != 0.0));
}

#[test]
fn bad_arguments_are_errors() {
    let comms = LoopbackComm::group(1);
    let map = ExpertMap::contiguous(4, 1).unwrap();
    let x = vec![0u8; 2 * 4 * 4];
    let args = DispatchArgs {
        x: &x,
        dtype: DType::F32,
        tokens: 2,
        hidden: 4,
        ids: &[0, 4],
        weights: &[1.0, 1.0],
        topk: 1,
        map: &map,
    };
    let e = ep_dispatch(&comms[0], &args).unwrap_err().to_string();
    assert!(e.contains("id 4"), "{e}");
    let e = ep_dispatch(&comms[0], &DispatchArgs { ids: &[0, -2], ..args }).unwrap_err();
    assert!(e.to_string().contains("id -2"));
    let e = ep_dispatch(
        &comms[0],
        &DispatchArgs {
            x: &x[1..],
            ids: &[0, 1],
            ..args
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("`x`"));
    let two = ExpertMap::contiguous(4, 2).unwrap();
    let e = ep_dispatch(
        &comms[0],
        &DispatchArgs {
            map: &two,
            ids: &[0, 1],
            ..args
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("expert_map"));
    let d = ep_dispatch(&comms[0], &DispatchArgs { ids: &[0, 1], ..args }).unwrap();
    let e = ep_combine(&comms[0], &Reference::new(), &d.handle, &[0u8; 3], None).unwrap_err();
    assert!(e.to_string().contains("y_local"));
}
