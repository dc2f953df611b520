//! aclnnGroupedMatmulV4, quantised A8W8 (issue 13, W8A8 path): INT8 x and INT8 weight (ND or
//! FRACTAL_NZ), per-channel weight `scale`, per-token `perTokenScale`, FLOAT16 / BFLOAT16 out.
//! Written from the CANN pages only (RULES.md QG1-QG8 and NZ1-NZ3 cite each rule), not from
//! moehal-core or the backend.

use crate::sys;
use crate::tensor::{dt_name, Desc, HostTensor};

use super::{bad, want_dims, want_dt, want_rank, Fail, Op};

/// Rows and columns of one FRACTAL_NZ fractal of INT8 data: `m0 = 16`, `n0 = 32` ("int8时,n0为32,
/// m0为16", [HA canncommercial/800 ascendtb_01_0083] TransdataOperation; the same alignments as
/// aclnnCalculateMatmulWeightSizeV2's INT8 formula `Align(shape[0], 16) * Align(shape[1], 32)`).
pub const NZ_M0: i64 = 16;
/// See [`NZ_M0`].
pub const NZ_N0: i64 = 32;

fn align(v: i64, a: i64) -> i64 {
    (v + a - 1) / a * a
}

/// The FRACTAL_NZ storage of an INT8 weight with ND shape `[E, K, N]` (RULES.md NZ1): the ND
/// matrix `{b, m, n}` = `[E, K, N]` becomes `{b, n1, m1m0, n0}` = `[E, ceil(N/32), Align(K, 16), 32]`
/// ([HA ascendtb_01_0083]: "NZ的dims约定表示方式:{b, n1, m1m0, n0},对应的ND的dims是{b, m, n}"),
/// i.e. the fractal form `NW1H1H0W0` = `[E, N1, K1, 16, 32]`. Element `(e, k, n)` lives at
/// `((e·N1 + n/32)·Align(K,16) + k)·32 + n%32`; the padding is not read.
pub fn nz_pos(k_pad: i64, n1: i64, e: i64, k: i64, n: i64) -> i64 {
    ((e * n1 + n / NZ_N0) * k_pad + k) * NZ_N0 + n % NZ_N0
}

/// The accepted storage dims of an INT8 FRACTAL_NZ weight of ND shape `[E, K, N]`: the 4-D
/// `{b, n1, m1m0, n0}` form and the 5-D fractal form (RULES.md NZ1).
pub fn nz_storage_dims(e: i64, k: i64, n: i64) -> [Vec<i64>; 2] {
    let (n1, kp) = (align(n, NZ_N0) / NZ_N0, align(k, NZ_M0));
    [vec![e, n1, kp, NZ_N0], vec![e, n1, kp / NZ_M0, NZ_M0, NZ_N0]]
}

/// Element count of the NZ form of an INT8 `[.., K, N]` weight (aclnnCalculateMatmulWeightSizeV2's
/// INT8 formula per batch: `Align(K, 16) * Align(N, 32)`).
pub fn nz_elems(batch: i64, k: i64, n: i64) -> i64 {
    batch * align(k, NZ_M0) * align(n, NZ_N0)
}

impl Op {
    /// aclnnGroupedMatmulV4 phase one, A8W8 (\[OTF\] gmm/grouped_matmul/docs/aclnnGroupedMatmulV4.md
    /// "A8W8场景约束" and "公共约束"; RULES.md QG1-QG8). The structural checks shared with the float
    /// path (single tensors, splitItem, groupType 0, groupListType 0/1, actType 0, group list) are
    /// done by the caller ([`Op::gmm`]'s rules G1-G7 apply unchanged).
    pub fn quant_gmm(
        x: Desc,
        w: Desc,
        bias: Option<Vec<Desc>>,
        scale: Option<Vec<Desc>>,
        per_token: Option<Vec<Desc>>,
        group: Desc,
        list_type: i64,
        y: Desc,
    ) -> Result<Op, Fail> {
        want_rank(&x, 2, "x")?;
        want_rank(&w, 3, "weight")?;
        want_rank(&y, 2, "y")?;
        want_dt(&x, &[sys::ACL_INT8], "x")?;
        want_dt(&w, &[sys::ACL_INT8], "weight (INT8 with INT8 x)")?;
        // NOT EMULATED: bias (INT32 / BFLOAT16 rows of the A8W8 table).
        if bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err(bad("A8W8: biasOptional is not emulated (pass NULL)"));
        }
        let one = |l: Option<Vec<Desc>>, what: &str| -> Result<Option<Desc>, Fail> {
            match l {
                None => Ok(None),
                Some(v) if v.is_empty() => Ok(None),
                Some(v) if v.len() == 1 => Ok(Some(v[0].clone())),
                Some(_) => Err(bad(format!("{what}: one tensor (single-tensor x / weight / out)"))),
            }
        };
        let scale = one(scale, "scaleOptional")?;
        let per_token = one(per_token, "perTokenScaleOptional")?;
        // The rows with an INT8 (UINT64 scale) or INT32 (no scale) out are NOT EMULATED: scale is
        // required here.
        let scale = scale
            .ok_or_else(|| bad("A8W8: scaleOptional NULL (INT32 out) and UINT64 scale (INT8 out) are not emulated"))?;
        let (m, k) = (x.dims[0], x.dims[1]);
        let (e, wk, n) = (w.dims[0], w.dims[1], w.dims[2]);
        if wk != k {
            return Err(bad(format!("weight {} K != x {} K", w.show(), x.show())));
        }
        want_dims(&y, &[m, n], "y")?;
        // G6: groupList INT64 1-D, one entry per weight group.
        want_rank(&group, 1, "groupList")?;
        want_dt(&group, &[sys::ACL_INT64], "groupList")?;
        want_dims(&group, &[e], "groupList (one entry per weight group)")?;
        if k <= 0 || n <= 0 || e <= 0 || k >= 65536 || e > 1024 {
            return Err(bad(format!("K={k}, N={n}, E={e}: each >= 1, K < 65536, E <= 1024")));
        }
        let nz = w.format == sys::ACL_FORMAT_FRACTAL_NZ;
        if nz {
            // NZ1: the storage must be the documented NZ form of the [E, K, N] view.
            if !nz_storage_dims(e, k, n).contains(&w.storage) || w.offset != 0 {
                return Err(bad(format!(
                    "FRACTAL_NZ weight {}: storage dims {:?} offset {} must be {:?} or {:?}, offset 0",
                    w.show(),
                    w.storage,
                    w.offset,
                    nz_storage_dims(e, k, n)[0],
                    nz_storage_dims(e, k, n)[1]
                )));
            }
        } else {
            if w.format != sys::ACL_FORMAT_ND {
                return Err(bad(format!("weight format {}: ND or FRACTAL_NZ (29)", w.format)));
            }
            // ND weight: [E,K,N] or transposed storage (G11); last dim < 65536 (G10).
            let kn = w.strides[2] == 1 && w.strides[1] == n;
            let nk = w.strides[1] == 1 && w.strides[2] == k;
            if !(kn || nk) || w.strides[0] != k * n || (kn && n >= 65536) {
                return Err(bad(format!(
                    "weight strides {:?} are neither [K*N, N, 1] nor transposed [K*N, 1, K]",
                    w.strides
                )));
            }
        }
        // "x不支持转置"; out contiguous (G12).
        if !x.contiguous() || !y.contiguous() {
            return Err(bad("x and y must be contiguous"));
        }
        // QG3: the A8W8 rows with a FLOAT16 / BFLOAT16 out.
        let row = match (scale.dtype, y.dtype) {
            (sys::ACL_BF16, sys::ACL_BF16) | (sys::ACL_FLOAT, sys::ACL_FLOAT16) => true,
            // "INT8 | INT8 (NZ) | BFLOAT16/null | FLOAT/BFLOAT16 | ... | BFLOAT16": NZ only.
            (sys::ACL_FLOAT, sys::ACL_BF16) => nz,
            _ => false,
        };
        if !row {
            return Err(bad(format!(
                "A8W8: scale {} with out {} and a{} weight is not a row of the page's table \
                 (BFLOAT16 scale -> BFLOAT16 out; FLOAT scale -> FLOAT16 out; FLOAT scale -> \
                 BFLOAT16 out with a FRACTAL_NZ weight only)",
                dt_name(scale.dtype),
                dt_name(y.dtype),
                if nz { " FRACTAL_NZ" } else { "n ND" }
            )));
        }
        // QG4: per-channel scale [E, N] (NOT EMULATED: per-tensor [E] / [E, 1]).
        want_dims(&scale, &[e, n], "scaleOptional (per-channel [E, N])")?;
        if let Some(p) = &per_token {
            want_dt(p, &[sys::ACL_FLOAT], "perTokenScaleOptional")?;
            // "只支持1维且长度与x的M相同".
            want_dims(p, &[m], "perTokenScaleOptional ([M])")?;
        }
        Ok(Op::QuantGmm {
            x,
            w,
            scale,
            per_token,
            group,
            list_type,
            nz,
            y,
        })
    }
}

/// The A8W8 launch (RULES.md QG5-QG6): per group `acc = Σ_k x[r,k]·w[e,k,n]` in INT32 (exact),
/// `y = acc · scale[e,n] · perTokenScale[r]` evaluated left to right in f32 and rounded once to
/// out's dtype. Rows past the group-list total are not written (G13); a bad list is G14.
pub(super) fn run_quant_gmm(
    ins: &[HostTensor],
    outs: &mut [HostTensor],
    list_type: i64,
    nz: bool,
    has_pts: bool,
) -> Result<(), Fail> {
    let (x, w, g, scale) = (&ins[0], &ins[1], &ins[2], &ins[3]);
    let pts = has_pts.then(|| &ins[4]);
    let y = &mut outs[0];
    let (m, k) = (x.d.dims[0], x.d.dims[1]);
    let (e, n) = (w.d.dims[0], w.d.dims[2]);
    let (n1, kp) = (align(n, NZ_N0) / NZ_N0, align(k, NZ_M0));
    let wv = |gi: i64, kk: i64, c: i64| -> i64 {
        if nz {
            w.get_pos(nz_pos(kp, n1, gi, kk, c)) as i64
        } else {
            w.get_int(&[gi, kk, c])
        }
    };
    for (gi, (start, end)) in super::group_ranges(g, e, m, list_type)?.into_iter().enumerate() {
        let gi = gi as i64;
        for r in start..end {
            for c in 0..n {
                let mut acc = 0i32;
                for kk in 0..k {
                    acc += x.get_int(&[r, kk]) as i32 * wv(gi, kk, c) as i32;
                }
                let mut v = acc as f32 * scale.get(&[gi, c]);
                if let Some(p) = pts {
                    v *= p.get(&[r]);
                }
                y.set(&[r, c], v);
            }
        }
    }
    Ok(())
}

/// aclnnCalculateMatmulWeightSizeV2 ([HA 81RC1alpha002 aclnnCalculateMatmulWeightSizeV2.md];
/// RULES.md NZ4): elements of the NZ form of a weight of `shape` (2-6 dims, `(batch.., n, k)` in
/// the page's naming): INT8 `Align(shape[-2], 16) · Align(shape[-1], 32)`, FLOAT16
/// `Align(shape[-2], 16) · Align(shape[-1], 16)`, times the batch dims. A rank outside 2-6, a dim
/// < 1 ("不支持空Tensor") or another dtype → 161002.
pub fn calculate_weight_size_v2(shape: &[i64], dtype: sys::aclDataType) -> Result<u64, Fail> {
    if !(2..=6).contains(&shape.len()) || shape.iter().any(|&d| d < 1) {
        return Err(bad(format!("tensorShape {shape:?}: 2 to 6 dims, each >= 1")));
    }
    let n0 = match dtype {
        sys::ACL_INT8 => NZ_N0,
        sys::ACL_FLOAT16 => 16,
        _ => return Err(bad(format!("dataType {}: FLOAT16 or INT8", dt_name(dtype)))),
    };
    let r = shape.len();
    let batch: i64 = shape[..r - 2].iter().product();
    Ok((batch * align(shape[r - 2], NZ_M0) * align(shape[r - 1], n0)) as u64)
}

impl Op {
    /// aclnnTransMatmulWeight phase one ([HA 81RC1alpha001 aclnnTransMatmulWeight.md]; RULES.md NZ5):
    /// `mmWeightRef` INT8 ND, 2-6 dims, contiguous at offset 0 (161002; FLOAT16 / BFLOAT16 NOT
    /// EMULATED); its allocation must hold the NZ form (aclnnCalculateMatmulWeightSizeV2 elements),
    /// checked as the tensor `dst` of that many bytes at the same address (161002 otherwise).
    pub fn trans_matmul_weight(handle: usize, w: Desc) -> Result<Op, Fail> {
        want_dt(
            &w,
            &[sys::ACL_INT8],
            "mmWeightRef (INT8; FLOAT16 / BFLOAT16 NOT EMULATED)",
        )?;
        if w.format != sys::ACL_FORMAT_ND {
            return Err(bad(format!("mmWeightRef format {}: ND (already converted?)", w.format)));
        }
        let shape = w.dims.clone();
        let n = calculate_weight_size_v2(&shape, sys::ACL_INT8)? as i64;
        if !w.contiguous() || w.offset != 0 {
            return Err(bad(format!("mmWeightRef {}: contiguous at offset 0", w.show())));
        }
        let r = shape.len();
        let mut storage = shape[..r - 2].to_vec();
        storage.extend([align(shape[r - 1], NZ_N0) / NZ_N0, align(shape[r - 2], NZ_M0), NZ_N0]);
        let dst = Desc {
            dims: vec![n],
            strides: vec![1],
            offset: 0,
            dtype: sys::ACL_INT8,
            format: sys::ACL_FORMAT_ND,
            storage: vec![n],
            data: w.data,
        };
        Ok(Op::TransNz {
            handle,
            src: w,
            dst,
            nz_storage: storage,
        })
    }
}

/// aclnnTransMatmulWeight launch (RULES.md NZ5): the ND `[.., K, N]` INT8 weight is rewritten in
/// place as its NZ form (layout NZ2, padding zero); the caller's aclTensor then reads FRACTAL_NZ
/// with the NZ storage dims (done by the ABI after the launch).
pub(super) fn run_trans_nz(ins: &[HostTensor], outs: &mut [HostTensor]) -> Result<(), Fail> {
    let src = &ins[0];
    let dst = &mut outs[0];
    let r = src.d.dims.len();
    let (k, n) = (src.d.dims[r - 2], src.d.dims[r - 1]);
    let batch: i64 = src.d.dims[..r - 2].iter().product();
    let (n1, kp) = (align(n, NZ_N0) / NZ_N0, align(k, NZ_M0));
    dst.bytes.iter_mut().for_each(|b| *b = 0);
    for b in 0..batch {
        for kk in 0..k {
            for c in 0..n {
                let v = src.raw((b * k + kk) * n + c)[0];
                dst.set_raw(nz_pos(kp, n1, b, kk, c), &[v]);
            }
        }
    }
    Ok(())
}
