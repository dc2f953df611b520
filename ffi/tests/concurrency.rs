//! Concurrency (issue 16, item 8): N threads share one backend, through the Rust API and through
//! the C ABI, running a mix of ops (grouped GEMM, router top-k, MoE permute, gather) on their own
//! inputs; every result must be bitwise equal to the same call run serially beforehand. The
//! threads run under a watchdog: a deadlock fails the test after [`DEADLINE`] instead of hanging.

mod mixed;

use std::ptr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use mixed::{run_c, run_rust};
use moehal_core::Backend;
use moehal_ffi::abi::*;
use moehal_ffi::*;

const THREADS: usize = 4;
const ROUNDS: usize = 6;
/// Far above the seconds the work takes in a debug build: only a deadlock reaches it.
const DEADLINE: Duration = Duration::from_secs(180);

/// Run `f(thread, seed)` for every seed on `THREADS` threads, `ROUNDS` times over, and compare
/// with `serial[seed]`; a watchdog turns a deadlock into a failure.
fn hammer(serial: Arc<Vec<Vec<u8>>>, f: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>) {
    let (tx, rx) = mpsc::channel();
    for th in 0..THREADS {
        let (tx, f, serial) = (tx.clone(), f.clone(), serial.clone());
        std::thread::spawn(move || {
            let n = serial.len() as u64;
            let mut bad = Vec::new();
            for round in 0..ROUNDS as u64 {
                // Each thread walks the seeds in its own order, so different ops overlap.
                for j in 0..n {
                    let seed = (j + th as u64 * 3 + round) % n;
                    if f(seed) != serial[seed as usize] {
                        bad.push(seed);
                    }
                }
            }
            let _ = tx.send((th, bad));
        });
    }
    drop(tx);
    for _ in 0..THREADS {
        match rx.recv_timeout(DEADLINE) {
            Ok((th, bad)) => assert!(bad.is_empty(), "thread {th}: seeds {bad:?} differ from the serial run"),
            Err(e) => panic!("threads did not finish within {DEADLINE:?} (deadlock?): {e}"),
        }
    }
}

const SEEDS: u64 = 16;

fn backends() -> Vec<Arc<dyn Backend>> {
    let reg = moehal::Registry::discover();
    ["cpu", "reference"].iter().filter_map(|n| reg.open(n).ok()).collect()
}

#[test]
fn threads_sharing_one_backend_match_serial_runs_rust_api() {
    for be in backends() {
        let serial: Arc<Vec<Vec<u8>>> = Arc::new((0..SEEDS).map(|s| run_rust(be.as_ref(), s)).collect());
        let b2 = be.clone();
        hammer(serial, Arc::new(move |s| run_rust(b2.as_ref(), s)));
    }
}

#[test]
fn threads_sharing_one_backend_match_serial_runs_c_abi() {
    for name in [c"cpu", c"reference"] {
        let mut b: *mut moehal_backend = ptr::null_mut();
        // SAFETY: valid string and out pointer.
        if unsafe { moehal_backend_open(name.as_ptr(), &mut b) } != MOEHAL_OK {
            continue;
        }
        let addr = b as usize;
        let serial: Arc<Vec<Vec<u8>>> = Arc::new((0..SEEDS).map(|s| run_c(b, s)).collect());
        hammer(serial, Arc::new(move |s| run_c(addr as *const moehal_backend, s)));
        // SAFETY: every thread has finished (hammer joined them through the channel).
        unsafe { moehal_backend_close(b) };
    }
}
