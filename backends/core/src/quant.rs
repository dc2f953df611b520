//! Quantized number formats of OPS.md §6: decoders, encoders and the quantize rules, as scalar
//! functions every backend can share (the reference uses them directly; device backends check
//! their kernels against them).
//!
//! - E2M1 (OCP MX FP4): 4-bit code, sign bit 3, two exponent bits, one mantissa bit; magnitudes
//!   `0, 0.5, 1, 1.5, 2, 3, 4, 6`. Two codes per byte: element `k` is the low nibble of byte `k/2`
//!   when `k` is even, the high nibble when odd.
//! - E8M0 (OCP MX scale): byte `e` is `2^(e - 127)`; byte 255 is NaN; byte 0 is `2^-127` (an f32
//!   subnormal, exact).
//! - E4M3FN (OCP FP8, "fn": no infinities): sign, four exponent bits (bias 7), three mantissa bits;
//!   exponent field 0 is subnormal (`m · 2^-9`); `0x7F`/`0xFF` are NaN; the largest finite is 448.
//!
//! Sources: OCP Microscaling Formats (MX) v1.0 §5.3 (E2M1), §5.4 (E8M0); OCP 8-bit Floating Point
//! Specification (OFP8) v1.0 (E4M3); DeepGEMM's `per_token_cast_to_fp8` for the 1×128 activation
//! recipe (`amax` floor 1e-4, `amax / 448`, UE8M0 as the next power of two).

/// Magnitudes of the E2M1 codes 0..8 (the sign is bit 3).
pub const E2M1_MAGNITUDES: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// Largest finite E4M3FN magnitude.
pub const E4M3_MAX: f32 = 448.0;

/// Elements per fp8 block along N and K (weights) and per activation group along K (OPS.md §6).
pub const FP8_BLOCK: usize = 128;

/// Elements per MXFP4 scale along K.
pub const MXFP4_BLOCK: usize = 32;

/// Largest K of an int8 × int8 `grouped_gemm`: `128 · 128 · K < 2^31` keeps the i32 sum exact.
pub const INT8_MAX_K: usize = 131_071;

/// Decode one E2M1 code (only the low 4 bits of `code` are read). Code 8 is −0.
pub fn e2m1_to_f32(code: u8) -> f32 {
    let m = E2M1_MAGNITUDES[(code & 7) as usize];
    if code & 8 != 0 {
        -m
    } else {
        m
    }
}

/// Decode one E8M0 byte: `2^(e - 127)`, NaN for 255. Exact in f32 (byte 0 is the subnormal 2^-127).
pub fn e8m0_to_f32(e: u8) -> f32 {
    match e {
        255 => f32::NAN,
        0 => f32::from_bits(1 << 22), // 2^-127: the subnormal with only mantissa bit 22 set
        _ => f32::from_bits((e as u32) << 23),
    }
}

/// Decode one E4M3FN byte to f32 (exact). `0x7F` and `0xFF` are NaN; `0x80` is −0.
pub fn e4m3_to_f32(b: u8) -> f32 {
    let exp = ((b >> 3) & 0xF) as i32;
    let man = (b & 7) as f32;
    if exp == 15 && b & 7 == 7 {
        return f32::NAN;
    }
    let mag = if exp == 0 {
        man * (1.0 / 512.0) // m · 2^-9
    } else {
        (1.0 + man / 8.0) * f32::powi(2.0, exp - 7)
    };
    if b & 0x80 != 0 {
        -mag
    } else {
        mag
    }
}

/// Round an f32 to E4M3FN, nearest-even, saturating to ±448 (OPS.md §6 `quantize_fp8`).
/// A negative value that rounds to zero gives `0x80`; NaN gives `0x7F` (the sign dropped).
pub fn f32_to_e4m3(v: f32) -> u8 {
    if v.is_nan() {
        return 0x7F;
    }
    let sign: u8 = if v.is_sign_negative() { 0x80 } else { 0 };
    let a = v.abs();
    if a >= E4M3_MAX {
        return sign | 0x7E;
    }
    let a64 = a as f64;
    let code = if a < 1.0 / 64.0 {
        // Subnormal range (below 2^-6): the step is 2^-9; q = 8 is the smallest normal, code 0x08.
        (a64 * 512.0).round_ties_even() as u8
    } else {
        // a is a normal f32 here; its unbiased exponent e is in [-6, 8].
        let e = ((a.to_bits() >> 23) & 0xFF) as i32 - 127;
        let q = (a64 * f64::powi(2.0, 3 - e)).round_ties_even() as i32; // in [8, 16]
        (((e + 7) << 3) + (q - 8)) as u8
    };
    // Values in (448, 464) are caught above; values rounding up past 448 would need 464 <= a.
    sign | code.min(0x7E)
}

/// The E8M0 byte of the smallest power of two `>= s`, for a positive normal f32 `s`, read exactly
/// from its bits (not through `log2`, which rounds down just above a power of two). NaN, zero,
/// negative or non-finite `s` gives 255 (NaN).
pub fn ue8m0_ceil(s: f32) -> u8 {
    if !(s.is_finite() && s > 0.0) {
        return 255;
    }
    let bits = s.to_bits();
    let exp = (bits >> 23) & 0xFF;
    let man = bits & 0x7F_FFFF;
    if exp == 0 {
        // Subnormal: the next power of two is 2^(floor(log2 s) + 1) or s itself.
        let top = 31 - man.leading_zeros(); // s = man · 2^-149, highest set bit `top`
        let p = top as i32 - 149 + i32::from(man & (man - 1) != 0);
        return (p + 127).max(0) as u8;
    }
    let e = exp + u32::from(man != 0);
    if e >= 255 {
        255
    } else {
        e as u8
    }
}

/// How an activation scale is stored (OPS.md §6): f32, or E8M0 bytes (`ue8m0`, a power of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScaleFormat {
    /// One f32 per scale.
    F32,
    /// One E8M0 byte per scale (a power of two).
    Ue8m0,
}

impl ScaleFormat {
    /// Lower-case name (`"f32"`, `"ue8m0"`).
    pub const fn name(self) -> &'static str {
        match self {
            ScaleFormat::F32 => "f32",
            ScaleFormat::Ue8m0 => "ue8m0",
        }
    }
    /// The dtype of a scale tensor in this format (f32 or u8).
    pub const fn dtype(self) -> crate::DType {
        match self {
            ScaleFormat::F32 => crate::DType::F32,
            ScaleFormat::Ue8m0 => crate::DType::U8,
        }
    }
    /// The format a scale tensor of `dtype` holds (f32 → `F32`, u8 → `Ue8m0`), if any.
    pub const fn of_dtype(dtype: crate::DType) -> Option<ScaleFormat> {
        match dtype {
            crate::DType::F32 => Some(ScaleFormat::F32),
            crate::DType::U8 => Some(ScaleFormat::Ue8m0),
            _ => None,
        }
    }
}

/// Quantize one 1×128 group (or a shorter last group) to E4M3FN (OPS.md §6 `quantize_fp8`).
/// Writes `xq` (same length as `x`) and returns the scale as an f32 value (for `Ue8m0`, the power
/// of two; NaN for a group holding a NaN or ±inf) and its E8M0 byte (meaningful for `Ue8m0`).
///
/// `x` holds the group widened to f32 (exact for f32/bf16/f16 inputs).
pub fn quantize_fp8_group(x: &[f32], fmt: ScaleFormat, xq: &mut [u8]) -> (f32, u8) {
    debug_assert_eq!(x.len(), xq.len());
    let mut amax = 0f32;
    let mut finite = true;
    for &v in x {
        if !v.is_finite() {
            finite = false;
        }
        amax = amax.max(v.abs());
    }
    if !finite {
        xq.fill(0x7F);
        return (f32::NAN, 255);
    }
    let amax = amax.max(1e-4);
    let s = amax / E4M3_MAX;
    let (scale, byte) = match fmt {
        ScaleFormat::F32 => (s, 0),
        ScaleFormat::Ue8m0 => {
            let b = ue8m0_ceil(s);
            (e8m0_to_f32(b), b)
        }
    };
    for (q, &v) in xq.iter_mut().zip(x) {
        *q = f32_to_e4m3(v / scale);
    }
    (scale, byte)
}

/// Quantize one row to int8 (OPS.md §6 `quantize_int8`): writes `xq` and returns the scale
/// (`amax / 127`; 1 for a row with `amax < 2^-64`; NaN, with zeros, for a row holding NaN or ±inf).
pub fn quantize_int8_row(x: &[f32], xq: &mut [i8]) -> f32 {
    debug_assert_eq!(x.len(), xq.len());
    let mut amax = 0f32;
    let mut finite = true;
    for &v in x {
        if !v.is_finite() {
            finite = false;
        }
        amax = amax.max(v.abs());
    }
    if !finite {
        xq.fill(0);
        return f32::NAN;
    }
    if amax < f32::powi(2.0, -64) {
        xq.fill(0);
        return 1.0;
    }
    let scale = amax / 127.0;
    for (q, &v) in xq.iter_mut().zip(x) {
        *q = (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// E2M1 code `k` of a packed row (`bytes[k/2]`, low nibble for even `k`).
pub fn nibble(bytes: &[u8], k: usize) -> u8 {
    let b = bytes[k / 2];
    if k % 2 == 0 {
        b & 0xF
    } else {
        b >> 4
    }
}

/// Pack E2M1 codes (low 4 bits of each) two per byte, element `2i` in the low nibble of byte `i`.
/// An odd count leaves the last high nibble zero.
pub fn pack_nibbles(codes: &[u8]) -> Vec<u8> {
    codes
        .chunks(2)
        .map(|p| (p[0] & 0xF) | (p.get(1).copied().unwrap_or(0) & 0xF) << 4)
        .collect()
}

/// Unpack `n` E2M1 codes from bytes packed by [`pack_nibbles`].
pub fn unpack_nibbles(bytes: &[u8], n: usize) -> Vec<u8> {
    (0..n).map(|k| nibble(bytes, k)).collect()
}

/// The E2M1 code nearest to `v` (ties to the even code, saturating to ±6; NaN gives 0). Used to
/// build test weights and by checkpoint tools; not part of any op.
pub fn f32_to_e2m1(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    let sign = if v.is_sign_negative() { 8 } else { 0 };
    let a = v.abs();
    let mut best = 0u8;
    for c in 1..8u8 {
        let (d, db) = (
            (E2M1_MAGNITUDES[c as usize] - a).abs(),
            (E2M1_MAGNITUDES[best as usize] - a).abs(),
        );
        if d < db || (d == db && c % 2 == 0) {
            best = c;
        }
    }
    sign | best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2m1_all_codes() {
        let want = [
            0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
        ];
        for (c, &w) in want.iter().enumerate() {
            let v = e2m1_to_f32(c as u8);
            assert_eq!(v.to_bits(), f32::to_bits(w), "code {c}");
        }
        // Only the low nibble counts.
        assert_eq!(e2m1_to_f32(0xF7), 6.0);
    }

    #[test]
    fn e8m0_bytes() {
        assert_eq!(e8m0_to_f32(127), 1.0);
        assert_eq!(e8m0_to_f32(254), 2f32.powi(127));
        assert_eq!(e8m0_to_f32(0) as f64, 2f64.powi(-127));
        assert_eq!(e8m0_to_f32(0).to_bits(), 0x0040_0000);
        assert!(e8m0_to_f32(255).is_nan());
        assert_eq!(e8m0_to_f32(128), 2.0);
        assert_eq!(e8m0_to_f32(126), 0.5);
    }

    #[test]
    fn e4m3_decode_vectors() {
        assert_eq!(e4m3_to_f32(0x00).to_bits(), 0);
        assert_eq!(e4m3_to_f32(0x80).to_bits(), (-0.0f32).to_bits());
        // Subnormals: m · 2^-9.
        assert_eq!(e4m3_to_f32(0x01), 1.0 / 512.0);
        assert_eq!(e4m3_to_f32(0x07), 7.0 / 512.0);
        assert_eq!(e4m3_to_f32(0x87), -7.0 / 512.0);
        // Smallest normal 2^-6, one, largest 448.
        assert_eq!(e4m3_to_f32(0x08), 1.0 / 64.0);
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0x3C), 1.5);
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e4m3_to_f32(0xFE), -448.0);
        assert_eq!(e4m3_to_f32(0x78), 256.0);
        assert!(e4m3_to_f32(0x7F).is_nan());
        assert!(e4m3_to_f32(0xFF).is_nan());
    }

    #[test]
    fn e4m3_encode_round_trips_every_finite_code() {
        for b in 0..=255u8 {
            let v = e4m3_to_f32(b);
            if v.is_nan() {
                continue;
            }
            assert_eq!(f32_to_e4m3(v), b, "code {b:#04x} value {v}");
        }
    }

    #[test]
    fn e4m3_encode_ties_to_even_and_saturation() {
        // 1 + 1/16 lies halfway between 1 (0x38, even) and 1.125 (0x39): ties to even → 0x38.
        assert_eq!(f32_to_e4m3(1.0625), 0x38);
        // 1 + 3/16 is halfway between 1.125 (0x39) and 1.25 (0x3A, even) → 0x3A.
        assert_eq!(f32_to_e4m3(1.1875), 0x3A);
        // Subnormal tie: 0.5 · 2^-9 lies between 0 and 2^-9 → 0 (even); negative → 0x80.
        assert_eq!(f32_to_e4m3(1.0 / 1024.0), 0x00);
        assert_eq!(f32_to_e4m3(-1.0 / 1024.0), 0x80);
        // 1.5 · 2^-9 → 2 · 2^-9 (even).
        assert_eq!(f32_to_e4m3(3.0 / 1024.0), 0x02);
        // Just below the smallest normal rounds up into it.
        assert_eq!(f32_to_e4m3(15.9 / 1024.0), 0x08);
        // Saturation: 448 and above (and 464, the would-be tie to 480) → 0x7E; negatives 0xFE.
        assert_eq!(f32_to_e4m3(448.0), 0x7E);
        assert_eq!(f32_to_e4m3(460.0), 0x7E);
        assert_eq!(f32_to_e4m3(1e9), 0x7E);
        assert_eq!(f32_to_e4m3(f32::INFINITY), 0x7E);
        assert_eq!(f32_to_e4m3(-1e9), 0xFE);
        // 416 is a code (1.625 · 2^8).
        assert_eq!(f32_to_e4m3(416.0), 0x7D);
        // 432 is halfway between 416 (0x7D) and 448 (0x7E, even) → 0x7E.
        assert_eq!(f32_to_e4m3(432.0), 0x7E);
        assert_eq!(f32_to_e4m3(-0.0), 0x80);
        assert_eq!(f32_to_e4m3(f32::NAN), 0x7F);
    }

    #[test]
    fn ue8m0_ceil_is_exact_at_and_above_powers_of_two() {
        assert_eq!(ue8m0_ceil(1.0), 127);
        assert_eq!(ue8m0_ceil(f32::from_bits(1.0f32.to_bits() + 1)), 128);
        assert_eq!(ue8m0_ceil(0.75), 127);
        assert_eq!(ue8m0_ceil(0.5), 126);
        assert_eq!(ue8m0_ceil(3.0), 129);
        assert_eq!(ue8m0_ceil(2f32.powi(-127)), 0);
        assert_eq!(ue8m0_ceil(2f32.powi(-130)), 0); // clamps at the smallest E8M0 value
        assert_eq!(ue8m0_ceil(0.0), 255);
        assert_eq!(ue8m0_ceil(f32::NAN), 255);
        assert_eq!(ue8m0_ceil(f32::MAX), 255); // 2^128 is not an E8M0 value
    }

    #[test]
    fn quantize_fp8_group_vectors() {
        // amax 448 → scale 1 exactly; values pass through e4m3 rounding.
        let x = [448.0, -1.0625, 0.0, 3.0];
        let mut q = [0u8; 4];
        let (s, _) = quantize_fp8_group(&x, ScaleFormat::F32, &mut q);
        assert_eq!(s, 1.0);
        assert_eq!(q, [0x7E, 0xB8, 0x00, 0x44]);
        // ue8m0: amax 500 → s = 500/448 = 1.116 → scale 2 (byte 128); 500/2 = 250 → 256 (0x78).
        let x = [500.0, -1.0];
        let mut q = [0u8; 2];
        let (s, b) = quantize_fp8_group(&x, ScaleFormat::Ue8m0, &mut q);
        assert_eq!((s, b), (2.0, 128));
        assert_eq!(q, [0x78, 0xB0]); // -0.5 = -(1.0 · 2^-1): exp 6 → 0x30 | sign
                                     // All-zero group: amax floors at 1e-4, every byte 0.
        let x = [0.0f32; 5];
        let mut q = [9u8; 5];
        let (s, _) = quantize_fp8_group(&x, ScaleFormat::F32, &mut q);
        assert_eq!(s, 1e-4f32 / 448.0);
        assert_eq!(q, [0; 5]);
        // Non-finite group: scale NaN (byte 255), every byte 0x7F.
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let x = [1.0, bad, 2.0];
            let mut q = [0u8; 3];
            let (s, b) = quantize_fp8_group(&x, ScaleFormat::Ue8m0, &mut q);
            assert!(s.is_nan());
            assert_eq!(b, 255);
            assert_eq!(q, [0x7F; 3]);
        }
        // A negative value that rounds to zero is 0x80.
        let x = [448.0, -1e-6];
        let mut q = [0u8; 2];
        quantize_fp8_group(&x, ScaleFormat::F32, &mut q);
        assert_eq!(q, [0x7E, 0x80]);
    }

    #[test]
    fn quantize_int8_row_vectors() {
        // amax 127 → scale 1; ties to even: 2.5 → 2, -3.5 → -4, 0.5 → 0.
        let x = [127.0, 2.5, -3.5, 0.5, -127.0];
        let mut q = [0i8; 5];
        assert_eq!(quantize_int8_row(&x, &mut q), 1.0);
        assert_eq!(q, [127, 2, -4, 0, -127]);
        // All zero and tiny rows: scale 1, zeros.
        let mut q = [5i8; 3];
        assert_eq!(quantize_int8_row(&[0.0; 3], &mut q), 1.0);
        assert_eq!(q, [0; 3]);
        let tiny = f32::powi(2.0, -65);
        let mut q = [5i8; 2];
        assert_eq!(quantize_int8_row(&[tiny, -tiny], &mut q), 1.0);
        assert_eq!(q, [0; 2]);
        // Exactly 2^-64 is quantized normally.
        let t = f32::powi(2.0, -64);
        let mut q = [0i8; 2];
        assert_eq!(quantize_int8_row(&[t, -t], &mut q), t / 127.0);
        assert_eq!(q, [127, -127]);
        // Non-finite rows: NaN scale, zeros.
        let mut q = [5i8; 2];
        assert!(quantize_int8_row(&[1.0, f32::NEG_INFINITY], &mut q).is_nan());
        assert_eq!(q, [0; 2]);
    }

    #[test]
    fn nibble_order() {
        let b = pack_nibbles(&[0x1, 0x2, 0xF, 0x8, 0x3]);
        assert_eq!(b, vec![0x21, 0x8F, 0x03]);
        assert_eq!(nibble(&b, 0), 1);
        assert_eq!(nibble(&b, 1), 2);
        assert_eq!(nibble(&b, 3), 8);
        assert_eq!(unpack_nibbles(&b, 5), vec![1, 2, 0xF, 8, 3]);
    }

    #[test]
    fn e2m1_encode_ties_even() {
        assert_eq!(f32_to_e2m1(0.25), 0); // 0 (even) vs 0.5
        assert_eq!(f32_to_e2m1(2.5), 4); // 2 (code 4) vs 3 (code 5)
        assert_eq!(f32_to_e2m1(5.0), 6); // 4 (code 6) vs 6 (code 7)
        assert_eq!(f32_to_e2m1(100.0), 7);
        assert_eq!(f32_to_e2m1(-1.5), 0xB);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn fp8_quantize_then_dequantize_within_half_a_step(
                xs in proptest::collection::vec(-1e4f32..1e4f32, 1..128usize),
                ue in any::<bool>(),
            ) {
                let fmt = if ue { ScaleFormat::Ue8m0 } else { ScaleFormat::F32 };
                let mut q = vec![0u8; xs.len()];
                let (s, _) = quantize_fp8_group(&xs, fmt, &mut q);
                for (&v, &c) in xs.iter().zip(&q) {
                    let t = (v / s) as f64; // the f32 quotient that was rounded
                    let d = e4m3_to_f32(c) as f64;
                    // Half an e4m3 step at |t|: 2^(e-4) for a normal, 2^-10 in the subnormal range.
                    let e = if t.abs() < 1.0 / 64.0 { -6 } else { t.abs().log2().floor() as i32 };
                    let half = f64::powi(2.0, e - 4);
                    prop_assert!((d - t).abs() <= half, "x {} t {} decoded {}", v, t, d);
                }
            }

            #[test]
            fn int8_quantize_then_dequantize_within_half_a_step(
                xs in proptest::collection::vec(-1e3f32..1e3f32, 1..64usize),
            ) {
                let mut q = vec![0i8; xs.len()];
                let s = quantize_int8_row(&xs, &mut q);
                for (&v, &c) in xs.iter().zip(&q) {
                    let t = (v / s) as f64;
                    prop_assert!((c as f64 - t).abs() <= 0.5 + 1e-6 * t.abs(), "x {} t {} q {}", v, t, c);
                }
            }

            #[test]
            fn nibbles_round_trip(codes in proptest::collection::vec(0u8..16, 0..100usize)) {
                let b = pack_nibbles(&codes);
                prop_assert_eq!(b.len(), codes.len().div_ceil(2));
                prop_assert_eq!(unpack_nibbles(&b, codes.len()), codes);
            }
        }
    }
}
