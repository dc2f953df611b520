//! `moehal devices`: every compiled-in backend, whether this machine can run it (and why not),
//! its device name, memory and capability. A backend whose device is the ACL emulator is listed as
//! `ascend (emulator)`, with a note under the table ([`super::emulator_note`]).

use std::process::ExitCode;

use super::{CliResult, Table};
use moehal::pipeline::human_bytes;
use moehal::Registry;

pub(super) fn run() -> CliResult {
    let reg = Registry::discover();
    let mut t = Table::new(&["backend", "status", "device", ">memory", "capability", ">units"]);
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    for e in reg.entries() {
        match &e.status {
            Ok(b) => {
                let info = b.device_info();
                notes.extend(super::emulator_note(e.name, &info.name));
                t.row(vec![
                    super::label_for(e.name, &info.name),
                    "available".into(),
                    info.name,
                    info.memory_bytes.map_or_else(|| "-".into(), |m| human_bytes(m as f64)),
                    info.capability,
                    info.compute_units.map_or_else(|| "-".into(), |u| u.to_string()),
                ]);
            }
            Err(reason) => {
                // Reasons can be long (search paths): listed under the table, not in a column.
                t.row(vec![e.name.to_string(), "unavailable (see below)".into()]);
                reasons.push(format!("{}: {reason}", e.name));
            }
        }
    }
    out!("{}", t.render());
    for r in reasons.iter().chain(&notes) {
        outln!("{r}");
    }
    let n = reg.available().count();
    outln!("{n} of {} compiled-in backends available", reg.entries().len());
    // The table is the diagnosis, so it is printed first; then `MOEHAL_REQUIRE_CUDA=1` fails here
    // as in every other command.
    super::require_cuda(&reg)?;
    Ok(ExitCode::SUCCESS)
}
