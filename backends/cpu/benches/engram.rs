//! Engram on the shapes of the repository's benches/peers.py: gather of 4096 tokens x 8 rows from a 2^22 x 256
//! bf16 table (2 GiB, huge-page advised), the DeepSeek-V4.1-Flash hash of 4096 tokens (and the
//! reference's, for the ratio), and the fused
//! lookup (hash + gather) of an N=2, K=8 layer whose table has ~2^22 rows of 256 bf16.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::bf16;
use moehal_core::engram::{derive_primes, v41_flash, EngramLayer};
use moehal_cpu::engram::{engram_hash, engram_lookup, gather_rows, GatherOut, Table};
use moehal_cpu::simd::mem::HugeBuf;
use moehal_cpu::{Kernels, Pool};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn benches(c: &mut Criterion) {
    let pool = Pool::global();
    let kern = Kernels::best();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (r, d, t, h) = (1usize << 22, 256usize, 4096usize, 8usize);
    let mut table = HugeBuf::<bf16>::zeroed(r * d).unwrap();
    table
        .as_mut_slice()
        .iter_mut()
        .for_each(|v| *v = bf16::from_bits(rng.gen()));
    let rows: Vec<i64> = (0..t * h).map(|_| rng.gen_range(0..r as i64)).collect();
    let mut out = vec![0u8; t * h * d * 2];
    let tb: &[u8] = bytemuck::cast_slice(table.as_slice());
    let mut g = c.benchmark_group("engram");
    g.throughput(Throughput::Bytes((t * h * d * 2) as u64));
    g.bench_function("gather_bf16_2^22x256_T4096x8", |b| {
        b.iter(|| {
            gather_rows(
                pool,
                Table::Plain {
                    data: tb,
                    row_bytes: d * 2,
                    rows: tb.len() / (d * 2),
                },
                &rows,
                h,
                GatherOut::Bytes(&mut out),
            )
            .unwrap()
        })
    });
    let layer = v41_flash::layer(0).unwrap();
    let ids: Vec<i64> = (0..t).map(|_| rng.gen_range(0..layer.vocab_size() as i64)).collect();
    let mut hrows = vec![0i64; t * layer.columns()];
    g.throughput(Throughput::Elements((t * layer.columns()) as u64));
    g.bench_function("hash_v41_flash_T4096", |b| {
        b.iter(|| engram_hash(kern, pool, &layer, &ids, None, None, &[], &mut hrows).unwrap())
    });
    // The reference (core's scalar `hash_sequence`, `%` per column) on the same input, for the ratio.
    g.bench_function("hash_v41_flash_T4096_reference", |b| {
        b.iter(|| layer.hash_sequence(&ids, None, None, &[], &mut hrows).unwrap())
    });
    // Fused lookup: 8 columns (N = 2, K = 8) over a table of sum(primes) ~ 2^22 rows.
    let primes = derive_primes((1 << 19) - 300, 2, 8, 1).unwrap().remove(0);
    let mults = v41_flash::MULTIPLIERS[0][..2].to_vec();
    let small = EngramLayer::new(2, 8, mults, primes, 99_092, 2).unwrap();
    let rr = small.rows() as usize;
    let lt: &[u8] = &tb[..rr * d * 2];
    let lids: Vec<i64> = (0..t).map(|_| rng.gen_range(0..99_092)).collect();
    g.throughput(Throughput::Bytes((t * h * d * 2) as u64));
    g.bench_function("lookup_bf16_~2^22x256_T4096x8", |b| {
        b.iter(|| {
            engram_lookup(
                kern,
                pool,
                &small,
                &lids,
                None,
                None,
                &[],
                Table::Plain {
                    data: lt,
                    row_bytes: d * 2,
                    rows: lt.len() / (d * 2),
                },
                GatherOut::Bytes(&mut out),
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(engram, benches);
criterion_main!(engram);
