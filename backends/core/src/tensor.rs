//! Buffers (memory owned by a backend) and tensor views over them.
//!
//! A [`Buffer`] is a block of memory on some device, owned uniquely (it is not `Clone`), so that
//! Rust's borrow rules give each op exclusive access to its outputs: inputs are [`TensorRef`]s
//! (`&Buffer`), outputs are [`TensorMut`]s (`&mut Buffer`). Shapes, strides and offsets are counted
//! in elements and are 64-bit (`usize` on the 64-bit targets moehal requires).

use std::any::Any;

use crate::{DType, Error, Result};

/// Where a buffer's bytes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Ordinary host memory, addressable by the CPU (reference and CPU backends).
    Host,
    /// Memory of a device backend: its name and device ordinal.
    Device {
        /// Backend name (`"cuda"`, `"ascend"`).
        backend: String,
        /// Device ordinal.
        ordinal: usize,
    },
}

/// One allocation, implemented by each backend for its own memory.
///
/// Backends downcast with [`Buffer::downcast_ref`] to reach their concrete type.
pub trait DeviceMemory: Any + Send + Sync {
    /// Address of byte 0 in the device's address space (the host address for host memory).
    fn addr(&self) -> u64;
    /// Size in bytes.
    fn len(&self) -> usize;
    /// Whether the allocation holds zero bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Where the bytes live.
    fn location(&self) -> Location;
    /// Whether ops may write to it (a read-only memory-mapped table is not).
    fn writable(&self) -> bool {
        true
    }
    /// Upcast for downcasting.
    fn as_any(&self) -> &dyn Any;
}

/// A uniquely owned block of memory on one device. Dropping it frees (or releases) the memory.
pub struct Buffer {
    mem: Box<dyn DeviceMemory>,
}

impl Buffer {
    /// Wrap a backend's allocation.
    pub fn new(mem: Box<dyn DeviceMemory>) -> Self {
        Buffer { mem }
    }
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.mem.len()
    }
    /// Whether the buffer holds zero bytes.
    pub fn is_empty(&self) -> bool {
        self.mem.len() == 0
    }
    /// Device address of byte 0.
    pub fn addr(&self) -> u64 {
        self.mem.addr()
    }
    /// Where the bytes live.
    pub fn location(&self) -> Location {
        self.mem.location()
    }
    /// Whether ops may write to it.
    pub fn writable(&self) -> bool {
        self.mem.writable()
    }
    /// The backend's concrete memory type, if it is `T`.
    pub fn downcast_ref<T: DeviceMemory>(&self) -> Option<&T> {
        self.mem.as_any().downcast_ref::<T>()
    }
    /// A contiguous view of the whole buffer (or its prefix) as `shape` of `dtype`.
    pub fn view(&self, dtype: DType, shape: &[usize]) -> TensorRef<'_> {
        TensorRef::new(self, dtype, shape)
    }
    /// A contiguous writable view of the buffer as `shape` of `dtype`.
    pub fn view_mut(&mut self, dtype: DType, shape: &[usize]) -> TensorMut<'_> {
        TensorMut::new(self, dtype, shape)
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len())
            .field("location", &self.location())
            .finish()
    }
}

/// Maximum tensor rank used by any op.
pub const MAX_RANK: usize = 4;

/// Shape and strides of a view, in elements, outermost first.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    rank: u8,
    dims: [usize; MAX_RANK],
    strides: [usize; MAX_RANK],
    /// Offset of element 0 from the start of the buffer, in elements.
    pub offset: usize,
}

impl Layout {
    /// Row-major contiguous layout of `shape`.
    ///
    /// # Panics
    /// If `shape` has more than [`MAX_RANK`] dimensions (a programming error, not user data).
    pub fn contiguous(shape: &[usize]) -> Self {
        assert!(shape.len() <= MAX_RANK, "rank {} > {MAX_RANK}", shape.len());
        let mut dims = [0; MAX_RANK];
        let mut strides = [0; MAX_RANK];
        dims[..shape.len()].copy_from_slice(shape);
        let mut s = 1usize;
        for i in (0..shape.len()).rev() {
            strides[i] = s;
            s = s.saturating_mul(shape[i].max(1));
        }
        Layout {
            rank: shape.len() as u8,
            dims,
            strides,
            offset: 0,
        }
    }
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.dims[..self.rank as usize]
    }
    /// The strides, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides[..self.rank as usize]
    }
    /// Number of elements (product of the shape; 1 for rank 0).
    /// Saturates at `usize::MAX` on overflow, which no buffer can hold, so validation rejects it.
    pub fn numel(&self) -> usize {
        let shape = self.shape();
        if shape.contains(&0) {
            return 0;
        }
        shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX)
    }
    /// Whether the view is row-major dense (strides of a contiguous layout; size-1 and empty
    /// dimensions are ignored).
    pub fn is_contiguous(&self) -> bool {
        if self.numel() == 0 {
            return true;
        }
        let mut expect = 1usize;
        for i in (0..self.rank as usize).rev() {
            if self.dims[i] != 1 && self.strides[i] != expect {
                return false;
            }
            expect = expect.saturating_mul(self.dims[i]);
        }
        true
    }
    /// One past the largest element index touched (0 for an empty view), or `None` on overflow.
    pub fn extent(&self) -> Option<usize> {
        if self.numel() == 0 {
            return Some(self.offset);
        }
        let mut last = self.offset;
        for i in 0..self.rank as usize {
            last = last.checked_add((self.dims[i] - 1).checked_mul(self.strides[i])?)?;
        }
        last.checked_add(1)
    }
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}/{:?}+{}", self.shape(), self.strides(), self.offset)
    }
}

macro_rules! view_common {
    () => {
        /// Element type.
        pub fn dtype(&self) -> DType {
            self.dtype
        }
        /// Shape, outermost first.
        pub fn shape(&self) -> &[usize] {
            self.layout.shape()
        }
        /// Strides in elements.
        pub fn strides(&self) -> &[usize] {
            self.layout.strides()
        }
        /// Offset of element 0 in elements from the buffer start.
        pub fn offset(&self) -> usize {
            self.layout.offset
        }
        /// Shape, strides and offset.
        pub fn layout(&self) -> &Layout {
            &self.layout
        }
        /// Number of elements.
        pub fn numel(&self) -> usize {
            self.layout.numel()
        }
        /// Device address of element 0.
        pub fn addr(&self) -> u64 {
            self.buf.addr() + (self.layout.offset * self.dtype.size()) as u64
        }
        /// Byte range `[start, end)` of the buffer this view may touch.
        pub fn byte_range(&self) -> (usize, usize) {
            let s = self.layout.offset * self.dtype.size();
            let e = self
                .layout
                .extent()
                .unwrap_or(usize::MAX)
                .saturating_mul(self.dtype.size());
            (s, e.max(s))
        }
        /// Set the offset (elements from the buffer start).
        pub fn with_offset(mut self, offset: usize) -> Self {
            self.layout.offset = offset;
            self
        }
        /// Replace the strides (elements). Ops validate them; most require contiguous views.
        ///
        /// # Panics
        /// If `strides.len()` differs from the rank.
        pub fn with_strides(mut self, strides: &[usize]) -> Self {
            assert_eq!(strides.len(), self.layout.rank as usize, "strides rank mismatch");
            self.layout.strides[..strides.len()].copy_from_slice(strides);
            self
        }
        /// Check that this view is usable by `op` as argument `field`: expected dtype, rank,
        /// contiguous, inside its buffer.
        pub fn check(&self, op: &'static str, field: &'static str, dtypes: &[DType], rank: usize) -> Result<()> {
            if !dtypes.contains(&self.dtype) {
                let names: Vec<_> = dtypes.iter().map(|d| d.name()).collect();
                return Err(Error::invalid(
                    op,
                    field,
                    format!(
                        "dtype {} not allowed (expected {})",
                        self.dtype,
                        names.join(" or ")
                    ),
                ));
            }
            if self.shape().len() != rank {
                return Err(Error::invalid(
                    op,
                    field,
                    format!(
                        "rank {} (shape {:?}), expected rank {rank}",
                        self.shape().len(),
                        self.shape()
                    ),
                ));
            }
            if !self.layout.is_contiguous() {
                return Err(Error::invalid(
                    op,
                    field,
                    format!(
                        "non-contiguous view {:?}: ops take row-major dense tensors",
                        self.layout
                    ),
                ));
            }
            if self.numel() > 0 && self.addr() % self.dtype.size() as u64 != 0 {
                return Err(Error::invalid(
                    op,
                    field,
                    format!(
                        "address {:#x} is not aligned to its {}-byte elements",
                        self.addr(),
                        self.dtype.size()
                    ),
                ));
            }
            match self.layout.extent() {
                Some(e)
                    if e.checked_mul(self.dtype.size())
                        .is_some_and(|b| b <= self.buf.len()) =>
                {
                    Ok(())
                }
                _ => Err(Error::invalid(
                    op,
                    field,
                    format!(
                        "view {:?} of {} exceeds its buffer of {} bytes",
                        self.layout,
                        self.dtype,
                        self.buf.len()
                    ),
                )),
            }
        }
    };
}

/// A read-only typed view of a [`Buffer`].
#[derive(Clone, Copy)]
pub struct TensorRef<'a> {
    buf: &'a Buffer,
    dtype: DType,
    layout: Layout,
}

impl<'a> TensorRef<'a> {
    /// Contiguous view of `shape` elements of `dtype` starting at byte 0.
    pub fn new(buf: &'a Buffer, dtype: DType, shape: &[usize]) -> Self {
        TensorRef {
            buf,
            dtype,
            layout: Layout::contiguous(shape),
        }
    }
    /// The underlying buffer.
    pub fn buffer(&self) -> &'a Buffer {
        self.buf
    }
    view_common!();
}

/// A writable typed view of a [`Buffer`] (exclusive borrow).
pub struct TensorMut<'a> {
    buf: &'a mut Buffer,
    dtype: DType,
    layout: Layout,
}

impl<'a> TensorMut<'a> {
    /// Contiguous view of `shape` elements of `dtype` starting at byte 0.
    pub fn new(buf: &'a mut Buffer, dtype: DType, shape: &[usize]) -> Self {
        TensorMut {
            buf,
            dtype,
            layout: Layout::contiguous(shape),
        }
    }
    /// The underlying buffer.
    pub fn buffer(&self) -> &Buffer {
        self.buf
    }
    /// The underlying buffer, mutably.
    pub fn buffer_mut(&mut self) -> &mut Buffer {
        self.buf
    }
    /// A read-only view of the same elements.
    pub fn as_ref(&self) -> TensorRef<'_> {
        TensorRef {
            buf: self.buf,
            dtype: self.dtype,
            layout: self.layout,
        }
    }
    /// Reborrow (to pass the view on while keeping it).
    pub fn reborrow(&mut self) -> TensorMut<'_> {
        TensorMut {
            buf: self.buf,
            dtype: self.dtype,
            layout: self.layout,
        }
    }
    view_common!();
}

impl std::fmt::Debug for TensorRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorRef({} {:?} @{:#x})", self.dtype, self.layout, self.buf.addr())
    }
}
impl std::fmt::Debug for TensorMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorMut({} {:?} @{:#x})", self.dtype, self.layout, self.buf.addr())
    }
}
