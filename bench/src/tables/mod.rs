//! The documents' tables of measured figures, rendered from the runs' JSON so that a
//! figure is typed by no one: `bench suite` writes its results, `bench tables` puts the
//! committed results into the documents that show them, between markers, and this
//! module's tests fail when a document no longer shows what its JSON holds.

use std::path::{Path, PathBuf};

mod memory;
pub mod performance;

use performance::Results;

/// A document and the generated block in it that shows a run's JSON (a file, or a
/// directory of them).
pub struct Block {
    pub doc: PathBuf,
    pub json: PathBuf,
    pub render: fn(&Path) -> Result<String, String>,
}

/// The blocks this repository's documents hold, paths from its root.
pub fn blocks() -> Vec<Block> {
    vec![
        Block {
            doc: "docs/performance.md".into(),
            json: "bench/results/bench.json".into(),
            render: |json| Results::read(json).map(|results| performance::render(&results)),
        },
        Block {
            doc: "docs/memory.md".into(),
            json: "docs/results/memory".into(),
            render: memory::render,
        },
    ]
}

fn begin_marker(json: &Path) -> String {
    format!(
        "<!-- generated from {} by `bench tables`: change the run, not this -->",
        json.display()
    )
}

const END_MARKER: &str = "<!-- end of generated tables -->";

/// The document's text with its block replaced by `content`.
pub fn with_block(text: &str, json: &Path, content: &str) -> Result<String, String> {
    let begin = begin_marker(json);
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("no line {begin}"))?;
    let end = text[start..]
        .find(END_MARKER)
        .map(|at| start + at)
        .ok_or_else(|| format!("no line {END_MARKER} after {begin}"))?;
    Ok(format!(
        "{}{begin}\n\n{content}\n{}",
        &text[..start],
        &text[end..]
    ))
}

/// Writes every block from its JSON (`check`: only says which documents differ).
pub fn write(root: &Path, check: bool) -> Result<(), String> {
    let mut stale = Vec::new();
    for block in blocks() {
        let doc = root.join(&block.doc);
        let text = std::fs::read_to_string(&doc).map_err(|e| format!("{}: {e}", doc.display()))?;
        let content = (block.render)(&root.join(&block.json))?;
        let new = with_block(&text, &block.json, &content)
            .map_err(|e| format!("{}: {e}", doc.display()))?;
        if new == text {
            continue;
        }
        if check {
            stale.push(format!(
                "{} does not show {}",
                block.doc.display(),
                block.json.display()
            ));
        } else {
            std::fs::write(&doc, new).map_err(|e| format!("{}: {e}", doc.display()))?;
            eprintln!("wrote {}", doc.display());
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!("{} (run `bench tables`)", stale.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn over_axum(results: &Results, scenario: &str) -> Option<f64> {
        let row = results.rows.iter().find(|row| row.scenario == scenario)?;
        Some(row.service.requests_per_second / row.axum.requests_per_second.max(1e-9))
    }

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn the_documents_show_the_committed_results() {
        write(&root(), true).unwrap();
    }

    #[test]
    fn a_block_is_replaced_between_its_markers_only() {
        let json = Path::new("r.json");
        let text = format!(
            "before\n{}\n\nold\n{END_MARKER}\nafter\n",
            begin_marker(json)
        );
        let new = with_block(&text, json, "new\n").unwrap();
        assert_eq!(
            new,
            format!(
                "before\n{}\n\nnew\n\n{END_MARKER}\nafter\n",
                begin_marker(json)
            )
        );
        assert_eq!(with_block(&new, json, "new\n").unwrap(), new);
        assert!(with_block("no markers", json, "x").is_err());
    }

    /// The README's claims about speed are the committed suite's ratios, as rounded there.
    #[test]
    fn the_readme_quotes_the_committed_ratios() {
        let results = Results::read(&root().join("bench/results/bench.json")).unwrap();
        let row = |scenario: &str| {
            results
                .rows
                .iter()
                .find(|r| r.scenario == scenario)
                .unwrap()
        };
        let axum = |scenario: &str| over_axum(&results, scenario).unwrap();
        let flask = |scenario: &str| {
            let row = row(scenario);
            two_figures(row.service.requests_per_second / row.best_flask())
        };
        let claim = format!(
            "on `GET /` ({:.2}x), {}x ahead on listings of 100 documents, {}x on `POST /data`; {}x, {}x and {}x the best Flask setup",
            axum("GET /"),
            two_figures(axum("GET /data, 100 documents")),
            two_figures(axum("POST /data")),
            flask("GET /"),
            flask("GET /data, 100 documents"),
            flask("POST /data"),
        );
        let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
        let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(readme.contains(&claim), "README.md does not say {claim:?}");
    }

    /// A ratio as the README rounds it: 4.50 -> 4.5, 35.4 -> 35.
    fn two_figures(x: f64) -> String {
        if x >= 10.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.1}")
        }
    }
}
