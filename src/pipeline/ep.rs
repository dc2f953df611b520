//! One MoE layer forward with expert parallelism (docs/EP.md): each rank holds its slice of the
//! routed experts (and the shared experts in full), routes its own tokens, and exchanges rows with
//! `ep_dispatch` / `ep_combine` of `moehal-ep` over any [`Comm`]:
//!
//! `router_topk → ep_dispatch → grouped_gemm gate_up (local experts) → swiglu → grouped_gemm down
//! → shared expert (own tokens) → ep_combine` (the combine runs the backend's `moe_combine` with the
//! shared-expert rows as extra weight-1 terms, as [`super::moe::forward`] does), so the output of
//! each token is the single-process layer's.

use moehal_core::{Backend, BackendExt, DType, Error, Result};
use moehal_ep::{ep_combine, ep_dispatch, Comm, DispatchArgs, EpBytes, ExpertMap};

use super::moe::{routed_ffn, shared_ffn, time_stage, MoeInputs, MoeWeights, RouterInputs, Stage};
use super::{decode_floats, upload_bytes};
use crate::presets::Preset;

/// Result of one expert-parallel forward on one rank.
#[derive(Debug, Clone)]
pub struct EpOutput {
    /// `[T_r, H]` output of this rank's tokens, widened to f32.
    pub out: Vec<f32>,
    /// Per-stage wall times on this rank, in pipeline order (`dispatch` and `combine` include the
    /// packing and the exchange, which waits for the slowest peer).
    pub stages: Vec<Stage>,
    /// Rows and bytes this rank moved.
    pub bytes: EpBytes,
    /// Rows this rank's experts computed (`M`, the local `grouped_gemm` rows).
    pub local_rows: usize,
}

/// The tokens `[start, end)` of `inp` (rank `r` of `R` owns `[r·T/R, (r+1)·T/R)`).
pub fn token_slice(inp: &MoeInputs, p: &Preset, start: usize, end: usize) -> MoeInputs {
    let row = inp.x.len() / inp.tokens.max(1);
    MoeInputs {
        tokens: end - start,
        x: inp.x[start * row..end * row].to_vec(),
        logits: inp.logits[start * p.num_experts..end * p.num_experts].to_vec(),
        bias: inp.bias.clone(),
        hash: inp.hash.as_ref().map(|h| crate::pipeline::moe::HashRoute {
            token_ids: h.token_ids[start..end].to_vec(),
            tid2eid: h.tid2eid.clone(),
            vocab: h.vocab,
        }),
    }
}

/// Bytes per token, summed over all ranks, of every buffer [`forward_ep`] allocates on the
/// backend and the host, plus [`gather_to_root`]'s copies of the output (`es` bytes an element of
/// `dtype`; `k` slots, `S` shared experts a token; rows received sum to `T·k` over the ranks):
/// the rank's input slice ([`super::moe::input_bytes_per_token`]); uploaded logits `[E]` f32;
/// ids and weights `[k]` on the device and the host; dispatch's packed send and receive rows
/// `[k, H]` with 24 bytes of routing data each; the local expert rows `x`, gate_up out, swiglu
/// out, `y` on the device and `y` on the host (`[k, H + 2I + I + H + H]`); the shared expert's
/// uploaded `x` `[H]`, `[2I]`, `[I]` and its rows `[S, H]` on the device and the host; combine's
/// send and receive rows `[k, H]`, its output `[H]` and the f32 output `[H]`; the gathered f32
/// output sent, received and decoded on rank 0 (`3·H·4`). Weights are not counted.
pub fn ep_bytes_per_token(p: &Preset, dtype: DType) -> u64 {
    let es = dtype.size() as u64;
    let (h, i, e, k, s) = (
        p.hidden as u64,
        p.expert_width as u64,
        p.num_experts as u64,
        p.topk as u64,
        p.shared_experts as u64,
    );
    let inputs = super::moe::input_bytes_per_token(p, dtype);
    let routing = e * 4 + 2 * k * 8;
    let dispatch = 2 * k * (h * es + 24);
    let local = k * (h + 2 * i + i + h + h) * es;
    let shared = if s > 0 { (h + 3 * i) * es + 2 * s * h * es } else { 0 };
    let combine = 2 * k * h * es + h * es + h * 4;
    let gather = 3 * h * 4;
    inputs + routing + dispatch + local + shared + combine + gather
}

/// Tokens `[start, end)` of rank `rank` of `ranks` for `tokens` tokens in all.
pub fn rank_tokens(tokens: usize, rank: usize, ranks: usize) -> (usize, usize) {
    (rank * tokens / ranks, (rank + 1) * tokens / ranks)
}

/// Run the layer on this rank: `inp` holds this rank's tokens, `w` the routed experts of
/// `map.local_experts(rank)` (in local-id order, see [`MoeWeights::upload_experts`]) and the
/// shared experts. Collective over `comm`.
///
/// # Errors
/// Op, allocation and engine errors; [`Error::InvalidArgument`] when the map does not fit `p`.
pub fn forward_ep(
    comm: &dyn Comm,
    backend: &dyn Backend,
    p: &Preset,
    dtype: DType,
    map: &ExpertMap,
    w: &MoeWeights,
    inp: &MoeInputs,
) -> Result<EpOutput> {
    let (t, e, k, h, i) = (inp.tokens, p.num_experts, p.topk, p.hidden, p.expert_width);
    if map.experts() != e || map.ranks() != comm.size() {
        return Err(Error::invalid(
            "moe_ep",
            "expert_map",
            format!(
                "map of {} experts on {} ranks for a layer of {e} experts on {} ranks",
                map.experts(),
                map.ranks(),
                comm.size()
            ),
        ));
    }
    let l_n = map.local_count(comm.rank());
    let s = p.shared_experts;
    let es = dtype.size();
    let mut stages = Vec::new();
    let mut timed = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| time_stage(backend, &mut stages, name, f);

    // Routing of this rank's tokens.
    let (mut ids, mut weights) = (vec![0i32; t * k], vec![0f32; t * k]);
    if t > 0 {
        // A hash-routed layer (a checkpoint's `gate.tid2eid`) routes by token id, as `forward`.
        let router = RouterInputs::upload(backend, inp)?;
        let mut idb = backend.alloc(t * k * 4)?;
        let mut wb = backend.alloc(t * k * 4)?;
        backend.synchronize()?;
        timed("router_topk", &mut || router.route(backend, p, t, &mut idb, &mut wb))?;
        ids = backend.download_vec(&idb, t * k)?;
        weights = backend.download_vec(&wb, t * k)?;
    } else {
        timed("router_topk", &mut || Ok(()))?;
    }

    let mut dispatched = None;
    timed("dispatch", &mut || {
        let args = DispatchArgs {
            x: &inp.x,
            dtype,
            tokens: t,
            hidden: h,
            ids: &ids,
            weights: &weights,
            topk: k,
            map,
        };
        dispatched = Some(ep_dispatch(comm, &args)?);
        Ok(())
    })?;
    let d = dispatched.ok_or_else(|| Error::invalid("moe_ep", "dispatch", "no result"))?;
    let m = d.handle.local_rows();

    // Local experts on the local rows (nothing to do for a rank that received no rows).
    let mut y_local = vec![0u8; m * h * es];
    if m > 0 && l_n > 0 {
        let x_local = upload_bytes(backend, &d.x)?;
        let ge = backend.upload_slice(&d.group_end)?;
        let mut hbuf = backend.alloc(m * 2 * i * es)?;
        let mut act = backend.alloc(m * i * es)?;
        let mut yb = backend.alloc(m * h * es)?;
        backend.synchronize()?;
        routed_ffn(
            backend,
            dtype,
            p,
            w,
            x_local.view(dtype, &[m, h]),
            l_n,
            ge.view(DType::I64, &[l_n]),
            (&mut hbuf, &mut act),
            &mut yb,
            &mut timed,
        )?;
        backend.download(&yb, 0, &mut y_local)?;
    } else {
        for name in ["gate_up", "swiglu", "down"] {
            timed(name, &mut || Ok(()))?;
        }
    }

    // Shared experts on this rank's own tokens: rows [S·T, H], row s·T + t.
    let mut shared_rows = vec![0u8; s * t * h * es];
    if s > 0 && t > 0 {
        let x = upload_bytes(backend, &inp.x)?;
        let dense_end = backend.upload_slice(&[t as i64])?;
        let mut hs = backend.alloc(t * 2 * i * es)?;
        let mut as_ = backend.alloc(t * i * es)?;
        let mut ys = backend.alloc(s * t * h * es)?;
        timed("shared_expert", &mut || {
            shared_ffn(
                backend,
                dtype,
                p,
                w,
                x.view(dtype, &[t, h]),
                dense_end.view(DType::I64, &[1]),
                (&mut hs, &mut as_),
                &mut ys,
                0,
            )
        })?;
        backend.download(&ys, 0, &mut shared_rows)?;
    }

    let mut combined = None;
    timed("combine", &mut || {
        let extra = (s > 0).then_some(shared_rows.as_slice());
        combined = Some(ep_combine(comm, backend, &d.handle, &y_local, extra)?);
        Ok(())
    })?;
    let (out, bytes) = combined.ok_or_else(|| Error::invalid("moe_ep", "combine", "no result"))?;
    Ok(EpOutput {
        out: decode_floats(dtype, &out)?,
        stages,
        bytes,
        local_rows: m,
    })
}

/// Gather `mine` from every rank onto rank 0 (one all-to-all-v in which only rank 0 receives).
/// Returns `Some(per-rank bytes)` on rank 0, `None` elsewhere. Collective.
///
/// # Errors
/// The engine's errors.
pub fn gather_to_root(comm: &dyn Comm, mine: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
    let r_n = comm.size();
    let mut lens = vec![0u64; r_n];
    lens[0] = mine.len() as u64;
    let got = comm.all_to_all_u64(&lens)?;
    let mut sc = vec![0usize; r_n];
    sc[0] = mine.len();
    let rc: Vec<usize> = got.iter().map(|&n| n as usize).collect();
    let mut recv = vec![0u8; rc.iter().sum()];
    comm.all_to_all_v(mine, &sc, &mut recv, &rc)?;
    if comm.rank() != 0 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(r_n);
    let mut o = 0;
    for n in rc {
        out.push(recv[o..o + n].to_vec());
        o += n;
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::moe::forward;
    use crate::presets::preset;
    use moehal_ep::LoopbackComm;

    /// On the reference backend (rows computed independently, f64 sums) the EP layer over 1–4
    /// loopback ranks gives the single-process layer's output bit for bit, shared expert included.
    #[test]
    fn ep_layer_equals_single_process_on_the_reference() {
        let p = preset("deepseek-v4-flash").unwrap().scaled_widths(64);
        let p = Preset {
            num_experts: 8,
            topk: 3,
            ..p
        };
        let be = moehal_core::Reference::new();
        let t_all = 5;
        let inputs = MoeInputs::generate(&p, t_all, DType::F32, 4).unwrap();
        let full = MoeWeights::upload(&[&be], &p, DType::F32, 4, &|_| {}).unwrap();
        let want = forward(&be, &p, DType::F32, &full[0], &inputs).unwrap();
        for r_n in [1, 2, 4] {
            let map = ExpertMap::contiguous(p.num_experts, r_n).unwrap();
            let comms = LoopbackComm::group(r_n);
            let got: Vec<f32> = std::thread::scope(|s| {
                let hs: Vec<_> = comms
                    .iter()
                    .map(|c| {
                        let (p, map, inputs) = (&p, &map, &inputs);
                        s.spawn(move || {
                            let be = moehal_core::Reference::new();
                            let (a, b) = rank_tokens(t_all, c.rank(), r_n);
                            let mine = token_slice(inputs, p, a, b);
                            let w = MoeWeights::upload_experts(
                                &[&be],
                                p,
                                DType::F32,
                                4,
                                &map.local_experts(c.rank()),
                                &|_| {},
                            )
                            .unwrap();
                            forward_ep(c, &be, p, DType::F32, map, &w[0], &mine).unwrap().out
                        })
                    })
                    .collect();
                hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(got.len(), want.out.len());
            for (j, (a, b)) in got.iter().zip(&want.out).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{r_n} ranks, element {j}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn gather_collects_every_rank_on_root() {
        let comms = LoopbackComm::group(3);
        let res: Vec<Option<Vec<Vec<u8>>>> = std::thread::scope(|s| {
            let hs: Vec<_> = comms
                .iter()
                .map(|c| s.spawn(move || gather_to_root(c, &vec![c.rank() as u8; c.rank() + 1]).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(res[0], Some(vec![vec![0], vec![1, 1], vec![2, 2, 2]]));
        assert!(res[1].is_none() && res[2].is_none());
    }
}
