//! `engram_hash` (kernels/cuda/engram_hash.cu): the layer constants uploaded to scratch, the id
//! check and the hash; and `engram_lookup`, fused here (hash into scratch rows, then the
//! `gather_rows.cu` gather, one flag) instead of the trait's hash-then-gather default.

use moehal_core::ops::{engram_hash::check_canonical_ids, EngramHash, EngramLookup};
use moehal_core::{Checked, Error, Result};

use super::grid1;
use crate::device::{dev_err, CudaBackend};
use crate::kernels::Unit;
use crate::memory::Carve;
use crate::raw::{self, Arg, Stream};

/// Scratch bytes `engram_launch` carves after its start (four 256-aligned regions: multipliers
/// `[N]`, primes `[C]`, offsets `[C]`, history `[max(hl, 1)]`, all 8-byte words).
fn engram_scratch(n: usize, c: usize, hl: usize) -> usize {
    4 * 256 + (n + 2 * c + hl + 1) * 8
}

impl CudaBackend {
    /// Upload the layer constants and history, check ids, hash into `rows_out`. Returns nothing;
    /// the caller reads the flag.
    fn engram_launch(
        &self,
        s: Stream,
        scratch_base: u64,
        carve: &mut Carve,
        layer: &moehal_core::engram::EngramLayer,
        ids: u64,
        t: usize,
        positions: u64,
        alive: u64,
        history: &[i64],
        rows_out: u64,
    ) -> Result<()> {
        let c = layer.columns();
        let n = layer.max_order();
        let mult = scratch_base + carve.take(n * 8) as u64;
        let primes = scratch_base + carve.take(c * 8) as u64;
        let offs = scratch_base + carve.take(c * 8) as u64;
        let hist = scratch_base + carve.take(history.len().max(1) * 8) as u64;
        raw::htod(mult, bytemuck::cast_slice(layer.multipliers()), s).map_err(dev_err)?;
        raw::htod(primes, bytemuck::cast_slice(layer.primes()), s).map_err(dev_err)?;
        raw::htod(offs, bytemuck::cast_slice(layer.offsets()), s).map_err(dev_err)?;
        raw::htod(hist, bytemuck::cast_slice(history), s).map_err(dev_err)?;
        if t == 0 {
            return Ok(());
        }
        let grid = (grid1(t, 256, 65_535), 1);
        self.launch(
            s,
            Unit::Engram,
            "engram_check",
            grid,
            256,
            0,
            &[
                Arg::P(ids),
                Arg::I64(t as i64),
                Arg::U64(layer.vocab_size()),
                Arg::P(scratch_base),
            ],
        )?;
        let args = [
            Arg::P(ids),
            Arg::P(positions),
            Arg::P(alive),
            Arg::P(hist),
            Arg::I64(history.len() as i64),
            Arg::I64(t as i64),
            Arg::I32(n as i32),
            Arg::I32(layer.heads() as i32),
            Arg::P(mult),
            Arg::P(primes),
            Arg::P(offs),
            Arg::U64(layer.pad_id()),
            Arg::P(rows_out),
            Arg::P(scratch_base),
        ];
        self.launch(s, Unit::Engram, "engram_hash", grid, 256, 0, &args)
    }

    /// `Backend::engram_hash` on this device.
    pub(crate) fn run_engram_hash(&self, args: Checked<EngramHash<'_>>) -> Result<()> {
        const OP: &str = "engram_hash";
        let a = args.into_inner();
        let t = a.ids.numel();
        let ids = self.dptr(&a.ids, OP, "ids")?;
        let pos = self.opt_ptr(a.positions.as_ref(), OP, "positions")?;
        let alive = self.opt_ptr(a.alive.as_ref(), OP, "alive")?;
        let rows = self.dptr_mut(&a.rows, OP, "rows")?;
        let s = self.begin()?;
        let mut sc = self.lock(&self.scratch)?;
        let c = a.layer.columns();
        let need = 256 + engram_scratch(a.layer.max_order(), c, a.history.len());
        let base = self.ensure_scratch(&mut sc, need, s)?;
        self.flag_reset(base, s)?;
        let mut carve = Carve::new();
        self.engram_launch(s, base, &mut carve, a.layer, ids, t, pos, alive, a.history, rows)?;
        let (code, idx) = self.flag_read(base, s)?;
        drop(sc);
        if code != 0 {
            let v: Vec<i64> = self.download_typed(&a.ids, s)?;
            check_canonical_ids(OP, "ids", &v, a.layer.vocab_size())?;
            return Err(Error::invalid(OP, "ids", format!("ids[{idx}] outside [0, V')")));
        }
        Ok(())
    }

    /// `Backend::engram_lookup` on this device, fused.
    pub(crate) fn run_engram_lookup(&self, args: Checked<EngramLookup<'_>>) -> Result<()> {
        const OP: &str = "engram_lookup";
        let a = args.into_inner();
        let t = a.ids.numel();
        let c = a.layer.columns();
        let ids = self.dptr(&a.ids, OP, "ids")?;
        let pos = self.opt_ptr(a.positions.as_ref(), OP, "positions")?;
        let alive = self.opt_ptr(a.alive.as_ref(), OP, "alive")?;
        let out = self.dptr_mut(&a.out, OP, "out")?;
        let s = self.begin()?;
        if t == 0 {
            return Ok(());
        }
        let d = a.format.row_dim(a.table.shape()[1]).unwrap_or(0);
        let _host = self.host_table_guard(&a.table)?;
        let mut sc = self.lock(&self.scratch)?;
        let (table, reg) = self.table_ptr(&a.table, OP)?;
        let res = (|| {
            let mut carve = Carve::new();
            let rows_off = carve.take(t * c * 8);
            let need = carve.next + engram_scratch(a.layer.max_order(), c, a.history.len());
            let base = self.ensure_scratch(&mut sc, need, s)?;
            let rows = base + rows_off as u64;
            self.flag_reset(base, s)?;
            self.engram_launch(s, base, &mut carve, a.layer, ids, t, pos, alive, a.history, rows)?;
            self.gather_launch(s, table, a.format, a.out.dtype(), d, rows, t * c, out, base)?;
            self.flag_read(base, s)
        })();
        if res.is_err() {
            let _ = s.sync();
        }
        if let Some(h) = reg {
            raw::host_unregister(h);
        }
        drop(sc);
        let (code, idx) = res?;
        if code != 0 {
            let v: Vec<i64> = self.download_typed(&a.ids, s)?;
            check_canonical_ids(OP, "ids", &v, a.layer.vocab_size())?;
            return Err(Error::invalid(OP, "ids", format!("ids[{idx}] outside [0, V')")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engram_scratch_bound_covers_the_carve() {
        for n in 2..=8usize {
            for heads in [1usize, 2, 8, 33, 100] {
                let c = (n - 1) * heads;
                for hl in 0..n {
                    for rows_first in [0usize, 1, 4096 * 24 + 8] {
                        let mut carve = Carve::new();
                        if rows_first > 0 {
                            carve.take(rows_first);
                        }
                        let start = carve.next;
                        let ends = [
                            carve.take(n * 8) + n * 8,
                            carve.take(c * 8) + c * 8,
                            carve.take(c * 8) + c * 8,
                            carve.take(hl.max(1) * 8) + hl.max(1) * 8,
                        ];
                        let need = start + engram_scratch(n, c, hl);
                        assert!(ends.iter().all(|&x| x <= need), "n {n} c {c} hl {hl}");
                        assert!(carve.next <= need);
                    }
                }
            }
        }
    }
}
