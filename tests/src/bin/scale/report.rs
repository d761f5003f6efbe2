//! Where the figures go: printed as they come, and each part's table
//! written into `docs/BENCHMARKS.md` between its markers, so one run
//! updates the file in place.

use std::path::PathBuf;

/// `docs/BENCHMARKS.md` of the source tree this binary was built from.
fn benchmarks_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/BENCHMARKS.md")
}

/// Replaces what lies between `<!-- scale:{part} -->` and `<!-- /scale:{part}
/// -->` with `text`; appends the block at the end when the markers are
/// missing.
pub fn write(part: &str, text: &str) {
    let path = benchmarks_file();
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let (open, close) = (
        format!("<!-- scale:{part} -->"),
        format!("<!-- /scale:{part} -->"),
    );
    let block = format!("{open}\n{}\n{close}", text.trim_end());
    let updated = match (doc.find(&open), doc.find(&close)) {
        (Some(start), Some(end)) if start < end => {
            format!("{}{block}{}", &doc[..start], &doc[end + close.len()..])
        }
        _ => format!("{}\n{block}\n", doc.trim_end()),
    };
    match std::fs::write(&path, updated) {
        Ok(()) => eprintln!("wrote the {part} table to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

/// A Markdown table: a header row, its rule, then `rows`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    out += &line(header.iter().map(|_| "---".to_owned()).collect());
    for row in rows {
        out += &line(row.clone());
    }
    out
}
