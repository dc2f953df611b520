//! Issue 16 item 9: below each op's measured work threshold the CPU op runs on the calling thread
//! (no pool dispatch), at or above it on the pool. Observed through [`Pool::dispatches`] of a
//! dedicated 2-thread pool, so the assertions hold on any machine; speed itself is measured by
//! `moehal bench`, never here. Each case also checks the serial result against the pooled one
//! (same bytes: the split never changes the arithmetic).

use half::bf16;
use moehal_core::engram::toy;
use moehal_core::ops::{RouterConfig, Scoring};
use moehal_cpu::engram::{self, GatherOut, Table};
use moehal_cpu::grouped_gemm::{self, Bf16Kernel, GemmArgs, Layout, Weights};
use moehal_cpu::quant::{self, ScalesMut};
use moehal_cpu::{moe_combine, moe_permute, router_topk, swiglu, Kernels, Pool};

fn pool() -> Pool {
    Pool::new(2).unwrap()
}

/// Dispatches `f` made on `p`.
fn dispatches(p: &Pool, f: impl FnOnce()) -> u64 {
    let before = p.dispatches();
    f();
    p.dispatches() - before
}

fn floats(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

#[test]
fn worth_parallel_needs_two_threads_and_the_threshold() {
    let one = Pool::new(1).unwrap();
    let two = pool();
    assert!(!one.worth_parallel(1 << 30, 1));
    assert!(!two.worth_parallel(99, 100));
    assert!(two.worth_parallel(100, 100));
    // A dispatch is counted.
    assert_eq!(dispatches(&two, || two.install(|| ())), 1);
}

#[test]
fn swiglu_small_is_serial() {
    let kern = Kernels::best();
    let i = 256;
    for (m, pooled) in [
        (1, false),
        (swiglu::SERIAL_BELOW / i - 1, false),
        (swiglu::SERIAL_BELOW / i, true),
    ] {
        let p = pool();
        let h = floats(m * 2 * i, 1);
        let (mut a, mut b) = (vec![0f32; m * i], vec![0f32; m * i]);
        let n = dispatches(&p, || swiglu::swiglu(kern, &p, &h, m, i, None, &mut a).unwrap());
        assert_eq!(n > 0, pooled, "M = {m}");
        swiglu::swiglu(kern, &Pool::new(1).unwrap(), &h, m, i, None, &mut b).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn moe_combine_small_is_serial() {
    let kern = Kernels::best();
    let (h, k) = (128, 4);
    let below = moe_combine::SERIAL_BELOW / (k * h);
    for (t, pooled) in [(1, false), (below - 1, false), (below + 1, true)] {
        let p = pool();
        let rows = t * k;
        let y = floats(rows * h, 2);
        let slot: Vec<i64> = (0..rows as i64).rev().collect();
        let w = floats(rows, 3);
        let (mut a, mut b) = (vec![0f32; t * h], vec![0f32; t * h]);
        let n = dispatches(&p, || {
            moe_combine::moe_combine(kern, &p, &y, rows, h, &slot, &w, t, k, &mut a).unwrap()
        });
        assert_eq!(n > 0, pooled, "T = {t}");
        moe_combine::moe_combine(kern, &Pool::new(1).unwrap(), &y, rows, h, &slot, &w, t, k, &mut b).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn moe_permute_small_is_serial() {
    let (k, e) = (8, 16);
    let below = moe_permute::SERIAL_BELOW / k;
    for (t, pooled) in [(1, false), (below - 1, false), (below + 1, true)] {
        let p = pool();
        let ids: Vec<i32> = (0..t * k).map(|s| ((s * 7) % e) as i32).collect();
        let run = |p: &Pool| {
            let (mut ge, mut st, mut sr) = (vec![0i64; e], vec![0i64; t * k], vec![0i64; t * k]);
            moe_permute::moe_permute(p, &ids, t, k, e, &mut ge, &mut st, &mut sr, None).unwrap();
            (ge, st, sr)
        };
        let mut got = None;
        let n = dispatches(&p, || got = Some(run(&p)));
        assert_eq!(n > 0, pooled, "T = {t}");
        assert_eq!(got.unwrap(), run(&Pool::new(1).unwrap()));
    }
}

#[test]
fn router_topk_small_is_serial() {
    let kern = Kernels::best();
    let (e, k) = (64, 4);
    let cfg = RouterConfig {
        topk: k,
        scoring: Scoring::Softmax,
        group: None,
        renormalize: true,
        routed_scaling_factor: 1.0,
    };
    let below = router_topk::SERIAL_BELOW;
    for (t, pooled) in [(1, false), (below - 1, false), (below + 1, true)] {
        let p = pool();
        let logits = floats(t * e, 4);
        let run = |p: &Pool| {
            let (mut ids, mut w) = (vec![0i32; t * k], vec![0f32; t * k]);
            router_topk::router_topk(kern, p, &cfg, &logits, t, e, None, &mut ids, &mut w, None).unwrap();
            (ids, w)
        };
        let mut got = None;
        let n = dispatches(&p, || got = Some(run(&p)));
        assert_eq!(n > 0, pooled, "T = {t}");
        assert_eq!(got.unwrap(), run(&Pool::new(1).unwrap()));
    }
}

#[test]
fn engram_hash_gather_lookup_small_are_serial() {
    let layer = toy::layer().unwrap();
    let c = layer.columns();
    let r = layer.rows() as usize;
    let d = 32;
    let table: Vec<u8> = (0..r * d * 4).map(|i| (i * 31 % 251) as u8).collect();
    let tab = Table::Plain {
        data: &table,
        row_bytes: d * 4,
        rows: r,
    };
    let hash_below = engram::HASH_SERIAL_BELOW;
    for (t, pooled) in [(1, false), (hash_below - 1, false), (hash_below, true)] {
        let p = pool();
        let ids: Vec<i64> = (0..t as i64).map(|x| x * 7 % 50).collect();
        let (mut a, mut b) = (vec![0i64; t * c], vec![0i64; t * c]);
        let n = dispatches(&p, || {
            engram::engram_hash(Kernels::best(), &p, &layer, &ids, None, None, &[], &mut a).unwrap()
        });
        assert_eq!(n > 0, pooled, "hash T = {t}");
        engram::engram_hash(
            Kernels::best(),
            &Pool::new(1).unwrap(),
            &layer,
            &ids,
            None,
            None,
            &[],
            &mut b,
        )
        .unwrap();
        assert_eq!(a, b);
    }
    let gather_below = engram::GATHER_SERIAL_BELOW / c;
    for (t, pooled) in [(1, false), (gather_below - 1, false), (gather_below + 1, true)] {
        let p = pool();
        let rows: Vec<i64> = (0..(t * c) as i64).map(|x| x * 13 % r as i64).collect();
        let (mut a, mut b) = (vec![0u8; t * c * d * 4], vec![0u8; t * c * d * 4]);
        let n = dispatches(&p, || {
            engram::gather_rows(&p, tab, &rows, c, GatherOut::Bytes(&mut a)).unwrap()
        });
        assert_eq!(n > 0, pooled, "gather T = {t}");
        engram::gather_rows(&Pool::new(1).unwrap(), tab, &rows, c, GatherOut::Bytes(&mut b)).unwrap();
        assert_eq!(a, b);
    }
    let lookup_below = engram::LOOKUP_SERIAL_BELOW;
    for (t, pooled) in [(1, false), (lookup_below - 1, false), (lookup_below + 1, true)] {
        let p = pool();
        let ids: Vec<i64> = (0..t as i64).map(|x| x * 11 % 50).collect();
        let (mut a, mut b) = (vec![0u8; t * c * d * 4], vec![0u8; t * c * d * 4]);
        let n = dispatches(&p, || {
            engram::engram_lookup(
                Kernels::best(),
                &p,
                &layer,
                &ids,
                None,
                None,
                &[],
                tab,
                GatherOut::Bytes(&mut a),
            )
            .unwrap()
        });
        assert_eq!(n > 0, pooled, "lookup T = {t}");
        engram::engram_lookup(
            Kernels::best(),
            &Pool::new(1).unwrap(),
            &layer,
            &ids,
            None,
            None,
            &[],
            tab,
            GatherOut::Bytes(&mut b),
        )
        .unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn quantize_small_is_serial() {
    let k = 2048;
    let below = quant::QUANT_SERIAL_BELOW / k;
    for (m, pooled) in [(1, false), (below - 1, false), (below, true)] {
        let x: Vec<bf16> = floats(m * k, 5).into_iter().map(bf16::from_f32).collect();
        let kb = k.div_ceil(128);
        let fp8 = |p: &Pool| {
            let (mut q, mut s, mut e) = (vec![0u8; m * k], vec![0f32; m * kb], vec![0u8; m * kb]);
            quant::quantize_fp8(p, &x, m, k, &mut q, ScalesMut::F32(&mut s)).unwrap();
            let mut q2 = vec![0u8; m * k];
            quant::quantize_fp8(p, &x, m, k, &mut q2, ScalesMut::E8m0(&mut e)).unwrap();
            (q, s, q2, e)
        };
        let int8 = |p: &Pool| {
            let (mut q, mut s) = (vec![0i8; m * k], vec![0f32; m]);
            quant::quantize_int8(p, &x, m, k, &mut q, &mut s).unwrap();
            (q, s)
        };
        let p = pool();
        let mut got = None;
        let n = dispatches(&p, || got = Some(fp8(&p)));
        assert_eq!(n > 0, pooled, "fp8 M = {m}");
        let (q, s, q2, e) = got.unwrap();
        let (rq, rs, rq2, re) = fp8(&Pool::new(1).unwrap());
        assert!(q == rq && q2 == rq2 && e == re);
        assert_eq!(
            s.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            rs.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let mut got = None;
        let n = dispatches(&p, || got = Some(int8(&p)));
        assert_eq!(n > 0, pooled, "int8 M = {m}");
        assert_eq!(got.unwrap(), int8(&Pool::new(1).unwrap()));
    }
}

#[test]
fn grouped_gemm_decode_small_is_serial() {
    let kern = Kernels::best();
    let (k, g) = (256, 2);
    // Rows 1 (one token's expert row) up to the threshold, at N = 64.
    let n = 64;
    let below = grouped_gemm::SERIAL_BELOW / (n * k);
    for (m, pooled) in [(1, false), (below - 1, false), (below + 1, true)] {
        let x = floats(m * k, 6);
        let w = floats(g * n * k, 7);
        let ge = [(m / 2) as i64, m as i64];
        let a = GemmArgs {
            x: &x,
            m,
            k,
            n,
            group_end: &ge,
            w: Weights::Raw(&w, Layout::NK),
            row_scale: None,
            bias: None,
        };
        let p = pool();
        let (mut y1, mut y2) = (vec![0f32; m * n], vec![0f32; m * n]);
        let c = dispatches(&p, || {
            grouped_gemm::grouped_gemm_with(kern, &p, &a, &mut y1, Bf16Kernel::Fma).unwrap()
        });
        assert_eq!(c > 0, pooled, "M = {m}");
        grouped_gemm::grouped_gemm_with(kern, &Pool::new(1).unwrap(), &a, &mut y2, Bf16Kernel::Fma).unwrap();
        assert_eq!(y1, y2);
    }
}

/// The AMX tile paths (bf16 `grouped_gemm_tiles`, int8 `grouped_gemm_s8`) follow the float path's
/// rule: multiply-adds below `grouped_gemm::SERIAL_BELOW` stay on the caller (they dispatched
/// whenever the pool had two threads). Run on the emulated tile engine, so on any machine.
#[test]
fn amx_tile_paths_small_are_serial() {
    use moehal_cpu::amx_int8::{self, S8TileWeights};
    use moehal_cpu::simd::amx::TileEngine;
    let (k, g, n) = (256, 2, 64);
    let below = grouped_gemm::SERIAL_BELOW / (n * k);
    for (m, pooled) in [(2, false), (below - 1, false), (below + 1, true)] {
        let ge = [(m / 2) as i64, m as i64];
        let x: Vec<bf16> = floats(m * k, 8).into_iter().map(bf16::from_f32).collect();
        let w: Vec<bf16> = floats(g * n * k, 9).into_iter().map(bf16::from_f32).collect();
        let a = GemmArgs {
            x: &x,
            m,
            k,
            n,
            group_end: &ge,
            w: Weights::Raw(&w, Layout::NK),
            row_scale: None,
            bias: None,
        };
        let p = pool();
        let (mut y1, mut y2) = (vec![bf16::ZERO; m * n], vec![bf16::ZERO; m * n]);
        let c = dispatches(&p, || {
            grouped_gemm::grouped_gemm_tiles(TileEngine::Emulated, &p, &a, &mut y1).unwrap()
        });
        assert_eq!(c > 0, pooled, "bf16 tiles M = {m}");
        grouped_gemm::grouped_gemm_tiles(TileEngine::Emulated, &Pool::new(1).unwrap(), &a, &mut y2).unwrap();
        assert_eq!(y1, y2);

        let xi: Vec<i8> = (0..m * k).map(|i| (i * 37 % 255) as u8 as i8).collect();
        let wi: Vec<i8> = (0..g * n * k).map(|i| (i * 53 % 253) as u8 as i8).collect();
        let tw = S8TileWeights::pack(&wi, Layout::NK, g, n, k).unwrap();
        let (mut z1, mut z2) = (vec![0i32; m * n], vec![0i32; m * n]);
        let c = dispatches(&p, || {
            amx_int8::grouped_gemm_s8(TileEngine::Emulated, Some(&p), &xi, m, &ge, &tw, &mut z1).unwrap()
        });
        assert_eq!(c > 0, pooled, "int8 tiles M = {m}");
        amx_int8::grouped_gemm_s8(TileEngine::Emulated, None, &xi, m, &ge, &tw, &mut z2).unwrap();
        assert_eq!(z1, z2);
    }
}

/// The serial path of `moe_permute` (small shapes) against the definition (OPS.md §3): rows
/// grouped by expert, within an expert in `(t, j)` order, dropped slots (`-1`) get no row, and
/// each routed row is its token's `x` row; for shapes with drops and every token count up to the
/// threshold's neighbourhood the pooled and serial paths agree too.
#[test]
fn moe_permute_serial_matches_the_definition() {
    let (k, e, rb) = (4usize, 6usize, 12usize);
    for t in [1usize, 3, 17, moe_permute::SERIAL_BELOW / k + 5] {
        let ids: Vec<i32> = (0..t * k)
            .map(|s| {
                let v = (s * 5 + s / 7) % (e + 1);
                if v == e {
                    -1
                } else {
                    v as i32
                }
            })
            .collect();
        let x: Vec<u8> = (0..t * rb).map(|i| (i * 31 % 251) as u8).collect();
        // The definition.
        let mut want_sr = vec![-1i64; t * k];
        let mut want_st = Vec::new();
        let mut want_ge = vec![0i64; e];
        let mut want_xp = Vec::new();
        for (g, end) in want_ge.iter_mut().enumerate() {
            for (s, &id) in ids.iter().enumerate() {
                if id == g as i32 {
                    want_sr[s] = want_st.len() as i64;
                    want_st.push((s / k) as i64);
                    want_xp.extend_from_slice(&x[s / k * rb..][..rb]);
                }
            }
            *end = want_st.len() as i64;
        }
        let routed = want_st.len();
        for p in [Pool::new(1).unwrap(), pool()] {
            let (mut ge, mut st, mut sr) = (vec![0i64; e], vec![7i64; t * k], vec![0i64; t * k]);
            let mut xp = vec![0u8; t * k * rb];
            moe_permute::moe_permute(&p, &ids, t, k, e, &mut ge, &mut st, &mut sr, Some((&x, rb, &mut xp))).unwrap();
            assert_eq!(ge, want_ge, "T = {t}");
            assert_eq!(sr, want_sr, "T = {t}");
            assert_eq!(&st[..routed], &want_st[..], "T = {t}");
            assert_eq!(&xp[..routed * rb], &want_xp[..], "T = {t}");
        }
    }
}
