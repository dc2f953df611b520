//! A mix of small ops (grouped GEMM, router top-k, MoE permute, gather) with deterministic
//! inputs, through the Rust API and through the C ABI: shared by the concurrency and soak tests.
#![allow(dead_code)]

use std::ffi::c_void;
use std::ptr;

use moehal_core::ops::{
    GatherRows, GroupedGemm, MoePermute, RouterConfig, RouterTopk, Scoring, TableFormat, WeightLayout,
};
use moehal_core::{Backend, BackendExt, DType};
use moehal_ffi::abi::*;
use moehal_ffi::types::{dl_code, dl_device};
use moehal_ffi::*;

/// Deterministic inputs of call `seed`.
pub fn data(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub const M: usize = 24;
pub const K: usize = 40;
pub const N: usize = 16;
pub const G: usize = 3;
pub const T: usize = 12;
pub const E: usize = 8;
pub const KS: usize = 2;
pub const R: usize = 32;
pub const D: usize = 8;

pub fn ids_of(seed: u64) -> Vec<i32> {
    (0..T * KS)
        .map(|i| ((seed as usize * 7 + i * 5) % (E + 1)) as i32 - 1)
        .collect()
}
pub fn rows_of(seed: u64) -> Vec<i64> {
    (0..T * 2).map(|i| ((seed as usize * 11 + i * 3) % R) as i64).collect()
}

/// One mixed call (op chosen by `seed % 4`) through the Rust API; returns the output bytes.
pub fn run_rust(be: &dyn Backend, seed: u64) -> Vec<u8> {
    match seed % 4 {
        0 => {
            let x = be.upload_slice(&data(seed, M * K)).unwrap();
            let w = be.upload_slice(&data(seed + 1, G * N * K)).unwrap();
            let ge = be.upload_slice(&[5i64, 5, 20]).unwrap();
            let mut y = be.filled(M * N, f32::NAN).unwrap();
            let a = GroupedGemm {
                x: x.view(DType::F32, &[M, K]),
                w: w.view(DType::F32, &[G, N, K]),
                layout: WeightLayout::NK,
                group_end: ge.view(DType::I64, &[G]),
                row_scale: None,
                bias: None,
                y: y.view_mut(DType::F32, &[M, N]),
            };
            be.grouped_gemm(a.validate().unwrap()).unwrap();
            bytes(&be.download_vec::<f32>(&y, M * N).unwrap())
        }
        1 => {
            let l = be.upload_slice(&data(seed, T * E)).unwrap();
            let mut ids = be.filled(T * KS, 0i32).unwrap();
            let mut w = be.filled(T * KS, 0f32).unwrap();
            let a = RouterTopk {
                config: RouterConfig {
                    topk: KS,
                    scoring: Scoring::Softmax,
                    group: None,
                    renormalize: true,
                    routed_scaling_factor: 1.0,
                },
                logits: l.view(DType::F32, &[T, E]),
                bias: None,
                ids: ids.view_mut(DType::I32, &[T, KS]),
                weights: w.view_mut(DType::F32, &[T, KS]),
                expert_counts: None,
            };
            be.router_topk(a.validate().unwrap()).unwrap();
            let mut out = bytes(&be.download_vec::<i32>(&ids, T * KS).unwrap());
            out.extend(bytes(&be.download_vec::<f32>(&w, T * KS).unwrap()));
            out
        }
        2 => {
            let ids = be.upload_slice(&ids_of(seed)).unwrap();
            let mut ge = be.filled(E, 0i64).unwrap();
            let mut st = be.filled(T * KS, 0i64).unwrap();
            let mut sr = be.filled(T * KS, 0i64).unwrap();
            let a = MoePermute {
                num_experts: E,
                ids: ids.view(DType::I32, &[T, KS]),
                x: None,
                group_end: ge.view_mut(DType::I64, &[E]),
                src_token: st.view_mut(DType::I64, &[T * KS]),
                slot_row: sr.view_mut(DType::I64, &[T, KS]),
                x_perm: None,
            };
            be.moe_permute(a.validate().unwrap()).unwrap();
            let ge = be.download_vec::<i64>(&ge, E).unwrap();
            let routed = ge[E - 1] as usize;
            let mut out = bytes(&ge);
            out.extend(bytes(&be.download_vec::<i64>(&sr, T * KS).unwrap()));
            out.extend(bytes(&be.download_vec::<i64>(&st, T * KS).unwrap()[..routed]));
            out
        }
        _ => {
            let table = be.upload_slice(&data(seed, R * D)).unwrap();
            let rows = be.upload_slice(&rows_of(seed)).unwrap();
            let mut out = be.filled(T * 2 * D, 0f32).unwrap();
            let a = GatherRows {
                table: table.view(DType::F32, &[R, D]),
                format: TableFormat::F32,
                rows: rows.view(DType::I64, &[T, 2]),
                out: out.view_mut(DType::F32, &[T, 2 * D]),
            };
            be.gather_rows(a.validate().unwrap()).unwrap();
            bytes(&be.download_vec::<f32>(&out, T * 2 * D).unwrap())
        }
    }
}

pub fn bytes<T: Copy>(v: &[T]) -> Vec<u8> {
    // SAFETY: plain numeric T (f32, i32, i64) without padding; read-only byte view.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }.to_vec()
}

pub fn tensor(data: *mut c_void, code: u8, bits: u8, shape: &mut [i64]) -> DLTensor {
    DLTensor {
        data,
        device: DLDevice {
            device_type: dl_device::CPU,
            device_id: 0,
        },
        ndim: shape.len() as i32,
        dtype: DLDataType { code, bits, lanes: 1 },
        shape: shape.as_mut_ptr(),
        strides: ptr::null_mut(),
        byte_offset: 0,
    }
}

/// The same mix through the C ABI on host memory; returns the output bytes.
pub fn run_c(be: *const moehal_backend, seed: u64) -> Vec<u8> {
    let (f, i) = (dl_code::FLOAT, dl_code::INT);
    // SAFETY (all calls below): each DLTensor describes a live Vec of exactly its shape.
    unsafe {
        match seed % 4 {
            0 => {
                let mut x = data(seed, M * K);
                let mut w = data(seed + 1, G * N * K);
                let mut ge = [5i64, 5, 20];
                let mut y = vec![f32::NAN; M * N];
                let (mut sx, mut sw, mut sg, mut sy) = (
                    [M as i64, K as i64],
                    [G as i64, N as i64, K as i64],
                    [G as i64],
                    [M as i64, N as i64],
                );
                let tx = tensor(x.as_mut_ptr().cast(), f, 32, &mut sx);
                let tw = tensor(w.as_mut_ptr().cast(), f, 32, &mut sw);
                let tg = tensor(ge.as_mut_ptr().cast(), i, 64, &mut sg);
                let mut ty = tensor(y.as_mut_ptr().cast(), f, 32, &mut sy);
                let s = moehal_grouped_gemm(be, &tx, &tw, MOEHAL_LAYOUT_NK, &tg, ptr::null(), ptr::null(), &mut ty);
                assert_eq!(s, MOEHAL_OK);
                bytes(&y)
            }
            1 => {
                let mut l = data(seed, T * E);
                let mut ids = vec![0i32; T * KS];
                let mut w = vec![0f32; T * KS];
                let (mut sl, mut si, mut sw) = ([T as i64, E as i64], [T as i64, KS as i64], [T as i64, KS as i64]);
                let tl = tensor(l.as_mut_ptr().cast(), f, 32, &mut sl);
                let mut ti = tensor(ids.as_mut_ptr().cast(), i, 32, &mut si);
                let mut tw = tensor(w.as_mut_ptr().cast(), f, 32, &mut sw);
                let cfg = moehal_router_config {
                    k: KS as i64,
                    scoring: MOEHAL_SCORING_SOFTMAX,
                    group_score: 0,
                    n_group: 0,
                    topk_group: 0,
                    renormalize: 1,
                    routed_scaling_factor: 1.0,
                };
                let s = moehal_router_topk(be, &tl, ptr::null(), &cfg, &mut ti, &mut tw, ptr::null_mut());
                assert_eq!(s, MOEHAL_OK);
                let mut out = bytes(&ids);
                out.extend(bytes(&w));
                out
            }
            2 => {
                let mut ids = ids_of(seed);
                let (mut ge, mut st, mut sr) = (vec![0i64; E], vec![0i64; T * KS], vec![0i64; T * KS]);
                let (mut si, mut sg, mut ss, mut sr_) = (
                    [T as i64, KS as i64],
                    [E as i64],
                    [(T * KS) as i64],
                    [T as i64, KS as i64],
                );
                let ti = tensor(ids.as_mut_ptr().cast(), i, 32, &mut si);
                let mut tg = tensor(ge.as_mut_ptr().cast(), i, 64, &mut sg);
                let mut ts = tensor(st.as_mut_ptr().cast(), i, 64, &mut ss);
                let mut tr = tensor(sr.as_mut_ptr().cast(), i, 64, &mut sr_);
                let s = moehal_moe_permute(
                    be,
                    &ti,
                    E as i64,
                    ptr::null(),
                    &mut tg,
                    &mut ts,
                    &mut tr,
                    ptr::null_mut(),
                );
                assert_eq!(s, MOEHAL_OK);
                let routed = ge[E - 1] as usize;
                let mut out = bytes(&ge);
                out.extend(bytes(&sr));
                out.extend(bytes(&st[..routed]));
                out
            }
            _ => {
                let mut table = data(seed, R * D);
                let mut rows = rows_of(seed);
                let mut out = vec![0f32; T * 2 * D];
                let (mut st, mut sr, mut so) = ([R as i64, D as i64], [T as i64, 2], [T as i64, (2 * D) as i64]);
                let tt = tensor(table.as_mut_ptr().cast(), f, 32, &mut st);
                let tr = tensor(rows.as_mut_ptr().cast(), i, 64, &mut sr);
                let mut to = tensor(out.as_mut_ptr().cast(), f, 32, &mut so);
                let s = moehal_gather_rows(be, &tt, MOEHAL_TABLE_F32, &tr, &mut to);
                assert_eq!(s, MOEHAL_OK);
                bytes(&out)
            }
        }
    }
}
