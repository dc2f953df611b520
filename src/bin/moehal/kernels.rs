//! `moehal kernels`: the support matrix (op × variant × backend → kernel, or the reason none
//! serves it), from [`Registry::support_matrix`](moehal::Registry::support_matrix).

use std::collections::BTreeMap;
use std::process::ExitCode;

use super::{CliResult, Table};
use moehal::Registry;

pub(super) fn run() -> CliResult {
    let reg = Registry::discover();
    for e in reg.entries() {
        if let Err(reason) = &e.status {
            outln!("{}: unavailable ({reason}), not in the matrix", e.name);
        }
    }
    // (backend, op name, variant, support): the float ops of OPS.md §1-5, then the §6 rows.
    let mut matrix: Vec<(String, String, String, moehal_core::Support)> = reg
        .support_matrix()
        .into_iter()
        .map(|(b, op, s)| (b, op.kind().name().to_string(), op.variant(), s))
        .collect();
    matrix.extend(
        reg.quant_support_matrix()
            .into_iter()
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
