//! Out of device memory (the emulator's MOEHAL_ACL_EMU_MEM_CAP): an error, and nothing lost.
//! Alone in its test binary, because it sets the cap through the environment.

mod ascend_common;

use moehal_core::{BackendExt, Error};

#[test]
fn out_of_memory_is_an_error_and_nothing_is_lost() {
    // Set before any thread of this process reads the environment.
    std::env::set_var("MOEHAL_ACL_EMU_MEM_CAP", (1u64 << 20).to_string());
    let asc = ascend_common::open_emulated();
    let data: Vec<i32> = (0..(256 * 1024 / 4)).collect();
    let keep = asc.upload_slice(&data).unwrap();
    let err = asc.alloc(1 << 20).unwrap_err();
    assert!(
        matches!(err, Error::OutOfMemory { bytes, .. } if bytes == 1 << 20),
        "{err}"
    );
    // Earlier data intact; smaller allocations still work; freeing makes room again.
    assert_eq!(asc.download_vec::<i32>(&keep, data.len()).unwrap(), data);
    let small = asc.alloc(512 * 1024).unwrap();
    assert!(asc.alloc(512 * 1024).is_err());
    drop(small);
    let again = asc.alloc(512 * 1024).unwrap();
    assert_eq!(again.len(), 512 * 1024);
    // A size no device holds (SIZE_MAX: the runtime's alignment overflows it) is out of memory too,
    // as on cpu and reference, not a device error.
    let huge = asc.alloc(usize::MAX).unwrap_err();
    assert!(
        matches!(huge, Error::OutOfMemory { bytes, .. } if bytes == u64::MAX),
        "{huge}"
    );
    assert_eq!(asc.download_vec::<i32>(&keep, data.len()).unwrap(), data);
}
