//! Device memory: buffers this backend owns or wraps, the growable scratch with its error flag,
//! and how an op's tensors become device addresses (including host tables mapped in place).

use std::sync::{Arc, Mutex};

use cudarc::driver::CudaContext;
use moehal_core::{Buffer, DeviceMemory, Error, Location, Result, TensorMut, TensorRef};

use crate::device::{dev_err, CudaBackend};
use crate::raw::{self, Stream};
use crate::NAME;

/// Device memory of this backend (owned, or an engine's pointer wrapped without copying).
pub(crate) struct CudaMemory {
    pub(crate) ptr: u64,
    pub(crate) len: usize,
    pub(crate) ordinal: usize,
    pub(crate) owned: bool,
    pub(crate) ctx: Arc<CudaContext>,
}

impl DeviceMemory for CudaMemory {
    fn addr(&self) -> u64 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
    fn location(&self) -> Location {
        Location::Device {
            backend: NAME.into(),
            ordinal: self.ordinal,
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for CudaMemory {
    fn drop(&mut self) {
        if self.owned && self.ptr != 0 && raw::bind(&self.ctx).is_ok() {
            let _ = raw::mem_free(self.ptr);
        }
    }
}

/// Growable device scratch (error flag, prefixes, counters); used under its mutex only, and every
/// op that uses it waits for its stream before releasing the lock.
pub(crate) struct Scratch {
    pub(crate) ptr: u64,
    pub(crate) len: usize,
}

/// Offsets inside the scratch, 256-byte aligned. Region 0 is always the 16-byte error flag.
pub(crate) struct Carve {
    pub(crate) next: usize,
}
impl Carve {
    pub(crate) fn new() -> Self {
        Carve { next: 256 }
    }
    pub(crate) fn take(&mut self, bytes: usize) -> usize {
        let at = self.next;
        self.next = (at + bytes + 255) & !255;
        at
    }
}

impl CudaBackend {
    pub(crate) fn ensure_scratch<'a>(
        &self,
        sc: &mut std::sync::MutexGuard<'a, Scratch>,
        bytes: usize,
        s: Stream,
    ) -> Result<u64> {
        if sc.len < bytes {
            if sc.ptr != 0 {
                s.sync().map_err(dev_err)?;
                raw::mem_free(sc.ptr).map_err(dev_err)?;
                sc.ptr = 0;
                sc.len = 0;
            }
            let want = bytes.next_power_of_two().max(1 << 16);
            sc.ptr = raw::mem_alloc(want).map_err(|e| {
                if e.is_oom() {
                    Error::OutOfMemory {
                        backend: NAME.into(),
                        bytes: want as u64,
                    }
                } else {
                    dev_err(e)
                }
            })?;
            sc.len = want;
        }
        Ok(sc.ptr)
    }

    /// Reset the error flag at `base` (code 0, index u64::MAX).
    pub(crate) fn flag_reset(&self, base: u64, s: Stream) -> Result<()> {
        raw::memset8(base, 0, 8, s).map_err(dev_err)?;
        raw::memset8(base + 8, 0xff, 8, s).map_err(dev_err)
    }

    /// Wait for the stream and read the flag: `(code, first index)`.
    pub(crate) fn flag_read(&self, base: u64, s: Stream) -> Result<(i32, u64)> {
        let mut b = [0u8; 16];
        raw::dtoh(&mut b, base, s).map_err(dev_err)?;
        let code = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let idx = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        Ok((code, idx))
    }

    pub(crate) fn download_typed<T: moehal_core::Element>(&self, t: &TensorRef<'_>, s: Stream) -> Result<Vec<T>> {
        let n = t.numel();
        let mut v = vec![T::zeroed(); n];
        raw::dtoh(bytemuck::cast_slice_mut(&mut v), t.addr(), s).map_err(dev_err)?;
        Ok(v)
    }

    pub(crate) fn own(&self, buf: &Buffer) -> bool {
        buf.downcast_ref::<CudaMemory>()
            .is_some_and(|m| m.ordinal == self.ordinal)
    }

    pub(crate) fn dptr(&self, t: &TensorRef<'_>, op: &'static str, field: &'static str) -> Result<u64> {
        if self.own(t.buffer()) {
            Ok(t.addr())
        } else {
            Err(Error::invalid(
                op,
                field,
                format!(
                    "not memory of cuda:{} (location {:?})",
                    self.ordinal,
                    t.buffer().location()
                ),
            ))
        }
    }

    pub(crate) fn dptr_mut(&self, t: &TensorMut<'_>, op: &'static str, field: &'static str) -> Result<u64> {
        if self.own(t.buffer()) {
            Ok(t.addr())
        } else {
            Err(Error::invalid(
                op,
                field,
                format!(
                    "not memory of cuda:{} (location {:?})",
                    self.ordinal,
                    t.buffer().location()
                ),
            ))
        }
    }

    pub(crate) fn opt_ptr(&self, t: Option<&TensorRef<'_>>, op: &'static str, field: &'static str) -> Result<u64> {
        t.map(|t| self.dptr(t, op, field)).transpose().map(|p| p.unwrap_or(0))
    }

    pub(crate) fn check_range(&self, buf: &Buffer, offset: usize, len: usize, op: &'static str) -> Result<()> {
        if !self.own(buf) {
            return Err(Error::invalid(
                op,
                "buffer",
                format!("not memory of cuda:{}", self.ordinal),
            ));
        }
        match offset.checked_add(len) {
            Some(e) if e <= buf.len() => Ok(()),
            _ => Err(Error::invalid(
                op,
                "range",
                format!("{offset} + {len} bytes exceeds the buffer of {} bytes", buf.len()),
            )),
        }
    }

    /// For a host table: the process-wide lock that spans its registration, use and
    /// unregistration. Without it an op that finds the range already registered (by a concurrent op,
    /// possibly of another backend on the same device) could read it after that op unregisters it.
    pub(crate) fn host_table_guard(&self, t: &TensorRef<'_>) -> Result<Option<std::sync::MutexGuard<'static, ()>>> {
        static HOST_TABLES: Mutex<()> = Mutex::new(());
        if self.own(t.buffer()) {
            return Ok(None);
        }
        self.lock(&HOST_TABLES).map(Some)
    }

    /// Table address as the device sees it; registers host memory (mapped, read-only) when needed.
    /// Returns `(device address of element 0, host address to unregister)`.
    pub(crate) fn table_ptr(&self, t: &TensorRef<'_>, op: &'static str) -> Result<(u64, Option<u64>)> {
        if self.own(t.buffer()) {
            return Ok((t.addr(), None));
        }
        if t.buffer().location() != Location::Host {
            return Err(Error::invalid(
                op,
                "table",
                format!("neither host memory nor memory of cuda:{}", self.ordinal),
            ));
        }
        let base = t.buffer().addr();
        let (d, ours) = raw::host_register(base, t.buffer().len()).map_err(dev_err)?;
        Ok((d + (t.addr() - base), ours.then_some(base)))
    }
}
