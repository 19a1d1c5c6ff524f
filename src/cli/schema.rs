//! `tokenlens schema`: every output table's columns (name, type, nullability) as JSON, from the
//! same definitions the writer and docs/schema.md use.

use anyhow::Result;
use tokenlens::store::schema::ALL_TABLES;

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
            serde_json::json!({"name": t.name, "columns": cols})
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&tables)?);
    Ok(())
}
