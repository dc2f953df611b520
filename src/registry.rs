//! The registry: every backend compiled into this build, and whether this machine can run it.
//!
//! A missing device or library is data, not an error: [`Registry::discover`] lists
//! `cuda: unavailable (libcuda.so.1 not found)` and carries on. [`Registry::open`] of an absent
//! backend is an `Err` with that reason.

use std::sync::Arc;

use moehal_core::ops::OpDesc;
use moehal_core::{Backend, Error, Reference, Result, Support};

/// A backend as found on this machine.
pub struct Entry {
    /// Backend name.
    pub name: &'static str,
    /// The open backend, or why it cannot be used here.
    pub status: std::result::Result<Arc<dyn Backend>, String>,
}

impl Entry {
    /// The backend if available.
    pub fn backend(&self) -> Option<&Arc<dyn Backend>> {
        self.status.as_ref().ok()
    }
}

type Opener = fn() -> Result<Arc<dyn Backend>>;

/// Every backend compiled in, in preference order (fastest first; the reference last).
#[allow(clippy::vec_init_then_push)] // pushes are cfg-gated by features
fn openers() -> Vec<(&'static str, Opener)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, Opener)> = Vec::new();
    #[cfg(feature = "cuda")]
    v.push(("cuda", crate::backends::open_cuda));
    #[cfg(feature = "ascend")]
    v.push(("ascend", crate::backends::open_ascend));
    #[cfg(feature = "cpu")]
    v.push(("cpu", crate::backends::open_cpu));
    v.push(("reference", || Ok(Arc::new(Reference::new()) as Arc<dyn Backend>)));
    v
}

/// Names of every backend compiled into this build.
pub fn compiled() -> Vec<&'static str> {
    openers().into_iter().map(|(n, _)| n).collect()
}

/// The backends of this machine.
pub struct Registry {
    entries: Vec<Entry>,
}

impl Registry {
    /// Probe every compiled-in backend. Never fails and never panics: a backend that cannot open
    /// is listed with its reason.
    pub fn discover() -> Self {
        let entries = openers()
            .into_iter()
            .map(|(name, open)| {
                let status = match moehal_core::fence::catch_quietly(open) {
                    Ok(Ok(b)) => Ok(b),
                    Ok(Err(Error::Unavailable { reason, .. })) => Err(reason),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(msg) => Err(format!("panicked while opening: {msg}")),
                };
                Entry { name, status }
            })
            .collect();
        Registry { entries }
    }

    /// Every compiled-in backend with its status.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The available backends.
    pub fn available(&self) -> impl Iterator<Item = &Arc<dyn Backend>> {
        self.entries.iter().filter_map(Entry::backend)
    }

    /// Open a backend by name.
    ///
    /// # Errors
    /// [`Error::Unavailable`] with the reason, or naming the compiled-in backends when `name` is unknown.
    pub fn open(&self, name: &str) -> Result<Arc<dyn Backend>> {
        match self.entries.iter().find(|e| e.name == name) {
            Some(Entry { status: Ok(b), .. }) => Ok(b.clone()),
            Some(Entry {
                status: Err(reason), ..
            }) => Err(Error::Unavailable {
                backend: name.to_string(),
                reason: reason.clone(),
            }),
            None => Err(Error::Unavailable {
                backend: name.to_string(),
                reason: format!("not compiled into this build (compiled: {})", compiled().join(", ")),
            }),
        }
    }

    /// The support matrix: for every available backend and every op variant, the kernel that
    /// serves it or the reason none does.
    pub fn support_matrix(&self) -> Vec<(String, OpDesc, Support)> {
        let mut rows = Vec::new();
        for b in self.available() {
            // The host-table variants exist only where tables and outputs can live apart.
            let device = !b.device_info().host_memory;
            for op in OpDesc::all(device) {
                rows.push((b.name().to_string(), op, b.supports(&op)));
            }
        }
        rows
    }

    /// The OPS.md §6 support matrix (quantized `grouped_gemm` and the quantize ops): for every
    /// available backend and every [`QuantDesc`](moehal_core::ops::QuantDesc), the kernel or the reason.
    pub fn quant_support_matrix(&self) -> Vec<(String, moehal_core::ops::QuantDesc, Support)> {
        let mut rows = Vec::new();
        for b in self.available() {
            for op in moehal_core::ops::QuantDesc::all() {
                rows.push((b.name().to_string(), op, b.supports_quant(&op)));
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moehal_core::Location;

    /// The registry trusts `DeviceInfo::host_memory` for the device-only rows, so it must agree with
    /// where each backend's `alloc` puts memory, and the matrix lists the host-table variants for
    /// exactly the backends that say `false`.
    #[test]
    fn host_memory_agrees_with_alloc_and_picks_the_host_table_rows() {
        let reg = Registry::discover();
        let rows = reg.support_matrix();
        let mut seen = 0;
        for b in reg.available() {
            let host = b.device_info().host_memory;
            let loc = b.alloc(64).unwrap().location();
            assert_eq!(host, loc == Location::Host, "{}: {loc:?}", b.name());
            let host_table_rows = rows
                .iter()
                .filter(|(n, op, _)| {
                    n == b.name()
                        && matches!(
                            op,
                            OpDesc::GatherRows { host_table: true, .. } | OpDesc::EngramLookup { host_table: true, .. }
                        )
                })
                .count();
            assert_eq!(host_table_rows > 0, !host, "{}", b.name());
            seen += 1;
        }
        assert!(seen >= 1, "the reference is always available");
    }
}
