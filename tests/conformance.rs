//! Conformance: every registered backend × every op × the edge cases of OPS.md and the preset
//! cases, against the reference. Unavailable backends print "skipped: <reason>". The Ascend
//! backend also runs through the ACL emulator (built on demand), as CI has no Ascend device.

use moehal::harness::{case_seed, default_cases, run_case, Verdict};
use moehal::{Backend, Registry};

/// Run every default case on `be`; returns the failures (printed unsupported rows go to stdout).
fn check_backend(be: &dyn Backend) -> Vec<String> {
    let cases = default_cases();
    let mut failures = Vec::new();
    let (mut pass, mut unsupported) = (0, 0);
    for (i, case) in cases.iter().enumerate() {
        let r = run_case(be, case, case_seed(0x5EED, i));
        match r.verdict {
            Verdict::Pass => pass += 1,
            Verdict::Unsupported => {
                unsupported += 1;
                println!("{}: {} [{}] unsupported: {}", r.backend, r.case, r.dtype, r.detail);
            }
            Verdict::Fail => failures.push(format!(
                "{}: {} [{}] {}: {}",
                r.backend, r.case, r.dtype, r.metric, r.detail
            )),
        }
    }
    println!(
        "{}: {pass} passed, {unsupported} unsupported, {} failed of {} cases",
        be.name(),
        failures.len(),
        cases.len()
    );
    failures
}

#[test]
fn every_available_backend_matches_the_reference() {
    let reg = Registry::discover();
    let mut failures = Vec::new();
    for entry in reg.entries() {
        match entry.backend() {
            Some(be) => failures.extend(check_backend(be.as_ref())),
            None => println!(
                "{}: skipped: {}",
                entry.name,
                entry.status.as_ref().err().map(String::as_str).unwrap_or("")
            ),
        }
    }
    assert!(failures.is_empty(), "conformance failures:\n{}", failures.join("\n"));
}

#[cfg(feature = "ascend")]
#[test]
fn ascend_through_the_acl_emulator_matches_the_reference() {
    let target = moehal_ascend::emulator::target_dir_of_current_exe().expect("test binary lives in a cargo target dir");
    let dir = moehal_ascend::emulator::build(&target, None).expect("building the ACL emulator");
    let be = moehal_ascend::open_at(&dir, 0).expect("the Ascend backend opens on the emulator");
    let failures = check_backend(be.as_ref());
    assert!(failures.is_empty(), "conformance failures:\n{}", failures.join("\n"));
}
