//! Fuzzing the C ABI boundary (issue 16, item 8): proptest builds a valid call of an op, then
//! mutates its DLTensor descriptors and scalar arguments (shapes, zero / negative / overlapping
//! strides, byte offsets, dtypes, device types, NULL descriptors and data, ranks, sizes near
//! overflow) and calls the exported function on the `cpu` and `reference` backends. Every call
//! must return a status other than `MOEHAL_PANIC`, nothing may crash, and no byte of the arena
//! outside an accepted output tensor may change (none at all when the call fails: "nothing was
//! written").
//!
//! Memory safety of the harness itself: a descriptor the ABI's checks would accept claims the
//! bytes it describes, and the ABI cannot know whether the caller owns them. The harness models
//! those checks ([`accepted_extent`]) and skips a case in which an accepted tensor would reach
//! outside its arena (a caller bug no library can detect); everything the checks must reject is
//! sent as is.
//!
//! Short run (CI, part of `cargo test -p moehal-ffi`): 256 cases. Long run:
//! `MOEHAL_FUZZ_CASES=100000 cargo test -p moehal-ffi --release --test fuzz`.

use std::ffi::c_void;
use std::ptr;

use moehal_ffi::abi::*;
use moehal_ffi::types::{dl_code, dl_device};
use moehal_ffi::*;
use proptest::prelude::*;

const ARENA_WORDS: usize = 4096; // 32 KiB
const SHAPE_SLOTS: usize = 8;

/// One tensor argument: its descriptor plus storage for `shape` / `strides` (8 slots each, so
/// any `ndim` up to 8 reads initialized memory; larger ones the ABI must reject unread).
struct Arg {
    t: DLTensor,
    shape: [i64; SHAPE_SLOTS],
    strides: [i64; SHAPE_SLOTS],
    strided: bool,
    null: bool,
    output: bool,
}

impl Arg {
    fn new(base: *mut u8, off: usize, code: u8, bits: u8, shape: &[i64], output: bool) -> Arg {
        let mut s = [0i64; SHAPE_SLOTS];
        s[..shape.len()].copy_from_slice(shape);
        Arg {
            t: DLTensor {
                data: base.wrapping_add(off) as *mut c_void,
                device: DLDevice {
                    device_type: dl_device::CPU,
                    device_id: 0,
                },
                ndim: shape.len() as i32,
                dtype: DLDataType { code, bits, lanes: 1 },
                shape: ptr::null_mut(),
                strides: ptr::null_mut(),
                byte_offset: 0,
            },
            shape: s,
            strides: [0; SHAPE_SLOTS],
            strided: false,
            null: false,
            output,
        }
    }

    /// Fix the inner pointers (the Arg must not move afterwards) and return the descriptor.
    fn ptr(&mut self) -> *mut DLTensor {
        if self.null {
            return ptr::null_mut();
        }
        self.t.shape = self.shape.as_mut_ptr();
        self.t.strides = if self.strided {
            self.strides.as_mut_ptr()
        } else {
            ptr::null_mut()
        };
        &mut self.t
    }
}

/// The byte range `[addr, addr + bytes)` a descriptor claims if the ABI's checks
/// (`ffi/src/tensor.rs::check`) accept it on a host backend; `None` when they reject it.
fn accepted_extent(a: &Arg) -> Option<(u64, u64)> {
    if a.null || a.t.ndim < 0 || a.t.ndim > 4 {
        return None;
    }
    let n = a.t.ndim as usize;
    let d = a.t.dtype;
    if d.lanes != 1 {
        return None;
    }
    let size: u64 = match (d.code, d.bits) {
        (dl_code::FLOAT, 32) | (dl_code::INT, 32) => 4,
        (dl_code::FLOAT, 16) | (dl_code::BFLOAT, 16) => 2,
        (dl_code::INT, 64) => 8,
        (dl_code::UINT, 8) | (dl_code::BOOL, 8) | (dl_code::INT, 8) => 1,
        _ => return None,
    };
    let shape = &a.shape[..n];
    if shape.iter().any(|&s| s < 0) {
        return None;
    }
    let numel = shape.iter().try_fold(1u64, |p, &s| p.checked_mul(s as u64))?;
    let bytes = numel.checked_mul(size)?;
    if !matches!(
        a.t.device.device_type,
        dl_device::CPU | dl_device::CUDA_HOST | dl_device::ROCM_HOST
    ) {
        return None;
    }
    if a.strided && numel > 0 {
        let mut expect = 1i64;
        for i in (0..n).rev() {
            if shape[i] != 1 && a.strides[i] != expect {
                return None;
            }
            expect = expect.saturating_mul(shape[i]);
        }
    }
    let addr = (a.t.data as u64).checked_add(a.t.byte_offset)?;
    if numel > 0 {
        if a.t.data.is_null() || addr % size != 0 {
            return None;
        }
        addr.checked_add(bytes)?;
    }
    Some((addr, bytes))
}

#[derive(Debug, Clone)]
enum Mutation {
    NullTensor,
    NullData,
    Shape(usize, i64),
    Ndim(i32),
    Strides(u8),
    ByteOffset(u64),
    Dtype(u8, u8, u16),
    Device(i32, i32),
    /// Move `data` by this many bytes (overlaps, misalignment, leaving the arena).
    Shift(i64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let extent = prop::sample::select(vec![
        0i64,
        1,
        2,
        3,
        7,
        -1,
        i64::MIN,
        i64::MAX,
        1 << 31,
        1 << 32,
        (1 << 62) - 1,
        1 << 62,
        1 << 61,
    ]);
    prop_oneof![
        Just(Mutation::NullTensor),
        Just(Mutation::NullData),
        (0usize..5, extent).prop_map(|(i, v)| Mutation::Shape(i, v)),
        prop::sample::select(vec![-1i32, 0, 1, 2, 3, 4, 5, 8, 1000, i32::MIN]).prop_map(Mutation::Ndim),
        (0u8..6).prop_map(Mutation::Strides),
        prop::sample::select(vec![1u64, 2, 4, 8, 64, 4096, u64::MAX, u64::MAX - 3, 1 << 63, 1 << 40])
            .prop_map(Mutation::ByteOffset),
        (
            0u8..8,
            prop::sample::select(vec![0u8, 1, 8, 16, 32, 64, 128]),
            prop::sample::select(vec![1u16, 0, 2, 4])
        )
            .prop_map(|(c, b, l)| Mutation::Dtype(c, b, l)),
        (
            prop::sample::select(vec![0i32, 1, 2, 3, 4, 7, 10, 11, 12, 13, -1, 999]),
            prop::sample::select(vec![0i32, 1, -1])
        )
            .prop_map(|(t, i)| Mutation::Device(t, i)),
        prop::sample::select(vec![-64i64, -4, -1, 1, 2, 4, 16, 64, 1 << 20, -(1 << 40)]).prop_map(Mutation::Shift),
    ]
}

fn apply(a: &mut Arg, m: &Mutation) {
    match *m {
        Mutation::NullTensor => a.null = true,
        Mutation::NullData => a.t.data = ptr::null_mut(),
        Mutation::Shape(i, v) => a.shape[i.min(SHAPE_SLOTS - 1)] = v,
        Mutation::Ndim(n) => a.t.ndim = n,
        Mutation::Strides(kind) => {
            a.strided = true;
            let n = a.t.ndim.clamp(0, SHAPE_SLOTS as i32) as usize;
            let mut row = [0i64; SHAPE_SLOTS];
            let mut e = 1i64;
            for i in (0..n).rev() {
                row[i] = e;
                e = e.saturating_mul(a.shape[i]);
            }
            for i in 0..SHAPE_SLOTS {
                a.strides[i] = match kind {
                    0 => row[i],                                               // row-major: accepted
                    1 => 0,                                                    // broadcast
                    2 => -row[i],                                              // negative
                    3 => 1,                                                    // overlapping rows
                    4 => row[SHAPE_SLOTS - 1 - i.min(SHAPE_SLOTS - 1)].max(1), // transposed-ish
                    _ => i64::MAX - i as i64,                                  // near overflow
                };
            }
        }
        Mutation::ByteOffset(o) => a.t.byte_offset = o,
        Mutation::Dtype(c, b, l) => {
            a.t.dtype = DLDataType {
                code: c,
                bits: b,
                lanes: l,
            }
        }
        Mutation::Device(t, i) => {
            a.t.device = DLDevice {
                device_type: t,
                device_id: i,
            }
        }
        Mutation::Shift(d) => a.t.data = (a.t.data as *mut u8).wrapping_offset(d as isize) as *mut c_void,
    }
}

/// A valid call of one op laid out in an arena, before mutation.
struct Call {
    op: usize,
    args: Vec<Arg>,
    /// Op-specific integer argument (num_experts, layout, format, router k).
    scalar: i64,
}

const F: u8 = dl_code::FLOAT;
const I: u8 = dl_code::INT;

fn build(op: usize, base: *mut u8) -> Call {
    let mut off = 0usize;
    let mut args = Vec::new();
    let mut t = |code: u8, bits: u8, shape: &[i64], output: bool| {
        let a = Arg::new(base, off, code, bits, shape, output);
        let n: i64 = shape.iter().product();
        off += (n as usize * bits as usize / 8).div_ceil(64) * 64 + 64;
        args.push(a);
    };
    let scalar = match op {
        0 => {
            // grouped_gemm: x [4,8], w [2,4,8], group_end [2], row_scale [4], bias [2,4], y [4,4]
            t(F, 32, &[4, 8], false);
            t(F, 32, &[2, 4, 8], false);
            t(I, 64, &[2], false);
            t(F, 32, &[4], false);
            t(F, 32, &[2, 4], false);
            t(F, 32, &[4, 4], true);
            MOEHAL_LAYOUT_NK as i64
        }
        1 => {
            // router_topk: logits [3,8], bias [8], ids [3,2], weights [3,2], counts [8]
            t(F, 32, &[3, 8], false);
            t(F, 32, &[8], false);
            t(I, 32, &[3, 2], true);
            t(F, 32, &[3, 2], true);
            t(I, 64, &[8], true);
            2
        }
        2 => {
            // moe_permute: ids [3,2], x [3,5], group_end [4], src_token [6], slot_row [3,2], x_perm [6,5]
            t(I, 32, &[3, 2], false);
            t(F, 32, &[3, 5], false);
            t(I, 64, &[4], true);
            t(I, 64, &[6], true);
            t(I, 64, &[3, 2], true);
            t(F, 32, &[6, 5], true);
            4
        }
        3 => {
            // swiglu: h [3,8], out [3,4]
            t(F, 32, &[3, 8], false);
            t(F, 32, &[3, 4], true);
            0
        }
        4 => {
            // moe_combine: y_perm [6,4], slot_row [3,2], weights [3,2], out [3,4]
            t(F, 32, &[6, 4], false);
            t(I, 64, &[3, 2], false);
            t(F, 32, &[3, 2], false);
            t(F, 32, &[3, 4], true);
            0
        }
        5 => {
            // gather_rows: table [16,4] f32, rows [3,2], out [3,8]
            t(F, 32, &[16, 4], false);
            t(I, 64, &[3, 2], false);
            t(F, 32, &[3, 8], true);
            MOEHAL_TABLE_F32 as i64
        }
        6 => {
            // engram_hash (toy layer, 4 columns): ids [5], positions [5], alive [5], rows [5,4]
            t(I, 64, &[5], false);
            t(I, 64, &[5], false);
            t(dl_code::UINT, 8, &[5], false);
            t(I, 64, &[5, 4], true);
            0
        }
        _ => {
            // engram_lookup (toy layer, R = 60): ids [5], positions, alive, table [60,2], out [5,8]
            t(I, 64, &[5], false);
            t(I, 64, &[5], false);
            t(dl_code::UINT, 8, &[5], false);
            t(F, 32, &[60, 2], false);
            t(F, 32, &[5, 8], true);
            MOEHAL_TABLE_F32 as i64
        }
    };
    assert!(off <= ARENA_WORDS * 8, "layout of op {op} exceeds the arena");
    Call { op, args, scalar }
}

const N_OPS: usize = 8;

struct Handles {
    backends: Vec<usize>,
    layer: usize,
}

fn handles() -> &'static Handles {
    static H: std::sync::OnceLock<Handles> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let mut backends = Vec::new();
        for name in [c"cpu", c"reference"] {
            let mut b: *mut moehal_backend = ptr::null_mut();
            // SAFETY: valid C string and out pointer.
            if unsafe { moehal_backend_open(name.as_ptr(), &mut b) } == MOEHAL_OK {
                backends.push(b as usize);
            }
        }
        assert!(!backends.is_empty(), "neither cpu nor reference opened");
        // The toy layer of OPS.md §4.
        let m: [u64; 3] = [151872553228292665, 9591860036772465, 71266316989379275];
        let p: [u64; 4] = [11, 13, 17, 19];
        let mut l: *mut moehal_engram_layer = ptr::null_mut();
        // SAFETY: arrays of max_order and (max_order-1)*heads entries; valid out pointer.
        let s = unsafe { moehal_engram_layer_create(3, 2, m.as_ptr(), p.as_ptr(), 50, 2, &mut l) };
        assert_eq!(s, MOEHAL_OK);
        Handles {
            backends,
            layer: l as usize,
        }
    })
}

/// Call op `c.op` with the (mutated) arguments.
///
/// # Safety
/// Every descriptor the ABI accepts lies inside the arena (checked by the caller).
unsafe fn invoke(be: *const moehal_backend, layer: *const moehal_engram_layer, c: &mut Call) -> moehal_status {
    let s = c.scalar;
    let p: Vec<*mut DLTensor> = c.args.iter_mut().map(Arg::ptr).collect();
    let hist = [7i64];
    // SAFETY: descriptors are valid or NULL; accepted extents lie in the live arena.
    unsafe {
        match c.op {
            0 => moehal_grouped_gemm(be, p[0], p[1], s as i32, p[2], p[3], p[4], p[5]),
            1 => {
                let cfg = moehal_router_config {
                    k: s,
                    scoring: MOEHAL_SCORING_SOFTMAX,
                    group_score: 0,
                    n_group: 0,
                    topk_group: 0,
                    renormalize: 1,
                    routed_scaling_factor: 1.0,
                };
                moehal_router_topk(be, p[0], p[1], &cfg, p[2], p[3], p[4])
            }
            2 => moehal_moe_permute(be, p[0], s, p[1], p[2], p[3], p[4], p[5]),
            3 => moehal_swiglu(be, p[0], ptr::null(), p[1]),
            4 => moehal_moe_combine(be, p[0], p[1], p[2], p[3]),
            5 => moehal_gather_rows(be, p[0], s as i32, p[1], p[2]),
            6 => moehal_engram_hash(be, layer, p[0], p[1], p[2], hist.as_ptr(), (s & 1) as usize, p[3]),
            _ => moehal_engram_lookup(
                be,
                layer,
                p[0],
                p[1],
                p[2],
                hist.as_ptr(),
                (s & 1) as usize,
                p[3],
                s as i32,
                p[4],
            ),
        }
    }
}

fn cases() -> u32 {
    std::env::var("MOEHAL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn scalar_mutation() -> impl Strategy<Value = Option<i64>> {
    prop::option::of(prop::sample::select(vec![
        0i64,
        -1,
        1,
        2,
        3,
        9,
        1 << 31,
        1 << 32,
        i64::MAX,
        i64::MIN,
    ]))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn c_abi_survives_random_descriptors(
        op in 0..N_OPS,
        fill in 0u8..3,
        seed in any::<u64>(),
        muts in prop::collection::vec((0usize..6, mutation()), 0..4),
        scalar in scalar_mutation(),
    ) {
        let h = handles();
        // Arena content: zeros (valid ids / rows / group ends), small integers, or random bytes.
        let mut arena = vec![0u64; ARENA_WORDS];
        let mut x = seed | 1;
        for w in arena.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *w = match fill {
                0 => 0,
                1 => x & 0x0000_0001_0000_0001,
                _ => x,
            };
        }
        let base = arena.as_mut_ptr() as *mut u8;
        let lo = base as u64;
        let hi = lo + (ARENA_WORDS * 8) as u64;
        for &be in &h.backends {
            let before = arena.clone();
            let mut call = build(op, base);
            let n = call.args.len();
            for (i, m) in &muts {
                apply(&mut call.args[i % n], m);
            }
            if let Some(v) = scalar {
                call.scalar = v;
            }
            let extents: Vec<Option<(u64, u64)>> = call.args.iter().map(accepted_extent).collect();
            // A descriptor the ABI accepts claims its bytes: keep the harness inside its arena.
            if extents.iter().flatten().any(|&(a, b)| b > 0 && (a < lo || a + b > hi)) {
                continue;
            }
            // SAFETY: every accepted descriptor lies inside `arena`, alive for the call.
            let status = unsafe { invoke(be as *const moehal_backend, h.layer as *const moehal_engram_layer, &mut call) };
            // SAFETY: moehal_last_error returns a NUL-terminated string owned by this thread.
            let msg = unsafe { std::ffi::CStr::from_ptr(moehal_last_error()) }.to_string_lossy().into_owned();
            prop_assert!((MOEHAL_OK..MOEHAL_PANIC).contains(&status), "op {op}: status {status}: {msg}");
            let outputs: Vec<(u64, u64)> = call
                .args
                .iter()
                .zip(&extents)
                .filter(|(a, _)| a.output)
                .filter_map(|(_, e)| *e)
                .collect();
            let after: &[u8] = bytemuck_bytes(&arena);
            let prev: &[u8] = bytemuck_bytes(&before);
            for (i, (x, y)) in prev.iter().zip(after).enumerate() {
                if x != y {
                    let a = lo + i as u64;
                    prop_assert!(
                        status == MOEHAL_OK,
                        "op {op}: failed call (status {status}: {msg}) changed arena byte {i}"
                    );
                    prop_assert!(
                        outputs.iter().any(|&(o, b)| a >= o && a < o + b),
                        "op {op}: byte {i} outside every output changed"
                    );
                }
            }
            arena.copy_from_slice(&before);
        }
    }
}

fn bytemuck_bytes(v: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding; the byte view covers exactly the slice's memory.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// The harness itself: every unmutated call is valid and succeeds on every backend, writes only
/// its outputs, and the safety model accepts every one of its tensors (so the fuzz starts from
/// calls that reach the kernels, not from calls that fail early).
#[test]
fn unmutated_calls_succeed() {
    let h = handles();
    for op in 0..N_OPS {
        let mut arena = vec![0u64; ARENA_WORDS];
        let base = arena.as_mut_ptr() as *mut u8;
        for &be in &h.backends {
            let mut call = build(op, base);
            assert!(
                call.args.iter().all(|a| accepted_extent(a).is_some()),
                "op {op}: model rejects a valid tensor"
            );
            // SAFETY: every tensor lies inside `arena`.
            let status = unsafe {
                invoke(
                    be as *const moehal_backend,
                    h.layer as *const moehal_engram_layer,
                    &mut call,
                )
            };
            // SAFETY: NUL-terminated, owned by this thread.
            let msg = unsafe { std::ffi::CStr::from_ptr(moehal_last_error()) }
                .to_string_lossy()
                .into_owned();
            assert_eq!(status, MOEHAL_OK, "op {op}: {msg}");
        }
    }
}

/// Fresh-user finding (session 9): the layer's own rules (an even multiplier, a pad id past the
/// vocabulary) were reported as `engram_layer: ...`, not under the function the caller used.
#[test]
fn engram_layer_create_errors_name_the_function() {
    let p: [u64; 4] = [11, 13, 17, 19];
    let even: [u64; 3] = [2, 3, 5];
    let odd: [u64; 3] = [1, 3, 5];
    for (m, pad) in [(even, 2u64), (odd, 50)] {
        let mut l: *mut moehal_engram_layer = ptr::null_mut();
        // SAFETY: arrays of max_order and (max_order-1)*heads entries; valid out pointer.
        let s = unsafe { moehal_engram_layer_create(3, 2, m.as_ptr(), p.as_ptr(), 50, pad, &mut l) };
        assert_eq!(s, MOEHAL_INVALID_ARGUMENT, "{m:?} pad {pad}");
        assert!(l.is_null());
        // SAFETY: moehal_last_error returns a NUL-terminated string owned by this thread.
        let msg = unsafe { std::ffi::CStr::from_ptr(moehal_last_error()) }
            .to_string_lossy()
            .into_owned();
        assert!(msg.starts_with("engram_layer_create: "), "{msg}");
    }
}
