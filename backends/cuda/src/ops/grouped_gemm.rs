//! `grouped_gemm` (kernels/cuda/grouped_gemm.cu): kernel choice (decode / tensor-core / SIMT), the
//! device check of `group_end` and the launch.

use moehal_core::ops::{grouped_gemm::check_group_end, GroupedGemm, WeightLayout};
use moehal_core::{Checked, DType, Error, Result, TensorRef};

use super::cdiv;
use crate::device::{CudaBackend, GemmPath};
use crate::kernels::Unit;
use crate::memory::Carve;
use crate::raw::{Arg, Stream};

const TC_SMEM: u32 = 61_440; // grouped_gemm.cu: TC_STAGES * (TC_A_STAGE + TC_B_STAGE) * 2

/// Upper bound of the m-tile slots of `grouped_gemm` (the kernels' `tile_prefix[G]` for tiles of
/// `bm` rows): `sum_g ceil(rows_g / bm) <= ceil(M / bm) + G`.
fn gemm_slots(m: usize, bm: usize, g: usize) -> usize {
    cdiv(m, bm) + g
}

fn layout_tag(l: WeightLayout) -> &'static str {
    match l {
        WeightLayout::NK => "nk",
        WeightLayout::KN => "kn",
    }
}

impl CudaBackend {
    fn gemm_choice(
        &self,
        dt: DType,
        layout: WeightLayout,
        m: usize,
        n: usize,
        k: usize,
        g: usize,
        x: u64,
        w: u64,
    ) -> GemmPath {
        let vec = 16 / dt.size();
        let aligned = (x | w) % 16 == 0;
        let dec_ok = g <= 65_535
            && aligned
            && match layout {
                WeightLayout::NK => k % vec == 0,
                WeightLayout::KN => n % vec == 0,
            };
        let tc_ok = dt != DType::F32 && aligned && k % 8 == 0 && (layout == WeightLayout::NK || n % 8 == 0);
        let want = self.gemm_path.lock().map(|p| *p).unwrap_or_default();
        match want {
            GemmPath::TensorCore if tc_ok => return GemmPath::TensorCore,
            GemmPath::Decode if dec_ok => return GemmPath::Decode,
            GemmPath::Simt => return GemmPath::Simt,
            _ => {}
        }
        if dec_ok && (m <= 64 || m <= 2 * g) {
            GemmPath::Decode
        } else if tc_ok {
            GemmPath::TensorCore
        } else {
            GemmPath::Simt
        }
    }

    /// `Backend::grouped_gemm` on this device.
    pub(crate) fn run_grouped_gemm(&self, args: Checked<GroupedGemm<'_>>) -> Result<()> {
        const OP: &str = "grouped_gemm";
        let a = args.into_inner();
        let d = a.dims();
        let dt = a.x.dtype();
        let x = self.dptr(&a.x, OP, "x")?;
        let w = self.dptr(&a.w, OP, "w")?;
        let ge = self.dptr(&a.group_end, OP, "group_end")?;
        let rs = self.opt_ptr(a.row_scale.as_ref(), OP, "row_scale")?;
        let bias = self.opt_ptr(a.bias.as_ref(), OP, "bias")?;
        let y = self.dptr_mut(&a.y, OP, "y")?;
        if d.groups == 0 {
            return Ok(());
        }
        let s = self.begin()?;
        let path = self.gemm_choice(dt, a.layout, d.m, d.n, d.k, d.groups, x, w);
        let bm: usize = match path {
            GemmPath::TensorCore => 128,
            _ => 64,
        };
        let (sc, base, prefix) = self.gg_check_launch(ge, d.groups, d.m, bm, s)?;
        if d.m > 0 && d.n > 0 {
            let name = format!("gg_{}_{}_{}", path.tag(), dt.name(), layout_tag(a.layout));
            match path {
                GemmPath::Decode => {
                    let cols = match a.layout {
                        WeightLayout::NK => 64,
                        WeightLayout::KN => 32 * (16 / dt.size()),
                    };
                    let grid = (cdiv(d.n, cols) as u32, d.groups as u32);
                    let args = [
                        Arg::P(x),
                        Arg::P(ge),
                        Arg::P(w),
                        Arg::P(rs),
                        Arg::P(bias),
                        Arg::P(y),
                        Arg::I64(d.m as i64),
                        Arg::I64(d.n as i64),
                        Arg::I64(d.k as i64),
                        Arg::I64(d.groups as i64),
                        Arg::P(base),
                    ];
                    self.launch(s, Unit::GroupedGemm, &name, grid, 256, 0, &args)?;
                }
                _ => {
                    let (bn, smem) = if path == GemmPath::TensorCore {
                        (128, TC_SMEM)
                    } else {
                        (64, 0)
                    };
                    let slots = gemm_slots(d.m, bm, d.groups);
                    let grid = (cdiv(d.n, bn) as u32, slots.min(65_535) as u32);
                    let args = [
                        Arg::P(x),
                        Arg::P(ge),
                        Arg::P(w),
                        Arg::P(rs),
                        Arg::P(bias),
                        Arg::P(y),
                        Arg::I64(d.m as i64),
                        Arg::I64(d.n as i64),
                        Arg::I64(d.k as i64),
                        Arg::I64(d.groups as i64),
                        Arg::P(prefix),
                        Arg::P(base),
                    ];
                    self.launch(s, Unit::GroupedGemm, &name, grid, 256, smem, &args)?;
                }
            }
        }
        self.gg_check_result(sc, base, s, &a.group_end, d.m)
    }

    /// The end of a grouped GEMM (float or quantized) after `gg_check` and its kernels were
    /// enqueued: wait for the stream and read gg_check's flag (holding the scratch `sc` until
    /// then), and for invalid `group_end` return core's own message (nothing was written).
    /// Lock the scratch, carve the error flag and the `[G + 1]` row-block prefix, and launch
    /// `gg_check` (group_end checked, prefix of `bm`-row blocks per group) on `s`: the float and
    /// quantized GEMMs' first step. Returns the scratch guard, its base (the flag) and the prefix
    /// address; [`Self::gg_check_result`] ends the call.
    pub(crate) fn gg_check_launch(
        &self,
        ge: u64,
        groups: usize,
        m: usize,
        bm: usize,
        s: Stream,
    ) -> Result<(std::sync::MutexGuard<'_, crate::memory::Scratch>, u64, u64)> {
        let mut sc = self.lock(&self.scratch)?;
        let mut carve = Carve::new();
        let prefix_off = carve.take((groups + 1) * 8);
        let base = self.ensure_scratch(&mut sc, carve.next, s)?;
        let prefix = base + prefix_off as u64;
        self.flag_reset(base, s)?;
        let check = [
            Arg::P(ge),
            Arg::I64(groups as i64),
            Arg::I64(m as i64),
            Arg::I64(bm as i64),
            Arg::P(prefix),
            Arg::P(base),
        ];
        self.launch(s, Unit::GroupedGemm, "gg_check", (1, 1), 1024, 0, &check)?;
        Ok((sc, base, prefix))
    }

    pub(crate) fn gg_check_result(
        &self,
        sc: std::sync::MutexGuard<'_, crate::memory::Scratch>,
        base: u64,
        s: Stream,
        group_end: &TensorRef<'_>,
        m: usize,
    ) -> Result<()> {
        let (code, idx) = self.flag_read(base, s)?;
        drop(sc);
        if code != 0 {
            let v: Vec<i64> = self.download_typed(group_end, s)?;
            check_group_end(&v, m)?;
            return Err(Error::invalid(
                "grouped_gemm",
                "group_end",
                format!("group_end[{idx}] is out of order or outside [0, M = {m}]"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn define(src: &str, name: &str) -> usize {
        let pre = format!("#define {name} ");
        let line = src
            .lines()
            .find(|l| l.starts_with(&pre))
            .unwrap_or_else(|| panic!("no {name}"));
        line[pre.len()..].split_whitespace().next().unwrap().parse().unwrap()
    }

    #[test]
    fn tc_shared_memory_matches_the_kernel_tiles() {
        let src = kernels::SOURCES[Unit::GroupedGemm as usize].1;
        let (m, n, k, st) = (
            define(src, "TC_M"),
            define(src, "TC_N"),
            define(src, "TC_K"),
            define(src, "TC_STAGES"),
        );
        assert!(src.contains("#define TC_LDA (TC_K + 8)") && src.contains("#define TC_LDB_KN (TC_N + 8)"));
        let a = m * (k + 8);
        let b = (n * (k + 8)).max(k * (n + 8));
        assert_eq!(TC_SMEM as usize, st * (a + b) * 2);
        const { assert!(TC_SMEM <= 227 * 1024) };
    }

    /// gg_check's tile prefix + gg_find_group + the slot -> rows rule of gg_simt / gg_tc.
    fn schedule(group_end: &[i64], bm: i64) -> Vec<(i64, i64, i64)> {
        let g = group_end.len();
        let mut prefix = vec![0i64; g + 1];
        for i in 0..g {
            let p = if i == 0 { 0 } else { group_end[i - 1] };
            prefix[i + 1] = prefix[i] + (group_end[i] - p + bm - 1) / bm;
        }
        let total = prefix[g];
        let mut out = Vec::new();
        for slot in 0..total {
            let (mut lo, mut hi) = (0i64, g as i64 - 1);
            while lo < hi {
                let mid = (lo + hi + 1) >> 1;
                if prefix[mid as usize] <= slot {
                    lo = mid
                } else {
                    hi = mid - 1
                }
            }
            let gi = lo as usize;
            let gstart = if gi == 0 { 0 } else { group_end[gi - 1] };
            let row0 = gstart + (slot - prefix[gi]) * bm;
            out.push((gi as i64, row0, bm.min(group_end[gi] - row0)));
        }
        out
    }

    #[test]
    fn gemm_tiles_cover_every_routed_row_once_and_nothing_past_the_last_group() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for case in 0..300 {
            let g = rng.gen_range(1..40usize);
            let mut ends = Vec::with_capacity(g);
            let mut acc = 0i64;
            for _ in 0..g {
                // many empty groups (leading, trailing, runs), some larger than a tile
                acc += match rng.gen_range(0..4) {
                    0 => 0,
                    1 => rng.gen_range(1..4),
                    2 => rng.gen_range(1..200),
                    _ => 128,
                };
                ends.push(acc);
            }
            let m = acc as usize + rng.gen_range(0..50usize); // guard rows past group_end[G-1]
            for bm in [64i64, 128] {
                let mut seen = vec![0u8; m];
                let sched = schedule(&ends, bm);
                assert!(
                    sched.len() <= gemm_slots(m, bm as usize, g),
                    "case {case}: grid too small"
                );
                for (gi, row0, rows) in sched {
                    assert!(rows >= 1 && rows <= bm, "case {case}: tile of {rows} rows");
                    let gstart = if gi == 0 { 0 } else { ends[gi as usize - 1] };
                    assert!(row0 >= gstart && row0 + rows <= ends[gi as usize]);
                    for r in row0..row0 + rows {
                        seen[r as usize] += 1;
                    }
                }
                let last = *ends.last().unwrap() as usize;
                assert!(
                    seen[..last].iter().all(|&c| c == 1),
                    "case {case}: row not covered once"
                );
                assert!(seen[last..].iter().all(|&c| c == 0), "case {case}: guard row touched");
            }
        }
    }
}
