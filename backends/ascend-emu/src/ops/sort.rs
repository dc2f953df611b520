//! Sorting primitives: aclnnSort, aclnnArgsort (and aclnnSearchSorted, whose precondition is a
//! sorted sequence). Sources in RULES.md §Primitives (SO*, AS*).

use std::cmp::Ordering;

use crate::sys;
use crate::tensor::{Desc, HostTensor};

use super::prim::{axis, for_each, same_dtype, Prim, NUMERIC};
use super::{bad, inner, req, want_dims, Fail, FLOATS};

impl Prim {
    /// aclnnSort phase one ([OM math/sort/docs/aclnnSort.md] and `aclnnSort_en.md`; [HA 82RC1alpha002
    /// aclnnSort.md]; [HA 850alpha002 aclnnSort.md] for the BFLOAT16 remark):
    /// - self, valuesOut, indicesOut required (161001);
    /// - self FLOAT / FLOAT16 / BFLOAT16 / INT32 / INT64 of rank 1-8 ("shape支持1-8维度"); valuesOut
    ///   of self's dtype (the page lists valuesOut types separately; a conversion is UNDOCUMENTED:
    ///   strict) and shape; indicesOut INT64 of self's shape (161002);
    /// - dim in `[-self.dim(), self.dim()-1]` (161002);
    /// - BFLOAT16: "the axis specified by dim cannot be 1" — read both ways (dim == 1, or an axis of
    ///   size 1), both refused (161002);
    /// - FLOAT32 stays FLOAT32 (the A2/A3 rows; the "Atlas training series converts FLOAT32 to
    ///   FLOAT16" remark concerns the 910A, which this 910B emulator is not).
    pub fn sort(
        x: Option<Desc>,
        stable: bool,
        dim: i64,
        descending: bool,
        values: Option<Desc>,
        indices: Option<Desc>,
    ) -> Result<Prim, Fail> {
        let (x, values, indices) = (req(x, "self")?, req(values, "valuesOut")?, req(indices, "indicesOut")?);
        super::want_dt(&x, &NUMERIC, "self")?;
        same_dtype(&x, &values, "valuesOut")?;
        super::want_dt(&indices, &[sys::ACL_INT64], "indicesOut")?;
        if x.dims.is_empty() || x.dims.len() > 8 {
            return Err(bad(format!("self {} must have rank 1..8", x.show())));
        }
        let dim = axis(dim, x.dims.len(), "dim")?;
        want_dims(&values, &x.dims, "valuesOut (shape of self)")?;
        want_dims(&indices, &x.dims, "indicesOut (shape of self)")?;
        if x.dtype == sys::ACL_BF16 && (dim == 1 || x.dims[dim] == 1) {
            return Err(bad(format!(
                "BFLOAT16 self: the axis specified by dim cannot be 1 (dim {dim}, size {})",
                x.dims[dim]
            )));
        }
        Ok(Prim::Sort {
            launch: "aclnnSort",
            x,
            dim,
            descending,
            stable,
            values: Some(values),
            indices,
        })
    }

    /// aclnnArgsort phase one ([HA Atlas200IDKA2 23.0.RC2 aclcppdevg_03_0214]; [OM
    /// math/sort/docs/aclnnArgsort.md]):
    /// - self, out required (161001);
    /// - self FLOAT / FLOAT16 / INT32 / INT64 (NOT EMULATED: INT16 / INT8 / UINT8; BFLOAT16 is not on
    ///   the DK page: refused); out INT64 of self's shape (161002);
    /// - dim in `[-self.dim(), self.dim())` (161002).
    ///
    /// The page has no `stable` flag: ties come out as from an unstable sort (rule SO3).
    pub fn argsort(x: Option<Desc>, dim: i64, descending: bool, out: Option<Desc>) -> Result<Prim, Fail> {
        let (x, out) = (req(x, "self")?, req(out, "out")?);
        super::want_dt(
            &x,
            &[sys::ACL_FLOAT, sys::ACL_FLOAT16, sys::ACL_INT32, sys::ACL_INT64],
            "self",
        )?;
        super::want_dt(&out, &[sys::ACL_INT64], "out")?;
        if x.dims.len() > 8 {
            return Err(bad(format!("self {} has rank > 8", x.show())));
        }
        let dim = axis(dim, x.dims.len(), "dim")?;
        want_dims(&out, &x.dims, "out (shape of self)")?;
        Ok(Prim::Sort {
            launch: "aclnnArgsort",
            x,
            dim,
            descending,
            stable: false,
            values: None,
            indices: out,
        })
    }
}

/// One key of a line, read in its own type (integers exactly, floats as f64 of the stored value).
#[derive(Clone, Copy, PartialEq, PartialOrd)]
pub(super) enum Key {
    /// An integer element.
    I(i64),
    /// A floating element (never NaN: refused before sorting).
    F(f64),
}

/// The keys of the line through `idx` along `dim` (`idx[dim]` is overwritten). A NaN → 561000
/// (the pages do not say where NaN sorts: UNDOCUMENTED, refused at launch; torch puts it last).
pub(super) fn line_keys(x: &HostTensor, idx: &mut [i64], dim: usize, who: &str) -> Result<Vec<Key>, Fail> {
    let n = x.d.dims[dim];
    let float = FLOATS.contains(&x.d.dtype);
    let mut keys = Vec::with_capacity(n as usize);
    for j in 0..n {
        idx[dim] = j;
        if float {
            let v = x.get_pos(x.d.pos(idx));
            if v.is_nan() {
                return Err(inner(format!(
                    "{who}: NaN at {idx:?} (where NaN sorts is UNDOCUMENTED, refused)"
                )));
            }
            // -0.0 and 0.0 compare equal (a tie), as IEEE.
            keys.push(Key::F(v));
        } else {
            keys.push(Key::I(x.get_int(idx)));
        }
    }
    Ok(keys)
}

fn cmp(a: &Key, b: &Key) -> Ordering {
    a.partial_cmp(b).unwrap_or(Ordering::Equal)
}

/// The order of a line: positions sorted by key, ascending or descending. Equal keys keep their
/// index order when `stable`; otherwise they come out in *reverse* index order — a legal result of
/// an unstable sort, chosen so that a caller relying on stability it did not ask for sees it
/// (RULES.md SO3).
fn order(keys: &[Key], descending: bool, stable: bool) -> Vec<usize> {
    let mut p: Vec<usize> = (0..keys.len()).collect();
    p.sort_by(|&i, &j| {
        let o = if descending {
            cmp(&keys[j], &keys[i])
        } else {
            cmp(&keys[i], &keys[j])
        };
        o.then_with(|| if stable { i.cmp(&j) } else { j.cmp(&i) })
    });
    p
}

/// aclnnSort / aclnnArgsort launch: per line along `dim`, valuesOut (if any) gets the sorted
/// elements (bytes copied: no rounding) and indicesOut their positions in the line.
pub(super) fn run_sort(
    x: &HostTensor,
    outs: &mut [HostTensor],
    dim: usize,
    descending: bool,
    stable: bool,
    who: &str,
) -> Result<(), Fail> {
    let mut outer = x.d.dims.clone();
    if outer.is_empty() {
        return Ok(());
    }
    outer[dim] = 1;
    let mut err = None;
    for_each(&outer, |base| {
        if err.is_some() {
            return;
        }
        let mut idx = base.to_vec();
        let keys = match line_keys(x, &mut idx, dim, who) {
            Ok(k) => k,
            Err(e) => {
                err = Some(e);
                return;
            }
        };
        for (j, &src) in order(&keys, descending, stable).iter().enumerate() {
            idx[dim] = j as i64;
            let mut from = idx.clone();
            from[dim] = src as i64;
            if outs.len() == 2 {
                let v = x.raw(x.d.pos(&from)).to_vec();
                let p = outs[0].d.pos(&idx);
                outs[0].set_raw(p, &v);
            }
            let last = outs.len() - 1;
            outs[last].set_int(&idx, src as i64);
        }
    });
    err.map_or(Ok(()), Err)
}

/// Types sortedSequence / self may have (the page's list; NOT EMULATED: DOUBLE, UINT8, INT8, INT16).
const SEARCHABLE: [sys::aclDataType; 4] = [sys::ACL_FLOAT, sys::ACL_FLOAT16, sys::ACL_INT32, sys::ACL_INT64];

impl Prim {
    /// aclnnSearchSorted phase one ([OM math/search_sorted/docs/aclnnSearchSorted.md]; [HA 83RC1
    /// aclnnSearchSorted.md]):
    /// - sortedSequence, self, out required; sorter optional (161001);
    /// - sortedSequence, self FLOAT / FLOAT16 / INT32 / INT64 (NOT EMULATED: DOUBLE, UINT8, INT8,
    ///   INT16), rank <= 8; two different types must promote ("互推导关系": any pair of these does,
    ///   integers with floats compare as floats); sorter INT64 of sortedSequence's shape; out INT32
    ///   when outInt32 else INT64 ("out的数据类型与outInt32值含义相违背" → 161002), self's shape;
    /// - sortedSequence of rank > 1: self has its rank and the same sizes on every axis but the last
    ///   (161002); of rank 1: any self.
    pub fn search_sorted(
        seq: Option<Desc>,
        x: Option<Desc>,
        out_int32: bool,
        right: bool,
        sorter: Option<Desc>,
        out: Option<Desc>,
    ) -> Result<Prim, Fail> {
        let (seq, x, out) = (req(seq, "sortedSequence")?, req(x, "self")?, req(out, "out")?);
        super::want_dt(&seq, &SEARCHABLE, "sortedSequence")?;
        super::want_dt(&x, &SEARCHABLE, "self")?;
        if seq.dims.is_empty() || seq.dims.len() > 8 || x.dims.len() > 8 {
            return Err(bad(format!(
                "sortedSequence {} must have rank 1..8, self {} rank <= 8",
                seq.show(),
                x.show()
            )));
        }
        let want_out = if out_int32 { sys::ACL_INT32 } else { sys::ACL_INT64 };
        super::want_dt(&out, &[want_out], "out (outInt32 says)")?;
        want_dims(&out, &x.dims, "out (shape of self)")?;
        if let Some(s) = &sorter {
            super::want_dt(s, &[sys::ACL_INT64], "sorter")?;
            want_dims(s, &seq.dims, "sorter (shape of sortedSequence)")?;
        }
        let r = seq.dims.len();
        if r > 1 && (x.dims.len() != r || x.dims[..r - 1] != seq.dims[..r - 1]) {
            return Err(bad(format!(
                "self {} must match sortedSequence {} on every axis but the last",
                x.show(),
                seq.show()
            )));
        }
        Ok(Prim::SearchSorted {
            seq,
            x,
            right,
            sorter,
            out,
        })
    }
}

/// A key as f64 or i64: integers compare exactly with integers, everything else as f64.
fn key_of(t: &HostTensor, idx: &[i64], float: bool) -> Key {
    if float {
        Key::F(t.get_pos(t.d.pos(idx)))
    } else {
        Key::I(t.get_int(idx))
    }
}

/// aclnnSearchSorted launch: `out_i = min{j in [0, N] | seq_j >= x}` (right: `seq_j > x`), N if
/// none. The sequence (through sorter, when given) must be non-decreasing: the page's precondition,
/// which the device does not check — the emulator refuses a violation (561000), as it does a
/// sorter entry outside `[0, N)` or a repeated one, and a NaN (RULES.md SS3).
pub(super) fn run_search_sorted(ins: &[HostTensor], out: &mut HostTensor, right: bool) -> Result<(), Fail> {
    let (seq, x) = (&ins[0], &ins[1]);
    let sorter = ins.get(2);
    let float = FLOATS.contains(&seq.d.dtype) || FLOATS.contains(&x.d.dtype);
    let r = seq.d.dims.len();
    let n = seq.d.dims[r - 1];
    let mut rows = seq.d.dims.clone();
    rows[r - 1] = 1;
    let mut err = None;
    for_each(&rows, |row| {
        if err.is_some() {
            return;
        }
        let mut idx = row.to_vec();
        let mut line = Vec::with_capacity(n as usize);
        let mut seen = vec![false; n as usize];
        for j in 0..n {
            idx[r - 1] = j;
            let k = match sorter {
                Some(s) => s.get_int(&idx),
                None => j,
            };
            if k < 0 || k >= n || seen[k as usize] {
                err = Some(inner(format!(
                    "aclnnSearchSorted: sorter entry {k} at {idx:?} is outside [0, {n}) or repeated"
                )));
                return;
            }
            seen[k as usize] = true;
            idx[r - 1] = k;
            let v = key_of(seq, &idx, float);
            if matches!(v, Key::F(f) if f.is_nan()) {
                err = Some(inner(
                    "aclnnSearchSorted: NaN in sortedSequence (UNDOCUMENTED, refused)",
                ));
                return;
            }
            if line.last().is_some_and(|p: &Key| cmp(p, &v) == Ordering::Greater) {
                err = Some(inner(format!(
                    "aclnnSearchSorted: sortedSequence is not sorted at {idx:?} (the page's precondition; the device would return garbage)"
                )));
                return;
            }
            line.push(v);
        }
        // The self elements this row serves: all of self for a 1-D sequence, else self's row.
        let mut sub = x.d.dims.clone();
        if r > 1 {
            sub.iter_mut().take(r - 1).for_each(|s| *s = 1);
        }
        for_each(&sub, |e| {
            if err.is_some() {
                return;
            }
            let full: Vec<i64> = if r > 1 {
                e.iter().zip(row).map(|(a, b)| a + b).collect()
            } else {
                e.to_vec()
            };
            let v = key_of(x, &full, float);
            if matches!(v, Key::F(f) if f.is_nan()) {
                err = Some(inner("aclnnSearchSorted: NaN in self (UNDOCUMENTED, refused)"));
                return;
            }
            let pos = line
                .iter()
                .position(|s| match cmp(s, &v) {
                    Ordering::Greater => true,
                    Ordering::Equal => !right,
                    Ordering::Less => false,
                })
                .unwrap_or(line.len());
            out.set_int(&full, pos as i64);
        });
    });
    err.map_or(Ok(()), Err)
}
