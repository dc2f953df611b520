//! Checkpoint loading (OPS.md §6 layout): small synthetic safetensors files written with the
//! `safetensors` crate; the F8_E8M0 dtype, which the crate (0.4) does not name, is written as U8
//! and renamed in the header.

use moehal::checkpoint::{Checkpoint, Proj};
use moehal::ops::WeightFormat;
use moehal_core::{BackendExt, DType, Reference};
use safetensors::Dtype;

mod common;
use common::{v4_layer_file, write};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("moehal-ckpt-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join("model.safetensors")
}

/// A layer with 3 routed MXFP4 experts (H = 64, I = 32) and an fp8 shared expert (I = 128).
fn synthetic(path: &std::path::Path) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let (h, i) = (64usize, 32usize);
    let mut t = Vec::new();
    let mut e8 = Vec::new();
    let byte = |seed: usize, n: usize| -> Vec<u8> { (0..n).map(|j| ((j * 31 + seed * 17) % 251) as u8).collect() };
    for e in 0..3 {
        for (m, n, k) in [("w1", i, h), ("w3", i, h), ("w2", h, i)] {
            let p = format!("layers.2.ffn.experts.{e}.{m}");
            t.push((
                format!("{p}.weight"),
                Dtype::I8,
                vec![n, k / 2],
                byte(e * 3 + n, n * k / 2),
            ));
            t.push((
                format!("{p}.scale"),
                Dtype::U8,
                vec![n, k / 32],
                byte(e + 7, n * k / 32),
            ));
            e8.push(format!("{p}.scale"));
        }
    }
    let si = 128usize;
    for (m, n, k) in [("w1", si, h), ("w3", si, h), ("w2", h, si)] {
        let p = format!("layers.2.ffn.shared_experts.{m}");
        t.push((format!("{p}.weight"), Dtype::F8_E4M3, vec![n, k], byte(n + 1, n * k)));
        let ns = n.div_ceil(128) * k.div_ceil(128);
        let s: Vec<f32> = (0..ns).map(|j| 0.5 + j as f32).collect();
        t.push((
            format!("{p}.scale"),
            Dtype::F32,
            vec![n.div_ceil(128), k.div_ceil(128)],
            bytemuck::cast_slice(&s).to_vec(),
        ));
    }
    write(path, &t, &e8);
    t
}

fn find<'a>(t: &'a [(String, Dtype, Vec<usize>, Vec<u8>)], name: &str) -> &'a [u8] {
    &t.iter().find(|x| x.0 == name).unwrap().3
}

#[test]
fn routed_mxfp4_gate_up_is_w1_rows_then_w3_rows() {
    let path = tmp("routed");
    let t = synthetic(&path);
    let ck = Checkpoint::open(&path).unwrap();
    assert_eq!(ck.routed_experts(2), 3);
    assert_eq!(ck.routed_experts(0), 0);
    let gu = ck.experts(2, Proj::GateUp, &[2, 0]).unwrap();
    assert_eq!(gu.format, WeightFormat::Mxfp4);
    assert_eq!(gu.scale_dtype, DType::U8);
    assert_eq!((gu.groups, gu.n, gu.k), (2, 64, 64));
    assert_eq!(gu.w_shape(), [2, 64, 32]);
    assert_eq!(gu.scale_shape(), vec![2, 64, 2]);
    let (w, s) = gu.to_host();
    let mut want_w = Vec::new();
    let mut want_s = Vec::new();
    for e in [2, 0] {
        for m in ["w1", "w3"] {
            want_w.extend_from_slice(find(&t, &format!("layers.2.ffn.experts.{e}.{m}.weight")));
            want_s.extend_from_slice(find(&t, &format!("layers.2.ffn.experts.{e}.{m}.scale")));
        }
    }
    assert_eq!(w, want_w);
    assert_eq!(s, want_s);
    // Uploading gives the same bytes on a backend.
    let (bw, bs) = gu.upload(&Reference).unwrap();
    assert_eq!(Reference.download_vec::<u8>(&bw, w.len()).unwrap(), want_w);
    assert_eq!(Reference.download_vec::<u8>(&bs, s.len()).unwrap(), want_s);
    let down = ck.experts(2, Proj::Down, &[1]).unwrap();
    assert_eq!((down.groups, down.n, down.k), (1, 64, 32));
}

#[test]
fn shared_fp8_block_expert() {
    let path = tmp("shared");
    let t = synthetic(&path);
    let ck = Checkpoint::open(&path).unwrap();
    let gu = ck.shared_expert(2, Proj::GateUp).unwrap();
    assert_eq!(gu.format, WeightFormat::Fp8Block);
    assert_eq!(gu.scale_dtype, DType::F32);
    assert_eq!((gu.groups, gu.n, gu.k), (1, 256, 64));
    assert_eq!(gu.scale_shape(), vec![1, 2, 1]);
    let (_, s) = gu.to_host();
    let mut want = find(&t, "layers.2.ffn.shared_experts.w1.scale").to_vec();
    want.extend_from_slice(find(&t, "layers.2.ffn.shared_experts.w3.scale"));
    assert_eq!(s, want);
}

#[test]
fn clear_errors_name_the_tensor() {
    let path = tmp("errors");
    let mut t = synthetic(&path);
    let ck = Checkpoint::open(&path).unwrap();
    let e = ck.experts(2, Proj::GateUp, &[5]).unwrap_err().to_string();
    assert!(e.contains("layers.2.ffn.experts.5.w1.weight"), "{e}");
    // Wrong dtype: an F32 weight.
    let i = t
        .iter()
        .position(|x| x.0 == "layers.2.ffn.experts.1.w3.weight")
        .unwrap();
    t[i].1 = Dtype::F32;
    t[i].2 = vec![8, 16];
    t[i].3 = vec![0u8; 8 * 16 * 4];
    let e8: Vec<String> = t
        .iter()
        .filter(|x| x.0.contains("experts.") && x.0.ends_with(".scale") && !x.0.contains("shared"))
        .map(|x| x.0.clone())
        .collect();
    write(&path, &t, &e8);
    let ck = Checkpoint::open(&path).unwrap();
    let e = ck.experts(2, Proj::GateUp, &[1]).unwrap_err().to_string();
    assert!(
        e.contains("layers.2.ffn.experts.1.w3.weight") && e.contains("F32"),
        "{e}"
    );
    // Wrong scale shape.
    let i = t.iter().position(|x| x.0 == "layers.2.ffn.experts.0.w2.scale").unwrap();
    t[i].2 = vec![64, 2];
    t[i].3 = vec![127u8; 128];
    write(&path, &t, &e8);
    let ck = Checkpoint::open(&path).unwrap();
    let e = ck.experts(2, Proj::Down, &[0]).unwrap_err().to_string();
    assert!(
        e.contains("layers.2.ffn.experts.0.w2.scale") && e.contains("[64, 1]"),
        "{e}"
    );
    // Scales of MXFP4 weights must be F8_E8M0: leave them U8.
    write(&path, &t, &[]);
    let ck = Checkpoint::open(&path).unwrap();
    let e = ck.experts(2, Proj::Down, &[2]).unwrap_err().to_string();
    assert!(
        e.contains("layers.2.ffn.experts.2.w2.scale") && e.contains("F8_E8M0"),
        "{e}"
    );
    // Not a safetensors file: said in words with the offsets and sizes (as for an Engram table).
    std::fs::write(&path, b"\x04\0\0\0\0\0\0\0nope").unwrap();
    let e = Checkpoint::open(&path).unwrap_err().to_string();
    assert!(e.contains("does not start with '{'") && e.contains("offset 8"), "{e}");
    std::fs::write(&path, b"\x04\0\0\0\0\0\0\0[1,]").unwrap();
    let e = Checkpoint::open(&path).unwrap_err().to_string();
    assert!(e.contains("does not start with '{'"), "{e}");
    std::fs::write(&path, b"\x05\0\0\0\0\0\0\0{nope").unwrap();
    let e = Checkpoint::open(&path).unwrap_err().to_string();
    assert!(e.contains("JSON"), "{e}");
    // Random bytes: the header length is named with the limit and the file size.
    std::fs::write(&path, [0xe3u8, 0x91, 0x20, 0x7c, 0x11, 0x5a, 0xa9, 0x91, 1, 2, 3]).unwrap();
    let e = Checkpoint::open(&path).unwrap_err().to_string();
    assert!(
        e.contains("offset 0") && e.contains("limit") && e.contains("11 bytes"),
        "{e}"
    );
    // A directory, and an empty file.
    let dir = path.with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let e = Checkpoint::open(&dir).unwrap_err().to_string();
    assert!(e.contains("is a directory"), "{e}");
    std::fs::write(&path, b"").unwrap();
    let e = Checkpoint::open(&path).unwrap_err().to_string();
    assert!(e.contains("0 bytes") && e.contains("8-byte header length"), "{e}");
}

/// A malformed header whose `data_offsets` end near `u64::MAX` is an error naming the tensor, not
/// an arithmetic-overflow panic (debug) or a wrapped range that panics on first read (release).
#[test]
fn huge_data_offsets_are_an_error_not_a_panic() {
    let path = tmp("huge-offsets");
    for (dtype, shape) in [("U8", u64::MAX.to_string()), ("F4", "1".to_string())] {
        let header = format!(
            r#"{{"t":{{"dtype":"{dtype}","shape":[{shape}],"data_offsets":[0,{}]}}}}"#,
            u64::MAX
        );
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&[0u8; 16]);
        std::fs::write(&path, out).unwrap();
        let e = Checkpoint::open(&path).unwrap_err().to_string();
        assert!(e.contains("`t`") && e.contains("outside the file"), "{e}");
    }
}

/// A checkpoint's layer runs through the MoE forward on the CPU and on the reference from the same
/// mapped bytes: layer 0 hash-routed by `gate.tid2eid` (the ids are the table's rows for the token
/// ids), layer 3 gated; the output within bf16's tolerance of the reference.
#[test]
fn checkpoint_layers_run_hash_routed_and_gated_against_the_reference() {
    use moehal::pipeline::moe::{forward, load_checkpoint_layer, HashRoute, MoeInputs};
    let path = tmp("v4layer");
    let table = v4_layer_file(&path);
    let ck = Checkpoint::open(&path).unwrap();
    let reg = moehal::Registry::discover();
    let Ok(cpu) = reg.open("cpu") else {
        println!("cpu backend not compiled in: skipped");
        return;
    };
    let reference = Reference::new();
    let base = moehal::presets::preset("deepseek-v4-flash").unwrap();
    for layer in [0usize, 3] {
        let l = load_checkpoint_layer(&[cpu.as_ref(), &reference], &ck, layer, base).unwrap();
        let p = l.preset;
        assert_eq!(
            (p.hidden, p.expert_width, p.num_experts, p.shared_experts),
            (64, 128, 8, 1)
        );
        let q = l.weights[0].quant.as_ref().unwrap();
        assert_eq!((q.routed, q.shared), (WeightFormat::Mxfp4, WeightFormat::Fp8Block));
        let t = 11;
        let mut inp = MoeInputs::generate(&p, t, DType::BF16, 5).unwrap();
        let token_ids: Vec<i64> = (0..t as i64).map(|i| (i * 7 + 3) % 37).collect();
        match (&l.tid2eid, layer) {
            (Some((tab, v)), 0) => {
                assert_eq!((tab, *v), (&table, 37));
                inp.hash = Some(HashRoute {
                    token_ids: token_ids.clone(),
                    tid2eid: tab.clone(),
                    vocab: *v,
                });
            }
            (None, 3) => {}
            other => panic!("layer {layer}: tid2eid {:?}", other.0.as_ref().map(|x| x.1)),
        }
        let got = forward(cpu.as_ref(), &p, DType::BF16, &l.weights[0], &inp).unwrap();
        let want = forward(&reference, &p, DType::BF16, &l.weights[1], &inp).unwrap();
        assert_eq!(got.ids, want.ids, "layer {layer}");
        if layer == 0 {
            for (tok, &id) in token_ids.iter().enumerate() {
                assert_eq!(
                    &got.ids[tok * 6..tok * 6 + 6],
                    &table[id as usize * 6..id as usize * 6 + 6],
                    "hash routing reads tid2eid"
                );
            }
        }
        assert!(want.out.iter().all(|v| v.is_finite()) && want.out.iter().any(|&v| v != 0.0));
        let err = moehal::pipeline::rel_error(&got.out, &want.out);
        assert!(err <= 1e-2, "layer {layer}: rel error {err:.3e}");
    }
    // Clear errors: a layer that is not there names the tensor.
    let e = load_checkpoint_layer(&[&reference], &ck, 9, base)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("layers.9.ffn.experts.0.w1.weight"), "{e}");
}

/// Layer 2 of 3 routed MXFP4 experts whose matrix `m` (`w1`, `w3`, `w2`) of expert `e` is
/// `[N, K]` = `shape(e, m)` (weights `[N, K/2]` I8, E8M0 scales `[N, K/32]`, so every scale agrees
/// with its weight and only the weight shapes can be wrong).
fn mx_layer(path: &std::path::Path, shape: impl Fn(usize, &str) -> (usize, usize)) {
    let mut t = Vec::new();
    let mut e8 = Vec::new();
    for e in 0..3 {
        for m in ["w1", "w3", "w2"] {
            let (n, k) = shape(e, m);
            let p = format!("layers.2.ffn.experts.{e}.{m}");
            t.push((
                format!("{p}.weight"),
                Dtype::I8,
                vec![n, k / 2],
                vec![0x22u8; n * k / 2],
            ));
            t.push((
                format!("{p}.scale"),
                Dtype::U8,
                vec![n, k / 32],
                vec![127u8; n * k / 32],
            ));
            e8.push(format!("{p}.scale"));
        }
    }
    write(path, &t, &e8);
}

/// Issue 16: experts whose w1/w3 split `2I` differently (their sum agreeing), experts that
/// disagree with expert 0, w1 and w3 that disagree, and a w2 that is not `[H, I]` were accepted or
/// reported vaguely: each is an error naming the tensor, its shape and the expected shape. w1 and
/// w3 are `[I, H]` (N = I outputs of K = H inputs), w2 `[H, I]` (OPS.md §6, DeepSeek's layout).
#[test]
fn every_expert_tensor_shape_is_checked_against_expert_0_and_the_layout() {
    use moehal::pipeline::moe::plan_checkpoint_layer;
    let base = moehal::presets::preset("deepseek-v4-flash").unwrap();
    let base = moehal::presets::Preset { topk: 2, ..*base };
    let (h, i) = (64usize, 32usize);
    let good = move |_: usize, m: &str| if m == "w2" { (h, i) } else { (i, h) };
    let path = tmp("shapes");
    // The valid layer loads: H 64, I 32, 3 experts.
    mx_layer(&path, good);
    let ck = Checkpoint::open(&path).unwrap();
    let l = plan_checkpoint_layer(&ck, 2, &base).unwrap();
    assert_eq!(
        (l.preset.hidden, l.preset.expert_width, l.preset.num_experts),
        (h, i, 3)
    );
    let all = [0, 1, 2];
    assert_eq!(ck.experts(2, Proj::GateUp, &all).unwrap().n, 2 * i);
    type Shape = Box<dyn Fn(usize, &str) -> (usize, usize)>;
    let cases: Vec<(Shape, &str, &str)> = vec![
        // Expert 1 splits 2I = 64 as 16 + 48: the sum agrees, the split does not.
        (
            Box::new(move |e, m| match (e, m) {
                (1, "w1") => (16, h),
                (1, "w3") => (48, h),
                _ => good(e, m),
            }),
            "layers.2.ffn.experts.1.w1.weight",
            "I8 [16, 32], expected I8 [32, 32]",
        ),
        // Expert 0's w3 disagrees with its w1.
        (
            Box::new(move |e, m| if (e, m) == (0, "w3") { (64, h) } else { good(e, m) }),
            "layers.2.ffn.experts.0.w3.weight",
            "I8 [64, 32], expected I8 [32, 32]",
        ),
        // Expert 2's K differs.
        (
            Box::new(move |e, m| if (e, m) == (2, "w1") { (i, 128) } else { good(e, m) }),
            "layers.2.ffn.experts.2.w1.weight",
            "I8 [32, 64], expected I8 [32, 32]",
        ),
        // Expert 2's w2 differs from expert 0's.
        (
            Box::new(move |e, m| if (e, m) == (2, "w2") { (h, 64) } else { good(e, m) }),
            "layers.2.ffn.experts.2.w2.weight",
            "I8 [64, 32], expected I8 [64, 16]",
        ),
        // Every w2 stored as [I, H] (w1's orientation) instead of [H, I].
        (
            Box::new(move |e, m| if m == "w2" { (i, h) } else { good(e, m) }),
            "layers.2.ffn.experts.0.w2.weight",
            "expected [64, 32]",
        ),
    ];
    for (shape, tensor, want) in cases {
        mx_layer(&path, shape);
        let ck = Checkpoint::open(&path).unwrap();
        let e = plan_checkpoint_layer(&ck, 2, &base).err().unwrap().to_string();
        assert!(e.contains(&format!("`{tensor}`")) && e.contains(want), "{tensor}: {e}");
    }
}

/// Issue 16: a checkpoint whose experts have N = 0 or K = 0 computed nothing and "PASS"ed: a zero
/// size is an error naming the tensor and its shape.
#[test]
fn zero_width_experts_are_rejected() {
    use moehal::pipeline::moe::plan_checkpoint_layer;
    let base = moehal::presets::preset("deepseek-v4-flash").unwrap();
    let base = moehal::presets::Preset { topk: 2, ..*base };
    let path = tmp("zero");
    for (n_i, h, shape) in [(0usize, 64usize, "[0, 32]"), (32, 0, "[32, 0]")] {
        mx_layer(&path, |_, m| if m == "w2" { (h, n_i) } else { (n_i, h) });
        let ck = Checkpoint::open(&path).unwrap();
        let e = plan_checkpoint_layer(&ck, 2, &base).err().unwrap().to_string();
        assert!(
            e.contains("layers.2.ffn.experts.0.w1.weight") && e.contains(shape) && e.contains("zero size"),
            "{e}"
        );
        let e = ck.experts(2, Proj::Down, &[1]).unwrap_err().to_string();
        assert!(
            e.contains("layers.2.ffn.experts.1.w2.weight") && e.contains("zero size"),
            "{e}"
        );
    }
}

/// Layer 0 of `experts` routed MXFP4 experts (H = 64, I = 32) numbered as `ids` (so a gap can be
/// left), and a `gate.tid2eid` I64 table `[rows.len(), 6]` when `tid2eid` is given.
fn gapped_layer(path: &std::path::Path, ids: &[usize], tid2eid: Option<&[[i64; 6]]>) {
    let (h, i) = (64usize, 32usize);
    let mut t = Vec::new();
    let mut e8 = Vec::new();
    for &e in ids {
        for (m, n, k) in [("w1", i, h), ("w3", i, h), ("w2", h, i)] {
            let p = format!("layers.0.ffn.experts.{e}.{m}");
            t.push((
                format!("{p}.weight"),
                Dtype::I8,
                vec![n, k / 2],
                vec![0x22u8; n * k / 2],
            ));
            t.push((
                format!("{p}.scale"),
                Dtype::U8,
                vec![n, k / 32],
                vec![127u8; n * k / 32],
            ));
            e8.push(format!("{p}.scale"));
        }
    }
    if let Some(rows) = tid2eid {
        let flat: Vec<i64> = rows.iter().flatten().copied().collect();
        t.push((
            "layers.0.ffn.gate.tid2eid".into(),
            Dtype::I64,
            vec![rows.len(), 6],
            bytemuck::cast_slice(&flat).to_vec(),
        ));
    }
    write(path, &t, &e8);
}

/// Issue 16 item 8: a `gate.tid2eid` entry outside the layer's experts is an error at load naming
/// the tensor, the entry and its value (it failed late, in the router); an expert missing between
/// present ones is an error naming it (expert 9 was ignored, the layer silently 8 experts).
#[test]
fn bad_expert_ids_and_gaps_are_errors_at_load() {
    use moehal::pipeline::moe::plan_checkpoint_layer;
    let base = moehal::presets::preset("deepseek-v4-flash").unwrap();
    let path = tmp("gaps");
    let all: Vec<usize> = (0..8).collect();
    // A good table loads.
    gapped_layer(&path, &all, Some(&[[0, 1, 2, 3, 4, 5], [7, 6, 5, 4, 3, 2]]));
    let ck = Checkpoint::open(&path).unwrap();
    let plan = plan_checkpoint_layer(&ck, 0, base).unwrap();
    assert_eq!(plan.tid2eid.as_ref().map(|t| t.1), Some(2));
    for (bad, at, value) in [
        (8i64, "[1, 2]", "8"),
        (-1, "[1, 2]", "-1"),
        (1 << 40, "[1, 2]", "1099511627776"),
    ] {
        gapped_layer(&path, &all, Some(&[[0, 1, 2, 3, 4, 5], [7, 6, bad, 4, 3, 2]]));
        let ck = Checkpoint::open(&path).unwrap();
        let e = plan_checkpoint_layer(&ck, 0, base).err().expect("accepted").to_string();
        assert!(
            e.contains("layers.0.ffn.gate.tid2eid")
                && e.contains(&format!("entry {at} is expert {value}"))
                && e.contains("outside 0..8"),
            "{bad}: {e}"
        );
    }
    // A table of no rows (V = 0) routes no token: an error at load naming the tensor (it failed
    // in the router, blaming `token_ids`).
    gapped_layer(&path, &all, Some(&[]));
    let ck = Checkpoint::open(&path).unwrap();
    let e = plan_checkpoint_layer(&ck, 0, base).err().expect("accepted").to_string();
    assert!(e.contains("layers.0.ffn.gate.tid2eid") && e.contains("V = 0"), "{e}");
    // Experts 0..7 and 9: expert 8 is missing.
    let gap: Vec<usize> = (0..8).chain([9]).collect();
    gapped_layer(&path, &gap, None);
    let ck = Checkpoint::open(&path).unwrap();
    let e = plan_checkpoint_layer(&ck, 0, base).err().expect("accepted").to_string();
    assert!(
        e.contains("layers.0.ffn.experts.8.w1.weight") && e.contains("expert 9 is present"),
        "{e}"
    );
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

/// A backend with the reference's float kernels and no quantized ones (the trait's default
/// `supports_quant`: every §6 variant `No`), as the Ascend backend without MXFP4 kernels.
struct NoQuant(Reference);

impl moehal_core::Backend for NoQuant {
    fn name(&self) -> &str {
        "noquant"
    }
    fn device_info(&self) -> moehal_core::DeviceInfo {
        self.0.device_info()
    }
    fn supports(&self, op: &moehal_core::OpDesc) -> moehal_core::Support {
        self.0.supports(op)
    }
    fn alloc(&self, bytes: usize) -> moehal_core::Result<moehal_core::Buffer> {
        self.0.alloc(bytes)
    }
    fn upload(&self, dst: &mut moehal_core::Buffer, offset: usize, src: &[u8]) -> moehal_core::Result<()> {
        self.0.upload(dst, offset, src)
    }
    fn download(&self, src: &moehal_core::Buffer, offset: usize, dst: &mut [u8]) -> moehal_core::Result<()> {
        self.0.download(src, offset, dst)
    }
    fn synchronize(&self) -> moehal_core::Result<()> {
        self.0.synchronize()
    }
    unsafe fn wrap_external(&self, _ptr: u64, _bytes: usize) -> moehal_core::Result<moehal_core::Buffer> {
        Err(moehal_core::Error::unsupported(
            "wrap_external",
            "noquant",
            "a test backend",
        ))
    }
    fn grouped_gemm(&self, a: moehal_core::Checked<moehal_core::ops::GroupedGemm<'_>>) -> moehal_core::Result<()> {
        self.0.grouped_gemm(a)
    }
    fn router_topk(&self, a: moehal_core::Checked<moehal_core::ops::RouterTopk<'_>>) -> moehal_core::Result<()> {
        self.0.router_topk(a)
    }
    fn moe_permute(&self, a: moehal_core::Checked<moehal_core::ops::MoePermute<'_>>) -> moehal_core::Result<()> {
        self.0.moe_permute(a)
    }
    fn swiglu(&self, a: moehal_core::Checked<moehal_core::ops::Swiglu<'_>>) -> moehal_core::Result<()> {
        self.0.swiglu(a)
    }
    fn moe_combine(&self, a: moehal_core::Checked<moehal_core::ops::MoeCombine<'_>>) -> moehal_core::Result<()> {
        self.0.moe_combine(a)
    }
    fn engram_hash(&self, a: moehal_core::Checked<moehal_core::ops::EngramHash<'_>>) -> moehal_core::Result<()> {
        self.0.engram_hash(a)
    }
    fn gather_rows(&self, a: moehal_core::Checked<moehal_core::ops::GatherRows<'_>>) -> moehal_core::Result<()> {
        self.0.gather_rows(a)
    }
}

/// Issue 16 item 8: a checkpoint layer on a backend without its weight format's kernels is an
/// `Unsupported` error before any upload, naming the backend and the format (no float fallback:
/// the checkpoint runs in the formats it stores).
#[test]
fn a_backend_without_the_checkpoint_format_is_unsupported_naming_both() {
    use moehal::pipeline::moe::plan_checkpoint_layer;
    let base = moehal::presets::preset("deepseek-v4-flash").unwrap();
    let path = tmp("noquant");
    gapped_layer(&path, &(0..8).collect::<Vec<_>>(), None);
    let ck = Checkpoint::open(&path).unwrap();
    let plan = plan_checkpoint_layer(&ck, 0, base).unwrap();
    assert!(plan.check_backend(&Reference::new(), DType::BF16).is_ok());
    let e = plan.check_backend(&NoQuant(Reference::new()), DType::BF16).unwrap_err();
    assert!(matches!(e, moehal_core::Error::Unsupported { .. }), "{e:?}");
    let s = e.to_string();
    assert!(
        s.contains("noquant") && s.contains("mxfp4") && s.contains("no float fallback"),
        "{s}"
    );
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}
