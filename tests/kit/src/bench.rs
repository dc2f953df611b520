//! The benchmark cases of `moehal bench` and the criterion benches: one op on one shape
//! ([`Shape`]), which knows its label, FLOPs and bytes ([`crate::cost`]), the byte sizes of its
//! inputs and outputs, and fills its seeded inputs in place ([`Shape::fill_inputs`]).
//!
//! Bench tensors can be 2 GiB (a gather table of 2^22 × 256), so nothing here materialises an
//! input: the caller allocates one buffer per [`Shape::input_sizes`] entry (host memory that a
//! host backend reads in place, or a staging buffer of a device upload) and the filler writes the
//! values into it. Only the `group_end` lists (E integers each) exist as `Vec`s on the way.
//! `moehal::bench` binds a filled shape to a backend and times it.

use moehal_core::engram::{derive_primes, v41_flash, EngramLayer};
use moehal_core::ops::{ActFormat, QuantDesc, RouterConfig, WeightFormat};
use moehal_core::quant::{ScaleFormat, FP8_BLOCK};
use moehal_core::{DType, Error, Result};

use crate::quant::QuantSpec;
use crate::rng::{cold_group_ends, routed_group_end, seeded, stream_seed};
use crate::{cost, LayerChoice, Logits, Spec};
use moehal_core::ops::TableFormat;

/// The shape of one benchmark.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// `grouped_gemm` NK: `E` experts of `[N, K]`, `T` tokens routed to `topk` distinct experts
    /// each (uniformly at random, seeded), so `M = T * topk`.
    Gemm {
        /// Experts E.
        num_experts: usize,
        /// Input features K.
        k: usize,
        /// Output features N.
        n: usize,
        /// Tokens T.
        tokens: usize,
        /// Experts per token.
        topk: usize,
    },
    /// Cold decode: `grouped_gemm` NK of one token routed to `topk` experts out of `E`, where run `i`
    /// uses expert set `i % sets` and the sets are disjoint, so between two uses of a set the other
    /// sets' weights (`(sets - 1) * topk` experts) pass through the caches: with more bytes than the
    /// last-level cache holds, every run reads its weights from DRAM (as peers.py `decode`).
    DecodeCold {
        /// Experts E.
        num_experts: usize,
        /// Input features K.
        k: usize,
        /// Output features N.
        n: usize,
        /// Experts per token (rows M of one run).
        topk: usize,
        /// Disjoint expert sets rotated over (at most `E / topk`).
        sets: usize,
        /// Bytes of the last-level cache the rotation was sized for (`moehal::bench::l3_cache`);
        /// the same-run DRAM read streams `moehal::bench::dram_read_bytes(l3)`.
        l3: usize,
    },
    /// `router_topk` on `[T, E]` f32 logits.
    Router {
        /// Tokens T.
        tokens: usize,
        /// Experts E.
        num_experts: usize,
        /// Router options.
        config: RouterConfig,
        /// With a selection bias.
        bias: bool,
    },
    /// `moe_permute` of `[T, H]` activations by `[T, k]` ids.
    Permute {
        /// Tokens T.
        tokens: usize,
        /// Experts E.
        num_experts: usize,
        /// Experts per token.
        topk: usize,
        /// Hidden H.
        hidden: usize,
    },
    /// `swiglu` of `[M, 2I]`.
    Swiglu {
        /// Rows M.
        rows: usize,
        /// Width I.
        width: usize,
        /// Clamp.
        limit: Option<f32>,
    },
    /// `moe_combine` of `[T*k, H]` into `[T, H]`.
    Combine {
        /// Tokens T.
        tokens: usize,
        /// Experts per token.
        topk: usize,
        /// Hidden H.
        hidden: usize,
    },
    /// `engram_hash` of `T` ids with the DeepSeek-V4.1-Flash layer-1 configuration.
    Hash {
        /// Tokens T.
        tokens: usize,
    },
    /// `gather_rows` of `T * C` random rows from a `[R, D]` table (output dtype = table dtype).
    Gather {
        /// Table rows R.
        table_rows: usize,
        /// Row dim D.
        dim: usize,
        /// Tokens T.
        tokens: usize,
        /// Rows per token C.
        cols: usize,
    },
    /// `engram_lookup` (hash + gather) of `T` uniform ids in `[0, V')` through a layer of order
    /// N = 2 with K = 8 heads (so C = 8 columns), the V4.1-Flash layer-1 multipliers truncated to
    /// N = 2, its V' and pad id, and primes derived from `vocab_n` (see [`lookup_layer`]), into a
    /// `[R, D]` table, `R` = the sum of the primes (output dtype = table dtype).
    Lookup {
        /// Base of the prime search (`R` is about `8 * vocab_n`).
        vocab_n: u64,
        /// Table rows R = sum of the layer's primes.
        table_rows: usize,
        /// Row dim D.
        dim: usize,
        /// Tokens T.
        tokens: usize,
    },
    /// Quantized `grouped_gemm` NK (OPS.md §6): as [`Shape::Gemm`] with `sets: None`; with
    /// `sets: Some(s)` (and one token) the cold decode of [`Shape::DecodeCold`], rotating over `s`
    /// disjoint expert sets.
    QGemm {
        /// Weight format.
        w: WeightFormat,
        /// Activation format (`Float(bf16)`: weight-only).
        x: ActFormat,
        /// Experts E.
        num_experts: usize,
        /// Input features K.
        k: usize,
        /// Output features N.
        n: usize,
        /// Tokens T.
        tokens: usize,
        /// Experts per token.
        topk: usize,
        /// Disjoint expert sets rotated over (cold decode), or `None`.
        sets: Option<usize>,
    },
    /// `quantize_fp8` (`scale: Some(format)`) or `quantize_int8` (`scale: None`) of `[rows, k]`
    /// activations of the shape's dtype.
    Quantize {
        /// fp8 scale format, or `None` for int8.
        scale: Option<ScaleFormat>,
        /// Rows M.
        rows: usize,
        /// Columns K.
        k: usize,
    },
}

/// Columns C of the [`Shape::Lookup`] layer (N = 2, K = 8).
pub const LOOKUP_COLUMNS: usize = 8;

/// Output dtype of the quantized GEMM rows with quantized activations (bf16, as the float
/// baseline).
const QGEMM_Y: DType = DType::BF16;

/// The layer of a [`Shape::Lookup`] shape: `derive_primes(vocab_n, 2, 8, 1)`, the
/// V4.1-Flash layer-1 multipliers truncated to N = 2, `V' = v41_flash::VOCAB_SIZE`,
/// `π = v41_flash::PAD_ID`. Its table has `R = sum of the 8 primes ≈ 8 * vocab_n` rows.
///
/// # Errors
/// [`Error::InvalidArgument`] from [`derive_primes`] / [`EngramLayer::new`] (no prime search
/// base the bench uses fails).
pub fn lookup_layer(vocab_n: u64) -> Result<EngramLayer> {
    let mut primes = derive_primes(vocab_n, 2, LOOKUP_COLUMNS, 1)?;
    let p = primes.pop().unwrap_or_default();
    EngramLayer::new(
        2,
        LOOKUP_COLUMNS,
        v41_flash::MULTIPLIERS[0][..2].to_vec(),
        p,
        v41_flash::VOCAB_SIZE,
        v41_flash::PAD_ID,
    )
}

/// `a · b · …` in `usize`, or [`Error::InvalidArgument`] (op `bench`) naming `what` when the
/// product overflows (sizes come from user input such as `--tokens`).
///
/// # Errors
/// As above.
pub fn size(what: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
            Error::invalid("bench", what, format!("{} bytes overflow usize", dims.join(" x ")))
        })
}

/// `y`'s dtype of a quantized GEMM row: `x`'s for float `x`, else bf16.
pub fn qgemm_y(x: ActFormat) -> DType {
    match x {
        ActFormat::Float(d) => d,
        _ => QGEMM_Y,
    }
}

/// Bytes of one expert's weights and scales (`[N, K]` in `w`; [`WeightFormat::bytes`]).
pub fn expert_bytes(w: WeightFormat, n: usize, k: usize) -> usize {
    w.bytes(1, n, k)
}

/// Byte sizes of the activation buffers of `m` rows of `k` in format `x`: the values, then the
/// scales for quantized `x` (checked: `m` comes from `--tokens`).
fn act_sizes(x: ActFormat, m: usize, k: usize) -> Result<Vec<usize>> {
    Ok(match x {
        ActFormat::Float(d) => vec![size("x", &[m, k, d.size()])?],
        ActFormat::Fp8 => vec![size("x", &[m, k])?, size("x_scale", &[m, k.div_ceil(FP8_BLOCK), 4])?],
        ActFormat::Int8 => vec![size("x", &[m, k])?, size("x_scale", &[m, 4])?],
    })
}

/// The rows of each group of a non-decreasing `group_end` `ends`.
fn groups_of(ends: &[i64]) -> Vec<usize> {
    let mut prev = 0;
    ends.iter()
        .map(|&e| {
            let rows = (e - prev) as usize;
            prev = e;
            rows
        })
        .collect()
}

/// The grouped GEMM NK spec of `dtype`, `[N, K]` experts, whose `group_end` is `ends` (no
/// bias, no row scale, no tail).
fn gemm_spec(dtype: DType, n: usize, k: usize, ends: &[i64]) -> Spec {
    Spec::GroupedGemm {
        dtype,
        layout: moehal_core::ops::WeightLayout::NK,
        groups: groups_of(ends),
        tail: 0,
        n,
        k,
        bias: false,
        row_scale: false,
        bad_group_end: false,
    }
}

/// The quantized grouped GEMM NK spec (OPS.md §6) of weights `w`, activations `x`, `[N, K]`
/// experts, whose `group_end` is `ends`: `y` of [`qgemm_y`], f32 scales except mxfp4's E8M0
/// weight scales (the buffers [`Shape::input_sizes`] sizes), no bias, no row scale, no tail.
fn qgemm_spec(w: WeightFormat, x: ActFormat, n: usize, k: usize, ends: &[i64]) -> Spec {
    Spec::Quant(QuantSpec::Gemm {
        w,
        x,
        y: qgemm_y(x),
        w_e8m0: w == WeightFormat::Mxfp4,
        x_e8m0: false,
        groups: groups_of(ends),
        tail: 0,
        n,
        k,
        bias: false,
        row_scale: false,
    })
}

/// A §6 GEMM shape's buffers as its spec's inputs, and the buffers after them
/// ([`qgemm_spec_order`]).
type SpecOrder<'a, 'b> = (Vec<&'a mut [u8]>, &'a mut [&'b mut [u8]]);

/// The buffers of a §6 GEMM shape ([`Shape::input_sizes`] order: `x`, `w`, `w_scale`, then
/// `x_scale` for quantized `x`, then the `group_end`s) as the inputs of its spec
/// ([`Spec::input_layout`] order: `x`, `x_scale`, `w`, `w_scale`, `group_end`, taking the first
/// `group_end`), and the later `group_end` buffers. The one place the two orders meet (the bench
/// executor, `moehal::bench_quant::run_qgemm`, reads the shape's order).
///
/// # Errors
/// [`Error::InvalidArgument`] (field `inputs`) when `bufs` holds fewer buffers than that.
fn qgemm_spec_order<'a, 'b>(x: ActFormat, bufs: &'a mut [&'b mut [u8]]) -> Result<SpecOrder<'a, 'b>> {
    let data = if matches!(x, ActFormat::Float(_)) { 3 } else { 4 };
    if bufs.len() <= data {
        return Err(Error::invalid("bench", "inputs", format!("{} buffers", bufs.len())));
    }
    let (head, later) = bufs.split_at_mut(data + 1);
    let spec = match head {
        [x, w, ws, ge] => vec![&mut **x, &mut **w, &mut **ws, &mut **ge],
        [x, w, ws, xs, ge] => vec![&mut **x, &mut **xs, &mut **w, &mut **ws, &mut **ge],
        _ => unreachable!("split at 4 or 5"),
    };
    Ok((spec, later))
}

impl Shape {
    /// Short shape string for tables and JSON (`"E128 K2048 N1536 T16 top8"`).
    pub fn label(&self) -> String {
        match self {
            Shape::Gemm {
                num_experts,
                k,
                n,
                tokens,
                topk,
            } => {
                format!("E{num_experts} K{k} N{n} T{tokens} top{topk}")
            }
            Shape::DecodeCold {
                num_experts,
                k,
                n,
                topk,
                sets,
                ..
            } => format!("E{num_experts} K{k} N{n} T1 top{topk} cold ({sets} sets)"),
            Shape::Router {
                tokens,
                num_experts,
                config,
                ..
            } => {
                let g = match config.effective_group() {
                    Some(g) => format!(" groups {}/{} {}", g.n_group, g.topk_group, g.score.name()),
                    None => String::new(),
                };
                format!(
                    "T{tokens} E{num_experts} top{} {}{g}",
                    config.topk,
                    config.scoring.name()
                )
            }
            Shape::Permute {
                tokens,
                num_experts,
                topk,
                hidden,
            } => format!("T{tokens} E{num_experts} top{topk} H{hidden}"),
            Shape::Swiglu { rows, width, limit } => match limit {
                Some(l) => format!("M{rows} I{width} limit {l}"),
                None => format!("M{rows} I{width}"),
            },
            Shape::Combine { tokens, topk, hidden } => format!("T{tokens} top{topk} H{hidden}"),
            Shape::Hash { tokens } => format!("T{tokens} V4.1 layer 1 (N4 K8)"),
            Shape::Gather {
                table_rows,
                dim,
                tokens,
                cols,
            } => {
                format!("R{table_rows} D{dim} T{tokens} C{cols}")
            }
            Shape::Lookup {
                table_rows,
                dim,
                tokens,
                ..
            } => format!("R{table_rows} D{dim} T{tokens} C{LOOKUP_COLUMNS} (N2 K8)"),
            Shape::QGemm {
                num_experts,
                k,
                n,
                tokens,
                topk,
                sets,
                ..
            } => match sets {
                Some(s) => format!("E{num_experts} K{k} N{n} T1 top{topk} cold ({s} sets)"),
                None => format!("E{num_experts} K{k} N{n} T{tokens} top{topk}"),
            },
            Shape::Quantize { rows, k, .. } => format!("M{rows} K{k}"),
        }
    }

    /// The dtype column for data dtype `dtype`: the dtype, or for §6 shapes the pairing
    /// (`"mxfp4 x bf16 -> bf16"`) or the quantize variant (`"bf16 -> e4m3 + ue8m0"`).
    pub fn dtype_label(&self, dtype: DType) -> String {
        match *self {
            Shape::QGemm { w, x, .. } => QuantDesc::GroupedGemm { w, x, y: qgemm_y(x) }.variant(),
            Shape::Quantize { scale: Some(scale), .. } => QuantDesc::QuantizeFp8 { dtype, scale }.variant(),
            Shape::Quantize { scale: None, .. } => QuantDesc::QuantizeInt8 { dtype }.variant(),
            _ => dtype.name().to_string(),
        }
    }

    /// Floating-point operations of one run (grouped GEMM: `2*M*N*K`, [`cost::gemm_flops`]);
    /// `None` for the data-movement ops.
    pub fn flops(&self) -> Option<f64> {
        match *self {
            // Saturating: a shape whose rows overflow never passes a memory check, so never runs.
            Shape::Gemm { k, n, tokens, topk, .. } | Shape::QGemm { k, n, tokens, topk, .. } => {
                Some(cost::gemm_flops(tokens.saturating_mul(topk), n, k))
            }
            Shape::DecodeCold { k, n, topk, .. } => Some(cost::gemm_flops(topk, n, k)),
            _ => None,
        }
    }

    /// Bytes that define the op's bandwidth for data dtype `dtype` ([`crate::cost`]): weights of
    /// the active experts (GEMM; an upper bound of the experts touched: `min(E, M)`; `topk` for
    /// cold decode), logits read (router), rows moved (glue), ids read and rows written (hash),
    /// bytes gathered (gather, lookup: `T * C * D * es`), `x` read plus `xq` and the scales
    /// written (quantize).
    pub fn bytes(&self, dtype: DType) -> f64 {
        let es = dtype.size();
        match *self {
            Shape::Gemm {
                num_experts,
                k,
                n,
                tokens,
                topk,
            } => cost::gemm_bytes(num_experts.min(tokens.saturating_mul(topk)), n, k, es),
            Shape::DecodeCold { k, n, topk, .. } => cost::gemm_bytes(topk, n, k, es),
            Shape::Router {
                tokens, num_experts, ..
            } => cost::router_bytes(tokens, num_experts, 4),
            Shape::Permute {
                tokens, topk, hidden, ..
            } => cost::permute_bytes(tokens, topk, hidden, es),
            Shape::Swiglu { rows, width, .. } => cost::swiglu_bytes(rows, width, es),
            Shape::Combine { tokens, topk, hidden } => cost::combine_bytes(tokens, topk, hidden, es),
            Shape::Hash { tokens } => cost::hash_bytes(tokens, 3 * v41_flash::HEADS),
            Shape::Gather { dim, tokens, cols, .. } => cost::gather_bytes(tokens, cols, dim, es),
            Shape::Lookup { dim, tokens, .. } => cost::gather_bytes(tokens, LOOKUP_COLUMNS, dim, es),
            Shape::QGemm {
                w,
                num_experts,
                k,
                n,
                tokens,
                topk,
                sets,
                ..
            } => {
                let used = if sets.is_some() {
                    topk
                } else {
                    num_experts.min(tokens.saturating_mul(topk))
                };
                (used * expert_bytes(w, n, k)) as f64
            }
            Shape::Quantize { rows, k, .. } => {
                let out: f64 = self
                    .output_sizes(dtype)
                    .map_or(0.0, |v| v.iter().map(|&b| b as f64).sum());
                rows as f64 * k as f64 * es as f64 + out
            }
        }
    }

    /// Byte sizes of the input buffers [`fill_inputs`](Self::fill_inputs) writes, in its order
    /// (the ops of [`spec`](Self::spec): [`Spec::input_layout`]'s order; the GEMMs: data buffers,
    /// then one `group_end` per expert set; §6 GEMMs:
    /// `x`, `w`, `w_scale`, `x_scale` for quantized `x`, then the `group_end`s).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a size overflows `usize` (a token count no machine holds).
    pub fn input_sizes(&self, dtype: DType) -> Result<Vec<usize>> {
        let es = dtype.size();
        Ok(match *self {
            Shape::Gemm {
                num_experts,
                k,
                n,
                tokens,
                topk,
            } => vec![
                size("x", &[tokens, topk, k, es])?,
                size("w", &[num_experts, n, k, es])?,
                size("group_end", &[num_experts, 8])?,
            ],
            Shape::DecodeCold {
                num_experts,
                k,
                n,
                topk,
                sets,
                ..
            } => {
                let mut v = vec![size("x", &[topk, k, es])?, size("w", &[num_experts, n, k, es])?];
                v.extend(std::iter::repeat_n(size("group_end", &[num_experts, 8])?, sets));
                v
            }
            Shape::Router {
                tokens,
                num_experts,
                bias,
                ..
            } => {
                let mut v = vec![size("logits", &[tokens, num_experts, 4])?];
                if bias {
                    v.push(size("bias", &[num_experts, 4])?);
                }
                v
            }
            Shape::Permute {
                tokens, topk, hidden, ..
            } => vec![size("ids", &[tokens, topk, 4])?, size("x", &[tokens, hidden, es])?],
            Shape::Swiglu { rows, width, .. } => vec![size("h", &[rows, 2, width, es])?],
            Shape::Combine { tokens, topk, hidden } => vec![
                size("y_perm", &[tokens, topk, hidden, es])?,
                size("slot_row", &[tokens, topk, 8])?,
                size("weights", &[tokens, topk, 4])?,
            ],
            Shape::Hash { tokens } => vec![size("ids", &[tokens, 8])?],
            Shape::Gather {
                table_rows,
                dim,
                tokens,
                cols,
            } => vec![
                size("table", &[table_rows, dim, es])?,
                size("rows", &[tokens, cols, 8])?,
            ],
            Shape::Lookup {
                table_rows,
                dim,
                tokens,
                ..
            } => vec![size("table", &[table_rows, dim, es])?, size("ids", &[tokens, 8])?],
            Shape::QGemm {
                w,
                x,
                num_experts,
                k,
                n,
                tokens,
                topk,
                sets,
            } => {
                let mut acts = act_sizes(x, size("rows", &[tokens, topk])?, k)?;
                let mut v = vec![acts.remove(0)];
                v.push(size(
                    "w",
                    &[w.w_shape(num_experts, n, k).iter().product::<usize>(), w.dtype().size()],
                )?);
                let sdt = if w == WeightFormat::Mxfp4 { 1 } else { 4 };
                v.push(size(
                    "w_scale",
                    &[w.scale_shape(num_experts, n, k).iter().product::<usize>(), sdt],
                )?);
                v.extend(acts);
                v.extend(std::iter::repeat_n(
                    size("group_end", &[num_experts, 8])?,
                    sets.unwrap_or(1),
                ));
                v
            }
            Shape::Quantize { rows, k, .. } => vec![size("x", &[rows, k, es])?],
        })
    }

    /// Byte sizes of the outputs of one run for data dtype `dtype`, in the order the op takes them.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a size overflows `usize`.
    pub fn output_sizes(&self, dtype: DType) -> Result<Vec<usize>> {
        let es = dtype.size();
        Ok(match *self {
            Shape::Gemm { n, tokens, topk, .. } => vec![size("y", &[tokens, topk, n, es])?],
            Shape::DecodeCold { n, topk, .. } => vec![size("y", &[topk, n, es])?],
            Shape::Router { tokens, config, .. } => {
                let b = size("ids", &[tokens, config.topk, 4])?;
                vec![b, b]
            }
            Shape::Permute {
                tokens,
                num_experts,
                topk,
                hidden,
            } => vec![
                size("group_end", &[num_experts, 8])?,
                size("src_token", &[tokens, topk, 8])?,
                size("slot_row", &[tokens, topk, 8])?,
                size("x_perm", &[tokens, topk, hidden, es])?,
            ],
            Shape::Swiglu { rows, width, .. } => vec![size("out", &[rows, width, es])?],
            Shape::Combine { tokens, hidden, .. } => vec![size("out", &[tokens, hidden, es])?],
            Shape::Hash { tokens } => vec![size("rows", &[tokens, 3 * v41_flash::HEADS, 8])?],
            Shape::Gather { dim, tokens, cols, .. } => vec![size("out", &[tokens, cols, dim, es])?],
            Shape::Lookup { dim, tokens, .. } => vec![size("out", &[tokens, LOOKUP_COLUMNS, dim, es])?],
            Shape::QGemm { x, n, tokens, topk, .. } => vec![size("y", &[tokens, topk, n, qgemm_y(x).size()])?],
            Shape::Quantize { scale, rows, k } => vec![
                size("xq", &[rows, k])?,
                match scale {
                    Some(ScaleFormat::Ue8m0) => size("x_scale", &[rows, k.div_ceil(FP8_BLOCK)])?,
                    Some(ScaleFormat::F32) => size("x_scale", &[rows, k.div_ceil(FP8_BLOCK), 4])?,
                    None => size("x_scale", &[rows, 4])?,
                },
            ],
        })
    }

    /// The Engram layer of a hash or lookup shape (`None` for the other ops).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a [`Shape::Lookup`]'s `table_rows` is not the `R` of its
    /// `vocab_n`'s layer.
    pub fn layer(&self) -> Result<Option<EngramLayer>> {
        Ok(match *self {
            Shape::Hash { .. } => Some(v41_flash::layer(0)?),
            Shape::Lookup {
                vocab_n, table_rows, ..
            } => {
                let layer = lookup_layer(vocab_n)?;
                if layer.rows() != table_rows as u64 {
                    return Err(Error::invalid(
                        "bench",
                        "table_rows",
                        format!(
                            "{table_rows} rows, the layer of vocab_n {vocab_n} has R = {}",
                            layer.rows()
                        ),
                    ));
                }
                Some(layer)
            }
            _ => None,
        })
    }

    /// The conformance spec whose inputs this shape runs with `seed`: the grouped GEMM NK (its
    /// group sizes those of `T` tokens routed to `topk` distinct experts, drawn from `seed` as
    /// a router would route them; no bias, no row scale), the quantized grouped GEMM NK
    /// ([`QuantSpec::Gemm`], routed alike; f32 scales except mxfp4's E8M0 weight scales, `y` of
    /// [`qgemm_y`]; its buffers in the shape's own order, see
    /// [`input_sizes`](Self::input_sizes)), router (f32 logits, random, with an optional bias),
    /// permute (with activations; no drops), swiglu, combine (no drops), engram hash (V4.1
    /// layer 1), gather rows and engram lookup (float tables), quantize_fp8 / quantize_int8 (no
    /// planted specials) fill their inputs with [`Spec::fill_inputs`], the kit's one recipe, so
    /// `moehal bench` and `moehal check` draw these ops' inputs alike. The two cold decodes
    /// ([`Shape::DecodeCold`] and [`Shape::QGemm`] with `sets`) run the (§6) GEMM spec of their
    /// first expert set ([`crate::rng::cold_group_ends`]); the other sets' `group_end`s follow
    /// its inputs (see [`fill_inputs`](Self::fill_inputs)). `None` for a gather or lookup of a
    /// non-float dtype, and for a cold decode with no such sets (`sets` 0, or more sets of
    /// `topk` than the experts hold).
    pub fn spec(&self, dtype: DType, seed: u64) -> Option<Spec> {
        self.spec_of(dtype, &self.group_ends(seed).ok()?)
    }

    /// The `group_end` of each expert set a GEMM shape runs, drawn from `seed`: one for a
    /// prefill ([`routed_group_end`]), `sets` for a cold decode ([`cold_sets`]); none for the
    /// other ops.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on `sets` when a cold decode has no such sets.
    fn group_ends(&self, seed: u64) -> Result<Vec<Vec<i64>>> {
        let rng = || seeded(stream_seed(seed, 3));
        Ok(match *self {
            Shape::Gemm {
                num_experts,
                tokens,
                topk,
                ..
            }
            | Shape::QGemm {
                num_experts,
                tokens,
                topk,
                sets: None,
                ..
            } => vec![routed_group_end(&mut rng(), num_experts, tokens, topk)],
            Shape::DecodeCold {
                num_experts,
                topk,
                sets,
                ..
            }
            | Shape::QGemm {
                num_experts,
                topk,
                sets: Some(sets),
                ..
            } => cold_sets(num_experts, topk, sets, stream_seed(seed, 3))?,
            _ => Vec::new(),
        })
    }

    /// [`spec`](Self::spec) of the GEMM shapes' [`group_ends`](Self::group_ends) `ends` (the
    /// first set's).
    fn spec_of(&self, dtype: DType, ends: &[Vec<i64>]) -> Option<Spec> {
        let format = match dtype {
            DType::F32 => Some(TableFormat::F32),
            DType::BF16 => Some(TableFormat::BF16),
            DType::F16 => Some(TableFormat::F16),
            _ => None,
        };
        Some(match *self {
            Shape::Gemm { k, n, .. } | Shape::DecodeCold { k, n, .. } => gemm_spec(dtype, n, k, ends.first()?),
            Shape::Router {
                tokens,
                num_experts,
                config,
                bias,
            } => Spec::RouterTopk {
                dtype: DType::F32,
                tokens,
                num_experts,
                config,
                bias: bias.then_some(false),
                logits: Logits::Random,
            },
            Shape::Swiglu { rows, width, limit } => Spec::Swiglu {
                dtype,
                rows,
                intermediate: width,
                limit,
            },
            Shape::Permute {
                tokens,
                num_experts,
                topk,
                hidden,
            } => Spec::MoePermute {
                tokens,
                topk,
                num_experts,
                x: Some((dtype, hidden)),
                drop: 0.0,
                repeat: false,
                bad_id: false,
            },
            Shape::Combine { tokens, topk, hidden } => Spec::MoeCombine {
                dtype,
                tokens,
                topk,
                hidden,
                drop: 0.0,
                bad_row: false,
            },
            Shape::Hash { tokens } => Spec::EngramHash {
                layer: LayerChoice::V41(0),
                tokens,
                positions: false,
                alive: false,
                history: 0,
                ids: None,
                bad_id: false,
            },
            Shape::Gather {
                table_rows,
                dim,
                tokens,
                cols,
            } => Spec::GatherRows {
                format: format?,
                out: dtype,
                table_rows,
                dim,
                tokens,
                cols,
                bad_row: false,
                host_table: false,
            },
            Shape::Lookup {
                vocab_n, dim, tokens, ..
            } => Spec::EngramLookup {
                layer: LayerChoice::Small {
                    vocab_n,
                    n: 2,
                    k: LOOKUP_COLUMNS,
                },
                format: format?,
                out: dtype,
                dim,
                tokens,
                extras: false,
            },
            Shape::QGemm { w, x, k, n, .. } => qgemm_spec(w, x, n, k, ends.first()?),
            Shape::Quantize { scale, rows, k } => Spec::Quant(match scale {
                Some(scale) => QuantSpec::QuantizeFp8 {
                    dtype,
                    rows,
                    k,
                    ue8m0: matches!(scale, ScaleFormat::Ue8m0),
                    specials: false,
                },
                None => QuantSpec::QuantizeInt8 {
                    dtype,
                    rows,
                    k,
                    specials: false,
                },
            }),
        })
    }

    /// Write the seeded inputs of the shape for data dtype `dtype` into `bufs`, one slice per
    /// [`input_sizes`](Self::input_sizes) entry, each of exactly that length (zeroed or not:
    /// every byte is written). Integer and f32 scale inputs are written as little-endian bytes,
    /// so a buffer may start at any address (no alignment needed). The ops of [`spec`](Self::spec)
    /// take [`Spec::fill_inputs`]'s values (N(0, 1) floats, `1/√K` GEMM weights, ×2 router
    /// logits, swiglu and quantize inputs, ×0.1 bias; uniform ids and rows; the quantized GEMMs'
    /// codes and scales of OPS.md §6's domain: e4m3 codes never NaN, int8 never -128, scales
    /// finite and positive, E8M0 bytes never 255), and so do both cold decodes (the (§6) GEMM
    /// spec of the first expert set, [`crate::rng::cold_group_ends`]; the other sets'
    /// `group_end`s after it). Every shape's inputs come from that one recipe.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the number or length of `bufs` does not match
    /// [`input_sizes`](Self::input_sizes), a gather or lookup dtype is not a float, or a size
    /// overflows.
    pub fn fill_inputs(&self, dtype: DType, seed: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        crate::check_buffers("bench", &self.input_sizes(dtype)?, bufs)?;
        let ends = self.group_ends(seed)?;
        let Some(spec) = self.spec_of(dtype, &ends) else {
            return Err(Error::invalid(
                "bench",
                "dtype",
                format!("{dtype} is not a table dtype (f32, bf16, f16)"),
            ));
        };
        // The spec's inputs (a §6 GEMM's in the shape's order), then the later sets' group_ends.
        let later = match *self {
            Shape::QGemm { x, .. } => {
                let (mut order, later) = qgemm_spec_order(x, bufs)?;
                spec.fill_inputs(seed, &mut order)?;
                later
            }
            _ => {
                let at = bufs.len().saturating_sub(ends.len().saturating_sub(1));
                let (head, later) = bufs.split_at_mut(at);
                spec.fill_inputs(seed, head)?;
                later
            }
        };
        for (b, ge) in later.iter_mut().zip(ends.iter().skip(1)) {
            write_i64(b, ge)?;
        }
        Ok(())
    }
}

/// The `group_end`s of `sets` disjoint sets of `topk` of `experts` experts
/// ([`cold_group_ends`]), one per set.
///
/// # Errors
/// [`Error::InvalidArgument`] on `sets` when there are no such sets (`sets` is 0, `topk` is 0 with
/// experts to route, or `sets * topk > experts`): the rotation would leave inputs unwritten.
fn cold_sets(experts: usize, topk: usize, sets: usize, seed: u64) -> Result<Vec<Vec<i64>>> {
    let ges = cold_group_ends(&mut seeded(seed), experts, topk, sets);
    if sets == 0 || ges.len() != sets {
        return Err(Error::invalid(
            "bench",
            "sets",
            format!(
                "{sets} disjoint sets of {topk} of {experts} experts to rotate over: at most {} fit",
                experts.checked_div(topk).unwrap_or(0)
            ),
        ));
    }
    Ok(ges)
}

/// Copy `values` into `buf` as little-endian i64s, 8 bytes each (any alignment; `buf` holds
/// exactly `values.len()` of them, as [`Shape::input_sizes`] sizes it).
fn write_i64(buf: &mut [u8], values: &[i64]) -> Result<()> {
    if buf.len() != values.len() * 8 {
        return Err(Error::invalid(
            "bench",
            "group_end",
            format!("{} bytes for {} group ends", buf.len(), values.len()),
        ));
    }
    for (c, v) in buf.chunks_exact_mut(8).zip(values) {
        c.copy_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffers of `shape`'s input sizes, 8-byte aligned (as host memory is), filled with `seed`.
    fn filled(shape: &Shape, dtype: DType, seed: u64) -> Vec<Vec<u64>> {
        let sizes = shape.input_sizes(dtype).unwrap();
        let mut words: Vec<Vec<u64>> = sizes
            .iter()
            .map(|&n| vec![0xA5A5_A5A5_A5A5_A5A5; n.div_ceil(8)])
            .collect();
        let mut slices: Vec<&mut [u8]> = words
            .iter_mut()
            .zip(&sizes)
            .map(|(w, &n)| &mut bytemuck::cast_slice_mut::<u64, u8>(w)[..n])
            .collect();
        shape.fill_inputs(dtype, seed, &mut slices).unwrap();
        words
    }

    fn i64s(w: &[u64]) -> Vec<i64> {
        w.iter().map(|&x| x as i64).collect()
    }

    /// `shape`'s inputs for `seed` written into buffers that start `offset` bytes past an 8-byte
    /// boundary and hold `prefill` bytes before the fill.
    fn filled_at(shape: &Shape, dtype: DType, seed: u64, offset: usize, prefill: u8) -> Vec<Vec<u8>> {
        let sizes = shape.input_sizes(dtype).unwrap();
        let mut words: Vec<Vec<u64>> = sizes
            .iter()
            .map(|&n| vec![u64::from_ne_bytes([prefill; 8]); (n + offset).div_ceil(8)])
            .collect();
        let mut slices: Vec<&mut [u8]> = words
            .iter_mut()
            .zip(&sizes)
            .map(|(w, &n)| &mut bytemuck::cast_slice_mut::<u64, u8>(w)[offset..offset + n])
            .collect();
        shape.fill_inputs(dtype, seed, &mut slices).unwrap();
        words
            .iter()
            .zip(&sizes)
            .map(|(w, &n)| bytemuck::cast_slice::<u64, u8>(w)[offset..offset + n].to_vec())
            .collect()
    }

    /// `spec`'s inputs for `seed` as [`Spec::fill_inputs`] writes them, in its layout's order.
    fn spec_fill(spec: &Spec, seed: u64) -> Vec<Vec<u8>> {
        let mut bufs: Vec<Vec<u8>> = spec
            .input_layout()
            .iter()
            .map(|(d, s)| vec![0; s.iter().product::<usize>() * d.size()])
            .collect();
        let mut slices: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
        spec.fill_inputs(seed, &mut slices).unwrap();
        bufs
    }

    fn le_i64(b: &[u8]) -> Vec<i64> {
        b.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn le_i32(b: &[u8]) -> Vec<i32> {
        b.chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// f32 inputs: finite, and not all one value (a buffer left as it was is not an input).
    fn finite_f32(b: &[u8]) -> bool {
        let v: Vec<f32> = b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        v.iter().all(|x| x.is_finite()) && v.iter().any(|&x| x != v[0])
    }

    /// bf16 inputs: finite (exponent not all ones), and not all one value.
    fn finite_bf16(b: &[u8]) -> bool {
        let v: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        v.iter().all(|x| x & 0x7F80 != 0x7F80) && v.iter().any(|&x| x != v[0])
    }

    /// f32 scales (OPS.md §6): finite and positive, and not all one value.
    fn scales_f32(b: &[u8]) -> bool {
        finite_f32(b)
            && b.chunks_exact(4)
                .all(|c| f32::from_le_bytes(c.try_into().unwrap()) > 0.0)
    }

    /// E8M0 scale bytes (OPS.md §6): never 255 (NaN), and not all one value.
    fn scales_e8m0(b: &[u8]) -> bool {
        !b.contains(&255) && b.iter().any(|&x| x != b[0])
    }

    /// e4m3fn codes: never NaN (0x7F / 0xFF), and not all one value.
    fn codes_e4m3(b: &[u8]) -> bool {
        b.iter().all(|c| c & 0x7F != 0x7F) && b.iter().any(|&x| x != b[0])
    }

    /// int8 codes: never -128 (OPS.md §6 takes [-127, 127]), and not all one value.
    fn codes_i8(b: &[u8]) -> bool {
        !b.contains(&0x80) && b.iter().any(|&x| x != b[0])
    }

    /// `group_end`: non-decreasing from 0, ending at `rows`.
    fn routed(b: &[u8], rows: i64) -> bool {
        let ge = le_i64(b);
        ge.first().is_some_and(|&g| g >= 0) && ge.windows(2).all(|p| p[0] <= p[1]) && ge.last() == Some(&rows)
    }

    /// Issue 12 review: every input of every shape is written whatever the buffer held and
    /// wherever it starts (two prefills, aligned and 1 byte off: the same bytes), and holds what
    /// the op's contract takes (OPS.md), checked against expectations independent of the recipe:
    /// group_end non-decreasing and ending at T * topk, ids in range and distinct per token,
    /// slot_row a permutation, rows and Engram ids in range, floats finite.
    #[test]
    fn every_shapes_inputs_are_written_anywhere_and_in_their_domain() {
        let cfg = crate::rc(2, moehal_core::ops::Scoring::Softmax, None, true, 1.0);
        let r = lookup_layer(1000).unwrap().rows() as usize;
        // OPS.md: V' of DeepSeek-V4.1-Flash (the hash and lookup layers' compressed vocabulary).
        const V: i64 = 99_092;
        type Check = fn(&[Vec<u8>]) -> bool;
        let shapes: [(Shape, Check); 15] = [
            (
                Shape::Router {
                    tokens: 5,
                    num_experts: 8,
                    config: cfg,
                    bias: true,
                },
                |b| b.len() == 2 && finite_f32(&b[0]) && finite_f32(&b[1]),
            ),
            (
                Shape::Swiglu {
                    rows: 3,
                    width: 16,
                    limit: Some(7.0),
                },
                |b| finite_bf16(&b[0]),
            ),
            (Shape::Hash { tokens: 9 }, |b| {
                le_i64(&b[0]).iter().all(|i| (0..V).contains(i))
            }),
            (
                Shape::Gemm {
                    num_experts: 6,
                    k: 32,
                    n: 16,
                    tokens: 5,
                    topk: 2,
                },
                |b| {
                    let ge = le_i64(&b[2]);
                    finite_bf16(&b[0])
                        && finite_bf16(&b[1])
                        && ge.len() == 6
                        && ge[0] >= 0
                        && ge.windows(2).all(|p| p[0] <= p[1])
                        && ge[5] == 10
                },
            ),
            (
                Shape::Quantize {
                    scale: Some(ScaleFormat::Ue8m0),
                    rows: 3,
                    k: 256,
                },
                |b| finite_bf16(&b[0]),
            ),
            (
                Shape::Quantize {
                    scale: None,
                    rows: 2,
                    k: 64,
                },
                |b| finite_bf16(&b[0]),
            ),
            (
                Shape::Permute {
                    tokens: 6,
                    num_experts: 5,
                    topk: 3,
                    hidden: 8,
                },
                |b| {
                    le_i32(&b[0]).chunks(3).all(|t| {
                        let mut s = t.to_vec();
                        s.sort();
                        s.dedup();
                        s.len() == 3 && t.iter().all(|e| (0..5).contains(e))
                    }) && finite_bf16(&b[1])
                },
            ),
            (
                Shape::Combine {
                    tokens: 7,
                    topk: 2,
                    hidden: 4,
                },
                |b| {
                    let mut rows = le_i64(&b[1]);
                    rows.sort();
                    finite_bf16(&b[0]) && rows == (0..14).collect::<Vec<i64>>() && finite_f32(&b[2])
                },
            ),
            (
                Shape::Gather {
                    table_rows: 37,
                    dim: 8,
                    tokens: 4,
                    cols: 3,
                },
                |b| finite_bf16(&b[0]) && le_i64(&b[1]).iter().all(|i| (0..37).contains(i)),
            ),
            (
                Shape::Lookup {
                    vocab_n: 1000,
                    table_rows: r,
                    dim: 8,
                    tokens: 6,
                },
                |b| finite_bf16(&b[0]) && le_i64(&b[1]).iter().all(|i| (0..V).contains(i)),
            ),
            // The cold decodes (their later sets' group_ends too) and the quantized GEMMs
            // (OPS.md §6: codes never NaN or -128, scales finite and positive, E8M0 bytes not 255),
            // in the shape's buffer order: x, w, w_scale, [x_scale], group_end(s).
            (
                Shape::DecodeCold {
                    num_experts: 12,
                    k: 32,
                    n: 16,
                    topk: 3,
                    sets: 4,
                    l3: 0,
                },
                |b| b.len() == 6 && finite_bf16(&b[0]) && finite_bf16(&b[1]) && b[2..].iter().all(|g| routed(g, 3)),
            ),
            (
                Shape::QGemm {
                    w: WeightFormat::Int8,
                    x: ActFormat::Int8,
                    num_experts: 4,
                    k: 128,
                    n: 128,
                    tokens: 3,
                    topk: 2,
                    sets: None,
                },
                |b| {
                    b.len() == 5
                        && codes_i8(&b[0])
                        && codes_i8(&b[1])
                        && scales_f32(&b[2])
                        && scales_f32(&b[3])
                        && routed(&b[4], 6)
                },
            ),
            (
                Shape::QGemm {
                    w: WeightFormat::Fp8Block,
                    x: ActFormat::Fp8,
                    num_experts: 6,
                    k: 256,
                    n: 256,
                    tokens: 1,
                    topk: 2,
                    sets: Some(3),
                },
                |b| {
                    b.len() == 7
                        && codes_e4m3(&b[0])
                        && codes_e4m3(&b[1])
                        && scales_f32(&b[2])
                        && scales_f32(&b[3])
                        && b[4..].iter().all(|g| routed(g, 2))
                },
            ),
            (
                Shape::QGemm {
                    w: WeightFormat::Mxfp4,
                    x: ActFormat::Float(DType::BF16),
                    num_experts: 4,
                    k: 128,
                    n: 64,
                    tokens: 3,
                    topk: 2,
                    sets: None,
                },
                |b| b.len() == 4 && finite_bf16(&b[0]) && scales_e8m0(&b[2]) && routed(&b[3], 6),
            ),
            (
                Shape::QGemm {
                    w: WeightFormat::Fp8Block,
                    x: ActFormat::Float(DType::BF16),
                    num_experts: 4,
                    k: 256,
                    n: 256,
                    tokens: 1,
                    topk: 2,
                    sets: Some(2),
                },
                |b| {
                    b.len() == 5
                        && finite_bf16(&b[0])
                        && codes_e4m3(&b[1])
                        && scales_f32(&b[2])
                        && b[3..].iter().all(|g| routed(g, 2))
                },
            ),
        ];
        for (shape, check) in shapes {
            let a = filled_at(&shape, DType::BF16, 3, 0, 0x00);
            let b = filled_at(&shape, DType::BF16, 3, 1, 0xFF);
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                let at = x.iter().zip(y).position(|(p, q)| p != q);
                assert!(
                    at.is_none() && x.len() == y.len(),
                    "{shape:?}: input {i} byte {at:?} of {} depends on the buffer's prefill or alignment",
                    x.len()
                );
            }
            assert!(check(&a), "{shape:?}: inputs outside the op's domain");
        }
        // More disjoint sets than the experts hold (3 sets of 2 of 4 experts) would leave a
        // group_end unwritten: an error naming `sets`, for both cold decodes.
        for shape in [
            Shape::QGemm {
                w: WeightFormat::Fp8Block,
                x: ActFormat::Fp8,
                num_experts: 4,
                k: 128,
                n: 128,
                tokens: 1,
                topk: 2,
                sets: Some(3),
            },
            Shape::DecodeCold {
                num_experts: 4,
                k: 32,
                n: 16,
                topk: 2,
                sets: 3,
                l3: 0,
            },
        ] {
            let sizes = shape.input_sizes(DType::BF16).unwrap();
            let mut bufs: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
            let mut slices: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
            let e = shape.fill_inputs(DType::BF16, 3, &mut slices).unwrap_err();
            assert!(e.to_string().contains("sets"), "{shape:?}: {e}");
        }
        // A gather of a non-float table dtype has no spec and is an error, not unwritten buffers.
        let g = Shape::Gather {
            table_rows: 4,
            dim: 2,
            tokens: 1,
            cols: 1,
        };
        assert!(g.spec(DType::I32, 1).is_none());
        let sizes = g.input_sizes(DType::I32).unwrap();
        let mut bufs: Vec<Vec<u64>> = sizes.iter().map(|&n| vec![0; n.div_ceil(8)]).collect();
        let mut slices: Vec<&mut [u8]> = bufs
            .iter_mut()
            .zip(&sizes)
            .map(|(w, &n)| &mut bytemuck::cast_slice_mut::<u64, u8>(w)[..n])
            .collect();
        let e = g.fill_inputs(DType::I32, 1, &mut slices).unwrap_err();
        assert!(e.to_string().contains("dtype"), "{e}");
    }

    /// Issue 12: a quantized GEMM's bench inputs are its §6 spec's fill (the kit's one recipe,
    /// [`Spec::fill_inputs`]), each buffer where the executor (`moehal::bench_quant::run_qgemm`)
    /// reads it: x, w, w_scale, [x_scale], group_end(s). The spec is the one a router's groups
    /// give (prefill: `routed_group_end`; cold decode: set 0 of `cold_group_ends`, whose other
    /// sets follow), with f32 scales except mxfp4's E8M0 weight scales.
    #[test]
    fn qgemm_inputs_are_their_specs_fill_in_the_executors_order() {
        use ActFormat::{Float, Fp8, Int8};
        let seed = 21;
        for (w, x) in [
            (WeightFormat::Fp8Block, Float(DType::BF16)),
            (WeightFormat::Mxfp4, Float(DType::BF16)),
            (WeightFormat::Fp8Block, Fp8),
            (WeightFormat::Int8, Int8),
        ] {
            for sets in [None, Some(3)] {
                let (e, k, n, topk) = (6, 256, 130, 2);
                let tokens = if sets.is_some() { 1 } else { 5 };
                let shape = Shape::QGemm {
                    w,
                    x,
                    num_experts: e,
                    k,
                    n,
                    tokens,
                    topk,
                    sets,
                };
                let dtype = qgemm_y(x);
                let mut rng = seeded(stream_seed(seed, 3));
                let ges = match sets {
                    None => vec![routed_group_end(&mut rng, e, tokens, topk)],
                    Some(s) => cold_group_ends(&mut rng, e, topk, s),
                };
                let mut prev = 0;
                let groups = ges[0]
                    .iter()
                    .map(|&g| {
                        let r = (g - prev) as usize;
                        prev = g;
                        r
                    })
                    .collect();
                let want = Spec::Quant(QuantSpec::Gemm {
                    w,
                    x,
                    y: dtype,
                    w_e8m0: w == WeightFormat::Mxfp4,
                    x_e8m0: false,
                    groups,
                    tail: 0,
                    n,
                    k,
                    bias: false,
                    row_scale: false,
                });
                // The shape's spec is that case (a cold decode's: its first set's).
                assert_eq!(shape.spec(dtype, seed), Some(want.clone()));
                let spec_bufs = spec_fill(&want, seed);
                // Spec order: x, [x_scale], w, w_scale, group_end.
                let quant_x = !matches!(x, Float(_));
                let named = |name: &str| -> &Vec<u8> {
                    let at = match (name, quant_x) {
                        ("x", _) => 0,
                        ("x_scale", true) => 1,
                        ("w", q) => 1 + usize::from(q),
                        ("w_scale", q) => 2 + usize::from(q),
                        (_, q) => 3 + usize::from(q),
                    };
                    &spec_bufs[at]
                };
                let bench = filled_at(&shape, dtype, seed, 3, 0x5C);
                let mut order = vec!["x", "w", "w_scale"];
                if quant_x {
                    order.push("x_scale");
                }
                order.push("group_end");
                let tag = format!("{w:?} x {x:?} sets {sets:?}");
                assert_eq!(bench.len(), order.len() + sets.map_or(0, |s| s - 1), "{tag}");
                for (i, name) in order.iter().enumerate() {
                    assert!(
                        &bench[i] == named(name),
                        "{tag}: bench input {i} is not the spec's {name}"
                    );
                }
                for (b, ge) in bench[order.len()..].iter().zip(&ges[1..]) {
                    assert_eq!(&le_i64(b), ge, "{tag}: a later set's group_end");
                }
            }
        }
    }

    /// Issue 12: every other shape's bench inputs are its spec's fill (the kit's one recipe,
    /// [`Spec::fill_inputs`], in [`Spec::input_layout`]'s order), the cold decode's too: the GEMM
    /// spec of its first expert set, whose groups are set 0 of [`cold_group_ends`] (drawn here
    /// apart from the shape), then the other sets' `group_end`s. The prefill GEMM's groups are
    /// [`routed_group_end`]'s.
    #[test]
    fn every_shapes_inputs_are_its_specs_fill() {
        let seed = 17;
        let (e, k, n, topk, sets) = (12, 32, 16, 3, 4);
        let r = lookup_layer(1000).unwrap().rows() as usize;
        let cfg = crate::rc(2, moehal_core::ops::Scoring::Softmax, None, true, 1.0);
        let cold = Shape::DecodeCold {
            num_experts: e,
            k,
            n,
            topk,
            sets,
            l3: 0,
        };
        let cold_ends = cold_group_ends(&mut seeded(stream_seed(seed, 3)), e, topk, sets);
        let prefill = Shape::Gemm {
            num_experts: e,
            k,
            n,
            tokens: 5,
            topk,
        };
        let prefill_ends = routed_group_end(&mut seeded(stream_seed(seed, 3)), e, 5, topk);
        let shapes = [
            (cold.clone(), Some(gemm_spec(DType::BF16, n, k, &cold_ends[0]))),
            (prefill, Some(gemm_spec(DType::BF16, n, k, &prefill_ends))),
            (
                Shape::Router {
                    tokens: 5,
                    num_experts: 8,
                    config: cfg,
                    bias: true,
                },
                None,
            ),
            (
                Shape::Permute {
                    tokens: 6,
                    num_experts: 5,
                    topk: 3,
                    hidden: 8,
                },
                None,
            ),
            (
                Shape::Swiglu {
                    rows: 3,
                    width: 16,
                    limit: None,
                },
                None,
            ),
            (
                Shape::Combine {
                    tokens: 7,
                    topk: 2,
                    hidden: 4,
                },
                None,
            ),
            (Shape::Hash { tokens: 9 }, None),
            (
                Shape::Gather {
                    table_rows: 37,
                    dim: 8,
                    tokens: 4,
                    cols: 3,
                },
                None,
            ),
            (
                Shape::Lookup {
                    vocab_n: 1000,
                    table_rows: r,
                    dim: 8,
                    tokens: 6,
                },
                None,
            ),
            (
                Shape::Quantize {
                    scale: Some(ScaleFormat::F32),
                    rows: 3,
                    k: 256,
                },
                None,
            ),
        ];
        for (shape, want) in shapes {
            let spec = shape.spec(DType::BF16, seed).expect("a spec");
            if let Some(want) = want {
                assert_eq!(spec, want, "{shape:?}");
            }
            let spec_bufs = spec_fill(&spec, seed);
            let bench = filled_at(&shape, DType::BF16, seed, 3, 0x5C);
            assert_eq!(&bench[..spec_bufs.len()], &spec_bufs[..], "{shape:?}");
            let later: Vec<Vec<i64>> = bench[spec_bufs.len()..].iter().map(|b| le_i64(b)).collect();
            if shape == cold {
                assert_eq!(later, cold_ends[1..], "the later sets' group_ends");
            } else {
                assert!(later.is_empty(), "{shape:?}");
            }
        }
    }

    #[test]
    fn wrong_buffers_are_an_error_naming_the_inputs() {
        let s = Shape::Swiglu {
            rows: 4,
            width: 8,
            limit: None,
        };
        let mut a = [0u8; 4 * 16 * 2];
        let mut short = [0u8; 10];
        for bufs in [vec![&mut short[..]], vec![]] {
            let mut bufs = bufs;
            let e = s.fill_inputs(DType::BF16, 1, &mut bufs).unwrap_err();
            assert!(e.to_string().contains("inputs"), "{e}");
        }
        s.fill_inputs(DType::BF16, 1, &mut [&mut a[..]]).unwrap();
        assert!(a.iter().any(|&b| b != 0));
    }

    #[test]
    fn routing_inputs_are_what_a_router_gives() {
        // grouped GEMM: group_end is non-decreasing and ends at T * topk.
        let g = Shape::Gemm {
            num_experts: 8,
            k: 32,
            n: 16,
            tokens: 5,
            topk: 3,
        };
        let w = filled(&g, DType::F32, 9);
        let ge = i64s(&w[2]);
        assert!(
            ge.windows(2).all(|p| p[0] <= p[1]) && *ge.last().unwrap() == 15,
            "{ge:?}"
        );
        // Same seed, same inputs; another seed, other inputs.
        assert_eq!(filled(&g, DType::F32, 9), w);
        assert_ne!(filled(&g, DType::F32, 10)[0], w[0]);
        // moe_permute: distinct ids in [0, E) per token.
        let p = Shape::Permute {
            tokens: 6,
            num_experts: 5,
            topk: 4,
            hidden: 8,
        };
        let ids: Vec<i32> = bytemuck::cast_slice::<u64, i32>(&filled(&p, DType::BF16, 3)[0])[..24].to_vec();
        for t in ids.chunks(4) {
            let mut s = t.to_vec();
            s.sort();
            s.dedup();
            assert!(s.len() == 4 && t.iter().all(|&e| (0..5).contains(&e)), "{t:?}");
        }
        // moe_combine: slot_row is a permutation of the T * k rows.
        let c = Shape::Combine {
            tokens: 7,
            topk: 2,
            hidden: 4,
        };
        let mut rows = i64s(&filled(&c, DType::F32, 4)[1]);
        rows.sort();
        assert_eq!(rows, (0..14).collect::<Vec<i64>>());
        // cold decode: one group_end per set, each routing exactly topk rows.
        let d = Shape::DecodeCold {
            num_experts: 12,
            k: 32,
            n: 16,
            topk: 3,
            sets: 4,
            l3: 0,
        };
        let w = filled(&d, DType::BF16, 5);
        assert_eq!(w.len(), 2 + 4);
        for ge in &w[2..] {
            assert_eq!(*i64s(ge).last().unwrap(), 3);
        }
    }

    #[test]
    fn table_rows_and_codes_stay_in_range() {
        let g = Shape::Gather {
            table_rows: 37,
            dim: 8,
            tokens: 9,
            cols: 4,
        };
        assert!(i64s(&filled(&g, DType::BF16, 2)[1]).iter().all(|r| (0..37).contains(r)));
        // fp8 x fp8: no e4m3 NaN code in x or w; int8: no -128.
        for (w, x) in [
            (WeightFormat::Fp8Block, ActFormat::Fp8),
            (WeightFormat::Int8, ActFormat::Int8),
        ] {
            let q = Shape::QGemm {
                w,
                x,
                num_experts: 4,
                k: 128,
                n: 128,
                tokens: 3,
                topk: 2,
                sets: None,
            };
            let sizes = q.input_sizes(DType::BF16).unwrap();
            let bufs = filled(&q, DType::BF16, 6);
            for (i, (buf, &n)) in bufs.iter().zip(&sizes).take(2).enumerate() {
                let b = &bytemuck::cast_slice::<u64, u8>(buf)[..n];
                let bad = |c: &u8| {
                    if x == ActFormat::Fp8 {
                        c & 0x7F == 0x7F
                    } else {
                        *c == 0x80
                    }
                };
                assert!(!b.iter().any(bad), "input {i} of {w:?}");
            }
        }
        // A lookup whose table_rows is not its layer's R is an error naming table_rows.
        let r = lookup_layer(1000).unwrap().rows() as usize;
        let bad = Shape::Lookup {
            vocab_n: 1000,
            table_rows: r + 1,
            dim: 8,
            tokens: 2,
        };
        assert!(bad.layer().unwrap_err().to_string().contains("table_rows"));
        let good = Shape::Lookup {
            vocab_n: 1000,
            table_rows: r,
            dim: 8,
            tokens: 2,
        };
        assert_eq!(good.layer().unwrap().unwrap().rows() as usize, r);
    }
}
