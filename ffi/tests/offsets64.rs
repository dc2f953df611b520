//! 64-bit offsets proven, not assumed (issue 16, item 7): element offsets past 2^31 (and past
//! 2^32, where a u32 index would wrap) on the `cpu` and `reference` backends and on the Ascend
//! backend over the ACL emulator, through the Rust API and (gather) through the C ABI.
//!
//! The big tensors cost no RAM: Engram tables are sparse files (holes read as zeros; only the
//! pages the test writes or the op reads exist), GEMM operands are anonymous mappings (pages
//! never written are the kernel's shared zero page). The gather and Engram tests stay under 10 MB
//! resident; the GEMM tests hold their `[M, 1]` output (64 MiB) and its f32 copy.
//!
//! What the emulator cannot take cheaply: its device kernels copy a tensor's whole storage into
//! host memory (`ascend-emu/src/tensor.rs`, `HostTensor`), so a device tensor of more than 2^31
//! elements costs its full size in RAM (4 GiB and up). The emulator therefore runs the cases whose
//! big tensor is a host table (gather, Engram lookup: the Ascend backend reads host tables in
//! place), and the grouped GEMM with more than 2^31 elements in `x` runs on the emulator only in
//! the ignored test `grouped_gemm_x_past_2_31_on_the_emulator` (needs ~9 GB of RAM).
//! The grouped GEMM cases do 2^31 multiply-adds (inherent in an `x` of 2^31 elements) and are
//! ignored in `cargo test`; run them with
//! `cargo test -p moehal-ffi --release --test offsets64 -- --ignored grouped_gemm`.
//! The CUDA case is `offsets_past_2_31` in `backends/cuda/tests/gpu.rs`, run by
//! `scripts/gpu/check.sh`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use half::bf16;
use moehal_core::engram::EngramLayer;
use moehal_core::host::HostMemory;
use moehal_core::ops::{EngramHash, EngramLookup, GatherRows, GroupedGemm, TableFormat, WeightLayout};
use moehal_core::{Backend, BackendExt, Buffer, DType, Reference};

const P31: u64 = 1 << 31;
const P32: u64 = 1 << 32;

/// A sparse file of `len` bytes (removed on drop) and a read-only mapping of it.
struct Sparse {
    path: PathBuf,
    file: File,
}

impl Sparse {
    fn new(tag: &str, len: u64) -> Sparse {
        let path = std::env::temp_dir().join(format!("moehal-offsets64-{tag}-{}", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create sparse file");
        file.set_len(len).expect("set_len (sparse)");
        Sparse { path, file }
    }
    fn write_f32(&self, elem: u64, v: &[f32]) {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
        self.file.write_all_at(&b, elem * 4).expect("write into sparse file");
    }
    fn map(&self) -> memmap2::Mmap {
        // SAFETY: the file is private to this test and not modified while mapped.
        unsafe { memmap2::Mmap::map(&self.file) }.expect("mmap sparse file")
    }
}

impl Drop for Sparse {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A read-only host buffer over a mapping.
fn host_view(m: &memmap2::Mmap) -> Buffer {
    // SAFETY: the mapping outlives the buffer (both live in the test's scope), read-only.
    let mem = unsafe { HostMemory::from_raw(m.as_ptr() as *mut u8, m.len(), false) }.expect("wrap mapping");
    Buffer::new(Box::new(mem))
}

/// The backends of this test: cpu, reference, and Ascend on the emulator.
fn backends() -> Vec<(&'static str, Arc<dyn Backend>)> {
    let mut v: Vec<(&'static str, Arc<dyn Backend>)> = vec![("reference", Arc::new(Reference))];
    let reg = moehal::Registry::discover();
    v.push(("cpu", reg.open("cpu").expect("cpu backend")));
    v.push(("ascend (emulator)", emulated()));
    v
}

fn emulated() -> Arc<dyn Backend> {
    let target = moehal_ascend::emulator::target_dir_of_current_exe().expect("test binary lives in a target dir");
    let dir = moehal_ascend::emulator::build_profile(&target, moehal_ascend::emulator::DEFAULT_PROFILE, None)
        .unwrap_or_else(|e| panic!("emulator build: {e}"));
    moehal_ascend::open_at(&dir, 0).unwrap_or_else(|e| panic!("open ascend on the emulator: {e}"))
}

/// Distinct, exactly representable values of table row `r` (column `j` of `d`).
fn row_value(r: u64, j: usize) -> f32 {
    ((r % 1_000_003) * 4 + j as u64 + 1) as f32
}

#[test]
fn gather_from_a_table_past_2_32_elements() {
    // [R, 2] f32 with R = 2^31 + 5: 2^32 + 10 elements (16 GiB, sparse).
    const D: usize = 2;
    let r = P31 + 5;
    let f = Sparse::new("gather", r * D as u64 * 4);
    // Row R-1 starts at element 2^32 + 8 (a u32 index reads row 4); row 2^30 at 2^31 (an i32
    // index goes negative); row 3 is an ordinary one.
    let rows: Vec<i64> = vec![
        (r - 1) as i64,
        (P31 / 2) as i64,
        3,
        (P31 / 2 + 1) as i64,
        (r - 2) as i64,
        3,
    ];
    for &row in &rows {
        f.write_f32(
            row as u64 * D as u64,
            &[row_value(row as u64, 0), row_value(row as u64, 1)],
        );
    }
    let map = f.map();
    let table = host_view(&map);
    let want: Vec<f32> = rows
        .iter()
        .flat_map(|&q| (0..D).map(move |j| row_value(q as u64, j)))
        .collect();
    let t = rows.len() / 2;
    for (name, be) in backends() {
        let rb = be.upload_slice(&rows).unwrap();
        let mut out = be.filled(rows.len() * D, f32::NAN).unwrap();
        let a = GatherRows {
            table: table.view(DType::F32, &[r as usize, D]),
            format: TableFormat::F32,
            rows: rb.view(DType::I64, &[t, 2]),
            out: out.view_mut(DType::F32, &[t, 2 * D]),
        };
        be.gather_rows(a.validate().unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = be.download_vec::<f32>(&out, rows.len() * D).unwrap();
        assert_eq!(got, want, "{name}: gather past 2^32 elements");
    }
    // An index one past the end is still an error, not a wrapped row.
    let be = &backends()[1].1;
    let bad = be.upload_slice(&[r as i64, 0]).unwrap();
    let mut out = be.filled(2 * D, 0f32).unwrap();
    let a = GatherRows {
        table: table.view(DType::F32, &[r as usize, D]),
        format: TableFormat::F32,
        rows: bad.view(DType::I64, &[1, 2]),
        out: out.view_mut(DType::F32, &[1, 2 * D]),
    };
    assert!(be.gather_rows(a.validate().unwrap()).is_err(), "row R accepted");
}

#[test]
fn gather_past_2_32_elements_through_the_c_abi() {
    use moehal_ffi::abi::*;
    use moehal_ffi::types::{dl_code, dl_device};
    use moehal_ffi::*;
    const D: i64 = 2;
    let r = P31 + 5;
    let f = Sparse::new("gather-c", r * D as u64 * 4);
    let rows = [(r - 1) as i64, (P31 / 2) as i64];
    for &row in &rows {
        f.write_f32(
            row as u64 * D as u64,
            &[row_value(row as u64, 0), row_value(row as u64, 1)],
        );
    }
    let map = f.map();
    let mut rows_v = rows.to_vec();
    let mut out = vec![f32::NAN; 4];
    let mut st = [r as i64, D];
    let mut sr = [1i64, 2];
    let mut so = [1i64, 2 * D];
    let t = |data: *mut std::ffi::c_void, code: u8, bits: u8, shape: &mut [i64]| DLTensor {
        data,
        device: DLDevice {
            device_type: dl_device::CPU,
            device_id: 0,
        },
        ndim: 2,
        dtype: DLDataType { code, bits, lanes: 1 },
        shape: shape.as_mut_ptr(),
        strides: std::ptr::null_mut(),
        byte_offset: 0,
    };
    let tt = t(map.as_ptr() as *mut _, dl_code::FLOAT, 32, &mut st);
    let tr = t(rows_v.as_mut_ptr().cast(), dl_code::INT, 64, &mut sr);
    let mut to = t(out.as_mut_ptr().cast(), dl_code::FLOAT, 32, &mut so);
    for name in [c"cpu", c"reference"] {
        let mut be: *mut moehal_backend = std::ptr::null_mut();
        // SAFETY: valid string and out pointer; the tensors describe live memory of their shapes
        // (the table is the 16 GiB mapping).
        unsafe {
            assert_eq!(moehal_backend_open(name.as_ptr(), &mut be), MOEHAL_OK);
            out.fill(f32::NAN);
            let s = moehal_gather_rows(be, &tt, MOEHAL_TABLE_F32, &tr, &mut to);
            let msg = std::ffi::CStr::from_ptr(moehal_last_error()).to_string_lossy();
            assert_eq!(s, MOEHAL_OK, "{name:?}: {msg}");
            moehal_backend_close(be);
        }
        let want: Vec<f32> = rows
            .iter()
            .flat_map(|&q| (0..2).map(move |j| row_value(q as u64, j)))
            .collect();
        assert_eq!(out, want, "{name:?}");
    }
}

/// `engram_hash` of `ids` on `be`, as a flat `[T, C]` vector.
fn engram_rows(be: &dyn Backend, name: &str, layer: &EngramLayer, ids: &[i64]) -> Vec<i64> {
    let (t, c) = (ids.len(), layer.columns());
    let ib = be.upload_slice(ids).unwrap();
    let mut rb = be.filled(t * c, -1i64).unwrap();
    let h = EngramHash {
        layer,
        ids: ib.view(DType::I64, &[t]),
        positions: None,
        alive: None,
        history: &[],
        rows: rb.view_mut(DType::I64, &[t, c]),
    };
    be.engram_hash(h.validate().unwrap())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    be.download_vec::<i64>(&rb, t * c).unwrap()
}

#[test]
fn engram_rows_past_2_32() {
    // N = 3, K = 1: column 0 has modulus 2^31 + 11, column 1 has 2^32 + 15 at offset 2^31 + 11,
    // so R = 6442450970 rows and every column-1 row lies past 2^31 (most past 2^32).
    let (p2, p3) = (2_147_483_659u64, 4_294_967_311u64);
    let v = 1000u64;
    let layer = EngramLayer::new(
        3,
        1,
        vec![0x9E37_79B9_7F4B, 0x1234_5679, 0xDEAD_BEEF],
        vec![p2, p3],
        v,
        0,
    )
    .unwrap();
    let r = layer.rows();
    assert_eq!(r, p2 + p3);
    let ids: Vec<i64> = vec![5, 999, 17, 400, 3, 3, 871, 42];
    let t = ids.len();
    let c = layer.columns();
    // Rows from the reference hash (itself checked against OPS.md's toy vectors elsewhere).
    let rows = engram_rows(&Reference, "reference", &layer, &ids);
    assert!(
        rows.iter().filter(|&&x| x as u64 >= P32).count() >= 2,
        "the test needs rows past 2^32: {rows:?}"
    );
    assert!(rows.iter().all(|&x| x >= 0 && (x as u64) < r));
    // Table [R, 1] f32 (24 GiB, sparse); the gathered rows hold distinct values.
    let f = Sparse::new("engram", r * 4);
    for &q in &rows {
        f.write_f32(q as u64, &[row_value(q as u64, 0)]);
    }
    let map = f.map();
    let table = host_view(&map);
    let want: Vec<f32> = rows.iter().map(|&q| row_value(q as u64, 0)).collect();
    for (name, be) in backends() {
        // engram_hash writes the same rows on every backend.
        assert_eq!(
            engram_rows(be.as_ref(), name, &layer, &ids),
            rows,
            "{name}: engram_hash"
        );
        let ib = be.upload_slice(&ids).unwrap();
        let mut out = be.filled(t * c, f32::NAN).unwrap();
        let l = EngramLookup {
            layer: &layer,
            ids: ib.view(DType::I64, &[t]),
            positions: None,
            alive: None,
            history: &[],
            table: table.view(DType::F32, &[r as usize, 1]),
            format: TableFormat::F32,
            out: out.view_mut(DType::F32, &[t, c]),
        };
        be.engram_lookup(l.validate().unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            be.download_vec::<f32>(&out, t * c).unwrap(),
            want,
            "{name}: engram_lookup"
        );
    }
}

/// An anonymous read-write mapping of `n` bf16 zeros (no RAM until written).
fn zeros_bf16(n: usize) -> memmap2::MmapMut {
    memmap2::MmapMut::map_anon(n * 2).expect("anonymous mapping")
}

fn put_bf16(m: &mut memmap2::MmapMut, i: usize, v: f32) {
    m[i * 2..i * 2 + 2].copy_from_slice(&bf16::from_f32(v).to_ne_bytes());
}

/// `x [1, K]` with `K = 2^31 + 64`: a single dot product over more than 2^31 elements. The
/// nonzero entries sit at 0, 2^31 + 1 and K - 1, so an index that wraps at 2^31 reads a wrong
/// element (or faults) and the sum differs.
fn gemm_long_k(be: &dyn Backend, name: &str, device_copy: bool) {
    let k = P31 as usize + 64;
    let mut x = zeros_bf16(k);
    let mut w = zeros_bf16(k);
    for (i, xv, wv) in [(0usize, 2.0, 5.0), (P31 as usize + 1, 1.0, 16.0), (k - 1, 1.0, 3.0)] {
        put_bf16(&mut x, i, xv);
        put_bf16(&mut w, i, wv);
    }
    let y = run_gemm(be, &x, &w, 1, k, device_copy);
    assert_eq!(y, vec![2.0 * 5.0 + 16.0 + 3.0], "{name}: K = 2^31 + 64");
}

/// `x [M, 64]` with `M = 2^25 + 2` (`2^31 + 128` elements): row `M-1` starts at element
/// `2^31 + 64`, row `2^25` at exactly `2^31`; an i32 row offset goes negative there.
fn gemm_rows_past_2_31(be: &dyn Backend, name: &str, device_copy: bool) {
    let (kk, m) = (64usize, (P31 as usize >> 6) + 2);
    let mut x = zeros_bf16(m * kk);
    let mut w = zeros_bf16(kk);
    for j in 0..kk {
        put_bf16(&mut w, j, (j + 1) as f32);
    }
    for (row, col, v) in [(m - 1, 63usize, 1.0f32), (m - 2, 0, 2.0), (1, 5, 1.0)] {
        put_bf16(&mut x, row * kk + col, v);
    }
    let y = run_gemm(be, &x, &w, m, kk, device_copy);
    let want = |i: usize| match i {
        _ if i == m - 1 => 64.0,
        _ if i == m - 2 => 2.0,
        1 => 6.0,
        _ => 0.0,
    };
    let bad: Vec<usize> = (0..m).filter(|&i| y[i] != want(i)).take(5).collect();
    assert!(bad.is_empty(), "{name}: rows past 2^31: y differs at rows {bad:?}");
}

/// `y = x @ w^T` for one group (`w [1, 1, K]`, NK), returned as f32.
fn run_gemm(
    be: &dyn Backend,
    x: &memmap2::MmapMut,
    w: &memmap2::MmapMut,
    m: usize,
    k: usize,
    device_copy: bool,
) -> Vec<f32> {
    let wrap = |map: &memmap2::MmapMut| -> Buffer {
        if device_copy {
            be.upload_slice::<u8>(&map[..]).unwrap()
        } else {
            // SAFETY: the mapping outlives the buffer and is not written while the op runs.
            let mem = unsafe { HostMemory::from_raw(map.as_ptr() as *mut u8, map.len(), false) }.unwrap();
            Buffer::new(Box::new(mem))
        }
    };
    let (xb, wb) = (wrap(x), wrap(w));
    let ge = be.upload_slice(&[m as i64]).unwrap();
    let mut y = be.filled(m, bf16::from_f32(f32::NAN)).unwrap();
    let a = GroupedGemm {
        x: xb.view(DType::BF16, &[m, k]),
        w: wb.view(DType::BF16, &[1, 1, k]),
        layout: WeightLayout::NK,
        group_end: ge.view(DType::I64, &[1]),
        row_scale: None,
        bias: None,
        y: y.view_mut(DType::BF16, &[m, 1]),
    };
    be.grouped_gemm(a.validate().unwrap()).unwrap();
    be.download_vec::<bf16>(&y, m)
        .unwrap()
        .iter()
        .map(|v| v.to_f32())
        .collect()
}

// The grouped GEMM cases do 2^31 multiply-adds each, inherent in an x of 2^31 elements: well
// over a minute per backend in a debug build on a shared machine, so they are ignored in
// `cargo test` and run with
// `cargo test -p moehal-ffi --release --test offsets64 -- --ignored grouped_gemm`.
#[test]
#[ignore = "2^31 multiply-adds: cargo test -p moehal-ffi --release --test offsets64 -- --ignored grouped_gemm"]
fn grouped_gemm_rows_past_2_31_cpu() {
    let be = moehal::Registry::discover().open("cpu").expect("cpu backend");
    gemm_rows_past_2_31(be.as_ref(), "cpu", false);
}

#[test]
#[ignore = "2^31 multiply-adds: cargo test -p moehal-ffi --release --test offsets64 -- --ignored grouped_gemm"]
fn grouped_gemm_rows_past_2_31_reference() {
    gemm_rows_past_2_31(&Reference, "reference", false);
}

#[test]
#[ignore = "2^31 multiply-adds: cargo test -p moehal-ffi --release --test offsets64 -- --ignored grouped_gemm"]
fn grouped_gemm_k_past_2_31_cpu() {
    let be = moehal::Registry::discover().open("cpu").expect("cpu backend");
    gemm_long_k(be.as_ref(), "cpu", false);
}

#[test]
#[ignore = "2^31 multiply-adds: cargo test -p moehal-ffi --release --test offsets64 -- --ignored grouped_gemm"]
fn grouped_gemm_k_past_2_31_reference() {
    gemm_long_k(&Reference, "reference", false);
}

/// Also needs ~9 GB of RAM: the emulator copies device tensors whole (see the module doc).
#[test]
#[ignore = "needs ~9 GB of RAM: the ACL emulator copies each device tensor whole"]
fn grouped_gemm_x_past_2_31_on_the_emulator() {
    let be = emulated();
    gemm_rows_past_2_31(be.as_ref(), "ascend (emulator)", true);
}
