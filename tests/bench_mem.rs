//! `BenchShape::mem_bytes` is an upper bound of the host memory a shape takes in `moehal bench`:
//! a counting global allocator measures the peak bytes allocated while each default shape makes
//! its inputs and binds them, with its outputs, to the reference, and the estimate must cover it
//! (issue 16: `--op gather_rows --tokens 100000000` aborted because the estimate counted only the
//! table). One test in this file, so no other test allocates while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use moehal::bench::{default_shapes, preset_shapes, BenchShape, ShapeKind};

/// The system allocator, counting the bytes held now and their peak.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::SeqCst) + n;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call forwards to `System` with the caller's arguments unchanged; the counters do
// not affect the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (the caller upholds `GlobalAlloc::alloc`'s contract).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // The old and the new block may both exist during the copy.
            grow(new_size);
            CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated (above what was held before) while `f` runs.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - base
}

#[test]
fn the_memory_estimate_covers_every_buffer_a_shape_allocates() {
    let be = moehal::Reference::new();
    // Small budgets scale the big tables and expert sets down; token counts 1 (cold decode) and 3.
    let mut shapes: Vec<BenchShape> = default_shapes(Some(&[1, 3]), 1e6).unwrap();
    let p = moehal::presets::preset("deepseek-v3").unwrap();
    shapes.extend(preset_shapes(p, Some(&[3]), 1e6).unwrap());
    // GEMMs keep at least 8 model-sized experts whatever the budget: shrink their K, N and expert
    // count (every other field, and the estimate's formula, stay as they are) to keep the test quick.
    for s in &mut shapes {
        match &mut s.kind {
            ShapeKind::Gemm {
                num_experts: experts,
                k,
                n,
                ..
            } => (*experts, *k, *n) = (16, 256, 128),
            ShapeKind::DecodeCold {
                num_experts: experts,
                k,
                n,
                topk,
                sets,
                ..
            } => (*experts, *k, *n, *sets) = (2 * *topk, 256, 128, 2),
            ShapeKind::QGemm {
                num_experts: experts,
                k,
                n,
                topk,
                sets,
                ..
            } => {
                (*k, *n) = (256, 128);
                *experts = if sets.is_some() { 2 * *topk } else { 16 };
                *sets = sets.map(|_| 2);
            }
            _ => {}
        }
    }
    let mut checked = 0;
    for s in &shapes {
        let est = s.mem_bytes(false).unwrap();
        let mut sizes = Vec::new();
        let peak = peak_of(|| {
            let data = s.host_data(11).unwrap();
            sizes = data.sizes();
            let prepared = s.prepare(&be, &data).unwrap();
            drop(prepared);
        });
        let label = format!("{} {} {}", s.op, s.shape(), s.dtype_label());
        assert_eq!(sizes, s.input_sizes().unwrap(), "{label}: input sizes");
        let held: usize = sizes.iter().chain(&s.output_sizes().unwrap()).sum();
        assert!(
            peak >= held,
            "{label}: the counter saw {peak} B, the buffers hold {held} B"
        );
        assert!(est >= peak, "{label}: estimate {est} B < peak {peak} B allocated");
        // With an upload copy (a device backend) the estimate covers a second copy of the inputs.
        let copy: usize = sizes.iter().sum();
        assert!(s.mem_bytes(true).unwrap() >= peak + copy, "{label}: with a copy");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} shapes");
}
