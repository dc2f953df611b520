//! `grouped_gemm` on `aclnnGroupedMatmulV4` / `V3` (ffi/grouped_matmul.rs), or the host.

use moehal_ascend_sys as sys;
use moehal_core::ops::{grouped_gemm::check_group_end, Checked, GroupedGemm, WeightLayout};
use moehal_core::{Backend, DType, Reference, Result};

use crate::backend::{desc_of, hm, hv, scratch_desc, Ascend};
use crate::ffi::{DevMem, TensorList};

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
        let ge: Vec<i64> = self.fetch(&a.group_end)?;
        check_group_end(&ge, d.m)?;
        if d.m == 0 || d.n == 0 {
            return Ok(());
        }
        let v = self.rt.lib.versions;
        let dt = a.x.dtype();
        let total = ge.last().copied().unwrap_or(0) as usize;
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
            return self.apply_row_scale(&a, total);
        }
        if v.gmm == 0
            || d.k == 0
            || d.k >= 65536
            || d.n >= 65536
            || d.groups > 1024
            || (a.bias.is_some() && dt == DType::BF16 && !v.cast)
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
        self.apply_row_scale(&a, total)
    }

    /// `y[:total] *= row_scale[:total]` after the matmul (or the K = 0 zeros): on the device with
    /// aclnnInplaceMul when present and `row_scale` is device memory, else on the host.
    fn apply_row_scale(&self, a: &GroupedGemm<'_>, total: usize) -> Result<()> {
        let v = self.rt.lib.versions;
        let d = a.dims();
        let dt = a.y.dtype();
        let scale_on_device = v.inplace_mul
            && a.row_scale
                .as_ref()
                .is_some_and(|r| self.mine(r.buffer(), "row_scale").is_ok());
        if let (Some(rs), true, true) = (&a.row_scale, total > 0, scale_on_device) {
            // Router weights scale the whole expert output: `y[:total] *= row_scale[:total, None]`
            // with aclnnInplaceMul (f32 other beside an f16/bf16 y is computed in the promoted f32
            // and stored in y's dtype, [HA canncommercial/800 aclnnMul&aclnnInplaceMul.md]). Rows
            // past the group-list total stay unwritten, as GroupedMatmul leaves them.
            let mut yd = desc_of(&a.y.as_ref(), OP_GG, "y")?;
            yd.dims[0] = total as i64;
            let mut sd = desc_of(rs, OP_GG, "row_scale")?;
            sd.dims = vec![total as i64, 1];
            sd.strides = vec![1, 1];
            self.rt.inplace_mul(&self.t(&yd)?, &self.t(&sd)?)?;
        } else if let (Some(rs), true) = (&a.row_scale, total > 0) {
            // No aclnnInplaceMul: applied on the host to the routed rows.
            let s: Vec<f32> = self.fetch(rs)?;
            let es = dt.size();
            let (off, _) = a.y.byte_range();
            let mut yb = vec![0u8; total * d.n * es];
            self.rt.d2h(&mut yb, a.y.buffer().addr() + off as u64)?;
            for (r, &sr) in s.iter().enumerate().take(total) {
                for c in 0..d.n {
                    let p = (r * d.n + c) * es;
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
            self.put(&a.y, off, &yb)?;
        }
        Ok(())
    }
}
