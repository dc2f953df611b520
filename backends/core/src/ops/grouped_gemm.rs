//! OPS.md §1 `grouped_gemm`: `y[r, :] = row_scale[r] * (x[r, :] @ W_g + bias[g, :])` for every row
//! `r` of group `g`.

use super::{check_writable, expect_dim, Checked, OpDesc};
use crate::{DType, Error, Result, TensorMut, TensorRef};

const OP: &str = "grouped_gemm";

/// How expert weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightLayout {
    /// `[G, N, K]`: out × in, how checkpoints store a Linear weight.
    NK,
    /// `[G, K, N]`: what Ascend GroupedMatmul and `torch._grouped_mm` take.
    KN,
}

/// Problem sizes of one `grouped_gemm` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmDims {
    /// Rows of `x` and `y` (routed rows plus any tail past the last group).
    pub m: usize,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// Groups (experts).
    pub groups: usize,
}

/// Arguments of `grouped_gemm`.
#[derive(Debug)]
pub struct GroupedGemm<'a> {
    /// `[M, K]` f32/bf16/f16: activations, rows sorted by group.
    pub x: TensorRef<'a>,
    /// `[G, N, K]` (NK) or `[G, K, N]` (KN), same dtype as `x`.
    pub w: TensorRef<'a>,
    /// Layout of `w`.
    pub layout: WeightLayout,
    /// `[G]` i64 cumulative end offsets (`torch._grouped_mm` `offs`): group `g` owns rows
    /// `[group_end[g-1], group_end[g])`, `group_end[-1] = 0`. Non-decreasing, last `<= M`.
    pub group_end: TensorRef<'a>,
    /// Optional `[M]` f32 router weights in permuted order, applied after the bias.
    pub row_scale: Option<TensorRef<'a>>,
    /// Optional `[G, N]` bias, same dtype as `x`.
    pub bias: Option<TensorRef<'a>>,
    /// `[M, N]` output, same dtype as `x`. Rows at or past `group_end[G-1]` are not written.
    pub y: TensorMut<'a>,
}

impl<'a> GroupedGemm<'a> {
    /// Problem sizes (valid after [`validate`](Self::validate)).
    pub fn dims(&self) -> GemmDims {
        let (m, k) = (self.x.shape()[0], self.x.shape()[1]);
        let ws = self.w.shape();
        let n = match self.layout {
            WeightLayout::NK => ws[1],
            WeightLayout::KN => ws[2],
        };
        GemmDims { m, n, k, groups: ws[0] }
    }

    /// The support-matrix key of this call.
    pub fn desc(&self) -> OpDesc {
        OpDesc::GroupedGemm {
            dtype: self.x.dtype(),
            layout: self.layout,
        }
    }

    /// Check every rule of OPS.md §1 that does not depend on element values.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field at fault.
    pub fn validate(self) -> Result<Checked<Self>> {
        self.x.check(OP, "x", &DType::FLOATS, 2)?;
        let dt = self.x.dtype();
        self.w.check(OP, "w", &[dt], 3)?;
        self.group_end.check(OP, "group_end", &[DType::I64], 1)?;
        self.y.check(OP, "y", &[dt], 2)?;
        check_writable(OP, "y", &self.y)?;
        let d = self.dims();
        let wk = match self.layout {
            WeightLayout::NK => 2,
            WeightLayout::KN => 1,
        };
        expect_dim(OP, "w", self.w.shape(), wk, d.k, "K, from x")?;
        expect_dim(OP, "group_end", self.group_end.shape(), 0, d.groups, "G, from w")?;
        expect_dim(OP, "y", self.y.shape(), 0, d.m, "M, from x")?;
        expect_dim(OP, "y", self.y.shape(), 1, d.n, "N, from w")?;
        if let Some(rs) = &self.row_scale {
            rs.check(OP, "row_scale", &[DType::F32], 1)?;
            expect_dim(OP, "row_scale", rs.shape(), 0, d.m, "M, from x")?;
        }
        if let Some(b) = &self.bias {
            b.check(OP, "bias", &[dt], 2)?;
            expect_dim(OP, "bias", b.shape(), 0, d.groups, "G, from w")?;
            expect_dim(OP, "bias", b.shape(), 1, d.n, "N, from w")?;
        }
        Ok(Checked::new(self))
    }
}

/// Check `group_end` values (OPS.md §1): non-decreasing from 0, last `<= m`. Every backend calls
/// this (or an equivalent device check) before writing.
///
/// # Errors
/// [`Error::InvalidArgument`] on field `group_end`.
pub fn check_group_end(group_end: &[i64], m: usize) -> Result<()> {
    let mut prev = 0i64;
    for (g, &e) in group_end.iter().enumerate() {
        if e < prev {
            return Err(Error::invalid(
                OP,
                "group_end",
                format!("group_end[{g}] = {e} is below the previous end {prev} (must be non-decreasing from 0)"),
            ));
        }
        prev = e;
    }
    if prev as u64 > m as u64 {
        return Err(Error::invalid(
            OP,
            "group_end",
            format!("group_end[G-1] = {prev} exceeds M = {m}"),
        ));
    }
    Ok(())
}

/// Cumulative ends from per-group row counts (Ascend `groupListType = 1`).
///
/// # Errors
/// [`Error::InvalidArgument`] for a negative count or an overflowing total.
pub fn group_end_from_counts(counts: &[i64]) -> Result<Vec<i64>> {
    let mut acc = 0i64;
    counts
        .iter()
        .enumerate()
        .map(|(g, &c)| {
            if c < 0 {
                return Err(Error::invalid(OP, "counts", format!("counts[{g}] = {c} is negative")));
            }
            acc = acc
                .checked_add(c)
                .ok_or_else(|| Error::invalid(OP, "counts", "total overflows i64"))?;
            Ok(acc)
        })
        .collect()
}

/// Per-group row counts from cumulative ends (the inverse of [`group_end_from_counts`]).
///
/// # Errors
/// As [`check_group_end`] (with `m = i64::MAX`).
pub fn counts_from_group_end(group_end: &[i64]) -> Result<Vec<i64>> {
    check_group_end(group_end, usize::MAX)?;
    let mut prev = 0;
    Ok(group_end
        .iter()
        .map(|&e| {
            let c = e - prev;
            prev = e;
            c
        })
        .collect())
}

/// Check a masked-layout description: `len == G * max_m * width` and every `valid[g]` in
/// `[0, max_m]`; returns `sum(valid)`.
fn check_masked(field: &'static str, len: usize, max_m: usize, width: usize, valid: &[i64]) -> Result<usize> {
    let g = valid.len();
    let want = g.checked_mul(max_m).and_then(|v| v.checked_mul(width));
    if want != Some(len) {
        return Err(Error::invalid(
            OP,
            field,
            format!("masked {field} has {len} elements, expected G*max_m*width = {g}*{max_m}*{width}"),
        ));
    }
    let mut rows = 0usize;
    for (gi, &v) in valid.iter().enumerate() {
        if v < 0 || v as u64 > max_m as u64 {
            return Err(Error::invalid(
                OP,
                "valid",
                format!("valid[{gi}] = {v} outside [0, {max_m}]"),
            ));
        }
        rows += v as usize;
    }
    Ok(rows)
}

/// Pack the masked layout (DeepGEMM "masked": `x: [G, max_m, K]`, group `g` valid in its first
/// `valid[g]` rows) into the sorted layout `[sum(valid), K]` plus `group_end`.
///
/// # Errors
/// [`Error::InvalidArgument`] when `x.len() != G * max_m * k` or a `valid[g]` is outside `[0, max_m]`.
pub fn pack_masked<T: Copy>(x: &[T], max_m: usize, k: usize, valid: &[i64]) -> Result<(Vec<T>, Vec<i64>)> {
    let total = check_masked("x", x.len(), max_m, k, valid)?;
    let mut out = Vec::with_capacity(total * k);
    let mut ends = Vec::with_capacity(valid.len());
    let mut rows = 0i64;
    for (gi, &v) in valid.iter().enumerate() {
        let base = gi * max_m * k;
        out.extend_from_slice(&x[base..base + v as usize * k]);
        rows += v;
        ends.push(rows);
    }
    Ok((out, ends))
}

/// Scatter sorted-layout rows `[sum(valid), N]` back into the masked layout `[G, max_m, N]`
/// (rows past `valid[g]` keep their contents). Everything is checked before anything is written.
///
/// # Errors
/// [`Error::InvalidArgument`] on inconsistent sizes.
pub fn unpack_masked<T: Copy>(y: &[T], n: usize, max_m: usize, valid: &[i64], out: &mut [T]) -> Result<()> {
    let total = check_masked("out", out.len(), max_m, n, valid)?;
    if total.checked_mul(n).is_none_or(|need| need > y.len()) {
        return Err(Error::invalid(
            OP,
            "y",
            format!("{} elements, fewer than sum(valid) * N = {total}*{n}", y.len()),
        ));
    }
    let mut src = 0usize;
    for (gi, &v) in valid.iter().enumerate() {
        let rows = v as usize * n;
        out[gi * max_m * n..gi * max_m * n + rows].copy_from_slice(&y[src..src + rows]);
        src += rows;
    }
    Ok(())
}
