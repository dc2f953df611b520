//! `moe_permute` (kernels/cuda/moe_permute.cu): device check of `ids`, count, column scan, scan,
//! stable scatter, and the optional row copy.

use moehal_core::ops::{moe_permute::check_ids, MoePermute};
use moehal_core::{Checked, Error, Result};

use super::{cdiv, grid1};
use crate::device::{dev_err, CudaBackend};
use crate::kernels::Unit;
use crate::memory::Carve;
use crate::raw::{self, Arg};

/// `moe_permute` chunking of `n > 0` flat slots: `(chunk, nchunks)`; `chunk` is a multiple of 32
/// (one warp step), at least 256, and there are at most 256 chunks.
fn permute_chunks(n: usize) -> (usize, usize) {
    let chunk = cdiv(cdiv(n, 256).max(256), 32) * 32;
    (chunk, cdiv(n, chunk))
}

impl CudaBackend {
    /// `Backend::moe_permute` on this device.
    pub(crate) fn run_moe_permute(&self, args: Checked<MoePermute<'_>>) -> Result<()> {
        const OP: &str = "moe_permute";
        let a = args.into_inner();
        let (t, k) = a.dims();
        let e = a.num_experts;
        let n = t * k;
        let ids = self.dptr(&a.ids, OP, "ids")?;
        let ge = self.dptr_mut(&a.group_end, OP, "group_end")?;
        let src = self.dptr_mut(&a.src_token, OP, "src_token")?;
        let slot = self.dptr_mut(&a.slot_row, OP, "slot_row")?;
        let x = self.opt_ptr(a.x.as_ref(), OP, "x")?;
        let xp = a
            .x_perm
            .as_ref()
            .map(|p| self.dptr_mut(p, OP, "x_perm"))
            .transpose()?
            .unwrap_or(0);
        let s = self.begin()?;
        if n == 0 {
            return raw::memset8(ge, 0, e * 8, s).map_err(dev_err);
        }
        let (chunk, nchunks) = permute_chunks(n);
        let mut sc = self.lock(&self.scratch)?;
        let mut carve = Carve::new();
        let cnt_off = carve.take(nchunks * e * 8);
        let total_off = carve.take(e * 8);
        let start_off = carve.take(e * 8);
        let base = self.ensure_scratch(&mut sc, carve.next, s)?;
        let (cnt, total, start) = (base + cnt_off as u64, base + total_off as u64, base + start_off as u64);
        self.flag_reset(base, s)?;
        raw::memset8(cnt, 0, nchunks * e * 8, s).map_err(dev_err)?;
        let (n64, e64) = (n as i64, e as i64);
        self.launch(
            s,
            Unit::Permute,
            "perm_check",
            (grid1(n, 256, 4096), 1),
            256,
            0,
            &[Arg::P(ids), Arg::I64(n64), Arg::I64(e64), Arg::P(base)],
        )?;
        let wgrid = (cdiv(nchunks, 8) as u32, 1);
        let count = [
            Arg::P(ids),
            Arg::I64(n64),
            Arg::I64(e64),
            Arg::P(cnt),
            Arg::I64(nchunks as i64),
            Arg::I64(chunk as i64),
            Arg::P(base),
        ];
        self.launch(s, Unit::Permute, "perm_count", wgrid, 256, 0, &count)?;
        let colscan = [
            Arg::P(cnt),
            Arg::I64(nchunks as i64),
            Arg::I64(e64),
            Arg::P(total),
            Arg::P(base),
        ];
        self.launch(
            s,
            Unit::Permute,
            "perm_colscan",
            (grid1(e, 256, 65_535), 1),
            256,
            0,
            &colscan,
        )?;
        self.launch(
            s,
            Unit::Permute,
            "perm_scan",
            (1, 1),
            1024,
            0,
            &[Arg::P(total), Arg::I64(e64), Arg::P(ge), Arg::P(start), Arg::P(base)],
        )?;
        let scatter = [
            Arg::P(ids),
            Arg::I64(n64),
            Arg::I64(k as i64),
            Arg::I64(e64),
            Arg::P(cnt),
            Arg::P(start),
            Arg::P(slot),
            Arg::P(src),
            Arg::I64(nchunks as i64),
            Arg::I64(chunk as i64),
            Arg::P(base),
        ];
        self.launch(s, Unit::Permute, "perm_scatter", wgrid, 256, 0, &scatter)?;
        if let Some(xv) = a.x.as_ref() {
            let row_bytes = xv.shape()[1] * xv.dtype().size();
            if row_bytes > 0 {
                let args = [
                    Arg::P(x),
                    Arg::I64(row_bytes as i64),
                    Arg::P(src),
                    Arg::P(ge),
                    Arg::I64(e64),
                    Arg::I64(n64),
                    Arg::P(xp),
                    Arg::P(base),
                ];
                self.launch(s, Unit::Permute, "perm_rows", (grid1(n, 8, 65_535), 1), 256, 0, &args)?;
            }
        }
        let (code, idx) = self.flag_read(base, s)?;
        drop(sc);
        if code != 0 {
            let v: Vec<i32> = self.download_typed(&a.ids, s)?;
            check_ids(&v, e)?;
            return Err(Error::invalid(OP, "ids", format!("ids[{idx}] outside [-1, E = {e})")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// perm_count + perm_colscan + perm_scan + perm_scatter, warp step by warp step.
    fn permute_sim(ids: &[i32], k: usize, e: usize) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
        let n = ids.len();
        let (chunk, nchunks) = permute_chunks(n);
        let mut cnt = vec![0i64; nchunks * e];
        for c in 0..nchunks {
            for f in c * chunk..((c + 1) * chunk).min(n) {
                if ids[f] >= 0 {
                    cnt[c * e + ids[f] as usize] += 1;
                }
            }
        }
        let mut total = vec![0i64; e];
        for x in 0..e {
            let mut acc = 0;
            for c in 0..nchunks {
                let v = cnt[c * e + x];
                cnt[c * e + x] = acc;
                acc += v;
            }
            total[x] = acc;
        }
        let mut group_end = vec![0i64; e];
        let mut start = vec![0i64; e];
        let mut run = 0;
        for x in 0..e {
            start[x] = run;
            run += total[x];
            group_end[x] = run;
        }
        let mut slot_row = vec![-1i64; n];
        let mut src = vec![-1i64; n];
        for c in 0..nchunks {
            let mut s = 0;
            while s < chunk {
                let lanes: Vec<i32> = (0..32)
                    .map(|l| {
                        let f = c * chunk + s + l;
                        if f < n {
                            ids[f]
                        } else {
                            -1
                        }
                    })
                    .collect();
                for (l, &x) in lanes.iter().enumerate() {
                    if x >= 0 {
                        let rank = lanes[..l].iter().filter(|&&y| y == x).count() as i64;
                        let pos = start[x as usize] + cnt[c * e + x as usize] + rank;
                        let f = c * chunk + s + l;
                        slot_row[f] = pos;
                        src[pos as usize] = (f / k) as i64;
                    }
                }
                for x in 0..e {
                    cnt[c * e + x] += lanes.iter().filter(|&&y| y == x as i32).count() as i64;
                }
                s += 32;
            }
        }
        (group_end, slot_row, src)
    }

    #[test]
    fn permute_chunking_and_scatter_follow_t_j_order() {
        for n in [1usize, 31, 32, 255, 256, 257, 8191, 65_536, 65_537, 1 << 20, 10_000_003] {
            let (chunk, nchunks) = permute_chunks(n);
            assert!(chunk % 32 == 0 && chunk >= 256 && nchunks <= 256, "n = {n}");
            assert!(chunk * nchunks >= n && (nchunks - 1) * chunk < n, "n = {n}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for case in 0..60 {
            let (t, k, e) = (
                rng.gen_range(1..3000usize),
                rng.gen_range(1..9usize),
                rng.gen_range(1..70usize),
            );
            let ids: Vec<i32> = (0..t * k)
                .map(|_| {
                    if rng.gen_range(0..10) == 0 {
                        -1
                    } else {
                        rng.gen_range(0..e as i32)
                    }
                })
                .collect();
            let (ge, slot_row, src) = permute_sim(&ids, k, e);
            // expected: stable sort of the routed flat slots by expert
            let mut order: Vec<usize> = (0..ids.len()).filter(|&f| ids[f] >= 0).collect();
            order.sort_by_key(|&f| ids[f]);
            for (row, &f) in order.iter().enumerate() {
                assert_eq!(slot_row[f], row as i64, "case {case}: slot {f}");
                assert_eq!(src[row], (f / k) as i64, "case {case}: row {row}");
            }
            assert!(ids.iter().zip(&slot_row).all(|(&i, &r)| (i < 0) == (r < 0)));
            for (x, &end) in ge.iter().enumerate() {
                assert_eq!(end, ids.iter().filter(|&&i| i >= 0 && i <= x as i32).count() as i64);
            }
        }
    }
}
