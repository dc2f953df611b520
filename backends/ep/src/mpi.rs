//! [`MpiComm`]: the [`Comm`] collectives over MPI (rsmpi on the system MPI, e.g. Debian's Open
//! MPI), for CPU processes on one or many hosts: `MPI_Alltoall` of `u64` and `MPI_Alltoallv` of
//! bytes on `MPI_COMM_WORLD`. Feature `mpi`.

use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives};
use mpi::Count;

use moehal_core::{Error, Result};

use crate::comm::{check_v, displs, Comm};

/// `MPI_COMM_WORLD` of this process (`mpirun -n R ...` starts `R` of them).
///
/// Owns MPI's initialization: create one per process, keep it for the life of the program; MPI
/// is finalized when it drops (and cannot be initialized again in that process).
pub struct MpiComm {
    world: SimpleCommunicator,
    // Dropped after `world`: finalizes MPI.
    _universe: Universe,
}

impl MpiComm {
    /// Initialize MPI (`MPI_Init_thread`, single thread) and take `MPI_COMM_WORLD`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when MPI was already initialized in this process.
    pub fn init() -> Result<Self> {
        let universe = mpi::initialize().ok_or_else(|| Error::Unavailable {
            backend: "mpi".into(),
            reason: "MPI was already initialized in this process".into(),
        })?;
        Ok(MpiComm {
            world: universe.world(),
            _universe: universe,
        })
    }

    /// Abort every process of the job with `code` (`MPI_Abort`): what a rank must do when it
    /// fails between collectives, or the others wait forever.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// The MPI library's version string (`MPI_Get_library_version`).
    pub fn library_version() -> String {
        mpi::environment::library_version().unwrap_or_else(|_| "unknown MPI".into())
    }
}

/// Byte counts and displacements as MPI's `int` (`MPI_Alltoallv` takes `int` counts).
fn counts(v: &[usize], what: &'static str) -> Result<(Vec<Count>, Vec<Count>)> {
    let c = v
        .iter()
        .map(|&n| Count::try_from(n))
        .collect::<std::result::Result<Vec<_>, _>>();
    let d = displs(v)
        .into_iter()
        .map(Count::try_from)
        .collect::<std::result::Result<Vec<_>, _>>();
    match (c, d) {
        (Ok(c), Ok(d)) => Ok((c, d)),
        _ => Err(Error::invalid(
            "all_to_all_v",
            what,
            "a block or displacement passes 2^31 - 1 bytes (MPI_Alltoallv takes int counts): dispatch fewer tokens per call",
        )),
    }
}

impl Comm for MpiComm {
    fn name(&self) -> &str {
        "mpi"
    }

    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_to_all_u64(&self, send: &[u64]) -> Result<Vec<u64>> {
        if send.len() != self.size() {
            return Err(Error::invalid(
                "all_to_all_u64",
                "send",
                format!("{} values for {} ranks", send.len(), self.size()),
            ));
        }
        let mut recv = vec![0u64; send.len()];
        self.world.all_to_all_into(send, &mut recv[..]);
        Ok(recv)
    }

    fn all_to_all_v(&self, send: &[u8], send_counts: &[usize], recv: &mut [u8], recv_counts: &[usize]) -> Result<()> {
        check_v(self.size(), send, send_counts, recv, recv_counts)?;
        let (sc, sd) = counts(send_counts, "send_counts")?;
        let (rc, rd) = counts(recv_counts, "recv_counts")?;
        // An empty slice's pointer is dangling (0x1 for bytes), and Open MPI defines MPI_IN_PLACE
        // as (void *) 1: an empty buffer must point at real memory, or MPI_Alltoallv reads it as
        // "in place" and fails with MPI_ERR_ARG.
        let s_dummy = [0u8; 1];
        let mut r_dummy = [0u8; 1];
        let send: &[u8] = if send.is_empty() { &s_dummy[..0] } else { send };
        let recv: &mut [u8] = if recv.is_empty() { &mut r_dummy[..0] } else { recv };
        let sp = Partition::new(send, sc, sd);
        let mut rp = PartitionMut::new(recv, rc, rd);
        // MPI's default error handler (MPI_ERRORS_ARE_FATAL) aborts the job on a failed call.
        self.world.all_to_all_varcount_into(&sp, &mut rp);
        Ok(())
    }
}
