//! Running an op on the reference backend from host values, with poisoned outputs: the one
//! harness of the core crate's router and grouped GEMM tests (`reference_vectors.rs`,
//! `properties.rs`, `router_ties_and_hash.rs`). The backends' conformance against the reference
//! goes through the test kit (`moehal-testkit`) instead.
#![allow(dead_code)]

use moehal_core::ops::{GroupedGemm, RouterConfig, RouterTopk, WeightLayout};
use moehal_core::{Backend, BackendExt, DType, Float, Reference};

/// The backend under test.
pub const BE: Reference = Reference;

/// Route `logits` (`[T, E]` f32) with an optional `[E]` bias: (ids, weights, counts), the
/// outputs poisoned (`i32::MIN`, NaN, `i64::MIN`) before the run.
pub fn route(cfg: RouterConfig, e: usize, logits: &[f32], bias: Option<&[f32]>) -> (Vec<i32>, Vec<f32>, Vec<i64>) {
    let t = logits.len() / e;
    let k = cfg.topk;
    let lb = BE.upload_slice(logits).unwrap();
    let bb = bias.map(|b| BE.upload_slice(b).unwrap());
    let mut ids = BE.filled(t * k, i32::MIN).unwrap();
    let mut w = BE.filled(t * k, f32::NAN).unwrap();
    let mut counts = BE.filled(e, i64::MIN).unwrap();
    let args = RouterTopk {
        config: cfg,
        logits: lb.view(DType::F32, &[t, e]),
        bias: bb.as_ref().map(|b| b.view(DType::F32, &[e])),
        ids: ids.view_mut(DType::I32, &[t, k]),
        weights: w.view_mut(DType::F32, &[t, k]),
        expert_counts: Some(counts.view_mut(DType::I64, &[e])),
    };
    BE.router_topk(args.validate().unwrap()).unwrap();
    (
        BE.download_vec(&ids, t * k).unwrap(),
        BE.download_vec(&w, t * k).unwrap(),
        BE.download_vec(&counts, e).unwrap(),
    )
}

/// NK `[G, N, K]` -> KN `[G, K, N]`.
pub fn to_kn(w: &[f32], g: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for gi in 0..g {
        for ni in 0..n {
            for ki in 0..k {
                out[(gi * k + ki) * n + ni] = w[(gi * n + ni) * k + ki];
            }
        }
    }
    out
}

/// Run grouped_gemm in dtype T (the f32 inputs rounded to T; `w` in `layout`); returns y (M*N)
/// as f32, NaN where unwritten.
pub fn gemm<T: Float>(
    x: &[f32],
    w: &[f32],
    layout: WeightLayout,
    (m, n, k, g): (usize, usize, usize, usize),
    ends: &[i64],
    bias: Option<&[f32]>,
    scale: Option<&[f32]>,
) -> Vec<f32> {
    let cv = |v: &[f32]| v.iter().map(|&a| T::from_f32(a)).collect::<Vec<T>>();
    let xb = BE.upload_slice(&cv(x)).unwrap();
    let wb = BE.upload_slice(&cv(w)).unwrap();
    let eb = BE.upload_slice(ends).unwrap();
    let bb = bias.map(|b| BE.upload_slice(&cv(b)).unwrap());
    let sb = scale.map(|s| BE.upload_slice(s).unwrap());
    let mut y = BE.filled(m * n, T::from_f32(f32::NAN)).unwrap();
    let ws = match layout {
        WeightLayout::NK => [g, n, k],
        WeightLayout::KN => [g, k, n],
    };
    let args = GroupedGemm {
        x: xb.view(T::DTYPE, &[m, k]),
        w: wb.view(T::DTYPE, &ws),
        layout,
        group_end: eb.view(DType::I64, &[g]),
        row_scale: sb.as_ref().map(|b| b.view(DType::F32, &[m])),
        bias: bb.as_ref().map(|b| b.view(T::DTYPE, &[g, n])),
        y: y.view_mut(T::DTYPE, &[m, n]),
    };
    BE.grouped_gemm(args.validate().unwrap()).unwrap();
    BE.download_vec::<T>(&y, m * n)
        .unwrap()
        .into_iter()
        .map(Float::to_f32)
        .collect()
}
