//! `grouped_gemm` with quantized operands (kernels/cuda/grouped_gemm_q.cu, OPS.md §6): `gg_check`
//! (grouped_gemm.cu) validates `group_end`, then one SIMT kernel per (weight format, activation,
//! output dtype) pairing, or for W8A8 (K % 32 == 0, 16-byte aligned operands) the `mma.sync`
//! m16n8k32 kernels: int8 (s8 -> s32, sm_80+) and fp8_block (e4m3 -> f32, sm_89+). The wgmma and
//! weight-only tensor-core paths are owed.

use moehal_core::ops::{ActFormat, GroupedGemmQ, QuantDesc, WeightFormat};
use moehal_core::quant::ScaleFormat;
use moehal_core::{Checked, DType, Error, Result};

use super::cdiv;
use crate::device::{CudaBackend, GemmPath};
use crate::kernels::Unit;
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

/// Rows of one m-slot of the `mma.sync` int8 kernel (gg_check's tile height).
pub(crate) const MMA_M: usize = 16;
/// Warps of one block of the `mma.sync` int8 kernel: `GQM_WARPS`.
pub(crate) const MMA_WARPS: usize = 4;
/// Columns of one block of the `mma.sync` int8 kernel (32 per warp): `GQM_N`.
pub(crate) const MMA_N: usize = MMA_WARPS * 32;

/// Whether a W8A8 call may take the `mma.sync` kernel (`<SIMT name>_mma`): int8 x int8, or
/// fp8_block x e4m3 on compute capability 8.9+ (e4m3 `mma.sync` needs sm_89); K a multiple of the
/// instruction's 32, x and w 16-byte aligned (each lane loads 4 bytes at k = 4·tig), and not forced
/// to SIMT.
pub(crate) fn mma_ok(desc: &QuantDesc, k: usize, x: u64, w: u64, path: GemmPath, cc: (i32, i32)) -> bool {
    let pairing = match desc {
        QuantDesc::GroupedGemm {
            w: WeightFormat::Int8,
            x: ActFormat::Int8,
            ..
        } => true,
        QuantDesc::GroupedGemm {
            w: WeightFormat::Fp8Block,
            x: ActFormat::Fp8,
            ..
        } => cc >= (8, 9),
        _ => false,
    };
    pairing && k % 32 == 0 && (x | w) % 16 == 0 && path != GemmPath::Simt
}

/// `mma.sync` int8 grid: `(ceil(N / 128), min(slots, 65535))` with `slots = ceil(M / 16) + G`
/// (the bound of gg_check's tile prefix for bm = 16); the kernel slot-strides over grid.y.
pub(crate) fn mma_grid(m: usize, n: usize, g: usize) -> (u32, u32) {
    (
        cdiv(n, MMA_N).max(1) as u32,
        (cdiv(m, MMA_M) + g).clamp(1, 65_535) as u32,
    )
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
        let forced = self.gemm_path.lock().map(|p| *p).unwrap_or_default();
        let mma = mma_ok(&desc, d.k, x, w, forced, self.cc);
        let s = self.begin()?;
        let (sc, base, prefix) = self.gg_check_launch(ge, d.groups, d.m, MMA_M, s)?;
        if d.m > 0 && d.n > 0 {
            // The two kernels take the same arguments, the mma one also the row-block prefix.
            let mut args = vec![
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
            ];
            if mma {
                args.extend([Arg::P(prefix), Arg::P(base)]);
                let name = format!("{name}_mma");
                let grid = mma_grid(d.m, d.n, d.groups);
                self.launch(s, Unit::GemmQuant, &name, grid, (MMA_WARPS * 32) as u32, 0, &args)?;
            } else {
                args.push(Arg::P(base));
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
        }
        self.gg_check_result(sc, base, s, &a.group_end, d.m)
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

    /// gg_check's tile prefix for tile height `bm` (grouped_gemm.rs mirrors it too).
    fn tile_prefix(ge: &[i64], bm: i64) -> Vec<i64> {
        let mut p = vec![0i64];
        let mut prev = 0;
        for &e in ge {
            let last = *p.last().unwrap();
            p.push(last + (e - prev + bm - 1) / bm);
            prev = e;
        }
        p
    }

    /// The `mma.sync` int8 kernel emulated lane by lane (the fp8 kernel shares its tiles, loads
    /// and stores; 8-bit types share the m16n8k32 fragment layout): each lane's 32-bit loads as the kernel
    /// forms them, `mma.m16n8k32` applied to the tiles those registers hold under the PTX ISA
    /// fragment layouts (A row gid / gid+8, k 4·tig..+3 / +16; B column gid, same k; C row gid /
    /// gid+8, columns 2·tig, 2·tig+1), and the epilogue's stores. Reproduces the exact i32
    /// `x @ W_g^T` on every routed row, writes each (row, column) once, nothing past the last
    /// group or past N; partial m-slots, empty groups, N not a multiple of 8 or 128, several K steps.
    #[test]
    #[allow(clippy::needless_range_loop)] // indices mirror the kernel's lanes, registers and sub-tiles
    fn int8_mma_fragments_and_tiles_reproduce_the_matmul() {
        let cases: &[(&[i64], usize, usize, usize)] = &[
            (&[3, 3, 20, 37], 40, 136, 64), // empty group, partial slots, 2 column blocks, guard rows
            (&[16], 16, 8, 32),
            (&[5, 40], 41, 13, 96),
        ];
        for &(ge, m_total, n, k) in cases {
            let g = ge.len();
            let xv: Vec<i8> = (0..m_total * k).map(|i| ((i * 37 + 11) % 255) as i8).collect();
            let wv: Vec<i8> = (0..g * n * k).map(|i| ((i * 53 + 7) % 251) as i8).collect();
            let ld = |v: &[i8], at: usize| -> [i8; 4] { [v[at], v[at + 1], v[at + 2], v[at + 3]] };
            let prefix = tile_prefix(ge, MMA_M as i64);
            let total = prefix[g];
            let (gx, gy) = mma_grid(m_total, n, g);
            let mut y: Vec<Option<i64>> = vec![None; m_total * n];
            let mut writes = vec![0u32; m_total * n];
            for bx in 0..gx as usize {
                for by in 0..gy as i64 {
                    for warp in 0..MMA_WARPS {
                        let nw0 = bx * MMA_N + warp * 32;
                        if nw0 >= n {
                            continue;
                        }
                        let mut slot = by;
                        while slot < total {
                            // gg_find_group: the largest g with prefix[g] <= slot
                            let gi = (0..g).rev().find(|&q| prefix[q] <= slot).unwrap();
                            let gstart = if gi == 0 { 0 } else { ge[gi - 1] };
                            let row0 = gstart + (slot - prefix[gi]) * MMA_M as i64;
                            let rend = ge[gi];
                            let mut acc = vec![[0i64; 4]; 32 * 4]; // [lane][j]
                            for k0 in (0..k).step_by(32) {
                                // Registers per lane, as the kernel loads them.
                                let mut a = [[[0i8; 4]; 4]; 32];
                                let mut b = [[[[0i8; 4]; 2]; 4]; 32];
                                for lane in 0..32 {
                                    let (gid, tig) = (lane / 4, lane % 4);
                                    let (ra, rb) = (row0 + gid as i64, row0 + gid as i64 + 8);
                                    let ka = k0 + 4 * tig;
                                    if ra < rend {
                                        a[lane][0] = ld(&xv, ra as usize * k + ka);
                                        a[lane][2] = ld(&xv, ra as usize * k + ka + 16);
                                    }
                                    if rb < rend {
                                        a[lane][1] = ld(&xv, rb as usize * k + ka);
                                        a[lane][3] = ld(&xv, rb as usize * k + ka + 16);
                                    }
                                    for j in 0..4 {
                                        let nn = nw0 + j * 8 + gid;
                                        if nn < n {
                                            b[lane][j][0] = ld(&wv, (gi * n + nn) * k + ka);
                                            b[lane][j][1] = ld(&wv, (gi * n + nn) * k + ka + 16);
                                        }
                                    }
                                }
                                // The tiles those registers hold (PTX ISA m16n8k32 .s8 layouts).
                                let mut at = [[0i64; 32]; 16];
                                let mut bt = [[[0i64; 8]; 32]; 4];
                                for lane in 0..32 {
                                    let (gid, tig) = (lane / 4, lane % 4);
                                    for (r, (row, kof)) in [(gid, 0), (gid + 8, 0), (gid, 16), (gid + 8, 16)]
                                        .into_iter()
                                        .enumerate()
                                    {
                                        for e in 0..4 {
                                            at[row][kof + 4 * tig + e] = a[lane][r][e] as i64;
                                        }
                                    }
                                    for j in 0..4 {
                                        for (r, kof) in [0usize, 16].into_iter().enumerate() {
                                            for e in 0..4 {
                                                bt[j][kof + 4 * tig + e][gid] = b[lane][j][r][e] as i64;
                                            }
                                        }
                                    }
                                }
                                for lane in 0..32 {
                                    let (gid, tig) = (lane / 4, lane % 4);
                                    for j in 0..4 {
                                        for c in 0..4 {
                                            let row = if c < 2 { gid } else { gid + 8 };
                                            let col = 2 * tig + (c & 1);
                                            acc[lane * 4 + j][c] +=
                                                (0..32).map(|kk| at[row][kk] * bt[j][kk][col]).sum::<i64>();
                                        }
                                    }
                                }
                            }
                            for lane in 0..32 {
                                let (gid, tig) = (lane / 4, lane % 4);
                                for j in 0..4 {
                                    for c in 0..4 {
                                        let m = row0 + gid as i64 + if c < 2 { 0 } else { 8 };
                                        let nn = nw0 + j * 8 + 2 * tig + (c & 1);
                                        if m >= rend || nn >= n {
                                            continue;
                                        }
                                        y[m as usize * n + nn] = Some(acc[lane * 4 + j][c]);
                                        writes[m as usize * n + nn] += 1;
                                    }
                                }
                            }
                            slot += gy as i64;
                        }
                    }
                }
            }
            let routed = *ge.last().unwrap() as usize;
            for m in 0..m_total {
                let gi = ge.iter().position(|&e| e > m as i64);
                for nn in 0..n {
                    match gi {
                        Some(gi) if m < routed => {
                            let want: i64 = (0..k)
                                .map(|kk| xv[m * k + kk] as i64 * wv[(gi * n + nn) * k + kk] as i64)
                                .sum();
                            assert_eq!(y[m * n + nn], Some(want), "{ge:?}: y[{m}][{nn}]");
                            assert_eq!(writes[m * n + nn], 1, "{ge:?}: y[{m}][{nn}] written twice");
                        }
                        _ => assert_eq!(writes[m * n + nn], 0, "{ge:?}: guard row {m} written"),
                    }
                }
            }
        }
        // The path choice: K % 32, 16-byte alignment, not forced to SIMT, int8 x int8 only.
        let d = QuantDesc::GroupedGemm {
            w: WeightFormat::Int8,
            x: ActFormat::Int8,
            y: DType::BF16,
        };
        let h200 = (9, 0);
        assert!(mma_ok(&d, 64, 256, 512, GemmPath::Auto, h200));
        assert!(mma_ok(&d, 64, 256, 512, GemmPath::Auto, (8, 0)));
        assert!(!mma_ok(&d, 48, 256, 512, GemmPath::Auto, h200));
        assert!(!mma_ok(&d, 64, 260, 512, GemmPath::Auto, h200));
        assert!(!mma_ok(&d, 64, 256, 512, GemmPath::Simt, h200));
        let f8 = QuantDesc::GroupedGemm {
            w: WeightFormat::Fp8Block,
            x: ActFormat::Fp8,
            y: DType::F32,
        };
        assert!(mma_ok(&f8, 96, 0, 4096, GemmPath::Auto, h200));
        assert!(mma_ok(&f8, 96, 0, 4096, GemmPath::TensorCore, (8, 9)));
        assert!(
            !mma_ok(&f8, 96, 0, 4096, GemmPath::Auto, (8, 6)),
            "e4m3 mma.sync needs sm_89"
        );
        let wo = QuantDesc::GroupedGemm {
            w: WeightFormat::Int8,
            x: ActFormat::Float(DType::BF16),
            y: DType::BF16,
        };
        assert!(!mma_ok(&wo, 64, 256, 512, GemmPath::Auto, h200));
    }
}
