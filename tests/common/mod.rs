//! Helpers shared by the integration tests: synthetic safetensors checkpoints in DeepSeek's layout,
//! and (feature `cli`) running the `moehal` binary ([`cli`]).
#![allow(dead_code)]

use std::collections::HashMap;

#[cfg(feature = "cli")]
pub mod cli;

use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Write `tensors` (name, dtype, shape, bytes) to a file; names in `e8m0` get dtype F8_E8M0.
pub fn write(path: &std::path::Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)], e8m0: &[String]) {
    let views: HashMap<String, TensorView<'_>> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let bytes = safetensors::serialize(&views, &None).unwrap();
    // Rename U8 → F8_E8M0 for the listed tensors: rewrite the JSON header, pad to 8 bytes.
    let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + hlen]).unwrap();
    for n in e8m0 {
        header[n.as_str()]["dtype"] = "F8_E8M0".into();
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + hlen..]);
    std::fs::write(path, out).unwrap();
}

/// A small DeepSeek-V4-Flash-like checkpoint at `path`: layers 0 (hash-routed: `gate.tid2eid` I32
/// `[37, 6]`, row `v` = `(v + j) % 8`) and 3 (gated), each with 8 routed MXFP4 experts (H = 64,
/// I = 128; E8M0 scales 2^-7..2^-1) and an fp8_block shared expert (f32 block scales). Values are
/// seeded, finite, of moderate size. Returns the tid2eid table.
pub fn v4_layer_file(path: &std::path::Path) -> Vec<i32> {
    let (h, i, e) = (64usize, 128usize, 8usize);
    let mut z = 0x1234_5678_u64;
    let mut next = move || {
        z = z.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (z >> 33) as u32
    };
    let mut t = Vec::new();
    let mut e8 = Vec::new();
    for layer in [0usize, 3] {
        for ex in 0..e {
            for (m, n, k) in [("w1", i, h), ("w3", i, h), ("w2", h, i)] {
                let p = format!("layers.{layer}.ffn.experts.{ex}.{m}");
                let w: Vec<u8> = (0..n * k / 2).map(|_| next() as u8).collect();
                let s: Vec<u8> = (0..n * k / 32).map(|_| 120 + (next() % 7) as u8).collect();
                t.push((format!("{p}.weight"), Dtype::I8, vec![n, k / 2], w));
                t.push((format!("{p}.scale"), Dtype::U8, vec![n, k / 32], s));
                e8.push(format!("{p}.scale"));
            }
        }
        for (m, n, k) in [("w1", i, h), ("w3", i, h), ("w2", h, i)] {
            let p = format!("layers.{layer}.ffn.shared_experts.{m}");
            // e4m3 codes with exponent fields 1..=9 (no NaN), block scale 1 / (16 sqrt(K)).
            let w: Vec<u8> = (0..n * k)
                .map(|_| {
                    let r = next();
                    ((r & 0x80) as u8) | ((1 + (r >> 8) % 9) as u8) << 3 | (r >> 16) as u8 & 7
                })
                .collect();
            let ns = n.div_ceil(128) * k.div_ceil(128);
            let s: Vec<f32> = (0..ns).map(|_| 1.0 / (16.0 * (k as f32).sqrt())).collect();
            t.push((format!("{p}.weight"), Dtype::F8_E4M3, vec![n, k], w));
            t.push((
                format!("{p}.scale"),
                Dtype::F32,
                vec![n.div_ceil(128), k.div_ceil(128)],
                bytemuck::cast_slice(&s).to_vec(),
            ));
        }
    }
    let tid2eid: Vec<i32> = (0..37i32).flat_map(|v| (0..6).map(move |j| (v + j) % 8)).collect();
    t.push((
        "layers.0.ffn.gate.tid2eid".into(),
        Dtype::I32,
        vec![37, 6],
        bytemuck::cast_slice(&tid2eid).to_vec(),
    ));
    write(path, &t, &e8);
    tid2eid
}
