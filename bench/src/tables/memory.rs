//! `docs/memory.md`'s tables: the cost model's figures and the attacks, as the memory
//! tests wrote them (`MEMORY_RESULTS`, `tests/service/support/results.rs`), one JSON file
//! a test.

use std::path::Path;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Record {
    Attack {
        order: u32,
        attack: String,
        /// `None` where the test found no cgroup to run in.
        cgroup_peak_mib: Option<f64>,
        vm_hwm_mib: f64,
        clients: String,
    },
    Figures {
        order: u32,
        figures: Vec<Figure>,
    },
}

#[derive(Deserialize)]
struct Figure {
    name: String,
    value: String,
}

impl Record {
    fn order(&self) -> u32 {
        match self {
            Record::Attack { order, .. } | Record::Figures { order, .. } => *order,
        }
    }
}

/// The records of a directory, in their order.
fn read(dir: &Path) -> Result<Vec<Record>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut records = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            records
                .push(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?);
        }
    }
    records.sort_by_key(Record::order);
    Ok(records)
}

/// The figures, then the attacks, in Markdown.
pub fn render(dir: &Path) -> Result<String, String> {
    let records = read(dir)?;
    let mut figures = String::from("| What | Measured |\n|---|---|\n");
    let mut attacks = String::from(
        "| Attack | cgroup peak | `VmHWM` | What the clients got |\n|---|---:|---:|---|\n",
    );
    for record in &records {
        match record {
            Record::Figures { figures: list, .. } => {
                for Figure { name, value } in list {
                    figures.push_str(&format!("| {name} | {value} |\n"));
                }
            }
            Record::Attack {
                attack,
                cgroup_peak_mib,
                vm_hwm_mib,
                clients,
                ..
            } => {
                let peak = cgroup_peak_mib.map_or("no cgroup".into(), |p| format!("{p:.1} MiB"));
                attacks.push_str(&format!(
                    "| {attack} | {peak} | {vm_hwm_mib:.1} MiB | {clients} |\n"
                ));
            }
        }
    }
    Ok(format!("{figures}\n{attacks}"))
}
