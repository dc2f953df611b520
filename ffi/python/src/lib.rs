//! `moehal._moehal`: the PyO3 extension behind the `moehal` Python package.
//!
//! It exposes [`backends`], [`open`] and, on the returned `Backend`, one method per op of OPS.md
//! taking every tensor (inputs and outputs) as a Python object with `__dlpack__` or the numpy
//! array interface. The Python layer (`python/moehal/__init__.py`) allocates the outputs in the
//! caller's framework and documents each op; this layer only moves memory and maps errors:
//!
//! - A tensor on the backend's own memory (host for `reference`/`cpu`, the device for `cuda` /
//!   `ascend`) is wrapped without a copy (`Backend::wrap_external`). A host tensor given to a
//!   device backend is staged (uploaded, and outputs downloaded after the op). A device tensor
//!   given to a backend that does not own that device is a `ValueError` naming the field.
//! - Validation is core's (`args.validate()`), never repeated here; this layer checks only what
//!   core cannot see: dtype and layout of the foreign tensor, devices, and that outputs overlap
//!   no other argument (core's exclusive borrows rely on it).
//! - Errors: `InvalidArgument` → `ValueError`, `Unsupported` → `NotImplementedError`,
//!   `Unavailable` and device errors → `RuntimeError`, `OutOfMemory` → `MemoryError`. A Rust
//!   panic is caught and raised as `RuntimeError`; it never reaches Python as a panic.
//! - The GIL is released while an op runs; a `Backend` is `Send + Sync`, so several Python
//!   threads may call it at once (each with its own outputs).
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod tensor;

use std::sync::{Arc, OnceLock};

use moehal::registry::Registry;
use moehal_core::engram::EngramLayer;
use moehal_core::ops::{
    EngramHash, EngramLookup, GatherRows, GroupLimit, GroupScore, GroupedGemm, GroupedGemmQ, MoeCombine, MoePermute,
    QuantizeFp8, QuantizeInt8, RouterConfig, RouterHash, RouterTopk, Scoring, Swiglu, TableFormat, WeightFormat,
    WeightLayout,
};
use moehal_core::{Backend, Buffer, Error, Location, Result, TensorMut, TensorRef};
use pyo3::exceptions::{PyMemoryError, PyNotImplementedError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use tensor::{describe, device_name, dl, is_host, overlaps, Desc, Device};

/// Map a moehal error onto the Python exception of its category (see the crate docs).
pub(crate) fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::InvalidArgument { .. } => PyValueError::new_err(msg),
        Error::Unsupported { .. } => PyNotImplementedError::new_err(msg),
        Error::OutOfMemory { .. } => PyMemoryError::new_err(msg),
        Error::Unavailable { .. } | Error::Device { .. } => PyRuntimeError::new_err(msg),
    }
}

/// A Python int given for an unsigned parameter (a count, an index, a prime, a multiplier) as a
/// `T`: a negative value, or one too large for `T`, is a `ValueError` naming `op` and `field` (as
/// core's `InvalidArgument`), not PyO3's `OverflowError`; anything but an int (a float, a str) is
/// a `TypeError`. `field` may carry an index (`primes[2]`).
fn unsigned<T: TryFrom<i128>>(op: &'static str, field: &str, v: &Bound<'_, PyAny>) -> PyResult<T> {
    let bad = |what: String| PyValueError::new_err(format!("{op}: invalid argument `{field}`: {what}"));
    let too_large = || bad(format!("{v} is too large (at most {})", std::any::type_name::<T>()));
    match v.extract::<i128>() {
        Ok(w) if w < 0 => Err(bad(format!("{w} is negative (an unsigned parameter)"))),
        Ok(w) => T::try_from(w).map_err(|_| too_large()),
        // An int beyond i128 raised OverflowError; a non-int keeps its TypeError.
        Err(_) if v.is_instance_of::<pyo3::types::PyInt>() => {
            if v.lt(0)? {
                Err(bad(format!("{v} is negative (an unsigned parameter)")))
            } else {
                Err(too_large())
            }
        }
        Err(e) => Err(e),
    }
}

/// [`unsigned`] for every element of a list parameter (`field[i]` names the element at fault).
fn unsigned_list<T: TryFrom<i128>>(op: &'static str, field: &str, v: &[Bound<'_, PyAny>]) -> PyResult<Vec<T>> {
    v.iter()
        .enumerate()
        .map(|(i, x)| unsigned(op, &format!("{field}[{i}]"), x))
        .collect()
}

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(Registry::discover)
}

/// Every backend compiled into the extension, in preference order, as `(name, available,
/// reason)`; `reason` is `""` for an available backend. Never raises.
#[pyfunction]
fn backends(py: Python<'_>) -> Vec<(String, bool, String)> {
    py.allow_threads(|| {
        registry()
            .entries()
            .iter()
            .map(|e| {
                (
                    e.name.to_string(),
                    e.status.is_ok(),
                    e.status.as_ref().err().cloned().unwrap_or_default(),
                )
            })
            .collect()
    })
}

/// Open backend `name`, or the first available one in preference order when `name` is None.
/// Raises `RuntimeError` with the reason when it is unavailable or not compiled in.
#[pyfunction]
#[pyo3(signature = (name=None))]
fn open(py: Python<'_>, name: Option<String>) -> PyResult<PyBackend> {
    let be = py.allow_threads(|| -> Result<Arc<dyn Backend>> {
        let reg = registry();
        match name {
            Some(n) => reg.open(&n),
            None => reg.available().next().cloned().ok_or_else(|| Error::Unavailable {
                backend: "any".into(),
                reason: "no backend is available".into(),
            }),
        }
    });
    let be = be.map_err(to_py)?;
    let space = backend_space(&*be);
    Ok(PyBackend { be, space })
}

/// Where a backend's memory lives.
#[derive(Debug, Clone, Copy)]
struct Space {
    /// The DLPack device of its memory.
    device: Device,
    /// Host memory (reference, cpu).
    host: bool,
}

/// Probe a backend's memory with a one-byte allocation (as the C ABI does), else go by name.
fn backend_space(be: &dyn Backend) -> Space {
    let dev = |name: &str, ordinal: usize| Space {
        device: (
            match name {
                "cuda" => dl::CUDA,
                "rocm" | "hip" => dl::ROCM,
                _ => dl::EXT_DEV,
            },
            ordinal as i32,
        ),
        host: false,
    };
    let host = Space {
        device: (dl::CPU, 0),
        host: true,
    };
    match be.alloc(1).map(|b| b.location()) {
        Ok(Location::Host) => host,
        Ok(Location::Device { backend, ordinal }) => dev(&backend, ordinal),
        Err(_) => match be.name() {
            "reference" | "cpu" => host,
            n => dev(n, 0),
        },
    }
}

/// An aligned, never-written address for empty tensors whose producer gives a NULL pointer.
fn empty_addr() -> u64 {
    static EMPTY: [u64; 2] = [0; 2];
    EMPTY.as_ptr() as u64
}

/// The arguments of one call: descriptions, plus the Python objects keeping their memory alive.
struct Args {
    op: &'static str,
    space: Space,
    backend: String,
    inputs: Vec<Desc>,
    outputs: Vec<Desc>,
    keep: Vec<PyObject>,
}

impl Args {
    fn new(op: &'static str, b: &PyBackend) -> Self {
        Args {
            op,
            space: b.space,
            backend: b.be.name().to_string(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            keep: Vec::new(),
        }
    }

    fn desc(&mut self, field: &'static str, obj: &Bound<'_, PyAny>) -> PyResult<Desc> {
        let (d, keep) = describe(self.op, field, obj)?;
        self.keep.push(keep);
        self.check_space(&d).map_err(to_py)?;
        Ok(d)
    }

    fn input(&mut self, field: &'static str, obj: &Bound<'_, PyAny>) -> PyResult<Desc> {
        let d = self.desc(field, obj)?;
        self.inputs.push(d.clone());
        Ok(d)
    }

    fn opt_input(&mut self, field: &'static str, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Desc>> {
        match obj {
            Some(o) if !o.is_none() => self.input(field, o).map(Some),
            _ => Ok(None),
        }
    }

    fn output(&mut self, field: &'static str, obj: &Bound<'_, PyAny>) -> PyResult<Desc> {
        let d = self.desc(field, obj)?;
        if d.readonly {
            return Err(to_py(Error::invalid(
                self.op,
                field,
                "output array is read-only (writeable = False)",
            )));
        }
        self.outputs.push(d.clone());
        Ok(d)
    }

    fn opt_output(&mut self, field: &'static str, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Desc>> {
        match obj {
            Some(o) if !o.is_none() => self.output(field, o).map(Some),
            _ => Ok(None),
        }
    }

    /// Whether the backend can read a tensor on `d.device` (the first half of staging).
    fn check_space(&self, d: &Desc) -> Result<()> {
        let s = self.space;
        let own = d.device == s.device
            || (s.host && d.is_host())
            || (s.device.0 == dl::CUDA && d.device.0 == dl::CUDA_MANAGED && d.device.1 == s.device.1);
        if own || (!s.host && d.is_host()) {
            return Ok(());
        }
        Err(Error::invalid(
            self.op,
            d.field,
            format!(
                "tensor is on {} but backend `{}` computes on {}{}",
                device_name(d.device),
                self.backend,
                if s.host {
                    "host memory (cpu)".to_string()
                } else {
                    device_name(s.device)
                },
                if s.host {
                    ": move it to the CPU or open the backend that owns its device"
                } else {
                    ": use a tensor on that device or on the host"
                }
            ),
        ))
    }

    /// Outputs may overlap nothing else (core's exclusive borrows rely on it).
    fn check_overlap(&self) -> PyResult<()> {
        for (i, o) in self.outputs.iter().enumerate() {
            let others = self.inputs.iter().chain(self.outputs[i + 1..].iter());
            if let Some(x) = others.into_iter().find(|x| overlaps(o, x)) {
                return Err(to_py(Error::invalid(
                    self.op,
                    o.field,
                    format!(
                        "output `{}` overlaps `{}` in memory (outputs must be separate tensors)",
                        o.field, x.field
                    ),
                )));
            }
        }
        Ok(())
    }
}

/// Turns descriptions into core buffers on one backend, staging host tensors for device backends.
struct Stager<'a> {
    be: &'a dyn Backend,
    space: Space,
}

impl Stager<'_> {
    fn staged(&self, d: &Desc) -> bool {
        !self.space.host && d.is_host() && d.device != self.space.device
    }

    /// A buffer holding `d`'s bytes: the caller's memory itself, or a device copy of a host tensor.
    fn buffer(&self, d: &Desc) -> Result<Buffer> {
        if self.staged(d) {
            let mut b = self.be.alloc(d.bytes.max(1))?;
            if d.bytes > 0 {
                // SAFETY: `d` is host memory whose Python owner is held in `Args::keep` for the
                // whole call; outputs were checked not to overlap it.
                let src = unsafe { tensor::host_bytes(d) };
                // Outputs too: rows an op leaves unwritten keep the caller's contents.
                self.be.upload(&mut b, 0, src)?;
            }
            Ok(b)
        } else {
            let addr = if d.addr == 0 { empty_addr() } else { d.addr };
            // SAFETY: `d` is memory of this backend's device (checked by `Args::check_space`),
            // valid for `d.bytes` bytes while its Python owner lives (held in `Args::keep`), and
            // outputs overlap no other argument (`Args::check_overlap`).
            unsafe { self.be.wrap_external(addr, d.bytes) }
        }
    }

    fn opt(&self, d: &Option<Desc>) -> Result<Option<Buffer>> {
        d.as_ref().map(|d| self.buffer(d)).transpose()
    }

    /// Wait for the device, then copy staged outputs back to the caller's host memory.
    fn finish(&self, outs: &[(&Buffer, &Desc)]) -> Result<()> {
        if !self.space.host {
            self.be.synchronize()?;
        }
        for (b, d) in outs {
            if self.staged(d) && d.bytes > 0 {
                // SAFETY: `d` is a writable host output (checked read-only flag) whose owner is
                // held for the call, overlapping no other argument; the op has finished.
                let dst = unsafe { tensor::host_bytes_mut(d) };
                self.be.download(b, 0, dst)?;
            }
        }
        Ok(())
    }
}

fn view<'a>(b: &'a Buffer, d: &Desc) -> TensorRef<'a> {
    b.view(d.dtype, &d.shape)
}
fn view_mut<'a>(b: &'a mut Buffer, d: &Desc) -> TensorMut<'a> {
    b.view_mut(d.dtype, &d.shape)
}
fn opt_view<'a>(b: &'a Option<Buffer>, d: &Option<Desc>) -> Option<TensorRef<'a>> {
    b.as_ref().zip(d.as_ref()).map(|(b, d)| view(b, d))
}
fn opt_view_mut<'a>(b: &'a mut Option<Buffer>, d: &Option<Desc>) -> Option<TensorMut<'a>> {
    b.as_mut().zip(d.as_ref()).map(|(b, d)| view_mut(b, d))
}

fn parse<T>(op: &'static str, field: &'static str, v: &str, all: &[(&str, T)]) -> Result<T>
where
    T: Copy,
{
    all.iter().find(|(n, _)| *n == v).map(|(_, t)| *t).ok_or_else(|| {
        let names: Vec<_> = all.iter().map(|(n, _)| *n).collect();
        Error::invalid(op, field, format!("`{v}` is not one of {}", names.join(", ")))
    })
}

fn scoring(op: &'static str, v: &str) -> Result<Scoring> {
    parse(
        op,
        "scoring",
        v,
        &[
            ("softmax", Scoring::Softmax),
            ("sigmoid", Scoring::Sigmoid),
            ("sqrt_softplus", Scoring::SqrtSoftplus),
        ],
    )
}

fn table_format(op: &'static str, v: &str) -> Result<TableFormat> {
    parse(
        op,
        "format",
        v,
        &[
            ("f32", TableFormat::F32),
            ("bf16", TableFormat::BF16),
            ("f16", TableFormat::F16),
            ("fp8_e4m3_ue8m0", TableFormat::Fp8E4m3Ue8m0),
        ],
    )
}

/// An open backend. Methods take every tensor explicitly (outputs included) and return None;
/// see the `moehal` package for the documented, allocating API.
#[pyclass(name = "Backend", module = "moehal._moehal", frozen)]
struct PyBackend {
    be: Arc<dyn Backend>,
    space: Space,
}

impl PyBackend {
    /// Run `f` with the GIL released and panics fenced; `keep` holds the tensors' owners.
    fn run<F>(&self, py: Python<'_>, args: Args, f: F) -> PyResult<()>
    where
        F: FnOnce(Stager<'_>) -> Result<()> + Send,
    {
        args.check_overlap()?;
        let be = self.be.clone();
        let space = self.space;
        let r = py.allow_threads(move || moehal_core::fence::catch_quietly(move || f(Stager { be: &*be, space })));
        drop(args.keep);
        match r {
            Ok(r) => r.map_err(to_py),
            Err(panic) => Err(PyRuntimeError::new_err(format!(
                "{}: internal error (a Rust panic, caught): {panic}",
                args.op
            ))),
        }
    }
}

#[pymethods]
impl PyBackend {
    /// Backend name (`"reference"`, `"cpu"`, `"cuda"`, `"ascend"`).
    #[getter]
    fn name(&self) -> String {
        self.be.name().to_string()
    }

    /// DLPack device `(device_type, device_id)` of the backend's memory: `(1, 0)` for host memory.
    #[getter]
    fn device(&self) -> (i32, i32) {
        self.space.device
    }

    /// `(name, capability, memory_bytes or None, compute_units or None)` of the device.
    fn device_info(&self) -> (String, String, Option<u64>, Option<usize>) {
        let i = self.be.device_info();
        (i.name, i.capability, i.memory_bytes, i.compute_units)
    }

    fn __repr__(&self) -> String {
        format!(
            "<moehal backend {} on {}>",
            self.be.name(),
            device_name(self.space.device)
        )
    }

    /// OPS.md §1 (float operands). `layout` is `"nk"` or `"kn"`.
    #[pyo3(signature = (x, w, group_end, y, layout, row_scale=None, bias=None))]
    #[allow(clippy::too_many_arguments)]
    fn grouped_gemm(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        w: &Bound<'_, PyAny>,
        group_end: &Bound<'_, PyAny>,
        y: &Bound<'_, PyAny>,
        layout: &str,
        row_scale: Option<&Bound<'_, PyAny>>,
        bias: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        const OP: &str = "grouped_gemm";
        let layout = parse(
            OP,
            "layout",
            layout,
            &[("nk", WeightLayout::NK), ("kn", WeightLayout::KN)],
        )
        .map_err(to_py)?;
        let mut a = Args::new(OP, self);
        let (dx, dw, dg) = (a.input("x", x)?, a.input("w", w)?, a.input("group_end", group_end)?);
        let (dr, db) = (a.opt_input("row_scale", row_scale)?, a.opt_input("bias", bias)?);
        let dy = a.output("y", y)?;
        self.run(py, a, move |s| {
            let (bx, bw, bg, br, bb) = (s.buffer(&dx)?, s.buffer(&dw)?, s.buffer(&dg)?, s.opt(&dr)?, s.opt(&db)?);
            let mut by = s.buffer(&dy)?;
            let args = GroupedGemm {
                x: view(&bx, &dx),
                w: view(&bw, &dw),
                layout,
                group_end: view(&bg, &dg),
                row_scale: opt_view(&br, &dr),
                bias: opt_view(&bb, &db),
                y: view_mut(&mut by, &dy),
            };
            s.be.grouped_gemm(args.validate()?)?;
            s.finish(&[(&by, &dy)])
        })
    }

    /// OPS.md §6 quantized `grouped_gemm`. `w_format` is `"fp8_block"`, `"mxfp4"` or `"int8"`.
    #[pyo3(signature = (x, w, w_scale, group_end, y, w_format, x_scale=None, row_scale=None, bias=None))]
    #[allow(clippy::too_many_arguments)]
    fn grouped_gemm_quant(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        w: &Bound<'_, PyAny>,
        w_scale: &Bound<'_, PyAny>,
        group_end: &Bound<'_, PyAny>,
        y: &Bound<'_, PyAny>,
        w_format: &str,
        x_scale: Option<&Bound<'_, PyAny>>,
        row_scale: Option<&Bound<'_, PyAny>>,
        bias: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        const OP: &str = "grouped_gemm";
        let w_format = parse(
            OP,
            "w_format",
            w_format,
            &[
                ("fp8_block", WeightFormat::Fp8Block),
                ("mxfp4", WeightFormat::Mxfp4),
                ("int8", WeightFormat::Int8),
            ],
        )
        .map_err(to_py)?;
        let mut a = Args::new(OP, self);
        let (dx, dw, dws, dg) = (
            a.input("x", x)?,
            a.input("w", w)?,
            a.input("w_scale", w_scale)?,
            a.input("group_end", group_end)?,
        );
        let (dxs, dr, db) = (
            a.opt_input("x_scale", x_scale)?,
            a.opt_input("row_scale", row_scale)?,
            a.opt_input("bias", bias)?,
        );
        let dy = a.output("y", y)?;
        self.run(py, a, move |s| {
            let (bx, bw, bws, bg) = (s.buffer(&dx)?, s.buffer(&dw)?, s.buffer(&dws)?, s.buffer(&dg)?);
            let (bxs, br, bb) = (s.opt(&dxs)?, s.opt(&dr)?, s.opt(&db)?);
            let mut by = s.buffer(&dy)?;
            let args = GroupedGemmQ {
                x: view(&bx, &dx),
                x_scale: opt_view(&bxs, &dxs),
                w_format,
                w: view(&bw, &dw),
                w_scale: view(&bws, &dws),
                group_end: view(&bg, &dg),
                row_scale: opt_view(&br, &dr),
                bias: opt_view(&bb, &db),
                y: view_mut(&mut by, &dy),
            };
            s.be.grouped_gemm_quant(args.validate()?)?;
            s.finish(&[(&by, &dy)])
        })
    }

    /// OPS.md §2 top-k routing. `group_score` is `"top2_sum"` or `"max"`; `n_group` of None, 0 or 1
    /// means no group limit.
    #[pyo3(signature = (logits, ids, weights, k, scoring, renormalize, routed_scaling_factor,
                        bias=None, expert_counts=None, n_group=None, topk_group=None, group_score="top2_sum"))]
    #[allow(clippy::too_many_arguments)]
    fn router_topk(
        &self,
        py: Python<'_>,
        logits: &Bound<'_, PyAny>,
        ids: &Bound<'_, PyAny>,
        weights: &Bound<'_, PyAny>,
        k: &Bound<'_, PyAny>,
        scoring: &str,
        renormalize: bool,
        routed_scaling_factor: f32,
        bias: Option<&Bound<'_, PyAny>>,
        expert_counts: Option<&Bound<'_, PyAny>>,
        n_group: Option<&Bound<'_, PyAny>>,
        topk_group: Option<&Bound<'_, PyAny>>,
        group_score: &str,
    ) -> PyResult<()> {
        const OP: &str = "router_topk";
        let k: usize = unsigned(OP, "k", k)?;
        // None (the default) means 0: no group limit.
        let n_group: usize = n_group.map_or(Ok(0), |v| unsigned(OP, "n_group", v))?;
        let topk_group: usize = topk_group.map_or(Ok(0), |v| unsigned(OP, "topk_group", v))?;
        let score = parse(
            OP,
            "group_score",
            group_score,
            &[("top2_sum", GroupScore::Top2Sum), ("max", GroupScore::Max)],
        )
        .map_err(to_py)?;
        let config = RouterConfig {
            topk: k,
            scoring: self::scoring(OP, scoring).map_err(to_py)?,
            group: (n_group > 1).then_some(GroupLimit {
                n_group,
                topk_group,
                score,
            }),
            renormalize,
            routed_scaling_factor,
        };
        let mut a = Args::new(OP, self);
        let dl = a.input("logits", logits)?;
        let db = a.opt_input("bias", bias)?;
        let (di, dw, dc) = (
            a.output("ids", ids)?,
            a.output("weights", weights)?,
            a.opt_output("expert_counts", expert_counts)?,
        );
        self.run(py, a, move |s| {
            let (bl, bb) = (s.buffer(&dl)?, s.opt(&db)?);
            let (mut bi, mut bw, mut bc) = (s.buffer(&di)?, s.buffer(&dw)?, s.opt(&dc)?);
            let args = RouterTopk {
                config,
                logits: view(&bl, &dl),
                bias: opt_view(&bb, &db),
                ids: view_mut(&mut bi, &di),
                weights: view_mut(&mut bw, &dw),
                expert_counts: opt_view_mut(&mut bc, &dc),
            };
            s.be.router_topk(args.validate()?)?;
            let mut outs = vec![(&bi, &di), (&bw, &dw)];
            if let (Some(b), Some(d)) = (&bc, &dc) {
                outs.push((b, d));
            }
            s.finish(&outs)
        })
    }

    /// OPS.md §2 hash routing (`ids[t] = tid2eid[token_ids[t]]`, weights from the scores).
    #[pyo3(signature = (logits, tid2eid, token_ids, ids, weights, k, scoring, renormalize,
                        routed_scaling_factor, expert_counts=None))]
    #[allow(clippy::too_many_arguments)]
    fn router_hash(
        &self,
        py: Python<'_>,
        logits: &Bound<'_, PyAny>,
        tid2eid: &Bound<'_, PyAny>,
        token_ids: &Bound<'_, PyAny>,
        ids: &Bound<'_, PyAny>,
        weights: &Bound<'_, PyAny>,
        k: &Bound<'_, PyAny>,
        scoring: &str,
        renormalize: bool,
        routed_scaling_factor: f32,
        expert_counts: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        const OP: &str = "router_topk";
        let k: usize = unsigned(OP, "k", k)?;
        let config = RouterConfig {
            topk: k,
            scoring: self::scoring(OP, scoring).map_err(to_py)?,
            group: None,
            renormalize,
            routed_scaling_factor,
        };
        let mut a = Args::new(OP, self);
        let (dl, dt, dk) = (
            a.input("logits", logits)?,
            a.input("tid2eid", tid2eid)?,
            a.input("token_ids", token_ids)?,
        );
        let (di, dw, dc) = (
            a.output("ids", ids)?,
            a.output("weights", weights)?,
            a.opt_output("expert_counts", expert_counts)?,
        );
        self.run(py, a, move |s| {
            let (bl, bt, bk) = (s.buffer(&dl)?, s.buffer(&dt)?, s.buffer(&dk)?);
            let (mut bi, mut bw, mut bc) = (s.buffer(&di)?, s.buffer(&dw)?, s.opt(&dc)?);
            let args = RouterHash {
                config,
                logits: view(&bl, &dl),
                tid2eid: view(&bt, &dt),
                token_ids: view(&bk, &dk),
                ids: view_mut(&mut bi, &di),
                weights: view_mut(&mut bw, &dw),
                expert_counts: opt_view_mut(&mut bc, &dc),
            };
            s.be.router_hash(args.validate()?)?;
            let mut outs = vec![(&bi, &di), (&bw, &dw)];
            if let (Some(b), Some(d)) = (&bc, &dc) {
                outs.push((b, d));
            }
            s.finish(&outs)
        })
    }

    /// OPS.md §3 `moe_permute`.
    #[pyo3(signature = (ids, num_experts, group_end, src_token, slot_row, x=None, x_perm=None))]
    #[allow(clippy::too_many_arguments)]
    fn moe_permute(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        num_experts: &Bound<'_, PyAny>,
        group_end: &Bound<'_, PyAny>,
        src_token: &Bound<'_, PyAny>,
        slot_row: &Bound<'_, PyAny>,
        x: Option<&Bound<'_, PyAny>>,
        x_perm: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        const OP: &str = "moe_permute";
        let num_experts: usize = unsigned(OP, "num_experts", num_experts)?;
        let mut a = Args::new(OP, self);
        let (di, dx) = (a.input("ids", ids)?, a.opt_input("x", x)?);
        let (dg, ds, dr, dp) = (
            a.output("group_end", group_end)?,
            a.output("src_token", src_token)?,
            a.output("slot_row", slot_row)?,
            a.opt_output("x_perm", x_perm)?,
        );
        self.run(py, a, move |s| {
            let (bi, bx) = (s.buffer(&di)?, s.opt(&dx)?);
            let (mut bg, mut bs, mut br, mut bp) = (s.buffer(&dg)?, s.buffer(&ds)?, s.buffer(&dr)?, s.opt(&dp)?);
            let args = MoePermute {
                num_experts,
                ids: view(&bi, &di),
                x: opt_view(&bx, &dx),
                group_end: view_mut(&mut bg, &dg),
                src_token: view_mut(&mut bs, &ds),
                slot_row: view_mut(&mut br, &dr),
                x_perm: opt_view_mut(&mut bp, &dp),
            };
            s.be.moe_permute(args.validate()?)?;
            let mut outs = vec![(&bg, &dg), (&bs, &ds), (&br, &dr)];
            if let (Some(b), Some(d)) = (&bp, &dp) {
                outs.push((b, d));
            }
            s.finish(&outs)
        })
    }

    /// OPS.md §3 `swiglu`.
    #[pyo3(signature = (h, out, limit=None))]
    fn swiglu(&self, py: Python<'_>, h: &Bound<'_, PyAny>, out: &Bound<'_, PyAny>, limit: Option<f32>) -> PyResult<()> {
        let mut a = Args::new("swiglu", self);
        let (dh, d_out) = (a.input("h", h)?, a.output("out", out)?);
        self.run(py, a, move |s| {
            let bh = s.buffer(&dh)?;
            let mut bo = s.buffer(&d_out)?;
            let args = Swiglu {
                h: view(&bh, &dh),
                out: view_mut(&mut bo, &d_out),
                limit,
            };
            s.be.swiglu(args.validate()?)?;
            s.finish(&[(&bo, &d_out)])
        })
    }

    /// OPS.md §3 `moe_combine`.
    fn moe_combine(
        &self,
        py: Python<'_>,
        y_perm: &Bound<'_, PyAny>,
        slot_row: &Bound<'_, PyAny>,
        weights: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let mut a = Args::new("moe_combine", self);
        let (dy, ds, dw) = (
            a.input("y_perm", y_perm)?,
            a.input("slot_row", slot_row)?,
            a.input("weights", weights)?,
        );
        let d_out = a.output("out", out)?;
        self.run(py, a, move |s| {
            let (by, bs, bw) = (s.buffer(&dy)?, s.buffer(&ds)?, s.buffer(&dw)?);
            let mut bo = s.buffer(&d_out)?;
            let args = MoeCombine {
                y_perm: view(&by, &dy),
                slot_row: view(&bs, &ds),
                weights: view(&bw, &dw),
                out: view_mut(&mut bo, &d_out),
            };
            s.be.moe_combine(args.validate()?)?;
            s.finish(&[(&bo, &d_out)])
        })
    }

    /// OPS.md §4 `engram_hash`.
    #[pyo3(signature = (layer, ids, rows, positions=None, alive=None, history=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn engram_hash(
        &self,
        py: Python<'_>,
        layer: &PyEngramLayer,
        ids: &Bound<'_, PyAny>,
        rows: &Bound<'_, PyAny>,
        positions: Option<&Bound<'_, PyAny>>,
        alive: Option<&Bound<'_, PyAny>>,
        history: Vec<i64>,
    ) -> PyResult<()> {
        let layer = layer.0.clone();
        let mut a = Args::new("engram_hash", self);
        let (di, dp, da) = (
            a.input("ids", ids)?,
            a.opt_input("positions", positions)?,
            a.opt_input("alive", alive)?,
        );
        let dr = a.output("rows", rows)?;
        self.run(py, a, move |s| {
            let (bi, bp, ba) = (s.buffer(&di)?, s.opt(&dp)?, s.opt(&da)?);
            let mut br = s.buffer(&dr)?;
            let args = EngramHash {
                layer: &layer,
                ids: view(&bi, &di),
                positions: opt_view(&bp, &dp),
                alive: opt_view(&ba, &da),
                history: &history,
                rows: view_mut(&mut br, &dr),
            };
            s.be.engram_hash(args.validate()?)?;
            s.finish(&[(&br, &dr)])
        })
    }

    /// OPS.md §5 `gather_rows`. `format` is `"f32"`, `"bf16"`, `"f16"` or `"fp8_e4m3_ue8m0"`.
    fn gather_rows(
        &self,
        py: Python<'_>,
        table: &Bound<'_, PyAny>,
        rows: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        format: &str,
    ) -> PyResult<()> {
        const OP: &str = "gather_rows";
        let format = table_format(OP, format).map_err(to_py)?;
        let mut a = Args::new(OP, self);
        let (dt, dr) = (a.input("table", table)?, a.input("rows", rows)?);
        let d_out = a.output("out", out)?;
        self.run(py, a, move |s| {
            let (bt, br) = (s.buffer(&dt)?, s.buffer(&dr)?);
            let mut bo = s.buffer(&d_out)?;
            let args = GatherRows {
                table: view(&bt, &dt),
                format,
                rows: view(&br, &dr),
                out: view_mut(&mut bo, &d_out),
            };
            s.be.gather_rows(args.validate()?)?;
            s.finish(&[(&bo, &d_out)])
        })
    }

    /// OPS.md §5 `engram_lookup` (hash then gather).
    #[pyo3(signature = (layer, ids, table, out, format, positions=None, alive=None, history=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn engram_lookup(
        &self,
        py: Python<'_>,
        layer: &PyEngramLayer,
        ids: &Bound<'_, PyAny>,
        table: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        format: &str,
        positions: Option<&Bound<'_, PyAny>>,
        alive: Option<&Bound<'_, PyAny>>,
        history: Vec<i64>,
    ) -> PyResult<()> {
        const OP: &str = "engram_lookup";
        let format = table_format(OP, format).map_err(to_py)?;
        let layer = layer.0.clone();
        let mut a = Args::new(OP, self);
        let (di, dt, dp, da) = (
            a.input("ids", ids)?,
            a.input("table", table)?,
            a.opt_input("positions", positions)?,
            a.opt_input("alive", alive)?,
        );
        let d_out = a.output("out", out)?;
        self.run(py, a, move |s| {
            let (bi, bt, bp, ba) = (s.buffer(&di)?, s.buffer(&dt)?, s.opt(&dp)?, s.opt(&da)?);
            let mut bo = s.buffer(&d_out)?;
            let args = EngramLookup {
                layer: &layer,
                ids: view(&bi, &di),
                positions: opt_view(&bp, &dp),
                alive: opt_view(&ba, &da),
                history: &history,
                table: view(&bt, &dt),
                format,
                out: view_mut(&mut bo, &d_out),
            };
            s.be.engram_lookup(args.validate()?)?;
            s.finish(&[(&bo, &d_out)])
        })
    }

    /// OPS.md §6 `quantize_fp8` (the scale format follows `x_scale`'s dtype: f32, or u8 = ue8m0).
    fn quantize_fp8(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        xq: &Bound<'_, PyAny>,
        x_scale: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let mut a = Args::new("quantize_fp8", self);
        let dx = a.input("x", x)?;
        let (dq, ds) = (a.output("xq", xq)?, a.output("x_scale", x_scale)?);
        self.run(py, a, move |s| {
            let bx = s.buffer(&dx)?;
            let (mut bq, mut bs) = (s.buffer(&dq)?, s.buffer(&ds)?);
            let args = QuantizeFp8 {
                x: view(&bx, &dx),
                xq: view_mut(&mut bq, &dq),
                x_scale: view_mut(&mut bs, &ds),
            };
            s.be.quantize_fp8(args.validate()?)?;
            s.finish(&[(&bq, &dq), (&bs, &ds)])
        })
    }

    /// OPS.md §6 `quantize_int8`.
    fn quantize_int8(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        xq: &Bound<'_, PyAny>,
        x_scale: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let mut a = Args::new("quantize_int8", self);
        let dx = a.input("x", x)?;
        let (dq, ds) = (a.output("xq", xq)?, a.output("x_scale", x_scale)?);
        self.run(py, a, move |s| {
            let bx = s.buffer(&dx)?;
            let (mut bq, mut bs) = (s.buffer(&dq)?, s.buffer(&ds)?);
            let args = QuantizeInt8 {
                x: view(&bx, &dx),
                xq: view_mut(&mut bq, &dq),
                x_scale: view_mut(&mut bs, &ds),
            };
            s.be.quantize_int8(args.validate()?)?;
            s.finish(&[(&bq, &dq), (&bs, &ds)])
        })
    }
}

/// One Engram layer's hash configuration (OPS.md §4), validated at construction.
#[pyclass(name = "EngramLayer", module = "moehal._moehal", frozen)]
struct PyEngramLayer(Arc<EngramLayer>);

#[pymethods]
impl PyEngramLayer {
    /// Build a layer: max order N >= 2, K heads, N odd multipliers, (N-1)*K distinct primes in
    /// column order (n-major, then head), compressed vocabulary size V', pad id < V'.
    /// Raises `ValueError` naming the field at fault.
    #[new]
    fn new(
        max_order: &Bound<'_, PyAny>,
        heads: &Bound<'_, PyAny>,
        multipliers: Vec<Bound<'_, PyAny>>,
        primes: Vec<Bound<'_, PyAny>>,
        vocab_size: &Bound<'_, PyAny>,
        pad_id: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        const OP: &str = "engram_layer";
        let max_order: usize = unsigned(OP, "max_order", max_order)?;
        let heads: usize = unsigned(OP, "heads", heads)?;
        let multipliers: Vec<u64> = unsigned_list(OP, "multipliers", &multipliers)?;
        let primes: Vec<u64> = unsigned_list(OP, "primes", &primes)?;
        let vocab_size: u64 = unsigned(OP, "vocab_size", vocab_size)?;
        let pad_id: u64 = unsigned(OP, "pad_id", pad_id)?;
        EngramLayer::new(max_order, heads, multipliers, primes, vocab_size, pad_id)
            .map(|l| PyEngramLayer(Arc::new(l)))
            .map_err(to_py)
    }

    /// The toy layer of OPS.md §4 (V' = 50, N = 3, K = 2, primes [11, 13, 17, 19], pad 2).
    #[staticmethod]
    fn toy() -> PyResult<Self> {
        moehal_core::engram::toy::layer()
            .map(|l| PyEngramLayer(Arc::new(l)))
            .map_err(to_py)
    }

    /// DeepSeek-V4.1-Flash Engram layer `index` (0 = decoder layer 1, 1 = decoder layer 14).
    #[staticmethod]
    fn v41_flash(index: &Bound<'_, PyAny>) -> PyResult<Self> {
        let index: usize = unsigned(moehal_core::engram::OP, "index", index)?;
        moehal_core::engram::v41_flash::layer(index)
            .map(|l| PyEngramLayer(Arc::new(l)))
            .map_err(to_py)
    }

    /// Max n-gram order N.
    #[getter]
    fn max_order(&self) -> usize {
        self.0.max_order()
    }
    /// Heads K per order.
    #[getter]
    fn heads(&self) -> usize {
        self.0.heads()
    }
    /// Columns C = (N-1)*K of `rows`.
    #[getter]
    fn columns(&self) -> usize {
        self.0.columns()
    }
    /// Table rows R = sum of the primes.
    #[getter]
    fn rows(&self) -> u64 {
        self.0.rows()
    }
    /// Primes in column order.
    #[getter]
    fn primes(&self) -> Vec<u64> {
        self.0.primes().to_vec()
    }
    /// Column row offsets (exclusive prefix sums of the primes).
    #[getter]
    fn offsets(&self) -> Vec<u64> {
        self.0.offsets().to_vec()
    }
    /// Multipliers m[0..N).
    #[getter]
    fn multipliers(&self) -> Vec<u64> {
        self.0.multipliers().to_vec()
    }
    /// Compressed vocabulary size V'.
    #[getter]
    fn vocab_size(&self) -> u64 {
        self.0.vocab_size()
    }
    /// Pad id.
    #[getter]
    fn pad_id(&self) -> u64 {
        self.0.pad_id()
    }
    fn __repr__(&self) -> String {
        format!(
            "EngramLayer(N={}, K={}, V'={}, pad={}, rows={})",
            self.0.max_order(),
            self.0.heads(),
            self.0.vocab_size(),
            self.0.pad_id(),
            self.0.rows()
        )
    }
}

/// Model presets of OPS.md as dicts (name, hidden, expert_width, experts, k, scoring, bias,
/// n_group, topk_group, group_score, renormalize, scale, shared_experts, swiglu_limit).
#[pyfunction]
fn presets(py: Python<'_>) -> PyResult<Vec<PyObject>> {
    moehal::presets::PRESETS
        .iter()
        .map(|p| {
            let d = pyo3::types::PyDict::new(py);
            d.set_item("name", p.name)?;
            d.set_item("hidden", p.hidden)?;
            d.set_item("expert_width", p.expert_width)?;
            d.set_item("experts", p.num_experts)?;
            d.set_item("k", p.topk)?;
            d.set_item("scoring", p.scoring.name())?;
            d.set_item("bias", p.bias)?;
            d.set_item("n_group", p.group.map_or(0, |g| g.n_group))?;
            d.set_item("topk_group", p.group.map_or(0, |g| g.topk_group))?;
            d.set_item("group_score", p.group.map_or("top2_sum", |g| g.score.name()))?;
            d.set_item("renormalize", p.renormalize)?;
            d.set_item("scale", p.routed_scaling_factor)?;
            d.set_item("shared_experts", p.shared_experts)?;
            d.set_item("swiglu_limit", p.swiglu_limit)?;
            Ok(d.into_any().unbind())
        })
        .collect()
}

/// Whether the CPU can address memory of DLPack device type `t` (for the Python layer).
#[pyfunction]
fn _is_host_device(t: i32) -> bool {
    is_host(t)
}

/// The extension module.
#[pymodule]
fn _moehal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(backends, m)?)?;
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_function(wrap_pyfunction!(presets, m)?)?;
    m.add_function(wrap_pyfunction!(_is_host_device, m)?)?;
    m.add_class::<PyBackend>()?;
    m.add_class::<PyEngramLayer>()?;
    Ok(())
}
