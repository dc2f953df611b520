//! The harness must be able to fail: a backend that wraps the reference but breaks one rule of the
//! contract is caught (wrong values, out-of-bounds writes, unwritten outputs, ignored validation).

use moehal::harness::{edge_cases, run_case, Case, Verdict};
use moehal_core::ops::*;
use moehal_core::{Backend, Buffer, Checked, DeviceInfo, OpDesc, Reference, Result, Support};

/// Which rule the broken backend breaks.
#[derive(Clone, Copy, PartialEq)]
enum Flaw {
    /// Adds 1% to the first y element of every grouped GEMM.
    GemmValue,
    /// Writes one element before the output (into the guard).
    GuardWrite,
    /// Never writes the swiglu output.
    SkipSwiglu,
    /// Swaps the first two router ids.
    RouterOrder,
    /// Swaps the first two hash-routing ids.
    HashOrder,
    /// Accepts out-of-range ids in moe_permute (computes with them clamped).
    NoIdCheck,
}

struct Broken(Flaw);

impl Backend for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn device_info(&self) -> DeviceInfo {
        Reference.device_info()
    }
    fn supports(&self, op: &OpDesc) -> Support {
        Reference.supports(op)
    }
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        Reference.alloc(bytes)
    }
    fn upload(&self, dst: &mut Buffer, offset: usize, src: &[u8]) -> Result<()> {
        Reference.upload(dst, offset, src)
    }
    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        Reference.download(src, offset, dst)
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    unsafe fn wrap_external(&self, ptr: u64, bytes: usize) -> Result<Buffer> {
        // SAFETY: forwarded contract.
        unsafe { Reference.wrap_external(ptr, bytes) }
    }
    fn grouped_gemm(&self, a: Checked<GroupedGemm<'_>>) -> Result<()> {
        let flaw = self.0;
        let (dt, n) = (a.y.dtype(), a.y.numel());
        let off = a.y.offset();
        let mut a = a.into_inner();
        let again = GroupedGemm {
            x: a.x,
            w: a.w,
            layout: a.layout,
            group_end: a.group_end,
            row_scale: a.row_scale,
            bias: a.bias,
            y: a.y.reborrow(),
        };
        let r = Reference.grouped_gemm(again.validate()?);
        if n > 0 && (flaw == Flaw::GemmValue || flaw == Flaw::GuardWrite) {
            let bytes = moehal_core::host::bytes_mut(a.y.buffer_mut(), "t", "y")?;
            // The top byte of the element: flipping 0x40 changes the exponent, far beyond tolerance.
            let at = if flaw == Flaw::GuardWrite {
                off * dt.size() - 1
            } else {
                (off + 1) * dt.size() - 1
            };
            bytes[at] ^= 0x40;
        }
        r
    }
    fn router_topk(&self, a: Checked<RouterTopk<'_>>) -> Result<()> {
        let flaw = self.0;
        let mut a = a.into_inner();
        let again = RouterTopk {
            config: a.config,
            logits: a.logits,
            bias: a.bias,
            ids: a.ids.reborrow(),
            weights: a.weights.reborrow(),
            expert_counts: a.expert_counts.as_mut().map(|e| e.reborrow()),
        };
        let r = Reference.router_topk(again.validate()?);
        if flaw == Flaw::RouterOrder && a.ids.numel() >= 2 {
            let ids = moehal_core::host::slice_mut::<i32>(&mut a.ids, "t", "ids")?;
            ids.swap(0, 1);
        }
        r
    }
    fn router_hash(&self, a: Checked<RouterHash<'_>>) -> Result<()> {
        let mut a = a.into_inner();
        let again = RouterHash {
            config: a.config,
            logits: a.logits,
            tid2eid: a.tid2eid,
            token_ids: a.token_ids,
            ids: a.ids.reborrow(),
            weights: a.weights.reborrow(),
            expert_counts: a.expert_counts.as_mut().map(|e| e.reborrow()),
        };
        let r = Reference.router_hash(again.validate()?);
        if self.0 == Flaw::HashOrder && a.ids.numel() >= 2 {
            let ids = moehal_core::host::slice_mut::<i32>(&mut a.ids, "t", "ids")?;
            ids.swap(0, 1);
        }
        r
    }
    fn moe_permute(&self, a: Checked<MoePermute<'_>>) -> Result<()> {
        if self.0 == Flaw::NoIdCheck {
            let mut a = a.into_inner();
            let ge = moehal_core::host::slice_mut::<i64>(&mut a.group_end, "t", "group_end")?;
            ge.fill(0);
            return Ok(());
        }
        Reference.moe_permute(a)
    }
    fn swiglu(&self, a: Checked<Swiglu<'_>>) -> Result<()> {
        if self.0 == Flaw::SkipSwiglu {
            return Ok(());
        }
        Reference.swiglu(a)
    }
    fn moe_combine(&self, a: Checked<MoeCombine<'_>>) -> Result<()> {
        Reference.moe_combine(a)
    }
    fn engram_hash(&self, a: Checked<EngramHash<'_>>) -> Result<()> {
        Reference.engram_hash(a)
    }
    fn gather_rows(&self, a: Checked<GatherRows<'_>>) -> Result<()> {
        Reference.gather_rows(a)
    }
    fn engram_lookup(&self, a: Checked<EngramLookup<'_>>) -> Result<()> {
        Reference.engram_lookup(a)
    }
}

fn verdicts(flaw: Flaw, pick: impl Fn(&Case) -> bool) -> Vec<Verdict> {
    let v: Vec<Verdict> = edge_cases()
        .iter()
        .filter(|c| pick(c))
        .map(|c| run_case(&Broken(flaw), c, 7).verdict)
        .collect();
    assert!(!v.is_empty(), "no case picked");
    v
}

#[test]
fn reference_against_itself_passes_every_edge_case() {
    for (i, c) in edge_cases().iter().enumerate() {
        let r = run_case(&Reference, c, i as u64);
        assert_eq!(
            r.verdict,
            Verdict::Pass,
            "{} [{}]: {} {}",
            r.case,
            r.dtype,
            r.metric,
            r.detail
        );
    }
}

#[test]
fn wrong_values_out_of_bounds_writes_and_skipped_outputs_fail() {
    let is = |name: &'static str| move |c: &Case| c.name() == name;
    assert!(verdicts(Flaw::GemmValue, is("gemm NK plain"))
        .iter()
        .all(|v| *v == Verdict::Fail));
    assert!(verdicts(Flaw::GuardWrite, is("gemm KN plain"))
        .iter()
        .all(|v| *v == Verdict::Fail));
    assert!(verdicts(Flaw::SkipSwiglu, is("swiglu"))
        .iter()
        .all(|v| *v == Verdict::Fail));
    assert!(verdicts(Flaw::RouterOrder, is("router softmax renorm"))
        .iter()
        .all(|v| *v == Verdict::Fail));
    // Exact ties must go to the lower index: the first token's three tied experts, swapped.
    for scoring in ["softmax", "sigmoid", "sqrt_softplus"] {
        let name = format!("router tie classes {scoring}");
        let v: Vec<Verdict> = edge_cases()
            .iter()
            .filter(|c| c.name() == name)
            .map(|c| run_case(&Broken(Flaw::RouterOrder), c, 7).verdict)
            .collect();
        assert_eq!(v, [Verdict::Fail], "{name}");
    }
    assert!(verdicts(Flaw::HashOrder, is("router hash (V4 first layers)"))
        .iter()
        .all(|v| *v == Verdict::Fail));
    assert!(verdicts(Flaw::NoIdCheck, is("permute bad id"))
        .iter()
        .all(|v| *v == Verdict::Fail));
}
