//! Host memory: the [`DeviceMemory`] of the reference and CPU backends, and the only place in core
//! that turns buffers into Rust slices.
//!
//! All `unsafe` of moehal-core lives in this module. Soundness rests on two facts: a [`HostMemory`]
//! is owned by exactly one [`Buffer`] (which is not `Clone`), and writable slices are only made from
//! a [`TensorMut`], which holds that buffer by `&mut`.

use std::alloc::Layout as AllocLayout;
use std::any::Any;
use std::ptr::NonNull;

use crate::tensor::{Buffer, DeviceMemory, Location, TensorMut, TensorRef};
use crate::{Element, Error, Result};

/// Default alignment of host allocations (one cache line, enough for every SIMD load).
pub const HOST_ALIGN: usize = 64;

enum Storage {
    /// Allocated here; freed on drop.
    Owned(AllocLayout),
    /// Borrowed from an owner kept alive alongside (a memory map, a `Vec`), or from a caller's raw
    /// pointer (`keep` is `None` then).
    External {
        _keep: Option<Box<dyn Any + Send + Sync>>,
        writable: bool,
    },
}

/// A block of host memory.
pub struct HostMemory {
    ptr: NonNull<u8>,
    len: usize,
    storage: Storage,
}

// SAFETY: HostMemory is a plain pointer + length to memory it owns (or whose owner it keeps alive,
// and that owner is Send + Sync); access is synchronised by Rust borrows of the owning Buffer.
unsafe impl Send for HostMemory {}
// SAFETY: as above; shared references only hand out shared slices.
unsafe impl Sync for HostMemory {}

impl HostMemory {
    /// Zero-filled allocation of `len` bytes aligned to [`HOST_ALIGN`].
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the allocator refuses.
    pub fn zeroed(len: usize) -> Result<Self> {
        Self::zeroed_aligned(len, HOST_ALIGN)
    }

    /// Zero-filled allocation of `len` bytes aligned to `align` (a power of two; 2 MiB lets the CPU
    /// backend ask for transparent huge pages).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the allocator refuses, [`Error::InvalidArgument`] for a bad
    /// alignment.
    pub fn zeroed_aligned(len: usize, align: usize) -> Result<Self> {
        if !align.is_power_of_two() {
            return Err(Error::invalid(
                "alloc",
                "align",
                format!("{align} is not a power of two"),
            ));
        }
        let layout = AllocLayout::from_size_align(len.max(1), align).map_err(|_| Error::OutOfMemory {
            backend: "host".into(),
            bytes: len as u64,
        })?;
        // SAFETY: layout has non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).ok_or(Error::OutOfMemory {
            backend: "host".into(),
            bytes: len as u64,
        })?;
        Ok(HostMemory {
            ptr,
            len,
            storage: Storage::Owned(layout),
        })
    }

    /// Read-only memory whose bytes belong to `owner` (a `memmap2::Mmap`, a `Vec<u8>`, ...), kept
    /// alive as long as this memory. Zero copy: a memory-mapped table is read in place.
    pub fn from_owner<O: AsRef<[u8]> + Send + Sync + 'static>(owner: O) -> Self {
        // Box first, then take the address: an owner whose bytes live inside the value itself
        // (an array) moves into the box, and its bytes with it; the box never moves afterwards.
        let boxed: Box<O> = Box::new(owner);
        let bytes = (*boxed).as_ref();
        let (ptr, len) = (
            NonNull::new(bytes.as_ptr() as *mut u8).unwrap_or(NonNull::dangling()),
            bytes.len(),
        );
        HostMemory {
            ptr,
            len,
            storage: Storage::External {
                _keep: Some(boxed),
                writable: false,
            },
        }
    }

    /// Writable memory whose bytes belong to `owner` (a backend's own allocation, e.g. an
    /// anonymous mapping advised for huge pages), kept alive — and dropped — with this memory.
    pub fn from_owner_mut<O: AsRef<[u8]> + AsMut<[u8]> + Send + Sync + 'static>(owner: O) -> Self {
        let mut boxed: Box<O> = Box::new(owner);
        let bytes = (*boxed).as_mut();
        let (ptr, len) = (
            NonNull::new(bytes.as_mut_ptr()).unwrap_or(NonNull::dangling()),
            bytes.len(),
        );
        HostMemory {
            ptr,
            len,
            storage: Storage::External {
                _keep: Some(boxed),
                writable: true,
            },
        }
    }

    /// Wrap memory owned by someone else (an engine's tensor, a DLPack capsule).
    ///
    /// # Safety
    /// `ptr` must be valid for reads (and for writes if `writable`) of `len` bytes for the whole
    /// life of the returned value, and nothing else may access it while an op uses it.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize, writable: bool) -> Result<Self> {
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::invalid("wrap_external", "ptr", "null pointer"))?;
        Ok(HostMemory {
            ptr,
            len,
            storage: Storage::External { _keep: None, writable },
        })
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes (constructor contracts); len 0 uses a dangling, aligned ptr.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, writable.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for read-only memory.
    pub fn bytes_mut(&mut self) -> Result<&mut [u8]> {
        if !self.is_writable() {
            return Err(Error::invalid(
                "host",
                "buffer",
                "read-only memory (e.g. a memory-mapped table)",
            ));
        }
        // SAFETY: exclusive borrow of the unique owner; ptr valid for len bytes and writable.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) })
    }

    fn is_writable(&self) -> bool {
        match self.storage {
            Storage::Owned(_) => true,
            Storage::External { writable, .. } => writable,
        }
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        if let Storage::Owned(layout) = self.storage {
            // SAFETY: allocated in zeroed_aligned with exactly this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) }
        }
    }
}

impl DeviceMemory for HostMemory {
    fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }
    fn len(&self) -> usize {
        self.len
    }
    fn location(&self) -> Location {
        Location::Host
    }
    fn writable(&self) -> bool {
        self.is_writable()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A host buffer holding a copy of `data`.
///
/// # Errors
/// [`Error::OutOfMemory`].
pub fn buffer_from_slice<T: Element>(data: &[T]) -> Result<Buffer> {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let mut mem = HostMemory::zeroed(bytes.len())?;
    mem.bytes_mut()?.copy_from_slice(bytes);
    Ok(Buffer::new(Box::new(mem)))
}

/// A zero-filled host buffer of `bytes` bytes.
///
/// # Errors
/// [`Error::OutOfMemory`].
pub fn zeroed_buffer(bytes: usize) -> Result<Buffer> {
    Ok(Buffer::new(Box::new(HostMemory::zeroed(bytes)?)))
}

fn host_mem<'b>(buf: &'b Buffer, op: &'static str, field: &'static str) -> Result<&'b HostMemory> {
    buf.downcast_ref::<HostMemory>().ok_or_else(|| {
        Error::invalid(
            op,
            field,
            format!("buffer is not host memory (it is {:?})", buf.location()),
        )
    })
}

/// The bytes of a host buffer.
///
/// # Errors
/// [`Error::InvalidArgument`] if the buffer is not host memory.
pub fn bytes<'b>(buf: &'b Buffer, op: &'static str, field: &'static str) -> Result<&'b [u8]> {
    Ok(host_mem(buf, op, field)?.bytes())
}

/// The bytes of a host buffer, writable.
///
/// # Errors
/// [`Error::InvalidArgument`] if the buffer is not writable host memory.
pub fn bytes_mut<'b>(buf: &'b mut Buffer, op: &'static str, field: &'static str) -> Result<&'b mut [u8]> {
    host_mem(buf, op, field)?;
    if !buf.writable() {
        return Err(Error::invalid(op, field, "buffer is read-only"));
    }
    let addr = buf.addr();
    let len = buf.len();
    // SAFETY: `buf` is a HostMemory (checked above) that we borrow exclusively for 'b; its memory is
    // valid and writable for len bytes at addr.
    Ok(unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) })
}

fn elem_range<T: Element>(
    dtype: crate::DType,
    layout: &crate::tensor::Layout,
    buf_len: usize,
    addr: u64,
    op: &'static str,
    field: &'static str,
) -> Result<(usize, usize)> {
    if dtype != T::DTYPE {
        return Err(Error::invalid(
            op,
            field,
            format!("dtype {dtype}, accessed as {}", T::DTYPE),
        ));
    }
    if !layout.is_contiguous() {
        return Err(Error::invalid(op, field, "non-contiguous view"));
    }
    let start = layout.offset * dtype.size();
    let n = layout.numel();
    let end = start + n * dtype.size();
    if end > buf_len {
        return Err(Error::invalid(
            op,
            field,
            format!("view ends at byte {end} past its buffer of {buf_len} bytes"),
        ));
    }
    if n > 0 && (addr as usize + start) % std::mem::align_of::<T>() != 0 {
        return Err(Error::invalid(
            op,
            field,
            format!("address not aligned to {} bytes", std::mem::align_of::<T>()),
        ));
    }
    Ok((start, n))
}

/// The elements of a contiguous host view.
///
/// # Errors
/// [`Error::InvalidArgument`] when the view is not host memory, not of type `T`, not contiguous,
/// misaligned or out of its buffer.
pub fn slice<'a, T: Element>(t: &TensorRef<'a>, op: &'static str, field: &'static str) -> Result<&'a [T]> {
    let mem = host_mem(t.buffer(), op, field)?;
    let (start, n) = elem_range::<T>(t.dtype(), t.layout(), mem.len, mem.addr(), op, field)?;
    if n == 0 {
        return Ok(&[]);
    }
    // SAFETY: range checked inside the buffer, alignment checked, T is Pod; the buffer is borrowed
    // shared for 'a and no TensorMut can coexist with that borrow.
    Ok(unsafe { std::slice::from_raw_parts(mem.ptr.as_ptr().add(start) as *const T, n) })
}

/// The elements of a contiguous host view, writable.
///
/// # Errors
/// As [`slice()`], plus read-only memory.
pub fn slice_mut<'b, T: Element>(
    t: &'b mut TensorMut<'_>,
    op: &'static str,
    field: &'static str,
) -> Result<&'b mut [T]> {
    let (dtype, layout) = (t.dtype(), *t.layout());
    let buf = t.buffer_mut();
    let mem = host_mem(buf, op, field)?;
    if !mem.is_writable() {
        return Err(Error::invalid(op, field, "buffer is read-only"));
    }
    let (start, n) = elem_range::<T>(dtype, &layout, mem.len, mem.addr(), op, field)?;
    if n == 0 {
        return Ok(&mut []);
    }
    // SAFETY: exclusive borrow of the owning buffer through the TensorMut for 'b; range and
    // alignment checked; memory writable.
    Ok(unsafe { std::slice::from_raw_parts_mut(mem.ptr.as_ptr().add(start) as *mut T, n) })
}

/// Copy `src` into a host buffer at byte `offset` (the `upload` of host backends).
///
/// # Errors
/// [`Error::InvalidArgument`] when the range leaves the buffer or the buffer is not writable host memory.
pub fn upload(dst: &mut Buffer, offset: usize, src: &[u8]) -> Result<()> {
    let d = bytes_mut(dst, "upload", "dst")?;
    let end = offset.checked_add(src.len()).filter(|&e| e <= d.len()).ok_or_else(|| {
        Error::invalid(
            "upload",
            "offset",
            format!("{} bytes at {offset} exceed the buffer of {}", src.len(), d.len()),
        )
    })?;
    d[offset..end].copy_from_slice(src);
    Ok(())
}

/// Copy from a host buffer at byte `offset` into `dst` (the `download` of host backends).
///
/// # Errors
/// [`Error::InvalidArgument`] when the range leaves the buffer or it is not host memory.
pub fn download(src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
    let s = bytes(src, "download", "src")?;
    let end = offset.checked_add(dst.len()).filter(|&e| e <= s.len()).ok_or_else(|| {
        Error::invalid(
            "download",
            "offset",
            format!("{} bytes at {offset} exceed the buffer of {}", dst.len(), s.len()),
        )
    })?;
    dst.copy_from_slice(&s[offset..end]);
    Ok(())
}
