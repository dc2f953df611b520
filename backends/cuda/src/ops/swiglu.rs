//! `swiglu` (kernels/cuda/swiglu.cu): elementwise.

use moehal_core::ops::Swiglu;
use moehal_core::{Checked, Result};

use super::grid1;
use crate::device::CudaBackend;
use crate::kernels::Unit;
use crate::raw::Arg;

impl CudaBackend {
    /// `Backend::swiglu` on this device.
    pub(crate) fn run_swiglu(&self, args: Checked<Swiglu<'_>>) -> Result<()> {
        const OP: &str = "swiglu";
        let a = args.into_inner();
        let (m, i) = a.dims();
        let h = self.dptr(&a.h, OP, "h")?;
        let out = self.dptr_mut(&a.out, OP, "out")?;
        let s = self.begin()?;
        if m * i == 0 {
            return Ok(());
        }
        let name = format!("swiglu_{}", a.h.dtype().name());
        let args = [
            Arg::P(h),
            Arg::P(out),
            Arg::I64(m as i64),
            Arg::I64(i as i64),
            Arg::I32(a.limit.is_some() as i32),
            Arg::F32(a.limit.unwrap_or(0.0)),
        ];
        self.launch(s, Unit::Swiglu, &name, (grid1(m * i, 256, 1 << 20), 1), 256, 0, &args)
    }
}
