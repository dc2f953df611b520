//! Issue 16 item 9 experiment: cpu vs reference `gather_rows` at the bench's small shapes, both
//! through the Backend trait on the bench's own prepared buffers (`BenchShape::host_data` /
//! `prepare`), interleaved in one process. Prints, per shape, (a) the bench's own statistic (one
//! warm-up then the median of 50 single timed calls) and (b) many-call averages (batches of
//! 20000 calls), each over several interleaved rounds, as cpu / reference ratios.
//!
//! Run: `cargo run --release -p moehal --example gather_gap [tokens...]`.
use moehal::bench::{default_shapes_of, measure, BenchShape};
use moehal::{Backend, OpKind};
use std::time::Instant;

fn batch(p: &mut moehal::bench::Prepared<'_>, n: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        p.run().expect("run");
    }
    t.elapsed().as_secs_f64() / n as f64
}

fn main() {
    if let Ok(which) = std::env::var("GAP_LOOP") {
        // Profiling aid: only one backend's direct calls (`perf record` / `perf stat`).
        let cpu = moehal_cpu::CpuBackend::open().expect("cpu");
        let rf = moehal::Reference::new();
        let be: &dyn Backend = if which == "cpu" { &cpu } else { &rf };
        swap_one(be, 2_000_000);
        return;
    }
    let toks: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let toks = if toks.is_empty() { vec![1, 4, 16] } else { toks };
    let shapes: Vec<BenchShape> = default_shapes_of(Some(OpKind::GatherRows), Some(&toks), 2.2e9).expect("shapes");
    let cpu = moehal_cpu::CpuBackend::open().expect("cpu");
    let rf = moehal::Reference::new();
    for s in &shapes {
        let data = s.host_data(7).expect("data");
        let mut pc = s.prepare(&cpu as &dyn Backend, &data).expect("prep cpu");
        let mut pr = s.prepare(&rf as &dyn Backend, &data).expect("prep ref");
        let (mut bench_r, mut many_r) = (Vec::new(), Vec::new());
        let (mut bc, mut brf, mut mc, mut mrf) = (0f64, 0f64, 0f64, 0f64);
        for round in 0..6 {
            // Alternate which backend goes first.
            let (a, b) = if round % 2 == 0 {
                let r = measure(&mut pr, 0.2).unwrap().median;
                (measure(&mut pc, 0.2).unwrap().median, r)
            } else {
                let c = measure(&mut pc, 0.2).unwrap().median;
                (c, measure(&mut pr, 0.2).unwrap().median)
            };
            bench_r.push(a / b);
            bc += a;
            brf += b;
            let (c, r) = if round % 2 == 0 {
                let r = batch(&mut pr, 20_000);
                (batch(&mut pc, 20_000), r)
            } else {
                let c = batch(&mut pc, 20_000);
                (c, batch(&mut pr, 20_000))
            };
            many_r.push(c / r);
            mc += c;
            mrf += r;
        }
        let rng = |v: &[f64]| {
            let lo = v.iter().cloned().fold(f64::MAX, f64::min);
            let hi = v.iter().cloned().fold(0.0, f64::max);
            format!("{lo:.2}-{hi:.2}")
        };
        println!(
            "{:5} {:40} bench-median cpu {:.3} us ref {:.3} us speedup(ref/cpu) {} | 20k-avg cpu {:.3} us ref {:.3} us speedup {}",
            s.dtype_label(),
            s.shape(),
            bc / 6.0 * 1e6,
            brf / 6.0 * 1e6,
            rng(&bench_r.iter().map(|x| 1.0 / x).collect::<Vec<_>>()),
            mc / 6.0 * 1e6,
            mrf / 6.0 * 1e6,
            rng(&many_r.iter().map(|x| 1.0 / x).collect::<Vec<_>>()),
        );
    }
    swap(&cpu, &rf);
}

/// Same buffers vs each backend's own: a bf16 `[2^20, 256]` table from each backend's `alloc`
/// (cpu: a huge-page mapping; reference: zeroed heap), 8 rows, output from each backend's `alloc`;
/// every (backend, table, out) combination, batches of 20000 calls, interleaved over rounds.
fn swap(cpu: &moehal_cpu::CpuBackend, rf: &moehal::Reference) {
    use moehal::core::ops::{GatherRows, TableFormat};
    use moehal::{Buffer, DType};
    let (r, d, nrows) = (1usize << 20, 256usize, 8usize);
    let bytes = r * d * 2;
    let mk_table = |b: &dyn Backend| -> Buffer {
        let mut t = b.alloc(bytes).expect("alloc");
        let m = moehal::core::host::bytes_mut(&mut t, "x", "t").expect("host");
        for (i, x) in m.iter_mut().enumerate() {
            *x = (i * 31 + 7) as u8;
        }
        t
    };
    let tables = [("cpu-table", mk_table(cpu)), ("ref-table", mk_table(rf))];
    let mut rows_buf = rf.alloc(nrows * 8).expect("rows");
    {
        let m = moehal::core::host::bytes_mut(&mut rows_buf, "x", "r").expect("host");
        let mut x = 12345u64;
        for c in m.chunks_exact_mut(8) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            c.copy_from_slice(&(((x >> 33) as usize % r) as i64).to_le_bytes());
        }
    }
    let mut outs = [
        ("cpu-out", cpu.alloc(nrows * d * 2).unwrap()),
        ("ref-out", rf.alloc(nrows * d * 2).unwrap()),
    ];
    let bes: [(&str, &dyn Backend); 2] = [("cpu", cpu), ("ref", rf)];
    let mut sums = [0f64; 8];
    let rounds = 6;
    for _ in 0..rounds {
        let mut k = 0;
        for (_, t) in &tables {
            for (_, o) in outs.iter_mut() {
                for (_, be) in &bes {
                    let n = 20_000;
                    let t0 = Instant::now();
                    for _ in 0..n {
                        let args = GatherRows {
                            table: t.view(DType::BF16, &[r, d]),
                            format: TableFormat::BF16,
                            rows: rows_buf.view(DType::I64, &[1, nrows]),
                            out: o.view_mut(DType::BF16, &[1, nrows * d]),
                        };
                        be.gather_rows(args.validate().unwrap()).unwrap();
                    }
                    sums[k] += t0.elapsed().as_secs_f64() / n as f64;
                    k += 1;
                }
            }
        }
    }
    let mut k = 0;
    for (tn, _) in &tables {
        for (on, _) in &outs {
            for (bn, _) in &bes {
                println!("swap {tn} {on} {bn}: {:.3} us", sums[k] / rounds as f64 * 1e6);
                k += 1;
            }
        }
    }
}

/// `n` direct 8-row bf16 calls of one backend on a reference-allocated table and output.
fn swap_one(be: &dyn Backend, n: usize) {
    use moehal::core::ops::{GatherRows, TableFormat};
    use moehal::DType;
    let rf = moehal::Reference::new();
    let (r, d, nrows) = (1usize << 16, 256usize, 8usize);
    let mut t = rf.alloc(r * d * 2).unwrap();
    for (i, x) in moehal::core::host::bytes_mut(&mut t, "x", "t")
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        *x = i as u8;
    }
    let mut rows_buf = rf.alloc(nrows * 8).unwrap();
    for (i, c) in moehal::core::host::bytes_mut(&mut rows_buf, "x", "r")
        .unwrap()
        .chunks_exact_mut(8)
        .enumerate()
    {
        c.copy_from_slice(&((i * 7919 % r) as i64).to_le_bytes());
    }
    let mut o = rf.alloc(nrows * d * 2).unwrap();
    let t0 = Instant::now();
    for _ in 0..n {
        let args = GatherRows {
            table: t.view(DType::BF16, &[r, d]),
            format: TableFormat::BF16,
            rows: rows_buf.view(DType::I64, &[1, nrows]),
            out: o.view_mut(DType::BF16, &[1, nrows * d]),
        };
        be.gather_rows(args.validate().unwrap()).unwrap();
    }
    println!("{}: {:.3} us", be.name(), t0.elapsed().as_secs_f64() / n as f64 * 1e6);
}
