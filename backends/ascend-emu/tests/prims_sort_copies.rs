//! Issue 13, second group: a device-side moe_permute chain of the new primitives (Arange, Sort,
//! Scatter, FloorDivides, Adds, SearchSorted, Argsort) moves no bytes between host and device
//! (RULES.md I1-I2, PR5); then the third group's chain (IsFinite, LogicalNot, SWhere, Add, Sub,
//! Topk, ScatterAdd) likewise. One test: the copy counters are per process (and one binary for
//! both groups keeps CI's link time down).

mod common;

use std::ffi::CStr;
use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;
use common::*;

#[test]
fn second_group_launches_copy_nothing() {
    let stream = setup();
    // Expert ids of 6 routed slots (top-2 of 3 tokens) over 4 experts.
    let ids = tensor(&i64b(&[2, 0, 3, 2, 0, 1]), &[6], sys::ACL_INT64);
    let sorted = zeros(&[6], sys::ACL_INT64);
    let order = zeros(&[6], sys::ACL_INT64);
    let slots = zeros(&[6], sys::ACL_INT64);
    let inv0 = zeros(&[6], sys::ACL_INT64);
    let inv = zeros(&[6], sys::ACL_INT64);
    let tok0 = zeros(&[6], sys::ACL_INT64);
    let tok = zeros(&[6], sys::ACL_INT64);
    let bounds = zeros(&[5], sys::ACL_INT64);
    let args = zeros(&[6], sys::ACL_INT64);
    let experts = zeros(&[5], sys::ACL_INT64);
    let s = |v: i64| scalar(v, sys::ACL_INT64);
    moehalEmuCopyStatsReset();
    let names = [
        "aclnnArange",
        "aclnnSort",
        "aclnnScatter",
        "aclnnFloorDivides",
        "aclnnAdds",
        "aclnnArange",
        "aclnnSearchSorted",
        "aclnnArgsort",
    ];
    // SAFETY: live objects; out-pointers to locals.
    unsafe {
        let (rc, ws, ex) = p1(|ws, ex| aclnnArangeGetWorkspaceSize(s(0), s(6), s(1), slots.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnArange), 0, "{}", msg());
        let (rc, ws, ex) = p1(|ws, ex| aclnnSortGetWorkspaceSize(ids.t, true, 0, false, sorted.t, order.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnSort), 0, "{}", msg());
        // inverse permutation: inv[order[i]] = i.
        let (rc, ws, ex) = p1(|ws, ex| aclnnScatterGetWorkspaceSize(inv0.t, 0, order.t, slots.t, 0, inv.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnScatter), 0, "{}", msg());
        // token of each sorted slot: order // topk.
        let (rc, ws, ex) = p1(|ws, ex| aclnnFloorDividesGetWorkspaceSize(order.t, s(2), tok0.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnFloorDivides), 0, "{}", msg());
        let (rc, ws, ex) = p1(|ws, ex| aclnnAddsGetWorkspaceSize(tok0.t, s(1), s(1), tok.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnAdds), 0, "{}", msg());
        // expert group bounds: searchsorted(sorted ids, 0..=4).
        let (rc, ws, ex) = p1(|ws, ex| aclnnArangeGetWorkspaceSize(s(0), s(5), s(1), experts.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnArange), 0, "{}", msg());
        let (rc, ws, ex) = p1(|ws, ex| {
            aclnnSearchSortedGetWorkspaceSize(sorted.t, experts.t, false, false, ptr::null(), bounds.t, ws, ex)
        });
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnSearchSorted), 0, "{}", msg());
        let (rc, ws, ex) = p1(|ws, ex| aclnnArgsortGetWorkspaceSize(inv.t, 0, false, args.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnArgsort), 0, "{}", msg());
    }
    assert_zero_copies(&names);
    // The chain's results (read after the counters): ids sorted stably, the inverse permutation
    // undoes the sort (argsort of the inverse is the sort order), tokens (+1), group bounds.
    let ord = as_i64(&read(&order));
    assert_eq!(as_i64(&read(&sorted)), [0, 0, 1, 2, 2, 3]);
    assert_eq!(ord, [1, 4, 5, 0, 3, 2]);
    assert_eq!(as_i64(&read(&args)), ord);
    assert_eq!(as_i64(&read(&tok)), ord.iter().map(|o| o / 2 + 1).collect::<Vec<_>>());
    assert_eq!(as_i64(&read(&bounds)), [0, 2, 3, 5, 6]);
    third_group_launches_copy_nothing(stream);
}

/// Issue 13, third group: a chain of IsFinite, LogicalNot, SWhere, Add, Sub, Topk, ScatterAdd
/// (masking bad scores, picking experts, counting tokens per expert) moves no bytes between host
/// and device (RULES.md I1-I2, PR5). Run from the one test of this binary, after the second group's
/// chain (the copy counters are per process, so the two chains must not run concurrently).
fn third_group_launches_copy_nothing(stream: sys::aclrtStream) {
    // Scores of 2 tokens over 4 experts, one of them NaN.
    let scores = tensor(
        &f32b(&[0.5, f32::NAN, 2.0, 1.0, 3.0, 0.25, -1.0, 4.0]),
        &[2, 4],
        sys::ACL_FLOAT,
    );
    let fin = zeros(&[2, 4], sys::ACL_BOOL);
    let bad = zeros(&[2, 4], sys::ACL_BOOL);
    let floor = tensor(&f32b(&[-100.0]), &[1], sys::ACL_FLOAT);
    let clean = zeros(&[2, 4], sys::ACL_FLOAT);
    let shifted = zeros(&[2, 4], sys::ACL_FLOAT);
    let back = zeros(&[2, 4], sys::ACL_FLOAT);
    let vals = zeros(&[2, 2], sys::ACL_FLOAT);
    let ids = zeros(&[2, 2], sys::ACL_INT64);
    let counts0 = zeros(&[4], sys::ACL_INT64);
    let ones = tensor(&i64b(&[1; 4]), &[4], sys::ACL_INT64);
    let counts = zeros(&[4], sys::ACL_INT64);
    let bias = tensor(&f32b(&[1.0, 1.0, 1.0, 1.0]), &[4], sys::ACL_FLOAT);
    moehalEmuCopyStatsReset();
    let names = [
        "aclnnIsFinite",
        "aclnnLogicalNot",
        "aclnnSWhere",
        "aclnnAdd",
        "aclnnSub",
        "aclnnTopk",
        "aclnnScatterAdd",
    ];
    // A flat view of the [2, 2] expert ids (the same storage), for the 1-D scatter-add.
    let flat = view(ids.ptr, sys::ACL_INT64, &[4], None, 0, &[4], sys::ACL_FORMAT_ND);
    // SAFETY: live objects; out-pointers to locals.
    unsafe {
        let (rc, ws, ex) = p1(|ws, ex| aclnnIsFiniteGetWorkspaceSize(scores.t, fin.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnIsFinite), 0, "{}", msg());
        let (rc, ws, ex) = p1(|ws, ex| aclnnLogicalNotGetWorkspaceSize(fin.t, bad.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnLogicalNot), 0, "{}", msg());
        let (rc, ws, ex) = p1(|ws, ex| aclnnSWhereGetWorkspaceSize(fin.t, scores.t, floor.t, clean.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnSWhere), 0, "{}", msg());
        let (rc, ws, ex) = p1(|ws, ex| aclnnAddGetWorkspaceSize(clean.t, bias.t, scalar_f32(1.0), shifted.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnAdd), 0, "{}", msg());
        let (rc, ws, ex) = p1(|ws, ex| aclnnSubGetWorkspaceSize(shifted.t, bias.t, scalar_f32(1.0), back.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnSub), 0, "{}", msg());
        let (rc, ws, ex) = p1(|ws, ex| aclnnTopkGetWorkspaceSize(back.t, 2, 1, true, true, vals.t, ids.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnTopk), 0, "{}", msg());
        let (rc, ws, ex) = p1(|ws, ex| aclnnScatterAddGetWorkspaceSize(counts0.t, 0, flat, ones.t, counts.t, ws, ex));
        assert_eq!(rc, 0, "{}", msg());
        assert_eq!(launch(stream, ws, ex, aclnnScatterAdd), 0, "{}", msg());
    }
    assert_zero_copies(&names);
    // The chain's results (read after the counters): the NaN became -100, the top-2 per token,
    // and the per-expert counts of the chosen ids.
    assert_eq!(read(&bad), [0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(as_f32(&read(&back)), [0.5, -100.0, 2.0, 1.0, 3.0, 0.25, -1.0, 4.0]);
    assert_eq!(as_f32(&read(&vals)), [2.0, 1.0, 4.0, 3.0]);
    assert_eq!(as_i64(&read(&ids)), [2, 3, 3, 0]);
    assert_eq!(as_i64(&read(&counts)), [1, 0, 1, 2]);
}

/// Since the last reset: exactly `names.len()` launches, logged in the order of `names`, each with
/// 0 bytes host→device and device→host (RULES.md I1-I2).
fn assert_zero_copies(names: &[&str]) {
    let n = names.len();
    let mut st = MoehalEmuCopyStats::default();
    // SAFETY: out-pointer to a local.
    assert_eq!(unsafe { moehalEmuCopyStats(&mut st) }, 0);
    assert_eq!((st.h2d_bytes, st.d2h_bytes, st.launches as usize), (0, 0, n), "{st:?}");
    let entry = MoehalEmuLaunchCopies {
        name: [0; 64],
        h2d_bytes: 0,
        d2h_bytes: 0,
    };
    let mut log = vec![entry; n];
    // SAFETY: `n` writable entries.
    assert_eq!(unsafe { moehalEmuLaunchCopies(log.as_mut_ptr(), n) }, n);
    for (e, want) in log.iter().zip(names) {
        // SAFETY: NUL-terminated by the emulator.
        let name = unsafe { CStr::from_ptr(e.name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        assert_eq!((name.as_str(), e.h2d_bytes, e.d2h_bytes), (*want, 0, 0));
    }
}
