//! The `Backend` implementation: memory, and the mapping of each OPS.md op onto aclnn ops (or the
//! host, where no vendor op has the contract's semantics; `supports()` names which).

use std::any::Any;
use std::sync::{Arc, Mutex};

use moehal_ascend_sys as sys;
use moehal_core::ops::{
    gather_rows::check_rows, grouped_gemm::check_group_end, moe_combine::check_slot_rows, moe_permute::check_ids,
    Checked, EngramHash, EngramLookup, GatherRows, GroupScore, GroupedGemm, MoeCombine, MoePermute, OpDesc, RouterTopk,
    Scoring, Swiglu, TableFormat, WeightLayout,
};
use moehal_core::{
    Backend, Buffer, DType, DeviceInfo, DeviceMemory, Error, Location, Reference, Result, Support, TensorMut, TensorRef,
};

use crate::ffi::{DevMem, Runtime, TDesc, Tensor, TensorList, NAME};

/// Device memory handed out as a core [`Buffer`].
struct AscendMem {
    rt: Arc<Runtime>,
    ptr: u64,
    len: usize,
    owned: bool,
}

impl DeviceMemory for AscendMem {
    fn addr(&self) -> u64 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
    fn location(&self) -> Location {
        Location::Device {
            backend: NAME.into(),
            ordinal: self.rt.device as usize,
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Drop for AscendMem {
    fn drop(&mut self) {
        if self.owned {
            let _ = self.rt.free(self.ptr);
        }
    }
}

/// The Ascend backend: one device, one context, one stream; ops are serialised on it.
pub struct Ascend {
    rt: Arc<Runtime>,
    lock: Mutex<()>,
}

fn acl_dt(d: DType) -> sys::aclDataType {
    match d {
        DType::F32 => sys::ACL_FLOAT,
        DType::F16 => sys::ACL_FLOAT16,
        DType::BF16 => sys::ACL_BF16,
        DType::I32 => sys::ACL_INT32,
        DType::I64 => sys::ACL_INT64,
        _ => sys::ACL_UINT8,
    }
}

fn i64s(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// Descriptor of a core view (strides and offset in elements, 1-D storage up to the view's end).
fn desc_of(t: &TensorRef<'_>) -> TDesc {
    TDesc {
        dims: i64s(t.shape()),
        strides: i64s(t.strides()),
        offset: t.offset() as i64,
        storage: t.layout().extent().unwrap_or(0) as i64,
        dtype: acl_dt(t.dtype()),
        addr: t.buffer().addr(),
    }
}

fn reshaped(t: &TensorRef<'_>, dims: &[usize]) -> TDesc {
    let mut d = desc_of(t);
    d.dims = i64s(dims);
    let mut s = 1i64;
    d.strides = d
        .dims
        .iter()
        .rev()
        .map(|&x| {
            let v = s;
            s *= x.max(1);
            v
        })
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    d
}

fn scratch_desc(m: &DevMem<'_>, dt: sys::aclDataType, dims: &[usize]) -> TDesc {
    let d = i64s(dims);
    let n: i64 = d.iter().product();
    let mut s = 1i64;
    let strides = d
        .iter()
        .rev()
        .map(|&x| {
            let v = s;
            s *= x.max(1);
            v
        })
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    TDesc {
        dims: d,
        strides,
        offset: 0,
        storage: n,
        dtype: dt,
        addr: m.ptr,
    }
}

fn bytes_of<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
    bytemuck::cast_slice(v)
}

impl Ascend {
    pub(crate) fn new(rt: Runtime) -> Self {
        Ascend {
            rt: Arc::new(rt),
            lock: Mutex::new(()),
        }
    }

    /// The shared libraries this backend loaded (runtime first).
    pub fn library_paths(&self) -> &[std::path::PathBuf] {
        &self.rt.lib.paths
    }

    fn mine(&self, b: &Buffer, field: &'static str) -> Result<()> {
        match b.downcast_ref::<AscendMem>() {
            Some(m) if Arc::ptr_eq(&m.rt, &self.rt) => Ok(()),
            _ => Err(Error::invalid(
                "ascend",
                field,
                "buffer is not memory of this Ascend backend",
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copy of the bytes `[0, end of view)` of a device tensor's buffer into a host buffer, or
    /// `None` when the tensor already lives in host memory.
    fn stage(&self, t: &TensorRef<'_>) -> Result<Option<Buffer>> {
        if t.buffer().location() == Location::Host {
            return Ok(None);
        }
        self.mine(t.buffer(), "tensor")?;
        let (_, end) = t.byte_range();
        let mut hb = Reference.alloc(end)?;
        let mut tmp = vec![0u8; end];
        self.rt.d2h(&mut tmp, t.buffer().addr())?;
        Reference.upload(&mut hb, 0, &tmp)?;
        Ok(Some(hb))
    }

    fn fetch<T: moehal_core::Element>(&self, t: &TensorRef<'_>) -> Result<Vec<T>> {
        let (s, e) = t.byte_range();
        let mut v = vec![T::zeroed(); (e - s) / std::mem::size_of::<T>()];
        if t.buffer().location() == Location::Host {
            Reference.download(t.buffer(), s, bytemuck::cast_slice_mut(&mut v))?;
        } else {
            self.rt
                .d2h(bytemuck::cast_slice_mut(&mut v), t.buffer().addr() + s as u64)?;
        }
        Ok(v)
    }

    /// Write the view's bytes of a staged host buffer back to the device tensor.
    fn unstage(&self, host: &Buffer, t: &TensorMut<'_>) -> Result<()> {
        let (s, e) = t.byte_range();
        let mut tmp = vec![0u8; e - s];
        Reference.download(host, s, &mut tmp)?;
        self.put(t, s, &tmp)
    }

    fn put(&self, t: &TensorMut<'_>, byte_off: usize, bytes: &[u8]) -> Result<()> {
        let b = t.buffer();
        self.mine(b, "output")?;
        self.rt.h2d(b.addr() + byte_off as u64, b.len() - byte_off, bytes)
    }

    fn t<'r>(&'r self, d: &TDesc) -> Result<Tensor<'r>> {
        Tensor::new(&self.rt, d)
    }
}

fn hv<'a>(staged: &'a Option<Buffer>, t: &TensorRef<'a>) -> TensorRef<'a> {
    match staged {
        Some(b) => b.view(t.dtype(), t.shape()).with_offset(t.offset()),
        None => *t,
    }
}
fn hm<'a>(staged: &'a mut Option<Buffer>, t: &TensorMut<'_>) -> Result<TensorMut<'a>> {
    match staged {
        Some(b) => Ok(b.view_mut(t.dtype(), t.shape()).with_offset(t.offset())),
        None => Err(Error::unsupported("ascend", NAME, "host-resident output")),
    }
}

impl Ascend {
    fn gmm_host(&self, a: &GroupedGemm<'_>) -> Result<()> {
        let (sx, sw, sg) = (self.stage(&a.x)?, self.stage(&a.w)?, self.stage(&a.group_end)?);
        let ss = a.row_scale.as_ref().map(|r| self.stage(r)).transpose()?;
        let sb = a.bias.as_ref().map(|r| self.stage(r)).transpose()?;
        let mut sy = self.stage(&a.y.as_ref())?;
        let args = GroupedGemm {
            x: hv(&sx, &a.x),
            w: hv(&sw, &a.w),
            layout: a.layout,
            group_end: hv(&sg, &a.group_end),
            row_scale: a.row_scale.as_ref().zip(ss.as_ref()).map(|(r, s)| hv(s, r)),
            bias: a.bias.as_ref().zip(sb.as_ref()).map(|(r, s)| hv(s, r)),
            y: hm(&mut sy, &a.y)?,
        };
        Reference.grouped_gemm(args.validate()?)?;
        self.unstage(sy.as_ref().expect("device output staged"), &a.y)
    }
}

impl Backend for Ascend {
    fn name(&self) -> &str {
        NAME
    }

    fn device_info(&self) -> DeviceInfo {
        let soc = self.rt.soc_name();
        DeviceInfo {
            name: soc.clone(),
            memory_bytes: self.rt.mem_info().ok().map(|m| m.1),
            capability: soc,
            compute_units: None,
        }
    }

    fn supports(&self, op: &OpDesc) -> Support {
        let v = self.rt.lib.versions;
        match *op {
            OpDesc::GroupedGemm { dtype, layout } => {
                if v.gmm == 0 {
                    return Support::yes("host (no aclnnGroupedMatmulV3/V4 in the op libraries)");
                }
                let lay = match layout {
                    WeightLayout::KN => "weight KN",
                    WeightLayout::NK => "weight NK as transposed strides",
                };
                let bias = if dtype == DType::BF16 {
                    " + aclnnCast bias->f32"
                } else {
                    ""
                };
                Support::yes(format!(
                    "aclnnGroupedMatmulV{} (groupListType 0, {lay}){bias}; row_scale on host",
                    v.gmm
                ))
            }
            OpDesc::RouterHash { .. } => Support::no("hash routing (tid2eid) is not implemented for Ascend yet"),
            OpDesc::RouterTopk { scoring, group, .. } => {
                let vendor = match (scoring, group) {
                    (Scoring::Softmax, None) if v.gating_softmax && v.gating => {
                        Some("aclnnMoeGatingTopKSoftmax (no bias) / aclnnMoeGatingTopK (bias)")
                    }
                    (Scoring::Softmax, None) if v.gating_softmax => {
                        Some("aclnnMoeGatingTopKSoftmax (no bias; host with bias)")
                    }
                    (Scoring::Softmax | Scoring::Sigmoid, _) if v.gating => Some("aclnnMoeGatingTopK"),
                    _ => None,
                };
                match vendor {
                    Some(n) => Support::yes(format!(
                        "{n} (expert ids) + host (unbiased weights, renormalize, scaling, counts; rows with non-finite logits)"
                    )),
                    None => Support::yes("host (no vendor gating op with these semantics)"),
                }
            }
            OpDesc::MoePermute { x } => {
                if x.is_some() && v.init_routing > 0 && (v.init_routing == 3 || v.cast) {
                    Support::yes(format!(
                        "aclnnMoeInitRoutingV{} (x_perm, group_end{}) + host (slot_row, src_token; dropped slots)",
                        v.init_routing,
                        if v.init_routing == 2 { " via aclnnCast" } else { "" }
                    ))
                } else {
                    Support::yes("host")
                }
            }
            OpDesc::Swiglu { .. } => Support::yes("host (aclnnSwiGlu not mapped)"),
            OpDesc::MoeCombine { dtype } => {
                if v.finalize && (dtype == DType::F32 || v.cast) {
                    Support::yes("aclnnMoeFinalizeRoutingV2 (dropPadMode 2) + host (dropped slots)")
                } else {
                    Support::yes("host")
                }
            }
            OpDesc::EngramHash => Support::yes("host (no CANN kernel; ids are known ahead of the step)"),
            OpDesc::GatherRows { table, out, host_table } | OpDesc::EngramLookup { table, out, host_table } => {
                let hash = if matches!(op, OpDesc::EngramLookup { .. }) {
                    "host hash + "
                } else {
                    ""
                };
                if !host_table && table != TableFormat::Fp8E4m3Ue8m0 && table.storage_dtype() == out && v.gather > 0 {
                    let n = ["", "aclnnEmbedding", "aclnnGatherV2", "aclnnIndexSelect"][v.gather as usize];
                    Support::yes(format!("{hash}{n}"))
                } else {
                    Support::yes(format!(
                        "{hash}host gather (fp8 dequant / host table / no gather op), staged"
                    ))
                }
            }
        }
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        let ptr = self.rt.malloc(bytes)?;
        let buf = AscendMem {
            rt: self.rt.clone(),
            ptr,
            len: bytes,
            owned: true,
        };
        // Fresh memory is zeroed (aclrtMemset), so results never depend on earlier contents.
        self.rt.memset(ptr, bytes, 0, bytes)?;
        Ok(Buffer::new(Box::new(buf)))
    }

    fn upload(&self, dst: &mut Buffer, offset: usize, src: &[u8]) -> Result<()> {
        self.mine(dst, "dst")?;
        if offset.checked_add(src.len()).is_none_or(|e| e > dst.len()) {
            return Err(Error::invalid(
                "upload",
                "offset",
                format!("{offset} + {} exceeds buffer of {}", src.len(), dst.len()),
            ));
        }
        let _g = self.lock();
        self.rt.h2d(dst.addr() + offset as u64, dst.len() - offset, src)
    }

    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.mine(src, "src")?;
        if offset.checked_add(dst.len()).is_none_or(|e| e > src.len()) {
            return Err(Error::invalid(
                "download",
                "offset",
                format!("{offset} + {} exceeds buffer of {}", dst.len(), src.len()),
            ));
        }
        let _g = self.lock();
        self.rt.d2h(dst, src.addr() + offset as u64)
    }

    fn synchronize(&self) -> Result<()> {
        let _g = self.lock();
        self.rt.sync()
    }

    unsafe fn wrap_external(&self, ptr: u64, bytes: usize) -> Result<Buffer> {
        if ptr == 0 {
            return Err(Error::invalid("wrap_external", "ptr", "null pointer"));
        }
        Ok(Buffer::new(Box::new(AscendMem {
            rt: self.rt.clone(),
            ptr,
            len: bytes,
            owned: false,
        })))
    }

    fn grouped_gemm(&self, args: Checked<GroupedGemm<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        let d = a.dims();
        for (t, f) in [(&a.x, "x"), (&a.w, "w"), (&a.group_end, "group_end")] {
            self.mine(t.buffer(), f)?;
        }
        self.mine(a.y.buffer(), "y")?;
        let ge: Vec<i64> = self.fetch(&a.group_end)?;
        check_group_end(&ge, d.m)?;
        if d.m == 0 || d.n == 0 {
            return Ok(());
        }
        let v = self.rt.lib.versions;
        let dt = a.x.dtype();
        if v.gmm == 0
            || d.k == 0
            || d.k >= 65536
            || d.n >= 65536
            || d.groups > 1024
            || (a.bias.is_some() && dt == DType::BF16 && !v.cast)
        {
            return self.gmm_host(&a);
        }
        let total = ge.last().copied().unwrap_or(0) as usize;
        // Weight as [G, K, N]: KN is contiguous, NK is expressed by transposed strides.
        let mut wd = desc_of(&a.w);
        let (k, n) = (d.k as i64, d.n as i64);
        wd.dims = vec![d.groups as i64, k, n];
        wd.strides = match a.layout {
            WeightLayout::KN => vec![k * n, n, 1],
            WeightLayout::NK => vec![k * n, 1, k],
        };
        let x = TensorList::new(&self.rt, vec![self.t(&desc_of(&a.x))?])?;
        let w = TensorList::new(&self.rt, vec![self.t(&wd)?])?;
        let y = TensorList::new(&self.rt, vec![self.t(&desc_of(&a.y.as_ref()))?])?;
        let group = self.t(&desc_of(&a.group_end))?;
        let mut bias_f32 = None;
        let bias = match &a.bias {
            None => None,
            Some(b) if dt == DType::BF16 => {
                let m = DevMem::new(&self.rt, d.groups * d.n * 4)?;
                let src = self.t(&desc_of(b))?;
                let dst = self.t(&scratch_desc(&m, sys::ACL_FLOAT, &[d.groups, d.n]))?;
                self.rt.cast(&src, sys::ACL_FLOAT, &dst)?;
                let l = TensorList::new(
                    &self.rt,
                    vec![self.t(&scratch_desc(&m, sys::ACL_FLOAT, &[d.groups, d.n]))?],
                )?;
                bias_f32 = Some(m);
                Some(l)
            }
            Some(b) => Some(TensorList::new(&self.rt, vec![self.t(&desc_of(b))?])?),
        };
        self.rt.grouped_matmul(v.gmm == 4, &x, &w, bias.as_ref(), &group, &y)?;
        drop(bias_f32);
        if let (Some(rs), true) = (&a.row_scale, total > 0) {
            // Router weights scale the whole expert output: applied on the host to the routed rows.
            let s: Vec<f32> = self.fetch(rs)?;
            let es = dt.size();
            let (off, _) = a.y.byte_range();
            let mut yb = vec![0u8; total * d.n * es];
            self.rt.d2h(&mut yb, a.y.buffer().addr() + off as u64)?;
            for (r, &sr) in s.iter().enumerate().take(total) {
                for c in 0..d.n {
                    let p = (r * d.n + c) * es;
                    let b = &mut yb[p..p + es];
                    match dt {
                        DType::F32 => {
                            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * sr;
                            b.copy_from_slice(&v.to_le_bytes());
                        }
                        DType::F16 => {
                            let v = half::f16::from_le_bytes([b[0], b[1]]).to_f32() * sr;
                            b.copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
                        }
                        _ => {
                            let v = half::bf16::from_le_bytes([b[0], b[1]]).to_f32() * sr;
                            b.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes());
                        }
                    }
                }
            }
            self.put(&a.y, off, &yb)?;
        }
        Ok(())
    }

    fn router_topk(&self, args: Checked<RouterTopk<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        let (t, e) = a.dims();
        let cfg = a.config;
        let k = cfg.k;
        let v = self.rt.lib.versions;
        let group = cfg.effective_group();
        let vendor = match (cfg.scoring, group) {
            (Scoring::Softmax, None) if a.bias.is_none() && v.gating_softmax && k <= 1024 => 1,
            (Scoring::Softmax | Scoring::Sigmoid, _) if v.gating && e <= 2048 => 2,
            _ => 0,
        };
        let lg = self.stage(&a.logits)?;
        let logits: Vec<f64> = {
            let h = hv(&lg, &a.logits);
            let n = t * e;
            let mut out = Vec::with_capacity(n);
            let raw: Vec<u8> = {
                let (s, en) = h.byte_range();
                let mut b = vec![0u8; en - s];
                Reference.download(h.buffer(), s, &mut b)?;
                b
            };
            for i in 0..n {
                out.push(match h.dtype() {
                    DType::F32 => f32::from_le_bytes(raw[i * 4..i * 4 + 4].try_into().unwrap_or([0; 4])) as f64,
                    DType::F16 => half::f16::from_le_bytes([raw[i * 2], raw[i * 2 + 1]]).to_f64(),
                    _ => half::bf16::from_le_bytes([raw[i * 2], raw[i * 2 + 1]]).to_f64(),
                });
            }
            out
        };
        if vendor == 0 || logits.iter().any(|x| !x.is_finite()) || t == 0 {
            // Host: the contract's scoring, exclusion of non-finite logits and tie rules.
            let sb = a.bias.as_ref().map(|b| self.stage(b)).transpose()?;
            let mut si = self.stage(&a.ids.as_ref())?;
            let mut sw = self.stage(&a.weights.as_ref())?;
            let mut sc = match &a.expert_counts {
                Some(c) => Some(self.stage(&c.as_ref())?),
                None => None,
            };
            let args = RouterTopk {
                config: cfg,
                logits: hv(&lg, &a.logits),
                bias: a.bias.as_ref().zip(sb.as_ref()).map(|(r, s)| hv(s, r)),
                ids: hm(&mut si, &a.ids)?,
                weights: hm(&mut sw, &a.weights)?,
                expert_counts: match (&a.expert_counts, sc.as_mut()) {
                    (Some(c), Some(s)) => Some(hm(s, c)?),
                    _ => None,
                },
            };
            Reference.router_topk(args.validate()?)?;
            self.unstage(si.as_ref().expect("staged"), &a.ids)?;
            self.unstage(sw.as_ref().expect("staged"), &a.weights)?;
            if let (Some(c), Some(Some(s))) = (&a.expert_counts, sc.as_ref()) {
                self.unstage(s, c)?;
            }
            return Ok(());
        }
        // Vendor op for the selection; scratch outputs.
        let dt = a.logits.dtype();
        let ymem = DevMem::new(&self.rt, t * k * dt.size())?;
        let imem = DevMem::new(&self.rt, t * k * 4)?;
        let x = self.t(&desc_of(&a.logits))?;
        let y = self.t(&scratch_desc(&ymem, acl_dt(dt), &[t, k]))?;
        let idx = self.t(&scratch_desc(&imem, sys::ACL_INT32, &[t, k]))?;
        if vendor == 1 {
            let rmem = DevMem::new(&self.rt, t * k * 4)?;
            let row = self.t(&scratch_desc(&rmem, sys::ACL_INT32, &[t, k]))?;
            self.rt.gating_topk_softmax(&x, k as i64, &y, &idx, &row)?;
        } else {
            let bias = a.bias.as_ref().map(|b| self.t(&desc_of(b))).transpose()?;
            let (gc, kg, mode) = match group {
                Some(g) => (
                    g.n_group as i64,
                    g.topk_group as i64,
                    if g.score == GroupScore::Top2Sum { 1 } else { 0 },
                ),
                None => (1, 1, 0),
            };
            let norm = if cfg.scoring == Scoring::Sigmoid { 1 } else { 0 };
            self.rt
                .gating_topk(&x, bias.as_ref(), k as i64, kg, gc, mode, norm, &y, &idx)?;
        }
        let mut ids = vec![0i32; t * k];
        self.rt.d2h(bytemuck::cast_slice_mut(&mut ids), imem.ptr)?;
        // Host: unbiased scores of the chosen experts, renormalize, scale once; counts.
        let mut w = vec![0f32; t * k];
        let mut counts = vec![0i64; e];
        for r in 0..t {
            let row = &logits[r * e..(r + 1) * e];
            let s: Vec<f64> = match cfg.scoring {
                Scoring::Softmax => {
                    let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = row.iter().map(|x| (x - mx).exp()).sum();
                    row.iter().map(|x| (x - mx).exp() / sum).collect()
                }
                _ => row.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
            };
            let sel = &ids[r * k..(r + 1) * k];
            if sel.iter().any(|&i| i < 0 || i as usize >= e) {
                return Err(Error::device(
                    NAME,
                    0,
                    format!("vendor gating op returned an expert id outside [0, {e})"),
                ));
            }
            let mut ws: Vec<f64> = sel.iter().map(|&i| s[i as usize]).collect();
            if cfg.renormalize {
                let sum: f64 = ws.iter().sum::<f64>() + 1e-20;
                ws.iter_mut().for_each(|x| *x /= sum);
            }
            for j in 0..k {
                w[r * k + j] = (ws[j] * cfg.routed_scaling_factor as f64) as f32;
                counts[sel[j] as usize] += 1;
            }
        }
        let (io, _) = a.ids.byte_range();
        self.put(&a.ids, io, bytes_of(&ids))?;
        let (wo, _) = a.weights.byte_range();
        self.put(&a.weights, wo, bytes_of(&w))?;
        if let Some(c) = &a.expert_counts {
            let (co, _) = c.byte_range();
            self.put(c, co, bytes_of(&counts))?;
        }
        Ok(())
    }

    fn moe_permute(&self, args: Checked<MoePermute<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        let (t, k) = a.dims();
        let e = a.num_experts;
        let ids: Vec<i32> = self.fetch(&a.ids)?;
        check_ids(&ids, e)?;
        let v = self.rt.lib.versions;
        let dropped = ids.iter().any(|&i| i < 0);
        let device = a.x.is_some() && !dropped && t * k > 0 && v.init_routing > 0 && (v.init_routing == 3 || v.cast);
        if !device {
            let sx = a.x.as_ref().map(|x| self.stage(x)).transpose()?;
            let si = self.stage(&a.ids)?;
            let mut sg = self.stage(&a.group_end.as_ref())?;
            let mut ss = self.stage(&a.src_token.as_ref())?;
            let mut sr = self.stage(&a.slot_row.as_ref())?;
            let mut sp = match &a.x_perm {
                Some(p) => Some(self.stage(&p.as_ref())?),
                None => None,
            };
            let args = MoePermute {
                num_experts: e,
                ids: hv(&si, &a.ids),
                x: a.x.as_ref().zip(sx.as_ref()).map(|(r, s)| hv(s, r)),
                group_end: hm(&mut sg, &a.group_end)?,
                src_token: hm(&mut ss, &a.src_token)?,
                slot_row: hm(&mut sr, &a.slot_row)?,
                x_perm: match (&a.x_perm, sp.as_mut()) {
                    (Some(p), Some(s)) => Some(hm(s, p)?),
                    _ => None,
                },
            };
            Reference.moe_permute(args.validate()?)?;
            self.unstage(sg.as_ref().expect("staged"), &a.group_end)?;
            self.unstage(ss.as_ref().expect("staged"), &a.src_token)?;
            self.unstage(sr.as_ref().expect("staged"), &a.slot_row)?;
            if let (Some(p), Some(Some(s))) = (&a.x_perm, sp.as_ref()) {
                self.unstage(s, p)?;
            }
            return Ok(());
        }
        let x = a.x.as_ref().expect("checked above");
        let h = x.shape()[1];
        let n = t * k;
        let scratch_x = if a.x_perm.is_none() {
            Some(DevMem::new(&self.rt, (n * h * x.dtype().size()).max(1))?)
        } else {
            None
        };
        let ex_desc = match (&a.x_perm, &scratch_x) {
            (Some(p), _) => reshaped(&p.as_ref(), &[n, h]),
            (None, Some(m)) => scratch_desc(m, acl_dt(x.dtype()), &[n, h]),
            _ => return Err(Error::device(NAME, 0, "internal: no expandedX")),
        };
        let rmem = DevMem::new(&self.rt, n * 4)?;
        let xt = self.t(&desc_of(x))?;
        let it = self.t(&desc_of(&a.ids))?;
        let ext = self.t(&ex_desc)?;
        let rt = self.t(&scratch_desc(&rmem, sys::ACL_INT32, &[n]))?;
        if v.init_routing == 3 {
            let ct = self.t(&desc_of(&a.group_end.as_ref()))?;
            self.rt.init_routing(true, &xt, &it, e as i64, &ext, &rt, &ct)?;
        } else {
            let cmem = DevMem::new(&self.rt, e * 4)?;
            let ct = self.t(&scratch_desc(&cmem, sys::ACL_INT32, &[e]))?;
            self.rt.init_routing(false, &xt, &it, e as i64, &ext, &rt, &ct)?;
            let ge = self.t(&desc_of(&a.group_end.as_ref()))?;
            self.rt.cast(&ct, sys::ACL_INT64, &ge)?;
        }
        let mut row = vec![0i32; n];
        self.rt.d2h(bytemuck::cast_slice_mut(&mut row), rmem.ptr)?;
        let slot: Vec<i64> = row.iter().map(|&r| r as i64).collect();
        let mut src = vec![0i64; n];
        for (f, &r) in row.iter().enumerate() {
            if r < 0 || r as usize >= n {
                return Err(Error::device(
                    NAME,
                    0,
                    format!("vendor routing returned expandedRowIdx {r} outside [0, {n})"),
                ));
            }
            src[r as usize] = (f / k) as i64;
        }
        let (so, _) = a.slot_row.byte_range();
        self.put(&a.slot_row, so, bytes_of(&slot))?;
        let (to, _) = a.src_token.byte_range();
        self.put(&a.src_token, to, bytes_of(&src))?;
        Ok(())
    }

    fn swiglu(&self, args: Checked<Swiglu<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        let sh = self.stage(&a.h)?;
        let mut so = self.stage(&a.out.as_ref())?;
        let args = Swiglu {
            h: hv(&sh, &a.h),
            out: hm(&mut so, &a.out)?,
            limit: a.limit,
        };
        Reference.swiglu(args.validate()?)?;
        self.unstage(so.as_ref().expect("staged"), &a.out)
    }

    fn moe_combine(&self, args: Checked<MoeCombine<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        let (t, k, h, rows) = a.dims();
        let slot: Vec<i64> = self.fetch(&a.slot_row)?;
        check_slot_rows(&slot, rows)?;
        let v = self.rt.lib.versions;
        let dt = a.y_perm.dtype();
        let device = v.finalize
            && (dt == DType::F32 || v.cast)
            && !slot.iter().any(|&s| s < 0)
            && t * k > 0
            && rows > 0
            && h > 0;
        if !device {
            let sy = self.stage(&a.y_perm)?;
            let ss = self.stage(&a.slot_row)?;
            let sw = self.stage(&a.weights)?;
            let mut so = self.stage(&a.out.as_ref())?;
            let args = MoeCombine {
                y_perm: hv(&sy, &a.y_perm),
                slot_row: hv(&ss, &a.slot_row),
                weights: hv(&sw, &a.weights),
                out: hm(&mut so, &a.out)?,
            };
            Reference.moe_combine(args.validate()?)?;
            return self.unstage(so.as_ref().expect("staged"), &a.out);
        }
        let rows32: Vec<i32> = slot.iter().map(|&s| s as i32).collect();
        let rmem = DevMem::new(&self.rt, rows32.len() * 4)?;
        self.rt.h2d(rmem.ptr, rmem.len, bytes_of(&rows32))?;
        let ex = self.t(&desc_of(&a.y_perm))?;
        let ri = self.t(&scratch_desc(&rmem, sys::ACL_INT32, &[t * k]))?;
        let out = self.t(&desc_of(&a.out.as_ref()))?;
        let w = self.t(&desc_of(&a.weights))?;
        if dt == DType::F32 {
            self.rt.finalize_routing(&ex, &ri, &w, &out)
        } else {
            // The vendor op takes scales in the dtype of expandedX: cast the f32 router weights.
            let smem = DevMem::new(&self.rt, t * k * dt.size())?;
            let st = self.t(&scratch_desc(&smem, acl_dt(dt), &[t, k]))?;
            self.rt.cast(&w, acl_dt(dt), &st)?;
            self.rt.finalize_routing(&ex, &ri, &st, &out)
        }
    }

    fn engram_hash(&self, args: Checked<EngramHash<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        let si = self.stage(&a.ids)?;
        let sp = a.positions.as_ref().map(|p| self.stage(p)).transpose()?;
        let sa = a.alive.as_ref().map(|p| self.stage(p)).transpose()?;
        let mut so = self.stage(&a.rows.as_ref())?;
        let args = EngramHash {
            layer: a.layer,
            ids: hv(&si, &a.ids),
            positions: a.positions.as_ref().zip(sp.as_ref()).map(|(r, s)| hv(s, r)),
            alive: a.alive.as_ref().zip(sa.as_ref()).map(|(r, s)| hv(s, r)),
            history: a.history,
            rows: hm(&mut so, &a.rows)?,
        };
        Reference.engram_hash(args.validate()?)?;
        self.unstage(so.as_ref().expect("staged"), &a.rows)
    }

    fn gather_rows(&self, args: Checked<GatherRows<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        self.gather_locked(a)
    }

    fn engram_lookup(&self, args: Checked<EngramLookup<'_>>) -> Result<()> {
        let a = args.into_inner();
        let (t, c) = (a.ids.shape()[0], a.layer.columns());
        let mut rows = self.alloc((t * c * 8).max(8))?;
        {
            let h = EngramHash {
                layer: a.layer,
                ids: a.ids,
                positions: a.positions,
                alive: a.alive,
                history: a.history,
                rows: rows.view_mut(DType::I64, &[t, c]),
            };
            self.engram_hash(h.validate()?)?;
        }
        let g = GatherRows {
            table: a.table,
            format: a.format,
            rows: rows.view(DType::I64, &[t, c]),
            out: a.out,
        };
        let g = g.validate()?;
        let _g = self.lock();
        self.gather_locked(g.into_inner())
    }
}

impl Ascend {
    fn gather_locked(&self, a: GatherRows<'_>) -> Result<()> {
        let (t, c, r, d) = a.dims();
        let rows: Vec<i64> = self.fetch(&a.rows)?;
        check_rows("gather_rows", &rows, r)?;
        let v = self.rt.lib.versions;
        let host_table = a.table.buffer().location() == Location::Host;
        let device = !host_table
            && a.format != TableFormat::Fp8E4m3Ue8m0
            && a.format.storage_dtype() == a.out.dtype()
            && v.gather > 0
            && t * c > 0
            && d > 0;
        if !device {
            let st = self.stage(&a.table)?;
            let sr = self.stage(&a.rows)?;
            let mut so = self.stage(&a.out.as_ref())?;
            let args = GatherRows {
                table: hv(&st, &a.table),
                format: a.format,
                rows: hv(&sr, &a.rows),
                out: hm(&mut so, &a.out)?,
            };
            Reference.gather_rows(args.validate()?)?;
            return self.unstage(so.as_ref().expect("staged"), &a.out);
        }
        let table = self.t(&desc_of(&a.table))?;
        let index = self.t(&reshaped(&a.rows, &[t * c]))?;
        let out = self.t(&reshaped(&a.out.as_ref(), &[t * c, d]))?;
        self.rt.gather(v.gather, &table, &index, &out)
    }
}
