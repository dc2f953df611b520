//! [`ExpertMap`]: where each global expert lives (rank and local id), docs/EP.md §1.

use moehal_core::{Error, Result};

/// Placement of the `E` global experts of one MoE layer on `R` ranks.
///
/// Global expert `e` lives on rank `rank(e)` as local expert `local(e)`. On every rank the local
/// ids of the experts it holds are exactly `0..local_count(rank)` (dense, each once), so that rank's
/// expert weights are a `[L, ...]` tensor and its rows a `group_end` of length `L`. A rank may hold
/// no expert at all (`L = 0`): it then receives no rows.
///
/// The default ([`ExpertMap::contiguous`]) gives rank `r` the slice `[r·E/R, (r+1)·E/R)` (the
/// layout of DeepEP, vLLM and vllm-ascend's EP). [`ExpertMap::from_entries`] takes any placement;
/// redundant experts (one global expert on several ranks, EPLB) are not in this contract yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertMap {
    ranks: usize,
    /// Per global expert: `(rank, local id)`.
    entries: Vec<(u32, u32)>,
    /// Experts per rank.
    counts: Vec<usize>,
}

impl ExpertMap {
    /// Contiguous slices: `E` experts on `R` ranks, rank `r` holding `[r·E/R, (r+1)·E/R)` as local
    /// ids `0..E/R`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `R = 0`, `E = 0` or `E % R != 0`.
    pub fn contiguous(experts: usize, ranks: usize) -> Result<Self> {
        if ranks == 0 || experts == 0 || experts % ranks != 0 {
            return Err(Error::invalid(
                "expert_map",
                "experts",
                format!("contiguous slices need E > 0, R > 0 and E % R == 0 (E = {experts}, R = {ranks})"),
            ));
        }
        let per = experts / ranks;
        let entries = (0..experts).map(|e| ((e / per) as u32, (e % per) as u32)).collect();
        Ok(ExpertMap {
            ranks,
            entries,
            counts: vec![per; ranks],
        })
    }

    /// Any placement: `entries[e] = (rank, local id)` of global expert `e`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `ranks = 0`, `entries` is empty, a rank is `>= ranks`, or the
    /// local ids of some rank are not exactly `0..L` each once.
    pub fn from_entries(ranks: usize, entries: Vec<(u32, u32)>) -> Result<Self> {
        if ranks == 0 || entries.is_empty() {
            return Err(Error::invalid(
                "expert_map",
                "entries",
                "need at least one rank and one expert",
            ));
        }
        let mut counts = vec![0usize; ranks];
        for (e, &(r, _)) in entries.iter().enumerate() {
            let r = r as usize;
            if r >= ranks {
                return Err(Error::invalid(
                    "expert_map",
                    "entries",
                    format!("expert {e} on rank {r}, but there are {ranks} ranks"),
                ));
            }
            counts[r] += 1;
        }
        let mut seen: Vec<Vec<bool>> = counts.iter().map(|&c| vec![false; c]).collect();
        for (e, &(r, l)) in entries.iter().enumerate() {
            let slot = seen[r as usize].get_mut(l as usize).ok_or_else(|| {
                Error::invalid(
                    "expert_map",
                    "entries",
                    format!(
                        "expert {e}: local id {l} on rank {r}, which holds {} experts (local ids must be 0..{})",
                        counts[r as usize], counts[r as usize]
                    ),
                )
            })?;
            if *slot {
                return Err(Error::invalid(
                    "expert_map",
                    "entries",
                    format!("local id {l} used twice on rank {r} (expert {e})"),
                ));
            }
            *slot = true;
        }
        Ok(ExpertMap { ranks, entries, counts })
    }

    /// Ranks `R`.
    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// Global experts `E`.
    pub fn experts(&self) -> usize {
        self.entries.len()
    }

    /// `(rank, local id)` of global expert `e` (`e < E`, else `None`).
    pub fn place(&self, e: usize) -> Option<(usize, usize)> {
        self.entries.get(e).map(|&(r, l)| (r as usize, l as usize))
    }

    /// Experts held by `rank` (`L`, the length of its `group_end`); 0 for a rank out of range.
    pub fn local_count(&self, rank: usize) -> usize {
        self.counts.get(rank).copied().unwrap_or(0)
    }

    /// The global ids held by `rank`, in local-id order (`result[l]` is the global id of local `l`).
    pub fn local_experts(&self, rank: usize) -> Vec<usize> {
        let mut out = vec![0usize; self.local_count(rank)];
        for (e, &(r, l)) in self.entries.iter().enumerate() {
            if r as usize == rank {
                out[l as usize] = e;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_slices() {
        let m = ExpertMap::contiguous(8, 4).unwrap();
        assert_eq!(m.place(0), Some((0, 0)));
        assert_eq!(m.place(3), Some((1, 1)));
        assert_eq!(m.place(7), Some((3, 1)));
        assert_eq!(m.place(8), None);
        assert_eq!(m.local_experts(2), vec![4, 5]);
        assert!(ExpertMap::contiguous(10, 4).is_err());
        assert!(ExpertMap::contiguous(8, 0).is_err());
    }

    #[test]
    fn explicit_map_is_validated() {
        // Rank 1 holds nothing; rank 0 holds experts 2, 0, 1 as local 0, 1, 2.
        let m = ExpertMap::from_entries(2, vec![(0, 1), (0, 2), (0, 0)]).unwrap();
        assert_eq!(m.local_count(1), 0);
        assert_eq!(m.local_experts(0), vec![2, 0, 1]);
        assert!(
            ExpertMap::from_entries(2, vec![(0, 0), (0, 0)]).is_err(),
            "local id twice"
        );
        assert!(ExpertMap::from_entries(2, vec![(0, 1)]).is_err(), "not dense");
        assert!(ExpertMap::from_entries(2, vec![(2, 0)]).is_err(), "rank out of range");
    }
}
