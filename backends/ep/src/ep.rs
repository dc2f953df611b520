//! `ep_dispatch` / `ep_combine` (docs/EP.md §1): the plan (counts per destination, packing, the
//! deterministic order, the handle) written once, over any [`Comm`].

use moehal_core::ops::MoeCombine;
use moehal_core::{Backend, BackendExt, DType, Error, Result};

use crate::comm::Comm;
use crate::map::ExpertMap;

/// One rank's side of a dispatch: its tokens, their routing, and the layer's placement.
#[derive(Debug, Clone, Copy)]
pub struct DispatchArgs<'a> {
    /// `[T, H]` activations of this rank's tokens, row-major bytes of `dtype` (any dtype: rows are
    /// moved, never converted; an fp8 row with its scales is one row of `u8`).
    pub x: &'a [u8],
    /// Element type of `x` (and of `y_local` and `out` at combine).
    pub dtype: DType,
    /// Tokens `T` of this rank (0 is legal: the rank still takes part).
    pub tokens: usize,
    /// Row width `H` in elements (the same on every rank).
    pub hidden: usize,
    /// `[T, k]` global expert ids in `[-1, E)`; `-1` is a dropped slot (not sent, adds nothing).
    pub ids: &'a [i32],
    /// `[T, k]` f32 router weights, applied at combine on this rank.
    pub weights: &'a [f32],
    /// Slots per token `k` (top-k; the same on every rank).
    pub topk: usize,
    /// Where each expert lives (the same on every rank).
    pub map: &'a ExpertMap,
}

/// Bytes moved by this rank (payload rows and routing metadata; the counts exchange of `8·R`
/// bytes is not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpBytes {
    /// Rows of `x` sent (one per token and destination rank, however many of its experts live
    /// there; rows for this rank itself included).
    pub rows_sent: usize,
    /// Rows of `x` received (the same count over all sources).
    pub rows_received: usize,
    /// Dispatch bytes sent: rows plus `4·k` bytes of local ids per row.
    pub dispatch_sent: u64,
    /// Dispatch bytes received.
    pub dispatch_received: u64,
    /// Combine bytes sent: one `y` row per routed slot received.
    pub combine_sent: u64,
    /// Combine bytes received: one `y` row per routed slot of this rank's tokens.
    pub combine_received: u64,
    /// Of the above, the bytes a rank sends to itself (a copy, no link).
    pub to_self: u64,
}

/// What `ep_combine` needs of a dispatch: both sides of the exchange, in the order they were
/// packed. Opaque; one handle serves one combine.
#[derive(Debug, Clone)]
pub struct EpHandle {
    ranks: usize,
    tokens: usize,
    hidden: usize,
    k: usize,
    dtype: DType,
    weights: Vec<f32>,
    /// `[T, k]` destination rank of each slot, `-1` when dropped (source side).
    slot_dest: Vec<i32>,
    /// Per destination: routed slots of this rank's tokens that live there (= y rows coming back).
    slots_to: Vec<usize>,
    /// Receive side: for each received (row, slot) pair in (source rank, token, slot) order, its
    /// row in the local, expert-sorted `x`.
    back_order: Vec<usize>,
    /// Receive side: per source rank, how many of those pairs came from it.
    back_counts: Vec<usize>,
    bytes: EpBytes,
}

impl EpHandle {
    /// Tokens `T` of this rank.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Rows `M` of the local, expert-sorted `x` (and of the `y_local` that combine takes).
    pub fn local_rows(&self) -> usize {
        self.back_order.len()
    }

    /// Bytes moved so far (dispatch; combine's once it ran, in the handle it returned).
    pub fn bytes(&self) -> EpBytes {
        self.bytes
    }
}

/// The result of [`ep_dispatch`] on one rank.
#[derive(Debug, Clone)]
pub struct Dispatched {
    /// `[M, H]` rows for this rank's experts, sorted by local expert; within an expert by
    /// (source rank, token, slot) ascending. A row appears once per slot routed here (a token
    /// with two experts on this rank is received once and appears twice).
    pub x: Vec<u8>,
    /// `[L]` i64 cumulative ends of the local experts (OPS.md §1's `group_end`; `L` =
    /// `map.local_count(rank)`).
    pub group_end: Vec<i64>,
    /// For combine.
    pub handle: EpHandle,
}

fn u64s(v: &[usize]) -> Vec<u64> {
    v.iter().map(|&c| c as u64).collect()
}

fn counts_from(v: Vec<u64>, what: &'static str) -> Result<Vec<usize>> {
    v.into_iter()
        .map(|c| usize::try_from(c).map_err(|_| Error::invalid("ep_dispatch", what, format!("count {c} too large"))))
        .collect()
}

/// Validate one rank's dispatch arguments (before any collective).
fn validate(comm: &dyn Comm, a: &DispatchArgs<'_>) -> Result<()> {
    let es = a.dtype.size();
    if a.map.ranks() != comm.size() {
        return Err(Error::invalid(
            "ep_dispatch",
            "expert_map",
            format!("map for {} ranks, communicator of {}", a.map.ranks(), comm.size()),
        ));
    }
    if a.topk == 0 || a.hidden == 0 {
        return Err(Error::invalid(
            "ep_dispatch",
            "k",
            format!("k = {} and H = {} must be at least 1", a.topk, a.hidden),
        ));
    }
    let want = a.tokens.checked_mul(a.hidden).and_then(|n| n.checked_mul(es));
    if want != Some(a.x.len()) {
        return Err(Error::invalid(
            "ep_dispatch",
            "x",
            format!(
                "{} bytes for [T = {}, H = {}] of {}",
                a.x.len(),
                a.tokens,
                a.hidden,
                a.dtype
            ),
        ));
    }
    if a.ids.len() != a.tokens * a.topk || a.weights.len() != a.tokens * a.topk {
        return Err(Error::invalid(
            "ep_dispatch",
            "ids",
            format!(
                "ids {} and weights {} entries for [T = {}, k = {}]",
                a.ids.len(),
                a.weights.len(),
                a.tokens,
                a.topk
            ),
        ));
    }
    let e = a.map.experts();
    if let Some((pos, &bad)) = a.ids.iter().enumerate().find(|(_, &v)| v < -1 || v >= e as i32) {
        return Err(Error::invalid(
            "ep_dispatch",
            "ids",
            format!("id {bad} at slot {pos} outside [-1, {e})"),
        ));
    }
    Ok(())
}

/// Send each token's row to every rank holding one of its experts (once per rank), and return on
/// each rank the rows of its experts sorted by local expert (docs/EP.md §1).
///
/// Collective: every rank of `comm` calls it with the same `k`, `hidden`, `dtype` and `map`.
///
/// # Errors
/// [`Error::InvalidArgument`] for bad local arguments (checked before the first collective; the
/// other ranks are then left waiting in it, as with any MPI program: abort the job), or for
/// metadata from a peer that disagrees with `map`; the engine's errors.
pub fn ep_dispatch(comm: &dyn Comm, a: &DispatchArgs<'_>) -> Result<Dispatched> {
    validate(comm, a)?;
    let (r_n, me, k, h) = (comm.size(), comm.rank(), a.topk, a.hidden);
    let row = h * a.dtype.size();
    // Source side: which tokens go where, and each sent row's local ids (-1: not on that rank).
    let mut slot_dest = vec![-1i32; a.tokens * k];
    let mut send_tokens: Vec<Vec<usize>> = vec![Vec::new(); r_n];
    let mut meta: Vec<Vec<i32>> = vec![Vec::new(); r_n];
    let mut slots_to = vec![0usize; r_n];
    let mut seen = vec![usize::MAX; r_n];
    for t in 0..a.tokens {
        for j in 0..k {
            let id = a.ids[t * k + j];
            if id < 0 {
                continue;
            }
            let (d, l) = a
                .map
                .place(id as usize)
                .ok_or_else(|| Error::invalid("ep_dispatch", "ids", "id outside the map"))?;
            slot_dest[t * k + j] = d as i32;
            slots_to[d] += 1;
            if seen[d] != t {
                seen[d] = t;
                send_tokens[d].push(t);
                meta[d].extend(std::iter::repeat_n(-1i32, k));
            }
            let m = &mut meta[d];
            let base = m.len() - k;
            m[base + j] = l as i32;
        }
    }
    let rows_to: Vec<usize> = send_tokens.iter().map(Vec::len).collect();
    let rows_from = counts_from(comm.all_to_all_u64(&u64s(&rows_to))?, "counts")?;

    // Rows of x, packed by destination (token order within each).
    let mut send_x = Vec::with_capacity(rows_to.iter().sum::<usize>() * row);
    for toks in &send_tokens {
        for &t in toks {
            send_x.extend_from_slice(&a.x[t * row..(t + 1) * row]);
        }
    }
    let rows_recv: usize = rows_from.iter().sum();
    let mut recv_x = vec![0u8; rows_recv * row];
    let sc: Vec<usize> = rows_to.iter().map(|&n| n * row).collect();
    let rc: Vec<usize> = rows_from.iter().map(|&n| n * row).collect();
    comm.all_to_all_v(&send_x, &sc, &mut recv_x, &rc)?;
    drop(send_x);
    // Their local ids, k per row.
    let send_meta: Vec<u8> = meta
        .iter()
        .flat_map(|m| m.iter().flat_map(|v| v.to_le_bytes()))
        .collect();
    let mut recv_meta = vec![0u8; rows_recv * k * 4];
    let sc_m: Vec<usize> = rows_to.iter().map(|&n| n * k * 4).collect();
    let rc_m: Vec<usize> = rows_from.iter().map(|&n| n * k * 4).collect();
    comm.all_to_all_v(&send_meta, &sc_m, &mut recv_meta, &rc_m)?;
    let local_ids: Vec<i32> = recv_meta
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();

    // Receive side: (row, slot) pairs in (source, token, slot) order, bucketed by local expert
    // (a stable counting sort keeps that order within each expert).
    let l_n = a.map.local_count(me);
    let mut per_expert = vec![0usize; l_n];
    let mut back_counts = vec![0usize; r_n];
    let mut src_of_row = Vec::with_capacity(rows_recv);
    for (s, &n) in rows_from.iter().enumerate() {
        src_of_row.extend(std::iter::repeat_n(s, n));
    }
    for (i, ids) in local_ids.chunks_exact(k).enumerate() {
        for &l in ids {
            if l < 0 {
                continue;
            }
            if l as usize >= l_n {
                return Err(Error::invalid(
                    "ep_dispatch",
                    "expert_map",
                    format!(
                        "rank {} sent a row for local expert {l}, this rank holds {l_n}: the ranks' maps differ",
                        src_of_row[i]
                    ),
                ));
            }
            per_expert[l as usize] += 1;
            back_counts[src_of_row[i]] += 1;
        }
    }
    let mut group_end = Vec::with_capacity(l_n);
    let mut next = Vec::with_capacity(l_n);
    let mut acc = 0usize;
    for &c in &per_expert {
        next.push(acc);
        acc += c;
        group_end.push(acc as i64);
    }
    let m_rows = acc;
    let mut x_local = vec![0u8; m_rows * row];
    let mut back_order = Vec::with_capacity(m_rows);
    for (i, ids) in local_ids.chunks_exact(k).enumerate() {
        for &l in ids {
            if l < 0 {
                continue;
            }
            let m = next[l as usize];
            next[l as usize] += 1;
            x_local[m * row..(m + 1) * row].copy_from_slice(&recv_x[i * row..(i + 1) * row]);
            back_order.push(m);
        }
    }
    let meta_b = (k * 4) as u64;
    let bytes = EpBytes {
        rows_sent: rows_to.iter().sum(),
        rows_received: rows_recv,
        dispatch_sent: rows_to.iter().sum::<usize>() as u64 * (row as u64 + meta_b),
        dispatch_received: rows_recv as u64 * (row as u64 + meta_b),
        combine_sent: 0,
        combine_received: 0,
        to_self: rows_to[me] as u64 * (row as u64 + meta_b),
    };
    Ok(Dispatched {
        x: x_local,
        group_end,
        handle: EpHandle {
            ranks: r_n,
            tokens: a.tokens,
            hidden: h,
            k,
            dtype: a.dtype,
            weights: a.weights.to_vec(),
            slot_dest,
            slots_to,
            back_order,
            back_counts,
            bytes,
        },
    })
}

/// The combine exchange alone: send each `y_local` row back to its token's rank and return there
/// `y_slots [T·k, H]` (row `t·k + j` holds `y(t, j)`; rows of dropped slots are zero and
/// unused) and `slot_row [T, k]` (`t·k + j`, or `-1` for a dropped slot): the operands of
/// OPS.md §3's `moe_combine`. Also returns the handle's bytes with combine's added.
///
/// Collective, like [`ep_dispatch`].
///
/// # Errors
/// [`Error::InvalidArgument`] when `y_local` is not `[M, H]` of the dispatch's dtype; the
/// engine's errors.
pub fn ep_combine_rows(comm: &dyn Comm, handle: &EpHandle, y_local: &[u8]) -> Result<(Vec<u8>, Vec<i64>, EpBytes)> {
    let row = handle.hidden * handle.dtype.size();
    let m = handle.back_order.len();
    if y_local.len() != m * row || comm.size() != handle.ranks {
        return Err(Error::invalid(
            "ep_combine",
            "y_local",
            format!(
                "{} bytes, [M = {m}, H = {}] of {} expected (communicator of {}, handle of {})",
                y_local.len(),
                handle.hidden,
                handle.dtype,
                comm.size(),
                handle.ranks
            ),
        ));
    }
    // Back in (source, token, slot) order: per source, its tokens' slots in order.
    let mut send = Vec::with_capacity(m * row);
    for &lr in &handle.back_order {
        send.extend_from_slice(&y_local[lr * row..(lr + 1) * row]);
    }
    let sc: Vec<usize> = handle.back_counts.iter().map(|&n| n * row).collect();
    let rc: Vec<usize> = handle.slots_to.iter().map(|&n| n * row).collect();
    let mut recv = vec![0u8; rc.iter().sum()];
    comm.all_to_all_v(&send, &sc, &mut recv, &rc)?;
    // From each destination, its rows follow this rank's (token, slot) order.
    let (t_n, k) = (handle.tokens, handle.k);
    let mut y_slots = vec![0u8; t_n * k * row];
    let mut slot_row = vec![-1i64; t_n * k];
    let mut offs = crate::comm::displs(&rc);
    for (s, &d) in handle.slot_dest.iter().enumerate() {
        if d < 0 {
            continue;
        }
        let o = offs[d as usize];
        offs[d as usize] += row;
        y_slots[s * row..(s + 1) * row].copy_from_slice(&recv[o..o + row]);
        slot_row[s] = s as i64;
    }
    let me = comm.rank();
    let mut bytes = handle.bytes;
    bytes.combine_sent = (m * row) as u64;
    bytes.combine_received = recv.len() as u64;
    bytes.to_self += (handle.back_counts[me] * row) as u64;
    Ok((y_slots, slot_row, bytes))
}

/// `out [T, H] = Σ_j weights[t, j] · y(t, j)` on each token's own rank, summed in f32 in slot
/// order and rounded once, by `backend`'s `moe_combine` (OPS.md §3), so the result is the one a
/// single process gets from the same `y` rows. `extra` (`rows [S·T, H]` of the same dtype, row
/// `s·T + t`) adds `S` more terms of weight 1 after the `k` slots of each token: the shared
/// expert, exactly as the single-process MoE pipeline adds it.
///
/// `backend` must hold host memory or accept uploads (any backend: the operands are uploaded).
/// Collective, like [`ep_dispatch`]. Returns `out` bytes and the bytes moved.
///
/// # Errors
/// As [`ep_combine_rows`]; [`Error::InvalidArgument`] for an `extra` that is not `[S·T, H]`; the
/// backend's errors.
pub fn ep_combine(
    comm: &dyn Comm,
    backend: &dyn Backend,
    handle: &EpHandle,
    y_local: &[u8],
    extra: Option<&[u8]>,
) -> Result<(Vec<u8>, EpBytes)> {
    let (y_slots, slot_row, bytes) = ep_combine_rows(comm, handle, y_local)?;
    let (t, k, h, dt) = (handle.tokens, handle.k, handle.hidden, handle.dtype);
    let row = h * dt.size();
    let s = match extra {
        None => 0,
        Some(e) if t > 0 && e.len() % (t * row) == 0 => e.len() / (t * row),
        Some(e) if t == 0 && e.is_empty() => 0,
        Some(e) => {
            return Err(Error::invalid(
                "ep_combine",
                "extra",
                format!("{} bytes is not [S * T, H] for T = {t}, H = {h} of {dt}", e.len()),
            ))
        }
    };
    if t == 0 {
        return Ok((Vec::new(), bytes));
    }
    let kk = k + s;
    let (mut sr, mut wt) = (Vec::with_capacity(t * kk), Vec::with_capacity(t * kk));
    for tok in 0..t {
        sr.extend_from_slice(&slot_row[tok * k..(tok + 1) * k]);
        wt.extend_from_slice(&handle.weights[tok * k..(tok + 1) * k]);
        for si in 0..s {
            sr.push((t * k + si * t + tok) as i64);
            wt.push(1.0);
        }
    }
    let mut yb = backend.alloc((t * k + s * t) * row)?;
    backend.upload(&mut yb, 0, &y_slots)?;
    if let Some(e) = extra {
        backend.upload(&mut yb, t * k * row, e)?;
    }
    let srb = backend.upload_slice(&sr)?;
    let wtb = backend.upload_slice(&wt)?;
    let mut ob = backend.alloc(t * row)?;
    let args = MoeCombine {
        y_perm: yb.view(dt, &[t * k + s * t, h]),
        slot_row: srb.view(DType::I64, &[t, kk]),
        weights: wtb.view(DType::F32, &[t, kk]),
        out: ob.view_mut(dt, &[t, h]),
    };
    backend.moe_combine(args.validate()?)?;
    let mut out = vec![0u8; t * row];
    backend.download(&ob, 0, &mut out)?;
    Ok((out, bytes))
}
