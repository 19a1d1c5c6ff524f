//! `tokenlens schema`: every output table's columns (name, type, nullability) as JSON, from the
//! same definitions the writer and docs/schema.md use, each table marked as a run's, a
//! comparison directory's, or both's.

use anyhow::Result;
use tokenlens::store::schema::{ALL_TABLES, is_comparison_table, is_run_table};

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
            // `run`: written into a run directory; `comparison`: by `tokenlens compare`; `both`:
            // either (`similarity`: a comparison's, and a run's own with analyses.similarity).
            let kind = match (is_run_table(t), is_comparison_table(t)) {
                (true, true) => "both",
                (false, true) => "comparison",
                _ => "run",
            };
            serde_json::json!({"name": t.name, "kind": kind, "columns": cols})
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&tables)?);
    Ok(())
}
