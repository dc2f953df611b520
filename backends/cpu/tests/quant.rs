//! OPS.md §6 on the CPU backend against the reference: every format and pairing at decode and
//! prefill shapes, on every instruction set this machine has; quantize ops bit-exact; determinism;
//! raw-API errors.

use half::bf16;
use moehal_core::ops::{ActFormat, GroupedGemmQ, QuantizeFp8, QuantizeInt8, WeightFormat};
use moehal_core::quant::{f32_to_e4m3, pack_nibbles};
use moehal_core::{Backend, BackendExt, Buffer, DType, Reference};
use moehal_cpu::quant::{grouped_gemm_q, grouped_gemm_q_tiles, QAct, QGemmArgs, QWeights, Scales};
use moehal_cpu::simd::amx::{Amx, TileEngine};
use moehal_cpu::{CpuBackend, Isa, Kernels, Pool};
use moehal_testkit::quant::gemm_tolerance;
use moehal_testkit::{check_rows, rel_error, tolerance};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Inputs {
    x: Vec<u8>,
    x_dt: DType,
    xs: Option<(Vec<u8>, DType, Vec<usize>)>,
    w: Vec<u8>,
    ws: Vec<u8>,
    ws_dt: DType,
    ge: Vec<i64>,
    bias: Option<Vec<u8>>,
    rs: Option<Vec<f32>>,
}

fn bytes<T: bytemuck::Pod>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

fn make(
    seed: u64,
    wf: WeightFormat,
    act: ActFormat,
    y: DType,
    groups: &[usize],
    n: usize,
    k: usize,
    extras: bool,
) -> Inputs {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g = groups.len();
    let m: usize = groups.iter().sum::<usize>() + 1; // one guard row
    let (x, x_dt, xs) = match act {
        ActFormat::Float(DType::F32) => (
            bytes(&(0..m * k).map(|_| rng.gen_range(-1.0f32..1.0)).collect::<Vec<_>>()),
            DType::F32,
            None,
        ),
        ActFormat::Float(_) => (
            bytes(
                &(0..m * k)
                    .map(|_| bf16::from_f32(rng.gen_range(-1.0f32..1.0)))
                    .collect::<Vec<_>>(),
            ),
            DType::BF16,
            None,
        ),
        ActFormat::Fp8 => {
            let kb = k.div_ceil(128);
            (
                (0..m * k)
                    .map(|_| f32_to_e4m3(rng.gen_range(-448.0f32..448.0)))
                    .collect(),
                DType::U8,
                Some((
                    bytes(&(0..m * kb).map(|_| rng.gen_range(0.001f32..0.01)).collect::<Vec<_>>()),
                    DType::F32,
                    vec![m, kb],
                )),
            )
        }
        ActFormat::Int8 => (
            (0..m * k).map(|_| rng.gen_range(-127i8..=127) as u8).collect(),
            DType::I8,
            Some((
                bytes(&(0..m).map(|_| rng.gen_range(0.005f32..0.02)).collect::<Vec<_>>()),
                DType::F32,
                vec![m],
            )),
        ),
    };
    let ns: usize = wf.scale_shape(g, n, k).iter().product();
    let amp = 1.0 / (k as f32).sqrt();
    let (w, ws, ws_dt) = match wf {
        WeightFormat::Fp8Block => (
            (0..g * n * k)
                .map(|_| f32_to_e4m3(rng.gen_range(-448.0f32..448.0)))
                .collect(),
            bytes(
                &(0..ns)
                    .map(|_| rng.gen_range(0.5f32..1.5) * amp / 256.0)
                    .collect::<Vec<_>>(),
            ),
            DType::F32,
        ),
        WeightFormat::Mxfp4 => (
            pack_nibbles(&(0..g * n * k).map(|_| rng.gen_range(0u8..16)).collect::<Vec<_>>()),
            (0..ns).map(|_| rng.gen_range(118u8..124)).collect(),
            DType::U8,
        ),
        WeightFormat::Int8 => (
            (0..g * n * k).map(|_| rng.gen_range(-127i8..=127) as u8).collect(),
            bytes(
                &(0..ns)
                    .map(|_| rng.gen_range(0.5f32..1.5) * amp / 64.0)
                    .collect::<Vec<_>>(),
            ),
            DType::F32,
        ),
    };
    let ge = groups
        .iter()
        .scan(0i64, |a, &c| {
            *a += c as i64;
            Some(*a)
        })
        .collect();
    let bias = extras.then(|| match y {
        DType::F32 => bytes(&(0..g * n).map(|_| rng.gen_range(-0.5f32..0.5)).collect::<Vec<_>>()),
        _ => bytes(
            &(0..g * n)
                .map(|_| bf16::from_f32(rng.gen_range(-0.5f32..0.5)))
                .collect::<Vec<_>>(),
        ),
    });
    let rs = extras.then(|| (0..m).map(|_| rng.gen_range(0.0f32..1.0)).collect());
    Inputs {
        x,
        x_dt,
        xs,
        w,
        ws,
        ws_dt,
        ge,
        bias,
        rs,
    }
}

/// Run on `be`; returns y widened to f64 (NaN poison where unwritten).
fn run(be: &dyn Backend, inp: &Inputs, wf: WeightFormat, y: DType, m: usize, n: usize, k: usize) -> Vec<f64> {
    let g = inp.ge.len();
    let up = |b: &[u8]| -> Buffer {
        let mut buf = be.alloc(b.len().max(1)).unwrap();
        be.upload(&mut buf, 0, b).unwrap();
        buf
    };
    let (x, w, ws, ge) = (up(&inp.x), up(&inp.w), up(&inp.ws), be.upload_slice(&inp.ge).unwrap());
    let xs = inp.xs.as_ref().map(|(b, _, _)| up(b));
    let bias = inp.bias.as_ref().map(|b| up(b));
    let rs = inp.rs.as_ref().map(|r| be.upload_slice(r).unwrap());
    let mut yb = up(&vec![0xFF; m * n * y.size()]);
    let args = GroupedGemmQ {
        x: x.view(inp.x_dt, &[m, k]),
        x_scale: xs.as_ref().zip(inp.xs.as_ref()).map(|(b, (_, d, s))| b.view(*d, s)),
        w_format: wf,
        w: w.view(wf.dtype(), &wf.w_shape(g, n, k)),
        w_scale: ws.view(inp.ws_dt, &wf.scale_shape(g, n, k)),
        group_end: ge.view(DType::I64, &[g]),
        row_scale: rs.as_ref().map(|b| b.view(DType::F32, &[m])),
        bias: bias.as_ref().map(|b| b.view(y, &[g, n])),
        y: yb.view_mut(y, &[m, n]),
    };
    be.grouped_gemm_quant(args.validate().unwrap()).unwrap();
    match y {
        DType::F32 => be
            .download_vec::<f32>(&yb, m * n)
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect(),
        _ => be
            .download_vec::<bf16>(&yb, m * n)
            .unwrap()
            .iter()
            .map(|v| v.to_f64())
            .collect(),
    }
}

fn backends() -> Vec<CpuBackend> {
    Isa::all_available()
        .into_iter()
        .filter_map(|i| CpuBackend::with_isa(i).ok())
        .collect()
}

#[test]
fn every_format_and_pairing_matches_the_reference() {
    use ActFormat::{Float, Fp8, Int8};
    use WeightFormat as W;
    type Row = (W, ActFormat, DType, &'static [usize], usize, usize);
    let cases: &[Row] = &[
        (W::Mxfp4, Float(DType::BF16), DType::BF16, &[1, 0, 4, 6], 192, 256), // decode
        (W::Mxfp4, Float(DType::BF16), DType::BF16, &[2], 70, 96),            // partial panel
        (W::Mxfp4, Float(DType::F32), DType::F32, &[150, 9], 64, 128),        // prefill
        (W::Fp8Block, Float(DType::BF16), DType::BF16, &[3, 0, 9], 130, 200), // partial blocks
        (W::Mxfp4, Float(DType::BF16), DType::BF16, &[40, 0, 7], 96, 256),    // AMX rows
        (W::Fp8Block, Float(DType::BF16), DType::BF16, &[70, 33], 64, 384),   // AMX rows
        (W::Fp8Block, Float(DType::F32), DType::F32, &[1], 256, 384),
        (W::Int8, Float(DType::F32), DType::F32, &[5, 2], 100, 200),
        (W::Fp8Block, Fp8, DType::F32, &[4, 0, 7], 130, 300),
        (W::Fp8Block, Fp8, DType::BF16, &[150], 64, 256),
        (W::Int8, Int8, DType::F32, &[3, 0, 6], 70, 200),
        (W::Int8, Int8, DType::F32, &[1], 64, 64),
        (W::Int8, Int8, DType::BF16, &[150, 7], 64, 130),
    ];
    for be in backends() {
        for (ci, &(wf, act, y, groups, n, k)) in cases.iter().enumerate() {
            for extras in [false, true] {
                let seed = 1000 + ci as u64;
                let m = groups.iter().sum::<usize>() + 1;
                let inp = make(seed, wf, act, y, groups, n, k, extras);
                let got = run(&be, &inp, wf, y, m, n, k);
                let want = run(&Reference, &inp, wf, y, m, n, k);
                // OPS.md §6 through the test kit: guard row untouched, relative error within the bound.
                if let Err(e) = check_rows(&got, &want, (m - 1) * n, gemm_tolerance(act, y)) {
                    panic!(
                        "{} case {ci} ({wf} x {} -> {y}, extras {extras}): {e} (seed {seed})",
                        be.kern_name(),
                        act.name()
                    );
                }
                // Determinism: the same call gives the same bits.
                let again = run(&be, &inp, wf, y, m, n, k);
                assert!(
                    got.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "run-to-run difference"
                );
            }
        }
    }
}

trait KernName {
    fn kern_name(&self) -> String;
}
impl KernName for CpuBackend {
    fn kern_name(&self) -> String {
        self.device_info().capability
    }
}

#[test]
fn quantize_ops_are_bit_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (m, k) = (9usize, 300usize);
    let mut x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
    x[5] = f32::NAN;
    x[2 * k - 1] = f32::INFINITY;
    x[2 * k..3 * k].fill(0.0);
    for v in &mut x[3 * k..4 * k] {
        *v *= 1e-30;
    }
    x[4 * k] = 1e30;
    for be in backends() {
        for dt in [DType::F32, DType::U8] {
            let run = |b: &dyn Backend| -> (Vec<u8>, Vec<u8>) {
                let xb = b.upload_slice(&x).unwrap();
                let mut q = b.alloc(m * k).unwrap();
                let mut s = b.alloc(m * 3 * dt.size()).unwrap();
                let a = QuantizeFp8 {
                    x: xb.view(DType::F32, &[m, k]),
                    xq: q.view_mut(DType::U8, &[m, k]),
                    x_scale: s.view_mut(dt, &[m, 3]),
                };
                b.quantize_fp8(a.validate().unwrap()).unwrap();
                (
                    b.download_vec(&q, m * k).unwrap(),
                    b.download_vec(&s, m * 3 * dt.size()).unwrap(),
                )
            };
            assert_eq!(run(&be), run(&Reference), "quantize_fp8 scale {dt}");
        }
        let run8 = |b: &dyn Backend| -> (Vec<i8>, Vec<i32>) {
            let xb = b.upload_slice(&x).unwrap();
            let mut q = b.alloc(m * k).unwrap();
            let mut s = b.alloc(m * 4).unwrap();
            let a = QuantizeInt8 {
                x: xb.view(DType::F32, &[m, k]),
                xq: q.view_mut(DType::I8, &[m, k]),
                x_scale: s.view_mut(DType::F32, &[m]),
            };
            b.quantize_int8(a.validate().unwrap()).unwrap();
            (b.download_vec(&q, m * k).unwrap(), b.download_vec(&s, m).unwrap())
        };
        assert_eq!(run8(&be), run8(&Reference), "quantize_int8");
    }
}

#[test]
fn raw_api_rejects_bad_lengths_and_pairings_without_writing() {
    let kern = Kernels::best();
    let pool = Pool::new(1).unwrap();
    let x = vec![0f32; 64];
    let w = vec![0u8; 32];
    let s = vec![127u8; 2];
    let mut y = vec![f32::NAN; 1];
    let ge = [1i64];
    let good = QGemmArgs {
        x: QAct::Float(&x),
        m: 1,
        k: 64,
        n: 1,
        group_end: &ge,
        w: QWeights::Mxfp4 { w: &w, scale: &s },
        row_scale: None,
        bias: None,
    };
    grouped_gemm_q(kern, &pool, &good, &mut y).unwrap();
    assert_eq!(y[0], 0.0);
    y[0] = f32::NAN;
    let short = QGemmArgs {
        w: QWeights::Mxfp4 { w: &w[..31], scale: &s },
        ..good
    };
    assert!(grouped_gemm_q(kern, &pool, &short, &mut y).is_err());
    let xi = vec![0i8; 64];
    let xs = [1f32];
    let unpaired = QGemmArgs {
        x: QAct::Int8 { x: &xi, scale: &xs },
        ..good
    };
    let e = grouped_gemm_q(kern, &pool, &unpaired, &mut y).unwrap_err();
    assert!(matches!(e, moehal_core::Error::Unsupported { .. }), "{e}");
    let bad_ge = [2i64];
    let over = QGemmArgs {
        group_end: &bad_ge,
        ..good
    };
    assert!(grouped_gemm_q(kern, &pool, &over, &mut y).is_err());
    assert!(y[0].is_nan(), "an error wrote the output");
}

/// W8A8 pairings with extreme but finite scales: the scale product is formed as the reference forms
/// it (f64), so `x_scale · w_scale` overflowing f32 meets a zero sum as 0 (not inf · 0 = NaN), and
/// two tiny scales times a large sum give the subnormal the reference gives (not 0).
#[test]
fn w8a8_scale_products_do_not_overflow_or_flush_in_f32() {
    fn run(be: &dyn Backend, wf: WeightFormat, x: &[u8], xs: f32, w: &[u8], ws: f32) -> f32 {
        let k = x.len();
        let dt = wf.dtype();
        let up = |b: &[u8]| -> Buffer {
            let mut buf = be.alloc(b.len()).unwrap();
            be.upload(&mut buf, 0, b).unwrap();
            buf
        };
        let (xb, wb) = (up(x), up(w));
        let (xsb, wsb) = (be.upload_slice(&[xs]).unwrap(), be.upload_slice(&[ws]).unwrap());
        let ge = be.upload_slice(&[1i64]).unwrap();
        let mut yb = be.alloc(4).unwrap();
        let x_scale_shape: &[usize] = if wf == WeightFormat::Int8 { &[1] } else { &[1, 1] };
        let a = GroupedGemmQ {
            x: xb.view(dt, &[1, k]),
            x_scale: Some(xsb.view(DType::F32, x_scale_shape)),
            w_format: wf,
            w: wb.view(dt, &[1, 1, k]),
            w_scale: wsb.view(DType::F32, &wf.scale_shape(1, 1, k)),
            group_end: ge.view(DType::I64, &[1]),
            row_scale: None,
            bias: None,
            y: yb.view_mut(DType::F32, &[1, 1]),
        };
        be.grouped_gemm_quant(a.validate().unwrap()).unwrap();
        be.download_vec::<f32>(&yb, 1).unwrap()[0]
    }
    type Case = (WeightFormat, Vec<u8>, f32, Vec<u8>, f32); // format, x, x_scale, w, w_scale
    let cases: &[Case] = &[
        // int8: sum 1 - 1 = 0 with scales 1e30 · 1e30 (inf in f32).
        (WeightFormat::Int8, vec![1, 0xFF], 1e30, vec![1, 1], 1e30),
        // int8: 64 · 127² with scales 1e-25 · 1e-25 (0 in f32): ~1.03e-44, an f32 subnormal.
        (WeightFormat::Int8, vec![127; 64], 1e-25, vec![127; 64], 1e-25),
        // fp8 x fp8: e4m3 1 and -1 against 1, 1: a zero block sum with scales 1e30 · 1e30.
        (WeightFormat::Fp8Block, vec![0x38, 0xB8], 1e30, vec![0x38, 0x38], 1e30),
        // fp8 x fp8: 448 · 448 · 64 with scales 1e-25 · 1e-25.
        (WeightFormat::Fp8Block, vec![0x7E; 64], 1e-25, vec![0x7E; 64], 1e-25),
    ];
    let want: Vec<f32> = cases
        .iter()
        .map(|(wf, x, xs, w, ws)| run(&Reference::new(), *wf, x, *xs, w, *ws))
        .collect();
    assert_eq!(want[0], 0.0);
    assert!(want[1] > 0.0 && want[3] > 0.0, "{want:?}");
    for be in backends() {
        for ((wf, x, xs, w, ws), &r) in cases.iter().zip(&want) {
            let y = run(&be, *wf, x, *xs, w, *ws);
            assert_eq!(
                y.to_bits(),
                r.to_bits(),
                "{} {wf}: cpu {y:e}, reference {r:e}",
                be.kern_name()
            );
        }
    }
}

/// The AMX-tile path of weight-only fp8_block / mxfp4 (bf16 x): on the emulated tile engine (any
/// machine) and on the hardware where present, against the reference within bf16's tolerance, the
/// two engines bit for bit alike; scales outside the exact range are refused (`Ok(false)`), and the
/// backend then still answers right through its f32 path.
#[test]
fn tile_path_of_weight_only_formats() {
    let pool = Pool::new(2).unwrap();
    let engines: Vec<TileEngine> = [Some(TileEngine::Emulated), Amx::get().map(TileEngine::Hardware)]
        .into_iter()
        .flatten()
        .collect();
    if engines.len() == 1 {
        println!("AMX unavailable ({:?}): emulated tile engine only", Amx::status());
    }
    let (n, k) = (48usize, 160usize);
    let groups: &[usize] = &[35, 0, 9];
    let m = groups.iter().sum::<usize>() + 1;
    let w8a8 = ActFormat::Fp8;
    let bf = ActFormat::Float(DType::BF16);
    for (wf, act) in [
        (WeightFormat::Mxfp4, bf),
        (WeightFormat::Fp8Block, bf),
        (WeightFormat::Fp8Block, w8a8),
    ] {
        // mxfp4 needs K % 32 == 0 (160 is); fp8's last K block is partial (160 = 128 + 32).
        for (extras, spoil) in [
            (false, None),
            (true, None),
            (false, Some(0usize)),
            (false, Some(1)),
            (false, Some(2)),
        ] {
            let mut inp = make(77, wf, act, DType::BF16, groups, n, k, extras);
            // Spoil one scale of group 2 (rows 35..44) with a value the tiles refuse.
            if let Some(which) = spoil {
                match wf {
                    WeightFormat::Mxfp4 => {
                        // Bytes 0 and 1 give subnormal weights (flushed by the tiles); 253..255
                        // overflow or are NaN, which the reference turns into inf/NaN outputs.
                        let at = (2 * n + 5 + which) * (k / 32) + 1;
                        inp.ws[at] = [0u8, 1, 0][which];
                    }
                    _ if act == w8a8 => {
                        // W8A8 takes scales in [2^-60, 2^60]: a weight scale of 2^61 (which weight-only
                        // takes), and activation scales of 2^-61 and 2^70.
                        if which == 0 {
                            let at = 2 * n.div_ceil(128) * k.div_ceil(128) + 1;
                            inp.ws[4 * at..4 * at + 4].copy_from_slice(&2f32.powi(61).to_le_bytes());
                        } else {
                            let xs = &mut inp.xs.as_mut().unwrap().0;
                            let at = 36 * k.div_ceil(128) + 1;
                            let v = [0.0, 2f32.powi(-61), 2f32.powi(70)][which];
                            xs[4 * at..4 * at + 4].copy_from_slice(&v.to_le_bytes());
                        }
                    }
                    _ => {
                        let (nb, kb) = (n.div_ceil(128), k.div_ceil(128));
                        let at = (2 * nb) * kb + 1;
                        let v = [2f32.powi(101), 2f32.powi(-120), 0.3e-35][which];
                        inp.ws[4 * at..4 * at + 4].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
            let want = run(&Reference, &inp, wf, DType::BF16, m, n, k);
            let xb: Vec<bf16> = if act == bf {
                bytemuck::pod_collect_to_vec(&inp.x)
            } else {
                Vec::new()
            };
            let xsf: Vec<f32> = inp
                .xs
                .as_ref()
                .map_or(Vec::new(), |(b, _, _)| bytemuck::pod_collect_to_vec(b));
            let qx = if act == bf {
                QAct::Float(&xb[..])
            } else {
                QAct::Fp8 {
                    x: &inp.x,
                    scale: Scales::F32(&xsf),
                }
            };
            let f32s: Vec<f32> = bytemuck::pod_collect_to_vec(&inp.ws);
            let w = match wf {
                WeightFormat::Mxfp4 => QWeights::Mxfp4 {
                    w: &inp.w,
                    scale: &inp.ws,
                },
                _ => QWeights::Fp8Block {
                    w: &inp.w,
                    scale: Scales::F32(&f32s),
                },
            };
            let bias: Option<Vec<bf16>> = inp.bias.as_ref().map(|b| bytemuck::pod_collect_to_vec(b));
            let a = QGemmArgs {
                x: qx,
                m,
                k,
                n,
                group_end: &inp.ge,
                w,
                row_scale: inp.rs.as_deref(),
                bias: bias.as_deref(),
            };
            let mut outs = Vec::new();
            for &eng in &engines {
                let mut y = vec![bf16::NAN; m * n];
                let took = grouped_gemm_q_tiles(eng, &pool, &a, &mut y).unwrap();
                assert_eq!(
                    took,
                    spoil.is_none(),
                    "{wf} x {} spoil {spoil:?}: tile path taken {took}",
                    act.name()
                );
                if !took {
                    continue;
                }
                if let Err(e) = check_rows(&y, &want, (m - 1) * n, tolerance(DType::BF16)) {
                    panic!("{wf} {eng:?} extras {extras}: {e}");
                }
                outs.push(y.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            if outs.len() == 2 {
                assert_eq!(outs[0], outs[1], "{wf}: emulated and hardware tiles differ");
            }
            // The backend's whole op (tiles where it has AMX, else its f32 path) answers right
            // whatever the scales.
            for be in backends() {
                let got = run(&be, &inp, wf, DType::BF16, m, n, k);
                let routed = (m - 1) * n;
                let rel = rel_error(&got[..routed], &want[..routed], |_| true);
                assert!(
                    rel.as_ref().is_ok_and(|&r| r <= tolerance(DType::BF16)),
                    "{} {wf} spoil {spoil:?}: rel {rel:?}",
                    be.kern_name()
                );
            }
        }
    }
}

/// W8A8 int8 on AMX tiles with the NK weights read in place (`grouped_gemm_q_tiles`, emulated engine
/// everywhere, hardware where present) gives bitwise the output of the scalar int8 kernel table (exact
/// i32 sums, the same f64 scale product and epilogue): K multiple of 64 and not, a partial column
/// block, empty experts, one-row experts beside large ones, bias and row_scale, f32 and bf16 y.
#[test]
fn int8_tile_path_is_bitwise_the_other_int8_kernels() {
    let pool = Pool::new(2).unwrap();
    let scalar = Kernels::for_isa(Isa::Scalar).expect("the scalar table exists everywhere");
    let engines: Vec<TileEngine> = [Some(TileEngine::Emulated), Amx::get().map(TileEngine::Hardware)]
        .into_iter()
        .flatten()
        .collect();
    for (k, n, groups) in [
        (200usize, 70usize, &[35usize, 0, 9, 1][..]),
        (128, 32, &[40, 7][..]),
        (64, 5, &[9][..]),
    ] {
        let m = groups.iter().sum::<usize>() + 1;
        for y in [DType::F32, DType::BF16] {
            for extras in [false, true] {
                let inp = make(91, WeightFormat::Int8, ActFormat::Int8, y, groups, n, k, extras);
                let x: Vec<i8> = bytemuck::pod_collect_to_vec(&inp.x);
                let xs: Vec<f32> = bytemuck::pod_collect_to_vec(&inp.xs.as_ref().unwrap().0);
                let w: Vec<i8> = bytemuck::pod_collect_to_vec(&inp.w);
                let ws: Vec<f32> = bytemuck::pod_collect_to_vec(&inp.ws);
                macro_rules! check {
                    ($t:ty, $nan:expr) => {{
                        let bias: Option<Vec<$t>> = inp.bias.as_ref().map(|b| bytemuck::pod_collect_to_vec(b));
                        let a = QGemmArgs {
                            x: QAct::Int8 { x: &x, scale: &xs },
                            m,
                            k,
                            n,
                            group_end: &inp.ge,
                            w: QWeights::Int8 { w: &w, scale: &ws },
                            row_scale: inp.rs.as_deref(),
                            bias: bias.as_deref(),
                        };
                        let mut want = vec![$nan; m * n];
                        grouped_gemm_q(scalar, &pool, &a, &mut want).unwrap();
                        for &eng in &engines {
                            let mut got = vec![$nan; m * n];
                            assert!(grouped_gemm_q_tiles(eng, &pool, &a, &mut got).unwrap());
                            let (gb, wb): (Vec<u64>, Vec<u64>) = (
                                got.iter().map(|&v| f64::from(v).to_bits()).collect(),
                                want.iter().map(|&v| f64::from(v).to_bits()).collect(),
                            );
                            assert_eq!(gb, wb, "{eng:?} k {k} n {n} y {y} extras {extras}");
                            assert!(
                                got[(m - 1) * n..].iter().all(|&v| f64::from(v).is_nan()),
                                "guard row written"
                            );
                        }
                    }};
                }
                match y {
                    DType::F32 => check!(f32, f32::NAN),
                    _ => check!(bf16, bf16::NAN),
                }
            }
        }
    }
}
