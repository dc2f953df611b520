//! The [`Comm`] trait (the two collectives EP needs) and [`LoopbackComm`], an in-process
//! implementation with threads as ranks (tests; no library needed).

use std::sync::{Arc, Barrier, Mutex};

use moehal_core::{Error, Result};

/// A communicator of `size()` ranks: the collectives that `ep_dispatch` / `ep_combine` are built
/// from. Every rank of the group calls the same collectives in the same order (MPI's rule, and
/// NCCL's and HCCL's).
///
/// Buffers are host bytes. The `k`-th block of a send buffer goes to rank `k`; blocks are packed
/// back to back, so the displacements are the exclusive prefix sums of the counts (as
/// `MPI_Alltoallv`, `HcclAlltoAllV` and grouped `ncclSend`/`ncclRecv` take them).
pub trait Comm {
    /// The engine's name (`"loopback"`, `"mpi"`, `"hccl"`, ...).
    fn name(&self) -> &str;
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Ranks in the group.
    fn size(&self) -> usize;
    /// All-to-all of one `u64` per rank: `send[k]` goes to rank `k`; returns `recv` with
    /// `recv[k]` = what rank `k` sent to this rank.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `send.len() != size()`; the engine's own failures.
    fn all_to_all_u64(&self, send: &[u64]) -> Result<Vec<u64>>;
    /// All-to-all-v of bytes: block `k` of `send` (`send_counts[k]` bytes) goes to rank `k`; block
    /// `k` of `recv` (`recv_counts[k]` bytes) comes from rank `k`. Counts must agree pairwise
    /// (exchange them first with [`Comm::all_to_all_u64`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a count list is not `size()` long or the sums do not match
    /// the buffer lengths; a mismatch with the peer's count where the engine can see it; the
    /// engine's own failures.
    fn all_to_all_v(&self, send: &[u8], send_counts: &[usize], recv: &mut [u8], recv_counts: &[usize]) -> Result<()>;
}

/// Check the argument shapes of [`Comm::all_to_all_v`] (shared by the implementations).
pub(crate) fn check_v(
    size: usize,
    send: &[u8],
    send_counts: &[usize],
    recv: &[u8],
    recv_counts: &[usize],
) -> Result<()> {
    if send_counts.len() != size || recv_counts.len() != size {
        return Err(Error::invalid(
            "all_to_all_v",
            "counts",
            format!(
                "{} send and {} recv counts for {size} ranks",
                send_counts.len(),
                recv_counts.len()
            ),
        ));
    }
    let (s, r) = (send_counts.iter().sum::<usize>(), recv_counts.iter().sum::<usize>());
    if s != send.len() || r != recv.len() {
        return Err(Error::invalid(
            "all_to_all_v",
            "counts",
            format!(
                "counts sum to {s} sent / {r} received bytes, buffers hold {} / {}",
                send.len(),
                recv.len()
            ),
        ));
    }
    Ok(())
}

/// Exclusive prefix sums of `counts` (the displacements of packed blocks).
pub(crate) fn displs(counts: &[usize]) -> Vec<usize> {
    let mut acc = 0;
    counts
        .iter()
        .map(|&c| {
            let d = acc;
            acc += c;
            d
        })
        .collect()
}

struct Shared {
    n: usize,
    barrier: Barrier,
    /// `slots[src * n + dst]`: the block `src` sent to `dst` in the current collective.
    slots: Mutex<Vec<Vec<u8>>>,
}

/// An in-process communicator: `group(n)` gives `n` handles, one per thread, that exchange
/// through shared memory with a barrier per step. Semantics are those of [`Comm`]; it moves bytes
/// exactly as an engine does, so the EP logic is tested without MPI.
///
/// Every rank must reach every collective (a rank that returns early leaves the others waiting,
/// as with MPI).
pub struct LoopbackComm {
    rank: usize,
    shared: Arc<Shared>,
}

impl LoopbackComm {
    /// `n >= 1` connected ranks; hand `result[r]` to the thread playing rank `r`.
    pub fn group(n: usize) -> Vec<LoopbackComm> {
        let n = n.max(1);
        let shared = Arc::new(Shared {
            n,
            barrier: Barrier::new(n),
            slots: Mutex::new(vec![Vec::new(); n * n]),
        });
        (0..n)
            .map(|rank| LoopbackComm {
                rank,
                shared: Arc::clone(&shared),
            })
            .collect()
    }

    /// One exchange: deposit `blocks[dst]`, wait, collect what each source left for this rank.
    fn exchange(&self, blocks: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let n = self.shared.n;
        {
            let mut s = self.shared.slots.lock().unwrap_or_else(|p| p.into_inner());
            for (dst, b) in blocks.into_iter().enumerate() {
                s[self.rank * n + dst] = b;
            }
        }
        self.shared.barrier.wait();
        let got = {
            let mut s = self.shared.slots.lock().unwrap_or_else(|p| p.into_inner());
            (0..n).map(|src| std::mem::take(&mut s[src * n + self.rank])).collect()
        };
        // Nobody deposits the next collective's blocks before everyone has taken this one's.
        self.shared.barrier.wait();
        got
    }
}

impl Comm for LoopbackComm {
    fn name(&self) -> &str {
        "loopback"
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.n
    }

    fn all_to_all_u64(&self, send: &[u64]) -> Result<Vec<u64>> {
        if send.len() != self.shared.n {
            return Err(Error::invalid(
                "all_to_all_u64",
                "send",
                format!("{} values for {} ranks", send.len(), self.shared.n),
            ));
        }
        let got = self.exchange(send.iter().map(|v| v.to_le_bytes().to_vec()).collect());
        got.iter()
            .map(|b| {
                <[u8; 8]>::try_from(b.as_slice())
                    .map(u64::from_le_bytes)
                    .map_err(|_| Error::invalid("all_to_all_u64", "send", "a peer sent no value"))
            })
            .collect()
    }

    fn all_to_all_v(&self, send: &[u8], send_counts: &[usize], recv: &mut [u8], recv_counts: &[usize]) -> Result<()> {
        let shape = check_v(self.shared.n, send, send_counts, recv, recv_counts);
        // Take part in the exchange even with bad arguments, so that the peers do not hang.
        let blocks = match shape {
            Ok(()) => {
                let d = displs(send_counts);
                d.iter()
                    .zip(send_counts)
                    .map(|(&o, &c)| send[o..o + c].to_vec())
                    .collect()
            }
            Err(_) => vec![Vec::new(); self.shared.n],
        };
        let got = self.exchange(blocks);
        shape?;
        for (src, (b, &want)) in got.iter().zip(recv_counts).enumerate() {
            if b.len() != want {
                return Err(Error::invalid(
                    "all_to_all_v",
                    "recv_counts",
                    format!("rank {src} sent {} bytes, {want} expected", b.len()),
                ));
            }
        }
        let d = displs(recv_counts);
        for (b, o) in got.iter().zip(d) {
            recv[o..o + b.len()].copy_from_slice(b);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_all_to_all_v_moves_each_block_to_its_rank() {
        let n = 3;
        let comms = LoopbackComm::group(n);
        let res: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = comms
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        let r = c.rank();
                        // Rank r sends (r + d) bytes of value 10*r + d to rank d.
                        let counts: Vec<usize> = (0..n).map(|d| r + d).collect();
                        let send: Vec<u8> = (0..n).flat_map(|d| vec![(10 * r + d) as u8; r + d]).collect();
                        let rc = c
                            .all_to_all_u64(&counts.iter().map(|&v| v as u64).collect::<Vec<_>>())
                            .unwrap();
                        let rc: Vec<usize> = rc.iter().map(|&v| v as usize).collect();
                        let mut recv = vec![0u8; rc.iter().sum()];
                        c.all_to_all_v(&send, &counts, &mut recv, &rc).unwrap();
                        recv
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (d, got) in res.iter().enumerate() {
            let want: Vec<u8> = (0..n).flat_map(|r| vec![(10 * r + d) as u8; r + d]).collect();
            assert_eq!(got, &want, "rank {d}");
        }
    }
}
