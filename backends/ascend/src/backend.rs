//! The `Backend` implementation: memory, and the mapping of each OPS.md op onto aclnn ops (or the
//! host, where no vendor op has the contract's semantics; `supports()` names which).

use std::any::Any;
use std::sync::{Arc, Mutex};

use moehal_ascend_sys as sys;
use moehal_core::ops::{
    gather_rows::check_rows, grouped_gemm::check_group_end, moe_combine::check_slot_rows, moe_permute::check_ids,
    Checked, EngramHash, EngramLookup, GatherRows, GroupLimit, GroupScore, GroupedGemm, MoeCombine, MoePermute, OpDesc,
    RouterConfig, RouterTopk, Scoring, Swiglu, TableFormat, WeightLayout,
};
use moehal_core::{
    Backend, Buffer, DType, DeviceInfo, DeviceMemory, Error, Location, Reference, Result, Support, TensorMut, TensorRef,
};

use crate::ffi::{DevMem, IntArray, Outcome, Runtime, TDesc, Tensor, TensorList, NAME};
use crate::routes::{GatingPattern, PermutePath, Routes};

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
    routes: Routes,
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

/// The alignment `aclCreateTensor` requires of `tensorData` ([HA] canncommercial/900
/// operatorlist_00019: "must be 32-byte aligned, else undefined behaviour").
const ACL_DATA_ALIGN: u64 = 32;

/// Descriptor of a core view for argument `field` of `op`.
///
/// An engine may hand a row slice: a buffer (e.g. `wrap_external` of a DLTensor's `data +
/// byte_offset`) whose element 0 is not 32-byte aligned. `tensorData` is then the address rounded
/// down to 32 bytes and the remainder becomes the element `offset`, with a 1-D storage from that base
/// to the end of the view: the documented view mechanism (viewDims / strides / offset /
/// storageDims, `ascend_acl.md` §3.1). The rounded-down base stays inside the caller's allocation
/// because `aclrtMalloc` bases are 64-byte aligned.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `field` when element 0 is not aligned to the element size
/// (no element offset can express it) or the view's extent overflows.
fn desc_of(t: &TensorRef<'_>, op: &'static str, field: &'static str) -> Result<TDesc> {
    let es = t.dtype().size() as u64;
    let start = (t.offset() as u64)
        .checked_mul(es)
        .and_then(|o| t.buffer().addr().checked_add(o))
        .ok_or_else(|| Error::invalid(op, field, "address of element 0 overflows"))?;
    if start % es != 0 {
        return Err(Error::invalid(
            op,
            field,
            format!(
                "element 0 at device address {start:#x} is not aligned to its {es}-byte {} elements",
                t.dtype()
            ),
        ));
    }
    let base = start - start % ACL_DATA_ALIGN;
    let off = ((start - base) / es) as i64;
    let span = t
        .layout()
        .extent()
        .and_then(|e| e.checked_sub(t.offset()))
        .ok_or_else(|| Error::invalid(op, field, "view extent overflows"))?;
    Ok(TDesc {
        dims: i64s(t.shape()),
        strides: i64s(t.strides()),
        offset: off,
        storage: off + span as i64,
        dtype: acl_dt(t.dtype()),
        addr: base,
        name: field,
    })
}

fn contiguous_strides(dims: &[i64]) -> Vec<i64> {
    let mut s = 1i64;
    let mut v: Vec<i64> = dims
        .iter()
        .rev()
        .map(|&x| {
            let r = s;
            s *= x.max(1);
            r
        })
        .collect();
    v.reverse();
    v
}

/// [`desc_of`] of a contiguous view, described with another shape of the same element count.
fn reshaped(t: &TensorRef<'_>, dims: &[usize], op: &'static str, field: &'static str) -> Result<TDesc> {
    let mut d = desc_of(t, op, field)?;
    d.dims = i64s(dims);
    d.strides = contiguous_strides(&d.dims);
    Ok(d)
}

/// Descriptor of backend scratch memory (`aclrtMalloc`, so aligned), contiguous `dims`.
pub(crate) fn scratch_desc(m: &DevMem<'_>, dt: sys::aclDataType, dims: &[usize]) -> TDesc {
    let d = i64s(dims);
    let n: i64 = d.iter().product();
    TDesc {
        strides: contiguous_strides(&d),
        dims: d,
        offset: 0,
        storage: n,
        dtype: dt,
        addr: m.ptr,
        name: "scratch",
    }
}

const OP_GG: &str = "grouped_gemm";
const OP_RT: &str = "router_topk";
const OP_MP: &str = "moe_permute";
const OP_MC: &str = "moe_combine";
const OP_GR: &str = "gather_rows";

fn bytes_of<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
    bytemuck::cast_slice(v)
}

impl Ascend {
    /// Wrap an opened runtime, probing the installed ops once (see [`crate::routes`]).
    pub(crate) fn new(rt: Runtime) -> Self {
        let routes = Routes::probe(&rt);
        Ascend {
            rt: Arc::new(rt),
            lock: Mutex::new(()),
            routes,
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

/// Which path one `router_topk` call takes.
#[derive(Debug, Clone, Copy)]
enum RouterRoute {
    /// The reference on the host (staged).
    Host,
    /// `aclnnMoeGatingTopKSoftmax` selects, the host computes the weights.
    Softmax,
    /// `aclnnMoeGatingTopK` selects (pattern accepted by the open-time probe), the host computes
    /// the weights.
    Gating(GatingPattern),
}

/// The `aclnnMoeGatingTopK` pattern of a router config, if the op has that scoring at all.
fn gating_pattern(cfg: &RouterConfig, bias: bool) -> Option<GatingPattern> {
    let sigmoid = match cfg.scoring {
        Scoring::Softmax => false,
        Scoring::Sigmoid => true,
        _ => return None,
    };
    Some(GatingPattern {
        sigmoid,
        top2: cfg.effective_group().map(|g| g.score == GroupScore::Top2Sum),
        bias,
    })
}

/// The documented shape limits of `aclnnMoeGatingTopK` ([OT] moe_gating_top_k_tiling.cpp:221-227
/// and the doc's 约束说明, `ascend_audit.md` §1.4 and P7): E <= 2048; E divisible by groupCount;
/// 1 <= kGroup <= groupCount; 1 <= k <= E/groupCount·kGroup; top-2-sum needs >= 2 experts per
/// group; and, whenever grouped (groupCount not 1 or E, kGroup != groupCount),
/// groupCount·align32(E/groupCount) <= 2048.
///
/// # Errors
/// The limit broken, as text.
pub(crate) fn gating_shape_ok(e: usize, k: usize, group: Option<GroupLimit>) -> std::result::Result<(), String> {
    if e > 2048 {
        return Err(format!("E = {e} > 2048"));
    }
    let (gc, kg) = group.map_or((1, 1), |g| (g.n_group, g.topk_group));
    if gc == 0 || e % gc != 0 {
        return Err(format!("E = {e} not divisible by groupCount {gc}"));
    }
    if kg == 0 || kg > gc {
        return Err(format!("kGroup {kg} outside [1, {gc}]"));
    }
    let per = e / gc;
    if k == 0 || k > per * kg {
        return Err(format!("k = {k} outside [1, E/groupCount·kGroup = {}]", per * kg));
    }
    if group.is_some_and(|g| g.score == GroupScore::Top2Sum) && per < 2 {
        return Err(format!("top-2-sum groups of {per} expert(s)"));
    }
    if gc != 1 && gc != e && kg != gc && gc * per.div_ceil(32) * 32 > 2048 {
        return Err(format!(
            "groupCount·align32(E/groupCount) = {} > 2048",
            gc * per.div_ceil(32) * 32
        ));
    }
    Ok(())
}

impl Ascend {
    fn router_route(&self, cfg: &RouterConfig, e: usize, dt: DType, bias: bool) -> RouterRoute {
        let v = self.rt.lib.versions;
        let k = cfg.k;
        if cfg.scoring == Scoring::Softmax
            && cfg.effective_group().is_none()
            && !bias
            && v.gating_softmax
            && k <= e.min(1024)
        {
            return RouterRoute::Softmax;
        }
        match gating_pattern(cfg, bias) {
            Some(p)
                if v.gating
                    && self.routes.gating_ok(p)
                    && (dt == DType::F32 || v.cast)
                    && gating_shape_ok(e, k, cfg.effective_group()).is_ok() =>
            {
                RouterRoute::Gating(p)
            }
            _ => RouterRoute::Host,
        }
    }

    /// `moe_combine` on the host (dropped slots, or no vendor path).
    fn combine_host(&self, a: &MoeCombine<'_>) -> Result<()> {
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
        self.unstage(so.as_ref().expect("staged"), &a.out)
    }

    /// `moe_permute` on the host (no x, dropped slots, or no vendor path).
    fn permute_host(&self, a: &MoePermute<'_>) -> Result<()> {
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
            num_experts: a.num_experts,
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
        Ok(())
    }

    /// The contract on the host: scoring, exclusion of non-finite logits and tie rules.
    fn router_host(&self, a: &RouterTopk<'_>, lg: &Option<Buffer>) -> Result<()> {
        let sb = a.bias.as_ref().map(|b| self.stage(b)).transpose()?;
        let mut si = self.stage(&a.ids.as_ref())?;
        let mut sw = self.stage(&a.weights.as_ref())?;
        let mut sc = match &a.expert_counts {
            Some(c) => Some(self.stage(&c.as_ref())?),
            None => None,
        };
        let args = RouterTopk {
            config: a.config,
            logits: hv(lg, &a.logits),
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
        Ok(())
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
            OpDesc::RouterTopk { scoring, group, dtype } => {
                let r = &self.routes;
                let host = "host (unbiased weights, renormalize, scaling, counts; rows with non-finite logits)";
                let sig = match scoring {
                    Scoring::Softmax => Some(false),
                    Scoring::Sigmoid => Some(true),
                    _ => None,
                };
                let cast = if dtype != DType::F32 {
                    " on aclnnCast->f32 logits (bias dtype must equal x dtype)"
                } else {
                    ""
                };
                let gating = |bias: bool| -> std::result::Result<GatingPattern, String> {
                    let p = sig
                        .map(|sigmoid| GatingPattern {
                            sigmoid,
                            top2: group.map(|g| g == GroupScore::Top2Sum),
                            bias,
                        })
                        .ok_or("no such scoring in aclnnMoeGatingTopK")?;
                    if !v.gating {
                        return Err("no aclnnMoeGatingTopK in the op libraries".into());
                    }
                    if let Some(why) = r.gating_refusal(p) {
                        return Err(format!("open-time probe of {}: {why}", p.name()));
                    }
                    if dtype != DType::F32 && !v.cast {
                        return Err("non-f32 logits and no aclnnCast".into());
                    }
                    Ok(p)
                };
                let limits = "E<=2048, groupCount*align32(E/groupCount)<=2048, k<=E/groupCount*kGroup, else host";
                let plain = scoring == Scoring::Softmax && group.is_none() && v.gating_softmax;
                let (nb, wb) = (gating(false), gating(true));
                let path = |res: &std::result::Result<GatingPattern, String>| match res {
                    Ok(_) => format!("aclnnMoeGatingTopK{cast} ({limits})"),
                    Err(why) => format!("host ({why})"),
                };
                let no_bias = if plain {
                    "aclnnMoeGatingTopKSoftmax (k<=1024)".to_string()
                } else {
                    path(&nb)
                };
                if !plain && nb.is_err() && wb.is_err() {
                    return Support::yes(format!(
                        "{host}; vendor: without bias {}; with bias {}",
                        path(&nb),
                        path(&wb)
                    ));
                }
                Support::yes(format!(
                    "without bias: {no_bias}; with bias: {}; selection only, then {host}",
                    path(&wb)
                ))
            }
            OpDesc::MoePermute { x } => {
                let r = &self.routes;
                match (x, r.permute) {
                    (None, _) => Support::yes("host (no x: nothing for the vendor op to gather)"),
                    (Some(_), PermutePath::Host) => Support::yes(format!("host (open-time probe: {})", r.permute_why)),
                    (Some(_), p) => {
                        let name = match p {
                            PermutePath::V3 { range: true } => {
                                "aclnnMoeInitRoutingV3 (activeNum T*k, counts, activeExpertRange [0,E], rowIdxType 0 gather, expandedScaleOut)"
                            }
                            PermutePath::V3 { range: false } => {
                                "aclnnMoeInitRoutingV3 (activeNum T*k, counts, activeExpertRange NULL, rowIdxType 0 gather, expandedScaleOut)"
                            }
                            _ => "aclnnMoeInitRoutingV2 (cumsum)",
                        };
                        Support::yes(format!(
                            "{name} + host (group_end from the E counts, slot_row, src_token; dropped slots) [probe: {}]",
                            r.permute_why
                        ))
                    }
                }
            }
            OpDesc::Swiglu { .. } => Support::yes("host (aclnnSwiGlu not mapped)"),
            OpDesc::MoeCombine { dtype } => {
                let mixed = dtype == DType::BF16 && self.routes.finalize_bf16_f32_scales;
                if v.finalize && (dtype == DType::F32 || mixed) {
                    Support::yes(format!(
                        "aclnnMoeFinalizeRoutingV2 (dropPadMode 2, f32 scales{}) + host (dropped slots)",
                        if mixed { ", bf16 mixed mode" } else { "" }
                    ))
                } else if v.finalize && v.cast {
                    Support::yes(format!(
                        "aclnnMoeFinalizeRoutingV2 (dropPadMode 2) + aclnnCast scales->{dtype}{} + host (dropped slots)",
                        if dtype == DType::BF16 {
                            " (probe: f32 scales beside bf16 refused)"
                        } else {
                            ""
                        }
                    ))
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
        let mut wd = desc_of(&a.w, OP_GG, "w")?;
        let (k, n) = (d.k as i64, d.n as i64);
        wd.dims = vec![d.groups as i64, k, n];
        wd.strides = match a.layout {
            WeightLayout::KN => vec![k * n, n, 1],
            WeightLayout::NK => vec![k * n, 1, k],
        };
        let x = TensorList::new(&self.rt, vec![self.t(&desc_of(&a.x, OP_GG, "x")?)?])?;
        let w = TensorList::new(&self.rt, vec![self.t(&wd)?])?;
        let y = TensorList::new(&self.rt, vec![self.t(&desc_of(&a.y.as_ref(), OP_GG, "y")?)?])?;
        let group = self.t(&desc_of(&a.group_end, OP_GG, "group_end")?)?;
        let mut bias_f32 = None;
        let bias = match &a.bias {
            None => None,
            Some(b) if dt == DType::BF16 => {
                let m = DevMem::new(&self.rt, d.groups * d.n * 4)?;
                let src = self.t(&desc_of(b, OP_GG, "bias")?)?;
                let dst = self.t(&scratch_desc(&m, sys::ACL_FLOAT, &[d.groups, d.n]))?;
                self.rt.cast(&src, sys::ACL_FLOAT, &dst)?;
                let l = TensorList::new(
                    &self.rt,
                    vec![self.t(&scratch_desc(&m, sys::ACL_FLOAT, &[d.groups, d.n]))?],
                )?;
                bias_f32 = Some(m);
                Some(l)
            }
            Some(b) => Some(TensorList::new(&self.rt, vec![self.t(&desc_of(b, OP_GG, "bias")?)?])?),
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
        let route = if logits.iter().any(|x| !x.is_finite()) || t == 0 {
            RouterRoute::Host
        } else {
            self.router_route(&cfg, e, a.logits.dtype(), a.bias.is_some())
        };
        // Vendor op for the selection; scratch outputs.
        let ids = match route {
            RouterRoute::Host => None,
            RouterRoute::Softmax => {
                let dt = a.logits.dtype();
                let ymem = DevMem::new(&self.rt, t * k * dt.size())?;
                let imem = DevMem::new(&self.rt, t * k * 4)?;
                let rmem = DevMem::new(&self.rt, t * k * 4)?;
                let x = self.t(&desc_of(&a.logits, OP_RT, "logits")?)?;
                let y = self.t(&scratch_desc(&ymem, acl_dt(dt), &[t, k]))?;
                let idx = self.t(&scratch_desc(&imem, sys::ACL_INT32, &[t, k]))?;
                let row = self.t(&scratch_desc(&rmem, sys::ACL_INT32, &[t, k]))?;
                self.rt.gating_topk_softmax(&x, k as i64, &y, &idx, &row)?;
                let mut ids = vec![0i32; t * k];
                self.rt.d2h(bytemuck::cast_slice_mut(&mut ids), imem.ptr)?;
                Some(ids)
            }
            RouterRoute::Gating(p) => {
                // x in FLOAT: the bias is f32 (core) and must have x's dtype (audit P5); the cast
                // from bf16/f16 is exact, so the selection is unchanged.
                let xmem;
                let x = if a.logits.dtype() == DType::F32 {
                    self.t(&desc_of(&a.logits, OP_RT, "logits")?)?
                } else {
                    xmem = DevMem::new(&self.rt, t * e * 4)?;
                    let src = self.t(&desc_of(&a.logits, OP_RT, "logits")?)?;
                    let dst = self.t(&scratch_desc(&xmem, sys::ACL_FLOAT, &[t, e]))?;
                    self.rt.cast(&src, sys::ACL_FLOAT, &dst)?;
                    dst
                };
                let ymem = DevMem::new(&self.rt, t * k * 4)?;
                let imem = DevMem::new(&self.rt, t * k * 4)?;
                let omem = DevMem::new(&self.rt, t * e * 4)?;
                let y = self.t(&scratch_desc(&ymem, sys::ACL_FLOAT, &[t, k]))?;
                let idx = self.t(&scratch_desc(&imem, sys::ACL_INT32, &[t, k]))?;
                let out = self.t(&scratch_desc(&omem, sys::ACL_FLOAT, &[t, e]))?;
                let bias = match &a.bias {
                    Some(b) => Some(self.t(&desc_of(b, OP_RT, "bias")?)?),
                    None => None,
                };
                let (gc, kg) = match cfg.effective_group() {
                    Some(g) => (g.n_group as i64, g.topk_group as i64),
                    None => (1, 1),
                };
                let mode = matches!(p.top2, Some(true)) as i64;
                let o = self.rt.gating_topk(
                    &x,
                    bias.as_ref(),
                    k as i64,
                    kg,
                    gc,
                    mode,
                    p.sigmoid as i64,
                    &y,
                    &idx,
                    &out,
                )?;
                match o {
                    // A shape this release's tiling refuses beyond the documented limits checked
                    // in `router_route`: the host computes the contract instead.
                    Outcome::Rejected(_) => None,
                    Outcome::Ran => {
                        let mut ids = vec![0i32; t * k];
                        self.rt.d2h(bytemuck::cast_slice_mut(&mut ids), imem.ptr)?;
                        Some(ids)
                    }
                }
            }
        };
        let Some(ids) = ids else {
            return self.router_host(&a, &lg);
        };
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
        let dropped = ids.iter().any(|&i| i < 0);
        let path = self.routes.permute;
        let Some(x) =
            a.x.as_ref()
                .filter(|_| !dropped && t * k > 0 && path != PermutePath::Host)
        else {
            return self.permute_host(&a);
        };
        let h = x.shape()[1];
        let n = t * k;
        let scratch_x = if a.x_perm.is_none() {
            Some(DevMem::new(&self.rt, (n * h * x.dtype().size()).max(1))?)
        } else {
            None
        };
        let ex_desc = match (&a.x_perm, &scratch_x) {
            (Some(p), _) => reshaped(&p.as_ref(), &[n, h], OP_MP, "x_perm")?,
            (None, Some(m)) => scratch_desc(m, acl_dt(x.dtype()), &[n, h]),
            _ => return Err(Error::device(NAME, 0, "internal: no expandedX")),
        };
        let rmem = DevMem::new(&self.rt, n * 4)?;
        let xt = self.t(&desc_of(x, OP_MP, "x")?)?;
        let it = self.t(&desc_of(&a.ids, OP_MP, "ids")?)?;
        let ext = self.t(&ex_desc)?;
        let rt = self.t(&scratch_desc(&rmem, sys::ACL_INT32, &[n]))?;
        // group_end is cumulative (OPS.md); V3 gives counts (expertTokensNumType 1, the only
        // portable type, audit P3), V2 gives cumulative INT32 (flag 1). Either way the E values
        // come to the host, which reads expandedRowIdx anyway.
        let group_end: Vec<i64> = match path {
            PermutePath::V3 { range } => {
                let cmem = DevMem::new(&self.rt, e * 8)?;
                let smem = DevMem::new(&self.rt, n * 4)?;
                let ct = self.t(&scratch_desc(&cmem, sys::ACL_INT64, &[e]))?;
                let st = self.t(&scratch_desc(&smem, sys::ACL_FLOAT, &[n]))?;
                let r = if range {
                    Some(IntArray::new(&self.rt, &[0, e as i64])?)
                } else {
                    None
                };
                let o = self
                    .rt
                    .init_routing_v3(&xt, &it, n as i64, e as i64, r.as_ref(), &ext, &rt, &ct, &st)?;
                if let Outcome::Rejected(_) = o {
                    return self.permute_host(&a);
                }
                let mut c = vec![0i64; e];
                self.rt.d2h(bytemuck::cast_slice_mut(&mut c), cmem.ptr)?;
                c.iter()
                    .scan(0i64, |acc, &v| {
                        *acc += v;
                        Some(*acc)
                    })
                    .collect()
            }
            _ => {
                let cmem = DevMem::new(&self.rt, e * 4)?;
                let ct = self.t(&scratch_desc(&cmem, sys::ACL_INT32, &[e]))?;
                if let Outcome::Rejected(_) = self.rt.init_routing_v2(&xt, &it, e as i64, &ext, &rt, &ct)? {
                    return self.permute_host(&a);
                }
                let mut c = vec![0i32; e];
                self.rt.d2h(bytemuck::cast_slice_mut(&mut c), cmem.ptr)?;
                c.iter().map(|&v| v as i64).collect()
            }
        };
        if group_end.last().copied() != Some(n as i64) || group_end.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::device(
                NAME,
                0,
                format!("vendor routing returned expert token numbers that do not sum to {n}: {group_end:?}"),
            ));
        }
        // rowIdxType 0 (V3) and V2: row[t·k+j] = position of slot (t,j).
        let mut row = vec![0i32; n];
        self.rt.d2h(bytemuck::cast_slice_mut(&mut row), rmem.ptr)?;
        let slot: Vec<i64> = row.iter().map(|&r| r as i64).collect();
        let mut src = vec![-1i64; n];
        for (f, &r) in row.iter().enumerate() {
            if r < 0 || r as usize >= n || src[r as usize] >= 0 {
                return Err(Error::device(
                    NAME,
                    0,
                    format!("vendor routing returned expandedRowIdx {row:?}, not a permutation of [0, {n})"),
                ));
            }
            src[r as usize] = (f / k) as i64;
        }
        let (go, _) = a.group_end.byte_range();
        self.put(&a.group_end, go, bytes_of(&group_end))?;
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
        let mixed = dt == DType::BF16 && self.routes.finalize_bf16_f32_scales;
        let device = v.finalize
            && (dt == DType::F32 || mixed || v.cast)
            && !slot.iter().any(|&s| s < 0)
            && t * k > 0
            && rows > 0
            && h > 0;
        if !device {
            return self.combine_host(&a);
        }
        let rows32: Vec<i32> = slot.iter().map(|&s| s as i32).collect();
        let rmem = DevMem::new(&self.rt, rows32.len() * 4)?;
        self.rt.h2d(rmem.ptr, rmem.len, bytes_of(&rows32))?;
        let ex = self.t(&desc_of(&a.y_perm, OP_MC, "y_perm")?)?;
        let ri = self.t(&scratch_desc(&rmem, sys::ACL_INT32, &[t * k]))?;
        let out = self.t(&desc_of(&a.out.as_ref(), OP_MC, "out")?)?;
        let w = self.t(&desc_of(&a.weights, OP_MC, "weights")?)?;
        let o = if dt == DType::F32 || mixed {
            // f32 scales: matching f32 y_perm, or the documented bf16 mixed mode (audit L2),
            // which keeps the router weights' precision.
            self.rt.finalize_routing(&ex, &ri, &w, &out)?
        } else {
            // Scales in the dtype of expandedX: cast the f32 router weights.
            let smem = DevMem::new(&self.rt, t * k * dt.size())?;
            let st = self.t(&scratch_desc(&smem, acl_dt(dt), &[t, k]))?;
            self.rt.cast(&w, acl_dt(dt), &st)?;
            self.rt.finalize_routing(&ex, &ri, &st, &out)?
        };
        match o {
            Outcome::Ran => Ok(()),
            Outcome::Rejected(_) => self.combine_host(&a),
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
        let table = self.t(&desc_of(&a.table, OP_GR, "table")?)?;
        let index = self.t(&reshaped(&a.rows, &[t * c], OP_GR, "rows")?)?;
        let out = self.t(&reshaped(&a.out.as_ref(), &[t * c, d], OP_GR, "out")?)?;
        self.rt.gather(v.gather, &table, &index, &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(n_group: usize, topk_group: usize, score: GroupScore) -> Option<GroupLimit> {
        Some(GroupLimit {
            n_group,
            topk_group,
            score,
        })
    }

    #[test]
    fn gating_shape_limits_are_the_documented_ones() {
        // DeepSeek-V3: 8·align32(32) = 256.
        assert!(gating_shape_ok(256, 8, g(8, 4, GroupScore::Top2Sum)).is_ok());
        // Audit P7: 128·align32(8) = 4096 > 2048.
        let e = gating_shape_ok(1024, 8, g(128, 4, GroupScore::Top2Sum)).unwrap_err();
        assert!(e.contains("4096"), "{e}");
        // Keeping every group is not grouping: the align32 rule does not apply.
        assert!(gating_shape_ok(1024, 8, g(128, 128, GroupScore::Max)).is_ok());
        assert!(gating_shape_ok(2048, 8, None).is_ok());
        assert!(gating_shape_ok(2049, 8, None).is_err());
        assert!(gating_shape_ok(64, 0, None).is_err());
        // k <= E/groupCount·kGroup.
        assert!(gating_shape_ok(64, 17, g(8, 2, GroupScore::Max)).is_err());
        assert!(gating_shape_ok(64, 16, g(8, 2, GroupScore::Max)).is_ok());
        // top-2 sum needs two experts per group.
        assert!(gating_shape_ok(8, 2, g(8, 2, GroupScore::Top2Sum)).is_err());
    }
}
