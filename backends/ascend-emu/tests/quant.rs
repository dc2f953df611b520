//! The W8A8 path of issue 13 through the exported C ABI: aclnnDynamicQuant (and the quantised
//! aclnnGroupedMatmulV4). Each result is computed here from the page's formula (not from moehal
//! code); each documented refusal is refused. RULES.md DQ*, QG*. The copy-counter check is in
//! `quant_copies.rs` (own process).

mod common;

use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;

const INVALID: i32 = sys::ACLNN_ERR_PARAM_INVALID;
const NULLPTR: i32 = sys::ACLNN_ERR_PARAM_NULLPTR;
const INNER: i32 = sys::ACLNN_ERR_INNER;

// ---- aclnnDynamicQuant --------------------------------------------------------------------------

fn dq_p1(x: &Dev, smooth: &Dev, y: &Dev, scale: &Dev) -> (i32, u64, Exec) {
    // SAFETY: live objects of this library or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnDynamicQuantGetWorkspaceSize(x.t, smooth.t, y.t, scale.t, ws, ex) })
}

/// The page's formula for one row of already-rounded inputs: `scale = row_max(|x|) / 127`,
/// `y = round(x / scale)`; `round` taken as half-to-even (RULES.md DQ3).
fn dq_row(row: &[f32]) -> (f32, Vec<i8>) {
    let m = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let s = m / 127.0;
    (s, row.iter().map(|v| (v / s).round_ties_even() as i8).collect())
}

fn i8s(d: &Dev) -> Vec<i8> {
    read(d).into_iter().map(|b| b as i8).collect()
}

#[test]
fn dynamic_quant_follows_the_page_formula() {
    let stream = setup();
    // Row 1: max 127 → scale 1, so 0.5, 1.5, -2.5 are exact ties (half-to-even: 0, 2, -2).
    let v = [
        127.0f32, 0.5, 1.5, -2.5, //
        -3.0, 0.1, 2.9, 1.0, //
        0.25, -0.75, 0.3, -0.01,
    ];
    for (bytes, dt) in [(bf16b(&v), sys::ACL_BF16), (f16b(&v), sys::ACL_FLOAT16)] {
        let stored = if dt == sys::ACL_BF16 {
            as_bf16(&bytes)
        } else {
            as_f16(&bytes)
        };
        // A 3-D x: rows are all dims but the last ([3,1,4] → scaleOut [3,1]).
        let x = tensor(&bytes, &[3, 1, 4], dt);
        let y = filled(&[3, 1, 4], sys::ACL_INT8, 0x55);
        let s = filled(&[3, 1], sys::ACL_FLOAT, 0x55);
        let (rc, ws, ex) = dq_p1(&x, &none(), &y, &s);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnDynamicQuant), 0, "{}", msg());
        let (mut ws_, mut ys_) = (vec![], vec![]);
        for r in stored.chunks(4) {
            let (sc, q) = dq_row(r);
            ws_.push(sc);
            ys_.extend(q);
        }
        assert_eq!(as_f32(&read(&s)), ws_, "dtype {dt}");
        assert_eq!(i8s(&y), ys_, "dtype {dt}");
        assert_eq!(&i8s(&y)[..4], &[127, 0, 2, -2], "ties to even");
        assert_eq!(launch(stream, ws, ex, aclnnDynamicQuant), INVALID, "executor reused");
    }
}

#[test]
fn dynamic_quant_smooth_scales_and_strided_x() {
    let stream = setup();
    // smoothScales multiply x first: input = x · smooth.
    let xv = [1.0f32, -4.0, 2.0, 8.0, 0.5, -1.0];
    let sv = [2.0f32, 0.5, -1.0];
    let x = tensor(&bf16b(&xv), &[2, 3], sys::ACL_BF16);
    let sm = tensor(&bf16b(&sv), &[3], sys::ACL_BF16);
    let y = zeros(&[2, 3], sys::ACL_INT8);
    let s = zeros(&[2], sys::ACL_FLOAT);
    let (rc, ws, ex) = dq_p1(&x, &sm, &y, &s);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnDynamicQuant), 0, "{}", msg());
    let input: Vec<f32> = xv.iter().enumerate().map(|(i, v)| v * sv[i % 3]).collect();
    let (s0, q0) = dq_row(&input[..3]);
    let (s1, q1) = dq_row(&input[3..]);
    assert_eq!(as_f32(&read(&s)), [s0, s1]);
    assert_eq!(i8s(&y), [q0, q1].concat());
    // A transposed view of x ("支持非连续的Tensor"): x^T of a [3,2] storage.
    let t = tensor(&f16b(&[1.0, 8.0, -4.0, 0.5, 2.0, -1.0]), &[3, 2], sys::ACL_FLOAT16);
    let xt = Dev {
        t: view(
            t.ptr,
            sys::ACL_FLOAT16,
            &[2, 3],
            Some(&[1, 2]),
            0,
            &[6],
            sys::ACL_FORMAT_ND,
        ),
        ..t
    };
    let y = zeros(&[2, 3], sys::ACL_INT8);
    let s = zeros(&[2], sys::ACL_FLOAT);
    let (rc, ws, ex) = dq_p1(&xt, &none(), &y, &s);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnDynamicQuant), 0, "{}", msg());
    let (s0, q0) = dq_row(&[1.0, -4.0, 2.0]);
    let (s1, q1) = dq_row(&[8.0, 0.5, -1.0]);
    assert_eq!(as_f32(&read(&s)), [s0, s1]);
    assert_eq!(i8s(&y), [q0, q1].concat());
}

#[test]
fn dynamic_quant_refusals() {
    let stream = setup();
    let x = tensor(&bf16b(&[1.0, 2.0, 3.0, 4.0]), &[2, 2], sys::ACL_BF16);
    let y = zeros(&[2, 2], sys::ACL_INT8);
    let s = zeros(&[2], sys::ACL_FLOAT);
    let n = none();
    assert_eq!(dq_p1(&n, &n, &y, &s).0, NULLPTR);
    assert_eq!(dq_p1(&x, &n, &n, &s).0, NULLPTR);
    assert_eq!(dq_p1(&x, &n, &y, &n).0, NULLPTR);
    let xf = tensor(&f32b(&[1.0, 2.0, 3.0, 4.0]), &[2, 2], sys::ACL_FLOAT);
    assert_eq!(dq_p1(&xf, &n, &y, &s).0, INVALID, "FLOAT x: FLOAT16 / BFLOAT16 only");
    let x1 = tensor(&bf16b(&[1.0, 2.0]), &[2], sys::ACL_BF16);
    assert_eq!(
        dq_p1(&x1, &n, &zeros(&[2], sys::ACL_INT8), &zeros(&[], sys::ACL_FLOAT)).0,
        INVALID,
        "1-D x: rank 2-8"
    );
    assert_eq!(
        dq_p1(&x, &n, &zeros(&[2, 2], sys::ACL_INT32), &s).0,
        INVALID,
        "INT32 packing"
    );
    assert_eq!(
        dq_p1(&x, &n, &zeros(&[2, 3], sys::ACL_INT8), &s).0,
        INVALID,
        "yOut shape"
    );
    assert_eq!(
        dq_p1(&x, &n, &y, &zeros(&[2, 1], sys::ACL_FLOAT)).0,
        INVALID,
        "scaleOut shape"
    );
    assert_eq!(
        dq_p1(&x, &n, &y, &zeros(&[2], sys::ACL_FLOAT16)).0,
        INVALID,
        "scaleOut FLOAT"
    );
    let sm16 = tensor(&f16b(&[1.0, 1.0]), &[2], sys::ACL_FLOAT16);
    assert_eq!(dq_p1(&x, &sm16, &y, &s).0, INVALID, "smooth dtype = x dtype");
    let sm3 = tensor(&bf16b(&[1.0, 1.0, 1.0]), &[3], sys::ACL_BF16);
    assert_eq!(dq_p1(&x, &sm3, &y, &s).0, INVALID, "smooth [H]");
    let yt = Dev {
        t: view(
            y.ptr,
            sys::ACL_INT8,
            &[2, 2],
            Some(&[1, 2]),
            0,
            &[4],
            sys::ACL_FORMAT_ND,
        ),
        ..zeros(&[1], sys::ACL_INT8)
    };
    assert_eq!(dq_p1(&x, &n, &yt, &s).0, INVALID, "yOut contiguous");
    let e = zeros(&[0, 2], sys::ACL_BF16);
    assert_eq!(
        dq_p1(&e, &n, &zeros(&[0, 2], sys::ACL_INT8), &zeros(&[0], sys::ACL_FLOAT)).0,
        INVALID,
        "empty: the 8.0 page is silent"
    );
    // An all-zero row (scale 0, 0/0) and a non-finite value: UNDOCUMENTED → 561000 at launch.
    for v in [[0.0f32, 0.0, 1.0, 2.0], [f32::INFINITY, 1.0, 1.0, 2.0]] {
        let xz = tensor(&bf16b(&v), &[2, 2], sys::ACL_BF16);
        let (rc, ws, ex) = dq_p1(&xz, &n, &y, &s);
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnDynamicQuant), INNER, "{v:?}");
    }
}

// ---- aclnnGroupedMatmulV4, A8W8 -----------------------------------------------------------------

/// A tensor description over device memory; each list gets a fresh aclTensor (a list owns its
/// tensors, R15).
#[derive(Clone)]
struct Tv {
    ptr: *mut std::ffi::c_void,
    dt: sys::aclDataType,
    dims: Vec<i64>,
    storage: Vec<i64>,
    fmt: sys::aclFormat,
}

impl Tv {
    fn fresh(&self) -> *mut sys::aclTensor {
        let t = view(self.ptr, self.dt, &self.dims, None, 0, &self.storage, self.fmt);
        assert!(!t.is_null(), "{}", msg());
        t
    }
}

/// A contiguous ND description of `d`.
fn nd(d: &Dev, dims: &[i64]) -> Tv {
    Tv {
        ptr: d.ptr,
        dt: d.dt,
        dims: dims.to_vec(),
        storage: dims.to_vec(),
        fmt: sys::ACL_FORMAT_ND,
    }
}

/// V4 phase one on ready lists (NULL for an absent one): splitItem 3, groupType 0, actType 0.
fn v4_lists(
    xl: *mut sys::aclTensorList,
    wl: *mut sys::aclTensorList,
    bl: *mut sys::aclTensorList,
    sl: *mut sys::aclTensorList,
    pl: *mut sys::aclTensorList,
    g: &Dev,
    list_type: i64,
    yl: *mut sys::aclTensorList,
) -> (i32, u64, Exec) {
    let n = ptr::null();
    // SAFETY: live lists/tensors from this library or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe {
        aclnnGroupedMatmulV4GetWorkspaceSize(
            xl,
            wl,
            bl,
            sl,
            n,
            n,
            n,
            pl,
            g.t,
            n,
            n,
            n,
            3,
            0,
            list_type,
            0,
            yl,
            ptr::null_mut(),
            ptr::null_mut(),
            ws,
            ex,
        )
    })
}

/// V4 phase one with A8W8 inputs, each list holding a fresh aclTensor of its description.
fn qv4(
    x: &Tv,
    w: &Tv,
    bias: Option<&Tv>,
    scale: Option<&Tv>,
    pts: Option<&Tv>,
    g: &Dev,
    list_type: i64,
    y: &Tv,
) -> (i32, u64, Exec) {
    let l = |d: Option<&Tv>| d.map_or(ptr::null_mut(), |d| list1(d.fresh()));
    let (xl, wl, yl) = (list1(x.fresh()), list1(w.fresh()), list1(y.fresh()));
    v4_lists(xl, wl, l(bias), l(scale), l(pts), g, list_type, yl)
}

/// Deterministic INT8 values in [-128, 127].
fn i8_data(n: usize, seed: u32) -> Vec<i8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 24) as u8 as i8
        })
        .collect()
}

fn i8b(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&b| b as u8).collect()
}

/// M=5, K=40, N=35, E=2: K and N are not multiples of the NZ fractal (16 x 32), so the NZ form pads.
const M: usize = 5;
const K: usize = 40;
const N: usize = 35;
const E: usize = 2;
const DM: i64 = M as i64;
const DK: i64 = K as i64;
const DN: i64 = N as i64;
const DE: i64 = E as i64;

/// The NZ form of an INT8 [E, K, N] weight, from the documented layout: ND {b, m, n} -> NZ
/// {b, n1, m1m0, n0} with m0 = 16, n0 = 32 for INT8 (TransdataOperation page); padding zero.
fn pack_nz(w: &[i8]) -> (Vec<i8>, Vec<i64>) {
    let n1 = N.div_ceil(32);
    let kp = K.div_ceil(16) * 16;
    let mut out = vec![0i8; E * n1 * kp * 32];
    for e in 0..E {
        for k in 0..K {
            for n in 0..N {
                out[((e * n1 + n / 32) * kp + k) * 32 + n % 32] = w[(e * K + k) * N + n];
            }
        }
    }
    (out, vec![DE, n1 as i64, kp as i64, 32])
}

/// The page's A8W8 formula: `y = (x × w) * scale * per_token_scale`; the INT8 product summed in
/// INT32, the scaling in f32 left to right; rows past the group total are None (not written).
fn a8w8_want(x: &[i8], w: &[i8], scale: &[f32], pts: Option<&[f32]>, ends: &[usize]) -> Vec<Option<f32>> {
    let mut out = vec![None; M * N];
    let mut start = 0;
    for (e, &end) in ends.iter().enumerate() {
        for r in start..end {
            for c in 0..N {
                let acc: i32 = (0..K)
                    .map(|k| x[r * K + k] as i32 * w[(e * K + k) * N + c] as i32)
                    .sum();
                let mut v = acc as f32 * scale[e * N + c];
                if let Some(p) = pts {
                    v *= p[r];
                }
                out[r * N + c] = Some(v);
            }
        }
        start = end;
    }
    out
}

struct A8w8 {
    x: Vec<i8>,
    w: Vec<i8>,
    scale: Vec<f32>,
    pts: Vec<f32>,
}

fn a8w8() -> A8w8 {
    A8w8 {
        x: i8_data(M * K, 7),
        w: i8_data(E * K * N, 11),
        scale: (0..E * N).map(|i| 0.001 * (1 + i % 7) as f32).collect(),
        pts: (0..M).map(|r| 0.02 + 0.01 * r as f32).collect(),
    }
}

fn round_to(dt: sys::aclDataType, v: f32) -> f32 {
    if dt == sys::ACL_BF16 {
        as_bf16(&bf16b(&[v]))[0]
    } else {
        as_f16(&f16b(&[v]))[0]
    }
}

fn read_y(y: &Dev) -> Vec<f32> {
    if y.dt == sys::ACL_BF16 {
        as_bf16(&read(y))
    } else {
        as_f16(&read(y))
    }
}

/// The formula rounded once to `dt`; unwritten rows keep `fill`.
fn rounded(dt: sys::aclDataType, want: &[Option<f32>], fill: f32) -> Vec<f32> {
    want.iter().map(|o| round_to(dt, o.unwrap_or(fill))).collect()
}

fn filled_y(dt: sys::aclDataType, fill: f32) -> Dev {
    let v = vec![fill; M * N];
    let b = if dt == sys::ACL_BF16 { bf16b(&v) } else { f16b(&v) };
    tensor(&b, &[DM, DN], dt)
}

#[test]
fn a8w8_nd_weight_bf16_and_fp16_outputs() {
    let stream = setup();
    let d = a8w8();
    let xd = tensor(&i8b(&d.x), &[DM, DK], sys::ACL_INT8);
    let wd = tensor(&i8b(&d.w), &[DE, DK, DN], sys::ACL_INT8);
    let pd = tensor(&f32b(&d.pts), &[DM], sys::ACL_FLOAT);
    let (x, w, pts) = (nd(&xd, &[DM, DK]), nd(&wd, &[DE, DK, DN]), nd(&pd, &[DM]));
    // Counts [2, 2]: row 4 is past the total and keeps its fill.
    let g = tensor(&i64b(&[2, 2]), &[DE], sys::ACL_INT64);
    let fill = -3.0f32;
    // BFLOAT16 scale -> BFLOAT16 out; FLOAT scale -> FLOAT16 out.
    for (sdt, ydt) in [(sys::ACL_BF16, sys::ACL_BF16), (sys::ACL_FLOAT, sys::ACL_FLOAT16)] {
        let (sbytes, stored) = if sdt == sys::ACL_BF16 {
            let b = bf16b(&d.scale);
            let s = as_bf16(&b);
            (b, s)
        } else {
            (f32b(&d.scale), d.scale.clone())
        };
        let sd = tensor(&sbytes, &[DE, DN], sdt);
        let scale = nd(&sd, &[DE, DN]);
        for with_pts in [true, false] {
            let yd = filled_y(ydt, fill);
            let p = with_pts.then_some(&pts);
            let (rc, ws, ex) = qv4(&x, &w, None, Some(&scale), p, &g, 1, &nd(&yd, &[DM, DN]));
            assert_eq!(rc, 0, "{}", msg());
            assert_eq!(launch(stream, ws, ex, aclnnGroupedMatmulV4), 0, "{}", msg());
            // Without perTokenScale: y = (x × w) * scale (the same table row, perTokenScale null).
            let pv = with_pts.then_some(&d.pts[..]);
            let want = a8w8_want(&d.x, &d.w, &stored, pv, &[2, 4]);
            assert_eq!(
                read_y(&yd),
                rounded(ydt, &want, fill),
                "scale {sdt} out {ydt} pts {with_pts}"
            );
        }
    }
}

#[test]
fn a8w8_fractal_nz_weight_is_read_in_the_documented_layout() {
    let stream = setup();
    let d = a8w8();
    let xd = tensor(&i8b(&d.x), &[DM, DK], sys::ACL_INT8);
    let pd = tensor(&f32b(&d.pts), &[DM], sys::ACL_FLOAT);
    let (x, pts) = (nd(&xd, &[DM, DK]), nd(&pd, &[DM]));
    let g = tensor(&i64b(&[2, 5]), &[DE], sys::ACL_INT64);
    let sd = tensor(&f32b(&d.scale), &[DE, DN], sys::ACL_FLOAT);
    let scale = nd(&sd, &[DE, DN]);
    let want = rounded(
        sys::ACL_BF16,
        &a8w8_want(&d.x, &d.w, &d.scale, Some(&d.pts), &[2, 5]),
        0.0,
    );
    let (nz, sdims) = pack_nz(&d.w);
    // aclnnCalculateMatmulWeightSizeV2's INT8 count: Align(K,16) * Align(N,32) per expert.
    assert_eq!(nz.len(), E * 48 * 64);
    let wbuf = tensor(&i8b(&nz), &[nz.len() as i64], sys::ACL_INT8);
    let five = vec![sdims[0], sdims[1], sdims[2] / 16, 16, 32];
    let nzw = |ptr, storage: &[i64]| Tv {
        ptr,
        dt: sys::ACL_INT8,
        dims: vec![DE, DK, DN],
        storage: storage.to_vec(),
        fmt: sys::ACL_FORMAT_FRACTAL_NZ,
    };
    for storage in [&sdims, &five] {
        // FLOAT scale with BFLOAT16 out: the table's NZ-only row.
        let yd = zeros(&[DM, DN], sys::ACL_BF16);
        let (rc, ws, ex) = qv4(
            &x,
            &nzw(wbuf.ptr, storage),
            None,
            Some(&scale),
            Some(&pts),
            &g,
            0,
            &nd(&yd, &[DM, DN]),
        );
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnGroupedMatmulV4), 0, "{}", msg());
        assert_eq!(read_y(&yd), want, "NZ storage {storage:?}");
    }
    // The same bytes declared ND are a different matrix: not a silent pass.
    let sbd = tensor(&bf16b(&d.scale), &[DE, DN], sys::ACL_BF16);
    let sb = nd(&sbd, &[DE, DN]);
    let wnd = Tv {
        storage: vec![nz.len() as i64],
        fmt: sys::ACL_FORMAT_ND,
        ..nzw(wbuf.ptr, &sdims)
    };
    let yd = zeros(&[DM, DN], sys::ACL_BF16);
    let (rc, ws, ex) = qv4(&x, &wnd, None, Some(&sb), Some(&pts), &g, 0, &nd(&yd, &[DM, DN]));
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnGroupedMatmulV4), 0, "{}", msg());
    let want_b = rounded(
        sys::ACL_BF16,
        &a8w8_want(&d.x, &d.w, &as_bf16(&bf16b(&d.scale)), Some(&d.pts), &[2, 5]),
        0.0,
    );
    assert_ne!(read_y(&yd), want_b, "NZ bytes read as ND must not give the ND result");
    // ND bytes declared FRACTAL_NZ (in a buffer of the NZ size) are a different matrix too.
    let mut ndpad = i8b(&d.w);
    ndpad.resize(nz.len(), 0);
    let wb2 = tensor(&ndpad, &[nz.len() as i64], sys::ACL_INT8);
    let yd = zeros(&[DM, DN], sys::ACL_BF16);
    let (rc, ws, ex) = qv4(
        &x,
        &nzw(wb2.ptr, &sdims),
        None,
        Some(&scale),
        Some(&pts),
        &g,
        0,
        &nd(&yd, &[DM, DN]),
    );
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnGroupedMatmulV4), 0, "{}", msg());
    assert_ne!(read_y(&yd), want, "ND bytes read as NZ must not give the ND result");
}

#[test]
fn a8w8_refusals() {
    let _stream = setup();
    let d = a8w8();
    let dev = |b: &[u8], dims: &[i64], dt| nd(&tensor(b, dims, dt), dims);
    let zero = |dims: &[i64], dt| nd(&zeros(dims, dt), dims);
    let x = dev(&i8b(&d.x), &[DM, DK], sys::ACL_INT8);
    let w = dev(&i8b(&d.w), &[DE, DK, DN], sys::ACL_INT8);
    let pts = dev(&f32b(&d.pts), &[DM], sys::ACL_FLOAT);
    let g = tensor(&i64b(&[2, 5]), &[DE], sys::ACL_INT64);
    let sb = dev(&bf16b(&d.scale), &[DE, DN], sys::ACL_BF16);
    let sf = dev(&f32b(&d.scale), &[DE, DN], sys::ACL_FLOAT);
    let yb = zero(&[DM, DN], sys::ACL_BF16);
    let yh = zero(&[DM, DN], sys::ACL_FLOAT16);
    assert_eq!(qv4(&x, &w, None, Some(&sb), Some(&pts), &g, 0, &yb).0, 0, "{}", msg());
    let g3 = tensor(&i64b(&[1, 2, 5]), &[3], sys::ACL_INT64);
    let cases = [
        (
            "scale NULL (INT32 out row NOT EMULATED)",
            qv4(&x, &w, None, None, Some(&pts), &g, 0, &yb).0,
        ),
        (
            "FLOAT scale, BF16 out, ND weight: NZ-only row",
            qv4(&x, &w, None, Some(&sf), Some(&pts), &g, 0, &yb).0,
        ),
        (
            "BF16 scale, FP16 out",
            qv4(&x, &w, None, Some(&sb), Some(&pts), &g, 0, &yh).0,
        ),
        (
            "FLOAT out",
            qv4(
                &x,
                &w,
                None,
                Some(&sf),
                Some(&pts),
                &g,
                0,
                &zero(&[DM, DN], sys::ACL_FLOAT),
            )
            .0,
        ),
        (
            "per-tensor scale [E]",
            qv4(&x, &w, None, Some(&zero(&[DE], sys::ACL_BF16)), Some(&pts), &g, 0, &yb).0,
        ),
        (
            "perTokenScale [M,1]",
            qv4(
                &x,
                &w,
                None,
                Some(&sb),
                Some(&zero(&[DM, 1], sys::ACL_FLOAT)),
                &g,
                0,
                &yb,
            )
            .0,
        ),
        (
            "perTokenScale BF16",
            qv4(&x, &w, None, Some(&sb), Some(&zero(&[DM], sys::ACL_BF16)), &g, 0, &yb).0,
        ),
        (
            "bias (NOT EMULATED)",
            qv4(
                &x,
                &w,
                Some(&zero(&[DE, DN], sys::ACL_INT32)),
                Some(&sb),
                Some(&pts),
                &g,
                0,
                &yb,
            )
            .0,
        ),
        (
            "FLOAT16 weight with INT8 x",
            qv4(
                &x,
                &zero(&[DE, DK, DN], sys::ACL_FLOAT16),
                None,
                Some(&sb),
                Some(&pts),
                &g,
                0,
                &yb,
            )
            .0,
        ),
        (
            "groupList of E+1",
            qv4(&x, &w, None, Some(&sb), Some(&pts), &g3, 0, &yb).0,
        ),
    ];
    for (what, rc) in cases {
        assert_eq!(rc, INVALID, "{what}");
    }
    // FRACTAL_NZ: storage dims must be the NZ form of [E, K, N].
    let (nz, sdims) = pack_nz(&d.w);
    let wbuf = tensor(&i8b(&nz), &[nz.len() as i64], sys::ACL_INT8);
    let nzw = |storage: &[i64]| Tv {
        ptr: wbuf.ptr,
        dt: sys::ACL_INT8,
        dims: vec![DE, DK, DN],
        storage: storage.to_vec(),
        fmt: sys::ACL_FORMAT_FRACTAL_NZ,
    };
    let bad = nzw(&[DE, 2, 40, 32]);
    assert_eq!(
        qv4(&x, &bad, None, Some(&sb), Some(&pts), &g, 0, &yb).0,
        INVALID,
        "K not aligned to 16"
    );
    assert_eq!(
        qv4(&x, &nzw(&sdims), None, Some(&sb), Some(&pts), &g, 0, &yb).0,
        0,
        "{}",
        msg()
    );
    // NZ anywhere else: R14 (x; the float GroupedMatmul weight).
    let xnz = Tv {
        fmt: sys::ACL_FORMAT_FRACTAL_NZ,
        ..x.clone()
    };
    assert_eq!(
        qv4(&xnz, &w, None, Some(&sb), Some(&pts), &g, 0, &yb).0,
        INVALID,
        "NZ x"
    );
    let xf = zero(&[DM, DK], sys::ACL_BF16);
    let wf = zeros(&[DE, 48, 48], sys::ACL_BF16);
    let wfnz = Tv {
        ptr: wf.ptr,
        dt: sys::ACL_BF16,
        dims: vec![DE, DK, DN],
        storage: vec![DE, 3, 48, 16],
        fmt: sys::ACL_FORMAT_FRACTAL_NZ,
    };
    assert_eq!(
        qv4(&xf, &wfnz, None, None, None, &g, 0, &yb).0,
        INVALID,
        "NZ float weight (R14)"
    );
    // Quantisation lists with a float x.
    let wb = zero(&[DE, DK, DN], sys::ACL_BF16);
    assert_eq!(
        qv4(&xf, &wb, None, Some(&sb), Some(&pts), &g, 0, &yb).0,
        INVALID,
        "scale with BF16 x"
    );
    // V3 takes no A8W8.
    let (xl, wl, yl, sl) = (list1(x.fresh()), list1(w.fresh()), list1(yb.fresh()), list1(sb.fresh()));
    let n = ptr::null();
    // SAFETY: live objects; out-pointers to locals.
    let rc =
        p1(|ws, ex| unsafe { aclnnGroupedMatmulV3GetWorkspaceSize(xl, wl, n, sl, n, n, n, g.t, 3, 0, yl, ws, ex) }).0;
    assert_eq!(rc, INVALID, "V3 A8W8");
}

// ---- aclnnCalculateMatmulWeightSizeV2 / aclnnTransMatmulWeight ----------------------------------

fn weight_size(shape: &[i64], dt: sys::aclDataType) -> (i32, u64) {
    let a = ints(shape);
    let mut n = 0u64;
    // SAFETY: a live aclIntArray; out-pointer to a local.
    let rc = unsafe { aclnnCalculateMatmulWeightSizeV2(a, dt, &mut n) };
    (rc, n)
}

#[test]
fn calculate_matmul_weight_size_v2_follows_the_page() {
    let _stream = setup();
    // The page's examples: [510, 510] FLOAT16 -> [512, 512]; [510, 270] INT8 -> [512, 288].
    assert_eq!(weight_size(&[510, 510], sys::ACL_FLOAT16), (0, 262_144));
    assert_eq!(weight_size(&[510, 270], sys::ACL_INT8), (0, 147_456));
    // Batch dims multiply: [E, K, N] = [2, 40, 35] INT8 -> 2 * 48 * 64.
    assert_eq!(weight_size(&[DE, DK, DN], sys::ACL_INT8), (0, 6144));
    assert_eq!(weight_size(&[7], sys::ACL_INT8).0, INVALID, "rank 1");
    assert_eq!(weight_size(&[1, 1, 1, 1, 1, 2, 2], sys::ACL_INT8).0, INVALID, "rank 7");
    assert_eq!(weight_size(&[0, 32], sys::ACL_INT8).0, INVALID, "empty");
    assert_eq!(
        weight_size(&[16, 32], sys::ACL_BF16).0,
        INVALID,
        "BF16: FLOAT16 / INT8 only"
    );
    let mut n = 0u64;
    // SAFETY: NULL array; out-pointer to a local.
    assert_eq!(
        unsafe { aclnnCalculateMatmulWeightSizeV2(ptr::null(), sys::ACL_INT8, &mut n) },
        NULLPTR
    );
    let a = ints(&[16, 32]);
    // SAFETY: a live array; NULL out-pointer is refused.
    assert_eq!(
        unsafe { aclnnCalculateMatmulWeightSizeV2(a, sys::ACL_INT8, ptr::null_mut()) },
        NULLPTR
    );
}

fn trans_p1(w: *mut sys::aclTensor) -> (i32, u64, Exec) {
    // SAFETY: a live tensor of this library or NULL; out-pointers to locals.
    p1(|ws, ex| unsafe { aclnnTransMatmulWeightGetWorkspaceSize(w, ws, ex) })
}

#[test]
fn trans_matmul_weight_packs_nz_in_place_for_the_a8w8_gmm() {
    let stream = setup();
    let d = a8w8();
    let (nz, _) = pack_nz(&d.w);
    // An allocation of CalculateMatmulWeightSizeV2 elements, the ND weight at its start.
    let (rc, size) = weight_size(&[DE, DK, DN], sys::ACL_INT8);
    assert_eq!((rc, size as usize), (0, nz.len()));
    let mut bytes = i8b(&d.w);
    bytes.resize(size as usize, 0x5A);
    let buf = tensor(&bytes, &[size as i64], sys::ACL_INT8);
    let dims = [DE, DK, DN];
    let wt = view(buf.ptr, sys::ACL_INT8, &dims, None, 0, &dims, sys::ACL_FORMAT_ND);
    let (rc, ws, ex) = trans_p1(wt);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnTransMatmulWeight), 0, "{}", msg());
    // The bytes are now the documented NZ form (padding zero).
    assert_eq!(read(&buf), i8b(&nz));
    // The same aclTensor now reads FRACTAL_NZ: a second conversion is refused (format)...
    assert_eq!(trans_p1(wt).0, INVALID, "already FRACTAL_NZ");
    // ...and the A8W8 GroupedMatmul takes it and computes the ND product.
    let xd = tensor(&i8b(&d.x), &[DM, DK], sys::ACL_INT8);
    let pd = tensor(&f32b(&d.pts), &[DM], sys::ACL_FLOAT);
    let sd = tensor(&bf16b(&d.scale), &[DE, DN], sys::ACL_BF16);
    let g = tensor(&i64b(&[2, 5]), &[DE], sys::ACL_INT64);
    let yd = zeros(&[DM, DN], sys::ACL_BF16);
    let (xl, wl, sl, pl, yl) = (
        list1(nd(&xd, &[DM, DK]).fresh()),
        list1(wt),
        list1(nd(&sd, &[DE, DN]).fresh()),
        list1(nd(&pd, &[DM]).fresh()),
        list1(nd(&yd, &[DM, DN]).fresh()),
    );
    let (rc, ws, ex) = v4_lists(xl, wl, ptr::null_mut(), sl, pl, &g, 0, yl);
    assert_eq!(rc, 0, "{}", msg());
    assert_eq!(launch(stream, ws, ex, aclnnGroupedMatmulV4), 0, "{}", msg());
    let want = a8w8_want(&d.x, &d.w, &as_bf16(&bf16b(&d.scale)), Some(&d.pts), &[2, 5]);
    assert_eq!(read_y(&yd), rounded(sys::ACL_BF16, &want, 0.0));
}

#[test]
fn trans_matmul_weight_refusals() {
    let _stream = setup();
    let d = a8w8();
    // An allocation of the ND size only: the NZ form does not fit.
    let small = tensor(&i8b(&d.w), &[DE, DK, DN], sys::ACL_INT8);
    assert_eq!(trans_p1(small.t).0, INVALID, "allocation smaller than the NZ form");
    assert_eq!(trans_p1(ptr::null_mut()).0, NULLPTR);
    let bf = zeros(&[64, 64], sys::ACL_BF16);
    assert_eq!(trans_p1(bf.t).0, INVALID, "BFLOAT16 NOT EMULATED");
    let one = zeros(&[4096], sys::ACL_INT8);
    assert_eq!(trans_p1(one.t).0, INVALID, "1-D");
    let big = zeros(&[4096], sys::ACL_INT8);
    let tr = view(
        big.ptr,
        sys::ACL_INT8,
        &[32, 32],
        Some(&[1, 32]),
        0,
        &[4096],
        sys::ACL_FORMAT_ND,
    );
    assert_eq!(trans_p1(tr).0, INVALID, "non-contiguous");
}
