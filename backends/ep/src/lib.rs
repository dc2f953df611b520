//! moehal-ep: expert parallelism (EP) for MoE layers, docs/EP.md.
//!
//! Each rank holds a slice of the experts ([`ExpertMap`]). [`ep_dispatch`] sends every token's row
//! to each rank that holds one of its experts (once per rank) and returns there the rows sorted by
//! local expert with a local `group_end`, ready for OPS.md §1's `grouped_gemm`; [`ep_combine`]
//! sends the expert outputs back and sums them on the token's rank in slot order in f32, through
//! the backend's own `moe_combine` (OPS.md §3), so an EP layer gives the single-process result.
//!
//! The plan (counts, packing, order, handle) is written once over the [`Comm`] trait; the engines
//! are the libraries people already run, each behind a cargo feature: [`LoopbackComm`] (threads
//! as ranks, always built, for tests), `mpi` (rsmpi over the system MPI), `hccl` (libhccl.so
//! loaded at run time). The default build links none of them.
#![warn(missing_docs)]

mod comm;
mod ep;
mod map;

#[cfg(feature = "hccl")]
pub mod hccl;
#[cfg(feature = "mpi")]
pub mod mpi;

pub use comm::{Comm, LoopbackComm};
pub use ep::{ep_combine, ep_combine_rows, ep_dispatch, DispatchArgs, Dispatched, EpBytes, EpHandle};
pub use map::ExpertMap;

pub mod selftest;
