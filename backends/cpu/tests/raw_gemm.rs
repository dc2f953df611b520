//! grouped_gemm on raw slices against an f64 oracle, for every ISA table, dtype and layout.
use half::{bf16, f16};
use moehal_core::DType;
use moehal_cpu::grouped_gemm::{grouped_gemm_with, Bf16Kernel, GemmArgs, Layout, PackedWeights, Weights};
use moehal_cpu::{Elem, Isa, Kernels, Pool};
use moehal_testkit::{check_rows, tolerance};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn oracle<T: Elem>(
    x: &[T],
    m: usize,
    k: usize,
    n: usize,
    ge: &[i64],
    w: &[T],
    lay: Layout,
    rs: Option<&[f32]>,
    bias: Option<&[T]>,
) -> Vec<f64> {
    let mut y = vec![f64::NAN; m * n];
    let mut r0 = 0;
    for (g, &e) in ge.iter().enumerate() {
        for r in r0..e as usize {
            for j in 0..n {
                let mut acc = 0f64;
                for kk in 0..k {
                    let wv = match lay {
                        Layout::NK => w[(g * n + j) * k + kk],
                        Layout::KN => w[(g * k + kk) * n + j],
                    };
                    acc += x[r * k + kk].to_f32() as f64 * wv.to_f32() as f64;
                }
                if let Some(b) = bias {
                    acc += b[g * n + j].to_f32() as f64;
                }
                if let Some(s) = rs {
                    acc *= s[r] as f64;
                }
                y[r * n + j] = acc;
            }
        }
        r0 = e as usize;
    }
    y
}

fn check<T: Elem>(tol: f64, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pool = Pool::new(2).unwrap();
    let shapes = [
        (0usize, 5usize, 7usize, 3usize),
        (37, 35, 70, 5),
        (20, 0, 65, 3),
        (9, 130, 64, 2),
        (200, 257, 129, 4),
        (1, 2048, 96, 1),
        // Decode (f32 NK read in place, at most MR = 6 rows per group): K and N tails.
        (6, 37, 65, 1),
        (5, 19, 7, 2),
        // AMX edges: K a multiple of 32 (tiles read in place), groups over 32 rows with tails of
        // <= 16 and > 16 rows, N tails of 16 and 8 columns.
        (300, 256, 96, 3),
        (90, 64, 80, 2),
        (61, 96, 40, 1),
    ];
    for &(m, k, n, g) in &shapes {
        // random non-decreasing group ends leaving guard rows, with an empty group
        let used = m.saturating_sub(m / 8);
        let mut ge: Vec<i64> = (0..g).map(|_| rng.gen_range(0..=used) as i64).collect();
        ge.sort();
        if g > 1 {
            ge[0] = ge[1];
        }
        if let Some(l) = ge.last_mut() {
            *l = used as i64;
        }
        let x: Vec<T> = (0..m * k).map(|_| T::from_f32(rng.gen_range(-1.0..1.0))).collect();
        let w: Vec<T> = (0..g * n * k).map(|_| T::from_f32(rng.gen_range(-1.0..1.0))).collect();
        let rs: Vec<f32> = (0..m).map(|_| rng.gen_range(0.0..2.0)).collect();
        let bias: Vec<T> = (0..g * n).map(|_| T::from_f32(rng.gen_range(-1.0..1.0))).collect();
        for isa in Isa::all_available() {
            let kern = Kernels::for_isa(isa).unwrap();
            for lay in [Layout::NK, Layout::KN] {
                let packed = PackedWeights::new(&pool, &w, lay, g, n, k).unwrap();
                for (use_packed, bk) in [false, true]
                    .into_iter()
                    .flat_map(|u| [(u, Bf16Kernel::Fma), (u, Bf16Kernel::Dot), (u, Bf16Kernel::Amx)])
                    .filter(|&(_, bk)| bk.available(kern))
                {
                    for opt in 0..2 {
                        let (rs_o, b_o) = if opt == 0 {
                            (None, None)
                        } else {
                            (Some(&rs[..]), Some(&bias[..]))
                        };
                        let want = oracle(&x, m, k, n, &ge, &w, lay, rs_o, b_o);
                        let poison = T::from_f32(f32::NAN);
                        let mut y = vec![poison; m * n];
                        let args = GemmArgs {
                            x: &x,
                            m,
                            k,
                            n,
                            group_end: &ge,
                            w: if use_packed {
                                Weights::Packed(&packed)
                            } else {
                                Weights::Raw(&w, lay)
                            },
                            row_scale: rs_o,
                            bias: b_o,
                        };
                        grouped_gemm_with(kern, &pool, &args, &mut y, bk).unwrap();
                        let got: Vec<f32> = y.iter().map(|v| v.to_f32()).collect();
                        if let Err(e) = check_rows(&got, &want, used * n, tol) {
                            panic!("{isa:?} {lay:?} packed={use_packed} {bk:?} ({m},{k},{n},{g}): {e}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn gemm_f32() {
    check::<f32>(tolerance(DType::F32), 1);
}
#[test]
fn gemm_bf16() {
    check::<bf16>(tolerance(DType::BF16), 2);
}
#[test]
fn gemm_f16() {
    check::<f16>(tolerance(DType::F16), 3);
}

/// The AMX path gives the same bits run after run and for 1 or 2 threads (each output is one fixed
/// sequence of tile operations), for both orientations (NK in place, KN staged).
#[test]
fn amx_bf16_deterministic() {
    let Some(kern) = Kernels::for_isa(Isa::Amx) else {
        println!("AMX table unavailable here: {:?}", moehal_cpu::simd::amx::Amx::status());
        return;
    };
    assert!(Bf16Kernel::Amx.available(kern));
    assert!(!Bf16Kernel::Amx.available(Kernels::for_isa(Isa::Avx512).unwrap()));
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (m, k, n, g) = (300usize, 512usize, 160usize, 5usize);
    let ge: Vec<i64> = vec![0, 40, 41, 250, 290];
    let x: Vec<bf16> = (0..m * k).map(|_| bf16::from_f32(rng.gen_range(-1.0..1.0))).collect();
    let w: Vec<bf16> = (0..g * n * k)
        .map(|_| bf16::from_f32(rng.gen_range(-1.0..1.0)))
        .collect();
    let rs: Vec<f32> = (0..m).map(|_| rng.gen_range(0.0..2.0)).collect();
    for lay in [Layout::NK, Layout::KN] {
        let mut first: Option<Vec<u16>> = None;
        for threads in [1, 2, 2, 1] {
            let pool = Pool::new(threads).unwrap();
            let args = GemmArgs {
                x: &x,
                m,
                k,
                n,
                group_end: &ge,
                w: Weights::Raw(&w, lay),
                row_scale: Some(&rs),
                bias: None,
            };
            let mut y = vec![bf16::from_f32(f32::NAN); m * n];
            grouped_gemm_with(kern, &pool, &args, &mut y, Bf16Kernel::Amx).unwrap();
            let bits: Vec<u16> = y.iter().map(|v| v.to_bits()).collect();
            match &first {
                None => first = Some(bits),
                Some(f) => assert!(f == &bits, "{lay:?}: {threads} threads gave different bits"),
            }
        }
    }
}

/// The AMX-path algorithm (tile blocking, VNNI staging of activations for NK and of weights for KN /
/// packed, zero-padded edge blocks, epilogue) against the f64 oracle on every tile engine this
/// machine has: the portable model of the tile instructions always, the hardware where AMX runs.
/// Shapes cover K = 0, odd K, K a multiple of 32 (tiles read in place), groups of 1..70 rows (tails
/// of <= 16 and > 16 rows), N tails, empty groups and guard rows.
#[test]
fn amx_path_bf16_every_engine() {
    use moehal_cpu::grouped_gemm::grouped_gemm_tiles;
    use moehal_cpu::simd::amx::{Amx, TileEngine};
    let mut engines = vec![TileEngine::Emulated];
    match Amx::get() {
        Some(a) => engines.push(TileEngine::Hardware(a)),
        None => println!("AMX unavailable, hardware tiles not tested: {:?}", Amx::status()),
    }
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let pool = Pool::new(2).unwrap();
    for &(m, k, n, g) in &[
        (40usize, 64usize, 32usize, 2usize),
        (90, 35, 50, 3),
        (75, 0, 33, 2),
        (70, 96, 17, 1),
        (19, 1, 7, 2),
        (130, 128, 72, 3),
    ] {
        let used = m - m / 8;
        let mut ge: Vec<i64> = (0..g).map(|_| rng.gen_range(0..=used) as i64).collect();
        ge.sort();
        if g > 1 {
            ge[0] = ge[1];
        }
        *ge.last_mut().unwrap() = used as i64;
        let x: Vec<bf16> = (0..m * k).map(|_| bf16::from_f32(rng.gen_range(-1.0..1.0))).collect();
        let w: Vec<bf16> = (0..g * n * k)
            .map(|_| bf16::from_f32(rng.gen_range(-1.0..1.0)))
            .collect();
        let rs: Vec<f32> = (0..m).map(|_| rng.gen_range(0.0..2.0)).collect();
        let bias: Vec<bf16> = (0..g * n).map(|_| bf16::from_f32(rng.gen_range(-1.0..1.0))).collect();
        for lay in [Layout::NK, Layout::KN] {
            let packed = PackedWeights::new(&pool, &w, lay, g, n, k).unwrap();
            let combos: Vec<(usize, usize, TileEngine)> = (0..2)
                .flat_map(|wi| (0..2).flat_map(move |o| [wi].into_iter().map(move |wi| (wi, o))))
                .flat_map(|(wi, o)| engines.iter().map(move |&e| (wi, o, e)))
                .collect();
            for (wi, opt, eng) in combos {
                let (rs_o, b_o) = if opt == 0 {
                    (None, None)
                } else {
                    (Some(&rs[..]), Some(&bias[..]))
                };
                let want = oracle(&x, m, k, n, &ge, &w, lay, rs_o, b_o);
                let mut y = vec![bf16::from_f32(f32::NAN); m * n];
                let args = GemmArgs {
                    x: &x,
                    m,
                    k,
                    n,
                    group_end: &ge,
                    w: if wi == 1 {
                        Weights::Packed(&packed)
                    } else {
                        Weights::Raw(&w, lay)
                    },
                    row_scale: rs_o,
                    bias: b_o,
                };
                grouped_gemm_tiles(eng, &pool, &args, &mut y).unwrap();
                let ctx = format!("{eng:?} {lay:?} packed={} opt={opt} ({m},{k},{n},{g})", wi == 1);
                // bf16 output rounding (2^-9 relative) dominates; same bound as gemm_bf16.
                if let Err(e) = check_rows(&y, &want, used * n, tolerance(DType::BF16)) {
                    panic!("{ctx}: {e}");
                }
                if k == 0 && opt == 0 {
                    assert!(
                        y[..used * n].iter().all(|v| v.to_f32() == 0.0),
                        "{ctx}: K = 0 must give zeros"
                    );
                }
            }
        }
    }
    // f32 is refused without writing.
    let x = [1f32; 4];
    let w = [1f32; 4];
    let mut y = [f32::NAN; 4];
    let args = GemmArgs {
        x: &x,
        m: 2,
        k: 2,
        n: 2,
        group_end: &[2],
        w: Weights::Raw(&w, Layout::NK),
        row_scale: None,
        bias: None,
    };
    assert!(grouped_gemm_tiles(TileEngine::Emulated, &pool, &args, &mut y).is_err());
    assert!(y.iter().all(|v| v.is_nan()));
}

/// Issue 16 item 5: a bf16 kernel this machine's table lacks is `Unsupported` (pick another
/// kernel), while a `group_end` breaking OPS.md §1 is `InvalidArgument`, and neither writes `y`.
#[test]
fn missing_kernel_is_unsupported_bad_group_end_is_invalid() {
    use moehal_core::Error;
    let pool = Pool::new(1).unwrap();
    let (m, k, n) = (4usize, 8usize, 3usize);
    let x = vec![bf16::from_f32(1.0); m * k];
    let w = vec![bf16::from_f32(0.5); n * k];
    let poison = bf16::from_f32(-7.0);
    for isa in Isa::all_available() {
        let kern = Kernels::for_isa(isa).unwrap();
        let args = |ge: &'static [i64]| GemmArgs {
            x: &x,
            m,
            k,
            n,
            group_end: ge,
            w: Weights::Raw(&w, Layout::NK),
            row_scale: None,
            bias: None,
        };
        for bk in [Bf16Kernel::Fma, Bf16Kernel::Dot, Bf16Kernel::Amx] {
            let mut y = vec![poison; m * n];
            let r = grouped_gemm_with(kern, &pool, &args(&[4]), &mut y, bk);
            if bk.available(kern) {
                r.unwrap();
                assert!(y.iter().all(|v| v.to_f32() == 4.0), "{isa:?} {bk:?}");
                let mut y = vec![poison; m * n];
                let e = grouped_gemm_with(kern, &pool, &args(&[5]), &mut y, bk).unwrap_err();
                assert!(
                    matches!(e, Error::InvalidArgument { field: "group_end", .. }),
                    "{isa:?} {bk:?}: {e}"
                );
                assert!(y.iter().all(|&v| v == poison));
            } else {
                let e = r.unwrap_err();
                assert!(matches!(e, Error::Unsupported { .. }), "{isa:?} {bk:?}: {e}");
                assert!(e.to_string().contains(bk.name()), "{e}");
                assert!(y.iter().all(|&v| v == poison));
            }
        }
    }
}
