//! Page-aligned host buffers that ask the kernel for transparent huge pages.

const HUGE: usize = 2 << 20;

/// A zero-initialised buffer of `len` plain-old-data elements. From 2 MiB up it is an anonymous
/// mapping (memmap2's `map_anon`, page aligned, length rounded up to 2 MiB) advised
/// `MADV_HUGEPAGE` on Linux, so that a random gather over a multi-GiB table does not miss the TLB
/// on every row; smaller (and off Linux) it is an ordinary allocation.
pub struct HugeBuf<T: bytemuck::Pod> {
    len: usize,
    /// The mapping, when large; its first `len * size_of::<T>()` bytes are the elements.
    map: Option<memmap2::MmapMut>,
    /// The elements, when small.
    vec: Vec<T>,
}

impl<T: bytemuck::Pod> HugeBuf<T> {
    /// A zeroed buffer of `len` elements; `None` if the memory cannot be had.
    pub fn zeroed(len: usize) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        #[cfg(target_os = "linux")]
        if bytes >= HUGE {
            let map_len = bytes.div_ceil(HUGE).checked_mul(HUGE)?;
            // Anonymous private mappings are zero-filled and page aligned (so aligned for any Pod).
            let map = memmap2::MmapOptions::new().len(map_len).map_anon().ok()?;
            // Advisory: a kernel without transparent huge pages refuses, and small pages still work.
            let _ = map.advise(memmap2::Advice::HugePage);
            return Some(HugeBuf {
                len,
                map: Some(map),
                vec: Vec::new(),
            });
        }
        let _ = HUGE;
        let mut vec = Vec::new();
        vec.try_reserve_exact(len).ok()?;
        vec.resize(len, T::zeroed());
        Some(HugeBuf { len, map: None, vec })
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
        match &self.map {
            Some(m) => bytemuck::cast_slice(&m[..self.len * std::mem::size_of::<T>()]),
            None => &self.vec,
        }
    }

    /// The elements, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        let bytes = self.len * std::mem::size_of::<T>();
        match &mut self.map {
            Some(m) => bytemuck::cast_slice_mut(&mut m[..bytes]),
            None => &mut self.vec,
        }
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

impl<T: bytemuck::Pod + std::fmt::Debug> std::fmt::Debug for HugeBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeBuf")
            .field("len", &self.len)
            .field("huge", &self.map.is_some())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_huge_buffers_are_zeroed_aligned_and_writable() {
        // One below the mapping threshold, one at it, one past it with a ragged tail.
        for len in [HUGE / 4 - 1, HUGE / 4, HUGE / 4 * 3 + 5] {
            let mut b = HugeBuf::<u32>::zeroed(len).expect("memory");
            assert_eq!((b.len(), b.as_slice().len()), (len, len));
            assert_eq!(b.as_slice().as_ptr() as usize % std::mem::align_of::<u32>(), 0);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            #[cfg(target_os = "linux")]
            assert_eq!(format!("{b:?}").contains("huge: true"), len * 4 >= HUGE, "len {len}");
            for (i, x) in b.as_mut_slice().iter_mut().enumerate() {
                *x = i as u32;
            }
            assert!(b.as_slice().iter().enumerate().all(|(i, &x)| x == i as u32));
        }
        let e = HugeBuf::<u8>::zeroed(0).expect("empty");
        assert!(e.is_empty() && e.as_slice().is_empty());
        assert!(HugeBuf::<u64>::zeroed(usize::MAX / 4).is_none());
    }
}
