//! The straight-line plain-table `gather_rows` path (issue 16 item 9: `CpuBackend::gather_rows`
//! goes to `engram::gather_plain_serial` for an f32 / bf16 / f16 table below
//! `GATHER_SERIAL_BELOW` rows), through the `Backend` trait, on every instruction set and one
//! thread: bitwise the reference on views with element offsets (not row-aligned), duplicate
//! indices, the first and the last row, zero rows, zero columns and D = 0; an out-of-range index
//! is `InvalidArgument` on `rows` with the output untouched.

use moehal_core::ops::{GatherRows, TableFormat};
use moehal_core::{Backend, Buffer, DType, Error, Reference};
use moehal_cpu::engram;
use moehal_cpu::{CpuBackend, Isa};

/// Poison byte of outputs before each call: an output byte still equal to it where a row should
/// be (or different from it outside the view) shows a missing (or stray) write.
const POISON: u8 = 0xA5;

fn backends() -> Vec<(String, CpuBackend)> {
    let mut v: Vec<(String, CpuBackend)> = Isa::all_available()
        .into_iter()
        .map(|i| (format!("cpu {i:?}"), CpuBackend::with_isa(i).unwrap()))
        .collect();
    v.push(("cpu 1 thread".into(), CpuBackend::with_threads(1).unwrap()));
    v
}

fn host(bytes: &[u8]) -> Buffer {
    moehal_core::host::buffer_from_slice(bytes).unwrap()
}

/// One call: table `[r, d]` of `fmt` at element offset `t_off` in its buffer, `rows` as `[t, c]`,
/// output `[t, c * d]` at element offset `o_off`; returns the call's result and the whole output
/// buffer's bytes (poisoned before the call).
fn call(
    be: &dyn Backend,
    fmt: TableFormat,
    r: usize,
    d: usize,
    t_off: usize,
    rows: &[i64],
    t: usize,
    c: usize,
    o_off: usize,
) -> (Result<(), Error>, Vec<u8>) {
    let dt = fmt.storage_dtype();
    let es = dt.size();
    let table_bytes: Vec<u8> = (0..(t_off + r * d) * es).map(|i| (i * 131 % 251) as u8).collect();
    let table = host(&table_bytes);
    let rows_bytes: Vec<u8> = rows.iter().flat_map(|x| x.to_le_bytes()).collect();
    let rows_buf = host(&rows_bytes);
    let out_len = (o_off + t * c * d) * es;
    let mut out = host(&vec![POISON; out_len]);
    let res = GatherRows {
        table: table.view(dt, &[r, d]).with_offset(t_off),
        format: fmt,
        rows: rows_buf.view(DType::I64, &[t, c]),
        out: out.view_mut(dt, &[t, c * d]).with_offset(o_off),
    }
    .validate()
    .and_then(|a| be.gather_rows(a));
    let bytes = moehal_core::host::bytes(&out, "t", "out").unwrap()[..out_len].to_vec();
    (res, bytes)
}

#[test]
fn plain_gather_equals_reference_bitwise() {
    let rf = Reference::new();
    for (label, cpu) in backends() {
        for fmt in [TableFormat::F32, TableFormat::BF16, TableFormat::F16] {
            let (r, d) = (37, 24);
            // Duplicates, the first and the last row, an odd element offset on both views.
            let rows = [36i64, 0, 5, 5, 36, 17, 0, 2, 36, 11, 11, 30];
            for (t, c) in [(3, 4), (1, 12), (12, 1)] {
                for (t_off, o_off) in [(0, 0), (5, 3)] {
                    let (want_res, want) = call(&rf, fmt, r, d, t_off, &rows, t, c, o_off);
                    let (got_res, got) = call(&cpu, fmt, r, d, t_off, &rows, t, c, o_off);
                    want_res.unwrap();
                    got_res.unwrap_or_else(|e| panic!("{label} {fmt:?} T {t} C {c}: {e}"));
                    assert_eq!(got, want, "{label} {fmt:?} T {t} C {c} offsets {t_off}/{o_off}");
                    // The prefix before the output view is untouched; every gathered row landed.
                    let es = fmt.storage_dtype().size();
                    assert!(got[..o_off * es].iter().all(|&b| b == POISON), "{label}");
                    assert!(got[o_off * es..].iter().any(|&b| b != POISON), "{label}");
                }
            }
        }
    }
}

#[test]
fn plain_gather_empty_shapes() {
    for (label, cpu) in backends() {
        for fmt in [TableFormat::F32, TableFormat::BF16] {
            // Zero tokens, zero columns, and D = 0 (rows still checked against R).
            for (t, c, d, rows) in [
                (0usize, 4usize, 8usize, vec![]),
                (3, 0, 8, vec![]),
                (2, 2, 0, vec![0i64, 3, 3, 1]),
            ] {
                let (res, out) = call(&cpu, fmt, 4, d, 0, &rows, t, c, 0);
                res.unwrap_or_else(|e| panic!("{label} {fmt:?} T {t} C {c} D {d}: {e}"));
                assert!(out.is_empty(), "{label}");
            }
            let (res, _) = call(&cpu, fmt, 4, 0, 0, &[0, 4], 1, 2, 0);
            assert!(
                matches!(res, Err(Error::InvalidArgument { field: "rows", .. })),
                "{label} D = 0, row 4 of 4: {res:?}"
            );
        }
    }
}

#[test]
fn plain_gather_out_of_range_writes_nothing() {
    for (label, cpu) in backends() {
        for fmt in [TableFormat::F32, TableFormat::BF16, TableFormat::F16] {
            let (r, d) = (10, 16);
            // The bad index last, so a path that copied before checking would have written rows.
            for bad in [10i64, -1, i64::MAX, i64::MIN] {
                let rows = [0, 9, 3, bad];
                let (res, out) = call(&cpu, fmt, r, d, 2, &rows, 2, 2, 1);
                match res {
                    Err(Error::InvalidArgument {
                        field: "rows", ref msg, ..
                    }) => {
                        assert!(msg.contains(&format!("rows[3] = {bad}")), "{label}: {msg}")
                    }
                    other => panic!("{label} {fmt:?} row {bad}: {other:?}"),
                }
                assert!(
                    out.iter().all(|&b| b == POISON),
                    "{label} {fmt:?} row {bad}: output written"
                );
            }
        }
    }
}

#[test]
fn gather_plain_serial_checks_its_lengths() {
    let table = vec![7u8; 4 * 8];
    let mut out = vec![0u8; 2 * 8];
    engram::gather_plain_serial(&table, 8, 4, &[3, 0], &mut out).unwrap();
    assert!(out.iter().all(|&b| b == 7));
    // A table shorter than R * row bytes, an output of the wrong length, a row count whose
    // product overflows: errors, nothing written.
    let mut out = [0u8; 16];
    for (tab_rows, rb, rows, out_len) in [
        (5, 8, &[0i64, 1][..], 16),
        (4, 8, &[0, 1][..], 15),
        (usize::MAX, 8, &[0, 1][..], 16),
    ] {
        let e = engram::gather_plain_serial(&table, rb, tab_rows, rows, &mut out[..out_len]).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
        assert!(out.iter().all(|&b| b == 0));
    }
}

/// `engram_lookup`'s serial path (below `LOOKUP_SERIAL_BELOW` tokens, the decode step's case that
/// issue 16 item 9 measured against the reference) on plain tables, through the `Backend` trait
/// on every instruction set and one thread: bitwise the reference for f32 / bf16 / f16 tables,
/// token counts around the layer's order, with history, positions and an alive mask, on views at
/// element offsets, nothing before the output view written.
#[test]
fn plain_lookup_equals_reference_bitwise() {
    use moehal_core::ops::EngramLookup;
    let layer = moehal_core::engram::toy::layer().unwrap();
    let (r, c) = (layer.rows() as usize, layer.columns());
    let d = 12;
    let rf = Reference::new();
    let run = |be: &dyn Backend, fmt: TableFormat, t: usize, with_pos: bool| -> Vec<u8> {
        let dt = fmt.storage_dtype();
        let es = dt.size();
        let (t_off, o_off) = (3, 5);
        let table_bytes: Vec<u8> = (0..(t_off + r * d) * es).map(|i| (i * 131 % 251) as u8).collect();
        let table = host(&table_bytes);
        let le = |v: &[i64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let ids: Vec<i64> = (0..t as i64).map(|x| x * 7 % 50).collect();
        let ids_buf = host(&le(&ids));
        let pos: Vec<i64> = (0..t as i64).map(|x| x / 3 * 3).collect();
        let pos_buf = host(&le(&pos));
        let alive: Vec<u8> = (0..t).map(|i| (i % 4 != 2) as u8).collect();
        let alive_buf = host(&alive);
        let out_len = (o_off + t * c * d) * es;
        let mut out = host(&vec![POISON; out_len]);
        EngramLookup {
            layer: &layer,
            ids: ids_buf.view(DType::I64, &[t]),
            positions: with_pos.then(|| pos_buf.view(DType::I64, &[t])),
            alive: with_pos.then(|| alive_buf.view(DType::U8, &[t])),
            history: &[4, 9],
            table: table.view(dt, &[r, d]).with_offset(t_off),
            format: fmt,
            out: out.view_mut(dt, &[t, c * d]).with_offset(o_off),
        }
        .validate()
        .and_then(|a| be.engram_lookup(a))
        .unwrap();
        let bytes = moehal_core::host::bytes(&out, "t", "out").unwrap()[..out_len].to_vec();
        assert!(
            bytes[..o_off * es].iter().all(|&b| b == POISON),
            "written before the view"
        );
        bytes
    };
    for (label, cpu) in backends() {
        for fmt in [TableFormat::F32, TableFormat::BF16, TableFormat::F16] {
            for t in [0, 1, 2, 3, 4, 9] {
                for with_pos in [false, true] {
                    assert_eq!(
                        run(&cpu, fmt, t, with_pos),
                        run(&rf, fmt, t, with_pos),
                        "{label} {fmt:?} T {t} positions {with_pos}"
                    );
                }
            }
        }
    }
}
