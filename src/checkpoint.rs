//! Expert weights from safetensors checkpoints in DeepSeek's layout (OPS.md §6).
//!
//! Tensor names: `layers.{L}.ffn.experts.{E}.w{1,2,3}.{weight,scale}` for routed experts and
//! `layers.{L}.ffn.shared_experts.w{1,2,3}.{weight,scale}` for the shared expert; `w1` = gate,
//! `w3` = up, `w2` = down; `gate_up` = the rows of `w1` then the rows of `w3`.
//!
//! Dtypes: `I8` weights are packed FP4 (MXFP4: `[N, K/2]`, read as bytes) with `F8_E8M0` scales
//! `[N, K/32]`; `F8_E4M3` weights `[N, K]` are `fp8_block` with `F32` (or `F8_E8M0`) scales
//! `[⌈N/128⌉, ⌈K/128⌉]`. The file is memory-mapped; nothing is copied until [`QuantExperts::upload`]
//! writes each expert's bytes into the backend's buffer at its offset (the fused `gate_up` is
//! assembled there). The header is read by [`crate::pipeline::engram::header`] (not by the
//! `safetensors` crate, so that dtypes the crate does not name yet, `F8_E8M0`, are read): one
//! reader, with the same words, offsets and sizes as an Engram table's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use moehal_core::ops::WeightFormat;
use moehal_core::quant::FP8_BLOCK;
use moehal_core::{Backend, Buffer, DType, Error, Result};

const OP: &str = "checkpoint";

/// One tensor of the file: dtype name as the header writes it, shape, absolute byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// safetensors dtype (`"I8"`, `"F8_E4M3"`, `"F8_E8M0"`, `"F32"`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Byte range in the file.
    pub range: (usize, usize),
}

/// A memory-mapped safetensors file.
pub struct Checkpoint {
    path: PathBuf,
    map: Arc<memmap2::Mmap>,
    tensors: BTreeMap<String, TensorEntry>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Which projection of an expert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proj {
    /// `w1` rows then `w3` rows: `[2I, H]`.
    GateUp,
    /// `w2`: `[H, I]`.
    Down,
}

impl Checkpoint {
    /// Map `path` and read its header.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the file for an unreadable file or a malformed header.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::invalid(OP, "weights", format!("{}: {msg}", path.display()));
        // What the path is, before it is opened: opening a FIFO blocks until a writer appears,
        // and a device (`/dev/zero`) is no file to map (the same words as an Engram table's).
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if let Some(what) = crate::pipeline::engram::not_a_regular_file(&meta) {
            return Err(bad(what));
        }
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        // The same words, sizes and offsets as an Engram table's (issue 16 item 5).
        if let Some(problem) = crate::pipeline::engram::safetensors_header_problem(&file, meta.len()) {
            return Err(bad(problem));
        }
        // SAFETY: read-only private map of a file the user named; moehal never writes it (a
        // concurrent writer could change the bytes, as with any memory-mapped input).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(format!("mmap: {e}")))?;
        // The one safetensors header reader (an Engram table's too): fields, sizes against shapes,
        // and data_offsets that tile the data section, in words with offsets.
        let head = crate::pipeline::engram::header::parse(&map).map_err(bad)?;
        let hend = 8 + head.len;
        let mut tensors = BTreeMap::new();
        for t in head.tensors {
            // `parse` checked every range against the mapped file, so these fit in usize.
            let to_usize =
                |x: u64| usize::try_from(x).map_err(|_| bad(format!("tensor `{}`: {x} does not fit in usize", t.name)));
            let shape = t.shape.iter().map(|&d| to_usize(d)).collect::<Result<Vec<_>>>()?;
            let range = (to_usize(hend + t.data_offsets.0)?, to_usize(hend + t.data_offsets.1)?);
            tensors.insert(
                t.name.clone(),
                TensorEntry {
                    dtype: t.dtype.clone(),
                    shape,
                    range,
                },
            );
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            map: Arc::new(map),
            tensors,
        })
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> &BTreeMap<String, TensorEntry> {
        &self.tensors
    }

    /// The tensor `name`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the tensor and the file when it is missing.
    pub fn tensor(&self, name: &str) -> Result<&TensorEntry> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::invalid(OP, "weights", format!("{}: no tensor `{name}`", self.path.display())))
    }

    /// The bytes of a tensor (in the map; no copy).
    pub fn bytes(&self, t: &TensorEntry) -> &[u8] {
        &self.map[t.range.0..t.range.1]
    }

    /// Routed experts `layers.{layer}.ffn.experts.{E}` present in the file for this layer (`E` = 0, 1, ... while `w1.weight` exists).
    pub fn routed_experts(&self, layer: usize) -> usize {
        (0..)
            .take_while(|e| {
                self.tensors
                    .contains_key(&format!("layers.{layer}.ffn.experts.{e}.w1.weight"))
            })
            .count()
    }

    /// Routed experts `experts` of `layer`, projection `proj`, stacked as `[G, N, ...]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the tensor for a missing key, an unexpected dtype or shape,
    /// or experts that disagree.
    pub fn experts(&self, layer: usize, proj: Proj, experts: &[usize]) -> Result<QuantExperts<'_>> {
        let prefixes: Vec<String> = experts
            .iter()
            .map(|e| format!("layers.{layer}.ffn.experts.{e}"))
            .collect();
        self.stack(&prefixes, proj)
    }

    /// The shared expert of `layer`, projection `proj` (`G = 1`).
    ///
    /// # Errors
    /// As [`experts`](Self::experts).
    pub fn shared_expert(&self, layer: usize, proj: Proj) -> Result<QuantExperts<'_>> {
        self.stack(&[format!("layers.{layer}.ffn.shared_experts")], proj)
    }

    /// Stack the matrices `mats` of every expert `prefixes`: every weight and scale tensor must
    /// have the dtype and shape of the first expert's `w1` (for `gate_up`: `w1` and `w3` both
    /// `[N, K]`, so the fused `[2N, K]` splits at `N` for every expert) or `w2` (for `down`).
    fn stack(&self, prefixes: &[String], proj: Proj) -> Result<QuantExperts<'_>> {
        let mats: &[&str] = match proj {
            Proj::GateUp => &["w1", "w3"],
            Proj::Down => &["w2"],
        };
        let mut parts = Vec::new();
        // The first matrix: its weight and scale entries (with names) and what they describe.
        let mut first: Option<(String, &TensorEntry, &TensorEntry, WeightFormat, DType, usize, usize)> = None;
        for p in prefixes {
            for m in mats {
                let (wn, sn) = (format!("{p}.{m}.weight"), format!("{p}.{m}.scale"));
                let (w, s) = (self.tensor(&wn)?, self.tensor(&sn)?);
                match &first {
                    Some((n0, w0, s0, ..)) => {
                        // Same dtype and shape as the first expert's first matrix, weight and scale.
                        if (&w.dtype, &w.shape) != (&w0.dtype, &w0.shape) {
                            return Err(self.bad(
                                &wn,
                                format!(
                                    "{} {:?}, expected {} {:?} (as `{n0}`: every expert's {} has one shape)",
                                    w.dtype,
                                    w.shape,
                                    w0.dtype,
                                    w0.shape,
                                    mats.join(" and ")
                                ),
                            ));
                        }
                        if (&s.dtype, &s.shape) != (&s0.dtype, &s0.shape) {
                            let s0n = n0.replace(".weight", ".scale");
                            return Err(self.bad(
                                &sn,
                                format!(
                                    "{} {:?}, expected {} {:?} (as `{s0n}`)",
                                    s.dtype, s.shape, s0.dtype, s0.shape
                                ),
                            ));
                        }
                    }
                    None => {
                        let (fmt, sdt, n, k) = self.describe(&wn, w, &sn, s, proj == Proj::GateUp)?;
                        first = Some((wn.clone(), w, s, fmt, sdt, n, k));
                    }
                }
                parts.push((self.bytes(w), self.bytes(s)));
            }
        }
        let (_, _, _, format, scale_dtype, n1, k) =
            first.ok_or_else(|| Error::invalid(OP, "experts", "no experts requested"))?;
        Ok(QuantExperts {
            format,
            scale_dtype,
            groups: prefixes.len(),
            n: n1 * mats.len(),
            k,
            parts,
        })
    }

    fn bad(&self, tensor: &str, msg: String) -> Error {
        Error::invalid(
            OP,
            "weights",
            format!("{}: tensor `{tensor}`: {msg}", self.path.display()),
        )
    }

    /// Format, scale dtype, N and K of one weight / scale pair, checked.
    fn describe(
        &self,
        wn: &str,
        w: &TensorEntry,
        sn: &str,
        s: &TensorEntry,
        fused: bool,
    ) -> Result<(WeightFormat, DType, usize, usize)> {
        if w.shape.len() != 2 {
            return Err(self.bad(wn, format!("shape {:?}, expected [N, K] (2-D)", w.shape)));
        }
        if s.shape.len() != 2 {
            return Err(self.bad(sn, format!("shape {:?}, expected 2-D", s.shape)));
        }
        let n = w.shape[0];
        if w.shape.contains(&0) {
            // An empty expert computes nothing; a layer of them would "pass" any comparison.
            return Err(self.bad(
                wn,
                format!("shape {:?} has a zero size: N and K must be at least 1", w.shape),
            ));
        }
        let (fmt, k, want_scale, sdt) = match w.dtype.as_str() {
            "I8" => {
                let k = w.shape[1] * 2;
                if s.dtype != "F8_E8M0" {
                    return Err(self.bad(sn, format!("dtype {}, expected F8_E8M0 (MXFP4 scales)", s.dtype)));
                }
                if k % 32 != 0 {
                    return Err(self.bad(wn, format!("K = {k} is not a multiple of 32 (MXFP4)")));
                }
                (WeightFormat::Mxfp4, k, vec![n, k / 32], DType::U8)
            }
            "F8_E4M3" => {
                let k = w.shape[1];
                let sdt = match s.dtype.as_str() {
                    "F32" => DType::F32,
                    "F8_E8M0" => DType::U8,
                    other => {
                        return Err(self.bad(sn, format!("dtype {other}, expected F32 or F8_E8M0 (fp8 block scales)")))
                    }
                };
                if fused && n % FP8_BLOCK != 0 {
                    return Err(self.bad(
                        wn,
                        format!("N = {n} is not a multiple of 128: fused gate_up blocks would straddle w1 and w3"),
                    ));
                }
                (
                    WeightFormat::Fp8Block,
                    k,
                    vec![n.div_ceil(FP8_BLOCK), k.div_ceil(FP8_BLOCK)],
                    sdt,
                )
            }
            other => return Err(self.bad(wn, format!("dtype {other}, expected I8 (packed FP4) or F8_E4M3"))),
        };
        if s.shape != want_scale {
            return Err(self.bad(sn, format!("shape {:?}, expected {want_scale:?}", s.shape)));
        }
        Ok((fmt, sdt, n, k))
    }
}

/// Quantized weights of `G` experts (or the shared expert), still in the map: per expert, per
/// matrix (`w1`, `w3` for `gate_up`), the weight bytes and the scale bytes.
#[derive(Debug)]
pub struct QuantExperts<'a> {
    /// Format.
    pub format: WeightFormat,
    /// Scale dtype (f32, or u8 E8M0).
    pub scale_dtype: DType,
    /// Experts G.
    pub groups: usize,
    /// Output features N (for `gate_up`, `2I`).
    pub n: usize,
    /// Input features K (elements).
    pub k: usize,
    parts: Vec<(&'a [u8], &'a [u8])>,
}

impl QuantExperts<'_> {
    /// Shape of the stacked weight tensor.
    pub fn w_shape(&self) -> [usize; 3] {
        self.format.w_shape(self.groups, self.n, self.k)
    }
    /// Shape of the stacked scale tensor.
    pub fn scale_shape(&self) -> Vec<usize> {
        self.format.scale_shape(self.groups, self.n, self.k)
    }

    /// Copy the stacked weights and scales into two new buffers of `be` (the only copy: each
    /// expert's bytes go straight from the map to their offset in the backend's memory).
    ///
    /// # Errors
    /// The backend's allocation and upload errors.
    pub fn upload(&self, be: &dyn Backend) -> Result<(Buffer, Buffer)> {
        let wb: usize = self.parts.iter().map(|p| p.0.len()).sum();
        let sb: usize = self.parts.iter().map(|p| p.1.len()).sum();
        let mut w = be.alloc(wb.max(1))?;
        let mut s = be.alloc(sb.max(1))?;
        let (mut wo, mut so) = (0, 0);
        for (pw, ps) in &self.parts {
            be.upload(&mut w, wo, pw)?;
            be.upload(&mut s, so, ps)?;
            wo += pw.len();
            so += ps.len();
        }
        Ok((w, s))
    }

    /// Bytes of the stacked weights plus scales (what [`upload`](Self::upload) allocates).
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.0.len() + p.1.len()).sum()
    }

    /// The stacked weight and scale bytes on the host (a copy; for tests and tools).
    pub fn to_host(&self) -> (Vec<u8>, Vec<u8>) {
        let mut w = Vec::new();
        let mut s = Vec::new();
        for (pw, ps) in &self.parts {
            w.extend_from_slice(pw);
            s.extend_from_slice(ps);
        }
        (w, s)
    }
}
