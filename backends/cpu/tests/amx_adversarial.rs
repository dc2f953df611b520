//! Adversarial checks of the AMX-tile paths of the CPU backend (bf16 tiles for weight-only
//! `fp8_block` / `mxfp4` and W8A8 `fp8_block`, OPS.md §6): odd shapes, special values and scale
//! extremes against the reference; the AVX-512 helpers against their scalar definitions on every
//! code; packed = unpacked, thread counts, tile engines and runs bitwise alike. Where this machine
//! has no AMX the checks still run (they then exercise the f32 path and the emulated tile engine).

use half::{bf16, f16};
use moehal_core::ops::{ActFormat, GroupedGemmQ, WeightFormat};
use moehal_core::quant::{e2m1_to_f32, e4m3_to_f32, e8m0_to_f32, f32_to_e4m3, pack_nibbles};
use moehal_core::{Backend, BackendExt, Buffer, DType, Reference};
use moehal_cpu::quant::{grouped_gemm_q, grouped_gemm_q_tiles, PackedQWeights, QAct, QGemmArgs, QWeights, Scales};
use moehal_cpu::simd::amx::{e4m3_to_bf16_bits, mxfp4_row_scalar, Amx, TileEngine};
use moehal_cpu::{CpuBackend, Isa, Kernels, Pool};
use moehal_testkit::check_rows;
use moehal_testkit::quant::gemm_tolerance;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One quantized call: x is bf16 bits (weight-only) or e4m3 codes (W8A8, with `xs`).
#[derive(Clone)]
struct Case {
    wf: WeightFormat,
    y: DType,
    groups: Vec<usize>,
    /// Rows past the routed ones (must stay untouched).
    guard: usize,
    n: usize,
    k: usize,
    /// bf16 x (weight-only).
    xb: Vec<bf16>,
    /// e4m3 x codes and their scales (W8A8): f32 values or E8M0 bytes.
    x8: Vec<u8>,
    xs: Option<Sc>,
    w: Vec<u8>,
    ws: Sc,
    bias: Option<Vec<f32>>,
    rs: Option<Vec<f32>>,
}

#[derive(Clone)]
enum Sc {
    F32(Vec<f32>),
    E8(Vec<u8>),
}

impl Sc {
    fn view(&self) -> Scales<'_> {
        match self {
            Sc::F32(v) => Scales::F32(v),
            Sc::E8(v) => Scales::E8m0(v),
        }
    }
    fn bytes(&self) -> (Vec<u8>, DType) {
        match self {
            Sc::F32(v) => (bytemuck::cast_slice(v).to_vec(), DType::F32),
            Sc::E8(v) => (v.clone(), DType::U8),
        }
    }
}

impl Case {
    fn m(&self) -> usize {
        self.used() + self.guard
    }
    fn used(&self) -> usize {
        self.groups.iter().sum()
    }
    fn w8a8(&self) -> bool {
        self.xs.is_some()
    }
    fn ge(&self) -> Vec<i64> {
        self.groups
            .iter()
            .scan(0i64, |a, &c| {
                *a += c as i64;
                Some(*a)
            })
            .collect()
    }
    /// Index of the f32/E8M0 weight scale of (group, column, k).
    fn ws_at(&self, g: usize, col: usize, kk: usize) -> usize {
        match self.wf {
            WeightFormat::Mxfp4 => (g * self.n + col) * (self.k / 32) + kk / 32,
            _ => (g * self.n.div_ceil(128) + col / 128) * self.k.div_ceil(128) + kk / 128,
        }
    }
}

/// Random inputs of the kind tests/quant.rs uses (moderate magnitudes, no specials).
fn make(seed: u64, wf: WeightFormat, w8a8: bool, y: DType, groups: &[usize], n: usize, k: usize, extras: bool) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g = groups.len();
    let guard = 2;
    let m = groups.iter().sum::<usize>() + guard;
    let kb = k.div_ceil(128);
    let xb = if w8a8 {
        Vec::new()
    } else {
        (0..m * k)
            .map(|_| bf16::from_f32(rng.gen_range(-1.0f32..1.0)))
            .collect()
    };
    let (x8, xs) = if w8a8 {
        (
            (0..m * k)
                .map(|_| f32_to_e4m3(rng.gen_range(-448.0f32..448.0)))
                .collect(),
            Some(Sc::F32((0..m * kb).map(|_| rng.gen_range(0.001f32..0.01)).collect())),
        )
    } else {
        (Vec::new(), None)
    };
    let ns: usize = wf.scale_shape(g, n, k).iter().product();
    let amp = 1.0 / (k as f32).sqrt();
    let (w, ws) = match wf {
        WeightFormat::Mxfp4 => (
            pack_nibbles(&(0..g * n * k).map(|_| rng.gen_range(0u8..16)).collect::<Vec<_>>()),
            Sc::E8((0..ns).map(|_| rng.gen_range(118u8..124)).collect()),
        ),
        _ => (
            (0..g * n * k)
                .map(|_| f32_to_e4m3(rng.gen_range(-448.0f32..448.0)))
                .collect(),
            Sc::F32((0..ns).map(|_| rng.gen_range(0.5f32..1.5) * amp / 256.0).collect()),
        ),
    };
    let bias = extras.then(|| (0..g * n).map(|_| rng.gen_range(-0.5f32..0.5)).collect());
    let rs = extras.then(|| (0..m).map(|_| rng.gen_range(-1.0f32..1.0)).collect());
    Case {
        wf,
        y,
        groups: groups.to_vec(),
        guard,
        n,
        k,
        xb,
        x8,
        xs,
        w,
        ws,
        bias,
        rs,
    }
}

/// Bias values as the bytes of `y`'s dtype (what the op takes), rounded once.
fn bias_bytes(c: &Case) -> Option<Vec<u8>> {
    c.bias.as_ref().map(|b| match c.y {
        DType::F32 => bytemuck::cast_slice(b).to_vec(),
        DType::F16 => bytemuck::cast_slice(&b.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>()).to_vec(),
        _ => bytemuck::cast_slice(&b.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>()).to_vec(),
    })
}

/// The whole op on `be`; y widened to f64 (guard rows poisoned with all-ones bytes, i.e. NaN).
fn run_be(be: &dyn Backend, c: &Case) -> Vec<f64> {
    let (m, n, k, g) = (c.m(), c.n, c.k, c.groups.len());
    let up = |b: &[u8]| -> Buffer {
        let mut buf = be.alloc(b.len().max(1)).unwrap();
        be.upload(&mut buf, 0, b).unwrap();
        buf
    };
    let (xbytes, xdt): (Vec<u8>, DType) = if c.w8a8() {
        (c.x8.clone(), DType::U8)
    } else {
        (bytemuck::cast_slice(&c.xb).to_vec(), DType::BF16)
    };
    let x = up(&xbytes);
    let xs = c.xs.as_ref().map(|s| s.bytes());
    let xsb = xs.as_ref().map(|(b, _)| up(b));
    let (wsb, wsdt) = c.ws.bytes();
    let (w, ws) = (up(&c.w), up(&wsb));
    let ge = be.upload_slice(&c.ge()).unwrap();
    let bias = bias_bytes(c).map(|b| up(&b));
    let rs = c.rs.as_ref().map(|r| be.upload_slice(r).unwrap());
    let mut yb = up(&vec![0xFF; m * n * c.y.size()]);
    let kb = k.div_ceil(128);
    let args = GroupedGemmQ {
        x: x.view(xdt, &[m, k]),
        x_scale: xsb.as_ref().zip(xs.as_ref()).map(|(b, (_, d))| b.view(*d, &[m, kb])),
        w_format: c.wf,
        w: w.view(c.wf.dtype(), &c.wf.w_shape(g, n, k)),
        w_scale: ws.view(wsdt, &c.wf.scale_shape(g, n, k)),
        group_end: ge.view(DType::I64, &[g]),
        row_scale: rs.as_ref().map(|b| b.view(DType::F32, &[m])),
        bias: bias.as_ref().map(|b| b.view(c.y, &[g, n])),
        y: yb.view_mut(c.y, &[m, n]),
    };
    be.grouped_gemm_quant(args.validate().unwrap()).unwrap();
    match c.y {
        DType::F32 => be
            .download_vec::<f32>(&yb, m * n)
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect(),
        DType::F16 => be
            .download_vec::<f16>(&yb, m * n)
            .unwrap()
            .iter()
            .map(|v| v.to_f64())
            .collect(),
        _ => be
            .download_vec::<bf16>(&yb, m * n)
            .unwrap()
            .iter()
            .map(|v| v.to_f64())
            .collect(),
    }
}

/// How the raw API gets the weights.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Path {
    /// `grouped_gemm_q` with this kernel table, unpacked or packed weights.
    Op { isa: Isa, packed: bool, threads: usize },
    /// `grouped_gemm_q_tiles` on this engine (None: the call refused the tiles).
    Tiles(Engine),
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Engine {
    Emulated,
    Hardware,
}

/// The raw API with bf16 y; the output as bf16 bits (guard rows poisoned with 0xFFFF).
/// `None` when the tile engine refused the call (or the ISA / engine is absent).
fn run_raw(c: &Case, path: Path) -> Option<Vec<u16>> {
    assert_eq!(c.y, DType::BF16);
    let (m, n, k, g) = (c.m(), c.n, c.k, c.groups.len());
    let ge = c.ge();
    let bias: Option<Vec<bf16>> = c.bias.as_ref().map(|b| b.iter().map(|&v| bf16::from_f32(v)).collect());
    let x = match &c.xs {
        Some(xs) => QAct::Fp8 {
            x: &c.x8,
            scale: xs.view(),
        },
        None => QAct::Float(&c.xb[..]),
    };
    let raw = match c.wf {
        WeightFormat::Mxfp4 => {
            let Sc::E8(s) = &c.ws else {
                panic!("mxfp4 scales are E8M0")
            };
            QWeights::Mxfp4 { w: &c.w, scale: s }
        }
        _ => QWeights::Fp8Block {
            w: &c.w,
            scale: c.ws.view(),
        },
    };
    let mut y = vec![bf16::from_bits(0xFFFF); m * n];
    match path {
        Path::Op { isa, packed, threads } => {
            let kern = Kernels::for_isa(isa)?;
            let pool = Pool::new(threads).unwrap();
            let pw;
            let w = if packed {
                pw = PackedQWeights::pack(&pool, raw, g, n, k).unwrap();
                pw.weights()
            } else {
                raw
            };
            let a = QGemmArgs {
                x,
                m,
                k,
                n,
                group_end: &ge,
                w,
                row_scale: c.rs.as_deref(),
                bias: bias.as_deref(),
            };
            grouped_gemm_q(kern, &pool, &a, &mut y).unwrap();
        }
        Path::Tiles(e) => {
            let engine = match e {
                Engine::Emulated => TileEngine::Emulated,
                Engine::Hardware => TileEngine::Hardware(Amx::get()?),
            };
            let pool = Pool::new(2).unwrap();
            let a = QGemmArgs {
                x,
                m,
                k,
                n,
                group_end: &ge,
                w: raw,
                row_scale: c.rs.as_deref(),
                bias: bias.as_deref(),
            };
            if !grouped_gemm_q_tiles(engine, &pool, &a, &mut y).unwrap() {
                return None;
            }
        }
    }
    Some(y.iter().map(|v| v.to_bits()).collect())
}

/// OPS.md §6's bound, the test kit's: the output dtype's, at least 1e-3 with fp8 activations.
fn tol(c: &Case) -> f64 {
    let x = if c.w8a8() {
        ActFormat::Fp8
    } else {
        ActFormat::Float(DType::BF16)
    };
    gemm_tolerance(x, c.y)
}

/// OPS.md's conformance, the test kit's rule ([`check_rows`]): guard rows untouched (still the NaN
/// poison), NaN and infinities only where the reference has them, relative error within `tol`.
fn conforms(got: &[f64], want: &[f64], c: &Case, what: &str) -> Result<(), String> {
    check_rows(got, want, c.used() * c.n, tol(c))
        .map(|_| ())
        .map_err(|e| format!("{what}: {e}"))
}

fn cpu_backends() -> Vec<(String, CpuBackend)> {
    [Isa::Amx, Isa::Avx512, Isa::Avx2, Isa::Scalar]
        .into_iter()
        .filter_map(|i| CpuBackend::with_isa(i).ok().map(|b| (format!("{i:?}"), b)))
        .collect()
}

/// Every backend table against the reference, and on the raw API: packed = unpacked, one thread =
/// two threads, run = rerun, emulated tiles = hardware tiles, bit for bit.
/// Returns whether the hardware tile engine took the call.
fn check_case(c: &Case, what: &str) -> bool {
    let want = run_be(&Reference, c);
    for (name, be) in cpu_backends() {
        let got = run_be(&be, c);
        conforms(&got, &want, c, &format!("{what} [{name}]")).unwrap();
        let again = run_be(&be, c);
        assert!(
            got.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{what} [{name}]: run-to-run difference"
        );
    }
    if c.y != DType::BF16 {
        return false;
    }
    for isa in [Isa::Amx, Isa::Avx512] {
        let base = run_raw(
            c,
            Path::Op {
                isa,
                packed: false,
                threads: 2,
            },
        );
        let Some(base) = base else { continue };
        for (packed, threads) in [(true, 2), (false, 1), (true, 1)] {
            let other = run_raw(c, Path::Op { isa, packed, threads }).unwrap();
            assert!(
                base == other,
                "{what}: {isa:?} unpacked/2 threads vs packed {packed}/{threads} threads differ"
            );
        }
    }
    let emu = run_raw(c, Path::Tiles(Engine::Emulated));
    let hw = run_raw(c, Path::Tiles(Engine::Hardware));
    if let Some(e) = &emu {
        let got: Vec<f64> = e.iter().map(|&b| bf16::from_bits(b).to_f64()).collect();
        conforms(&got, &want, c, &format!("{what} [emulated tiles]")).unwrap();
    }
    if let (Some(e), Some(h)) = (&emu, &hw) {
        assert!(e == h, "{what}: emulated and hardware tiles differ");
    }
    // Where the backend took the tiles, it gives the tiles' bits.
    if let (Some(h), Some(op)) = (
        &hw,
        run_raw(
            c,
            Path::Op {
                isa: Isa::Amx,
                packed: false,
                threads: 2,
            },
        ),
    ) {
        let ge = c.ge();
        let mut big = ge.iter().scan(0i64, |p, &e| {
            let r = e - *p;
            *p = e;
            Some(r)
        });
        if big.any(|r| r > 6) {
            assert!(*h == op, "{what}: the AMX backend took tiles but gave other bits");
        }
    }
    hw.is_some()
}

/// The AVX-512 decoders against their scalar definitions on every input: all 256 e4m3 codes at every
/// position of a 32-lane vector and in the scalar tail, and all 16 nibbles × 256 E8M0 bytes; the
/// scalar definitions against the f32 values of OPS.md §6.
#[test]
fn decoders_match_scalar_definitions_on_every_code() {
    // Scalar definitions first (every machine).
    for b in 0..=255u8 {
        let v = e4m3_to_f32(b);
        let h = e4m3_to_bf16_bits(b);
        if v.is_nan() {
            assert!(bf16::from_bits(h).is_nan(), "code {b:#x}");
            assert_eq!(h >> 15, (b >> 7) as u16, "NaN sign of {b:#x}");
        } else {
            assert_eq!(
                bf16::from_bits(h).to_f32().to_bits(),
                v.to_bits(),
                "code {b:#x} not exact"
            );
        }
    }
    for e in 0..=255u8 {
        let bytes: Vec<u8> = (0..16u8).map(|i| i | (15 - i) << 4).collect();
        let mut d = vec![0xAAAAu16; 32];
        let ok = mxfp4_row_scalar(&bytes, &[e], &mut d);
        assert_eq!(ok, (2..=252).contains(&e), "scale byte {e}");
        if ok {
            for (kk, &h) in d.iter().enumerate() {
                let code = if kk % 2 == 0 {
                    bytes[kk / 2] & 15
                } else {
                    bytes[kk / 2] >> 4
                };
                let want = e2m1_to_f32(code) * e8m0_to_f32(e);
                assert_eq!(
                    bf16::from_bits(h).to_f32().to_bits(),
                    want.to_bits(),
                    "nibble {code} scale {e}"
                );
            }
        }
    }
    let Some(amx) = Amx::get() else {
        println!("AMX unavailable ({:?}): scalar definitions only", Amx::status());
        return;
    };
    // e4m3: rows of several lengths (vector body + tail), every code at every lane.
    for len in [1usize, 31, 32, 33, 64, 256, 263] {
        for rot in 0..32usize {
            let codes: Vec<u8> = (0..len).map(|i| ((i + rot * 7) % 256) as u8).collect();
            let mut got = vec![0x5555u16; len];
            amx.dequant_fp8_row(&codes, &mut got);
            let want: Vec<u16> = codes.iter().map(|&c| e4m3_to_bf16_bits(c)).collect();
            assert_eq!(got, want, "len {len} rot {rot}");
        }
    }
    // mxfp4: every (nibble, scale byte), each nibble at every position of a 32-value block.
    for e in 0..=255u8 {
        for rot in 0..16u8 {
            let bytes: Vec<u8> = (0..32u8)
                .map(|i| ((i + rot) & 15) | ((i * 3 + rot) & 15) << 4)
                .collect();
            let scales = &[e, 2u8][..];
            let mut got = vec![0x5555u16; 64];
            let mut want = vec![0x5555u16; 64];
            let okg = amx.dequant_mxfp4_row(&bytes, scales, &mut got);
            let okw = mxfp4_row_scalar(&bytes, scales, &mut want);
            assert_eq!(okg, okw, "scale {e}");
            if okg {
                assert_eq!(got, want, "scale byte {e} rot {rot}");
            }
        }
    }
}

/// Odd shapes: K not a multiple of 32 / 128, K = 32 for mxfp4, N below 16 and not a multiple of 32,
/// one-row experts beside big ones, runs of empty experts, guard rows; bias and a row scale with
/// negatives and zeros.
#[test]
fn odd_shapes_match_reference() {
    type Shape = (&'static [usize], usize, usize);
    let fp8_shapes: &[Shape] = &[
        (&[1, 9, 0, 1], 5, 33),
        (&[7], 1, 1),
        (&[0, 0, 0, 7, 0, 0, 0, 0], 15, 100),
        (&[1, 1, 1, 1, 1, 1, 1, 12], 17, 129),
        (&[33, 1, 0, 2], 130, 200),
        (&[40, 0], 33, 287),
        (&[8, 0, 0], 48, 256),
    ];
    let mx_shapes: &[Shape] = &[
        (&[1, 9, 0, 1], 5, 32),
        (&[7], 1, 32),
        (&[0, 0, 0, 7, 0, 0, 0, 0], 17, 32),
        (&[33, 1, 0, 2], 130, 96),
        (&[40, 0], 33, 160),
    ];
    let mut seed = 0xA3_0000u64;
    let mut took = 0;
    for &(groups, n, k) in fp8_shapes {
        for extras in [false, true] {
            seed += 1;
            for (w8a8, y) in [
                (false, DType::BF16),
                (true, DType::BF16),
                (true, DType::F32),
                (true, DType::F16),
            ] {
                let mut c = make(seed, WeightFormat::Fp8Block, w8a8, y, groups, n, k, extras);
                if let Some(rs) = &mut c.rs {
                    rs[0] = 0.0;
                    rs[1] = -0.0;
                }
                took += check_case(
                    &c,
                    &format!("fp8 w8a8 {w8a8} y {y} {groups:?} n {n} k {k} extras {extras} seed {seed}"),
                ) as usize;
            }
        }
    }
    for &(groups, n, k) in mx_shapes {
        for extras in [false, true] {
            seed += 1;
            let c = make(seed, WeightFormat::Mxfp4, false, DType::BF16, groups, n, k, extras);
            took += check_case(&c, &format!("mxfp4 {groups:?} n {n} k {k} extras {extras} seed {seed}")) as usize;
        }
    }
    // Every bf16-y case here has scales the tiles hold: where AMX runs, the tiles took them all.
    if Amx::get().is_some() {
        assert_eq!(
            took,
            2 * fp8_shapes.len() * 2 + 2 * mx_shapes.len(),
            "tile path not taken"
        );
    }
}

/// Special values a caller can pass: NaN / ±inf in x, e4m3 NaN codes in weights and x, E8M0 bytes
/// 0/1/2/252/253/254/255, f32 scales 0 / negative / subnormal / huge / NaN / inf, extreme activation
/// scales, NaN / zero / negative row scales. Each spoils one place of an otherwise random call whose
/// big expert takes the tile path.
#[test]
fn special_values_match_reference() {
    let groups: &[usize] = &[9, 1, 0, 12];
    let (n, k) = (40usize, 160usize);
    let mut cases: Vec<(String, Case)> = Vec::new();
    // Weight-only fp8 and mxfp4 with bf16 x.
    for wf in [WeightFormat::Fp8Block, WeightFormat::Mxfp4] {
        let base = make(0xB0 + wf as u64, wf, false, DType::BF16, groups, n, k, true);
        for (name, v) in [("nan", f32::NAN), ("inf", f32::INFINITY), ("-inf", f32::NEG_INFINITY)] {
            let mut c = base.clone();
            c.xb[2 * k + 5] = bf16::from_f32(v);
            c.xb[12 * k] = bf16::from_f32(v);
            cases.push((format!("{:?} x {name}", wf), c));
        }
        let mut c = base.clone();
        let rs = c.rs.as_mut().unwrap();
        rs[3] = f32::NAN;
        rs[4] = 0.0;
        rs[11] = -2.5;
        cases.push((format!("{wf:?} row_scale nan/0/neg"), c));
    }
    // fp8 weight codes 0x7f / 0xff (NaN) in the big experts.
    for w8a8 in [false, true] {
        let mut c = make(0xC0, WeightFormat::Fp8Block, w8a8, DType::BF16, groups, n, k, true);
        c.w[(3 * k) + 7] = 0x7f;
        c.w[(3 * n + 20) * k + 140] = 0xff;
        cases.push((format!("fp8 w8a8 {w8a8} weight NaN codes"), c));
    }
    // fp8 weight f32 scales.
    for (name, v) in [
        ("0", 0.0f32),
        ("-0", -0.0),
        ("negative", -0.01),
        ("subnormal", 1e-40),
        ("2^-117", 2f32.powi(-117)),
        ("2^-118", 2f32.powi(-118)),
        ("2^100", 2f32.powi(100)),
        ("2^101", 2f32.powi(101)),
        ("huge", 3e38),
        ("nan", f32::NAN),
        ("inf", f32::INFINITY),
    ] {
        for w8a8 in [false, true] {
            let mut c = make(0xD0, WeightFormat::Fp8Block, w8a8, DType::BF16, groups, n, k, false);
            let at = c.ws_at(3, 0, 128);
            let Sc::F32(s) = &mut c.ws else { unreachable!() };
            s[at] = v;
            cases.push((format!("fp8 w8a8 {w8a8} w_scale {name}"), c));
        }
    }
    // fp8 E8M0 weight scales and mxfp4 scale bytes.
    for byte in [0u8, 1, 2, 67, 187, 227, 228, 252, 253, 254, 255] {
        for w8a8 in [false, true] {
            let mut c = make(0xE0, WeightFormat::Fp8Block, w8a8, DType::BF16, groups, n, k, false);
            let Sc::F32(s) = &c.ws else { unreachable!() };
            // E8M0 near the random f32 scales (2^-12 or so), with one block spoilt.
            let mut e: Vec<u8> = s.iter().map(|&v| (v.log2().round() as i32 + 127) as u8).collect();
            e[c.ws_at(3, 0, 0)] = byte;
            c.ws = Sc::E8(e);
            cases.push((format!("fp8 w8a8 {w8a8} E8M0 w_scale byte {byte}"), c));
        }
        let mut c = make(0xE1, WeightFormat::Mxfp4, false, DType::BF16, groups, n, k, false);
        let at = c.ws_at(3, 2, 64);
        // One weight of 0.5 in the spoilt block, so that 2^125..2^127 scales do not take f32
        // accumulation past f32's range (which any f32-accumulating device may do).
        let row = (3 * n + 2) * k / 2 + 64 / 2;
        c.w[row..row + 16].fill(0);
        c.w[row] = 0x01;
        let Sc::E8(s) = &mut c.ws else { unreachable!() };
        s[at] = byte;
        cases.push((format!("mxfp4 scale byte {byte}"), c));
    }
    // W8A8: x NaN codes, activation scales at and past the tiles' range, E8M0 activation scales.
    {
        let mut c = make(0xF0, WeightFormat::Fp8Block, true, DType::BF16, groups, n, k, true);
        c.x8[2 * k + 3] = 0x7f;
        c.x8[12 * k + 150] = 0xff;
        cases.push(("w8a8 x NaN codes".into(), c));
        for (name, v) in [
            ("0", 0.0f32),
            ("2^-60", 2f32.powi(-60)),
            ("2^-61", 2f32.powi(-61)),
            ("2^60", 2f32.powi(60)),
            ("2^61", 2f32.powi(61)),
            ("subnormal", 1e-42),
            ("nan", f32::NAN),
            ("-inf", f32::NEG_INFINITY),
            ("negative", -0.004),
        ] {
            let mut c = make(0xF1, WeightFormat::Fp8Block, true, DType::BF16, groups, n, k, false);
            let Some(Sc::F32(xs)) = &mut c.xs else { unreachable!() };
            xs[12 * 2 + 1] = v;
            cases.push((format!("w8a8 x_scale {name}"), c));
        }
        for byte in [0u8, 1, 67, 66, 187, 188, 254, 255] {
            for y in [DType::BF16, DType::F32] {
                let mut c = make(0xF2, WeightFormat::Fp8Block, true, y, groups, n, k, false);
                let Some(Sc::F32(xs)) = &c.xs else { unreachable!() };
                let mut e: Vec<u8> = xs.iter().map(|&v| (v.log2().round() as i32 + 127) as u8).collect();
                e[12 * 2] = byte;
                c.xs = Some(Sc::E8(e));
                cases.push((format!("w8a8 E8M0 x_scale byte {byte} y {y}"), c));
            }
        }
    }
    // Rows past group_end are not read: NaN / inf / NaN codes and a NaN activation scale there change
    // nothing (and the tiles still run where the rows before them allow).
    for (wf, w8a8) in [
        (WeightFormat::Fp8Block, false),
        (WeightFormat::Mxfp4, false),
        (WeightFormat::Fp8Block, true),
    ] {
        let mut c = make(0x6A, wf, w8a8, DType::BF16, groups, n, k, true);
        let used = c.used();
        if w8a8 {
            c.x8[used * k..].fill(0x7f);
            let Some(Sc::F32(xs)) = &mut c.xs else { unreachable!() };
            xs[used * 2..].fill(f32::NAN);
        } else {
            c.xb[used * k..].fill(bf16::NAN);
            c.xb[(used + 1) * k] = bf16::INFINITY;
        }
        c.rs.as_mut().unwrap()[used..].fill(f32::NAN);
        cases.push((format!("{wf:?} w8a8 {w8a8} poisoned guard rows of x"), c));
    }
    // K = 0 for fp8 (mxfp4 needs K % 32 == 0, and 0 is): y = row_scale · bias.
    for wf in [WeightFormat::Fp8Block, WeightFormat::Mxfp4] {
        for w8a8 in [false, true] {
            if w8a8 && wf == WeightFormat::Mxfp4 {
                continue;
            }
            let c = make(0x6B, wf, w8a8, DType::BF16, groups, n, 0, true);
            cases.push((format!("{wf:?} w8a8 {w8a8} K = 0"), c));
        }
    }
    let mut took = 0;
    for (what, c) in &cases {
        took += check_case(c, what) as usize;
    }
    println!("{} cases, {took} on the hardware tiles", cases.len());
}

/// A weight-only fp8 call of one big expert (8 rows, so the tiles run) whose x rows are all `xv`
/// and whose weight codes are all `code` with the f32 block scale `s`.
fn uniform_fp8(xv: f32, code: u8, s: f32) -> Case {
    let (groups, n, k) = (vec![8usize], 32usize, 128usize);
    let m = 8 + 1;
    Case {
        wf: WeightFormat::Fp8Block,
        y: DType::BF16,
        groups,
        guard: 1,
        n,
        k,
        xb: vec![bf16::from_f32(xv); m * k],
        x8: Vec::new(),
        xs: None,
        w: vec![code; n * k],
        ws: Sc::F32(vec![s]),
        bias: None,
        rs: None,
    }
}

/// OPS.md §6 lets the tiles scale fp8 block partial sums only "where this differs from the definition
/// only by rounding", and takes that to hold whenever the scale is 0 or in [2^-117, 2^100]. It does
/// not: the partial sum `Σ x·code` is formed before the scale, so a large bf16 activation overflows
/// it where `x · (code · s)` is finite. Reproducer: x = 2^120 everywhere, code 0x7e (448), scale
/// 2^-20, K = 128, 8 rows: the reference gives 128·2^120·448·2^-20 ≈ 2^115.8 per output; the tiles
/// gave +inf (and NaN with scale 0, where the reference gives 0). Fixed: such activations take the f32
/// path (`tile_x_ok`), and OPS.md §6 now states the activation range too.
#[test]
fn huge_activation_with_small_fp8_scale() {
    for (xv, s) in [(2f32.powi(120), 2f32.powi(-20)), (2f32.powi(125), 0.0)] {
        let c = uniform_fp8(xv, 0x7e, s);
        let want = run_be(&Reference, &c);
        assert!(want[..8 * 32].iter().all(|v| v.is_finite()), "reference finite");
        for (name, be) in cpu_backends() {
            let got = run_be(&be, &c);
            conforms(&got, &want, &c, &format!("x {xv:e} scale {s:e} [{name}]")).unwrap();
        }
    }
}

/// The other side of the same rule: `x · code` is flushed to zero by the tiles when it is below
/// 2^-126 although `x · code · s` is a normal number. Reproducer: x = 2^-120, code 0x01 (2^-9), scale
/// 2^100, K = 128: the reference gives 128·2^-29 = 2^-22 per output, the tiles gave 0 (fixed as
/// above).
#[test]
fn tiny_activation_with_large_fp8_scale() {
    let c = uniform_fp8(2f32.powi(-120), 0x01, 2f32.powi(100));
    let want = run_be(&Reference, &c);
    assert!(want[0] > 0.0, "reference {}", want[0]);
    for (name, be) in cpu_backends() {
        let got = run_be(&be, &c);
        conforms(&got, &want, &c, &format!("tiny x [{name}]")).unwrap();
    }
}

/// bf16 subnormal activations (|x| < 2^-126): the reference multiplies them exactly; `tdpbf16ps`
/// treats them as zero. With an mxfp4 scale of 2^125 (byte 252, inside the tiles' range) the
/// products are normal: x = 2^-130, w = 6 · 2^125, K = 32 gives 32 · 6 · 2^-5 = 6 per output on the
/// reference and 0 on the tiles (fixed: subnormal activations take the f32 path).
#[test]
fn subnormal_activation_with_large_mxfp4_scale() {
    let (n, k) = (16usize, 32usize);
    let c = Case {
        wf: WeightFormat::Mxfp4,
        y: DType::BF16,
        groups: vec![8],
        guard: 1,
        n,
        k,
        xb: vec![bf16::from_f32(2f32.powi(-130)); 9 * k],
        x8: Vec::new(),
        xs: None,
        w: vec![0x77; n * k / 2],
        ws: Sc::E8(vec![252; n * k / 32]),
        bias: None,
        rs: None,
    };
    let want = run_be(&Reference, &c);
    assert!((want[0] - 6.0).abs() < 0.1, "reference {}", want[0]);
    for (name, be) in cpu_backends() {
        let got = run_be(&be, &c);
        conforms(&got, &want, &c, &format!("subnormal x [{name}]")).unwrap();
    }
}

/// The bf16 `grouped_gemm` on AMX tiles with the new AVX-512 epilogue and staging: hardware and
/// emulated engines (scalar epilogue, scalar staging) bit for bit, on every layout, with special
/// values in x, bias and row_scale (NaN with a full payload, -0, negatives, inf), N below 16 and not
/// a multiple of 32, odd K, one-row groups beside big ones, empty groups and guard rows.
#[test]
fn bf16_tiles_epilogue_specials_match_emulation() {
    use moehal_cpu::grouped_gemm::{grouped_gemm_tiles, GemmArgs, Layout, PackedWeights, Weights};
    let Some(hw) = Amx::get() else {
        println!("AMX unavailable ({:?}): nothing to compare", Amx::status());
        return;
    };
    let pool = Pool::new(2).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0xBF16);
    for &(groups, n, k) in &[
        (&[1usize, 9, 0, 1][..], 5usize, 33usize),
        (&[0, 0, 17, 0, 1], 15, 1),
        (&[40, 1, 0, 33], 70, 96),
        (&[7], 33, 130),
    ] {
        let g = groups.len();
        let used: usize = groups.iter().sum();
        let m = used + 3;
        let ge: Vec<i64> = groups
            .iter()
            .scan(0i64, |a, &c| {
                *a += c as i64;
                Some(*a)
            })
            .collect();
        let mut x: Vec<bf16> = (0..m * k)
            .map(|_| bf16::from_f32(rng.gen_range(-8..=8) as f32 / 8.0))
            .collect();
        let w: Vec<bf16> = (0..g * n * k)
            .map(|_| bf16::from_f32(rng.gen_range(-1.0..1.0)))
            .collect();
        let mut rs: Vec<f32> = (0..m).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let mut bias: Vec<bf16> = (0..g * n).map(|_| bf16::from_f32(rng.gen_range(-1.0..1.0))).collect();
        x[0] = bf16::NAN;
        x[(used - 1) * k] = bf16::INFINITY;
        rs[1 % used] = f32::from_bits(0x7fff_ffff);
        rs[2 % used] = f32::from_bits(0xff80_0001);
        rs[3 % used] = -0.0;
        rs[4 % used] = 3e38;
        bias[n - 1] = bf16::NEG_INFINITY;
        for lay in [Layout::NK, Layout::KN] {
            let packed = PackedWeights::new(&pool, &w, lay, g, n, k).unwrap();
            for wts in [Weights::Raw(&w, lay), Weights::Packed(&packed)] {
                for (rs_o, b_o) in [(None, None), (Some(&rs[..]), Some(&bias[..]))] {
                    let args = GemmArgs {
                        x: &x,
                        m,
                        k,
                        n,
                        group_end: &ge,
                        w: wts,
                        row_scale: rs_o,
                        bias: b_o,
                    };
                    let mut ye = vec![bf16::from_bits(0xFFFF); m * n];
                    let mut yh = ye.clone();
                    grouped_gemm_tiles(TileEngine::Emulated, &pool, &args, &mut ye).unwrap();
                    grouped_gemm_tiles(TileEngine::Hardware(hw), &pool, &args, &mut yh).unwrap();
                    let (be, bh): (Vec<u16>, Vec<u16>) = (
                        ye.iter().map(|v| v.to_bits()).collect(),
                        yh.iter().map(|v| v.to_bits()).collect(),
                    );
                    let ctx = format!("{groups:?} n {n} k {k} {lay:?} extras {}", rs_o.is_some());
                    assert!(bh[used * n..].iter().all(|&b| b == 0xFFFF), "{ctx}: guard rows written");
                    assert!(be == bh, "{ctx}: hardware and emulated tiles differ");
                }
            }
        }
    }
}

/// The plain bf16 `grouped_gemm` where `tdpbf16ps` alone would not be exact (it treats subnormal
/// inputs as zero and flushes subnormal results, Intel SDM `TDPBF16PS`): subnormal activations,
/// subnormal weights, and normal operands whose products fall below 2^-126, in both weight layouts,
/// raw and packed. Each case has one group of such values beside a group of ordinary ones (so a
/// per-call decision cannot pass by sending everything elsewhere) and is checked against the reference
/// on every CPU kernel table, and on the raw tile path: hardware tiles = emulated tiles, packed = raw
/// weights, bit for bit, guard rows untouched. (Subnormal activations were a known gap: 2^-130 ×
/// 2^100 × 32 gave 0 instead of 2^-25.) The weight cases run on packed weights only: raw weights
/// are not scanned (see the ignored test below).
#[test]
fn bf16_gemm_subnormal_and_underflowing_operands() {
    subnormal_cases(&["subnormal x", "subnormal w", "products below 2^-126"], false);
}

/// The documented gap of the bf16 AMX path (README, "AMX tiles"): raw (unpacked) weights are not
/// scanned per call, so a subnormal weight or a weight × activation product below 2^-126 counts as
/// zero there (a scan costs a second read of every weight: ~12% of the NK call, ~27% of the KN one,
/// measured at Qwen3-30B-A3B gate_up shapes); packed weights are scanned once when packed.
#[test]
#[ignore = "documented gap: raw bf16 weights on the AMX tiles are not checked for subnormals"]
fn bf16_gemm_raw_subnormal_weights() {
    subnormal_cases(&["subnormal w", "products below 2^-126"], true);
}

/// The cases named in `only`; `raw_weights`: also the raw-weight runs of the weight cases.
fn subnormal_cases(only: &[&str], raw_weights: bool) {
    use moehal_core::ops::{GroupedGemm, WeightLayout};
    use moehal_cpu::grouped_gemm::{grouped_gemm_tiles, GemmArgs, Layout, Weights};
    let (n, k) = (48usize, 64usize);
    let groups = [19usize, 33];
    let m = groups.iter().sum::<usize>();
    let ge: Vec<i64> = vec![groups[0] as i64, m as i64];
    let mut rng = ChaCha8Rng::seed_from_u64(0x5ab);
    // (name, x value of group 1, w value of expert 1, each output of group 1 on the reference)
    let cases = [
        (
            "subnormal x",
            2f32.powi(-130),
            2f32.powi(100),
            2f32.powi(-30) * k as f32,
        ),
        (
            "subnormal w",
            2f32.powi(100),
            2f32.powi(-130),
            2f32.powi(-30) * k as f32,
        ),
        (
            "products below 2^-126",
            2f32.powi(-64),
            2f32.powi(-64),
            2f32.powi(-128) * k as f32,
        ),
    ];
    for (name, xv, wv, want1) in cases.into_iter().filter(|c| only.contains(&c.0)) {
        // Group 0 / expert 0: ordinary values (multiples of 1/8, so every engine's sums are exact and
        // the engines can be compared bit for bit); group 1 / expert 1: the case's values.
        let mut x: Vec<bf16> = (0..m * k)
            .map(|_| bf16::from_f32(rng.gen_range(-8..=8) as f32 / 8.0))
            .collect();
        x[groups[0] * k..].fill(bf16::from_f32(xv));
        let mut w_nk: Vec<bf16> = (0..2 * n * k)
            .map(|_| bf16::from_f32(rng.gen_range(-8..=8) as f32 / 8.0))
            .collect();
        w_nk[n * k..].fill(bf16::from_f32(wv));
        let mut w_kn = vec![bf16::ZERO; 2 * k * n];
        for g in 0..2 {
            for r in 0..n {
                for c in 0..k {
                    w_kn[(g * k + c) * n + r] = w_nk[(g * n + r) * k + c];
                }
            }
        }
        for (lay, w) in [(WeightLayout::NK, &w_nk), (WeightLayout::KN, &w_kn)] {
            let ctx = format!("{name} {lay:?}");
            // Raw weights are not scanned by the tile path (the documented gap); packed ones are.
            let raw = name == "subnormal x" || raw_weights;
            let run = |be: &dyn Backend| -> Vec<bf16> {
                let (xb, wb) = (be.upload_slice(&x).unwrap(), be.upload_slice(w).unwrap());
                let geb = be.upload_slice(&ge).unwrap();
                let mut yb = be.upload_slice(&vec![bf16::NAN; m * n]).unwrap();
                let wshape = if lay == WeightLayout::NK { [2, n, k] } else { [2, k, n] };
                let a = GroupedGemm {
                    x: xb.view(DType::BF16, &[m, k]),
                    group_end: geb.view(DType::I64, &[2]),
                    w: wb.view(DType::BF16, &wshape),
                    layout: lay,
                    row_scale: None,
                    bias: None,
                    y: yb.view_mut(DType::BF16, &[m, n]),
                };
                be.grouped_gemm(a.validate().unwrap()).unwrap();
                be.download_vec::<bf16>(&yb, m * n).unwrap()
            };
            let want = run(&Reference);
            assert_eq!(want[groups[0] * n].to_f32(), want1, "{ctx}: reference");
            for (isa, be) in cpu_backends().into_iter().filter(|_| raw) {
                let got = run(&be);
                // Group 0 under the bf16 tolerance (norm), group 1 exactly: its sums are exact.
                let (num, den) = want[..groups[0] * n]
                    .iter()
                    .zip(&got)
                    .fold((0f64, 0f64), |(nu, de), (r, o)| {
                        let (r, o) = (r.to_f32() as f64, o.to_f32() as f64);
                        (nu + (o - r) * (o - r), de + r * r)
                    });
                assert!((num / den).sqrt() <= 1e-2, "[{isa}] {ctx}: group 0 off the reference");
                assert!(
                    got[groups[0] * n..] == want[groups[0] * n..],
                    "[{isa}] {ctx}: group 1 {} instead of {want1}",
                    got[groups[0] * n].to_f32()
                );
            }
            // The tile path itself, on both engines, with a guard row.
            let pool = Pool::new(2).unwrap();
            let layout = if lay == WeightLayout::NK {
                Layout::NK
            } else {
                Layout::KN
            };
            // One guard row past the routed ones (x's is NaN: a read of it would show in y).
            let mut xg = x.clone();
            xg.extend(std::iter::repeat_n(bf16::NAN, k));
            let args = GemmArgs {
                x: &xg,
                m: m + 1,
                k,
                n,
                group_end: &ge,
                w: Weights::Raw(w, layout),
                row_scale: None,
                bias: None,
            };
            let packed = moehal_cpu::PackedWeights::new(&pool, w, layout, 2, n, k).unwrap();
            let packed_args = GemmArgs {
                w: Weights::Packed(&packed),
                ..args
            };
            let mut engines = vec![TileEngine::Emulated];
            engines.extend(Amx::get().map(TileEngine::Hardware));
            let mut outs = Vec::new();
            let runs: Vec<_> = engines
                .iter()
                .flat_map(|&e| [(e, &args), (e, &packed_args)])
                .filter(|(_, a)| raw || matches!(a.w, Weights::Packed(_)))
                .collect();
            for (e, args) in runs {
                let mut y = vec![bf16::from_bits(0xFFFF); (m + 1) * n];
                grouped_gemm_tiles(e, &pool, args, &mut y).unwrap();
                assert!(
                    y[m * n..].iter().all(|v| v.to_bits() == 0xFFFF),
                    "{ctx} {e:?}: guard row written"
                );
                assert!(y[groups[0] * n..m * n] == want[groups[0] * n..], "{ctx} {e:?}: group 1");
                outs.push(y);
            }
            // Emulated, emulated packed, then (with AMX) hardware and hardware packed: all alike.
            for o in &outs[1..] {
                let d = outs[0].iter().zip(o).position(|(a, b)| a.to_bits() != b.to_bits());
                assert!(d.is_none(), "{ctx}: tile runs differ at {d:?}");
            }
        }
    }
}

/// OPS.md §6: a call on packed weights gives bitwise the output of the same call on the unpacked
/// ones. `PackedQWeights::pack` picks the layout from `Kernels::best()` (which `MOEHAL_CPU_ISA`
/// lowers) while the call takes whatever kernel table it is given: packed under
/// `MOEHAL_CPU_ISA=avx512` (panels), an AMX-table call read the panels through the f32 path while
/// the unpacked call ran on the tiles (fixed: the tiles read panels too). Runs itself in a child
/// process with that variable set.
#[test]
fn packed_equals_unpacked_when_the_env_lowers_the_table() {
    const CHILD: &str = "MOEHAL_ADVERSARIAL_CHILD";
    if std::env::var_os(CHILD).is_none() {
        if Amx::get().is_none() {
            println!("AMX unavailable: nothing to check");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "packed_equals_unpacked_when_the_env_lowers_the_table",
                "--exact",
                "--include-ignored",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("MOEHAL_CPU_ISA", "avx512")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "child failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert_eq!(
        Kernels::best().isa(),
        Isa::Avx512,
        "the child runs with the AVX-512 table as best"
    );
    // Large enough that the two paths' f32 roundings (code·s then ×x, against Σ x·code then ×s)
    // move some bf16 outputs across a rounding boundary.
    let c = make(
        0x9ACC,
        WeightFormat::Fp8Block,
        false,
        DType::BF16,
        &[40, 1, 0, 9],
        256,
        2048,
        true,
    );
    let unpacked = run_raw(
        &c,
        Path::Op {
            isa: Isa::Amx,
            packed: false,
            threads: 2,
        },
    )
    .unwrap();
    let packed = run_raw(
        &c,
        Path::Op {
            isa: Isa::Amx,
            packed: true,
            threads: 2,
        },
    )
    .unwrap();
    assert!(
        unpacked == packed,
        "packed and unpacked fp8_block differ on the AMX table"
    );
}

/// Two calls at once on one backend (the tiles share a staging cache between calls) give the bits
/// each gives alone.
#[test]
fn concurrent_calls_match_sequential() {
    let be = CpuBackend::new();
    let a = make(
        0x77,
        WeightFormat::Fp8Block,
        false,
        DType::BF16,
        &[70, 3, 0, 40],
        96,
        384,
        true,
    );
    let b = make(
        0x78,
        WeightFormat::Mxfp4,
        false,
        DType::BF16,
        &[9, 0, 150],
        160,
        256,
        true,
    );
    let (wa, wb) = (run_be(&be, &a), run_be(&be, &b));
    for _ in 0..4 {
        let (ga, gb) = std::thread::scope(|s| {
            let ha = s.spawn(|| run_be(&be, &a));
            let hb = s.spawn(|| run_be(&be, &b));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        assert!(
            ga.iter().zip(&wa).all(|(x, y)| x.to_bits() == y.to_bits()),
            "call a differs when concurrent"
        );
        assert!(
            gb.iter().zip(&wb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "call b differs when concurrent"
        );
    }
    conforms(&wa, &run_be(&Reference, &a), &a, "a").unwrap();
    conforms(&wb, &run_be(&Reference, &b), &b, "b").unwrap();
}

/// W8A8 on the tiles reads only the routed rows: NaN activation scales and NaN codes in the rows past
/// group_end do not send the call to the f32 path (before the fix every one of the M rows' scales was
/// checked, so a caller's unused tail refused the tiles), and the result still matches the reference.
#[test]
fn w8a8_tiles_ignore_guard_rows() {
    let mut c = make(
        0x6C,
        WeightFormat::Fp8Block,
        true,
        DType::BF16,
        &[9, 1, 0, 12],
        40,
        160,
        true,
    );
    let used = c.used();
    c.x8[used * 160..].fill(0x7f);
    let Some(Sc::F32(xs)) = &mut c.xs else { unreachable!() };
    xs[used * 2..].fill(f32::NAN);
    for e in [Engine::Emulated, Engine::Hardware] {
        if e == Engine::Hardware && Amx::get().is_none() {
            continue;
        }
        let y = run_raw(&c, Path::Tiles(e)).expect("the tiles refused the call over its guard rows");
        let got: Vec<f64> = y.iter().map(|&b| bf16::from_bits(b).to_f64()).collect();
        conforms(&got, &run_be(&Reference, &c), &c, &format!("{e:?}")).unwrap();
    }
}
