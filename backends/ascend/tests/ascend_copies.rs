//! Which ops move tensor data between host and device *inside the op* (issue 13): every op of the
//! test kit's edge cases runs on the backend through the emulator, and the emulator's own copy
//! accounting (`moehalEmuCopyStats`, an export of the emulator library, RULES.md I1-I3; the backend
//! takes no part) is read before and after each op call.
//!
//! The backend's API is device-in / device-out: an op receives device buffers and writes device
//! buffers; uploading inputs and downloading results are separate calls (`Backend::upload` /
//! `download`) that the caller makes. So every byte `aclrtMemcpy` moves between host and device
//! while an op runs is a host part of that op. Two are host parts by design (OPS.md, issue 13):
//! the Engram hash (`engram_hash`, and the hash inside `engram_lookup`), and gathers from a table
//! that lives in host memory (the gathered rows are uploaded). Everything else that copies is a
//! fallback still to be moved to the device: it must be listed in [`ROUND_TRIPS`] (and in
//! `backends/ascend/README.md`, "Host round trips"), so a new fallback fails this test and removing
//! one forces the list to shrink.
//!
//! One `#[test]` in this file: the counters are per process (per loaded emulator library).

mod ascend_common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, CStr};
use std::sync::Mutex;

use moehal_core::ops::{
    Checked, EngramHash, EngramLookup, GatherRows, GroupedGemm, GroupedGemmQ, MoeCombine, MoePermute, OpDesc,
    QuantDesc, QuantizeFp8, QuantizeInt8, RouterConfig, RouterHash, RouterTopk, Scoring, Swiglu, TableFormat,
};
use moehal_core::{
    half, Backend, BackendExt, Buffer, DType, DeviceInfo, Location, Reference, Result, Support, TensorRef,
};

/// Host parts by design, allowed whether or not the cases reach them: the Engram hash (ids to the
/// host, rows back), and gathers from a host-resident table (indices to the host, rows uploaded).
const BY_DESIGN: &[&str] = &[
    "engram_hash d2h",
    "engram_hash h2d",
    "engram_lookup d2h",
    "engram_lookup h2d",
    "gather_rows+host_table d2h",
    "gather_rows+host_table h2d",
];

/// Fallbacks that still copy tensor data inside the op (work remaining; README "Host round trips").
/// `d2h` alone is a host read (validation or control data), `d2h` + `h2d` a full round trip.
const ROUND_TRIPS: &[&str] = &[
    // group_end checked on the device (aclnnAmin / aclnnAmax, and aclnnAmin of the adjacent
    // differences): a control read of 20 bytes (CONTROL_READS). K = 0 with a bias gathers the bias
    // rows on the device (aclnnArange + aclnnSearchSorted + aclnnIndexSelect), no upload.
    "grouped_gemm d2h",
    "grouped_gemm+row_scale d2h",
    "grouped_gemm+k0 d2h",
    "grouped_gemm+row_scale+k0 d2h",
    // Router calls keyed per variant. A call with finite logits reads 12 bytes of control data
    // (CONTROL_READS): the finiteness flag (aclnnMuls(logits, 0) + aclnnReduceSum, 4 bytes) and
    // the vendor ids' aclnnAmin / aclnnAmax (8 bytes). ids go device to device, weights are
    // composed on the device (renormalised with aclnnAdds(1e-20)), expert_counts counted on the
    // device (aclnnSort + aclnnArange + aclnnSearchSorted, adjacent differences, aclnnCast), T = 0
    // zeroes them with aclrtMemset: so no "router_topk h2d" / "router_topk+expert_counts h2d".
    // Group-limited calls ("+group") likewise.
    "router_topk d2h",
    "router_topk+expert_counts d2h",
    "router_topk+group+expert_counts d2h",
    // Non-finite logits: the selection composed on the device (aclnnIsFinite, aclnnLogicalNot,
    // aclnnInplaceMaskedFillScalar, the scoring op, aclnnAdd of the bias, the group limit by
    // aclnnSort / aclnnAdd / aclnnFloorDivides / aclnnEqScalar, a stable descending aclnnSort and
    // its first k indices); only the 4-byte finiteness flag is read. sqrt_softplus (grouped or not)
    // takes the same composition with no read at all, so it is not listed: any copy fails the test.
    "router_topk+expert_counts+nonfinite d2h",
    "router_topk+group+expert_counts+nonfinite d2h",
    // Composed on the device (aclnnSort, aclnnFloorDivides, aclnnArange + aclnnScatter,
    // aclnnSearchSorted, aclnnIndexSelect); only the id range check reads 8 bytes (CONTROL_READS).
    "moe_permute d2h",
    // slot_row range-checked by aclnnAmin / aclnnAmax (16 bytes, CONTROL_READS); dropped slots on
    // the device (aclnnEqScalar, aclnnIndexSelect, aclnnInplaceMaskedFillScalar, aclnnArange).
    "moe_combine d2h",
    // fp8 tables dequantised on the device (aclnnIndexSelect of the rows, aclnnCast of the code
    // bytes, aclnnIndexSelect of the backend's e4m3 / ue8m0 f32 tables, aclnnInplaceMul, aclnnCast
    // for bf16); only the row range check reads 16 bytes (CONTROL_READS).
    "gather_rows+fp8 d2h",
    // row indices range-checked by aclnnAmin / aclnnAmax (16 bytes, CONTROL_READS).
    "gather_rows d2h",
    // W8A8 (OPS.md §6 int8 × i8) into f16 / bf16 on aclnnGroupedMatmulV4 A8W8 (bf16: the weight
    // copied and packed FRACTAL_NZ on the device); only the group_end check reads 20 bytes
    // (CONTROL_READS), as the float grouped_gemm.
    "grouped_gemm_quant+int8xint8+f16 d2h",
    "grouped_gemm_quant+int8xint8+f16+row_scale d2h",
    "grouped_gemm_quant+int8xint8+bf16 d2h",
    "grouped_gemm_quant+int8xint8+bf16+row_scale d2h",
    // W8A8 with no routed row (group_end[G-1] = 0): the same check, then nothing is launched.
    "grouped_gemm_quant+int8xint8+f16+row_scale+no_rows d2h",
    "grouped_gemm_quant+int8xint8+bf16+row_scale+no_rows d2h",
    // W8A8 into f32 with a bias (no f32 A8W8 row on A2; the bias rows are documented but not emulated): the reference on host copies, a full
    // round trip.
    "grouped_gemm_quant+int8xint8+f32+row_scale+bias d2h",
    "grouped_gemm_quant+int8xint8+f32+row_scale+bias h2d",
];

/// Entries of [`ROUND_TRIPS`] that are control reads, not tensor data: the most bytes one call may
/// copy in that direction. Each is a value check whose error must reach the caller before anything
/// is written, computed on the device and read as scalars:
/// - `moe_permute`: `aclnnAmin` / `aclnnAmax` of the INT32 ids (OPS.md §3), 2 × 4 bytes;
/// - `moe_combine`: the same of the INT64 `slot_row` (OPS.md §3), 2 × 8 bytes;
/// - `gather_rows` (dense and fp8): the same of the INT64 row indices, 2 × 8 bytes;
/// - `grouped_gemm`: the same of the INT64 `group_end` (2 × 8 bytes) and the f32 `aclnnAmin` of its
///   adjacent differences (4 bytes), OPS.md §1;
/// - `router_topk` with finite logits: the f32 finiteness flag (4 bytes) and the vendor op's ids'
///   `aclnnAmin` / `aclnnAmax` (2 × 4); with a non-finite logit the flag only (the composed
///   selection's ids are in range by construction, OPS.md §2 step 6).
const CONTROL_READS: &[(&str, u64)] = &[
    ("moe_permute d2h", 8),
    ("moe_combine d2h", 16),
    ("gather_rows d2h", 16),
    ("gather_rows+fp8 d2h", 16),
    ("grouped_gemm d2h", 20),
    ("grouped_gemm+row_scale d2h", 20),
    ("grouped_gemm+k0 d2h", 20),
    ("grouped_gemm+row_scale+k0 d2h", 20),
    ("grouped_gemm_quant+int8xint8+f16 d2h", 20),
    ("grouped_gemm_quant+int8xint8+f16+row_scale d2h", 20),
    ("grouped_gemm_quant+int8xint8+bf16 d2h", 20),
    ("grouped_gemm_quant+int8xint8+bf16+row_scale d2h", 20),
    ("grouped_gemm_quant+int8xint8+f16+row_scale+no_rows d2h", 20),
    ("grouped_gemm_quant+int8xint8+bf16+row_scale+no_rows d2h", 20),
    ("router_topk d2h", 12),
    ("router_topk+expert_counts d2h", 12),
    ("router_topk+group+expert_counts d2h", 12),
    ("router_topk+expert_counts+nonfinite d2h", 4),
    ("router_topk+group+expert_counts+nonfinite d2h", 4),
];

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct CopyStats {
    h2d_bytes: u64,
    d2h_bytes: u64,
    d2d_bytes: u64,
    h2h_bytes: u64,
    h2d_calls: u64,
    d2h_calls: u64,
    launches: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct LaunchCopies {
    name: [c_char; 64],
    h2d_bytes: u64,
    d2h_bytes: u64,
}

/// The emulator's accounting exports (the same library the backend loaded: `dlopen` of the same
/// file returns the same handle, so the counters are shared).
struct Counters {
    _lib: libloading::Library,
    stats: unsafe extern "C" fn(*mut CopyStats) -> i32,
    reset: unsafe extern "C" fn(),
    launches: unsafe extern "C" fn(*mut LaunchCopies, usize) -> usize,
}

impl Counters {
    fn open(dir: &std::path::Path) -> Counters {
        let path = dir.join("libascendcl.so");
        // SAFETY: the emulator library; its initialisers have no preconditions.
        let lib = unsafe { libloading::Library::new(&path) }.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // SAFETY: the signatures are those of the emulator's exports (ascend-emu src/abi.rs).
        unsafe {
            let stats = *lib.get(b"moehalEmuCopyStats\0").expect("moehalEmuCopyStats");
            let reset = *lib.get(b"moehalEmuCopyStatsReset\0").expect("moehalEmuCopyStatsReset");
            let launches = *lib.get(b"moehalEmuLaunchCopies\0").expect("moehalEmuLaunchCopies");
            Counters {
                _lib: lib,
                stats,
                reset,
                launches,
            }
        }
    }
    fn stats(&self) -> CopyStats {
        let mut s = CopyStats::default();
        // SAFETY: out-pointer to a local.
        assert_eq!(unsafe { (self.stats)(&mut s) }, 0);
        s
    }
    fn reset(&self) {
        // SAFETY: no arguments.
        unsafe { (self.reset)() }
    }
    /// Names of the aclnn launches since the last reset.
    fn launch_names(&self) -> Vec<String> {
        // SAFETY: NULL with cap 0 asks for the count only.
        let n = unsafe { (self.launches)(std::ptr::null_mut(), 0) };
        let mut v = vec![
            LaunchCopies {
                name: [0; 64],
                h2d_bytes: 0,
                d2h_bytes: 0
            };
            n
        ];
        // SAFETY: `v` has `n` writable entries.
        let n = unsafe { (self.launches)(v.as_mut_ptr(), n) }.min(v.len());
        v[..n]
            .iter()
            .map(|e| {
                // SAFETY: the emulator NUL-terminates each name inside its array.
                unsafe { CStr::from_ptr(e.name.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }
}

#[derive(Default)]
struct Seen {
    /// "op[+variant] dir" -> bytes, over all calls.
    copies: BTreeMap<String, u64>,
    /// "op[+variant] dir" -> the most bytes of one call.
    per_call: BTreeMap<String, u64>,
    /// "op[+variant]" -> the aclnn launch sequences seen.
    launches: BTreeMap<String, BTreeSet<String>>,
}

/// The backend under test, with every op call bracketed by reads of the emulator's counters.
struct Counting {
    inner: std::sync::Arc<dyn Backend>,
    counters: Counters,
    seen: Mutex<Seen>,
}

impl Counting {
    fn op<R>(&self, key: String, f: impl FnOnce() -> R) -> R {
        self.counters.reset();
        let r = f();
        let s = self.counters.stats();
        let names = self.counters.launch_names();
        let mut seen = self.seen.lock().unwrap();
        for (dir, n) in [("d2h", s.d2h_bytes), ("h2d", s.h2d_bytes)] {
            if n > 0 {
                *seen.copies.entry(format!("{key} {dir}")).or_default() += n;
                let m = seen.per_call.entry(format!("{key} {dir}")).or_default();
                *m = (*m).max(n);
            }
        }
        seen.launches.entry(key).or_default().insert(names.join(" -> "));
        r
    }
}

impl Counting {
    /// Whether any element in the byte range of `t`'s view is NaN or infinite (for a strided view
    /// the gaps are read too: a gap can only add a `+nonfinite` key, never hide one).
    fn any_non_finite(&self, t: &TensorRef<'_>) -> bool {
        let (s, e) = t.byte_range();
        let mut bytes = vec![0u8; e - s];
        self.inner.download(t.buffer(), s, &mut bytes).expect("download logits");
        match t.dtype() {
            DType::F32 => bytes
                .chunks_exact(4)
                .any(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()),
            DType::BF16 => bytes
                .chunks_exact(2)
                .any(|c| !half::bf16::from_le_bytes([c[0], c[1]]).is_finite()),
            DType::F16 => bytes
                .chunks_exact(2)
                .any(|c| !half::f16::from_le_bytes([c[0], c[1]]).is_finite()),
            _ => false,
        }
    }
}

fn on_host(b: &Buffer) -> bool {
    b.location() == Location::Host
}

impl Backend for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn device_info(&self) -> DeviceInfo {
        self.inner.device_info()
    }
    fn supports(&self, op: &OpDesc) -> Support {
        self.inner.supports(op)
    }
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        self.inner.alloc(bytes)
    }
    fn upload(&self, dst: &mut Buffer, offset: usize, src: &[u8]) -> Result<()> {
        self.inner.upload(dst, offset, src)
    }
    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.inner.download(src, offset, dst)
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
    unsafe fn wrap_external(&self, ptr: u64, bytes: usize) -> Result<Buffer> {
        // SAFETY: forwarded caller promise.
        unsafe { self.inner.wrap_external(ptr, bytes) }
    }
    unsafe fn set_external_stream(&self, stream: u64) -> Result<()> {
        // SAFETY: forwarded caller promise.
        unsafe { self.inner.set_external_stream(stream) }
    }
    fn grouped_gemm(&self, args: Checked<GroupedGemm<'_>>) -> Result<()> {
        let mut key = String::from("grouped_gemm");
        if args.row_scale.is_some() {
            key.push_str("+row_scale");
        }
        if args.dims().k == 0 {
            key.push_str("+k0");
        }
        self.op(key, || self.inner.grouped_gemm(args))
    }
    fn router_topk(&self, args: Checked<RouterTopk<'_>>) -> Result<()> {
        // Keyed per variant, so a call that must take the device path is pinned on its own:
        // sqrt_softplus scoring (no vendor op), a group limit, expert_counts (a histogram),
        // non-finite logits.
        // The logits are read here, before the counters are reset (not counted as the op's).
        let mut key = String::from("router_topk");
        if args.config.scoring == Scoring::SqrtSoftplus {
            key.push_str("+sqrt_softplus");
        }
        if args.config.effective_group().is_some() {
            key.push_str("+group");
        }
        if args.expert_counts.is_some() {
            key.push_str("+expert_counts");
        }
        if self.any_non_finite(&args.logits) {
            key.push_str("+nonfinite");
        }
        self.op(key, || self.inner.router_topk(args))
    }
    fn router_hash(&self, args: Checked<RouterHash<'_>>) -> Result<()> {
        self.op("router_hash".into(), || self.inner.router_hash(args))
    }
    fn moe_permute(&self, args: Checked<MoePermute<'_>>) -> Result<()> {
        self.op("moe_permute".into(), || self.inner.moe_permute(args))
    }
    fn swiglu(&self, args: Checked<Swiglu<'_>>) -> Result<()> {
        let key = if args.limit.is_some() { "swiglu+limit" } else { "swiglu" };
        self.op(key.into(), || self.inner.swiglu(args))
    }
    fn moe_combine(&self, args: Checked<MoeCombine<'_>>) -> Result<()> {
        self.op("moe_combine".into(), || self.inner.moe_combine(args))
    }
    fn engram_hash(&self, args: Checked<EngramHash<'_>>) -> Result<()> {
        self.op("engram_hash".into(), || self.inner.engram_hash(args))
    }
    fn gather_rows(&self, args: Checked<GatherRows<'_>>) -> Result<()> {
        let key = if on_host(args.table.buffer()) {
            "gather_rows+host_table"
        } else if args.format == TableFormat::Fp8E4m3Ue8m0 {
            "gather_rows+fp8"
        } else {
            "gather_rows"
        };
        self.op(key.into(), || self.inner.gather_rows(args))
    }
    fn engram_lookup(&self, args: Checked<EngramLookup<'_>>) -> Result<()> {
        self.op("engram_lookup".into(), || self.inner.engram_lookup(args))
    }
    fn supports_quant(&self, op: &QuantDesc) -> Support {
        self.inner.supports_quant(op)
    }
    fn grouped_gemm_quant(&self, args: Checked<GroupedGemmQ<'_>>) -> Result<()> {
        // Keyed per pairing and output dtype (the W8A8 f16 output runs on the device, the others
        // on the host), and by the optional operands.
        let mut key = String::from("grouped_gemm_quant");
        if let QuantDesc::GroupedGemm { w, x, y } = args.desc() {
            key.push_str(&format!("+{w}x{}+{y}", x.name()));
        }
        if args.row_scale.is_some() {
            key.push_str("+row_scale");
        }
        if args.bias.is_some() {
            key.push_str("+bias");
        }
        // No routed row (G = 0, or group_end[G-1] = 0): read here, before the counters are reset.
        let ge = &args.group_end;
        let (s, e) = ge.byte_range();
        let mut bytes = vec![0u8; e - s];
        self.inner
            .download(ge.buffer(), s, &mut bytes)
            .expect("download group_end");
        if bytes.len() < 8 || bytes[bytes.len() - 8..].iter().all(|b| *b == 0) {
            key.push_str("+no_rows");
        }
        self.op(key, || self.inner.grouped_gemm_quant(args))
    }
    fn quantize_fp8(&self, args: Checked<QuantizeFp8<'_>>) -> Result<()> {
        self.op("quantize_fp8".into(), || self.inner.quantize_fp8(args))
    }
    fn quantize_int8(&self, args: Checked<QuantizeInt8<'_>>) -> Result<()> {
        self.op("quantize_int8".into(), || self.inner.quantize_int8(args))
    }
}

#[test]
fn host_copies_inside_ops_are_exactly_the_listed_ones() {
    let dir = ascend_common::emulator_dir(None);
    let inner = ascend_common::open_emulated();
    let be = Counting {
        inner,
        counters: Counters::open(&dir),
        seen: Mutex::new(Seen::default()),
    };
    let mut cases = moehal_testkit::edge_cases();
    cases.extend(moehal_testkit::quant::edge_cases());
    let sum = moehal_testkit::check_backend(&be, "ascend (emulator, counted)", &cases, 0xC0B1, false);
    assert!(
        sum.failures.is_empty(),
        "conformance failures:\n{}",
        sum.failures.join("\n")
    );

    // The kit's router cases all ask for expert_counts; these plain calls must take the device
    // path and copy no tensor data to the device. Rows whose selected scores sum far below 1e-6
    // (once sent to the host for the 1e-20 term) are among them, and the weights must equal the
    // reference's.
    plain_router_calls_stay_on_the_device(&be);
    // The kit's W8A8 cases on the device have no row_scale; these have, and check the guard
    // rows, the caller's weight and a bad group_end on the device path.
    w8a8_on_the_device(&be);
    // An f16 accumulator beyond 65504 that row_scale brings back in range must stay finite.
    w8a8_f16_row_scale_before_rounding(&be);
    // No routed row (G = 0, or every row past group_end[G-1]): Ok, y untouched, and (checked
    // below) no Cast, pack, multiply or GMM launched.
    w8a8_no_routed_rows(&be);

    let seen = be.seen.into_inner().unwrap();
    println!("aclnn launches per op (as seen):");
    for (k, seqs) in &seen.launches {
        for s in seqs {
            println!("  {k}: {}", if s.is_empty() { "(none)" } else { s });
        }
    }
    println!("host<->device bytes inside ops:");
    for (k, n) in &seen.copies {
        println!("  {k}: {n}");
    }
    // Every op family ran (the bracket saw it), so an op that stops copying is noticed.
    for op in [
        "grouped_gemm",
        "router_topk",
        "moe_permute",
        "swiglu",
        "moe_combine",
        "gather_rows",
    ] {
        assert!(
            seen.launches
                .keys()
                .any(|k| k == op || k.starts_with(&format!("{op}+"))),
            "the edge cases never called {op}"
        );
    }
    // The W8A8 f16 output is computed by the A8W8 GroupedMatmulV4 (not the host path, which
    // would also pass the conformance check): every call of those keys launched it.
    for k in [
        "grouped_gemm_quant+int8xint8+f16",
        "grouped_gemm_quant+int8xint8+f16+row_scale",
        "grouped_gemm_quant+int8xint8+bf16",
        "grouped_gemm_quant+int8xint8+bf16+row_scale",
    ] {
        let seqs = seen.launches.get(k).unwrap_or_else(|| panic!("{k} never ran"));
        for s in seqs {
            assert!(s.contains("aclnnGroupedMatmulV4"), "{k}: launches {s}");
            if k.contains("+bf16") {
                assert!(
                    s.contains("aclnnCast -> aclnnTransMatmulWeight -> aclnnGroupedMatmulV4"),
                    "{k}: launches {s}"
                );
            }
        }
        // The GMM is the last (only) write to y: row_scale is folded into the per-token scale
        // by aclnnInplaceMul before it, never applied to y afterwards.
        assert!(
            seqs.iter().all(|s| s.ends_with("aclnnGroupedMatmulV4")),
            "{k}: {seqs:?}"
        );
        if k.ends_with("+row_scale") {
            assert!(seqs.iter().all(|s| s.contains("aclnnInplaceMul -> ")), "{k}: {seqs:?}");
        } else {
            assert!(seqs.iter().all(|s| !s.contains("aclnnInplaceMul")), "{k}: {seqs:?}");
        }
    }
    for k in [
        "grouped_gemm_quant+int8xint8+f16+row_scale+no_rows",
        "grouped_gemm_quant+int8xint8+bf16+row_scale+no_rows",
    ] {
        let seqs = seen.launches.get(k).unwrap_or_else(|| panic!("{k} never ran"));
        for s in seqs {
            for op in ["aclnnTransMatmulWeight", "aclnnInplaceMul", "aclnnGroupedMatmul"] {
                assert!(!s.contains(op), "{k}: launched {op}: {s}");
            }
            // The group_end check's two casts (of group_end[1:] and [:-1]) only: no weight copy.
            assert!(s.matches("aclnnCast").count() <= 2, "{k}: {s}");
        }
    }
    // The 8-byte bound holds where the library computes the id extremes (aclnnAmin / aclnnAmax);
    // without them the backend reads the ids themselves (README, "Host round trips").
    let ops = moehal_ascend::ops_at(&dir).expect("emulator ops");
    let extremes = ops.contains(&"aclnnAmax") && ops.contains(&"aclnnAmin");
    for &(k, most) in CONTROL_READS.iter().filter(|_| extremes) {
        assert!(ROUND_TRIPS.contains(&k), "control read {k} is not in ROUND_TRIPS");
        let n = seen.per_call.get(k).copied().unwrap_or(0);
        assert!(
            n <= most,
            "{k}: one call copied {n} bytes; a control read may copy at most {most} (tensor data must stay on the device)"
        );
    }
    let got: BTreeSet<&str> = seen
        .copies
        .keys()
        .map(String::as_str)
        .filter(|k| !BY_DESIGN.contains(k))
        .collect();
    let want: BTreeSet<&str> = ROUND_TRIPS.iter().copied().collect();
    let new: Vec<_> = got.difference(&want).collect();
    let gone: Vec<_> = want.difference(&got).collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "host copies inside ops differ from the list: new (a fallback; move it to the device, or list it \
         with its reason here and in the README): {new:?}; no longer copying (remove from ROUND_TRIPS and \
         the README): {gone:?}"
    );
}

/// Host operands of a W8A8 `grouped_gemm_quant` call (OPS.md §6): i8 `x [m, k]` with per-token
/// f32 `xs [m]`, i8 NK weights `w [g, n, k]` with per-channel f32 `ws [g, n]`, f32 `row_scale
/// rs [m]`, `group_end` `ends [g]`, no bias.
struct W8a8<'a> {
    m: usize,
    n: usize,
    k: usize,
    x: &'a [i8],
    w: &'a [i8],
    xs: &'a [f32],
    ws: &'a [f32],
    rs: &'a [f32],
    ends: &'a [i64],
}

impl W8a8<'_> {
    /// Run the call on `b` into a `dt` (f16 / bf16) `y` whose elements start as the bit pattern
    /// `fill`: the call's result, `y`'s elements afterwards, and the weight as `b` holds it
    /// afterwards. Every buffer gets one spare element, so zero-length operands (M = 0, G = 0)
    /// are still valid uploads.
    fn run(&self, b: &dyn Backend, dt: DType, fill: u16) -> (Result<()>, Vec<u16>, Vec<i8>) {
        let (m, n, k, g) = (self.m, self.n, self.k, self.ends.len());
        let pad = |v: &[i8]| [v, &[0][..]].concat();
        let padf = |v: &[f32]| [v, &[0.0][..]].concat();
        let xb = b.upload_slice(&pad(self.x)).unwrap();
        let wb = b.upload_slice(&pad(self.w)).unwrap();
        let xsb = b.upload_slice(&padf(self.xs)).unwrap();
        let wsb = b.upload_slice(&padf(self.ws)).unwrap();
        let rsb = b.upload_slice(&padf(self.rs)).unwrap();
        let gb = b.upload_slice(&[self.ends, &[0][..]].concat()).unwrap();
        let filled: Vec<u8> = (0..m * n + 1).flat_map(|_| fill.to_le_bytes()).collect();
        let mut yb = b.alloc(filled.len()).unwrap();
        b.upload(&mut yb, 0, &filled).unwrap();
        let args = GroupedGemmQ {
            x: xb.view(DType::I8, &[m, k]),
            x_scale: Some(xsb.view(DType::F32, &[m])),
            w_format: moehal_core::ops::WeightFormat::Int8,
            w: wb.view(DType::I8, &[g, n, k]),
            w_scale: wsb.view(DType::F32, &[g, n]),
            group_end: gb.view(DType::I64, &[g]),
            row_scale: Some(rsb.view(DType::F32, &[m])),
            bias: None,
            y: yb.view_mut(dt, &[m, n]),
        };
        let r = b.grouped_gemm_quant(args.validate().unwrap());
        let mut yv = vec![0u8; m * n * 2];
        b.download(&yb, 0, &mut yv).unwrap();
        let y = yv.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        (r, y, b.download_vec(&wb, g * n * k).unwrap())
    }
}

/// W8A8 into f16 where `Σ·w_scale·x_scale` (about 1.0e6) exceeds f16's 65504 but
/// `row_scale` times it (about 1e4) fits: OPS.md §1 scales the f32 product and rounds once, so
/// every routed element must be finite and match the reference (2e-3 relative norm). A `y`
/// written by the GMM and scaled afterwards would hold inf here. Runs on the counted backend, so
/// the launch check above pins it to the device path.
fn w8a8_f16_row_scale_before_rounding(be: &Counting) {
    let (m, n, k) = (5usize, 40usize, 64usize);
    let ends: Vec<i64> = vec![2, 4];
    let g = ends.len();
    let x: Vec<i8> = (0..m * k).map(|i| if i % 7 == 0 { 100 } else { 127 }).collect();
    let w: Vec<i8> = (0..g * n * k).map(|i| if i % 5 == 0 { 90 } else { 127 }).collect();
    let xs: Vec<f32> = (0..m).map(|r| 1.0 + r as f32 * 0.25).collect();
    let ws: Vec<f32> = (0..g * n).map(|i| 1.0 + (i % 3) as f32 * 0.5).collect();
    let rs: Vec<f32> = (0..m).map(|r| if r % 2 == 0 { 0.01 } else { -0.005 }).collect();
    let call = W8a8 {
        m,
        n,
        k,
        x: &x,
        w: &w,
        xs: &xs,
        ws: &ws,
        rs: &rs,
        ends: &ends,
    };
    let run = |b: &dyn Backend| -> Vec<f64> {
        let (r, y, _) = call.run(b, DType::F16, 0);
        r.unwrap_or_else(|e| panic!("W8A8 f16 on {}: {e}", b.name()));
        y.iter().map(|&v| half::f16::from_bits(v).to_f64()).collect()
    };
    let got = run(be);
    let want = run(&Reference);
    let total = ends[g - 1] as usize;
    // The product before row_scale really is past f16's range (else the test proves nothing).
    let acc0: f64 = (0..k).map(|i| x[i] as f64 * w[i] as f64).sum::<f64>() * ws[0] as f64 * xs[0] as f64;
    assert!(acc0 > 65504.0, "the test's accumulator {acc0} fits f16");
    for i in 0..total * n {
        assert!(want[i].is_finite(), "reference element {i}: {}", want[i]);
        assert!(got[i].is_finite(), "element {i}: {} (reference {})", got[i], want[i]);
    }
    assert!(want[..total * n].iter().any(|&v| v != 0.0), "all-zero reference");
    let rel = moehal_testkit::rel_error(&got[..total * n], &want[..total * n], |_| true).unwrap();
    let bound = moehal_testkit::tolerance(DType::F16);
    assert!(
        rel <= bound,
        "W8A8 f16 past 65504 before row_scale: relative error {rel:e} > {bound:e}"
    );
}

/// W8A8 f16 / bf16 (with a row scale) with no routed row: `group_end = [0, 0]` (M = 3, every
/// row a guard row) and `G = 0` (`group_end` empty, M = 0). Each must succeed and leave `y`
/// as it was; the launch check above then pins that nothing past the group_end check ran.
fn w8a8_no_routed_rows(be: &Counting) {
    let (n, k) = (40usize, 72usize);
    for (dt, poison) in [(DType::F16, 0x7E00u16), (DType::BF16, 0x7FC0u16)] {
        for (g, m) in [(2usize, 3usize), (0, 0)] {
            let ends = vec![0i64; g];
            let x = vec![3i8; m * k];
            let w = vec![5i8; g * n * k];
            let xs = vec![0.5f32; m];
            let ws = vec![0.25f32; g * n];
            let rs = vec![2.0f32; m];
            let call = W8a8 {
                m,
                n,
                k,
                x: &x,
                w: &w,
                xs: &xs,
                ws: &ws,
                rs: &rs,
                ends: &ends,
            };
            let (r, after, _) = call.run(be, dt, poison);
            r.unwrap_or_else(|e| panic!("W8A8 {dt}, G = {g}, no routed row: {e}"));
            assert!(
                after.iter().all(|v| *v == poison),
                "W8A8 {dt}, G = {g}: y written with no routed row"
            );
        }
    }
}

/// Router calls without expert_counts, softmax and sigmoid, renormalised, with rows whose
/// selected scores are tiny (softmax: one logit far above the rest; sigmoid: all logits very
/// negative) and one all-ordinary row, compared with the reference.
fn plain_router_calls_stay_on_the_device(be: &Counting) {
    let (t, e, k) = (3usize, 16usize, 4usize);
    #[rustfmt::skip]
    let rows: [[f32; 16]; 3] = [
        // softmax: the k smallest scores sum to ~1e-13 (normal f32, not subnormal).
        [30.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0, -10.0, -11.0, -12.0, -13.0, -14.0],
        // sigmoid: every score below 1e-20.
        [-50.0, -51.0, -52.0, -53.0, -54.0, -55.0, -56.0, -57.0, -58.0, -59.0, -60.0, -61.0, -62.0, -63.0, -64.0, -65.0],
        [0.5, -0.25, 1.5, 0.0, 2.0, -1.0, 0.75, 0.1, -0.5, 1.0, 0.3, -2.0, 0.2, 0.6, -0.1, 0.9],
    ];
    let logits: Vec<f32> = rows.iter().flatten().copied().collect();
    for scoring in [Scoring::Softmax, Scoring::Sigmoid] {
        let cfg = RouterConfig {
            topk: k,
            scoring,
            group: None,
            renormalize: true,
            routed_scaling_factor: 2.5,
        };
        let run = |b: &dyn Backend| -> (Vec<i32>, Vec<f32>) {
            let lb = b.upload_slice(&logits).unwrap();
            let mut ib = b.upload_slice(&vec![0i32; t * k]).unwrap();
            let mut wb = b.upload_slice(&vec![0f32; t * k]).unwrap();
            let args = RouterTopk {
                config: cfg,
                logits: lb.view(DType::F32, &[t, e]),
                bias: None,
                ids: ib.view_mut(DType::I32, &[t, k]),
                weights: wb.view_mut(DType::F32, &[t, k]),
                expert_counts: None,
            };
            b.router_topk(args.validate().unwrap()).unwrap();
            (b.download_vec(&ib, t * k).unwrap(), b.download_vec(&wb, t * k).unwrap())
        };
        let (gi, gw) = run(be);
        let (ri, rw) = run(&Reference);
        assert_eq!(gi, ri, "{scoring:?}: ids");
        for (j, (g, r)) in gw.iter().zip(&rw).enumerate() {
            assert!(
                (g - r).abs() <= 1e-6 * r.abs().max(1e-30),
                "{scoring:?}: weight {j}: device {g:e}, reference {r:e}"
            );
        }
    }
}

/// W8A8 into f16 and bf16 with a row scale through the counted backend (device path:
/// aclnnGroupedMatmulV4 A8W8 + aclnnInplaceMul; bf16 also aclnnCast + aclnnTransMatmulWeight):
/// groups of 4, 0 and 5 rows and 2 guard rows (M = 11), N = 40, K = 72 (neither aligned to the
/// NZ fractal's 32 / 16) and N = 64, K = 32 (both aligned); the routed rows against the reference (OPS.md §Conformance: f16 2e-3,
/// bf16 1e-2 relative norm), the guard rows still the poison, the caller's weight unchanged; then
/// a decreasing `group_end` is an error and `y` is unchanged.
fn w8a8_on_the_device(be: &Counting) {
    // N = 40, K = 72: neither aligned to the NZ fractal; N = 64, K = 32: both aligned (no padding).
    for (n, k) in [(40usize, 72usize), (64, 32)] {
        w8a8_on_the_device_at(be, n, k);
    }
}

fn w8a8_on_the_device_at(be: &Counting, n: usize, k: usize) {
    let (g, m) = (3usize, 11usize);
    let ends: Vec<i64> = vec![4, 4, 9];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let x: Vec<i8> = (0..m * k).map(|_| (next() % 255) as i8).collect();
    let w: Vec<i8> = (0..g * n * k).map(|_| (next() % 255) as i8).collect();
    let xs: Vec<f32> = (0..m).map(|_| (next() % 1000) as f32 / 1000.0 / 127.0 + 1e-4).collect();
    let ws: Vec<f32> = (0..g * n)
        .map(|_| (next() % 1000) as f32 / 1000.0 / 127.0 + 1e-4)
        .collect();
    let rs: Vec<f32> = (0..m).map(|_| (next() % 1000) as f32 / 500.0 - 1.0).collect();
    for (dt, poison) in [(DType::F16, 0x7E00u16), (DType::BF16, 0x7FC0u16)] {
        let bound = moehal_testkit::tolerance(dt);
        let val = |b: u16| match dt {
            DType::F16 => half::f16::from_bits(b).to_f64(),
            _ => half::bf16::from_bits(b).to_f64(),
        };
        let run = |b: &dyn Backend, ends: &[i64]| {
            W8a8 {
                m,
                n,
                k,
                x: &x,
                w: &w,
                xs: &xs,
                ws: &ws,
                rs: &rs,
                ends,
            }
            .run(b, dt, poison)
        };
        let (r, got, w_after) = run(be, &ends);
        r.unwrap_or_else(|e| panic!("W8A8 {dt} on the device: {e}"));
        assert_eq!(w_after, w, "{dt} N = {n} K = {k}: the caller's weight was modified");
        let (r, want, _) = run(&Reference, &ends);
        r.unwrap();
        let total = ends[g - 1] as usize;
        let (a, b): (Vec<f64>, Vec<f64>) = (0..total * n).map(|i| (val(got[i]), val(want[i]))).unzip();
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(a.is_finite(), "{dt} element {i}: {a} (reference {b})");
        }
        assert!(b.iter().any(|&v| v != 0.0), "{dt}: all-zero reference");
        let rel = moehal_testkit::rel_error(&a, &b, |_| true).unwrap();
        assert!(rel <= bound, "W8A8 {dt}: relative error {rel:e} > {bound:e}");
        for (i, v) in got.iter().enumerate().skip(total * n) {
            assert_eq!(*v, poison, "{dt}: guard element {i} written");
        }
        // On the uncounted inner backend (its launches are not recorded, so this checks the
        // error and y, not the launches): the refused call errs naming group_end, y untouched.
        let (r, after, _) = run(&*be.inner, &[4, 3, 9]);
        let e = r.expect_err("a decreasing group_end must be refused").to_string();
        assert!(e.contains("group_end"), "{dt}: {e}");
        assert!(
            after.iter().all(|v| *v == poison),
            "{dt}: y written before the group_end check"
        );
    }
}
