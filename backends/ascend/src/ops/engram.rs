//! `engram_hash` on the host (staged; CANN has no kernel for it, which is the Engram design anyway).
//! `engram_lookup` is the trait's default: this hash, then `gather_rows`.

use moehal_core::ops::{Checked, EngramHash};
use moehal_core::{Backend, Reference, Result};

use crate::backend::{hm, hv, Ascend};

impl Ascend {
    /// `Backend::engram_hash` on this device.
    pub(crate) fn run_engram_hash(&self, args: Checked<EngramHash<'_>>) -> Result<()> {
        let a = args.into_inner();
        let _g = self.lock();
        let si = self.stage(&a.ids)?;
        let sp = a.positions.as_ref().map(|p| self.stage(p)).transpose()?;
        let sa = a.alive.as_ref().map(|p| self.stage(p)).transpose()?;
        let mut so = self.stage(&a.rows.as_ref())?;
        let args = EngramHash {
            layer: a.layer,
            ids: hv(&si, &a.ids),
            positions: a.positions.as_ref().zip(sp.as_ref()).map(|(r, s)| hv(s, r)),
            alive: a.alive.as_ref().zip(sa.as_ref()).map(|(r, s)| hv(s, r)),
            history: a.history,
            rows: hm(&mut so, &a.rows)?,
        };
        Reference.engram_hash(args.validate()?)?;
        self.unstage(so.as_ref().expect("staged"), &a.rows)
    }
}
