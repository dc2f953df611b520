//! Device memory: buffers this backend owns or wraps, the growable scratch with its error flag,
//! and how an op's tensors become device addresses (including host tables mapped in place: once,
//! for a table wrapped by [`CudaBackend::pin_host_table`], or per call for a plain host buffer).

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

/// The process-wide lock over host-range registrations: held by an op that registers a plain host
/// table for the call (across registration, use and unregistration), by
/// [`CudaBackend::pin_host_table`] while it registers, and by [`PinnedHost`]'s drop while it
/// unregisters. Without it an op that finds a range already registered (by a concurrent op,
/// possibly of another backend on the same device) could read it after the owner unregisters it.
fn host_tables() -> std::sync::MutexGuard<'static, ()> {
    static HOST_TABLES: Mutex<()> = Mutex::new(());
    // The guarded state is the driver's; a panic elsewhere leaves nothing inconsistent here.
    HOST_TABLES.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A host table registered with the driver once (`cuMemHostRegister`, device-mapped, read-only
/// where the device supports it) and read in place by every op that takes it; the registration
/// is released when this memory drops (before the host bytes are freed). Made by
/// [`CudaBackend::pin_host_table`]; its location stays [`Location::Host`].
pub(crate) struct PinnedHost {
    /// The host buffer (a `moehal_core::host::HostMemory`, a memory map, ...); dropped after the
    /// release runs (fields drop after `Drop::drop`).
    inner: Buffer,
    /// Device address of `inner`'s byte 0.
    dptr: u64,
    /// Ordinal of the device whose (primary) context registered the range: the mapping
    /// (`DEVICEMAP` without `PORTABLE`) is valid in that context only, so a backend of another
    /// device must not read through `dptr`.
    ordinal: usize,
    /// Unregisters (and first waits for the device); `None` where the range was registered by
    /// someone else before us (then the owner of that registration releases it).
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl PinnedHost {
    pub(crate) fn new(
        inner: Buffer,
        dptr: u64,
        ordinal: usize,
        release: Option<Box<dyn FnOnce() + Send + Sync>>,
    ) -> Self {
        PinnedHost {
            inner,
            dptr,
            ordinal,
            release,
        }
    }

    /// The device address of host address `host` inside this table.
    fn device_addr(&self, host: u64) -> u64 {
        self.dptr + (host - self.inner.addr())
    }
}

impl DeviceMemory for PinnedHost {
    fn addr(&self) -> u64 {
        self.inner.addr()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn location(&self) -> Location {
        Location::Host
    }
    fn writable(&self) -> bool {
        // Registered read-only for the device, and no backend's host helpers reach the bytes
        // through this wrapper: ops never write a table.
        false
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for PinnedHost {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            let _g = host_tables();
            release();
        }
    }
}

/// The device address of a table view when its buffer is a [`PinnedHost`] (no registration needed).
/// `(device address, ordinal of the registering device)`.
pub(crate) fn pinned_table_addr(t: &TensorRef<'_>) -> Option<(u64, usize)> {
    t.buffer()
        .downcast_ref::<PinnedHost>()
        .map(|p| (p.device_addr(t.addr()), p.ordinal))
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

    /// For a plain host table (registered per call): the process-wide registration lock
    /// ([`host_tables`]) spanning its registration, use and unregistration. `None` for device
    /// tables and for [`PinnedHost`] tables (registered once; nothing changes during the op).
    pub(crate) fn host_table_guard(&self, t: &TensorRef<'_>) -> Result<Option<std::sync::MutexGuard<'static, ()>>> {
        if self.own(t.buffer()) || pinned_table_addr(t).is_some() {
            return Ok(None);
        }
        Ok(Some(host_tables()))
    }

    /// Table address as the device sees it; registers a plain host table (mapped, read-only) for
    /// this call. Returns `(device address of element 0, host address to unregister)`.
    pub(crate) fn table_ptr(&self, t: &TensorRef<'_>, op: &'static str) -> Result<(u64, Option<u64>)> {
        if self.own(t.buffer()) {
            return Ok((t.addr(), None));
        }
        if let Some((d, o)) = pinned_table_addr(t) {
            if o != self.ordinal {
                // The registration's mapping belongs to the other device's context, and its
                // release waits for that context only.
                return Err(Error::invalid(
                    op,
                    "table",
                    format!(
                        "pinned by pin_host_table on cuda:{o}; this backend is cuda:{}: pin the table on this \
                         backend (or pass the plain host buffer)",
                        self.ordinal
                    ),
                ));
            }
            return Ok((d, None));
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

impl CudaBackend {
    /// Register a host table with the device once, for every later op that reads it in place
    /// (`gather_rows`, `engram_lookup` with a [`Location::Host`] table): the returned buffer wraps
    /// `table` (same address, length and location; read-only) and stays registered until it
    /// drops, which first waits for the device, then unregisters, then frees `table`. A plain
    /// host table is instead registered and unregistered around every call, which for a large
    /// table (the driver pins every page: ~0.1 s per GiB) dominates each step.
    ///
    /// The bytes are read through the device mapping (`cuMemHostRegister` with `DEVICEMAP`, and
    /// `READ_ONLY` where the device supports it), so the host must not change them while an op
    /// that reads them runs. Other backends' host helpers do not see through the wrapper: keep
    /// the original buffer for them, or use this one with this backend only.
    ///
    /// # Errors
    /// `Err((error, table))`, giving the table back: [`Error::InvalidArgument`] when `table` is
    /// not host memory; [`Error::Device`] when the driver refuses the registration (e.g. pinning
    /// not permitted in a VM), in which case plain per-call use still works.
    pub fn pin_host_table(&self, table: Buffer) -> std::result::Result<Buffer, (Error, Buffer)> {
        if table.location() != Location::Host || table.downcast_ref::<PinnedHost>().is_some() {
            let why = if table.location() == Location::Host {
                "already pinned by pin_host_table".to_string()
            } else {
                format!("not host memory (location {:?})", table.location())
            };
            return Err((Error::invalid("pin_host_table", "table", why), table));
        }
        if let Err(e) = raw::bind(&self.ctx) {
            return Err((dev_err(e), table));
        }
        let _g = host_tables();
        let base = table.addr();
        let (dptr, ours) = match raw::host_register(base, table.len()) {
            Ok(r) => r,
            Err(e) => return Err((dev_err(e), table)),
        };
        let release: Option<Box<dyn FnOnce() + Send + Sync>> = ours.then(|| {
            let ctx = self.ctx.clone();
            Box::new(move || {
                if raw::bind(&ctx).is_ok() {
                    // No op may still read the range when it is unregistered.
                    let _ = ctx.synchronize();
                    raw::host_unregister(base);
                }
            }) as Box<dyn FnOnce() + Send + Sync>
        });
        Ok(Buffer::new(Box::new(PinnedHost::new(
            table,
            dptr,
            self.ordinal,
            release,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moehal_core::DType;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The bookkeeping of a pinned table without a GPU: views map to `dptr + offset`, the
    /// wrapper reports the host buffer's address, length and location, its release runs exactly
    /// once and only when the buffer drops, and a borrowed registration (`release: None`) is never
    /// released by us.
    #[test]
    fn pinned_table_maps_views_and_releases_once_on_drop() {
        static RELEASED: AtomicUsize = AtomicUsize::new(0);
        let host = moehal_core::host::zeroed_buffer(4096).unwrap();
        let haddr = host.addr();
        let dptr = 0x7f00_0000_0000u64;
        let release: Box<dyn FnOnce() + Send + Sync> = Box::new(|| {
            RELEASED.fetch_add(1, Ordering::SeqCst);
        });
        let buf = Buffer::new(Box::new(PinnedHost::new(host, dptr, 0, Some(release))));
        assert_eq!((buf.addr(), buf.len(), buf.location()), (haddr, 4096, Location::Host));
        assert!(!buf.writable());
        // Two "calls" reuse the same mapping; nothing is released by using it.
        for _ in 0..2 {
            let whole = buf.view(DType::F32, &[16, 64]);
            assert_eq!(pinned_table_addr(&whole), Some((dptr, 0)));
            let row5 = buf.view(DType::F32, &[1, 64]).with_offset(5 * 64);
            assert_eq!(pinned_table_addr(&row5), Some((dptr + 5 * 64 * 4, 0)));
        }
        assert_eq!(RELEASED.load(Ordering::SeqCst), 0);
        drop(buf);
        assert_eq!(RELEASED.load(Ordering::SeqCst), 1);

        // A range someone else registered: no release of ours.
        let host = moehal_core::host::zeroed_buffer(64).unwrap();
        drop(Buffer::new(Box::new(PinnedHost::new(host, dptr, 0, None))));
        assert_eq!(RELEASED.load(Ordering::SeqCst), 1);

        // A plain host buffer is not pinned: ops register it per call.
        let plain = moehal_core::host::zeroed_buffer(64).unwrap();
        assert_eq!(pinned_table_addr(&plain.view(DType::F32, &[16])), None);
    }
}
