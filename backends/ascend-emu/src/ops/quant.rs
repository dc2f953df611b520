//! Quantisation primitives of the W8A8 production path (issue 13, fourth group): aclnnDynamicQuant.
//! Written from the CANN op pages only (RULES.md §W8A8 cites each rule), not from moehal-core or the
//! backend.

use crate::sys;
use crate::tensor::{Desc, HostTensor};

use super::prim::{for_each, Prim};
use super::{bad, inner, req, want_dims, want_dt, Fail};

/// Largest magnitude of the INT8 output: the formula's `127` ([HA canncommercial/800
/// aclnnDynamicQuant.md]; `dtypeMax` of INT8 on [HA 82RC1alpha002 aclnnDynamicQuant.md]).
const INT8_MAX: f32 = 127.0;

impl Prim {
    /// aclnnDynamicQuant phase one ([HA canncommercial/800 aclnnDynamicQuant.md]; [HA 82RC1alpha002
    /// aclnnDynamicQuant.md]; RULES.md DQ1-DQ4):
    /// - x, yOut, scaleOut required (161001);
    /// - x FLOAT16 / BFLOAT16, rank 2-8 ("shape维度要大于1", "维度仅支持2到8维") (161002);
    /// - smoothScalesOptional of x's dtype, 1-D `[H]` ("shape维度是x的最后一维") (161002);
    /// - yOut INT8 of x's shape (NOT EMULATED: the INT4 / INT32-packed outputs of later pages);
    ///   scaleOut FLOAT of x's shape without the last dim; both contiguous ("暂不支持非连续的Tensor"
    ///   on the 8.0 page) (161002).
    pub fn dynamic_quant(
        x: Option<Desc>,
        smooth: Option<Desc>,
        y: Option<Desc>,
        scale: Option<Desc>,
    ) -> Result<Prim, Fail> {
        let (x, y, scale) = (req(x, "x")?, req(y, "yOut")?, req(scale, "scaleOut")?);
        want_dt(&x, &[sys::ACL_FLOAT16, sys::ACL_BF16], "x")?;
        let r = x.dims.len();
        if !(2..=8).contains(&r) {
            return Err(bad(format!("x {}: rank must be 2 to 8", x.show())));
        }
        let h = x.dims[r - 1];
        if let Some(s) = &smooth {
            if s.dtype != x.dtype {
                return Err(bad(format!("smoothScalesOptional {}: dtype must equal x's", s.show())));
            }
            want_dims(s, &[h], "smoothScalesOptional (x's last dim)")?;
        }
        want_dt(&y, &[sys::ACL_INT8], "yOut (INT8; INT4 / INT32 packing NOT EMULATED)")?;
        want_dims(&y, &x.dims, "yOut (x's shape)")?;
        want_dt(&scale, &[sys::ACL_FLOAT], "scaleOut")?;
        want_dims(&scale, &x.dims[..r - 1], "scaleOut (x's shape without the last dim)")?;
        if !y.contiguous() || !scale.contiguous() {
            return Err(bad("yOut and scaleOut must be contiguous (\"暂不支持非连续的Tensor\")"));
        }
        Ok(Prim::DynamicQuant { x, smooth, y, scale })
    }
}

/// Round half to even (the page's `round` does not name its mode: UNDOCUMENTED, RULES.md DQ3).
fn round_even(v: f32) -> f32 {
    v.round_ties_even()
}

/// aclnnDynamicQuant launch (RULES.md DQ3-DQ4): per row (all but the last dim) `input = x ·
/// smooth` (f32), `scale = row_max(|input|) / 127` (f32), `y = round(input / scale)` (f32 division,
/// half to even). A row whose max is 0 (scale 0, `0/0`) or holding a non-finite value:
/// UNDOCUMENTED → 561000.
pub(super) fn run_dynamic_quant(ins: &[HostTensor], outs: &mut [HostTensor]) -> Result<(), Fail> {
    let x = &ins[0];
    let smooth = ins.get(1);
    let r = x.d.dims.len();
    let h = x.d.dims[r - 1];
    let outer = x.d.dims[..r - 1].to_vec();
    let mut fail = None;
    let mut rows: Vec<(Vec<i64>, Vec<f32>)> = Vec::new();
    for_each(&outer, |o| {
        let mut idx = o.to_vec();
        idx.push(0);
        let row: Vec<f32> = (0..h)
            .map(|j| {
                idx[r - 1] = j;
                let s = smooth.map_or(1.0, |s| s.get(&[j]));
                x.get(&idx) * s
            })
            .collect();
        rows.push((o.to_vec(), row));
    });
    let (ys, ss) = outs.split_at_mut(1);
    for (o, row) in rows {
        let m = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if !row.iter().all(|v| v.is_finite()) || m == 0.0 {
            fail.get_or_insert_with(|| {
                inner(format!(
                    "aclnnDynamicQuant: row {o:?} is all zero or not finite (scale 0 or non-finite: UNDOCUMENTED)"
                ))
            });
            continue;
        }
        let scale = m / INT8_MAX;
        ss[0].set(&o, scale);
        let mut idx = o.clone();
        idx.push(0);
        for (j, v) in row.iter().enumerate() {
            idx[r - 1] = j as i64;
            let q = round_even(v / scale).clamp(-128.0, 127.0);
            ys[0].set_int(&idx, q as i64);
        }
    }
    fail.map_or(Ok(()), Err)
}
