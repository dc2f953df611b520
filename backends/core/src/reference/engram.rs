//! Reference `engram_hash` and `engram_lookup`: the window-and-hash rule of OPS.md §4 as
//! [`EngramLayer::hash_sequence`](crate::engram::EngramLayer::hash_sequence) states it, then the
//! reference gather.

use crate::host::{slice, slice_mut};
use crate::ops::engram_hash::check_canonical_ids;
use crate::ops::{EngramHash, EngramLookup};
use crate::Result;

/// The host inputs of a hash: ids (checked in `[0, V')`), positions, alive mask.
type HashInputs<'a> = (&'a [i64], Option<&'a [i64]>, Option<&'a [u8]>);

fn inputs<'a>(
    op: &'static str,
    ids: &crate::TensorRef<'a>,
    positions: Option<&crate::TensorRef<'a>>,
    alive: Option<&crate::TensorRef<'a>>,
    vocab: u64,
) -> Result<HashInputs<'a>> {
    let ids = slice::<i64>(ids, op, "ids")?;
    check_canonical_ids(op, "ids", ids, vocab)?;
    let positions = positions.map(|p| slice::<i64>(p, op, "positions")).transpose()?;
    let alive = alive.map(|a| slice::<u8>(a, op, "alive")).transpose()?;
    Ok((ids, positions, alive))
}

pub(super) fn hash(mut a: EngramHash<'_>) -> Result<()> {
    const OP: &str = "engram_hash";
    let (ids, positions, alive) = inputs(OP, &a.ids, a.positions.as_ref(), a.alive.as_ref(), a.layer.vocab_size())?;
    let out = slice_mut::<i64>(&mut a.rows, OP, "rows")?;
    a.layer.hash_sequence(ids, positions, alive, a.history, out)
}

pub(super) fn lookup(mut a: EngramLookup<'_>) -> Result<()> {
    const OP: &str = "engram_lookup";
    let (ids, positions, alive) = inputs(OP, &a.ids, a.positions.as_ref(), a.alive.as_ref(), a.layer.vocab_size())?;
    let mut rows = vec![0i64; ids.len() * a.layer.columns()];
    a.layer.hash_sequence(ids, positions, alive, a.history, &mut rows)?;
    super::gather_rows::gather(OP, &a.table, a.format, &rows, a.layer.columns(), &mut a.out)
}
