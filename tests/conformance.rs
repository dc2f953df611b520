//! Conformance: every registered backend × every op × the edge cases of OPS.md and the preset
//! cases, against the reference, through the test kit (`moehal-testkit`). Unavailable backends
//! print "skipped: <reason>". The Ascend backend also runs through the ACL emulator (built on
//! demand), as CI has no Ascend device.

use moehal::harness::{check_backend, default_cases};
use moehal::Registry;

#[test]
fn every_available_backend_matches_the_reference() {
    let reg = Registry::discover();
    let cases = default_cases();
    let mut failures = Vec::new();
    for entry in reg.entries() {
        match entry.backend() {
            Some(be) => failures.extend(check_backend(be.as_ref(), be.name(), &cases, 0x5EED, false).failures),
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
    check_backend(be.as_ref(), "ascend (emulator)", &default_cases(), 0x5EED, false).assert_pass();
}
