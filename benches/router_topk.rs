//! criterion bench of `router_topk` on every backend found (shapes of `moehal bench`; see
//! `benches/common/mod.rs`).

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use moehal::OpKind;

fn bench(c: &mut Criterion) {
    common::bench_ops(c, &[OpKind::RouterTopk]);
}

criterion_group!(benches, bench);
criterion_main!(benches);
