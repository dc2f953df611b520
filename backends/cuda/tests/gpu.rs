//! CUDA backend vs the reference backend, every op, through the test kit (`moehal-testkit`): the
//! cases of `moehal check` and the shape sweep on every grouped GEMM path, each passing case run
//! again for bitwise determinism (the kit poisons and guards outputs and inputs, and prints each
//! case's seed); and 64-bit offsets on tables past 2^32 elements. Prints "skipped: ..." and passes
//! where the backend is unavailable, unless `MOEHAL_REQUIRE_CUDA=1` (then it fails: a GPU run must
//! not pass having tested nothing).

use half::bf16;
use moehal_core::ops::*;
use moehal_core::{Backend, BackendExt, Buffer, DType, Error, OpKind, Reference};
use moehal_cuda::{CudaBackend, GemmPath};
use moehal_testkit::{check_backend, default_cases, sweep_cases, Case};

fn cuda() -> Option<CudaBackend> {
    match moehal_cuda::open(0) {
        Ok(b) => Some(b),
        Err(Error::Unavailable { reason, .. }) => match moehal_cuda::skip_or_fail("the CUDA backend", &reason) {
            Ok(line) => {
                println!("{line}");
                None
            }
            Err(msg) => panic!("{msg}"),
        },
        Err(e) => panic!("CUDA present but open failed: {e}"),
    }
}

/// Every kit case on the default path; the grouped GEMM cases again on each forced path
/// (tensor cores, decode, SIMT).
#[test]
fn kit_cases_on_every_gemm_path() {
    let Some(cu) = cuda() else { return };
    let mut cases = default_cases();
    cases.extend(sweep_cases());
    let gemm: Vec<Case> = cases
        .iter()
        .filter(|c| c.op() == OpKind::GroupedGemm)
        .cloned()
        .collect();
    let mut failures = Vec::new();
    for path in [GemmPath::Auto, GemmPath::TensorCore, GemmPath::Decode, GemmPath::Simt] {
        cu.set_gemm_path(path);
        let list = if path == GemmPath::Auto { &cases } else { &gemm };
        failures.extend(check_backend(&cu, &format!("cuda {path:?}"), list, 0x5EED, true).failures);
    }
    cu.set_gemm_path(GemmPath::Auto);
    assert!(failures.is_empty(), "conformance failures:\n{}", failures.join("\n"));
}

/// A host table registered once (`pin_host_table`) serves several gathers in place, bitwise the
/// table's rows each time, rejects bad rows as before, and releases its registration when dropped
/// (a new table, possibly at the same address, then pins and reads its own bytes).
#[test]
fn pinned_host_table_serves_repeated_gathers() {
    let Some(cu) = cuda() else { return };
    let (r, d) = (1000usize, 8usize);
    let vals: Vec<f32> = (0..r * d).map(|i| i as f32 * 0.5 - 7.0).collect();
    let host = moehal_core::host::buffer_from_slice(&vals).unwrap();
    let haddr = host.addr();
    let table = cu.pin_host_table(host).map_err(|(e, _)| e).unwrap();
    assert_eq!(table.addr(), haddr);
    let rows: Vec<i64> = vec![999, 0, 512, 3, 3, 700];
    let rb = cu.upload_slice(&rows).unwrap();
    let want: Vec<f32> = rows
        .iter()
        .flat_map(|&q| vals[q as usize * d..(q as usize + 1) * d].to_vec())
        .collect();
    for call in 0..3 {
        let mut ob = cu.filled(rows.len() * d, f32::NAN).unwrap();
        let args = GatherRows {
            table: table.view(DType::F32, &[r, d]),
            format: TableFormat::F32,
            rows: rb.view(DType::I64, &[3, 2]),
            out: ob.view_mut(DType::F32, &[3, 2 * d]),
        };
        cu.gather_rows(args.validate().unwrap()).unwrap();
        assert_eq!(
            cu.download_vec::<f32>(&ob, rows.len() * d).unwrap(),
            want,
            "call {call}"
        );
    }
    // Invalid rows are still rejected before any write.
    let bad = cu.upload_slice(&[1000i64]).unwrap();
    let mut ob = cu.filled(d, f32::NAN).unwrap();
    let args = GatherRows {
        table: table.view(DType::F32, &[r, d]),
        format: TableFormat::F32,
        rows: bad.view(DType::I64, &[1, 1]),
        out: ob.view_mut(DType::F32, &[1, d]),
    };
    assert!(matches!(
        cu.gather_rows(args.validate().unwrap()),
        Err(Error::InvalidArgument { .. })
    ));
    drop(table);
    // Released: a fresh buffer (possibly at the same address) pins and reads its own bytes.
    let again = cu
        .pin_host_table(moehal_core::host::buffer_from_slice(&vals).unwrap())
        .map_err(|(e, _)| e)
        .unwrap();
    let mut ob = cu.filled(d, f32::NAN).unwrap();
    let one = cu.upload_slice(&[7i64]).unwrap();
    let args = GatherRows {
        table: again.view(DType::F32, &[r, d]),
        format: TableFormat::F32,
        rows: one.view(DType::I64, &[1, 1]),
        out: ob.view_mut(DType::F32, &[1, d]),
    };
    cu.gather_rows(args.validate().unwrap()).unwrap();
    assert_eq!(cu.download_vec::<f32>(&ob, d).unwrap(), vals[7 * d..8 * d].to_vec());
    // A device buffer is refused, and handed back.
    let dev = cu.alloc(64).unwrap();
    let (e, back) = cu.pin_host_table(dev).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert_eq!(back.len(), 64);
}

/// Fill `n` bytes of device memory with zeros in 64 MiB uploads (alloc does not promise zeros).
fn device_zeros(be: &dyn Backend, n: usize) -> Buffer {
    let mut b = be.alloc(n).unwrap();
    let chunk = vec![0u8; 64 << 20];
    let mut off = 0;
    while off < n {
        let len = chunk.len().min(n - off);
        be.upload(&mut b, off, &chunk[..len]).unwrap();
        off += len;
    }
    b
}

/// 64-bit offsets (issue 16, item 7), on the device: a gather from a device table of
/// 2^32 + 10 elements (row R-1 starts past 2^32: a u32 index would read row 4), Engram rows
/// past 2^32 gathered from a 24 GiB device table, and a grouped GEMM whose x has 2^31 + 128
/// elements (rows start past element 2^31). About 36 GiB of device memory; values are checked
/// exactly. The same cases run on cpu, reference and the emulator in
/// `ffi/tests/offsets64.rs`.
#[test]
fn offsets_past_2_31() {
    let Some(cu) = cuda() else { return };
    let p31 = 1usize << 31;
    let val = |r: usize, j: usize| ((r % 1_000_003) * 4 + j + 1) as f32;
    // Gather: [R, 2] f32, R = 2^31 + 5.
    {
        let (r, d) = (p31 + 5, 2usize);
        let mut tb = cu.alloc(r * d * 4).unwrap();
        let rows: Vec<i64> = vec![(r - 1) as i64, (p31 / 2) as i64, 3, (r - 2) as i64];
        for &q in &rows {
            let v: Vec<u8> = (0..d).flat_map(|j| val(q as usize, j).to_ne_bytes()).collect();
            cu.upload(&mut tb, q as usize * d * 4, &v).unwrap();
        }
        let rb = cu.upload_slice(&rows).unwrap();
        let mut ob = cu.filled(rows.len() * d, f32::NAN).unwrap();
        let args = GatherRows {
            table: tb.view(DType::F32, &[r, d]),
            format: TableFormat::F32,
            rows: rb.view(DType::I64, &[2, 2]),
            out: ob.view_mut(DType::F32, &[2, 2 * d]),
        };
        cu.gather_rows(args.validate().unwrap()).unwrap();
        let want: Vec<f32> = rows
            .iter()
            .flat_map(|&q| (0..d).map(move |j| val(q as usize, j)))
            .collect();
        assert_eq!(
            cu.download_vec::<f32>(&ob, rows.len() * d).unwrap(),
            want,
            "gather past 2^32 elements"
        );
    }
    // Engram: moduli 2^31 + 11 and 2^32 + 15, R = 6442450970 rows of one f32.
    {
        let layer = moehal_core::engram::EngramLayer::new(
            3,
            1,
            vec![0x9E37_79B9_7F4B, 0x1234_5679, 0xDEAD_BEEF],
            vec![2_147_483_659, 4_294_967_311],
            1000,
            0,
        )
        .unwrap();
        let r = layer.rows() as usize;
        let ids: Vec<i64> = vec![5, 999, 17, 400, 3, 3, 871, 42];
        let (t, c) = (ids.len(), layer.columns());
        let re = Reference::new();
        let ib = re.upload_slice(&ids).unwrap();
        let mut rb = re.filled(t * c, -1i64).unwrap();
        let h = EngramHash {
            layer: &layer,
            ids: ib.view(DType::I64, &[t]),
            positions: None,
            alive: None,
            history: &[],
            rows: rb.view_mut(DType::I64, &[t, c]),
        };
        re.engram_hash(h.validate().unwrap()).unwrap();
        let rows = re.download_vec::<i64>(&rb, t * c).unwrap();
        assert!(rows.iter().filter(|&&q| q as u64 >= 1 << 32).count() >= 2, "{rows:?}");
        let mut tb = cu.alloc(r * 4).unwrap();
        for &q in &rows {
            cu.upload(&mut tb, q as usize * 4, &val(q as usize, 0).to_ne_bytes())
                .unwrap();
        }
        let ib = cu.upload_slice(&ids).unwrap();
        let mut ob = cu.filled(t * c, f32::NAN).unwrap();
        let l = EngramLookup {
            layer: &layer,
            ids: ib.view(DType::I64, &[t]),
            positions: None,
            alive: None,
            history: &[],
            table: tb.view(DType::F32, &[r, 1]),
            format: TableFormat::F32,
            out: ob.view_mut(DType::F32, &[t, c]),
        };
        cu.engram_lookup(l.validate().unwrap()).unwrap();
        let want: Vec<f32> = rows.iter().map(|&q| val(q as usize, 0)).collect();
        assert_eq!(
            cu.download_vec::<f32>(&ob, t * c).unwrap(),
            want,
            "engram rows past 2^32"
        );
    }
    // Grouped GEMM: x [M, 64] bf16 with M = 2^25 + 2 (2^31 + 128 elements), w [1, 1, 64].
    {
        let (k, m) = (64usize, (p31 >> 6) + 2);
        let mut xb = device_zeros(&cu, m * k * 2);
        let w: Vec<bf16> = (0..k).map(|j| bf16::from_f32((j + 1) as f32)).collect();
        for (row, col, v) in [(m - 1, 63usize, 1.0f32), (m - 2, 0, 2.0), (1, 5, 1.0)] {
            cu.upload(&mut xb, (row * k + col) * 2, &bf16::from_f32(v).to_ne_bytes())
                .unwrap();
        }
        let wb = cu.upload_slice(&w).unwrap();
        let ge = cu.upload_slice(&[m as i64]).unwrap();
        let mut yb = cu.filled(m, bf16::from_f32(f32::NAN)).unwrap();
        let a = GroupedGemm {
            x: xb.view(DType::BF16, &[m, k]),
            w: wb.view(DType::BF16, &[1, 1, k]),
            layout: WeightLayout::NK,
            group_end: ge.view(DType::I64, &[1]),
            row_scale: None,
            bias: None,
            y: yb.view_mut(DType::BF16, &[m, 1]),
        };
        cu.grouped_gemm(a.validate().unwrap()).unwrap();
        let y = cu.download_vec::<bf16>(&yb, m).unwrap();
        let want = |i: usize| match i {
            _ if i == m - 1 => 64.0,
            _ if i == m - 2 => 2.0,
            1 => 6.0,
            _ => 0.0,
        };
        let bad: Vec<usize> = (0..m).filter(|&i| y[i].to_f32() != want(i)).take(5).collect();
        assert!(bad.is_empty(), "grouped GEMM rows past 2^31: y differs at rows {bad:?}");
    }
}
