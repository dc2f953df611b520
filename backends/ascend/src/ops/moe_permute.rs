//! `moe_permute` composed on the device from aclnn primitives (issue 13), else on
//! `aclnnMoeInitRoutingV3` / `V2` (ffi/init_routing.rs), else the host.

use moehal_ascend_sys as sys;
use moehal_core::ops::{moe_permute::check_ids, Checked, MoePermute};
use moehal_core::{Backend, Error, Reference, Result};

use crate::backend::{acl_dt, bytes_of, desc_of, hm, hv, reshaped, scratch_desc, Ascend};
use crate::ffi::{DevMem, IntArray, OpVersions, Outcome, Scalar, Tensor, NAME};
use crate::ops::checks::check_extremes;
use crate::routes::PermutePath;

/// Whether libraries with these op versions hold every primitive of
/// [`Ascend::permute_composed`] (also behind [`crate::permute_composable_at`], so the tests ask
/// the same predicate the backend uses).
pub(crate) fn permute_composable_with(v: &OpVersions) -> bool {
    v.scalar
        && v.cast
        && v.eq_scalar
        && v.masked_fill
        && v.sort
        && v.arange
        && v.scatter
        && v.floor_divides
        && v.search_sorted
        && v.index_select
}

const OP_MP: &str = "moe_permute";

impl Ascend {
    /// `moe_permute` on the host (no x, dropped slots, or no vendor path).
    fn permute_host(&self, a: &MoePermute<'_>) -> Result<()> {
        let sx = a.x.as_ref().map(|x| self.stage(x)).transpose()?;
        let si = self.stage(&a.ids)?;
        let mut sg = self.stage(&a.group_end.as_ref())?;
        let mut ss = self.stage(&a.src_token.as_ref())?;
        let mut sr = self.stage(&a.slot_row.as_ref())?;
        let mut sp = match &a.x_perm {
            Some(p) => Some(self.stage(&p.as_ref())?),
            None => None,
        };
        let args = MoePermute {
            num_experts: a.num_experts,
            ids: hv(&si, &a.ids),
            x: a.x.as_ref().zip(sx.as_ref()).map(|(r, s)| hv(s, r)),
            group_end: hm(&mut sg, &a.group_end)?,
            src_token: hm(&mut ss, &a.src_token)?,
            slot_row: hm(&mut sr, &a.slot_row)?,
            x_perm: match (&a.x_perm, sp.as_mut()) {
                (Some(p), Some(s)) => Some(hm(s, p)?),
                _ => None,
            },
        };
        Reference.moe_permute(args.validate()?)?;
        self.unstage(sg.as_ref().expect("staged"), &a.group_end)?;
        self.unstage(ss.as_ref().expect("staged"), &a.src_token)?;
        self.unstage(sr.as_ref().expect("staged"), &a.slot_row)?;
        if let (Some(p), Some(Some(s))) = (&a.x_perm, sp.as_ref()) {
            self.unstage(s, p)?;
        }
        Ok(())
    }

    /// Whether the loaded libraries hold every primitive of [`Ascend::permute_composed`].
    pub(crate) fn permute_composable(&self) -> bool {
        permute_composable_with(&self.rt.lib.versions)
    }

    /// Whether the id range check runs on the device (`aclnnAmax` / `aclnnAmin`, a control read of
    /// two scalars) rather than reading all ids.
    pub(crate) fn permute_range_on_device(&self) -> bool {
        self.extremes_on_device()
    }

    /// The id range check of OPS.md §3 (`ids` in `[-1, E)`), before anything is written: with
    /// `aclnnAmax` / `aclnnAmin` the two extremes are computed on the device and only those 8 bytes
    /// are read (a control read, as a CUDA engine reads a flag); without them all ids are read.
    fn permute_check_ids(&self, a: &MoePermute<'_>) -> Result<()> {
        let e = a.num_experts;
        let Some((lo, hi)) = self.index_extremes(&a.ids, OP_MP, "ids")? else {
            // No reductions, no ids, or a reduction refused them: read the ids (the check must
            // run before any write).
            let ids: Vec<i32> = self.fetch(&a.ids)?;
            return check_ids(&ids, e);
        };
        check_extremes(
            OP_MP,
            "ids",
            (lo, hi),
            -1,
            e as i64,
            "OPS.md §3: -1 marks a dropped slot, else an expert in [0, E)",
        )
    }

    /// The smallest and largest element of the INT32 tensor `ids`, computed on the device
    /// (`aclnnAmin`, `aclnnAmax` over every dim, keepDim) and read back: a control read of 8 bytes.
    /// `None` when a reduction refused the call at phase one (the caller reads the ids instead).
    pub(crate) fn id_extremes(&self, ids: &Tensor<'_>, rank: usize) -> Result<Option<(i32, i32)>> {
        // The INT32 form of Ascend::tensor_extremes (ops/checks.rs), which sign-extends.
        Ok(self
            .tensor_extremes(ids, rank, sys::ACL_INT32)?
            .map(|(lo, hi)| (lo as i32, hi as i32)))
    }

    /// `moe_permute` composed on the device (OPS.md §3), no tensor data to or from the host:
    ///
    /// 1. `key = aclnnCast(ids -> INT64)`, `mask = aclnnEqScalar(ids, -1)`,
    ///    `aclnnInplaceMaskedFillScalar(key, mask, E)`: dropped slots get the key `E`, past every
    ///    expert, so they sort last;
    /// 2. `aclnnSort(key, stable, dim 0, ascending)` -> `sorted`, `perm` (INT64, row -> flat slot
    ///    `t·k + j`): stable, so inside one expert rows keep `(t, j)` order, as OPS.md requires;
    /// 3. `src_token = aclnnFloorDivides(perm, k)` (the token of each row);
    /// 4. `slot_row = aclnnScatter(arange, dim 0, index = perm, src = arange)` with `arange =
    ///    aclnnArange(0, T·k)` (`slot_row[perm[r]] = r`; `perm` is a permutation, so every slot is
    ///    written once), then `aclnnInplaceMaskedFillScalar(slot_row, mask, -1)` for dropped slots;
    /// 5. `group_end = aclnnSearchSorted(sorted, aclnnArange(0, E), right)`: the number of rows
    ///    whose key is `<= e`, i.e. the cumulative count of experts `0..=e` (dropped keys `E` are
    ///    never counted);
    /// 6. `x_perm = aclnnIndexSelect(x, 0, src_token)` (rows past the routed ones gather the
    ///    token of a dropped slot; OPS.md leaves them unspecified).
    ///
    /// Returns `Ok(false)` when a primitive refused the call at phase one before this op wrote
    /// anything it would not rewrite (the caller then runs the host path, which writes every
    /// output).
    fn permute_composed(&self, a: &MoePermute<'_>) -> Result<bool> {
        let (t, k) = a.dims();
        let e = a.num_experts;
        let n = t * k;
        if n == 0 {
            // No slots: every group is empty (src_token and slot_row have no elements). A
            // contiguous group_end is zeroed with aclrtMemset; a strided one goes to the host.
            if !a.group_end.layout().is_contiguous() {
                return Ok(false);
            }
            let (go, _) = a.group_end.byte_range();
            self.rt.memset(
                a.group_end.buffer().addr() + go as u64,
                a.group_end.buffer().len() - go,
                0,
                e * 8,
            )?;
            return Ok(true);
        }
        let ran = |o: Outcome| matches!(o, Outcome::Ran);
        let it = self.t(&desc_of(&a.ids, OP_MP, "ids")?)?;
        // 1. keys, dropped slots last.
        let key = DevMem::new(&self.rt, n * 8)?;
        let key_tk = self.t(&scratch_desc(&key, sys::ACL_INT64, &[t, k]))?;
        let key_n = self.t(&scratch_desc(&key, sys::ACL_INT64, &[n]))?;
        if !ran(self.rt.cast_outcome(&it, sys::ACL_INT64, &key_tk)?) {
            return Ok(false);
        }
        let mask = DevMem::new(&self.rt, n)?;
        let mask_t = self.t(&scratch_desc(&mask, sys::ACL_BOOL, &[t, k]))?;
        let minus1 = Scalar::i64(&self.rt, -1)?;
        if !ran(self.rt.eq_scalar(&key_tk, &minus1, &mask_t)?) {
            return Ok(false);
        }
        let big = Scalar::i64(&self.rt, e as i64)?;
        if !ran(self.rt.masked_fill(&key_tk, &mask_t, &big)?) {
            return Ok(false);
        }
        // 2. stable ascending sort.
        let sorted = DevMem::new(&self.rt, n * 8)?;
        let perm = DevMem::new(&self.rt, n * 8)?;
        let sorted_t = self.t(&scratch_desc(&sorted, sys::ACL_INT64, &[n]))?;
        let perm_t = self.t(&scratch_desc(&perm, sys::ACL_INT64, &[n]))?;
        if !ran(self.rt.sort(&key_n, true, 0, false, &sorted_t, &perm_t)?) {
            return Ok(false);
        }
        // 3. src_token = perm / k.
        let src_t = self.t(&desc_of(&a.src_token.as_ref(), OP_MP, "src_token")?)?;
        let kk = Scalar::i64(&self.rt, k as i64)?;
        if !ran(self.rt.floor_divides(&perm_t, &kk, &src_t)?) {
            return Ok(false);
        }
        // 4. slot_row[perm[r]] = r, then -1 for dropped slots.
        let zero = Scalar::i64(&self.rt, 0)?;
        let one = Scalar::i64(&self.rt, 1)?;
        let ramp = DevMem::new(&self.rt, n * 8)?;
        let ramp_t = self.t(&scratch_desc(&ramp, sys::ACL_INT64, &[n]))?;
        let nn = Scalar::i64(&self.rt, n as i64)?;
        if !ran(self.rt.arange(&zero, &nn, &one, &ramp_t)?) {
            return Ok(false);
        }
        let slot_n = self.t(&reshaped(&a.slot_row.as_ref(), &[n], OP_MP, "slot_row")?)?;
        if !ran(self.rt.scatter(&ramp_t, 0, &perm_t, &ramp_t, &slot_n)?) {
            return Ok(false);
        }
        let slot_tk = self.t(&desc_of(&a.slot_row.as_ref(), OP_MP, "slot_row")?)?;
        if !ran(self.rt.masked_fill(&slot_tk, &mask_t, &minus1)?) {
            return Ok(false);
        }
        // 5. group_end[e] = #{rows: key <= e}.
        let experts = DevMem::new(&self.rt, e * 8)?;
        let experts_t = self.t(&scratch_desc(&experts, sys::ACL_INT64, &[e]))?;
        let ee = Scalar::i64(&self.rt, e as i64)?;
        if !ran(self.rt.arange(&zero, &ee, &one, &experts_t)?) {
            return Ok(false);
        }
        let ge_t = self.t(&desc_of(&a.group_end.as_ref(), OP_MP, "group_end")?)?;
        if !ran(self.rt.search_sorted(&sorted_t, &experts_t, true, &ge_t)?) {
            return Ok(false);
        }
        // 6. x_perm = x[src_token].
        // (H = 0: nothing to gather; IndexSelect refuses empty tensors.)
        if let (Some(x), Some(xp)) = (&a.x, &a.x_perm) {
            if x.shape()[1] > 0 {
                let xt = self.t(&desc_of(x, OP_MP, "x")?)?;
                let xpt = self.t(&desc_of(&xp.as_ref(), OP_MP, "x_perm")?)?;
                if !ran(self.rt.gather_outcome(3, &xt, &src_t, &xpt)?) {
                    // The host path rewrites every output, x_perm included.
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// `Backend::moe_permute` on this device.
    pub(crate) fn run_moe_permute(&self, args: Checked<MoePermute<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        let on_device = self.mine(a.ids.buffer(), "ids").is_ok()
            && self.mine(a.group_end.buffer(), "group_end").is_ok()
            && self.mine(a.src_token.buffer(), "src_token").is_ok()
            && self.mine(a.slot_row.buffer(), "slot_row").is_ok()
            && a.x.as_ref().is_none_or(|x| self.mine(x.buffer(), "x").is_ok())
            && a.x_perm
                .as_ref()
                .is_none_or(|x| self.mine(x.buffer(), "x_perm").is_ok());
        if self.permute_composable() && on_device && a.slot_row.layout().is_contiguous() {
            self.permute_check_ids(&a)?;
            if self.permute_composed(&a)? {
                return Ok(());
            }
            return self.permute_host(&a);
        }
        let (t, k) = a.dims();
        let e = a.num_experts;
        let ids: Vec<i32> = self.fetch(&a.ids)?;
        check_ids(&ids, e)?;
        let dropped = ids.iter().any(|&i| i < 0);
        let path = self.routes.permute;
        let Some(x) =
            a.x.as_ref()
                .filter(|_| !dropped && t * k > 0 && path != PermutePath::Host)
        else {
            return self.permute_host(&a);
        };
        let h = x.shape()[1];
        let n = t * k;
        let scratch_x = if a.x_perm.is_none() {
            Some(DevMem::new(&self.rt, (n * h * x.dtype().size()).max(1))?)
        } else {
            None
        };
        let ex_desc = match (&a.x_perm, &scratch_x) {
            (Some(p), _) => reshaped(&p.as_ref(), &[n, h], OP_MP, "x_perm")?,
            (None, Some(m)) => scratch_desc(m, acl_dt(x.dtype()), &[n, h]),
            _ => return Err(Error::device(NAME, 0, "internal: no expandedX")),
        };
        let rmem = DevMem::new(&self.rt, n * 4)?;
        let xt = self.t(&desc_of(x, OP_MP, "x")?)?;
        let it = self.t(&desc_of(&a.ids, OP_MP, "ids")?)?;
        let ext = self.t(&ex_desc)?;
        let rt = self.t(&scratch_desc(&rmem, sys::ACL_INT32, &[n]))?;
        // group_end is cumulative (OPS.md); V3 gives counts (expertTokensNumType 1, the only
        // portable type, audit P3), V2 gives cumulative INT32 (flag 1). Either way the E values
        // come to the host, which reads expandedRowIdx anyway.
        let group_end: Vec<i64> = match path {
            PermutePath::V3 { range } => {
                let cmem = DevMem::new(&self.rt, e * 8)?;
                let smem = DevMem::new(&self.rt, n * 4)?;
                let ct = self.t(&scratch_desc(&cmem, sys::ACL_INT64, &[e]))?;
                let st = self.t(&scratch_desc(&smem, sys::ACL_FLOAT, &[n]))?;
                let r = if range {
                    Some(IntArray::new(&self.rt, &[0, e as i64])?)
                } else {
                    None
                };
                let o = self
                    .rt
                    .init_routing_v3(&xt, &it, n as i64, e as i64, r.as_ref(), &ext, &rt, &ct, &st)?;
                if let Outcome::Rejected(_) = o {
                    return self.permute_host(&a);
                }
                let mut c = vec![0i64; e];
                self.rt.d2h(bytemuck::cast_slice_mut(&mut c), cmem.ptr)?;
                c.iter()
                    .scan(0i64, |acc, &v| {
                        *acc += v;
                        Some(*acc)
                    })
                    .collect()
            }
            _ => {
                let cmem = DevMem::new(&self.rt, e * 4)?;
                let ct = self.t(&scratch_desc(&cmem, sys::ACL_INT32, &[e]))?;
                if let Outcome::Rejected(_) = self.rt.init_routing_v2(&xt, &it, e as i64, &ext, &rt, &ct)? {
                    return self.permute_host(&a);
                }
                let mut c = vec![0i32; e];
                self.rt.d2h(bytemuck::cast_slice_mut(&mut c), cmem.ptr)?;
                c.iter().map(|&v| v as i64).collect()
            }
        };
        if group_end.last().copied() != Some(n as i64) || group_end.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::device(
                NAME,
                0,
                format!("vendor routing returned expert token numbers that do not sum to {n}: {group_end:?}"),
            ));
        }
        // rowIdxType 0 (V3) and V2: row[t·k+j] = position of slot (t,j).
        let mut row = vec![0i32; n];
        self.rt.d2h(bytemuck::cast_slice_mut(&mut row), rmem.ptr)?;
        let slot: Vec<i64> = row.iter().map(|&r| r as i64).collect();
        let mut src = vec![-1i64; n];
        for (f, &r) in row.iter().enumerate() {
            if r < 0 || r as usize >= n || src[r as usize] >= 0 {
                return Err(Error::device(
                    NAME,
                    0,
                    format!("vendor routing returned expandedRowIdx {row:?}, not a permutation of [0, {n})"),
                ));
            }
            src[r as usize] = (f / k) as i64;
        }
        let (go, _) = a.group_end.byte_range();
        self.put(&a.group_end, go, bytes_of(&group_end))?;
        let (so, _) = a.slot_row.byte_range();
        self.put(&a.slot_row, so, bytes_of(&slot))?;
        let (to, _) = a.src_token.byte_range();
        self.put(&a.src_token, to, bytes_of(&src))?;
        Ok(())
    }
}
