//! Page-aligned host buffers that ask the kernel for transparent huge pages.

use std::marker::PhantomData;

const HUGE: usize = 2 << 20;

/// A zero-initialised, 2 MiB-aligned-when-large buffer of `len` plain-old-data elements, backed by an
/// anonymous mapping advised `MADV_HUGEPAGE` (on Linux; elsewhere an ordinary allocation), so that a
/// random gather over a multi-GiB table does not miss the TLB on every row.
pub struct HugeBuf<T: bytemuck::Pod> {
    ptr: *mut T,
    len: usize,
    map_len: usize,
    vec: Vec<T>,
    _p: PhantomData<T>,
}

// SAFETY: HugeBuf owns its memory exclusively (like Vec<T>); T: Pod is Send + Sync.
unsafe impl<T: bytemuck::Pod + Send> Send for HugeBuf<T> {}
// SAFETY: shared access only hands out &[T].
unsafe impl<T: bytemuck::Pod + Sync> Sync for HugeBuf<T> {}

impl<T: bytemuck::Pod> HugeBuf<T> {
    /// A zeroed buffer of `len` elements; `None` if the memory cannot be had.
    pub fn zeroed(len: usize) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        #[cfg(target_os = "linux")]
        if bytes >= HUGE {
            let map_len = bytes.div_ceil(HUGE).checked_mul(HUGE)?;
            // SAFETY: an anonymous private mapping of map_len bytes; the result is checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return None;
            }
            // SAFETY: p..p+map_len is our mapping; madvise is advisory and its failure harmless.
            unsafe {
                libc::madvise(p, map_len, libc::MADV_HUGEPAGE);
            }
            return Some(HugeBuf {
                ptr: p as *mut T,
                len,
                map_len,
                vec: Vec::new(),
                _p: PhantomData,
            });
        }
        let _ = HUGE;
        let mut vec = Vec::new();
        vec.try_reserve_exact(len).ok()?;
        vec.resize(len, T::zeroed());
        Some(HugeBuf {
            ptr: std::ptr::null_mut(),
            len,
            map_len: 0,
            vec,
            _p: PhantomData,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        if self.map_len == 0 {
            return &self.vec;
        }
        // SAFETY: the mapping holds map_len >= len*size_of::<T>() zero-initialised bytes, page
        // aligned (so aligned for T), owned by self for its lifetime; any bit pattern is a valid T.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The elements, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        if self.map_len == 0 {
            return &mut self.vec;
        }
        // SAFETY: as in as_slice, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl AsRef<[u8]> for HugeBuf<u8> {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsMut<[u8]> for HugeBuf<u8> {
    fn as_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl<T: bytemuck::Pod> Drop for HugeBuf<T> {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if self.map_len != 0 {
            // SAFETY: ptr/map_len describe the mapping made in zeroed(), unmapped exactly once.
            unsafe {
                libc::munmap(self.ptr as *mut libc::c_void, self.map_len);
            }
        }
    }
}

impl<T: bytemuck::Pod + std::fmt::Debug> std::fmt::Debug for HugeBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeBuf")
            .field("len", &self.len)
            .field("huge", &(self.map_len != 0))
            .finish()
    }
}

/// Wrap caller-owned host memory as a moehal buffer (see `Backend::wrap_external`).
///
/// # Safety
/// `ptr` addresses `bytes` bytes of host memory that stay valid, and are not used by others while
/// ops run on them, for the life of the buffer.
pub unsafe fn wrap_host(ptr: u64, bytes: usize) -> moehal_core::Result<moehal_core::Buffer> {
    // SAFETY: forwarded contract.
    let mem = unsafe { moehal_core::host::HostMemory::from_raw(ptr as *mut u8, bytes, true)? };
    Ok(moehal_core::Buffer::new(Box::new(mem)))
}
