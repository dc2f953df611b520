//! The harness must be able to fail: a backend that wraps the reference but breaks one rule of the
//! contract is caught (wrong values, out-of-bounds writes, unwritten outputs, ignored validation).

use moehal_core::ops::*;
use moehal_core::{Backend, Buffer, Checked, DeviceInfo, OpDesc, Reference, Result, Support};
use moehal_testkit::{case_seed, check_backend, edge_cases, rerun_command, run_case, select, Case, Verdict};

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
    /// moe_combine flips the lowest bit of its first output element on every third call
    /// (a result that changes from run to run, as a float atomic's would).
    CombineNondeterministic,
}

/// Calls of moe_combine by [`Flaw::CombineNondeterministic`].
static COMBINE_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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
        let mut a = a.into_inner();
        let (off, es, n) = (a.out.offset(), a.out.dtype().size(), a.out.numel());
        let again = MoeCombine {
            y_perm: a.y_perm,
            slot_row: a.slot_row,
            weights: a.weights,
            out: a.out.reborrow(),
        };
        let r = Reference.moe_combine(again.validate()?);
        let call = COMBINE_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.0 == Flaw::CombineNondeterministic && n > 0 && call % 3 == 2 {
            let bytes = moehal_core::host::bytes_mut(a.out.buffer_mut(), "t", "out")?;
            bytes[off * es] ^= 1;
        }
        r
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

/// Split a shell command line as `sh` would for the quoting [`rerun_command`] uses (words, and
/// single-quoted words with `'\''` for a quote).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if !quoted => {}
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Issue 16 item 2: the `rerun:` line of a failing case must give that case the inputs it failed
/// with. The broken grouped GEMM adds 1% to one element, so its relative error depends on the
/// inputs: the same metric proves the same inputs, and the old line (the case's own seed passed
/// as the base seed) gives a different one.
#[test]
fn rerun_command_reproduces_the_failing_case_exactly() {
    let cases = edge_cases();
    let base = 0xC0FFEE;
    let be = Broken(Flaw::GemmValue);
    let (mut checked, mut old_differs) = (0, 0);
    for (i, c) in cases.iter().enumerate().filter(|(_, c)| c.name().starts_with("gemm ")) {
        let first = run_case(&be, c, case_seed(base, i));
        if first.verdict != Verdict::Fail || !first.metric.starts_with("rel ") {
            continue;
        }
        let line = rerun_command("broken", None, c, base);
        let words = shell_words(&line);
        assert_eq!(&words[..4], ["moehal", "check", "--backend", "broken"], "{line}");
        let arg = |flag: &str| {
            let p = words
                .iter()
                .position(|w| w == flag)
                .unwrap_or_else(|| panic!("{flag} in {line}"));
            words[p + 1].clone()
        };
        let op: moehal_core::OpKind = arg("--op").parse().unwrap();
        let seed: u64 = arg("--seed").parse().unwrap();
        let picked = select(&cases, Some(op), Some(&arg("--case")), Some(&arg("--dtype")));
        assert_eq!(picked.len(), 1, "{line} picks {} cases", picked.len());
        let (j, again_case) = picked[0];
        assert_eq!((j, again_case), (i, c), "{line}");
        let again = run_case(&be, again_case, case_seed(seed, j));
        assert_eq!(again.verdict, Verdict::Fail);
        assert_eq!((&again.metric, &again.detail), (&first.metric, &first.detail), "{line}");
        // The old rerun line passed the case's seed as the base: other inputs, so (except where
        // the flipped exponent dominates the error) another error.
        let old = run_case(&be, c, case_seed(first.seed, i));
        old_differs += usize::from(old.detail != first.detail);
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} failing gemm cases");
    assert!(
        old_differs >= 1,
        "the old rerun line reproduced every case: the test proves nothing"
    );
}

#[test]
fn select_filters_by_op_and_case_and_keeps_indices() {
    let cases = edge_cases();
    let gemm = select(&cases, Some(moehal_core::OpKind::GroupedGemm), None, None);
    assert!(!gemm.is_empty() && gemm.len() < cases.len());
    assert!(gemm
        .iter()
        .all(|(i, c)| cases[*i] == **c && c.op() == moehal_core::OpKind::GroupedGemm));
    let exact = select(&cases, None, Some("swiglu"), None);
    assert!(
        exact.iter().all(|(_, c)| c.name() == "swiglu"),
        "exact name wins over substrings"
    );
    let sub = select(&cases, None, Some("gemm NK"), None);
    assert!(sub.len() > 1 && sub.iter().all(|(_, c)| c.name().contains("gemm NK")));
    assert!(select(&cases, None, Some("no such case"), None).is_empty());
}

/// Every case of the default list is named uniquely by (op, name, dtype), so a rerun line picks
/// one case.
#[test]
fn default_cases_are_unique_by_op_name_and_dtype() {
    let cases = moehal_testkit::default_cases();
    let mut seen = std::collections::HashSet::new();
    for c in &cases {
        assert!(
            seen.insert((c.op(), c.name(), c.dtype())),
            "two cases {} / {} / {}",
            c.op(),
            c.name(),
            c.dtype()
        );
    }
}

/// The suite runner every backend crate calls: the reference passes it (determinism included),
/// a backend with wrong values fails it, and a backend whose combine differs from one run to the
/// next fails only by the determinism rule (OPS.md, Conventions).
#[test]
fn check_backend_passes_the_reference_and_fails_broken_backends() {
    let cases = edge_cases();
    let sum = check_backend(&Reference, "reference", &cases, 3, true);
    sum.assert_pass();
    assert_eq!(sum.passed + sum.unsupported.len(), cases.len());
    let bad = check_backend(&Broken(Flaw::GemmValue), "broken", &cases, 3, false);
    assert!(!bad.failures.is_empty() && bad.failures.iter().all(|f| f.contains("grouped_gemm")));
    assert!(std::panic::catch_unwind(|| bad.assert_pass()).is_err());
    let combine: Vec<Case> = cases
        .iter()
        .filter(|c| c.op() == moehal_core::OpKind::MoeCombine && !c.name().contains("bad"))
        .cloned()
        .collect();
    assert!(combine.len() >= 2);
    let flaky = Broken(Flaw::CombineNondeterministic);
    // One run per case: calls 0 and 1, both exact.
    COMBINE_CALLS.store(0, std::sync::atomic::Ordering::Relaxed);
    let once = check_backend(&flaky, "broken", &combine[..2], 3, false);
    assert!(once.failures.is_empty(), "{:?}", once.failures);
    // Three runs per case (check, then two for determinism): the third differs.
    COMBINE_CALLS.store(0, std::sync::atomic::Ordering::Relaxed);
    let twice = check_backend(&flaky, "broken", &combine, 3, true);
    assert_eq!(twice.failures.len(), combine.len(), "{:?}", twice.failures);
    assert!(
        twice.failures.iter().all(|f| f.contains("not deterministic")),
        "{:?}",
        twice.failures
    );
}
