//! `moehal kernels`: the support matrix (op × variant × backend → kernel, or the reason none
//! serves it), from [`Registry::support_matrix`](moehal::Registry::support_matrix).

use std::collections::BTreeMap;
use std::process::ExitCode;

use super::{CliResult, Table};
use anyhow::anyhow;

/// Options of `moehal kernels`.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct Args {
    /// Only the columns of these backends (repeat the flag, or separate names with commas); the
    /// matrix of every backend is wide (hundreds of characters with Ascend present). A name that
    /// is not compiled in is an error listing the ones that are.
    #[arg(long, value_delimiter = ',')]
    backend: Vec<String>,
}

/// The backends of the matrix: every compiled-in one, or those of `wanted` (an error naming the
/// compiled-in backends when one is unknown).
fn selected<'a>(compiled: &[&'a str], wanted: &[String]) -> anyhow::Result<Vec<&'a str>> {
    if wanted.is_empty() {
        return Ok(compiled.to_vec());
    }
    let mut out = Vec::new();
    for w in wanted {
        match compiled.iter().find(|c| **c == w.as_str()) {
            Some(c) if !out.contains(c) => out.push(*c),
            Some(_) => {}
            // A usage error (exit 2), and an empty value is said to be empty (issue 16: it read
            // "--backend : unknown backend" with exit status 1).
            None if w.trim().is_empty() => {
                return Err(super::usage(format!(
                    "--backend: the value is empty: name a backend (compiled into this build: {})",
                    compiled.join(", ")
                )))
            }
            None => {
                return Err(super::usage(format!(
                    "--backend {w}: unknown backend (compiled into this build: {})",
                    compiled.join(", ")
                )))
            }
        }
    }
    Ok(out)
}

pub(super) fn run(a: Args) -> CliResult {
    let reg = super::discover()?;
    let names: Vec<&str> = reg.entries().iter().map(|e| e.name).collect();
    let wanted = selected(&names, &a.backend)?;
    for e in reg.entries().iter().filter(|e| wanted.contains(&e.name)) {
        match &e.status {
            Err(reason) => outln!("{}: unavailable ({reason}), not in the matrix", e.name),
            // The column keeps the backend's name (scripts split the header on spaces); the note
            // says when its kernels are the emulator's (issue 16).
            Ok(b) => {
                if let Some(note) = super::emulator_note(e.name, &b.device_info().name) {
                    outln!("{note}");
                }
            }
        }
    }
    if !reg
        .entries()
        .iter()
        .any(|e| e.status.is_ok() && wanted.contains(&e.name))
    {
        return Err(anyhow!(
            "no available backend among {}: the matrix would be empty",
            wanted.join(", ")
        ));
    }
    // (backend, op name, variant, support): the float ops of OPS.md §1-5, then the §6 rows.
    let mut matrix: Vec<(String, String, String, moehal_core::Support)> = reg
        .support_matrix()
        .into_iter()
        .filter(|(b, _, _)| wanted.contains(&b.as_str()))
        .map(|(b, op, s)| (b, op.kind().name().to_string(), op.variant(), s))
        .collect();
    matrix.extend(
        reg.quant_support_matrix()
            .into_iter()
            .filter(|(b, _, _)| wanted.contains(&b.as_str()))
            .map(|(b, op, s)| (b, op.kind().name().to_string(), op.variant(), s)),
    );
    let mut backends: Vec<String> = Vec::new();
    for (b, _, _, _) in &matrix {
        if !backends.contains(b) {
            backends.push(b.clone());
        }
    }
    // Rows in first-seen order of (op, variant); reasons numbered as footnotes.
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut cells: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let mut reasons: Vec<String> = Vec::new();
    for (b, op, variant, s) in &matrix {
        let key = (op.clone(), variant.clone());
        if !keys.contains(&key) {
            keys.push(key.clone());
        }
        let cell = match s {
            moehal_core::Support::Yes { kernel } => kernel.clone(),
            moehal_core::Support::No { reason } => {
                let i = match reasons.iter().position(|r| r == reason) {
                    Some(i) => i,
                    None => {
                        reasons.push(reason.clone());
                        reasons.len() - 1
                    }
                };
                format!("no [{}]", i + 1)
            }
        };
        cells.insert((key.0, key.1, b.clone()), cell);
    }
    let mut headers = vec!["op", "variant"];
    headers.extend(backends.iter().map(String::as_str));
    let mut t = Table::new(&headers);
    for (op, variant) in &keys {
        let mut row = vec![op.clone(), variant.clone()];
        for b in &backends {
            row.push(
                cells
                    .get(&(op.clone(), variant.clone(), b.clone()))
                    .cloned()
                    .unwrap_or_else(|| "-".into()),
            );
        }
        t.row(row);
    }
    out!("{}", t.render());
    for (i, r) in reasons.iter().enumerate() {
        outln!("[{}] {r}", i + 1);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_filter_keeps_the_named_backends_and_rejects_unknown_ones() {
        let compiled = ["reference", "cpu", "cuda", "ascend"];
        assert_eq!(selected(&compiled, &[]).unwrap(), compiled);
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(selected(&compiled, &w(&["cpu", "cpu"])).unwrap(), ["cpu"]);
        assert_eq!(
            selected(&compiled, &w(&["cpu", "reference"])).unwrap(),
            ["cpu", "reference"]
        );
        let e = selected(&compiled, &w(&["cpu", "tpu"])).unwrap_err();
        assert!(
            e.to_string().contains("--backend tpu") && e.to_string().contains("reference, cpu, cuda, ascend"),
            "{e}"
        );
    }
}
