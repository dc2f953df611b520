//! Math primitives for compositions on the device: `aclnnSoftmax`, `aclnnSigmoid`, `aclnnGather`,
//! `aclnnReduceSum`, `aclnnDiv`, `aclnnMuls`, `aclnnAdds`, `aclnnAdd`, `aclnnSqrt`, `aclnnSoftplus`,
//! `aclnnFloorDivides`, `aclnnAmax`, `aclnnAmin`.

use moehal_ascend_sys as sys;
use moehal_core::Result;

use super::aclnn::{opt, Outcome};
use super::{IntArray, Runtime, Scalar, Tensor};

impl Runtime {
    /// `aclnnSoftmax(self, dim, out)`: `out = exp(x - max) / sum(exp(x - max))` along `dim`, out of
    /// self's shape ([HA canncommercial/800 aclnnSoftmax.md]).
    pub fn softmax(&self, x: &Tensor<'_>, dim: i64, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnSoftmaxGetWorkspaceSize, "aclnnSoftmaxGetWorkspaceSize")?;
        let l = opt(api.aclnnSoftmax, "aclnnSoftmax")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnSoftmax",
            |ws, ex| unsafe { p1(x.ptr(), dim, out.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnSigmoid(self, out)`: `out = 1 / (1 + exp(-x))` ([HA canncommercial/800 aclnnSigmoid.md]).
    pub fn sigmoid(&self, x: &Tensor<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnSigmoidGetWorkspaceSize, "aclnnSigmoidGetWorkspaceSize")?;
        let l = opt(api.aclnnSigmoid, "aclnnSigmoid")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome("aclnnSigmoid", |ws, ex| unsafe { p1(x.ptr(), out.ptr(), ws, ex) }, l)
    }

    /// `aclnnGather(self, dim, index, out)`: torch.gather, `out[i][j] = self[i][index[i][j]]` for
    /// `dim = 1`; index INT32 / INT64 of self's rank, out of index's shape and self's dtype ([HA
    /// canncommercial/800 aclnnGather.md]).
    pub fn gather_dim(&self, x: &Tensor<'_>, dim: i64, index: &Tensor<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnGatherGetWorkspaceSize, "aclnnGatherGetWorkspaceSize")?;
        let l = opt(api.aclnnGather, "aclnnGather")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnGather",
            |ws, ex| unsafe { p1(x.ptr(), dim, index.ptr(), out.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnReduceSum(self, dims, keepDim, dtype, out)`: the sum over `dims`, in `dtype` ([HA
    /// canncommercial/800 aclnnReduceSum.md]).
    pub fn reduce_sum(
        &self,
        x: &Tensor<'_>,
        dims: &[i64],
        keep_dim: bool,
        dtype: sys::aclDataType,
        out: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnReduceSumGetWorkspaceSize, "aclnnReduceSumGetWorkspaceSize")?;
        let l = opt(api.aclnnReduceSum, "aclnnReduceSum")?;
        let d = IntArray::new(self, dims)?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnReduceSum",
            |ws, ex| unsafe { p1(x.ptr(), d.ptr(), keep_dim, dtype, out.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnDiv(self, other, out)`: `out = self / other`, broadcast ([HA canncommercial/800
    /// aclnnDiv.md]).
    pub fn div(&self, a: &Tensor<'_>, b: &Tensor<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnDivGetWorkspaceSize, "aclnnDivGetWorkspaceSize")?;
        let l = opt(api.aclnnDiv, "aclnnDiv")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnDiv",
            |ws, ex| unsafe { p1(a.ptr(), b.ptr(), out.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnMuls(self, other, out)`: `out = self * other` for a scalar `other` ([HA
    /// canncommercial/800 aclnnMuls&aclnnInplaceMuls.md]).
    pub fn muls(&self, x: &Tensor<'_>, other: &Scalar<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnMulsGetWorkspaceSize, "aclnnMulsGetWorkspaceSize")?;
        let l = opt(api.aclnnMuls, "aclnnMuls")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnMuls",
            |ws, ex| unsafe { p1(x.ptr(), other.ptr(), out.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnAdds(self, other, alpha, out)`: `out = self + alpha·other` for scalars ([HA
    /// canncommercial/800 aclnnAdds.md]).
    pub fn adds(&self, x: &Tensor<'_>, other: &Scalar<'_>, alpha: &Scalar<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnAddsGetWorkspaceSize, "aclnnAddsGetWorkspaceSize")?;
        let l = opt(api.aclnnAdds, "aclnnAdds")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnAdds",
            |ws, ex| unsafe { p1(x.ptr(), other.ptr(), alpha.ptr(), out.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnAdd(self, other, alpha, out)`: `out = self + alpha * other`, broadcast, out of the
    /// promoted dtype ([HA canncommercial/800 aclnnAdd&aclnnInplaceAdd.md]).
    pub fn add(&self, a: &Tensor<'_>, b: &Tensor<'_>, alpha: &Scalar<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnAddGetWorkspaceSize, "aclnnAddGetWorkspaceSize")?;
        let l = opt(api.aclnnAdd, "aclnnAdd")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnAdd",
            |ws, ex| unsafe { p1(a.ptr(), b.ptr(), alpha.ptr(), out.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnSqrt(self, out)`: `out = sqrt(x)`, NaN for a negative element ([HA canncommercial/800
    /// aclnnSqrt&aclnnInplaceSqrt.md]).
    pub fn sqrt(&self, x: &Tensor<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnSqrtGetWorkspaceSize, "aclnnSqrtGetWorkspaceSize")?;
        let l = opt(api.aclnnSqrt, "aclnnSqrt")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome("aclnnSqrt", |ws, ex| unsafe { p1(x.ptr(), out.ptr(), ws, ex) }, l)
    }

    /// `aclnnSoftplus(self, beta, threshold, out)`: `out = ln(1 + e^(beta·x)) / beta` where
    /// `beta·x <= threshold`, else `x` ([HA canncommercial/800 aclnnSoftplus.md]).
    pub fn softplus(
        &self,
        x: &Tensor<'_>,
        beta: &Scalar<'_>,
        threshold: &Scalar<'_>,
        out: &Tensor<'_>,
    ) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(api.aclnnSoftplusGetWorkspaceSize, "aclnnSoftplusGetWorkspaceSize")?;
        let l = opt(api.aclnnSoftplus, "aclnnSoftplus")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnSoftplus",
            |ws, ex| unsafe { p1(x.ptr(), beta.ptr(), threshold.ptr(), out.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnFloorDivides(self, other, out)`: `out = floor(self / other)` for a scalar `other`
    /// ([HA canncommercial/800 aclnnFloorDivides&aclnnInplaceFloorDivides.md]).
    pub fn floor_divides(&self, x: &Tensor<'_>, other: &Scalar<'_>, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let p1 = opt(
            api.aclnnFloorDividesGetWorkspaceSize,
            "aclnnFloorDividesGetWorkspaceSize",
        )?;
        let l = opt(api.aclnnFloorDivides, "aclnnFloorDivides")?;
        // SAFETY: live objects of this runtime.
        self.two_phase_outcome(
            "aclnnFloorDivides",
            |ws, ex| unsafe { p1(x.ptr(), other.ptr(), out.ptr(), ws, ex) },
            l,
        )
    }

    /// `aclnnAmax(self, dim, keepDim, out)` (`max = true`) or `aclnnAmin`: the largest /
    /// smallest element of `x` over every dimension, kept as size-1 dimensions (`out` of x's rank,
    /// all dims 1, x's dtype) ([HA 82RC1alpha002 aclnnAmax.md, 82RC1alpha001 aclnnAmin.md]).
    pub fn extremum(&self, x: &Tensor<'_>, rank: usize, max: bool, out: &Tensor<'_>) -> Result<Outcome> {
        let api = self.api();
        let dims: Vec<i64> = (0..rank as i64).collect();
        let d = IntArray::new(self, &dims)?;
        if max {
            let p1 = opt(api.aclnnAmaxGetWorkspaceSize, "aclnnAmaxGetWorkspaceSize")?;
            let l = opt(api.aclnnAmax, "aclnnAmax")?;
            // SAFETY: live objects of this runtime.
            self.two_phase_outcome(
                "aclnnAmax",
                |ws, ex| unsafe { p1(x.ptr(), d.ptr(), true, out.ptr(), ws, ex) },
                l,
            )
        } else {
            let p1 = opt(api.aclnnAminGetWorkspaceSize, "aclnnAminGetWorkspaceSize")?;
            let l = opt(api.aclnnAmin, "aclnnAmin")?;
            // SAFETY: live objects of this runtime.
            self.two_phase_outcome(
                "aclnnAmin",
                |ws, ex| unsafe { p1(x.ptr(), d.ptr(), true, out.ptr(), ws, ex) },
                l,
            )
        }
    }
}
