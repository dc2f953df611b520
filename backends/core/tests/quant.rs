//! OPS.md §6 in the reference: validation of every format and pairing, the block-scale indexing
//! (partial last blocks in N and K), hand-computed products, and the quantize ops.

use moehal_core::ops::{GroupedGemmQ, QuantizeFp8, QuantizeInt8, WeightFormat};
use moehal_core::quant::{e4m3_to_f32, f32_to_e4m3, pack_nibbles};
use moehal_core::{Backend, BackendExt, Buffer, DType, Error, Reference};

fn buf<T: moehal_core::Element>(v: &[T]) -> Buffer {
    Reference.upload_slice(v).unwrap()
}

struct Case {
    x: Buffer,
    x_dt: DType,
    xs: Option<(Buffer, DType, Vec<usize>)>,
    w: Buffer,
    wf: WeightFormat,
    ws: Buffer,
    ws_dt: DType,
    ge: Buffer,
    bias: Option<Buffer>,
    rs: Option<Buffer>,
    m: usize,
    n: usize,
    k: usize,
    g: usize,
}

impl Case {
    fn args<'a>(&'a self, y: &'a mut Buffer, y_dt: DType) -> GroupedGemmQ<'a> {
        let (m, n, k, g) = (self.m, self.n, self.k, self.g);
        GroupedGemmQ {
            x: self.x.view(self.x_dt, &[m, k]),
            x_scale: self.xs.as_ref().map(|(b, d, s)| b.view(*d, s)),
            w_format: self.wf,
            w: self.w.view(self.wf.dtype(), &self.wf.w_shape(g, n, k)),
            w_scale: self.ws.view(self.ws_dt, &self.wf.scale_shape(g, n, k)),
            group_end: self.ge.view(DType::I64, &[g]),
            row_scale: self.rs.as_ref().map(|b| b.view(DType::F32, &[m])),
            bias: self.bias.as_ref().map(|b| b.view(y_dt, &[g, n])),
            y: y.view_mut(y_dt, &[m, n]),
        }
    }
    fn run_f32(&self) -> Vec<f32> {
        let mut y = Reference.filled(self.m * self.n, f32::NAN).unwrap();
        Reference
            .grouped_gemm_quant(self.args(&mut y, DType::F32).validate().unwrap())
            .unwrap();
        Reference.download_vec(&y, self.m * self.n).unwrap()
    }
}

/// fp8_block weights with N = K = 130 (a partial last block in both): with a one-hot x at column
/// k and every code 1.0, `y[n]` is exactly `scale[n/128, k/128]`.
#[test]
fn fp8_block_scale_indexing_with_partial_blocks() {
    let (n, k) = (130usize, 130usize);
    let w = vec![0x38u8; n * k]; // e4m3 1.0
    let ws: Vec<f32> = vec![2.0, 3.0, 5.0, 7.0]; // [2, 2]
    for kk in [0usize, 127, 128, 129] {
        let mut x = vec![0f32; k];
        x[kk] = 1.0;
        let c = Case {
            x: buf(&x),
            x_dt: DType::F32,
            xs: None,
            w: buf(&w),
            wf: WeightFormat::Fp8Block,
            ws: buf(&ws),
            ws_dt: DType::F32,
            ge: buf(&[1i64]),
            bias: None,
            rs: None,
            m: 1,
            n,
            k,
            g: 1,
        };
        let y = c.run_f32();
        for nn in [0usize, 127, 128, 129] {
            assert_eq!(y[nn], ws[(nn / 128) * 2 + kk / 128], "n {nn} k {kk}");
        }
    }
}

/// E8M0 weight scales for fp8_block, and a second group reading its own scale block.
#[test]
fn fp8_block_e8m0_scale_and_groups() {
    let (n, k, g) = (2usize, 4usize, 2usize);
    let w = vec![0x40u8; g * n * k]; // e4m3 2.0
    let ws = vec![127u8, 129]; // group 0: 1, group 1: 4
    let x = vec![1f32; 2 * k];
    let c = Case {
        x: buf(&x),
        x_dt: DType::F32,
        xs: None,
        w: buf(&w),
        wf: WeightFormat::Fp8Block,
        ws: buf(&ws),
        ws_dt: DType::U8,
        ge: buf(&[1i64, 2]),
        bias: None,
        rs: None,
        m: 2,
        n,
        k,
        g,
    };
    assert_eq!(c.run_f32(), vec![8.0, 8.0, 32.0, 32.0]);
}

/// mxfp4: nibble order within bytes and one E8M0 scale per 32 elements along K.
#[test]
fn mxfp4_nibbles_and_scales() {
    let (n, k) = (2usize, 64usize);
    // Row 0: codes k -> k % 16 pattern; row 1: all 6.0 (code 7).
    let mut codes = vec![0u8; n * k];
    for kk in 0..k {
        codes[kk] = (kk % 16) as u8;
        codes[k + kk] = 7;
    }
    let w = pack_nibbles(&codes);
    let ws = vec![127u8, 126, 128, 0]; // row 0: 1, 0.5; row 1: 2, 2^-127
    for kk in [0usize, 1, 3, 30, 31, 32, 33, 63] {
        let mut x = vec![0f32; k];
        x[kk] = 1.0;
        let c = Case {
            x: buf(&x),
            x_dt: DType::F32,
            xs: None,
            w: buf(&w),
            wf: WeightFormat::Mxfp4,
            ws: buf(&ws),
            ws_dt: DType::U8,
            ge: buf(&[1i64]),
            bias: None,
            rs: None,
            m: 1,
            n,
            k,
            g: 1,
        };
        let y = c.run_f32();
        let mag = [0.0f32, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
        let code = kk % 16;
        let v0 = if code >= 8 { -mag[code - 8] } else { mag[code] };
        let s0 = if kk < 32 { 1.0 } else { 0.5 };
        assert_eq!(y[0], v0 * s0, "row 0 k {kk}");
        let s1 = if kk < 32 { 2.0 } else { 2f32.powi(-127) };
        assert_eq!(y[1], 6.0 * s1, "row 1 k {kk}");
    }
}

/// Weight-only bf16 activations with bias and row_scale: `y = rs · (x·W + b)`.
#[test]
fn int8_weight_only_bf16_bias_row_scale() {
    use half::bf16;
    let (n, k) = (2usize, 3usize);
    let w: Vec<i8> = vec![1, -2, 3, 127, -127, 0];
    let ws = vec![0.5f32, 0.25];
    let x: Vec<bf16> = [1.0f32, 2.0, 3.0].iter().map(|&v| bf16::from_f32(v)).collect();
    let bias: Vec<bf16> = [1.0f32, -1.0].iter().map(|&v| bf16::from_f32(v)).collect();
    let c = Case {
        x: buf(&x),
        x_dt: DType::BF16,
        xs: None,
        w: buf(&w),
        wf: WeightFormat::Int8,
        ws: buf(&ws),
        ws_dt: DType::F32,
        ge: buf(&[1i64]),
        bias: Some(buf(&bias)),
        rs: Some(buf(&[2.0f32])),
        m: 1,
        n,
        k,
        g: 1,
    };
    let mut y = Reference.filled(n, bf16::NAN).unwrap();
    Reference
        .grouped_gemm_quant(c.args(&mut y, DType::BF16).validate().unwrap())
        .unwrap();
    let y: Vec<bf16> = Reference.download_vec(&y, n).unwrap();
    // row 0: (1 - 4 + 9) * 0.5 = 3, +1 = 4, *2 = 8; row 1: (127 - 254) * 0.25 = -31.75, -1, *2 = -65.5
    assert_eq!(y.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), vec![8.0, -65.5]);
}

/// W8A8 int8: `x_scale[m] · w_scale[n] · Σ x·w`, guard rows past the last group untouched.
#[test]
fn int8_w8a8_exact_sum_and_guard_rows() {
    let (n, k, m) = (2usize, 4usize, 3usize);
    let w: Vec<i8> = vec![127, 127, 127, 127, -1, 2, -3, 4];
    let x: Vec<i8> = vec![127, 127, 127, 127, 1, 1, 1, 1, 9, 9, 9, 9];
    let c = Case {
        x: buf(&x),
        x_dt: DType::I8,
        xs: Some((buf(&[0.5f32, 2.0, 1.0]), DType::F32, vec![m])),
        w: buf(&w),
        wf: WeightFormat::Int8,
        ws: buf(&[1.0f32, 0.25]),
        ws_dt: DType::F32,
        ge: buf(&[2i64]),
        bias: None,
        rs: None,
        m,
        n,
        k,
        g: 1,
    };
    let y = c.run_f32();
    assert_eq!(y[0], 0.5 * 4.0 * 127.0 * 127.0);
    assert_eq!(y[1], 0.5 * 0.25 * 127.0 * 2.0);
    assert_eq!(y[2], 2.0 * 4.0 * 127.0);
    assert_eq!(y[3], 2.0 * 0.25 * 2.0);
    assert!(y[4].is_nan() && y[5].is_nan(), "guard row written");
}

/// fp8 × fp8 with K = 130: two activation scale blocks, the second partial.
#[test]
fn fp8_w8a8_block_scales() {
    let (n, k) = (1usize, 130usize);
    let w = vec![0x38u8; k]; // 1.0
    let mut x = vec![0u8; k];
    x[0] = 0x40; // 2.0
    x[129] = 0x44; // 3.0
    let c = Case {
        x: buf(&x),
        x_dt: DType::U8,
        xs: Some((buf(&[126u8, 130]), DType::U8, vec![1, 2])), // 0.5, 8
        w: buf(&w),
        wf: WeightFormat::Fp8Block,
        ws: buf(&[3.0f32, 5.0]),
        ws_dt: DType::F32,
        ge: buf(&[1i64]),
        bias: None,
        rs: None,
        m: 1,
        n,
        k,
        g: 1,
    };
    assert_eq!(c.run_f32(), vec![0.5 * 3.0 * 2.0 + 8.0 * 5.0 * 3.0]);
}

fn err_of(r: moehal_core::Result<impl std::fmt::Debug>) -> Error {
    r.expect_err("expected an error")
}

#[test]
fn validation_rejects_bad_shapes_and_pairings() {
    let base = |wf: WeightFormat, x_dt: DType, k: usize| Case {
        x: buf(&vec![0u8; 4 * k * 4]),
        x_dt,
        xs: None,
        w: buf(&vec![0u8; 4 * 4 * k]),
        wf,
        ws: buf(&vec![0u8; 4096]),
        ws_dt: if wf == WeightFormat::Mxfp4 {
            DType::U8
        } else {
            DType::F32
        },
        ge: buf(&[1i64]),
        bias: None,
        rs: None,
        m: 1,
        n: 4,
        k,
        g: 1,
    };
    let mut y = Reference.alloc(1024).unwrap();
    // mxfp4 needs K % 32 == 0.
    let c = base(WeightFormat::Mxfp4, DType::F32, 48);
    let e = err_of(c.args(&mut y, DType::F32).validate());
    assert!(matches!(e, Error::InvalidArgument { field: "x", .. }), "{e}");
    // fp8 x with int8 weights: Unsupported.
    let mut c = base(WeightFormat::Int8, DType::U8, 32);
    c.xs = Some((buf(&[0f32; 4]), DType::F32, vec![1, 1]));
    let e = err_of(c.args(&mut y, DType::F32).validate());
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    // i8 x with mxfp4: Unsupported.
    let c = base(WeightFormat::Mxfp4, DType::I8, 32);
    assert!(matches!(
        err_of(c.args(&mut y, DType::F32).validate()),
        Error::Unsupported { .. }
    ));
    // Quantized x without x_scale.
    let c = base(WeightFormat::Fp8Block, DType::U8, 32);
    let e = err_of(c.args(&mut y, DType::F32).validate());
    assert!(matches!(e, Error::InvalidArgument { field: "x_scale", .. }), "{e}");
    // Float x with an x_scale.
    let mut c = base(WeightFormat::Fp8Block, DType::F32, 32);
    c.xs = Some((buf(&[0f32; 4]), DType::F32, vec![1, 1]));
    let e = err_of(c.args(&mut y, DType::F32).validate());
    assert!(matches!(e, Error::InvalidArgument { field: "x_scale", .. }), "{e}");
    // Float x: y must share x's dtype.
    let c = base(WeightFormat::Fp8Block, DType::F32, 32);
    let e = err_of(c.args(&mut y, DType::BF16).validate());
    assert!(matches!(e, Error::InvalidArgument { field: "y", .. }), "{e}");
    // mxfp4 with an f32 scale.
    let mut c = base(WeightFormat::Mxfp4, DType::F32, 32);
    c.ws_dt = DType::F32;
    let e = err_of(c.args(&mut y, DType::F32).validate());
    assert!(matches!(e, Error::InvalidArgument { field: "w_scale", .. }), "{e}");
    // fp8 x_scale with the wrong block count.
    let mut c = base(WeightFormat::Fp8Block, DType::U8, 130);
    c.xs = Some((buf(&[0f32; 4]), DType::F32, vec![1, 1]));
    let e = err_of(c.args(&mut y, DType::F32).validate());
    assert!(matches!(e, Error::InvalidArgument { field: "x_scale", .. }), "{e}");
    // Weight scale of the wrong shape (fp8_block wants [G, ⌈N/128⌉, ⌈K/128⌉]).
    let c = base(WeightFormat::Fp8Block, DType::F32, 32);
    let bad = GroupedGemmQ {
        w_scale: c.ws.view(DType::F32, &[1, 1, 2]),
        ..c.args(&mut y, DType::F32)
    };
    let e = err_of(bad.validate());
    assert!(matches!(e, Error::InvalidArgument { field: "w_scale", .. }), "{e}");
    // Every valid pairing passes.
    let c = base(WeightFormat::Mxfp4, DType::BF16, 64);
    c.args(&mut y, DType::BF16).validate().unwrap();
    let mut c = base(WeightFormat::Int8, DType::I8, 32);
    c.xs = Some((buf(&[0f32; 4]), DType::F32, vec![1]));
    c.args(&mut y, DType::F16).validate().unwrap();
}

#[test]
fn int8_k_limit() {
    let k = 131_072usize;
    let c = Case {
        x: buf(&vec![0i8; k]),
        x_dt: DType::I8,
        xs: Some((buf(&[1f32]), DType::F32, vec![1])),
        w: buf(&vec![0i8; k]),
        wf: WeightFormat::Int8,
        ws: buf(&[1f32]),
        ws_dt: DType::F32,
        ge: buf(&[1i64]),
        bias: None,
        rs: None,
        m: 1,
        n: 1,
        k,
        g: 1,
    };
    let mut y = Reference.alloc(4).unwrap();
    let e = err_of(c.args(&mut y, DType::F32).validate());
    assert!(matches!(e, Error::InvalidArgument { field: "x", .. }), "{e}");
}

#[test]
fn group_end_checked_before_writing() {
    let c = Case {
        x: buf(&[0f32; 32]),
        x_dt: DType::F32,
        xs: None,
        w: buf(&[0u8; 16]),
        wf: WeightFormat::Mxfp4,
        ws: buf(&[127u8]),
        ws_dt: DType::U8,
        ge: buf(&[2i64]),
        bias: None,
        rs: None,
        m: 1,
        n: 1,
        k: 32,
        g: 1,
    };
    let mut y = Reference.filled(1, f32::NAN).unwrap();
    let e = err_of(Reference.grouped_gemm_quant(c.args(&mut y, DType::F32).validate().unwrap()));
    assert!(matches!(e, Error::InvalidArgument { field: "group_end", .. }), "{e}");
    assert!(Reference.download_vec::<f32>(&y, 1).unwrap()[0].is_nan());
}

#[test]
fn quantize_fp8_op_partial_group_and_ue8m0() {
    let (m, k) = (2usize, 130usize);
    let mut x = vec![0f32; m * k];
    x[0] = 448.0;
    x[1] = -1.0625;
    x[128] = 3.0; // second group of row 0: amax 3 → scale 3/448
    x[k + 5] = 500.0; // row 1 group 0: ue8m0 scale 2
    x[k + 129] = f32::NAN; // row 1 group 1: NaN
    let xb = buf(&x);
    // f32 scales
    let mut q = Reference.alloc(m * k).unwrap();
    let mut s = Reference.alloc(m * 2 * 4).unwrap();
    let a = QuantizeFp8 {
        x: xb.view(DType::F32, &[m, k]),
        xq: q.view_mut(DType::U8, &[m, k]),
        x_scale: s.view_mut(DType::F32, &[m, 2]),
    };
    Reference.quantize_fp8(a.validate().unwrap()).unwrap();
    let qv: Vec<u8> = Reference.download_vec(&q, m * k).unwrap();
    let sv: Vec<f32> = Reference.download_vec(&s, m * 2).unwrap();
    assert_eq!(sv[0], 1.0);
    assert_eq!(sv[1], 3.0f32 / 448.0);
    assert_eq!(sv[2], 500.0f32 / 448.0);
    assert!(sv[3].is_nan());
    assert_eq!(&qv[..3], &[0x7E, 0xB8, 0x00]);
    assert_eq!(qv[128], f32_to_e4m3(3.0 / (3.0f32 / 448.0)));
    assert_eq!(e4m3_to_f32(qv[128]), 448.0);
    assert!(qv[k + 128..2 * k].iter().all(|&b| b == 0x7F));
    // ue8m0 scales
    let mut s8 = Reference.alloc(m * 2).unwrap();
    let a = QuantizeFp8 {
        x: xb.view(DType::F32, &[m, k]),
        xq: q.view_mut(DType::U8, &[m, k]),
        x_scale: s8.view_mut(DType::U8, &[m, 2]),
    };
    Reference.quantize_fp8(a.validate().unwrap()).unwrap();
    let sv: Vec<u8> = Reference.download_vec(&s8, m * 2).unwrap();
    // 448/448 = 1 → 127; 3/448 → 2^-7 (0.0078125 >= 0.0066964) → 120; 500/448 → 2 → 128; NaN → 255
    assert_eq!(sv, vec![127, 120, 128, 255]);
    let qv: Vec<u8> = Reference.download_vec(&q, m * k).unwrap();
    assert_eq!(qv[k + 5], 0x78); // 500 / 2 = 250 → 256
}

#[test]
fn quantize_int8_op_rows() {
    use half::f16;
    let (m, k) = (3usize, 4usize);
    let x: Vec<f16> = [
        127.0f32,
        2.5,
        -3.5,
        0.5,
        0.0,
        0.0,
        0.0,
        0.0,
        1.0,
        f32::INFINITY,
        0.0,
        0.0,
    ]
    .iter()
    .map(|&v| f16::from_f32(v))
    .collect();
    let xb = buf(&x);
    let mut q = Reference.alloc(m * k).unwrap();
    let mut s = Reference.alloc(m * 4).unwrap();
    let a = QuantizeInt8 {
        x: xb.view(DType::F16, &[m, k]),
        xq: q.view_mut(DType::I8, &[m, k]),
        x_scale: s.view_mut(DType::F32, &[m]),
    };
    Reference.quantize_int8(a.validate().unwrap()).unwrap();
    let qv: Vec<i8> = Reference.download_vec(&q, m * k).unwrap();
    let sv: Vec<f32> = Reference.download_vec(&s, m).unwrap();
    assert_eq!(&qv[..4], &[127, 2, -4, 0]);
    assert_eq!(sv[0], 1.0);
    assert_eq!(&qv[4..8], &[0; 4]);
    assert_eq!(sv[1], 1.0);
    assert_eq!(&qv[8..], &[0; 4]);
    assert!(sv[2].is_nan());
}

/// The default trait methods answer Unsupported with the reason.
#[test]
fn default_backend_reports_unsupported() {
    use moehal_core::ops::QuantDesc;
    struct Wrap;
    impl Backend for Wrap {
        fn name(&self) -> &str {
            "wrap"
        }
        fn device_info(&self) -> moehal_core::DeviceInfo {
            Reference.device_info()
        }
        fn supports(&self, op: &moehal_core::OpDesc) -> moehal_core::Support {
            Reference.supports(op)
        }
        fn alloc(&self, bytes: usize) -> moehal_core::Result<Buffer> {
            Reference.alloc(bytes)
        }
        fn upload(&self, dst: &mut Buffer, offset: usize, src: &[u8]) -> moehal_core::Result<()> {
            Reference.upload(dst, offset, src)
        }
        fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> moehal_core::Result<()> {
            Reference.download(src, offset, dst)
        }
        fn synchronize(&self) -> moehal_core::Result<()> {
            Ok(())
        }
        unsafe fn wrap_external(&self, ptr: u64, bytes: usize) -> moehal_core::Result<Buffer> {
            // SAFETY: forwarded contract.
            unsafe { Reference.wrap_external(ptr, bytes) }
        }
        fn grouped_gemm(&self, a: moehal_core::Checked<moehal_core::ops::GroupedGemm<'_>>) -> moehal_core::Result<()> {
            Reference.grouped_gemm(a)
        }
        fn router_topk(&self, a: moehal_core::Checked<moehal_core::ops::RouterTopk<'_>>) -> moehal_core::Result<()> {
            Reference.router_topk(a)
        }
        fn moe_permute(&self, a: moehal_core::Checked<moehal_core::ops::MoePermute<'_>>) -> moehal_core::Result<()> {
            Reference.moe_permute(a)
        }
        fn swiglu(&self, a: moehal_core::Checked<moehal_core::ops::Swiglu<'_>>) -> moehal_core::Result<()> {
            Reference.swiglu(a)
        }
        fn moe_combine(&self, a: moehal_core::Checked<moehal_core::ops::MoeCombine<'_>>) -> moehal_core::Result<()> {
            Reference.moe_combine(a)
        }
        fn engram_hash(&self, a: moehal_core::Checked<moehal_core::ops::EngramHash<'_>>) -> moehal_core::Result<()> {
            Reference.engram_hash(a)
        }
        fn gather_rows(&self, a: moehal_core::Checked<moehal_core::ops::GatherRows<'_>>) -> moehal_core::Result<()> {
            Reference.gather_rows(a)
        }
    }
    for d in QuantDesc::all() {
        assert!(!Wrap.supports_quant(&d).is_yes(), "{}", d.variant());
        assert!(Reference.supports_quant(&d).is_yes());
    }
    let xb = buf(&[0f32; 4]);
    let mut q = Reference.alloc(4).unwrap();
    let mut s = Reference.alloc(4).unwrap();
    let a = QuantizeInt8 {
        x: xb.view(DType::F32, &[1, 4]),
        xq: q.view_mut(DType::I8, &[1, 4]),
        x_scale: s.view_mut(DType::F32, &[1]),
    };
    let e = Wrap.quantize_int8(a.validate().unwrap()).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("OPS.md §6"), "{e}");

    // `engram_lookup`'s default is the contract's composition: `engram_hash`, then `gather_rows`,
    // on the backend itself. Same output as the reference's own lookup, and a bad id is the
    // value-dependent error with nothing written.
    let layer = moehal_core::engram::toy::layer().unwrap();
    let (d, c) = (3usize, layer.columns());
    let table: Vec<f32> = (0..layer.rows() as usize * d).map(|i| i as f32 * 0.25 - 7.0).collect();
    let tb = buf(&table);
    let lookup = |be: &dyn Backend, ids: &[i64]| {
        let ib = buf(ids);
        let mut out = buf(&vec![f32::NAN; ids.len() * c * d]);
        let a = moehal_core::ops::EngramLookup {
            layer: &layer,
            ids: ib.view(DType::I64, &[ids.len()]),
            positions: None,
            alive: None,
            history: &[5],
            table: tb.view(DType::F32, &[layer.rows() as usize, d]),
            format: moehal_core::ops::TableFormat::F32,
            out: out.view_mut(DType::F32, &[ids.len(), c * d]),
        };
        let r = be.engram_lookup(a.validate().unwrap());
        (r, be.download_vec::<f32>(&out, ids.len() * c * d).unwrap())
    };
    let ids = [7i64, 3, 7, 3, 49, 0];
    let (r, got) = lookup(&Wrap, &ids);
    r.unwrap();
    let (r, want) = lookup(&Reference, &ids);
    r.unwrap();
    assert!(got.iter().all(|v| v.is_finite()));
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let (r, untouched) = lookup(&Wrap, &[7, 50]);
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    assert!(untouched.iter().all(|v| v.is_nan()));
}

/// OPS.md §1 (kept by §6): `K = 0` writes zeros. The reference wrote -0 (an empty f64
/// `Iterator::sum` is -0) for weight-only and int8 x int8, where §1's reference and the CPU give +0.
#[test]
fn k_zero_writes_positive_zeros() {
    for (wf, x_dt, xs) in [
        (WeightFormat::Mxfp4, DType::F32, None),
        (WeightFormat::Int8, DType::F32, None),
        (WeightFormat::Int8, DType::I8, Some(buf(&[1.0f32, 1.0]))),
        (WeightFormat::Fp8Block, DType::U8, Some(buf(&[0f32; 0]))),
    ] {
        let (m, n) = (2usize, 3usize);
        let x = Reference.alloc(1).unwrap();
        let w = Reference.alloc(1).unwrap();
        let ws = buf(&[1.0f32; 16]);
        let ge = buf(&[m as i64]);
        let mut y = buf(&[f32::NAN; 6]);
        let ws_dt = if wf == WeightFormat::Int8 {
            DType::F32
        } else {
            DType::U8
        };
        let xs_shape: Vec<usize> = if x_dt == DType::I8 { vec![m] } else { vec![m, 0] };
        Reference
            .grouped_gemm_quant(
                GroupedGemmQ {
                    x: x.view(x_dt, &[m, 0]),
                    x_scale: xs.as_ref().map(|b| b.view(DType::F32, &xs_shape)),
                    w_format: wf,
                    w: w.view(wf.dtype(), &wf.w_shape(1, n, 0)),
                    w_scale: ws.view(ws_dt, &wf.scale_shape(1, n, 0)),
                    group_end: ge.view(DType::I64, &[1]),
                    row_scale: None,
                    bias: None,
                    y: y.view_mut(DType::F32, &[m, n]),
                }
                .validate()
                .unwrap(),
            )
            .unwrap();
        let got = Reference.download_vec::<f32>(&y, m * n).unwrap();
        assert!(got.iter().all(|v| v.to_bits() == 0), "{wf} x {x_dt}: {got:?}");
    }
}
