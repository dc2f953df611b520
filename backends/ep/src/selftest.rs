//! A self-check of `ep_dispatch` / `ep_combine` on any [`Comm`]: every rank builds the same
//! seeded routing problem for all ranks (random ids with dropped slots and repeated experts,
//! ranks with no tokens), runs its part through EP with an elementwise stand-in for the expert,
//! and compares its tokens' output bit for bit with the single-process path of OPS.md §3
//! (`moe_permute → expert → moe_combine`) on the reference backend. Used by the loopback tests and,
//! under `mpirun`, by the `mpi_selftest` example.

use moehal_core::ops::{MoeCombine, MoePermute};
use moehal_core::{Backend, BackendExt, DType, Error, Reference, Result};

use crate::{ep_combine, ep_dispatch, Comm, DispatchArgs, ExpertMap};

/// The stand-in expert: `y = x·(e + 1.5) − e`, elementwise, so a row's result does not depend on
/// where or with which neighbours it is computed.
pub fn expert_fn(e: usize, x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| v * (e as f32 + 1.5) - e as f32).collect()
}

/// One rank's tokens: `x [T, H]`, `ids [T, k]`, `weights [T, k]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    /// `[T, H]` f32.
    pub x: Vec<f32>,
    /// `[T, k]` ids in `[-1, E)`.
    pub ids: Vec<i32>,
    /// `[T, k]` f32.
    pub weights: Vec<f32>,
}

/// A seeded problem: `(map, k, H, tokens per rank)` for `ranks` ranks. Every fourth seed routes
/// every token into rank 0's experts (the other ranks receive nothing); ranks may have no tokens.
///
/// # Errors
/// [`Error::InvalidArgument`] for `ranks = 0`.
pub fn problem(seed: u64, ranks: usize) -> Result<(ExpertMap, usize, usize, Vec<Tokens>)> {
    let mut z = seed ^ 0x5EED_0000_0000_0000;
    let mut next = move |n: u64| -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = z;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (x ^ (x >> 31)) % n.max(1)
    };
    let per = 1 + next(3) as usize;
    let e_n = ranks * per;
    let k = 1 + next(4) as usize;
    let h = 1 + next(6) as usize;
    let skew = seed % 4 == 3;
    let map = ExpertMap::contiguous(e_n, ranks)?;
    let tokens = (0..ranks)
        .map(|_| {
            let t = next(6) as usize;
            let x = (0..t * h).map(|_| next(1 << 16) as f32 / 4096.0 - 8.0).collect();
            let ids = (0..t * k)
                .map(|_| {
                    let range = if skew { per } else { e_n };
                    next(range as u64 + 1) as i32 - 1
                })
                .collect();
            let weights = (0..t * k).map(|_| next(1 << 12) as f32 / 2048.0 - 1.0).collect();
            Tokens { x, ids, weights }
        })
        .collect();
    Ok((map, k, h, tokens))
}

/// Single process: all ranks' tokens concatenated, `moe_permute → expert_fn → moe_combine` on the
/// reference backend. Returns `[ΣT, H]`.
///
/// # Errors
/// The reference's errors (bad ids).
pub fn single_process(all: &[Tokens], e_n: usize, k: usize, h: usize) -> Result<Vec<f32>> {
    let be = Reference::new();
    let x: Vec<f32> = all.iter().flat_map(|r| r.x.iter().copied()).collect();
    let ids: Vec<i32> = all.iter().flat_map(|r| r.ids.iter().copied()).collect();
    let w: Vec<f32> = all.iter().flat_map(|r| r.weights.iter().copied()).collect();
    let t = ids.len() / k;
    if t == 0 {
        return Ok(Vec::new());
    }
    let xb = be.upload_slice(&x)?;
    let idb = be.upload_slice(&ids)?;
    let mut ge = be.alloc(e_n * 8)?;
    let mut st = be.alloc(t * k * 8)?;
    let mut sr = be.alloc(t * k * 8)?;
    let mut xp = be.alloc(t * k * h * 4)?;
    let args = MoePermute {
        num_experts: e_n,
        ids: idb.view(DType::I32, &[t, k]),
        x: Some(xb.view(DType::F32, &[t, h])),
        group_end: ge.view_mut(DType::I64, &[e_n]),
        src_token: st.view_mut(DType::I64, &[t * k]),
        slot_row: sr.view_mut(DType::I64, &[t, k]),
        x_perm: Some(xp.view_mut(DType::F32, &[t * k, h])),
    };
    be.moe_permute(args.validate()?)?;
    let ge: Vec<i64> = be.download_vec(&ge, e_n)?;
    let xp: Vec<f32> = be.download_vec(&xp, t * k * h)?;
    let mut y = vec![0f32; t * k * h];
    let mut start = 0usize;
    for (g, &end) in ge.iter().enumerate() {
        for r in start..end as usize {
            y[r * h..(r + 1) * h].copy_from_slice(&expert_fn(g, &xp[r * h..(r + 1) * h]));
        }
        start = end as usize;
    }
    let yb = be.upload_slice(&y)?;
    let wb = be.upload_slice(&w)?;
    let mut out = be.alloc(t * h * 4)?;
    let args = MoeCombine {
        y_perm: yb.view(DType::F32, &[t * k, h]),
        slot_row: sr.view(DType::I64, &[t, k]),
        weights: wb.view(DType::F32, &[t, k]),
        out: out.view_mut(DType::F32, &[t, h]),
    };
    be.moe_combine(args.validate()?)?;
    be.download_vec(&out, t * h)
}

/// This rank's part of the problem through EP: dispatch, `expert_fn` on the local rows by local
/// expert, combine. Returns this rank's `[T, H]` output, its `group_end` and the dispatched rows.
///
/// # Errors
/// The EP and engine errors.
pub fn run_rank(
    comm: &dyn Comm,
    map: &ExpertMap,
    k: usize,
    h: usize,
    mine: &Tokens,
) -> Result<(Vec<f32>, Vec<i64>, Vec<f32>)> {
    let xb: Vec<u8> = bytemuck::cast_slice(&mine.x).to_vec();
    let d = ep_dispatch(
        comm,
        &DispatchArgs {
            x: &xb,
            dtype: DType::F32,
            tokens: mine.ids.len() / k,
            hidden: h,
            ids: &mine.ids,
            weights: &mine.weights,
            topk: k,
            map,
        },
    )?;
    let x_local: Vec<f32> = bytemuck::pod_collect_to_vec(&d.x);
    let globals = map.local_experts(comm.rank());
    let mut y = vec![0f32; x_local.len()];
    let mut start = 0usize;
    for (l, &end) in d.group_end.iter().enumerate() {
        for r in start..end as usize {
            y[r * h..(r + 1) * h].copy_from_slice(&expert_fn(globals[l], &x_local[r * h..(r + 1) * h]));
        }
        start = end as usize;
    }
    let (out, _) = ep_combine(comm, &Reference::new(), &d.handle, bytemuck::cast_slice(&y), None)?;
    Ok((bytemuck::pod_collect_to_vec(&out), d.group_end, x_local))
}

/// Run seeds `seeds` on `comm`: each rank checks its own tokens against the single-process result.
/// Returns the number of output elements this rank compared.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the seed and element at the first difference; EP errors.
pub fn check_seeds(comm: &dyn Comm, seeds: std::ops::Range<u64>) -> Result<usize> {
    let mut compared = 0;
    for seed in seeds {
        let (map, k, h, all) = problem(seed, comm.size())?;
        let me = comm.rank();
        let want = single_process(&all, map.experts(), k, h)?;
        let before: usize = all[..me].iter().map(|r| r.ids.len() / k * h).sum();
        let (got, _, _) = run_rank(comm, &map, k, h, &all[me])?;
        let want = &want[before..before + got.len()];
        if got.len() != all[me].ids.len() / k * h {
            return Err(Error::invalid(
                "ep_selftest",
                "out",
                format!("seed {seed}: {} elements", got.len()),
            ));
        }
        if let Some(i) = got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits()) {
            return Err(Error::invalid(
                "ep_selftest",
                "out",
                format!(
                    "seed {seed}, rank {me}, element {i}: EP {} vs single process {}",
                    got[i], want[i]
                ),
            ));
        }
        compared += got.len();
    }
    Ok(compared)
}
