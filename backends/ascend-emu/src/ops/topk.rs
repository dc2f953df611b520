//! aclnnTopk (third group of issue-13 primitives). Sources in RULES.md §Primitives, third group
//! (TK*). The pages say nothing about ties; see [`TIES_ENV`] for what the emulator does with them.

use std::cmp::Ordering;

use crate::sys;
use crate::tensor::{Desc, HostTensor};

use super::prim::{axis, for_each, same_dtype, Prim, NUMERIC};
use super::sort::{line_keys, Key};
use super::{bad, inner, req, want_dims, want_dt, Fail};

/// Environment variable read at each aclnnTopk launch: what to do with ties, which no aclnnTopk
/// page mentions (RULES.md TK4).
/// - unset or `refuse` (default): a line whose k-th and (k+1)-th values are equal — the chosen
///   *set* of indices is then undefined — is refused with 561000;
/// - `high`: such a tie is resolved toward the HIGHER index (the opposite of torch's usual result),
///   so a caller that silently relies on "lower index wins" computes a visibly different answer.
///
/// Either way, equal values inside the selection come out in reverse index order (as an unstable
/// sort may legally emit them, SO3).
pub const TIES_ENV: &str = "MOEHAL_ACL_EMU_TOPK_TIES";

impl Prim {
    /// aclnnTopk phase one ([HA canncommercial/800 aclnnTopk.md]; [HA 850alpha002 aclnnTopk.md];
    /// [HA Atlas200IDKA2 23.0.RC2 aclcppdevg_03_0564]):
    /// - self, valuesOut, indicesOut required (161001);
    /// - self FLOAT16 / FLOAT32 / BFLOAT16 / INT32 / INT64 (PR3: INT8, UINT8, INT16, DOUBLE NOT
    ///   EMULATED), "shape支持1-8维度"; valuesOut "数据类型与self保持一致"; indicesOut INT64 (161002);
    /// - dim in `[-self.dim(), self.dim())` (161002);
    /// - k: the later pages give `[0, self.size(dim)]`, the 23.0.RC2 page `(0, self.size(dim)]`:
    ///   conflicting, the emulator takes the narrower `1 ≤ k ≤ self.size(dim)` (161002);
    /// - sorted: "当前该参数仅支持取True,暂不支持取False" → false refused (161002);
    /// - valuesOut / indicesOut "shape排序轴与k一致,非排序轴与self一致" (161002).
    pub fn topk(
        x: Option<Desc>,
        k: i64,
        dim: i64,
        largest: bool,
        sorted: bool,
        values: Option<Desc>,
        indices: Option<Desc>,
    ) -> Result<Prim, Fail> {
        let (x, values, indices) = (req(x, "self")?, req(values, "valuesOut")?, req(indices, "indicesOut")?);
        want_dt(&x, &NUMERIC, "self")?;
        same_dtype(&x, &values, "valuesOut")?;
        want_dt(&indices, &[sys::ACL_INT64], "indicesOut")?;
        if x.dims.is_empty() || x.dims.len() > 8 {
            return Err(bad(format!("self {} must have rank 1..8", x.show())));
        }
        let dim = axis(dim, x.dims.len(), "dim")?;
        let n = x.dims[dim];
        if k < 1 || k > n {
            return Err(bad(format!(
                "k {k} outside [1, {n}] (the pages disagree on k = 0: refused)"
            )));
        }
        if !sorted {
            return Err(bad("sorted = false: the page supports only true"));
        }
        let mut want = x.dims.clone();
        want[dim] = k;
        want_dims(&values, &want, "valuesOut (self's shape, k along dim)")?;
        want_dims(&indices, &want, "indicesOut (self's shape, k along dim)")?;
        Ok(Prim::Topk {
            x,
            k,
            dim,
            largest,
            values,
            indices,
        })
    }
}

/// The tie policy of [`TIES_ENV`]: `true` = refuse boundary ties; `false` = resolve them toward the
/// higher index. An unknown value is refused too (561000): a typo must not pick a policy.
fn refuse_ties() -> Result<bool, Fail> {
    match std::env::var(TIES_ENV).ok().as_deref() {
        None | Some("") | Some("refuse") => Ok(true),
        Some("high") => Ok(false),
        Some(v) => Err(inner(format!("{TIES_ENV}={v:?}: expected refuse or high"))),
    }
}

/// aclnnTopk launch: per line along `dim`, the k largest (smallest) elements in descending
/// (ascending) order, copied bit-exactly, and their positions in the line (INT64). A NaN: where it
/// ranks is UNDOCUMENTED → 561000 (as SO3). Ties: [`TIES_ENV`].
pub(super) fn run_topk(x: &HostTensor, outs: &mut [HostTensor], k: i64, dim: usize, largest: bool) -> Result<(), Fail> {
    let refuse = refuse_ties()?;
    let mut lines = x.d.dims.clone();
    lines[dim] = 1;
    let mut err = None;
    for_each(&lines, |start| {
        if err.is_some() {
            return;
        }
        let mut idx = start.to_vec();
        let keys: Vec<Key> = match line_keys(x, &mut idx, dim, "aclnnTopk") {
            Ok(v) => v,
            Err(e) => {
                err = Some(e);
                return;
            }
        };
        let cmp = |a: &Key, b: &Key| a.partial_cmp(b).unwrap_or(Ordering::Equal);
        let mut p: Vec<usize> = (0..keys.len()).collect();
        // Best first; equal keys by descending index (the higher index wins a tie).
        p.sort_by(|&i, &j| {
            let o = if largest {
                cmp(&keys[j], &keys[i])
            } else {
                cmp(&keys[i], &keys[j])
            };
            o.then_with(|| j.cmp(&i))
        });
        let k = k as usize;
        if refuse && k < p.len() && cmp(&keys[p[k - 1]], &keys[p[k]]) == Ordering::Equal {
            err = Some(inner(format!(
                "aclnnTopk: line at {start:?} has a tie across the k-th place (positions {} and {}): which one is \
                 chosen is UNDOCUMENTED, refused ({TIES_ENV}=high resolves it toward the higher index)",
                p[k - 1],
                p[k]
            )));
            return;
        }
        for (j, &src) in p.iter().take(k).enumerate() {
            let mut si = start.to_vec();
            si[dim] = src as i64;
            let mut oi = start.to_vec();
            oi[dim] = j as i64;
            let v = x.raw(x.d.pos(&si)).to_vec();
            let pv = outs[0].d.pos(&oi);
            outs[0].set_raw(pv, &v);
            outs[1].set_int(&oi, src as i64);
        }
    });
    err.map_or(Ok(()), Err)
}
