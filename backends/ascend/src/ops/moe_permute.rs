//! `moe_permute` on `aclnnMoeInitRoutingV3` / `V2` (ffi/init_routing.rs), or the host.

use moehal_ascend_sys as sys;
use moehal_core::ops::{moe_permute::check_ids, Checked, MoePermute};
use moehal_core::{Backend, Error, Reference, Result};

use crate::backend::{acl_dt, bytes_of, desc_of, hm, hv, reshaped, scratch_desc, Ascend};
use crate::ffi::{DevMem, IntArray, Outcome, NAME};
use crate::routes::PermutePath;

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

    /// `Backend::moe_permute` on this device.
    pub(crate) fn run_moe_permute(&self, args: Checked<MoePermute<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
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
