//! Pipelines built from the ops of `OPS.md`: a full MoE layer ([`moe`]) and the Engram
//! tokenizer → hash → gather path ([`engram`]), plus the small host utilities they share
//! (seeded random tensors, transfers of typed data, relative error, memory budget).
//!
//! Everything here runs on any [`Backend`]: the pipelines only allocate, upload, run ops and
//! download through the trait, so the same code drives the reference, the CPU, CUDA and Ascend.

pub mod engram;
pub mod ep;
pub mod moe;

use half::{bf16, f16};
use moehal_core::{Backend, Buffer, DType, Error, Result};

/// The kit's float encoder and seeded in-place filler (one generator for check, bench and the
/// pipelines).
pub use moehal_testkit::rng::{encode_floats, fill_random};
/// A seed for the independent stream `stream` of `seed` (the test kit's one generator,
/// [`moehal_testkit::rng`]: ChaCha8, also behind every conformance case's inputs).
pub use moehal_testkit::rng::{stream_seed, UniformStream};

/// `n` seeded uniform values in `[-scale, scale)` encoded as `dtype`, generated on all cores
/// (deterministic: element `i` is `scale` times element `first + i` of [`UniformStream`] `seed`,
/// whatever the split).
///
/// # Errors
/// As [`encode_floats`].
pub fn random_floats(dtype: DType, n: usize, scale: f32, seed: u64, first: u64) -> Result<Vec<u8>> {
    let mut out = vec![0u8; n * dtype.size()];
    fill_random(dtype, &mut out, scale, seed, first)?;
    Ok(out)
}

/// Widen `dtype` bytes (`f32`, `bf16`, `f16`) to f32.
///
/// # Errors
/// [`Error::InvalidArgument`] for a non-floating dtype.
pub fn decode_floats(dtype: DType, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::invalid(
                "pipeline",
                "dtype",
                format!("{other} is not a float type"),
            ))
        }
    })
}

/// Allocate a buffer on `backend` holding `bytes`.
///
/// # Errors
/// As [`Backend::alloc`] / [`Backend::upload`].
pub fn upload_bytes(backend: &dyn Backend, bytes: &[u8]) -> Result<Buffer> {
    let mut b = backend.alloc(bytes.len())?;
    backend.upload(&mut b, 0, bytes)?;
    Ok(b)
}

/// Download `n` elements of the floating `dtype` from `buf`, widened to f32.
///
/// # Errors
/// As [`Backend::download`] and [`decode_floats`].
pub fn download_floats(backend: &dyn Backend, buf: &Buffer, dtype: DType, n: usize) -> Result<Vec<f32>> {
    let mut bytes = vec![0u8; n * dtype.size()];
    backend.download(buf, 0, &mut bytes)?;
    decode_floats(dtype, &bytes)
}

/// Relative error `‖out − ref‖₂ / ‖ref‖₂` in f64 (OPS.md, Conformance): the test kit's measure
/// ([`moehal_testkit::rel_error`]) over the elements where the reference is not NaN, infinities
/// that equal the reference's skipped. A NaN in `out` where the reference has none, a non-NaN where
/// the reference has NaN (NaN must stay NaN), an infinity the reference does not have, a length
/// mismatch, or any difference from an all-zero reference gives infinity; `0/0` gives 0. How many
/// outputs are NaN is [`nan_count`]'s to say: an all-NaN output equal to an all-NaN reference is
/// 0 here.
pub fn rel_error(out: &[f32], reference: &[f32]) -> f64 {
    match moehal_testkit::rel_error(out, reference, |_| true) {
        Err(_) => f64::INFINITY,
        // Relative to a reference of zeros any difference is unbounded (the kit, whose measure
        // this is, takes the absolute norm there).
        Ok(e) if e > 0.0 && reference.iter().all(|&r| r == 0.0 || !r.is_finite()) => f64::INFINITY,
        Ok(e) => e,
    }
}

/// Why a verdict over `reference` would compare no value, or `None` when at least one value is
/// compared: an empty output, or one whose every element is NaN in the reference ([`rel_error`]
/// skips those). Issue 16: such a verdict is not a PASS; the CLI prints `NOT CHECKED: <why>` and
/// exits with status 1 (check, engram, moe).
pub fn nothing_compared(reference: &[f32]) -> Option<String> {
    if reference.is_empty() {
        Some("no output values to compare".into())
    } else if reference.iter().all(|x| x.is_nan()) {
        Some(format!(
            "every output is NaN ({} of {} in the reference)",
            reference.len(),
            reference.len()
        ))
    } else {
        None
    }
}

/// NaN elements of an output (reported beside [`rel_error`], which compares only the others).
pub fn nan_count(v: &[f32]) -> usize {
    v.iter().filter(|x| x.is_nan()).count()
}

/// The relative-error tolerance of `OPS.md` §Conformance for outputs of `dtype` (the test kit's
/// one table: f32 1e-5, f16 2e-3, bf16 1e-2, integer dtypes exact).
pub use moehal_testkit::tolerance;

/// Bytes of memory the OS reports available (on Linux `MemAvailable` of `/proc/meminfo`, read by
/// `sysinfo`), if known.
pub fn available_memory() -> Option<u64> {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    Some(sys.available_memory()).filter(|&b| b > 0)
}

/// Whether the backend's buffers are host memory (reference, CPU) rather than device memory.
pub fn is_host_backend(backend: &dyn Backend) -> bool {
    backend.device_info().host_memory
}

/// Format a byte count with a binary unit (`"1.2 GiB"`, `"512 B"`; `bytesize`'s IEC form). Negative
/// and NaN counts print as 0 B; counts past `u64::MAX` saturate.
pub fn human_bytes(b: f64) -> String {
    // `as` saturates (NaN to 0).
    bytesize::ByteSize::b(b.max(0.0) as u64).to_string()
}

/// Format seconds with a fitting unit (`"12.3 ms"`).
pub fn human_seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
        assert_eq!(human_bytes(-5.0), "0 B");
        assert_eq!(human_bytes(f64::NAN), "0 B");
        assert!(
            available_memory().is_some_and(|b| b > 1 << 20),
            "the OS reports available memory"
        );
    }

    #[test]
    fn random_is_chunking_independent() {
        let a = random_floats(DType::BF16, 200_000, 0.5, 7, 0).unwrap();
        let mut b = vec![0u8; a.len()];
        let (lo, hi) = b.split_at_mut(2 * 12_345);
        let mut u = UniformStream::at(7, 0);
        encode_floats(DType::BF16, lo, |_| 0.5 * u.next_f32()).unwrap();
        fill_random(DType::BF16, hi, 0.5, 7, 12_345).unwrap();
        assert_eq!(a, b);
        let v = decode_floats(DType::BF16, &a).unwrap();
        assert!(v.iter().all(|x| (-0.5..=0.5).contains(x)));
        let mean: f64 = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn rel_error_basics() {
        assert_eq!(rel_error(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        let e = rel_error(&[3.0, 0.0], &[4.0, 0.0]);
        assert!((e - 0.25).abs() < 1e-12);
        assert!(rel_error(&[f32::NAN], &[1.0]).is_infinite());
        assert!(rel_error(&[1.0], &[f32::NAN]).is_infinite(), "NaN must stay NaN");
        assert_eq!(rel_error(&[f32::NAN, 2.0], &[f32::NAN, 2.0]), 0.0);
        assert_eq!(nan_count(&[f32::NAN, 2.0, f32::NAN]), 2);
        // A verdict over no compared value is not a pass (issue 16).
        assert!(nothing_compared(&[f32::NAN, f32::NAN]).is_some_and(|w| w.contains("every output is NaN")));
        assert!(nothing_compared(&[]).is_some());
        assert_eq!(nothing_compared(&[f32::NAN, 0.0]), None);
        assert!(rel_error(&[1.0], &[1.0, 2.0]).is_infinite());
        // The kit's measure: an infinity the reference has is skipped, one it lacks is infinite;
        // any difference from an all-zero reference is infinite here.
        assert_eq!(rel_error(&[f32::INFINITY, 2.0], &[f32::INFINITY, 2.0]), 0.0);
        assert!(rel_error(&[f32::INFINITY, 2.0], &[1.0, 2.0]).is_infinite());
        assert!(rel_error(&[1e-9, 0.0], &[0.0, 0.0]).is_infinite());
        assert_eq!(rel_error(&[0.0, 0.0], &[0.0, 0.0]), 0.0);
    }
}
