//! Conformance: every registered backend × every op × the edge cases of OPS.md and the preset
//! cases, against the reference. Unavailable backends print "skipped: <reason>".

use moehal::harness::{case_seed, default_cases, run_case, Verdict};
use moehal::Registry;

#[test]
fn every_available_backend_matches_the_reference() {
    let reg = Registry::discover();
    let cases = default_cases();
    let mut failures = Vec::new();
    for entry in reg.entries() {
        let Some(be) = entry.backend() else {
            println!(
                "{}: skipped: {}",
                entry.name,
                entry.status.as_ref().err().map(String::as_str).unwrap_or("")
            );
            continue;
        };
        let (mut pass, mut unsupported) = (0, 0);
        for (i, case) in cases.iter().enumerate() {
            let r = run_case(be.as_ref(), case, case_seed(0x5EED, i));
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
            "{}: {pass} passed, {unsupported} unsupported of {} cases",
            entry.name,
            cases.len()
        );
    }
    assert!(failures.is_empty(), "conformance failures:\n{}", failures.join("\n"));
}
