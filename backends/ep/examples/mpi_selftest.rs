//! `mpirun -n R target/debug/examples/mpi_selftest [SEEDS]`: ep_dispatch / ep_combine over MPI
//! against the single-process path, bit for bit, on seeded problems with dropped slots, repeated
//! experts, ranks without tokens and ranks that receive nothing (see `moehal_ep::selftest`).
//! Exit status 0 on every rank when all seeds pass; a failing rank aborts the job.

use moehal_ep::mpi::MpiComm;
use moehal_ep::{selftest, Comm};

fn main() {
    let seeds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let comm = match MpiComm::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    match selftest::check_seeds(&comm, 0..seeds) {
        Ok(n) => {
            println!(
                "rank {} of {} ({}): {seeds} seeds, {n} output values bitwise equal to the single process",
                comm.rank(),
                comm.size(),
                MpiComm::library_version().lines().next().unwrap_or("")
            );
        }
        Err(e) => {
            eprintln!("error: rank {}: {e}", comm.rank());
            comm.abort(1);
        }
    }
}
