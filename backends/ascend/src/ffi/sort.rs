//! Ordering primitives: `aclnnSort` (stable sort with the INT64 permutation) and
//! `aclnnSearchSorted` (insertion points in a sorted sequence).

use std::ptr;

use moehal_core::Result;

use super::aclnn::{opt, Outcome};
use super::{Runtime, Tensor};

impl Runtime {
    /// `aclnnSort(self, stable, dim, descending, valuesOut, indicesOut)`: `values` = `x` sorted
    /// along `dim`, `indices` (INT64, x's shape) the source position of each sorted element; with
    /// `stable` equal keys keep their input order ([HA canncommercial/800 aclnnSort.md]; the
    /// A2/A3 dtype list includes INT32 and INT64, sorted exactly).
    pub fn sort(
        &self,
        x: &Tensor<'_>,
        stable: bool,
        dim: i64,
        descending: bool,
        values: &Tensor<'_>,
        indices: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnSortGetWorkspaceSize, "aclnnSortGetWorkspaceSize")?;
        let l = opt(api.aclnnSort, "aclnnSort")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnSort",
            |ws, ex| unsafe { p1(x.ptr(), stable, dim, descending, values.ptr(), indices.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnSearchSorted(sortedSequence, self, outInt32, right, sorter = NULL, out)`: for each
    /// value `v` of `values`, the number of elements of the (ascending) `sorted` that are `< v`
    /// (`right = false`) or `<= v` (`right = true`); `out` INT64 (`outInt32 = false`) of
    /// values' shape ([HA canncommercial/800 aclnnSearchSorted.md]). The sequence must be sorted
    /// (the device does not check).
    pub fn search_sorted(
        &self,
        sorted: &Tensor<'_>,
        values: &Tensor<'_>,
        right: bool,
        out: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(
            api.aclnnSearchSortedGetWorkspaceSize,
            "aclnnSearchSortedGetWorkspaceSize",
        )?;
        let l = opt(api.aclnnSearchSorted, "aclnnSearchSorted")?;
        // SAFETY: live objects of this runtime; a NULL sorter is documented (optional).
        self.two_phase_outcome(
            "aclnnSearchSorted",
            |ws, ex| unsafe { p1(sorted.ptr(), values.ptr(), false, right, ptr::null(), out.ptr(), ws, ex) },
            l,
        )
    }
}
