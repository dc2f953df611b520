//! Host memory and the panic fence (regressions found by trying to break the library).

use moehal_core::engram::derive_primes;
use moehal_core::fence::catch_quietly;
use moehal_core::host::HostMemory;
use moehal_core::{DeviceMemory, Error};

#[inline(never)]
fn owned_array() -> HostMemory {
    HostMemory::from_owner([7u8; 4096])
}

#[inline(never)]
fn scribble_on_the_stack() -> u64 {
    let junk = [0xA5u8; 8192];
    std::hint::black_box(&junk).iter().map(|&b| b as u64).sum()
}

#[test]
fn an_owner_whose_bytes_live_inside_it_stays_valid() {
    let m = owned_array();
    std::hint::black_box(scribble_on_the_stack());
    assert_eq!(m.len(), 4096);
    assert!(
        m.bytes().iter().all(|&b| b == 7),
        "bytes of a moved array owner were lost"
    );
    assert!(!m.writable());
}

#[test]
fn an_impossible_allocation_is_out_of_memory() {
    assert!(matches!(HostMemory::zeroed(usize::MAX), Err(Error::OutOfMemory { .. })));
}

#[test]
fn the_fence_catches_a_panic_and_returns_its_message() {
    let r: Result<(), String> = catch_quietly(|| panic!("boom {}", 42));
    assert_eq!(r, Err("boom 42".to_string()));
    assert_eq!(catch_quietly(|| 5), Ok(5));
}

#[test]
fn deriving_absurdly_many_primes_is_an_error_not_an_allocation_failure() {
    let e = derive_primes(11, 3, 2, usize::MAX).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { field: "layers", .. }), "{e}");
}
