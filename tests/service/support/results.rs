//! What the memory tests measured, for the document that shows it: when `MEMORY_RESULTS`
//! names a directory, each test writes its figures there as one JSON file, and `bench
//! tables` renders `docs/memory.md`'s tables from the committed copy of that directory
//! (`docs/results/memory`), so no figure in it is typed by hand.

use std::path::PathBuf;

use num_format::{Locale, ToFormattedString};
use serde_json::{json, Value};

use super::pod::MemoryReport;

/// A row of the attack table: what was sent, what the cgroup counted, what the clients got.
pub fn attack(key: &str, order: u32, attack: &str, report: &MemoryReport, clients: &str) {
    write(
        key,
        json!({
            "kind": "attack",
            "order": order,
            "attack": attack,
            "cgroup_peak_mib": report.cgroup_peak.map(mib),
            "vm_hwm_mib": mib(report.vm_hwm),
            "clients": clients,
        }),
    );
}

/// Figures of the cost model (at rest, per connection): name and value, in order.
pub fn figures(key: &str, order: u32, figures: &[(&str, String)]) {
    let figures: Vec<Value> = figures
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    write(
        key,
        json!({"kind": "figures", "order": order, "figures": figures}),
    );
}

/// 12000 -> "12,000".
pub fn thousands(n: usize) -> String {
    n.to_formatted_string(&Locale::en)
}

/// Bytes in MiB, to one decimal.
pub fn mib(bytes: u64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

fn write(key: &str, value: Value) {
    let Some(dir) = std::env::var_os("MEMORY_RESULTS").map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{key}.json"));
    let text = serde_json::to_string_pretty(&value).unwrap() + "\n";
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
}
