//! OPS.md §6 `grouped_gemm` with quantized operands. W8A8 (`int8` weights with i8 `x` and an f32
//! per-token `x_scale`) into an f16 or bf16 `y` runs on the device through the A8W8 path of
//! `aclnnGroupedMatmulV4` (ffi/grouped_matmul.rs; ascend-emu RULES.md QG1-QG6); everything else
//! this backend accepts runs the reference on host copies ([`Ascend::gmmq_host`]).
//!
//! Which combination, per `y` dtype (the A2 "A8W8 数据类型要求" table, [OTF V4 doc], RULES.md
//! QG3; the FLOAT per-channel scale is taken as given, since a BFLOAT16 scale would round
//! `w_scale` and not be OPS.md's product):
//! - f16: FLOAT scale → FLOAT16 out on an ND weight. Ours, layout NK `[G, N, K]`, is the
//!   transposed-strides ND view `[G, K, N]` strides `[K·N, 1, K]` (QG2): no copy.
//! - bf16: FLOAT scale → BFLOAT16 out needs a FRACTAL_NZ weight: a `[G, K, N]`-contiguous copy
//!   in a device scratch (aclnnCast INT8 → INT8 of the view), packed by aclnnTransMatmulWeight
//!   (NZ1-NZ5). Every bf16 call copies and packs the whole weight (G·K·N bytes and two
//!   launches before the GMM; no pack-once handle yet); the caller's weight is never written. Passing
//!   TransMatmulWeight's output to the GMM is UNDOCUMENTED (the vendor page lists other
//!   consumers; RULES.md NZ5): an emulator assumption, not probed at open.
//! - f32: not in the A2 A8W8 table (QG3): the host. Any bias: the table has bias rows (INT32 /
//!   BFLOAT16), documented but not emulated (QG3: NOT EMULATED), so the host. So does any
//!   operand that is not this device's memory (an aclnn call reads every operand as a device
//!   address), K = 0, K or N >= 65536 and more than 1024 groups.

use moehal_core::ops::{ActFormat, Checked, GroupedGemmQ, QuantDesc, WeightFormat};
use moehal_core::{Backend, DType, Reference, Result, Support};

use moehal_ascend_sys as sys;

use crate::backend::{desc_of, hm, hv, scratch_desc, Ascend};
use crate::ffi::{DevMem, Outcome, TensorList};

const OP_GG: &str = "grouped_gemm";

/// The kernel that serves the W8A8 f16 output, as `supports_quant` names it.
const A8W8_F16: &str = "aclnnGroupedMatmulV4 A8W8 (INT8 x, INT8 weight as its transposed ND view, FLOAT \
                        per-channel scale, perTokenScale = x_scale or x_scale * row_scale by aclnnInplaceMul in an [M] \
                        FLOAT scratch before the GMM, FLOAT16 out rounded once); a bias (documented A8W8 rows, not emulated), K = 0, K or N >= 65536, > 1024 groups or a host \
                        operand take the host";
/// The kernel that serves the W8A8 bf16 output.
const A8W8_BF16: &str = "aclnnGroupedMatmulV4 A8W8 (INT8 x, INT8 weight copied [G, K, N] by aclnnCast and packed \
                         FRACTAL_NZ by aclnnTransMatmulWeight in a per-call scratch: every call copies and packs the whole weight, no pack-once handle yet; \
                         FLOAT per-channel scale and \
                         perTokenScale = x_scale or x_scale * row_scale by aclnnInplaceMul in an [M] FLOAT scratch before \
                         the GMM, BFLOAT16 out rounded once); a bias (documented A8W8 rows, not emulated), K = 0, K or N >= \
                         65536, > 1024 groups or a host operand take the host. Rests on an UNDOCUMENTED pairing \
                         (emulator assumption, ascend-emu RULES.md NZ5): the vendor page names MatMul / Mm / \
                         WeightQuantBatchMatmulV2/V3 / QuantMatmulV3, not GroupedMatmulV4, as consumers of \
                         aclnnTransMatmulWeight's output; not probed at open";

impl Ascend {
    /// Whether (and how) this backend runs the §6 variant `op`. Only the `int8` × i8 pairing
    /// (W8A8, the 910B production path) is served: into f16 / bf16 on the device (when the
    /// libraries have the ops), into f32 by the reference on host copies. The other
    /// formats and the quantize ops have no kernels here yet.
    pub(crate) fn quant_support(&self, op: &QuantDesc) -> Support {
        let QuantDesc::GroupedGemm {
            w: WeightFormat::Int8,
            x: ActFormat::Int8,
            y,
        } = *op
        else {
            return Support::no(moehal_core::backend::QUANT_PENDING);
        };
        let v = self.rt.lib.versions;
        let v4 = v.gmm == 4;
        match y {
            DType::F16 if v4 => Support::yes(A8W8_F16),
            DType::BF16 if v4 && v.trans_weight && v.cast => Support::yes(A8W8_BF16),
            DType::F16 => Support::yes("host: moehal_core::Reference on host copies (no aclnnGroupedMatmulV4 in these libraries)"),
            DType::BF16 => Support::yes(
                "host: moehal_core::Reference on host copies (BFLOAT16 out with a FLOAT scale needs a FRACTAL_NZ weight: \
                 no aclnnGroupedMatmulV4, aclnnTransMatmulWeight or aclnnCast in these libraries)",
            ),
            _ => Support::yes(
                "host: moehal_core::Reference on host copies (A8W8 GroupedMatmulV4 has no FLOAT output with FLOAT scales)",
            ),
        }
    }

    /// `Backend::grouped_gemm_quant` on this device (OPS.md §6 with §1's rules: `group_end` checked
    /// before anything is written, rows at or past `group_end[G-1]` untouched, empty groups).
    ///
    /// # Errors
    /// [`moehal_core::Error::Unsupported`] for a pairing other than `int8` × i8;
    /// [`moehal_core::Error::InvalidArgument`] for a `y` that is not this backend's memory (field
    /// `y`) and for a bad `group_end` (nothing written); device errors.
    pub(crate) fn run_grouped_gemm_quant(&self, args: Checked<GroupedGemmQ<'_>>) -> Result<()> {
        let a = args.into_inner();
        let desc = a.desc();
        if let Support::No { reason } = self.quant_support(&desc) {
            return Err(moehal_core::Error::unsupported(
                OP_GG,
                self.name(),
                format!("{}: {reason}", desc.variant()),
            ));
        }
        let _g = self.lock();
        self.mine(a.y.buffer(), "y")?;
        let d = a.dims();
        let v = self.rt.lib.versions;
        let mut inputs = vec![&a.x, &a.w, &a.w_scale, &a.group_end];
        inputs.extend(a.x_scale.as_ref());
        inputs.extend(a.row_scale.as_ref());
        inputs.extend(a.bias.as_ref());
        let all_mine = inputs.iter().all(|t| self.mine(t.buffer(), "operand").is_ok());
        let y_on_device = match a.y.dtype() {
            DType::F16 => true,
            DType::BF16 => v.trans_weight && v.cast,
            _ => false,
        };
        // row_scale is folded into the per-token scale on the device: aclnnInplaceMul, and
        // aclnnCast to copy a strided x_scale.
        let pts_on_device = a.row_scale.is_none()
            || (v.inplace_mul && (v.cast || a.x_scale.as_ref().is_some_and(|t| t.layout().is_contiguous())));
        if !y_on_device
            || !pts_on_device
            || a.bias.is_some()
            || !all_mine
            || v.gmm != 4
            || d.k == 0
            || d.k >= 65536
            || d.n >= 65536
            || d.groups > 1024
        {
            return self.gmmq_host(&a);
        }
        // OPS.md §1: the group_end values are checked before anything is written.
        let total = self.gmm_check_group_end(&a.group_end, d.m)?;
        // No routed row (every row past group_end[G-1], which covers G = 0 and M = 0) or no
        // column: nothing to write (OPS.md §1), so no Cast / pack / GMM is issued
        // (aclnnCalculateMatmulWeightSizeV2 refuses a 0 dim).
        if total == 0 || d.groups == 0 || d.m == 0 || d.n == 0 {
            return Ok(());
        }
        match self.gmmq_a8w8(&a)? {
            // The GMM is the only write to y (row_scale was folded into its perTokenScale).
            Outcome::Ran => Ok(()),
            // Phase one refused (nothing enqueued, nothing written to y): the host computes it.
            Outcome::Rejected(_) => self.gmmq_host(&a),
        }
    }

    /// The A8W8 GroupedMatmulV4 call: `y[r, n] = (Σ_k x[r,k]·w[g,n,k]) · w_scale[g,n] ·
    /// pts[r]` for the routed rows (the INT8 sum exact in INT32, the scaling in f32, one
    /// rounding to y's dtype; RULES.md QG5), where `pts = x_scale` or, with a `row_scale`,
    /// `pts = x_scale ⊙ row_scale` computed first in an `[M]` f32 device scratch (a device copy
    /// of `x_scale`, then aclnnInplaceMul by `row_scale`). So the GMM is the only write to `y`:
    /// OPS.md §1's row scaling costs no second rounding, an accumulator beyond f16's 65504 that
    /// `row_scale` brings back in range stays finite, and nothing after the GMM can fail over a
    /// half-written `y`.
    ///
    /// f16 `y`: the weight `[G, N, K]` is passed as the ND view `[G, K, N]` with strides
    /// `[K·N, 1, K]` (QG2, G11), no copy. bf16 `y` (FLOAT scale → BFLOAT16 out needs a
    /// FRACTAL_NZ weight, QG3): the view is copied contiguous `[G, K, N]` into a device scratch
    /// sized by aclnnCalculateMatmulWeightSizeV2 (aclnnCast INT8 → INT8 of the strided view: a
    /// device copy, exact), packed there by aclnnTransMatmulWeight (NZ4-NZ5) and that tensor
    /// passed as the weight. The caller's weight is never written. `Rejected` (nothing written to
    /// `y`) when a call refused at phase one, or when the setup before the GMM failed: the NZ size
    /// query (aclnnCalculateMatmulWeightSizeV2) or a scratch allocation.
    fn gmmq_a8w8(&self, a: &GroupedGemmQ<'_>) -> Result<Outcome> {
        let d = a.dims();
        let Some(xs) = &a.x_scale else {
            return Err(moehal_core::Error::invalid(OP_GG, "x_scale", "W8A8 needs x_scale"));
        };
        // The per-token scale, with row_scale folded in before the GMM.
        let mut _pts = None;
        let pt_d = match &a.row_scale {
            None => desc_of(xs, OP_GG, "x_scale")?,
            Some(rs) => {
                let m = match DevMem::new(&self.rt, d.m * 4) {
                    Ok(m) => m,
                    // Nothing written yet: the host computes it.
                    Err(e) => return Ok(Outcome::Rejected(e)),
                };
                let pd = scratch_desc(&m, sys::ACL_FLOAT, &[d.m]);
                if xs.layout().is_contiguous() {
                    self.rt.d2d(m.ptr, m.len, xs.addr(), d.m * 4)?;
                } else if let Outcome::Rejected(e) =
                    self.rt
                        .cast_outcome(&self.t(&desc_of(xs, OP_GG, "x_scale")?)?, sys::ACL_FLOAT, &self.t(&pd)?)?
                {
                    return Ok(Outcome::Rejected(e));
                }
                if let Outcome::Rejected(e) = self
                    .rt
                    .inplace_mul_outcome(&self.t(&pd)?, &self.t(&desc_of(rs, OP_GG, "row_scale")?)?)?
                {
                    return Ok(Outcome::Rejected(e));
                }
                _pts = Some(m);
                pd
            }
        };
        let mut wd = desc_of(&a.w, OP_GG, "w")?;
        let (k, n) = (d.k as i64, d.n as i64);
        wd.dims = vec![d.groups as i64, k, n];
        wd.strides = vec![k * n, 1, k];
        let mut _scratch = None;
        let w_t = if a.y.dtype() == DType::BF16 {
            let shape = [d.groups as i64, k, n];
            // A failure here comes before anything is written to y: the host computes it.
            let elems = match self.rt.nz_weight_elems(&shape) {
                Ok(e) => e as usize,
                Err(e) => return Ok(Outcome::Rejected(e)),
            };
            let m = match DevMem::new(&self.rt, elems.max(d.groups * d.n * d.k)) {
                Ok(m) => m,
                Err(e) => return Ok(Outcome::Rejected(e)),
            };
            let mut packed = scratch_desc(&m, sys::ACL_INT8, &[d.groups, d.k, d.n]);
            packed.storage = (m.len as i64).max(packed.storage);
            if let Outcome::Rejected(e) = self.rt.cast_outcome(&self.t(&wd)?, sys::ACL_INT8, &self.t(&packed)?)? {
                return Ok(Outcome::Rejected(e));
            }
            let t = self.t(&packed)?;
            if let Outcome::Rejected(e) = self.rt.trans_matmul_weight(&t)? {
                return Ok(Outcome::Rejected(e));
            }
            _scratch = Some(m);
            t
        } else {
            self.t(&wd)?
        };
        let x = TensorList::new(&self.rt, vec![self.t(&desc_of(&a.x, OP_GG, "x")?)?])?;
        let w = TensorList::new(&self.rt, vec![w_t])?;
        let ws = TensorList::new(&self.rt, vec![self.t(&desc_of(&a.w_scale, OP_GG, "w_scale")?)?])?;
        let pt = TensorList::new(&self.rt, vec![self.t(&pt_d)?])?;
        let y = TensorList::new(&self.rt, vec![self.t(&desc_of(&a.y.as_ref(), OP_GG, "y")?)?])?;
        let group = self.t(&desc_of(&a.group_end, OP_GG, "group_end")?)?;
        self.rt.grouped_matmul_a8w8(&x, &w, &ws, &pt, &group, &y)
    }

    /// The reference on host copies of every operand (device operands are staged, host ones read
    /// in place); `y` is written back only when the reference succeeded, so a bad `group_end` (the
    /// reference checks it first) leaves `y` untouched.
    fn gmmq_host(&self, a: &GroupedGemmQ<'_>) -> Result<()> {
        // A staging error (memory of another backend) names the operand.
        let (sx, sw, sws, sg) = (
            self.stage_as(&a.x, "x")?,
            self.stage_as(&a.w, "w")?,
            self.stage_as(&a.w_scale, "w_scale")?,
            self.stage_as(&a.group_end, "group_end")?,
        );
        let sxs = a.x_scale.as_ref().map(|r| self.stage_as(r, "x_scale")).transpose()?;
        let ss = a
            .row_scale
            .as_ref()
            .map(|r| self.stage_as(r, "row_scale"))
            .transpose()?;
        let sb = a.bias.as_ref().map(|r| self.stage_as(r, "bias")).transpose()?;
        let mut sy = self.stage_as(&a.y.as_ref(), "y")?;
        let args = GroupedGemmQ {
            x: hv(&sx, &a.x),
            x_scale: a.x_scale.as_ref().zip(sxs.as_ref()).map(|(r, s)| hv(s, r)),
            w_format: a.w_format,
            w: hv(&sw, &a.w),
            w_scale: hv(&sws, &a.w_scale),
            group_end: hv(&sg, &a.group_end),
            row_scale: a.row_scale.as_ref().zip(ss.as_ref()).map(|(r, s)| hv(s, r)),
            bias: a.bias.as_ref().zip(sb.as_ref()).map(|(r, s)| hv(s, r)),
            y: hm(&mut sy, &a.y)?,
        };
        Reference.grouped_gemm_quant(args.validate()?)?;
        self.unstage(sy.as_ref().expect("device output staged"), &a.y)
    }
}
