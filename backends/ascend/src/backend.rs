//! The `Backend` implementation's plumbing: device memory as core buffers, the backend value, tensor
//! descriptors, host staging; and `impl Backend for Ascend` (identity, the support table, memory),
//! whose ops forward to one file per op family in `crate::ops`, each mapping an OPS.md op onto aclnn
//! ops (or the host, where no vendor op has the contract's semantics; `supports()` names which).

use std::any::Any;
use std::sync::{Arc, Mutex};

use moehal_ascend_sys as sys;
use moehal_core::ops::{
    Checked, EngramHash, GatherRows, GroupScore, GroupedGemm, GroupedGemmQ, MoeCombine, MoePermute, OpDesc, QuantDesc,
    RouterTopk, Scoring, Swiglu, TableFormat, WeightLayout,
};
use moehal_core::{
    Backend, Buffer, DType, DeviceInfo, DeviceMemory, Error, Location, Reference, Result, Support, TensorMut, TensorRef,
};

use crate::ffi::{DevMem, Runtime, TDesc, Tensor, NAME};
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
    pub(crate) rt: Arc<Runtime>,
    pub(crate) lock: Mutex<()>,
    pub(crate) routes: Routes,
    /// The fp8 dequantisation tables, uploaded once when the backend opens (2 KiB, FLOAT
    /// `[512]`): entry `i` is `fp8_e4m3_to_f32(i)`, entry `256 + i` is `ue8m0_to_f32(i)`, both
    /// from moehal-core (so NaN is the canonical quiet NaN). `None` without the primitives of the
    /// device fp8 gather (then it runs on the host).
    pub(crate) fp8_lut: Option<Buffer>,
}

pub(crate) fn acl_dt(d: DType) -> sys::aclDataType {
    match d {
        DType::F32 => sys::ACL_FLOAT,
        DType::F16 => sys::ACL_FLOAT16,
        DType::BF16 => sys::ACL_BF16,
        DType::I32 => sys::ACL_INT32,
        DType::I64 => sys::ACL_INT64,
        DType::I8 => sys::ACL_INT8,
        _ => sys::ACL_UINT8,
    }
}

pub(crate) fn i64s(v: &[usize]) -> Vec<i64> {
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
pub(crate) fn desc_of(t: &TensorRef<'_>, op: &'static str, field: &'static str) -> Result<TDesc> {
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

pub(crate) fn contiguous_strides(dims: &[i64]) -> Vec<i64> {
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
pub(crate) fn reshaped(t: &TensorRef<'_>, dims: &[usize], op: &'static str, field: &'static str) -> Result<TDesc> {
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

pub(crate) fn bytes_of<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
    bytemuck::cast_slice(v)
}

impl Ascend {
    /// Wrap an opened runtime, probing the installed ops once (see [`crate::routes`]).
    pub(crate) fn new(rt: Runtime) -> Self {
        let routes = Routes::probe(&rt);
        let rt = Arc::new(rt);
        let v = rt.lib.versions;
        let fp8_lut = if v.index_select && v.cast && v.inplace_mul {
            // A failed upload only leaves fp8 gathers on the host.
            Self::upload_fp8_lut(&rt).ok()
        } else {
            None
        };
        Ascend {
            rt,
            lock: Mutex::new(()),
            routes,
            fp8_lut,
        }
    }

    /// Upload the 512-entry f32 table of [`Ascend::fp8_lut`].
    fn upload_fp8_lut(rt: &Arc<Runtime>) -> Result<Buffer> {
        use moehal_core::ops::gather_rows::{fp8_e4m3_to_f32, ue8m0_to_f32};
        let lut: Vec<f32> = (0..=255u8)
            .map(fp8_e4m3_to_f32)
            .chain((0..=255u8).map(ue8m0_to_f32))
            .collect();
        let bytes = lut.len() * 4;
        let ptr = rt.malloc(bytes)?;
        let buf = AscendMem {
            rt: rt.clone(),
            ptr,
            len: bytes,
            owned: true,
        };
        rt.h2d(ptr, bytes, bytes_of(&lut))?;
        Ok(Buffer::new(Box::new(buf)))
    }

    /// The shared libraries this backend loaded (runtime first).
    pub fn library_paths(&self) -> &[std::path::PathBuf] {
        &self.rt.lib.paths
    }

    pub(crate) fn mine(&self, b: &Buffer, field: &'static str) -> Result<()> {
        match b.downcast_ref::<AscendMem>() {
            Some(m) if Arc::ptr_eq(&m.rt, &self.rt) => Ok(()),
            _ => Err(Error::invalid(
                "ascend",
                field,
                "buffer is not memory of this Ascend backend",
            )),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copy of the bytes `[0, end of view)` of a device tensor's buffer into a host buffer, or
    /// `None` when the tensor already lives in host memory.
    pub(crate) fn stage(&self, t: &TensorRef<'_>) -> Result<Option<Buffer>> {
        self.stage_as(t, "tensor")
    }

    /// [`Ascend::stage`] whose error for memory of another backend names the operand `field`.
    pub(crate) fn stage_as(&self, t: &TensorRef<'_>, field: &'static str) -> Result<Option<Buffer>> {
        if t.buffer().location() == Location::Host {
            return Ok(None);
        }
        self.mine(t.buffer(), field)?;
        let (_, end) = t.byte_range();
        let mut hb = Reference.alloc(end)?;
        let mut tmp = vec![0u8; end];
        self.rt.d2h(&mut tmp, t.buffer().addr())?;
        Reference.upload(&mut hb, 0, &tmp)?;
        Ok(Some(hb))
    }

    pub(crate) fn fetch<T: moehal_core::Element>(&self, t: &TensorRef<'_>) -> Result<Vec<T>> {
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
    pub(crate) fn unstage(&self, host: &Buffer, t: &TensorMut<'_>) -> Result<()> {
        let (s, e) = t.byte_range();
        let mut tmp = vec![0u8; e - s];
        Reference.download(host, s, &mut tmp)?;
        self.put(t, s, &tmp)
    }

    pub(crate) fn put(&self, t: &TensorMut<'_>, byte_off: usize, bytes: &[u8]) -> Result<()> {
        let b = t.buffer();
        self.mine(b, "output")?;
        self.rt.h2d(b.addr() + byte_off as u64, b.len() - byte_off, bytes)
    }

    pub(crate) fn t<'r>(&'r self, d: &TDesc) -> Result<Tensor<'r>> {
        Tensor::new(&self.rt, d)
    }
}

pub(crate) fn hv<'a>(staged: &'a Option<Buffer>, t: &TensorRef<'a>) -> TensorRef<'a> {
    match staged {
        Some(b) => b.view(t.dtype(), t.shape()).with_offset(t.offset()),
        None => *t,
    }
}
pub(crate) fn hm<'a>(staged: &'a mut Option<Buffer>, t: &TensorMut<'_>) -> Result<TensorMut<'a>> {
    match staged {
        Some(b) => Ok(b.view_mut(t.dtype(), t.shape()).with_offset(t.offset())),
        None => Err(Error::unsupported("ascend", NAME, "host-resident output")),
    }
}

/// The `capability` of [`DeviceInfo`] on Ascend: the fused MoE kernels the loaded op libraries
/// provide, by their aclnn names (the SoC, which it repeated before, is the `name`; `moehal
/// devices` showed it twice). Ops absent from the libraries run on host fallbacks
/// (`moehal kernels` tells which), so this is what differs between CANN releases.
fn capability(v: &crate::ffi::OpVersions) -> String {
    let mut parts = vec!["aclnn".to_string()];
    if v.gmm > 0 {
        parts.push(format!("GroupedMatmulV{}", v.gmm));
    }
    if v.init_routing > 0 {
        parts.push(format!("MoeInitRoutingV{}", v.init_routing));
    }
    if v.finalize {
        parts.push("MoeFinalizeRoutingV2".into());
    }
    if v.gating_softmax {
        parts.push("MoeGatingTopKSoftmax".into());
    }
    if v.gating {
        parts.push("MoeGatingTopK".into());
    }
    if v.swiglu {
        parts.push("SwiGlu".into());
    }
    if parts.len() == 1 {
        parts.push("(no fused MoE ops: host fallbacks)".into());
    }
    parts.join(" ")
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
            capability: capability(&self.rt.lib.versions),
            compute_units: None,
            host_memory: false,
        }
    }

    fn free_memory_bytes(&self) -> Option<u64> {
        self.rt.mem_info().ok().map(|m| m.0)
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
                let scale = if v.inplace_mul {
                    "row_scale: aclnnInplaceMul"
                } else {
                    "row_scale on host"
                };
                let check = if self.extremes_on_device() && v.cast && v.muls && v.scalar && v.reduce_sum {
                    "group_end check: aclnnAmin + aclnnAmax (INT64), aclnnCast(group_end[1:], group_end[:-1] -> f32) + aclnnMuls(-1) + aclnnReduceSum(dim 0) + aclnnAmin of the steps, a 20-byte control read (M >= 2^24: group_end read)"
                } else {
                    "group_end read on host to check it"
                };
                let k0_bias = if v.arange && v.search_sorted && v.index_select && v.scalar {
                    "K=0 with bias: aclnnArange(total) + aclnnSearchSorted(group_end, right) + aclnnIndexSelect(bias) then the row scale"
                } else {
                    "K=0 with bias: host"
                };
                Support::yes(format!(
                    "aclnnGroupedMatmulV{} (groupListType 0, {lay}){bias}; {scale}; K=0 without bias: aclrtMemset; {k0_bias}; {check}",
                    v.gmm
                ))
            }
            OpDesc::RouterHash { .. } => Support::no("hash routing (tid2eid) is not implemented for Ascend yet"),
            OpDesc::RouterTopk { scoring, group, dtype } => {
                let r = &self.routes;
                let dev_w = match scoring {
                    Scoring::Softmax => v.softmax,
                    Scoring::Sigmoid => v.sigmoid,
                    _ => false,
                } && v.scalar
                    && v.gather_dim
                    && v.muls
                    && v.reduce_sum
                    && v.div;
                // The composed selection (router_topk.rs `router_sorted_device`): sqrt_softplus
                // and non-finite logits.
                let composed = crate::ops::composed_prims(&v, scoring, group.is_some(), true, true);
                let sorted = format!(
                    "{}aclnnIsFinite -> aclnnLogicalNot = excluded mask -> aclnnInplaceMaskedFillScalar -> {} -> s = 0 where excluded -> [bias: aclnnAdd, non-finite excluded] -> -inf where excluded -> {}aclnnSort(stable, descending) -> first k indices aclnnCast INT32 = ids (lower id wins ties; excluded experts fill in index order, weight 0) -> aclnnGather(s, ids) -> [renormalize: aclnnReduceSum + aclnnAdds(1e-20) + aclnnDiv] -> aclnnMuls(scaling)",
                    if dtype != DType::F32 { "aclnnCast->f32 -> " } else { "" },
                    match scoring {
                        Scoring::Softmax => "aclnnSoftmax",
                        Scoring::Sigmoid => "aclnnSigmoid",
                        Scoring::SqrtSoftplus => {
                            "aclnnSWhere(aclnnEqScalar(aclnnClampMax(x, -40), -40), aclnnSqrt(aclnnSoftplus(x)), aclnnSoftplus(aclnnMuls(x, 0.5)))"
                        }
                    },
                    if group.is_some() {
                        "group limit: aclnnSort per group -> max / aclnnAdd(top 2) -> aclnnSort of group scores -> aclnnSort of that order = ranks -> aclnnFloorDivides(topk_group) + aclnnEqScalar(0) + aclnnLogicalNot -> dropped groups -inf -> s = 0 where -inf (fill slots) -> "
                    } else {
                        ""
                    }
                );
                if scoring == Scoring::SqrtSoftplus {
                    return if composed {
                        Support::yes(format!("composed on the device (no control read): {sorted}"))
                    } else {
                        Support::yes("host (a primitive of the composed selection is missing)")
                    };
                }
                let nonfinite = if composed {
                    format!("any non-finite logit: composed selection, {sorted}")
                } else {
                    "any non-finite logit: the call on host (a primitive of the composed selection is missing)"
                        .to_string()
                };
                let finite = if v.muls && v.reduce_sum && v.scalar {
                    format!(
                        "aclnnMuls(logits, 0) + aclnnReduceSum = finiteness flag (4-byte control read; {nonfinite})"
                    )
                } else {
                    "logits read on host for the finiteness check".to_string()
                };
                let counts = if v.sort
                    && v.arange
                    && v.search_sorted
                    && v.cast
                    && v.muls
                    && v.reduce_sum
                    && v.scalar
                    && self.extremes_on_device()
                {
                    "expert_counts: aclnnSort(ids) -> aclnnArange(E+1) + aclnnSearchSorted -> adjacent steps (aclnnCast f32, aclnnMuls(-1), aclnnReduceSum) -> aclnnCast INT64"
                } else {
                    "expert_counts on host"
                };
                let ids_check = if self.extremes_on_device() {
                    "ids range: aclnnAmin + aclnnAmax (8-byte control read)"
                } else {
                    "ids range not checked before aclnnGather (no aclnnAmin/aclnnAmax)"
                };
                let host = if dev_w {
                    format!(
                        "{finite}; {ids_check}; weights on device: {}aclnn{} -> aclnnGather(ids) -> [renormalize: aclnnReduceSum + {}aclnnDiv] -> aclnnMuls(scaling); {counts}{}",
                        if dtype != DType::F32 { "aclnnCast->f32 -> " } else { "" },
                        if scoring == Scoring::Softmax { "Softmax" } else { "Sigmoid" },
                        if v.adds { "aclnnAdds(1e-20) + " } else { "" },
                        if v.adds {
                            ""
                        } else {
                            ", every weight of a renormalized call with a row whose k smallest scores sum below 1e-6 (no aclnnAdds)"
                        }
                    )
                } else {
                    format!("host (unbiased weights, renormalize, scaling, counts); {finite}")
                };
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
                        "host (unbiased weights, renormalize, scaling, counts); {finite}; vendor: without bias {}; with bias {}",
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
                if self.permute_composable() {
                    let check = if self.permute_range_on_device() {
                        "id range: aclnnAmin + aclnnAmax, 8-byte control read"
                    } else {
                        "id range: ids read on the host (no aclnnAmax/aclnnAmin)"
                    };
                    // The vendor op the probe accepted stays named: it is what a library without
                    // these primitives would use.
                    let vendor = match r.permute {
                        PermutePath::V3 { .. } => "aclnnMoeInitRoutingV3",
                        PermutePath::V2 => "aclnnMoeInitRoutingV2",
                        PermutePath::Host => "none",
                    };
                    return Support::yes(format!(
                        "device composition: aclnnCast(ids->INT64) = key + aclnnEqScalar(key, -1) + aclnnInplaceMaskedFillScalar(key, E) -> aclnnSort(stable, ascending) -> aclnnFloorDivides(perm, k) = src_token -> aclnnArange + aclnnScatter(perm) + aclnnInplaceMaskedFillScalar(-1) = slot_row -> aclnnArange(E) + aclnnSearchSorted(right) = group_end{}; {check}; T*k = 0: aclrtMemset; strided slot_row or a phase-one refusal: host [vendor op the probe accepted, unused: {vendor}]",
                        if x.is_some() { " -> aclnnIndexSelect(x, 0, src_token) = x_perm" } else { "" }
                    ));
                }
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
            OpDesc::Swiglu { .. } => {
                if v.swiglu {
                    let limit = if v.scalar && v.clamp && v.clamp_max {
                        format!(
                            "with limit: aclnnClampMax(gate) + aclnnClamp(up, -limit, limit) into a scratch, then aclnnSwiGlu{} (host if a clamp refuses the strided halves)",
                            if v.cast {
                                " (in f32 via aclnnCast where limit is not exact in the dtype)"
                            } else {
                                "; limit not exact in the dtype: host"
                            }
                        )
                    } else {
                        "with limit: host (no aclCreateScalar / aclnnClamp / aclnnClampMax)".to_string()
                    };
                    Support::yes(format!(
                        "aclnnSwiGlu (dim 1); {limit}; non-contiguous out, or h without limit: host"
                    ))
                } else {
                    Support::yes("host (no aclnnSwiGlu in the op libraries)")
                }
            }
            OpDesc::MoeCombine { dtype } => {
                let mixed = dtype == DType::BF16 && self.routes.finalize_bf16_f32_scales;
                let drops = if v.cast && v.scalar && v.eq_scalar && v.masked_fill && v.index_select && v.arange {
                    "dropped slots: aclnnEqScalar(slot_row, -1) = mask, aclnnInplaceMaskedFillScalar(row index, 0) -> aclnnIndexSelect(y_perm) = rows in slot order -> aclnnInplaceMaskedFillScalar(rows, scales, 0) -> aclnnArange = row index"
                } else {
                    "dropped slots on host"
                };
                let check = if self.extremes_on_device() {
                    "slot_row range: aclnnAmin + aclnnAmax, 16-byte control read"
                } else {
                    "slot_row range check on host"
                };
                if v.finalize && v.cast && (dtype == DType::F32 || mixed) {
                    Support::yes(format!(
                        "aclnnMoeFinalizeRoutingV2 (dropPadMode 2, f32 scales{}) + aclnnCast slot_row->INT32; {drops}; {check}",
                        if mixed { ", bf16 mixed mode" } else { "" },
                    ))
                } else if v.finalize && v.cast {
                    Support::yes(format!(
                        "aclnnMoeFinalizeRoutingV2 (dropPadMode 2) + aclnnCast scales->{dtype}, slot_row->INT32{}; {drops}; {check}",
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
                    let check = if self.extremes_on_device() {
                        "row range: aclnnAmin + aclnnAmax, 16-byte control read"
                    } else {
                        "row range check on host"
                    };
                    Support::yes(format!("{hash}{n}; {check}"))
                } else if !host_table && table == TableFormat::Fp8E4m3Ue8m0 && self.fp8_lut.is_some() {
                    let check = if self.extremes_on_device() {
                        "row range: aclnnAmin + aclnnAmax, 16-byte control read"
                    } else {
                        "row range check on host"
                    };
                    Support::yes(format!(
                        "{hash}aclnnIndexSelect(rows) -> aclnnCast(code, scale bytes -> INT32) -> aclnnIndexSelect(e4m3 / ue8m0 f32 tables, uploaded at open) -> aclnnInplaceMul(block scales){}; {check}; strided out: host",
                        if out == DType::BF16 { " -> aclnnCast bf16" } else { "" }
                    ))
                } else {
                    Support::yes(format!(
                        "{hash}host gather (host table / no gather op / dtype conversion), staged"
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

    /// Not taken yet: every op runs on the backend's own `aclrtStream`; an engine orders its own
    /// stream after moehal's work with [`Backend::synchronize`] (`moehal_synchronize`).
    /// [`Error::Unsupported`] saying so (the core default said "no streams", wrong for Ascend).
    unsafe fn set_external_stream(&self, stream: u64) -> Result<()> {
        let _ = stream;
        Err(Error::unsupported(
            "set_external_stream",
            NAME,
            "an engine's aclrtStream is not taken yet: moehal's Ascend backend runs every op on its own stream",
        ))
    }

    fn grouped_gemm(&self, args: Checked<GroupedGemm<'_>>) -> Result<()> {
        self.run_grouped_gemm(args)
    }

    fn router_topk(&self, args: Checked<RouterTopk<'_>>) -> Result<()> {
        self.run_router_topk(args)
    }

    fn moe_permute(&self, args: Checked<MoePermute<'_>>) -> Result<()> {
        self.run_moe_permute(args)
    }

    fn swiglu(&self, args: Checked<Swiglu<'_>>) -> Result<()> {
        self.run_swiglu(args)
    }

    fn moe_combine(&self, args: Checked<MoeCombine<'_>>) -> Result<()> {
        self.run_moe_combine(args)
    }

    fn engram_hash(&self, args: Checked<EngramHash<'_>>) -> Result<()> {
        self.run_engram_hash(args)
    }

    fn gather_rows(&self, args: Checked<GatherRows<'_>>) -> Result<()> {
        self.run_gather_rows(args)
    }

    /// OPS.md §6: `int8` weights × i8 activations (W8A8) only — f16 and bf16 `y` on the device
    /// (aclnnGroupedMatmulV4 A8W8; bf16 through a FRACTAL_NZ copy of the weight that every call
    /// makes and packs anew, an UNDOCUMENTED pairing, ascend-emu RULES.md NZ5), f32 `y` and any
    /// bias on the host; the reason names which (ops/grouped_gemm_quant.rs). Every other
    /// variant: `No`, no kernels yet.
    fn supports_quant(&self, op: &QuantDesc) -> Support {
        self.quant_support(op)
    }

    fn grouped_gemm_quant(&self, args: Checked<GroupedGemmQ<'_>>) -> Result<()> {
        self.run_grouped_gemm_quant(args)
    }
}
