//! `grouped_gemm` on `aclnnGroupedMatmulV4` / `V3` (ffi/grouped_matmul.rs), or the host. The
//! `group_end` check runs on the device (aclnnAmin / aclnnAmax, and the adjacent differences'
//! aclnnAmin) with a control read of the three scalars; `K = 0` with a bias gathers the bias rows
//! by a device-built group index (aclnnArange + aclnnSearchSorted + aclnnIndexSelect).

use moehal_ascend_sys as sys;
use moehal_core::ops::{grouped_gemm::check_group_end, Checked, GroupedGemm, WeightLayout};
use moehal_core::{Backend, DType, Error, Reference, Result, TensorMut, TensorRef};

use crate::backend::{desc_of, hm, hv, scratch_desc, Ascend};
use crate::ffi::{DevMem, Outcome, Scalar, TensorList};
use crate::ops::checks::check_extremes;

const OP_GG: &str = "grouped_gemm";

impl Ascend {
    fn gmm_host(&self, a: &GroupedGemm<'_>) -> Result<()> {
        let (sx, sw, sg) = (self.stage(&a.x)?, self.stage(&a.w)?, self.stage(&a.group_end)?);
        let ss = a.row_scale.as_ref().map(|r| self.stage(r)).transpose()?;
        let sb = a.bias.as_ref().map(|r| self.stage(r)).transpose()?;
        let mut sy = self.stage(&a.y.as_ref())?;
        let args = GroupedGemm {
            x: hv(&sx, &a.x),
            w: hv(&sw, &a.w),
            layout: a.layout,
            group_end: hv(&sg, &a.group_end),
            row_scale: a.row_scale.as_ref().zip(ss.as_ref()).map(|(r, s)| hv(s, r)),
            bias: a.bias.as_ref().zip(sb.as_ref()).map(|(r, s)| hv(s, r)),
            y: hm(&mut sy, &a.y)?,
        };
        Reference.grouped_gemm(args.validate()?)?;
        self.unstage(sy.as_ref().expect("device output staged"), &a.y)
    }

    /// `Backend::grouped_gemm` on this device.
    pub(crate) fn run_grouped_gemm(&self, args: Checked<GroupedGemm<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        let d = a.dims();
        for (t, f) in [(&a.x, "x"), (&a.w, "w"), (&a.group_end, "group_end")] {
            self.mine(t.buffer(), f)?;
        }
        self.mine(a.y.buffer(), "y")?;
        let total = self.gmm_check_group_end(&a.group_end, d.m)?;
        if d.m == 0 || d.n == 0 {
            return Ok(());
        }
        let v = self.rt.lib.versions;
        let dt = a.x.dtype();
        // Every operand an aclnn call reads must be this device's memory: aclCreateTensor does
        // not check addresses, so a host bias would be read as a device address. A bias
        // elsewhere (host memory) takes the host path.
        let bias_mine = a.bias.as_ref().is_none_or(|b| self.mine(b.buffer(), "bias").is_ok());
        if d.k == 0 && a.bias.is_some() {
            if !bias_mine {
                return self.gmm_host(&a);
            }
            return match self.gmm_k0_bias(&a, total)? {
                Outcome::Ran => self.apply_row_scale(a.row_scale.as_ref(), &a.y, total),
                Outcome::Rejected(_) => self.gmm_host(&a),
            };
        }
        if d.k == 0 && a.bias.is_none() {
            // OPS.md §1: K = 0 writes `row_scale * bias`, here without bias: zeros, then the row
            // scale (so a non-finite scale gives NaN as `scale * 0` does), on the routed rows only.
            // GroupedMatmul refuses an empty K; aclrtMemset is a device operation, not a copy.
            if total > 0 {
                let (off, _) = a.y.byte_range();
                let b = a.y.buffer();
                self.rt.memset(
                    b.addr() + off as u64,
                    b.len() - off,
                    0,
                    total * d.n * a.y.dtype().size(),
                )?;
            }
            return self.apply_row_scale(a.row_scale.as_ref(), &a.y, total);
        }
        if v.gmm == 0
            || d.k == 0
            || d.k >= 65536
            || d.n >= 65536
            || d.groups > 1024
            || (a.bias.is_some() && dt == DType::BF16 && !v.cast)
            || !bias_mine
        {
            return self.gmm_host(&a);
        }
        // Weight as [G, K, N]: KN is contiguous, NK is expressed by transposed strides.
        let mut wd = desc_of(&a.w, OP_GG, "w")?;
        let (k, n) = (d.k as i64, d.n as i64);
        wd.dims = vec![d.groups as i64, k, n];
        wd.strides = match a.layout {
            WeightLayout::KN => vec![k * n, n, 1],
            WeightLayout::NK => vec![k * n, 1, k],
        };
        let x = TensorList::new(&self.rt, vec![self.t(&desc_of(&a.x, OP_GG, "x")?)?])?;
        let w = TensorList::new(&self.rt, vec![self.t(&wd)?])?;
        let y = TensorList::new(&self.rt, vec![self.t(&desc_of(&a.y.as_ref(), OP_GG, "y")?)?])?;
        let group = self.t(&desc_of(&a.group_end, OP_GG, "group_end")?)?;
        let mut bias_f32 = None;
        let bias = match &a.bias {
            None => None,
            Some(b) if dt == DType::BF16 => {
                let m = DevMem::new(&self.rt, d.groups * d.n * 4)?;
                let src = self.t(&desc_of(b, OP_GG, "bias")?)?;
                let dst = self.t(&scratch_desc(&m, sys::ACL_FLOAT, &[d.groups, d.n]))?;
                self.rt.cast(&src, sys::ACL_FLOAT, &dst)?;
                let l = TensorList::new(
                    &self.rt,
                    vec![self.t(&scratch_desc(&m, sys::ACL_FLOAT, &[d.groups, d.n]))?],
                )?;
                bias_f32 = Some(m);
                Some(l)
            }
            Some(b) => Some(TensorList::new(&self.rt, vec![self.t(&desc_of(b, OP_GG, "bias")?)?])?),
        };
        self.rt.grouped_matmul(v.gmm == 4, &x, &w, bias.as_ref(), &group, &y)?;
        drop(bias_f32);
        self.apply_row_scale(a.row_scale.as_ref(), &a.y, total)
    }

    /// The `group_end` check of OPS.md §1 (non-decreasing from 0, last `<= M`) before anything is
    /// written; returns the routed-row total `group_end[G-1]`.
    ///
    /// On the device where the libraries allow: `aclnnAmin` / `aclnnAmax` of `group_end` (INT64,
    /// 16 bytes read: no entry below 0 or above `M`), then, for `G >= 2` and `M < 2^24` (every
    /// entry, now in `[0, M]`, and every difference exact in f32), the adjacent differences
    /// `group_end[1:] - group_end[:-1]` as `aclnnReduceSum(dim 0)` over a `[2, G-1]` f32 stack of
    /// `aclnnCast(group_end[1:])` and `aclnnMuls(aclnnCast(group_end[:-1]), -1)`, whose
    /// `aclnnAmin` (4 bytes) must be `>= 0`. Sorted, the maximum is the last entry. Otherwise
    /// `group_end` is read.
    /// Shared with the quantized `grouped_gemm` (OPS.md §6 keeps §1's rules).
    pub(crate) fn gmm_check_group_end(&self, group_end: &TensorRef<'_>, m: usize) -> Result<usize> {
        let read = || -> Result<usize> {
            let ge: Vec<i64> = self.fetch(group_end)?;
            check_group_end(&ge, m)?;
            Ok(ge.last().copied().unwrap_or(0) as usize)
        };
        let v = self.rt.lib.versions;
        let g = group_end.numel();
        let diffs = g < 2 || (m < (1 << 24) && v.cast && v.muls && v.scalar && v.reduce_sum);
        if !diffs {
            return read();
        }
        let Some((lo, hi)) = self.index_extremes(group_end, OP_GG, "group_end")? else {
            return read();
        };
        check_extremes(
            OP_GG,
            "group_end",
            (lo, hi),
            0,
            m as i64 + 1,
            "OPS.md §1: non-decreasing from 0, group_end[G-1] <= M",
        )?;
        if g >= 2 {
            match self.gmm_min_step(group_end, g)? {
                Some(step) if step < 0.0 => {
                    return Err(Error::invalid(
                        OP_GG,
                        "group_end",
                        format!(
                            "the ends decrease somewhere (smallest step {step}, aclnnAmin of group_end[1:] - group_end[:-1]; must be non-decreasing)"
                        ),
                    ));
                }
                Some(_) => {}
                None => return read(),
            }
        }
        Ok(hi as usize)
    }

    /// The smallest adjacent difference `min(group_end[i+1] - group_end[i])` of the `g >= 2`
    /// entries, in f32 (exact: the caller checked every entry is in `[0, M]`, `M < 2^24`),
    /// computed on the device and read back (4 bytes). `None` when a primitive refused the call.
    fn gmm_min_step(&self, group_end: &TensorRef<'_>, g: usize) -> Result<Option<f64>> {
        let ge = desc_of(group_end, OP_GG, "group_end")?;
        let Some(steps) = self.int_steps_f32(&ge, g - 1)? else {
            return Ok(None);
        };
        let st = self.t(&scratch_desc(&steps, sys::ACL_FLOAT, &[g - 1]))?;
        Ok(self
            .extreme_bits(&st, 1, sys::ACL_FLOAT, false)?
            .map(|b| f32::from_bits(b as u32) as f64))
    }

    /// `K = 0` with a bias (OPS.md §1: `y[r] = row_scale[r] · bias[g(r)]`, the matmul term empty):
    /// the group of each routed row is `aclnnSearchSorted(group_end, aclnnArange(0, total),
    /// right)` (the number of ends `<= r`; `group_end` was checked sorted), and
    /// `aclnnIndexSelect(bias, 0, group)` writes `y[:total]`; the caller then applies the row
    /// scale. Rows past `total` stay unwritten, as GroupedMatmul leaves them. `Rejected` when a
    /// primitive refused the call at phase one (nothing written) or is missing.
    fn gmm_k0_bias(&self, a: &GroupedGemm<'_>, total: usize) -> Result<Outcome> {
        let v = self.rt.lib.versions;
        let Some(bias) = &a.bias else {
            return Err(Error::device(
                crate::ffi::NAME,
                0,
                "internal: K = 0 bias path without a bias",
            ));
        };
        if !(v.arange && v.search_sorted && v.index_select && v.scalar) {
            return Ok(Outcome::Rejected(Error::unsupported(
                OP_GG,
                crate::ffi::NAME,
                "K = 0 with a bias needs aclnnArange, aclnnSearchSorted and aclnnIndexSelect",
            )));
        }
        if total == 0 {
            return Ok(Outcome::Ran);
        }
        let ramp = DevMem::new(&self.rt, total * 8)?;
        let ramp_t = self.t(&scratch_desc(&ramp, sys::ACL_INT64, &[total]))?;
        let group = DevMem::new(&self.rt, total * 8)?;
        let group_t = self.t(&scratch_desc(&group, sys::ACL_INT64, &[total]))?;
        let (zero, one, end) = (
            Scalar::i64(&self.rt, 0)?,
            Scalar::i64(&self.rt, 1)?,
            Scalar::i64(&self.rt, total as i64)?,
        );
        if let Outcome::Rejected(e) = self.rt.arange(&zero, &end, &one, &ramp_t)? {
            return Ok(Outcome::Rejected(e));
        }
        let ge = self.t(&desc_of(&a.group_end, OP_GG, "group_end")?)?;
        if let Outcome::Rejected(e) = self.rt.search_sorted(&ge, &ramp_t, true, &group_t)? {
            return Ok(Outcome::Rejected(e));
        }
        let mut yd = desc_of(&a.y.as_ref(), OP_GG, "y")?;
        yd.dims[0] = total as i64;
        let bt = self.t(&desc_of(bias, OP_GG, "bias")?)?;
        self.rt.gather_outcome(3, &bt, &group_t, &self.t(&yd)?)
    }

    /// `y[:total] *= row_scale[:total]` after the matmul (or the K = 0 zeros): on the device with
    /// aclnnInplaceMul when present and `row_scale` is device memory, else (or when
    /// aclnnInplaceMul refused the call at phase one) on the host. `y` is `[M, N]`; shared with
    /// the quantized `grouped_gemm` (OPS.md §6: `row_scale` as in §1).
    pub(crate) fn apply_row_scale(
        &self,
        row_scale: Option<&TensorRef<'_>>,
        y: &TensorMut<'_>,
        total: usize,
    ) -> Result<()> {
        let v = self.rt.lib.versions;
        let n = y.shape()[1];
        let dt = y.dtype();
        let scale_on_device = v.inplace_mul && row_scale.is_some_and(|r| self.mine(r.buffer(), "row_scale").is_ok());
        if let (Some(rs), true, true) = (row_scale, total > 0, scale_on_device) {
            // Router weights scale the whole expert output: `y[:total] *= row_scale[:total, None]`
            // with aclnnInplaceMul (f32 other beside an f16/bf16 y is computed in the promoted f32
            // and stored in y's dtype, [HA canncommercial/800 aclnnMul&aclnnInplaceMul.md]). Rows
            // past the group-list total stay unwritten, as GroupedMatmul leaves them.
            let mut yd = desc_of(&y.as_ref(), OP_GG, "y")?;
            yd.dims[0] = total as i64;
            let mut sd = desc_of(rs, OP_GG, "row_scale")?;
            sd.dims = vec![total as i64, 1];
            sd.strides = vec![1, 1];
            // A phase-one refusal leaves y as the matmul wrote it: scale it on the host below
            // (never an error over a half-written y).
            if let Outcome::Ran = self.rt.inplace_mul_outcome(&self.t(&yd)?, &self.t(&sd)?)? {
                return Ok(());
            }
        }
        if let (Some(rs), true) = (row_scale, total > 0) {
            // No aclnnInplaceMul: applied on the host to the routed rows.
            let s: Vec<f32> = self.fetch(rs)?;
            let es = dt.size();
            let (off, _) = y.byte_range();
            let mut yb = vec![0u8; total * n * es];
            self.rt.d2h(&mut yb, y.buffer().addr() + off as u64)?;
            for (r, &sr) in s.iter().enumerate().take(total) {
                for c in 0..n {
                    let p = (r * n + c) * es;
                    let b = &mut yb[p..p + es];
                    match dt {
                        DType::F32 => {
                            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * sr;
                            b.copy_from_slice(&v.to_le_bytes());
                        }
                        DType::F16 => {
                            let v = half::f16::from_le_bytes([b[0], b[1]]).to_f32() * sr;
                            b.copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
                        }
                        _ => {
                            let v = half::bf16::from_le_bytes([b[0], b[1]]).to_f32() * sr;
                            b.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes());
                        }
                    }
                }
            }
            self.put(y, off, &yb)?;
        }
        Ok(())
    }
}
