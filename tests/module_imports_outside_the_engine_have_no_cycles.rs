//! The module graph (`tools/imports.py`, docs/design.md) keeps the cycles
//! that were broken broken: nothing in `sys/` is in a cycle, nor the
//! configuration (`config`, `protocol::config`), the modules they read
//! (`ip_table`, `trusted_proxy`, `protocol::admission`, `protocol::origin`),
//! or the counters and their text (`stats`, `prometheus`); of the engine,
//! its start (`start`) and the overflow thread (`overflow`).

use std::process::Command;

/// Modules (or, ending in `::`, module prefixes) that must be in no cycle.
const ACYCLIC: &[&str] = &[
    "sys::",
    "config",
    "ip_table",
    "trusted_proxy",
    "protocol::config",
    "protocol::admission",
    "protocol::origin",
    "stats",
    "prometheus",
    "start",
    "overflow",
];

#[test]
fn modules_outside_the_engine_are_in_no_import_cycle() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/tools/imports.py"))
        .arg(format!("{root}/src"))
        .output()
        .expect("python3 is needed to run tools/imports.py");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // Each cycle is a line `  N: a, b, c` after the summary line.
    let cycles: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .filter_map(|line| line.trim().split_once(": "))
        .map(|(_, members)| members.split(", ").collect())
        .collect();
    assert!(text.starts_with("modules "), "unexpected output:\n{text}");
    for cycle in &cycles {
        for module in cycle {
            let caught = ACYCLIC.iter().find(|m| match m.strip_suffix("::") {
                Some(prefix) => module.starts_with(&format!("{prefix}::")),
                None => module == *m,
            });
            assert!(caught.is_none(), "{module} is in an import cycle: {}\n{text}", cycle.join(", "));
        }
    }
}
