//! aclnn's two-phase call (GetWorkspaceSize, workspace, launch, wait), in one helper every op file
//! uses, and the small pieces the op files share.

use std::ffi::c_void;
use std::ptr;

use moehal_ascend_sys as sys;
use moehal_core::{Error, Result};

use super::runtime::check;
use super::{DevMem, Runtime, Tensor, TensorList, NAME};

pub(super) type Launch =
    unsafe extern "C" fn(*mut c_void, u64, *mut sys::aclOpExecutor, sys::aclrtStream) -> sys::aclnnStatus;

pub(super) fn opt<T: Copy>(f: Option<T>, name: &str) -> Result<T> {
    f.ok_or_else(|| Error::unsupported("ascend", NAME, format!("{name} is not in the loaded op libraries")))
}

/// What a two-phase call came to when its phase one may reject the call (the backend then routes
/// the op to the host instead).
pub enum Outcome {
    /// Phase one accepted the call; it was launched and the stream drained.
    Ran,
    /// Phase one (`GetWorkspaceSize`) returned this error; nothing was enqueued.
    Rejected(Error),
}

impl Runtime {
    /// The one two-phase helper: phase one (`GetWorkspaceSize`), workspace allocation, launch on
    /// our stream, then wait (so the workspace and the descriptors can go).
    pub(super) fn two_phase(
        &self,
        name: &str,
        phase1: impl FnOnce(*mut u64, *mut *mut sys::aclOpExecutor) -> sys::aclnnStatus,
        launch: Launch,
    ) -> Result<()> {
        match self.two_phase_outcome(name, phase1, launch)? {
            Outcome::Ran => Ok(()),
            Outcome::Rejected(e) => Err(e),
        }
    }

    /// [`Runtime::two_phase`], but a phase-one rejection comes back as [`Outcome::Rejected`].
    pub(super) fn two_phase_outcome(
        &self,
        name: &str,
        phase1: impl FnOnce(*mut u64, *mut *mut sys::aclOpExecutor) -> sys::aclnnStatus,
        launch: Launch,
    ) -> Result<Outcome> {
        self.bind()?;
        let mut ws = 0u64;
        let mut raw: *mut sys::aclOpExecutor = ptr::null_mut();
        let st = phase1(&mut ws, &mut raw);
        if let Err(e) = check(self.api(), st, &format!("{name}GetWorkspaceSize")) {
            return Ok(Outcome::Rejected(e));
        }
        // If the workspace cannot be had, the executor of this successful phase one is not
        // launched and not destroyed: it is a plain (not repeatable) executor, and the documents
        // allow `aclDestroyAclOpExecutor` only for repeatable ones ([HA] canncommercial/800
        // operatorlist_00021, `ascend_audit.md` L1). A host-side leak on this error path only.
        let ws_mem = if ws > 0 {
            Some(DevMem::new(self, ws as usize)?)
        } else {
            None
        };
        let ws_ptr = ws_mem.as_ref().map_or(ptr::null_mut(), |m| m.ptr as *mut c_void);
        // SAFETY: the executor came from phase one of this op; workspace is `ws` device bytes.
        let st = unsafe { launch(ws_ptr, ws, raw, self.stream as sys::aclrtStream) };
        check(self.api(), st, name)?;
        self.sync()?;
        Ok(Outcome::Ran)
    }
}

pub(super) fn t(x: &Option<&Tensor<'_>>) -> *mut sys::aclTensor {
    x.map_or(ptr::null_mut(), |t| t.ptr())
}
pub(super) fn tl(x: &Option<&TensorList<'_>>) -> *mut sys::aclTensorList {
    x.map_or(ptr::null_mut(), |t| t.ptr())
}
