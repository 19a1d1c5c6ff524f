//! `/api/files`: what a run directory holds (the manifest, the shards' status files, each table's
//! finished Parquet parts with their sizes). The server answers it; `export-html` inlines it and
//! the parts it lists.

use std::path::{Path, PathBuf};

use crate::store::SHARDS_DIR;

/// `/api/files`: what the run holds, so the browser only asks for files that exist:
/// `{"manifest": bool, "comparison": bool, "shards": [names], "tables": {table: [{"path",
/// "size"}]}}` (`comparison`: a `tokenlens compare` output, with `comparison.json`). Part files
/// are `*.parquet` not starting with `.` (hidden temporaries are being written), sorted by name.
pub fn files_listing(root: &Path) -> serde_json::Value {
    let mut tables = serde_json::Map::new();
    let mut shards = Vec::new();
    let mut dirs: Vec<(String, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .filter(|(n, _)| !n.starts_with('.'))
        .collect();
    dirs.sort();
    for (name, dir) in dirs {
        let mut files: Vec<(String, u64)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                let m = e.metadata().ok()?;
                m.is_file().then_some((n, m.len()))
            })
            .filter(|(n, _)| !n.starts_with('.'))
            .collect();
        files.sort();
        if name == SHARDS_DIR {
            shards = files
                .into_iter()
                .filter(|(n, _)| n.ends_with(".json"))
                .map(|(n, _)| serde_json::Value::String(n))
                .collect();
            continue;
        }
        let parts: Vec<serde_json::Value> = files
            .into_iter()
            .filter(|(n, _)| n.ends_with(".parquet"))
            .map(|(n, size)| serde_json::json!({"path": format!("{name}/{n}"), "size": size}))
            .collect();
        if !parts.is_empty() {
            tables.insert(name, serde_json::Value::Array(parts));
        }
    }
    serde_json::json!({
        "manifest": root.join("manifest.json").is_file(),
        "comparison": root.join("comparison.json").is_file(),
        "shards": shards,
        "tables": tables,
    })
}
