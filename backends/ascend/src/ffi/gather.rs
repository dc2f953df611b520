//! `aclnnEmbedding` / `aclnnGatherV2` / `aclnnIndexSelect`: row gather (Engram tables).

use moehal_core::Result;

use super::aclnn::{opt, Outcome};
use super::{Runtime, Tensor};

impl Runtime {
    /// Row gather along dim 0: `which` 1 = aclnnEmbedding, 2 = aclnnGatherV2, 3 = aclnnIndexSelect.
    pub fn gather(&self, which: u8, table: &Tensor<'_>, index: &Tensor<'_>, out: &Tensor<'_>) -> Result<()> {
        match self.gather_outcome(which, table, index, out)? {
            Outcome::Ran => Ok(()),
            Outcome::Rejected(e) => Err(e),
        }
    }

    /// [`Runtime::gather`], with a phase-one refusal as [`Outcome::Rejected`] (nothing launched).
    pub fn gather_outcome(
        &self,
        which: u8,
        table: &Tensor<'_>,
        index: &Tensor<'_>,
        out: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        match which {
            1 => {
                let p1 = opt(api.aclnnEmbeddingGetWorkspaceSize, "aclnnEmbeddingGetWorkspaceSize")?;
                let l = opt(api.aclnnEmbedding, "aclnnEmbedding")?;
                // SAFETY: live objects of this runtime.
                self.two_phase_outcome(
                    "aclnnEmbedding",
                    |ws, ex| unsafe { p1(table.ptr(), index.ptr(), out.ptr(), ws, ex) },
                    l,
                )
            }
            2 => {
                let p1 = opt(api.aclnnGatherV2GetWorkspaceSize, "aclnnGatherV2GetWorkspaceSize")?;
                let l = opt(api.aclnnGatherV2, "aclnnGatherV2")?;
                // SAFETY: live objects of this runtime.
                self.two_phase_outcome(
                    "aclnnGatherV2",
                    |ws, ex| unsafe { p1(table.ptr(), 0, index.ptr(), out.ptr(), ws, ex) },
                    l,
                )
            }
            _ => {
                let p1 = opt(api.aclnnIndexSelectGetWorkspaceSize, "aclnnIndexSelectGetWorkspaceSize")?;
                let l = opt(api.aclnnIndexSelect, "aclnnIndexSelect")?;
                // SAFETY: live objects of this runtime.
                self.two_phase_outcome(
                    "aclnnIndexSelect",
                    |ws, ex| unsafe { p1(table.ptr(), 0, index.ptr(), out.ptr(), ws, ex) },
                    l,
                )
            }
        }
    }
}
