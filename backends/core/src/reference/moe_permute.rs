//! Reference `moe_permute`: count, prefix-sum, then place slots in `(t, j)` order.

use crate::host::{slice, slice_mut};
use crate::ops::moe_permute::{check_ids, MoePermute};
use crate::{Error, Result};

const OP: &str = "moe_permute";

pub(super) fn run(mut a: MoePermute<'_>) -> Result<()> {
    let (t, k) = a.dims();
    let e = a.num_experts;
    let ids = slice::<i32>(&a.ids, OP, "ids")?;
    check_ids(ids, e)?;
    let mut counts = vec![0i64; e];
    for &id in ids.iter().filter(|&&i| i >= 0) {
        counts[id as usize] += 1;
    }
    let mut cursor = vec![0i64; e];
    {
        let group_end = slice_mut::<i64>(&mut a.group_end, OP, "group_end")?;
        let mut acc = 0i64;
        for g in 0..e {
            cursor[g] = acc;
            acc += counts[g];
            group_end[g] = acc;
        }
    }
    let mut rows_of_slot = vec![-1i64; t * k];
    {
        let src_token = slice_mut::<i64>(&mut a.src_token, OP, "src_token")?;
        for ti in 0..t {
            for j in 0..k {
                let id = ids[ti * k + j];
                if id >= 0 {
                    let r = cursor[id as usize];
                    cursor[id as usize] += 1;
                    src_token[r as usize] = ti as i64;
                    rows_of_slot[ti * k + j] = r;
                }
            }
        }
    }
    slice_mut::<i64>(&mut a.slot_row, OP, "slot_row")?.copy_from_slice(&rows_of_slot);
    if let (Some(x), Some(xp)) = (&a.x, &mut a.x_perm) {
        let row_bytes = x.shape()[1] * x.dtype().size();
        let src = crate::host::bytes(x.buffer(), OP, "x")?;
        let src = &src[x.offset() * x.dtype().size()..][..t * row_bytes];
        let (dt, off) = (xp.dtype(), xp.offset());
        let dst = crate::host::bytes_mut(xp.buffer_mut(), OP, "x_perm")?;
        let dst = dst
            .get_mut(off * dt.size()..)
            .ok_or_else(|| Error::invalid(OP, "x_perm", "offset past buffer"))?;
        for (s, &r) in rows_of_slot.iter().enumerate() {
            if r >= 0 {
                let ti = s / k;
                dst[r as usize * row_bytes..][..row_bytes].copy_from_slice(&src[ti * row_bytes..][..row_bytes]);
            }
        }
    }
    Ok(())
}
