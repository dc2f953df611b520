//! Shared driver of the criterion benches: the shapes of `moehal bench` (peers.py shapes) for the
//! ops of one bench file, on every backend of `Registry::discover()`.
//!
//! `MOEHAL_BENCH_TOKENS=1,16` replaces every token count (quick runs). The reference runs only on
//! shapes it finishes in about half a second (estimated from its measured rate), and each skip
//! is printed.

use std::time::Duration;

use criterion::{Criterion, Throughput};
use moehal::bench::{calibrate_reference, default_shapes, RefRates};
use moehal::pipeline::available_memory;
use moehal::{OpKind, Registry};

/// Reference runs estimated above this are skipped (criterion times 10+ samples).
const REF_LIMIT_S: f64 = 0.5;

pub fn bench_ops(c: &mut Criterion, ops: &[OpKind]) {
    let reg = Registry::discover();
    for e in reg.entries() {
        if let Err(reason) = &e.status {
            eprintln!("skipped: {} unavailable ({reason})", e.name);
        }
    }
    let backends: Vec<_> = reg.available().cloned().collect();
    let tokens: Option<Vec<usize>> = std::env::var("MOEHAL_BENCH_TOKENS")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect());
    let budget = available_memory().unwrap_or(8 << 30) as f64 * 0.3;
    let rates = calibrate_reference().unwrap_or(RefRates([1e9; 3]));
    let shapes = match default_shapes(tokens.as_deref(), budget) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("skipped: no shapes for MOEHAL_BENCH_TOKENS: {e}");
            return;
        }
    };
    for s in shapes.into_iter().filter(|s| ops.contains(&s.op)) {
        for n in &s.notes {
            eprintln!("note: {} {}: {n}", s.op, s.shape());
        }
        let data = match s.host_data(0x5eed) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("skipped: {} {}: {e}", s.op, s.shape());
                continue;
            }
        };
        let mut g = c.benchmark_group(format!("{}/{}/{}", s.op, s.dtype, s.shape()));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        match s.flops() {
            Some(f) => g.throughput(Throughput::Elements(f as u64)), // FLOP per iteration
            None => g.throughput(Throughput::Bytes(s.bytes() as u64)),
        };
        for b in &backends {
            if b.name() == "reference" && s.reference_estimate(&rates) > REF_LIMIT_S {
                eprintln!(
                    "skipped: reference on {} {} (estimated {:.1} s per run)",
                    s.op,
                    s.shape(),
                    s.reference_estimate(&rates)
                );
                continue;
            }
            let mut p = match s.prepare(b.as_ref(), &data) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("skipped: {} on {} {}: {e}", b.name(), s.op, s.shape());
                    continue;
                }
            };
            if let Err(e) = p.run() {
                eprintln!("skipped: {} on {} {}: {e}", b.name(), s.op, s.shape());
                continue;
            }
            g.bench_function(b.name(), |bn| {
                bn.iter(|| p.run().expect("op failed after a successful first run"))
            });
        }
        g.finish();
    }
}
