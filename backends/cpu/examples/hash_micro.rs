//! `engram_hash` at T tokens (default 4096) on the DeepSeek-V4.1-Flash layer 1 (N 4, K 8), one
//! thread: the best of 300 interleaved runs of (a) moehal-cpu's `engram_hash` (the fused AVX2
//! kernel where the table has it), (b) the unfused vector path it replaced for plain windows
//! (scalar multiply-XOR per token, then `Kernels::engram_rows` per 256 tokens; still the path of
//! windows with positions or an alive mask) and (c) core's reference `hash_sequence`; checks that
//! all three agree and prints the times and the reference / cpu ratios. Minima, not medians: on a
//! shared machine the fastest run is the least disturbed one.
//! Run: `cargo run --release -p moehal-cpu --example hash_micro -- [T]`

use moehal_core::engram::v41_flash;
use moehal_cpu::engram::engram_hash;
use moehal_cpu::simd::hash::{HashPlan, HASH_ORDERS};
use moehal_cpu::{Kernels, Pool};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn main() {
    let t: usize = std::env::args()
        .nth(1)
        .map_or(4096, |s| s.parse().expect("T: a token count"))
        .max(8);
    let pool = Pool::new(1).unwrap();
    let kern = Kernels::best();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let layer = v41_flash::layer(0).unwrap();
    let c = layer.columns();
    let ids: Vec<i64> = (0..t).map(|_| rng.gen_range(0..layer.vocab_size() as i64)).collect();
    let plan = HashPlan::new(layer.heads(), layer.primes(), layer.offsets()).unwrap();
    let m = layer.multipliers();
    let n = layer.max_order();
    let mut a = vec![0i64; t * c];
    let mut b = vec![0i64; t * c];
    let mut o = vec![0i64; t * c];
    let mut hb = vec![0u64; t * HASH_ORDERS];
    let (mut bc, mut br, mut bo) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..300 {
        let s = Instant::now();
        engram_hash(kern, &pool, &layer, &ids, None, None, &[], &mut a).unwrap();
        bc = bc.min(s.elapsed().as_secs_f64());
        let s = Instant::now();
        layer.hash_sequence(&ids, None, None, &[], &mut b).unwrap();
        br = br.min(s.elapsed().as_secs_f64());
        // Old path (tokens n-1..): scalar multiply-XOR + engram_rows, in 256-token blocks.
        if !kern.has_engram_rows() {
            continue;
        }
        let s = Instant::now();
        for blk in ((n - 1)..t).step_by(256) {
            let e = (blk + 256).min(t);
            for tt in blk..e {
                let mut h = (ids[tt] as u64).wrapping_mul(m[0]);
                for k in 1..n {
                    h ^= (ids[tt - k] as u64).wrapping_mul(m[k]);
                    hb[(tt - blk) * 4 + k - 1] = h;
                }
            }
            assert!(kern.engram_rows(&plan, &hb[..(e - blk) * 4], &mut o[blk * c..e * c]));
        }
        bo = bo.min(s.elapsed().as_secs_f64());
    }
    assert_eq!(a, b);
    if kern.has_engram_rows() {
        assert_eq!(a[(n - 1) * c..], o[(n - 1) * c..]);
    }
    println!(
        "T {t}: cpu {:.1} us, old-path {:.1} us, ref {:.1} us, ratio {:.2} (old {:.2})",
        bc * 1e6,
        bo * 1e6,
        br * 1e6,
        br / bc,
        br / bo
    );
}
