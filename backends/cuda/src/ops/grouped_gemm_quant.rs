//! `grouped_gemm` with quantized operands (kernels/cuda/grouped_gemm_q.cu, OPS.md §6): `gg_check`
//! (grouped_gemm.cu) validates `group_end`, then one SIMT kernel per (weight format, activation,
//! output dtype) pairing. Correct for every §6 pairing; the tensor-core paths are owed.

use moehal_core::ops::{grouped_gemm::check_group_end, ActFormat, GroupedGemmQ, QuantDesc, WeightFormat};
use moehal_core::quant::ScaleFormat;
use moehal_core::{Checked, DType, Error, Result};

use super::cdiv;
use crate::device::CudaBackend;
use crate::kernels::Unit;
use crate::memory::Carve;
use crate::raw::Arg;

/// Threads per block (one output column each): `GQ_THREADS` in grouped_gemm_q.cu.
pub(crate) const GQ_THREADS: usize = 256;

/// The kernel serving `desc`, or `None` for a pairing OPS.md §6 does not define (or an output
/// dtype it does not allow): weight-only float `x` needs `y` of `x`'s dtype; e4m3 `x` pairs with
/// `fp8_block`, i8 `x` with `int8`, each with an f32/bf16/f16 `y`.
pub(crate) fn gq_kernel(desc: &QuantDesc) -> Option<String> {
    let QuantDesc::GroupedGemm { w, x, y } = *desc else {
        return None;
    };
    let floats = [DType::F32, DType::BF16, DType::F16];
    let ok = x.pairs_with(w)
        && floats.contains(&y)
        && match x {
            ActFormat::Float(d) => d == y,
            ActFormat::Fp8 => w == WeightFormat::Fp8Block,
            ActFormat::Int8 => w == WeightFormat::Int8,
        };
    ok.then(|| format!("gq_{}_{}_{}", w.name(), x.name(), y.name()))
}

/// Launch grid: `(ceil(N / 256), min(M, 65535))`; the kernel block-strides over rows.
pub(crate) fn gq_grid(m: usize, n: usize) -> (u32, u32) {
    (cdiv(n, GQ_THREADS).max(1) as u32, m.clamp(1, 65_535) as u32)
}

impl CudaBackend {
    /// `Backend::grouped_gemm_quant` on this device.
    pub(crate) fn run_grouped_gemm_quant(&self, args: Checked<GroupedGemmQ<'_>>) -> Result<()> {
        const OP: &str = "grouped_gemm";
        let a = args.into_inner();
        let desc = a.desc();
        let name = gq_kernel(&desc).ok_or_else(|| {
            Error::unsupported(
                OP,
                crate::NAME,
                format!("quantized pairing {desc:?} has no CUDA kernel"),
            )
        })?;
        let d = a.dims();
        let x = self.dptr(&a.x, OP, "x")?;
        let xs = self.opt_ptr(a.x_scale.as_ref(), OP, "x_scale")?;
        let w = self.dptr(&a.w, OP, "w")?;
        let ws = self.dptr(&a.w_scale, OP, "w_scale")?;
        let ge = self.dptr(&a.group_end, OP, "group_end")?;
        let rs = self.opt_ptr(a.row_scale.as_ref(), OP, "row_scale")?;
        let bias = self.opt_ptr(a.bias.as_ref(), OP, "bias")?;
        let y = self.dptr_mut(&a.y, OP, "y")?;
        if d.groups == 0 {
            return Ok(());
        }
        let e8 = |f: Option<ScaleFormat>| i32::from(f == Some(ScaleFormat::Ue8m0));
        let s = self.begin()?;
        let mut sc = self.lock(&self.scratch)?;
        let mut carve = Carve::new();
        let prefix_off = carve.take((d.groups + 1) * 8);
        let base = self.ensure_scratch(&mut sc, carve.next, s)?;
        self.flag_reset(base, s)?;
        let check = [
            Arg::P(ge),
            Arg::I64(d.groups as i64),
            Arg::I64(d.m as i64),
            Arg::I64(64),
            Arg::P(base + prefix_off as u64),
            Arg::P(base),
        ];
        self.launch(s, Unit::GroupedGemm, "gg_check", (1, 1), 1024, 0, &check)?;
        if d.m > 0 && d.n > 0 {
            let args = [
                Arg::P(x),
                Arg::P(xs),
                Arg::I32(e8(a.x_scale_format())),
                Arg::P(w),
                Arg::P(ws),
                Arg::I32(e8(Some(a.w_scale_format()))),
                Arg::P(ge),
                Arg::P(rs),
                Arg::P(bias),
                Arg::P(y),
                Arg::I64(d.m as i64),
                Arg::I64(d.n as i64),
                Arg::I64(d.k as i64),
                Arg::I64(d.groups as i64),
                Arg::P(base),
            ];
            self.launch(
                s,
                Unit::GemmQuant,
                &name,
                gq_grid(d.m, d.n),
                GQ_THREADS as u32,
                0,
                &args,
            )?;
        }
        let (code, idx) = self.flag_read(base, s)?;
        drop(sc);
        if code != 0 {
            let v: Vec<i64> = self.download_typed(&a.group_end, s)?;
            check_group_end(&v, d.m)?;
            return Err(Error::invalid(
                OP,
                "group_end",
                format!("group_end[{idx}] is out of order or outside [0, M = {}]", d.m),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::SOURCES;

    /// Every pairing OPS.md §6 defines has a kernel instantiated in grouped_gemm_q.cu under the
    /// name the host launches; undefined pairings have none.
    #[test]
    fn every_defined_pairing_names_an_instantiated_kernel() {
        let src = SOURCES[Unit::GemmQuant as usize].1;
        let floats = [DType::F32, DType::BF16, DType::F16];
        let mut acts: Vec<ActFormat> = floats.iter().map(|&d| ActFormat::Float(d)).collect();
        acts.extend([ActFormat::Fp8, ActFormat::Int8]);
        let mut served = 0;
        for w in WeightFormat::ALL {
            for &x in &acts {
                for y in [DType::F32, DType::BF16, DType::F16, DType::I8] {
                    let desc = QuantDesc::GroupedGemm { w, x, y };
                    match gq_kernel(&desc) {
                        Some(name) => {
                            assert!(src.contains(&format!("GQ({name},")), "{name} not instantiated");
                            assert!(x.pairs_with(w) && y != DType::I8);
                            served += 1;
                        }
                        None => assert!(
                            !x.pairs_with(w) || y == DType::I8 || matches!(x, ActFormat::Float(d) if d != y),
                            "{desc:?} defined by OPS.md but unserved"
                        ),
                    }
                }
            }
        }
        // 3 formats x 3 float x (weight-only) + fp8 x 3 y + int8 x 3 y.
        assert_eq!(served, 15);
        assert_eq!(src.matches("\nGQ(gq_").count(), 15);
    }

    /// The kernel's row -> group rule (`gq_group`: the first g with group_end[g] > m) and its grid:
    /// every row below group_end[G-1] is visited once by the block-stride over grid.y and lands in
    /// the group whose range holds it (empty groups skipped); every column by one thread.
    #[test]
    fn row_to_group_and_grid_cover_every_output_once() {
        let gq_group = |ge: &[i64], m: i64| {
            let (mut lo, mut hi) = (0usize, ge.len() - 1);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if ge[mid] > m {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            lo
        };
        for ge in [
            vec![3i64, 3, 7, 12],
            vec![0, 0, 5],
            vec![1],
            vec![70_000, 70_001, 140_000],
        ] {
            let rows = *ge.last().unwrap();
            let m_total = rows as usize + 4; // guard rows past the last group
            let (gx, gy) = gq_grid(m_total, 300);
            assert_eq!(gx as usize * GQ_THREADS >= 300, (gx as usize - 1) * GQ_THREADS < 300);
            let mut seen = vec![0u32; rows as usize];
            for by in 0..gy as i64 {
                let mut m = by;
                while m < rows {
                    let g = gq_group(&ge, m);
                    let start = if g == 0 { 0 } else { ge[g - 1] };
                    assert!(start <= m && m < ge[g], "row {m} -> group {g} of {ge:?}");
                    seen[m as usize] += 1;
                    m += gy as i64;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{ge:?}");
        }
    }
}
