//! `tokenlens schema`: every output table's columns (name, type, nullability) as JSON, from the
//! same definitions the writer and docs/schema.md use, each table marked as a run's or a
//! comparison directory's.

use anyhow::Result;
use tokenlens::store::schema::{ALL_TABLES, is_comparison_table};

pub fn run() -> Result<()> {
    let tables: Vec<serde_json::Value> = ALL_TABLES
        .iter()
        .map(|t| {
            let cols: Vec<serde_json::Value> = t
                .columns
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "name": c.name, "type": c.ty.doc_name(), "nullable": c.nullable,
                    })
                })
                .collect();
            // `run`: written into a run directory; `comparison`: by `tokenlens compare`.
            let kind = if is_comparison_table(t) {
                "comparison"
            } else {
                "run"
            };
            serde_json::json!({"name": t.name, "kind": kind, "columns": cols})
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&tables)?);
    Ok(())
}
